//! The file sink appends wire lines that parse back into the same events.

use std::sync::Arc;

use switchyard_config::{FileSinkConfig, SinkFormat};
use switchyard_connector::{Outcome, Sink};
use switchyard_event::Event;
use switchyard_sinks::{FileSink, SinkError};

fn event(n: u32) -> Arc<Event> {
    Arc::new(Event {
        id: format!("ev-{n}").into(),
        source: "db".into(),
        kind: "insert".into(),
        key: Some(format!(r#"{{"id":{n}}}"#).into_bytes()),
        // Keys in sorted order and no spaces: the wire form re-serialises JSON payloads
        // (serde_json sorts object keys), so only such payloads come back byte for byte.
        payload: if n.is_multiple_of(2) {
            format!(r#"{{"n":{n},"op":"insert"}}"#).into_bytes()
        } else {
            vec![0, 1, 2, 255]
        },
        content_type: if n.is_multiple_of(2) {
            "application/json".into()
        } else {
            "application/octet-stream".into()
        },
        headers: vec![("x-n".into(), n.to_string())],
        timestamp_ms: 1_764_064_800_000 + u64::from(n),
        payload_is_compact_json: false,
    })
}

fn read_events(path: &std::path::Path) -> Vec<Event> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| Event::from_wire_json(&serde_json::from_str(line).unwrap()).unwrap())
        .collect()
}

#[tokio::test]
async fn batches_are_appended_as_lines_that_parse_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/events.jsonl");
    let cfg = FileSinkConfig {
        path: path.to_str().unwrap().to_owned(),
        mode: FileSinkConfig::DEFAULT_MODE,
        format: SinkFormat::DEFAULT,
    };
    let sink = FileSink::new("archive", &cfg).unwrap();
    assert!(path.exists(), "created with its parent directories");
    assert!(sink.max_batch() > 1);

    let first: Vec<_> = (0..3).map(event).collect();
    let second: Vec<_> = (3..5).map(event).collect();
    assert_eq!(sink.deliver(&first).await, vec![Outcome::Delivered; 3]);
    assert_eq!(sink.deliver(&second).await, vec![Outcome::Delivered; 2]);
    assert_eq!(sink.deliver(&[]).await, vec![]);

    let expected: Vec<Event> = first.iter().chain(&second).map(|e| (**e).clone()).collect();
    assert_eq!(read_events(&path), expected);

    // A restarted sink appends; it never truncates what was acknowledged.
    drop(sink);
    let sink = FileSink::new("archive", &cfg).unwrap();
    assert_eq!(sink.deliver(&[event(9)]).await, vec![Outcome::Delivered]);
    assert_eq!(read_events(&path).len(), 6);
}

#[tokio::test(flavor = "current_thread")]
async fn works_on_a_current_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let sink = FileSink::new(
        "archive",
        &FileSinkConfig {
            path: path.to_str().unwrap().to_owned(),
            mode: FileSinkConfig::DEFAULT_MODE,
            format: SinkFormat::DEFAULT,
        },
    )
    .unwrap();
    assert_eq!(sink.deliver(&[event(1)]).await, vec![Outcome::Delivered]);
    assert_eq!(read_events(&path), vec![(*event(1)).clone()]);
}

#[test]
fn a_directory_is_not_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = FileSink::new(
        "archive",
        &FileSinkConfig {
            path: dir.path().to_str().unwrap().to_owned(),
            mode: FileSinkConfig::DEFAULT_MODE,
            format: SinkFormat::DEFAULT,
        },
    )
    .unwrap_err();
    assert!(matches!(err, SinkError::File { .. }), "{err:?}");
    assert!(err.to_string().contains("archive"), "{err}");
    let empty = FileSink::new(
        "archive",
        &FileSinkConfig {
            path: String::new(),
            mode: FileSinkConfig::DEFAULT_MODE,
            format: SinkFormat::DEFAULT,
        },
    )
    .unwrap_err();
    assert!(empty.to_string().contains("path"), "{empty}");
}

/// `/dev/full` fails every write with ENOSPC: what a full disk looks like.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_full_disk_is_retried() {
    let sink = FileSink::new(
        "archive",
        &FileSinkConfig {
            path: "/dev/full".into(),
            mode: FileSinkConfig::DEFAULT_MODE,
            format: SinkFormat::DEFAULT,
        },
    )
    .unwrap();
    let outcomes = sink.deliver(&[event(1), event(2)]).await;
    assert_eq!(outcomes.len(), 2);
    for outcome in outcomes {
        assert!(
            matches!(&outcome, Outcome::Retry { error, retry_after: None } if error.contains("/dev/full")),
            "{outcome:?}"
        );
    }
}

/// Events often hold personal data: a new file is the owner's alone unless `mode` says
/// otherwise, whatever the process umask lets through.
#[cfg(unix)]
#[test]
fn new_files_and_directories_get_the_configured_mode() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode_of = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let dir = tempfile::tempdir().unwrap();

    let private = dir.path().join("private/out/events.jsonl");
    FileSink::new(
        "archive",
        &FileSinkConfig {
            path: private.to_str().unwrap().to_owned(),
            mode: FileSinkConfig::DEFAULT_MODE,
            format: SinkFormat::DEFAULT,
        },
    )
    .unwrap();
    assert_eq!(mode_of(&private), 0o600);
    assert_eq!(mode_of(private.parent().unwrap()), 0o700);
    assert_eq!(mode_of(&dir.path().join("private")), 0o700);

    let shared = dir.path().join("shared/events.jsonl");
    FileSink::new(
        "archive",
        &FileSinkConfig {
            path: shared.to_str().unwrap().to_owned(),
            mode: 0o640,
            format: SinkFormat::DEFAULT,
        },
    )
    .unwrap();
    assert_eq!(mode_of(&shared), 0o640);
    assert_eq!(mode_of(shared.parent().unwrap()), 0o750);
}
