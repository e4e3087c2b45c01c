//! HTTP ingest and its intake log through the one produce path: the same
//! `Idempotency-Key` sent at once from many connections is stored exactly once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchyard_config::HttpSourceConfig;
use switchyard_queue::{QueueHandle, QueueIntake, QueueLimits};
use switchyard_source_http::{HttpSource, IngestObserver, MemoryBudget};
use switchyard_store::{FsStorage, WorkOptions};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

struct NoMetrics;

impl IngestObserver for NoMetrics {
    fn request(&self, _source: &str, _status: u16, _events: usize) {}
}

/// An `http` source `api` appending to an intake log in `dir`, served on a local port.
async fn serve(dir: &std::path::Path) -> (SocketAddr, Arc<QueueHandle>) {
    let config = HttpSourceConfig::default();
    let intake = QueueHandle::open(
        Arc::new(FsStorage::new()),
        dir,
        "intake.api",
        QueueLimits {
            partitions: 4,
            max_bytes: u64::MAX,
            retention: None,
            work: WorkOptions::default(),
            max_groups: 0,
            group_idle_expiry: None,
            dedup_window: config.dedup_window,
            dedup_keys: 100_000,
        },
    )
    .unwrap();
    let source = Arc::new(HttpSource::new(
        "api",
        config,
        Arc::new(QueueIntake(intake.clone())),
    ));
    let app = switchyard_source_http::router(
        vec![source],
        Arc::new(NoMetrics),
        MemoryBudget::new(64 << 20),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, intake)
}

/// Sends `request` on `stream` and answers (status, body) once the server closes.
async fn exchange(mut stream: TcpStream, request: &str) -> (u16, String) {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

fn request(key: &str) -> String {
    let body = "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n";
    format!(
        "POST /ingest/api HTTP/1.1\r\nhost: test\r\ncontent-type: application/x-ndjson\r\n\
         idempotency-key: {key}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_key_sent_at_once_from_many_connections_is_stored_once() {
    const CONNECTIONS: usize = 48;
    let dir = tempfile::tempdir().unwrap();
    let (addr, intake) = serve(dir.path()).await;
    for round in 0..5 {
        let key = format!("order-{round}");
        // Every connection is open before any request is sent, so they arrive together.
        let mut streams = Vec::new();
        for _ in 0..CONNECTIONS {
            streams.push(TcpStream::connect(addr).await.unwrap());
        }
        let start = Arc::new(tokio::sync::Barrier::new(CONNECTIONS));
        let tasks: Vec<_> = streams
            .into_iter()
            .map(|stream| {
                let start = start.clone();
                let request = request(&key);
                tokio::spawn(async move {
                    start.wait().await;
                    exchange(stream, &request).await
                })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            let (status, body) = task.await.unwrap();
            match status {
                200 => {
                    ok += 1;
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    let ids = [format!("{key}-0"), format!("{key}-1"), format!("{key}-2")];
                    assert_eq!(v["ids"], serde_json::json!(ids), "{body}");
                }
                409 => assert!(body.contains("being stored"), "{body}"),
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert!(
            ok >= 1,
            "round {round}: at least the first request is stored"
        );
        // A retry after the first is durable gets its answer, and stores nothing.
        let (status, body) =
            exchange(TcpStream::connect(addr).await.unwrap(), &request(&key)).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"duplicate\":true"), "{body}");
        assert_eq!(
            intake.retained_records(),
            3 * (round + 1),
            "round {round}: exactly one copy of the request's 3 events"
        );
    }
    tokio::time::sleep(Duration::ZERO).await;
}
