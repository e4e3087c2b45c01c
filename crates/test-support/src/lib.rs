//! Helpers for switchyard's tests.
//!
//! * [`WebhookReceiver`] — a local HTTP server that records what it is sent and can be
//!   told, while running, to fail, throttle, hang or drop connections.
//! * [`verify_standard_webhook`] — checks a Standard Webhooks signature. It is written
//!   independently of the webhook sink's signer so that tests cross-check the two.
//! * [`Switchyard`] — the real binary as a child process: start on a fresh config and
//!   data directory, kill -9, restart, SIGTERM.
//! * [`PgCluster`] — a throwaway Postgres cluster with `wal_level=logical` per test.
//! * [`kafka`] — a tansu Kafka-protocol broker per test binary (or per test, for fault
//!   tests), topic creation, a producer and a reader of topics.
//! * [`RabbitNode`] — a private RabbitMQ node on free ports with its own database, for
//!   tests that stop and restart the broker.
//! * [`Certificates`] — a throwaway CA and server certificate (and a wrong CA) for the
//!   TLS tests, made with `openssl`.
//! * [`checker`] — compares acknowledged events with deliveries: lost, duplicated,
//!   reordered.

pub mod certs;
pub mod checker;
pub mod kafka;
mod postgres;
mod process;
mod rabbitmq;
mod receiver;
mod verify;

pub use certs::Certificates;
pub use checker::{Report, Tracked, check};
pub use process::{
    Options, Switchyard, free_port, http_status, switchyard_bin, switchyard_command, tail,
};

pub use postgres::{PgCluster, pg_bin_dir};
pub use rabbitmq::{RabbitNode, rabbitmq_server_bin};
pub use receiver::{Behaviour, ReceivedRequest, WebhookReceiver};
pub use verify::{verify_standard_webhook, verify_standard_webhook_at};
