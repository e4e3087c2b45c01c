//! [`PluginHost`]: the engine, the epoch ticker, and loading (compile, import check, link).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, types::ComponentItem};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use crate::bindings::{self, filter::FilterPre, router::RouterPre, transform::TransformPre};
use crate::cache::{Cache, Compiled};
use crate::grants::{Grants, grant_key, other_contract};
use crate::outside::{self, NotAComponent, Outside, Toolchain, removal_hint};
use crate::plugin::{Limits, Plugin, State, Template, TypedPre, start_error};
use crate::{LoadError, PluginConfig, World};

/// How often the ticker thread advances the engine's epoch: the granularity of deadlines.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Engine-wide settings.
#[derive(Clone, Debug, Default)]
pub struct HostOptions {
    /// Use wasmtime's pooling allocator: instances come from pre-reserved slots, which
    /// makes replacing an instance after a failure ~2.5× cheaper, at the cost of
    /// reserving virtual memory up front. `None` (the default) allocates on demand.
    pub pooling: Option<PoolingOptions>,
    /// Keep compiled components in this directory and reuse them on later loads of the
    /// same bytes (see the `cache` module). `None` (the default) compiles at every load.
    pub cache_dir: Option<PathBuf>,
}

/// Sizes of the pooling allocator's slots.
#[derive(Clone, Debug)]
pub struct PoolingOptions {
    /// Live instances across all plugins (each idle pooled instance holds one slot).
    pub instances: u32,
    /// Largest `memory` limit of any plugin: each slot reserves this much.
    pub max_memory: u64,
}

impl Default for PoolingOptions {
    fn default() -> Self {
        Self {
            instances: 64,
            max_memory: 64 << 20,
        }
    }
}

/// Loads plugins. Holds the wasmtime `Engine` shared by every plugin and an epoch ticker
/// thread; cheap to clone.
#[derive(Clone)]
pub struct PluginHost {
    engine: Engine,
    /// Origin of the guests' `monotonic-now`.
    clock_origin: Instant,
    /// Memory of one pooled slot, when the pooling allocator is on.
    pooled_memory: Option<u64>,
    /// Compiled components on disk, when configured.
    cache: Option<Cache>,
}

impl PluginHost {
    /// A host with on-demand instance allocation.
    pub fn new() -> Result<Self, LoadError> {
        Self::with_options(&HostOptions::default())
    }

    /// A host with the given engine settings.
    pub fn with_options(options: &HostOptions) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed);
        if let Some(pooling) = &options.pooling {
            let max_memory = usize::try_from(pooling.max_memory).map_err(|_| {
                LoadError::Engine("pooling max_memory does not fit in usize".into())
            })?;
            let mut p = PoolingAllocationConfig::new();
            // A Rust component holds a handful of core instances (the program plus the
            // shims wit-component adds); leave room for that per component instance.
            p.total_component_instances(pooling.instances)
                .total_core_instances(pooling.instances.saturating_mul(8))
                .total_memories(pooling.instances)
                .total_tables(pooling.instances.saturating_mul(4))
                .max_memory_size(max_memory);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
        }
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        spawn_ticker(&engine)?;
        Ok(Self {
            engine,
            clock_origin: Instant::now(),
            pooled_memory: options.pooling.as_ref().map(|p| p.max_memory),
            cache: options.cache_dir.clone().map(Cache::new),
        })
    }

    /// Loads the plugin `name` as configured: reads and compiles `config.path`, checks its
    /// imports and world, and starts a first instance (running `init` with
    /// `config.config` as JSON). Compilation happens once; [`Plugin::fork`] and
    /// [`crate::PluginPool`] reuse it.
    pub fn load(&self, name: &str, config: &PluginConfig) -> Result<Plugin, LoadError> {
        let path = PathBuf::from(&config.path);
        let bytes = std::fs::read(&path).map_err(|source| LoadError::Io {
            plugin: name.to_owned(),
            path: path.clone(),
            source,
        })?;
        self.load_bytes(name, &path, &bytes, config)
    }

    /// What a component file exports and imports, without starting it: for
    /// `switchyard plugin inspect`.
    pub fn inspect(&self, path: &Path) -> Result<Inspection, LoadError> {
        let name = path
            .file_stem()
            .map_or_else(|| "plugin".to_owned(), |s| s.to_string_lossy().into_owned());
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
            plugin: name.clone(),
            path: path.to_owned(),
            source,
        })?;
        let component = Component::new(&self.engine, &bytes).map_err(|e| LoadError::Compile {
            plugin: name.clone(),
            path: path.to_owned(),
            message: format!("{e:#}"),
        })?;
        let ty = component.component_type();
        let imports = ty
            .imports(&self.engine)
            .map(|(n, _)| (n.to_owned(), Grants::default().allows(n)))
            .collect();
        let exports = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        Ok(Inspection {
            world: world_of(&name, &self.engine, &component),
            imports,
            exports,
            size: bytes.len(),
        })
    }

    /// Like [`PluginHost::load`] with the component's bytes already in memory; `path` is
    /// only used in messages.
    pub fn load_bytes(
        &self,
        name: &str,
        path: &Path,
        bytes: &[u8],
        config: &PluginConfig,
    ) -> Result<Plugin, LoadError> {
        if let Some(slot) = self.pooled_memory
            && config.memory.as_u64() > slot
        {
            return Err(LoadError::Engine(format!(
                "plugin `{name}` may use {} bytes of memory but pooled instances hold at most \
                 {slot}; raise PoolingOptions::max_memory or lower the plugin's `memory`",
                config.memory.as_u64()
            )));
        }
        // The imports are checked before compiling, which takes seconds for a big guest.
        let grants = Grants::from_config(name, config)?;
        let checked = precheck_with(name, path, bytes, &grants)?;
        let started = Instant::now();
        let compile = || Component::new(&self.engine, bytes);
        let (component, compiled) = match &self.cache {
            Some(cache) => cache.get_or_compile(&self.engine, name, bytes, compile),
            None => compile().map(|c| (c, Compiled::Fresh)),
        }
        .map_err(|e| LoadError::Compile {
            plugin: name.to_owned(),
            path: path.to_owned(),
            message: format!("{e:#}"),
        })?;
        let compile_time = started.elapsed();
        if !checked {
            let ty = component.component_type();
            let outside = Outside {
                imports: ty
                    .imports(&self.engine)
                    .map(|(n, _)| n.to_owned())
                    .collect(),
                toolchain: None,
            };
            if let Some(found) = other_contract(outside.imports.iter().map(String::as_str)) {
                return Err(LoadError::OtherContract {
                    plugin: name.to_owned(),
                    found: found.to_owned(),
                });
            }
            check_imports(name, &outside, &grants)?;
        }
        let world = world_of(name, &self.engine, &component)?;

        let link_err = |e: wasmtime::Error| LoadError::Link {
            plugin: name.to_owned(),
            world,
            message: format!("{e:#}"),
        };
        let mut linker: Linker<State> = Linker::new(&self.engine);
        bindings::host::add_to_linker::<_, HasSelf<State>>(&mut linker, |s| s).map_err(link_err)?;
        // WASI holding just what is granted (`allow_env`, `allow_dirs`); stdout and stderr
        // go into the log.
        grants.add_to_linker(&mut linker).map_err(link_err)?;
        let pre = linker.instantiate_pre(&component).map_err(link_err)?;
        let typed = match world {
            World::Filter => TypedPre::Filter(FilterPre::new(pre).map_err(link_err)?),
            World::Router => TypedPre::Router(RouterPre::new(pre).map_err(link_err)?),
            World::Transform => TypedPre::Transform(TransformPre::new(pre).map_err(link_err)?),
        };

        let limits = Limits {
            fuel: config.fuel,
            memory: usize::try_from(config.memory.as_u64()).unwrap_or(usize::MAX),
            timeout: config.timeout,
        };
        let template = Arc::new(Template {
            name: Arc::from(name),
            world,
            engine: self.engine.clone(),
            pre: typed,
            limits,
            config_json: config.config.to_string(),
            clock_origin: self.clock_origin,
            grants,
            compiled,
            compile_time,
        });
        let mut plugin = Plugin::from_template(template);
        plugin.start().map_err(|cause| start_error(name, cause))?;
        Ok(plugin)
    }
}

/// Checks what can be checked without compiling `bytes`: that it is a component, built
/// for this contract version, importing nothing `config` does not grant. Takes
/// milliseconds where compiling a big guest takes seconds; [`PluginHost::load`] does the
/// same first. `Ok(false)` when the file could not be read this way (compiling it will
/// tell why).
pub fn precheck(
    name: &str,
    path: &Path,
    bytes: &[u8],
    config: &PluginConfig,
) -> Result<bool, LoadError> {
    let grants = Grants::from_config(name, config)?;
    precheck_with(name, path, bytes, &grants)
}

fn precheck_with(
    name: &str,
    path: &Path,
    bytes: &[u8],
    grants: &Grants,
) -> Result<bool, LoadError> {
    match outside::read(bytes) {
        Ok(outside) => {
            if let Some(found) = other_contract(outside.imports.iter().map(String::as_str)) {
                return Err(LoadError::OtherContract {
                    plugin: name.to_owned(),
                    found: found.to_owned(),
                });
            }
            check_imports(name, &outside, grants)?;
            Ok(true)
        }
        Err(NotAComponent::CoreModule) => Err(LoadError::Compile {
            plugin: name.to_owned(),
            path: path.to_owned(),
            message: "it is a core WebAssembly module, not a component (Rust: build with \
                      `--target wasm32-wasip2`, not wasm32-wasip1 or wasm32-unknown-unknown)"
                .into(),
        }),
        Err(NotAComponent::Unreadable) => Ok(false),
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is dropped. One thread
/// per engine, whatever the number of plugins.
fn spawn_ticker(engine: &Engine) -> Result<(), LoadError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("switchyard-plugin-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(|_| ())
        .map_err(|e| LoadError::Engine(format!("cannot start the epoch ticker thread: {e}")))
}

/// The outside of a component file: see [`PluginHost::inspect`].
#[derive(Debug)]
pub struct Inspection {
    /// The world it exports, or why it matches none.
    pub world: Result<World, LoadError>,
    /// Every import, with whether switchyard grants it.
    pub imports: Vec<(String, bool)>,
    /// Every export by name.
    pub exports: Vec<String>,
    /// Size of the file in bytes.
    pub size: usize,
}

/// Refuses a component that imports more than the contract, the std baggage and what
/// its config grants (see [`Grants::allows`]), with how to build it without them.
fn check_imports(plugin: &str, outside: &Outside, grants: &Grants) -> Result<(), LoadError> {
    let refused: Vec<String> = outside
        .imports
        .iter()
        .filter(|name| !grants.allows(name))
        .cloned()
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    let mut hints: Vec<String> = Vec::new();
    for import in &refused {
        let hint = match grant_key(import) {
            Some(key) => Some(format!(
                "{import}: grant it with `{key}` in [plugins.{plugin}]"
            )),
            None => removal_hint(import, outside.toolchain).map(|h| format!("{import}: {h}")),
        };
        if let Some(hint) = hint {
            hints.push(hint);
        }
    }
    // Python's advice is the same for every import it removes: say it once.
    if outside.toolchain == Some(Toolchain::Python) {
        let stubbed: Vec<&String> = refused
            .iter()
            .filter(|i| grant_key(i).is_none() && removal_hint(i, outside.toolchain).is_some())
            .collect();
        if let Some(first) = stubbed.first() {
            let advice = removal_hint(first, outside.toolchain).unwrap_or_default();
            hints.retain(|h| !h.ends_with(&advice));
            hints.push(format!(
                "{}: {advice}",
                stubbed
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Err(LoadError::ImportNotGranted {
        plugin: plugin.to_owned(),
        imports: refused,
        hints,
    })
}

fn world_of(plugin: &str, engine: &Engine, component: &Component) -> Result<World, LoadError> {
    let ty = component.component_type();
    let exports: Vec<(&str, bool)> = ty
        .exports(engine)
        .map(|(name, item)| (name, matches!(item.ty, ComponentItem::ComponentFunc(_))))
        .collect();
    let worlds: Vec<World> = exports
        .iter()
        .filter(|(_, is_func)| *is_func)
        .filter_map(|(name, _)| match *name {
            "filter" => Some(World::Filter),
            "route" => Some(World::Router),
            "transform" => Some(World::Transform),
            _ => None,
        })
        .collect();
    match worlds.as_slice() {
        [world] => Ok(*world),
        _ => Err(LoadError::UnknownWorld {
            plugin: plugin.to_owned(),
            exports: if exports.is_empty() {
                "nothing".into()
            } else {
                exports
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }),
    }
}
