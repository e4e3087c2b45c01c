//! The replication connection: Postgres' streaming replication protocol, spoken by us.
//!
//! A session is an ordinary connection started with `replication=database`: startup and
//! authentication (trust, password, md5, SCRAM-SHA-256 — the message builders and the
//! SCRAM exchange are postgres-protocol's), then `START_REPLICATION SLOT … LOGICAL`, and
//! from then on CopyData both ways. The server sends XLogData (one pgoutput message each)
//! and keepalives; we send standby status updates carrying the position up to which every
//! event is acknowledged.
//!
//! The connection is split in two after the start:
//! * the reading half stays with the session, which calls [`Replication::recv`] in its
//!   `select!` loop (cancel-safe: a partial frame stays in the buffer);
//! * the writing half goes to a feedback task that sends a status update every second,
//!   at once when the server asks for a reply, and soon after the acknowledged position
//!   moves. It runs on its own so the server keeps hearing from us while the session is
//!   blocked handing events to a slow pipeline: otherwise the walsender would end the
//!   connection after `wal_sender_timeout`.
//!
//! Why our own client and not a crate: see docs/decisions/0023-own-replication-client.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{Notify, watch};
use tracing::debug;

use crate::setup::CdcError;
use crate::tls::{Io, Target};

/// Bytes read from the socket at a time while streaming.
const READ_CHUNK: usize = 256 * 1024;
/// The largest message accepted from the server: pgoutput sends a row in one message
/// and Postgres caps a value at 1 GiB.
const MAX_MESSAGE: usize = (1 << 30) + (64 << 20);
/// How long connecting, authenticating and starting may take when the dsn sets no
/// `connect_timeout`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Status updates are sent at least this often.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// …and at most this often when only the acknowledged position moved: each update
/// makes the walsender take the slot's lock and may make it write the slot to disk.
const STATUS_MIN_GAP: Duration = Duration::from_millis(100);

/// What the session asks for at the start.
pub struct StartOptions<'a> {
    pub slot: &'a str,
    pub publication: &'a str,
    pub start_lsn: u64,
    /// Backend options (`-c name=value …`) sent at startup.
    pub session_options: &'a str,
}

/// One message of the replication stream.
#[derive(Debug)]
pub enum WalMessage {
    /// One pgoutput message, `data`, and the WAL range the server read for it.
    XLogData { start: u64, end: u64, data: Bytes },
    /// The server's position; `reply` when it asks for a status update now.
    KeepAlive { wal_end: u64, reply: bool },
}

/// A replication session that has started streaming.
pub struct Replication {
    read: ReadHalf<Box<dyn Io>>,
    buf: BytesMut,
    feedback: Arc<Feedback>,
    /// The protocol version in use: 2 streams large transactions before they commit.
    pub protocol: u8,
    /// `server_version_num` of the server, e.g. 150019.
    pub server_version: u32,
}

/// The acknowledged position, shared between the session and the feedback task.
struct Feedback {
    applied: AtomicU64,
    wake: Notify,
    /// Set when the server asked for a reply.
    reply_now: AtomicBool,
    /// The position last sent to the server.
    reported: watch::Sender<u64>,
    stop: AtomicBool,
    /// The task ended on a write error: the connection is broken.
    dead: AtomicBool,
}

impl Replication {
    /// Connects, authenticates and starts streaming from `opts.start_lsn` with protocol
    /// version 2 and streaming of large transactions where the server has it (14 and
    /// later), version 1 otherwise.
    pub async fn start(target: &Target, opts: &StartOptions<'_>) -> Result<Self, CdcError> {
        // The dsn's connect_timeout, else a bound of our own: a server that accepts the
        // connection and then says nothing must not hang the source.
        let limit = target
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(START_TIMEOUT);
        let (host, port) = target.host_port();
        tokio::time::timeout(limit, Self::start_inner(target, opts))
            .await
            .unwrap_or_else(|_| {
                Err(CdcError::Transient(format!(
                    "the replication connection to {host}:{port} did not start within {limit:?}"
                )))
            })
    }

    async fn start_inner(target: &Target, opts: &StartOptions<'_>) -> Result<Self, CdcError> {
        let stream = target.replication_stream().await?;
        let (host, port) = target.host_port();
        let mut conn = Startup {
            io: stream,
            buf: BytesMut::with_capacity(8 * 1024),
            out: BytesMut::with_capacity(1024),
            place: format!("{host}:{port}"),
        };
        let server_version = conn.authenticate(target, opts.session_options).await?;
        let protocol = if server_version >= 140_000 { 2 } else { 1 };
        let streaming = if protocol >= 2 {
            ", streaming 'on'"
        } else {
            ""
        };
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '{protocol}'{streaming}, \
             publication_names '{}', messages 'true')",
            quote_ident(opts.slot),
            crate::change::lsn_string(opts.start_lsn),
            quote_literal_body(&quote_ident(opts.publication)),
        );
        conn.send_query(&sql).await?;
        loop {
            let (tag, body) = conn.frame().await?;
            match tag {
                b'W' => break,
                b'E' => return Err(server_error(&body, &conn.place)),
                // Notices and parameter reports may come first.
                _ => {}
            }
        }
        let (read, write) = tokio::io::split(conn.io);
        // Nothing is reported yet: the first update says where we are.
        let (reported, _) = watch::channel(0);
        let feedback = Arc::new(Feedback {
            applied: AtomicU64::new(opts.start_lsn),
            wake: Notify::new(),
            reply_now: AtomicBool::new(false),
            reported,
            stop: AtomicBool::new(false),
            dead: AtomicBool::new(false),
        });
        tokio::spawn(feedback_task(write, feedback.clone()));
        Ok(Self {
            read,
            buf: conn.buf,
            feedback,
            protocol,
            server_version,
        })
    }

    /// The next message of the stream. Cancel-safe: a message read in part stays in
    /// the buffer for the next call.
    pub async fn recv(&mut self) -> Result<WalMessage, CdcError> {
        loop {
            if let Some(message) = self.parse()? {
                return Ok(message);
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            let n = self
                .read
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| CdcError::Transient(format!("replication connection: {e}")))?;
            if n == 0 {
                return Err(CdcError::Transient(
                    "the server closed the replication connection".into(),
                ));
            }
        }
    }

    /// One whole message from the buffer, if there is one.
    fn parse(&mut self) -> Result<Option<WalMessage>, CdcError> {
        loop {
            let Some((tag, body)) = take_frame(&mut self.buf)? else {
                return Ok(None);
            };
            match tag {
                b'd' => {
                    if let Some(message) = copy_data(body)? {
                        return Ok(Some(message));
                    }
                }
                b'E' => return Err(server_error(&body, "the replication server")),
                b'c' | b'C' | b'Z' => {
                    return Err(CdcError::Transient(
                        "the server ended the replication stream".into(),
                    ));
                }
                b'N' => debug!(notice = %error_fields(&body), "replication notice"),
                _ => {}
            }
        }
    }

    /// The session's side of the feedback task: what to acknowledge, and when.
    pub fn feedback(&self) -> FeedbackHandle {
        FeedbackHandle(self.feedback.clone())
    }
}

/// Acknowledgements to the server, from the session.
#[derive(Clone)]
pub struct FeedbackHandle(Arc<Feedback>);

impl FeedbackHandle {
    /// Everything below `lsn` is acknowledged: it goes to the server with the next
    /// status update. Never moves backwards.
    pub fn acknowledge(&self, lsn: u64) {
        if self.0.applied.fetch_max(lsn, Ordering::AcqRel) < lsn {
            self.0.wake.notify_one();
        }
    }

    /// Whether the feedback task failed to write: the connection is broken.
    pub fn is_dead(&self) -> bool {
        self.0.dead.load(Ordering::Acquire)
    }

    /// The server asked for a status update.
    pub fn reply_requested(&self) {
        self.0.reply_now.store(true, Ordering::Release);
        self.0.wake.notify_one();
    }

    /// Waits (up to `timeout`) until the acknowledged position reached the server;
    /// false when it did not in time.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let target = self.0.applied.load(Ordering::Acquire);
        let mut reported = self.0.reported.subscribe();
        self.0.reply_now.store(true, Ordering::Release);
        self.0.wake.notify_one();
        tokio::time::timeout(timeout, reported.wait_for(|sent| *sent >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for Replication {
    fn drop(&mut self) {
        self.feedback.stop.store(true, Ordering::Release);
        self.feedback.wake.notify_one();
    }
}

/// Sends status updates until the session is dropped or the connection fails.
async fn feedback_task(mut write: WriteHalf<Box<dyn Io>>, feedback: Arc<Feedback>) {
    let mut out = BytesMut::with_capacity(64);
    let mut last_sent = tokio::time::Instant::now();
    let mut sent_lsn = None;
    loop {
        let _ = tokio::time::timeout(STATUS_INTERVAL, feedback.wake.notified()).await;
        let stop = feedback.stop.load(Ordering::Acquire);
        let lsn = feedback.applied.load(Ordering::Acquire);
        let asked = feedback.reply_now.swap(false, Ordering::AcqRel);
        let due = last_sent.elapsed() >= STATUS_INTERVAL;
        if !stop && !asked && !due {
            if sent_lsn == Some(lsn) {
                continue;
            }
            let gap = STATUS_MIN_GAP.saturating_sub(last_sent.elapsed());
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
        }
        let lsn = feedback.applied.load(Ordering::Acquire);
        out.clear();
        status_update(lsn, &mut out);
        if stop {
            // The last position, then CopyDone and Terminate: the walsender ends cleanly.
            frontend::copy_done(&mut out);
            frontend::terminate(&mut out);
        }
        let written = async {
            write.write_all(&out).await?;
            // TLS buffers what it encrypts: the update counts once it left.
            write.flush().await
        };
        if let Err(e) = written.await {
            debug!(error = %e, "replication status update failed; the session ends");
            feedback.dead.store(true, Ordering::Release);
            return;
        }
        last_sent = tokio::time::Instant::now();
        sent_lsn = Some(lsn);
        feedback.reported.send_replace(lsn);
        if stop {
            let _ = write.shutdown().await;
            return;
        }
    }
}

/// A standby status update in a CopyData: written, flushed and applied positions all
/// `lsn` (the slot's confirmed position is the flushed one), the time, no reply asked.
fn status_update(lsn: u64, out: &mut BytesMut) {
    let mut body = [0u8; 34];
    body[0] = b'r';
    body[1..9].copy_from_slice(&lsn.to_be_bytes());
    body[9..17].copy_from_slice(&lsn.to_be_bytes());
    body[17..25].copy_from_slice(&lsn.to_be_bytes());
    body[25..33].copy_from_slice(&crate::change::pg_now_us().to_be_bytes());
    out.put_u8(b'd');
    out.put_i32(4 + body.len() as i32);
    out.put_slice(&body);
}

/// The CopyData of the stream: XLogData (`w`) or keepalive (`k`); anything else is
/// skipped.
fn copy_data(mut body: Bytes) -> Result<Option<WalMessage>, CdcError> {
    let truncated = || CdcError::Transient("truncated replication message".into());
    if body.is_empty() {
        return Err(truncated());
    }
    match body.get_u8() {
        b'w' => {
            if body.len() < 24 {
                return Err(truncated());
            }
            let start = body.get_u64();
            let end = body.get_u64();
            let _server_time = body.get_i64();
            Ok(Some(WalMessage::XLogData {
                start,
                end,
                data: body,
            }))
        }
        b'k' => {
            if body.len() < 17 {
                return Err(truncated());
            }
            let wal_end = body.get_u64();
            let _server_time = body.get_i64();
            let reply = body.get_u8() == 1;
            Ok(Some(WalMessage::KeepAlive { wal_end, reply }))
        }
        _ => Ok(None),
    }
}

/// Takes one whole backend message (tag, body) off the front of `buf`.
fn take_frame(buf: &mut BytesMut) -> Result<Option<(u8, Bytes)>, CdcError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if !(4..=MAX_MESSAGE).contains(&len) {
        return Err(CdcError::Transient(format!(
            "the server sent a message of {len} bytes (tag {tag:#04x}); the connection is \
             not speaking the Postgres protocol"
        )));
    }
    if buf.len() < 1 + len {
        buf.reserve(1 + len - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(1 + len);
    frame.advance(5);
    Ok(Some((tag, frame.freeze())))
}

/// The connection before streaming: startup, authentication, the start command.
struct Startup {
    io: Box<dyn Io>,
    buf: BytesMut,
    out: BytesMut,
    /// `host:port`, for messages.
    place: String,
}

impl Startup {
    async fn frame(&mut self) -> Result<(u8, Bytes), CdcError> {
        loop {
            if let Some(frame) = take_frame(&mut self.buf)? {
                return Ok(frame);
            }
            let n = self.io.read_buf(&mut self.buf).await.map_err(|e| {
                CdcError::Transient(format!("replication connection to {}: {e}", self.place))
            })?;
            if n == 0 {
                return Err(CdcError::Transient(format!(
                    "the server at {} closed the replication connection during its start",
                    self.place
                )));
            }
        }
    }

    async fn flush(&mut self) -> Result<(), CdcError> {
        let out = self.out.split();
        self.io.write_all(&out).await.map_err(|e| {
            CdcError::Transient(format!("replication connection to {}: {e}", self.place))
        })
    }

    async fn send_query(&mut self, sql: &str) -> Result<(), CdcError> {
        frontend::query(sql, &mut self.out).map_err(encode_error)?;
        self.flush().await
    }

    /// Startup message and authentication, until the server is ready; returns its
    /// `server_version_num`.
    async fn authenticate(&mut self, target: &Target, options: &str) -> Result<u32, CdcError> {
        let cfg = &target.config;
        let user = cfg.get_user().unwrap_or("postgres").to_owned();
        let database = cfg.get_dbname().unwrap_or(&user).to_owned();
        let password = cfg.get_password().map(<[u8]>::to_vec);
        let params = [
            ("user", user.as_str()),
            ("database", database.as_str()),
            ("replication", "database"),
            ("application_name", "switchyard"),
            // pgoutput sends text in the client encoding; values are read as UTF-8.
            ("client_encoding", "UTF8"),
            ("options", options),
        ];
        frontend::startup_message(params.iter().copied(), &mut self.out).map_err(encode_error)?;
        self.flush().await?;
        let place = self.place.clone();
        let no_password = || {
            CdcError::Config(format!(
                "the server at {place} asks for a password for user {user} and the source's \
                 dsn has none: add it to the dsn (postgres://{user}:PASSWORD@…) or take it \
                 from an environment variable with ${{VAR}}"
            ))
        };
        let mut scram: Option<sasl::ScramSha256> = None;
        // A server that started SCRAM must prove it knows the password before it may
        // say the client is in.
        let mut scram_verified = false;
        let mut version: u32 = 0;
        loop {
            let (tag, mut body) = self.frame().await?;
            match tag {
                b'R' => {
                    if body.len() < 4 {
                        return Err(CdcError::Transient(
                            "truncated authentication request".into(),
                        ));
                    }
                    match body.get_i32() {
                        0 if scram.is_some() && !scram_verified => {
                            return Err(CdcError::Config(format!(
                                "the server at {} ended SCRAM authentication without proving \
                                 it knows the password: this is not the server the dsn names, \
                                 or something in between is answering for it; use \
                                 sslmode=verify-full",
                                self.place
                            )));
                        }
                        0 => {}
                        3 => {
                            let password = password.as_deref().ok_or_else(no_password)?;
                            frontend::password_message(password, &mut self.out)
                                .map_err(encode_error)?;
                            self.flush().await?;
                        }
                        5 => {
                            let password = password.as_deref().ok_or_else(no_password)?;
                            if body.len() < 4 {
                                return Err(CdcError::Transient("truncated md5 salt".into()));
                            }
                            let salt = [body[0], body[1], body[2], body[3]];
                            let hash = md5_hash(user.as_bytes(), password, salt);
                            frontend::password_message(hash.as_bytes(), &mut self.out)
                                .map_err(encode_error)?;
                            self.flush().await?;
                        }
                        10 => {
                            let password = password.as_deref().ok_or_else(no_password)?;
                            let offered = body
                                .split(|b| *b == 0)
                                .map(|m| String::from_utf8_lossy(m).into_owned())
                                .collect::<Vec<_>>();
                            if !offered.iter().any(|m| m == sasl::SCRAM_SHA_256) {
                                return Err(CdcError::Config(format!(
                                    "the server at {} offers SASL mechanisms {offered:?}; \
                                     switchyard speaks SCRAM-SHA-256",
                                    self.place
                                )));
                            }
                            let exchange = sasl::ScramSha256::new(
                                password,
                                sasl::ChannelBinding::unsupported(),
                            );
                            frontend::sasl_initial_response(
                                sasl::SCRAM_SHA_256,
                                exchange.message(),
                                &mut self.out,
                            )
                            .map_err(encode_error)?;
                            scram = Some(exchange);
                            self.flush().await?;
                        }
                        11 => {
                            let exchange = scram.as_mut().ok_or_else(|| {
                                CdcError::Transient("SASL continue before SASL start".into())
                            })?;
                            exchange.update(&body).map_err(|e| {
                                CdcError::Transient(format!("SCRAM authentication: {e}"))
                            })?;
                            frontend::sasl_response(exchange.message(), &mut self.out)
                                .map_err(encode_error)?;
                            self.flush().await?;
                        }
                        12 => {
                            let exchange = scram.as_mut().ok_or_else(|| {
                                CdcError::Transient("SASL final before SASL start".into())
                            })?;
                            exchange.finish(&body).map_err(|e| {
                                CdcError::Config(format!(
                                    "SCRAM authentication with {}: the server's proof is wrong \
                                     ({e}); this is not the server the dsn names",
                                    self.place
                                ))
                            })?;
                            scram_verified = true;
                        }
                        other => {
                            return Err(CdcError::Config(format!(
                                "the server at {} asks for authentication method {other}, \
                                 which switchyard does not speak; allow scram-sha-256, md5, \
                                 password or trust for replication connections in pg_hba.conf",
                                self.place
                            )));
                        }
                    }
                }
                b'S' => {
                    let mut parts = body.split(|b| *b == 0);
                    if parts.next() == Some(b"server_version".as_slice()) {
                        version = parts.next().map_or(0, version_num);
                    }
                }
                b'E' => return Err(server_error(&body, &self.place)),
                b'Z' => return Ok(version),
                // BackendKeyData, notices.
                _ => {}
            }
        }
    }
}

/// `server_version` (`15.19 (Debian …)`, `14beta1`) as a `server_version_num`.
fn version_num(text: &[u8]) -> u32 {
    let text = String::from_utf8_lossy(text);
    let mut numbers = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    let major = numbers.next().unwrap_or(0);
    let minor = numbers.next().unwrap_or(0);
    major * 10_000 + minor.min(9_999)
}

fn encode_error(e: std::io::Error) -> CdcError {
    CdcError::Transient(format!("cannot encode a message to the server: {e}"))
}

/// The fields of an ErrorResponse or NoticeResponse as `SEVERITY CODE: message (detail;
/// hint)`.
fn error_fields(body: &[u8]) -> String {
    let (mut severity, mut code, mut message, mut extra) = ("", "", "", Vec::new());
    for field in body.split(|b| *b == 0) {
        let Some((&kind, value)) = field.split_first() else {
            continue;
        };
        let value = std::str::from_utf8(value).unwrap_or("?");
        match kind {
            b'V' => severity = value,
            b'S' if severity.is_empty() => severity = value,
            b'C' => code = value,
            b'M' => message = value,
            b'D' | b'H' => extra.push(value),
            _ => {}
        }
    }
    let mut text = format!("{severity} {code}: {message}");
    if !extra.is_empty() {
        text.push_str(&format!(" ({})", extra.join("; ")));
    }
    text
}

/// A server error as a [`CdcError`]: a lost or missing slot, or bad credentials, must be
/// fixed by the user; anything else is retried. The caller adds what the slot means.
fn server_error(body: &[u8], place: &str) -> CdcError {
    let text = error_fields(body);
    let code = body
        .split(|b| *b == 0)
        .find_map(|f| f.strip_prefix(b"C"))
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default();
    match code.as_str() {
        // invalid_password, invalid_authorization_specification
        "28P01" | "28000" => CdcError::Config(format!(
            "the server at {place} refused the replication connection: {text}; check the \
             user and password in the source's dsn, and that pg_hba.conf has a `replication` \
             line for it"
        )),
        _ => CdcError::Transient(format!("replication: {text}")),
    }
}

/// `"name"`, with inner quotes doubled.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The body of a string literal (without its quotes), inner quotes doubled.
fn quote_literal_body(text: &str) -> String {
    text.replace('\'', "''")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(4 + body.len() as u32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn frames_are_taken_whole_and_only_whole() {
        let mut data = frame(b'd', b"k\0\0\0\0\0\0\0\x10\0\0\0\0\0\0\0\0\x01");
        data.extend(frame(b'N', b"SNOTICE\0"));
        let mut buf = BytesMut::new();
        // Byte by byte: nothing is taken before its last byte arrived.
        let mut taken = Vec::new();
        for b in &data {
            buf.put_u8(*b);
            while let Some(f) = take_frame(&mut buf).unwrap() {
                taken.push(f);
            }
        }
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[0].0, b'd');
        assert!(matches!(
            copy_data(taken[0].1.clone()).unwrap(),
            Some(WalMessage::KeepAlive {
                wal_end: 0x10,
                reply: true
            })
        ));
        assert_eq!(taken[1], (b'N', Bytes::from_static(b"SNOTICE\0")));
        assert!(buf.is_empty());
    }

    #[test]
    fn xlogdata_carries_its_payload() {
        let mut body = vec![b'w'];
        body.extend_from_slice(&5u64.to_be_bytes());
        body.extend_from_slice(&9u64.to_be_bytes());
        body.extend_from_slice(&0i64.to_be_bytes());
        body.extend_from_slice(b"B...");
        match copy_data(Bytes::from(body)).unwrap() {
            Some(WalMessage::XLogData { start, end, data }) => {
                assert_eq!((start, end), (5, 9));
                assert_eq!(&data[..], b"B...");
            }
            other => panic!("expected XLogData, got {other:?}"),
        }
        assert!(copy_data(Bytes::from_static(b"w\0\0")).is_err());
        assert!(copy_data(Bytes::from_static(b"k\0")).is_err());
    }

    #[test]
    fn absurd_lengths_are_refused() {
        let mut buf = BytesMut::from(&[b'd', 0, 0, 0, 2][..]);
        assert!(take_frame(&mut buf).is_err());
        let mut buf = BytesMut::from(&[b'd', 0x7f, 0xff, 0xff, 0xff][..]);
        assert!(take_frame(&mut buf).is_err());
    }

    #[test]
    fn status_update_layout() {
        let mut out = BytesMut::new();
        status_update(0x0102_0304_0506_0708, &mut out);
        assert_eq!(out.len(), 1 + 4 + 34);
        assert_eq!(&out[..6], &[b'd', 0, 0, 0, 38, b'r']);
        for at in [6, 14, 22] {
            assert_eq!(&out[at..at + 8], &0x0102_0304_0506_0708u64.to_be_bytes());
        }
        assert_eq!(out[38], 0, "no reply asked of the server");
    }

    #[test]
    fn server_versions() {
        assert_eq!(version_num(b"15.19 (Debian 15.19-0+deb12u1)"), 150_019);
        assert_eq!(version_num(b"14beta1"), 140_001);
        assert_eq!(version_num(b"13.2"), 130_002);
        assert_eq!(version_num(b""), 0);
    }

    #[test]
    fn errors_read_well_and_bad_credentials_are_permanent() {
        let body = b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"x\"\0\0";
        let e = server_error(body, "db:5432");
        assert!(matches!(e, CdcError::Config(_)), "{e:?}");
        assert!(
            e.to_string()
                .contains("FATAL 28P01: password authentication failed")
        );
        let body = b"SERROR\0C42704\0Mreplication slot \"s\" does not exist\0\0";
        let e = server_error(body, "db:5432");
        assert!(e.is_transient());
        assert!(e.to_string().contains("slot \"s\" does not exist"));
    }

    #[test]
    fn names_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal_body("it's"), "it''s");
    }
}
