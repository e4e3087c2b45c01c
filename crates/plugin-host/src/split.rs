//! Deciding a whole batch when one call is not enough: a call that runs out of fuel or
//! memory is retried as two halves, so the per-call limits bound what one event may
//! cost, not how many events a caller puts in a batch.
//!
//! Why fuel and memory: they are the limits a healthy plugin can hit just because the
//! batch is big (fuel grows with the work per event, memory with the events lowered into
//! the guest and the decisions it builds). The deadline is wall-clock time, which a big
//! batch on a loaded machine can also pass: a call past it is split too, but only down to
//! [`DEADLINE_SPLIT_FLOOR`] events, so a runaway plugin costs a batch of 512 at most 15
//! deadlines. A trap, an `err` or a wrong number of decisions are not about size: the
//! call's events fail together, as before.
//!
//! Why a cap: a plugin that exhausts its fuel on every event would otherwise be called
//! `2n - 1` times for a batch of `n`, each call burning a full budget. So a batch may use
//! [`max_splits`] splits, plus one per call that succeeded so far: splitting goes on as
//! long as it decides events, and a batch on which every call fails costs at most
//! `2 * max_splits(n) + 1` calls.

use std::ops::Range;

use crate::{Call, ErrorCause, PluginError};

/// The splits one batch of `batch` events may use beyond one per successful call:
/// `2 * ceil(log2(batch))`, 18 for a batch of 512.
///
/// A call that runs out is split only while the batch has used fewer splits than this
/// plus the number of its calls that succeeded so far. Then:
/// * events that each fit in one call are always all decided, whatever their number (a
///   depth-first bisection never has more splits open than the depth of the halving,
///   below `ceil(log2(batch))`, beyond those paid for by successes);
/// * at least `ceil(log2(batch)) + 1` events (10 of 512) that exceed a limit on their own
///   are singled out in any batch; past the cap, a call that runs out of fuel or memory
///   fails with all its events, like any other failure;
/// * a batch on which every call fails (a plugin that loops on every event) costs at most
///   `2 * max_splits(batch) + 1` calls (37 for 512), each under the plugin's limits, and
///   in any batch the calls that fail are at most that many plus one per call that
///   succeeds.
pub fn max_splits(batch: usize) -> usize {
    match batch {
        0 | 1 => 0,
        n => 2 * (usize::BITS - (n - 1).leading_zeros()) as usize,
    }
}

/// One call made while deciding a batch.
#[derive(Debug)]
pub struct Attempt<T> {
    /// The events it carried, as indices into the batch.
    pub range: Range<usize>,
    /// One decision per event of `range`, or the call's failure.
    pub result: Result<Call<Vec<T>>, PluginError>,
    /// The call ran out of fuel or memory and its events were handed to two smaller calls
    /// (the attempts that follow). `false` for every call whose result stands.
    pub split: bool,
}

/// How a batch was decided: every call made, in the order made. The calls that were not
/// split cover the batch exactly once, in order.
#[derive(Debug)]
pub struct Decided<T> {
    pub attempts: Vec<Attempt<T>>,
}

impl<T> Decided<T> {
    /// The calls whose result stands, in batch order: their ranges are consecutive and
    /// cover the batch. A failed one's events follow the plugin's `on_error`.
    pub fn outcomes(&self) -> impl Iterator<Item = &Attempt<T>> {
        self.attempts.iter().filter(|a| !a.split)
    }

    /// Like [`Decided::outcomes`], by value.
    pub fn into_outcomes(self) -> impl Iterator<Item = Attempt<T>> {
        self.attempts.into_iter().filter(|a| !a.split)
    }

    /// Number of calls that were split.
    pub fn splits(&self) -> usize {
        self.attempts.iter().filter(|a| a.split).count()
    }

    /// Events whose call failed for good (they follow `on_error`).
    pub fn failed_events(&self) -> usize {
        self.outcomes()
            .filter(|a| a.result.is_err())
            .map(|a| a.range.len())
            .sum()
    }
}

/// A call of at most this many events that runs past its deadline is not split again.
pub const DEADLINE_SPLIT_FLOOR: usize = 64;

/// Whether a failure of a call of `events` events may be a matter of the batch's size.
fn splits_on(cause: &ErrorCause, events: usize) -> bool {
    match cause {
        ErrorCause::OutOfFuel { .. } | ErrorCause::MemoryLimit { .. } => true,
        ErrorCause::Timeout { .. } => events > DEADLINE_SPLIT_FLOOR,
        _ => false,
    }
}

/// Decides the `batch` events with `call` (which runs the plugin on a range of them),
/// halving every range whose call runs out of fuel or memory, depth first and left half
/// first, so calls see the events in batch order. Cost: see [`max_splits`].
pub(crate) fn decide<T>(
    batch: usize,
    mut call: impl FnMut(Range<usize>) -> Result<Call<Vec<T>>, PluginError>,
) -> Decided<T> {
    let allowance = max_splits(batch);
    let (mut splits, mut successes) = (0, 0);
    let mut todo = Vec::with_capacity(16);
    todo.push(0..batch);
    let mut attempts = Vec::new();
    while let Some(range) = todo.pop() {
        let result = call(range.clone());
        let split = match &result {
            Err(e) => {
                range.len() > 1
                    && splits < allowance + successes
                    && splits_on(&e.cause, range.len())
            }
            Ok(_) => {
                successes += 1;
                false
            }
        };
        if split {
            splits += 1;
            let middle = range.start + range.len() / 2;
            // A stack: the left half is called first.
            todo.push(middle..range.end);
            todo.push(range.start..middle);
        }
        attempts.push(Attempt {
            range,
            result,
            split,
        });
    }
    Decided { attempts }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CallStats;

    fn fail(range: &Range<usize>, cause: ErrorCause) -> Result<Call<Vec<usize>>, PluginError> {
        Err(PluginError {
            plugin: "p".into(),
            batch: range.len(),
            cause,
            stats: CallStats::default(),
        })
    }

    const FUEL: ErrorCause = ErrorCause::OutOfFuel { budget: 100 };

    /// A model plugin: each event costs `cost(i)` fuel; a call over budget runs out.
    fn run(batch: usize, cost: impl Fn(usize) -> u64) -> (Decided<usize>, Vec<Range<usize>>) {
        let mut calls = Vec::new();
        let decided = decide(batch, |range| {
            calls.push(range.clone());
            if range.clone().map(&cost).sum::<u64>() > 100 {
                fail(&range, FUEL)
            } else {
                Ok(Call {
                    output: range.collect(),
                    stats: CallStats::default(),
                })
            }
        });
        (decided, calls)
    }

    /// The final ranges cover the batch in order, and each success decided its own events.
    fn assert_covers(decided: &Decided<usize>, batch: usize) {
        let mut next = 0;
        for a in decided.outcomes() {
            assert_eq!(a.range.start, next, "{decided:?}");
            next = a.range.end;
            if let Ok(call) = &a.result {
                assert_eq!(call.output, a.range.clone().collect::<Vec<_>>());
            }
        }
        assert_eq!(next, batch);
    }

    #[test]
    fn the_cap_grows_with_the_halvings_a_batch_allows() {
        assert_eq!(max_splits(0), 0);
        assert_eq!(max_splits(1), 0);
        assert_eq!(max_splits(2), 2);
        assert_eq!(max_splits(3), 4);
        assert_eq!(max_splits(512), 18);
        assert_eq!(max_splits(513), 20);
    }

    #[test]
    fn a_batch_too_big_only_because_of_its_size_is_decided_whole() {
        // 512 events of 1: halves of 64 fit in 100, so 512, 256, 128 are split.
        let (decided, calls) = run(512, |_| 1);
        assert_covers(&decided, 512);
        assert_eq!(decided.failed_events(), 0);
        assert_eq!(decided.splits(), 1 + 2 + 4);
        assert_eq!(calls.len(), 1 + 2 * decided.splits());
        // Calls see the events in batch order.
        let starts: Vec<usize> = decided.outcomes().map(|a| a.range.start).collect();
        assert!(starts.is_sorted());
    }

    #[test]
    fn only_an_event_that_alone_exceeds_the_budget_fails() {
        for heavy in [0, 1, 255, 256, 511] {
            let (decided, _) = run(512, |i| if i == heavy { 1000 } else { 0 });
            assert_covers(&decided, 512);
            let failed: Vec<_> = decided
                .outcomes()
                .filter(|a| a.result.is_err())
                .map(|a| a.range.clone())
                .collect();
            assert_eq!(failed.len(), 1, "heavy event {heavy}");
            assert_eq!(failed[0], heavy..heavy + 1, "heavy event {heavy}");
            assert_eq!(decided.splits(), 9, "one per halving of 512");
        }
    }

    #[test]
    fn ten_heavy_events_anywhere_are_all_singled_out() {
        let spread: Vec<usize> = (0..10).map(|i| i * 51).collect();
        let bunched: Vec<usize> = (500..510).collect();
        let ends = vec![0, 1, 2, 3, 4, 507, 508, 509, 510, 511];
        for heavy in [spread, bunched, ends] {
            let (decided, _) = run(512, |i| if heavy.contains(&i) { 1000 } else { 0 });
            assert_covers(&decided, 512);
            let failed: Vec<usize> = decided
                .outcomes()
                .filter(|a| a.result.is_err())
                .map(|a| {
                    assert_eq!(a.range.len(), 1, "{heavy:?}: {:?}", a.range);
                    a.range.start
                })
                .collect();
            assert_eq!(failed, heavy);
        }
    }

    #[test]
    fn events_that_each_fit_are_all_decided_however_few_fit_in_one_call() {
        // 100 fuel per call: from 512 events of 100 down to 2 events of 40.
        for (batch, cost) in [(512, 100), (512, 13), (512, 7), (1000, 3), (64, 40)] {
            let (decided, calls) = run(batch, |_| cost);
            assert_covers(&decided, batch);
            assert_eq!(decided.failed_events(), 0, "{batch} events of {cost}");
            assert!(calls.len() < 3 * batch, "{batch} events of {cost}");
        }
    }

    #[test]
    fn failed_calls_are_paid_for_by_successful_ones() {
        // Every other event over the budget alone: the worst mix for bisection.
        for batch in [16, 512, 1000] {
            let (decided, calls) = run(batch, |i| if i % 2 == 0 { 1000 } else { 0 });
            assert_covers(&decided, batch);
            let successes = decided.outcomes().filter(|a| a.result.is_ok()).count();
            let failures = calls.len() - successes;
            assert!(
                failures <= 2 * max_splits(batch) + 1 + successes,
                "{batch}: {failures} failed, {successes} succeeded"
            );
        }
    }

    #[test]
    fn a_plugin_that_exhausts_every_call_costs_a_bounded_number_of_calls() {
        for batch in [2, 3, 64, 512, 1000] {
            let (decided, calls) = run(batch, |_| 1000);
            assert_covers(&decided, batch);
            assert_eq!(decided.failed_events(), batch);
            // Every split allowed is used, up to splitting down to single events.
            assert_eq!(decided.splits(), max_splits(batch).min(batch - 1));
            assert!(
                calls.len() <= 2 * max_splits(batch) + 1,
                "{batch}: {calls:?}"
            );
        }
    }

    #[test]
    fn a_deadline_splits_down_to_the_floor_only() {
        let mut calls = Vec::new();
        let decided: Decided<usize> = decide(512, |range| {
            calls.push(range.len());
            fail(
                &range,
                ErrorCause::Timeout {
                    limit: std::time::Duration::from_millis(1),
                },
            )
        });
        assert_eq!(calls.len(), 1 + 2 + 4 + 8, "{calls:?}");
        assert!(
            calls.iter().all(|n| *n >= DEADLINE_SPLIT_FLOOR),
            "{calls:?}"
        );
        assert_eq!(decided.failed_events(), 512);
        // A big batch that only ran out of time because of its size is decided whole.
        let decided: Decided<usize> = decide(512, |range| {
            if range.len() > 128 {
                fail(
                    &range,
                    ErrorCause::Timeout {
                        limit: std::time::Duration::from_millis(1),
                    },
                )
            } else {
                Ok(Call {
                    output: range.collect(),
                    stats: CallStats::default(),
                })
            }
        });
        assert_eq!(decided.failed_events(), 0);
    }

    #[test]
    fn traps_and_errors_are_not_split() {
        for cause in [
            ErrorCause::Trap("unreachable".into()),
            ErrorCause::Returned("no".into()),
            ErrorCause::WrongDecisionCount {
                expected: 512,
                got: 1,
            },
        ] {
            let mut calls = 0;
            let decided: Decided<usize> = decide(512, |range| {
                calls += 1;
                fail(&range, cause.clone())
            });
            assert_eq!(calls, 1, "{cause}");
            assert_eq!(decided.failed_events(), 512);
        }
    }

    #[test]
    fn memory_is_split_like_fuel() {
        let decided: Decided<usize> = decide(8, |range| {
            if range.len() > 2 {
                fail(&range, ErrorCause::MemoryLimit { limit: 1 })
            } else {
                Ok(Call {
                    output: range.collect(),
                    stats: CallStats::default(),
                })
            }
        });
        assert_eq!(decided.failed_events(), 0);
        assert_eq!(decided.outcomes().count(), 4);
    }
}
