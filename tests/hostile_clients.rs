//! The front door, tried as a hostile client would: slow and silent connections, a
//! connection flood under a small open-file limit, bodies that expand in memory, long
//! idempotency keys, every endpoint without its token, and TLS.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use switchyard_test_support::{
    Behaviour, Options, Switchyard, WebhookReceiver, switchyard_command,
};
use switchyard_tests::{client, runtime, wait_until};

const ADMIN: &str = "admin-token-0123456789abcdef";
const INGEST: &str = "ingest-token-0123456789abcdef";
const METRICS: &str = "metrics-token-0123456789abcdef";

/// How long a test waits for the server to cut a connection: far above the 1 s timeouts
/// configured, so only a server that never cuts fails.
const CUT_WITHIN: Duration = Duration::from_secs(20);

fn short_timeouts() -> Switchyard {
    Switchyard::start(
        r#"
[server]
header_timeout = "1s"
body_timeout = "1s"
idle_timeout = "1s"

[sources.api]
type = "http"

[pipelines.p]
from = ["api"]
to = ["out"]

[sinks.out]
type = "stdout"
"#,
    )
}

/// Keeps `stream` open, calling `step` every 100 ms, until the server closes it (a read
/// sees the end or an error) or `CUT_WITHIN` passes; returns how long it stayed open (if
/// it was closed) and what the server sent.
fn time_until_closed(
    stream: &mut TcpStream,
    step: impl FnMut(&mut TcpStream),
) -> (Option<Duration>, String) {
    time_until_closed_within(stream, CUT_WITHIN, step)
}

/// [`time_until_closed`], waiting at most `within`.
fn time_until_closed_within(
    stream: &mut TcpStream,
    within: Duration,
    mut step: impl FnMut(&mut TcpStream),
) -> (Option<Duration>, String) {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < within {
        match stream.read(&mut buf) {
            Ok(0) => {
                return (
                    Some(start.elapsed()),
                    String::from_utf8_lossy(&answer).into(),
                );
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                return (
                    Some(start.elapsed()),
                    String::from_utf8_lossy(&answer).into(),
                );
            }
        }
        step(stream);
    }
    (None, String::from_utf8_lossy(&answer).into())
}

#[test]
fn slow_and_silent_connections_are_cut_at_their_timeouts() {
    let sy = short_timeouts();

    // Headers at one byte every 100 ms never finish within header_timeout.
    let mut slow_headers = TcpStream::connect(sy.addr()).unwrap();
    slow_headers
        .write_all(b"POST /ingest/api HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let (cut, _) = time_until_closed(&mut slow_headers, |s| {
        let _ = s.write_all(b"X");
    });
    assert!(
        cut.is_some(),
        "a slow header sender stayed connected for {CUT_WITHIN:?}"
    );
    println!("slow headers cut after {:?}", cut.unwrap());

    // A connection that never sends a byte.
    let mut silent = TcpStream::connect(sy.addr()).unwrap();
    let (cut, _) = time_until_closed(&mut silent, |_| {});
    assert!(
        cut.is_some(),
        "a silent connection stayed open for {CUT_WITHIN:?}"
    );
    println!("silent connection cut after {:?}", cut.unwrap());

    // An idle keep-alive connection after one answered request.
    let mut idle = TcpStream::connect(sy.addr()).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let (cut, _) = time_until_closed(&mut idle, |_| {});
    assert!(
        cut.is_some(),
        "an idle keep-alive connection stayed open for {CUT_WITHIN:?}"
    );
    println!("idle keep-alive cut after {:?}", cut.unwrap());

    // A body at one byte every 100 ms: 408, or the connection closed.
    let mut slow_body = TcpStream::connect(sy.addr()).unwrap();
    slow_body
        .write_all(b"POST /ingest/api HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{")
        .unwrap();
    let start = Instant::now();
    let (cut, answer) = time_until_closed(&mut slow_body, |s| {
        let _ = s.write_all(b" ");
    });
    let closed = cut.is_some();
    assert!(
        closed || answer.starts_with("HTTP/1.1 408"),
        "a slow body was neither answered 408 nor cut: {answer:?}"
    );
    println!(
        "slow body ended after {:?}: {:?}",
        start.elapsed(),
        answer.lines().next()
    );

    // The server still serves everyone else.
    assert_eq!(
        switchyard_test_support::http_status(sy.addr(), "/healthz"),
        Some(200)
    );
}

#[test]
fn an_idle_connection_that_starts_a_head_and_stalls_is_cut_at_the_header_timeout() {
    // The idle timeout is far longer than the header timeout: a client that answers
    // one request, idles, then sends one byte of its next head and stalls must be cut
    // at the header timeout counted from that byte, not left for the idle timeout.
    let sy = Switchyard::start(
        r#"
[server]
header_timeout = "1s"
idle_timeout = "60s"

[sources.api]
type = "http"

[pipelines.p]
from = ["api"]
to = ["out"]

[sinks.out]
type = "stdout"
"#,
    );
    let mut stream = TcpStream::connect(sy.addr()).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // Idle for longer than the header timeout: still open (idle allows 60 s).
    let (cut, _) = time_until_closed_within(&mut stream, Duration::from_millis(2500), |_| {});
    assert_eq!(
        cut, None,
        "an idle connection was cut before its idle timeout"
    );
    // One byte of the next head, then nothing.
    stream.write_all(b"P").unwrap();
    let (cut, _) = time_until_closed(&mut stream, |_| {});
    let cut = cut.expect("a stalled head stayed open");
    assert!(
        cut < Duration::from_secs(30),
        "a stalled head was cut only after {cut:?}: the idle timeout, not the header one"
    );
    println!("stalled head after idling cut after {cut:?}");
}

/// Raises this process's own open-file limit so it can play 2,000 clients.
fn raise_own_fd_limit(wanted: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(wanted.max(limit.rlim_cur));
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

#[test]
fn a_flood_of_idle_connections_under_1024_descriptors_loses_and_dead_letters_nothing() {
    let own = raise_own_fd_limit(8192);
    let attackers = 2000.min(own.saturating_sub(512) as usize);
    assert!(
        attackers >= 1500,
        "this test needs ~2,500 descriptors; the hard limit is {own}"
    );
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let sy = Switchyard::start_with(
        &format!(
            r#"
[server]
admin_token = "{ADMIN}"

[sources.api]
type = "http"

[pipelines.p]
from = ["api"]
to = ["hook"]

[sinks.hook]
type = "webhook"
url = "{url}"
concurrency = 8
retry = {{ max_attempts = 5, initial = "50ms", max = "200ms" }}
"#,
            url = receiver.url()
        ),
        Options {
            open_file_limit: Some(1024),
            ..Options::default()
        },
    );

    // The flood: `attackers` connections that send nothing, reopened as the server cuts
    // them, for as long as the producer runs.
    let addr = sy.addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut open: Vec<TcpStream> = Vec::new();
            let mut opened = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                open.retain(|s| !is_closed(s));
                while open.len() < attackers {
                    match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                        Ok(s) => {
                            s.set_nonblocking(true).ok();
                            open.push(s);
                            opened += 1;
                        }
                        Err(_) => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            opened
        })
    };
    // Let the flood fill the server's connection slots first.
    std::thread::sleep(Duration::from_secs(1));

    // A producer that retries what the server sheds: 400 events, one key each in order.
    let total = 400usize;
    let accepted = runtime().block_on(async {
        let http = client();
        let mut accepted = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        for n in 0..total {
            loop {
                assert!(
                    Instant::now() < deadline,
                    "only {} of {total} events accepted",
                    accepted.len()
                );
                let r = http
                    .post(format!("{}/ingest/api", sy.url()))
                    .header("content-type", "application/json")
                    .header("idempotency-key", format!("e-{n}"))
                    .body(format!("{{\"n\":{n}}}"))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        accepted.push(n);
                        break;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
        accepted
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = flood.join().unwrap();
    println!(
        "flood opened {opened} connections; {} events accepted",
        accepted.len()
    );
    assert_eq!(accepted.len(), total);

    assert!(
        receiver.wait_for_count(total, Duration::from_secs(60)),
        "only {} of {total} events delivered",
        receiver.count()
    );
    let dead = runtime().block_on(async {
        client()
            .get(format!("{}/admin/dlq/dead-letters", sy.url()))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    });
    assert_eq!(
        dead["dead_letters"].as_array().map(Vec::len),
        Some(0),
        "dead-lettered under the flood: {dead}"
    );
    let log = sy.logs();
    assert!(
        !log.contains("Too many open files"),
        "descriptors ran out:\n{}",
        switchyard_test_support::tail(&log, 30)
    );
}

/// Whether the peer closed `s` (a non-blocking read sees the end or an error).
fn is_closed(s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    match s.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// The peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/PID/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number of kB");
    kib * 1024
}

fn post_raw(addr: SocketAddr, headers: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /ingest/api HTTP/1.1\r\nHost: x\r\nConnection: close\r\ncontent-length: {}\r\n{headers}\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, answer)
}

#[test]
fn bodies_that_expand_in_memory_are_refused_before_they_grow_the_process() {
    let sy = Switchyard::start(
        r#"
[sources.api]
type = "http"

[pipelines.p]
from = ["api"]
to = ["out"]

[sinks.out]
type = "file"
path = "{dir}/out.jsonl"
"#,
    );
    let pid = sy.pid().unwrap();
    // Warm up: the first requests allocate the server's steady buffers.
    for _ in 0..20 {
        let (status, _) = post_raw(
            sy.addr(),
            "content-type: application/json\r\n",
            b"{\"warm\":1}",
        );
        assert_eq!(status, 200);
    }
    let before = peak_rss(pid);

    // 1 MiB of tiny events (`{}` per line): 349,525 events.
    let tiny: Vec<u8> = b"{}\n".repeat((1 << 20) / 3);
    let (status, answer) = post_raw(sy.addr(), "content-type: application/x-ndjson\r\n", &tiny);
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("max_events"), "{answer}");
    // Four at once.
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let (status, answer) =
                    post_raw(sy.addr(), "content-type: application/x-ndjson\r\n", &tiny);
                assert!(status == 413 || status == 429, "{answer}");
            });
        }
    });
    let after_tiny = peak_rss(pid);

    // An 8 KiB Idempotency-Key on a 20 KB body: refused, nothing built.
    let long_key = "k".repeat(8192);
    let small: Vec<u8> = b"{}\n".repeat(20_000 / 3);
    let (status, answer) = post_raw(
        sy.addr(),
        &format!("content-type: application/x-ndjson\r\nidempotency-key: {long_key}\r\n"),
        &small,
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("256"), "{answer}");
    // The longest key accepted: the answer stays bounded (ids are the key + a counter).
    let key = "k".repeat(256);
    let (status, answer) = post_raw(
        sy.addr(),
        &format!("content-type: application/x-ndjson\r\nidempotency-key: {key}\r\n"),
        &small,
    );
    assert_eq!(status, 200, "{}", &answer[..answer.len().min(300)]);
    assert!(answer.len() < 4 << 20, "a {} byte answer", answer.len());
    let after_key = peak_rss(pid);

    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "peak RSS: {:.1} MiB at start, {:.1} MiB after five 1 MiB tiny-event bodies (+{:.1}), {:.1} MiB after the long keys (+{:.1})",
        mib(before),
        mib(after_tiny),
        mib(after_tiny - before),
        mib(after_key),
        mib(after_key - after_tiny)
    );
    // Each 1 MiB body is held while read (five at most at once); nothing may expand it.
    assert!(
        after_tiny - before < 16 << 20,
        "five 1 MiB bodies grew peak RSS by {:.1} MiB",
        mib(after_tiny - before)
    );
    // 6,666 events with 256-byte ids and headers: bounded by max_events × what one such
    // event costs on its way (parsed, encoded for the log, answered, read back).
    assert!(
        after_key - after_tiny < 32 << 20,
        "a 20 KB body grew peak RSS by {:.1} MiB",
        mib(after_key - after_tiny)
    );
}

#[test]
fn every_endpoint_asks_for_its_token_and_names_nothing_without_it() {
    let sy = Switchyard::start(&format!(
        r#"
[server]
admin_token = "{ADMIN}"
metrics_token = "{METRICS}"

[queues.jobs]

[sources.api]
type = "http"
token = "{INGEST}"

[pipelines.p]
from = ["api"]
to = ["out"]

[sinks.out]
type = "stdout"
"#
    ));
    let base = sy.url();
    runtime().block_on(async {
        let http = client();
        let admin: &[(&str, &str)] = &[
            ("GET", "/admin/queues/jobs/messages"),
            ("GET", "/admin/dlq/dead-letters"),
            ("POST", "/admin/dlq/dead-letters/replay"),
            ("POST", "/admin/dlq/dead-letters/purge"),
            ("GET", "/admin/sources/api/status"),
            ("POST", "/admin/sources/api/snapshot"),
            ("GET", "/admin/state"),
            ("GET", "/admin/history"),
            ("GET", "/admin/events"),
            ("GET", "/admin/config"),
            ("POST", "/admin/config/validate"),
            ("POST", "/queues/jobs/messages"),
            ("POST", "/queues/jobs/groups/g/receive"),
            ("POST", "/queues/jobs/groups/g/ack"),
            ("POST", "/queues/jobs/groups/g/nack"),
            ("POST", "/queues/jobs/groups/g/extend"),
            ("GET", "/queues/jobs/stats"),
        ];
        let send = |method: &str, path: &str, token: Option<String>| {
            let mut r = http.request(method.parse().unwrap(), format!("{base}{path}"));
            if let Some(t) = token {
                r = r.header("authorization", t);
            }
            r.header("content-type", "application/json")
                .body("{}")
                .send()
        };
        for (method, path) in admin {
            for token in [
                None,
                Some(format!("Bearer {ADMIN}x")),
                Some(format!("Bearer {INGEST}")),
            ] {
                let r = send(method, path, token.clone()).await.unwrap();
                let status = r.status().as_u16();
                let text = r.text().await.unwrap();
                assert_eq!(status, 401, "{method} {path} with {token:?}: {text}");
                assert!(
                    !text.contains("jobs") || path.contains("jobs") && !text.contains("queues:"),
                    "{text}"
                );
            }
            // The right token, with the scheme in any case, gets past the door.
            let r = send(method, path, Some(format!("bearer {ADMIN}")))
                .await
                .unwrap();
            assert_ne!(
                r.status().as_u16(),
                401,
                "{method} {path} refused the admin token"
            );
        }
        for token in [None, Some(format!("Bearer {ADMIN}"))] {
            let r = send("GET", "/metrics", token.clone()).await.unwrap();
            assert_eq!(r.status().as_u16(), 401, "/metrics with {token:?}");
        }
        let r = send("GET", "/metrics", Some(format!("BEARER {METRICS}")))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let r = send("POST", "/ingest/api", None).await.unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let r = send("POST", "/ingest/api", Some(format!("Bearer {INGEST}")))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        // A stranger cannot tell an unknown source from a guarded one; a producer learns
        // that it does not exist, but not which ones do.
        let r = send("POST", "/ingest/nope", None).await.unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let r = send("POST", "/ingest/nope", Some(format!("Bearer {INGEST}"))).await.unwrap();
        assert_eq!(r.status().as_u16(), 404);
        let text = r.text().await.unwrap();
        assert!(!text.contains("api"), "{text}");
        // The admin and queue APIs check the token before they read a body: a stranger's
        // large declared body is refused at once, holding no memory. Only the head is
        // sent: the answer must come without the body (a client that kept writing the
        // body after the refusal could meet a closed connection instead of the answer).
        let mut stranger = TcpStream::connect(sy.addr()).unwrap();
        stranger
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stranger,
            "POST /queues/jobs/messages HTTP/1.1\r\nhost: switchyard\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            3 << 20
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stranger.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 401"), "{head}");
        // A produce batch up to the documented 16 MiB is read (here: 3 MiB of messages).
        let batch = serde_json::json!({
            "messages": (0..3).map(|_| serde_json::json!({"payload": "x".repeat(1 << 20)})).collect::<Vec<_>>()
        });
        let r = http
            .post(format!("{base}/queues/jobs/messages"))
            .bearer_auth(ADMIN)
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    });
}

fn validate(config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(&path, config).unwrap();
    let out = switchyard_command()
        .args(["validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn validate_refuses_an_exposed_listener_without_tokens_and_short_tokens() {
    let open = "[server]\nlisten = \"0.0.0.0:8080\"\n\n[sources.api]\ntype = \"http\"\n\n[pipelines.p]\nfrom = [\"api\"]\nto = [\"out\"]\n\n[sinks.out]\ntype = \"stdout\"\n";
    let (code, out) = validate(open);
    assert_eq!(code, 1, "{out}");
    for named in [
        "server.listen",
        "server.admin_token",
        "sources.api.token",
        "insecure",
    ] {
        assert!(out.contains(named), "{named} not named:\n{out}");
    }
    let (code, out) = validate(&open.replace("[server]\n", "[server]\ninsecure = true\n"));
    assert_eq!(code, 0, "{out}");
    let guarded = open.replace(
        "[server]\n",
        &format!("[server]\nadmin_token = \"{ADMIN}\"\n"),
    );
    let guarded = guarded.replace(
        "type = \"http\"\n",
        &format!("type = \"http\"\ntoken = \"{INGEST}\"\n"),
    );
    let (code, out) = validate(&guarded);
    assert_eq!(code, 0, "{out}");

    let (code, out) = validate(&guarded.replace(ADMIN, "hunter2-short"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("server.admin_token") && out.contains("16"),
        "{out}"
    );
    assert!(
        !out.contains("hunter2-short"),
        "the token was echoed:\n{out}"
    );
}

/// A self-signed certificate for 127.0.0.1 and localhost, made with `openssl`.
fn make_cert(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        ])
        .arg(format!("/CN={name}"))
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // rustls refuses a CA certificate as a server's own (OpenSSL makes CA:TRUE by
        // default).
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("running openssl (scripts/install-test-tools.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

fn https_client(ca: &std::path::Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

#[test]
fn tls_listener_serves_https_and_reloads_its_certificate_on_sighup() {
    let certs = tempfile::tempdir().unwrap();
    let (first, first_key) = make_cert(certs.path(), "first");
    let (second, second_key) = make_cert(certs.path(), "second");
    let live_cert = certs.path().join("live.crt");
    let live_key = certs.path().join("live.key");
    std::fs::copy(&first, &live_cert).unwrap();
    std::fs::copy(&first_key, &live_key).unwrap();
    let sy = Switchyard::start_with(
        &format!(
            r#"
[server]
tls = {{ cert = "{}", key = "{}" }}

[sources.api]
type = "http"

[pipelines.p]
from = ["api"]
to = ["out"]

[sinks.out]
type = "file"
path = "{{dir}}/out.jsonl"
"#,
            live_cert.display(),
            live_key.display()
        ),
        Options {
            tls: true,
            ..Options::default()
        },
    );
    let https = format!("https://127.0.0.1:{}", sy.addr().port());
    runtime().block_on(async {
        let trusts_first = https_client(&first);
        let trusts_second = https_client(&second);
        let ok = |c: reqwest::Client, url: String| async move {
            c.get(url).send().await.is_ok_and(|r| r.status() == 200)
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ok(trusts_first.clone(), format!("{https}/readyz")).await {
            assert!(
                Instant::now() < deadline,
                "no HTTPS answer with the first certificate"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let r = trusts_first
            .post(format!("{https}/ingest/api"))
            .header("content-type", "application/json")
            .body("{\"over\":\"tls\"}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(!ok(trusts_second.clone(), format!("{https}/healthz")).await);
        // Plain HTTP gets no answer.
        assert_eq!(
            switchyard_test_support::http_status(sy.addr(), "/healthz"),
            None
        );

        std::fs::copy(&second, &live_cert).unwrap();
        std::fs::copy(&second_key, &live_key).unwrap();
        // SAFETY: a signal to the child we started.
        unsafe { libc::kill(sy.pid().unwrap() as i32, libc::SIGHUP) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ok(trusts_second.clone(), format!("{https}/healthz")).await {
            assert!(
                Instant::now() < deadline,
                "the second certificate was not served after SIGHUP"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!ok(trusts_first.clone(), format!("{https}/healthz")).await);
    });
    assert!(wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(sy.dir().join("out.jsonl"))
            .is_ok_and(|t| t.contains("\"over\":\"tls\""))
    }));
    assert!(sy.logs().contains("TLS certificate reloaded"));
}
