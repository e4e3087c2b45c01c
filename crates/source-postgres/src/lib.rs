//! The `postgres_cdc` source: every committed change of the chosen tables, streamed from
//! a logical replication slot with the pgoutput plugin.
//!
//! * [`pgoutput`] decodes the replication messages (pure);
//! * [`values`] maps Postgres text values to JSON (pure);
//! * [`change`] builds the CDC event payloads and ids (pure);
//! * [`setup`] checks the database and creates the publication and slot;
//! * [`leader`] elects one reader per slot among instances: an advisory lock in the
//!   source database;
//! * [`state`] keeps snapshot progress in the source database (`switchyard.cdc_state`)
//!   and the data directory;
//! * [`tls`] connects both connections with the dsn's `sslmode`/`sslrootcert`;
//! * [`replication`] speaks the streaming replication protocol (startup, auth,
//!   CopyData both ways, status updates);
//! * [`stream`] runs the replication session and hands events with positions to the
//!   runtime, confirming the slot's flush LSN only up to fully acknowledged commits;
//!   large transactions streamed before their commit wait in memory or in a spill file
//!   until it ([`stream`]'s `spill` module);
//! * [`source`] is the connector the runtime registers ([`source::build`]): a
//!   `switchyard_connector::Source` whose feed is the replication stream.

pub mod change;
pub mod leader;
pub mod pgoutput;
pub mod replication;
pub mod setup;
pub mod slots;
pub mod source;
pub mod state;
pub mod stream;
pub mod tls;
pub mod values;

pub use setup::CdcError;
pub use source::{PostgresSource, build};
pub use stream::{CdcHandle, Command, SnapshotAction, Status, StatusView, start};
