//! Large transactions against a real, throwaway Postgres cluster: with protocol version 2
//! the server streams a transaction that outgrows `logical_decoding_work_mem` while it
//! runs, instead of spilling it to its own disk; switchyard holds it (memory, then its
//! own spill file) and delivers it only at its commit, in commit order with the small
//! transactions around it. An aborted transaction, and a rolled-back subtransaction of a
//! committed one, deliver nothing.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Deserialize;
use switchyard_test_support::{PgCluster, Switchyard, tail};
use switchyard_tests::wait_until;

const BIG: usize = 2_000_000;
const DOOMED: usize = 500_000;
/// Rows of the big transaction's subtransaction that rolls back.
const ROLLED_BACK: usize = 50_000;
/// Rows the big transaction inserts after its rollback to the savepoint.
const AFTER_SAVEPOINT: usize = 1_000;

fn config(dsn: &str) -> String {
    switchyard_tests::cdc_config(
        dsn,
        "slot = \"sy_large\"
tables = [\"public.big\", \"public.small\", \"public.doomed\"]
snapshot = \"never\"",
    )
}

#[derive(Deserialize)]
struct Line {
    kind: String,
    payload: Payload,
}

#[derive(Deserialize)]
struct Payload {
    table: Option<String>,
    lsn: Option<String>,
    after: Option<Row>,
}

#[derive(Deserialize)]
struct Row {
    id: i64,
}

/// What the file sink delivered so far, read incrementally.
#[derive(Default)]
struct Seen {
    /// Lines that are not JSON are skipped (a line torn by a kill) instead of failing.
    lenient: bool,
    torn: usize,
    offset: u64,
    partial: String,
    /// Deliveries per id of `big`, index `id - 1`.
    big: Vec<u8>,
    big_total: usize,
    /// Rows of `big` with ids outside 1..=BIG+AFTER_SAVEPOINT (the rolled-back ones).
    big_foreign: Vec<i64>,
    small: Vec<u8>,
    small_total: usize,
    doomed: usize,
    last_lsn: u64,
    out_of_order: Vec<(u64, u64)>,
}

fn lsn(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').expect("an LSN");
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

impl Seen {
    fn read(&mut self, path: &Path) {
        let Ok(mut file) = std::fs::File::open(path) else {
            return;
        };
        file.seek(SeekFrom::Start(self.offset)).unwrap();
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line = std::mem::take(&mut self.partial);
        loop {
            let n = reader.read_line(&mut line).unwrap();
            if n == 0 {
                break;
            }
            self.offset += n as u64;
            if !line.ends_with('\n') {
                // A line the sink is still writing: finished at the next read.
                break;
            }
            self.record(&line);
            line.clear();
        }
        self.partial = line;
    }

    fn record(&mut self, line: &str) {
        let event: Line = match serde_json::from_str(line) {
            Ok(event) => event,
            Err(_) if self.lenient => {
                self.torn += 1;
                return;
            }
            Err(e) => panic!("{e}: {line}"),
        };
        if event.kind == "schema" {
            return;
        }
        let p = event.payload;
        let at = lsn(p.lsn.as_deref().expect("a change has its commit LSN"));
        if at < self.last_lsn {
            self.out_of_order.push((self.last_lsn, at));
        }
        self.last_lsn = at;
        let id = p.after.expect("inserts only").id;
        match p.table.as_deref() {
            Some("big") => {
                self.big_total += 1;
                match usize::try_from(id - 1).ok().filter(|i| *i < self.big.len()) {
                    Some(i) => self.big[i] = self.big[i].saturating_add(1),
                    None => self.big_foreign.push(id),
                }
            }
            Some("small") => {
                self.small_total += 1;
                let i = usize::try_from(id - 1).unwrap();
                if i >= self.small.len() {
                    self.small.resize(i + 1, 0);
                }
                self.small[i] = self.small[i].saturating_add(1);
            }
            Some("doomed") => self.doomed += 1,
            other => panic!("an event of an unexpected table {other:?}"),
        }
    }
}

/// Peak resident memory of a process, from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// A cluster that streams any transaction over 1 MB (protocol 2), with the tables of
/// these tests, and switchyard replicating from it.
fn streaming() -> (PgCluster, Switchyard) {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE big (id int PRIMARY KEY, v int);
         CREATE TABLE small (id int PRIMARY KEY);
         CREATE TABLE doomed (id int PRIMARY KEY);
         ALTER SYSTEM SET logical_decoding_work_mem = '1MB';
         SELECT pg_reload_conf();",
    );
    let switchyard = Switchyard::start(&config(&dsn));
    assert!(
        wait_until(Duration::from_secs(60), || switchyard
            .logs()
            .contains("replication started")),
        "replication did not start\n{}",
        tail(&switchyard.logs(), 30)
    );
    (pg, switchyard)
}

#[test]
fn a_two_million_row_transaction_streams_in_commit_order_and_aborted_work_delivers_nothing() {
    let (pg, mut switchyard) = streaming();
    // The log is coloured: drop the escape sequences before reading fields.
    let plain = |text: String| {
        let mut out = String::new();
        let mut escape = false;
        for c in text.chars() {
            match (escape, c) {
                (false, '\u{1b}') => escape = true,
                (true, 'm') => escape = false,
                (true, _) => {}
                (false, c) => out.push(c),
            }
        }
        out
    };
    assert!(
        plain(switchyard.logs()).contains("protocol=2"),
        "protocol version 2 on Postgres 14+\n{}",
        tail(&switchyard.logs(), 30)
    );

    // Small transactions, one row each, all along.
    let pg = Arc::new(pg);
    let stop = Arc::new(AtomicBool::new(false));
    let small_done = Arc::new(AtomicUsize::new(0));
    let smalls = {
        let (pg, stop, done) = (pg.clone(), stop.clone(), small_done.clone());
        std::thread::spawn(move || {
            let mut id = 0;
            while !stop.load(Ordering::Acquire) {
                id += 1;
                pg.sql("app", &format!("INSERT INTO small VALUES ({id})"));
                done.store(id, Ordering::Release);
            }
        })
    };
    let doomed = {
        let pg = pg.clone();
        std::thread::spawn(move || {
            pg.sql(
                "app",
                &format!(
                    "BEGIN;
                     INSERT INTO doomed SELECT g FROM generate_series(1, {DOOMED}) g;
                     ROLLBACK;"
                ),
            );
        })
    };
    pg.sql(
        "app",
        &format!(
            "BEGIN;
             INSERT INTO big SELECT g, g FROM generate_series(1, {BIG}) g;
             SAVEPOINT s;
             INSERT INTO big SELECT -g, g FROM generate_series(1, {ROLLED_BACK}) g;
             ROLLBACK TO SAVEPOINT s;
             INSERT INTO big SELECT g, g FROM generate_series({}, {}) g;
             COMMIT;",
            BIG + 1,
            BIG + AFTER_SAVEPOINT
        ),
    );
    doomed.join().unwrap();
    // A few more small ones after the big commit, then stop.
    let at_commit = small_done.load(Ordering::Acquire);
    assert!(wait_until(Duration::from_secs(30), || small_done
        .load(Ordering::Acquire)
        >= at_commit + 5));
    stop.store(true, Ordering::Release);
    smalls.join().unwrap();
    let small_total = small_done.load(Ordering::Acquire);

    let out = switchyard.dir().join("out.jsonl");
    let mut seen = Seen {
        big: vec![0; BIG + AFTER_SAVEPOINT],
        ..Seen::default()
    };
    let delivered = wait_until(Duration::from_secs(900), || {
        seen.read(&out);
        seen.big_total >= BIG + AFTER_SAVEPOINT && seen.small_total >= small_total
    });
    assert!(
        delivered,
        "delivered {} of {} big rows and {} of {small_total} small ones\n{}",
        seen.big_total,
        BIG + AFTER_SAVEPOINT,
        seen.small_total,
        tail(&switchyard.logs(), 30)
    );
    let peak = peak_rss_kib(switchyard.pid().expect("running"));
    eprintln!(
        "switchyard peak RSS {} MiB over {} rows",
        peak / 1024,
        seen.big_total + seen.small_total
    );

    // Every committed row once, in commit order; nothing rolled back.
    let twice = seen.big.iter().filter(|n| **n > 1).count();
    let missing = seen.big.iter().filter(|n| **n == 0).count();
    assert_eq!(
        (missing, twice),
        (0, 0),
        "rows of the big transaction missing / delivered twice"
    );
    assert!(
        seen.big_foreign.is_empty(),
        "rows of the rolled-back subtransaction were delivered: {:?}",
        &seen.big_foreign[..seen.big_foreign.len().min(5)]
    );
    assert_eq!(
        seen.doomed, 0,
        "rows of the aborted transaction were delivered"
    );
    assert_eq!(seen.small.len(), small_total);
    assert!(
        seen.small.iter().all(|n| *n == 1),
        "every small transaction's row once"
    );
    assert!(
        seen.out_of_order.is_empty(),
        "events out of commit order: {:?}",
        &seen.out_of_order[..seen.out_of_order.len().min(5)]
    );

    // The server streamed instead of spilling; switchyard spilled past its memory bound.
    // Slot statistics are reported a little after the fact: wait for the streaming.
    let stats = || {
        pg.sql(
            "app",
            "SELECT spill_bytes, stream_bytes FROM pg_stat_replication_slots \
             WHERE slot_name = 'sy_large'",
        )
    };
    let streamed = wait_until(Duration::from_secs(30), || {
        stats()
            .trim()
            .split_once('|')
            .is_some_and(|(_, stream)| stream.parse::<u64>().unwrap_or(0) > 0)
    });
    let stats = stats();
    assert!(streamed, "the transaction was not streamed: {stats}");
    let (spill, _) = stats.trim().split_once('|').expect("slot statistics");
    assert_eq!(spill, "0", "the walsender spilled to disk: {stats}");
    let status = switchyard.cli(&["cdc", "status"]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.contains("spilled to disk since the start") && !status.contains("0 B spilled"),
        "switchyard's own spill file held the transaction beyond its memory bound: {status}"
    );
    // Bounded: far below what 2M buffered events would take.
    assert!(
        peak < 400 * 1024,
        "peak RSS {} MiB for a 2M-row transaction",
        peak / 1024
    );
    assert!(switchyard.terminate().success());
}

#[test]
fn a_kill_while_a_spilled_transaction_is_delivered_loses_none_of_it_and_its_file_goes() {
    const ROWS: usize = 600_000;
    let (pg, mut switchyard) = streaming();
    pg.sql(
        "app",
        &format!("INSERT INTO big SELECT g, g FROM generate_series(1, {ROWS}) g;"),
    );
    let out = switchyard.dir().join("out.jsonl");
    let mut seen = Seen {
        lenient: true,
        big: vec![0; ROWS],
        ..Seen::default()
    };
    // Part of the transaction is out: kill the process in the middle of it.
    let started = wait_until(Duration::from_secs(300), || {
        seen.read(&out);
        seen.big_total >= ROWS / 5
    });
    assert!(started, "{}", tail(&switchyard.logs(), 30));
    // Being delivered from its spill file, which exists until the transaction is out.
    let spill = switchyard.data_dir().join("cdc/db/spill");
    let files = std::fs::read_dir(&spill).map_or(0, |d| d.count());
    switchyard.kill9();
    seen.read(&out);
    assert!(
        seen.big_total < ROWS,
        "the kill came after the whole transaction was out ({} rows)",
        seen.big_total
    );
    assert_eq!(files, 1, "the transaction was in a spill file at the kill");
    // A line cut by the kill is not an event; the sink goes on after it.
    seen.partial.clear();
    switchyard.restart();
    let complete = wait_until(Duration::from_secs(600), || {
        seen.read(&out);
        seen.big.iter().all(|n| *n > 0)
    });
    let missing = seen.big.iter().filter(|n| **n == 0).count();
    assert!(
        complete,
        "{missing} rows of the transaction never arrived\n{}",
        tail(&switchyard.logs(), 30)
    );
    // Sent again whole after the restart, spilled again, delivered, and its file gone.
    let status = String::from_utf8_lossy(&switchyard.cli(&["cdc", "status"]).stdout).into_owned();
    assert!(
        status.contains("spilled to disk since the start") && !status.contains("0 B spilled"),
        "{status}"
    );
    let emptied = wait_until(Duration::from_secs(30), || {
        std::fs::read_dir(&spill).is_ok_and(|d| d.count() == 0)
    });
    assert!(
        emptied,
        "a spill file outlived its transaction in {}",
        spill.display()
    );
}
