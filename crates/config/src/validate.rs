//! The schema: walks the generic tree, collects every issue with its key path, and
//! builds the typed [`Config`] (with defaults where keys are absent).
//!
//! A wrong value is reported and replaced by its default so the walk can go on and
//! find the next problem; the built value is only handed out when no issue was found.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::load::{ConfigError, Issue};
use crate::locate::Locator;
use crate::units::{ByteSize, parse_duration, parse_size};
use crate::*;

pub(crate) const SOURCE_TYPES: &[&str] = &["http", "queue", "postgres_cdc", "kafka"];
pub(crate) const SINK_TYPES: &[&str] = &["webhook", "queue", "stdout", "file", "kafka"];
const KAFKA_COMPRESSIONS: &[&str] = &["none", "gzip", "snappy", "lz4", "zstd"];
/// librdkafka's `security.protocol` values (case does not matter to it).
const KAFKA_SECURITY_PROTOCOLS: &[&str] = &["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];

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
    fn hide_values(&self, path: &str, message: String) -> String {
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
fn secret_path(path: &str) -> bool {
    let path = path.split('[').next().unwrap_or(path);
    if let Some((_, option)) = path.split_once(".options.") {
        // Option names contain dots themselves (`ssl.key.password`).
        return crate::redact::is_secret_name(option);
    }
    let key = path.rsplit('.').next().unwrap_or(path);
    crate::redact::is_secret_name(key)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn kind(value: &Value) -> &'static str {
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

fn did_you_mean<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> String {
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

fn check_name(cx: &mut Ctx<'_>, path: &str, what: &str, name: &str) {
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
struct Table<'v> {
    path: String,
    map: &'v Map<String, Value>,
    known: Vec<&'static str>,
}

impl<'v> Table<'v> {
    fn open(
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

    fn child(&self, key: &str) -> String {
        join(&self.path, key)
    }

    fn get(&self, key: &str) -> Option<&'v Value> {
        self.map.get(key).filter(|value| !value.is_null())
    }

    /// Reports keys this table does not know.
    fn finish(self, cx: &mut Ctx<'_>) {
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

    fn missing(&self, cx: &mut Ctx<'_>, key: &str, hint: &str) {
        cx.issue(
            &self.child(key),
            format!("missing required key `{key}` ({hint})"),
        );
    }

    fn string(&self, cx: &mut Ctx<'_>, key: &str) -> Option<String> {
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
    fn non_empty_string(&self, cx: &mut Ctx<'_>, key: &str) -> Option<String> {
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

    fn required_string(&self, cx: &mut Ctx<'_>, key: &str, hint: &str) -> Option<String> {
        if self.get(key).is_none() {
            self.missing(cx, key, hint);
            return None;
        }
        self.non_empty_string(cx, key)
    }

    fn integer(&self, cx: &mut Ctx<'_>, key: &str, min: u64, why_min: &str) -> Option<u64> {
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

    fn positive_u32(&self, cx: &mut Ctx<'_>, key: &str, why: &str) -> Option<u32> {
        let number = self.integer(cx, key, 1, why)?;
        u32::try_from(number).ok().or_else(|| {
            cx.issue(
                &self.child(key),
                format!("{number} is too large (at most {})", u32::MAX),
            );
            None
        })
    }

    fn positive_usize(&self, cx: &mut Ctx<'_>, key: &str, why: &str) -> Option<usize> {
        let number = self.integer(cx, key, 1, why)?;
        usize::try_from(number).ok()
    }

    fn boolean(&self, cx: &mut Ctx<'_>, key: &str) -> Option<bool> {
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

    fn duration(&self, cx: &mut Ctx<'_>, key: &str, allow_zero: bool) -> Option<Duration> {
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

    fn size(&self, cx: &mut Ctx<'_>, key: &str) -> Option<ByteSize> {
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
    fn strings(&self, cx: &mut Ctx<'_>, key: &str) -> Option<Vec<String>> {
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
    fn string_map(&self, cx: &mut Ctx<'_>, key: &str) -> Option<BTreeMap<String, String>> {
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
    fn choice(
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
}

/// Builds the typed config from the tree, reporting every issue into `cx`.
pub(crate) fn build(tree: &Value, cx: &mut Ctx<'_>) -> Config {
    let mut config = Config::default();
    let Some(root) = Table::open(
        cx,
        "",
        tree,
        &[
            "server",
            "log",
            "queues",
            "sources",
            "plugins",
            "pipelines",
            "sinks",
        ],
    ) else {
        return config;
    };
    if let Some(value) = root.get("server") {
        config.server = server(cx, value);
    }
    if let Some(value) = root.get("log") {
        config.log = log(cx, value);
    }
    let mut declared = Declared::default();
    for (name, path, value) in section(cx, &root, "queues", "queue", &mut declared.queues) {
        if let Some(queue) = queue(cx, &path, value) {
            config.queues.insert(name, queue);
        }
    }
    for (name, path, value) in section(cx, &root, "sources", "source", &mut declared.sources) {
        if let Some(source) = source(cx, &name, &path, value) {
            config.sources.insert(name, source);
        }
    }
    for (name, path, value) in section(cx, &root, "plugins", "plugin", &mut declared.plugins) {
        if let Some(plugin) = plugin(cx, &path, value) {
            config.plugins.insert(name, plugin);
        }
    }
    let mut unused = BTreeSet::new();
    for (name, path, value) in section(cx, &root, "pipelines", "pipeline", &mut unused) {
        if let Some(pipeline) = pipeline(cx, &path, value) {
            config.pipelines.insert(name, pipeline);
        }
    }
    for (name, path, value) in section(cx, &root, "sinks", "sink", &mut declared.sinks) {
        if let Some(sink) = sink(cx, &path, value) {
            config.sinks.insert(name, sink);
        }
    }
    root.finish(cx);
    exposure(cx, &config);
    request_memory(cx, &config);
    crate::graph::check(cx, &config, &declared);
    crate::outbound::check_webhooks(cx, &config);
    config
}

/// Names declared in each namespace, whether or not their tables are valid, so one
/// broken sink does not also make every pipeline naming it "unknown".
#[derive(Default)]
pub(crate) struct Declared {
    pub(crate) queues: BTreeSet<String>,
    pub(crate) sources: BTreeSet<String>,
    pub(crate) plugins: BTreeSet<String>,
    pub(crate) sinks: BTreeSet<String>,
}

/// The entries of a `[section.NAME]` table, names checked.
fn section<'v>(
    cx: &mut Ctx<'_>,
    root: &Table<'v>,
    key: &str,
    what: &str,
    declared: &mut BTreeSet<String>,
) -> Vec<(String, String, &'v Value)> {
    let Some(value) = root.get(key) else {
        return Vec::new();
    };
    let Value::Object(map) = value else {
        cx.issue(
            key,
            format!("expected a table of {what}s by name, found {}", kind(value)),
        );
        return Vec::new();
    };
    map.iter()
        .map(|(name, value)| {
            let path = join(key, name);
            check_name(cx, &path, what, name);
            declared.insert(name.clone());
            (name.clone(), path, value)
        })
        .collect()
}

fn server(cx: &mut Ctx<'_>, value: &Value) -> ServerConfig {
    let mut server = ServerConfig::default();
    let Some(table) = Table::open(
        cx,
        "server",
        value,
        &[
            "listen",
            "data_dir",
            "admin_token",
            "shutdown_timeout",
            "dead_letter",
            "insecure",
            "max_connections",
            "header_timeout",
            "body_timeout",
            "idle_timeout",
            "max_request_memory",
            "metrics_token",
            "tls",
        ],
    ) else {
        return server;
    };
    if let Some(listen) = table.non_empty_string(cx, "listen") {
        if !valid_listen(&listen) {
            cx.issue(
                "server.listen",
                format!("invalid address {listen:?}: write host:port, e.g. \"127.0.0.1:8080\" or \"0.0.0.0:8080\""),
            );
        }
        server.listen = listen;
    }
    if let Some(data_dir) = table.non_empty_string(cx, "data_dir") {
        server.data_dir = data_dir;
    }
    server.admin_token = token(cx, &table, "admin_token");
    server.metrics_token = token(cx, &table, "metrics_token");
    if let Some(timeout) = table.duration(cx, "shutdown_timeout", true) {
        server.shutdown_timeout = timeout;
    }
    if let Some(insecure) = table.boolean(cx, "insecure") {
        server.insecure = insecure;
    }
    if let Some(max) = table.positive_usize(cx, "max_connections", "") {
        server.max_connections = max;
    }
    for (key, slot) in [
        ("header_timeout", &mut server.header_timeout),
        ("body_timeout", &mut server.body_timeout),
        ("idle_timeout", &mut server.idle_timeout),
    ] {
        if let Some(timeout) = table.duration(cx, key, false) {
            *slot = timeout;
        }
    }
    if let Some(size) = table.size(cx, "max_request_memory") {
        server.max_request_memory = size;
    }
    if let Some(value) = table.get("tls") {
        server.tls = server_tls(cx, &table.child("tls"), value);
    }
    if let Some(dead_letter) = table.non_empty_string(cx, "dead_letter") {
        check_name(cx, "server.dead_letter", "queue", &dead_letter);
        server.dead_letter = dead_letter;
    }
    table.finish(cx);
    server
}

/// `[server.tls]`: both files named; they are read (and their contents checked) at start.
fn server_tls(cx: &mut Ctx<'_>, path: &str, value: &Value) -> Option<ServerTlsConfig> {
    let table = Table::open(cx, path, value, &["cert", "key"])?;
    let cert = table.required_string(cx, "cert", "the PEM file of the certificate chain");
    let key = table.required_string(cx, "key", "the PEM file of the private key");
    table.finish(cx);
    Some(ServerTlsConfig {
        cert: cert?,
        key: key?,
    })
}

/// A bearer token: absent, or at least [`MIN_TOKEN_LEN`] characters. The value is never
/// echoed.
fn token(cx: &mut Ctx<'_>, table: &Table<'_>, key: &str) -> Option<String> {
    let token = table.non_empty_string(cx, key)?;
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        cx.issue(
            &table.child(key),
            "the token holds spaces, control or non-ASCII characters, which a bearer token \
             cannot carry (no client could send it); use visible ASCII characters only",
        );
        return None;
    }
    if token.len() < MIN_TOKEN_LEN {
        cx.issue(
            &table.child(key),
            format!(
                "the token is {} characters long; use at least {MIN_TOKEN_LEN} random characters \
                 (e.g. the output of `openssl rand -hex 32`)",
                token.len()
            ),
        );
        return None;
    }
    Some(token)
}

/// Whether `listen` only accepts connections from this machine.
pub(crate) fn listen_is_loopback(listen: &str) -> bool {
    let Some((host, _)) = listen.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An ingest request holds its body and what it expands to (about twice the body) within
/// `server.max_request_memory`: a `max_body` that cannot fit would refuse every large body.
fn request_memory(cx: &mut Ctx<'_>, config: &Config) {
    let budget = config.server.max_request_memory.0;
    for (name, source) in &config.sources {
        if let SourceConfig::Http(http) = source
            && http.max_body.0.saturating_mul(2) > budget
        {
            cx.issue(
                &format!("sources.{name}.max_body"),
                format!(
                    "a request of max_body ({} bytes) holds about twice that in memory, more than \
                     server.max_request_memory ({budget} bytes); lower max_body or raise \
                     server.max_request_memory to at least {}",
                    http.max_body.0,
                    http.max_body.0.saturating_mul(2)
                ),
            );
        }
    }
}

/// Listening beyond loopback needs a token on every door, or `server.insecure = true`.
fn exposure(cx: &mut Ctx<'_>, config: &Config) {
    let server = &config.server;
    // An invalid address is reported on its own.
    if server.insecure || listen_is_loopback(&server.listen) || !valid_listen(&server.listen) {
        return;
    }
    let mut open: Vec<String> = config
        .sources
        .iter()
        .filter_map(|(name, source)| match source {
            SourceConfig::Http(http) if http.token.is_none() => {
                Some(format!("sources.{name}.token"))
            }
            _ => None,
        })
        .collect();
    if server.admin_token.is_none() {
        open.insert(0, "server.admin_token".to_owned());
    }
    if open.is_empty() {
        return;
    }
    cx.issue(
        "server.listen",
        format!(
            "{} accepts connections from other machines, but {} not set: anyone who can reach \
             the port could send events or use the admin API; set {}, listen on 127.0.0.1, or \
             set server.insecure = true if that is really meant",
            server.listen,
            open.join(", ") + if open.len() == 1 { " is" } else { " are" },
            if open.len() == 1 { "it" } else { "them" },
        ),
    );
}

fn valid_listen(listen: &str) -> bool {
    let Some((host, port)) = listen.rsplit_once(':') else {
        return false;
    };
    !host.is_empty() && port.parse::<u16>().is_ok()
}

fn log(cx: &mut Ctx<'_>, value: &Value) -> LogOutputConfig {
    let mut log = LogOutputConfig::default();
    let Some(table) = Table::open(cx, "log", value, &["format", "level"]) else {
        return log;
    };
    match table.choice(cx, "format", &["text", "json"]) {
        Some("json") => log.format = LogFormat::Json,
        Some(_) => log.format = LogFormat::Text,
        None => {}
    }
    if let Some(level) = table.non_empty_string(cx, "level") {
        log.level = level;
    }
    table.finish(cx);
    log
}

fn queue(cx: &mut Ctx<'_>, path: &str, value: &Value) -> Option<QueueConfig> {
    let table = Table::open(
        cx,
        path,
        value,
        &[
            "partitions",
            "retention",
            "max_bytes",
            "ack_timeout",
            "max_deliveries",
            "dead_letter",
            "dedup_window",
            "lookahead",
            "max_groups",
            "work_memory",
            "group_idle_expiry",
        ],
    )?;
    let defaults = QueueConfig::default();
    let queue = QueueConfig {
        partitions: table
            .positive_u32(cx, "partitions", "; a queue needs at least one partition")
            .unwrap_or(defaults.partitions),
        retention: table
            .duration(cx, "retention", false)
            .unwrap_or(defaults.retention),
        max_bytes: table.size(cx, "max_bytes").unwrap_or(defaults.max_bytes),
        ack_timeout: table
            .duration(cx, "ack_timeout", false)
            .unwrap_or(defaults.ack_timeout),
        max_deliveries: table
            .positive_u32(
                cx,
                "max_deliveries",
                "; every message is delivered at least once",
            )
            .unwrap_or(defaults.max_deliveries),
        dead_letter: table.non_empty_string(cx, "dead_letter"),
        dedup_window: table
            .duration(cx, "dedup_window", true)
            .unwrap_or(defaults.dedup_window),
        lookahead: table
            .positive_u32(
                cx,
                "lookahead",
                "; a work group needs at least one message loaded",
            )
            .unwrap_or(defaults.lookahead),
        max_groups: table
            .positive_u32(
                cx,
                "max_groups",
                "; work groups are created by receives and need room for at least one",
            )
            .unwrap_or(defaults.max_groups),
        work_memory: table
            .size(cx, "work_memory")
            .unwrap_or(defaults.work_memory),
        group_idle_expiry: table
            .duration(cx, "group_idle_expiry", true)
            .unwrap_or(defaults.group_idle_expiry),
    };
    if queue.ack_timeout > crate::MAX_QUEUE_DELAY {
        cx.issue(
            &table.child("ack_timeout"),
            "must be at most 7d (a lease longer than a week is refused); set a shorter ack_timeout, a consumer that needs longer can extend its lease",
        );
    }
    if let Some(dead_letter) = &queue.dead_letter {
        check_name(cx, &join(path, "dead_letter"), "queue", dead_letter);
    }
    table.finish(cx);
    Some(queue)
}

/// Reads `type` and checks it against `types`.
fn type_of(
    cx: &mut Ctx<'_>,
    table: &Table<'_>,
    what: &str,
    types: &[&'static str],
) -> Option<&'static str> {
    if table.get("type").is_none() {
        table.missing(
            cx,
            "type",
            &format!("the {what} type, one of: {}", types.join(", ")),
        );
        return None;
    }
    let text = table.string(cx, "type")?;
    let found = types.iter().copied().find(|t| *t == text);
    if found.is_none() {
        cx.issue(
            &table.child("type"),
            format!(
                "unknown {what} type {text:?}, expected one of: {}{}",
                types.join(", "),
                did_you_mean(&text, types.iter().copied())
            ),
        );
    }
    found
}

fn source(cx: &mut Ctx<'_>, name: &str, path: &str, value: &Value) -> Option<SourceConfig> {
    let mut table = Table::open(cx, path, value, &["type"])?;
    let Some(source_type) = type_of(cx, &table, "source", SOURCE_TYPES) else {
        // Other keys cannot be judged without a type.
        return None;
    };
    let source = match source_type {
        "http" => {
            table.known.extend([
                "token",
                "max_body",
                "partitions",
                "dedup_window",
                "max_bytes",
                "max_events",
            ]);
            let defaults = HttpSourceConfig::default();
            SourceConfig::Http(HttpSourceConfig {
                token: token(cx, &table, "token"),
                max_events: table
                    .positive_usize(cx, "max_events", "")
                    .unwrap_or(defaults.max_events),
                max_body: table.size(cx, "max_body").unwrap_or(defaults.max_body),
                partitions: table
                    .positive_u32(
                        cx,
                        "partitions",
                        "; the intake log needs at least one partition",
                    )
                    .unwrap_or(defaults.partitions),
                dedup_window: table
                    .duration(cx, "dedup_window", true)
                    .unwrap_or(defaults.dedup_window),
                max_bytes: table.size(cx, "max_bytes").unwrap_or(defaults.max_bytes),
            })
        }
        "queue" => {
            table.known.extend(["queue", "group"]);
            let queue = table
                .required_string(cx, "queue", "the name of a [queues.NAME] table to read")
                .unwrap_or_default();
            let group = table
                .non_empty_string(cx, "group")
                .unwrap_or_else(|| name.to_string());
            check_name(cx, &table.child("group"), "consumer group", &group);
            SourceConfig::Queue(QueueSourceConfig { queue, group })
        }
        "postgres_cdc" => {
            table.known.extend([
                "dsn",
                "slot",
                "publication",
                "tables",
                "snapshot",
                "snapshot_chunk",
                "max_slot_lag",
                "recreate_slot",
            ]);
            let default_slot =
                format!("switchyard_{}", name.to_ascii_lowercase().replace('-', "_"));
            let slot = table
                .non_empty_string(cx, "slot")
                .unwrap_or_else(|| default_slot.clone());
            if !slot
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                || slot.len() > 63
            {
                cx.issue(
                    &table.child("slot"),
                    format!("invalid replication slot name {slot:?}: Postgres allows lower-case letters, digits and `_`, at most 63 characters"),
                );
            }
            let tables = table.strings(cx, "tables").unwrap_or_default();
            for (index, entry) in tables.iter().enumerate() {
                if entry.trim().is_empty() || entry.contains(char::is_whitespace) {
                    cx.issue(
                        &format!("{}[{index}]", table.child("tables")),
                        format!(
                            "invalid table {entry:?}: write schema.table, e.g. \"public.orders\""
                        ),
                    );
                }
            }
            let snapshot = match table.choice(cx, "snapshot", &["initial", "never"]) {
                Some("never") => SnapshotMode::Never,
                _ => SnapshotMode::Initial,
            };
            let dsn = table
                .required_string(
                    cx,
                    "dsn",
                    "a Postgres connection string, e.g. \"postgres://user@host:5432/db\"",
                )
                .unwrap_or_default();
            if !dsn.is_empty() {
                postgres_tls(cx, &table.child("dsn"), &dsn);
            }
            SourceConfig::PostgresCdc(PostgresCdcSourceConfig {
                dsn,
                publication: table
                    .non_empty_string(cx, "publication")
                    .unwrap_or_else(|| slot.clone()),
                slot,
                tables,
                snapshot,
                snapshot_chunk: table
                    .positive_u32(cx, "snapshot_chunk", "rows per snapshot chunk")
                    .unwrap_or(1024),
                max_slot_lag: table.size(cx, "max_slot_lag").unwrap_or(ByteSize(10 << 30)),
                recreate_slot: table.boolean(cx, "recreate_slot").unwrap_or(false),
            })
        }
        _ => {
            table
                .known
                .extend(["brokers", "topics", "group", "options"]);
            let topics = table.strings(cx, "topics");
            if topics.is_none() && table.get("topics").is_none() {
                table.missing(cx, "topics", "the Kafka topics to read, e.g. [\"clicks\"]");
            } else if topics.as_ref().is_some_and(Vec::is_empty) {
                cx.issue(
                    &table.child("topics"),
                    "`topics` is empty: name at least one topic",
                );
            }
            SourceConfig::Kafka(KafkaSourceConfig {
                brokers: table
                    .required_string(cx, "brokers", "bootstrap servers, e.g. \"127.0.0.1:9092\"")
                    .unwrap_or_default(),
                topics: topics.unwrap_or_default(),
                group: table
                    .non_empty_string(cx, "group")
                    .unwrap_or_else(|| "switchyard".to_string()),
                options: kafka_options(cx, &table),
            })
        }
    };
    table.finish(cx);
    Some(source)
}

/// The `sslmode` and `sslrootcert` of a `postgres_cdc` source's `dsn`: a known mode,
/// and a root certificate file that exists when one is named.
fn postgres_tls(cx: &mut Ctx<'_>, path: &str, dsn: &str) {
    match crate::postgres_dsn::split_tls(dsn) {
        Err(problem) => cx.issue(path, problem),
        Ok(split) => {
            if let Some(crate::postgres_dsn::RootCert::File(file)) = &split.tls.root_cert
                && !file.is_file()
            {
                cx.issue(
                    path,
                    format!(
                        "sslrootcert={} does not exist (relative paths start at the working \
                         directory): name the PEM file of the CA that signed the server's \
                         certificate",
                        file.display()
                    ),
                );
            }
        }
    }
}

fn plugin(cx: &mut Ctx<'_>, path: &str, value: &Value) -> Option<PluginConfig> {
    let table = Table::open(
        cx,
        path,
        value,
        &[
            "path",
            "config",
            "fuel",
            "memory",
            "timeout",
            "on_error",
            "allow_env",
            "allow_dirs",
        ],
    )?;
    let defaults = PluginConfig::default();
    let on_error = match table.choice(cx, "on_error", &["dead_letter", "drop", "stop"]) {
        Some("drop") => OnError::Drop,
        Some("stop") => OnError::Stop,
        Some(_) => OnError::DeadLetter,
        None => defaults.on_error,
    };
    let plugin = PluginConfig {
        path: table
            .required_string(cx, "path", "the plugin's .wasm component file")
            .unwrap_or_default(),
        config: table.get("config").cloned().unwrap_or(defaults.config),
        fuel: table
            .integer(cx, "fuel", 1, "; a plugin without fuel cannot run")
            .unwrap_or(defaults.fuel),
        memory: table.size(cx, "memory").unwrap_or(defaults.memory),
        timeout: table
            .duration(cx, "timeout", false)
            .unwrap_or(defaults.timeout),
        on_error,
        allow_env: allow_env(cx, &table),
        allow_dirs: allow_dirs(cx, &table),
    };
    table.finish(cx);
    Some(plugin)
}

/// `allow_env = ["NAME", …]`: variable names, each a plain name (no `=`, no NUL).
fn allow_env(cx: &mut Ctx<'_>, table: &Table<'_>) -> Vec<String> {
    let names = table.strings(cx, "allow_env").unwrap_or_default();
    let path = table.child("allow_env");
    for (index, name) in names.iter().enumerate() {
        if name.is_empty() || name.contains(['=', '\0']) {
            cx.issue(
                &format!("{path}[{index}]"),
                format!("{name:?} is not an environment variable name"),
            );
        }
    }
    names
}

/// `allow_dirs = { "/guest" = "host/dir", … }`: absolute guest paths to host directories.
fn allow_dirs(cx: &mut Ctx<'_>, table: &Table<'_>) -> BTreeMap<String, String> {
    let Some(value) = table.get("allow_dirs") else {
        return BTreeMap::new();
    };
    let path = table.child("allow_dirs");
    let Value::Object(map) = value else {
        cx.issue(
            &path,
            format!(
                "expected a table of guest path = host directory, such as \
                 {{ \"/data\" = \"plugins/data\" }}, found {}",
                kind(value)
            ),
        );
        return BTreeMap::new();
    };
    let mut dirs = BTreeMap::new();
    for (guest, host) in map {
        let at = join(&path, guest);
        if !guest.starts_with('/') {
            cx.issue(
                &at,
                format!("the guest path {guest:?} must be absolute, such as \"/data\""),
            );
            continue;
        }
        match host {
            Value::String(host) if !host.trim().is_empty() => {
                dirs.insert(guest.clone(), host.clone());
            }
            other => cx.issue(
                &at,
                format!(
                    "expected the host directory as a string, found {}",
                    kind(other)
                ),
            ),
        }
    }
    dirs
}

fn pipeline(cx: &mut Ctx<'_>, path: &str, value: &Value) -> Option<PipelineConfig> {
    let table = Table::open(
        cx,
        path,
        value,
        &[
            "from",
            "filters",
            "transforms",
            "router",
            "to",
            "dead_letter",
            "max_in_flight",
        ],
    )?;
    let from = table.strings(cx, "from");
    if from.is_none() && table.get("from").is_none() {
        table.missing(cx, "from", "the sources to read, e.g. [\"api\"]");
    } else if from.as_ref().is_some_and(Vec::is_empty) {
        cx.issue(
            &table.child("from"),
            "`from` is empty: name at least one source",
        );
    }
    let pipeline = PipelineConfig {
        from: from.unwrap_or_default(),
        filters: table.strings(cx, "filters").unwrap_or_default(),
        transforms: table.strings(cx, "transforms").unwrap_or_default(),
        router: table.non_empty_string(cx, "router"),
        to: table.strings(cx, "to").unwrap_or_default(),
        dead_letter: table.non_empty_string(cx, "dead_letter"),
        max_in_flight: table
            .positive_usize(
                cx,
                "max_in_flight",
                "; a pipeline must be able to read one event",
            )
            .unwrap_or(1024),
    };
    if pipeline.to.is_empty() && pipeline.router.is_none() && table.get("to").is_none() {
        cx.issue(
            path,
            "pipeline has neither `to` nor `router`: add `to = [\"SINK\"]` or a router plugin, or events go nowhere",
        );
    } else if pipeline.to.is_empty() && pipeline.router.is_none() {
        cx.issue(
            &table.child("to"),
            "`to` is empty and there is no `router`: name at least one sink",
        );
    }
    if let Some(dead_letter) = &pipeline.dead_letter {
        check_name(cx, &table.child("dead_letter"), "queue", dead_letter);
    }
    table.finish(cx);
    Some(pipeline)
}

fn sink(cx: &mut Ctx<'_>, path: &str, value: &Value) -> Option<SinkConfig> {
    let mut table = Table::open(cx, path, value, &["type"])?;
    let sink_type = type_of(cx, &table, "sink", SINK_TYPES)?;
    let sink = match sink_type {
        "webhook" => {
            table.known.extend([
                "url",
                "secret",
                "timeout",
                "concurrency",
                "retry",
                "headers",
                "envelope",
                "allow_private",
            ]);
            let url = table
                .required_string(
                    cx,
                    "url",
                    "where events are POSTed, e.g. \"https://example.com/hook\"",
                )
                .unwrap_or_default();
            if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
                cx.issue(
                    &table.child("url"),
                    format!("invalid url {url:?}: it must start with http:// or https://"),
                );
            }
            let secret = table.non_empty_string(cx, "secret");
            if let Some(secret) = &secret
                && (!secret.starts_with("whsec_") || secret.len() <= "whsec_".len())
            {
                cx.issue(
                    &table.child("secret"),
                    "invalid secret: use the Standard Webhooks form \"whsec_\" followed by a base64 key",
                );
            }
            let headers = table.string_map(cx, "headers").unwrap_or_default();
            for name in headers.keys() {
                let token = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
                if !token {
                    cx.issue(
                        &join(&table.child("headers"), name),
                        format!("invalid header name {name:?}: use letters, digits and `-`"),
                    );
                }
            }
            SinkConfig::Webhook(WebhookSinkConfig {
                url,
                secret,
                timeout: table
                    .duration(cx, "timeout", false)
                    .unwrap_or(Duration::from_secs(5)),
                concurrency: table
                    .positive_usize(
                        cx,
                        "concurrency",
                        "; at least one request must be in flight",
                    )
                    .unwrap_or(16),
                retry: table
                    .get("retry")
                    .and_then(|value| retry(cx, &table.child("retry"), value))
                    .unwrap_or_default(),
                headers,
                envelope: table.boolean(cx, "envelope").unwrap_or(false),
                allow_private: table.boolean(cx, "allow_private").unwrap_or(false),
            })
        }
        "queue" => {
            table.known.push("queue");
            SinkConfig::Queue(QueueSinkConfig {
                queue: table
                    .required_string(
                        cx,
                        "queue",
                        "the name of a [queues.NAME] table to append to",
                    )
                    .unwrap_or_default(),
            })
        }
        "stdout" => SinkConfig::Stdout(StdoutSinkConfig {}),
        "file" => {
            table.known.extend(["path", "mode"]);
            SinkConfig::File(FileSinkConfig {
                path: table
                    .required_string(cx, "path", "the file to append JSON lines to")
                    .unwrap_or_default(),
                mode: file_mode(cx, &table).unwrap_or(FileSinkConfig::DEFAULT_MODE),
            })
        }
        _ => {
            table.known.extend([
                "brokers",
                "topic",
                "compression",
                "options",
                "timeout",
                "linger",
                "concurrency",
                "retry",
                "create_topics",
                "partitions",
            ]);
            let topic = table
                .required_string(
                    cx,
                    "topic",
                    "the topic to produce to; may use {source}, {kind}, {table}",
                )
                .unwrap_or_default();
            if let Some(problem) = topic_template_problem(&topic) {
                cx.issue(&table.child("topic"), problem);
            }
            SinkConfig::Kafka(KafkaSinkConfig {
                brokers: table
                    .required_string(cx, "brokers", "bootstrap servers, e.g. \"127.0.0.1:9092\"")
                    .unwrap_or_default(),
                topic,
                compression: table
                    .choice(cx, "compression", KAFKA_COMPRESSIONS)
                    .map(str::to_string),
                options: kafka_options(cx, &table),
                timeout: table
                    .duration(cx, "timeout", false)
                    .unwrap_or(Duration::from_secs(30)),
                linger: table
                    .duration(cx, "linger", true)
                    .unwrap_or(Duration::from_millis(5)),
                concurrency: table
                    .positive_usize(cx, "concurrency", "; at least one lane must deliver")
                    .unwrap_or(8),
                retry: table
                    .get("retry")
                    .and_then(|value| retry(cx, &table.child("retry"), value)),
                create_topics: table.boolean(cx, "create_topics").unwrap_or(false),
                partitions: table
                    .positive_u32(cx, "partitions", "; a topic has at least one partition")
                    .unwrap_or(1),
            })
        }
    };
    table.finish(cx);
    Some(sink)
}

/// `mode = "0640"`: octal permission bits of a file the sink creates. A string, because a
/// TOML or YAML number would be read as decimal; the owner must be able to read and write
/// (the sink reopens the file after a restart); no set-id or sticky bits.
fn file_mode(cx: &mut Ctx<'_>, table: &Table<'_>) -> Option<u32> {
    let value = table.get("mode")?;
    let path = table.child("mode");
    let Value::String(text) = value else {
        cx.issue(
            &path,
            format!(
                "expected the permission bits as a string of octal digits, such as mode = \"0640\", found {}",
                kind(value)
            ),
        );
        return None;
    };
    let digits = text.trim().trim_start_matches("0o");
    let mode = (!digits.is_empty() && digits.len() <= 4)
        .then(|| u32::from_str_radix(digits, 8).ok())
        .flatten()
        .filter(|mode| *mode <= 0o777);
    let Some(mode) = mode else {
        cx.issue(
            &path,
            format!(
                "invalid mode {text:?}: write octal permission bits such as \"0600\" (owner only) or \"0640\" (owner and group read)"
            ),
        );
        return None;
    };
    if mode & 0o600 != 0o600 {
        cx.issue(
            &path,
            format!(
                "mode \"{mode:04o}\" does not let switchyard read and write its own file; keep the owner's rw, e.g. \"0600\" or \"0640\""
            ),
        );
        return None;
    }
    Some(mode)
}

fn retry(cx: &mut Ctx<'_>, path: &str, value: &Value) -> Option<RetryConfig> {
    let table = Table::open(cx, path, value, &["max_attempts", "initial", "max"])?;
    let defaults = RetryConfig::default();
    let retry = RetryConfig {
        max_attempts: table
            .positive_u32(cx, "max_attempts", "; it counts the first attempt too")
            .unwrap_or(defaults.max_attempts),
        initial: table
            .duration(cx, "initial", true)
            .unwrap_or(defaults.initial),
        max: table.duration(cx, "max", false).unwrap_or(defaults.max),
    };
    if retry.initial > retry.max {
        cx.issue(
            &join(path, "initial"),
            format!(
                "the first delay ({}) is longer than `max` ({}): lower `initial` or raise `max`",
                humantime::format_duration(retry.initial),
                humantime::format_duration(retry.max)
            ),
        );
    }
    table.finish(cx);
    Some(retry)
}

/// `options` of a Kafka sink or source. They go to librdkafka as they are (it refuses
/// what it does not know at start); `security.protocol` is checked here so that a typo
/// is reported with its line before a start.
fn kafka_options(cx: &mut Ctx<'_>, table: &Table<'_>) -> BTreeMap<String, String> {
    let options = table.string_map(cx, "options").unwrap_or_default();
    if let Some(protocol) = options.get("security.protocol")
        && !KAFKA_SECURITY_PROTOCOLS.contains(&protocol.to_ascii_lowercase().as_str())
    {
        cx.issue(
            &table.child("options"),
            format!(
                "\"security.protocol\" = {protocol:?} is not a Kafka security protocol{}: use \
                 plaintext, ssl (TLS; with \"ssl.ca.location\" for a private CA), \
                 sasl_plaintext or sasl_ssl (SASL over TLS)",
                did_you_mean(
                    &protocol.to_ascii_lowercase(),
                    KAFKA_SECURITY_PROTOCOLS.iter().copied()
                )
            ),
        );
    }
    options
}

/// What is wrong with a Kafka sink's topic template, if anything: placeholders other
/// than `{source}`, `{kind}`, `{table}`, or an unclosed `{`.
fn topic_template_problem(topic: &str) -> Option<String> {
    let mut rest = topic;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Some(format!(
                "topic {topic:?} has an unclosed `{{`; placeholders are {{source}}, {{kind}} and {{table}}"
            ));
        };
        let name = &rest[open + 1..open + close];
        if !crate::KAFKA_TOPIC_PLACEHOLDERS.contains(&name) {
            return Some(format!(
                "topic {topic:?} uses unknown placeholder {{{name}}}; use {{source}}, {{kind}} or {{table}}"
            ));
        }
        rest = &rest[open + close + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_group_bounds_of_a_queue() {
        let env = std::collections::HashMap::new();
        let load = |text: &str| crate::load_str_with_env(text, false, &env);
        let config = load("[queues.q]\n").unwrap();
        let q = &config.queues["q"];
        assert_eq!(q.max_groups, 64);
        assert_eq!(q.work_memory, ByteSize(256 << 20));
        assert_eq!(q.group_idle_expiry, Duration::from_secs(7 * 86_400));

        let config = load(
            "[queues.q]\nmax_groups = 3\nwork_memory = \"8MiB\"\ngroup_idle_expiry = \"0s\"\nack_timeout = \"7d\"\n",
        )
        .unwrap();
        let q = &config.queues["q"];
        assert_eq!(
            (q.max_groups, q.work_memory, q.group_idle_expiry),
            (3, ByteSize(8 << 20), Duration::ZERO)
        );

        let issues = load(
            "[queues.q]\nmax_groups = 0\nwork_memory = \"0\"\nack_timeout = \"8d\"\ngroup_idle_expiry = \"soon\"\n",
        )
        .unwrap_err()
        .issues;
        let at = |path: &str| {
            issues
                .iter()
                .find(|i| i.path == path)
                .unwrap_or_else(|| panic!("no issue at {path}: {issues:?}"))
                .message
                .clone()
        };
        assert!(
            at("queues.q.max_groups").contains("at least 1"),
            "{issues:?}"
        );
        assert!(at("queues.q.work_memory").contains("zero"), "{issues:?}");
        assert!(
            at("queues.q.ack_timeout").contains("at most 7d"),
            "{issues:?}"
        );
        assert!(
            at("queues.q.group_idle_expiry").contains("duration"),
            "{issues:?}"
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(closest("listn", ["listen", "data_dir"]), Some("listen"));
        assert_eq!(closest("htp", SOURCE_TYPES.iter().copied()), Some("http"));
        assert_eq!(
            closest("webhok", SINK_TYPES.iter().copied()),
            Some("webhook")
        );
        assert_eq!(closest("zzzzzz", ["listen"]), None);
    }

    #[test]
    fn names() {
        assert!(valid_name("orders-dlq_2"));
        assert!(!valid_name(""));
        assert!(!valid_name("my sink"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("é"));
    }

    #[test]
    fn a_kafka_source_feeds_one_pipeline() {
        let text = r#"
[sources.clicks]
type = "kafka"
brokers = "127.0.0.1:9092"
topics = ["clicks"]
group = "fanout"
[sources.clicks_audit]
type = "kafka"
brokers = "127.0.0.1:9092"
topics = ["clicks"]
group = "audit"
[pipelines.a]
from = ["clicks"]
to = ["out"]
[pipelines.b]
from = ["clicks"]
to = ["out"]
[pipelines.c]
from = ["clicks_audit"]
to = ["out"]
[sinks.out]
type = "stdout"
"#;
        let issues = crate::load_str(text, false)
            .expect_err("a kafka source in two pipelines is refused")
            .issues;
        assert_eq!(issues.len(), 1, "{issues:#?}");
        let issue = &issues[0];
        assert_eq!(issue.path, "pipelines.b.from");
        for words in [
            "kafka source `clicks` is read by pipelines `a` and `b`",
            "consumer group `fanout`",
            "declare a second kafka source",
            "its own `group`",
        ] {
            assert!(issue.message.contains(words), "{words:?} not in {issue:?}");
        }
        assert!(issue.line.is_some(), "{issue:?}");

        // One source per pipeline, each with its own group: accepted.
        let fixed = text.replace(
            "[pipelines.b]\nfrom = [\"clicks\"]",
            "[pipelines.b]\nfrom = [\"clicks_audit\"]",
        );
        let fixed = fixed.replace(
            "[pipelines.c]\nfrom = [\"clicks_audit\"]\nto = [\"out\"]\n",
            "",
        );
        crate::load_str(&fixed, false).expect("one pipeline per kafka source is valid");
    }

    #[test]
    fn kafka_security_protocol_is_checked_and_tls_options_pass_through() {
        let text = |protocol: &str| {
            format!(
                r#"
[sources.clicks]
type = "kafka"
brokers = "b:9093"
topics = ["clicks"]
options = {{ "security.protocol" = "{protocol}", "ssl.ca.location" = "/etc/kafka/ca.pem" }}
[pipelines.a]
from = ["clicks"]
to = ["out"]
[sinks.out]
type = "kafka"
brokers = "b:9093"
topic = "t"
options = {{ "security.protocol" = "{protocol}", "ssl.ca.location" = "/etc/kafka/ca.pem" }}
"#
            )
        };
        for ok in ["ssl", "SASL_SSL", "plaintext", "SASL_PLAINTEXT"] {
            let config = crate::load_str(&text(ok), false).expect(ok);
            let Some(SinkConfig::Kafka(sink)) = config.sinks.get("out") else {
                panic!("a kafka sink")
            };
            assert_eq!(sink.options["security.protocol"], ok);
            assert_eq!(sink.options["ssl.ca.location"], "/etc/kafka/ca.pem");
        }
        let issues = crate::load_str(&text("tls"), false)
            .expect_err("not a protocol")
            .issues;
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            ["sources.clicks.options", "sinks.out.options"],
            "{issues:#?}"
        );
        assert!(
            issues[0]
                .message
                .contains("\"tls\" is not a Kafka security protocol")
        );
        assert!(issues[0].message.contains("ssl (TLS"), "{:?}", issues[0]);
        assert!(issues[0].line.is_some(), "{:?}", issues[0]);
        let issues = crate::load_str(&text("sasl_ssll"), false)
            .expect_err("a typo")
            .issues;
        assert!(
            issues[0].message.contains("did you mean `sasl_ssl`?"),
            "{issues:#?}"
        );
    }

    #[test]
    fn listen_addresses() {
        assert!(valid_listen("127.0.0.1:8080"));
        assert!(valid_listen("[::1]:8080"));
        assert!(valid_listen("localhost:80"));
        assert!(!valid_listen("8080"));
        assert!(!valid_listen("host:http"));
    }

    #[test]
    fn loopback_listeners() {
        for local in [
            "127.0.0.1:8080",
            "127.1.2.3:1",
            "[::1]:8080",
            "localhost:80",
        ] {
            assert!(listen_is_loopback(local), "{local}");
        }
        for exposed in ["0.0.0.0:8080", "[::]:8080", "10.0.0.5:80", "example.com:80"] {
            assert!(!listen_is_loopback(exposed), "{exposed}");
        }
    }

    fn issues_of(text: &str) -> Vec<Issue> {
        match crate::load_str(text, false) {
            Ok(_) => Vec::new(),
            Err(e) => e.issues,
        }
    }

    const PIPELINE: &str = "[sources.api]\ntype = \"http\"\n\n[pipelines.p]\nfrom = [\"api\"]\nto = [\"out\"]\n\n[sinks.out]\ntype = \"stdout\"\n";

    #[test]
    fn an_exposed_listener_needs_every_token_or_insecure() {
        let exposed = format!("[server]\nlisten = \"0.0.0.0:8080\"\n{PIPELINE}");
        let issues = issues_of(&exposed);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "server.listen");
        for named in [
            "server.admin_token",
            "sources.api.token",
            "server.insecure = true",
        ] {
            assert!(issues[0].message.contains(named), "{}", issues[0].message);
        }
        let meant = exposed.replace("[server]\n", "[server]\ninsecure = true\n");
        assert!(issues_of(&meant).is_empty());
        let guarded = exposed
            .replace(
                "[server]\n",
                "[server]\nadmin_token = \"0123456789abcdef\"\n",
            )
            .replace(
                "type = \"http\"\n",
                "type = \"http\"\ntoken = \"fedcba9876543210\"\n",
            );
        assert!(issues_of(&guarded).is_empty(), "{:?}", issues_of(&guarded));
        let half = exposed.replace(
            "[server]\n",
            "[server]\nadmin_token = \"0123456789abcdef\"\n",
        );
        let issues = issues_of(&half);
        assert_eq!(issues.len(), 1);
        assert!(
            issues[0].message.contains("sources.api.token is not set"),
            "{}",
            issues[0].message
        );
        assert!(issues_of(&format!("[server]\nlisten = \"127.0.0.1:9\"\n{PIPELINE}")).is_empty());
    }

    #[test]
    fn short_tokens_are_refused_without_being_echoed() {
        for (key, text) in [
            (
                "server.admin_token",
                "[server]\nadmin_token = \"tiny-secret\"\n".to_owned(),
            ),
            (
                "server.metrics_token",
                "[server]\nmetrics_token = \"tiny-secret\"\n".to_owned(),
            ),
            (
                "sources.api.token",
                PIPELINE.replace(
                    "type = \"http\"\n",
                    "type = \"http\"\ntoken = \"tiny-secret\"\n",
                ),
            ),
        ] {
            let issues = issues_of(&text);
            assert_eq!(issues.len(), 1, "{issues:?}");
            assert_eq!(issues[0].path, key);
            assert!(
                issues[0].message.contains("at least 16"),
                "{}",
                issues[0].message
            );
            assert!(
                !issues[0].message.contains("tiny-secret"),
                "{}",
                issues[0].message
            );
        }
    }

    #[test]
    fn tokens_must_be_sendable_and_bodies_must_fit_the_request_memory() {
        let issues = issues_of("[server]\nadmin_token = \"0123456789 abcdef\"\n");
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(
            issues[0].message.contains("visible ASCII"),
            "{}",
            issues[0].message
        );
        let big = PIPELINE.replace(
            "type = \"http\"\n",
            "type = \"http\"\nmax_body = \"40MiB\"\n",
        );
        let issues = issues_of(&big);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "sources.api.max_body");
        assert!(
            issues[0].message.contains("server.max_request_memory"),
            "{}",
            issues[0].message
        );
        let raised = format!("[server]\nmax_request_memory = \"128MiB\"\n{big}");
        assert!(issues_of(&raised).is_empty(), "{:?}", issues_of(&raised));
    }

    #[test]
    fn server_limits_and_tls() {
        let config = crate::load_str(
            "[server]\nmax_connections = 10\nheader_timeout = \"2s\"\nbody_timeout = \"3s\"\nidle_timeout = \"4s\"\nmax_request_memory = \"8MiB\"\ntls = { cert = \"c.pem\", key = \"k.pem\" }\n",
            false,
        )
        .unwrap();
        let server = &config.server;
        assert_eq!(server.max_connections, 10);
        assert_eq!(server.header_timeout, Duration::from_secs(2));
        assert_eq!(server.body_timeout, Duration::from_secs(3));
        assert_eq!(server.idle_timeout, Duration::from_secs(4));
        assert_eq!(server.max_request_memory, ByteSize(8 << 20));
        assert_eq!(
            server.tls,
            Some(ServerTlsConfig {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        let issues = issues_of("[server]\nheader_timeout = \"0s\"\ntls = { cert = \"c.pem\" }\n");
        let paths: Vec<_> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            ["server.header_timeout", "server.tls.key"],
            "{issues:?}"
        );
    }
}
