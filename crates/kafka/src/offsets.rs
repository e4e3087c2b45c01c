//! From a pipeline's low watermark to Kafka offsets.
//!
//! A Kafka consumer hands a reader messages of several partitions in one stream. The
//! tracker gives each message the next sequential position and remembers its
//! (partition, offset). When the reader says "every position below `low` is complete"
//! ([`OffsetTracker::complete_below`]), the offset to commit for a partition is the one
//! after the last of its messages below `low`: all its earlier messages are below `low`
//! too, because positions follow each partition's order. Pure bookkeeping, no IO.
//!
//! Rebalances: an assignment starts a new *epoch* of its partitions. A message fetched
//! in an earlier epoch ([`OffsetTracker::is_current`] false) is stale — another
//! consumer, or this one again, reads it from the committed offset — and completing it
//! commits nothing. A revoke returns what is complete but not yet committed, to commit
//! before the partitions go.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A topic and partition.
pub type TopicPartition = (Arc<str>, i32);

#[derive(Debug, Default)]
struct PartitionState {
    epoch: u32,
    assigned: bool,
    /// Offset to commit (the one after the last complete message), when it moved.
    complete: Option<i64>,
    /// What the broker confirmed as committed in this epoch.
    committed: Option<i64>,
    /// Commit requests in flight for this offset.
    requested: Option<i64>,
}

/// Positions handed out and the Kafka offsets behind them; see the module docs.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    /// Position of `entries[0]`.
    base: u64,
    entries: VecDeque<(TopicPartition, i64, u32)>,
    partitions: HashMap<TopicPartition, PartitionState>,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next position [`OffsetTracker::track`] hands out.
    pub fn next_position(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// Positions handed out and not yet below a committed low watermark.
    pub fn in_flight(&self) -> u64 {
        self.entries.len() as u64
    }

    /// `tps` are assigned to this consumer: a new epoch starts for each.
    pub fn assign(&mut self, tps: impl IntoIterator<Item = TopicPartition>) {
        for tp in tps {
            let state = self.partitions.entry(tp).or_default();
            state.epoch += 1;
            state.assigned = true;
            state.complete = None;
            state.committed = None;
            state.requested = None;
        }
    }

    /// `tps` are taken away. Returns the offsets that are complete but not committed,
    /// which the caller commits before letting the partitions go.
    pub fn revoke(
        &mut self,
        tps: impl IntoIterator<Item = TopicPartition>,
    ) -> Vec<(TopicPartition, i64)> {
        let mut out = Vec::new();
        for tp in tps {
            if let Some(state) = self.partitions.get_mut(&tp) {
                if let Some(offset) = state.complete
                    && state.committed < Some(offset)
                {
                    out.push((tp.clone(), offset));
                }
                state.assigned = false;
                state.epoch += 1;
                state.complete = None;
                state.requested = None;
            }
        }
        out
    }

    /// The epoch a message fetched now belongs to, or `None` when its partition is not
    /// assigned (a stale fetch).
    pub fn epoch(&self, tp: &TopicPartition) -> Option<u32> {
        self.partitions
            .get(tp)
            .filter(|s| s.assigned)
            .map(|s| s.epoch)
    }

    /// Whether a message fetched in `epoch` of `tp` is still this consumer's to deliver.
    pub fn is_current(&self, tp: &TopicPartition, epoch: u32) -> bool {
        self.epoch(tp) == Some(epoch)
    }

    /// Hands out the next position for the message at `offset` of `tp`, fetched in `epoch`.
    pub fn track(&mut self, tp: TopicPartition, offset: i64, epoch: u32) -> u64 {
        let position = self.next_position();
        self.entries.push_back((tp, offset, epoch));
        position
    }

    /// Every position below `low` is complete.
    pub fn complete_below(&mut self, low: u64) {
        // Entries come in runs of one partition and epoch: each run's highest offset is
        // recorded once, when the run ends.
        let mut run: Option<(TopicPartition, u32, i64)> = None;
        while self.base < low {
            let Some((tp, offset, epoch)) = self.entries.pop_front() else {
                // `low` past what was handed out: nothing more to learn.
                self.base = low;
                break;
            };
            self.base += 1;
            match &mut run {
                Some((run_tp, run_epoch, high)) if *run_tp == tp && *run_epoch == epoch => {
                    *high = (*high).max(offset);
                }
                _ => {
                    if let Some(done) = run.replace((tp, epoch, offset)) {
                        self.complete_run(done);
                    }
                }
            }
        }
        if let Some(done) = run {
            self.complete_run(done);
        }
    }

    /// The messages of `tp` fetched in `epoch` up to `offset` are complete.
    fn complete_run(&mut self, (tp, epoch, offset): (TopicPartition, u32, i64)) {
        if let Some(state) = self.partitions.get_mut(&tp)
            && state.assigned
            && state.epoch == epoch
        {
            state.complete = Some(state.complete.map_or(offset + 1, |c| c.max(offset + 1)));
        }
    }

    /// Offsets of assigned partitions that are complete and neither committed nor being
    /// committed; marks them requested.
    pub fn take_commits(&mut self) -> Vec<(TopicPartition, i64)> {
        let mut out = Vec::new();
        for (tp, state) in &mut self.partitions {
            if let Some(offset) = state.complete
                && state.assigned
                && state.committed < Some(offset)
                && state.requested != Some(offset)
            {
                state.requested = Some(offset);
                out.push((tp.clone(), offset));
            }
        }
        out.sort();
        out
    }

    /// Offsets of assigned partitions that are complete but not confirmed committed,
    /// requested or not (for a retry or a final synchronous commit).
    pub fn uncommitted(&self) -> Vec<(TopicPartition, i64)> {
        let mut out: Vec<_> = self
            .partitions
            .iter()
            .filter_map(|(tp, s)| match s.complete {
                Some(offset) if s.assigned && s.committed < Some(offset) => {
                    Some((tp.clone(), offset))
                }
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    /// The broker confirmed `offset` committed for `tp`.
    pub fn confirmed(&mut self, tp: &TopicPartition, offset: i64) {
        if let Some(state) = self.partitions.get_mut(tp) {
            state.committed = Some(state.committed.map_or(offset, |c| c.max(offset)));
            if state.requested.is_some_and(|r| r <= offset) {
                state.requested = None;
            }
        }
    }

    /// A commit of `offset` for `tp` failed: it may be requested again.
    pub fn failed(&mut self, tp: &TopicPartition, offset: i64) {
        if let Some(state) = self.partitions.get_mut(tp)
            && state.requested == Some(offset)
        {
            state.requested = None;
        }
    }

    /// The last offset confirmed committed for `tp` in its current epoch.
    pub fn committed(&self, tp: &TopicPartition) -> Option<i64> {
        self.partitions.get(tp).and_then(|s| s.committed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn tp(p: i32) -> TopicPartition {
        (Arc::from("t"), p)
    }

    #[test]
    fn commits_the_offset_after_the_last_complete_message_per_partition() {
        let mut t = OffsetTracker::new();
        t.assign([tp(0), tp(1)]);
        let e = t.epoch(&tp(0)).unwrap();
        // p0: 10, 11, 12 ; p1: 5, 6 — interleaved.
        assert_eq!(t.track(tp(0), 10, e), 0);
        assert_eq!(t.track(tp(1), 5, e), 1);
        assert_eq!(t.track(tp(0), 11, e), 2);
        assert_eq!(t.track(tp(1), 6, e), 3);
        assert_eq!(t.track(tp(0), 12, e), 4);
        t.complete_below(3);
        assert_eq!(t.take_commits(), vec![(tp(0), 12), (tp(1), 6)]);
        // Requested once; not again until it moves.
        assert_eq!(t.take_commits(), vec![]);
        t.confirmed(&tp(0), 12);
        assert_eq!(t.uncommitted(), vec![(tp(1), 6)]);
        t.complete_below(5);
        assert_eq!(t.take_commits(), vec![(tp(0), 13), (tp(1), 7)]);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn a_failed_commit_is_requested_again() {
        let mut t = OffsetTracker::new();
        t.assign([tp(0)]);
        t.track(tp(0), 0, 1);
        t.complete_below(1);
        assert_eq!(t.take_commits(), vec![(tp(0), 1)]);
        t.failed(&tp(0), 1);
        assert_eq!(t.take_commits(), vec![(tp(0), 1)]);
        t.confirmed(&tp(0), 1);
        assert_eq!(t.uncommitted(), vec![]);
    }

    #[test]
    fn revoke_returns_the_uncommitted_and_stale_messages_commit_nothing() {
        let mut t = OffsetTracker::new();
        t.assign([tp(0)]);
        let e1 = t.epoch(&tp(0)).unwrap();
        t.track(tp(0), 100, e1);
        t.track(tp(0), 101, e1);
        t.complete_below(1);
        assert_eq!(t.revoke([tp(0)]), vec![(tp(0), 101)]);
        assert!(!t.is_current(&tp(0), e1));
        // Assigned again: the broker resumes at 101; the old 101 completes late.
        t.assign([tp(0)]);
        let e2 = t.epoch(&tp(0)).unwrap();
        assert_ne!(e1, e2);
        t.track(tp(0), 101, e2);
        t.complete_below(2);
        assert_eq!(
            t.take_commits(),
            vec![],
            "the stale message commits nothing"
        );
        t.complete_below(3);
        assert_eq!(t.take_commits(), vec![(tp(0), 102)]);
    }

    proptest! {
        /// Against a model: random interleavings of partitions and random completion
        /// orders. A commit never passes a message that is not complete, and once all
        /// are complete every partition commits past its last message.
        #[test]
        fn commits_never_pass_an_incomplete_message(
            parts in prop::collection::vec(0i32..4, 1..200),
            order_seed in any::<u64>(),
        ) {
            let mut t = OffsetTracker::new();
            t.assign((0..4).map(tp));
            let mut next_offset = [0i64; 4];
            let mut messages = Vec::new();
            for p in &parts {
                let off = next_offset[*p as usize];
                next_offset[*p as usize] += 1;
                let pos = t.track(tp(*p), off, t.epoch(&tp(*p)).unwrap());
                messages.push((pos, *p, off));
            }
            // Complete in a pseudo-random order, feeding the low watermark.
            let mut order: Vec<u64> = (0..messages.len() as u64).collect();
            let mut s = order_seed | 1;
            for i in (1..order.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                order.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let mut done = BTreeSet::new();
            let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
            for pos in order {
                done.insert(pos);
                let low = (0..).find(|p| !done.contains(p)).unwrap();
                t.complete_below(low);
                for ((_, p), off) in t.take_commits() {
                    // Every message of p below `off` is complete.
                    for (mpos, mp, moff) in &messages {
                        if *mp == p && *moff < off {
                            prop_assert!(done.contains(mpos));
                        }
                    }
                    let prev = committed.insert(p, off);
                    prop_assert!(prev.is_none_or(|prev| prev < off));
                    t.confirmed(&tp(p), off);
                }
            }
            for p in 0..4 {
                if next_offset[p as usize] > 0 {
                    prop_assert_eq!(committed.get(&p).copied(), Some(next_offset[p as usize]));
                }
            }
        }
    }
}
