//! The `Idempotency-Key` window.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Remembers the ids answered for recent idempotency keys, for `window`, holding at most
/// `capacity` keys (the oldest are forgotten first), so memory stays bounded.
pub struct DedupWindow {
    window: Duration,
    capacity: usize,
    ids: HashMap<String, (Vec<String>, Instant)>,
    order: VecDeque<(Instant, String)>,
}

impl DedupWindow {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity,
            ids: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The ids stored for `key` if it was seen within the window.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<Vec<String>> {
        self.expire(now);
        self.ids.get(key).map(|(ids, _)| ids.clone())
    }

    pub fn insert(&mut self, key: String, ids: Vec<String>, now: Instant) {
        self.expire(now);
        while self.ids.len() >= self.capacity {
            let Some((_, old)) = self.order.pop_front() else {
                break;
            };
            self.ids.remove(&old);
        }
        self.order.push_back((now, key.clone()));
        self.ids.insert(key, (ids, now));
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < self.window {
                break;
            }
            let (at, key) = self.order.pop_front().expect("front exists");
            // A key re-inserted later has a newer time; keep that entry.
            if self.ids.get(&key).is_some_and(|(_, t)| *t == at) {
                self.ids.remove(&key);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}
