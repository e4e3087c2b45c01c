//! [`PluginPool`]: idle instances of one plugin shared by several threads.

use std::sync::{Arc, Mutex};

use crate::plugin::Template;
use crate::{Call, Decided, Event, Plugin, PluginError, World};

/// Instances of one plugin for concurrent callers. Each call takes an idle [`Plugin`] (or
/// forks a new one when all are busy), runs, and puts it back, so instances are reused
/// and a batch never waits for another batch. At most `max_idle` instances are kept.
///
/// [`PluginPool::replace`] swaps in a new build of the plugin: calls already running
/// finish on the old one (whose instances are then dropped), every call that starts
/// afterwards runs the new one.
///
/// `PluginPool` is `Sync`: share it in an `Arc` across blocking threads.
pub struct PluginPool {
    name: Arc<str>,
    world: World,
    /// The build calls run now, and its idle instances, under one lock so that a call
    /// never takes or puts back an instance of a build that has been replaced.
    inner: Mutex<Inner>,
    max_idle: usize,
}

struct Inner {
    /// The compiled plugin, to start more instances (not a `Plugin`: a store's WASI state
    /// is `Send` but not `Sync`).
    template: Arc<Template>,
    idle: Vec<Plugin>,
}

impl PluginPool {
    /// A pool seeded with `plugin` (already started by [`crate::PluginHost::load`]) that
    /// keeps up to `max_idle` idle instances (at least one).
    pub fn new(plugin: Plugin, max_idle: usize) -> Self {
        Self {
            name: plugin.template().name.clone(),
            world: plugin.template().world,
            inner: Mutex::new(Inner {
                template: plugin.template().clone(),
                idle: vec![plugin],
            }),
            max_idle: max_idle.max(1),
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's world.
    pub fn world(&self) -> World {
        self.world
    }

    /// Runs `plugin` (a new build of this one, already started) from now on. Calls in
    /// progress finish on the old build; their instances are not reused. Refused, with
    /// the world `plugin` exports, when that is not this pool's.
    pub fn replace(&self, plugin: Plugin) -> Result<(), World> {
        if plugin.world() != self.world {
            return Err(plugin.world());
        }
        let template = plugin.template().clone();
        let (old_template, old_idle) = {
            let mut inner = self.lock();
            (
                std::mem::replace(&mut inner.template, template),
                std::mem::replace(&mut inner.idle, vec![plugin]),
            )
        };
        // Tearing down the old instances and code happens outside the lock, so calls on
        // the new build do not wait for it.
        drop(old_idle);
        drop(old_template);
        Ok(())
    }

    /// [`Plugin::filter`] on an idle instance.
    pub fn filter(&self, events: &[Event]) -> Result<Call<Vec<bool>>, PluginError> {
        self.with(|p| p.filter(events))
    }

    /// [`Plugin::route`] on an idle instance.
    pub fn route(&self, events: &[Event]) -> Result<Call<Vec<Vec<String>>>, PluginError> {
        self.with(|p| p.route(events))
    }

    /// [`Plugin::transform`] on an idle instance.
    pub fn transform(&self, events: &[Event]) -> Result<Call<Vec<Vec<Event>>>, PluginError> {
        self.with(|p| p.transform(events))
    }

    /// [`Plugin::filter_split`] on an idle instance (all calls of the batch on that one).
    pub fn filter_split(&self, events: &[Event]) -> Decided<bool> {
        self.with(|p| p.filter_split(events))
    }

    /// [`Plugin::route_split`] on an idle instance.
    pub fn route_split(&self, events: &[Event]) -> Decided<Vec<String>> {
        self.with(|p| p.route_split(events))
    }

    /// [`Plugin::transform_split`] on an idle instance.
    pub fn transform_split(&self, events: &[Event]) -> Decided<Vec<Event>> {
        self.with(|p| p.transform_split(events))
    }

    /// Number of idle instances right now.
    pub fn idle(&self) -> usize {
        self.lock().idle.len()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Plugin) -> T) -> T {
        let mut plugin = {
            let mut inner = self.lock();
            // Idle instances are always of the current build (`replace` clears them).
            match inner.idle.pop() {
                Some(p) => p,
                None => Plugin::from_template(inner.template.clone()),
            }
        };
        let out = f(&mut plugin);
        let mut inner = self.lock();
        // An instance of a build replaced during the call is dropped, not put back.
        if Arc::ptr_eq(plugin.template(), &inner.template) && inner.idle.len() < self.max_idle {
            inner.idle.push(plugin);
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock can only come from Vec::push/pop or an Arc clone;
        // the state is still valid, so keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// Shared across threads by the runtime.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PluginPool>();
    assert_send_sync::<Arc<PluginPool>>();
};
