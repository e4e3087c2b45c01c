//! switchyard's internal queue broker.
//!
//! Queues are durable logs of `switchyard-store` (partitions, group commit, consumer
//! offsets, work groups) opened as a [`QueueHandle`]. This crate holds everything that
//! serves them:
//!
//! - [`queues`]: [`QueueHandle`] and its [`QueueLimits`]: appends, wake-ups, work groups;
//! - [`produce`]: the one produce path of HTTP ingest and the queue API
//!   ([`QueueHandle::produce`]): one idempotency window ([`DedupWindow`]) with a guard
//!   against a key stored twice at once, restored from the log after a restart;
//! - the queue API ([`routes`]: produce, receive, ack, nack, extend, stats, delete group;
//!   `docs/queues.md`), an axum router the runtime merges into its server;
//! - [`dead_letter_loop`] (work-group messages that used up their deliveries go to their
//!   dead-letter queue) and [`group_expiry_loop`] (idle work groups are deleted);
//! - the connectors over switchyard's own logs, each with a `build` function the
//!   runtime's registry calls: the `queue` sink ([`sink`]) and the `queue` and intake
//!   sources ([`feed`]).
//!
//! It knows the connector contracts and never the runtime: what it needs from the
//! process (the config, the open queues) comes in a [`Broker`].

// Handlers return the finished error answer as `Err(Response)`.
#![allow(clippy::result_large_err)]

mod dedup;
pub mod feed;
pub mod produce;
mod queue_api;
pub mod queues;
pub mod sink;

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderMap;
use switchyard_config::Config;
use switchyard_source_http::{AdminToken, ApiError};

pub use dedup::DedupWindow;
pub use produce::{Produced, QueueIntake, Submission, restore_idempotency};
pub use queue_api::{MAX_BATCH, MAX_BODY, dead_letter_loop, group_expiry_loop, routes};
pub use queues::{
    AppendError, GroupError, NOT_BEFORE_HEADER, PRIORITY_HEADER, QueueHandle, QueueLimits, now_ms,
};

/// The consumer group that remembers how far a dead-letter queue was replayed.
pub const REPLAY_GROUP: &str = "replay";

/// Header names a dead-lettered event carries.
pub mod dlq_headers {
    pub const SINK: &str = "x-switchyard-dead-letter-sink";
    pub const PIPELINE: &str = "x-switchyard-dead-letter-pipeline";
    pub const ERROR: &str = "x-switchyard-dead-letter-error";
    pub const ATTEMPTS: &str = "x-switchyard-dead-letter-attempts";
    pub const AT_MS: &str = "x-switchyard-dead-letter-at-ms";
    pub const PLUGIN: &str = "x-switchyard-dead-letter-plugin";
    /// The queue a work-group message came from (replay appends it back there).
    pub const QUEUE: &str = "x-switchyard-dead-letter-queue";
    pub const GROUP: &str = "x-switchyard-dead-letter-group";
}

/// What the queue API and the broker's loops work with: the config and every open
/// queue. Built once by the runtime at start.
pub struct Broker {
    pub config: Config,
    /// Declared and dead-letter queues, by name.
    pub queues: BTreeMap<String, Arc<QueueHandle>>,
}

impl Broker {
    /// Any queue by its user-facing name (declared or dead-letter).
    pub fn queue(&self, name: &str) -> Option<&Arc<QueueHandle>> {
        self.queues.get(name)
    }
}

/// Checks the admin bearer token (`server.admin_token`, which also guards the queue
/// API); `Err` is the answer to send.
pub fn authorize(broker: &Broker, headers: &HeaderMap) -> Result<(), ApiError> {
    switchyard_source_http::authorize_admin(broker.admin_token(), headers)
}

impl AdminToken for Broker {
    fn admin_token(&self) -> Option<&str> {
        self.config.server.admin_token.as_deref()
    }
}

/// The queue called `name`, or 404 naming the queues there are.
pub fn find_queue(broker: &Broker, name: &str) -> Result<Arc<QueueHandle>, ApiError> {
    broker.queue(name).cloned().ok_or_else(|| {
        let known: Vec<_> = broker.queues.keys().map(String::as_str).collect();
        ApiError::not_found(format!(
            "no queue named `{name}`; queues: {}",
            known.join(", ")
        ))
    })
}
