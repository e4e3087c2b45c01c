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
//! A new format is a variant of `switchyard_config::SinkFormat`, an encoder in
//! `switchyard_event::formats` and one arm in [`Formatter::write`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use switchyard_config::{Config, SinkFormat, SourceConfig, postgres_dsn};
use switchyard_event::Event;
pub use switchyard_event::formats::Body;
use switchyard_event::formats::debezium;

/// The content type of what a format writes ([`Body::Written`]).
pub const WRITTEN_CONTENT_TYPE: &str = "application/json";

/// A sink's `format` with what its encoder needs.
#[derive(Clone, Debug, Default)]
pub struct Formatter {
    format: SinkFormat,
    /// The database each `postgres_cdc` source reads, by source name (Debezium's
    /// `source.db`).
    databases: Arc<BTreeMap<String, String>>,
}

impl Formatter {
    /// `format` knowing nothing of the sources (Debezium's `source.db` is null): for a sink
    /// built outside a config.
    pub fn new(format: SinkFormat) -> Self {
        Self {
            format,
            databases: Arc::default(),
        }
    }

    /// `format` for a sink of `config`: knows the database of each `postgres_cdc` source
    /// (from its `dsn`).
    pub fn for_config(format: SinkFormat, config: &Config) -> Self {
        if format == SinkFormat::Switchyard {
            return Self::new(format);
        }
        let databases = config
            .sources
            .iter()
            .filter_map(|(name, source)| match source {
                SourceConfig::PostgresCdc(pg) => {
                    postgres_dsn::database(&pg.dsn).map(|db| (name.clone(), db))
                }
                SourceConfig::Http(_)
                | SourceConfig::Queue(_)
                | SourceConfig::Kafka(_)
                | SourceConfig::Rabbitmq(_)
                | SourceConfig::Mqtt(_) => None,
            })
            .collect();
        Self {
            format,
            databases: Arc::new(databases),
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

    /// Appends the body of `event` in this format to `out` when the format has one of its
    /// own ([`Body::Written`]); `now_us` is when the sink processes it ([`now_us`]).
    pub fn write(&self, event: &Event, now_us: u64, out: &mut Vec<u8>) -> Body {
        match self.format {
            SinkFormat::Switchyard => Body::Native,
            SinkFormat::Debezium => {
                let cx = debezium::Context {
                    database: self.databases.get(&event.source).map(String::as_str),
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
