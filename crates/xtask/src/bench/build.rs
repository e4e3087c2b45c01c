//! Release builds of what a benchmark runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// Set in the re-executed release xtask, so it never re-executes again.
const REEXEC_GUARD: &str = "XTASK_BENCH_RELEASE";

/// The workspace root (xtask lives in `crates/xtask`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/xtask has a workspace two levels up")
        .to_path_buf()
}

/// `cargo build --release -p PACKAGE…` in the workspace (honours CARGO_TARGET_DIR).
pub fn cargo_build_release(packages: &[&str]) -> anyhow::Result<()> {
    cargo_build_release_with_features(packages, &[])
}

/// `cargo build --release -p PACKAGE… --features FEATURE,…` in the workspace.
pub fn cargo_build_release_with_features(
    packages: &[&str],
    features: &[&str],
) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--release"]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    eprintln!(
        "building (release): {}{}",
        packages.join(", "),
        if features.is_empty() {
            String::new()
        } else {
            format!(" with features {}", features.join(","))
        }
    );
    let status = cmd.status().context("running cargo build --release")?;
    if !status.success() {
        bail!("cargo build --release -p {} failed", packages.join(" -p "));
    }
    Ok(())
}

/// When this is a debug build, builds the release xtask (with xtask's `features`) and
/// replaces this process with it (same arguments). Debug-built baselines and load generator
/// would make every ratio lie.
pub fn reexec_release_if_debug(features: &[&str]) -> anyhow::Result<()> {
    if !cfg!(debug_assertions) || std::env::var_os(REEXEC_GUARD).is_some() {
        return Ok(());
    }
    cargo_build_release_with_features(&["xtask"], features)?;
    let exe = release_dir()?.join("xtask");
    let err = {
        use std::os::unix::process::CommandExt as _;
        Command::new(&exe)
            .args(std::env::args_os().skip(1))
            .env(REEXEC_GUARD, "1")
            .exec()
    };
    Err(err).with_context(|| format!("executing the release xtask {}", exe.display()))
}

/// `<target dir>/release`, found from this executable (`<target dir>/{debug,release}/xtask`).
pub fn release_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the xtask executable")?;
    let target = exe
        .parent()
        .and_then(Path::parent)
        .with_context(|| format!("{} is not inside a cargo target dir", exe.display()))?;
    Ok(target.join("release"))
}

/// The switchyard binary a bench runs: `bin` (its `--bin`) when given, else the release
/// build of switchyard-cli, built now.
pub fn switchyard_binary(bin: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match bin {
        Some(p) => p
            .canonicalize()
            .with_context(|| format!("--bin {}: no such file", p.display()))?,
        None => {
            cargo_build_release(&["switchyard-cli"])?;
            release_dir()?.join("switchyard")
        }
    };
    if !path.is_file() {
        bail!("no switchyard binary at {}", path.display());
    }
    Ok(path)
}
