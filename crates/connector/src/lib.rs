//! The seam between switchyard's runtime and its integrations.
//!
//! Every source and sink is a connector: a crate (or a module) that implements one of
//! the contracts below and exposes a `build(name, &config, &ctx)` function. The runtime
//! registers each connector with one line (`crates/runtime/src/connectors.rs`) and
//! gives every one of them the same delivery contract for free: ordering lanes,
//! retries with backoff, dead letters, acknowledgements and checkpoints.
//!
//! - [`Sink`]: makes **one attempt** to deliver a batch and answers an [`Outcome`]
//!   per event; the runtime retries by the sink's [`RetryPolicy`].
//! - [`Source`] and [`Feed`]: a source opens one or more feeds per pipeline; a feed
//!   yields [`Batch`]es of events with increasing positions and turns the pipeline's
//!   low watermark into its own checkpoint ([`Feed::commit`]). A [`FeedError`] says
//!   whether waiting can help.
//! - [`Intake`]: where a push source (HTTP ingest) makes events durable before it
//!   answers its client, storing an idempotency key's events at most once.
//! - [`BuildContext`]: what a connector may use while it is built.
//! - [`Backoff`] and [`RetryPolicy`]: the one backoff of the project (exponential,
//!   equal jitter, capped), used by sink retries and by sources that reconnect.
//! - [`format::Formatter`]: a sink's `format`, mapped to its encoder (Debezium's change
//!   events); every sink with a body writes through it.
//! - [`template::NameTemplate`]: a broker sink's per-event name (a NATS subject, a Redis
//!   stream key, a Kafka topic) from `{source}`, `{kind}`, `{table}` and `{header:NAME}`.
//! - [`template::Template`]: a broker sink's routing key or topic, with `{key}` too, each
//!   value judged by the sink. Both parse with `switchyard_config::name_template` (as
//!   validation does) and render with one function.
//!
//! The contracts are synchronous traits returning boxed futures, so they can live
//! behind `dyn` and the crate needs no async runtime. Architecture invariant: this
//! crate depends on no async runtime, wasmtime or rdkafka; connector crates depend on
//! it and never on the runtime.

pub mod backoff;
mod context;
mod feed;
pub mod format;
mod intake;
mod sink;
pub mod template;

use std::future::Future;
use std::pin::Pin;

pub use backoff::{Backoff, MAX_RETRY_AFTER, RetryPolicy};
pub use context::{BuildContext, BuildError};
pub use feed::{Batch, Feed, FeedError, Position, Source};
pub use intake::{Appended, IDEMPOTENCY_HEADER, Intake, IntakeError, MAX_IDEMPOTENCY_KEY, Seen};
pub use sink::{Outcome, Sink};

/// A boxed future, so the contracts can live behind `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
