//! A sink's `format`, ready to write events: which encoder makes each event's body, and
//! what the encoders need from the rest of the config.
//!
//! Every sink with a body (webhook, queue, stdout, file, Kafka) holds a [`Formatter`].
//! With `format = "switchyard"` ([`Formatter::is_native`]) a sink writes every event as
//! it always has and never calls [`Formatter::write`]: the default path gains no work per
//! event. With another format a sink calls it once per event, with a buffer it reuses
//! and the time read once per batch ([`now_us`]), and writes what it answers:
//! [`Body::Native`] — the event as with switchyard's format; [`Body::Skip`] — nothing,
//! answering [`crate::Outcome::Skipped`]; [`Body::Written`] — the bytes appended to the
//! buffer (as `application/json`), followed in Kafka by a tombstone when asked.
//!
//! `format = "cloudevents"` has two modes (`cloudevents_mode`): structured is a body of
//! its own like any format ([`Formatter::write`], content type
//! [`Formatter::written_content_type`]); binary keeps the payload as the body and puts the
//! attributes in headers, which a sink whose protocol has headers asks for first
//! ([`Formatter::binary_headers`], `Some` only in binary mode). A sink without headers
//! (stdout, file, queue) never asks: its CloudEvents are structured.
//!
//! A new format is a variant of `switchyard_config::SinkFormat`, an encoder in
//! `switchyard_event::formats` and one arm in [`Formatter::write`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use switchyard_config::{CloudEventsMode, Config, SinkFormat, SourceConfig, postgres_dsn};
use switchyard_event::Event;
pub use switchyard_event::formats::Body;
pub use switchyard_event::formats::cloudevents::Binding;
use switchyard_event::formats::{cloudevents, debezium};

/// A sink's `format` with what its encoder needs.
#[derive(Clone, Debug, Default)]
pub struct Formatter {
    format: SinkFormat,
    cloudevents: CloudEventsMode,
    /// The database each `postgres_cdc` source reads, by source name (Debezium's
    /// `source.db`).
    databases: Arc<BTreeMap<String, String>>,
    /// The names of the `postgres_cdc` sources (CloudEvents' `type` of their events).
    cdc_sources: Arc<BTreeSet<String>>,
}

impl Formatter {
    /// `format` knowing nothing of the sources (Debezium's `source.db` is null; changes
    /// are recognised by their kind): for a sink built outside a config. CloudEvents in
    /// binary mode.
    pub fn new(format: SinkFormat) -> Self {
        Self {
            format,
            cloudevents: CloudEventsMode::Binary,
            databases: Arc::default(),
            cdc_sources: Arc::default(),
        }
    }

    /// The formatter with CloudEvents written in `mode` (the sink's `cloudevents_mode`).
    pub fn with_cloudevents_mode(self, mode: CloudEventsMode) -> Self {
        Self {
            cloudevents: mode,
            ..self
        }
    }

    /// `format` for a sink of `config`: knows the database of each `postgres_cdc` source
    /// (from its `dsn`).
    pub fn for_config(format: SinkFormat, config: &Config) -> Self {
        if format == SinkFormat::Switchyard {
            return Self::new(format);
        }
        let cdc = || {
            config
                .sources
                .iter()
                .filter_map(|(name, source)| match source {
                    SourceConfig::PostgresCdc(pg) => Some((name, pg)),
                    SourceConfig::Http(_)
                    | SourceConfig::Queue(_)
                    | SourceConfig::Kafka(_)
                    | SourceConfig::Nats(_)
                    | SourceConfig::Redis(_)
                    | SourceConfig::Rabbitmq(_)
                    | SourceConfig::Mqtt(_) => None,
                })
        };
        let databases = cdc()
            .filter_map(|(name, pg)| postgres_dsn::database(&pg.dsn).map(|db| (name.clone(), db)))
            .collect();
        Self {
            format,
            cloudevents: CloudEventsMode::Binary,
            databases: Arc::new(databases),
            cdc_sources: Arc::new(cdc().map(|(name, _)| name.clone()).collect()),
        }
    }

    pub fn format(&self) -> SinkFormat {
        self.format
    }

    /// Whether every event is written as switchyard's own format writes it: the sink
    /// need not call [`Formatter::write`].
    pub fn is_native(&self) -> bool {
        self.format == SinkFormat::Switchyard
    }

    /// The content type of what [`Formatter::write`] appends ([`Body::Written`]).
    pub fn written_content_type(&self) -> &'static str {
        match self.format {
            SinkFormat::CloudEvents => cloudevents::STRUCTURED_CONTENT_TYPE,
            SinkFormat::Switchyard | SinkFormat::Debezium => "application/json",
        }
    }

    /// With `format = "cloudevents"` in binary mode: the attribute headers of `event` in
    /// `binding`; the sink sends the payload as it is, with the event's content type, and
    /// does not call [`Formatter::write`]. `None` in every other format and mode.
    pub fn binary_headers(&self, event: &Event, binding: Binding) -> Option<Vec<(String, String)>> {
        (self.format == SinkFormat::CloudEvents && self.cloudevents == CloudEventsMode::Binary)
            .then(|| cloudevents::binary_headers(event, &self.cloudevents_context(event), binding))
    }

    fn cloudevents_context(&self, event: &Event) -> cloudevents::Context {
        cloudevents::Context {
            from_cdc: self.cdc_sources.contains(event.source.as_str()),
        }
    }

    /// Appends the body of `event` in this format to `out` when the format has one of its
    /// own ([`Body::Written`]); `now_us` is when the sink processes it ([`now_us`]).
    /// CloudEvents are written in structured mode here, whatever the sink's mode.
    pub fn write(&self, event: &Event, now_us: u64, out: &mut Vec<u8>) -> Body {
        match self.format {
            SinkFormat::Switchyard => Body::Native,
            SinkFormat::CloudEvents => {
                cloudevents::write_structured(event, &self.cloudevents_context(event), out);
                Body::Written { tombstone: false }
            }
            SinkFormat::Debezium => {
                let cx = debezium::Context {
                    database: self
                        .databases
                        .get(event.source.as_str())
                        .map(String::as_str),
                    now_us,
                };
                debezium::write(event, &cx, out)
            }
        }
    }
}

/// Microseconds since the Unix epoch: when a sink processes a batch (0 for a clock
/// before 1970).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(source: &str, kind: &str, payload: &str) -> Event {
        Event {
            id: "0/1/0".into(),
            source: source.into(),
            kind: kind.into(),
            key: Some(br#"{"id":1}"#.to_vec()),
            payload: payload.as_bytes().to_vec(),
            content_type: "application/json".into(),
            headers: Vec::new(),
            timestamp_ms: 0,
            payload_is_compact_json: true,
        }
    }

    const INSERT: &str = r#"{"op":"insert","schema":"public","table":"t","lsn":"0/1","xid":1,"commit_ts":"1970-01-01T00:00:00Z","key":{"id":1},"before":null,"after":{"id":1}}"#;

    #[test]
    fn switchyards_format_writes_nothing_of_its_own() {
        let formatter = Formatter::new(SinkFormat::Switchyard);
        assert!(formatter.is_native());
        let mut out = Vec::new();
        assert_eq!(
            formatter.write(&event("db", "insert", INSERT), 1, &mut out),
            Body::Native
        );
        assert!(out.is_empty());
    }

    #[test]
    fn debeziums_format_names_the_database_of_the_events_source() {
        let config = switchyard_config::load_str(
            r#"
[sources.db]
type = "postgres_cdc"
dsn = "postgres://u:secret@h:5432/orders"
tables = ["public.t"]
[sources.api]
type = "http"
[pipelines.cdc]
from = ["db"]
to = ["out"]
[pipelines.api]
from = ["api"]
to = ["out"]
[sinks.out]
type = "stdout"
format = "debezium"
"#,
            false,
        )
        .expect("a valid config");
        let formatter = Formatter::for_config(SinkFormat::Debezium, &config);
        assert!(!formatter.is_native());
        assert_eq!(formatter.format(), SinkFormat::Debezium);
        let mut out = Vec::new();
        let body = formatter.write(&event("db", "insert", INSERT), 2_000, &mut out);
        assert_eq!(body, Body::Written { tombstone: false });
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["source"]["db"], "orders");
        assert_eq!(value["source"]["name"], "db");
        assert_eq!(value["ts_ms"], 2);
        assert_eq!(value["op"], "c");

        out.clear();
        let relayed = event("elsewhere", "insert", INSERT);
        formatter.write(&relayed, 0, &mut out);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["source"]["db"], serde_json::Value::Null);

        out.clear();
        let message = event("api", "message", r#"{"n":1}"#);
        assert_eq!(formatter.write(&message, 0, &mut out), Body::Native);
        assert!(out.is_empty());
    }
}
