//! The operator console in a real browser: `tests/console/console.spec.mjs` drives the
//! system chromium (playwright-core) against the real binary, and asks this test, line by
//! line, to do what a browser cannot: send events, make the webhook fail and heal, and
//! check what the webhook received. It logs in (a wrong token is refused first), sees the
//! graph and its counts move, sees dead letters, replays one, purges another, and saves a
//! screenshot of each page in `target/console-screenshots/`.
//!
//! Needs `/usr/bin/chromium` and `tests/console/node_modules` (`scripts/install-browser.sh`,
//! run by `scripts/install-test-tools.sh`), and the example plugins
//! (`scripts/build-plugins.sh`, run by `scripts/test.sh`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use switchyard_test_support::{Behaviour, PgCluster, Switchyard, WebhookReceiver, tail};
use switchyard_tests::{client, runtime, wait_until};

const TOKEN: &str = "console-admin-token-0123456789";
/// The whole browser run, from launch to the last screenshot.
const BROWSER_RUN: Duration = Duration::from_secs(120);

fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A plugin built by `scripts/build-plugins.sh`.
fn wasm(name: &str) -> String {
    let path = tests_dir()
        .join("../plugins/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-plugins.sh first",
        path.display()
    );
    path.canonicalize().unwrap().display().to_string()
}

fn require_browser() {
    let playwright = tests_dir().join("console/node_modules/playwright-core/package.json");
    assert!(
        Path::new("/usr/bin/chromium").is_file() && playwright.is_file(),
        "the console's browser test needs /usr/bin/chromium and {}: run scripts/install-browser.sh",
        playwright.display()
    );
}

/// What the browser asks for, and how this side answers.
struct Steps<'a> {
    switchyard: &'a Switchyard,
    receiver: &'a WebhookReceiver,
    sent: u64,
}

impl Steps<'_> {
    fn ingest(&self, id: &str, body: serde_json::Value) {
        let url = format!("{}/ingest/api", self.switchyard.url());
        let status = runtime().block_on(async {
            client()
                .post(url)
                .header("idempotency-key", id)
                .json(&body)
                .send()
                .await
                .expect("ingest answers")
                .status()
        });
        assert_eq!(status, 200, "ingest of {id}");
    }

    /// The sink's dead-lettered count as `/admin/state` gives it.
    fn dead_lettered(&self) -> u64 {
        let url = format!("{}/admin/state", self.switchyard.url());
        let state: serde_json::Value = runtime().block_on(async {
            client()
                .get(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("state answers")
                .json()
                .await
                .expect("state is JSON")
        });
        state["sinks"]
            .as_array()
            .and_then(|sinks| sinks.iter().find(|s| s["name"] == "hook"))
            .and_then(|hook| hook["counters"]["dead_lettered"].as_u64())
            .unwrap_or(0)
    }

    /// A queue API call with the admin token; its JSON answer.
    fn queue_call(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let url = format!("{}{path}", self.switchyard.url());
        runtime().block_on(async {
            let r = client()
                .post(url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .expect("the queue API answers");
            assert!(r.status().is_success(), "{path}: {}", r.status());
            r.json().await.expect("a JSON answer")
        })
    }

    /// Sends an event while the webhook answers 500: retried, then dead-lettered.
    fn dead_letter(&self, id: &str) -> Result<(), String> {
        let before = self.dead_lettered();
        self.receiver.set_behaviour(Behaviour::Status(500));
        self.ingest(id, serde_json::json!({ "poison": true, "id": id }));
        let done = wait_until(Duration::from_secs(20), || self.dead_lettered() > before);
        self.receiver.set_behaviour(Behaviour::Ok);
        done.then_some(())
            .ok_or_else(|| format!("{id} was not dead-lettered"))
    }

    fn answer(&mut self, step: &str) -> Result<String, String> {
        match step.split_once(' ').unwrap_or((step, "")) {
            ("send-events", _) => {
                for n in 0..5 {
                    self.ingest(&format!("console-{n}"), serde_json::json!({ "n": n }));
                    self.sent += 1;
                }
                let sent = self.sent as usize;
                if !self.receiver.wait_for_count(sent, Duration::from_secs(20)) {
                    return Err(format!("{} of {sent} delivered", self.receiver.count()));
                }
                Ok("5".into())
            }
            ("fail-webhook", _) => self
                .dead_letter("console-poison")
                .map(|()| "console-poison".into()),
            ("queue-work", _) => {
                // Three messages, one of them delayed; the group `workers` receives the
                // two that are due and acks one.
                self.queue_call(
                    "/queues/jobs/messages",
                    serde_json::json!({ "messages": [
                        { "payload": { "n": 1 } },
                        { "payload": { "n": 2 } },
                        { "payload": { "n": 3 }, "delay": "10m" },
                    ] }),
                );
                let got = self.queue_call(
                    "/queues/jobs/groups/workers/receive",
                    serde_json::json!({ "max": 1, "wait": "5s" }),
                );
                let receipt = got["messages"][0]["receipt"].clone();
                let acked = self.queue_call(
                    "/queues/jobs/groups/workers/ack",
                    serde_json::json!({ "receipts": [receipt] }),
                );
                (acked["acked"] == 1)
                    .then(String::new)
                    .ok_or_else(|| format!("the ack answered {acked}"))
            }
            ("heal-webhook", _) => {
                self.receiver.set_behaviour(Behaviour::Ok);
                Ok(String::new())
            }
            ("check-replayed", id) => {
                let delivered = wait_until(Duration::from_secs(10), || {
                    self.receiver
                        .accepted()
                        .iter()
                        .any(|r| r.header("webhook-id") == Some(id))
                });
                delivered
                    .then(String::new)
                    .ok_or_else(|| format!("the webhook did not receive {id} after the replay"))
            }
            ("dead-letter-two", _) => {
                self.dead_letter("console-poison-2")?;
                self.dead_letter("console-poison-3")?;
                Ok("console-poison-2 console-poison-3".into())
            }
            ("check-not-delivered", id) => {
                let delivered = self
                    .receiver
                    .accepted()
                    .iter()
                    .any(|r| r.header("webhook-id") == Some(id));
                (!delivered)
                    .then(String::new)
                    .ok_or_else(|| format!("{id} was delivered although it was not picked"))
            }
            (other, _) => Err(format!("unknown step {other}")),
        }
    }
}

/// Runs the browser script's `scenario` against `switchyard`, answering each step it
/// asks for with `answer`, and panics unless it passes within [`BROWSER_RUN`].
fn run_browser(
    switchyard: &Switchyard,
    scenario: &str,
    mut answer: impl FnMut(&str) -> Result<String, String>,
) {
    require_browser();
    let screenshots = tests_dir().join("../target/console-screenshots");
    let mut browser = Command::new("node")
        .arg("console/console.spec.mjs")
        .current_dir(tests_dir())
        .env("SWITCHYARD_URL", switchyard.url())
        .env("SWITCHYARD_TOKEN", TOKEN)
        .env("SCREENSHOTS", &screenshots)
        .env("SCENARIO", scenario)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting node (install nodejs, then run scripts/install-browser.sh)");
    let mut stdin = browser.stdin.take().expect("piped stdin");
    let (lines, asked) = mpsc::channel();
    let stdout = browser.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + BROWSER_RUN;
    let status = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match asked.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) => match line.strip_prefix("STEP ") {
                Some(step) => reply(&mut stdin, answer(step)),
                None => println!("browser: {line}"),
            },
            Err(e) => {
                if e == mpsc::RecvTimeoutError::Disconnected {
                    // Its stdout closed: poll for its exit at a modest pace.
                    std::thread::sleep(Duration::from_millis(50));
                }
                if let Some(status) = browser.try_wait().expect("waiting for node") {
                    break status;
                }
                if left.is_zero() {
                    let _ = browser.kill();
                    let _ = browser.wait();
                    panic!(
                        "the browser run took longer than {BROWSER_RUN:?}\n{}",
                        tail(&switchyard.stderr(), 30)
                    );
                }
            }
        }
    };
    assert!(
        status.success(),
        "the browser run failed ({status}); its output is above\n{}",
        tail(&switchyard.stderr(), 30)
    );
}

fn reply(stdin: &mut ChildStdin, answer: Result<String, String>) {
    let line = match answer {
        Ok(value) => format!("ok {value}\n"),
        Err(why) => format!("fail {why}\n"),
    };
    // The script may have ended already; its exit status tells why.
    let _ = stdin.write_all(line.as_bytes());
}

#[test]
fn the_console_shows_the_graph_live_and_replays_and_purges_dead_letters() {
    require_browser();
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let switchyard = Switchyard::start(&format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"
admin_token = "{TOKEN}"

[sources.api]
type = "http"

[pipelines.deliver]
from = ["api"]
to = ["hook"]

[pipelines.audit]
from = ["api"]
filters = ["numbered"]
to = ["archive"]

[plugins.numbered]
path = "{filter}"
config = {{ field = "n", exists = true }}

[sinks.hook]
type = "webhook"
url = "{url}"
allow_private = true
retry = {{ max_attempts = 3, initial = "10ms", max = "50ms" }}

[sinks.archive]
type = "file"
path = "{{dir}}/archive.jsonl"

[queues.jobs]
"#,
        url = receiver.url(),
        filter = wasm("filter_by_field"),
    ));
    let mut steps = Steps {
        switchyard: &switchyard,
        receiver: &receiver,
        sent: 0,
    };
    run_browser(&switchyard, "main", |step| steps.answer(step));
}

/// The Postgres sources page: a table's snapshot started, paused, resumed and cancelled
/// from the page, slowly enough (10 rows a chunk) to catch it running. Then the slot is
/// dropped: the overview shows the source stopped and a banner with `/readyz`'s reason.
#[test]
fn the_console_drives_a_snapshot_and_shows_a_stopped_source() {
    require_browser();
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE big (id int PRIMARY KEY);
         INSERT INTO big SELECT g FROM generate_series(1, 200000) g;
         ANALYZE big;
         CREATE TABLE small (id int PRIMARY KEY);
         INSERT INTO small SELECT g FROM generate_series(1, 100) g;",
    );
    let config = switchyard_tests::cdc_config(
        &dsn,
        "slot = \"sy_console\"\ntables = [\"public.big\", \"public.small\"]\nsnapshot = \"never\"\nsnapshot_chunk = 10\n\
         max_slot_lag = \"1GiB\"",
    )
    .replace("admin-secret-0123456789", TOKEN);
    let switchyard = Switchyard::start(&config);
    run_browser(&switchyard, "postgres", |step| match step {
        "check-cancelled" => {
            let out = switchyard.cli(&["cdc", "status"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains("snapshot public.big: cancelled")
                .then(String::new)
                .ok_or_else(|| format!("cdc status says: {text}"))
        }
        "check-filtered" => {
            // The filtered snapshot completed, as the CLI sees it too.
            let out = switchyard.cli(&["cdc", "status"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains("snapshot public.small: done")
                .then(String::new)
                .ok_or_else(|| format!("cdc status says: {text}"))
        }
        "drop-slot" => {
            // Ends the replication session and drops the slot before it reconnects.
            pg.sql(
                "app",
                r#"
                DO $$
                BEGIN
                  FOR i IN 1..500 LOOP
                    PERFORM pg_terminate_backend(active_pid) FROM pg_replication_slots
                      WHERE slot_name = 'sy_console' AND active_pid IS NOT NULL;
                    BEGIN
                      PERFORM pg_drop_replication_slot('sy_console');
                      RETURN;
                    EXCEPTION WHEN object_in_use THEN
                      PERFORM pg_sleep(0.01);
                    END;
                  END LOOP;
                  RAISE 'could not drop the slot';
                END $$;
                "#,
            );
            Ok(String::new())
        }
        other => Err(format!("unknown step {other}")),
    });
}

/// Without `server.admin_token` (the quickstart), a run makes its own token and keeps it
/// in the data directory, readable by its user only: the console and the admin API work
/// with it, and with nothing else.
#[test]
fn a_run_without_an_admin_token_keeps_its_own_in_the_data_directory() {
    use std::os::unix::fs::PermissionsExt as _;
    let switchyard = Switchyard::start(
        r#"
[server]
listen = "{listen}"
data_dir = "{data_dir}"

[sources.api]
type = "http"

[pipelines.deliver]
from = ["api"]
to = ["out"]

[sinks.out]
type = "null"
"#,
    );
    let file = switchyard.data_dir().join("admin-token");
    let mode = std::fs::metadata(&file)
        .expect("the run's token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let token = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert_eq!(token.len(), 64, "{token:?}");
    let base = switchyard.url();
    let client = client();
    runtime().block_on(async {
        let state = |token: String| {
            client
                .get(format!("{base}/admin/state"))
                .bearer_auth(token)
                .send()
        };
        assert_eq!(state(token.clone()).await.unwrap().status(), 200);
        assert_eq!(state("0".repeat(64)).await.unwrap().status(), 401);
    });
    assert!(
        !switchyard.stderr().contains(&token),
        "the token itself is never logged"
    );
}

/// The console's files need no token and carry their security headers; every admin
/// endpoint behind them does; the history and the validator answer what they say; the
/// event streams are bounded and end at shutdown.
#[test]
fn the_console_api_needs_the_admin_token_and_bounds_its_event_streams() {
    let mut switchyard = Switchyard::start(&format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"
admin_token = "{TOKEN}"
shutdown_timeout = "30s"
# An event stream is a request in progress, not an idle connection.
idle_timeout = "1s"

[sources.api]
type = "http"

[pipelines.deliver]
from = ["api"]
to = ["out"]

[sinks.out]
type = "null"
"#
    ));
    let base = switchyard.url();
    let client = client();
    let rt = runtime();
    let streams = rt.block_on(async {
        // The page and its files: no token, and headers that keep them to themselves.
        let page = client.get(format!("{base}/console")).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let h = page.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert!(page.text().await.unwrap().contains("/console/console.js"));
        let script = client.get(format!("{base}/console/console.js")).send().await.unwrap();
        assert_eq!(script.status(), 200);
        assert!(script.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
        let missing = client.get(format!("{base}/console/nothing.js")).send().await.unwrap();
        assert_eq!(missing.status(), 404);

        // Every data endpoint wants the admin token.
        for path in ["/admin/state", "/admin/history", "/admin/events", "/admin/config"] {
            let r = client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(r.status(), 401, "{path} without a token");
            let r = client.get(format!("{base}{path}")).bearer_auth("wrong-token-0123456789").send().await.unwrap();
            assert_eq!(r.status(), 401, "{path} with a wrong token");
        }
        let r = client.post(format!("{base}/admin/config/validate")).body("[server]\n").send().await.unwrap();
        assert_eq!(r.status(), 401, "validate without a token");

        // The state names the graph; the history grows one sample a second, every series
        // as long as the times.
        let state: serde_json::Value = client.get(format!("{base}/admin/state")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
        assert_eq!(state["ready"]["ready"], true, "{state}");
        assert_eq!(state["sources"][0]["name"], "api");
        assert_eq!(state["pipelines"][0]["sinks"][0], "out");
        assert_eq!(state["sinks"][0]["type"], "null");
        // A refused ingest request counts as an error of its source.
        let refused = client
            .post(format!("{base}/ingest/api"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400);
        let state: serde_json::Value = client
            .get(format!("{base}/admin/state"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(state["sources"][0]["counters"]["errors"], 1, "{state}");
        let history = |client: reqwest::Client| {
            let url = format!("{base}/admin/history");
            async move {
                let h: serde_json::Value = client.get(url).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
                h
            }
        };
        let grew = switchyard_tests::wait_until_async(Duration::from_secs(10), || {
            let client = client.clone();
            let history = &history;
            async move { history(client).await["times"].as_array().unwrap().len() >= 2 }
        })
        .await;
        assert!(grew, "the history did not grow");
        let h = history(client.clone()).await;
        let times = h["times"].as_array().unwrap().len();
        assert_eq!(h["capacity"], 900);
        for (name, values) in h["series"].as_object().unwrap() {
            assert_eq!(values.as_array().unwrap().len(), times, "{name}");
        }
        assert!(h["series"].get("sinks.out.delivered").is_some(), "{h}");

        // The running config hides the token; the validator answers for an edited one.
        let config = client.get(format!("{base}/admin/config")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
        assert!(!config.contains(TOKEN), "{config}");
        assert!(config.contains("\"admin_token\":\"***\""), "{config}");
        let validate = |body: &'static str| {
            let r = client.post(format!("{base}/admin/config/validate")).bearer_auth(TOKEN).header("content-type", "application/toml").body(body).send();
            async move {
                let v: serde_json::Value = r.await.unwrap().json().await.unwrap();
                v
            }
        };
        let good = validate("[sources.a]\ntype = \"http\"\n[pipelines.p]\nfrom = [\"a\"]\nto = [\"s\"]\n[sinks.s]\ntype = \"null\"\n").await;
        assert_eq!(good["ok"], true, "{good}");
        let bad = validate("[pipelines.p]\nfrom = [\"nowhere\"]\nto = [\"s\"]\n[sinks.s]\ntype = \"null\"\n").await;
        assert_eq!(bad["ok"], false, "{bad}");
        assert!(bad["issues"][0]["path"].as_str().unwrap().starts_with("pipelines.p"), "{bad}");

        // At most 16 event streams; the next one is refused with Retry-After.
        let mut open = Vec::new();
        for _ in 0..16 {
            let mut r = client.get(format!("{base}/admin/events")).bearer_auth(TOKEN).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["content-type"], "text/event-stream");
            let first = r.chunk().await.unwrap().expect("a first event");
            assert!(String::from_utf8_lossy(&first).starts_with("event: state\ndata: {"), "{first:?}");
            open.push(r);
        }
        let refused = client.get(format!("{base}/admin/events")).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(refused.status(), 429);
        assert!(refused.headers().contains_key("retry-after"));
        // A closed stream frees its place (the server notices at its next event).
        drop(open.pop());
        let reopened = switchyard_tests::wait_until_async(Duration::from_secs(10), || {
            let r = client.get(format!("{base}/admin/events")).bearer_auth(TOKEN).send();
            async move { r.await.unwrap().status() == 200 }
        })
        .await;
        assert!(reopened, "a closed stream kept its place");
        // A stream outlives `server.idle_timeout`: it keeps streaming past it.
        let mut last = open.pop().unwrap();
        let until = Instant::now() + Duration::from_millis(2500);
        let mut events = 0;
        while Instant::now() < until {
            match tokio::time::timeout(Duration::from_secs(3), last.chunk()).await {
                Ok(Ok(Some(_))) => events += 1,
                other => panic!("the stream stopped after {events} events: {other:?}"),
            }
        }
        assert!(events >= 2, "{events} events in 2.5 s");
        open.push(last);
        open
    });

    // Open streams end at shutdown rather than hold it for `shutdown_timeout`.
    let started = Instant::now();
    let status = switchyard.terminate();
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?} with event streams open",
        started.elapsed()
    );
    drop(streams);
}
