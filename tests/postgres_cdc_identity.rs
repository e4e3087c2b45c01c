//! Tables as real schemas have them, against a real, throwaway Postgres cluster: a table
//! without a primary key streams its inserts (snapshot included) with a null key or the
//! configured `key_columns`; `REPLICA IDENTITY FULL` streams updates and deletes with the
//! whole old row; a keyless table that is updated is refused with the fix; `validate
//! --connect` explains each table.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_test_support::{PgCluster, Switchyard, switchyard_command, tail};
use switchyard_tests::{read_jsonl, wait_until, write_config};

fn config(dsn: &str, tables: &[&str], snapshot: &str, extra: &str) -> String {
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
slot = "sy_identity"
tables = [{tables}]
snapshot = "{snapshot}"
snapshot_chunk = 100
{extra}

[pipelines.cdc]
from = ["db"]
to = ["out"]

[sinks.out]
type = "file"
path = "{{dir}}/out.jsonl"
"#
    )
}

/// The row events (no `schema` ones) in the file sink, in order.
fn events(switchyard: &Switchyard) -> Vec<Value> {
    read_jsonl(&switchyard.dir().join("out.jsonl"))
        .into_iter()
        .filter(|e| e["kind"] != "schema")
        .collect()
}

fn wait_for(switchyard: &Switchyard, n: usize) -> Vec<Value> {
    let ok = wait_until(Duration::from_secs(90), || events(switchyard).len() >= n);
    let got = events(switchyard);
    assert!(
        ok,
        "expected {n} events, got {}; last: {:?}\n--- log ---\n{}",
        got.len(),
        got.last(),
        tail(&switchyard.logs(), 40)
    );
    got
}

/// `switchyard ARGS… -c CONFIG`, run to its end.
fn cli(args: &[&str], config: &std::path::Path) -> std::process::Output {
    switchyard_command()
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn a_table_without_a_primary_key_streams_every_row_with_a_null_key_and_says_why() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    // An insert-only history table: several pages of rows before the start, so the
    // snapshot reads it in block ranges; identical rows are distinct rows.
    pg.sql(
        "app",
        "CREATE TABLE history (account int, note text);
         INSERT INTO history SELECT g % 7, 'n' || g FROM generate_series(1, 2000) g;
         INSERT INTO history VALUES (1, 'same'), (1, 'same');",
    );
    let switchyard = Switchyard::start(&config(&dsn, &["public.history"], "initial", ""));
    pg.sql(
        "app",
        "INSERT INTO history SELECT 9, 'live' || g FROM generate_series(1, 300) g;",
    );
    let got = wait_for(&switchyard, 2302);
    let reads: Vec<&Value> = got.iter().filter(|e| e["kind"] == "read").collect();
    let mut notes: Vec<&str> = reads
        .iter()
        .map(|e| e["payload"]["after"]["note"].as_str().unwrap())
        .filter(|n| !n.starts_with("live"))
        .collect();
    notes.sort_unstable();
    let same = notes.iter().filter(|n| **n == "same").count();
    notes.dedup();
    assert_eq!(
        notes.len(),
        2001,
        "every row present before the start is read by the snapshot"
    );
    assert_eq!(same, 2, "two identical rows are two rows");
    let live: std::collections::BTreeSet<&str> = got
        .iter()
        .filter_map(|e| e["payload"]["after"]["note"].as_str())
        .filter(|n| n.starts_with("live"))
        .collect();
    assert_eq!(live.len(), 300, "every row inserted while running arrives");
    assert!(
        got.iter().all(|e| e["key"].is_null()),
        "no key: {:?}",
        got.iter().find(|e| !e["key"].is_null())
    );
    let logs = switchyard.logs();
    assert!(
        logs.contains("table public.history: no primary key, REPLICA IDENTITY DEFAULT")
            && logs.contains("REPLICA IDENTITY FULL"),
        "the start explains the table: {}",
        tail(&logs, 30)
    );
}

#[test]
fn key_columns_make_the_key_of_a_table_without_one() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE history (account int, at int, note text);
         INSERT INTO history VALUES (1, 1, 'before start');",
    );
    let extra = r#"key_columns = { "public.history" = ["account", "at"] }"#;
    let switchyard = Switchyard::start(&config(&dsn, &["public.history"], "initial", extra));
    pg.sql("app", "INSERT INTO history VALUES (2, 5, 'streamed');");
    let got = wait_for(&switchyard, 2);
    let keys: Vec<Value> = got
        .iter()
        .map(|e| serde_json::from_str::<Value>(e["key"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(
        keys,
        vec![
            json!({"account": 1, "at": 1}),
            json!({"account": 2, "at": 5})
        ],
        "{got:?}"
    );
    assert_eq!(got[0]["kind"], "read");
    assert_eq!(got[1]["kind"], "insert");
}

#[test]
fn replica_identity_full_streams_updates_and_deletes_with_the_whole_old_row() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE audit (who text, what text, n int,
                             twice int GENERATED ALWAYS AS (n * 2) STORED);
         ALTER TABLE audit REPLICA IDENTITY FULL;
         INSERT INTO audit SELECT 'u' || g, 'seed', g FROM generate_series(1, 500) g;
         UPDATE audit SET n = n + 1000 WHERE n <= 10;",
    );
    let switchyard = Switchyard::start(&config(&dsn, &["public.audit"], "initial", ""));
    let reads = wait_for(&switchyard, 500);
    assert!(reads[..500].iter().all(|e| e["kind"] == "read"));
    pg.sql(
        "app",
        "INSERT INTO audit VALUES ('alice', 'login', 1);
         UPDATE audit SET what = 'logout' WHERE who = 'alice';
         DELETE FROM audit WHERE who = 'alice';",
    );
    let got = wait_for(&switchyard, 503);
    let changes: Vec<&Value> = got[500..].iter().collect();
    let kinds: Vec<&str> = changes
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["insert", "update", "delete"]);
    let insert = &changes[0]["payload"];
    let update = &changes[1]["payload"];
    let delete = &changes[2]["payload"];
    assert_eq!(
        update["before"],
        json!({"who": "alice", "what": "login", "n": 1})
    );
    assert_eq!(
        update["after"],
        json!({"who": "alice", "what": "logout", "n": 1})
    );
    assert_eq!(
        delete["before"],
        json!({"who": "alice", "what": "logout", "n": 1})
    );
    assert_eq!(delete["after"], Value::Null);
    // The key is the row as it was before each change: the update shares the insert's
    // key (so it is ordered after it), the delete the update's new row.
    assert_eq!(insert["key"], insert["after"]);
    assert_eq!(update["key"], update["before"]);
    assert_eq!(delete["key"], delete["before"]);
    assert_eq!(changes[1]["key"], changes[0]["key"]);
    let logs = switchyard.logs();
    assert!(
        logs.contains("table public.audit: no primary key, REPLICA IDENTITY FULL"),
        "{}",
        tail(&logs, 30)
    );
}

#[test]
fn a_keyless_table_that_is_updated_is_refused_with_the_fix_and_validate_connect_explains() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE nokey (a int, b text);
         INSERT INTO nokey VALUES (1, 'x');
         UPDATE nokey SET b = 'y';
         CREATE TABLE orders (id int PRIMARY KEY, status text);
         CREATE TABLE events (at int, body text);
         CREATE TABLE parted (at int, body text) PARTITION BY RANGE (at);",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &config(
            &dsn,
            &[
                "public.nokey",
                "public.orders",
                "public.events",
                "public.missing",
                "public.parted",
            ],
            "never",
            "",
        ),
    );

    let out = cli(&["validate", "--connect"], &path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "problems fail validate:\n{stdout}");
    for line in [
        "table public.orders: primary key (id)",
        "the key is (id), and changes of one row keep their order",
        "table public.events: no primary key, REPLICA IDENTITY DEFAULT: inserts stream",
        "the key is null",
        "error: table public.nokey has no primary key and REPLICA IDENTITY DEFAULT, and it is updated or deleted from",
        "error: table public.missing does not exist",
        "error: table public.parted is partitioned and has no primary key",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    let slots = pg.sql("app", "SELECT count(*) FROM pg_replication_slots;");
    assert!(
        slots.trim().ends_with('0'),
        "validate created nothing: {slots}"
    );

    let out = cli(&["run"], &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "run must fail:\n{stderr}");
    assert!(
        stderr.contains("table public.nokey has no primary key")
            && stderr.contains("ALTER TABLE \"public\".\"nokey\" REPLICA IDENTITY FULL;"),
        "{stderr}"
    );
    assert!(
        stderr.contains("table public.missing does not exist"),
        "every problem is reported at once: {stderr}"
    );

    // With FULL identity the same table starts.
    pg.sql("app", "ALTER TABLE nokey REPLICA IDENTITY FULL;");
    let out = cli(&["validate", "--connect"], &path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("table public.nokey: no primary key, REPLICA IDENTITY FULL"),
        "{stdout}"
    );
}

#[test]
fn key_columns_that_the_table_lacks_or_that_name_an_unlisted_table_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &config(
            "postgres://127.0.0.1:1/app",
            &["public.t"],
            "never",
            r#"key_columns = { "public.other" = ["a"], "t" = [] }"#,
        ),
    );
    let out = cli(&["validate"], &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("table public.other is not one of `tables`"),
        "{stderr}"
    );
    assert!(stderr.contains("no columns are named"), "{stderr}");
}

#[test]
fn a_full_identity_snapshot_under_concurrent_updates_ends_with_the_newest_state_of_every_row() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE audit (who text, n int, twice int GENERATED ALWAYS AS (n * 2) STORED);
         ALTER TABLE audit REPLICA IDENTITY FULL;
         INSERT INTO audit SELECT 'u' || g, g FROM generate_series(1, 3000) g;",
    );
    let switchyard = Switchyard::start(&config(&dsn, &["public.audit"], "initial", ""));
    // Rows change while their chunks are being read: some before, some inside, some
    // after their window.
    for round in 1..=5 {
        pg.sql(
            "app",
            &format!(
                "UPDATE audit SET n = n + 100000 WHERE n % 7 = {round};
                 DELETE FROM audit WHERE n % 97 = {round};
                 INSERT INTO audit VALUES ('new{round}', {round});"
            ),
        );
    }
    let expected: std::collections::BTreeMap<String, i64> = pg
        .sql("app", "SELECT who, n FROM audit;")
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(w, n)| (w.to_owned(), n.parse().unwrap()))
        .collect();
    let folded = || {
        let mut state = std::collections::BTreeMap::new();
        for e in events(&switchyard) {
            let p = &e["payload"];
            match p["op"].as_str().unwrap() {
                "delete" => {
                    state.remove(p["before"]["who"].as_str().unwrap());
                }
                _ => {
                    state.insert(
                        p["after"]["who"].as_str().unwrap().to_owned(),
                        p["after"]["n"].as_i64().unwrap(),
                    );
                }
            }
        }
        state
    };
    let done = wait_until(Duration::from_secs(90), || {
        let status = cli(&["cdc", "status"], switchyard.config_path());
        String::from_utf8_lossy(&status.stdout).contains("done") && folded() == expected
    });
    let got = folded();
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(w, n)| got.get(*w) != Some(n))
        .take(5)
        .collect();
    let extra: Vec<&String> = got
        .keys()
        .filter(|w| !expected.contains_key(*w))
        .take(5)
        .collect();
    let named = |w: &str| extra.iter().any(|x| *x == w) || wrong.iter().any(|(x, _)| *x == w);
    let history: Vec<String> = events(&switchyard)
        .iter()
        .filter(|e| {
            let p = &e["payload"];
            [&p["before"]["who"], &p["after"]["who"]]
                .iter()
                .any(|w| w.as_str().is_some_and(named))
        })
        .map(|e| format!("{} {} {}", e["id"], e["kind"], e["payload"]))
        .collect();
    assert!(
        done,
        "{} rows expected, {} folded; differing: {wrong:?}; extra: {extra:?}\nevents of those rows:\n{}\n{}",
        expected.len(),
        got.len(),
        history.join("\n"),
        tail(&switchyard.logs(), 30)
    );
}
