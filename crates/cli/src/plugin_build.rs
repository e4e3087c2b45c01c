//! `switchyard plugin build`: builds the plugin project in a directory with its
//! language's toolchain, the way switchyard needs it.
//!
//! | project has      | language   | runs                                                      |
//! |------------------|------------|-----------------------------------------------------------|
//! | `Cargo.toml`     | Rust       | `cargo build --release --target wasm32-wasip2`            |
//! | `package.json`   | JavaScript | `componentize-js MAIN -w wit -n WORLD -d stdio random clocks http fetch-event -o dist/NAME.wasm` |
//! | `pyproject.toml` | Python     | `componentize-py -d wit -w WORLD componentize APP --stub-wasi -o dist/NAME.wasm` |
//!
//! The `-d`/`--stub-wasi` flags leave a component that imports only the switchyard
//! contract: the JavaScript and Python runtimes otherwise import clocks, randomness,
//! sockets and HTTP, which switchyard never grants. The world (and the entry module) come
//! from the project's manifest: `"switchyard": {"world", "main"}` in package.json,
//! `[tool.switchyard] world, app` in pyproject.toml, as `switchyard plugin new` writes them.
//!
//! The toolchains are looked up in the project first (`node_modules/.bin`, `.venv/bin`),
//! then on `PATH`; a missing one is reported with the command that installs it.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context as _, bail};

/// componentize-js release the JavaScript scaffold pins and the docs were checked with.
pub const COMPONENTIZE_JS: &str = "0.23.0";
/// componentize-py release the Python scaffold pins and the docs were checked with.
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// What a JavaScript component must not pull in (see the module docs).
pub const JS_DISABLED: &[&str] = &["stdio", "random", "clocks", "http", "fetch-event"];
const WASM_TARGET: &str = "wasm32-wasip2";

/// The kind of project in a directory, with what its manifest says.
#[derive(Debug, PartialEq, Eq)]
enum Project {
    Rust,
    JavaScript {
        name: String,
        world: String,
        main: String,
    },
    Python {
        name: String,
        world: String,
        app: String,
    },
}

pub fn build(dir: &Path) -> anyhow::Result<ExitCode> {
    let project = detect(dir)?;
    let started = Instant::now();
    let wasm = match &project {
        Project::Rust => build_rust(dir)?,
        Project::JavaScript { name, world, main } => build_js(dir, name, world, main)?,
        Project::Python { name, world, app } => build_python(dir, name, world, app)?,
    };
    let bytes = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let name = wasm
        .file_stem()
        .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned());
    let config = switchyard_config::PluginConfig {
        path: wasm.display().to_string(),
        ..Default::default()
    };
    let imports = match switchyard_plugin_host::precheck(&name, &wasm, &bytes, &config) {
        Ok(true) => "it imports nothing switchyard does not grant".to_owned(),
        Ok(false) => {
            "its imports could not be read here; `switchyard plugin test` checks them".to_owned()
        }
        // Imports a config can grant (`allow_dirs`) are the plugin's business.
        Err(switchyard_plugin_host::LoadError::ImportNotGranted { imports, .. })
            if imports
                .iter()
                .all(|i| switchyard_plugin_host::grant_key(i).is_some()) =>
        {
            format!(
                "it imports {}, which its [plugins.NAME] config must grant with `allow_dirs`",
                imports.join(", ")
            )
        }
        Err(e) => return Err(e.into()),
    };
    println!(
        "built {} ({:.1} MB) in {:.1} s; {imports}",
        wasm.display(),
        bytes.len() as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let events = dir.join("events.jsonl");
    if events.is_file() {
        println!(
            "next: switchyard plugin test {} --input {}",
            wasm.display(),
            display_path(&events).display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn detect(dir: &Path) -> anyhow::Result<Project> {
    if dir.join("package.json").is_file() {
        let path = dir.join("package.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let settings = json.get("switchyard");
        let world = settings
            .and_then(|s| s.get("world"))
            .and_then(|w| w.as_str())
            .with_context(|| {
                format!(
                    "{} has no \"switchyard\": {{\"world\": \"filter|router|transform\"}}: add it \
                     (as `switchyard plugin new --lang js` writes it)",
                    path.display()
                )
            })?;
        let main = settings
            .and_then(|s| s.get("main"))
            .and_then(|m| m.as_str())
            .unwrap_or("plugin.js");
        // A relative path inside the project, not something the toolchain reads as a flag.
        let inside = Path::new(main).components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        });
        if !inside || main.is_empty() || main.starts_with('-') {
            bail!(
                "{}: \"switchyard\": {{\"main\": {main:?}}} must be a file of the project, \
                 such as \"plugin.js\"",
                path.display()
            );
        }
        let name = json
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or("plugin");
        return Ok(Project::JavaScript {
            name: output_name(name),
            world: check_world(world, &path)?,
            main: main.to_owned(),
        });
    }
    if dir.join("pyproject.toml").is_file() {
        let path = dir.join("pyproject.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let toml: toml::Table = toml::from_str(&text)
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        let settings = toml
            .get("tool")
            .and_then(|t| t.get("switchyard"))
            .with_context(|| {
                format!(
                    "{} has no [tool.switchyard] table with `world = \"filter|router|transform\"`: \
                     add it (as `switchyard plugin new --lang python` writes it)",
                    path.display()
                )
            })?;
        let world = settings
            .get("world")
            .and_then(|w| w.as_str())
            .with_context(|| format!("{}: [tool.switchyard] needs `world`", path.display()))?;
        let app = settings
            .get("app")
            .and_then(|a| a.as_str())
            .unwrap_or("app");
        let module_name = app.split('.').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_alphanumeric() || c == '_')
        });
        if !module_name {
            bail!(
                "{}: [tool.switchyard] app = {app:?} must be a Python module name, such as \"app\"",
                path.display()
            );
        }
        let name = toml
            .get("project")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("plugin");
        return Ok(Project::Python {
            name: output_name(name),
            world: check_world(world, &path)?,
            app: app.to_owned(),
        });
    }
    if dir.join("Cargo.toml").is_file() {
        return Ok(Project::Rust);
    }
    bail!(
        "{} holds no plugin project: no Cargo.toml (Rust), package.json (JavaScript) or \
         pyproject.toml (Python); create one with `switchyard plugin new NAME --world filter \
         --lang rust|js|python`",
        dir.display()
    )
}

fn check_world(world: &str, manifest: &Path) -> anyhow::Result<String> {
    match world {
        "filter" | "router" | "transform" => Ok(world.to_owned()),
        other => bail!(
            "{}: world {other:?} is not one of filter, router, transform",
            manifest.display()
        ),
    }
}

/// The file name of the built component: the project name's last path segment, with
/// anything but letters, digits, `-` and `_` replaced.
fn output_name(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    let clean: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "plugin".into()
    } else {
        clean
    }
}

/// `dir/local` if it exists, else `program` on PATH.
fn find_tool(dir: &Path, local: &str, program: &str) -> Option<PathBuf> {
    let here = dir.join(local);
    if here.is_file() {
        return Some(here);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|p| p.join(program))
        .find(|p| p.is_file())
}

fn run(command: &mut Command, what: &str, hint: &str) -> anyhow::Result<()> {
    let mut shown = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        shown.push(' ');
        shown.push_str(&arg.to_string_lossy());
    }
    println!("running {shown}");
    let status = command
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status}); its output is above{hint}");
    }
    Ok(())
}

fn build_rust(dir: &Path) -> anyhow::Result<PathBuf> {
    run(
        Command::new("cargo")
            .args(["build", "--release", "--target", WASM_TARGET])
            .current_dir(dir),
        "cargo build",
        &format!("; if it says the target may not be installed: rustup target add {WASM_TARGET}"),
    )?;
    let output = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(dir)
        .output()
        .context("running cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("reading cargo metadata's output")?;
    let manifest = dir
        .join("Cargo.toml")
        .canonicalize()
        .context("resolving Cargo.toml")?;
    let package = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path()))
        .with_context(|| {
            format!(
                "{} is a workspace without a package of its own: run this in the plugin's \
                 directory",
                manifest.display()
            )
        })?;
    // The cdylib target's name (`[lib] name`, else the package's with `_` for `-`).
    let crate_name = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"))
        })
        .and_then(|t| t["name"].as_str())
        .context(
            "the crate has no cdylib target: set crate-type = [\"cdylib\"] in its [lib] section",
        )?
        .replace('-', "_");
    let target = metadata["target_directory"]
        .as_str()
        .context("cargo metadata: no target_directory")?;
    let wasm = Path::new(target)
        .join(WASM_TARGET)
        .join("release")
        .join(format!("{crate_name}.wasm"));
    if !wasm.is_file() {
        bail!(
            "cargo built no {}: is the crate a `cdylib` (crate-type = [\"cdylib\"] in [lib])?",
            wasm.display()
        );
    }
    Ok(display_path(&wasm))
}

fn build_js(dir: &Path, name: &str, world: &str, main: &str) -> anyhow::Result<PathBuf> {
    let tool = find_tool(dir, "node_modules/.bin/componentize-js", "componentize-js")
        .with_context(|| {
            format!(
                "componentize-js is not installed: run `npm install` in {} (its package.json \
                 lists it), or `npm install --save-dev @bytecodealliance/componentize-js@{COMPONENTIZE_JS}`",
                dir.display()
            )
        })?;
    std::fs::create_dir_all(dir.join("dist")).context("creating dist/")?;
    let out = format!("dist/{name}.wasm");
    run(
        Command::new(tool)
            .args([main, "-w", "wit", "-n", world, "-d"])
            .args(JS_DISABLED)
            .args(["-o", &out])
            .current_dir(dir),
        "componentize-js",
        "",
    )?;
    Ok(display_path(&dir.join(out)))
}

fn build_python(dir: &Path, name: &str, world: &str, app: &str) -> anyhow::Result<PathBuf> {
    let tool =
        find_tool(dir, ".venv/bin/componentize-py", "componentize-py").with_context(|| {
            format!(
                "componentize-py is not installed: in {}, run `python3 -m venv .venv && \
             .venv/bin/pip install componentize-py=={COMPONENTIZE_PY}`",
                dir.display()
            )
        })?;
    std::fs::create_dir_all(dir.join("dist")).context("creating dist/")?;
    let out = format!("dist/{name}.wasm");
    let mut command = Command::new(tool);
    command
        .args([
            "-d",
            "wit",
            "-w",
            world,
            "componentize",
            app,
            "--stub-wasi",
            "-o",
            &out,
        ])
        .current_dir(dir);
    if dir.join(".venv").is_dir() {
        // componentize-py adds the virtualenv's site-packages: the plugin's dependencies.
        command.env("VIRTUAL_ENV", dir.join(".venv").canonicalize()?);
    }
    run(&mut command, "componentize-py", "")?;
    Ok(display_path(&dir.join(out)))
}

/// `path` (resolved) relative to the current directory when below it.
fn display_path(path: &Path) -> PathBuf {
    let absolute = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    PathBuf::from(crate::plugin::display_relative(&absolute))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_says_the_language_and_world() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"name": "@acme/paid", "switchyard": {"world": "filter"}}"#,
        )
        .unwrap();
        assert_eq!(
            detect(dir.path()).unwrap(),
            Project::JavaScript {
                name: "paid".into(),
                world: "filter".into(),
                main: "plugin.js".into()
            }
        );
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"name": "x", "switchyard": {"world": "filtre"}}"#,
        )
        .unwrap();
        let err = detect(dir.path()).unwrap_err().to_string();
        assert!(err.contains("\"filtre\" is not one of"), "{err}");
        std::fs::remove_file(dir.path().join("package.json")).unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[project]\nname = \"by-kind\"\n[tool.switchyard]\nworld = \"router\"\n",
        )
        .unwrap();
        assert_eq!(
            detect(dir.path()).unwrap(),
            Project::Python {
                name: "by-kind".into(),
                world: "router".into(),
                app: "app".into()
            }
        );
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[project]\nname = \"x\"\n",
        )
        .unwrap();
        let err = detect(dir.path()).unwrap_err().to_string();
        assert!(err.contains("[tool.switchyard]"), "{err}");
        std::fs::remove_file(dir.path().join("pyproject.toml")).unwrap();
        let err = detect(dir.path()).unwrap_err().to_string();
        assert!(err.contains("plugin new"), "{err}");
    }
}
