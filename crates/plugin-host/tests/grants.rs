//! WASI capabilities exist only when a plugin's config grants them: `allow_env` for
//! environment variables, `allow_dirs` for read-only directories. Without the grant the
//! environment reads trap and a filesystem import is refused at load, naming it.

mod common;

use std::collections::BTreeMap;

use common::{config, event};
use switchyard_plugin_host::{LoadError, PluginConfig, PluginHost};

fn env_config(hidden: &str) -> PluginConfig {
    PluginConfig {
        config: serde_json::json!({ "var": "PATH", "hidden": hidden }),
        ..config("reads-env")
    }
}

#[test]
fn granted_environment_variables_are_visible_and_only_those() {
    let path = std::env::var("PATH").expect("PATH is set");
    // HOME is set in the test's environment but not granted: the plugin must not see it.
    assert!(
        std::env::var_os("HOME").is_some(),
        "the test needs HOME set"
    );
    let host = PluginHost::new().expect("host");
    let mut plugin = host
        .load(
            "env",
            &PluginConfig {
                allow_env: vec!["PATH".into()],
                ..env_config("HOME")
            },
        )
        .expect("a plugin granted PATH loads");
    let mut kept = event("e1", "{}");
    kept.source = path.into();
    let dropped = event("e2", "{}");
    let call = plugin.filter(&[kept, dropped]).expect("call");
    assert_eq!(call.output, vec![true, false]);
}

#[test]
fn without_allow_env_the_environment_is_empty() {
    let host = PluginHost::new().expect("host");
    let err = host
        .load("env", &env_config("HOME"))
        .expect_err("no allow_env: PATH is not there, so init fails");
    let LoadError::Init { message, .. } = &err else {
        panic!("expected init to reject its config, got {err:?}");
    };
    assert!(
        message.contains("PATH: environment variable not found"),
        "{message}"
    );
}

#[test]
fn a_granted_directory_is_readable_and_the_filesystem_import_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("allow-list"), "orders\nbilling\n").unwrap();
    let host = PluginHost::new().expect("host");
    let mut plugin = host
        .load(
            "reader",
            &PluginConfig {
                allow_dirs: BTreeMap::from([("/".into(), dir.path().display().to_string())]),
                ..config("imports-fs")
            },
        )
        .expect("a plugin granted a directory loads");
    let listed = event("e1", "{}"); // source "orders"
    let mut unlisted = event("e2", "{}");
    unlisted.source = "elsewhere".into();
    let call = plugin.filter(&[listed, unlisted]).expect("call");
    assert_eq!(call.output, vec![true, false]);
}

#[test]
fn a_filesystem_import_is_refused_when_only_the_environment_is_granted() {
    let host = PluginHost::new().expect("host");
    let err = host
        .load(
            "reader",
            &PluginConfig {
                allow_env: vec!["PATH".into()],
                ..config("imports-fs")
            },
        )
        .expect_err("allow_env does not grant the filesystem");
    let LoadError::ImportNotGranted { imports, .. } = &err else {
        panic!("expected ImportNotGranted, got {err:?}");
    };
    assert!(
        imports.iter().any(|i| i.starts_with("wasi:filesystem/")),
        "{imports:?}"
    );
    assert!(err.to_string().contains("allow_dirs"), "{err}");
}

#[test]
fn a_granted_directory_that_does_not_exist_fails_the_load() {
    let host = PluginHost::new().expect("host");
    let err = host
        .load(
            "reader",
            &PluginConfig {
                allow_dirs: BTreeMap::from([("/data".into(), "/nonexistent/switchyard".into())]),
                ..config("imports-fs")
            },
        )
        .expect_err("the directory is missing");
    assert!(matches!(err, LoadError::Grant { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/switchyard"), "{err}");
}
