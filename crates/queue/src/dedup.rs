//! The idempotency window: one implementation for every produce path (HTTP ingest and
//! the queue API).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use switchyard_connector::Seen;

/// Bytes one entry costs beside its key (map and queue slots, the time, the ids' form).
const ENTRY_OVERHEAD: usize = 96;

/// Remembers the ids answered for recent idempotency keys, for `window`, within `capacity`
/// keys and `max_bytes` of memory (the oldest are forgotten first), so memory stays
/// bounded whatever the keys' lengths or the requests' sizes.
pub struct DedupWindow {
    window: Duration,
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
    ids: HashMap<String, (Seen, Instant)>,
    order: VecDeque<(Instant, String)>,
}

impl DedupWindow {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self::with_max_bytes(window, capacity, 32 << 20)
    }

    pub fn with_max_bytes(window: Duration, capacity: usize, max_bytes: usize) -> Self {
        Self {
            window,
            capacity,
            max_bytes,
            bytes: 0,
            ids: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The ids stored for `key` if it was seen within the window.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<Vec<String>> {
        self.lookup(key, now).map(|seen| seen.ids())
    }

    /// What was stored for `key` within the window, cheap to take out of a lock: its ids
    /// are made when asked for ([`Seen::ids`]), after the caller knows how many there are.
    pub fn lookup(&mut self, key: &str, now: Instant) -> Option<Seen> {
        self.expire(now);
        self.ids.get(key).map(|(seen, _)| seen.clone())
    }

    pub fn insert(&mut self, key: String, ids: Vec<String>, now: Instant) {
        self.expire(now);
        let seen = Seen::new(key.clone(), ids);
        let cost = entry_cost(&seen);
        if cost > self.max_bytes {
            return;
        }
        self.remove(&key);
        while self.ids.len() >= self.capacity || self.bytes + cost > self.max_bytes {
            let Some((at, old)) = self.order.pop_front() else {
                break;
            };
            // A key stored again later has a newer time; its older slot is stale.
            if self.ids.get(&old).is_some_and(|(_, t)| *t == at) {
                self.remove(&old);
            }
        }
        self.bytes += cost;
        self.order.push_back((now, key.clone()));
        self.ids.insert(key, (seen, now));
    }

    fn remove(&mut self, key: &str) {
        if let Some((seen, _)) = self.ids.remove(key) {
            self.bytes -= entry_cost(&seen);
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < self.window {
                break;
            }
            let (at, key) = self.order.pop_front().expect("front exists");
            // A key re-inserted later has a newer time; keep that entry.
            if self.ids.get(&key).is_some_and(|(_, t)| *t == at) {
                self.remove(&key);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Memory the window holds, as counted against `max_bytes`.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The key is held three times (map, its answer and the order queue).
fn entry_cost(seen: &Seen) -> usize {
    3 * seen.key().len() + ENTRY_OVERHEAD + seen.held_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stored_by_count_and_given_back_whole() {
        let now = Instant::now();
        let mut w = DedupWindow::new(Duration::from_secs(60), 10);
        let ids: Vec<String> = (0..1000).map(|i| format!("k-{i}")).collect();
        w.insert("k".into(), ids.clone(), now);
        w.insert("single".into(), vec!["single".into()], now);
        w.insert("other".into(), vec!["a".into(), "b".into()], now);
        assert_eq!(w.get("k", now), Some(ids));
        assert_eq!(w.get("single", now), Some(vec!["single".to_owned()]));
        assert_eq!(
            w.get("other", now),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert!(
            w.bytes() < 1000,
            "1000 derived ids cost no memory each: {}",
            w.bytes()
        );
    }

    #[test]
    fn the_window_forgets_the_oldest_keys_past_its_bytes() {
        let now = Instant::now();
        let mut w = DedupWindow::with_max_bytes(Duration::from_secs(60), 1_000_000, 10_000);
        for i in 0..1000 {
            let key = format!("{i:0>200}");
            w.insert(key.clone(), vec![key], now);
            assert!(w.bytes() <= 10_000, "{} bytes held", w.bytes());
        }
        assert!(w.len() < 1000 && w.len() > 10, "{} keys kept", w.len());
        assert!(
            w.get(&format!("{:0>200}", 999), now).is_some(),
            "the newest stays"
        );
        assert!(
            w.get(&format!("{:0>200}", 0), now).is_none(),
            "the oldest went"
        );
    }

    #[test]
    fn the_window_forgets_after_its_time_and_stays_bounded() {
        let t0 = Instant::now();
        let mut w = DedupWindow::new(Duration::from_secs(10), 2);
        w.insert("a".into(), vec!["a".into()], t0);
        assert_eq!(
            w.get("a", t0 + Duration::from_secs(9)),
            Some(vec!["a".into()])
        );
        assert_eq!(w.get("a", t0 + Duration::from_secs(10)), None);
        w.insert("b".into(), vec![], t0);
        w.insert("c".into(), vec![], t0);
        w.insert("d".into(), vec![], t0);
        assert_eq!(w.len(), 2);
        assert_eq!(w.get("b", t0), None);
    }

    #[test]
    fn a_key_stored_again_is_counted_once() {
        let now = Instant::now();
        let mut w = DedupWindow::new(Duration::from_secs(60), 10);
        w.insert("k".into(), vec!["k".into()], now);
        let once = w.bytes();
        w.insert("k".into(), vec!["k".into()], now);
        assert_eq!(w.bytes(), once);
        assert_eq!(w.len(), 1);
    }
}
