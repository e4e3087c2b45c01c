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
