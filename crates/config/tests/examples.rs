//! Every file in the repository's `config/` directory is a real, valid configuration,
//! and `config/reference.toml` documents exactly the keys of the config types.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Toml, Yaml};
use serde_json::Value;
use switchyard_config::schema::fields;
use switchyard_config::{
    Config, LogOutputConfig, PipelineConfig, PluginConfig, QueueConfig, RetryConfig, ServerConfig,
    ServerTlsConfig, SinkConfig, SinkKind, SourceConfig, SourceKind, load_file_with_env,
};

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

/// The secrets the examples reference with `${VAR}`.
fn example_env() -> HashMap<String, String> {
    [
        ("SWITCHYARD_ADMIN_TOKEN", "admin-secret-0123456789"),
        ("API_TOKEN", "api-secret-0123456789"),
        ("PG_PASSWORD", "pg-secret"),
        ("WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("AUDIT_TOKEN", "audit-secret"),
        ("INGEST_TOKEN", "ingest-secret-0123456789"),
        ("METRICS_TOKEN", "metrics-secret-0123456789"),
        ("RABBIT_PASSWORD", "rabbit-secret"),
        ("MQTT_PASSWORD", "mqtt-secret"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn every_example_config_validates() {
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(config_dir()).expect("config/ exists") {
        let path = entry.expect("readable entry").path();
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(extension, "toml" | "yaml" | "yml") {
            continue;
        }
        if let Err(error) = load_file_with_env(&path, &example_env()) {
            panic!("{} does not validate:\n{error}", path.display());
        }
        // serde reads the file as the same types, with no key left over.
        let unknown = unknown_keys(&tree(&path));
        assert!(
            unknown.is_empty(),
            "{}:\n{}",
            path.display(),
            unknown.join("\n")
        );
        checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    checked.sort();
    for expected in [
        "postgres.toml",
        "quickstart.toml",
        "quickstart.yaml",
        "reference.toml",
        "webhook.toml",
    ] {
        assert!(
            checked.iter().any(|name| name == expected),
            "{expected} missing: {checked:?}"
        );
    }
}

#[test]
fn reference_names_every_source_and_sink_type() {
    let config = load_file_with_env(&config_dir().join("reference.toml"), &example_env()).unwrap();
    let mut sources: Vec<&str> = config
        .sources
        .values()
        .map(SourceConfig::type_name)
        .collect();
    sources.sort();
    sources.dedup();
    let mut every_source = SourceKind::ALL.map(SourceKind::name);
    every_source.sort();
    assert_eq!(sources, every_source);
    let mut sinks: Vec<&str> = config.sinks.values().map(SinkConfig::type_name).collect();
    sinks.sort();
    sinks.dedup();
    let mut every_sink = SinkKind::ALL.map(SinkKind::name);
    every_sink.sort();
    assert_eq!(sinks, every_sink);
    assert!(!config.plugins.is_empty());
    assert_eq!(
        config.server.admin_token.as_deref(),
        Some("admin-secret-0123456789")
    );
}

#[test]
fn reference_needs_its_secrets() {
    let error = load_file_with_env(&config_dir().join("reference.toml"), &HashMap::new())
        .expect_err("secrets are missing");
    let text = error.to_string();
    assert!(
        text.contains(
            "server.admin_token: environment variable `SWITCHYARD_ADMIN_TOKEN` is not set"
        ),
        "{text}"
    );
    assert!(text.ends_with("reference.toml"), "{text}");
}

#[test]
fn quickstart_yaml_is_the_twin_of_quickstart_toml() {
    let toml = load_file_with_env(&config_dir().join("quickstart.toml"), &HashMap::new()).unwrap();
    let yaml = load_file_with_env(&config_dir().join("quickstart.yaml"), &HashMap::new()).unwrap();
    assert_eq!(format!("{toml:?}"), format!("{yaml:?}"));
    assert_eq!(toml.server.listen, "127.0.0.1:8080");
    assert_eq!(toml.queues["events"].partitions, 2);
    assert_eq!(toml.pipelines["deliver"].to, ["console", "archive"]);
}

/// The ```toml blocks of a Markdown section: from its heading to the next heading of the
/// same or a higher level.
fn toml_blocks(markdown: &str, heading: &str) -> Vec<String> {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let start = markdown
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} section"));
    let mut section = String::new();
    let mut in_code = false;
    for line in markdown[start..].lines().skip(1) {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        // A `# comment` in a shell block is not a heading.
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !in_code && hashes > 0 && hashes <= level && line[hashes..].starts_with(' ') {
            break;
        }
        section.push_str(line);
        section.push('\n');
    }
    section
        .split("```toml\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap_or_default().to_owned())
        .collect()
}

/// The pipelines a user copies from the plugin walk-throughs are complete, valid configs:
/// every source and sink they use is declared.
#[test]
fn the_first_plugin_walk_throughs_are_complete_configs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for (file, heading) in [
        ("README.md", "## Write your first plugin"),
        ("docs/plugins.md", "### 6. Put it in a pipeline"),
    ] {
        let text = std::fs::read_to_string(root.join(file)).expect("readable");
        let blocks = toml_blocks(&text, heading);
        assert_eq!(blocks.len(), 1, "{file}: one TOML block under {heading:?}");
        let config = switchyard_config::load_str_with_env(&blocks[0], false, &HashMap::new())
            .unwrap_or_else(|e| panic!("the TOML of {file} {heading:?} is not valid:\n{e}"));
        let plugin = &config.plugins["paid_orders"];
        assert_eq!(plugin.config["field"], "after.status", "{file}");
        if file == "README.md" {
            // The README's `plugin test` runs the scaffold on its defaults (the templates
            // keep `after.status` == "paid"), which the pipeline spells out.
            assert_eq!(
                plugin.config,
                serde_json::json!({"field": "after.status", "equals": "paid"}),
                "{file}: the pipeline's config is not what `plugin test` ran"
            );
            for template in ["filter.rs", "js/filter.js", "python/filter.py"] {
                let code = std::fs::read_to_string(
                    root.join("crates/cli/templates/plugin").join(template),
                )
                .expect("a filter template");
                assert!(
                    code.contains("after.status") && code.contains("paid"),
                    "{template} no longer defaults to after.status == paid: update README.md"
                );
            }
        } else {
            // `plugin test --config` runs the same config as the pipeline.
            let flag = text
                .split("--config '")
                .nth(1)
                .and_then(|rest| rest.split('\'').next())
                .unwrap_or_else(|| panic!("{file}: no `plugin test --config` in {heading:?}"));
            let tested: serde_json::Value = serde_json::from_str(flag).expect("--config is JSON");
            assert_eq!(tested["field"], plugin.config["field"], "{file}");
        }
        for source in config.pipelines["orders"].from.iter() {
            assert_eq!(
                config.sources[source].type_name(),
                "http",
                "{file}: the walk-through posts to an http source"
            );
        }
    }
}

/// A config file as the generic tree the loader starts from, before `${VAR}` substitution
/// (serde reads the values as text, so the references need no environment).
fn tree(path: &Path) -> Value {
    let figment = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => Figment::from(Toml::file_exact(path)),
        _ => Figment::from(Yaml::file_exact(path)),
    };
    figment
        .extract()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn entries<'v>(tree: &'v Value, section: &str) -> Vec<(&'v String, &'v Value)> {
    tree.get(section)
        .and_then(Value::as_object)
        .map(|map| map.iter().collect())
        .unwrap_or_default()
}

/// Every table of `tree` read by serde as its type (`deny_unknown_fields`): one line per
/// table holding a key its type does not have, or a value of the wrong shape.
fn unknown_keys(tree: &Value) -> Vec<String> {
    fn read<T: serde::de::DeserializeOwned>(at: &str, value: &Value, problems: &mut Vec<String>) {
        if let Err(error) = serde_json::from_value::<T>(value.clone()) {
            problems.push(format!("{at}: {error}"));
        }
    }
    let mut problems = Vec::new();
    for (section, value) in tree.as_object().into_iter().flatten() {
        match section.as_str() {
            "server" => read::<ServerConfig>("[server]", value, &mut problems),
            "log" => read::<LogOutputConfig>("[log]", value, &mut problems),
            _ => {}
        }
    }
    for (name, value) in entries(tree, "queues") {
        read::<QueueConfig>(&format!("[queues.{name}]"), value, &mut problems);
    }
    for (name, value) in entries(tree, "sources") {
        read::<SourceConfig>(&format!("[sources.{name}]"), value, &mut problems);
    }
    for (name, value) in entries(tree, "plugins") {
        read::<PluginConfig>(&format!("[plugins.{name}]"), value, &mut problems);
    }
    for (name, value) in entries(tree, "pipelines") {
        read::<PipelineConfig>(&format!("[pipelines.{name}]"), value, &mut problems);
    }
    for (name, value) in entries(tree, "sinks") {
        read::<SinkConfig>(&format!("[sinks.{name}]"), value, &mut problems);
    }
    read::<Config>("the file", tree, &mut problems);
    problems
}

/// The fields of every config type that no table of `reference` shows: one line per
/// type and field. A type is documented by the union of the keys of its tables (e.g.
/// all `[sources.*]` with `type = "http"`).
fn undocumented(reference: &Value) -> Vec<String> {
    let keys = |tables: &[&Value]| -> BTreeSet<String> {
        tables
            .iter()
            .filter_map(|table| table.as_object())
            .flat_map(|map| map.keys().cloned())
            .collect()
    };
    let of_type = |section: &str, kind: &str| -> Vec<&Value> {
        entries(reference, section)
            .into_iter()
            .map(|(_, table)| table)
            .filter(|table| table.get("type").and_then(Value::as_str) == Some(kind))
            .collect()
    };
    let all = |section: &str| -> Vec<&Value> {
        entries(reference, section)
            .into_iter()
            .map(|(_, table)| table)
            .collect()
    };
    let server = reference.get("server").into_iter().collect::<Vec<_>>();
    let tls: Vec<&Value> = server.iter().filter_map(|s| s.get("tls")).collect();
    let retries: Vec<&Value> = all("sinks")
        .into_iter()
        .filter_map(|sink| sink.get("retry"))
        .collect();
    let with_type = |keys: &[&'static str]| -> Vec<&'static str> {
        std::iter::once("type")
            .chain(keys.iter().copied())
            .collect()
    };

    let mut expected: Vec<(String, BTreeSet<String>, Vec<&'static str>)> = vec![
        (
            "the file".into(),
            keys(&[reference]),
            fields::<Config>().to_vec(),
        ),
        (
            "[server]".into(),
            keys(&server),
            fields::<ServerConfig>().to_vec(),
        ),
        (
            "server.tls".into(),
            keys(&tls),
            fields::<ServerTlsConfig>().to_vec(),
        ),
        (
            "[log]".into(),
            keys(&reference.get("log").into_iter().collect::<Vec<_>>()),
            fields::<LogOutputConfig>().to_vec(),
        ),
        (
            "[queues.*]".into(),
            keys(&all("queues")),
            fields::<QueueConfig>().to_vec(),
        ),
        (
            "[plugins.*]".into(),
            keys(&all("plugins")),
            fields::<PluginConfig>().to_vec(),
        ),
        (
            "[pipelines.*]".into(),
            keys(&all("pipelines")),
            fields::<PipelineConfig>().to_vec(),
        ),
        (
            "retry of a sink".into(),
            keys(&retries),
            fields::<RetryConfig>().to_vec(),
        ),
    ];
    for kind in SourceKind::ALL {
        expected.push((
            format!("[sources.*] with type = {:?}", kind.name()),
            keys(&of_type("sources", kind.name())),
            with_type(kind.fields()),
        ));
    }
    for kind in SinkKind::ALL {
        expected.push((
            format!("[sinks.*] with type = {:?}", kind.name()),
            keys(&of_type("sinks", kind.name())),
            with_type(kind.fields()),
        ));
    }
    expected
        .into_iter()
        .flat_map(|(at, documented, fields)| {
            fields
                .into_iter()
                .filter(move |field| !documented.contains(*field))
                .map(move |field| format!("{at}: `{field}` is not documented"))
        })
        .collect()
}

/// `config/reference.toml` is the list of every key: each key it shows exists in its
/// type, and each field of every type (every source and sink type included) is shown
/// in at least one table of that type.
#[test]
fn reference_documents_exactly_the_keys_of_the_types() {
    let reference = tree(&config_dir().join("reference.toml"));
    let unknown = unknown_keys(&reference);
    assert!(
        unknown.is_empty(),
        "config/reference.toml shows keys the types do not have:\n{}",
        unknown.join("\n")
    );
    let missing = undocumented(&reference);
    assert!(
        missing.is_empty(),
        "add these keys to config/reference.toml, with their default and what they do:\n{}",
        missing.join("\n")
    );
}

/// The reference check fails when a key is missing from the reference or unknown to the
/// types.
#[test]
fn the_reference_check_sees_missing_and_unknown_keys() {
    let mut reference = tree(&config_dir().join("reference.toml"));
    let api = reference["sources"]["api"]
        .as_object_mut()
        .expect("[sources.api] is an http source");
    api.remove("max_events");
    reference["server"]["tls"]
        .as_object_mut()
        .expect("server.tls")
        .remove("key");
    let missing = undocumented(&reference);
    for expected in [
        "server.tls: `key` is not documented",
        "[sources.*] with type = \"http\": `max_events` is not documented",
    ] {
        assert!(missing.iter().any(|m| m == expected), "{missing:#?}");
    }
    reference["sinks"]["console"]["colour"] = Value::Bool(true);
    reference["queues"]["tasks"]["partitons"] = Value::from(2);
    let unknown = unknown_keys(&reference);
    assert!(
        unknown[0].starts_with("[queues.tasks]: ") && unknown[0].contains("partitons"),
        "{unknown:#?}"
    );
    assert!(
        unknown[1].starts_with("[sinks.console]: ") && unknown[1].contains("colour"),
        "{unknown:#?}"
    );
}
