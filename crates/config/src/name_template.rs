//! Name templates of broker sinks (a RabbitMQ `routing_key`, an MQTT `topic`): text with
//! `{source}`, `{kind}`, `{table}`, `{key}` and `{header:NAME}` filled in per event.
//!
//! Parsing is here, so `validate` reports a bad template with its line; filling one in
//! needs an event and lives with the sinks (`switchyard_connector::template`).

/// One piece of a parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Source,
    Kind,
    /// `schema.table` of a Postgres change (its `pg-table` header).
    Table,
    /// The event's key, as UTF-8.
    Key,
    /// The value of the event's first header of this name.
    Header(String),
}

/// The placeholders a name template may use, as a user reads them.
pub const PLACEHOLDERS: &str = "{source}, {kind}, {table}, {key} and {header:NAME}";

/// The parts of `text`, or what is wrong with it (an unknown placeholder, an unclosed
/// `{`, `{header:}` without a name), said so that the user can fix it.
pub fn parse(text: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        literal.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            return Err(format!(
                "{text:?} has an unclosed `{{`; placeholders are {PLACEHOLDERS}"
            ));
        };
        let name = &rest[open + 1..open + close];
        let part = match name {
            "source" => Part::Source,
            "kind" => Part::Kind,
            "table" => Part::Table,
            "key" => Part::Key,
            other => match other.strip_prefix("header:") {
                Some(header) if !header.trim().is_empty() => Part::Header(header.to_owned()),
                Some(_) => {
                    return Err(format!(
                        "{text:?} uses {{header:}} without a header name; write e.g. {{header:tenant}}"
                    ));
                }
                None => {
                    return Err(format!(
                        "{text:?} uses unknown placeholder {{{other}}}; use {PLACEHOLDERS}"
                    ));
                }
            },
        };
        if !literal.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut literal)));
        }
        parts.push(part);
        rest = &rest[open + close + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Part::Text(literal));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_text_are_parsed_in_order() {
        assert_eq!(
            parse("{source}.{kind}/{table}:{key}-{header:tenant}!").unwrap(),
            vec![
                Part::Source,
                Part::Text(".".into()),
                Part::Kind,
                Part::Text("/".into()),
                Part::Table,
                Part::Text(":".into()),
                Part::Key,
                Part::Text("-".into()),
                Part::Header("tenant".into()),
                Part::Text("!".into()),
            ]
        );
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn bad_templates_say_how_to_fix_them() {
        assert!(
            parse("{sauce}")
                .unwrap_err()
                .contains("unknown placeholder {sauce}")
        );
        assert!(parse("a{source").unwrap_err().contains("unclosed"));
        assert!(parse("{header:}").unwrap_err().contains("header name"));
    }
}
