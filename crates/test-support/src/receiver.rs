//! A scriptable webhook receiver.
//!
//! The server runs on its own thread with its own Tokio runtime, so a plain `#[test]`
//! and a `#[tokio::test]` (even a current-thread one) can both use it. Dropping the
//! receiver stops the server and cancels every request it is still holding.
//!
//! Every request is recorded in [`WebhookReceiver::received`]; only those answered with
//! a 2xx are also recorded in [`WebhookReceiver::accepted`] — that is what a test
//! counts as delivered.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{oneshot, watch};

/// How the receiver answers. Change it while running with
/// [`WebhookReceiver::set_behaviour`].
#[derive(Clone, Debug, PartialEq)]
pub enum Behaviour {
    /// 200 to every request.
    Ok,
    /// 500 to about `fraction` (0.0–1.0) of requests, 200 to the rest. Which requests
    /// fail is a pseudo-random sequence fixed by `seed`: the same seed fails the same
    /// positions in the sequence of requests.
    FailFraction { fraction: f64, seed: u64 },
    /// 500 to the next `n` requests, then 200.
    FailFirst(u32),
    /// 429 with `Retry-After: <retry_after_secs>`.
    TooManyRequests { retry_after_secs: u64 },
    /// Holds the request this long, then closes the connection without an answer.
    Hang(Duration),
    /// Holds the request this long, then answers 200 (keep it below the client's timeout,
    /// or the request counts as accepted although the client gave up).
    Slow(Duration),
    /// Closes the connection without an answer.
    Close,
    /// Answers this status with a short text body naming it.
    Status(u16),
    /// Answers `status` to requests whose body contains `needle`, 200 to the others.
    StatusIfBodyContains { needle: String, status: u16 },
}

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the request arrived (after its body was read).
    pub at: Instant,
    /// The status answered; `None` when the connection was closed instead.
    pub status: Option<u16>,
}

impl ReceivedRequest {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A local HTTP server for webhook sinks to deliver to. See the module docs.
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    state: Mutex<ReceiverState>,
    /// Notified whenever a request is accepted, for blocking waiters.
    accepted_cv: Condvar,
    /// The number of accepted requests, for async waiters.
    accepted_tx: watch::Sender<usize>,
}

struct ReceiverState {
    behaviour: Behaviour,
    /// Requests seen under the current behaviour.
    seen_under_behaviour: u64,
    received: Vec<ReceivedRequest>,
    accepted: Vec<ReceivedRequest>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ReceiverState> {
        // A panicking test thread must not hide the recording from the others.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl WebhookReceiver {
    /// Starts a receiver on `127.0.0.1` at a free port.
    ///
    /// # Panics
    /// When no port can be bound or the thread cannot start — the test cannot run then.
    pub fn start(behaviour: Behaviour) -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("binding a webhook receiver on 127.0.0.1");
        std_listener
            .set_nonblocking(true)
            .expect("making the receiver's socket non-blocking");
        let addr = std_listener
            .local_addr()
            .expect("reading the receiver's address");
        let (accepted_tx, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(ReceiverState {
                behaviour,
                seen_under_behaviour: 0,
                received: Vec::new(),
                accepted: Vec::new(),
            }),
            accepted_cv: Condvar::new(),
            accepted_tx,
        });
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared))
            .into_make_service_with_connect_info::<Killer>();
        let thread = std::thread::Builder::new()
            .name(format!("webhook-receiver-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building the receiver's runtime");
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let server = axum::serve(KillableListener(listener), app);
                    tokio::select! {
                        _ = server => {}
                        _ = shutdown_rx => {}
                    }
                });
                // Dropping the runtime here cancels requests still held (Hang, Slow).
            })
            .expect("spawning the receiver thread");
        ready_rx
            .recv()
            .expect("the receiver thread died while starting")
            .expect("registering the receiver's socket");
        Self {
            addr,
            shared,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>/hook`. Any path is answered the same way.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The address the receiver listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes how the following requests are answered (requests already being held
    /// keep the behaviour they started with).
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        let mut state = self.shared.lock();
        state.behaviour = behaviour;
        state.seen_under_behaviour = 0;
    }

    /// Every request received, in arrival order, whatever it was answered.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.shared.lock().received.clone()
    }

    /// The requests answered with a 2xx, in the order they were answered.
    pub fn accepted(&self) -> Vec<ReceivedRequest> {
        self.shared.lock().accepted.clone()
    }

    /// How many requests were answered with a 2xx.
    pub fn count(&self) -> usize {
        self.shared.lock().accepted.len()
    }

    /// How many requests arrived, whatever they were answered.
    pub fn received_count(&self) -> usize {
        self.shared.lock().received.len()
    }

    /// Blocks until at least `n` requests were accepted or `within` has passed; returns
    /// whether `n` was reached. Wakes on every acceptance (no polling interval).
    ///
    /// Do not call it from inside an async test whose runtime also drives the sender:
    /// it blocks the thread. Use [`WebhookReceiver::wait_for_count_async`] there.
    pub fn wait_for_count(&self, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut state = self.shared.lock();
        while state.accepted.len() < n {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = match self.shared.accepted_cv.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    /// [`WebhookReceiver::wait_for_count`] for async tests.
    pub async fn wait_for_count_async(&self, n: usize, within: Duration) -> bool {
        let mut rx = self.shared.accepted_tx.subscribe();
        tokio::time::timeout(within, rx.wait_for(|count| *count >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for WebhookReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookReceiver")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// What to do with one request, decided under the lock.
enum Answer {
    Status(StatusCode, Option<u64>),
    After(Duration, Box<Answer>),
    Close,
}

/// splitmix64: a tiny, well-mixed generator; enough for picking failures repeatably.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn decide(state: &mut ReceiverState, body: &[u8]) -> Answer {
    let n = state.seen_under_behaviour;
    state.seen_under_behaviour += 1;
    match &state.behaviour {
        Behaviour::Ok => Answer::Status(StatusCode::OK, None),
        Behaviour::FailFraction { fraction, seed } => {
            let draw = splitmix64(seed ^ splitmix64(n)) >> 11;
            let unit = draw as f64 / (1u64 << 53) as f64;
            if unit < *fraction {
                Answer::Status(StatusCode::INTERNAL_SERVER_ERROR, None)
            } else {
                Answer::Status(StatusCode::OK, None)
            }
        }
        Behaviour::FailFirst(k) if n < u64::from(*k) => {
            Answer::Status(StatusCode::INTERNAL_SERVER_ERROR, None)
        }
        Behaviour::FailFirst(_) => Answer::Status(StatusCode::OK, None),
        Behaviour::TooManyRequests { retry_after_secs } => {
            Answer::Status(StatusCode::TOO_MANY_REQUESTS, Some(*retry_after_secs))
        }
        Behaviour::Hang(d) => Answer::After(*d, Box::new(Answer::Close)),
        Behaviour::Slow(d) => Answer::After(*d, Box::new(Answer::Status(StatusCode::OK, None))),
        Behaviour::Close => Answer::Close,
        Behaviour::Status(code) => Answer::Status(status_code(*code), None),
        Behaviour::StatusIfBodyContains { needle, status } => {
            let hit =
                !needle.is_empty() && body.windows(needle.len()).any(|w| w == needle.as_bytes());
            if hit {
                Answer::Status(status_code(*status), None)
            } else {
                Answer::Status(StatusCode::OK, None)
            }
        }
    }
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(killer): ConnectInfo<Killer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let (mut answer, index) = {
        let mut state = shared.lock();
        let answer = decide(&mut state, &body);
        state.received.push(ReceivedRequest {
            method,
            path: uri.path().to_owned(),
            headers,
            body,
            at,
            status: None,
        });
        (answer, state.received.len() - 1)
    };
    while let Answer::After(delay, then) = answer {
        tokio::time::sleep(delay).await;
        answer = *then;
    }
    match answer {
        Answer::Status(status, retry_after) => {
            let mut state = shared.lock();
            state.received[index].status = Some(status.as_u16());
            if status.is_success() {
                let request = state.received[index].clone();
                state.accepted.push(request);
                let count = state.accepted.len();
                drop(state);
                shared.accepted_tx.send_replace(count);
                shared.accepted_cv.notify_all();
            }
            let body = format!("switchyard test receiver answered {status}");
            match retry_after {
                Some(secs) => (
                    status,
                    [(http::header::RETRY_AFTER, secs.to_string())],
                    body,
                )
                    .into_response(),
                None => (status, body).into_response(),
            }
        }
        Answer::Close | Answer::After(..) => {
            killer.kill();
            // Never written: the connection fails on its next read or write.
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Lets a handler close its own connection without answering.
#[derive(Clone, Debug, Default)]
struct Killer(Arc<AtomicBool>);

impl Killer {
    fn kill(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn killed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for Killer {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP listener whose connections carry a [`Killer`] as their "address".
struct KillableListener(tokio::net::TcpListener);

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = Killer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    let killer = Killer::default();
                    return (
                        KillableStream {
                            inner: stream,
                            killer: killer.clone(),
                        },
                        killer,
                    );
                }
                // Out of file descriptors and the like: give the test a moment to
                // release some rather than spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Killer::default())
    }
}

/// A TCP stream that fails every read and write once killed, so the server drops the
/// connection instead of answering.
struct KillableStream {
    inner: tokio::net::TcpStream,
    killer: Killer,
}

fn killed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "closed by the test receiver",
    )
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.killer.killed() {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.killer.killed() {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.killer.killed() {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
