//! Topic templates: `{source}`, `{kind}`, `{table}` and `{header:NAME}` filled in per
//! event.

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

/// A parsed `topic` setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicTemplate {
    text: String,
    parts: Vec<Part>,
}

impl TopicTemplate {
    /// Parses `text`. Unknown placeholders and an unclosed `{` are kept as text (config
    /// validation reports them before this runs).
    pub fn parse(text: &str) -> Self {
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
            text: text.to_owned(),
            parts,
        }
    }

    /// The topic when it has no placeholder.
    pub fn fixed(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// The topic of `event`, or why it has none (a permanent problem of the event).
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
                            "topic {:?} uses {{table}} but event {} (source `{}`) has no `{TABLE_HEADER}` header; \
                             {{table}} is for postgres_cdc events, route others to a sink without it",
                            self.text, event.id, event.source
                        ));
                    }
                },
                Part::Header(name) => match event.header(name) {
                    Some(value) => out.push_str(value),
                    None => {
                        return Err(format!(
                            "topic {:?} uses {{header:{name}}} but event {} (source `{}`) has no `{name}` header; \
                             set it (e.g. in a transform plugin) or route the event to a sink without it",
                            self.text, event.id, event.source
                        ));
                    }
                },
            }
        }
        if out.is_empty() {
            return Err(format!(
                "topic {:?} gives an empty topic name for event {}",
                self.text, event.id
            ));
        }
        // Parts of the name come from the event (a header may come from a client): only
        // what Kafka accepts as a topic name, so no event can name a topic outside the
        // template's pattern or make the broker refuse it later.
        if out.len() > 249
            || !out
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            || out == "."
            || out == ".."
        {
            return Err(format!(
                "topic {:?} gives {:?} for event {}, which is not a Kafka topic name (1 to \
                 249 of A-Z a-z 0-9 . _ -)",
                self.text,
                out.chars().take(80).collect::<String>(),
                event.id
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_from_an_event_must_be_a_kafka_topic_name() {
        let template = TopicTemplate::parse("events.{header:type}");
        for bad in ["a/b", "x y", "é", &"x".repeat(250)] {
            let e = event(&[("type", bad)]);
            assert!(template.render(&e).is_err(), "{bad}");
        }
        assert_eq!(
            template.render(&event(&[("type", "order-1.v2")])).unwrap(),
            "events.order-1.v2"
        );
    }

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
    fn fills_in_source_kind_and_table() {
        let t = TopicTemplate::parse("cdc.{source}.{table}.{kind}");
        assert_eq!(t.fixed(), None);
        assert_eq!(
            t.render(&event(&[("pg-table", "public.orders")])).unwrap(),
            "cdc.db.public.orders.insert"
        );
        assert_eq!(TopicTemplate::parse("orders").fixed(), Some("orders"));
    }

    #[test]
    fn a_missing_table_header_is_the_events_problem() {
        let e = TopicTemplate::parse("{table}")
            .render(&event(&[]))
            .unwrap_err();
        assert!(e.contains("no `pg-table` header"), "{e}");
    }

    #[test]
    fn unknown_placeholders_stay_text() {
        let t = TopicTemplate::parse("a{b}{source");
        assert_eq!(t.fixed(), Some("a{b}{source"));
        assert_eq!(
            TopicTemplate::parse("x{header:}").fixed(),
            Some("x{header:}")
        );
    }

    #[test]
    fn a_header_names_the_topic() {
        let t = TopicTemplate::parse("outbox.event.{header:aggregatetype}");
        assert_eq!(t.fixed(), None);
        let e = event(&[("aggregatetype", "Order"), ("aggregatetype", "Other")]);
        assert_eq!(t.render(&e).unwrap(), "outbox.event.Order");
        let missing = t
            .render(&event(&[("pg-table", "public.outbox")]))
            .unwrap_err();
        assert!(
            missing.contains("has no `aggregatetype` header"),
            "{missing}"
        );
    }
}
