//! A Kafka-protocol broker for tests: `tansu` (installed by `scripts/install-tansu.sh`
//! into `.tools/bin/tansu`), plus a producer and a reader that tests use to put records
//! in and get them back out.
//!
//! * [`Tansu::shared`] — one broker per test binary (started on first use), for tests
//!   that do not fault the broker. Give each test its own topic and group names.
//! * [`Tansu::start`] — a broker of the test's own, for tests that stop, pause, kill or
//!   restart it ([`Tansu::pause`], [`Tansu::resume`], [`Tansu::kill`], [`Tansu::restart`]).
//!
//! The tansu binary of the wheel keeps its data in memory: a restart loses every topic
//! and record, so tests recreate their topics ([`Tansu::create_topic`]).
//!
//! * [`Tansu::start_durable`] — the opt-in durable tier: tansu built from crates.io with
//!   its libSQL storage (`scripts/install-durable-tansu.sh`, ~15 minutes, not run by CI),
//!   which keeps its data across a kill -9. [`durable_tansu_or_skip`] finds it, or tells
//!   a test to skip (or to fail, with `SWITCHYARD_DURABLE_TANSU=1`).
//! * [`TlsProxy`] — tansu speaks no TLS: a `socat` TLS terminator in front of a broker
//!   started with [`Tansu::start_advertising`] (so clients reconnect through the proxy),
//!   with a throwaway CA and a server certificate for `127.0.0.1` made by `openssl`.
//!
//! Brokers are child processes that die with the test process (`PR_SET_PDEATHSIG`), so
//! a failed or killed test leaves none behind. Everything here is blocking.

use std::collections::HashSet;
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::process::{free_port, spawn_tied_to_this_process};

/// How long a broker may take to answer after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// `--storage-engine` of the wheel's broker.
const MEMORY: &str = "memory://tansu/";
/// `--storage-engine` of the durable broker, relative to its working directory.
const SQLITE: &str = "sqlite://tansu.db";

/// `.tools/bin/tansu` of the workspace, found from this crate's manifest directory
/// (`crates/test-support` → the workspace root), or `TANSU_BIN` when set.
///
/// # Panics
/// When it is missing, telling how to install it.
pub fn tansu_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "TANSU_BIN={} does not name a file; run scripts/install-tansu.sh or unset TANSU_BIN",
            path.display()
        );
        return path;
    }
    let path = workspace_root().join(".tools/bin/tansu");
    assert!(
        path.is_file(),
        "the tansu Kafka-protocol broker is missing ({}); run scripts/install-tansu.sh \
         (scripts/install-test-tools.sh runs it too)",
        path.display()
    );
    path
}

/// The environment variable that makes the durable tier mandatory: with
/// `SWITCHYARD_DURABLE_TANSU=1`, a missing durable tansu fails the test instead of
/// skipping it.
pub const DURABLE_ENV: &str = "SWITCHYARD_DURABLE_TANSU";

/// The durable tansu (libSQL storage) that `scripts/install-durable-tansu.sh` builds into
/// `.tools/durable/bin/tansu`, or `DURABLE_TANSU_BIN` when set; `None` when absent.
pub fn durable_tansu_bin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("DURABLE_TANSU_BIN") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    Some(workspace_root().join(".tools/durable/bin/tansu")).filter(|p| p.is_file())
}

/// [`durable_tansu_bin`] for a test of the durable tier: `None` (after printing why, and
/// how to install it) when it is absent, so the test returns early; a panic instead when
/// `SWITCHYARD_DURABLE_TANSU=1` says the tier must run.
pub fn durable_tansu_or_skip(test: &str) -> Option<PathBuf> {
    if let Some(bin) = durable_tansu_bin() {
        return Some(bin);
    }
    let required = std::env::var(DURABLE_ENV).is_ok_and(|v| v == "1");
    let path = std::env::var_os("DURABLE_TANSU_BIN").map_or_else(
        || workspace_root().join(".tools/durable/bin/tansu"),
        PathBuf::from,
    );
    let why = format!(
        "the durable tansu broker is not installed ({}); build it once with \
         scripts/install-durable-tansu.sh (~15 min on 2 cores)",
        path.display()
    );
    assert!(!required, "{test}: {DURABLE_ENV}=1 but {why}");
    let message = format!("SKIPPED {test}: {why}; set {DURABLE_ENV}=1 to make its absence fail");
    println!("{message}");
    eprintln!("{message}");
    None
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/test-support sits two levels below the workspace root")
}

/// A tansu broker on `127.0.0.1:<port>`, as a child process.
pub struct Tansu {
    port: u16,
    /// The port it tells clients to connect to (`--advertised-listener-url`): its own, or
    /// that of a proxy in front of it.
    advertised: u16,
    bin: PathBuf,
    /// `--storage-engine`: memory, or sqlite in `dir` (kept across restarts).
    storage: &'static str,
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
    runs: Mutex<u32>,
}

impl Tansu {
    /// The broker of this test binary, started on first use and never stopped (it dies
    /// with the process). Do not pause or kill it: other tests share it.
    pub fn shared() -> &'static Tansu {
        static SHARED: OnceLock<Tansu> = OnceLock::new();
        SHARED.get_or_init(Tansu::start)
    }

    /// A new broker of the caller's own, on a free port, ready to answer.
    ///
    /// # Panics
    /// When the binary is missing or the broker does not answer in time (with its log).
    pub fn start() -> Tansu {
        Self::start_on(free_port())
    }

    /// [`Tansu::start`] on a given port (e.g. one a switchyard config named while no
    /// broker was there).
    pub fn start_on(port: u16) -> Tansu {
        Self::launch(port, port, tansu_bin(), MEMORY)
    }

    /// A broker on a free port that advertises `127.0.0.1:<advertised>` as its address:
    /// clients that bootstrap anywhere reconnect there. For a proxy in front of it
    /// ([`TlsProxy`]); [`Tansu::brokers`] still names the broker's own port, which only
    /// plaintext bootstrap and metadata requests can use.
    pub fn start_advertising(advertised: u16) -> Tansu {
        Self::launch(free_port(), advertised, tansu_bin(), MEMORY)
    }

    /// A durable broker (`bin` from [`durable_tansu_or_skip`]) on a free port, storing in
    /// `tansu.db` (libSQL) in its own directory: [`Tansu::kill`] then
    /// [`Tansu::restart`] brings it back with its topics and records.
    pub fn start_durable(bin: &Path) -> Tansu {
        let port = free_port();
        Self::launch(port, port, bin.to_path_buf(), SQLITE)
    }

    fn launch(port: u16, advertised: u16, bin: PathBuf, storage: &'static str) -> Tansu {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-tansu-")
            .tempdir()
            .expect("creating a temp dir for tansu");
        let broker = Tansu {
            port,
            advertised,
            bin,
            storage,
            dir,
            child: Mutex::new(None),
            runs: Mutex::new(0),
        };
        broker.spawn_and_wait();
        broker
    }

    /// `127.0.0.1:<port>`, the `brokers` value of a config.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many times the broker process was started.
    pub fn runs(&self) -> u32 {
        *self.runs.lock().expect("tansu lock")
    }

    /// The port it listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .expect("tansu lock")
            .as_ref()
            .map(Child::id)
    }

    /// What the broker wrote, over all its runs.
    pub fn log(&self) -> String {
        std::fs::read(self.dir.path().join("tansu.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn spawn_and_wait(&self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))
            .expect("opening the tansu log");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("broker")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&advertised)
            .arg("--storage-engine")
            // sqlite: relative to the working directory, the broker's own directory.
            .arg(self.storage)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log);
        let child = spawn_tied_to_this_process(cmd, libc::SIGKILL);
        *self.child.lock().expect("tansu lock") = Some(child);
        *self.runs.lock().expect("tansu lock") += 1;
        self.wait_ready();
    }

    /// Waits until the broker accepts connections and answers a metadata request.
    fn wait_ready(&self) {
        let addr: SocketAddr = self.brokers().parse().expect("a socket address");
        let deadline = Instant::now() + READY_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            self.assert_alive();
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {addr} within {READY_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .expect("creating a metadata client");
        while let Err(e) = consumer.fetch_metadata(None, Duration::from_secs(2)) {
            self.assert_alive();
            assert!(
                Instant::now() < deadline,
                "tansu on {addr} did not answer a metadata request within {READY_TIMEOUT:?} ({e}):\n{}",
                self.log()
            );
        }
    }

    fn assert_alive(&self) {
        let mut child = self.child.lock().expect("tansu lock");
        if let Some(c) = child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            *child = None;
            panic!("tansu exited with {status}:\n{}", self.log());
        }
    }

    /// Creates `topic` with `partitions` partitions.
    ///
    /// # Panics
    /// When tansu refuses (the topic exists, the broker is down).
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let out = Command::new(&self.bin)
            .args(["topic", "create", topic, "--partitions"])
            .arg(partitions.to_string())
            .arg("--broker")
            .arg(format!("tcp://{}", self.brokers()))
            .env("RUST_LOG", "warn")
            .output()
            .expect("running tansu topic create");
        assert!(
            out.status.success(),
            "tansu topic create {topic} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.wait_for_topic(topic, partitions);
    }

    /// Waits until a metadata request shows `topic` with `partitions` partitions.
    fn wait_for_topic(&self, topic: &str, partitions: u32) {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .expect("creating a metadata client");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(2))
                && md.topics().iter().any(|t| {
                    t.name() == topic
                        && t.error().is_none()
                        && t.partitions().len() == partitions as usize
                })
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "topic {topic} did not appear with {partitions} partitions within {READY_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether `topic` exists on the broker now.
    pub fn topic_exists(&self, topic: &str) -> bool {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .expect("creating a metadata client");
        consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .map(|md| {
                md.topics()
                    .iter()
                    .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            })
            .unwrap_or(false)
    }

    /// Sends `signal` to the broker process.
    fn signal(&self, signal: libc::c_int) {
        let pid = self.pid().expect("tansu is not running");
        let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
        // SAFETY: kill(2) on our own unreaped child with a valid signal number.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// SIGSTOP: the broker stops answering but keeps its connections and data.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Tansu::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// SIGKILL, and waits for it to be gone. Its (in-memory) data is lost.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().expect("tansu lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port after [`Tansu::kill`]: a memory broker comes back
    /// empty, a durable one ([`Tansu::start_durable`]) with what it stored.
    pub fn restart(&self) {
        assert!(
            self.pid().is_none(),
            "restart() while tansu runs: kill() first"
        );
        self.spawn_and_wait();
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        // SIGKILL ends a SIGSTOPped broker too.
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "tansu on port {}, end of its log:\n{}",
                self.port,
                crate::tail(&self.log(), 30)
            );
        }
    }
}

/// One record as a test produces or reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// Header names and values (values as text, lossily).
    pub headers: Vec<(String, String)>,
}

impl KafkaRecord {
    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A record to produce: key, payload, headers.
pub type Produced = (Option<Vec<u8>>, Vec<u8>, Vec<(String, String)>);

/// A record to produce without a key: payload, and headers whose names are any bytes.
pub type ProducedBytes = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

/// Produces `(key, payload, headers)` records to `topic` with an idempotent producer,
/// and waits until every one is acknowledged by the broker.
///
/// # Panics
/// When a record cannot be delivered within `within`.
pub fn produce(brokers: &str, topic: &str, records: &[Produced], within: Duration) {
    produce_records(
        brokers,
        topic,
        within,
        records.iter().map(|(key, payload, headers)| {
            let mut h = OwnedHeaders::new_with_capacity(headers.len());
            for (name, value) in headers {
                h = h.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
            (key.as_deref(), &payload[..], h)
        }),
    );
}

/// Like [`produce`], for records without a key whose header names are any bytes, as
/// other Kafka clients may send them (rdkafka's producer takes only UTF-8 names).
///
/// # Panics
/// When a record cannot be delivered within `within`.
pub fn produce_with_byte_headers(
    brokers: &str,
    topic: &str,
    records: &[ProducedBytes],
    within: Duration,
) {
    use rdkafka::bindings as rd;
    produce_records(
        brokers,
        topic,
        within,
        records.iter().map(|(payload, headers)| {
            let h = OwnedHeaders::new_with_capacity(headers.len());
            // rdkafka (0.39) has no way to add a header with such a name. Its
            // `BorrowedHeaders` is a zero-sized view whose address is librdkafka's
            // header list: its own reads cast it back the same way.
            const _: () = assert!(size_of::<rdkafka::message::BorrowedHeaders>() == 0);
            let list = std::ptr::from_ref(h.as_borrowed())
                .cast::<rd::rd_kafka_headers_t>()
                .cast_mut();
            for (name, value) in headers {
                // SAFETY: `list` is the live list `h` owns; librdkafka copies the name
                // and value, whose sizes are given.
                let err = unsafe {
                    rd::rd_kafka_header_add(
                        list,
                        name.as_ptr().cast(),
                        name.len() as isize,
                        value.as_ptr().cast(),
                        value.len() as isize,
                    )
                };
                assert_eq!(err, rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
            }
            (None, &payload[..], h)
        }),
    );
}

fn produce_records<'a>(
    brokers: &str,
    topic: &str,
    within: Duration,
    records: impl Iterator<Item = (Option<&'a [u8]>, &'a [u8], OwnedHeaders)>,
) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", within.as_millis().to_string())
        .create()
        .expect("creating a test producer");
    for (key, payload, headers) in records {
        let mut record = BaseRecord::to(topic).payload(payload).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) => {
                    assert!(
                        matches!(
                            e.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ),
                        "producing to {topic}: {e}"
                    );
                    record = r;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(within).unwrap_or_else(|e| {
        panic!("producing to {topic}: not all records acknowledged within {within:?}: {e}")
    });
    assert_eq!(producer.in_flight_count(), 0, "records left unacknowledged");
}

/// Reads `topic` from the beginning of every partition (no consumer group) until
/// `done(records so far)` holds or `within` passes, and returns what was read, in the
/// order of each partition (partitions interleaved as they arrived).
pub fn read_topic(
    brokers: &str,
    topic: &str,
    within: Duration,
    done: impl FnMut(&[KafkaRecord]) -> bool,
) -> Vec<KafkaRecord> {
    read_topic_with(brokers, &[], topic, within, done)
}

/// [`read_topic`] with extra librdkafka settings for the reader (e.g.
/// [`TlsProxy::client_options`]).
pub fn read_topic_with(
    brokers: &str,
    options: &[(String, String)],
    topic: &str,
    within: Duration,
    mut done: impl FnMut(&[KafkaRecord]) -> bool,
) -> Vec<KafkaRecord> {
    let deadline = Instant::now() + within;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-reader-{topic}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    for (k, v) in options {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create().expect("creating a test reader");
    let partitions = loop {
        if let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(2))
            && let Some(t) = md
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
            && !t.partitions().is_empty()
        {
            break t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>();
        }
        if Instant::now() >= deadline {
            return Vec::new();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .expect("adding a partition");
    }
    consumer.assign(&tpl).expect("assigning the partitions");
    let mut out = Vec::new();
    let mut seen: HashSet<(i32, i64)> = HashSet::new();
    while !done(&out) && Instant::now() < deadline {
        // Errors (a broker restarting) are retried by polling again.
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            if !seen.insert((m.partition(), m.offset())) {
                continue;
            }
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(KafkaRecord {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                headers,
            });
        }
    }
    out
}

/// [`read_topic`] until at least `n` records were read.
pub fn read_n(brokers: &str, topic: &str, n: usize, within: Duration) -> Vec<KafkaRecord> {
    read_topic(brokers, topic, within, |r| r.len() >= n)
}

/// A topic or group name unique to this test process and call: `<prefix>-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A TLS-terminating proxy (`socat OPENSSL-LISTEN … TCP:…`) on `127.0.0.1:<port>` in
/// front of a plaintext broker, with certificates made for it at start:
///
/// * `ca.pem` — a throwaway CA ([`TlsProxy::ca_file`]);
/// * `server.pem` / `server.key` — the proxy's certificate, signed by that CA, for
///   `IP:127.0.0.1` and `DNS:localhost` (so librdkafka's default hostname check passes);
/// * `other-ca.pem` — a second CA that signed nothing ([`TlsProxy::wrong_ca_file`]).
///
/// Start the broker with [`Tansu::start_advertising`]`(port)` so that clients which
/// bootstrap through the proxy also reconnect through it. Needs `socat` and `openssl`
/// (`scripts/install-test-tools.sh` installs them when missing).
pub struct TlsProxy {
    port: u16,
    target: String,
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
}

impl TlsProxy {
    /// Makes the certificates and starts the proxy on `port`, forwarding every
    /// connection to `target` (`host:port`); returns once it accepts connections.
    ///
    /// # Panics
    /// When `openssl` or `socat` is missing or fails (with its output).
    pub fn start(port: u16, target: &str) -> TlsProxy {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-tls-")
            .tempdir()
            .expect("creating a temp dir for the TLS proxy");
        crate::certs::make_certificates(dir.path());
        let proxy = TlsProxy {
            port,
            target: target.to_owned(),
            dir,
            child: Mutex::new(None),
        };
        proxy.spawn_and_wait();
        proxy
    }

    fn spawn_and_wait(&self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("socat.log"))
            .expect("opening the socat log");
        let d = self.dir.path();
        let listen = format!(
            "OPENSSL-LISTEN:{},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
            self.port,
            d.join("server.pem").display(),
            d.join("server.key").display()
        );
        let mut cmd = Command::new("socat");
        // -d -d: one line per accepted connection and per TLS failure.
        cmd.args(["-d", "-d", &listen, &format!("TCP:{}", self.target)])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log);
        *self.child.lock().expect("proxy lock") =
            Some(spawn_tied_to_this_process(cmd, libc::SIGKILL));
        let addr: SocketAddr = self.brokers().parse().expect("a socket address");
        let deadline = Instant::now() + READY_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(c) = self.child.lock().expect("proxy lock").as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "socat exited with {status} (is socat installed? scripts/install-test-tools.sh):\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the TLS proxy did not listen on {addr} within {READY_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:<port>`, the `brokers` value of a TLS client.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The CA that signed the proxy's certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA that did not sign the proxy's certificate (PEM).
    pub fn wrong_ca_file(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }

    /// librdkafka settings of a client that trusts [`TlsProxy::ca_file`]:
    /// `security.protocol = ssl`, `ssl.ca.location`.
    pub fn client_options(&self) -> Vec<(String, String)> {
        vec![
            ("security.protocol".into(), "ssl".into()),
            (
                "ssl.ca.location".into(),
                self.ca_file().display().to_string(),
            ),
        ]
    }

    /// What socat wrote (connections accepted, TLS errors).
    pub fn log(&self) -> String {
        std::fs::read(self.dir.path().join("socat.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// TLS connections socat accepted so far (its `accepting connection` lines).
    pub fn connections(&self) -> usize {
        self.log().matches("accepting connection from").count()
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().expect("proxy lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "TLS proxy on port {}, end of its log:\n{}",
                self.port,
                crate::tail(&self.log(), 30)
            );
        }
    }
}
