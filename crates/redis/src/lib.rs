//! Redis Streams for switchyard, on the redis crate.
//!
//! * [`sink::build`] — the `redis` sink: each event is one entry appended with XADD to
//!   the stream its template names (trimmed with `MAXLEN ~` when asked). A lane's batch
//!   is one MULTI/EXEC transaction, so a batch the server refuses (out of memory) is
//!   refused as a whole and retried in order; an event is
//!   [`Outcome::Delivered`](switchyard_connector::Outcome) once its XADD answered an
//!   entry id.
//! * [`source::build`] — the `redis` source: a member of a consumer group reading with
//!   XREADGROUP; it acknowledges (XACK) only entries below the reader's low watermark,
//!   reads its own unacknowledged entries again after a restart, and claims
//!   (XAUTOCLAIM) those a dead member left idle for `claim_idle`.
//!
//! This crate knows no runtime: it implements the contracts of `switchyard-connector`
//! (`docs/decisions/0028-redis-connector.md`).

pub mod sink;
pub mod source;

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, TlsCertificates};
use switchyard_config::BrokerTlsConfig;
use switchyard_connector::BuildError;

/// Fields of the entries the sink writes; the source maps them back. Event headers are
/// fields named [`fields::HEADER_PREFIX`] + their name.
pub mod fields {
    pub const ID: &str = "id";
    pub const SOURCE: &str = "source";
    pub const KIND: &str = "kind";
    pub const CONTENT_TYPE: &str = "content-type";
    pub const KEY: &str = "key";
    pub const PAYLOAD: &str = "payload";
    pub const HEADER_PREFIX: &str = "header:";
    /// Set by the source: the entry's id in its stream.
    pub const ENTRY_ID_HEADER: &str = "redis-entry-id";
}

/// The client of `url` for the component `name`, with its TLS files read; nothing
/// connects yet. A URL the client refuses fails the start with the fix.
pub(crate) fn client(
    what: &str,
    name: &str,
    url: &str,
    tls: &BrokerTlsConfig,
) -> Result<Client, BuildError> {
    let bad_url = |e: redis::RedisError| {
        BuildError::new(format!(
            "{what} `{name}`: invalid url {:?}: {e}; write e.g. \"redis://127.0.0.1:6379\" \
             (user and password as redis://user:pass@host:6379, rediss:// for TLS)",
            switchyard_config::redact::url(url)
        ))
    };
    if tls == &BrokerTlsConfig::default() {
        return Client::open(url).map_err(bad_url);
    }
    let read = |path: &String| {
        std::fs::read(path).map_err(|e| {
            BuildError::new(format!("{what} `{name}`: cannot read tls file {path}: {e}"))
        })
    };
    let client_tls = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        _ => None,
    };
    let root_cert = tls.ca.as_ref().map(read).transpose()?;
    Client::build_with_tls(
        url,
        TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(bad_url)
}

/// A connection whose connect and every reply are bounded by `timeout`.
pub(crate) async fn connect(
    client: &Client,
    timeout: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Whether the connection should be replaced after `e` (it broke, or timed out with
/// replies of unknown fate queued on it).
pub(crate) fn connection_lost(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}
