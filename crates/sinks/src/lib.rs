//! Sinks deliver events to the outside world.
//!
//! A [`Sink`] makes **one attempt** to deliver a batch and reports an [`Outcome`] per
//! event. Everything around that — ordering per key, concurrency lanes, retries with
//! backoff ([`retry::RetryPolicy`]), dead letters and acknowledgements — is the
//! runtime's job, so every sink gets the delivery contract (`docs/design.md`) for free.

pub mod file;
pub mod outbound;
pub mod retry;
pub mod stdout;
pub mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use switchyard_event::Event;

pub use file::FileSink;
pub use retry::RetryPolicy;
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

/// A boxed future, so sinks can live behind `dyn Sink`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What happened to one event in one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The destination has it durably (2xx, fsync'd, appended). The event may be acked.
    Delivered,
    /// A transient failure (timeout, connection error, 408/429/5xx): try again later,
    /// not before `retry_after` when the destination said so.
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// A definite failure (other 4xx, an event the destination can never take):
    /// retrying cannot help; the event goes to the dead-letter queue.
    Permanent { error: String },
}

/// A destination for events.
///
/// Contract:
/// * `deliver` gets events of one ordering lane, in source order, and returns exactly
///   one [`Outcome`] per event, in the same order.
/// * `Delivered` means durable at the destination; returning it early breaks
///   at-least-once.
/// * `deliver` must not retry by itself and must finish in bounded time (sinks apply
///   their own timeouts).
pub trait Sink: Send + Sync + 'static {
    /// One delivery attempt of `batch`.
    fn deliver<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>>;

    /// Most events handed to one `deliver` call.
    fn max_batch(&self) -> usize {
        1
    }

    /// Independent ordering lanes delivering at the same time. Events of one key always
    /// use the same lane.
    fn concurrency(&self) -> usize {
        1
    }

    /// How failed attempts are retried.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }
}
