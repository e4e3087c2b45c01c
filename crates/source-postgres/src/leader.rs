//! One reader per slot among several instances: the leader is the instance holding a
//! session-level advisory lock in the source database (decision 0031).
//!
//! * [`lock_key`] — the lock's key, the same in every instance: FNV-1a (64 bit) of
//!   `switchyard-cdc:<database>:<slot>`, as a signed `bigint`;
//! * [`Lease::try_take`] — a dedicated connection takes the lock with
//!   `pg_try_advisory_lock` (never waiting for it); the connection lives as long as the
//!   leadership;
//! * while held, a task checks the connection every `leader_check` with `SELECT 1`; an
//!   error, or a check unanswered within `leader_release − 2 × leader_check` (a slow but
//!   healthy database does not end it) ends the leadership ([`Lease::lost`]), and the
//!   stream stops at once. The end of the lock connection ends it at once, without
//!   waiting for the next check; and no event is sent once the last answered check is
//!   older than `leader_release − leader_check` ([`Freshness`]).
//!
//! The lock session is set up so that the server frees the lock of a leader it no longer
//! hears from after about `leader_release`: `idle_session_timeout` (Postgres 14 and
//! later; the leader's checks keep a healthy session busy) and TCP keepalives and
//! `tcp_user_timeout` (a dead peer). A leader stops sending and gives up at most
//! `leader_release − leader_check` after its last answered check, and `leader_release`
//! is at least three checks: it has stopped a check before another instance can take
//! the lock. A killed process's lock is freed at once (its
//! socket is closed by its kernel).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tracing::warn;

use crate::setup::{self, CdcError, describe};
use crate::tls::Target;

/// The advisory lock key of `slot` in `database`: FNV-1a 64 of
/// `switchyard-cdc:<database>:<slot>`, its bits read as an `i64`. Stable across versions
/// and platforms, so instances of different builds agree.
pub fn lock_key(database: &str, slot: &str) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let text = format!("switchyard-cdc:{database}:{slot}");
    let hash = text
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// Timings of the election, from the source's configuration.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    pub check: Duration,
    pub release: Duration,
}

/// The leadership of one slot: the lock connection and the task checking it. Dropping
/// it closes the connection, which frees the lock.
pub struct Lease {
    lost: watch::Receiver<Option<String>>,
    checker: JoinHandle<()>,
    fresh: Freshness,
    /// The lock's key (for status and messages).
    pub key: i64,
    /// `server_version_num` of the server.
    pub server_version: u32,
    /// The backend pid of the lock session (the holder in `pg_locks`).
    pub holder: i32,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.checker.abort();
    }
}

/// When the lock was last known held: the time of the last answered check. Events are
/// handed out only while it is fresh, i.e. younger than `leader_release − leader_check`:
/// a leader cut off from the database stops sending before the server can free its lock
/// for another instance.
#[derive(Clone, Debug)]
pub struct Freshness {
    last_ok: Arc<Mutex<Instant>>,
    limit: Duration,
}

impl Freshness {
    fn new(timings: Timings) -> Self {
        Self {
            last_ok: Arc::new(Mutex::new(Instant::now())),
            limit: timings.release.saturating_sub(timings.check),
        }
    }

    /// A lease last confirmed at `last_ok`, stale after `limit`.
    #[cfg(test)]
    pub(crate) fn at(last_ok: Instant, limit: Duration) -> Self {
        Self {
            last_ok: Arc::new(Mutex::new(last_ok)),
            limit,
        }
    }

    fn renew(&self) {
        *self.last_ok.lock().expect("lease time lock") = Instant::now();
    }

    /// `Err(age)` when the last answered check is older than the limit.
    pub fn check(&self) -> Result<(), Duration> {
        let age = self.last_ok.lock().expect("lease time lock").elapsed();
        if age > self.limit { Err(age) } else { Ok(()) }
    }
}

/// The lock is held by another session; its key, to find the holder in `pg_locks`.
pub struct Held {
    pub key: i64,
}

impl Lease {
    /// Takes the lock of `slot` if it is free: `Ok(Err(Held))` when another session has
    /// it. Bounded by `timings.release`: a database that does not answer is an error.
    pub async fn try_take(
        dsn: &str,
        slot: &str,
        timings: Timings,
    ) -> Result<Result<Lease, Held>, CdcError> {
        tokio::time::timeout(timings.release, Self::take(dsn, slot, timings))
            .await
            .unwrap_or_else(|_| {
                Err(CdcError::Transient(format!(
                    "taking the leader lock of slot `{slot}`: no answer within {:?}",
                    timings.release
                )))
            })
    }

    async fn take(
        dsn: &str,
        slot: &str,
        timings: Timings,
    ) -> Result<Result<Lease, Held>, CdcError> {
        let (client, ended) = connect(dsn, timings).await?;
        let row = client
            .query_one(
                "SELECT current_database()::text, current_setting('server_version_num')::int, \
                 pg_backend_pid()",
                &[],
            )
            .await
            .map_err(|e| setup::transient("reading the database name", e))?;
        let database: String = row.get(0);
        let server_version = u32::try_from(row.get::<_, i32>(1)).unwrap_or(0);
        let holder: i32 = row.get(2);
        // Older servers lack these settings; keepalives alone must do there.
        if server_version >= 140_000 {
            let release_ms = timings.release.as_millis();
            client
                .batch_execute(&format!(
                    "SET idle_session_timeout = {release_ms}; SET tcp_user_timeout = {release_ms}"
                ))
                .await
                .map_err(|e| setup::transient("setting the lock session's timeouts", e))?;
        }
        let key = lock_key(&database, slot);
        let taken: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .map_err(|e| setup::transient("taking the leader lock", e))?
            .get(0);
        if !taken {
            return Ok(Err(Held { key }));
        }
        let (lost_tx, lost) = watch::channel(None);
        let fresh = Freshness::new(timings);
        let checker = tokio::spawn(check(client, ended, timings, lost_tx, fresh.clone()));
        Ok(Ok(Lease {
            lost,
            checker,
            fresh,
            key,
            server_version,
            holder,
        }))
    }

    /// Waits until the leadership is lost; why.
    pub async fn lost(&mut self) -> String {
        match self.lost.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            Err(_) => "the lock connection's check stopped".into(),
        }
    }

    /// Lost already (without waiting), or no check answered for too long to be sure of
    /// it ([`Freshness`]).
    pub fn is_lost(&self) -> bool {
        self.lost.borrow().is_some() || self.checker.is_finished() || self.fresh.check().is_err()
    }

    /// The time of the last answered check, to gate sending on.
    pub fn freshness(&self) -> Freshness {
        self.fresh.clone()
    }
}

/// The lock connection: the dsn's TLS settings, short TCP keepalives on both ends so a
/// dead peer is noticed within about `timings.release`. With it, a receiver that gets why
/// the connection ended, as soon as it does.
async fn connect(
    dsn: &str,
    timings: Timings,
) -> Result<(Client, tokio::sync::oneshot::Receiver<String>), CdcError> {
    let mut target = Target::parse(dsn)?;
    let release = timings.release.as_secs().max(1);
    // Keepalives start after half the release time and give up after as long again.
    let idle = release.div_ceil(2);
    let probes = u32::try_from(idle).unwrap_or(u32::MAX);
    target.config.options(format!(
        "{} -c tcp_keepalives_idle={idle} -c tcp_keepalives_interval=1 -c tcp_keepalives_count={probes}",
        setup::SESSION_OPTIONS
    ));
    target
        .config
        .connect_timeout(timings.release)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(idle))
        .keepalives_interval(Duration::from_secs(1))
        .keepalives_retries(probes)
        .tcp_user_timeout(timings.release);
    let (client, connection) = target.connect_sql().await?;
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let why = match connection.await {
            Ok(()) => "the lock connection closed".to_string(),
            Err(e) => {
                warn!(error = %describe(&e), "leader lock connection closed");
                format!("the lock connection failed: {}", describe(&e))
            }
        };
        let _ = ended_tx.send(why);
    });
    Ok((client, ended))
}

/// How long one check may go unanswered: `leader_release − 2 × leader_check` (at least
/// one check). The check is sent about one `leader_check` after the last answered one,
/// so it gives up when the lease stops being fresh, still a check before the server may
/// free the lock.
fn check_timeout(timings: Timings) -> Duration {
    timings
        .release
        .saturating_sub(timings.check * 2)
        .max(timings.check)
}

/// Checks the lock connection every `leader_check` until a check fails, goes unanswered
/// for [`check_timeout`], or the connection ends (noticed at once); then reports why and
/// drops the connection (freeing the lock if the server still hears it).
async fn check(
    client: Client,
    mut ended: tokio::sync::oneshot::Receiver<String>,
    timings: Timings,
    lost: watch::Sender<Option<String>>,
    fresh: Freshness,
) {
    let every = timings.check;
    let limit = check_timeout(timings);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let why = loop {
        tokio::select! {
            why = &mut ended => {
                break why.unwrap_or_else(|_| "the lock connection closed".to_string());
            }
            _ = tick.tick() => {}
        }
        if client.is_closed() {
            break "the lock connection closed".to_string();
        }
        let answer = tokio::select! {
            why = &mut ended => {
                break why.unwrap_or_else(|_| "the lock connection closed".to_string());
            }
            answer = tokio::time::timeout(limit, client.simple_query("SELECT 1")) => answer,
        };
        match answer {
            Ok(Ok(_)) => fresh.renew(),
            Ok(Err(e)) => break format!("the lock connection failed: {}", describe(&e)),
            Err(_) => break format!("the lock connection did not answer within {limit:?}"),
        }
    };
    lost.send_replace(Some(why));
    drop(client);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_may_take_the_release_time_less_two_checks() {
        let timings = |check, release| Timings {
            check: Duration::from_millis(check),
            release: Duration::from_millis(release),
        };
        assert_eq!(check_timeout(timings(1000, 5000)), Duration::from_secs(3));
        // At the least release (three checks): one check.
        assert_eq!(check_timeout(timings(1000, 3000)), Duration::from_secs(1));
        assert_eq!(check_timeout(timings(1000, 1000)), Duration::from_secs(1));
        // Sending stops when a check has gone unanswered that long after its tick.
        let t = timings(1000, 5000);
        assert_eq!(
            Freshness::new(t).limit,
            t.check + check_timeout(t),
            "the lease goes stale when the check gives up"
        );
    }

    #[test]
    fn the_lock_key_is_stable_and_names_database_and_slot() {
        // Fixed: instances of different versions must agree on it.
        assert_eq!(
            lock_key("app", "switchyard_db"),
            lock_key("app", "switchyard_db")
        );
        assert_eq!(lock_key("app", "switchyard_db"), 2_502_010_378_871_038_568);
        assert_ne!(
            lock_key("app", "switchyard_db"),
            lock_key("app2", "switchyard_db")
        );
        assert_ne!(
            lock_key("app", "switchyard_db"),
            lock_key("app", "switchyard_db2")
        );
    }
}
