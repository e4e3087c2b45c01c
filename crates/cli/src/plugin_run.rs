//! `switchyard plugin test` and `switchyard plugin inspect`: run a component outside a
//! pipeline, under the same host and limits as `switchyard run`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use switchyard_config::{ByteSize, PluginConfig};
use switchyard_event::Event;
use switchyard_plugin_host::{PluginHost, World};

/// Options of `plugin test`.
pub struct TestArgs {
    pub file: PathBuf,
    pub input: PathBuf,
    pub config: Option<String>,
    pub batch: usize,
    pub fuel: u64,
    pub memory: ByteSize,
    pub timeout: std::time::Duration,
}

/// Runs the plugin on every event of the input file (wire JSON lines), a batch at a time,
/// printing each event's decision and what each call cost.
pub fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
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
    let host = PluginHost::new()?;
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
    println!(
        "plugin `{name}` ({} world), {} events in batches of {}",
        plugin.world(),
        events.len(),
        args.batch
    );
    let mut failed = false;
    for (b, chunk) in events.chunks(args.batch.max(1)).enumerate() {
        let first = b * args.batch.max(1);
        let result = match plugin.world() {
            World::Filter => plugin.filter(chunk).map(|c| {
                for (i, keep) in c.output.iter().enumerate() {
                    println!("{}\t{}", chunk[i].id, if *keep { "keep" } else { "drop" });
                }
                c.stats
            }),
            World::Router => plugin.route(chunk).map(|c| {
                for (i, sinks) in c.output.iter().enumerate() {
                    let to = if sinks.is_empty() {
                        "drop".to_owned()
                    } else {
                        format!("-> {}", sinks.join(", "))
                    };
                    println!("{}\t{to}", chunk[i].id);
                }
                c.stats
            }),
            World::Transform => plugin.transform(chunk).map(|c| {
                for (i, outs) in c.output.iter().enumerate() {
                    if outs.is_empty() {
                        println!("{}\tdrop", chunk[i].id);
                    }
                    for out in outs {
                        println!("{}\t=> {}", chunk[i].id, out.to_wire_line());
                    }
                }
                c.stats
            }),
        };
        match result {
            Ok(stats) => println!(
                "# batch {b} (events {first}..{}): fuel {} , time {:?}",
                first + chunk.len(),
                stats.fuel,
                stats.elapsed
            ),
            Err(e) => {
                failed = true;
                println!(
                    "# batch {b} (events {first}..{}): FAILED: {e}",
                    first + chunk.len()
                );
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints the world, exports and imports of a component, marking imports switchyard
/// does not grant.
pub fn inspect(file: &Path) -> anyhow::Result<ExitCode> {
    let host = PluginHost::new()?;
    let info = host.inspect(file)?;
    println!("{} ({} bytes)", file.display(), info.size);
    let ok = match &info.world {
        Ok(world) => {
            println!("world: {world} (switchyard:plugin@0.1.0)");
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
                    println!("  {name}    NOT GRANTED: switchyard will refuse to load this plugin")
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
