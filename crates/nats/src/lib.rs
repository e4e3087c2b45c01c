//! NATS JetStream for switchyard, on async-nats.
//!
//! * [`sink::build`] — the `nats` sink: each event is one JetStream publish to the
//!   subject its template names, with `Nats-Msg-Id` = the event id so the stream's
//!   duplicate window drops what a retry or a restart sends again. An event is
//!   [`Outcome::Delivered`](switchyard_connector::Outcome) only on its PubAck.
//! * [`source::build`] — the `nats` source: a durable pull consumer (`AckPolicy::All`)
//!   whose feed positions are stream sequences; a commit acknowledges the highest
//!   sequence below the reader's low watermark and waits for the server to confirm it.
//!
//! This crate knows no runtime: it implements the contracts of `switchyard-connector`
//! (`docs/decisions/0027-nats-connector.md`).

pub mod sink;
pub mod source;

use std::time::Duration;

use async_nats::{ConnectOptions, ServerAddr};
use switchyard_config::BrokerTlsConfig;
use switchyard_connector::BuildError;
use tracing::{info, warn};

/// Message headers the sink sets from the event's fields (the event's own headers follow
/// them). The source maps them back.
pub mod headers {
    /// JetStream's deduplication id: the event id.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    pub const ID: &str = "switchyard-id";
    pub const SOURCE: &str = "switchyard-source";
    pub const KIND: &str = "switchyard-kind";
    pub const CONTENT_TYPE: &str = "switchyard-content-type";
    /// The event key when it is text that fits a header value.
    pub const KEY: &str = "switchyard-key";
    /// The event key in base64 when it is not.
    pub const KEY_BASE64: &str = "switchyard-key-base64";
    /// Set by the source: how often the server has delivered the message to its consumer.
    pub const DELIVERED: &str = "nats-delivered";
    /// Set by the source: the subject the message was published to.
    pub const SUBJECT: &str = "nats-subject";
    /// The names the sink writes, which it does not copy again from the event's headers.
    pub const ALL: [&str; 7] = [MSG_ID, ID, SOURCE, KIND, CONTENT_TYPE, KEY, KEY_BASE64];
}

/// The servers of `url` (comma-separated), each checked now so that a typo fails the
/// start with the fix instead of a reconnect loop.
pub(crate) fn servers(what: &str, name: &str, url: &str) -> Result<Vec<ServerAddr>, BuildError> {
    url.split(',')
        .map(str::trim)
        .filter(|one| !one.is_empty())
        .map(|one| {
            one.parse::<ServerAddr>().map_err(|e| {
                BuildError::new(format!(
                    "{what} `{name}`: invalid url {:?}: {e}; write e.g. \"nats://127.0.0.1:4222\"",
                    switchyard_config::redact::url(one)
                ))
            })
        })
        .collect()
}

/// Connects to `servers` for the component `name`, in the background: the client is
/// returned at once and (re)connects with backoff for as long as it lives, so a server
/// that is down delays work, it does not fail the start. User and password or a token
/// in the URL are used by async-nats; `tls` files are passed through.
pub(crate) async fn connect(
    what: &'static str,
    name: &str,
    servers: Vec<ServerAddr>,
    tls: &BrokerTlsConfig,
    timeout: Duration,
) -> Result<async_nats::Client, String> {
    let mut options = ConnectOptions::new()
        .name(format!("switchyard-{name}"))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(timeout)
        .request_timeout(Some(timeout));
    if servers.iter().any(|s| s.tls_required()) {
        options = options.require_tls(true);
    }
    if let Some(ca) = &tls.ca {
        options = options.add_root_certificates(ca.into()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        options = options.add_client_certificate(cert.into(), key.into());
    }
    let component = name.to_owned();
    options = options.event_callback(move |event| {
        let component = component.clone();
        async move {
            match event {
                async_nats::Event::Connected => info!(what, name = %component, "connected to nats"),
                async_nats::Event::Disconnected => {
                    warn!(what, name = %component, "disconnected from nats; reconnecting")
                }
                other => warn!(what, name = %component, event = %other, "nats client event"),
            }
        }
    });
    options
        .connect(servers)
        .await
        .map_err(|e| format!("{what} `{name}`: cannot set up the nats client: {e}"))
}
