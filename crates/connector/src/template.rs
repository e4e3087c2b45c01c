//! Name templates of broker sinks (`switchyard_config::name_template`) filled in per
//! event.

use switchyard_config::name_template::{self, Part};
use switchyard_event::Event;

/// The event header `{table}` comes from: `schema.table` of a Postgres change.
pub const TABLE_HEADER: &str = "pg-table";

/// A parsed template (a routing key, a topic).
#[derive(Clone, Debug)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
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
                Part::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Part::Source => event.source.as_str(),
                Part::Kind => event.kind.as_str(),
                Part::Table => event.header(TABLE_HEADER).ok_or_else(|| {
                    format!(
                        "{:?} uses {{table}} but event {} (source `{}`) has no `{TABLE_HEADER}` header; \
                         {{table}} is for postgres_cdc events, route others to a sink without it",
                        self.text, event.id, event.source
                    )
                })?,
                Part::Key => event
                    .key
                    .as_deref()
                    .ok_or_else(|| format!("{:?} uses {{key}} but event {} has no key", self.text, event.id))
                    .and_then(|key| {
                        std::str::from_utf8(key).map_err(|_| {
                            format!("{:?} uses {{key}} but the key of event {} is not UTF-8", self.text, event.id)
                        })
                    })?,
                Part::Header(name) => event.header(name).ok_or_else(|| {
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
mod tests {
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
