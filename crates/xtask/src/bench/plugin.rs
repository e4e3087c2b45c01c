//! `cargo xtask bench plugin`: what WebAssembly plugins cost, each figure next to a baseline
//! measured in the same run.
//!
//! 1. a batched filter plugin (filter_by_field.wasm) vs a native Rust closure doing the
//!    same work, per event, in this process;
//! 2. the host's own cost per event with a plugin that does nothing (keep_all.wasm);
//! 3. end-to-end HTTP ingest and delivery by switchyard, without and with the filter;
//! 4. a healthy pipeline's throughput alone and while a hostile plugin (loop_forever.wasm)
//!    in another pipeline keeps hitting its deadline;
//! 5. the filter `switchyard plugin new --world filter` writes, in Rust, JavaScript and
//!    Python (built by `switchyard plugin build`), per event against the native closure,
//!    and each one's start: compiling it, then reading it from the compilation cache.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Args;
use switchyard_config::PluginConfig;
use switchyard_event::{Event, KIND_MESSAGE};
use switchyard_plugin_host::{Plugin, PluginHost};

use super::load::{self, BodyKind, LoadResult, LoadSpec};
use super::process::{ServerProcess, free_addr};
use super::report::{Op, Row, Target};
use super::{build, report};

/// filter_by_field / native closure, per event (`docs/design.md`, "Benchmarks").
const TARGET_FILTER_VS_NATIVE: f64 = 2.0;
/// keep_all host cost per event at batch 64, nanoseconds.
const TARGET_HOST_NS: f64 = 300.0;
/// healthy pipeline under a hostile plugin / alone.
const TARGET_ISOLATION: f64 = 0.8;
/// Events in one filter call of the in-process measurements.
const BATCH: usize = 64;
/// Batch sizes of the host-cost measurement.
const HOST_BATCHES: [usize; 3] = [1, 64, 256];
/// Distinct events the in-process measurements cycle through.
const EVENTS: usize = 4096;
/// The filter's configuration, and what the native closure does.
const FIELD: &str = "status";
const EQUALS: &str = "paid";

/// Options of `bench plugin` (help text: on `Bench::Plugin`).
#[derive(Args)]
pub struct PluginArgs {
    /// Rounds of the in-process measurements (1 and 2); medians are printed.
    #[arg(long, default_value_t = 5)]
    micro_rounds: u32,
    /// Milliseconds measured per in-process figure per round.
    #[arg(long, default_value_t = 300)]
    micro_ms: u64,
    /// Seconds measured per switchyard run of the end-to-end parts (3 and 4).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds per switchyard run before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Concurrent keep-alive connections of the main load, one request in flight each.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Size of each JSON event in bytes.
    #[arg(long, default_value_t = 200)]
    body_bytes: usize,
    /// Distinct `x-key` values.
    #[arg(long, default_value_t = 1024)]
    keys: usize,
    /// Requests per second with the payload `loop` sent to the hostile source (part 4).
    #[arg(long, default_value_t = 4)]
    hostile_rps: u32,
    /// Only the in-process parts (1 and 2).
    #[arg(long)]
    micro_only: bool,
    /// A switchyard binary to use instead of building `switchyard-cli` in release mode.
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
    /// Where the plugin components are (default: plugins/target/wasm32-wasip2/release,
    /// built by scripts/build-plugins.sh when missing).
    #[arg(long, value_name = "DIR")]
    plugins: Option<PathBuf>,
    /// Parent of the temporary directory holding switchyard's data dirs and sink files.
    #[arg(long, value_name = "DIR")]
    tmp_dir: Option<PathBuf>,
    /// Keep the temporary directory (server logs, data) and print its path.
    #[arg(long)]
    keep: bool,
    /// Skip part 5 (the scaffolded filter in Rust, JavaScript and Python), which builds
    /// three plugins with their toolchains (scripts/install-plugin-toolchains.sh).
    #[arg(long)]
    no_languages: bool,
}

pub fn run(args: PluginArgs) -> anyhow::Result<Vec<Row>> {
    let plugins = plugins_dir(args.plugins.as_deref())?;
    let switchyard = if args.micro_only {
        None
    } else {
        Some(build::switchyard_binary(args.bin.as_deref())?)
    };
    let tmp = super::temp_dir(
        "switchyard-bench-plugin-",
        args.tmp_dir.as_deref(),
        args.keep,
    )?;
    let root = tmp.path().to_path_buf();
    let argv: Vec<String> = std::env::args().skip(1).collect();

    println!("# switchyard bench plugin");
    println!("machine:    {}", report::machine());
    println!("plugins:    {}", plugins.display());
    if let Some(bin) = &switchyard {
        println!("switchyard: {}", bin.display());
        println!(
            "data:       {} — {}",
            root.display(),
            report::filesystem(&root)
        );
    }
    println!(
        "events:     {}-byte JSON ({{\"conn\",\"seq\",\"status\",\"pad\"}}); the filter keeps \
         `{FIELD}` == \"{EQUALS}\"",
        args.body_bytes
    );
    println!("reproduce:  {}", report::reproduce_command(&argv));
    println!();

    let (micro, m) = micro(&args, &plugins)?;
    print!("{micro}");
    let micro_note = format!(
        "in-process, median of {} rounds × {} ms",
        args.micro_rounds.max(1),
        args.micro_ms
    );
    let mut rows = vec![
        Row::new("plugin", "filter ns/event, batch 64")
            .baseline("native closure", m.native_ns)
            .value(m.wasm_ns)
            .target(Target::ratio(Op::AtMost, TARGET_FILTER_VS_NATIVE))
            .note(format!("filter_by_field.wasm; {micro_note}")),
        Row::new("plugin", "host cost ns/event, batch 64")
            .value(m.host_ns_at_64)
            .target(Target::value(Op::Below, TARGET_HOST_NS, "ns"))
            .note(format!("keep_all.wasm; {micro_note}")),
    ];
    if let Some(bin) = &switchyard {
        println!();
        let (text, e2e) = end_to_end(&args, bin, &plugins, &root)?;
        print!("{text}");
        println!();
        let (text, iso) = isolation(&args, bin, &plugins, &root)?;
        print!("{text}");
        let note = format!("{} conns, {} s", args.connections, args.seconds);
        let [none, with] = e2e;
        let [alone, attacked] = iso;
        rows.extend([
            Row::new("plugin", "http → file delivered/s, with the filter")
                .baseline("no plugin", none.delivered_per_s)
                .value(with.delivered_per_s)
                .rss_kib(with.peak_rss_kib)
                .note(note.clone()),
            Row::new("plugin", "delivered/s next to a runaway plugin")
                .baseline("alone", alone.delivered_per_s)
                .value(attacked.delivered_per_s)
                .target(Target::ratio(Op::AtLeast, TARGET_ISOLATION))
                .rss_kib(attacked.peak_rss_kib)
                .note(format!(
                    "{note}; loop_forever.wasm at {} req/s",
                    args.hostile_rps
                )),
            Row::new("plugin", "ingest req/s next to a runaway plugin")
                .baseline("alone", alone.load.per_second())
                .value(attacked.load.per_second())
                .target(Target::ratio(Op::AtLeast, TARGET_ISOLATION))
                .rss_kib(attacked.peak_rss_kib)
                .note(format!(
                    "{note}; loop_forever.wasm at {} req/s",
                    args.hostile_rps
                )),
        ]);
    }
    if let Some(bin) = switchyard.as_ref().filter(|_| !args.no_languages) {
        println!();
        match languages(&args, bin) {
            Ok((text, lang_rows)) => {
                print!("{text}");
                rows.extend(lang_rows);
            }
            Err(e) => {
                println!("## 5. languages: ERROR {e:#}");
                rows.push(Row::error(
                    "plugin",
                    "filter per language",
                    &format!("{e:#}"),
                ));
            }
        }
    }
    if args.keep {
        println!("\nkept: {}", root.display());
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------
// 5: the scaffolded filter in each language

/// Scaffolds and builds the filter of `plugin new` in `lang`, with the toolchains
/// of .tools/bin: the component's path. The projects live in the system's temp dir, out of
/// any cargo workspace (inside this one, `plugin new` would add the Rust crate to it), as
/// a user's would.
fn scaffolded_filter(bin: &Path, lang: &str) -> anyhow::Result<PathBuf> {
    let root = build::workspace_root();
    let dir = std::env::temp_dir().join("switchyard-bench-plugin-languages");
    std::fs::create_dir_all(&dir)?;
    let name = format!("bench-{lang}");
    let project = dir.join(&name);
    let path = std::env::join_paths(std::iter::once(root.join(".tools/bin")).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let cli = |cwd: &Path, args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new(bin)
            .args(args)
            .current_dir(cwd)
            .env("PATH", &path)
            .env("CARGO_TARGET_DIR", root.join("plugins/target"))
            .output()
            .with_context(|| format!("running switchyard {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "switchyard {} failed (toolchains: scripts/install-plugin-toolchains.sh):\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    // Scaffolded afresh every run: what is measured is what `plugin new` writes now
    // (a project left by an older switchyard would lack its newer files and settings).
    if project.exists() {
        std::fs::remove_dir_all(&project)
            .with_context(|| format!("removing the previous {}", project.display()))?;
    }
    cli(
        &dir,
        &[
            "plugin", "new", &name, "--world", "filter", "--lang", lang, "--dir", ".",
        ],
    )?;
    if lang == "rust" {
        std::fs::copy(root.join("plugins/Cargo.lock"), project.join("Cargo.lock"))?;
    }
    eprintln!("building the {lang} filter…");
    cli(&project, &["plugin", "build"])?;
    Ok(match lang {
        "rust" => root
            .join("plugins/target/wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_"))),
        _ => project.join("dist").join(format!("{name}.wasm")),
    })
}

fn languages(args: &PluginArgs, bin: &Path) -> anyhow::Result<(String, Vec<Row>)> {
    let events = bench_events(args.body_bytes);
    let budget = Duration::from_millis(args.micro_ms);
    let rounds = args.micro_rounds.max(1);
    let config = serde_json::json!({ "field": FIELD, "equals": EQUALS });
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## 5. the filter of `plugin new`, per language: batches of {BATCH}, in-process \
         (median of {rounds} rounds × {} ms); start = load with an empty compilation cache, \
         then again from it",
        args.micro_ms
    );
    let _ = writeln!(
        out,
        "{:<12} {:>9} {:>12} {:>10} {:>10} {:>11} {:>11}",
        "language", "size MB", "fuel/event", "ns/event", "× native", "cold start", "cached"
    );
    let mut rows = Vec::new();
    for (lang, label) in [("rust", "Rust"), ("js", "JavaScript"), ("python", "Python")] {
        let wasm = scaffolded_filter(bin, lang)?;
        let size = std::fs::metadata(&wasm)?.len();
        let cache = tempfile::tempdir()?;
        let host_with_cache = || {
            PluginHost::with_options(&switchyard_plugin_host::HostOptions {
                cache_dir: Some(cache.path().to_path_buf()),
                ..Default::default()
            })
        };
        let dir = wasm.parent().context("component path")?;
        let file = wasm
            .file_name()
            .context("component path")?
            .to_string_lossy();
        let started = Instant::now();
        let mut plugin = load_plugin(&host_with_cache()?, dir, &file, config.clone())?;
        let cold = started.elapsed();
        let started = Instant::now();
        drop(load_plugin(
            &host_with_cache()?,
            dir,
            &file,
            config.clone(),
        )?);
        let cached = started.elapsed();

        let mut disagree = 0;
        let mut fuel = 0u64;
        for chunk in events.chunks(BATCH) {
            let call = plugin.filter(chunk)?;
            fuel += call.stats.fuel;
            disagree += call
                .output
                .iter()
                .zip(native_filter(chunk))
                .filter(|(a, b)| **a != *b)
                .count();
        }
        if disagree > 0 {
            bail!("the {label} filter disagrees with the native closure on {disagree} events");
        }
        ns_per_event(&events, BATCH, budget / 2, |b| call(&mut plugin, b))?;
        let mut native = Vec::new();
        let mut wasm_ns = Vec::new();
        for _ in 0..rounds {
            native.push(ns_per_event(&events, BATCH, budget, |b| {
                Ok(native_filter(b))
            })?);
            wasm_ns.push(ns_per_event(&events, BATCH, budget, |b| {
                call(&mut plugin, b)
            })?);
        }
        let (native, wasm_ns) = (report::median(&native), report::median(&wasm_ns));
        let fuel_per_event = fuel as f64 / events.len() as f64;
        let _ = writeln!(
            out,
            "{label:<12} {:>9.2} {fuel_per_event:>12.0} {wasm_ns:>10.0} {:>10.1} {:>10.2}s {:>10.3}s",
            size as f64 / 1e6,
            wasm_ns / native,
            cold.as_secs_f64(),
            cached.as_secs_f64()
        );
        rows.push(
            Row::new("plugin", &format!("{label} filter ns/event, batch 64"))
                .baseline("native closure", native)
                .value(wasm_ns)
                .note(format!(
                    "plugin new --lang {lang}; {fuel_per_event:.0} fuel/event; {:.1} MB",
                    size as f64 / 1e6
                )),
        );
        rows.push(
            Row::new("plugin", &format!("{label} start s, cached"))
                .baseline("compiling", cold.as_secs_f64())
                .value(cached.as_secs_f64())
                .note("load with an empty compilation cache, then from it".to_owned()),
        );
    }
    Ok((out, rows))
}

/// The in-process figures (parts 1 and 2), medians in ns/event.
struct Micro {
    native_ns: f64,
    wasm_ns: f64,
    host_ns_at_64: f64,
}

/// The directory of the components, building them with scripts/build-plugins.sh when the
/// default one lacks any.
fn plugins_dir(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    const NEEDED: [&str; 3] = ["filter_by_field.wasm", "keep_all.wasm", "loop_forever.wasm"];
    let root = build::workspace_root();
    let dir = dir.map_or_else(
        || root.join("plugins/target/wasm32-wasip2/release"),
        Path::to_path_buf,
    );
    let missing = |d: &Path| NEEDED.iter().filter(|f| !d.join(f).is_file()).count();
    if missing(&dir) > 0 {
        let script = root.join("scripts/build-plugins.sh");
        eprintln!(
            "plugin components missing in {}; running {}",
            dir.display(),
            script.display()
        );
        let status = Command::new(&script)
            .current_dir(&root)
            .status()
            .with_context(|| format!("running {}", script.display()))?;
        if !status.success() || missing(&dir) > 0 {
            bail!(
                "{} are needed in {}; build them with scripts/build-plugins.sh",
                NEEDED.join(", "),
                dir.display()
            );
        }
    }
    Ok(dir.canonicalize()?)
}

// ---------------------------------------------------------------------------------------
// 1 and 2: in-process

/// The same events for the plugin and the closure: half with status "paid", half "new".
fn bench_events(body_bytes: usize) -> Vec<Event> {
    (0..EVENTS)
        .map(|i| Event {
            id: switchyard_event::format_compact!("bench-{i}"),
            source: "bench".into(),
            kind: KIND_MESSAGE.into(),
            key: Some(format!("key-{:05}", i % 1024).into_bytes()),
            payload: load::json_body(
                i % 64,
                i as u64,
                body_bytes,
                Some(if i % 2 == 0 { EQUALS } else { "new" }),
            )
            .to_vec(),
            content_type: "application/json".into(),
            headers: Vec::new(),
            timestamp_ms: 1_700_000_000_000 + i as u64,
            payload_is_compact_json: false,
        })
        .collect()
}

/// The native baseline: what filter_by_field does with `{"field":"status","equals":"paid"}`.
fn native_filter(events: &[Event]) -> Vec<bool> {
    events
        .iter()
        .map(|e| {
            // As the plugin SDK's `Event::json` reads a payload: checked as UTF-8 once, then
            // parsed as text.
            std::str::from_utf8(&e.payload)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
                .is_some_and(|v| v.get(FIELD).and_then(serde_json::Value::as_str) == Some(EQUALS))
        })
        .collect()
}

/// Calls `f` on consecutive batches of `batch` events (cycling) for about `budget`;
/// returns nanoseconds per event.
fn ns_per_event(
    events: &[Event],
    batch: usize,
    budget: Duration,
    mut f: impl FnMut(&[Event]) -> anyhow::Result<Vec<bool>>,
) -> anyhow::Result<f64> {
    let chunks: Vec<&[Event]> = events.chunks_exact(batch).collect();
    let mut done: u64 = 0;
    let start = Instant::now();
    let mut i = 0;
    loop {
        // Check the clock every few calls only: it is not free at batch 1.
        for _ in 0..16 {
            let out = f(std::hint::black_box(chunks[i % chunks.len()]))?;
            std::hint::black_box(out);
            i += 1;
            done += batch as u64;
        }
        let elapsed = start.elapsed();
        if elapsed >= budget {
            return Ok(elapsed.as_nanos() as f64 / done as f64);
        }
    }
}

fn load_plugin(
    host: &PluginHost,
    dir: &Path,
    file: &str,
    config: serde_json::Value,
) -> anyhow::Result<Plugin> {
    let cfg = PluginConfig {
        path: dir.join(file).display().to_string(),
        config,
        // Plenty: these measurements are about speed, not limits.
        fuel: 1_000_000_000_000,
        timeout: Duration::from_secs(10),
        ..PluginConfig::default()
    };
    host.load(file, &cfg)
        .with_context(|| format!("loading {file}"))
}

fn call(plugin: &mut Plugin, events: &[Event]) -> anyhow::Result<Vec<bool>> {
    Ok(plugin.filter(events)?.output)
}

fn micro(args: &PluginArgs, dir: &Path) -> anyhow::Result<(String, Micro)> {
    let events = bench_events(args.body_bytes);
    let host = PluginHost::new().context("starting the plugin host")?;
    let mut filter = load_plugin(
        &host,
        dir,
        "filter_by_field.wasm",
        serde_json::json!({ "field": FIELD, "equals": EQUALS }),
    )?;
    let mut keep_all = load_plugin(&host, dir, "keep_all.wasm", serde_json::json!({}))?;

    // Same answers, or the comparison means nothing.
    let mut disagree = 0;
    for chunk in events.chunks(BATCH) {
        let wasm = call(&mut filter, chunk)?;
        disagree += wasm
            .iter()
            .zip(native_filter(chunk))
            .filter(|(a, b)| **a != *b)
            .count();
    }

    let budget = Duration::from_millis(args.micro_ms);
    let rounds = args.micro_rounds.max(1);
    let mut native = Vec::new();
    let mut wasm = Vec::new();
    let mut host_ns: Vec<Vec<f64>> = HOST_BATCHES.iter().map(|_| Vec::new()).collect();
    // Warm-up: caches, branch predictors, the instances' memories grown.
    ns_per_event(&events, BATCH, budget / 2, |b| Ok(native_filter(b)))?;
    ns_per_event(&events, BATCH, budget / 2, |b| call(&mut filter, b))?;
    ns_per_event(&events, BATCH, budget / 2, |b| call(&mut keep_all, b))?;
    for round in 1..=rounds {
        eprintln!("in-process round {round}/{rounds}…");
        native.push(ns_per_event(&events, BATCH, budget, |b| {
            Ok(native_filter(b))
        })?);
        wasm.push(ns_per_event(&events, BATCH, budget, |b| {
            call(&mut filter, b)
        })?);
        for (i, batch) in HOST_BATCHES.into_iter().enumerate() {
            host_ns[i].push(ns_per_event(&events, batch, budget, |b| {
                call(&mut keep_all, b)
            })?);
        }
    }

    let mut out = String::new();
    let native = report::median(&native);
    let wasm = report::median(&wasm);
    let _ = writeln!(
        out,
        "## 1. filter per event, batches of {BATCH}, in-process (median of {rounds} rounds × {} ms)",
        args.micro_ms
    );
    let _ = writeln!(out, "{:<44} {:>10}", "", "ns/event");
    let _ = writeln!(
        out,
        "{:<44} {native:>10.0}",
        "native closure (serde_json, get, compare)"
    );
    let _ = writeln!(
        out,
        "{:<44} {wasm:>10.0}",
        "filter_by_field.wasm (Plugin::filter)"
    );
    if disagree > 0 {
        let _ = writeln!(
            out,
            "WARNING: plugin and closure disagree on {disagree} of {} events",
            events.len()
        );
    }
    let _ = writeln!(
        out,
        "{}",
        report::at_most_line(
            "filter_by_field / native",
            wasm / native,
            TARGET_FILTER_VS_NATIVE,
            "×"
        )
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "## 2. host cost, keep_all.wasm (does nothing), wall time of Plugin::filter"
    );
    let _ = writeln!(out, "{:<10} {:>12} {:>12}", "batch", "µs/call", "ns/event");
    let mut at_64 = f64::NAN;
    for (i, batch) in HOST_BATCHES.into_iter().enumerate() {
        let ns = report::median(&host_ns[i]);
        if batch == BATCH {
            at_64 = ns;
        }
        let _ = writeln!(
            out,
            "{batch:<10} {:>12.2} {ns:>12.0}",
            ns * batch as f64 / 1000.0
        );
    }
    let verdict = if at_64 < TARGET_HOST_NS {
        "PASS"
    } else {
        "BELOW"
    };
    let _ = writeln!(
        out,
        "{:<34} {at_64:>6.0}ns   target < {TARGET_HOST_NS:.0}ns   {verdict}",
        format!("host cost per event, batch {BATCH}")
    );
    Ok((
        out,
        Micro {
            native_ns: native,
            wasm_ns: wasm,
            host_ns_at_64: at_64,
        },
    ))
}

// ---------------------------------------------------------------------------------------
// 3 and 4: switchyard processes

/// One switchyard run: the main load's result, events delivered to the sink per second in
/// the same window, the side load's result (part 4) and the peak RSS.
struct Run {
    load: LoadResult,
    delivered_per_s: f64,
    side: Option<LoadResult>,
    plugin_log_lines: usize,
    peak_rss_kib: u64,
}

/// The filter of parts 3 and 4, as in config/plugins.toml.
fn filter_plugin_toml(name: &str, dir: &Path) -> String {
    format!(
        "[plugins.{name}]\npath = {:?}\nconfig = {{ field = \"{FIELD}\", equals = \"{EQUALS}\" }}\n\
         fuel = 1000000000\ntimeout = \"100ms\"\non_error = \"dead_letter\"\n\n",
        dir.join("filter_by_field.wasm").display().to_string()
    )
}

fn file_sink_toml(name: &str, path: &Path) -> String {
    format!(
        "[sinks.{name}]\ntype = \"file\"\npath = {:?}\n\n",
        path.display().to_string()
    )
}

fn server_toml(listen: &str, dir: &Path) -> String {
    format!(
        "# Written by `cargo xtask bench plugin`.\n\
         [server]\nlisten = {listen:?}\ndata_dir = {:?}\n\n",
        dir.join("data").display().to_string()
    )
}

/// Part 3: one http source `bench` → pipeline (with or without the filter) → file sink.
fn e2e_config(with_filter: bool, listen: &str, dir: &Path, plugins: &Path) -> String {
    let mut t = server_toml(listen, dir);
    t.push_str("[sources.bench]\ntype = \"http\"\n\n");
    if with_filter {
        t.push_str(&filter_plugin_toml("paid_only", plugins));
    }
    t.push_str("[pipelines.bench]\nfrom = [\"bench\"]\n");
    if with_filter {
        t.push_str("filters = [\"paid_only\"]\n");
    }
    t.push_str("to = [\"out\"]\n\n");
    t.push_str(&file_sink_toml("out", &dir.join("out.jsonl")));
    t
}

/// Part 4: `healthy` (filter_by_field → out) and `hostile` (loop_forever, 20 ms deadline,
/// practically unlimited fuel, dead_letter → hostile_out), two http sources.
fn isolation_config(listen: &str, dir: &Path, plugins: &Path) -> String {
    let mut t = server_toml(listen, dir);
    t.push_str("[sources.healthy]\ntype = \"http\"\n\n[sources.hostile]\ntype = \"http\"\n\n");
    t.push_str(&filter_plugin_toml("paid_only", plugins));
    let _ = write!(
        t,
        "[plugins.hostile]\npath = {:?}\nfuel = 1000000000000\ntimeout = \"20ms\"\n\
         on_error = \"dead_letter\"\n\n",
        plugins.join("loop_forever.wasm").display().to_string()
    );
    t.push_str(
        "[pipelines.healthy]\nfrom = [\"healthy\"]\nfilters = [\"paid_only\"]\nto = [\"out\"]\n\n\
         [pipelines.hostile]\nfrom = [\"hostile\"]\nfilters = [\"hostile\"]\nto = [\"hostile_out\"]\n\n",
    );
    t.push_str(&file_sink_toml("out", &dir.join("out.jsonl")));
    t.push_str(&file_sink_toml("hostile_out", &dir.join("hostile.jsonl")));
    t
}

fn count_lines(path: &Path) -> u64 {
    let Ok(mut f) = std::fs::File::open(path) else {
        return 0;
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    while let Ok(read) = f.read(&mut buf) {
        if read == 0 {
            break;
        }
        n += buf[..read].iter().filter(|b| **b == b'\n').count() as u64;
    }
    n
}

/// Lines appended to `path` per second between `warmup` and `warmup + measure` from now.
fn delivery_rate(path: PathBuf, warmup: Duration, measure: Duration) -> JoinHandle<f64> {
    std::thread::spawn(move || {
        std::thread::sleep(warmup);
        let t0 = Instant::now();
        let n0 = count_lines(&path);
        std::thread::sleep(measure.saturating_sub(t0.elapsed()));
        let n1 = count_lines(&path);
        n1.saturating_sub(n0) as f64 / t0.elapsed().as_secs_f64()
    })
}

/// Starts switchyard with `config`, runs the main load on `/ingest/{source}` (and the side
/// load on `/ingest/hostile` when `hostile_rps` is given), and stops it.
fn run_switchyard(
    args: &PluginArgs,
    bin: &Path,
    dir: &Path,
    config: &str,
    source: &str,
    hostile_rps: Option<u32>,
) -> anyhow::Result<Run> {
    std::fs::create_dir_all(dir)?;
    let addr = free_addr()?;
    let config = config.replace("{LISTEN}", &addr.to_string());
    let config_path = dir.join("switchyard.toml");
    std::fs::write(&config_path, &config)?;
    let log = dir.join("server.log");
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg("-c")
        .arg(&config_path)
        .env("RUST_LOG", "warn");
    let mut process = ServerProcess::spawn("switchyard", cmd, &log)?;
    process.wait_ready(addr, Duration::from_secs(30), &log)?;
    let warmup = Duration::from_secs(args.warmup);
    let measure = Duration::from_secs(args.seconds);
    let side = hostile_rps.map(|rps| {
        let spec = LoadSpec {
            addr,
            path: "/ingest/hostile".into(),
            connections: 1,
            body_bytes: 4,
            keys: 1,
            warmup,
            measure,
            body: BodyKind::Fixed {
                bytes: Bytes::from_static(b"loop"),
                content_type: "text/plain",
            },
            pause: Some(Duration::from_secs(1) / rps.max(1)),
        };
        std::thread::spawn(move || load::run(spec))
    });
    let delivered = delivery_rate(dir.join("out.jsonl"), warmup, measure);
    let load = load::run(LoadSpec {
        addr,
        path: format!("/ingest/{source}"),
        connections: args.connections,
        body_bytes: args.body_bytes,
        keys: args.keys,
        warmup,
        measure,
        body: BodyKind::Status(EQUALS),
        pause: None,
    })?;
    let side = match side {
        Some(h) => Some(
            h.join()
                .map_err(|_| anyhow::anyhow!("the side load panicked"))??,
        ),
        None => None,
    };
    let delivered_per_s = delivered
        .join()
        .map_err(|_| anyhow::anyhow!("the delivery counter panicked"))?;
    let peak_rss_kib = process.peak_rss_kib()?;
    process.stop(Duration::from_secs(15))?;
    let plugin_log_lines = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("hostile"))
        .count();
    Ok(Run {
        load,
        delivered_per_s,
        side,
        plugin_log_lines,
        peak_rss_kib,
    })
}

fn header(out: &mut String) {
    let _ = writeln!(
        out,
        "{:<26} {:>10} {:>12} {:>8} {:>8} {:>8} {:>7}",
        "run", "req/s", "delivered/s", "p50 ms", "p99 ms", "RSS MiB", "errors"
    );
}

fn row(out: &mut String, name: &str, r: &Run) {
    let _ = writeln!(
        out,
        "{name:<26} {:>10.0} {:>12.0} {:>8.2} {:>8.2} {:>8.1} {:>7}",
        r.load.per_second(),
        r.delivered_per_s,
        r.load.latency_ms(0.5),
        r.load.latency_ms(0.99),
        r.peak_rss_kib as f64 / 1024.0,
        r.load.error_count(),
    );
    for (k, n) in &r.load.errors {
        let _ = writeln!(out, "  errors of {name}: {n} × {k}");
    }
}

fn load_line(args: &PluginArgs) -> String {
    format!(
        "{} keep-alive connections, one request in flight each, {}-byte JSON events with \
         status \"{EQUALS}\" (all kept), x-key over {} keys; {} s warm-up, {} s measured; \
         delivered/s = lines appended to the file sink in the same window",
        args.connections, args.body_bytes, args.keys, args.warmup, args.seconds
    )
}

fn end_to_end(
    args: &PluginArgs,
    bin: &Path,
    plugins: &Path,
    root: &Path,
) -> anyhow::Result<(String, [Run; 2])> {
    let mut runs = Vec::new();
    for (name, with_filter) in [("no plugin", false), ("filter_by_field", true)] {
        eprintln!("end to end: {name} ({} s)…", args.warmup + args.seconds);
        let dir = root.join(if with_filter {
            "e2e-filter"
        } else {
            "e2e-none"
        });
        let config = e2e_config(with_filter, "{LISTEN}", &dir, plugins);
        runs.push((
            name,
            run_switchyard(args, bin, &dir, &config, "bench", None)
                .with_context(|| format!("end to end, {name} (files in {})", dir.display()))?,
        ));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## 3. end to end: http source -> pipeline -> file sink (fsync'd per batch), \
         without and with the filter"
    );
    let _ = writeln!(out, "load: {}", load_line(args));
    header(&mut out);
    for (name, r) in &runs {
        row(&mut out, name, r);
    }
    let (none, with) = (&runs[0].1, &runs[1].1);
    let _ = writeln!(
        out,
        "{:<34} {:>6.2}   (no target: the cost of the filter in the whole path)",
        "with filter / without, req/s",
        with.load.per_second() / none.load.per_second()
    );
    let _ = writeln!(
        out,
        "{:<34} {:>6.2}",
        "with filter / without, delivered/s",
        with.delivered_per_s / none.delivered_per_s
    );
    Ok((out, two_runs(runs)))
}

/// The two runs of a part, in the order they ran.
fn two_runs(runs: Vec<(&str, Run)>) -> [Run; 2] {
    let mut it = runs.into_iter().map(|(_, r)| r);
    let (Some(a), Some(b)) = (it.next(), it.next()) else {
        unreachable!("every part runs switchyard twice")
    };
    [a, b]
}

fn isolation(
    args: &PluginArgs,
    bin: &Path,
    plugins: &Path,
    root: &Path,
) -> anyhow::Result<(String, [Run; 2])> {
    let mut runs = Vec::new();
    for (name, hostile) in [
        ("healthy alone", None),
        ("healthy + hostile", Some(args.hostile_rps)),
    ] {
        eprintln!("isolation: {name} ({} s)…", args.warmup + args.seconds);
        let dir = root.join(if hostile.is_some() {
            "iso-hostile"
        } else {
            "iso-alone"
        });
        let config = isolation_config("{LISTEN}", &dir, plugins);
        runs.push((
            name,
            run_switchyard(args, bin, &dir, &config, "healthy", hostile)
                .with_context(|| format!("isolation, {name} (files in {})", dir.display()))?,
        ));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## 4. isolation: healthy source (filter_by_field -> file) alone vs while a hostile \
         source gets `loop` ({} req/s) into loop_forever.wasm (timeout 20ms, fuel 1e12, \
         on_error dead_letter)",
        args.hostile_rps
    );
    let _ = writeln!(out, "load on the healthy source: {}", load_line(args));
    header(&mut out);
    for (name, r) in &runs {
        row(&mut out, name, r);
    }
    let (alone, attacked) = (&runs[0].1, &runs[1].1);
    if let Some(side) = &attacked.side {
        let _ = writeln!(
            out,
            "hostile side load: {} `loop` requests accepted in the window ({:.1}/s), {} errors; \
             switchyard logged {} line(s) naming `hostile`",
            side.ok,
            side.per_second(),
            side.error_count(),
            attacked.plugin_log_lines
        );
    }
    let _ = writeln!(
        out,
        "{}",
        report::ratio_line(
            "under attack / alone, delivered/s",
            attacked.delivered_per_s / alone.delivered_per_s,
            TARGET_ISOLATION
        )
    );
    let _ = writeln!(
        out,
        "{}",
        report::ratio_line(
            "under attack / alone, ingest req/s",
            attacked.load.per_second() / alone.load.per_second(),
            TARGET_ISOLATION
        )
    );
    Ok((out, two_runs(runs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_configs_pass_switchyard_validation() {
        let dir = Path::new("/tmp/bench");
        let plugins = Path::new("/tmp/plugins");
        for text in [
            e2e_config(false, "127.0.0.1:1", dir, plugins),
            e2e_config(true, "127.0.0.1:1", dir, plugins),
            isolation_config("127.0.0.1:1", dir, plugins),
        ] {
            if let Err(e) = switchyard_config::load_str(&text, false) {
                panic!("{e}\n{text}");
            }
        }
    }

    #[test]
    fn the_native_filter_keeps_paid_events_only() {
        let events = bench_events(200);
        let kept = native_filter(&events[..4]);
        assert_eq!(kept, [true, false, true, false]);
        assert!(events.iter().all(|e| e.payload.len() == 200));
    }

    #[test]
    fn lines_are_counted() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let p = dir.path().join("f");
        assert_eq!(count_lines(&p), 0);
        std::fs::write(&p, "a\nb\nc\n").expect("written");
        assert_eq!(count_lines(&p), 3);
    }
}
