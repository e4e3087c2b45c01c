//! The disk under switchyard's data directory fills up (a small tmpfs). Ingest answers
//! 507/503 with `Retry-After` instead of 200 — never 200 for an event it could not make
//! durable — and the events it did accept survive a kill -9. When space is freed, ingest
//! works again, and every accepted event is delivered.
//!
//! Needs root for `mount -t tmpfs`. Without it the test prints why and passes, unless
//! `CI=true`: then it fails, so CI cannot skip it silently.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use switchyard_test_support::{
    Behaviour, Options, Switchyard, Tracked, WebhookReceiver, check, tail,
};
use switchyard_tests::{
    WEBHOOK_SECRET, client, deliveries, event_body, event_id, runtime, wait_for_all_delivered,
};

/// A tmpfs mounted on a fresh temp dir, unmounted on drop (also when the test panics).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-tmpfs-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a process being killed): detach it now, it goes when unused.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

fn mount_or_skip() -> Option<Tmpfs> {
    match Tmpfs::mount("8m") {
        Ok(t) => Some(t),
        Err(reason) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(!ci, "disk_full needs a tmpfs and CI=true: {reason}");
            println!("SKIPPED disk_full: {reason} (needs root to mount a tmpfs)");
            None
        }
    }
}

/// Fills `path` with `bytes` of data (tmpfs pages are allocated as they are written).
fn filler(path: &PathBuf, bytes: usize) {
    std::fs::write(path, vec![0xA5u8; bytes]).expect("writing the filler file");
}

#[test]
fn a_full_disk_refuses_ingest_until_space_is_freed() {
    let Some(tmpfs) = mount_or_skip() else {
        return;
    };
    let filler_path = tmpfs.path().join("filler");
    filler(&filler_path, 5 << 20);

    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let mut switchyard = Switchyard::start_with(
        &format!(
            r#"
[server]
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
secret = "{WEBHOOK_SECRET}"
retry = {{ max_attempts = 20, initial = "10ms", max = "100ms" }}
"#,
            url = receiver.url()
        ),
        Options {
            data_dir: Some(tmpfs.path().join("data")),
            ..Options::default()
        },
    );
    let base = switchyard.url();
    let rt = runtime();
    let client = client();
    let mut acked: Vec<Tracked> = Vec::new();
    let mut seq = 0u64;

    // Send 4 KiB events until the disk is full: about 3 MiB are left.
    let send = |seq: u64| {
        let client = client.clone();
        let url = format!("{base}/ingest/api");
        rt.block_on(async move {
            let r = client
                .post(url)
                .header("content-type", "application/json")
                .header("x-key", "k")
                .header("idempotency-key", event_id("k", seq))
                .body(event_body("k", seq, 4096))
                .send()
                .await
                .expect("switchyard answers");
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (
                r.status().as_u16(),
                retry_after,
                r.text().await.unwrap_or_default(),
            )
        })
    };
    let refusal = loop {
        assert!(
            seq < 4000,
            "{seq} events of 4 KiB were all answered 200 on an 8 MiB disk: some of them cannot be durable"
        );
        let (status, retry_after, body) = send(seq);
        if status == 200 {
            acked.push(Tracked::new(event_id("k", seq), "k", seq));
            seq += 1;
            continue;
        }
        break (status, retry_after, body);
    };
    println!(
        "disk full after {} accepted events: {} {:?} {}",
        acked.len(),
        refusal.0,
        refusal.1,
        refusal.2
    );
    assert!(
        acked.len() > 100,
        "some events fit before the disk filled up"
    );
    assert!(
        matches!(refusal.0, 503 | 507),
        "a full disk answers 507 or 503, got {refusal:?}"
    );
    assert!(refusal.1.is_some(), "the refusal carries Retry-After");
    // Still full: more attempts are refused too, never answered 200 while not durable.
    for _ in 0..5 {
        let (status, _, body) = send(seq);
        if status == 200 {
            acked.push(Tracked::new(event_id("k", seq), "k", seq));
            seq += 1;
        } else {
            assert!(matches!(status, 503 | 507 | 429), "{status} {body}");
        }
    }

    // A crash on a full disk: what was accepted is still there after the restart.
    switchyard.kill9();
    switchyard.restart();
    let all_arrived = wait_for_all_delivered(&receiver, &acked, Duration::from_secs(60));
    assert!(
        all_arrived,
        "{}\n{}",
        check(&acked, &deliveries(&receiver)),
        tail(&switchyard.stderr(), 40)
    );

    // Free space: ingest works again (polling; the refusals say when to retry).
    std::fs::remove_file(&filler_path).expect("removing the filler");
    let mut recovered = false;
    for _ in 0..300 {
        let (status, _, _) = send(seq);
        if status == 200 {
            acked.push(Tracked::new(event_id("k", seq), "k", seq));
            seq += 1;
            recovered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        recovered,
        "ingest still refused after space was freed\n{}",
        tail(&switchyard.stderr(), 40)
    );
    for _ in 0..20 {
        let (status, _, body) = send(seq);
        assert_eq!(status, 200, "{body}");
        acked.push(Tracked::new(event_id("k", seq), "k", seq));
        seq += 1;
    }

    let all_arrived = wait_for_all_delivered(&receiver, &acked, Duration::from_secs(60));
    let report = check(&acked, &deliveries(&receiver));
    println!("disk_full: {report}");
    assert!(all_arrived, "{report}\n{}", tail(&switchyard.stderr(), 40));
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.reordered, 0, "{report}");
    // Stop switchyard before the tmpfs is unmounted (drop order: switchyard first).
    drop(switchyard);
}
