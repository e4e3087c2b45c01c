//! `switchyard plugin`: work on WebAssembly plugins.
//!
//! `new` writes a crate that builds for wasm32-wasip2 as it is: Cargo.toml, `src/lib.rs`
//! on `switchyard-plugin-sdk` with unit tests, sample `events.jsonl` and a README, and,
//! outside a cargo workspace, `.cargo/config.toml` with the guest's compiler flags. The
//! templates live in `crates/cli/templates/plugin/`.

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Subcommand, ValueEnum};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Create a plugin project in DIR/NAME (default plugins/NAME) that builds right away,
    /// with sample events.jsonl and a README:
    ///   rust    Cargo.toml, src/lib.rs on switchyard-plugin-sdk, with unit tests (and,
    ///           outside a workspace, .cargo/config.toml with the guest's compiler flags)
    ///   js      package.json, plugin.js and the JavaScript helpers (switchyard-plugin.js)
    ///   python  pyproject.toml, app.py, test_app.py and the helpers (switchyard_plugin.py)
    ///
    /// Example: switchyard plugin new paid-orders --world filter --lang python
    #[command(verbatim_doc_comment)]
    New {
        /// Project name: lowercase letters, digits, `-` and `_`, starting with a letter.
        name: String,
        /// The world the plugin exports: keep/drop events, pick sinks, or rewrite events.
        #[arg(long, value_enum)]
        world: World,
        /// The language to write it in.
        #[arg(long, value_enum, default_value_t = Lang::Rust)]
        lang: Lang,
        /// Directory to create the plugin in; the plugin goes to DIR/NAME.
        #[arg(long, default_value = "plugins")]
        dir: PathBuf,
        /// Rust only: the SDK crate (crates/plugin-sdk of a switchyard checkout). Found on
        /// its own when DIR is inside a checkout; otherwise the plugin gets its own copy of
        /// the SDK (from this binary) in DIR/NAME/switchyard-plugin-sdk.
        #[arg(long, value_name = "PATH")]
        sdk: Option<PathBuf>,
    },
    /// Build the plugin project in DIR (default: here) into a component, with its
    /// language's toolchain and the flags switchyard needs: cargo for Cargo.toml,
    /// componentize-js for package.json, componentize-py for pyproject.toml. Checks the
    /// result's imports and prints the `plugin test` command to run next.
    Build {
        /// The project directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run a plugin on sample events and print each event's decision, plus the fuel and
    /// time of every call — under the same limits, batch size and splitting as in a
    /// pipeline. The plugin's own log lines go to stderr (RUST_LOG narrows them, e.g.
    /// RUST_LOG=switchyard::plugin=info).
    ///
    /// Example: switchyard plugin test plugins/target/wasm32-wasip2/release/filter_by_field.wasm
    ///   --input events.jsonl --config '{"field": "status", "equals": "paid"}'
    #[command(verbatim_doc_comment)]
    Test {
        /// The component (.wasm built for wasm32-wasip2).
        file: PathBuf,
        /// Events, one per line, in the JSON form switchyard writes (`{"id", "payload", ...}`).
        #[arg(long)]
        input: PathBuf,
        /// The plugin's config as JSON (what `[plugins.NAME].config` holds).
        #[arg(long)]
        config: Option<String>,
        /// Events per batch: what a pipeline hands the plugin at once (up to 512 from a
        /// queue or HTTP source; a Kafka or Postgres source up to the pipeline's
        /// `max_in_flight`). A call that runs out of fuel or memory is retried as two
        /// halves, as in a pipeline.
        #[arg(long, default_value_t = switchyard_runtime::feed::READ_BATCH)]
        batch: usize,
        /// Fuel per call (`fuel` of [plugins.NAME]).
        #[arg(long, default_value_t = switchyard_config::PluginConfig::default().fuel)]
        fuel: u64,
        /// Memory limit, e.g. 64MiB.
        #[arg(long, default_value = "64MiB")]
        memory: String,
        /// Deadline per call, e.g. 100ms.
        #[arg(long, default_value = "100ms")]
        timeout: String,
        /// Keep running: test again whenever the component (e.g. after `plugin build`)
        /// or the input file changes.
        #[arg(long)]
        watch: bool,
    },
    /// Print a component's world, exports and imports, marking imports switchyard would
    /// refuse.
    Inspect {
        /// The component (.wasm).
        file: PathBuf,
    },
}

/// The language of a new plugin.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum World {
    Filter,
    Router,
    Transform,
}

impl World {
    fn name(self) -> &'static str {
        match self {
            World::Filter => "filter",
            World::Router => "router",
            World::Transform => "transform",
        }
    }

    fn lib_template(self) -> &'static str {
        match self {
            World::Filter => include_str!("../templates/plugin/filter.rs"),
            World::Router => include_str!("../templates/plugin/router.rs"),
            World::Transform => include_str!("../templates/plugin/transform.rs"),
        }
    }

    fn js_template(self) -> &'static str {
        match self {
            World::Filter => include_str!("../templates/plugin/js/filter.js"),
            World::Router => include_str!("../templates/plugin/js/router.js"),
            World::Transform => include_str!("../templates/plugin/js/transform.js"),
        }
    }

    fn python_template(self) -> (&'static str, &'static str) {
        match self {
            World::Filter => (
                include_str!("../templates/plugin/python/filter.py"),
                include_str!("../templates/plugin/python/test_filter.py"),
            ),
            World::Router => (
                include_str!("../templates/plugin/python/router.py"),
                include_str!("../templates/plugin/python/test_router.py"),
            ),
            World::Transform => (
                include_str!("../templates/plugin/python/transform.py"),
                include_str!("../templates/plugin/python/test_transform.py"),
            ),
        }
    }

    /// The plugin's config in the README's example, as a TOML inline table.
    fn config_example(self) -> &'static str {
        match self {
            World::Filter => r#"{ field = "after.status", equals = "paid" }"#,
            World::Router => r#"{ routes = { update = ["console"] }, default = [] }"#,
            World::Transform => r#"{ header = "x-table", drop_before = true }"#,
        }
    }

    /// How a pipeline refers to the plugin.
    fn pipeline_line(self, plugin: &str) -> String {
        match self {
            World::Filter => format!("filters = [\"{plugin}\"]"),
            World::Router => format!("router = \"{plugin}\""),
            World::Transform => format!("transforms = [\"{plugin}\"]"),
        }
    }
}

/// The SDK's sources, built into this binary: a plugin made outside a checkout gets its
/// own copy (the SDK is not published on crates.io). Paths are relative to the copy.
const SDK_SOURCES: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("../../plugin-sdk/src/lib.rs")),
    (
        "src/batch.rs",
        include_str!("../../plugin-sdk/src/batch.rs"),
    ),
    (
        "src/bindings.rs",
        include_str!("../../plugin-sdk/src/bindings.rs"),
    ),
    (
        "src/config.rs",
        include_str!("../../plugin-sdk/src/config.rs"),
    ),
    (
        "src/event.rs",
        include_str!("../../plugin-sdk/src/event.rs"),
    ),
    (
        "src/filter.rs",
        include_str!("../../plugin-sdk/src/filter.rs"),
    ),
    ("src/json.rs", include_str!("../../plugin-sdk/src/json.rs")),
    ("src/log.rs", include_str!("../../plugin-sdk/src/log.rs")),
    (
        "src/router.rs",
        include_str!("../../plugin-sdk/src/router.rs"),
    ),
    (
        "src/transform.rs",
        include_str!("../../plugin-sdk/src/transform.rs"),
    ),
    ("wit/plugin.wit", include_str!("../../../wit/plugin.wit")),
];
const SDK_MANIFEST: &str = include_str!("../../plugin-sdk/Cargo.toml");
/// Where the copy of the SDK goes, inside the plugin's directory.
const VENDORED_SDK: &str = "switchyard-plugin-sdk";
const WASM_TARGET: &str = "wasm32-wasip2";

pub fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::New {
            name,
            world,
            lang,
            dir,
            sdk,
        } => match lang {
            Lang::Rust => new(&name, world, &dir, sdk.as_deref()),
            Lang::Js | Lang::Python => {
                if sdk.is_some() {
                    bail!(
                        "--sdk is for Rust plugins; a {lang:?} plugin gets its helpers as a file"
                    );
                }
                new_script(&name, world, lang, &dir)
            }
        },
        PluginCommand::Build { dir } => crate::plugin_build::build(&dir),
        PluginCommand::Test {
            file,
            input,
            config,
            batch,
            fuel,
            memory,
            timeout,
            watch,
        } => crate::plugin_run::test(crate::plugin_run::TestArgs {
            file,
            input,
            config,
            batch,
            fuel,
            memory: switchyard_config::ByteSize(
                switchyard_config::units::parse_size(&memory)
                    .map_err(|e| anyhow::anyhow!("--memory: {e}"))?,
            ),
            timeout: switchyard_config::units::parse_duration(&timeout)
                .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?,
            watch,
        }),
        PluginCommand::Inspect { file } => crate::plugin_run::inspect(&file),
    }
}

fn new(name: &str, world: World, dir: &Path, sdk: Option<&Path>) -> anyhow::Result<ExitCode> {
    check_name(name)?;
    let crate_name = name.replace('-', "_");
    let plugin_dir = dir.join(name);
    if plugin_dir.exists() && fs::read_dir(&plugin_dir).map_or(true, |mut d| d.next().is_some()) {
        bail!(
            "{} already exists and is not empty: pick another NAME or --dir",
            plugin_dir.display()
        );
    }
    fs::create_dir_all(plugin_dir.join("src"))
        .with_context(|| format!("creating {}", plugin_dir.display()))?;
    let absolute = plugin_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", plugin_dir.display()))?;

    let workspace = enclosing_workspace(&absolute)?;
    let (sdk_dependency, sdk_found) = sdk_dependency(&absolute, sdk)?;
    if !sdk_found {
        write_sdk(&plugin_dir.join(VENDORED_SDK))?;
    }
    // A crate of its own carries its release profile and its compiler flags; in a
    // workspace both belong to the workspace (cargo ignores a member's profile, and reads
    // `.cargo/config.toml` from where it runs).
    let (profile, cargo_config) = match workspace {
        Some(_) => ("", None),
        None => (
            include_str!("../templates/plugin/profile.toml.tmpl"),
            Some(include_str!("../templates/plugin/cargo-config.toml")),
        ),
    };
    let target_root = workspace.as_ref().map_or(&absolute, |w| &w.root);
    let wasm = target_root
        .join("target")
        .join(WASM_TARGET)
        .join("release")
        .join(format!("{crate_name}.wasm"));
    let wasm = display_relative(&wasm);

    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{crate_name}}", &crate_name)
            .replace("{{world}}", world.name())
            .replace("{{sdk}}", &sdk_dependency)
            .replace("{{profile}}", profile)
            .replace("{{wasm_path}}", &wasm)
            .replace("{{config_example}}", world.config_example())
            .replace("{{pipeline_line}}", &world.pipeline_line(&crate_name))
    };
    let files = [
        (
            "Cargo.toml",
            fill(include_str!("../templates/plugin/Cargo.toml.tmpl")),
        ),
        ("src/lib.rs", fill(world.lib_template())),
        (
            "events.jsonl",
            include_str!("../templates/plugin/events.jsonl").to_owned(),
        ),
        (
            "README.md",
            fill(include_str!("../templates/plugin/README.md")),
        ),
    ];
    for (file, contents) in &files {
        let path = plugin_dir.join(file);
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(contents) = cargo_config {
        let path = plugin_dir.join(".cargo").join("config.toml");
        fs::create_dir_all(plugin_dir.join(".cargo"))
            .and_then(|()| fs::write(&path, contents))
            .with_context(|| format!("writing {}", path.display()))?;
    }

    println!(
        "created {} plugin `{name}` in {}: Cargo.toml, src/lib.rs, events.jsonl, README.md{}",
        world.name(),
        plugin_dir.display(),
        if cargo_config.is_some() {
            ", .cargo/config.toml"
        } else {
            ""
        }
    );
    if !sdk_found {
        println!(
            "note: no switchyard checkout around {}, so it has its own copy of the SDK \
             (version {}, from this switchyard) in {VENDORED_SDK}/; \
             pass --sdk PATH/crates/plugin-sdk to use a checkout's instead",
            plugin_dir.display(),
            env!("CARGO_PKG_VERSION"),
        );
    }
    let cd = match display_relative(target_root) {
        dir if Path::new(&dir) == target_root && is_cwd(target_root) => String::new(),
        dir => format!("cd {dir} && "),
    };
    if let Some(workspace) = &workspace
        && !workspace.has_member(&absolute)
    {
        // Like `cargo new`: cargo refuses to build a crate inside a workspace that does not
        // list it, so list it.
        let manifest = workspace.root.join("Cargo.toml");
        let member = relative_path(&workspace.root, &absolute)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        add_member(&manifest, &member).with_context(|| {
            format!(
                "adding \"{member}\" to `members` in {}; add it by hand, or pick a --dir \
                 outside the workspace",
                manifest.display()
            )
        })?;
        println!(
            "added \"{member}\" to the workspace members in {}",
            display_relative(&manifest)
        );
    }
    println!("next:");
    println!("  rustup target add {WASM_TARGET}   # once");
    // After `cd` into the workspace root, paths are relative to it.
    let (wasm, events) = match cd.is_empty() {
        true => (wasm, display_relative(&absolute.join("events.jsonl"))),
        false => {
            println!("  {}", cd.trim_end_matches(" && "));
            let from_root = |p: &Path| relative_path(target_root, p).display().to_string();
            (
                from_root(
                    &target_root
                        .join("target")
                        .join(WASM_TARGET)
                        .join("release")
                        .join(format!("{crate_name}.wasm")),
                ),
                from_root(&absolute.join("events.jsonl")),
            )
        }
    };
    println!("  cargo test -p {name}   # the plugin's logic, natively");
    println!("  cargo build --release --target {WASM_TARGET} -p {name}");
    println!("  switchyard plugin test {wasm} --input {events}");
    Ok(ExitCode::SUCCESS)
}

/// `plugin new --lang js|python`: the plugin, the helpers and the WIT as files of the
/// project (from this binary), built by `switchyard plugin build`.
fn new_script(name: &str, world: World, lang: Lang, dir: &Path) -> anyhow::Result<ExitCode> {
    use crate::plugin_build::{COMPONENTIZE_JS, COMPONENTIZE_PY};
    check_name(name)?;
    let plugin_dir = dir.join(name);
    if plugin_dir.exists() && fs::read_dir(&plugin_dir).map_or(true, |mut d| d.next().is_some()) {
        bail!(
            "{} already exists and is not empty: pick another NAME or --dir",
            plugin_dir.display()
        );
    }
    fs::create_dir_all(plugin_dir.join("wit"))
        .with_context(|| format!("creating {}", plugin_dir.display()))?;
    let wasm = format!("{}/dist/{name}.wasm", plugin_dir.display());
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{world}}", world.name())
            .replace("{{wasm_path}}", &wasm)
            .replace("{{config_example}}", world.config_example())
            .replace("{{pipeline_line}}", &world.pipeline_line(name))
            .replace("{{componentize_js}}", COMPONENTIZE_JS)
            .replace("{{componentize_py}}", COMPONENTIZE_PY)
    };
    let mut files = vec![
        (
            "wit/plugin.wit",
            include_str!("../../../wit/plugin.wit").to_owned(),
        ),
        (
            "events.jsonl",
            include_str!("../templates/plugin/events.jsonl").to_owned(),
        ),
    ];
    let (language, install) = match lang {
        Lang::Js => {
            files.extend([
                (
                    "package.json",
                    fill(include_str!("../templates/plugin/js/package.json.tmpl")),
                ),
                ("plugin.js", fill(world.js_template())),
                (
                    "switchyard-plugin.js",
                    include_str!("../../plugin-sdk/js/switchyard-plugin.js").to_owned(),
                ),
                (
                    "README.md",
                    fill(include_str!("../templates/plugin/js/README.md")),
                ),
                (".gitignore", "node_modules/\ndist/\n".to_owned()),
            ]);
            (
                "JavaScript",
                "npm install   # once: componentize-js, the build tool".to_owned(),
            )
        }
        Lang::Python => {
            let (app, test) = world.python_template();
            files.extend([
                (
                    "pyproject.toml",
                    fill(include_str!(
                        "../templates/plugin/python/pyproject.toml.tmpl"
                    )),
                ),
                ("app.py", fill(app)),
                ("test_app.py", fill(test)),
                (
                    "switchyard_plugin.py",
                    include_str!("../../plugin-sdk/python/switchyard_plugin.py").to_owned(),
                ),
                (
                    "README.md",
                    fill(include_str!("../templates/plugin/python/README.md")),
                ),
                (".gitignore", ".venv/\ndist/\n__pycache__/\n".to_owned()),
            ]);
            (
                "Python",
                format!(
                    "python3 -m venv .venv && .venv/bin/pip install componentize-py=={COMPONENTIZE_PY}   # once: the build tool"
                ),
            )
        }
        Lang::Rust => unreachable!("Rust plugins are made by `new`"),
    };
    for (file, contents) in &files {
        let path = plugin_dir.join(file);
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    let listed: Vec<&str> = files.iter().map(|(f, _)| *f).collect();
    println!(
        "created {language} {} plugin `{name}` in {}: {}",
        world.name(),
        plugin_dir.display(),
        listed.join(", ")
    );
    println!("next:");
    println!("  cd {}", plugin_dir.display());
    println!("  {install}");
    if lang == Lang::Python {
        println!("  python3 -m unittest   # the plugin's logic, natively");
    }
    println!("  switchyard plugin build");
    println!("  switchyard plugin test dist/{name}.wasm --input events.jsonl");
    Ok(ExitCode::SUCCESS)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !starts_well || !rest_ok {
        bail!(
            "invalid plugin name {name:?}: use lowercase letters, digits, `-` and `_`, \
             starting with a letter (e.g. paid-orders)"
        );
    }
    Ok(())
}

/// The cargo workspace a new crate at `dir` would fall into: the nearest ancestor
/// Cargo.toml with a `[workspace]` table, as cargo itself looks for it.
struct Workspace {
    root: PathBuf,
    members: Vec<String>,
    exclude: Vec<String>,
}

impl Workspace {
    fn has_member(&self, dir: &Path) -> bool {
        let relative = relative_path(&self.root, dir);
        let matches = |patterns: &[String]| {
            patterns
                .iter()
                .any(|pattern| glob_match(Path::new(pattern), &relative))
        };
        matches(&self.members) || matches(&self.exclude)
    }
}

fn enclosing_workspace(dir: &Path) -> anyhow::Result<Option<Workspace>> {
    for ancestor in dir.ancestors().skip(1) {
        let manifest = ancestor.join("Cargo.toml");
        let Ok(text) = fs::read_to_string(&manifest) else {
            continue;
        };
        let toml: toml::Table = toml::from_str(&text).with_context(|| {
            format!("reading {} to see if it is a workspace", manifest.display())
        })?;
        let Some(workspace) = toml.get("workspace").and_then(|w| w.as_table()) else {
            continue;
        };
        let list = |key: &str| -> Vec<String> {
            workspace
                .get(key)
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        };
        return Ok(Some(Workspace {
            root: ancestor.to_owned(),
            members: list("members"),
            exclude: list("exclude"),
        }));
    }
    Ok(None)
}

/// Appends `member` to `[workspace] members` of `manifest`, keeping the rest of the file
/// (comments, layout) as it is.
fn add_member(manifest: &Path, member: &str) -> anyhow::Result<()> {
    let text = fs::read_to_string(manifest)?;
    let mut doc: toml_edit::DocumentMut = text.parse()?;
    let workspace = doc
        .get_mut("workspace")
        .and_then(|w| w.as_table_like_mut())
        .context("no [workspace] table")?;
    if workspace.get("members").is_none() {
        workspace.insert("members", toml_edit::value(toml_edit::Array::new()));
    }
    let members = workspace
        .get_mut("members")
        .and_then(|m| m.as_array_mut())
        .context("`members` is not a list")?;
    members.push(member);
    fs::write(manifest, doc.to_string())?;
    Ok(())
}

/// The `switchyard-plugin-sdk = ...` value, and whether a local SDK was found.
fn sdk_dependency(plugin_dir: &Path, sdk: Option<&Path>) -> anyhow::Result<(String, bool)> {
    let local = match sdk {
        Some(sdk) => {
            let sdk = sdk
                .canonicalize()
                .with_context(|| format!("--sdk {}", sdk.display()))?;
            if !is_sdk(&sdk) {
                bail!(
                    "--sdk {}: not the switchyard-plugin-sdk crate (crates/plugin-sdk of a checkout)",
                    sdk.display()
                );
            }
            Some(sdk)
        }
        None => plugin_dir
            .ancestors()
            .map(|a| a.join("crates/plugin-sdk"))
            .find(|candidate| is_sdk(candidate)),
    };
    Ok(match local {
        Some(sdk) => {
            // Relative inside one tree (a checkout stays movable), absolute across trees.
            let shares_more_than_root = plugin_dir.components().nth(1).is_some()
                && plugin_dir.components().nth(1) == sdk.components().nth(1);
            let path = match shares_more_than_root {
                true => relative_path(plugin_dir, &sdk),
                false => sdk,
            };
            (format!("{{ path = \"{}\" }}", path.display()), true)
        }
        None => (
            format!(
                "{{ path = \"{VENDORED_SDK}\" }}\n\
                 # ^ a copy of the SDK written by `switchyard plugin new` (it is not on crates.io).\n\
                 # To build against a switchyard checkout instead, point it at its crates/plugin-sdk:\n\
                 # switchyard-plugin-sdk = {{ path = \"../switchyard/crates/plugin-sdk\" }}"
            ),
            false,
        ),
    })
}

/// Writes the SDK built into this binary to `dir`, as a crate of its own: its manifest
/// without the workspace's inherited keys, its bindings reading the WIT next to them.
fn write_sdk(dir: &Path) -> anyhow::Result<()> {
    for (file, text) in sdk_files()? {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The files of the SDK's copy (see [`write_sdk`]).
fn sdk_files() -> anyhow::Result<Vec<(&'static str, String)>> {
    let inherited = [
        ("version", format!("\"{}\"", env!("CARGO_PKG_VERSION"))),
        ("edition", "\"2024\"".to_owned()),
        (
            "rust-version",
            format!("\"{}\"", env!("CARGO_PKG_RUST_VERSION")),
        ),
        ("license", format!("\"{}\"", env!("CARGO_PKG_LICENSE"))),
    ];
    let mut manifest = String::new();
    for line in SDK_MANIFEST.lines() {
        let key = line.strip_suffix(".workspace = true");
        match key.and_then(|key| inherited.iter().find(|(k, _)| *k == key)) {
            Some((key, value)) => manifest.push_str(&format!("{key} = {value}\n")),
            // Not needed by a copy (e.g. `repository`).
            None if key.is_some() => {}
            None => {
                manifest.push_str(line);
                manifest.push('\n');
            }
        }
    }
    let mut files = vec![("Cargo.toml", manifest)];
    for (file, text) in SDK_SOURCES {
        let text = match *file {
            "src/bindings.rs" => {
                let rewritten = text.replace(r#"path: "../../wit""#, r#"path: "wit""#);
                anyhow::ensure!(
                    rewritten != *text,
                    "the SDK's bindings no longer name ../../wit: update `sdk_files`"
                );
                rewritten
            }
            _ => (*text).to_owned(),
        };
        files.push((file, text));
    }
    Ok(files)
}

fn is_sdk(dir: &Path) -> bool {
    fs::read_to_string(dir.join("Cargo.toml"))
        .is_ok_and(|text| text.contains("name = \"switchyard-plugin-sdk\""))
}

/// `to` relative to `from`, both absolute and canonical.
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    for component in &to[common..] {
        path.push(component);
    }
    if path.as_os_str().is_empty() {
        path.push(".");
    }
    path
}

/// `path` relative to the current directory when it is below it, else as is.
pub(crate) fn display_relative(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| cwd.canonicalize().ok())
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_owned))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| path.to_owned())
        .display()
        .to_string()
}

fn is_cwd(dir: &Path) -> bool {
    std::env::current_dir()
        .and_then(|cwd| cwd.canonicalize())
        .is_ok_and(|cwd| cwd == dir)
}

/// Cargo's member globs, component by component: `*` and `?` within a component.
fn glob_match(pattern: &Path, path: &Path) -> bool {
    let pattern: Vec<_> = pattern
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect();
    let path: Vec<_> = path.components().collect();
    pattern.len() == path.len()
        && pattern.iter().zip(&path).all(|(p, c)| {
            wildcard(
                p.as_os_str().to_string_lossy().as_bytes(),
                c.as_os_str().to_string_lossy().as_bytes(),
            )
        })
}

fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            wildcard(&pattern[1..], text) || (!text.is_empty() && wildcard(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => wildcard(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p == t => wildcard(&pattern[1..], &text[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_copy_holds_every_source_file_and_no_inherited_key() {
        let files = sdk_files().expect("the SDK's files");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk/src");
        for entry in fs::read_dir(&src).expect("crates/plugin-sdk/src") {
            let name = entry.expect("entry").file_name();
            let file = format!("src/{}", name.to_string_lossy());
            assert!(
                files.iter().any(|(f, _)| *f == file),
                "{file} is missing from SDK_SOURCES"
            );
        }
        let manifest = &files[0].1;
        assert!(!manifest.contains(".workspace"), "{manifest}");
        assert!(manifest.contains(&format!("version = \"{}\"", env!("CARGO_PKG_VERSION"))));
        let bindings = &files
            .iter()
            .find(|(f, _)| *f == "src/bindings.rs")
            .unwrap()
            .1;
        assert!(bindings.contains(r#"path: "wit""#) && !bindings.contains("../../wit"));
    }

    #[test]
    fn names_must_be_crate_names() {
        for good in ["paid", "paid-orders", "by_table2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Paid", "2fast", "-x", "a b", "a/b", "ünï"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn member_globs_match_like_cargo() {
        let matches = |p: &str, path: &str| glob_match(Path::new(p), Path::new(path));
        assert!(matches("examples/*", "examples/paid"));
        assert!(matches("./examples/*", "examples/paid"));
        assert!(matches("paid", "paid"));
        assert!(matches("ex*/p?id", "examples/paid"));
        assert!(!matches("examples/*", "paid"));
        assert!(!matches("examples/*", "examples/paid/nested"));
        assert!(!matches("fixtures/*", "examples/paid"));
    }

    #[test]
    fn relative_paths_climb_to_the_common_ancestor() {
        let rel = |from: &str, to: &str| relative_path(Path::new(from), Path::new(to));
        assert_eq!(
            rel("/r/plugins/paid", "/r/crates/plugin-sdk"),
            Path::new("../../crates/plugin-sdk")
        );
        assert_eq!(rel("/r/plugins", "/r/plugins/paid"), Path::new("paid"));
        assert_eq!(rel("/r", "/r"), Path::new("."));
    }
}
