//! The walker shared by every component: [`Ctx`] collects issues and warnings (with
//! their line, or the environment variable that set the value, and with secret values
//! hidden), [`Table`] reads one table of the generic tree, knowing which keys it may
//! hold, and reports wrong types, units, ranges and unknown keys (with "did you mean").

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::de::{DeserializeOwned, IntoDeserializer};
use serde_json::{Map, Value};

use crate::load::{ConfigError, Issue};
use crate::locate::Locator;
use crate::units::{ByteSize, parse_duration, parse_size};
use crate::{Config, schema};

/// Collects issues while walking.
pub(crate) struct Ctx<'a> {
    issues: Vec<Issue>,
    /// Problems that do not stop a start (see [`Config::warnings`]).
    warnings: Vec<Issue>,
    locator: &'a Locator,
    /// Paths set by `SWITCHYARD_…` variables → the variable's name.
    env_paths: BTreeMap<String, String>,
    /// Paths whose `${VAR}` could not be replaced: already reported, so no second
    /// complaint about the unreplaced text.
    unresolved: BTreeSet<String>,
    /// Values that must not appear in a message as they are, with what is shown instead.
    hidden: Vec<Hidden>,
}

/// A value that may hold a secret: of a secret-named key (`token`, `dsn`, `secret`,
/// `options."sasl.password"`, …), from `${VAR}`, or a URL (userinfo, query).
struct Hidden {
    path: String,
    value: String,
    shown: String,
}

/// Values this long are hidden in messages about any key, shorter ones only in messages
/// about their own key (a short value such as `1` would otherwise mask unrelated text).
const HIDE_EVERYWHERE: usize = 8;

impl<'a> Ctx<'a> {
    pub(crate) fn new(locator: &'a Locator, env_paths: BTreeMap<String, String>) -> Self {
        Ctx {
            issues: Vec::new(),
            warnings: Vec::new(),
            locator,
            env_paths,
            unresolved: BTreeSet::new(),
            hidden: Vec::new(),
        }
    }

    /// Notes the string at `path` (after `${VAR}` substitution; `template` is the text
    /// before it, when it changed) so that issues never echo it verbatim when it may hold
    /// a secret: see [`Ctx::issue`].
    pub(crate) fn remember_value(&mut self, path: &str, value: &str, template: Option<String>) {
        let shown = if secret_path(path) {
            if value.contains("://") || value.contains('=') {
                crate::redact::dsn(value)
            } else {
                crate::redact::MASK.to_string()
            }
        } else if value.contains("://") {
            crate::redact::url(value)
        } else if let Some(template) = template {
            // The file's own text names the variable without revealing its value.
            template
        } else {
            return;
        };
        if shown != value && !value.is_empty() {
            self.hidden.push(Hidden {
                path: path.to_string(),
                value: value.to_string(),
                shown,
            });
        }
    }

    /// `message` with every remembered value that concerns `path` (its own, its
    /// children's, or any long one) replaced by its safe form, quoted (`{:?}`) or not.
    pub(crate) fn hide_values(&self, path: &str, message: String) -> String {
        let mut message = message;
        for hidden in &self.hidden {
            let concerns = hidden.value.len() >= HIDE_EVERYWHERE
                || hidden.path == path
                || hidden
                    .path
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['));
            if !concerns {
                continue;
            }
            let quoted = format!("{:?}", hidden.value);
            if message.contains(&quoted) {
                message = message.replace(&quoted, &format!("{:?}", hidden.shown));
            }
            if message.contains(&hidden.value) {
                message = message.replace(&hidden.value, &hidden.shown);
            }
        }
        message
    }

    pub(crate) fn unresolved(&mut self, path: &str, message: String) {
        self.issue(path, message);
        self.unresolved.insert(path.to_string());
    }

    pub(crate) fn issue(&mut self, path: &str, message: impl Into<String>) {
        if self.unresolved.contains(path) {
            return;
        }
        let issue = self.located(path, message.into());
        self.issues.push(issue);
    }

    /// A problem that does not stop the config from loading: `validate` prints it and
    /// `run` logs it once at start.
    pub(crate) fn warn(&mut self, path: &str, message: impl Into<String>) {
        if self.unresolved.contains(path) {
            return;
        }
        let warning = self.located(path, message.into());
        self.warnings.push(warning);
    }

    /// An issue at `path`, with its line, or the environment variable that set it.
    fn located(&self, path: &str, message: String) -> Issue {
        let mut message = self.hide_values(path, message);
        let line = match self.env_variable(path) {
            Some(variable) => {
                message.push_str(&format!(" (set by environment variable {variable})"));
                None
            }
            None => self.locator.line(path),
        };
        Issue {
            path: path.to_string(),
            message,
            line,
            column: None,
        }
    }

    /// The `SWITCHYARD_…` variable that set `path` or one of its parents.
    fn env_variable(&self, path: &str) -> Option<&str> {
        self.env_paths.iter().find_map(|(set, variable)| {
            let inside = path == set
                || path
                    .strip_prefix(set.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['));
            inside.then_some(variable.as_str())
        })
    }

    fn set_by_env(&self, path: &str) -> bool {
        self.env_variable(path).is_some()
    }

    pub(crate) fn into_result(self, mut config: Config) -> Result<Config, ConfigError> {
        // File order first; issues without a line (environment, whole file) last.
        let in_file_order = |issue: &Issue| issue.line.unwrap_or(usize::MAX);
        if self.issues.is_empty() {
            let mut warnings = self.warnings;
            warnings.sort_by_key(in_file_order);
            config.warnings = warnings;
            return Ok(config);
        }
        let mut issues = self.issues;
        issues.sort_by_key(in_file_order);
        Err(ConfigError {
            issues,
            origin: None,
        })
    }
}

/// Whether the key at `path` holds a secret: `server.admin_token`, a source's `token`
/// or `dsn`, a webhook's `secret` and secret-named `headers`, Kafka `options` such as
/// `sasl.password` or `ssl.key.pem`.
pub(crate) fn secret_path(path: &str) -> bool {
    let path = path.split('[').next().unwrap_or(path);
    if let Some((_, option)) = path.split_once(".options.") {
        // Option names contain dots themselves (`ssl.key.password`).
        return crate::redact::is_secret_name(option);
    }
    let key = path.rsplit('.').next().unwrap_or(path);
    crate::redact::is_secret_name(key)
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(number) if number.is_f64() => "a decimal number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// The closest candidate when it is close enough to be a likely typo.
pub(crate) fn closest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|candidate| {
            (
                distance(&word.to_lowercase(), &candidate.to_lowercase()),
                candidate,
            )
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, candidate)| candidate)
}

pub(crate) fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> String {
    closest(word, candidates)
        .map(|candidate| format!(", did you mean `{candidate}`?"))
        .unwrap_or_default()
}

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(crate) fn check_name(cx: &mut Ctx<'_>, path: &str, what: &str, name: &str) {
    if !valid_name(name) {
        cx.issue(
            path,
            format!(
                "invalid {what} name {name:?}: use only letters, digits, `_` and `-` (names appear in URLs and directory names)"
            ),
        );
    }
}

/// A table being read: remembers the keys it knows, to report the others.
///
/// The known keys come from the typed struct the table becomes ([`schema::fields`]),
/// never from a list of the walker's own, so the two cannot drift apart: reading a key
/// the struct does not have is a bug caught by a debug assertion in [`Table::get`].
pub(crate) struct Table<'v> {
    path: String,
    map: &'v Map<String, Value>,
    known: Vec<&'static str>,
}

impl<'v> Table<'v> {
    /// The table at `path` holding the keys of `T`.
    pub(crate) fn of<T: DeserializeOwned>(
        cx: &mut Ctx<'_>,
        path: &str,
        value: &'v Value,
    ) -> Option<Self> {
        Self::open(cx, path, value, schema::fields::<T>())
    }

    /// The table at `path` holding the keys `known`; `None` (reported) when the value
    /// is not a table.
    pub(crate) fn open(
        cx: &mut Ctx<'_>,
        path: &str,
        value: &'v Value,
        known: &[&'static str],
    ) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Table {
                path: path.to_string(),
                map,
                known: known.to_vec(),
            }),
            other => {
                cx.issue(path, format!("expected a table, found {}", kind(other)));
                None
            }
        }
    }

    /// Adds the keys of a source or sink type, once `type` has told which it is.
    pub(crate) fn know(&mut self, keys: &[&'static str]) {
        self.known.extend_from_slice(keys);
    }

    pub(crate) fn child(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value of `key`, which must be one of the table's known keys.
    pub(crate) fn get(&self, key: &str) -> Option<&'v Value> {
        debug_assert!(
            self.known.contains(&key),
            "the walker reads `{key}` under `{}`, which its type does not declare (known: {:?})",
            self.path,
            self.known
        );
        self.map.get(key).filter(|value| !value.is_null())
    }

    /// Reports keys this table does not know.
    pub(crate) fn finish(self, cx: &mut Ctx<'_>) {
        for key in self.map.keys() {
            if !self.known.contains(&key.as_str()) {
                let hint = did_you_mean(key, self.known.iter().copied());
                let hint = if hint.is_empty() {
                    format!("; known keys: {}", self.known.join(", "))
                } else {
                    hint
                };
                cx.issue(&self.child(key), format!("unknown key `{key}`{hint}"));
            }
        }
    }

    pub(crate) fn missing(&self, cx: &mut Ctx<'_>, key: &str, hint: &str) {
        cx.issue(
            &self.child(key),
            format!("missing required key `{key}` ({hint})"),
        );
    }

    pub(crate) fn string(&self, cx: &mut Ctx<'_>, key: &str) -> Option<String> {
        let value = self.get(key)?;
        let path = self.child(key);
        match value {
            Value::String(text) => Some(text.clone()),
            Value::Number(_) | Value::Bool(_) if cx.set_by_env(&path) => Some(value.to_string()),
            other => {
                cx.issue(&path, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    /// A string that may be absent but not empty.
    pub(crate) fn non_empty_string(&self, cx: &mut Ctx<'_>, key: &str) -> Option<String> {
        let text = self.string(cx, key)?;
        if text.trim().is_empty() {
            cx.issue(
                &self.child(key),
                format!("`{key}` is empty: give it a value or remove the key"),
            );
            return None;
        }
        Some(text)
    }

    pub(crate) fn required_string(
        &self,
        cx: &mut Ctx<'_>,
        key: &str,
        hint: &str,
    ) -> Option<String> {
        if self.get(key).is_none() {
            self.missing(cx, key, hint);
            return None;
        }
        self.non_empty_string(cx, key)
    }

    pub(crate) fn integer(
        &self,
        cx: &mut Ctx<'_>,
        key: &str,
        min: u64,
        why_min: &str,
    ) -> Option<u64> {
        let value = self.get(key)?;
        let path = self.child(key);
        let number = match value {
            Value::Number(number) => {
                if let Some(n) = number.as_u64() {
                    Some(n)
                } else if number.is_i64() {
                    cx.issue(
                        &path,
                        format!("must be at least {min}, found {number}{why_min}"),
                    );
                    return None;
                } else {
                    None
                }
            }
            Value::String(text) if cx.set_by_env(&path) => text.trim().parse::<u64>().ok(),
            _ => None,
        };
        let Some(number) = number else {
            cx.issue(
                &path,
                format!("expected a whole number, found {}", kind(value)),
            );
            return None;
        };
        if number < min {
            cx.issue(
                &path,
                format!("must be at least {min}, found {number}{why_min}"),
            );
            return None;
        }
        Some(number)
    }

    pub(crate) fn positive_u32(&self, cx: &mut Ctx<'_>, key: &str, why: &str) -> Option<u32> {
        let number = self.integer(cx, key, 1, why)?;
        u32::try_from(number).ok().or_else(|| {
            cx.issue(
                &self.child(key),
                format!("{number} is too large (at most {})", u32::MAX),
            );
            None
        })
    }

    pub(crate) fn positive_usize(&self, cx: &mut Ctx<'_>, key: &str, why: &str) -> Option<usize> {
        let number = self.integer(cx, key, 1, why)?;
        usize::try_from(number).ok()
    }

    pub(crate) fn boolean(&self, cx: &mut Ctx<'_>, key: &str) -> Option<bool> {
        let value = self.get(key)?;
        let path = self.child(key);
        match value {
            Value::Bool(flag) => Some(*flag),
            Value::String(text) if cx.set_by_env(&path) => match text.trim() {
                "true" => Some(true),
                "false" => Some(false),
                _ => {
                    cx.issue(&path, format!("expected true or false, found {text:?}"));
                    None
                }
            },
            other => {
                cx.issue(
                    &path,
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }

    pub(crate) fn duration(
        &self,
        cx: &mut Ctx<'_>,
        key: &str,
        allow_zero: bool,
    ) -> Option<Duration> {
        let value = self.get(key)?;
        let path = self.child(key);
        let parsed = match value {
            Value::String(text) => parse_duration(text),
            Value::Number(number) => Err(format!(
                "a duration needs a unit: write \"{number}s\" or \"{number}ms\", not {number}"
            )),
            other => Err(format!(
                "expected a duration such as \"30s\", found {}",
                kind(other)
            )),
        };
        match parsed {
            Ok(duration) if duration.is_zero() && !allow_zero => {
                cx.issue(&path, "must be longer than zero");
                None
            }
            Ok(duration) => Some(duration),
            Err(message) => {
                cx.issue(&path, message);
                None
            }
        }
    }

    pub(crate) fn size(&self, cx: &mut Ctx<'_>, key: &str) -> Option<ByteSize> {
        let value = self.get(key)?;
        let path = self.child(key);
        let parsed = match value {
            Value::String(text) => parse_size(text),
            Value::Number(number) => number.as_u64().ok_or_else(|| {
                format!("expected a size such as \"64MiB\" or a number of bytes, found {number}")
            }),
            other => Err(format!(
                "expected a size such as \"64MiB\", found {}",
                kind(other)
            )),
        };
        match parsed {
            Ok(0) => {
                cx.issue(&path, "must be larger than zero");
                None
            }
            Ok(bytes) => Some(ByteSize(bytes)),
            Err(message) => {
                cx.issue(&path, message);
                None
            }
        }
    }

    /// A list of strings; a single string from an environment variable is a list of one.
    pub(crate) fn strings(&self, cx: &mut Ctx<'_>, key: &str) -> Option<Vec<String>> {
        let value = self.get(key)?;
        let path = self.child(key);
        match value {
            Value::Array(items) => {
                let mut out = Vec::new();
                for (index, item) in items.iter().enumerate() {
                    match item {
                        Value::String(text) => out.push(text.clone()),
                        other => cx.issue(
                            &format!("{path}[{index}]"),
                            format!("expected a string, found {}", kind(other)),
                        ),
                    }
                }
                Some(out)
            }
            Value::String(text) if cx.set_by_env(&path) => Some(vec![text.clone()]),
            Value::String(text) => {
                cx.issue(
                    &path,
                    format!("expected a list of strings: write [{text:?}] instead of {text:?}"),
                );
                None
            }
            other => {
                cx.issue(
                    &path,
                    format!("expected a list of strings, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// A table of scalar values, kept as text.
    pub(crate) fn string_map(
        &self,
        cx: &mut Ctx<'_>,
        key: &str,
    ) -> Option<BTreeMap<String, String>> {
        let value = self.get(key)?;
        let path = self.child(key);
        let Value::Object(map) = value else {
            cx.issue(&path, format!("expected a table, found {}", kind(value)));
            return None;
        };
        let mut out = BTreeMap::new();
        for (name, item) in map {
            match item {
                Value::String(text) => {
                    out.insert(name.clone(), text.clone());
                }
                Value::Number(_) | Value::Bool(_) => {
                    out.insert(name.clone(), item.to_string());
                }
                other => cx.issue(
                    &join(&path, name),
                    format!(
                        "expected a string, number or boolean, found {}",
                        kind(other)
                    ),
                ),
            }
        }
        Some(out)
    }

    /// A string that must be one of `choices`.
    pub(crate) fn choice(
        &self,
        cx: &mut Ctx<'_>,
        key: &str,
        choices: &[&'static str],
    ) -> Option<&'static str> {
        let text = self.string(cx, key)?;
        let found = choices.iter().copied().find(|choice| *choice == text);
        if found.is_none() {
            cx.issue(
                &self.child(key),
                format!(
                    "unknown value {text:?}, expected one of: {}{}",
                    choices.join(", "),
                    did_you_mean(&text, choices.iter().copied())
                ),
            );
        }
        found
    }

    /// A string naming a value of the enum `T`, spelled as serde spells it (e.g.
    /// `on_error = "dead_letter"`).
    pub(crate) fn choice_of<T: DeserializeOwned>(&self, cx: &mut Ctx<'_>, key: &str) -> Option<T> {
        let name = self.choice(cx, key, schema::variants::<T>())?;
        let read: Result<T, serde::de::value::Error> = T::deserialize(name.into_deserializer());
        read.ok()
    }

    /// Reads `type` and finds it among `kinds` by `name`. `None` when it is missing or
    /// unknown (reported with the list of types and a "did you mean").
    pub(crate) fn type_of<K: Copy>(
        &self,
        cx: &mut Ctx<'_>,
        what: &str,
        kinds: &[K],
        name: fn(K) -> &'static str,
    ) -> Option<K> {
        let types: Vec<&'static str> = kinds.iter().map(|kind| name(*kind)).collect();
        if self.get("type").is_none() {
            self.missing(
                cx,
                "type",
                &format!("the {what} type, one of: {}", types.join(", ")),
            );
            return None;
        }
        let text = self.string(cx, "type")?;
        let found = kinds.iter().copied().find(|kind| name(*kind) == text);
        if found.is_none() {
            cx.issue(
                &self.child("type"),
                format!(
                    "unknown {what} type {text:?}, expected one of: {}{}",
                    types.join(", "),
                    did_you_mean(&text, types.iter().copied())
                ),
            );
        }
        found
    }
}
