//! Several instances with one `postgres_cdc` source, against a real throwaway cluster:
//! one reads the slot (the holder of the slot's advisory lock), the others wait as
//! standbys and take over.
//!
//! * three instances share a webhook receiver under a steady write load; the leader is
//!   killed with SIGKILL ten times (and started again as a standby): no committed change
//!   is missing, no key's changes are reordered, duplicates are counted, takeover times
//!   (kill → the slot's new walsender) are printed, and polling `pg_stat_replication`
//!   never sees two readers of the slot;
//! * the leader's connections to Postgres are cut (a proxy that stops forwarding and
//!   keeps the sockets open): it reports standby before the other instance leads, and
//!   nothing is lost;
//! * a standby that takes over a half-done snapshot resumes it from the progress the
//!   leader stored in the source database (`switchyard.cdc_state`), not from its start;
//! * a snapshot request sent to a standby is answered at once that it goes to the leader
//!   (it is not kept to run when the standby leads, much later).

use std::collections::HashSet;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_test_support::{
    Behaviour, Options, PgCluster, Switchyard, Tracked, WebhookReceiver, check, tail,
};
use switchyard_tests::{WEBHOOK_SECRET, wait_until};

const SLOT: &str = "sy_ha";
/// Keys the writer updates in turn.
const KEYS: u64 = 100;

fn config(dsn: &str, url: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"
shutdown_timeout = "2s"
admin_token = "admin-secret-0123456789"

[sources.db]
type = "postgres_cdc"
dsn = "{dsn}"
slot = "{SLOT}"
tables = ["public.t"]
snapshot = "never"

[pipelines.cdc]
from = ["db"]
to = ["hook"]
max_in_flight = 4096

[sinks.hook]
type = "webhook"
url = "{url}"
secret = "{WEBHOOK_SECRET}"
concurrency = 8
retry = {{ max_attempts = 100, initial = "10ms", max = "200ms" }}
"#
    )
}

/// Starts an instance that may become a standby: alive (`/healthz`) counts as started.
fn start_instance(dsn: &str, url: &str) -> Switchyard {
    Switchyard::start_with(
        &config(dsn, url),
        Options {
            ready_path: Some("/healthz"),
            ..Options::default()
        },
    )
}

/// `GET path`: the status and the body (`None` when there is no answer).
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let timeout = Duration::from_secs(1);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// `POST path` with the admin token and a JSON body: the status and the body (`None`
/// when there is no answer within `timeout`).
fn admin_post(
    addr: SocketAddr,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer admin-secret-0123456789\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

fn is_leader(s: &Switchyard) -> bool {
    get(s.addr(), "/readyz").is_some_and(|(status, _)| status == 200)
}

fn is_standby(s: &Switchyard) -> bool {
    get(s.addr(), "/readyz").is_some_and(|(status, body)| {
        status == 503 && body.contains("standby") && body.contains(SLOT)
    })
}

/// The one instance that reports itself leader, waiting for there to be exactly one.
fn leader(instances: &[Switchyard]) -> usize {
    let mut found = None;
    let one = wait_until(Duration::from_secs(30), || {
        let leaders: Vec<usize> = (0..instances.len())
            .filter(|&i| is_leader(&instances[i]))
            .collect();
        found = leaders.first().copied();
        leaders.len() == 1
    });
    assert!(one, "no single leader among the instances");
    found.expect("one leader")
}

/// The pid of the walsender reading the slot, if one does.
fn slot_reader(pg: &PgCluster) -> Option<u32> {
    pg.sql(
        "app",
        &format!("SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{SLOT}'"),
    )
    .trim()
    .parse()
    .ok()
}

/// Sets its flags when dropped: a failed assertion inside a thread scope still stops the
/// writer and the watcher, so the scope ends and the failure shows.
struct StopOnDrop<'a>(&'a [&'a AtomicBool]);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        for flag in self.0 {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

/// Polls `pg_stat_replication` until `stop`: the most walsenders streaming at once.
fn watch_readers(pg: &PgCluster, stop: &AtomicBool, most: &AtomicUsize) {
    while !stop.load(Ordering::SeqCst) {
        let readers: usize = pg
            .sql(
                "app",
                "SELECT count(*) FROM pg_stat_replication WHERE state IN ('streaming', 'catchup')",
            )
            .trim()
            .parse()
            .unwrap_or(0);
        most.fetch_max(readers, Ordering::SeqCst);
    }
}

/// Writes until `stop`: transactions of ten changes, each the next value of a key
/// (inserted with seq 0, then updated to 1, 2, …). Returns the committed changes.
fn write_load(pg: &PgCluster, stop: &AtomicBool, committed: &AtomicUsize) -> Vec<Tracked> {
    let mut done = Vec::new();
    let mut next_seq = vec![0u64; KEYS as usize];
    let mut key = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let mut sql = String::new();
        let mut batch = Vec::new();
        for _ in 0..5 {
            sql.push_str("BEGIN;\n");
            for _ in 0..10 {
                let seq = next_seq[key];
                if seq == 0 {
                    sql.push_str(&format!("INSERT INTO t VALUES ({key}, 0);\n"));
                } else {
                    sql.push_str(&format!("UPDATE t SET seq = {seq} WHERE id = {key};\n"));
                }
                batch.push(Tracked::new(format!("{key}:{seq}"), key.to_string(), seq));
                next_seq[key] += 1;
                key = (key + 1) % KEYS as usize;
            }
            sql.push_str("COMMIT;\n");
        }
        pg.sql("app", &sql);
        done.extend(batch);
        committed.store(done.len(), Ordering::SeqCst);
        // A steady load, not a flood: the instances are debug builds on a small machine.
        std::thread::sleep(Duration::from_millis(20));
    }
    done
}

/// The changes the receiver got, in arrival order (duplicates included).
fn delivered(receiver: &WebhookReceiver) -> Vec<Tracked> {
    receiver
        .accepted()
        .iter()
        .filter_map(|r| {
            let body: Value = serde_json::from_slice(&r.body).ok()?;
            let payload = body.get("payload").unwrap_or(&body);
            let row = payload.get("after").filter(|a| !a.is_null())?;
            let key = row["id"].as_u64()?;
            let seq = row["seq"].as_u64()?;
            Some(Tracked::new(format!("{key}:{seq}"), key.to_string(), seq))
        })
        .collect()
}

fn unique(tracked: &[Tracked]) -> usize {
    tracked.iter().map(|t| &t.id).collect::<HashSet<_>>().len()
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let index = (sorted.len() * p).div_ceil(100).saturating_sub(1);
    sorted[index.min(sorted.len() - 1)]
}

fn cluster() -> (PgCluster, String) {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, seq int NOT NULL);",
    );
    (pg, dsn)
}

#[test]
fn three_instances_one_reader_the_leader_killed_ten_times_loses_nothing() {
    let (pg, dsn) = cluster();
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let mut instances: Vec<Switchyard> = (0..3)
        .map(|_| start_instance(&dsn, &receiver.url()))
        .collect();
    let stop_writer = AtomicBool::new(false);
    let stop_watch = AtomicBool::new(false);
    let committed = AtomicUsize::new(0);
    let most_readers = AtomicUsize::new(0);
    let mut takeovers = Vec::new();
    let expected = std::thread::scope(|scope| {
        let flags = [&stop_writer, &stop_watch];
        let _stop = StopOnDrop(&flags);
        let writer = scope.spawn(|| write_load(&pg, &stop_writer, &committed));
        let watcher = scope.spawn(|| watch_readers(&pg, &stop_watch, &most_readers));
        for round in 0..10 {
            let before = unique(&delivered(&receiver));
            let progressed = wait_until(Duration::from_secs(60), || {
                unique(&delivered(&receiver)) >= before + 200
            });
            assert!(
                progressed,
                "round {round}: no deliveries from the leader\n{}",
                logs(&instances)
            );
            let old = leader(&instances);
            let old_reader = slot_reader(&pg);
            assert!(old_reader.is_some(), "the leader reads the slot");
            let killed = Instant::now();
            instances[old].kill9();
            let mut new_reader = None;
            let taken = wait_until(Duration::from_secs(30), || {
                new_reader = slot_reader(&pg).filter(|pid| Some(*pid) != old_reader);
                new_reader.is_some()
            });
            assert!(
                taken,
                "round {round}: no instance took over\n{}",
                logs(&instances)
            );
            takeovers.push(killed.elapsed());
            instances[old].restart();
            assert!(
                wait_until(Duration::from_secs(30), || is_standby(&instances[old])),
                "round {round}: the restarted instance is not a standby\n{}",
                tail(&instances[old].logs(), 30)
            );
        }
        stop_writer.store(true, Ordering::SeqCst);
        let expected = writer.join().expect("writer");
        stop_watch.store(true, Ordering::SeqCst);
        watcher.join().expect("watcher");
        expected
    });
    let complete = wait_until(Duration::from_secs(60), || {
        unique(&delivered(&receiver)) >= expected.len()
    });
    let report = check(&expected, &delivered(&receiver));
    takeovers.sort();
    println!(
        "postgres HA, leader killed ×{}: {report}; takeover (kill → new walsender) p50 {:?} p99 {:?} max {:?}",
        takeovers.len(),
        percentile(&takeovers, 50),
        percentile(&takeovers, 99),
        takeovers.last().expect("ten takeovers")
    );
    assert!(
        complete && report.lost == 0,
        "{report}\n{}",
        logs(&instances)
    );
    assert_eq!(report.reordered, 0, "{report}");
    assert_eq!(
        most_readers.load(Ordering::SeqCst),
        1,
        "never more (nor fewer, at some point) than one reader of the slot"
    );
    assert_eq!(committed.load(Ordering::SeqCst), expected.len());
}

/// The last lines of every instance's log, for failure messages.
fn logs(instances: &[Switchyard]) -> String {
    instances
        .iter()
        .enumerate()
        .map(|(i, s)| format!("--- instance {i} ---\n{}", tail(&s.logs(), 25)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A TCP proxy to Postgres that can be told to stop forwarding: then it keeps every
/// socket open and passes nothing either way, like a network that drops packets.
struct CutProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    _runtime: tokio::runtime::Runtime,
}

impl CutProxy {
    fn start(upstream: u16) -> Self {
        let runtime = switchyard_tests::runtime();
        let cut = Arc::new(AtomicBool::new(false));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("binding the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let flag = cut.clone();
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pump(cr, sw, flag.clone()));
                    tokio::spawn(pump(sr, cw, flag));
                });
            }
        });
        Self {
            port,
            cut,
            _runtime: runtime,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either closes; once cut, holds both open and passes
/// nothing (reads nothing, so neither end sees a close).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if cut.load(Ordering::SeqCst) {
            // Keep the halves alive until the test ends.
            std::future::pending::<()>().await;
        }
        // Bounded waits, so that a cut is seen while no data flows.
        let n = match tokio::time::timeout(Duration::from_millis(50), from.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(n)) => n,
        };
        if cut.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[test]
fn a_leader_cut_off_from_postgres_steps_down_before_another_instance_leads() {
    let (pg, dsn) = cluster();
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let proxy = CutProxy::start(pg.port());
    let proxied = dsn.replace(&format!(":{}/", pg.port()), &format!(":{}/", proxy.port));
    // The first instance (through the proxy) leads; the second waits.
    let cut_one = Switchyard::start(&config(&proxied, &receiver.url()));
    let other = start_instance(&dsn, &receiver.url());
    assert!(
        wait_until(Duration::from_secs(30), || is_standby(&other)),
        "the second instance is not a standby\n{}",
        tail(&other.logs(), 30)
    );
    // What each instance says of itself: health, metrics, `cdc status`.
    assert_eq!(get(other.addr(), "/healthz").map(|(s, _)| s), Some(200));
    let gauge = |s: &Switchyard, value: u8| {
        get(s.addr(), "/metrics").is_some_and(|(_, body)| {
            body.contains(&format!("switchyard_cdc_leader{{source=\"db\"}} {value}"))
        })
    };
    assert!(
        wait_until(Duration::from_secs(30), || gauge(&cut_one, 1)
            && gauge(&other, 0)),
        "switchyard_cdc_leader is 1 on the leader, 0 on the standby"
    );
    let status = |s: &Switchyard| {
        let out = s.cli(&["cdc", "status"]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert!(
        status(&cut_one).contains("connected, leader"),
        "{}",
        status(&cut_one)
    );
    assert!(status(&other).contains("STANDBY"), "{}", status(&other));
    let stop_writer = AtomicBool::new(false);
    let stop_watch = AtomicBool::new(false);
    let committed = AtomicUsize::new(0);
    let most_readers = AtomicUsize::new(0);
    let (expected, stepped_down, took_over) = std::thread::scope(|scope| {
        let flags = [&stop_writer, &stop_watch];
        let _stop = StopOnDrop(&flags);
        let writer = scope.spawn(|| write_load(&pg, &stop_writer, &committed));
        let watcher = scope.spawn(|| watch_readers(&pg, &stop_watch, &most_readers));
        assert!(
            wait_until(Duration::from_secs(60), || unique(&delivered(&receiver))
                >= 500),
            "no deliveries before the cut\n{}",
            tail(&cut_one.logs(), 30)
        );
        let cut_at = Instant::now();
        proxy.cut();
        // The cut instance must report standby before the other one leads: checked in
        // that order on every round.
        let mut stepped_down = None;
        let mut took_over = None;
        let led = wait_until(Duration::from_secs(60), || {
            if stepped_down.is_none() && is_standby(&cut_one) {
                stepped_down = Some(cut_at.elapsed());
            }
            if is_leader(&other) {
                took_over = Some(cut_at.elapsed());
                assert!(
                    stepped_down.is_some(),
                    "the other instance leads while the cut one has not stepped down\n{}",
                    tail(&cut_one.logs(), 30)
                );
                return true;
            }
            false
        });
        assert!(
            led,
            "the other instance did not take over\n{}",
            tail(&other.logs(), 30)
        );
        // Let the new leader stream for a while before the load stops.
        let after_takeover = unique(&delivered(&receiver));
        assert!(
            wait_until(Duration::from_secs(60), || unique(&delivered(&receiver))
                >= after_takeover + 500),
            "no deliveries from the new leader\n{}",
            tail(&other.logs(), 30)
        );
        stop_writer.store(true, Ordering::SeqCst);
        let expected = writer.join().expect("writer");
        stop_watch.store(true, Ordering::SeqCst);
        watcher.join().expect("watcher");
        (expected, stepped_down, took_over)
    });
    let complete = wait_until(Duration::from_secs(60), || {
        unique(&delivered(&receiver)) >= expected.len()
    });
    let report = check(&expected, &delivered(&receiver));
    println!(
        "postgres HA, leader's connections cut: {report}; cut → standby {:?}, cut → new leader {:?}",
        stepped_down.expect("stepped down"),
        took_over.expect("took over")
    );
    assert!(
        complete && report.lost == 0,
        "{report}\n--- cut ---\n{}\n--- other ---\n{}",
        tail(&cut_one.logs(), 30),
        tail(&other.logs(), 30)
    );
    assert_eq!(report.reordered, 0, "{report}");
    assert_eq!(
        most_readers.load(Ordering::SeqCst),
        1,
        "never more than one reader of the slot"
    );
    assert!(
        !is_leader(&cut_one),
        "the cut instance stays a standby while it cannot reach Postgres"
    );
}

#[test]
fn a_snapshot_request_to_a_standby_is_refused_at_once_and_not_kept() {
    let (_pg, dsn) = cluster();
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let first = Switchyard::start(&config(&dsn, &receiver.url()));
    let second = start_instance(&dsn, &receiver.url());
    assert!(
        wait_until(Duration::from_secs(30), || is_standby(&second)),
        "the second instance is not a standby\n{}",
        tail(&second.logs(), 30)
    );
    let request = r#"{"table": "public.t"}"#;
    // A standby's answer comes without waiting for the lock: well within the deadline.
    let answer = admin_post(
        second.addr(),
        "/admin/sources/db/snapshot",
        request,
        Duration::from_secs(10),
    );
    let (status, body) = answer.unwrap_or_else(|| {
        panic!(
            "the standby did not answer a snapshot request\n{}",
            tail(&second.logs(), 30)
        )
    });
    assert!(
        !(200..300).contains(&status),
        "a standby took a snapshot request: {status} {body}"
    );
    assert!(
        body.contains("standby") && body.contains(SLOT) && body.contains("/readyz"),
        "the answer does not send the request to the leader: {status} {body}"
    );
    // The leader takes it.
    let (status, body) = admin_post(
        first.addr(),
        "/admin/sources/db/snapshot",
        request,
        Duration::from_secs(30),
    )
    .expect("the leader answers a snapshot request");
    assert_eq!(status, 200, "the leader refused a snapshot request: {body}");
}

fn snapshot_config(dsn: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"
shutdown_timeout = "2s"

[sources.db]
type = "postgres_cdc"
dsn = "{dsn}"
slot = "{SLOT}"
tables = ["public.big"]
snapshot = "initial"
snapshot_chunk = 500

[pipelines.cdc]
from = ["db"]
to = ["out"]
max_in_flight = 1024

[sinks.out]
type = "file"
path = "{{dir}}/out.jsonl"
"#
    )
}

/// The ids of the snapshot rows an instance's file sink wrote (duplicates included).
fn snapshot_reads(s: &Switchyard) -> Vec<u64> {
    switchyard_tests::read_jsonl(&s.dir().join("out.jsonl"))
        .iter()
        .filter(|e| e["kind"] == "read")
        .filter_map(|e| e["payload"]["after"]["id"].as_u64())
        .collect()
}

#[test]
fn a_standby_resumes_the_half_done_snapshot_of_the_leader_it_replaces() {
    const ROWS: u64 = 100_000;
    let (pg, dsn) = cluster();
    pg.sql(
        "app",
        &format!(
            "CREATE TABLE big (id int PRIMARY KEY, pad text);
             INSERT INTO big SELECT g, repeat('x', 50) FROM generate_series(1, {ROWS}) g;"
        ),
    );
    // The first instance leads (it starts alone), the second waits.
    let mut first = Switchyard::start(&snapshot_config(&dsn));
    let second = Switchyard::start_with(
        &snapshot_config(&dsn),
        Options {
            ready_path: Some("/healthz"),
            ..Options::default()
        },
    );
    assert!(
        wait_until(Duration::from_secs(30), || is_standby(&second)),
        "the second instance is not a standby\n{}",
        tail(&second.logs(), 30)
    );
    assert!(
        wait_until(Duration::from_secs(120), || snapshot_reads(&first).len()
            >= 10_000),
        "the snapshot does not progress\n{}",
        tail(&first.logs(), 30)
    );
    first.kill9();
    let before_kill = snapshot_reads(&first).len() as u64;
    assert!(
        before_kill < ROWS,
        "the snapshot ended before the leader was killed: nothing to take over"
    );
    // Read right after the kill: the first leader's progress, or already the second's.
    let stored = pg.sql(
        "app",
        &format!(
            "SELECT state->'snapshots'->'public.big'->>'rows' FROM switchyard.cdc_state \
             WHERE slot = '{SLOT}'"
        ),
    );
    let all = wait_until(Duration::from_secs(120), || {
        let mut ids: HashSet<u64> = snapshot_reads(&first).into_iter().collect();
        ids.extend(snapshot_reads(&second));
        ids.len() as u64 == ROWS
    });
    let from_second = snapshot_reads(&second).len() as u64;
    let duplicates = before_kill + from_second - ROWS;
    println!(
        "postgres HA, snapshot taken over: {before_kill} rows read by the first leader \
         (progress in the database after the kill: {stored}), {from_second} by the second, \
         {duplicates} read twice"
    );
    assert!(all, "rows are missing\n{}", tail(&second.logs(), 30));
    // Started over, the second leader would read every row the first one had read again.
    assert!(
        duplicates < before_kill / 2,
        "the second leader took the snapshot again from its start: {duplicates} rows read twice"
    );
    let progress = || {
        pg.sql(
            "app",
            &format!(
                "SELECT state->'snapshots'->'public.big'->>'done' FROM switchyard.cdc_state \
                 WHERE slot = '{SLOT}'"
            ),
        )
    };
    assert!(
        wait_until(Duration::from_secs(30), || progress() == "true"),
        "the database's progress does not say done: {}",
        progress()
    );
}
