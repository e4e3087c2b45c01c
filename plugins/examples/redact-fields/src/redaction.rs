//! Which fields to mask and with what: pure logic, no host calls.

use switchyard_plugin_sdk::json::Value;
use switchyard_plugin_sdk::{Config, JsonPath};

const DEFAULT_MASK: &str = "***";

#[derive(Debug, Clone, PartialEq)]
pub struct Redaction {
    fields: Vec<JsonPath>,
    mask: Value,
}

impl Redaction {
    /// Reads `fields` (required, a non-empty list of paths such as `after.email`) and
    /// `mask` (optional string, `***` by default).
    pub fn from_config(config: &Config) -> Result<Self, String> {
        config.deny_unknown_keys(&["fields", "mask"])?;
        let fields = config
            .strings("fields")?
            .ok_or("config: `fields` is required: a list of paths such as \"after.email\"")?;
        if fields.is_empty() {
            return Err("config: `fields` is empty: list the paths to mask".to_owned());
        }
        let fields = fields
            .iter()
            .map(|field| JsonPath::parse(field).map_err(|e| format!("config: `fields`: {e}")))
            .collect::<Result<_, _>>()?;
        let mask = config.string("mask")?.unwrap_or(DEFAULT_MASK);
        Ok(Self {
            fields,
            mask: Value::String(mask.to_owned()),
        })
    }

    /// Masks every listed field present in `json` with a non-null value; returns how many.
    pub fn apply(&self, json: &mut Value) -> usize {
        let mut masked = 0;
        for field in &self.fields {
            if let Some(value) = field.get_mut(json)
                && !value.is_null()
            {
                value.clone_from(&self.mask);
                masked += 1;
            }
        }
        masked
    }
}

#[cfg(test)]
mod tests {
    use switchyard_plugin_sdk::json::json;

    use super::*;

    fn redaction(config: Value) -> Redaction {
        Redaction::from_config(&Config::new(config)).expect("a valid config")
    }

    fn error(config: Value) -> String {
        Redaction::from_config(&Config::new(config)).expect_err("an invalid config")
    }

    #[test]
    fn masks_only_fields_that_are_there() {
        let redaction = redaction(json!({"fields": ["after.card", "after.email", "items[0].sku"]}));
        let mut doc = json!({
            "before": null,
            "after": {"card": "4111 1111", "email": null, "total": "9.90"},
            "items": [{"sku": "A-1"}, {"sku": "B-2"}],
        });
        assert_eq!(redaction.apply(&mut doc), 2);
        assert_eq!(
            doc,
            json!({
                "before": null,
                "after": {"card": "***", "email": null, "total": "9.90"},
                "items": [{"sku": "***"}, {"sku": "B-2"}],
            })
        );
        // Masking objects and numbers replaces them whole.
        let mut nested = json!({"after": {"card": {"number": 4111, "cvc": 123}}});
        assert_eq!(redaction.apply(&mut nested), 1);
        assert_eq!(nested, json!({"after": {"card": "***"}}));
        let mut unrelated = json!(["after", "card"]);
        assert_eq!(redaction.apply(&mut unrelated), 0);
    }

    #[test]
    fn the_mask_is_configurable() {
        let redaction = redaction(json!({"fields": ["email"], "mask": "[redacted]"}));
        let mut doc = json!({"email": "a@b"});
        redaction.apply(&mut doc);
        assert_eq!(doc, json!({"email": "[redacted]"}));
    }

    #[test]
    fn bad_configs_name_the_problem() {
        assert!(error(json!({})).starts_with("config: `fields` is required"));
        assert_eq!(
            error(json!({"fields": []})),
            "config: `fields` is empty: list the paths to mask"
        );
        assert_eq!(
            error(json!({"fields": "after.email"})),
            "config: `fields` must be a list of strings, got \"after.email\""
        );
        assert!(
            error(json!({"fields": ["after..email"]}))
                .starts_with("config: `fields`: invalid JSON path `after..email`")
        );
        assert_eq!(
            error(json!({"fields": ["a"], "mask": 0})),
            "config: `mask` must be a string, got 0"
        );
        assert!(
            error(json!({"fields": ["a"], "masks": "x"}))
                .starts_with("config: unknown key `masks`")
        );
    }
}
