//! Postgres change data capture against a real, throwaway Postgres cluster: every
//! supported type through insert, update, delete and truncate; a schema change
//! mid-stream; exact resumption from the slot after a restart (tables without a primary
//! key: postgres_cdc_identity.rs).

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_test_support::{PgCluster, Switchyard, tail};
use switchyard_tests::{client, read_jsonl, runtime, wait_until};

fn config(dsn: &str, tables: &[&str], snapshot: &str) -> String {
    let tables = tables
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"
admin_token = "admin-secret-0123456789"

[sources.db]
type = "postgres_cdc"
dsn = "{dsn}"
slot = "sy_test"
tables = [{tables}]
snapshot = "{snapshot}"

[pipelines.cdc]
from = ["db"]
to = ["out"]

[sinks.out]
type = "file"
path = "{{dir}}/out.jsonl"
"#
    )
}

/// Payloads of the events in the file sink, in order.
fn payloads(switchyard: &Switchyard) -> Vec<Value> {
    read_jsonl(&switchyard.dir().join("out.jsonl"))
        .into_iter()
        .map(|e| e["payload"].clone())
        .collect()
}

fn wait_for(switchyard: &Switchyard, n: usize) -> Vec<Value> {
    let ok = wait_until(Duration::from_secs(60), || {
        payloads(switchyard)
            .iter()
            .filter(|p| p["op"] != "schema")
            .count()
            >= n
    });
    let got = payloads(switchyard);
    assert!(
        ok,
        "expected {n} changes, got {}:\n{}\n--- log ---\n{}",
        got.len(),
        got.iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        tail(&switchyard.logs(), 40)
    );
    got.into_iter().filter(|p| p["op"] != "schema").collect()
}

#[test]
fn every_type_arrives_through_insert_update_delete_and_truncate() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        r#"
        CREATE TYPE mood AS ENUM ('happy', 'sad');
        CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
        CREATE TABLE kinds (
            id bigint PRIMARY KEY,
            flag boolean, small smallint, num numeric(20, 6), real_v real, dbl double precision,
            txt text, vc varchar(10), uid uuid, raw bytea,
            ts timestamp, tstz timestamptz, d date,
            js json, jsb jsonb, ints integer[], texts text[],
            m mood, pos positive, big_text text
        );
        "#,
    );
    let switchyard = Switchyard::start(&config(&dsn, &["public.kinds"], "never"));
    let big = "x".repeat(10);
    pg.sql(
        "app",
        &format!(
            r#"
        INSERT INTO kinds VALUES (1, true, 7, 12345678901234.123456, 1.5, 2.25,
            'hello', 'short', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\xdeadbeef',
            '2026-11-25 10:00:00.5', '2026-11-25 10:00:00+02', '2026-11-25',
            '{{"a": 1}}', '{{"b": [1, 2]}}', '{{1,2,NULL}}', '{{"a b","c"}}',
            'happy', 5, '{big}');
        UPDATE kinds SET txt = 'bye', num = 0.1 WHERE id = 1;
        DELETE FROM kinds WHERE id = 1;
        INSERT INTO kinds (id) VALUES (2);
        TRUNCATE kinds;
        "#
        ),
    );
    let got = wait_for(&switchyard, 5);
    let ops: Vec<&str> = got.iter().map(|p| p["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["insert", "update", "delete", "insert", "truncate"]);

    let after = &got[0]["after"];
    assert_eq!(got[0]["schema"], "public");
    assert_eq!(got[0]["table"], "kinds");
    assert_eq!(got[0]["key"], json!({ "id": 1 }));
    assert_eq!(after["flag"], true);
    assert_eq!(after["small"], 7);
    assert_eq!(
        after["num"], "12345678901234.123456",
        "numeric stays exact, as a string"
    );
    assert_eq!(after["real_v"], 1.5);
    assert_eq!(after["dbl"], 2.25);
    assert_eq!(after["txt"], "hello");
    assert_eq!(after["vc"], "short");
    assert_eq!(after["uid"], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    assert_eq!(after["raw"], "3q2+7w==", "bytea as base64");
    assert_eq!(after["ts"], "2026-11-25T10:00:00.5");
    assert!(
        after["tstz"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-25T08:00:00"),
        "timestamptz in RFC 3339 (server time zone UTC): {}",
        after["tstz"]
    );
    assert_eq!(after["d"], "2026-11-25");
    assert_eq!(after["js"], json!({ "a": 1 }));
    assert_eq!(after["jsb"], json!({ "b": [1, 2] }));
    assert_eq!(after["ints"], json!([1, 2, null]));
    assert_eq!(after["texts"], json!(["a b", "c"]));
    assert_eq!(after["m"], "happy", "enums as their label");
    assert_eq!(after["pos"], 5, "domains as their base type");
    assert_eq!(got[0]["before"], Value::Null);

    // The update: REPLICA IDENTITY DEFAULT sends no old row, so before is null.
    assert_eq!(got[1]["after"]["txt"], "bye");
    assert_eq!(got[1]["after"]["num"], "0.100000");
    assert_eq!(got[1]["before"], Value::Null);
    // The delete carries the key only: other columns are absent, not null.
    assert_eq!(got[2]["before"], json!({ "id": 1 }));
    assert_eq!(got[2]["after"], Value::Null);
    assert_eq!(got[4]["table"], "kinds");

    // Ids are (commit LSN, sequence): two changes of one transaction share the LSN.
    let events = read_jsonl(&switchyard.dir().join("out.jsonl"));
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(ids.iter().all(|id| id.matches('/').count() == 2), "{ids:?}");
    let keys: Vec<&Value> = events.iter().map(|e| &e["key"]).collect();
    assert!(keys.contains(&&json!("{\"id\":1}")), "{keys:?}");
}

#[test]
fn unchanged_toast_values_are_marked_never_null() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE docs (id int PRIMARY KEY, body text, n int);
         ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;",
    );
    let switchyard = Switchyard::start(&config(&dsn, &["public.docs"], "never"));
    // Random text does not compress, so it is stored out of line (TOAST).
    pg.sql(
        "app",
        "INSERT INTO docs SELECT 1, string_agg(md5(random()::text), '') , 0 FROM generate_series(1, 200);
         UPDATE docs SET n = 1 WHERE id = 1;",
    );
    let got = wait_for(&switchyard, 2);
    assert_eq!(got[1]["op"], "update");
    assert!(
        got[1]["after"].get("body").is_none(),
        "an unchanged TOAST value is not sent; it must not appear as null: {}",
        got[1]
    );
    assert_eq!(got[1]["unchanged_toast"], json!(["body"]));
    assert_eq!(got[1]["after"]["n"], 1);
}

#[test]
fn alter_table_mid_stream_becomes_a_schema_event_before_the_next_row() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql("app", "CREATE TABLE t (id int PRIMARY KEY, a text);");
    let switchyard = Switchyard::start(&config(&dsn, &["public.t"], "never"));
    pg.sql("app", "INSERT INTO t VALUES (1, 'one');");
    wait_for(&switchyard, 1);
    pg.sql(
        "app",
        "ALTER TABLE t ADD COLUMN b int; INSERT INTO t VALUES (2, 'two', 22);",
    );
    wait_for(&switchyard, 2);
    let all = payloads(&switchyard);
    let second_insert = all
        .iter()
        .position(|p| p["op"] == "insert" && p["key"] == json!({ "id": 2 }))
        .unwrap();
    let schema = &all[second_insert - 1];
    assert_eq!(schema["op"], "schema", "{all:?}");
    let columns: Vec<&str> = schema["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["id", "a", "b"]);
    assert_eq!(all[second_insert]["after"]["b"], 22);
}

#[test]
fn a_restart_resumes_from_the_slot_without_losing_a_change() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql("app", "CREATE TABLE t (id int PRIMARY KEY, v int);");
    let mut switchyard = Switchyard::start(&config(&dsn, &["public.t"], "never"));
    pg.sql(
        "app",
        "INSERT INTO t SELECT g, 0 FROM generate_series(1, 100) g;",
    );
    let written = pg.sql("app", "SELECT pg_current_wal_lsn()");
    wait_for(&switchyard, 100);
    let flushed = wait_until(Duration::from_secs(30), || {
        pg.sql(
            "app",
            &format!(
                "SELECT confirmed_flush_lsn >= '{written}' FROM pg_replication_slots WHERE slot_name = 'sy_test'"
            ),
        ) == "t"
    });
    assert!(
        flushed,
        "the slot's flush position passes the delivered changes"
    );
    switchyard.terminate();
    // Changes while switchyard is down wait in the slot.
    pg.sql("app", "UPDATE t SET v = 1 WHERE id <= 10;");
    switchyard.restart();
    let got = wait_for(&switchyard, 110);
    let updates = got.iter().filter(|p| p["op"] == "update").count();
    assert_eq!(
        updates, 10,
        "each change made while down arrives once after a clean stop"
    );
    assert_eq!(
        got.iter().filter(|p| p["op"] == "insert").count(),
        100,
        "a clean stop confirmed everything delivered: nothing is sent twice"
    );
}

#[test]
fn an_initial_snapshot_emits_every_existing_row_once_then_streams() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 5000) g;",
    );
    let switchyard = Switchyard::start(&config(&dsn, &["public.t"], "initial"));
    let got = wait_for(&switchyard, 5000);
    let mut ids: Vec<u64> = got
        .iter()
        .filter(|p| p["op"] == "read")
        .map(|p| p["after"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 5000, "{:?}", &got[..3]);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5000, "every row exactly once");
    assert_eq!(got[0]["after"]["v"], "v1");
    pg.sql("app", "UPDATE t SET v = 'new' WHERE id = 1;");
    let got = wait_for(&switchyard, 5001);
    assert_eq!(got.last().unwrap()["op"], "update");
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn status_resnapshot_and_slots_from_the_cli_and_a_dropped_slot_stops_with_the_fix() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, v int);
         INSERT INTO t SELECT g, 0 FROM generate_series(1, 100) g;",
    );
    let mut switchyard = Switchyard::start(&config(&dsn, &["public.t"], "initial"));
    wait_for(&switchyard, 100);
    let done = wait_until(Duration::from_secs(30), || {
        text(&switchyard.cli(&["cdc", "status"])).contains("snapshot public.t: done (100 rows")
    });
    assert!(done, "{}", text(&switchyard.cli(&["cdc", "status"])));
    let status = text(&switchyard.cli(&["cdc", "status"]));
    assert!(status.contains("slot sy_test connected"), "{status}");
    let metrics_show_the_slot = wait_until(Duration::from_secs(30), || {
        let metrics = runtime().block_on(async {
            match client()
                .get(format!("{}/metrics", switchyard.url()))
                .send()
                .await
            {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            }
        });
        metrics.contains("switchyard_replication_slot_lag_bytes{source=\"db\"}")
            && metrics.contains("switchyard_replication_connected{source=\"db\"} 1")
            && metrics.contains("switchyard_snapshot_rows{source=\"db\",table=\"public.t\"} 100")
    });
    assert!(
        metrics_show_the_slot,
        "slot and snapshot metrics on /metrics"
    );

    // Taking the snapshot again while streaming goes on.
    let out = switchyard.cli(&["snapshot", "public.t"]);
    assert!(out.status.success(), "{}", text(&out));
    let got = wait_for(&switchyard, 200);
    assert_eq!(got.iter().filter(|p| p["op"] == "read").count(), 200);
    let out = switchyard.cli(&["snapshot", "public.nope"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not captured"), "{}", text(&out));

    // Slots: listed with what they hold; the source's own slot cannot be dropped while used.
    let list = text(&switchyard.cli(&["slots", "list"]));
    assert!(
        list.contains("sy_test") && list.contains("(this source)"),
        "{list}"
    );
    let out = switchyard.cli(&["slots", "drop", "sy_test"]);
    assert!(
        !out.status.success() && text(&out).contains("in use"),
        "{}",
        text(&out)
    );

    // Dropped while switchyard is stopped: the next start refuses, saying how to go on.
    switchyard.terminate();
    let out = switchyard.cli(&["slots", "drop", "sy_test"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = switchyard.cli(&["run"]);
    assert!(!out.status.success());
    let message = text(&out);
    assert!(
        message.contains("sy_test") && message.contains("recreate_slot = true"),
        "{message}"
    );
}

#[test]
fn recreate_slot_creates_a_dropped_slot_again_with_a_new_snapshot() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, v int);
         INSERT INTO t SELECT g, 0 FROM generate_series(1, 50) g;",
    );
    let cfg = config(&dsn, &["public.t"], "initial").replace(
        "snapshot = \"initial\"",
        "snapshot = \"initial\"\nrecreate_slot = true",
    );
    let mut switchyard = Switchyard::start(&cfg);
    wait_for(&switchyard, 50);
    switchyard.terminate();
    assert!(
        switchyard
            .cli(&["slots", "drop", "sy_test"])
            .status
            .success()
    );
    pg.sql("app", "UPDATE t SET v = 1;");
    switchyard.restart();
    // The changes made while the slot was gone are not in any slot: the new snapshot
    // brings every row's current state.
    let got = wait_for(&switchyard, 100);
    let reads: Vec<&Value> = got.iter().filter(|p| p["op"] == "read").collect();
    assert_eq!(reads.len(), 100);
    assert!(reads[50..].iter().all(|p| p["after"]["v"] == 1));
}

#[test]
fn a_slot_dropped_while_running_stops_the_source_and_readyz_says_why() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql("app", "CREATE TABLE t (id int PRIMARY KEY);");
    let switchyard = Switchyard::start(&config(&dsn, &["public.t"], "never"));
    pg.sql("app", "INSERT INTO t VALUES (1);");
    wait_for(&switchyard, 1);
    // Someone ends the replication session and drops the slot before it reconnects.
    pg.sql(
        "app",
        r#"
        DO $$
        BEGIN
          FOR i IN 1..500 LOOP
            PERFORM pg_terminate_backend(active_pid) FROM pg_replication_slots
              WHERE slot_name = 'sy_test' AND active_pid IS NOT NULL;
            BEGIN
              PERFORM pg_drop_replication_slot('sy_test');
              RETURN;
            EXCEPTION WHEN object_in_use THEN
              PERFORM pg_sleep(0.01);
            END;
          END LOOP;
          RAISE 'could not drop the slot';
        END $$;
        "#,
    );
    let not_ready = wait_until(Duration::from_secs(30), || {
        switchyard_test_support::http_status(switchyard.addr(), "/readyz") == Some(503)
    });
    assert!(not_ready, "{}", tail(&switchyard.logs(), 30));
    let logs = switchyard.logs();
    assert!(
        logs.contains("sy_test") && logs.contains("recreate_slot = true"),
        "the log says what happened and how to go on:\n{}",
        tail(&logs, 30)
    );
    assert_eq!(
        switchyard_test_support::http_status(switchyard.addr(), "/healthz"),
        Some(200),
        "the process keeps running"
    );
}

#[test]
fn an_idle_slot_still_moves_so_other_tables_wal_is_not_held_forever() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE other (id int PRIMARY KEY, pad text);",
    );
    let _switchyard = Switchyard::start(&config(&dsn, &["public.t"], "never"));
    // Only a table switchyard does not capture changes.
    pg.sql(
        "app",
        "INSERT INTO other SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g;",
    );
    let written = pg.sql("app", "SELECT pg_current_wal_lsn()");
    let moved = wait_until(Duration::from_secs(60), || {
        pg.sql(
            "app",
            &format!(
                "SELECT confirmed_flush_lsn >= '{written}' FROM pg_replication_slots WHERE slot_name = 'sy_test'"
            ),
        ) == "t"
    });
    assert!(
        moved,
        "the slot's position follows the server while none of its tables change: {}",
        pg.sql(
            "app",
            "SELECT confirmed_flush_lsn, pg_current_wal_lsn() FROM pg_replication_slots"
        )
    );
}
