//! The plugin's `config` table, as `init` receives it.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::json::JsonPath;

/// The plugin's config: the `config` table of `[plugins.NAME]` in switchyard's config
/// file, handed over as JSON. A plugin without a `config` table gets an empty object.
///
/// The accessors return `Err` with a message ready to return from `init`: it names the
/// key and what is wrong, and switchyard shows it when it refuses to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    value: Value,
}

impl Config {
    /// Parses the JSON that `init` receives. An empty string or `null` is an empty object.
    pub fn from_json(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::new(Value::Object(Default::default())));
        }
        let value = serde_json::from_str(text)
            .map_err(|e| format!("config is not valid JSON ({e}): {text}"))?;
        Ok(Self::new(value))
    }

    /// Wraps a value; `null` becomes an empty object. Handy in tests.
    pub fn new(value: Value) -> Self {
        let value = match value {
            Value::Null => Value::Object(Default::default()),
            value => value,
        };
        Self { value }
    }

    /// The whole config.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The value of a top-level key, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.value.get(key)
    }

    /// The value of a top-level key, or an error saying it is required.
    pub fn require(&self, key: &str) -> Result<&Value, String> {
        self.get(key)
            .ok_or_else(|| format!("config: `{key}` is required"))
    }

    /// A string key: `Ok(None)` when absent, `Err` when it holds something else.
    pub fn string(&self, key: &str) -> Result<Option<&str>, String> {
        self.typed(key, "a string", Value::as_str)
    }

    /// A boolean key: `Ok(None)` when absent, `Err` when it holds something else.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, String> {
        self.typed(key, "true or false", Value::as_bool)
    }

    /// A number key: `Ok(None)` when absent, `Err` when it holds something else.
    pub fn number(&self, key: &str) -> Result<Option<f64>, String> {
        self.typed(key, "a number", Value::as_f64)
    }

    /// A list of strings: `Ok(None)` when absent, `Err` when it is not a list of strings.
    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>, String> {
        self.typed(key, "a list of strings", |value| {
            value
                .as_array()?
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
    }

    /// A string key holding a [`JsonPath`] such as `after.status`.
    pub fn path(&self, key: &str) -> Result<Option<JsonPath>, String> {
        self.string(key)?
            .map(|text| JsonPath::parse(text).map_err(|e| format!("config: `{key}`: {e}")))
            .transpose()
    }

    /// Fails on any top-level key not in `known`, which catches typos such as `equal`
    /// for `equals`.
    pub fn deny_unknown_keys(&self, known: &[&str]) -> Result<(), String> {
        let Some(map) = self.value.as_object() else {
            return Err(format!("config must be an object, got {}", self.value));
        };
        match map.keys().find(|key| !known.contains(&key.as_str())) {
            Some(key) => Err(format!(
                "config: unknown key `{key}` (expected one of: {})",
                known.join(", ")
            )),
            None => Ok(()),
        }
    }

    /// One key as a serde type (e.g. `BTreeMap<String, Vec<String>>`): `Ok(None)` when
    /// absent, `Err` naming the key when it does not fit.
    pub fn get_as<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, String> {
        self.get(key)
            .map(|value| T::deserialize(value).map_err(|e| format!("config: `{key}`: {e}")))
            .transpose()
    }

    /// The whole config as a serde type, e.g. a `#[derive(Deserialize)]` struct.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, String> {
        T::deserialize(&self.value).map_err(|e| format!("config: {e}"))
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        convert: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => convert(value)
                .map(Some)
                .ok_or_else(|| format!("config: `{key}` must be {expected}, got {value}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn empty_or_null_config_is_an_empty_object() {
        for text in ["", "  ", "null", "{}"] {
            let config = Config::from_json(text).unwrap();
            assert_eq!(config.value(), &json!({}), "{text:?}");
            assert!(config.deny_unknown_keys(&[]).is_ok());
        }
    }

    #[test]
    fn invalid_json_is_reported_with_the_text() {
        let err = Config::from_json("{field: 1}").unwrap_err();
        assert!(err.starts_with("config is not valid JSON"), "{err}");
        assert!(err.ends_with("{field: 1}"), "{err}");
    }

    #[test]
    fn typed_accessors_tell_absent_from_wrong() {
        let config = Config::new(json!({
            "field": "after.status", "n": 3, "flag": true, "list": ["a", "b"], "mixed": ["a", 1],
        }));
        assert_eq!(config.string("field"), Ok(Some("after.status")));
        assert_eq!(config.string("nope"), Ok(None));
        assert_eq!(config.number("n"), Ok(Some(3.0)));
        assert_eq!(config.bool("flag"), Ok(Some(true)));
        assert_eq!(
            config.strings("list"),
            Ok(Some(vec!["a".to_owned(), "b".to_owned()]))
        );
        assert_eq!(
            config.string("n"),
            Err("config: `n` must be a string, got 3".to_owned())
        );
        assert_eq!(
            config.strings("mixed"),
            Err(r#"config: `mixed` must be a list of strings, got ["a",1]"#.to_owned())
        );
        assert_eq!(
            config.require("nope"),
            Err("config: `nope` is required".to_owned())
        );
        assert_eq!(
            config.path("field").unwrap().unwrap().as_str(),
            "after.status"
        );
    }

    #[test]
    fn bad_paths_and_unknown_keys_are_named() {
        let config = Config::new(json!({"field": "a..b", "equal": 1}));
        let err = config.path("field").unwrap_err();
        assert!(
            err.starts_with("config: `field`: invalid JSON path `a..b`"),
            "{err}"
        );
        assert_eq!(
            config.deny_unknown_keys(&["field", "equals"]),
            Err("config: unknown key `equal` (expected one of: field, equals)".to_owned())
        );
        let err = Config::new(json!([1])).deny_unknown_keys(&[]).unwrap_err();
        assert_eq!(err, "config must be an object, got [1]");
    }

    #[test]
    fn deserialize_reports_serde_errors() {
        use std::collections::BTreeMap;
        let config = Config::new(json!({"a": 1, "b": "two"}));
        let err = config.deserialize::<BTreeMap<String, u32>>().unwrap_err();
        assert!(
            err.starts_with("config: invalid type: string \"two\""),
            "{err}"
        );
        let ok = Config::new(json!({"a": 1})).deserialize::<BTreeMap<String, u32>>();
        assert_eq!(ok.unwrap()["a"], 1);

        let config = Config::new(json!({"routes": {"a": ["x"]}, "bad": {"a": "x"}}));
        let routes: Option<BTreeMap<String, Vec<String>>> = config.get_as("routes").unwrap();
        assert_eq!(routes.unwrap()["a"], ["x"]);
        let err = config
            .get_as::<BTreeMap<String, Vec<String>>>("bad")
            .unwrap_err();
        assert!(
            err.starts_with("config: `bad`: invalid type: string \"x\""),
            "{err}"
        );
        assert_eq!(config.get_as::<u32>("absent"), Ok(None));
    }
}
