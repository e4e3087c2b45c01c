//! Name templates of broker sinks, filled in per event: `{source}`, `{kind}`, `{table}`
//! and `{header:NAME}` in a NATS subject, a Redis stream key or a Kafka topic
//! ([`NameTemplate`]); those and `{key}` in a RabbitMQ routing key or an MQTT topic
//! ([`Template`], which also checks every value taken from the event). Both are parsed
//! by the config's one parser (`switchyard_config::name_template`, which validation uses
//! too) and filled in by [`NameTemplate::render_checked`]. Each sink checks what the
//! filled-in name may contain for its broker.

use std::borrow::Cow;

use switchyard_config::name_template::{self, Part, Placeholders};
use switchyard_event::Event;

/// The event header `{table}` comes from. The Postgres CDC source sets it to
/// `schema.table`.
pub const TABLE_HEADER: &str = "pg-table";

/// A parsed name template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameTemplate {
    /// The sink's key the template is the value of, named in errors; `None` for a
    /// [`Template`], whose sinks say what the template is themselves.
    key: Option<&'static str>,
    text: String,
    parts: Vec<Part>,
}

impl NameTemplate {
    /// Parses `text`, the value of the sink's `key` (named in errors), with
    /// [`Placeholders::Names`]. Unknown placeholders (`{key}` among them) and an unclosed
    /// `{` are kept as text (config validation reports them before this runs).
    pub fn parse(key: &'static str, text: &str) -> Self {
        Self {
            key: Some(key),
            text: text.to_owned(),
            parts: name_template::parse_lenient(text, Placeholders::Names),
        }
    }

    /// The name when the template has no placeholder.
    pub fn fixed(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// The template as configured.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The name for `event`, or why it has none (a permanent problem of the event).
    pub fn render(&self, event: &Event) -> Result<String, String> {
        self.render_borrowed(event).map(Cow::into_owned)
    }

    /// [`NameTemplate::render`], borrowing the name when the template has no
    /// placeholder: no allocation per event for a fixed name.
    pub fn render_borrowed(&self, event: &Event) -> Result<Cow<'_, str>, String> {
        if let Some(t) = self.fixed() {
            return Ok(Cow::Borrowed(t));
        }
        self.render_checked(event, |_| Ok(())).map(Cow::Owned)
    }

    /// The name for `event`, or why it has none (a permanent problem of the event).
    /// `allowed` judges each value taken from the event, so an event cannot name
    /// something outside the template's pattern (an MQTT wildcard, a `/` that adds a
    /// level).
    pub fn render_checked(
        &self,
        event: &Event,
        allowed: impl Fn(&str) -> Result<(), String>,
    ) -> Result<String, String> {
        // Made only for an error: rendering is on the hot path of a sink.
        let template = || match self.key {
            Some(key) => format!("{key} {:?}", self.text),
            None => format!("{:?}", self.text),
        };
        let mut out = String::with_capacity(self.text.len() + 16);
        for part in &self.parts {
            let value = match part {
                Part::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Part::Source => event.source.as_str(),
                Part::Kind => event.kind.as_str(),
                Part::Table => event.header(TABLE_HEADER).ok_or_else(|| {
                    format!(
                        "{} uses {{table}} but event {} (source `{}`) has no `{TABLE_HEADER}` header; \
                         {{table}} is for postgres_cdc events, route others to a sink without it",
                        template(), event.id, event.source
                    )
                })?,
                Part::Key => event
                    .key
                    .as_deref()
                    .ok_or_else(|| format!("{} uses {{key}} but event {} has no key", template(), event.id))
                    .and_then(|key| {
                        std::str::from_utf8(key).map_err(|_| {
                            format!("{} uses {{key}} but the key of event {} is not UTF-8", template(), event.id)
                        })
                    })?,
                Part::Header(name) => event.header(name).ok_or_else(|| {
                    format!(
                        "{} uses {{header:{name}}} but event {} (source `{}`) has no `{name}` header; \
                         set it (e.g. in a transform plugin) or route the event to a sink without it",
                        template(), event.id, event.source
                    )
                })?,
            };
            allowed(value)
                .map_err(|why| format!("{} for event {}: {value:?} {why}", template(), event.id))?;
            out.push_str(value);
        }
        Ok(out)
    }
}

/// A RabbitMQ routing key or an MQTT topic: a [`NameTemplate`] with
/// [`Placeholders::WithKey`], parsed strictly, whose every value taken from the event is
/// checked by the sink.
#[derive(Clone, Debug)]
pub struct Template(NameTemplate);

impl Template {
    /// Parses `text` (validated with the config: an error here names the template).
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(Self(NameTemplate {
            key: None,
            text: text.to_owned(),
            parts: name_template::parse_with(text, Placeholders::WithKey)?,
        }))
    }

    /// The name for `event`, or why it has none: [`NameTemplate::render_checked`].
    pub fn render(
        &self,
        event: &Event,
        allowed: impl Fn(&str) -> Result<(), String>,
    ) -> Result<String, String> {
        self.0.render_checked(event, allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(headers: &[(&str, &str)]) -> Event {
        Event {
            id: "e1".into(),
            source: "db".into(),
            kind: "insert".into(),
            key: None,
            payload: vec![],
            content_type: "application/json".into(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            timestamp_ms: 0,
            payload_is_compact_json: false,
        }
    }

    #[test]
    fn fills_in_source_kind_table_and_headers() {
        let t = NameTemplate::parse("subject", "cdc.{source}.{table}.{kind}.{header:t}");
        assert_eq!(t.fixed(), None);
        assert_eq!(
            t.render(&event(&[("pg-table", "public.orders"), ("t", "x")]))
                .unwrap(),
            "cdc.db.public.orders.insert.x"
        );
        assert_eq!(
            NameTemplate::parse("stream", "orders").fixed(),
            Some("orders")
        );
    }

    #[test]
    fn a_missing_header_is_the_events_problem_named_by_the_key() {
        let e = NameTemplate::parse("stream", "s:{header:type}")
            .render(&event(&[]))
            .unwrap_err();
        assert!(e.starts_with("stream \"s:{header:type}\""), "{e}");
        assert!(e.contains("no `type` header"), "{e}");
        let e = NameTemplate::parse("subject", "{table}")
            .render(&event(&[]))
            .unwrap_err();
        assert!(e.contains("no `pg-table` header"), "{e}");
    }

    #[test]
    fn unknown_placeholders_stay_text() {
        let t = NameTemplate::parse("subject", "a{b}{source");
        assert_eq!(t.fixed(), Some("a{b}{source"));
    }
}

#[cfg(test)]
mod routing_tests {
    use super::*;

    fn event() -> Event {
        Event {
            id: "e1".into(),
            source: "api".into(),
            kind: "message".into(),
            key: Some(b"customer-7".to_vec()),
            payload: b"{}".to_vec(),
            content_type: "application/json".into(),
            headers: vec![("tenant".into(), "acme".into())],
            timestamp_ms: 0,
            payload_is_compact_json: true,
        }
    }

    #[test]
    fn placeholders_are_filled_from_the_event() {
        let t = Template::parse("{source}.{kind}.{key}.{header:tenant}").unwrap();
        assert_eq!(
            t.render(&event(), |_| Ok(())).unwrap(),
            "api.message.customer-7.acme"
        );
    }

    #[test]
    fn missing_parts_and_refused_values_are_errors_of_the_event() {
        let t = Template::parse("x/{table}").unwrap();
        assert!(
            t.render(&event(), |_| Ok(()))
                .unwrap_err()
                .contains("pg-table")
        );
        let t = Template::parse("x/{key}").unwrap();
        let refuse = |v: &str| {
            if v.contains('-') {
                Err("has a dash".into())
            } else {
                Ok(())
            }
        };
        assert!(
            t.render(&event(), refuse)
                .unwrap_err()
                .contains("has a dash")
        );
        let mut keyless = event();
        keyless.key = None;
        assert!(
            t.render(&keyless, |_| Ok(()))
                .unwrap_err()
                .contains("no key")
        );
    }
}
