//! Batches bigger than one call can take: `fuel` bounds what one event may cost, not how
//! many events fit in a batch. A call that runs out of fuel is retried as two halves, so
//! only an event that exceeds the budget on its own fails; other failures are not split,
//! and a plugin that runs out on every event costs a bounded number of calls.

mod common;

use common::{config, event, load};
use switchyard_plugin_host::{Decided, ErrorCause, Event, Plugin, PluginConfig, max_splits};

/// Spins of the `fuel-per-event` fixture for an ordinary event.
const SPINS: u64 = 2_000;
/// Events of that kind one call's budget is sized for (below).
const FIT: u64 = 100;

/// `n` events that each make `fuel-per-event` spin `SPINS` times.
fn costly(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| event(&format!("e{i}"), &SPINS.to_string()))
        .collect()
}

/// `fuel-per-event` with a budget that fits about `FIT` ordinary events per call, sized
/// from what calls of 1 and 2 events cost (so the test does not depend on how many
/// instructions one spin compiles to).
fn sized_plugin() -> (Plugin, u64) {
    let mut probe = load("fuel-per-event", &config("fuel-per-event"));
    let one = probe.filter(&costly(1)).expect("one event").stats.fuel;
    let two = probe.filter(&costly(2)).expect("two events").stats.fuel;
    let per_event = two.saturating_sub(one);
    let base = one.saturating_sub(per_event);
    assert!(per_event >= SPINS, "a spin costs fuel: {per_event}");
    let budget = base + per_event * FIT;
    let plugin = load(
        "fuel-per-event",
        &PluginConfig {
            fuel: budget,
            ..config("fuel-per-event")
        },
    );
    (plugin, budget)
}

/// The calls whose result stands cover the batch once, in order.
fn assert_covers<T: std::fmt::Debug>(decided: &Decided<T>, batch: usize) {
    let mut next = 0;
    for attempt in decided.outcomes() {
        assert_eq!(attempt.range.start, next, "{:?}", attempt.range);
        if let Ok(call) = &attempt.result {
            assert_eq!(call.output.len(), attempt.range.len());
        }
        next = attempt.range.end;
    }
    assert_eq!(next, batch);
}

#[test]
fn a_batch_over_the_budget_only_because_of_its_size_is_decided_whole() {
    let (mut plugin, budget) = sized_plugin();
    let events = costly(512);

    // One call of the whole batch cannot make it: this is what failed every event before.
    let whole = plugin
        .filter(&events)
        .expect_err("512 events need ~5× the budget");
    assert_eq!(whole.cause, ErrorCause::OutOfFuel { budget });

    let decided = plugin.filter_split(&events);
    assert_covers(&decided, 512);
    assert_eq!(decided.failed_events(), 0, "{decided:?}");
    let kept: usize = decided
        .outcomes()
        .map(|a| {
            let call = a.result.as_ref().expect("every call that stands succeeded");
            assert!(call.stats.fuel <= budget);
            call.output.iter().filter(|k| **k).count()
        })
        .sum();
    assert_eq!(kept, 512, "every event is decided (the fixture keeps all)");
    // 512, 256 and 128 events are over ~100 events' worth of fuel; 64 fit.
    assert_eq!(decided.splits(), 1 + 2 + 4, "{decided:?}");
    assert_eq!(decided.outcomes().count(), 8);
    for split in decided.attempts.iter().filter(|a| a.split) {
        let cause = &split
            .result
            .as_ref()
            .expect_err("a split call failed")
            .cause;
        assert_eq!(*cause, ErrorCause::OutOfFuel { budget });
    }
}

#[test]
fn only_an_event_that_alone_exceeds_the_budget_fails() {
    let (mut plugin, budget) = sized_plugin();
    for heavy in [0, 300, 511] {
        let mut events = costly(512);
        // A thousand ordinary events' worth: over the budget on its own.
        events[heavy] = event("heavy", &(SPINS * FIT * 10).to_string());
        let decided = plugin.filter_split(&events);
        assert_covers(&decided, 512);
        let failed: Vec<_> = decided
            .outcomes()
            .filter_map(|a| a.result.as_ref().err().map(|e| (a.range.clone(), e)))
            .collect();
        assert_eq!(failed.len(), 1, "heavy at {heavy}: {decided:?}");
        let (range, error) = &failed[0];
        assert_eq!(*range, heavy..heavy + 1, "only the heavy event fails");
        assert_eq!(error.cause, ErrorCause::OutOfFuel { budget });
        assert_eq!(error.batch, 1);
        assert!(decided.splits() <= max_splits(512));

        // The instance that ran out was replaced: the next batch runs.
        let next = plugin.filter(&costly(3)).expect("a fresh instance");
        assert_eq!(next.output, vec![true; 3]);
    }
}

#[test]
fn a_plugin_that_runs_out_on_every_event_costs_a_bounded_number_of_calls() {
    let (mut plugin, budget) = sized_plugin();
    let events: Vec<Event> = (0..512)
        .map(|i| event(&format!("h{i}"), &(SPINS * FIT * 10).to_string()))
        .collect();
    let decided = plugin.filter_split(&events);
    assert_covers(&decided, 512);
    assert_eq!(decided.failed_events(), 512);
    assert_eq!(decided.splits(), max_splits(512));
    assert!(
        decided.attempts.len() <= 2 * max_splits(512) + 1,
        "{} calls",
        decided.attempts.len()
    );
    let burnt: u64 = decided
        .attempts
        .iter()
        .map(|a| a.result.as_ref().expect_err("all fail").stats.fuel)
        .sum();
    assert!(burnt <= (2 * max_splits(512) as u64 + 1) * budget);
}

#[test]
fn a_trap_fails_its_whole_batch_in_one_call_and_the_instance_is_replaced() {
    let mut plugin = load("panics", &config("panics"));
    let mut events: Vec<Event> = (0..512).map(|i| event(&format!("e{i}"), "fine")).collect();
    events[7] = event("boom", "panic");
    let decided = plugin.filter_split(&events);
    assert_eq!(decided.attempts.len(), 1, "a trap is not split");
    assert_eq!(decided.failed_events(), 512);
    let error = decided.attempts[0].result.as_ref().expect_err("trapped");
    assert!(matches!(error.cause, ErrorCause::Trap(_)), "{error}");
    let next = plugin.filter(&events[8..]).expect("a fresh instance");
    assert_eq!(next.output.len(), 504);
}
