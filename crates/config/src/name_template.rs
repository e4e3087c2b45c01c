//! Name templates of broker sinks: text with `{source}`, `{kind}`, `{table}`,
//! `{header:NAME}` and (for a RabbitMQ `routing_key` or an MQTT `topic`) `{key}`, filled
//! in per event. A Kafka `topic`, a NATS `subject` and a Redis `stream` may not use
//! `{key}` (see [`Placeholders`]).
//!
//! The one parser of them is here, so `validate` reports a bad template with its line;
//! filling one in needs an event and lives with the sinks (`switchyard_connector::
//! template`), which parse with the same function.

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

/// Which placeholders a template may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placeholders {
    /// `{source}`, `{kind}`, `{table}` and `{header:NAME}`: a Kafka topic, a NATS subject,
    /// a Redis stream key.
    Names,
    /// Those and `{key}` ([`PLACEHOLDERS`]): a RabbitMQ routing key, an MQTT topic.
    WithKey,
}

impl Placeholders {
    /// The placeholders, listed for "placeholders are …".
    fn all(self) -> &'static str {
        match self {
            Placeholders::Names => "{source}, {kind}, {table} and {header:NAME}",
            Placeholders::WithKey => PLACEHOLDERS,
        }
    }

    /// The placeholders, listed for "use …".
    fn choice(self) -> &'static str {
        match self {
            Placeholders::Names => "{source}, {kind}, {table} or {header:NAME}",
            Placeholders::WithKey => PLACEHOLDERS,
        }
    }

    fn header_example(self) -> &'static str {
        match self {
            Placeholders::Names => "{header:aggregatetype}",
            Placeholders::WithKey => "{header:tenant}",
        }
    }

    /// The part `name` (between `{` and `}`) stands for, or what is wrong with it.
    fn part(self, text: &str, name: &str) -> Result<Part, String> {
        match name {
            "source" => Ok(Part::Source),
            "kind" => Ok(Part::Kind),
            "table" => Ok(Part::Table),
            "key" if self == Placeholders::WithKey => Ok(Part::Key),
            other => match other.strip_prefix("header:") {
                Some(header) if !header.trim().is_empty() => Ok(Part::Header(header.to_owned())),
                Some(_) => Err(format!(
                    "{text:?} uses {{header:}} without a header name; write e.g. {}",
                    self.header_example()
                )),
                None => Err(format!(
                    "{text:?} uses unknown placeholder {{{other}}}; use {}",
                    self.choice()
                )),
            },
        }
    }
}

/// The parts of `text` with the placeholders of [`Placeholders::WithKey`], or what is
/// wrong with it (an unknown placeholder, an unclosed `{`, `{header:}` without a name),
/// said so that the user can fix it.
pub fn parse(text: &str) -> Result<Vec<Part>, String> {
    parse_with(text, Placeholders::WithKey)
}

/// The parts of `text` with `placeholders`, or what is wrong with it (as [`parse`]).
pub fn parse_with(text: &str, placeholders: Placeholders) -> Result<Vec<Part>, String> {
    let (parts, problem) = scan(text, placeholders);
    match problem {
        Some(problem) => Err(problem),
        None => Ok(parts),
    }
}

/// The parts of `text` with `placeholders`, taking what [`parse_with`] refuses (an
/// unknown placeholder, an unclosed `{`) as text: for a template that validation has
/// checked already, or that a program built.
pub fn parse_lenient(text: &str, placeholders: Placeholders) -> Vec<Part> {
    scan(text, placeholders).0
}

/// The parts of `text`, where a `{` that starts no placeholder is text, and the first
/// problem met.
fn scan(text: &str, placeholders: Placeholders) -> (Vec<Part>, Option<String>) {
    let mut parts = Vec::new();
    let mut problem = None;
    let mut literal = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        literal.push_str(&rest[..open]);
        let after = &rest[open..];
        let found = match after.find('}') {
            Some(close) => placeholders
                .part(text, &after[1..close])
                .map(|part| (part, close)),
            None => Err(format!(
                "{text:?} has an unclosed `{{`; placeholders are {}",
                placeholders.all()
            )),
        };
        match found {
            Ok((part, close)) => {
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(part);
                rest = &after[close + 1..];
            }
            Err(why) => {
                problem.get_or_insert(why);
                literal.push('{');
                rest = &after[1..];
            }
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Part::Text(literal));
    }
    (parts, problem)
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

    #[test]
    fn names_take_no_key_and_lenient_parsing_keeps_what_is_wrong_as_text() {
        assert!(
            parse_with("{key}", Placeholders::Names)
                .unwrap_err()
                .contains(
                    "unknown placeholder {key}; use {source}, {kind}, {table} or {header:NAME}"
                )
        );
        assert_eq!(
            parse_lenient("a{key}.{source}", Placeholders::Names),
            vec![Part::Text("a{key}.".into()), Part::Source]
        );
        assert_eq!(
            parse_lenient("a{b}{source", Placeholders::Names),
            vec![Part::Text("a{b}{source".into())]
        );
        assert_eq!(
            parse_lenient("{key}", Placeholders::WithKey),
            vec![Part::Key]
        );
    }
}
