//! Redis Streams end to end, against the machine's redis-server (127.0.0.1:6379) and
//! private servers started on free ports for restarts and memory limits: the real binary
//! appends to and reads from streams; what it wrote is read back with the redis crate.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use redis::streams::StreamRangeReply;
use switchyard_test_support::kafka::TlsProxy;
use switchyard_test_support::{
    Behaviour, Options, Report, Switchyard, Tracked, WebhookReceiver, check, free_port, tail,
};
use switchyard_tests::{
    WEBHOOK_SECRET, deliveries, metrics, send_batches, send_until, wait_for_all_delivered,
    wait_until,
};

const SHARED: &str = "redis://127.0.0.1:6379";

/// A key no other test uses.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("sy-test:{prefix}:{}:{nanos}", std::process::id())
}

fn cmd(url: &str, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_connection().unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut c).unwrap_or(redis::Value::Nil)
}

/// A stream key deleted when dropped.
struct TestKey {
    url: String,
    key: String,
}

impl Drop for TestKey {
    fn drop(&mut self) {
        if let Ok(client) = redis::Client::open(self.url.as_str())
            && let Ok(mut c) = client.get_connection()
        {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&self.key).query(&mut c);
        }
    }
}

/// Every entry of `key` as checker records (id from the `id` field, key and sequence
/// from the JSON payload), read until `done` or `within` passes.
fn read_stream(
    url: &str,
    key: &str,
    within: Duration,
    mut done: impl FnMut(&[Tracked]) -> bool,
) -> Vec<Tracked> {
    let client = redis::Client::open(url).unwrap();
    let deadline = std::time::Instant::now() + within;
    loop {
        let out: Vec<Tracked> = match client.get_connection() {
            Ok(mut c) => {
                let reply: StreamRangeReply = redis::cmd("XRANGE")
                    .arg(key)
                    .arg("-")
                    .arg("+")
                    .query(&mut c)
                    .unwrap_or_default();
                reply
                    .ids
                    .iter()
                    .filter_map(|e| {
                        let id: String = e.get("id")?;
                        let payload: Vec<u8> = e.get("payload")?;
                        let body: serde_json::Value = serde_json::from_slice(&payload).ok()?;
                        Some(Tracked::new(
                            id,
                            body.get("key")?.as_str()?,
                            body.get("seq")?.as_u64()?,
                        ))
                    })
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        if done(&out) || std::time::Instant::now() >= deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn read_back(url: &str, key: &str, acked: &[Tracked], within: Duration) -> Report {
    let wanted: HashSet<&str> = acked.iter().map(|t| t.id.as_str()).collect();
    let delivered = read_stream(url, key, within, |got| {
        let seen: HashSet<&str> = got.iter().map(|t| t.id.as_str()).collect();
        wanted.iter().all(|id| seen.contains(id))
    });
    check(acked, &delivered)
}

fn http_to_redis(url: &str, stream: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.api]
type = "http"
partitions = 4

[pipelines.to_redis]
from = ["api"]
to = ["out"]

[sinks.out]
type = "redis"
url = "{url}"
stream = "{stream}"
timeout = "2s"
"#
    )
}

/// A private redis-server on a free port, appending every write to its own AOF
/// (fsync always), so a restart keeps what it acknowledged.
struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
    maxmemory: Option<String>,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start(maxmemory: Option<&str>) -> Self {
        let mut server = Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            maxmemory: maxmemory.map(str::to_owned),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path());
        if let Some(m) = &self.maxmemory {
            command.args(["--maxmemory", m, "--maxmemory-policy", "noeviction"]);
        }
        self.child = Some(
            command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed"),
        );
        let url = self.url();
        assert!(
            wait_until(Duration::from_secs(20), || {
                redis::Client::open(url.as_str())
                    .and_then(|c| c.get_connection())
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                    .is_ok()
            }),
            "private redis-server did not start"
        );
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `switchyard_sink_events_total{outcome="retried"}` of `sink`.
fn retried(base: &str, sink: &str) -> f64 {
    metrics(base)
        .lines()
        .filter(|l| {
            l.starts_with("switchyard_sink_events_total{")
                && l.contains(&format!("sink=\"{sink}\""))
                && l.contains("outcome=\"retried\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn redis_http_to_redis_50k_events_arrive_in_per_key_order() {
    let key = unique("sink");
    let _cleanup = TestKey {
        url: SHARED.into(),
        key: key.clone(),
    };
    let switchyard = Switchyard::start(&http_to_redis(SHARED, &key));
    let acked = send_batches(&switchyard.url(), "", 20, 2_500, 500);
    assert_eq!(acked.len(), 50_000);
    let report = read_back(SHARED, &key, &acked, Duration::from_secs(180));
    println!("redis_http_to_redis: {report}");
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 40)
    );
    assert_eq!(report.reordered, 0, "{report}");
}

#[test]
fn redis_sink_killed_mid_stream_loses_nothing() {
    let key = unique("kill");
    let _cleanup = TestKey {
        url: SHARED.into(),
        key: key.clone(),
    };
    let mut switchyard = Switchyard::start(&http_to_redis(SHARED, &key));
    let (stop, count) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let base = switchyard.url();
    let producer = {
        let (stop, count) = (stop.clone(), count.clone());
        std::thread::spawn(move || {
            send_until(&base, 8, 50, Duration::from_millis(5), 100_000, stop, count)
        })
    };
    assert!(wait_until(Duration::from_secs(60), || count
        .load(Ordering::SeqCst)
        >= 5_000));
    switchyard.kill9();
    switchyard.restart();
    let at_restart = count.load(Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(60), || count
        .load(Ordering::SeqCst)
        >= at_restart + 5_000));
    stop.store(true, Ordering::SeqCst);
    let acked = producer.join().expect("producer");
    let report = read_back(SHARED, &key, &acked, Duration::from_secs(180));
    println!("redis_sink_killed_mid_stream: {report}");
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 40)
    );
}

#[test]
fn redis_server_restarted_mid_stream_loses_nothing() {
    let mut server = PrivateRedis::start(None);
    let key = unique("restart");
    let switchyard = Switchyard::start(&http_to_redis(&server.url(), &key));
    let (stop, count) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let base = switchyard.url();
    let producer = {
        let (stop, count) = (stop.clone(), count.clone());
        std::thread::spawn(move || {
            send_until(&base, 8, 50, Duration::from_millis(5), 100_000, stop, count)
        })
    };
    assert!(wait_until(Duration::from_secs(60), || count
        .load(Ordering::SeqCst)
        >= 4_000));
    server.kill();
    let at_kill = count.load(Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(60), || count
        .load(Ordering::SeqCst)
        >= at_kill + 2_000));
    server.spawn();
    let at_restart = count.load(Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(60), || count
        .load(Ordering::SeqCst)
        >= at_restart + 2_000));
    stop.store(true, Ordering::SeqCst);
    let acked = producer.join().expect("producer");
    let report = read_back(&server.url(), &key, &acked, Duration::from_secs(180));
    println!("redis_server_restarted_mid_stream: {report}");
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 40)
    );
}

#[test]
fn redis_out_of_memory_is_backpressure_not_loss() {
    let server = PrivateRedis::start(Some("0"));
    // Room for about 2000 of the 10 000 entries above what the empty server uses.
    let info = match cmd(&server.url(), &["INFO", "memory"]) {
        redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("INFO answered {other:?}"),
    };
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO");
    cmd(
        &server.url(),
        &["CONFIG", "SET", "maxmemory", &(used + 300_000).to_string()],
    );
    let key = unique("oom");
    let switchyard = Switchyard::start(&http_to_redis(&server.url(), &key));
    let acked = send_batches(&switchyard.url(), "", 4, 2_500, 250);
    assert!(
        wait_until(Duration::from_secs(60), || retried(
            &switchyard.url(),
            "out"
        ) > 0.0),
        "redis never refused: {}",
        tail(&switchyard.stderr(), 20)
    );
    // Room again: lift the limit; everything refused arrives, nothing lost.
    cmd(&server.url(), &["CONFIG", "SET", "maxmemory", "0"]);
    let report = read_back(&server.url(), &key, &acked, Duration::from_secs(120));
    println!("redis_out_of_memory: {report}");
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 40)
    );
    assert_eq!(report.reordered, 0, "{report}");
}

fn redis_to_webhook(url: &str, stream: &str, group: &str, hook: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.events]
type = "redis"
url = "{url}"
stream = "{stream}"
group = "{group}"
create = true
claim_idle = "5s"

[pipelines.deliver]
from = ["events"]
to = ["hook"]

[sinks.hook]
type = "webhook"
url = "{hook}"
secret = "{WEBHOOK_SECRET}"
concurrency = 8
retry = {{ max_attempts = 1000, initial = "10ms", max = "200ms" }}
"#
    )
}

/// Appends `n` entries (`payload` = `{"key":…,"seq":…}`), returns them as checker
/// records by the event id the source gives them (`<stream>/<entry id>`).
fn add_entries(url: &str, key: &str, n: u64, keys: u64) -> Vec<Tracked> {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_connection().unwrap();
    let mut out = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for i in chunk {
            let (k, seq) = (format!("k{:02}", i % keys), i / keys);
            pipe.cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("payload")
                .arg(format!("{{\"key\":\"{k}\",\"seq\":{seq}}}"))
                .arg("content-type")
                .arg("application/json")
                .arg("key")
                .arg(&k);
        }
        let ids: Vec<String> = pipe.query(&mut c).unwrap();
        for (i, id) in chunk.iter().zip(ids) {
            out.push(Tracked::new(
                format!("{key}/{id}"),
                format!("k{:02}", i % keys),
                i / keys,
            ));
        }
    }
    out
}

fn pending(url: &str, key: &str, group: &str) -> i64 {
    match cmd(url, &["XPENDING", key, group]) {
        redis::Value::Array(v) => match v.first() {
            Some(redis::Value::Int(n)) => *n,
            _ => -1,
        },
        _ => -1,
    }
}

#[test]
fn redis_source_to_webhook_delivers_everything_and_acks_only_after_delivery() {
    let key = unique("src");
    let _cleanup = TestKey {
        url: SHARED.into(),
        key: key.clone(),
    };
    let acked = add_entries(SHARED, &key, 3_000, 30);
    let receiver = WebhookReceiver::start(Behaviour::Status(503));
    let switchyard = Switchyard::start(&redis_to_webhook(SHARED, &key, "sy", &receiver.url()));
    assert!(
        wait_until(Duration::from_secs(30), || receiver.received_count() >= 20),
        "{}",
        tail(&switchyard.stderr(), 30)
    );
    assert!(
        pending(SHARED, &key, "sy") > 0,
        "nothing pending while the webhook refuses: acknowledged before delivery"
    );
    receiver.set_behaviour(Behaviour::FailFraction {
        fraction: 0.05,
        seed: 7,
    });
    assert!(
        wait_for_all_delivered(&receiver, &acked, Duration::from_secs(120)),
        "{}",
        tail(&switchyard.stderr(), 40)
    );
    let report = check(&acked, &deliveries(&receiver));
    println!("redis_source_to_webhook: {report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.reordered, 0, "{report}");
    assert!(
        wait_until(Duration::from_secs(30), || pending(SHARED, &key, "sy") == 0),
        "entries still pending after delivery: {}",
        pending(SHARED, &key, "sy")
    );
}

#[test]
fn redis_source_killed_mid_stream_loses_nothing() {
    let key = unique("srckill");
    let _cleanup = TestKey {
        url: SHARED.into(),
        key: key.clone(),
    };
    let acked = add_entries(SHARED, &key, 20_000, 20);
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let mut switchyard = Switchyard::start(&redis_to_webhook(SHARED, &key, "sy", &receiver.url()));
    assert!(wait_until(Duration::from_secs(60), || receiver.count() >= 3_000));
    switchyard.kill9();
    switchyard.restart();
    assert!(
        wait_for_all_delivered(&receiver, &acked, Duration::from_secs(180)),
        "{}",
        tail(&switchyard.stderr(), 40)
    );
    let report = check(&acked, &deliveries(&receiver));
    println!("redis_source_killed_mid_stream: {report}");
    assert_eq!(report.lost, 0, "{report}");
}

#[test]
fn redis_server_restarted_while_the_source_reads_loses_nothing() {
    let mut server = PrivateRedis::start(None);
    let key = unique("srcrestart");
    let acked = add_entries(&server.url(), &key, 20_000, 20);
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let switchyard = Switchyard::start(&redis_to_webhook(
        &server.url(),
        &key,
        "sy",
        &receiver.url(),
    ));
    assert!(wait_until(Duration::from_secs(60), || receiver.count() >= 3_000));
    server.kill();
    server.spawn();
    assert!(
        wait_for_all_delivered(&receiver, &acked, Duration::from_secs(180)),
        "{}",
        tail(&switchyard.stderr(), 40)
    );
    let report = check(&acked, &deliveries(&receiver));
    println!("redis_server_restarted_while_the_source_reads: {report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.reordered, 0, "{report}");
}

#[test]
fn redis_sink_over_tls_trusts_the_configured_ca_only() {
    let proxy = TlsProxy::start(free_port(), "127.0.0.1:6379");
    let url = format!("rediss://{}", proxy.brokers());
    let key = unique("tls");
    let _cleanup = TestKey {
        url: SHARED.into(),
        key: key.clone(),
    };
    let with_ca = |ca: &std::path::Path| {
        http_to_redis(&url, &key).replace(
            "timeout = \"2s\"",
            &format!("timeout = \"2s\"\ntls = {{ ca = \"{}\" }}", ca.display()),
        )
    };
    // A CA that signed nothing: the handshake fails, events wait and are retried.
    let wrong = Switchyard::start(&with_ca(&proxy.wrong_ca_file()));
    send_batches(&wrong.url(), "w", 1, 10, 10);
    assert!(
        wait_until(Duration::from_secs(30), || retried(&wrong.url(), "out")
            > 0.0),
        "{}",
        tail(&wrong.stderr(), 20)
    );
    assert!(read_stream(SHARED, &key, Duration::ZERO, |_| true).is_empty());
    drop(wrong);
    let switchyard = Switchyard::start(&with_ca(&proxy.ca_file()));
    let acked = send_batches(&switchyard.url(), "", 4, 250, 50);
    let report = read_back(SHARED, &key, &acked, Duration::from_secs(60));
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 20)
    );
    assert_eq!(report.reordered, 0, "{report}");
}

/// The peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib * 1024
}

/// `entries-read` and `pending` of `group` (XINFO GROUPS), `None` before it exists.
fn group_progress(url: &str, key: &str, group: &str) -> Option<(i64, i64)> {
    fn text(v: &redis::Value) -> Option<String> {
        match v {
            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            redis::Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    }
    let redis::Value::Array(groups) = cmd(url, &["XINFO", "GROUPS", key]) else {
        return None;
    };
    groups.iter().find_map(|g| {
        let fields: Vec<(String, redis::Value)> = match g {
            redis::Value::Array(kv) => kv
                .chunks_exact(2)
                .filter_map(|p| Some((text(&p[0])?, p[1].clone())))
                .collect(),
            redis::Value::Map(kv) => kv
                .iter()
                .filter_map(|(k, v)| Some((text(k)?, v.clone())))
                .collect(),
            _ => return None,
        };
        let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        if field("name").and_then(text).as_deref() != Some(group) {
            return None;
        }
        // `entries-read` is nil until the group has read anything.
        let number = |name: &str| match field(name)? {
            redis::Value::Int(n) => Some(*n),
            redis::Value::Nil => Some(0),
            _ => None,
        };
        Some((number("entries-read")?, number("pending")?))
    })
}

/// Appends `n` entries whose `payload` is `size` bytes, in one transaction (so a waiting
/// read sees them all at once); returns their entry ids.
fn add_large_entries(url: &str, key: &str, n: usize, size: usize) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_connection().unwrap();
    let payload = vec![b'x'; size];
    let mut pipe = redis::pipe();
    pipe.atomic();
    for _ in 0..n {
        pipe.cmd("XADD")
            .arg(key)
            .arg("*")
            .arg("payload")
            .arg(&payload[..])
            .arg("content-type")
            .arg("application/octet-stream");
    }
    pipe.query(&mut c).unwrap()
}

#[test]
fn redis_source_reads_large_entries_in_bounded_memory() {
    let key = unique("large");
    let _cleanup = TestKey {
        url: SHARED.into(),
        key: key.clone(),
    };
    let switchyard = Switchyard::start(&format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.events]
type = "redis"
url = "{SHARED}"
stream = "{key}"
group = "sy"
create = true

[pipelines.deliver]
from = ["events"]
to = ["out"]

[sinks.out]
type = "null"
"#
    ));
    assert!(
        wait_until(Duration::from_secs(30), || group_progress(
            SHARED, &key, "sy"
        )
        .is_some()),
        "the group was not created:\n{}",
        tail(&switchyard.stderr(), 20)
    );
    let pid = switchyard.pid().expect("running");
    let before = peak_rss(pid);
    // 160 entries of 1 MiB, all at once: one read of them all would hold 160 MiB (more
    // with the events made of it).
    const ENTRIES: usize = 160;
    add_large_entries(SHARED, &key, ENTRIES, 1 << 20);
    assert!(
        wait_until(Duration::from_secs(120), || group_progress(
            SHARED, &key, "sy"
        ) == Some((ENTRIES as i64, 0))),
        "not every entry was read and acknowledged: {:?}\n{}",
        group_progress(SHARED, &key, "sy"),
        tail(&switchyard.stderr(), 20)
    );
    let grown = peak_rss(pid).saturating_sub(before);
    println!(
        "redis_source_reads_large_entries: peak RSS grew by {} MiB",
        grown >> 20
    );
    assert!(
        grown < 96 << 20,
        "peak RSS grew by {} MiB reading {ENTRIES} entries of 1 MiB",
        grown >> 20
    );
}

#[test]
fn redis_entry_above_max_entry_bytes_stops_the_reader_and_nothing_is_lost() {
    let key = unique("toolarge");
    let _cleanup = TestKey {
        url: SHARED.into(),
        key: key.clone(),
    };
    let before = add_entries(SHARED, &key, 5, 1);
    let large = add_large_entries(SHARED, &key, 1, 3 << 19).remove(0);
    let after = add_entries(SHARED, &key, 5, 1);
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let config = redis_to_webhook(SHARED, &key, "sy", &receiver.url()).replace(
        "claim_idle = \"5s\"",
        "claim_idle = \"5s\"\nmax_entry_bytes = \"1MiB\"",
    );
    // The reader stops at the large entry moments after the start, so /readyz may never
    // answer 200: the start counts once the process is alive.
    let mut switchyard = Switchyard::start_with(
        &config,
        Options {
            ready_path: Some("/healthz"),
            ..Options::default()
        },
    );
    assert!(
        wait_for_all_delivered(&receiver, &before, Duration::from_secs(60)),
        "{}",
        tail(&switchyard.stderr(), 30)
    );
    assert!(
        wait_until(Duration::from_secs(30), || {
            let log = switchyard.stderr();
            log.contains(&format!("entry {large} of redis stream `{key}`"))
                && log.contains(&format!("redis-cli XDEL {key} {large}"))
        }),
        "no error naming the entry and the fix:\n{}",
        tail(&switchyard.stderr(), 30)
    );
    assert!(
        wait_until(Duration::from_secs(30), || {
            switchyard_test_support::http_status(switchyard.addr(), "/readyz") == Some(503)
        }),
        "the stopped reader does not show in /readyz"
    );
    let seen: HashSet<String> = deliveries(&receiver).into_iter().map(|t| t.id).collect();
    assert!(
        after.iter().all(|t| !seen.contains(&t.id)),
        "an entry after the refused one was handed out"
    );
    // The fix the error names: a larger limit. The entry and those after it were pending.
    switchyard.terminate();
    let path = switchyard.dir().join("switchyard.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("max_entry_bytes = \"1MiB\"", "max_entry_bytes = \"4MiB\""),
    )
    .unwrap();
    switchyard.restart();
    assert!(
        wait_for_all_delivered(&receiver, &after, Duration::from_secs(60)),
        "{}",
        tail(&switchyard.stderr(), 30)
    );
    let large_id = format!("{key}/{large}");
    assert!(
        wait_until(Duration::from_secs(30), || receiver
            .accepted()
            .iter()
            .any(|r| r.header("webhook-id") == Some(large_id.as_str()))),
        "the large entry was not delivered after the limit was raised"
    );
    let mut all = before.clone();
    all.extend(after.iter().cloned());
    let report = check(&all, &deliveries(&receiver));
    assert_eq!(report.lost, 0, "{report}");
    assert!(
        wait_until(Duration::from_secs(30), || pending(SHARED, &key, "sy") == 0),
        "entries still pending: {}",
        pending(SHARED, &key, "sy")
    );
}
