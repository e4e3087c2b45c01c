//! The intake contract: where a push source makes events durable.

use std::time::Duration;

use switchyard_event::Event;

use crate::BoxFuture;

/// Why a durable append did not happen. In every case nothing was appended.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// Too many appends in flight: try again shortly (HTTP 429).
    #[error("too many writes in flight; retry after {}s", retry_after.as_secs())]
    Busy { retry_after: Duration },
    /// The destination holds its `max_bytes` of unconsumed data (HTTP 429).
    #[error("{0}; retry later or raise max_bytes")]
    Full(String),
    /// The disk is full (HTTP 507): nothing was written; it recovers when space frees.
    #[error("the disk is full: {0}")]
    NoSpace(String),
    /// The destination refuses writes (HTTP 503), e.g. after an fsync failure: a
    /// restart is needed.
    #[error("{0}")]
    Unavailable(String),
}

/// The durable destination of events a push source (HTTP ingest) receives.
///
/// Contract: `append` is all or nothing. When it answers `Ok` every event is durable
/// (fsync'd) and will be read by every pipeline of the source; only then may the source
/// acknowledge its client (a 2xx). When it answers `Err` none of them was appended.
pub trait Intake: Send + Sync + 'static {
    /// Appends all `events` durably, or none of them.
    fn append(&self, events: Vec<Event>) -> BoxFuture<'_, Result<(), IntakeError>>;
}
