//! How long to wait between attempts: the one backoff of the project.
//!
//! The runtime owns a sink's retries; the sink only says how
//! ([`crate::Sink::retry_policy`]). Loops that retry until they succeed (a source
//! reconnecting, a dead letter that must be appended) use a [`Backoff`].
//! Delays grow exponentially from `initial`, are capped at `max`, and use **equal
//! jitter**: half of the exponential step is fixed, the other half is uniformly random.
//! Equal jitter (rather than "full jitter", which may pick ~0) keeps a lower bound on
//! every wait, so a destination that is down is not hammered, while still spreading
//! retries of many keys apart so they do not arrive in lockstep.
//!
//! A `Retry-After` the destination sent is a floor: the delay is never shorter than it
//! (capped at [`MAX_RETRY_AFTER`], so a misconfigured server cannot park a key for days).

use std::time::Duration;

use switchyard_config::RetryConfig;

/// Longest `Retry-After` that is honoured. Larger values are treated as this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// Exponential backoff with equal jitter, capped, honouring `Retry-After`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included, before the event is dead-lettered.
    /// `0` is treated as `1`: every event gets at least one attempt.
    pub max_attempts: u32,
    /// Step before the second attempt (the first retry).
    pub initial: Duration,
    /// Largest backoff step (a `Retry-After` may still ask for longer).
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial: Duration::from_millis(200),
            max: Duration::from_secs(60),
        }
    }
}

impl From<&RetryConfig> for RetryPolicy {
    fn from(cfg: &RetryConfig) -> Self {
        Self {
            max_attempts: cfg.max_attempts,
            initial: cfg.initial,
            max: cfg.max,
        }
    }
}

impl RetryPolicy {
    /// Whether an event that has had `attempts` attempts must not be tried again.
    pub fn exhausted(&self, attempts: u32) -> bool {
        attempts >= self.max_attempts.max(1)
    }

    /// The exponential step after `attempt` failed attempts (1 = the first attempt
    /// failed), before jitter: `initial * 2^(attempt-1)`, capped at `max`. Never
    /// decreases as `attempt` grows.
    pub fn step(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(31);
        self.initial.saturating_mul(1u32 << exponent).min(self.max)
    }

    /// How long to wait after `attempt` failed attempts (1 = the first attempt failed)
    /// before the next one. `retry_after` is what the destination asked for, if anything.
    ///
    /// The result lies in `[step/2, step]` (see [`RetryPolicy::step`]), raised to
    /// `retry_after` (at most [`MAX_RETRY_AFTER`]) when that is longer.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        self.delay_with_jitter(attempt, retry_after, rand::random::<f64>())
    }

    /// [`RetryPolicy::delay`] with the random part given: `jitter` in `[0, 1]` picks
    /// where in `[step/2, step]` the delay falls. Deterministic, for tests and callers
    /// that bring their own randomness.
    pub fn delay_with_jitter(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Duration {
        let step = self.step(attempt);
        let half = step / 2;
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        // `step - half` rather than `half` so odd nanosecond counts still reach `step`.
        let backoff = (half + (step - half).mul_f64(jitter)).min(step);
        match retry_after {
            Some(asked) => backoff.max(asked.min(MAX_RETRY_AFTER)),
            None => backoff,
        }
    }
}

/// The waits of a loop that tries again until it succeeds (a reconnect, an append that
/// must happen): [`Backoff::next_delay`] after each failure, [`Backoff::reset`] after a
/// success. The delays are those of a [`RetryPolicy`] without an attempt limit.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    failures: u32,
}

impl Backoff {
    /// Waits from about `initial` doubling up to `max`, with equal jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            policy: RetryPolicy {
                max_attempts: u32::MAX,
                initial,
                max,
            },
            failures: 0,
        }
    }

    /// Counts one more failure and answers how long to wait before the next try.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.policy.delay(self.failures, None)
    }

    /// The last try succeeded: the next failure waits the shortest delay again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn defaults_match_the_config_defaults() {
        assert_eq!(
            RetryPolicy::default(),
            RetryPolicy::from(&RetryConfig::default())
        );
    }

    #[test]
    fn steps_double_then_cap() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial: ms(200),
            max: ms(1000),
        };
        let steps: Vec<_> = (1..=6).map(|a| p.step(a)).collect();
        assert_eq!(
            steps,
            [ms(200), ms(400), ms(800), ms(1000), ms(1000), ms(1000)]
        );
        // attempt 0 is treated like 1 rather than underflowing.
        assert_eq!(p.step(0), ms(200));
        // Huge attempt numbers saturate instead of overflowing.
        assert_eq!(p.step(u32::MAX), ms(1000));
    }

    #[test]
    fn equal_jitter_spans_half_to_full_step() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_with_jitter(3, None, 0.0), ms(400));
        assert_eq!(p.delay_with_jitter(3, None, 1.0), ms(800));
        assert_eq!(p.delay_with_jitter(3, None, 0.5), ms(600));
        assert_eq!(p.delay_with_jitter(3, None, f64::NAN), ms(400));
    }

    #[test]
    fn retry_after_is_a_floor_capped_at_an_hour() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay_with_jitter(1, Some(Duration::from_secs(7)), 0.3),
            Duration::from_secs(7)
        );
        // Shorter than the backoff: the backoff wins.
        assert_eq!(p.delay_with_jitter(3, Some(ms(1)), 0.0), ms(400));
        // Absurd values are capped.
        assert_eq!(
            p.delay_with_jitter(1, Some(Duration::from_secs(86_400 * 30)), 0.0),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn exhausted_counts_the_first_attempt() {
        let p = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        assert!(!p.exhausted(0));
        assert!(!p.exhausted(2));
        assert!(p.exhausted(3));
        assert!(p.exhausted(4));
        let zero = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert!(!zero.exhausted(0), "every event gets one attempt");
        assert!(zero.exhausted(1));
    }

    #[test]
    fn a_backoff_grows_to_its_cap_and_starts_over_after_a_success() {
        let mut b = Backoff::new(ms(100), ms(1000));
        let waits: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        for (wait, step) in waits.iter().zip([100, 200, 400, 800, 1000, 1000]) {
            assert!(
                *wait >= ms(step) / 2 && *wait <= ms(step),
                "{wait:?} vs step {step}ms"
            );
        }
        assert_eq!(b.failures(), 6);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert!(b.next_delay() <= ms(100));
    }

    fn policy() -> impl Strategy<Value = RetryPolicy> {
        (1u32..50, 0u64..10_000, 0u64..600_000).prop_map(|(max_attempts, initial, max)| {
            RetryPolicy {
                max_attempts,
                initial: ms(initial),
                max: ms(max),
            }
        })
    }

    proptest! {
        #[test]
        fn delay_stays_within_bounds(p in policy(), attempt in 0u32..200, jitter in 0.0f64..=1.0) {
            let step = p.step(attempt);
            let d = p.delay_with_jitter(attempt, None, jitter);
            prop_assert!(d <= step && d <= p.max, "{d:?} above step {step:?} / max {:?}", p.max);
            prop_assert!(d >= step / 2, "{d:?} below half of step {step:?}");
        }

        #[test]
        fn step_is_monotone_and_capped(p in policy(), attempt in 0u32..200) {
            prop_assert!(p.step(attempt) <= p.step(attempt + 1));
            prop_assert!(p.step(attempt) <= p.max);
        }

        #[test]
        fn random_delay_stays_within_bounds(p in policy(), attempt in 0u32..200) {
            let step = p.step(attempt);
            let d = p.delay(attempt, None);
            prop_assert!(d >= step / 2 && d <= step);
        }

        #[test]
        fn retry_after_is_honoured(p in policy(), attempt in 0u32..200, jitter in 0.0f64..=1.0, asked_ms in 0u64..10_000_000) {
            let asked = ms(asked_ms);
            let d = p.delay_with_jitter(attempt, Some(asked), jitter);
            prop_assert!(d >= asked.min(MAX_RETRY_AFTER));
            prop_assert!(d >= p.delay_with_jitter(attempt, None, jitter));
            prop_assert!(d <= p.step(attempt).max(MAX_RETRY_AFTER));
        }
    }
}
