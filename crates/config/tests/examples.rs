//! Every file in the repository's `config/` directory is a real, valid configuration.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use switchyard_config::{SinkConfig, SourceConfig, load_file_with_env};

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
    assert_eq!(sources, ["http", "kafka", "postgres_cdc", "queue"]);
    let mut sinks: Vec<&str> = config.sinks.values().map(SinkConfig::type_name).collect();
    sinks.sort();
    sinks.dedup();
    assert_eq!(sinks, ["file", "kafka", "queue", "stdout", "webhook"]);
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
    for line in markdown[start..].lines().skip(1) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if hashes > 0 && hashes <= level && line[hashes..].starts_with(' ') {
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
        // `plugin test --config` runs the same config as the pipeline.
        let flag = text
            .split("--config '")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .unwrap_or_else(|| panic!("{file}: no `plugin test --config` in {heading:?}"));
        let tested: serde_json::Value = serde_json::from_str(flag).expect("--config is JSON");
        if file == "README.md" {
            assert_eq!(
                tested, plugin.config,
                "{file}: --config and the TOML differ"
            );
        } else {
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
