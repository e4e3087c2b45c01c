//! The baseline servers a benchmark compares switchyard with. Each runs in its own process
//! (`xtask serve …`, re-executed by the benchmark) so its CPU and memory are its own, like
//! switchyard's.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::{Args, ValueEnum};
use http::StatusCode;
use tokio::sync::oneshot;

#[derive(Args)]
pub struct ServeArgs {
    /// Which server to run.
    #[arg(value_enum)]
    kind: ServerKind,
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// File the durable server appends to (created or truncated).
    #[arg(long, required_if_eq("kind", "durable"))]
    file: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServerKind {
    /// Answers 200 only after the body is appended and fdatasync'd, with group commit.
    Durable,
    /// Reads the body and answers 200 at once.
    Noop,
}

impl ServerKind {
    pub fn arg(self) -> &'static str {
        match self {
            ServerKind::Durable => "durable",
            ServerKind::Noop => "noop",
        }
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    // The same runtime shape as `switchyard run`: multi-threaded, one worker per core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let app = match args.kind {
        ServerKind::Noop => Router::new().route("/ingest/{source}", post(noop)),
        ServerKind::Durable => {
            let path = args
                .file
                .context("--file is required for the durable server")?;
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let (tx, rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("group-commit".into())
                .spawn(move || group_commit(file, rx))
                .context("starting the group commit thread")?;
            Router::new()
                .route("/ingest/{source}", post(durable))
                .with_state(tx)
        }
    };
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        axum::serve(listener, app).await.context("serving")
    })
}

async fn noop(_body: Bytes) -> Response {
    (StatusCode::OK, axum::Json(serde_json::json!({ "ids": [] }))).into_response()
}

/// One append waiting for its fdatasync; answered with its sequence number.
struct Pending {
    body: Bytes,
    done: oneshot::Sender<std::io::Result<u64>>,
}

async fn durable(State(tx): State<mpsc::Sender<Pending>>, body: Bytes) -> Response {
    let (done, rx) = oneshot::channel();
    if tx.send(Pending { body, done }).is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "writer stopped").into_response();
    }
    match rx.await {
        Ok(Ok(seq)) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "ids": [seq.to_string()] })),
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "writer stopped").into_response(),
    }
}

/// Takes every pending append at once: one write of all bodies (length-prefixed), one
/// fdatasync, then answers them all. Requests arriving during the sync form the next batch.
fn group_commit(mut file: File, rx: mpsc::Receiver<Pending>) {
    let mut seq: u64 = 0;
    let mut buf = Vec::new();
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        batch.extend(rx.try_iter());
        buf.clear();
        for p in &batch {
            buf.extend_from_slice(&(p.body.len() as u32).to_le_bytes());
            buf.extend_from_slice(&p.body);
        }
        let result = file.write_all(&buf).and_then(|()| file.sync_data());
        for p in batch.drain(..) {
            let answer = match &result {
                Ok(()) => {
                    seq += 1;
                    Ok(seq)
                }
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            let _ = p.done.send(answer);
        }
    }
}
