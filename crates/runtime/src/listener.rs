//! The HTTP listener: what one connection may cost.
//!
//! * At most `max_connections` connections are served at once, lowered so that file
//!   descriptors stay in reserve for the log, checkpoints and sinks; the excess is
//!   answered 503 and closed at once (plain HTTP) or closed (TLS), never queued.
//! * A connection is cut when a request's headers take longer than `header_timeout`
//!   (a new connection's first request included), when it sits idle between requests for
//!   `idle_timeout`, or when a request's body takes longer than `body_timeout`.
//! * With `[server.tls]` every connection is TLS; the certificate and key are read again
//!   on SIGHUP (a file that fails to load keeps the previous pair, with a warning).

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use switchyard_config::{ServerConfig, ServerTlsConfig};
use switchyard_source_http::BodyTimeout;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// File descriptors kept free for everything but client connections: at least this many,
/// or a quarter of the limit when that is more.
const FD_RESERVE: u64 = 256;

/// The read buffer of one connection (headers must fit in it).
const MAX_HEAD_BUFFER: usize = 64 << 10;

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("cannot read server.tls.{key} {path}: {source}; check the path and its permissions")]
    TlsFile {
        key: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("server.tls.{key} {path}: {message}")]
    TlsContent {
        key: &'static str,
        path: String,
        message: String,
    },
}

/// Raises the soft open-file limit to the hard limit and returns the soft limit in force.
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    limit.rlim_cur
}

/// The connection cap actually used under an open-file limit of `fd_limit`.
pub fn connection_cap(configured: usize, fd_limit: u64) -> usize {
    let reserve = FD_RESERVE.max(fd_limit / 4);
    let room = fd_limit.saturating_sub(reserve).max(1);
    configured.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// The timeouts of one connection.
#[derive(Clone, Copy, Debug)]
struct Timeouts {
    header: Duration,
    body: Duration,
    idle: Duration,
}

/// A running listener; `done` ends when every connection has closed after `stop`.
pub struct Listener {
    pub done: tokio::task::JoinHandle<()>,
}

/// Serves `app` on `listener` until `stop` turns true; open connections then finish their
/// current request and close.
pub fn serve(
    listener: TcpListener,
    app: Router,
    server: &ServerConfig,
    stop: watch::Receiver<bool>,
) -> Result<Listener, ListenerError> {
    let fd_limit = raise_open_file_limit();
    let cap = connection_cap(server.max_connections, fd_limit);
    if cap < server.max_connections {
        warn!(
            max_connections = server.max_connections,
            used = cap,
            open_file_limit = fd_limit,
            "server.max_connections lowered to keep file descriptors for the log, checkpoints and sinks; raise the open-file limit (ulimit -n) to serve more"
        );
    }
    let tls = match &server.tls {
        Some(files) => {
            let config = load_tls(files)?;
            let current = Arc::new(RwLock::new(config));
            tokio::spawn(reload_on_sighup(files.clone(), current.clone()));
            Some(current)
        }
        None => None,
    };
    let timeouts = Timeouts {
        header: server.header_timeout,
        body: server.body_timeout,
        idle: server.idle_timeout,
    };
    let done = tokio::spawn(accept_loop(listener, app, cap, timeouts, tls, stop));
    Ok(Listener { done })
}

type TlsConfig = Arc<RwLock<Arc<rustls::ServerConfig>>>;

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    cap: usize,
    timeouts: Timeouts,
    tls: Option<TlsConfig>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(cap));
    let mut shed_warned: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors (or another passing error): accepting again at
                // once would spin; the reserve keeps the rest of the process working.
                warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if shed_warned.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                warn!(
                    max_connections = cap,
                    "too many open connections; new ones are refused until some close"
                );
                shed_warned = Some(Instant::now());
            }
            shed(stream, tls.is_some());
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls
            .as_ref()
            .map(|t| t.read().expect("tls config lock").clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, app, timeouts, stop).await,
                Some(config) => {
                    let acceptor = TlsAcceptor::from(config);
                    match tokio::time::timeout(timeouts.header, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, app, timeouts, stop).await,
                        Ok(Err(e)) => debug!(error = %e, "TLS handshake failed"),
                        Err(_) => debug!("TLS handshake took longer than server.header_timeout"),
                    }
                }
            }
            drop(slot);
        });
    }
    // New connections are refused from now on; wait for the open ones to finish (the
    // caller bounds this by its shutdown timeout).
    drop(listener);
    let _ = slots.acquire_many(cap as u32).await;
}

/// Refuses a connection over the cap without waiting on the client.
fn shed(stream: TcpStream, tls: bool) {
    if !tls {
        const BODY: &str =
            "{\"error\":\"too many open connections (server.max_connections); retry shortly\"}\n";
        let busy = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        let _ = stream.try_write(busy.as_bytes());
    }
    drop(stream);
}

/// Where a connection is between requests, for the watchdog.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Waiting for a request's headers (from the first byte, or from the start for a new
    /// connection).
    Head = 0,
    /// A request is being served (its body is bounded by its own deadline).
    Busy = 1,
    /// Between requests.
    Idle = 2,
}

/// Shared by a connection's stream, its service and its watchdog. Every change happens
/// inside a poll of the connection, on the connection's own task.
struct Activity {
    start: Instant,
    phase: AtomicU8,
    /// When the phase began, in ms since `start`; written for the phases that have a
    /// deadline (Head, Idle), left as it was when a request makes the connection busy.
    since_ms: AtomicU64,
    in_flight: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            phase: AtomicU8::new(Phase::Head as u8),
            since_ms: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Head,
            1 => Phase::Busy,
            _ => Phase::Idle,
        }
    }

    fn enter(&self, phase: Phase) {
        self.since_ms.store(self.now_ms(), Ordering::Release);
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Bytes arrived: an idle connection starts its next request's headers.
    fn bytes_read(&self) {
        if self.phase() == Phase::Idle {
            self.enter(Phase::Head);
        }
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        // A busy connection has no deadline, so no clock is read for it.
        self.phase.store(Phase::Busy as u8, Ordering::Release);
    }

    fn request_finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.enter(Phase::Idle);
        }
    }

    /// When the current phase overstays its timeout, and which timeout that is; `None`
    /// while a request is served (its body has its own deadline).
    fn deadline(&self, timeouts: &Timeouts) -> Option<(Instant, &'static str)> {
        let (limit, what) = match self.phase() {
            Phase::Head => (timeouts.header, "server.header_timeout"),
            Phase::Idle => (timeouts.idle, "server.idle_timeout"),
            Phase::Busy => return None,
        };
        let since = Duration::from_millis(self.since_ms.load(Ordering::Acquire));
        Some((later(self.start, since + limit), what))
    }
}

/// `at + by`, or a time far enough away for a timeout too large to be added.
fn later(at: Instant, by: Duration) -> Instant {
    at.checked_add(by)
        .unwrap_or_else(|| at + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Ends when the connection has overstayed its phase's timeout; gives which one.
///
/// It is polled right after the connection, in every poll of the connection's task, and
/// the connection's phase only changes inside that poll, so the watchdog sees every
/// change without being woken for it. Its timer never runs later than the deadline: a
/// change that brings the deadline forward (an idle connection starting a request's
/// headers) moves the timer at once; one that pushes it back (the next request) is looked
/// at when the timer fires. A busy keep-alive connection re-arms its timer a couple of
/// times per header timeout rather than for every request.
struct Watchdog {
    activity: Arc<Activity>,
    timeouts: Timeouts,
    timer: Pin<Box<Sleep>>,
}

impl Watchdog {
    fn new(activity: Arc<Activity>, timeouts: Timeouts) -> Self {
        let first = activity
            .deadline(&timeouts)
            .map_or_else(|| later(Instant::now(), timeouts.idle), |(at, _)| at);
        Self {
            activity,
            timeouts,
            timer: Box::pin(tokio::time::sleep_until(first)),
        }
    }
}

impl Future for Watchdog {
    type Output = &'static str;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<&'static str> {
        let this = &mut *self;
        if let Some((deadline, _)) = this.activity.deadline(&this.timeouts)
            && deadline < this.timer.deadline()
        {
            this.timer.as_mut().reset(deadline);
        }
        while this.timer.as_mut().poll(cx).is_ready() {
            let fired = this.timer.deadline();
            let next = match this.activity.deadline(&this.timeouts) {
                Some((deadline, what)) if deadline <= fired => return Poll::Ready(what),
                Some((deadline, _)) => deadline,
                // Busy: nothing to time; the phase that follows brings its deadline
                // forward if it is earlier than this.
                None => later(fired, this.timeouts.header.max(this.timeouts.idle)),
            };
            this.timer.as_mut().reset(next);
        }
        Poll::Pending
    }
}

async fn serve_connection<S>(
    stream: S,
    app: Router,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = ConnectionService {
        app,
        activity: activity.clone(),
        body_timeout: timeouts.body,
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        // Header and idle time are bounded by the watchdog below, which knows both.
        .header_read_timeout(None)
        // What one connection may buffer of a request's head: enough for any sane
        // headers, far from hyper's ~400 KB default times thousands of connections.
        .max_buf_size(MAX_HEAD_BUFFER)
        .max_headers(100)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let mut stopping = false;
    let mut dog = Watchdog::new(activity.clone(), timeouts);
    loop {
        tokio::select! {
            // The watchdog after the connection: it reads what the connection's poll changed.
            biased;
            result = connection.as_mut() => {
                if let Err(e) = result {
                    debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
            what = &mut dog => {
                debug!(timeout = what, "closing a connection that overstayed its timeout");
                return;
            }
        }
    }
}

/// The stream of a connection, telling its [`Activity`] when bytes arrive.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Hands each request to the router with its body under a deadline, and tells the
/// connection's [`Activity`] when requests start and end.
#[derive(Clone)]
struct ConnectionService {
    app: Router,
    activity: Arc<Activity>,
    body_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.activity.request_started();
        let finished = Finished(self.activity.clone());
        let timeout = self.body_timeout;
        let request = request.map(|body| {
            Body::new(DeadlineBody {
                inner: body,
                deadline: Box::pin(tokio::time::sleep(timeout)),
                timeout,
            })
        });
        let app = self.app.clone();
        Box::pin(async move {
            let response = app.oneshot(request).await;
            // An event stream (`/admin/events`) is answered by the handler at once and
            // then written for as long as it is open: the connection stays busy (not idle,
            // so not closed at `server.idle_timeout`) until its body ends.
            let streaming = response.as_ref().is_ok_and(|r| {
                r.headers()
                    .get(http::header::CONTENT_TYPE)
                    .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"))
            });
            if streaming {
                return response.map(|r| {
                    r.map(|body| {
                        Body::new(HoldsFinished {
                            body,
                            _finished: finished,
                        })
                    })
                });
            }
            drop(finished);
            response
        })
    }
}

/// A response body that keeps its request counted as in flight until it ends.
struct HoldsFinished {
    body: Body,
    /// Held for its `Drop`, when the body ends or the connection goes.
    _finished: Finished,
}

impl http_body::Body for HoldsFinished {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Marks the request finished even when hyper drops its future.
struct Finished(Arc<Activity>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A request body that fails with [`BodyTimeout`] when it has not fully arrived by its
/// deadline (the whole body, not each chunk: a trickle of bytes does not extend it).
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl http_body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(self.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Reads the certificate chain and key of `[server.tls]`.
fn load_tls(files: &ServerTlsConfig) -> Result<Arc<rustls::ServerConfig>, ListenerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |key: &'static str, path: &str| {
        std::fs::read(Path::new(path)).map_err(|source| ListenerError::TlsFile {
            key,
            path: path.to_owned(),
            source,
        })
    };
    let content = |key: &'static str, path: &str, message: String| ListenerError::TlsContent {
        key,
        path: path.to_owned(),
        message,
    };
    let cert_pem = read("cert", &files.cert)?;
    let key_pem = read("key", &files.key)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            content(
                "cert",
                &files.cert,
                format!("not a PEM certificate chain: {e}"),
            )
        })?;
    if certs.is_empty() {
        return Err(content(
            "cert",
            &files.cert,
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        content(
            "key",
            &files.key,
            format!("no private key found ({e}); expected a PEM PKCS#8, PKCS#1 or SEC1 key"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| content("cert", &files.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            content(
                "key",
                &files.key,
                format!("does not fit the certificate: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn reload_on_sighup(files: ServerTlsConfig, current: TlsConfig) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        warn!("cannot listen for SIGHUP; the TLS certificate will not be reloaded");
        return;
    };
    while hangup.recv().await.is_some() {
        match load_tls(&files) {
            Ok(config) => {
                *current.write().expect("tls config lock") = config;
                info!(cert = %files.cert, "TLS certificate reloaded");
            }
            Err(e) => {
                warn!(error = %e, "TLS certificate not reloaded; the previous one stays in use")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_keeps_descriptors_in_reserve() {
        assert_eq!(connection_cap(4096, 1024), 768);
        assert_eq!(connection_cap(4096, 1_048_576), 4096);
        assert_eq!(connection_cap(100, 1024), 100);
        assert_eq!(connection_cap(4096, 100), 1, "never zero");
    }

    const TIMEOUTS: Timeouts = Timeouts {
        header: Duration::from_secs(1),
        body: Duration::from_secs(1),
        idle: Duration::from_secs(60),
    };

    /// Polls `dog` once, as the connection's task would after each poll of the
    /// connection.
    fn check(dog: &mut Watchdog) -> Option<&'static str> {
        let waker = std::task::Waker::noop();
        match Pin::new(dog).poll(&mut Context::from_waker(waker)) {
            Poll::Ready(what) => Some(what),
            Poll::Pending => None,
        }
    }

    /// Advances the paused clock by `ms` and lets due timers fire.
    async fn wait_ms(ms: u64) {
        tokio::time::advance(Duration::from_millis(ms)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn awaited_the_watchdog_wakes_itself_at_the_deadline() {
        let activity = Arc::new(Activity::new());
        let mut dog = Watchdog::new(activity.clone(), TIMEOUTS);
        activity.request_started();
        activity.request_finished();
        // Idle: nothing for 59 s (the paused clock jumps to the next timer by itself).
        let early = tokio::time::timeout(Duration::from_secs(59), &mut dog).await;
        assert!(early.is_err(), "cut before the idle timeout: {early:?}");
        let what = tokio::time::timeout(Duration::from_secs(2), &mut dog).await;
        assert_eq!(what, Ok("server.idle_timeout"));
    }

    #[test]
    fn a_timeout_too_large_to_add_is_far_away_not_a_panic() {
        let now = Instant::now();
        assert!(later(now, Duration::MAX) > now + Duration::from_secs(3600 * 24 * 365));
        assert_eq!(
            later(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_no_head_is_cut_at_the_header_timeout() {
        let activity = Arc::new(Activity::new());
        let mut dog = Watchdog::new(activity.clone(), TIMEOUTS);
        assert_eq!(check(&mut dog), None);
        wait_ms(990).await;
        assert_eq!(check(&mut dog), None);
        wait_ms(20).await;
        assert_eq!(check(&mut dog), Some("server.header_timeout"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_that_starts_a_head_gets_the_header_timeout_not_the_idle_one() {
        let activity = Arc::new(Activity::new());
        let mut dog = Watchdog::new(activity.clone(), TIMEOUTS);
        activity.request_started();
        activity.request_finished();
        assert_eq!(check(&mut dog), None);
        // Idle for 10 s (of 60): the timer that fired at the first head's deadline
        // moved on to the idle one.
        for _ in 0..10 {
            wait_ms(1000).await;
            assert_eq!(check(&mut dog), None, "idle is allowed 60 s");
        }
        // A byte of the next head: 1 s from now, not 50.
        activity.bytes_read();
        assert_eq!(check(&mut dog), None);
        wait_ms(990).await;
        assert_eq!(check(&mut dog), None);
        wait_ms(20).await;
        assert_eq!(check(&mut dog), Some("server.header_timeout"));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_one_after_another_keep_a_connection_for_longer_than_any_timeout() {
        let activity = Arc::new(Activity::new());
        let mut dog = Watchdog::new(activity.clone(), TIMEOUTS);
        // 200 requests of 50 ms each, 10 s in all: ten times the header timeout.
        for _ in 0..200 {
            activity.bytes_read();
            activity.request_started();
            assert_eq!(check(&mut dog), None);
            wait_ms(50).await;
            activity.request_finished();
            assert_eq!(check(&mut dog), None);
        }
        // Then idle: cut at the idle timeout, counted from the last answer.
        wait_ms(59_900).await;
        assert_eq!(check(&mut dog), None);
        wait_ms(200).await;
        assert_eq!(check(&mut dog), Some("server.idle_timeout"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_served_for_longer_than_every_timeout_is_not_cut() {
        let activity = Arc::new(Activity::new());
        let mut dog = Watchdog::new(activity.clone(), TIMEOUTS);
        activity.bytes_read();
        activity.request_started();
        for _ in 0..120 {
            wait_ms(1000).await;
            assert_eq!(check(&mut dog), None, "a long poll is busy, not idle");
        }
        activity.request_finished();
        assert_eq!(check(&mut dog), None);
        wait_ms(59_900).await;
        assert_eq!(check(&mut dog), None);
        wait_ms(200).await;
        assert_eq!(check(&mut dog), Some("server.idle_timeout"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_after_an_idle_spell_is_cut_at_the_header_timeout_from_its_first_byte() {
        let activity = Arc::new(Activity::new());
        let mut dog = Watchdog::new(activity.clone(), TIMEOUTS);
        activity.request_started();
        activity.request_finished();
        wait_ms(30_000).await;
        assert_eq!(check(&mut dog), None);
        // One byte every 100 ms: only the first one starts the head.
        activity.bytes_read();
        let mut cut_after = None;
        for step in 1..=30 {
            wait_ms(100).await;
            activity.bytes_read();
            if let Some(what) = check(&mut dog) {
                cut_after = Some((step * 100, what));
                break;
            }
        }
        assert_eq!(cut_after, Some((1000, "server.header_timeout")));
    }
}
