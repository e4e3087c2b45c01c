//! The HTTP load generator shared by every server under test: N keep-alive HTTP/1.1
//! connections, each sending one POST at a time (closed loop), a warm-up, then a measured
//! window in which every 2xx completion's latency is recorded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What to send, where, and for how long.
pub struct LoadSpec {
    pub addr: SocketAddr,
    /// Request path, e.g. `/ingest/bench`.
    pub path: String,
    pub connections: usize,
    /// Size of each JSON body in bytes.
    pub body_bytes: usize,
    /// Distinct `x-key` values, spread round-robin over the requests.
    pub keys: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// What each request carries.
    pub body: BodyKind,
    /// Pause of each connection after every answer (`None`: send the next at once). With
    /// one connection this paces a side load at about one request per `pause`.
    pub pause: Option<Duration>,
}

/// The body of every request of a load.
#[derive(Clone)]
pub enum BodyKind {
    /// `{"conn":…,"seq":…,"pad":"xxx…"}` of `body_bytes` (application/json).
    Padded,
    /// `{"conn":…,"seq":…,"status":"STATUS","pad":"xxx…"}` of `body_bytes`.
    Status(&'static str),
    /// The same bytes every time, with this content type (`body_bytes` is ignored).
    Fixed {
        bytes: Bytes,
        content_type: &'static str,
    },
}

/// What one measured window saw.
pub struct LoadResult {
    /// 2xx answers completed inside the window.
    pub ok: u64,
    /// Everything else inside the window, by kind ("status 429", "connect: …").
    pub errors: BTreeMap<String, u64>,
    /// Latency of every 2xx in the window, microseconds, sorted.
    pub latencies_us: Vec<u32>,
    pub window: Duration,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The `q` quantile (0..=1) of the latencies, in milliseconds (nearest rank).
    pub fn latency_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * self.latencies_us.len() as f64).ceil() as usize).max(1);
        f64::from(self.latencies_us[rank.min(self.latencies_us.len()) - 1]) / 1000.0
    }
}

#[derive(Default)]
struct ConnStats {
    ok: u64,
    errors: BTreeMap<String, u64>,
    latencies_us: Vec<u32>,
}

impl ConnStats {
    fn error(&mut self, in_window: bool, kind: String) {
        if in_window {
            *self.errors.entry(kind).or_default() += 1;
        }
    }
}

/// Runs the load on its own runtime (one worker per core, like the servers).
pub fn run(spec: LoadSpec) -> anyhow::Result<LoadResult> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("load")
        .build()
        .context("starting the load generator's runtime")?;
    runtime.block_on(run_async(Arc::new(spec)))
}

async fn run_async(spec: Arc<LoadSpec>) -> anyhow::Result<LoadResult> {
    let keys: Arc<Vec<HeaderValue>> = Arc::new(
        (0..spec.keys.max(1))
            .map(|k| HeaderValue::from_str(&format!("key-{k:05}")).expect("ascii"))
            .collect(),
    );
    let start = Instant::now();
    let window_start = start + spec.warmup;
    let window_end = window_start + spec.measure;
    let tasks: Vec<_> = (0..spec.connections)
        .map(|c| {
            tokio::spawn(connection(
                c,
                spec.clone(),
                keys.clone(),
                window_start,
                window_end,
            ))
        })
        .collect();
    let mut total = ConnStats::default();
    for t in tasks {
        let s = t.await.context("a load connection task panicked")?;
        total.ok += s.ok;
        for (k, n) in s.errors {
            *total.errors.entry(k).or_default() += n;
        }
        total.latencies_us.extend(s.latencies_us);
    }
    total.latencies_us.sort_unstable();
    Ok(LoadResult {
        ok: total.ok,
        errors: total.errors,
        latencies_us: total.latencies_us,
        window: spec.measure,
    })
}

/// A JSON event of exactly `len` bytes (at least ~60): `{"conn":…,"seq":…,"pad":"xxx…"}`,
/// with `"status":STATUS` before `pad` when a status is given.
pub fn json_body(conn: usize, seq: u64, len: usize, status: Option<&str>) -> Bytes {
    let head = match status {
        None => format!(r#"{{"conn":{conn},"seq":{seq},"pad":""#),
        Some(s) => format!(r#"{{"conn":{conn},"seq":{seq},"status":"{s}","pad":""#),
    };
    let pad = len.saturating_sub(head.len() + 2);
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(head.as_bytes());
    b.resize(head.len() + pad, b'x');
    b.extend_from_slice(b"\"}");
    Bytes::from(b)
}

async fn connection(
    conn: usize,
    spec: Arc<LoadSpec>,
    keys: Arc<Vec<HeaderValue>>,
    window_start: Instant,
    window_end: Instant,
) -> ConnStats {
    let mut stats = ConnStats::default();
    let host = HeaderValue::from_str(&spec.addr.to_string()).expect("an address is ascii");
    let content_type = HeaderValue::from_static(match &spec.body {
        BodyKind::Fixed { content_type, .. } => content_type,
        BodyKind::Padded | BodyKind::Status(_) => "application/json",
    });
    let mut sender: Option<http1::SendRequest<Full<Bytes>>> = None;
    let mut seq: u64 = 0;
    loop {
        let now = Instant::now();
        if now >= window_end {
            return stats;
        }
        let in_window = |t: Instant| t >= window_start && t < window_end;
        let usable = match sender.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        let s = match sender.as_mut() {
            Some(s) if usable => s,
            _ => match connect(spec.addr).await {
                Ok(s) => sender.insert(s),
                Err(e) => {
                    stats.error(in_window(Instant::now()), format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let key = &keys[(conn.wrapping_mul(7919) + seq as usize) % keys.len()];
        let req = Request::post(spec.path.as_str())
            .header(header::HOST, host.clone())
            .header(header::CONTENT_TYPE, content_type.clone())
            .header("x-key", key.clone())
            .body(Full::new(match &spec.body {
                BodyKind::Padded => json_body(conn, seq, spec.body_bytes, None),
                BodyKind::Status(s) => json_body(conn, seq, spec.body_bytes, Some(s)),
                BodyKind::Fixed { bytes, .. } => bytes.clone(),
            }))
            .expect("a valid request");
        seq += 1;
        let sent = Instant::now();
        // Requests still open at the end of the window are neither counted nor awaited.
        let answer = tokio::time::timeout_at(window_end, async {
            let resp = s.send_request(req).await?;
            let status = resp.status();
            resp.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        })
        .await;
        let done = Instant::now();
        match answer {
            Err(_elapsed) => return stats,
            Ok(Ok(status)) if status.is_success() => {
                if in_window(done) {
                    stats.ok += 1;
                    let us = done.duration_since(sent).as_micros();
                    stats
                        .latencies_us
                        .push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
            Ok(Ok(status)) => stats.error(in_window(done), format!("status {}", status.as_u16())),
            Ok(Err(e)) => {
                stats.error(in_window(done), format!("request: {e}"));
                sender = None;
            }
        }
        if let Some(pause) = spec.pause {
            tokio::time::sleep_until((Instant::now() + pause).min(window_end)).await;
        }
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<http1::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the server closes the connection or the sender is dropped; a failure
        // shows up as the next request's error.
        let _ = conn.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_of_the_requested_size() {
        for seq in [0, 7, 123_456_789] {
            for status in [None, Some("paid")] {
                let b = json_body(63, seq, 200, status);
                assert_eq!(b.len(), 200);
                let v: serde_json::Value = serde_json::from_slice(&b).expect("valid JSON");
                assert_eq!(v["seq"], seq);
                assert_eq!(v["status"].as_str(), status);
            }
        }
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let r = LoadResult {
            ok: 4,
            errors: BTreeMap::new(),
            latencies_us: vec![1000, 2000, 3000, 4000],
            window: Duration::from_secs(1),
        };
        assert_eq!(r.latency_ms(0.5), 2.0);
        assert_eq!(r.latency_ms(0.99), 4.0);
        assert_eq!(r.per_second(), 4.0);
    }
}
