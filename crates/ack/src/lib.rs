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
/// Positions must be tracked in strictly increasing order; they may have gaps.
#[derive(Debug, Clone)]
pub struct Watermark {
    /// In-flight positions in order, with their completion flag. The front is never
    /// completed (completed fronts are popped), so it is the low watermark.
    in_flight: VecDeque<(u64, bool)>,
    /// Checkpoint when nothing is in flight: just past the last tracked position.
    next: u64,
}

/// Misuse of the tracker: a bug in the caller, reported instead of corrupting a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatermarkError {
    /// `track` got a position not above the last tracked one.
    NotIncreasing { position: u64, last: u64 },
    /// `complete` got a position that is not in flight (never tracked, or completed twice).
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
        }
    }

    /// Registers `position` as handed out and not yet complete.
    pub fn track(&mut self, position: u64) -> Result<(), WatermarkError> {
        if position < self.next {
            return Err(WatermarkError::NotIncreasing {
                position,
                last: self.next.saturating_sub(1),
            });
        }
        self.in_flight.push_back((position, false));
        self.next = position + 1;
        Ok(())
    }

    /// Marks `position` complete. Returns `true` when the low watermark moved.
    pub fn complete(&mut self, position: u64) -> Result<bool, WatermarkError> {
        let idx = self
            .in_flight
            .binary_search_by_key(&position, |(p, _)| *p)
            .map_err(|_| WatermarkError::NotInFlight { position })?;
        let slot = &mut self.in_flight[idx];
        if slot.1 {
            return Err(WatermarkError::NotInFlight { position });
        }
        slot.1 = true;
        if idx != 0 {
            return Ok(false);
        }
        while matches!(self.in_flight.front(), Some((_, true))) {
            self.in_flight.pop_front();
        }
        Ok(true)
    }

    /// The lowest position not yet complete: the checkpoint to store. A restart resumes
    /// here, so everything at or after it may be delivered again (at-least-once).
    pub fn low_watermark(&self) -> u64 {
        self.in_flight.front().map_or(self.next, |(p, _)| *p)
    }

    /// Positions tracked and not yet complete.
    pub fn in_flight(&self) -> usize {
        self.in_flight.iter().filter(|(_, done)| !done).count()
    }

    /// Entries held, completed or not (bounded by the caller's read-ahead limit).
    pub fn held(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

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
        /// Complete the n-th (mod count) pending position.
        Complete(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3).prop_map(Op::Track),
            any::<usize>().prop_map(Op::Complete)
        ]
    }

    proptest! {
        /// Against a model: the watermark is the smallest pending position, or one past
        /// the last tracked position when nothing is pending; it never moves backwards.
        #[test]
        fn matches_model(start in 0u64..1000, ops in proptest::collection::vec(op(), 0..300)) {
            let mut w = Watermark::new(start);
            let mut pending = BTreeSet::new();
            let mut next = start;
            let mut last_mark = start;
            for op in ops {
                match op {
                    Op::Track(gap) => {
                        let p = next + u64::from(gap);
                        w.track(p).unwrap();
                        pending.insert(p);
                        next = p + 1;
                    }
                    Op::Complete(n) if !pending.is_empty() => {
                        let p = *pending.iter().nth(n % pending.len()).unwrap();
                        pending.remove(&p);
                        w.complete(p).unwrap();
                    }
                    Op::Complete(_) => {}
                }
                let expected = pending.first().copied().unwrap_or(next);
                prop_assert_eq!(w.low_watermark(), expected);
                prop_assert!(w.low_watermark() >= last_mark);
                prop_assert_eq!(w.in_flight(), pending.len());
                last_mark = w.low_watermark();
            }
        }
    }
}
