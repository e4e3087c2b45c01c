//! [`Plugin`]: one live instance of a loaded plugin, its calls and their limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Engine, ResourceLimiter, Store, Trap, UpdateDeadline};

use crate::Compiled;
use crate::bindings::{
    self, Batch, Level, WitEvent,
    filter::{Filter, FilterPre},
    router::{Router, RouterPre},
    transform::{Transform, TransformPre},
};
use crate::grants::{Grants, Wasi};
use crate::split::{self, Decided};
use crate::{Call, CallStats, ErrorCause, Event, LoadError, PluginError, World};

/// Largest packed batch whose buffers a [`Plugin`] keeps for its next call; a bigger one
/// is freed after its call, so an idle plugin holds at most this much.
const KEEP_PACKED_BYTES: usize = 1 << 20;

/// A batch packed as `wit/plugin.wit`'s `batch`: every text and byte field of every event
/// in one buffer, the rest in lists of numbers. Lowering it into the guest costs five
/// allocations in the guest and five copies, whatever the number of events and headers.
/// The buffers are reused from call to call.
struct Packed(Batch);

impl Default for Packed {
    fn default() -> Self {
        Self(Batch {
            data: Vec::new(),
            ends: Vec::new(),
            header_counts: Vec::new(),
            has_key: Vec::new(),
            timestamps_ms: Vec::new(),
        })
    }
}

impl Packed {
    /// Packs `events`; `None` if their fields add up to 4 GiB or more, which no guest can
    /// address. The buffers keep their capacity from earlier calls, so an ordinary batch
    /// packs without allocating.
    fn pack(&mut self, events: &[Event]) -> Option<()> {
        self.clear();
        for e in events {
            self.field(e.id.as_bytes());
            self.field(e.source.as_bytes());
            self.field(e.kind.as_bytes());
            self.field(e.key.as_deref().unwrap_or_default());
            self.field(&e.payload);
            self.field(e.content_type.as_bytes());
            for (name, value) in &e.headers {
                self.field(name.as_bytes());
                self.field(value.as_bytes());
            }
            self.0
                .header_counts
                .push(u32::try_from(e.headers.len()).ok()?);
            self.0.has_key.push(e.key.is_some());
            self.0.timestamps_ms.push(e.timestamp_ms);
        }
        // Checked once here rather than per field: past 4 GiB the ends wrapped, and the
        // batch is refused.
        u32::try_from(self.0.data.len()).ok().map(drop)
    }

    fn field(&mut self, bytes: &[u8]) {
        self.0.data.extend_from_slice(bytes);
        // Truncates past 4 GiB, a batch `pack` then refuses.
        self.0.ends.push(self.0.data.len() as u32);
    }

    fn clear(&mut self) {
        self.0.data.clear();
        self.0.ends.clear();
        self.0.header_counts.clear();
        self.0.has_key.clear();
        self.0.timestamps_ms.clear();
    }

    /// Frees the buffers of an unusually big batch; keeps those of an ordinary one.
    fn trim(&mut self) {
        if self.0.data.capacity() > KEEP_PACKED_BYTES
            || self.0.ends.capacity() * size_of::<u32>() > KEEP_PACKED_BYTES
        {
            *self = Self::default();
        } else {
            self.clear();
        }
    }
}

/// Longest log line a plugin may write; longer ones are cut so a plugin cannot flood the
/// log with one call.
const MAX_LOG_LINE: usize = 4096;

/// Per-call limits, from the plugin's config.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) fuel: u64,
    pub(crate) memory: usize,
    pub(crate) timeout: Duration,
}

/// A compiled, linked plugin: everything needed to start instances.
pub(crate) struct Template {
    pub(crate) name: Arc<str>,
    pub(crate) world: World,
    pub(crate) engine: Engine,
    pub(crate) pre: TypedPre,
    pub(crate) limits: Limits,
    pub(crate) config_json: String,
    pub(crate) clock_origin: Instant,
    /// WASI capabilities from the config; each instance gets a fresh context of them.
    pub(crate) grants: Grants,
    /// Whether the component was compiled at load or read from the compilation cache.
    pub(crate) compiled: Compiled,
    /// How long compiling (or reading it from the cache) took.
    pub(crate) compile_time: Duration,
}

pub(crate) enum TypedPre {
    Filter(FilterPre<State>),
    Router(RouterPre<State>),
    Transform(TransformPre<State>),
}

enum Exports {
    Filter(Filter),
    Router(Router),
    Transform(Transform),
}

/// What a store carries: the plugin's name for logs, the limiter, and the call deadline.
pub(crate) struct State {
    plugin: Arc<str>,
    clock_origin: Instant,
    limiter: Limiter,
    deadline: Instant,
    /// WASI state: what the config grants, and stdout/stderr into the log.
    wasi: Box<Wasi>,
}

impl wasmtime_wasi::WasiView for State {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        self.wasi.view()
    }
}

struct Limiter {
    memory: usize,
    /// Set when the guest asked for more memory than allowed during the current call, so
    /// the resulting trap is reported as [`ErrorCause::MemoryLimit`].
    memory_hit: bool,
}

/// Marker error returned from the limiter; it becomes the call's trap.
#[derive(Debug, thiserror::Error)]
#[error("linear memory limit of {0} bytes exceeded")]
struct MemoryLimitExceeded(usize);

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.memory_hit = true;
            return Err(wasmtime::Error::new(MemoryLimitExceeded(self.memory)));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Table elements are pointers: count them against the memory limit too.
        Ok(desired.saturating_mul(size_of::<usize>()) <= self.memory)
    }
}

impl bindings::types::Host for State {}

impl bindings::host::Host for State {
    fn log(&mut self, level: Level, mut message: String) {
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(target: "switchyard::plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "switchyard::plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "switchyard::plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "switchyard::plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "switchyard::plugin", plugin, "{message}"),
        }
    }

    fn monotonic_now(&mut self) -> u64 {
        u64::try_from(self.clock_origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

struct Live {
    store: Store<State>,
    exports: Exports,
}

/// A loaded plugin with (at most) one live instance. Calls take `&mut self`: one batch
/// at a time per `Plugin`; use [`Plugin::fork`] or [`crate::PluginPool`] for more.
///
/// `Plugin` is `Send`: move it into a blocking thread to call it.
pub struct Plugin {
    template: Arc<Template>,
    live: Option<Live>,
    /// Buffers of the batch being lent to the guest, kept for the next call.
    packed: Packed,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.template.name)
            .field("world", &self.template.world)
            .field("live", &self.live.is_some())
            .finish()
    }
}

impl Plugin {
    pub(crate) fn from_template(template: Arc<Template>) -> Self {
        Self {
            template,
            live: None,
            packed: Packed::default(),
        }
    }

    pub(crate) fn template(&self) -> &Arc<Template> {
        &self.template
    }

    /// The name the plugin was loaded under.
    pub fn name(&self) -> &str {
        &self.template.name
    }

    /// The world the component exports.
    pub fn world(&self) -> World {
        self.template.world
    }

    /// Whether the component was compiled at load or came from the compilation cache,
    /// and how long that took.
    pub fn compiled(&self) -> (Compiled, Duration) {
        (self.template.compiled, self.template.compile_time)
    }

    /// Another handle on the same compiled plugin with its own instance, started on its
    /// first call (a failure to start then shows as [`ErrorCause::Restart`]). Cheap: no
    /// compilation.
    pub fn fork(&self) -> Plugin {
        Plugin::from_template(self.template.clone())
    }

    /// Starts the instance now if there is none (after a failure, or after
    /// [`Plugin::fork`]), so the next call does not pay for it.
    pub fn warm_up(&mut self) -> Result<(), ErrorCause> {
        self.start()
    }

    /// Keeps or drops each event: `output[i]` is `true` to keep `events[i]`.
    pub fn filter(&mut self, events: &[Event]) -> Result<Call<Vec<bool>>, PluginError> {
        self.expect_world(World::Filter, events.len())?;
        self.call_packed(events, |exports, store, packed| match exports {
            Exports::Filter(f) => f.call_filter(store, &packed.0),
            _ => Err(world_mismatch()),
        })
    }

    /// The sinks each event goes to: `output[i]` lists sink names for `events[i]`
    /// (empty = drop).
    pub fn route(&mut self, events: &[Event]) -> Result<Call<Vec<Vec<String>>>, PluginError> {
        self.expect_world(World::Router, events.len())?;
        self.call_packed(events, |exports, store, packed| match exports {
            Exports::Router(r) => r.call_route(store, &packed.0),
            _ => Err(world_mismatch()),
        })
    }

    /// The events that replace each event: `output[i]` replaces `events[i]` (empty = drop,
    /// several = split).
    pub fn transform(&mut self, events: &[Event]) -> Result<Call<Vec<Vec<Event>>>, PluginError> {
        self.expect_world(World::Transform, events.len())?;
        let call = self.call_packed(events, |exports, store, packed| match exports {
            Exports::Transform(t) => t.call_transform(store, &packed.0),
            _ => Err(world_mismatch()),
        })?;
        Ok(Call {
            output: call
                .output
                .into_iter()
                .map(|outs| outs.into_iter().map(from_wit).collect())
                .collect(),
            stats: call.stats,
        })
    }

    /// [`Plugin::filter`] on a whole batch, however big: a call that runs out of fuel or
    /// memory is retried as two halves (see [`crate::max_splits`]), so only events that
    /// exceed a limit on their own, or a call that fails otherwise, end up failed.
    pub fn filter_split(&mut self, events: &[Event]) -> Decided<bool> {
        split::decide(events.len(), |range| self.filter(&events[range]))
    }

    /// [`Plugin::route`] on a whole batch, splitting like [`Plugin::filter_split`].
    pub fn route_split(&mut self, events: &[Event]) -> Decided<Vec<String>> {
        split::decide(events.len(), |range| self.route(&events[range]))
    }

    /// [`Plugin::transform`] on a whole batch, splitting like [`Plugin::filter_split`].
    pub fn transform_split(&mut self, events: &[Event]) -> Decided<Vec<Event>> {
        split::decide(events.len(), |range| self.transform(&events[range]))
    }

    fn expect_world(&self, called: World, batch: usize) -> Result<(), PluginError> {
        if self.template.world == called {
            return Ok(());
        }
        Err(PluginError {
            plugin: self.template.name.to_string(),
            batch,
            cause: ErrorCause::WrongWorld {
                world: self.template.world,
                called,
            },
            stats: CallStats::default(),
        })
    }

    /// Starts an instance if there is none: instantiate from the template and run `init`,
    /// both under the call limits (constructors run during instantiation).
    pub(crate) fn start(&mut self) -> Result<(), ErrorCause> {
        if self.live.is_some() {
            return Ok(());
        }
        let t = &*self.template;
        let wasi = t.grants.context(&t.name)?;
        let mut store = Store::new(
            &t.engine,
            State {
                plugin: t.name.clone(),
                clock_origin: t.clock_origin,
                limiter: Limiter {
                    memory: t.limits.memory,
                    memory_hit: false,
                },
                deadline: Instant::now(),
                wasi,
            },
        );
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });

        store.data().wasi.start_call();
        arm(&mut store, &t.limits);
        let exports = match &t.pre {
            TypedPre::Filter(p) => p.instantiate(&mut store).map(Exports::Filter),
            TypedPre::Router(p) => p.instantiate(&mut store).map(Exports::Router),
            TypedPre::Transform(p) => p.instantiate(&mut store).map(Exports::Transform),
        }
        .map_err(|e| classify(&e, store.data(), &t.limits))?;

        arm(&mut store, &t.limits);
        let init = match &exports {
            Exports::Filter(f) => f.call_init(&mut store, &t.config_json),
            Exports::Router(r) => r.call_init(&mut store, &t.config_json),
            Exports::Transform(x) => x.call_init(&mut store, &t.config_json),
        };
        store.data().wasi.end_call();
        match init {
            Ok(Ok(())) => {
                self.live = Some(Live { store, exports });
                Ok(())
            }
            Ok(Err(message)) => Err(ErrorCause::Returned(message)),
            Err(e) => Err(classify(&e, store.data(), &t.limits)),
        }
    }

    /// Packs `events` into the plugin's buffers and runs [`Plugin::call`] with them. A batch
    /// too big for any guest to address fails like one over the memory limit, so splitting
    /// it in halves can still decide it.
    fn call_packed<T: Decisions>(
        &mut self,
        events: &[Event],
        f: impl FnOnce(&Exports, &mut Store<State>, &Packed) -> wasmtime::Result<Result<T, String>>,
    ) -> Result<Call<T>, PluginError> {
        let mut packed = std::mem::take(&mut self.packed);
        let result = match packed.pack(events) {
            Some(()) => self.call(events.len(), |exports, store| f(exports, store, &packed)),
            None => Err(PluginError {
                plugin: self.template.name.to_string(),
                batch: events.len(),
                cause: ErrorCause::MemoryLimit {
                    limit: self.template.limits.memory as u64,
                },
                stats: CallStats::default(),
            }),
        };
        packed.trim();
        self.packed = packed;
        result
    }

    /// Runs one call on the live instance (starting one if needed), checks the number of
    /// decisions, and drops the instance on any failure.
    fn call<T: Decisions>(
        &mut self,
        batch: usize,
        f: impl FnOnce(&Exports, &mut Store<State>) -> wasmtime::Result<Result<T, String>>,
    ) -> Result<Call<T>, PluginError> {
        let plugin = self.template.name.clone();
        let fail = |cause, stats| PluginError {
            plugin: plugin.to_string(),
            batch,
            cause,
            stats,
        };
        if let Err(cause) = self.start() {
            return Err(fail(
                ErrorCause::Restart(Box::new(cause)),
                CallStats::default(),
            ));
        }
        // `start` left an instance, or returned an error above.
        let Some(mut live) = self.live.take() else {
            return Err(fail(
                ErrorCause::Restart(Box::new(ErrorCause::Trap("no instance".into()))),
                CallStats::default(),
            ));
        };
        let limits = &self.template.limits;
        arm(&mut live.store, limits);
        let started = Instant::now();
        live.store.data().wasi.start_call();
        let result = f(&live.exports, &mut live.store);
        live.store.data().wasi.end_call();
        let stats = CallStats {
            fuel: limits
                .fuel
                .saturating_sub(live.store.get_fuel().unwrap_or(0)),
            elapsed: started.elapsed(),
        };
        match result {
            Ok(Ok(output)) => {
                let got = output.len();
                if got != batch {
                    return Err(fail(
                        ErrorCause::WrongDecisionCount {
                            expected: batch,
                            got,
                        },
                        stats,
                    ));
                }
                self.live = Some(live);
                Ok(Call { output, stats })
            }
            Ok(Err(message)) => Err(fail(ErrorCause::Returned(message), stats)),
            Err(e) => Err(fail(classify(&e, live.store.data(), limits), stats)),
        }
    }
}

/// Anything with a length: the decisions of one call.
trait Decisions {
    fn len(&self) -> usize;
}

impl<T> Decisions for Vec<T> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

/// Gives the store a fresh budget for one call: fuel, the deadline, the memory flag.
fn arm(store: &mut Store<State>, limits: &Limits) {
    // Only fails when fuel metering is off, and the engine always turns it on.
    let _ = store.set_fuel(limits.fuel);
    let state = store.data_mut();
    state.deadline = Instant::now() + limits.timeout;
    state.limiter.memory_hit = false;
    // Check the deadline at the next tick, then every tick (see the callback).
    store.set_epoch_deadline(1);
}

fn world_mismatch() -> wasmtime::Error {
    wasmtime::Error::msg("internal error: the plugin's exports do not match its world")
}

/// Turns what wasmtime returned into a cause, using what the store saw.
fn classify(err: &wasmtime::Error, state: &State, limits: &Limits) -> ErrorCause {
    if state.limiter.memory_hit || find::<MemoryLimitExceeded>(err).is_some() {
        return ErrorCause::MemoryLimit {
            limit: limits.memory as u64,
        };
    }
    match find::<Trap>(err) {
        Some(Trap::OutOfFuel) => ErrorCause::OutOfFuel {
            budget: limits.fuel,
        },
        Some(Trap::Interrupt) => ErrorCause::Timeout {
            limit: limits.timeout,
        },
        _ => {
            let mut message = err.root_cause().to_string();
            let printed = state.wasi.stderr.tail();
            let printed: Vec<&str> = printed
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            if !printed.is_empty() {
                message.push_str("; it wrote to stderr just before: ");
                message.push_str(&printed.join(" | "));
            }
            ErrorCause::Trap(message)
        }
    }
}

fn find<E: std::error::Error + Send + Sync + 'static>(err: &wasmtime::Error) -> Option<&E> {
    err.downcast_ref::<E>()
        .or_else(|| err.chain().find_map(|e| e.downcast_ref::<E>()))
}

pub(crate) fn start_error(plugin: &str, cause: ErrorCause) -> LoadError {
    match cause {
        ErrorCause::Returned(message) => LoadError::Init {
            plugin: plugin.to_owned(),
            message,
        },
        cause => LoadError::Start {
            plugin: plugin.to_owned(),
            cause,
        },
    }
}

fn from_wit(e: WitEvent) -> Event {
    Event {
        id: e.id.into(),
        source: e.source.into(),
        kind: e.kind.into(),
        key: e.key,
        payload: e.payload,
        content_type: e.content_type.into(),
        headers: e.headers.into_iter().map(|h| (h.name, h.value)).collect(),
        timestamp_ms: e.timestamp_ms,
        payload_is_compact_json: false,
    }
}
