//! Formats a sink may write events in instead of switchyard's own (`format` of a sink).
//!
//! switchyard's own format needs nothing from here: a sink writes the payload (Kafka,
//! webhooks, queues) or the wire form ([`crate::Event::wire`]: files, stdout) as it always
//! has. Every other format is one module with one encoder function that appends the
//! format's JSON of one event to a buffer the sink reuses, and says what it did
//! ([`Body`]). The sink config's enum names the formats and the connector crate maps each
//! to its encoder, so another format is one variant there, one module here and one arm
//! there.
//!
//! Architecture invariant: no IO, no clock. The time a sink processes an event is handed
//! in by the sink.

pub mod cloudevents;
pub mod debezium;

/// What a format made of one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// The format leaves the event as it is (not a Postgres change, for Debezium's): the
    /// sink writes it as with switchyard's own format. Nothing was appended.
    Native,
    /// The format has no form for the event (a schema event, for Debezium's): the sink
    /// writes nothing for it and acknowledges it as skipped. Nothing was appended.
    Skip,
    /// The format's JSON of the event, compact and on one line, was appended to the
    /// buffer. `tombstone`: a Kafka sink follows the message with one of the same key and
    /// a null value (Debezium's tombstone after a delete, for log compaction).
    Written { tombstone: bool },
}
