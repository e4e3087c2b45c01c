//! How long the source waits before it reconnects: a doubling pause with a per-process
//! jitter, back at the minimum after a session that lasted.
//!
//! Kept apart from the reconnect loop so that a shared backoff helper can take its place
//! without touching the loop.

use std::time::Duration;

/// The first pause.
pub(super) const MIN: Duration = Duration::from_millis(200);
/// The longest pause.
const MAX: Duration = Duration::from_secs(30);
/// A session that lasted longer than this starts the backoff again from [`MIN`].
pub(super) const RESET_AFTER: Duration = Duration::from_secs(30);

/// The pause to wait now: `backoff` plus a jitter of this process; doubles `backoff`
/// (up to [`MAX`]) for the next one.
pub(super) fn next_pause(backoff: &mut Duration) -> Duration {
    let jitter = Duration::from_millis(u64::from(std::process::id() % 97));
    let pause = *backoff + jitter;
    *backoff = (*backoff * 2).min(MAX);
    pause
}
