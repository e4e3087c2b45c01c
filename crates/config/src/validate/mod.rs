//! The schema walk: reads the generic tree table by table, collects every issue with its
//! key path, and builds the typed [`Config`] (with defaults where keys are absent).
//!
//! A wrong value is reported and replaced by its default so the walk can go on and
//! find the next problem; the built value is only handed out when no issue was found.
//!
//! One module per component; each builds its struct field by field (so a field added to
//! a config struct does not compile until it is read here) and knows the table's keys
//! from the struct's serde derive (so the keys a table accepts are the struct's fields).
//! [`walk`] holds the shared reader ([`Table`]) and issue collector ([`Ctx`]); `graph`
//! and `outbound` then check what spans several tables.

mod log;
mod pipelines;
mod plugins;
mod queues;
mod server;
mod sinks;
mod sources;
mod walk;

use std::collections::BTreeSet;

use serde_json::Value;

use crate::Config;
pub(crate) use walk::{Ctx, closest};
use walk::{Table, check_name, join, kind};

/// Builds the typed config from the tree, reporting every issue into `cx`.
pub(crate) fn build(tree: &Value, cx: &mut Ctx<'_>) -> Config {
    let mut config = Config::default();
    let Some(root) = Table::of::<Config>(cx, "", tree) else {
        return config;
    };
    if let Some(value) = root.get("server") {
        config.server = server::server(cx, value);
    }
    if let Some(value) = root.get("log") {
        config.log = log::log(cx, value);
    }
    let mut declared = Declared::default();
    for (name, path, value) in section(cx, &root, "queues", "queue", &mut declared.queues) {
        if let Some(queue) = queues::queue(cx, &path, value) {
            config.queues.insert(name, queue);
        }
    }
    for (name, path, value) in section(cx, &root, "sources", "source", &mut declared.sources) {
        if let Some(source) = sources::source(cx, &name, &path, value) {
            config.sources.insert(name, source);
        }
    }
    for (name, path, value) in section(cx, &root, "plugins", "plugin", &mut declared.plugins) {
        if let Some(plugin) = plugins::plugin(cx, &path, value) {
            config.plugins.insert(name, plugin);
        }
    }
    let mut unused = BTreeSet::new();
    for (name, path, value) in section(cx, &root, "pipelines", "pipeline", &mut unused) {
        if let Some(pipeline) = pipelines::pipeline(cx, &path, value) {
            config.pipelines.insert(name, pipeline);
        }
    }
    for (name, path, value) in section(cx, &root, "sinks", "sink", &mut declared.sinks) {
        if let Some(sink) = sinks::sink(cx, &path, value) {
            config.sinks.insert(name, sink);
        }
    }
    root.finish(cx);
    server::exposure(cx, &config);
    server::request_memory(cx, &config);
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

#[cfg(test)]
mod tests;
