//! Loading: the file (TOML or YAML) through figment, environment overrides, `${VAR}`
//! substitution, then validation of the whole tree at once.
//!
//! Order of the steps, and why:
//! 1. the file is parsed; a syntax error stops here (nothing else can be trusted);
//! 2. `SWITCHYARD_SECTION__KEY=value` variables are merged over it (double underscore =
//!    one level of nesting; variables without `__`, like `SWITCHYARD_ADMIN_TOKEN`, are
//!    left alone because they are commonly used as secrets referenced by `${…}`);
//! 3. every string value has its `${VAR}` references replaced from the environment;
//! 4. the tree is validated against the schema, collecting every issue, and the typed
//!    [`Config`] is returned only when there are none.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml, Yaml};
use serde_json::Value;

use crate::Config;
use crate::locate::Locator;

/// Prefix of environment variables that override keys of the file.
pub const ENV_PREFIX: &str = "SWITCHYARD_";

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Key path such as `sinks.audit.timeout` or `pipelines.orders.to[1]`; empty for
    /// problems with the file as a whole.
    pub path: String,
    pub message: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// 1-based column, for syntax errors.
    pub column: Option<usize>,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)?;
        } else {
            write!(f, "{}: {}", self.path, self.message)?;
        }
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, " (line {line}, column {column})")?,
            (Some(line), None) => write!(f, " (line {line})")?,
            _ => {}
        }
        Ok(())
    }
}

/// Every problem found in one configuration. `Display` prints one issue per line and
/// a summary line, ready for `switchyard validate` to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub issues: Vec<Issue>,
    /// The file the issues are about, when loaded from a file.
    pub origin: Option<String>,
}

impl ConfigError {
    fn single(path: &str, message: impl Into<String>) -> Self {
        ConfigError {
            issues: vec![Issue {
                path: path.to_string(),
                message: message.into(),
                line: None,
                column: None,
            }],
            origin: None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for issue in &self.issues {
            writeln!(f, "{issue}")?;
        }
        let count = self.issues.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        match &self.origin {
            Some(origin) => write!(f, "{count} {noun} in {origin}"),
            None => write!(f, "{count} {noun} in the configuration"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Loads `path` (`.toml`, `.yaml` or `.yml`) with the process environment.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    load_file_with_env(path, &process_env())
}

/// Loads a configuration text with the process environment.
pub fn load_str(text: &str, yaml: bool) -> Result<Config, ConfigError> {
    load_str_with_env(text, yaml, &process_env())
}

/// [`load_file`] with an explicit environment (for overrides and `${VAR}`).
pub fn load_file_with_env(
    path: &Path,
    env: &HashMap<String, String>,
) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let with_origin = |mut error: ConfigError| {
        error.origin = Some(origin.clone());
        error
    };
    let yaml = match path.extension().and_then(|ext| ext.to_str()) {
        Some("toml") => false,
        Some("yaml" | "yml") => true,
        _ => {
            return Err(with_origin(ConfigError::single(
                "",
                format!(
                    "cannot tell the format of {origin}: name the file *.toml, *.yaml or *.yml"
                ),
            )));
        }
    };
    let text = std::fs::read_to_string(path).map_err(|error| {
        with_origin(ConfigError::single(
            "",
            format!("cannot read {origin}: {error}; pass an existing, readable file"),
        ))
    })?;
    load_str_with_env(&text, yaml, env).map_err(with_origin)
}

/// [`load_str`] with an explicit environment (for overrides and `${VAR}`).
pub fn load_str_with_env(
    text: &str,
    yaml: bool,
    env: &HashMap<String, String>,
) -> Result<Config, ConfigError> {
    let file = if yaml {
        Figment::from(Yaml::string(text))
    } else {
        Figment::from(Toml::string(text))
    };
    let base: Value = if text_is_blank(text) {
        Value::Object(Default::default())
    } else {
        file.extract().map_err(|error| syntax_error(&error, yaml))?
    };

    let overrides = env_overrides(env, &base);
    let mut env_paths = BTreeMap::new();
    let mut figment = file;
    let merged = !overrides.is_empty();
    for (path, variable, value) in overrides {
        figment = figment.merge(Serialized::default(&path, value));
        env_paths.insert(path, variable);
    }
    let mut tree = if merged {
        figment.extract::<Value>().map_err(|error| {
            ConfigError::single("", format!("cannot apply environment overrides: {error}"))
        })?
    } else {
        base
    };

    let locator = Locator::new(text, yaml);
    let mut cx = crate::validate::Ctx::new(&locator, env_paths);
    substitute_tree(&mut tree, String::new(), env, &mut cx);
    let config = crate::validate::build(&tree, &mut cx);
    cx.into_result(config)
}

fn process_env() -> HashMap<String, String> {
    std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
        .collect()
}

fn text_is_blank(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---"
    })
}

/// Turns a parser error into one issue with its line and column.
fn syntax_error(error: &figment::Error, yaml: bool) -> ConfigError {
    let format = if yaml { "YAML" } else { "TOML" };
    let text = match &error.kind {
        figment::error::Kind::Message(message) => message.clone(),
        other => other.to_string(),
    };
    let (line, column) = line_and_column(&text);
    let explanation = if yaml {
        // "did not find expected ',' at line 3 column 1, while parsing …"
        text.split(" at line ")
            .next()
            .unwrap_or(&text)
            .trim()
            .to_string()
    } else {
        // TOML errors hold a snippet with a caret, then the explanation.
        text.lines()
            .map(str::trim)
            .filter(|line| {
                !line.is_empty() && !line.contains('|') && !line.starts_with("TOML parse error")
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let message = match line {
        Some(_) => format!("{format} syntax error: {explanation}"),
        None => format!(
            "the file must be a table of sections (server, queues, sources, plugins, pipelines, sinks): {explanation}"
        ),
    };
    ConfigError {
        issues: vec![Issue {
            path: String::new(),
            message,
            line,
            column,
        }],
        origin: None,
    }
}

/// Finds "line N" and "column M" in a parser message (TOML: "line 3, column 7";
/// YAML: "at line 3 column 7").
fn line_and_column(text: &str) -> (Option<usize>, Option<usize>) {
    let number_after = |word: &str| {
        text.find(word).and_then(|at| {
            let digits: String = text[at + word.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
    };
    (number_after("line "), number_after("column "))
}

/// `SWITCHYARD_A__B__C=value` → (`a.b.c`, variable, value). Keys are lower-cased, except
/// that a segment matching an existing key of the file case-insensitively takes that
/// key's spelling (so `[sinks.Audit]` can be overridden too).
fn env_overrides(env: &HashMap<String, String>, base: &Value) -> Vec<(String, String, Value)> {
    let mut overrides: Vec<(String, String, Value)> = env
        .iter()
        .filter_map(|(variable, value)| {
            let rest = variable.strip_prefix(ENV_PREFIX)?;
            if !rest.contains("__") {
                return None;
            }
            let mut node = Some(base);
            let mut segments = Vec::new();
            for raw in rest.split("__") {
                let existing = node
                    .and_then(Value::as_object)
                    .and_then(|map| map.keys().find(|key| key.eq_ignore_ascii_case(raw)));
                let segment = existing
                    .cloned()
                    .unwrap_or_else(|| raw.to_ascii_lowercase());
                node = node.and_then(|n| n.get(&segment));
                segments.push(segment);
            }
            if segments.iter().any(String::is_empty) {
                return None;
            }
            Some((segments.join("."), variable.clone(), env_value(value)))
        })
        .collect();
    // Deterministic merge order whatever the map's order.
    overrides.sort_by(|a, b| a.0.cmp(&b.0));
    overrides
}

/// Environment values stay strings (the validator converts them where the schema wants a
/// number or a boolean), except lists and tables written like `[a, b]` or `{k = v}`.
fn env_value(raw: &str) -> Value {
    let trimmed = raw.trim();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let parsed: figment::value::Value = trimmed.parse().unwrap_or_else(|never| match never {});
        if let Ok(value) = serde_json::to_value(&parsed) {
            return value;
        }
    }
    Value::String(raw.to_string())
}

const TOML_DATETIME: &str = "$__toml_private_datetime";

fn substitute_tree(
    value: &mut Value,
    path: String,
    env: &HashMap<String, String>,
    cx: &mut crate::validate::Ctx<'_>,
) {
    match value {
        Value::String(text) => match substitute(text, env) {
            Ok(replaced) => {
                let template = (replaced != *text).then(|| text.clone());
                cx.remember_value(&path, &replaced, template);
                *text = replaced;
            }
            Err(message) => {
                cx.remember_value(&path, text, None);
                cx.unresolved(&path, message);
            }
        },
        Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                substitute_tree(item, format!("{path}[{index}]"), env, cx);
            }
        }
        // figment hands TOML dates over as a one-key table; they are text to us.
        Value::Object(map) if map.len() == 1 && map.contains_key(TOML_DATETIME) => {
            if let Some(Value::String(text)) = map.remove(TOML_DATETIME) {
                *value = Value::String(text);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                substitute_tree(item, child, env, cx);
            }
        }
        _ => {}
    }
}

/// Replaces `${VAR}` and `${VAR:-default}` in `text`; `$${` writes a literal `${`.
pub(crate) fn substitute(text: &str, env: &HashMap<String, String>) -> Result<String, String> {
    if !text.contains("${") {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut missing = BTreeSet::new();
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                return Err(format!(
                    "unterminated `${{` in {text:?}: close it with `}}`, or write `$${{` for a literal `${{`"
                ));
            };
            let inner = &tail[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "invalid environment variable name `{name}` in `${{{inner}}}`: use letters, digits and `_`"
                ));
            }
            match (env.get(name), default) {
                (Some(value), _) => out.push_str(value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    missing.insert(name.to_string());
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    if missing.is_empty() {
        return Ok(out);
    }
    let names: Vec<String> = missing.iter().map(|name| format!("`{name}`")).collect();
    let (noun, verb) = if names.len() == 1 {
        ("variable", "is")
    } else {
        ("variables", "are")
    };
    Err(format!(
        "environment {noun} {} {verb} not set: export it before starting switchyard, or write `${{VAR:-default}}`",
        names.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn substitution() {
        let vars = env(&[("TOKEN", "abc"), ("EMPTY", "")]);
        assert_eq!(
            substitute("Bearer ${TOKEN}", &vars).as_deref(),
            Ok("Bearer abc")
        );
        assert_eq!(
            substitute("${TOKEN}${TOKEN}", &vars).as_deref(),
            Ok("abcabc")
        );
        assert_eq!(substitute("x${EMPTY}y", &vars).as_deref(), Ok("xy"));
        assert_eq!(
            substitute("${NOPE:-fallback}", &vars).as_deref(),
            Ok("fallback")
        );
        assert_eq!(
            substitute("$${TOKEN} costs $5", &vars).as_deref(),
            Ok("${TOKEN} costs $5")
        );
        let error = substitute("${A} and ${B}", &vars).unwrap_err();
        assert!(error.contains("`A`, `B` are not set"), "{error}");
        assert!(
            substitute("${TOKEN", &vars)
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(
            substitute("${1X}", &vars)
                .unwrap_err()
                .contains("invalid environment variable name")
        );
    }

    #[test]
    fn overrides_need_a_double_underscore() {
        let base: Value = serde_json::json!({"sinks": {"Audit": {"url": "x"}}});
        let vars = env(&[
            ("SWITCHYARD_ADMIN_TOKEN", "secret"),
            ("SWITCHYARD_SINKS__AUDIT__URL", "http://y"),
            ("SWITCHYARD_PIPELINES__P__TO", "[a, b]"),
            ("OTHER__X", "1"),
        ]);
        let overrides = env_overrides(&vars, &base);
        let paths: Vec<&str> = overrides.iter().map(|(path, _, _)| path.as_str()).collect();
        assert_eq!(paths, ["pipelines.p.to", "sinks.Audit.url"]);
        assert_eq!(overrides[0].2, serde_json::json!(["a", "b"]));
        assert_eq!(overrides[1].2, serde_json::json!("http://y"));
    }

    #[test]
    fn display_lists_issues_then_a_summary() {
        let error = ConfigError {
            issues: vec![
                Issue {
                    path: "server.listn".into(),
                    message: "unknown key".into(),
                    line: Some(2),
                    column: None,
                },
                Issue {
                    path: "sinks.a.url".into(),
                    message: "missing".into(),
                    line: None,
                    column: None,
                },
            ],
            origin: Some("config/x.toml".into()),
        };
        assert_eq!(
            error.to_string(),
            "server.listn: unknown key (line 2)\nsinks.a.url: missing\n2 problems in config/x.toml"
        );
    }
}
