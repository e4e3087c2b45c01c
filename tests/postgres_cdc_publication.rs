//! What a publication can hold, against a real, throwaway Postgres cluster: a partitioned
//! table streams under its own name (`publish_via_partition_root`), a table added to the
//! publication while switchyard runs is picked up with a `schema` event and its
//! snapshot, and logical decoding messages (`pg_logical_emit_message`) arrive as events
//! of kind `message` with their prefix — transactional ones only when their transaction
//! commits.

use std::time::Duration;

use serde_json::Value;
use switchyard_test_support::{PgCluster, Switchyard, tail};
use switchyard_tests::{read_jsonl, wait_until};

fn config(dsn: &str, publication: &str, tables: &str) -> String {
    switchyard_tests::cdc_config(
        dsn,
        &format!(
            "slot = \"sy_pub\"
publication = \"{publication}\"
tables = [{tables}]
snapshot = \"initial\"
snapshot_chunk = 50"
        ),
    )
}

fn events(switchyard: &Switchyard) -> Vec<Value> {
    read_jsonl(&switchyard.dir().join("out.jsonl"))
}

/// Waits until `pred` holds for the delivered events, and returns them.
fn wait_for(switchyard: &Switchyard, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let ok = wait_until(Duration::from_secs(90), || pred(&events(switchyard)));
    let got = events(switchyard);
    assert!(
        ok,
        "{what}: not there after 90 s; {} events, last: {:?}\n--- log ---\n{}",
        got.len(),
        got.last(),
        tail(&switchyard.logs(), 40)
    );
    got
}

fn rows_of<'a>(events: &'a [Value], table: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["kind"] != "schema" && e["payload"]["table"] == table)
        .collect()
}

#[test]
fn a_partitioned_table_streams_under_its_own_name() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE orders (id int, region text, total int, PRIMARY KEY (id, region))
             PARTITION BY LIST (region);
         CREATE TABLE orders_eu PARTITION OF orders FOR VALUES IN ('eu');
         CREATE TABLE orders_us PARTITION OF orders FOR VALUES IN ('us');
         INSERT INTO orders SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g
             FROM generate_series(1, 120) g;",
    );
    let switchyard = Switchyard::start(&config(&dsn, "sy_pub", "\"public.orders\""));
    // Before the start: read by the snapshot, through the parent.
    let got = wait_for(&switchyard, "the snapshot", |e| {
        rows_of(e, "orders")
            .iter()
            .filter(|r| r["kind"] == "read")
            .count()
            >= 120
    });
    assert!(
        got.iter()
            .all(|e| e["payload"]["table"] != "orders_eu" && e["payload"]["table"] != "orders_us"),
        "no event under a partition's name"
    );
    pg.sql(
        "app",
        "INSERT INTO orders VALUES (1000, 'eu', 1), (1001, 'us', 2);
         UPDATE orders SET total = -1 WHERE id = 1000;
         UPDATE orders SET region = 'us' WHERE id = 1000;
         DELETE FROM orders WHERE id = 1001;",
    );
    let got = wait_for(&switchyard, "the streamed changes", |e| {
        rows_of(e, "orders")
            .iter()
            .filter(|r| r["kind"] == "delete" && r["payload"]["before"]["id"] == 1001)
            .count()
            == 1
    });
    let streamed: Vec<(String, Value, Value)> = rows_of(&got, "orders")
        .iter()
        .filter(|r| r["kind"] != "read")
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_owned(),
                r["payload"]["after"]["region"].clone(),
                r["payload"]["after"]["total"].clone(),
            )
        })
        .collect();
    // A row that moves to another partition is a delete and an insert, both under
    // the parent's name.
    assert_eq!(
        streamed.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        ["insert", "insert", "update", "delete", "insert", "delete"],
        "{streamed:?}"
    );
    assert_eq!(streamed[4].1, "us");
    assert_eq!(streamed[4].2, -1);
    let pubviaroot = pg.sql(
        "app",
        "SELECT pubviaroot FROM pg_publication WHERE pubname = 'sy_pub'",
    );
    assert_eq!(pubviaroot.trim(), "t");
}

#[test]
fn an_existing_publication_of_a_partitioned_table_without_via_root_is_refused_with_the_fix() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE m (id int PRIMARY KEY) PARTITION BY RANGE (id);
         CREATE TABLE m1 PARTITION OF m FOR VALUES FROM (0) TO (100);
         CREATE PUBLICATION mine FOR TABLE m;",
    );
    let (exited, status, text) =
        switchyard_tests::run_expecting_exit(&config(&dsn, "mine", "\"public.m\""));
    assert!(exited, "the source retried instead of stopping: {text}");
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("ALTER PUBLICATION \"mine\" SET (publish_via_partition_root = true)"),
        "{text}"
    );
}

#[test]
fn a_table_added_to_the_publication_while_running_gets_a_schema_event_and_its_snapshot() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE a (id int PRIMARY KEY);
         INSERT INTO a SELECT g FROM generate_series(1, 10) g;
         CREATE PUBLICATION pubd FOR TABLE a;",
    );
    // No `tables`: the publication decides.
    let switchyard = Switchyard::start(&config(&dsn, "pubd", ""));
    wait_for(&switchyard, "a's snapshot", |e| rows_of(e, "a").len() >= 10);
    pg.sql(
        "app",
        "CREATE TABLE b (id int PRIMARY KEY, note text);
         INSERT INTO b SELECT g, 'before' FROM generate_series(1, 130) g;
         ALTER PUBLICATION pubd ADD TABLE b;",
    );
    let got = wait_for(&switchyard, "b's snapshot", |e| {
        rows_of(e, "b")
            .iter()
            .filter(|r| r["kind"] == "read")
            .count()
            >= 130
    });
    let schema_at = got
        .iter()
        .position(|e| e["kind"] == "schema" && e["payload"]["table"] == "b")
        .expect("a schema event for b");
    let first_row = got
        .iter()
        .position(|e| e["kind"] != "schema" && e["payload"]["table"] == "b")
        .unwrap();
    assert!(
        schema_at < first_row,
        "the schema event comes before b's rows"
    );
    let columns: Vec<&str> = got[schema_at]["payload"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["id", "note"]);
    pg.sql(
        "app",
        "INSERT INTO b VALUES (500, 'after'); UPDATE a SET id = 11 WHERE id = 1;",
    );
    let got = wait_for(&switchyard, "b's streamed insert", |e| {
        rows_of(e, "b")
            .iter()
            .any(|r| r["kind"] == "insert" && r["payload"]["after"]["id"] == 500)
    });
    let mut ids: Vec<i64> = rows_of(&got, "b")
        .iter()
        .map(|r| r["payload"]["after"]["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        131,
        "every row of b, the snapshot's and the new one"
    );
}

#[test]
fn logical_messages_arrive_with_their_prefix_and_only_when_their_transaction_commits() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql("app", "CREATE TABLE t (id int PRIMARY KEY);");
    let switchyard = Switchyard::start(&config(&dsn, "sy_pub", "\"public.t\""));
    assert!(wait_until(Duration::from_secs(60), || switchyard
        .logs()
        .contains("replication started")));
    pg.sql(
        "app",
        "BEGIN;
         INSERT INTO t VALUES (1);
         SELECT pg_logical_emit_message(true, 'app.audit', '{\"who\":\"ann\"}');
         COMMIT;
         BEGIN;
         SELECT pg_logical_emit_message(true, 'app.audit', 'rolled back');
         ROLLBACK;
         SELECT pg_logical_emit_message(false, 'app.ping', 'now');
         SELECT pg_logical_emit_message(true, 'app.bin', '\\xff00'::bytea);
         BEGIN;
         INSERT INTO t VALUES (3);
         SELECT pg_logical_emit_message(false, 'app.last', 'just before a commit');
         COMMIT;
         INSERT INTO t VALUES (2);",
    );
    let got = wait_for(&switchyard, "the second row", |e| {
        rows_of(e, "t")
            .iter()
            .any(|r| r["payload"]["after"]["id"] == 2)
    });
    let messages: Vec<&Value> = got.iter().filter(|e| e["kind"] == "message").collect();
    let summary: Vec<(String, Value, bool)> = messages
        .iter()
        .map(|m| {
            (
                m["payload"]["prefix"].as_str().unwrap().to_owned(),
                m["payload"]["content"].clone(),
                m["payload"]["transactional"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "app.audit".to_owned(),
                Value::from("{\"who\":\"ann\"}"),
                true
            ),
            ("app.ping".to_owned(), Value::from("now"), false),
            ("app.bin".to_owned(), Value::Null, true),
            (
                "app.last".to_owned(),
                Value::from("just before a commit"),
                false
            ),
        ],
        "{messages:?}"
    );
    assert_eq!(messages[2]["payload"]["content_base64"], "/wA=");
    // A transactional message is part of its transaction: same commit LSN, the id
    // sequence of its transaction, after the row written before it.
    let insert = rows_of(&got, "t")[0];
    assert_eq!(messages[0]["payload"]["lsn"], insert["payload"]["lsn"]);
    assert!(messages[0]["payload"]["xid"].is_u64());
    assert_eq!(messages[0]["key"], "\"app.audit\"");
    assert!(messages[1]["payload"]["xid"].is_null());
    // A message written right before a commit record does not share an id with that
    // transaction's first change.
    let row3 = rows_of(&got, "t")
        .into_iter()
        .find(|r| r["payload"]["after"]["id"] == 3)
        .expect("row 3");
    assert_ne!(row3["id"], messages[3]["id"]);
    let ids: Vec<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "ids are unique: {ids:?}");
}
