//! [`PluginPool`]: idle instances of one plugin shared by several threads.

use std::sync::{Arc, Mutex};

use crate::plugin::Template;
use crate::{Call, Decided, Event, Plugin, PluginError, World};

/// Instances of one plugin for concurrent callers. Each call takes an idle [`Plugin`] (or
/// forks a new one when all are busy), runs, and puts it back, so instances are reused
/// and a batch never waits for another batch. At most `max_idle` instances are kept.
///
/// `PluginPool` is `Sync`: share it in an `Arc` across blocking threads.
pub struct PluginPool {
    /// The compiled plugin, to start more instances (not a `Plugin`: a store's WASI state
    /// is `Send` but not `Sync`).
    template: Arc<Template>,
    idle: Mutex<Vec<Plugin>>,
    max_idle: usize,
}

impl PluginPool {
    /// A pool seeded with `plugin` (already started by [`crate::PluginHost::load`]) that
    /// keeps up to `max_idle` idle instances (at least one).
    pub fn new(plugin: Plugin, max_idle: usize) -> Self {
        Self {
            template: plugin.template().clone(),
            idle: Mutex::new(vec![plugin]),
            max_idle: max_idle.max(1),
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.template.name
    }

    /// The plugin's world.
    pub fn world(&self) -> World {
        self.template.world
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
        self.lock().len()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Plugin) -> T) -> T {
        let taken = self.lock().pop();
        let mut plugin = taken.unwrap_or_else(|| Plugin::from_template(self.template.clone()));
        let out = f(&mut plugin);
        let mut idle = self.lock();
        if idle.len() < self.max_idle {
            idle.push(plugin);
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Plugin>> {
        // A panic while holding the lock can only come from Vec::push/pop; the list is
        // still valid, so keep using it.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// Shared across threads by the runtime.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PluginPool>();
    assert_send_sync::<Arc<PluginPool>>();
};
