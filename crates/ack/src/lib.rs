//! The low-watermark tracker behind every checkpoint.
//!
//! A source hands out events at increasing positions (log offsets, LSNs). Each event is
//! *completed* once every sink it was routed to has acknowledged it, it was
//! dead-lettered, or a filter dropped it — in any order. The checkpoint a source may
//! store is the **lowest position not yet completed**: everything below it is done.
//! Storing "the last position seen" instead would lose events on a crash.
//!
//! Architecture invariant: pure data structure, no IO, no async runtime.

use std::collections::VecDeque;

/// Tracks positions in flight for one ordered stream (one partition).
///
/// Positions are tracked in strictly increasing order, one at a time ([`Watermark::track`])
/// or as the range of a batch ([`Watermark::track_range`]) that completes as a whole;
/// they may have gaps. A batch is one entry however many events it holds, so the cost of
/// the bookkeeping is per batch, not per event.
#[derive(Debug, Clone)]
pub struct Watermark {
    /// In-flight ranges in order. The front is never completed (completed fronts are
    /// popped), so its first position is the low watermark.
    in_flight: VecDeque<Entry>,
    /// Checkpoint when nothing is in flight: just past the last tracked position.
    next: u64,
    /// Events held by the entries of `in_flight`, completed or not.
    held: usize,
}

/// One tracked range, from `first` up to the next entry's first position, holding
/// `events` events.
#[derive(Debug, Clone)]
struct Entry {
    first: u64,
    events: usize,
    done: bool,
}

/// Misuse of the tracker: a bug in the caller, reported instead of corrupting a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatermarkError {
    /// `track` got a position not above the last tracked one (or a range whose last
    /// position is below its first).
    NotIncreasing { position: u64, last: u64 },
    /// `complete` got a position that does not start a range in flight (never tracked,
    /// or completed twice).
    NotInFlight { position: u64 },
}

impl std::fmt::Display for WatermarkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatermarkError::NotIncreasing { position, last } => write!(
                f,
                "position {position} tracked after {last}: positions must increase"
            ),
            WatermarkError::NotInFlight { position } => {
                write!(f, "position {position} completed but it is not in flight")
            }
        }
    }
}

impl std::error::Error for WatermarkError {}

impl Watermark {
    /// A tracker whose checkpoint starts at `start` (the position to resume from).
    pub fn new(start: u64) -> Self {
        Self {
            in_flight: VecDeque::new(),
            next: start,
            held: 0,
        }
    }

    /// Registers `position` as handed out and not yet complete.
    pub fn track(&mut self, position: u64) -> Result<(), WatermarkError> {
        self.track_range(position, position, 1)
    }

    /// Registers the batch `first..=last` of `events` events as handed out and not yet
    /// complete. It completes as a whole with `complete(first)`; until then the low
    /// watermark stays at or below `first`.
    pub fn track_range(
        &mut self,
        first: u64,
        last: u64,
        events: usize,
    ) -> Result<(), WatermarkError> {
        if first < self.next {
            return Err(WatermarkError::NotIncreasing {
                position: first,
                last: self.next.saturating_sub(1),
            });
        }
        if last < first {
            return Err(WatermarkError::NotIncreasing {
                position: last,
                last: first,
            });
        }
        self.in_flight.push_back(Entry {
            first,
            events,
            done: false,
        });
        self.next = last + 1;
        self.held += events;
        Ok(())
    }

    /// Marks the position or range starting at `first` complete. Returns `true` when the
    /// low watermark moved.
    pub fn complete(&mut self, first: u64) -> Result<bool, WatermarkError> {
        let idx = self
            .in_flight
            .binary_search_by_key(&first, |e| e.first)
            .map_err(|_| WatermarkError::NotInFlight { position: first })?;
        let entry = &mut self.in_flight[idx];
        if entry.done {
            return Err(WatermarkError::NotInFlight { position: first });
        }
        entry.done = true;
        if idx != 0 {
            return Ok(false);
        }
        while let Some(front) = self.in_flight.front()
            && front.done
        {
            self.held -= front.events;
            self.in_flight.pop_front();
        }
        Ok(true)
    }

    /// The lowest position not yet complete: the checkpoint to store. A restart resumes
    /// here, so everything at or after it may be delivered again (at-least-once).
    pub fn low_watermark(&self) -> u64 {
        self.in_flight.front().map_or(self.next, |e| e.first)
    }

    /// Ranges (batches or single positions) tracked and not yet complete.
    pub fn in_flight(&self) -> usize {
        self.in_flight.iter().filter(|e| !e.done).count()
    }

    /// Events held, completed or not: everything tracked since the low watermark
    /// (bounded by the caller's read-ahead limit).
    pub fn held(&self) -> usize {
        self.held
    }

    /// Events of the range starting at `first`, while it is held.
    pub fn events_of(&self, first: u64) -> Option<usize> {
        self.in_flight
            .binary_search_by_key(&first, |e| e.first)
            .ok()
            .map(|i| self.in_flight[i].events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_tracker_checkpoints_at_start() {
        let w = Watermark::new(42);
        assert_eq!(w.low_watermark(), 42);
    }

    #[test]
    fn out_of_order_completion_holds_the_watermark() {
        let mut w = Watermark::new(0);
        for p in 0..4 {
            w.track(p).unwrap();
        }
        assert!(!w.complete(2).unwrap());
        assert!(!w.complete(1).unwrap());
        assert_eq!(w.low_watermark(), 0);
        assert!(w.complete(0).unwrap());
        assert_eq!(w.low_watermark(), 3);
        w.complete(3).unwrap();
        assert_eq!(w.low_watermark(), 4);
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn a_range_completes_as_a_whole() {
        let mut w = Watermark::new(5);
        w.track_range(5, 9, 3).unwrap();
        w.track(12).unwrap();
        assert_eq!(w.held(), 4);
        // A position inside the range does not start it: misuse, nothing moves.
        assert_eq!(
            w.complete(7),
            Err(WatermarkError::NotInFlight { position: 7 })
        );
        assert!(!w.complete(12).unwrap());
        assert_eq!(w.low_watermark(), 5);
        assert!(w.complete(5).unwrap());
        assert_eq!(w.low_watermark(), 13);
        assert_eq!(w.held(), 0);
        assert_eq!(
            w.track_range(20, 19, 1),
            Err(WatermarkError::NotIncreasing {
                position: 19,
                last: 20
            })
        );
        assert_eq!(
            w.track_range(12, 14, 1),
            Err(WatermarkError::NotIncreasing {
                position: 12,
                last: 12
            })
        );
    }

    #[test]
    fn misuse_is_reported() {
        let mut w = Watermark::new(10);
        assert_eq!(
            w.track(9),
            Err(WatermarkError::NotIncreasing {
                position: 9,
                last: 9
            })
        );
        w.track(10).unwrap();
        assert_eq!(
            w.complete(11),
            Err(WatermarkError::NotInFlight { position: 11 })
        );
        w.track(12).unwrap();
        w.complete(12).unwrap();
        assert_eq!(
            w.complete(12),
            Err(WatermarkError::NotInFlight { position: 12 })
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Track the next position after a gap.
        Track(u8),
        /// Track a batch of this many positions (each after a gap) as one range.
        TrackRange(u8, u8),
        /// Complete the n-th (mod count) pending position.
        Complete(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3).prop_map(Op::Track),
            (0u8..3, 1u8..5).prop_map(|(g, n)| Op::TrackRange(g, n)),
            any::<usize>().prop_map(Op::Complete)
        ]
    }

    proptest! {
        /// Against a model: the watermark is the smallest pending position, or one past
        /// the last tracked position when nothing is pending; it never moves backwards.
        #[test]
        fn matches_model(start in 0u64..1000, ops in proptest::collection::vec(op(), 0..300)) {
            let mut w = Watermark::new(start);
            // Pending ranges by first position: (last, events).
            let mut pending = std::collections::BTreeMap::new();
            let mut next = start;
            let mut last_mark = start;
            for op in ops {
                match op {
                    Op::Track(gap) => {
                        let p = next + u64::from(gap);
                        w.track(p).unwrap();
                        pending.insert(p, 1usize);
                        next = p + 1;
                    }
                    Op::TrackRange(gap, n) => {
                        let first = next + u64::from(gap);
                        let last = first + u64::from(n) * 2;
                        w.track_range(first, last, usize::from(n)).unwrap();
                        prop_assert_eq!(w.events_of(first), Some(usize::from(n)));
                        pending.insert(first, usize::from(n));
                        next = last + 1;
                    }
                    Op::Complete(n) if !pending.is_empty() => {
                        let p = *pending.keys().nth(n % pending.len()).unwrap();
                        pending.remove(&p);
                        w.complete(p).unwrap();
                    }
                    Op::Complete(_) => {}
                }
                let expected = pending.keys().next().copied().unwrap_or(next);
                prop_assert_eq!(w.low_watermark(), expected);
                prop_assert!(w.low_watermark() >= last_mark);
                prop_assert_eq!(w.in_flight(), pending.len());
                prop_assert!(w.held() >= pending.values().sum::<usize>());
                last_mark = w.low_watermark();
            }
        }
    }
}
