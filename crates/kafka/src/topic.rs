//! Topic templates: the connectors' name templates (`{source}`, `{kind}`, `{table}` and
//! `{header:NAME}`, `switchyard_connector::template`), with what Kafka accepts as a topic
//! name checked on every name filled in.

use switchyard_connector::template::NameTemplate;
use switchyard_event::Event;

/// A parsed `topic` setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicTemplate(NameTemplate);

impl TopicTemplate {
    /// Parses `text`. Unknown placeholders and an unclosed `{` are kept as text (config
    /// validation reports them before this runs).
    pub fn parse(text: &str) -> Self {
        Self(NameTemplate::parse("topic", text))
    }

    /// The topic when it has no placeholder.
    pub fn fixed(&self) -> Option<&str> {
        self.0.fixed()
    }

    /// The topic of `event`, or why it has none (a permanent problem of the event).
    pub fn render(&self, event: &Event) -> Result<String, String> {
        let out = self.0.render(event)?;
        let text = self.0.text();
        if out.is_empty() {
            return Err(format!(
                "topic {text:?} gives an empty topic name for event {}",
                event.id
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
                "topic {text:?} gives {:?} for event {}, which is not a Kafka topic name (1 to \
                 249 of A-Z a-z 0-9 . _ -)",
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
