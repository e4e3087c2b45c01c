//! The condition a field must meet: pure logic, no host calls.

use std::cmp::Ordering;

use switchyard_plugin_sdk::json::Value;
use switchyard_plugin_sdk::{Config, JsonPath};

const KEYS: &[&str] = &["field", "equals", "in", "exists", "gt", "gte", "lt", "lte"];

/// Every condition of the config; all must hold for an event to be kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
enum Condition {
    /// Equal JSON values; numbers compare by value (`1` equals `1.0`).
    Equals(Value),
    /// Equal to one of these.
    In(Vec<Value>),
    /// `true`: the field is present and not null; `false`: it is absent or null.
    Exists(bool),
    /// The field is a number, or a string holding one (Postgres `numeric` arrives as a
    /// string), and compares to the bound this way.
    Compare(Ordering, bool, f64),
}

/// Reads `field` and the conditions; errors name the key at fault.
pub fn from_config(config: &Config) -> Result<(JsonPath, Rule), String> {
    config.deny_unknown_keys(KEYS)?;
    let field = config
        .path("field")?
        .ok_or("config: `field` is required, e.g. \"after.status\"")?;
    let mut conditions = Vec::new();
    if let Some(value) = config.get("equals") {
        conditions.push(Condition::Equals(value.clone()));
    }
    if let Some(values) = config.get("in") {
        let values = values
            .as_array()
            .ok_or_else(|| format!("config: `in` must be a list of values, got {values}"))?;
        conditions.push(Condition::In(values.clone()));
    }
    if let Some(exists) = config.bool("exists")? {
        conditions.push(Condition::Exists(exists));
    }
    for (key, ordering, or_equal) in [
        ("gt", Ordering::Greater, false),
        ("gte", Ordering::Greater, true),
        ("lt", Ordering::Less, false),
        ("lte", Ordering::Less, true),
    ] {
        if let Some(bound) = config.number(key)? {
            conditions.push(Condition::Compare(ordering, or_equal, bound));
        }
    }
    if conditions.is_empty() {
        return Err(
            "config: give a condition for `field`: `equals`, `in`, `exists`, `gt`, `gte`, `lt` or `lte`"
                .to_owned(),
        );
    }
    Ok((field, Rule { conditions }))
}

impl Rule {
    /// Whether the field's value (`None` when the event has no such field) passes.
    pub fn matches(&self, value: Option<&Value>) -> bool {
        let value = value.filter(|value| !value.is_null());
        self.conditions.iter().all(|condition| match condition {
            Condition::Equals(expected) => value.is_some_and(|value| same(value, expected)),
            Condition::In(expected) => {
                value.is_some_and(|value| expected.iter().any(|e| same(value, e)))
            }
            Condition::Exists(exists) => value.is_some() == *exists,
            Condition::Compare(ordering, or_equal, bound) => value
                .and_then(number)
                .and_then(|number| number.partial_cmp(bound))
                .is_some_and(|found| found == *ordering || *or_equal && found.is_eq()),
        })
    }
}

fn same(value: &Value, expected: &Value) -> bool {
    match (value, expected) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => value == expected,
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse().ok().filter(|n: &f64| n.is_finite()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use switchyard_plugin_sdk::json::json;

    use super::*;

    fn rule(config: Value) -> Rule {
        from_config(&Config::new(config)).expect("a valid config").1
    }

    fn error(config: Value) -> String {
        from_config(&Config::new(config)).expect_err("an invalid config")
    }

    #[test]
    fn equals_compares_json_values_and_numbers_by_value() {
        let paid = rule(json!({"field": "status", "equals": "paid"}));
        assert!(paid.matches(Some(&json!("paid"))));
        assert!(!paid.matches(Some(&json!("PAID"))));
        assert!(!paid.matches(None));

        let one = rule(json!({"field": "n", "equals": 1}));
        assert!(one.matches(Some(&json!(1.0))));
        assert!(!one.matches(Some(&json!("1"))));

        let flag = rule(json!({"field": "f", "equals": false}));
        assert!(flag.matches(Some(&json!(false))));
    }

    #[test]
    fn in_matches_any_listed_value() {
        let open = rule(json!({"field": "status", "in": ["new", "paid", 3]}));
        assert!(open.matches(Some(&json!("paid"))));
        assert!(open.matches(Some(&json!(3))));
        assert!(!open.matches(Some(&json!("shipped"))));
        assert!(!open.matches(None));
    }

    #[test]
    fn exists_treats_null_as_absent() {
        let present = rule(json!({"field": "email", "exists": true}));
        let absent = rule(json!({"field": "email", "exists": false}));
        for (value, is_there) in [
            (Some(json!("a@b")), true),
            (Some(json!("")), true),
            (Some(json!(null)), false),
            (None, false),
        ] {
            assert_eq!(present.matches(value.as_ref()), is_there, "{value:?}");
            assert_eq!(absent.matches(value.as_ref()), !is_there, "{value:?}");
        }
    }

    #[test]
    fn comparisons_take_numbers_and_numeric_strings() {
        let gt = rule(json!({"field": "n", "gt": 10}));
        let gte = rule(json!({"field": "n", "gte": 10}));
        let lt = rule(json!({"field": "n", "lt": 10}));
        let lte = rule(json!({"field": "n", "lte": 10}));
        for (value, expected) in [
            (json!(9), [false, false, true, true]),
            (json!(10), [false, true, false, true]),
            (json!("10.0"), [false, true, false, true]),
            (json!(10.5), [true, true, false, false]),
            (json!(" 11 "), [true, true, false, false]),
        ] {
            let got = [&gt, &gte, &lt, &lte].map(|rule| rule.matches(Some(&value)));
            assert_eq!(got, expected, "{value}");
        }
        for not_a_number in [
            json!("ten"),
            json!("NaN"),
            json!(true),
            json!([10]),
            json!(null),
        ] {
            assert!(!gte.matches(Some(&not_a_number)), "{not_a_number}");
            assert!(!lte.matches(Some(&not_a_number)), "{not_a_number}");
        }
        assert!(!gt.matches(None));
    }

    #[test]
    fn all_conditions_must_hold() {
        let range = rule(json!({"field": "n", "gte": 1, "lt": 5}));
        assert!(range.matches(Some(&json!(1))));
        assert!(range.matches(Some(&json!(4.9))));
        assert!(!range.matches(Some(&json!(5))));
        assert!(!range.matches(Some(&json!(0))));
    }

    #[test]
    fn bad_configs_name_the_problem() {
        assert_eq!(
            error(json!({"equals": 1})),
            "config: `field` is required, e.g. \"after.status\""
        );
        assert!(
            error(json!({"field": "after..status", "equals": 1}))
                .starts_with("config: `field`: invalid JSON path `after..status`")
        );
        assert!(error(json!({"field": "a"})).contains("give a condition"));
        assert_eq!(
            error(json!({"field": "a", "in": "paid"})),
            "config: `in` must be a list of values, got \"paid\""
        );
        assert_eq!(
            error(json!({"field": "a", "exists": "yes"})),
            "config: `exists` must be true or false, got \"yes\""
        );
        assert_eq!(
            error(json!({"field": "a", "gt": "10"})),
            "config: `gt` must be a number, got \"10\""
        );
        assert!(
            error(json!({"field": "a", "equal": 1})).starts_with("config: unknown key `equal`")
        );
        assert_eq!(
            error(json!("after.status")),
            "config must be an object, got \"after.status\""
        );
    }
}
