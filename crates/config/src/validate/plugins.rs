//! `[plugins.NAME]`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::walk::{Ctx, Table, join, kind};
use crate::PluginConfig;

pub(super) fn plugin(cx: &mut Ctx<'_>, path: &str, value: &Value) -> Option<PluginConfig> {
    let table = Table::of::<PluginConfig>(cx, path, value)?;
    let on_error = table
        .choice_of(cx, "on_error")
        .unwrap_or(PluginConfig::DEFAULT_ON_ERROR);
    let plugin = PluginConfig {
        path: table
            .required_string(cx, "path", "the plugin's .wasm component file")
            .unwrap_or_default(),
        config: table
            .get("config")
            .cloned()
            .unwrap_or_else(|| PluginConfig::default().config),
        fuel: table
            .integer(cx, "fuel", 1, "; a plugin without fuel cannot run")
            .unwrap_or(PluginConfig::DEFAULT_FUEL),
        memory: table
            .size(cx, "memory")
            .unwrap_or(PluginConfig::DEFAULT_MEMORY),
        timeout: table
            .duration(cx, "timeout", false)
            .unwrap_or(PluginConfig::DEFAULT_TIMEOUT),
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
