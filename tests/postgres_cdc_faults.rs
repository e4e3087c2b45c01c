//! Fault tests of Postgres change data capture, against real throwaway clusters:
//!
//! * 100k changes over 10 tables in random transactions while switchyard is killed with
//!   SIGKILL five times: no change is missing and no key's changes are reordered
//!   (duplicates are allowed by at-least-once, and counted);
//! * Postgres itself crashes and restarts mid-stream: switchyard reconnects by itself;
//! * a 100k-row snapshot, interrupted by SIGKILL twice, resumes where it was and ends
//!   with every row's newest state last, although rows change while it runs.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::Value;
use switchyard_test_support::{PgCluster, Switchyard, Tracked, check, tail};
use switchyard_tests::{read_jsonl, wait_until};

const TABLES: usize = 10;

fn config(dsn: &str, tables: &[String], snapshot: &str) -> String {
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
shutdown_timeout = "2s"

[sources.db]
type = "postgres_cdc"
dsn = "{dsn}"
slot = "sy_faults"
tables = [{tables}]
snapshot = "{snapshot}"

[pipelines.cdc]
from = ["db"]
to = ["out"]
max_in_flight = 4096

[sinks.out]
type = "file"
path = "{{dir}}/out.jsonl"
"#
    )
}

/// A small deterministic generator (the test must not depend on a random seed source).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n
    }
}

/// Changes as the file sink recorded them: (table, id, seq) with the event id.
fn delivered(switchyard: &Switchyard) -> Vec<Tracked> {
    read_jsonl(&switchyard.dir().join("out.jsonl"))
        .iter()
        .filter_map(|e| {
            let p = &e["payload"];
            let row = p.get("after").filter(|a| !a.is_null())?;
            let key = format!("{}:{}", p["table"].as_str()?, row["id"].as_u64()?);
            let seq = row["seq"].as_u64()?;
            Some(Tracked::new(format!("{key}:{seq}"), key, seq))
        })
        .collect()
}

fn unique(tracked: &[Tracked]) -> usize {
    tracked
        .iter()
        .map(|t| &t.id)
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// Creates `t0..t9 (id int primary key, seq int, pad text)` and returns their names.
fn create_tables(pg: &PgCluster) -> Vec<String> {
    let mut sql = String::new();
    let mut names = Vec::new();
    for t in 0..TABLES {
        sql.push_str(&format!(
            "CREATE TABLE t{t} (id int PRIMARY KEY, seq int NOT NULL, pad text);\n"
        ));
        names.push(format!("public.t{t}"));
    }
    pg.sql("app", &sql);
    names
}

/// SQL for `changes` row changes in random transactions: each key is inserted with seq 0
/// and then updated to seq 1, 2, … in order; transactions mix tables and keys.
fn workload(rng: &mut Lcg, keys_per_table: u32, seqs: u64) -> (Vec<String>, Vec<Tracked>) {
    let mut next: Vec<(usize, u32, u64)> = (0..TABLES)
        .flat_map(|t| (1..=keys_per_table).map(move |id| (t, id, 0)))
        .collect();
    let mut expected = Vec::new();
    let mut transactions = Vec::new();
    while !next.is_empty() {
        let size = 1 + rng.next(40);
        let mut sql = String::from("BEGIN;\n");
        for _ in 0..size {
            if next.is_empty() {
                break;
            }
            let i = rng.next(next.len());
            let (t, id, seq) = next[i];
            if seq == 0 {
                sql.push_str(&format!("INSERT INTO t{t} VALUES ({id}, 0, 'p');\n"));
            } else {
                sql.push_str(&format!("UPDATE t{t} SET seq = {seq} WHERE id = {id};\n"));
            }
            let key = format!("t{t}:{id}");
            expected.push(Tracked::new(format!("{key}:{seq}"), key, seq));
            if seq + 1 == seqs {
                next.swap_remove(i);
            } else {
                next[i].2 += 1;
            }
        }
        sql.push_str("COMMIT;\n");
        transactions.push(sql);
    }
    (transactions, expected)
}

#[test]
fn kill9_five_times_during_100k_changes_over_10_tables_loses_nothing() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    let tables = create_tables(&pg);
    let mut switchyard = Switchyard::start(&config(&dsn, &tables, "never"));
    // 10 tables × 500 keys × 20 changes = 100k changes.
    let (transactions, expected) = workload(&mut Lcg(7), 500, 20);
    assert_eq!(expected.len(), 100_000);

    let batches: Vec<String> = transactions
        .chunks(transactions.len().div_ceil(30))
        .map(|c| c.concat())
        .collect();
    let written = std::sync::atomic::AtomicUsize::new(0);
    let mut kills = 0;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for batch in &batches {
                pg.sql("app", batch);
                written.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        // Kill while the writer is still writing: changes are streaming and more wait in
        // the slot.
        for part in [3, 8, 13, 18, 23] {
            let reached = wait_until(Duration::from_secs(120), || {
                written.load(std::sync::atomic::Ordering::SeqCst) >= part
            });
            assert!(reached, "the writer stalled");
            switchyard.kill9();
            kills += 1;
            assert!(
                written.load(std::sync::atomic::Ordering::SeqCst) < batches.len(),
                "killed while changes were still being written"
            );
            switchyard.restart();
        }
    });
    assert_eq!(kills, 5);
    let complete = wait_until(Duration::from_secs(240), || {
        unique(&delivered(&switchyard)) >= expected.len()
    });
    let got = delivered(&switchyard);
    let report = check(&expected, &got);
    println!("postgres kill -9 ×{kills}: {report}");
    assert!(
        complete && report.lost == 0,
        "{report}\n--- log ---\n{}",
        tail(&switchyard.logs(), 60)
    );
    assert_eq!(report.reordered, 0, "{report}");
    assert_eq!(switchyard.runs(), 6);
}

#[test]
fn a_postgres_crash_mid_stream_is_survived_without_restarting_switchyard() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    let tables = create_tables(&pg);
    let switchyard = Switchyard::start(&config(&dsn, &tables, "never"));
    let (transactions, expected) = workload(&mut Lcg(11), 100, 10);
    let half = transactions.len() / 2;
    pg.sql("app", &transactions[..half].concat());
    wait_until(Duration::from_secs(30), || {
        !delivered(&switchyard).is_empty()
    });
    pg.stop_immediate();
    // While Postgres is down switchyard keeps running and retrying.
    assert!(
        switchyard_test_support::http_status(switchyard.addr(), "/healthz") == Some(200),
        "switchyard stays up while Postgres is down"
    );
    pg.start_server();
    pg.sql("app", &transactions[half..].concat());
    let complete = wait_until(Duration::from_secs(120), || {
        unique(&delivered(&switchyard)) >= expected.len()
    });
    let report = check(&expected, &delivered(&switchyard));
    println!("postgres crash: {report}");
    assert!(
        complete && report.lost == 0 && report.reordered == 0,
        "{report}\n--- log ---\n{}",
        tail(&switchyard.logs(), 60)
    );
    assert_eq!(switchyard.runs(), 1, "switchyard was not restarted");
    assert!(
        switchyard.logs().contains("replication started"),
        "the log shows the reconnection"
    );
}

#[test]
fn an_interrupted_snapshot_resumes_and_ends_with_the_newest_state_of_every_row() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE big (id int PRIMARY KEY, seq int NOT NULL, pad text);
         INSERT INTO big SELECT g, 0, repeat('x', 50) FROM generate_series(1, 100000) g;",
    );
    let mut switchyard = Switchyard::start(&config(&dsn, &["public.big".into()], "initial"));
    let reads = |s: &Switchyard| {
        read_jsonl(&s.dir().join("out.jsonl"))
            .iter()
            .filter(|e| e["kind"] == "read")
            .count()
    };
    // Rows change while the snapshot runs: every 997th row, twice.
    for (round, threshold) in [(1, 20_000), (2, 50_000)] {
        assert!(
            wait_until(Duration::from_secs(120), || reads(&switchyard) >= threshold),
            "snapshot progress stalled at {} rows\n{}",
            reads(&switchyard),
            tail(&switchyard.logs(), 40)
        );
        pg.sql(
            "app",
            &format!("UPDATE big SET seq = {round} WHERE id % 997 = 0;"),
        );
        switchyard.kill9();
        switchyard.restart();
    }
    let all_rows = wait_until(Duration::from_secs(240), || {
        let mut seen = std::collections::HashSet::new();
        for e in read_jsonl(&switchyard.dir().join("out.jsonl")) {
            if let Some(id) = e["payload"]["after"]["id"].as_u64() {
                seen.insert(id);
            }
        }
        seen.len() == 100_000
    });
    if !all_rows {
        let mut seen = std::collections::BTreeSet::new();
        for e in read_jsonl(&switchyard.dir().join("out.jsonl")) {
            if let Some(id) = e["payload"]["after"]["id"].as_u64() {
                seen.insert(id);
            }
        }
        let missing: Vec<u64> = (1..=100_000).filter(|i| !seen.contains(i)).collect();
        panic!(
            "{} rows missing, first {:?} last {:?}\nstate: {}\n{}",
            missing.len(),
            missing.first(),
            missing.last(),
            std::fs::read_to_string(switchyard.data_dir().join("cdc/db/state.json"))
                .unwrap_or_default(),
            tail(&switchyard.logs(), 60)
        );
    }
    // The snapshot is complete once its status says so.
    let status_done = wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(switchyard.data_dir().join("cdc/db/state.json"))
            .map(|s| s.contains("\"done\": true"))
            .unwrap_or(false)
    });
    assert!(status_done, "the snapshot's progress is stored as done");

    // Every row's last state is the newest: the database's.
    let truth: HashMap<u64, u64> = pg
        .sql("app", "SELECT id, seq FROM big WHERE seq > 0")
        .lines()
        .map(|l| {
            let (id, seq) = l.split_once('|').unwrap();
            (id.parse().unwrap(), seq.parse().unwrap())
        })
        .collect();
    assert_eq!(truth.len(), 100, "rows changed during the snapshot");
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    let mut reads_of_first_row = 0;
    for e in read_jsonl(&switchyard.dir().join("out.jsonl")) {
        let after: &Value = &e["payload"]["after"];
        if let (Some(id), Some(seq)) = (after["id"].as_u64(), after["seq"].as_u64()) {
            last.insert(id, seq);
            if id == 1 && e["kind"] == "read" {
                reads_of_first_row += 1;
            }
        }
    }
    for (id, seq) in &last {
        let want = truth.get(id).copied().unwrap_or(0);
        assert_eq!(
            *seq, want,
            "row {id} ends with seq {seq}, the database has {want}"
        );
    }
    assert_eq!(
        reads_of_first_row, 1,
        "the restarts resumed mid-table instead of starting the snapshot again"
    );
    println!(
        "snapshot of 100k rows with 2 kills: {} read events in total",
        reads(&switchyard)
    );
}

#[test]
fn a_stalled_replication_connection_resumes_without_losing_a_change() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    let tables = create_tables(&pg);
    let switchyard = Switchyard::start(&config(&dsn, &tables, "never"));
    let (transactions, expected) = workload(&mut Lcg(3), 50, 10);
    let third = transactions.len() / 3;
    pg.sql("app", &transactions[..third].concat());
    // Every change of the first part arrives before the stall, so what flows during it
    // can only come from a connection that is not stalled.
    let first_part: usize = transactions[..third]
        .iter()
        .map(|t| t.matches(";\n").count() - 2)
        .sum();
    assert!(wait_until(Duration::from_secs(60), || unique(&delivered(
        &switchyard
    )) >= first_part));
    // Freeze the server side of the replication connection (its walsender), as a
    // network stall would, while more changes are committed.
    let walsender: i32 = pg
        .sql(
            "app",
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'sy_faults'",
        )
        .trim()
        .parse()
        .expect("the slot is active");
    // SAFETY: kill(2) on a process id; no memory is involved.
    assert_eq!(unsafe { libc::kill(walsender, libc::SIGSTOP) }, 0);
    pg.sql("app", &transactions[third..2 * third].concat());
    let stalled_at = unique(&delivered(&switchyard));
    assert!(
        !wait_until(Duration::from_secs(3), || unique(&delivered(&switchyard))
            > stalled_at + 50),
        "nothing flows while the connection is stalled"
    );
    assert_eq!(unsafe { libc::kill(walsender, libc::SIGCONT) }, 0);
    pg.sql("app", &transactions[2 * third..].concat());
    let complete = wait_until(Duration::from_secs(120), || {
        unique(&delivered(&switchyard)) >= expected.len()
    });
    let report = check(&expected, &delivered(&switchyard));
    println!("replication stall: {report}");
    assert!(
        complete && report.lost == 0 && report.reordered == 0,
        "{report}\n{}",
        tail(&switchyard.logs(), 40)
    );
}
