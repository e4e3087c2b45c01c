//! Dotted paths into JSON values: `after.status`, `items.0.sku`, `items[0].sku`.
//!
//! A segment is an object key, or an array index: a segment made of digits indexes an
//! array (and is an ordinary key on an object), `[N]` is always an index. Keys that contain
//! `.`, `[` or `]` cannot be addressed.

use std::fmt;

pub use serde_json::{Map, Value, json};

/// A parsed path. Parse it once (in `init`) and use it for every event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// `name` or `0`: a key on an object; digits also index an array.
    Key { name: String, index: Option<usize> },
    /// `[0]`: an array index only.
    Index(usize),
}

impl JsonPath {
    /// Parses `a.b.0.c` or `a.b[0].c`. Errors name the path and what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("invalid JSON path `{text}`: {why}"));
        if text.is_empty() {
            return bad("it is empty");
        }
        let mut segments = Vec::new();
        for part in text.split('.') {
            let (name, mut rest) = match part.find('[') {
                Some(at) => part.split_at(at),
                None => (part, ""),
            };
            if name.contains(']') {
                return bad("`]` without `[`");
            }
            if name.is_empty() && rest.is_empty() {
                return bad("it has an empty segment (two dots, or a dot at an end)");
            }
            if !name.is_empty() {
                segments.push(Segment::Key {
                    name: name.to_owned(),
                    index: name.parse().ok(),
                });
            }
            while !rest.is_empty() {
                let Some(close) = rest.find(']') else {
                    return bad("`[` without `]`");
                };
                let Ok(index) = rest[1..close].parse() else {
                    return bad("`[...]` must hold an array index such as `[0]`");
                };
                segments.push(Segment::Index(index));
                rest = &rest[close + 1..];
                if !rest.is_empty() && !rest.starts_with('[') {
                    return bad("`]` must be followed by `.`, `[` or the end");
                }
            }
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at this path, if every step exists.
    pub fn get<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        self.segments
            .iter()
            .try_fold(value, |value, segment| match (segment, value) {
                (Segment::Key { name, .. }, Value::Object(map)) => map.get(name),
                (Segment::Key { index, .. }, Value::Array(items)) => items.get((*index)?),
                (Segment::Index(index), Value::Array(items)) => items.get(*index),
                _ => None,
            })
    }

    /// The value at this path, mutably, if every step exists.
    pub fn get_mut<'a>(&self, value: &'a mut Value) -> Option<&'a mut Value> {
        self.segments
            .iter()
            .try_fold(value, |value, segment| match (segment, value) {
                (Segment::Key { name, .. }, Value::Object(map)) => map.get_mut(name),
                (Segment::Key { index, .. }, Value::Array(items)) => items.get_mut((*index)?),
                (Segment::Index(index), Value::Array(items)) => items.get_mut(*index),
                _ => None,
            })
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for JsonPath {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::parse(text)
    }
}

/// Looks `path` up in `value` in one go; `None` for a missing value or an invalid path.
/// Prefer a [`JsonPath`] parsed once when the same path serves many events.
pub fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    JsonPath::parse(path).ok()?.get(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        json!({
            "op": "update",
            "after": {"status": "paid", "total": 12.5, "items": [{"sku": "a"}, {"sku": "b"}]},
            "by_digit": {"0": "zero"},
            "nested": [[1, 2], [3, 4]],
        })
    }

    #[test]
    fn dotted_keys_reach_nested_values() {
        let doc = doc();
        assert_eq!(lookup(&doc, "op"), Some(&json!("update")));
        assert_eq!(lookup(&doc, "after.status"), Some(&json!("paid")));
        assert_eq!(lookup(&doc, "after.total"), Some(&json!(12.5)));
        assert_eq!(lookup(&doc, "after.missing"), None);
        assert_eq!(lookup(&doc, "op.deeper"), None);
    }

    #[test]
    fn digits_and_brackets_index_arrays() {
        let doc = doc();
        assert_eq!(lookup(&doc, "after.items.1.sku"), Some(&json!("b")));
        assert_eq!(lookup(&doc, "after.items[1].sku"), Some(&json!("b")));
        assert_eq!(lookup(&doc, "after.items[2]"), None);
        assert_eq!(lookup(&doc, "nested[1][0]"), Some(&json!(3)));
        assert_eq!(lookup(&doc, "nested.1.0"), Some(&json!(3)));
        // Digits are a key on an object; brackets are not.
        assert_eq!(lookup(&doc, "by_digit.0"), Some(&json!("zero")));
        assert_eq!(lookup(&doc, "by_digit[0]"), None);
    }

    #[test]
    fn get_mut_changes_the_value_in_place() {
        let mut doc = doc();
        let path = JsonPath::parse("after.items[0].sku").unwrap();
        *path.get_mut(&mut doc).unwrap() = json!("z");
        assert_eq!(lookup(&doc, "after.items.0.sku"), Some(&json!("z")));
        assert!(
            JsonPath::parse("after.nope")
                .unwrap()
                .get_mut(&mut doc)
                .is_none()
        );
    }

    #[test]
    fn malformed_paths_are_rejected_with_the_reason() {
        for (path, why) in [
            ("", "empty"),
            ("a..b", "empty segment"),
            (".a", "empty segment"),
            ("a.", "empty segment"),
            ("a[0", "without `]`"),
            ("a]", "without `[`"),
            ("a[x]", "array index"),
            ("a[0]b", "followed by"),
        ] {
            let err = JsonPath::parse(path).unwrap_err();
            assert!(err.contains(why), "{path:?}: {err}");
            assert!(err.contains(&format!("`{path}`")), "{err}");
        }
        assert_eq!(lookup(&doc(), "a..b"), None);
    }

    #[test]
    fn a_path_displays_as_written() {
        let path: JsonPath = "after.items[0]".parse().unwrap();
        assert_eq!(path.to_string(), "after.items[0]");
        assert_eq!(path.as_str(), "after.items[0]");
    }
}
