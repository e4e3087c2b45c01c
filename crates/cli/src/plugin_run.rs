//! `switchyard plugin test` and `switchyard plugin inspect`: run a component outside a
//! pipeline, under the same host and limits as `switchyard run`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use switchyard_config::{ByteSize, PluginConfig};
use switchyard_event::Event;
use switchyard_plugin_host::{CallStats, Compiled, Decided, HostOptions, PluginHost, World};

/// Options of `plugin test`.
pub struct TestArgs {
    pub file: PathBuf,
    pub input: PathBuf,
    pub config: Option<String>,
    pub batch: usize,
    pub fuel: u64,
    pub memory: ByteSize,
    pub timeout: std::time::Duration,
    /// Run again whenever the component or the input file changes.
    pub watch: bool,
}

/// Runs the plugin on every event of the input file (wire JSON lines), a batch at a time
/// and split like in a pipeline, printing each event's decision and what each call cost.
pub fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    if !args.watch {
        return test_once(&args);
    }
    loop {
        let seen = [stamp(&args.file), stamp(&args.input)];
        match test_once(&args) {
            Ok(_) => {}
            Err(e) => println!("error: {e:#}"),
        }
        println!(
            "# watching {} and {} for changes (Ctrl-C to stop)",
            args.file.display(),
            args.input.display()
        );
        while [stamp(&args.file), stamp(&args.input)] == seen {
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        // A build writes the file in several steps: let it finish.
        let mut last = [stamp(&args.file), stamp(&args.input)];
        loop {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let now = [stamp(&args.file), stamp(&args.input)];
            if now == last {
                break;
            }
            last = now;
        }
        println!();
    }
}

/// What tells a file changed: its modification time and size (`None` while missing).
fn stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn test_once(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let config_json: serde_json::Value = match &args.config {
        Some(text) => serde_json::from_str(text)
            .with_context(|| format!("--config is not valid JSON: {text}"))?,
        None => serde_json::json!({}),
    };
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let mut events = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: invalid JSON", args.input.display(), n + 1))?;
        let event = Event::from_wire_json(&value).map_err(|e| {
            anyhow::anyhow!(
                "{} line {}: {e} (each line is one event in the JSON form switchyard writes)",
                args.input.display(),
                n + 1
            )
        })?;
        events.push(event);
    }
    if events.is_empty() {
        bail!("{} holds no events", args.input.display());
    }
    show_plugin_logs();
    let host = PluginHost::with_options(&HostOptions {
        cache_dir: user_cache_dir(),
        ..HostOptions::default()
    })?;
    let config = PluginConfig {
        path: args.file.display().to_string(),
        config: config_json,
        fuel: args.fuel,
        memory: args.memory,
        timeout: args.timeout,
        ..PluginConfig::default()
    };
    let name = plugin_name(&args.file);
    let mut plugin = host.load(&name, &config)?;
    let batch = args.batch.max(1);
    let (compiled, took) = plugin.compiled();
    println!(
        "plugin `{name}` ({} world), {} events in batches of {batch}; {} in {:.2} s",
        plugin.world(),
        events.len(),
        match compiled {
            Compiled::Cached => "compiled code read from the cache",
            Compiled::Fresh => "compiled",
        },
        took.as_secs_f64(),
    );
    let mut failed = false;
    let mut total = CallStats::default();
    let mut decided = 0usize;
    // The most fuel one event cost, over calls that succeeded (a call's fuel / its size).
    let mut worst_per_event = 0u64;
    for (b, chunk) in events.chunks(batch).enumerate() {
        let first = b * batch;
        let outcome = match plugin.world() {
            World::Filter => print_batch(plugin.filter_split(chunk), chunk, first, |e, keep| {
                println!("{}\t{}", e.id, if *keep { "keep" } else { "drop" });
            }),
            World::Router => print_batch(plugin.route_split(chunk), chunk, first, |e, sinks| {
                if sinks.is_empty() {
                    println!("{}\tdrop", e.id);
                } else {
                    println!("{}\t-> {}", e.id, sinks.join(", "));
                }
            }),
            World::Transform => {
                print_batch(plugin.transform_split(chunk), chunk, first, |e, outs| {
                    if outs.is_empty() {
                        println!("{}\tdrop", e.id);
                    }
                    for out in outs {
                        println!("{}\t=> {}", e.id, out.to_wire_line());
                    }
                })
            }
        };
        total.fuel = total.fuel.saturating_add(outcome.stats.fuel);
        total.elapsed += outcome.stats.elapsed;
        decided += chunk.len() - outcome.failed;
        worst_per_event = worst_per_event.max(outcome.worst_per_event);
        let range = format!("events {first}..{}", first + chunk.len());
        let calls = match outcome.calls {
            1 => String::new(),
            n => format!(", {n} calls ({} split)", outcome.splits),
        };
        let cost = format!(
            "fuel {} , time {:?}{calls}",
            outcome.stats.fuel, outcome.stats.elapsed
        );
        if outcome.failed == 0 {
            println!("# batch {b} ({range}): {cost}");
        } else {
            failed = true;
            println!(
                "# batch {b} ({range}): FAILED: {} of {} events follow the plugin's on_error; {cost}",
                outcome.failed,
                chunk.len()
            );
        }
    }
    if decided > 0 {
        let n = events.len() as f64;
        println!(
            "# per event: {:.0} fuel, {:.1} µs (all calls, {} events)",
            total.fuel as f64 / n,
            total.elapsed.as_secs_f64() * 1e6 / n,
            events.len()
        );
        if let Some(fits) = args.fuel.checked_div(worst_per_event) {
            println!(
                "# fuel {} per call fits about {fits} events per call at the costliest call's \
                 {worst_per_event} fuel per event{}",
                args.fuel,
                if fits < batch as u64 {
                    format!(
                        "; bigger batches are split in halves (raise `fuel` to about {} for batches of {batch})",
                        worst_per_event
                            .saturating_mul(batch as u64)
                            .saturating_mul(5)
                            / 4
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Where `plugin test` keeps compiled components between runs: `$XDG_CACHE_HOME` or
/// `~/.cache`, under `switchyard/plugin-cache`. `None` (no caching) when neither is set.
fn user_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("switchyard").join("plugin-cache"))
}

/// What deciding one batch took.
struct BatchOutcome {
    /// Fuel and time of all its calls together.
    stats: CallStats,
    calls: usize,
    splits: usize,
    /// Events whose call failed for good.
    failed: usize,
    /// Fuel per event of the costliest successful call.
    worst_per_event: u64,
}

/// Prints each call of a batch in the order made (the decisions of a successful one, a
/// line per split and per failure) and sums up what they cost.
fn print_batch<T>(
    decided: Decided<T>,
    chunk: &[Event],
    first: usize,
    print: impl Fn(&Event, &T),
) -> BatchOutcome {
    let calls = decided.attempts.len();
    let mut outcome = BatchOutcome {
        stats: CallStats::default(),
        calls,
        splits: decided.splits(),
        failed: decided.failed_events(),
        worst_per_event: 0,
    };
    let span =
        |r: &std::ops::Range<usize>| format!("events {}..{}", first + r.start, first + r.end);
    for attempt in decided.attempts {
        let stats = match &attempt.result {
            Ok(call) => call.stats,
            Err(e) => e.stats,
        };
        outcome.stats.fuel = outcome.stats.fuel.saturating_add(stats.fuel);
        outcome.stats.elapsed += stats.elapsed;
        match attempt.result {
            Err(e) if attempt.split => {
                let middle = attempt.range.start + attempt.range.len() / 2;
                println!(
                    "#   call on {}: {}; split into {} and {}",
                    span(&attempt.range),
                    e.cause,
                    span(&(attempt.range.start..middle)),
                    span(&(middle..attempt.range.end)),
                );
            }
            Err(e) => {
                for event in &chunk[attempt.range.clone()] {
                    println!("{}\ton_error", event.id);
                }
                println!("#   call on {}: FAILED: {e}", span(&attempt.range));
            }
            Ok(call) => {
                let per_event = stats.fuel / (attempt.range.len().max(1) as u64);
                outcome.worst_per_event = outcome.worst_per_event.max(per_event);
                for (event, decision) in chunk[attempt.range.clone()].iter().zip(&call.output) {
                    print(event, decision);
                }
                if calls > 1 {
                    println!(
                        "#   call on {}: fuel {} , time {:?}",
                        span(&attempt.range),
                        stats.fuel,
                        stats.elapsed
                    );
                }
            }
        }
    }
    outcome
}

/// Sends the plugin's own log lines (the host's `log` import) to stderr, every level
/// unless RUST_LOG says otherwise, so a plugin author sees what the plugin says.
fn show_plugin_logs() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,switchyard::plugin=trace"));
    // Fails only if a subscriber is already set, which then gets the lines instead.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .try_init();
}

/// Prints the world, exports and imports of a component, marking imports switchyard
/// does not grant.
pub fn inspect(file: &Path) -> anyhow::Result<ExitCode> {
    let host = PluginHost::new()?;
    let info = host.inspect(file)?;
    println!("{} ({} bytes)", file.display(), info.size);
    let ok = match &info.world {
        Ok(world) => {
            println!(
                "world: {world} (switchyard:plugin@{})",
                switchyard_plugin_host::CONTRACT_VERSION
            );
            true
        }
        Err(e) => {
            println!("world: none — {e}");
            false
        }
    };
    println!("exports:");
    for e in &info.exports {
        println!("  {e}");
    }
    let built_by = std::fs::read(file)
        .ok()
        .and_then(|bytes| switchyard_plugin_host::toolchain(&bytes));
    if let Some(toolchain) = built_by {
        println!(
            "built by: the {toolchain:?} toolchain (as its producers section and imports tell)"
        );
    }
    println!("imports:");
    let mut refused = 0;
    for (name, granted) in &info.imports {
        if *granted {
            println!("  {name}");
        } else {
            refused += 1;
            match switchyard_plugin_host::grant_key(name) {
                Some(key) => println!(
                    "  {name}    NOT GRANTED: switchyard refuses to load this plugin unless \
                     its [plugins.NAME] config has `{key}`"
                ),
                None => {
                    println!("  {name}    NOT GRANTED: switchyard will refuse to load this plugin");
                    if let Some(hint) = switchyard_plugin_host::removal_hint(name, built_by) {
                        println!("      {hint}");
                    }
                }
            }
        }
    }
    Ok(if ok && refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn plugin_name(file: &Path) -> String {
    file.file_stem()
        .map_or_else(|| "plugin".to_owned(), |s| s.to_string_lossy().into_owned())
}
