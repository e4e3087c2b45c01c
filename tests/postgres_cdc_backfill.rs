//! Backfills a user controls, against a real, throwaway Postgres cluster: `switchyard
//! snapshot TABLE --where …` reads only the matching rows; a running snapshot can be
//! paused (also across a restart), resumed and cancelled; `cdc status` and the metrics
//! show its progress with the planner's estimate.

use std::collections::BTreeSet;
use std::time::Duration;

use switchyard_test_support::{PgCluster, Switchyard, tail};
use switchyard_tests::{read_jsonl, wait_until};

fn config(dsn: &str) -> String {
    switchyard_tests::cdc_config(
        dsn,
        "slot = \"sy_backfill\"
tables = [\"public.t\", \"public.big\", \"public.marks\"]
snapshot = \"never\"
snapshot_chunk = 10",
    )
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Distinct ids of the snapshot rows of `table` delivered so far.
fn read_ids(switchyard: &Switchyard, table: &str) -> BTreeSet<i64> {
    read_jsonl(&switchyard.dir().join("out.jsonl"))
        .iter()
        .filter(|e| e["kind"] == "read" && e["payload"]["table"] == table)
        .filter_map(|e| e["payload"]["after"]["id"].as_i64())
        .collect()
}

/// Writes a row to `marks` and waits for its event: everything the source was going to
/// send before it has been sent.
fn mark(pg: &PgCluster, switchyard: &Switchyard, n: i64) {
    pg.sql("app", &format!("INSERT INTO marks VALUES ({n})"));
    let seen = wait_until(Duration::from_secs(60), || {
        read_jsonl(&switchyard.dir().join("out.jsonl"))
            .iter()
            .any(|e| e["payload"]["table"] == "marks" && e["payload"]["after"]["id"] == n)
    });
    assert!(
        seen,
        "mark {n} not delivered\n{}",
        tail(&switchyard.logs(), 20)
    );
}

fn status(switchyard: &Switchyard) -> String {
    text(&switchyard.cli(&["cdc", "status"]))
}

#[test]
fn a_filtered_backfill_reads_only_the_matching_rows_and_bad_conditions_are_refused() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, created_at timestamptz NOT NULL);
         INSERT INTO t SELECT g, now() - g * interval '1 day' FROM generate_series(1, 1000) g;
         CREATE TABLE big (id int PRIMARY KEY); CREATE TABLE marks (id int PRIMARY KEY);
         ANALYZE t;",
    );
    let switchyard = Switchyard::start(&config(&dsn));
    let out = switchyard.cli(&[
        "snapshot",
        "public.t",
        "--where",
        "created_at > now() - interval '30 days'",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("snapshot of public.t started"),
        "{}",
        text(&out)
    );
    let done = wait_until(Duration::from_secs(60), || {
        status(&switchyard).contains("snapshot public.t: done")
    });
    assert!(done, "{}", status(&switchyard));
    let ids = read_ids(&switchyard, "t");
    assert_eq!(ids, (1..30).collect(), "only the rows of the last 30 days");
    let shown = status(&switchyard);
    assert!(
        shown.contains("where created_at > now() - interval '30 days'"),
        "{shown}"
    );

    for (bad, why) in [
        ("id >", "is not a condition on public.t"),
        ("true) UNION SELECT 1 WHERE (true", "closes a parenthesis"),
        ("id > 1; DROP TABLE t", "`;`"),
        ("no_such_column = 1", "no_such_column"),
    ] {
        let out = switchyard.cli(&["snapshot", "public.t", "--where", bad]);
        assert!(!out.status.success(), "{bad} was accepted");
        assert!(text(&out).contains(why), "{bad}: {}", text(&out));
    }
    let count: i64 = pg.sql("app", "SELECT count(*) FROM t").parse().unwrap();
    assert_eq!(count, 1000);

    // A condition the planner accepts but a row makes fail: that snapshot pauses with
    // the server's reason; the stream goes on.
    let out = switchyard.cli(&["snapshot", "public.t", "--where", "1 / (id - 500) > 0"]);
    assert!(out.status.success(), "{}", text(&out));
    let stopped = wait_until(Duration::from_secs(60), || {
        status(&switchyard).contains("division by zero")
    });
    assert!(stopped, "{}", status(&switchyard));
    assert!(status(&switchyard).contains("snapshot public.t: paused"));
    mark(&pg, &switchyard, 1);
}

#[test]
fn a_snapshot_pauses_across_a_restart_resumes_to_the_end_and_a_cancelled_one_stops() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE big (id int PRIMARY KEY);
         INSERT INTO big SELECT g FROM generate_series(1, 60000) g;
         CREATE TABLE t (id int PRIMARY KEY);
         INSERT INTO t SELECT g FROM generate_series(1, 60000) g;
         CREATE TABLE marks (id int PRIMARY KEY);
         ANALYZE big; ANALYZE t;",
    );
    let mut switchyard = Switchyard::start(&config(&dsn));
    let out = switchyard.cli(&["snapshot", "public.big"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(wait_until(Duration::from_secs(60), || !read_ids(
        &switchyard,
        "big"
    )
    .is_empty()));
    let out = switchyard.cli(&["snapshot", "public.big", "--pause"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(status(&switchyard).contains("snapshot public.big: paused"));
    // A chunk being read when the pause came may still arrive; then nothing more.
    mark(&pg, &switchyard, 1);
    let paused_at = read_ids(&switchyard, "big").len();
    assert!(paused_at < 60000, "paused too late to tell");
    mark(&pg, &switchyard, 2);
    assert_eq!(read_ids(&switchyard, "big").len(), paused_at);

    // Progress: the planner's estimate of the table, shown and exported (also while
    // paused).
    let shown = status(&switchyard);
    assert!(shown.contains("of about 60000"), "{shown}");
    // The metrics are refreshed every few seconds.
    let metrics = || switchyard_tests::metrics(&switchyard.url());
    let exported = wait_until(Duration::from_secs(30), || {
        metrics().contains("snapshot_rows_estimate{source=\"db\",table=\"public.big\"} 60000")
    });
    assert!(exported, "{}", metrics());

    // Still paused after a restart (kill -9: the pause was stored when it was asked).
    switchyard.kill9();
    switchyard.restart();
    assert!(
        wait_until(Duration::from_secs(60), || status(&switchyard)
            .contains("snapshot public.big: paused")),
        "{}",
        status(&switchyard)
    );
    mark(&pg, &switchyard, 3);
    assert_eq!(read_ids(&switchyard, "big").len(), paused_at);

    let out = switchyard.cli(&["snapshot", "public.big", "--resume"]);
    assert!(out.status.success(), "{}", text(&out));
    let complete = wait_until(Duration::from_secs(300), || {
        read_ids(&switchyard, "big").len() == 60000
    });
    assert!(complete, "{}", status(&switchyard));
    assert!(wait_until(Duration::from_secs(30), || status(&switchyard)
        .contains("snapshot public.big: done")));

    // Cancel: the snapshot stops for good, and says so.
    let out = switchyard.cli(&["snapshot", "public.t"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(wait_until(Duration::from_secs(60), || !read_ids(
        &switchyard,
        "t"
    )
    .is_empty()));
    let out = switchyard.cli(&["snapshot", "public.t", "--cancel"]);
    assert!(out.status.success(), "{}", text(&out));
    mark(&pg, &switchyard, 4);
    let cancelled_at = read_ids(&switchyard, "t").len();
    assert!(cancelled_at < 60000, "cancelled too late to tell");
    assert!(status(&switchyard).contains("snapshot public.t: cancelled"));
    let out = switchyard.cli(&["snapshot", "public.t", "--resume"]);
    assert!(
        !out.status.success(),
        "a cancelled snapshot does not resume"
    );
    assert!(text(&out).contains("was cancelled"), "{}", text(&out));
    mark(&pg, &switchyard, 5);
    assert_eq!(read_ids(&switchyard, "t").len(), cancelled_at);
}

#[test]
fn a_snapshot_read_in_parallel_ranges_under_concurrent_updates_ends_with_every_rows_newest_state() {
    let pg = std::sync::Arc::new(PgCluster::start());
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL);
         INSERT INTO big SELECT g * 2, 0 FROM generate_series(1, 20000) g;
         CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE marks (id int PRIMARY KEY);",
    );
    let config = config(&dsn)
        .replace("snapshot = \"never\"", "snapshot = \"initial\"")
        .replace(
            "snapshot_chunk = 10",
            "snapshot_chunk = 100\nsnapshot_parallel = 4",
        );
    let switchyard = Switchyard::start(&config);
    // Updates, deletes and inserts all through the snapshot; the inserts land between
    // existing keys all over the table, inside the ranges being read.
    let writer = {
        let pg = pg.clone();
        std::thread::spawn(move || {
            for round in 0..40 {
                pg.sql(
                    "app",
                    &format!(
                        "UPDATE big SET v = v + 1 WHERE id % 37 = {};
                         DELETE FROM big WHERE id = {};
                         INSERT INTO big SELECT g * 2 + 1, -1
                             FROM generate_series({}, 20000, 997) g;",
                        round % 37,
                        round * 800 + 8,
                        round * 13 + 1
                    ),
                );
            }
        })
    };
    writer.join().unwrap();
    mark(&pg, &switchyard, 1);
    let done = wait_until(Duration::from_secs(120), || {
        status(&switchyard).contains("snapshot public.big: done")
    });
    assert!(done, "{}", status(&switchyard));
    mark(&pg, &switchyard, 2);
    // Fold every event of the table in order: the result is the table.
    let mut folded = std::collections::BTreeMap::new();
    for e in read_jsonl(&switchyard.dir().join("out.jsonl")) {
        if e["payload"]["table"] != "big" {
            continue;
        }
        match e["kind"].as_str().unwrap() {
            "read" | "insert" | "update" => {
                let after = &e["payload"]["after"];
                folded.insert(after["id"].as_i64().unwrap(), after["v"].as_i64().unwrap());
            }
            "delete" => {
                folded.remove(&e["payload"]["before"]["id"].as_i64().unwrap());
            }
            _ => {}
        }
    }
    let table: std::collections::BTreeMap<i64, i64> = pg
        .sql("app", "SELECT id, v FROM big ORDER BY id")
        .lines()
        .map(|l| {
            let (id, v) = l.split_once('|').unwrap();
            (id.parse().unwrap(), v.parse().unwrap())
        })
        .collect();
    assert_eq!(folded.len(), table.len());
    let differ: Vec<_> = table
        .iter()
        .filter(|(id, v)| folded.get(id) != Some(v))
        .take(5)
        .collect();
    assert!(
        differ.is_empty(),
        "rows whose last event is not their state: {differ:?}"
    );
    // The ranges were read over several connections.
    let backends: i64 = pg
        .sql(
            "app",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' \
             AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .parse()
        .unwrap();
    assert!(backends >= 4, "{backends} connections read the snapshot");
}
