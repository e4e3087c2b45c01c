//! switchyard's side of `bench queue`: the release binary with one declared queue, driven
//! over its HTTP queue API (docs/queues.md) with raw HTTP/1.1 keep-alive connections, one per
//! producer and per consumer, like `bench ingest`'s load generator.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use switchyard_api::{AckAnswer, ReceiveAnswer, ReceiveRequest, SettleRequest};

use super::super::build;
use super::super::process::{ServerProcess, free_addr};
use super::{Consumer, Producer, QueueArgs, RoundCtx, RunResult, Stamp, drive, with_cpu};

const QUEUE: &str = "bench";
const GROUP: &str = "workers";

/// The binary and the temporary directory every round's data dir lives in.
pub struct Prepared {
    pub bin: PathBuf,
    tmp: tempfile::TempDir,
    keep: bool,
}

impl Prepared {
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    pub fn finish(self) {
        if self.keep {
            println!("kept: {}", self.tmp.path().display());
        }
    }
}

/// Builds (or takes `--bin`) the release binary and makes the temporary directory.
pub fn prepare(args: &QueueArgs) -> anyhow::Result<Prepared> {
    let bin = build::switchyard_binary(args.bin.as_deref())?;
    let tmp = super::super::temp_dir(
        "switchyard-bench-queue-",
        args.tmp_dir.as_deref(),
        args.keep,
    )?;
    Ok(Prepared {
        bin,
        tmp,
        keep: args.keep,
    })
}

/// `switchyard run` with one queue, a fresh data dir, the load, stop.
pub fn round(
    rt: &tokio::runtime::Runtime,
    sy: &Prepared,
    ctx: &RoundCtx<'_>,
) -> anyhow::Result<RunResult> {
    let dir = sy.root().join(ctx.tag());
    std::fs::create_dir_all(&dir)?;
    let addr = free_addr()?;
    let token = format!("bench-token-{}-{}", std::process::id(), ctx.tag());
    let config = dir.join("switchyard.toml");
    std::fs::write(
        &config,
        config_text(&addr.to_string(), &dir, &token, ctx.args.partitions),
    )?;
    let mut cmd = Command::new(&sy.bin);
    cmd.arg("run")
        .arg("-c")
        .arg(&config)
        .env("RUST_LOG", "warn");
    let log = dir.join("switchyard.log");
    let mut process = ServerProcess::spawn("switchyard", cmd, &log)?;
    process.wait_ready(addr, Duration::from_secs(30), &log)?;
    let pid = process.pid();
    let result = rt.block_on(async {
        let mut producers = Vec::new();
        for _ in 0..ctx.spec.producers {
            producers.push(SyProducer {
                http: Http::connect(addr, &token).await?,
                path: format!("/queues/{QUEUE}/messages"),
                retries: 0,
            });
        }
        let mut consumers = Vec::new();
        for _ in 0..ctx.spec.consumers {
            consumers.push(SyConsumer {
                http: Http::connect(addr, &token).await?,
                receive_path: format!("/queues/{QUEUE}/groups/{GROUP}/receive"),
                ack_path: format!("/queues/{QUEUE}/groups/{GROUP}/ack"),
                receipts: Vec::new(),
            });
        }
        with_cpu(&[pid], drive(ctx.spec, producers, consumers, ctx.deadline)).await
    });
    let result = result.map(|mut r| {
        r.peak_rss_kib = process.peak_rss_kib().ok();
        r
    });
    if let Err(e) = &result {
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = tail.lines().collect();
        eprintln!(
            "switchyard failed ({e:#}); the end of its log ({}):\n{}",
            log.display(),
            lines[lines.len().saturating_sub(20)..].join("\n")
        );
    }
    process.stop(Duration::from_secs(15))?;
    result
}

/// The config of a round: one queue, nothing else.
fn config_text(listen: &str, dir: &Path, token: &str, partitions: u32) -> String {
    format!(
        "# Written by `cargo xtask bench queue`.\n\
         [server]\nlisten = {listen:?}\ndata_dir = {:?}\nadmin_token = {token:?}\n\n\
         [log]\nlevel = \"warn\"\n\n\
         [queues.{QUEUE}]\npartitions = {partitions}\n\
         # Producers never wait for room: the whole run fits.\n\
         max_bytes = \"64GiB\"\n",
        dir.join("data").display().to_string()
    )
}

/// One keep-alive HTTP/1.1 connection with the admin token.
struct Http {
    addr: SocketAddr,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
    host: HeaderValue,
    auth: HeaderValue,
}

impl Http {
    async fn connect(addr: SocketAddr, token: &str) -> anyhow::Result<Self> {
        let mut http = Self {
            addr,
            sender: None,
            host: HeaderValue::from_str(&addr.to_string())?,
            auth: HeaderValue::from_str(&format!("Bearer {token}"))?,
        };
        http.sender = Some(http.open().await?);
        Ok(http)
    }

    async fn open(&self) -> anyhow::Result<http1::SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to switchyard on {}", self.addr))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Ends when either side closes; a failure shows up as the next request's error.
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// POSTs a JSON body; the status, `Retry-After` (seconds) and the body of the answer.
    async fn post(
        &mut self,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Option<Duration>, Bytes)> {
        let usable = match self.sender.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            self.sender = Some(self.open().await?);
        }
        let sender = self.sender.as_mut().expect("connected above");
        let req = Request::post(path)
            .header(header::HOST, self.host.clone())
            .header(header::AUTHORIZATION, self.auth.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(e).with_context(|| format!("POST {path}"));
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, retry_after, body))
    }
}

fn unexpected(path: &str, status: StatusCode, body: &[u8]) -> anyhow::Error {
    anyhow::anyhow!(
        "switchyard answered {status} to POST {path}: {}{}",
        String::from_utf8_lossy(&body[..body.len().min(300)]),
        if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED {
            " (does this binary have the queue HTTP API of docs/queues.md?)"
        } else {
            ""
        }
    )
}

struct SyProducer {
    http: Http,
    path: String,
    retries: u64,
}

impl Producer for SyProducer {
    async fn send(&mut self, payloads: Vec<Bytes>) -> anyhow::Result<()> {
        // {"messages":[{"payload":P},…]}: the payloads are JSON already, copied in as they are.
        let len: usize = payloads.iter().map(|p| p.len() + 13).sum();
        let mut body = Vec::with_capacity(len + 16);
        body.extend_from_slice(b"{\"messages\":[");
        for (k, p) in payloads.iter().enumerate() {
            if k > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"{\"payload\":");
            body.extend_from_slice(p);
            body.push(b'}');
        }
        body.extend_from_slice(b"]}");
        let body = Bytes::from(body);
        loop {
            let (status, retry_after, answer) = self.http.post(&self.path, body.clone()).await?;
            if status == StatusCode::CREATED || status.is_success() {
                return Ok(());
            }
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
            {
                // Full or busy: come back when asked (capped, so a run cannot stall).
                self.retries += 1;
                let pause = retry_after.unwrap_or(Duration::from_millis(10));
                tokio::time::sleep(pause.min(Duration::from_secs(1))).await;
                continue;
            }
            return Err(unexpected(&self.path, status, &answer));
        }
    }

    fn retries(&self) -> u64 {
        self.retries
    }
}

struct SyConsumer {
    http: Http,
    receive_path: String,
    ack_path: String,
    /// The receipts of the last receive, in its order.
    receipts: Vec<String>,
}

/// A receive answer with the payloads read as the stamps the producers wrote.
type Received = ReceiveAnswer<Stamp>;

impl Consumer for SyConsumer {
    async fn receive(&mut self, max: usize, wait: Duration) -> anyhow::Result<Vec<Stamp>> {
        let body = serde_json::to_vec(&ReceiveRequest {
            max: Some(max as u64),
            wait: Some(format!("{}ms", wait.as_millis())),
            ack_timeout: None,
        })?;
        let (status, _, answer) = self
            .http
            .post(&self.receive_path, Bytes::from(body))
            .await?;
        if status != StatusCode::OK {
            return Err(unexpected(&self.receive_path, status, &answer));
        }
        let received: Received = serde_json::from_slice(&answer)
            .with_context(|| format!("parsing the answer to POST {}", self.receive_path))?;
        self.receipts.clear();
        let mut stamps = Vec::with_capacity(received.messages.len());
        for m in received.messages {
            let stamp = m.payload.with_context(|| {
                format!("a message of POST {} has no payload", self.receive_path)
            })?;
            self.receipts.push(m.receipt);
            stamps.push(stamp);
        }
        Ok(stamps)
    }

    async fn ack(&mut self) -> anyhow::Result<Vec<usize>> {
        let body = serde_json::to_vec(&SettleRequest {
            receipts: self.receipts.clone(),
            ..SettleRequest::default()
        })?;
        let (status, _, answer) = self.http.post(&self.ack_path, Bytes::from(body)).await?;
        if status != StatusCode::OK {
            return Err(unexpected(&self.ack_path, status, &answer));
        }
        let answer: AckAnswer = serde_json::from_slice(&answer)
            .with_context(|| format!("parsing the answer to POST {}", self.ack_path))?;
        Ok(answer
            .stale
            .iter()
            .filter_map(|s| self.receipts.iter().position(|r| r == s))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_config_passes_switchyard_validation() {
        for partitions in [1, 4] {
            let text = config_text(
                "127.0.0.1:1",
                Path::new("/tmp/bench"),
                "bench-token-0123456789",
                partitions,
            );
            match switchyard_config::load_str(&text, false) {
                Ok(config) => assert_eq!(config.queues[QUEUE].partitions, partitions),
                Err(e) => panic!("{e}\n{text}"),
            }
        }
    }

    #[test]
    fn a_receive_answer_parses_to_receipts_and_stamps() {
        let answer = br#"{"messages":[{"id":"0192","source":"queue","kind":"message","key":null,
            "timestamp_ms":1,"content_type":"application/json","headers":{},
            "payload":{"i":5,"t":77,"pad":"xx"},"receipt":"r-1","partition":0,"offset":3,
            "priority":0,"deliveries":1,"lease_expires_ms":9}]}"#;
        let r: Received = serde_json::from_slice(answer).unwrap();
        assert_eq!(r.messages[0].receipt, "r-1");
        assert_eq!(r.messages[0].payload, Some(Stamp { i: 5, t: 77 }));
    }
}
