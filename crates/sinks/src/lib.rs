//! Sinks that deliver events to the outside world: webhook, stdout and file; and null,
//! which discards them.
//!
//! Each implements the [`switchyard_connector::Sink`] contract (one attempt, one
//! [`switchyard_connector::Outcome`] per event) and has a `build(name, &config, &ctx)`
//! the runtime registers. Ordering lanes, retries, dead letters and acknowledgements
//! are the runtime's job, so every sink gets the delivery contract (`docs/design.md`)
//! for free.

pub mod file;
pub mod null;
pub mod outbound;
pub mod stdout;
pub mod webhook;

pub use file::FileSink;
pub use stdout::StdoutSink;
pub use webhook::WebhookSink;

/// Why a sink could not be built from its configuration. Delivery failures are not
/// errors but [`Outcome`]s.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(
        "sink `{sink}`: url `{url}` is not usable ({reason}); set `url` to an absolute http:// or https:// address"
    )]
    InvalidUrl {
        sink: String,
        url: String,
        reason: String,
    },
    #[error(
        "sink `{sink}`: `secret` is not a Standard Webhooks secret; expected \"whsec_\" followed by a base64 key (e.g. \"whsec_\" + `openssl rand -base64 32`)"
    )]
    InvalidSecret { sink: String },
    #[error(
        "sink `{sink}`: header `{name}` cannot be sent ({reason}); use a token name and a visible-ASCII value"
    )]
    InvalidHeader {
        sink: String,
        name: String,
        reason: String,
    },
    #[error("sink `{sink}`: `{key}` {problem}")]
    InvalidSetting {
        sink: String,
        key: &'static str,
        problem: &'static str,
    },
    /// A webhook to a link-local or cloud metadata address without `allow_private`:
    /// at start for an address in `url`, at connect time for what a host name resolves
    /// to (then as a permanent outcome).
    #[error(
        "sinks.{sink}.url: {target} is {class}; webhooks to it are refused unless the sink sets allow_private = true"
    )]
    RefusedAddress {
        sink: String,
        target: String,
        class: &'static str,
    },
    #[error("sink `{sink}`: cannot set up the HTTP client: {source}")]
    HttpClient {
        sink: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "sink `{sink}`: cannot open `{path}` for appending: {source}; check that the path is a file in a writable directory"
    )]
    File {
        sink: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}
