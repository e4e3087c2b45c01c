//! `switchyard plugin new`: a user scaffolds a plugin and gets a crate ready to build.
//!
//! One test builds what it scaffolds, as a user would: native `cargo test` of each world
//! and the wasm32-wasip2 build of the filter, in the plugins' target dir so that the SDK
//! and wit-bindgen are not compiled again.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn switchyard(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(dir)
        // The compilation cache of `plugin test`, inside target/ rather than ~/.cache.
        .env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("running switchyard")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugin-sdk")
        .canonicalize()
        .expect("crates/plugin-sdk")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn each_world_gets_a_crate_wired_to_the_sdk() {
    let tmp = tempfile::tempdir().expect("temp dir");
    for (world, export) in [
        ("filter", "export_filter!(Plugin)"),
        ("router", "export_router!(Plugin)"),
        ("transform", "export_transform!(Plugin)"),
    ] {
        let name = format!("my-{world}");
        let output = switchyard(
            tmp.path(),
            &["plugin", "new", &name, "--world", world, "--dir", "mine"],
        );
        assert!(output.status.success(), "{}", stderr(&output));
        let dir = tmp.path().join("mine").join(&name);
        assert!(stdout(&output).contains(&format!("created {world} plugin `{name}`")));

        let manifest = read(&dir.join("Cargo.toml"));
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{manifest}"
        );
        assert!(manifest.contains("crate-type = [\"cdylib\"]"), "{manifest}");
        // Outside a checkout and without --sdk, the plugin gets its own copy of the SDK,
        // and the crate stands alone, so it carries its own release profile.
        assert!(
            manifest.contains(r#"switchyard-plugin-sdk = { path = "switchyard-plugin-sdk" }"#),
            "{manifest}"
        );
        assert!(manifest.contains("[profile.release]"), "{manifest}");
        let flags = read(&dir.join(".cargo/config.toml"));
        assert!(flags.contains("[target.wasm32-wasip2]"), "{flags}");
        assert!(flags.contains("-inline-threshold="), "{flags}");
        assert!(stdout(&output).contains(".cargo/config.toml"));
        assert!(stdout(&output).contains("its own copy of the SDK"));
        let sdk_manifest = read(&dir.join("switchyard-plugin-sdk/Cargo.toml"));
        assert!(
            sdk_manifest.contains("name = \"switchyard-plugin-sdk\""),
            "{sdk_manifest}"
        );
        assert!(!sdk_manifest.contains(".workspace"), "{sdk_manifest}");
        assert_eq!(
            read(&dir.join("switchyard-plugin-sdk/wit/plugin.wit")),
            read(&sdk().join("../../wit/plugin.wit"))
        );

        let lib = read(&dir.join("src/lib.rs"));
        assert!(lib.contains(export), "{lib}");
        assert!(lib.starts_with(&format!("//! {name} — a switchyard {world} plugin")));
        assert!(lib.contains("include_str!(\"../events.jsonl\")"));

        let readme = read(&dir.join("README.md"));
        assert!(readme.contains(&format!("my_{world}.wasm")), "{readme}");

        for file in ["Cargo.toml", "src/lib.rs", "README.md"] {
            let text = read(&dir.join(file));
            assert!(
                !text.contains("{{"),
                "{file} has an unfilled placeholder:\n{text}"
            );
        }
    }
}

#[test]
fn sample_events_are_wire_form_json_lines() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let output = switchyard(
        tmp.path(),
        &["plugin", "new", "sample", "--world", "filter"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let events = read(&tmp.path().join("plugins/sample/events.jsonl"));
    let events: Vec<serde_json::Value> = events
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON event per line"))
        .collect();
    assert!(events.len() >= 3);
    for event in &events {
        assert!(event["id"].is_string(), "{event}");
        assert!(event["kind"].is_string(), "{event}");
        assert!(event.get("payload").is_some(), "{event}");
    }
    assert!(events.iter().any(|e| e["payload"]["table"] == "orders"));
}

#[test]
fn inside_a_checkout_the_sdk_is_a_relative_path() {
    // A miniature checkout: crates/plugin-sdk next to plugins/.
    let tmp = tempfile::tempdir().expect("temp dir");
    let fake_sdk = tmp.path().join("crates/plugin-sdk");
    fs::create_dir_all(&fake_sdk).expect("mkdir");
    fs::write(
        fake_sdk.join("Cargo.toml"),
        "[package]\nname = \"switchyard-plugin-sdk\"\n",
    )
    .expect("write");
    let output = switchyard(tmp.path(), &["plugin", "new", "paid", "--world", "filter"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let manifest = read(&tmp.path().join("plugins/paid/Cargo.toml"));
    assert!(
        manifest.contains(r#"switchyard-plugin-sdk = { path = "../../crates/plugin-sdk" }"#),
        "{manifest}"
    );
    assert!(!stdout(&output).contains("copy of the SDK"));
    assert!(
        !tmp.path()
            .join("plugins/paid/switchyard-plugin-sdk")
            .exists()
    );
}

#[test]
fn an_explicit_sdk_path_is_used() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let sdk = sdk();
    let output = switchyard(
        tmp.path(),
        &[
            "plugin",
            "new",
            "paid",
            "--world",
            "filter",
            "--sdk",
            sdk.to_str().expect("utf-8 path"),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let manifest = read(&tmp.path().join("plugins/paid/Cargo.toml"));
    let line = manifest
        .lines()
        .find(|line| line.starts_with("switchyard-plugin-sdk = { path = \""))
        .unwrap_or_else(|| panic!("no SDK path dependency:\n{manifest}"));
    let path = line
        .trim_start_matches("switchyard-plugin-sdk = { path = \"")
        .trim_end_matches("\" }");
    let resolved = tmp.path().join("plugins/paid").join(path);
    assert_eq!(resolved.canonicalize().expect("the SDK path exists"), sdk);
}

#[test]
fn a_new_plugin_joins_the_workspace_it_lands_in() {
    let tmp = tempfile::tempdir().expect("temp dir");
    fs::create_dir_all(tmp.path().join("plugins")).expect("mkdir");
    fs::write(
        tmp.path().join("plugins/Cargo.toml"),
        "[workspace]\nresolver = \"3\"\n# keep me\nmembers = [\"fixtures/*\", \"examples/*\"]\n",
    )
    .expect("write");

    let output = switchyard(tmp.path(), &["plugin", "new", "paid", "--world", "filter"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let said = stdout(&output);
    assert!(
        said.contains("added \"paid\" to the workspace members in plugins/Cargo.toml"),
        "{said}"
    );
    let workspace = read(&tmp.path().join("plugins/Cargo.toml"));
    assert!(
        workspace.contains(r#"members = ["fixtures/*", "examples/*", "paid"]"#),
        "{workspace}"
    );
    assert!(workspace.contains("# keep me"), "{workspace}");
    // A member crate leaves profiles and compiler flags to the workspace.
    let manifest = read(&tmp.path().join("plugins/paid/Cargo.toml"));
    assert!(!manifest.contains("[profile.release]"), "{manifest}");
    assert!(!tmp.path().join("plugins/paid/.cargo").exists());
    assert!(!said.contains(".cargo/config.toml"), "{said}");

    // Under a listed directory there is nothing to add.
    let output = switchyard(
        tmp.path(),
        &[
            "plugin",
            "new",
            "tidy",
            "--world",
            "router",
            "--dir",
            "plugins/examples",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stdout(&output).contains("added"), "{}", stdout(&output));
    assert_eq!(read(&tmp.path().join("plugins/Cargo.toml")), workspace);
    // The next steps: one `cd` to the workspace root, then commands relative to it.
    let said = stdout(&output);
    assert_eq!(said.matches("cd plugins").count(), 1, "{said}");
    assert!(said.contains("\n  cd plugins\n"), "{said}");
    assert!(
        said.contains("\n  cargo build --release --target wasm32-wasip2 -p tidy\n"),
        "{said}"
    );
    assert!(
        said.contains(
            "switchyard plugin test target/wasm32-wasip2/release/tidy.wasm --input examples/tidy/events.jsonl"
        ),
        "{said}"
    );
}

/// The repository's `plugins/` workspace.
fn plugins_workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins")
        .canonicalize()
        .expect("plugins/")
}

/// `plugin test` of the component `crate_name` built in the plugins' target dir on
/// `input`: its stdout, after checking that it succeeded.
fn plugin_test(dir: &Path, crate_name: &str, input: &Path) -> String {
    let wasm = plugins_workspace()
        .join("target/wasm32-wasip2/release")
        .join(format!("{crate_name}.wasm"));
    let run = switchyard(
        dir,
        &[
            "plugin",
            "test",
            wasm.to_str().expect("utf-8 path"),
            "--input",
            input.to_str().expect("utf-8 path"),
        ],
    );
    let said = stdout(&run);
    assert!(run.status.success(), "{said}{}", stderr(&run));
    said
}

fn cargo(dir: &Path, args: &[&str]) -> Output {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(dir)
        // The plugins' own target dir: the SDK and wit-bindgen are already built there by
        // scripts/build-plugins.sh (wasm) and the example plugins' native tests.
        .env("CARGO_TARGET_DIR", plugins_workspace().join("target"))
        .output()
        .expect("running cargo")
}

/// The repository's guests and a standalone scaffold are compiled with the same flags
/// (they share `plugins/target` in the tests and the benchmark, where different flags
/// would rebuild each other's artifacts, and a plugin should build as the examples do).
#[test]
fn the_scaffold_compiles_with_the_flags_of_the_repositorys_guests() {
    let rustflags = |text: &str| {
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let template =
        read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/plugin/cargo-config.toml"));
    let repository = read(&plugins_workspace().join(".cargo/config.toml"));
    assert!(!rustflags(&template).is_empty(), "{template}");
    assert_eq!(rustflags(&template), rustflags(&repository));
}

/// What a new user does: `plugin new` in a plugins workspace, then `cargo test` and the
/// wasm build, with no edit in between; then the component runs under `plugin test`.
#[test]
fn scaffolded_plugins_pass_their_tests_and_build_for_wasm_as_they_are() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let plugins = tmp.path().join("plugins");
    fs::create_dir_all(&plugins).expect("mkdir");
    // The repository's workspace manifest (same profile, so the same artifacts) and lock
    // (same versions, nothing to download), without its members.
    let manifest = read(&plugins_workspace().join("Cargo.toml"));
    let members = r#"members = ["fixtures/*", "examples/*"]"#;
    assert!(manifest.contains(members), "{manifest}");
    fs::write(
        plugins.join("Cargo.toml"),
        manifest.replace(members, "members = []"),
    )
    .expect("write");
    fs::copy(
        plugins_workspace().join("Cargo.lock"),
        plugins.join("Cargo.lock"),
    )
    .expect("copy");
    // And its compiler flags: other flags would rebuild the shared wasm artifacts.
    fs::create_dir_all(plugins.join(".cargo")).expect("mkdir");
    fs::copy(
        plugins_workspace().join(".cargo/config.toml"),
        plugins.join(".cargo/config.toml"),
    )
    .expect("copy");
    let sdk = sdk();
    for world in ["filter", "router", "transform"] {
        let name = format!("my-{world}");
        let output = switchyard(
            tmp.path(),
            &[
                "plugin",
                "new",
                &name,
                "--world",
                world,
                "--sdk",
                sdk.to_str().expect("utf-8 path"),
            ],
        );
        assert!(output.status.success(), "{}", stderr(&output));
    }

    let test = cargo(
        &plugins,
        &[
            "test",
            "-p",
            "my-filter",
            "-p",
            "my-router",
            "-p",
            "my-transform",
        ],
    );
    assert!(
        test.status.success(),
        "the scaffolded crates' tests fail:\n{}{}",
        stdout(&test),
        stderr(&test)
    );
    let ran = stdout(&test);
    assert!(ran.matches("test result: ok").count() >= 3, "{ran}");
    assert!(!ran.contains("FAILED"), "{ran}");

    let build = cargo(
        &plugins,
        &[
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "my-filter",
        ],
    );
    assert!(
        build.status.success(),
        "the filter does not build for wasm32-wasip2 (scripts/build-plugins.sh installs the \
         target):\n{}",
        stderr(&build)
    );
    let said = plugin_test(
        tmp.path(),
        "my_filter",
        &plugins.join("my-filter/events.jsonl"),
    );
    assert_eq!(said.matches("\tkeep").count(), 1, "{said}");
    assert_eq!(said.matches("\tdrop").count(), 3, "{said}");
}

#[test]
fn bad_names_and_existing_directories_are_refused() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let output = switchyard(tmp.path(), &["plugin", "new", "Paid", "--world", "filter"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("invalid plugin name \"Paid\""),
        "{}",
        stderr(&output)
    );
    assert!(!tmp.path().join("plugins").exists());

    let taken = tmp.path().join("plugins/paid");
    fs::create_dir_all(&taken).expect("mkdir");
    fs::write(taken.join("keep.txt"), "mine").expect("write");
    let output = switchyard(tmp.path(), &["plugin", "new", "paid", "--world", "filter"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("already exists"),
        "{}",
        stderr(&output)
    );
    assert_eq!(read(&taken.join("keep.txt")), "mine");

    let output = switchyard(tmp.path(), &["plugin", "new", "x", "--world", "sorter"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("filter, router, transform"),
        "{}",
        stderr(&output)
    );
}

/// A user without a checkout: `plugin new` somewhere else, then the wasm build and
/// `plugin test`, with the SDK copy the scaffold carries.
#[test]
fn outside_a_checkout_the_scaffold_builds_with_its_own_copy_of_the_sdk() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let output = switchyard(
        tmp.path(),
        &[
            "plugin",
            "new",
            "standalone",
            "--world",
            "filter",
            "--dir",
            ".",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = tmp.path().join("standalone");
    // The versions the repository's plugins use: nothing new to download or build.
    fs::copy(
        plugins_workspace().join("Cargo.lock"),
        dir.join("Cargo.lock"),
    )
    .expect("copy");
    let build = cargo(&dir, &["build", "--release", "--target", "wasm32-wasip2"]);
    assert!(
        build.status.success(),
        "the scaffold with its SDK copy does not build:\n{}",
        stderr(&build)
    );
    let said = plugin_test(tmp.path(), "standalone", &dir.join("events.jsonl"));
    assert_eq!(said.matches("\tkeep").count(), 1, "{said}");
}
