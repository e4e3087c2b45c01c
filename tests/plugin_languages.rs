//! From nothing to a running plugin in Rust, JavaScript and Python, as a new author goes:
//! `switchyard plugin new --lang L`, `switchyard plugin build`, `switchyard plugin test`,
//! then a pipeline whose filter is that plugin — started twice, the second time from the
//! compilation cache. Routers and transforms in JavaScript and Python decide the sample
//! events as their Rust twins do, and an exception in a plugin becomes an error result
//! carrying its message.
//!
//! The JavaScript and Python toolchains (componentize-js, componentize-py) come from
//! `scripts/install-plugin-toolchains.sh`, which puts them in `.tools/bin`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use switchyard_test_support::{Options, Switchyard, switchyard_command};
use switchyard_tests::{client, read_jsonl, runtime, wait_until};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository")
}

/// PATH with the repository's `.tools/bin` first, where the JS and Python toolchains are
/// (scripts/install-plugin-toolchains.sh installs them; `plugin build` says so if absent).
fn tools_path() -> OsString {
    let bin = root().join(".tools/bin");
    let mut paths = vec![bin];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).expect("a PATH")
}

/// Runs the switchyard CLI in `dir`, with the toolchains on PATH and the plugins' cargo
/// target dir (the SDK and wit-bindgen are built there already by the plugin fixtures).
fn cli(dir: &Path, args: &[&str]) -> Output {
    switchyard_command()
        .args(args)
        .current_dir(dir)
        .env("PATH", tools_path())
        .env("CARGO_TARGET_DIR", root().join("plugins/target"))
        .env("XDG_CACHE_HOME", dir.join(".cache"))
        .output()
        .expect("running switchyard")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `plugin new NAME --world WORLD --lang LANG` in `dir`, then `plugin build`: the path of
/// the component.
fn scaffold_and_build(dir: &Path, lang: &str, world: &str) -> PathBuf {
    let name = format!("{lang}-{world}");
    let new = cli(
        dir,
        &[
            "plugin", "new", &name, "--world", world, "--lang", lang, "--dir", ".",
        ],
    );
    assert!(new.status.success(), "plugin new failed:\n{}", text(&new));
    let project = dir.join(&name);
    if lang == "rust" {
        // The versions the repository's plugins use: nothing new to download or build.
        std::fs::copy(
            root().join("plugins/Cargo.lock"),
            project.join("Cargo.lock"),
        )
        .expect("copying Cargo.lock");
    }
    let build = cli(&project, &["plugin", "build"]);
    let said = text(&build);
    assert!(build.status.success(), "plugin build failed:\n{said}");
    assert!(
        said.contains("it imports nothing switchyard does not grant"),
        "{said}"
    );
    let wasm = match lang {
        "rust" => root()
            .join("plugins/target/wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_"))),
        _ => project.join("dist").join(format!("{name}.wasm")),
    };
    assert!(wasm.is_file(), "{} was not built:\n{said}", wasm.display());
    wasm
}

/// `plugin test` of `wasm` on the project's sample events, with room for a JS or Python
/// plugin's cost per event: stdout and stderr.
fn plugin_test(dir: &Path, wasm: &Path, config: &str) -> Output {
    cli(
        dir,
        &[
            "plugin",
            "test",
            wasm.to_str().expect("utf-8 path"),
            "--input",
            root()
                .join("crates/cli/templates/plugin/events.jsonl")
                .to_str()
                .expect("utf-8 path"),
            "--config",
            config,
            "--fuel",
            "2000000000",
            "--timeout",
            "10s",
        ],
    )
}

/// What `plugin test` run by [`cli`] in `dir` stored in its compilation cache.
fn cache_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join(".cache/switchyard/plugin-cache"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn post(base: &str, body: &str) {
    let status = runtime().block_on(async {
        client()
            .post(format!("{base}/ingest/api"))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("switchyard answers")
            .status()
    });
    assert_eq!(status.as_u16(), 200, "POST {body}");
}

/// The whole path for one language: scaffold, build, `plugin test`, a pipeline that
/// filters with it, and a restart that takes the compiled code from the cache.
fn from_plugin_new_to_a_filtering_pipeline(lang: &str) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let wasm = scaffold_and_build(tmp.path(), lang, "filter");

    let tested = plugin_test(
        tmp.path(),
        &wasm,
        r#"{"field": "after.status", "equals": "paid"}"#,
    );
    let said = text(&tested);
    assert!(tested.status.success(), "{said}");
    assert_eq!(said.matches("\tkeep").count(), 1, "{said}");
    assert_eq!(said.matches("\tdrop").count(), 3, "{said}");
    assert!(said.contains("# per event: "), "{said}");
    // The template logs its config at init: the plugin's own log line shows.
    assert!(
        said.contains("keeping events whose after.status is"),
        "{said}"
    );

    let mut switchyard = Switchyard::start_with(
        &format!(
            r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.api]
type = "http"

[plugins.paid]
path = "{wasm}"
config = {{ field = "status", equals = "paid" }}
fuel = 2_000_000_000
memory = "128MiB"
timeout = "10s"

[pipelines.billing]
from = ["api"]
filters = ["paid"]
to = ["out"]

[sinks.out]
type = "file"
path = "{{dir}}/out.jsonl"
"#,
            wasm = wasm.display()
        ),
        Options {
            // The debug build's compiler takes a while over a 12–18 MB component.
            ready_timeout: Some(Duration::from_secs(600)),
            ..Options::default()
        },
    );
    let out = switchyard.dir().join("out.jsonl");
    post(&switchyard.url(), r#"{"status":"paid","n":1}"#);
    post(&switchyard.url(), r#"{"status":"open","n":2}"#);
    post(&switchyard.url(), r#"{"status":"paid","n":3}"#);
    assert!(
        wait_until(Duration::from_secs(60), || read_jsonl(&out).len() >= 2),
        "the paid events did not arrive; log:\n{}",
        switchyard.logs()
    );
    let got: Vec<_> = read_jsonl(&out)
        .iter()
        .map(|e| e["payload"]["n"].clone())
        .collect();
    assert_eq!(got, [1, 3], "the filter let through the wrong events");
    let loaded = |logs: &str| -> Vec<String> {
        logs.lines()
            .filter(|l| l.contains("plugin loaded"))
            .map(str::to_owned)
            .collect()
    };
    let first = loaded(&switchyard.logs());
    assert!(
        first.len() == 1 && !first[0].contains("from the cache"),
        "the first start should compile the plugin: {first:?}"
    );

    assert!(switchyard.terminate().success(), "{}", switchyard.logs());
    switchyard.restart();
    let both = loaded(&switchyard.logs());
    assert!(
        both.len() == 2 && both[1].contains("from the cache"),
        "the second start compiled the plugin again: {both:?}"
    );
    post(&switchyard.url(), r#"{"status":"paid","n":4}"#);
    assert!(
        wait_until(Duration::from_secs(60), || read_jsonl(&out).len() >= 3),
        "no delivery after the restart; log:\n{}",
        switchyard.logs()
    );
    assert_eq!(read_jsonl(&out)[2]["payload"]["n"], 4);
}

#[test]
fn a_rust_filter_goes_from_plugin_new_to_a_running_pipeline() {
    from_plugin_new_to_a_filtering_pipeline("rust");
}

#[test]
fn a_javascript_filter_goes_from_plugin_new_to_a_running_pipeline() {
    from_plugin_new_to_a_filtering_pipeline("js");
}

#[test]
fn a_python_filter_goes_from_plugin_new_to_a_running_pipeline() {
    from_plugin_new_to_a_filtering_pipeline("python");
}

/// Routers and transforms scaffolded in JS and Python decide the sample events (updates,
/// an insert, a message) like the Rust templates; an exception is an error with its
/// message, logged, not a bare trap.
fn routers_and_transforms_decide_like_their_rust_twins(lang: &str) {
    let tmp = tempfile::tempdir().expect("temp dir");
    {
        let router = scaffold_and_build(tmp.path(), lang, "router");
        let routes = r#"{"routes": {"update": ["changes"], "message": ["audit"]}}"#;
        let run = plugin_test(tmp.path(), &router, routes);
        let said = text(&run);
        assert!(run.status.success(), "{lang} router:\n{said}");
        let decisions: Vec<&str> = said
            .lines()
            .filter_map(|l| l.split_once('\t').map(|(_, d)| d))
            .collect();
        assert_eq!(
            decisions,
            ["-> changes", "drop", "-> changes", "-> audit"],
            "{lang} router:\n{said}"
        );
        // A typo in the config throws in `init` (the helpers' unknown-key check): the
        // plugin refuses to start with the exception's message, not a bare trap.
        let run = plugin_test(tmp.path(), &router, r#"{"routs": {}}"#);
        let said = text(&run);
        assert!(!run.status.success(), "{lang} router with a typo:\n{said}");
        assert!(
            said.contains("rejected its config: init: "),
            "{lang}:\n{said}"
        );
        assert!(said.contains("unknown key `routs`"), "{lang}:\n{said}");
        assert!(!said.contains("unreachable"), "{lang}:\n{said}");

        let transform = scaffold_and_build(tmp.path(), lang, "transform");
        let run = plugin_test(
            tmp.path(),
            &transform,
            r#"{"header": "x-table", "drop_before": true}"#,
        );
        let said = text(&run);
        assert!(run.status.success(), "{lang} transform:\n{said}");
        let outputs: Vec<serde_json::Value> = said
            .lines()
            .filter_map(|l| l.split_once("\t=> "))
            .map(|(_, json)| serde_json::from_str(json).expect("an output event"))
            .collect();
        assert_eq!(outputs.len(), 4, "{lang} transform:\n{said}");
        let tables: Vec<_> = outputs
            .iter()
            .map(|e| e["headers"]["x-table"].clone())
            .collect();
        assert_eq!(
            tables,
            [
                serde_json::json!("public.orders"),
                serde_json::json!("public.orders"),
                serde_json::json!("public.customers"),
                serde_json::Value::Null
            ],
            "{lang} transform:\n{said}"
        );
        assert!(outputs[0]["payload"].get("before").is_none(), "{said}");
        assert_eq!(outputs[0]["id"], "0/16B3748/0", "ids are kept: {said}");
        // timestamp-ms went through a BigInt (JS) or int (Python) and back unchanged.
        assert_eq!(outputs[0]["timestamp_ms"], 1764064800000_u64, "{said}");
    }
}

#[test]
fn javascript_routers_and_transforms_decide_like_their_rust_twins() {
    routers_and_transforms_decide_like_their_rust_twins("js");
}

#[test]
fn python_routers_and_transforms_decide_like_their_rust_twins() {
    routers_and_transforms_decide_like_their_rust_twins("python");
}

/// A toolchain's flags that leave an ungranted import are named before anything is
/// compiled: a JavaScript component built without `-d random`, a Python one without
/// `--stub-wasi`, are refused in milliseconds with the flag to add.
#[test]
fn an_ungranted_import_is_refused_before_compiling_with_the_flag_that_removes_it() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let new = cli(
        tmp.path(),
        &[
            "plugin", "new", "loose", "--world", "filter", "--lang", "js", "--dir", ".",
        ],
    );
    assert!(new.status.success(), "{}", text(&new));
    let project = tmp.path().join("loose");
    // Built by hand without `-d random`.
    let build = std::process::Command::new(root().join(".tools/bin/componentize-js"))
        .args([
            "plugin.js",
            "-w",
            "wit",
            "-n",
            "filter",
            "-d",
            "stdio",
            "clocks",
            "http",
            "fetch-event",
            "-o",
            "loose.wasm",
        ])
        .current_dir(&project)
        .output()
        .expect("running componentize-js");
    assert!(build.status.success(), "{}", text(&build));
    let run = plugin_test(tmp.path(), &project.join("loose.wasm"), "{}");
    let said = text(&run);
    assert!(!run.status.success(), "{said}");
    assert!(said.contains("wasi:random/random"), "{said}");
    assert!(said.contains("`-d random` removes this one"), "{said}");
    // Nothing was compiled: a compile would have stored the component in the cache.
    assert!(
        cache_entries(tmp.path()).is_empty(),
        "refused only after compiling: {:?}",
        cache_entries(tmp.path())
    );

    // Python without `--stub-wasi`: the runtime's sockets, clocks and randomness, refused
    // with the flag that stubs them all.
    let new = cli(
        tmp.path(),
        &[
            "plugin", "new", "open", "--world", "filter", "--lang", "python", "--dir", ".",
        ],
    );
    assert!(new.status.success(), "{}", text(&new));
    let project = tmp.path().join("open");
    let build = std::process::Command::new(root().join(".tools/bin/componentize-py"))
        .args([
            "-d",
            "wit",
            "-w",
            "filter",
            "componentize",
            "app",
            "-o",
            "open.wasm",
        ])
        .current_dir(&project)
        .output()
        .expect("running componentize-py");
    assert!(build.status.success(), "{}", text(&build));
    let run = plugin_test(tmp.path(), &project.join("open.wasm"), "{}");
    let said = text(&run);
    assert!(!run.status.success(), "{said}");
    assert!(said.contains("wasi:sockets/tcp"), "{said}");
    assert!(said.contains("--stub-wasi"), "{said}");
    assert!(
        cache_entries(tmp.path()).is_empty(),
        "refused only after compiling: {:?}",
        cache_entries(tmp.path())
    );
}
