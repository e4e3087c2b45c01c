//! Name templates of broker sinks: `{source}`, `{kind}`, `{table}` and `{header:NAME}`
//! filled in per event (a NATS subject, a Redis stream key). Each sink checks what the
//! filled-in name may contain for its broker.

use switchyard_event::Event;

/// The event header `{table}` comes from. The Postgres CDC source sets it to
/// `schema.table`.
pub const TABLE_HEADER: &str = "pg-table";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Source,
    Kind,
    Table,
    /// The value of the event's first header of this name.
    Header(String),
}

/// A parsed name template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameTemplate {
    key: &'static str,
    text: String,
    parts: Vec<Part>,
}

impl NameTemplate {
    /// Parses `text`, the value of the sink's `key` (named in errors). Unknown
    /// placeholders and an unclosed `{` are kept as text (config validation reports them
    /// before this runs).
    pub fn parse(key: &'static str, text: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut literal = String::new();
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            let after = &rest[open..];
            let part = after.find('}').and_then(|close| match &after[1..close] {
                "source" => Some((Part::Source, close)),
                "kind" => Some((Part::Kind, close)),
                "table" => Some((Part::Table, close)),
                name => name
                    .strip_prefix(switchyard_config::KAFKA_TOPIC_HEADER_PLACEHOLDER)
                    .filter(|header| !header.is_empty())
                    .map(|header| (Part::Header(header.to_owned()), close)),
            });
            match part {
                Some((part, close)) => {
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(part);
                    rest = &after[close + 1..];
                }
                None => {
                    literal.push('{');
                    rest = &after[1..];
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Self {
            key,
            text: text.to_owned(),
            parts,
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
        if let Some(t) = self.fixed() {
            return Ok(t.to_owned());
        }
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Source => out.push_str(&event.source),
                Part::Kind => out.push_str(&event.kind),
                Part::Table => match event.header(TABLE_HEADER) {
                    Some(table) => out.push_str(table),
                    None => {
                        return Err(format!(
                            "{} {:?} uses {{table}} but event {} (source `{}`) has no `{TABLE_HEADER}` header; \
                             {{table}} is for postgres_cdc events, route others to a sink without it",
                            self.key, self.text, event.id, event.source
                        ));
                    }
                },
                Part::Header(name) => match event.header(name) {
                    Some(value) => out.push_str(value),
                    None => {
                        return Err(format!(
                            "{} {:?} uses {{header:{name}}} but event {} (source `{}`) has no `{name}` header; \
                             set it (e.g. in a transform plugin) or route the event to a sink without it",
                            self.key, self.text, event.id, event.source
                        ));
                    }
                },
            }
        }
        Ok(out)
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

// Templates parsed by the config (`switchyard_config::name_template`, with `{key}`), for
// the RabbitMQ routing key and the MQTT topic, with a check of every value taken from
// the event.

use switchyard_config::name_template::{self, Part as ConfigPart};

/// A parsed template (a routing key, a topic).
#[derive(Clone, Debug)]
pub struct Template {
    text: String,
    parts: Vec<ConfigPart>,
}

impl Template {
    /// Parses `text` (validated with the config: an error here names the template).
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(Self {
            text: text.to_owned(),
            parts: name_template::parse(text)?,
        })
    }

    /// The name for `event`, or why it has none (a permanent problem of the event).
    /// `allowed` judges each value taken from the event, so an event cannot name
    /// something outside the template's pattern (an MQTT wildcard, a `/` that adds a
    /// level).
    pub fn render(
        &self,
        event: &Event,
        allowed: impl Fn(&str) -> Result<(), String>,
    ) -> Result<String, String> {
        let mut out = String::with_capacity(self.text.len() + 16);
        for part in &self.parts {
            let value = match part {
                ConfigPart::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                ConfigPart::Source => event.source.as_str(),
                ConfigPart::Kind => event.kind.as_str(),
                ConfigPart::Table => event.header(TABLE_HEADER).ok_or_else(|| {
                    format!(
                        "{:?} uses {{table}} but event {} (source `{}`) has no `{TABLE_HEADER}` header; \
                         {{table}} is for postgres_cdc events, route others to a sink without it",
                        self.text, event.id, event.source
                    )
                })?,
                ConfigPart::Key => event
                    .key
                    .as_deref()
                    .ok_or_else(|| format!("{:?} uses {{key}} but event {} has no key", self.text, event.id))
                    .and_then(|key| {
                        std::str::from_utf8(key).map_err(|_| {
                            format!("{:?} uses {{key}} but the key of event {} is not UTF-8", self.text, event.id)
                        })
                    })?,
                ConfigPart::Header(name) => event.header(name).ok_or_else(|| {
                    format!(
                        "{:?} uses {{header:{name}}} but event {} (source `{}`) has no `{name}` header; \
                         set it (e.g. in a transform plugin) or route the event to a sink without it",
                        self.text, event.id, event.source
                    )
                })?,
            };
            allowed(value).map_err(|why| {
                format!("{:?} for event {}: {value:?} {why}", self.text, event.id)
            })?;
            out.push_str(value);
        }
        Ok(out)
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
