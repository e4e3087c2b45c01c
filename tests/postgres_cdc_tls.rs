//! The Postgres source over TLS, against real throwaway clusters: change data capture
//! end to end with `sslmode=verify-full` against a server that rejects plaintext (and
//! `switchyard slots list` with the same dsn); `verify-ca` checks the chain but not the
//! host name, `verify-full` both; a server whose certificate changes to one that fails
//! the check stops the running source with the reason; a
//! certificate from the wrong CA and a server without TLS each stop the source at
//! start with an error that names the dsn's settings, instead of retrying forever.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_test_support::{PgCluster, Switchyard, tail};
use switchyard_tests::{read_jsonl, wait_until};

fn config(dsn: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.db]
type = "postgres_cdc"
dsn = "{dsn}"
slot = "sy_tls"
tables = ["public.orders"]
snapshot = "never"

[pipelines.cdc]
from = ["db"]
to = ["out"]

[sinks.out]
type = "file"
path = "{{dir}}/out.jsonl"
"#
    )
}

fn with_tls(dsn: &str, mode: &str, root: Option<&Path>) -> String {
    match root {
        Some(root) => format!("{dsn}?sslmode={mode}&sslrootcert={}", root.display()),
        None => format!("{dsn}?sslmode={mode}"),
    }
}

/// Runs `switchyard run` on `dsn` and waits (with a deadline) for it to exit on its
/// own; returns its stderr. Panics when it is still running at the deadline: the
/// source would be retrying instead of stopping.
fn run_expecting_exit(dsn: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config_path = switchyard_tests::write_config(dir.path(), &config(dsn));
    let stderr_path = dir.path().join("stderr.log");
    let mut child = switchyard_test_support::switchyard_command()
        .args(["run", "-c"])
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "switchyard still runs 30 s after its start: the source retries instead of \
             stopping with a clear error:\n{}",
            tail(&stderr, 30)
        );
    };
    assert!(!status.success(), "run must fail:\n{stderr}");
    stderr
}

#[test]
fn changes_stream_over_tls_with_verify_full() {
    let pg = PgCluster::start_with_tls();
    assert!(
        !pg.accepts_plaintext(),
        "the test cluster must refuse plaintext connections"
    );
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE orders (id int PRIMARY KEY, note text);",
    );
    // A password in the dsn (trust ignores it) must not appear in the logs.
    let dsn = dsn.replace("postgres@", "postgres:hunter2@");
    let switchyard =
        Switchyard::start(&config(&with_tls(&dsn, "verify-full", Some(&pg.ca_file()))));
    pg.sql(
        "app",
        "INSERT INTO orders VALUES (1, 'one'), (2, 'two');
         UPDATE orders SET note = 'changed' WHERE id = 2;
         DELETE FROM orders WHERE id = 1;",
    );
    let out = switchyard.dir().join("out.jsonl");
    let changes = || -> Vec<Value> {
        read_jsonl(&out)
            .into_iter()
            .map(|e| e["payload"].clone())
            .filter(|p| p["op"] != "schema")
            .collect()
    };
    let arrived = wait_until(Duration::from_secs(60), || changes().len() >= 4);
    let got = changes();
    assert!(
        arrived,
        "expected 4 changes over TLS, got {got:?}\n--- log ---\n{}",
        tail(&switchyard.logs(), 40)
    );
    let ops: Vec<(&str, i64)> = got
        .iter()
        .map(|p| (p["op"].as_str().unwrap(), p["key"]["id"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        ops,
        [("insert", 1), ("insert", 2), ("update", 2), ("delete", 1)]
    );
    // The replication connection itself is encrypted (plaintext is rejected anyway).
    let ssl = pg.sql(
        "postgres",
        "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s ON s.pid = r.pid \
         WHERE r.application_name = 'switchyard'",
    );
    assert_eq!(ssl, "t", "the walsender of switchyard uses TLS");
    assert!(
        !switchyard.logs().contains("hunter2"),
        "the dsn's password must not be logged"
    );
    // `switchyard slots` connects with the same dsn, over TLS too.
    let out = switchyard_test_support::switchyard_command()
        .args(["slots", "list", "-c"])
        .arg(switchyard.config_path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("sy_tls"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_certificate_from_another_ca_stops_the_source_with_the_dsn_settings() {
    let pg = PgCluster::start_with_tls();
    let dsn = pg
        .create_database("app")
        .replace("postgres@", "postgres:hunter2@");
    pg.sql("app", "CREATE TABLE orders (id int PRIMARY KEY);");
    let wrong = pg.wrong_ca_file();
    let stderr = run_expecting_exit(&with_tls(&dsn, "verify-full", Some(&wrong)));
    assert!(
        stderr.contains("sslmode=verify-full")
            && stderr.contains(&format!("sslrootcert={}", wrong.display()))
            && stderr.contains("invalid peer certificate")
            && stderr.contains("CA that signed the server's certificate"),
        "the error names the dsn's TLS settings and the fix:\n{stderr}"
    );
    assert!(
        stderr.contains("postgres:***@") && !stderr.contains("hunter2"),
        "{stderr}"
    );
}

#[test]
fn require_against_a_server_without_tls_stops_with_a_clear_error() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql("app", "CREATE TABLE orders (id int PRIMARY KEY);");
    let stderr = run_expecting_exit(&with_tls(&dsn, "require", None));
    assert!(
        stderr.contains("does not accept TLS connections")
            && stderr.contains("sslmode=require")
            && stderr.contains("ssl = on"),
        "{stderr}"
    );
}

#[test]
fn verify_ca_checks_the_chain_but_not_the_host_name() {
    let pg = PgCluster::start_with_tls();
    pg.create_database("app");
    pg.sql("app", "CREATE TABLE orders (id int PRIMARY KEY);");
    // The certificate names localhost and 127.0.0.1, not db.invalid; hostaddr says where
    // to connect, host is the name the certificate is checked against.
    let dsn = |mode: &str| {
        format!(
            "host=db.invalid hostaddr=127.0.0.1 port={} user=postgres dbname=app \
             sslmode={mode} sslrootcert='{}'",
            pg.port(),
            pg.ca_file().display()
        )
    };
    let stderr = run_expecting_exit(&dsn("verify-full"));
    assert!(
        stderr.contains("does not name db.invalid") && stderr.contains("sslmode=verify-full"),
        "{stderr}"
    );

    let switchyard = Switchyard::start(&config(&dsn("verify-ca")));
    pg.sql("app", "INSERT INTO orders VALUES (7);");
    let out = switchyard.dir().join("out.jsonl");
    let arrived = wait_until(Duration::from_secs(60), || {
        read_jsonl(&out)
            .iter()
            .any(|e| e["payload"]["op"] == "insert" && e["payload"]["key"]["id"] == 7)
    });
    assert!(
        arrived,
        "the insert must arrive with verify-ca\n--- log ---\n{}",
        tail(&switchyard.logs(), 40)
    );
}

#[test]
fn a_running_source_stops_when_the_servers_certificate_fails_the_check() {
    let pg = PgCluster::start_with_tls();
    let dsn = pg.create_database("app");
    pg.sql("app", "CREATE TABLE orders (id int PRIMARY KEY);");
    let switchyard =
        Switchyard::start(&config(&with_tls(&dsn, "verify-full", Some(&pg.ca_file()))));
    pg.sql("app", "INSERT INTO orders VALUES (1);");
    let out = switchyard.dir().join("out.jsonl");
    let arrived = wait_until(Duration::from_secs(60), || {
        read_jsonl(&out)
            .iter()
            .any(|e| e["payload"]["op"] == "insert")
    });
    assert!(arrived, "{}", tail(&switchyard.logs(), 30));
    // The server now shows a certificate of another CA; the session is cut, so the
    // source reconnects and meets it.
    pg.switch_to_certificate_of_wrong_ca();
    pg.sql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_replication \
         WHERE application_name = 'switchyard'",
    );
    let stopped = wait_until(Duration::from_secs(30), || {
        switchyard_test_support::http_status(switchyard.addr(), "/readyz") == Some(503)
    });
    let logs = switchyard.logs();
    assert!(stopped, "the source must stop:\n{}", tail(&logs, 30));
    assert!(
        logs.contains("postgres source stopped")
            && logs.contains("invalid peer certificate")
            && logs.contains("sslmode=verify-full sslrootcert="),
        "the log says why, with the dsn's TLS settings:\n{}",
        tail(&logs, 30)
    );
    assert_eq!(
        switchyard_test_support::http_status(switchyard.addr(), "/healthz"),
        Some(200),
        "the process keeps running"
    );
}
