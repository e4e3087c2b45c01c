//! End-to-end tests live in this directory; see the [[test]] targets in Cargo.toml.
//!
//! This library holds what several of them share: a producer that sends keyed,
//! sequenced JSON events to `POST /ingest/{source}` the way a careful client would
//! (one key's events in order, the same `Idempotency-Key` on every retry), and polling
//! with deadlines.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use switchyard_test_support::{Tracked, WebhookReceiver};

/// An HTTP client for producers and probes. Short timeouts: a test talks to localhost.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .expect("building an HTTP client")
}

/// The id a producer gives event `seq` of `key` (sent as `Idempotency-Key`).
pub fn event_id(key: &str, seq: u64) -> String {
    format!("{key}-{seq}")
}

/// The JSON body of event `seq` of `key`, padded with `pad` bytes.
pub fn event_body(key: &str, seq: u64, pad: usize) -> String {
    serde_json::json!({ "key": key, "seq": seq, "pad": "x".repeat(pad) }).to_string()
}

/// What one attempt to send an event got.
#[derive(Debug)]
pub enum Sent {
    /// 2xx: the event is durable.
    Accepted,
    /// Another status, with the body.
    Refused(u16, String),
    /// No answer (connection refused or reset, timeout).
    NoAnswer(String),
}

/// Sends event `seq` of `key` once to `POST {base}/ingest/{source}`.
pub async fn send_once(
    client: &reqwest::Client,
    base: &str,
    source: &str,
    key: &str,
    seq: u64,
    pad: usize,
) -> Sent {
    let result = client
        .post(format!("{base}/ingest/{source}"))
        .header("content-type", "application/json")
        .header("x-key", key)
        .header("idempotency-key", event_id(key, seq))
        .body(event_body(key, seq, pad))
        .send()
        .await;
    match result {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            if (200..300).contains(&status) {
                Sent::Accepted
            } else {
                Sent::Refused(status, body)
            }
        }
        Err(e) => Sent::NoAnswer(e.to_string()),
    }
}

/// A load of keyed events: `keys` keys × `per_key` events, sent by `producers`
/// concurrent tasks. Each key belongs to one task, which sends the key's events in
/// sequence, each only after the previous one was accepted (retrying the same event
/// with the same `Idempotency-Key` on any failure), so per-key order is defined.
#[derive(Clone, Debug)]
pub struct Load {
    pub base: String,
    pub source: String,
    pub keys: usize,
    pub per_key: u64,
    pub producers: usize,
    /// Extra payload bytes per event.
    pub pad: usize,
    /// Give up on an event after failing this long (the test then fails).
    pub give_up_after: Duration,
}

/// What a [`Load`] run observed; shared while it runs.
#[derive(Default, Debug)]
pub struct Progress {
    acked: Mutex<Vec<Tracked>>,
    acked_count: AtomicUsize,
    failed_attempts: AtomicUsize,
    /// Statuses other than 2xx that were answered, with how often.
    refusals: Mutex<Vec<(u16, String)>>,
    done: AtomicBool,
    gave_up: Mutex<Option<String>>,
}

impl Progress {
    /// Events accepted so far.
    pub fn acked_count(&self) -> usize {
        self.acked_count.load(Ordering::SeqCst)
    }
    /// The accepted events.
    pub fn acked(&self) -> Vec<Tracked> {
        self.acked.lock().expect("progress lock").clone()
    }
    /// Attempts that got no 2xx (and were retried).
    pub fn failed_attempts(&self) -> usize {
        self.failed_attempts.load(Ordering::SeqCst)
    }
    /// Non-2xx answers seen (status, body), at most the first 100.
    pub fn refusals(&self) -> Vec<(u16, String)> {
        self.refusals.lock().expect("progress lock").clone()
    }
    /// Whether every producer finished.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
    /// Why a producer gave up, if one did.
    pub fn gave_up(&self) -> Option<String> {
        self.gave_up.lock().expect("progress lock").clone()
    }
}

impl Load {
    /// Key `i`'s name.
    pub fn key(i: usize) -> String {
        format!("k{i:03}")
    }

    /// Runs the load to completion on the current runtime, recording into `progress`.
    pub async fn run(self, progress: Arc<Progress>) {
        let client = client();
        let mut tasks = Vec::new();
        for p in 0..self.producers {
            let keys: Vec<String> = (0..self.keys)
                .filter(|k| k % self.producers == p)
                .map(Self::key)
                .collect();
            let load = self.clone();
            let client = client.clone();
            let progress = progress.clone();
            tasks.push(tokio::spawn(async move {
                // Round-robin over the task's keys, so keys interleave in time.
                for seq in 0..load.per_key {
                    for key in &keys {
                        if !load.send_until_accepted(&client, key, seq, &progress).await {
                            return;
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("producer task panicked");
        }
        progress.done.store(true, Ordering::SeqCst);
    }

    async fn send_until_accepted(
        &self,
        client: &reqwest::Client,
        key: &str,
        seq: u64,
        progress: &Progress,
    ) -> bool {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(10);
        loop {
            let outcome = send_once(client, &self.base, &self.source, key, seq, self.pad).await;
            match outcome {
                Sent::Accepted => {
                    progress
                        .acked
                        .lock()
                        .expect("progress lock")
                        .push(Tracked::new(event_id(key, seq), key, seq));
                    progress.acked_count.fetch_add(1, Ordering::SeqCst);
                    return true;
                }
                Sent::Refused(status, body) => {
                    let mut r = progress.refusals.lock().expect("progress lock");
                    if r.len() < 100 {
                        r.push((status, body));
                    }
                }
                Sent::NoAnswer(_) => {}
            }
            progress.failed_attempts.fetch_add(1, Ordering::SeqCst);
            if started.elapsed() > self.give_up_after {
                *progress.gave_up.lock().expect("progress lock") = Some(format!(
                    "event {} not accepted within {:?}",
                    event_id(key, seq),
                    self.give_up_after
                ));
                return false;
            }
            // Back off between retries of a refused or unanswered request (not a wait
            // for anything in particular: the server is restarting or overloaded).
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }
}

/// The deliveries a receiver accepted, in order, as checker records (requests that do
/// not carry a producer's event are skipped).
pub fn deliveries(receiver: &WebhookReceiver) -> Vec<Tracked> {
    receiver
        .accepted()
        .iter()
        .filter_map(Tracked::from_webhook)
        .collect()
}

/// Polls `condition` every 20 ms until it holds or `within` passes; returns whether it
/// held.
pub fn wait_until(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_until`] for async conditions.
pub async fn wait_until_async<F, Fut>(within: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every id in `acked` was accepted by `receiver` at least once.
pub fn wait_for_all_delivered(
    receiver: &WebhookReceiver,
    acked: &[Tracked],
    within: Duration,
) -> bool {
    let wanted: HashSet<&str> = acked.iter().map(|t| t.id.as_str()).collect();
    wait_until(within, || {
        let got: HashSet<String> = receiver
            .accepted()
            .iter()
            .filter_map(|r| r.header("webhook-id").map(str::to_owned))
            .collect();
        wanted.iter().all(|id| got.contains(*id))
    })
}

/// A runtime for a test's async parts (producers, HTTP probes), so the test's own
/// thread stays free to block on process control.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a tokio runtime")
}

/// A Standard Webhooks secret for sinks in tests.
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The JSON objects of a JSON-lines file (a file sink's output), skipping a torn last
/// line; empty when the file does not exist yet.
pub fn read_jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Writes a config template to `dir/switchyard.toml` with the placeholders a
/// `Switchyard` would fill (`{listen}` as an unused port, `{data_dir}`, `{dir}`), for
/// commands that are not a running `Switchyard` (`validate`, a `run` expected to fail).
pub fn write_config(dir: &std::path::Path, template: &str) -> std::path::PathBuf {
    let path = dir.join("switchyard.toml");
    std::fs::write(
        &path,
        template
            .replace("{listen}", "127.0.0.1:0")
            .replace("{data_dir}", &dir.join("data").display().to_string())
            .replace("{dir}", &dir.display().to_string()),
    )
    .unwrap();
    path
}

/// `switchyard run -c CONFIG` (the template written by [`write_config`]) for a start
/// that must fail: waits up to a minute for the exit. Returns whether it exited, its
/// status and its stdout + stderr; a process still running is killed.
pub fn run_expecting_exit(template: &str) -> (bool, std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), template);
    let mut child = switchyard_test_support::switchyard_command()
        .args(["run", "-c"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_until(Duration::from_secs(60), || {
        child.try_wait().unwrap().is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (exited, out.status, text)
}

/// The text of a running switchyard's `/metrics`.
pub fn metrics(url: &str) -> String {
    runtime().block_on(async {
        client()
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
}

/// A config for a `Switchyard`: one `postgres_cdc` source `db` on `dsn` with
/// `source_keys` (TOML lines after `type` and `dsn`), one pipeline `cdc` and a file sink
/// `out` writing `{dir}/out.jsonl`.
pub fn cdc_config(dsn: &str, source_keys: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"
admin_token = "admin-secret-0123456789"

[sources.db]
type = "postgres_cdc"
dsn = "{dsn}"
{source_keys}

[pipelines.cdc]
from = ["db"]
to = ["out"]

[sinks.out]
type = "file"
path = "{{dir}}/out.jsonl"
"#
    )
}

/// Posts `seqs` of `key` as one NDJSON request with `Idempotency-Key: ikey`, again (50 ms
/// apart) until it is accepted; panics after 2 minutes. Returns the accepted events.
pub async fn post_until_accepted(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    ikey: &str,
    seqs: &[u64],
) -> Vec<Tracked> {
    let body: String = seqs
        .iter()
        .map(|s| format!("{{\"key\":\"{key}\",\"seq\":{s}}}\n"))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let r = client
            .post(format!("{base}/ingest/api"))
            .header("content-type", "application/x-ndjson")
            .header("x-key", key)
            .header("idempotency-key", ikey)
            .body(body.clone())
            .send()
            .await;
        if r.as_ref().is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "batch {ikey} not accepted: {r:?}"
        );
        // Back off before retrying a refused request.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seqs.iter()
        .enumerate()
        .map(|(n, s)| Tracked::new(format!("{ikey}-{n}"), key, *s))
        .collect()
}

/// Sends `per_key` events for each of `keys` keys (`<prefix>k000`, …) as NDJSON batches
/// of `batch` events (one key per request, so per-key order is the order of the lines),
/// each batch retried with the same `Idempotency-Key` until accepted. Returns what was
/// accepted.
pub fn send_batches(
    base: &str,
    prefix: &str,
    keys: usize,
    per_key: u64,
    batch: u64,
) -> Vec<Tracked> {
    let rt = runtime();
    let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
    rt.block_on(async {
        let client = client();
        let mut tasks = Vec::new();
        for k in 0..keys {
            let (client, base) = (client.clone(), base.to_owned());
            let prefix = prefix.to_owned();
            let accepted = accepted.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("{prefix}k{k:03}");
                for first in (0..per_key).step_by(batch as usize) {
                    let seqs: Vec<u64> = (first..(first + batch).min(per_key)).collect();
                    let ikey = format!("{key}-b{first}");
                    let sent = post_until_accepted(&client, &base, &key, &ikey, &seqs).await;
                    accepted.lock().unwrap().extend(sent);
                }
            }));
        }
        for t in tasks {
            t.await.expect("producer task");
        }
    });
    accepted.lock().unwrap().clone()
}

/// Like [`send_batches`], but each key's producer goes on sending batches of `batch`
/// events, `pause` apart (a steady load, not a race to the end), until `stop` is set
/// (then sends one more), or `max_per_key` events. For a fault injected while producers
/// are certainly still sending.
pub fn send_until(
    base: &str,
    keys: usize,
    batch: u64,
    pause: Duration,
    max_per_key: u64,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
) -> Vec<Tracked> {
    let rt = runtime();
    let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
    rt.block_on(async {
        let client = client();
        let mut tasks = Vec::new();
        for k in 0..keys {
            let (client, base) = (client.clone(), base.to_owned());
            let (accepted, stop, count) = (accepted.clone(), stop.clone(), count.clone());
            tasks.push(tokio::spawn(async move {
                let key = format!("k{k:03}");
                let mut first = 0;
                while first < max_per_key {
                    let last_one = stop.load(Ordering::SeqCst);
                    let seqs: Vec<u64> = (first..(first + batch).min(max_per_key)).collect();
                    let ikey = format!("{key}-b{first}");
                    let sent = post_until_accepted(&client, &base, &key, &ikey, &seqs).await;
                    count.fetch_add(sent.len(), Ordering::SeqCst);
                    accepted.lock().unwrap().extend(sent);
                    first += batch;
                    if last_one {
                        break;
                    }
                    tokio::time::sleep(pause).await;
                }
            }));
        }
        for t in tasks {
            t.await.expect("producer task");
        }
    });
    accepted.lock().unwrap().clone()
}

/// A name no other test (or run) uses: `prefix`, the process id and a counter.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}
