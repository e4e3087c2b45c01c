//! Webhooks do not make switchyard a confused deputy: a sink URL at the cloud metadata
//! address is refused by `validate` and by `run` (naming `allow_private`, the key that
//! allows it), while a webhook to a loopback receiver keeps working with a warning.

use std::process::Stdio;
use std::time::{Duration, Instant};

use switchyard_test_support::{Behaviour, Switchyard, WebhookReceiver, switchyard_command, tail};
use switchyard_tests::{Sent, client, runtime, send_once};

const METADATA_URL: &str = "http://169.254.169.254/latest/meta-data";

/// One HTTP source delivering to the webhook sink `hook` at `url`.
fn config(url: &str, extra: &str) -> String {
    format!(
        r#"[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.api]
type = "http"
partitions = 1

[pipelines.deliver]
from = ["api"]
to = ["hook"]

[sinks.hook]
type = "webhook"
url = "{url}"
{extra}
"#
    )
}

/// Runs `switchyard <command> -c <file>` and returns (exit code, stdout, stderr); fails
/// the test when it has not exited within a minute (`run` of a refused config must
/// exit, not serve).
fn switchyard(command: &str, file: &std::path::Path) -> (i32, String, String) {
    let mut child = switchyard_command()
        .arg(command)
        .arg("-c")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting switchyard");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("waiting for switchyard").is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collecting the output");
            panic!(
                "switchyard {command} did not exit:\n{}",
                tail(&String::from_utf8_lossy(&out.stderr), 20)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collecting the output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_webhook_to_the_metadata_address_is_refused_by_validate_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(METADATA_URL, "")
        .replace("{listen}", "127.0.0.1:1")
        .replace("{data_dir}", &dir.path().join("data").display().to_string());
    let file = dir.path().join("metadata.toml");
    std::fs::write(&file, &text).unwrap();
    let expected = "sinks.hook.url: 169.254.169.254 is a link-local/cloud metadata address; \
                    webhooks to it are refused unless the sink sets allow_private = true (line 15)";

    let (code, stdout, stderr) = switchyard("validate", &file);
    assert_eq!(code, 1, "validate must refuse it:\n{stdout}{stderr}");
    assert!(stderr.contains(expected), "{stderr}");
    assert!(stderr.contains("1 problem in"), "{stderr}");

    let (code, _, stderr) = switchyard("run", &file);
    assert_ne!(code, 0, "run must refuse to start:\n{stderr}");
    assert!(stderr.contains(expected), "{stderr}");
    assert!(
        !dir.path().join("data").exists(),
        "nothing was started: no data directory"
    );

    // The key it names allows it.
    std::fs::write(&file, format!("{text}allow_private = true\n")).unwrap();
    let (code, stdout, stderr) = switchyard("validate", &file);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(": ok ("), "{stdout}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[test]
fn a_loopback_webhook_gets_events_and_a_warning() {
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let switchyard = Switchyard::start(&config(&receiver.url(), ""));
    let warning = "sinks.hook.url: 127.0.0.1 is a loopback address: webhooks to it are sent, \
                   but check that this is intended";

    let out = switchyard.cli(&["validate"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(": ok (") && stdout.contains("1 warning"),
        "{stdout}"
    );
    assert!(stderr.contains(&format!("warning: {warning}")), "{stderr}");
    assert!(stderr.contains("allow_private = true"), "{stderr}");

    // `run` logged it once at start.
    assert_eq!(
        switchyard.stderr().matches(warning).count(),
        1,
        "{}",
        tail(&switchyard.stderr(), 20)
    );

    // And events still flow to the loopback receiver.
    let sent = runtime()
        .block_on(async { send_once(&client(), &switchyard.url(), "api", "k", 1, 0).await });
    assert!(matches!(sent, Sent::Accepted), "{sent:?}");
    assert!(
        receiver.wait_for_count(1, Duration::from_secs(30)),
        "the event did not arrive:\n{}",
        tail(&switchyard.stderr(), 30)
    );
    assert_eq!(receiver.accepted()[0].header("webhook-id"), Some("k-1"));
}
