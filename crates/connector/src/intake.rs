//! The intake contract: where a push source makes events durable.

use std::time::Duration;

use switchyard_event::Event;

use crate::BoxFuture;

/// Header carrying a request's idempotency key on each of its stored events, so the
/// idempotency window can be rebuilt from the log after a restart.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;

/// Why a durable append did not happen. In every case nothing was appended.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// Too many appends in flight: try again shortly (HTTP 429).
    #[error("too many writes in flight; retry after {}s", retry_after.as_secs())]
    Busy { retry_after: Duration },
    /// The destination holds its `max_bytes` of unconsumed data (HTTP 429).
    #[error("{0}; retry later (consumers must catch up) or raise max_bytes")]
    Full(String),
    /// The disk is full (HTTP 507): nothing was written; it recovers when space frees.
    #[error("the disk is full: {0}")]
    NoSpace(String),
    /// The destination refuses writes (HTTP 503), e.g. after an fsync failure: a
    /// restart is needed.
    #[error("{0}")]
    Unavailable(String),
    /// An append with this idempotency key is being stored right now (HTTP 409): the
    /// client retries and then gets the stored answer.
    #[error(
        "a request with idempotency key `{0}` is being stored by another request; retry to get its answer"
    )]
    InFlight(String),
    /// One request gives the same idempotency key to two of its messages (HTTP 400):
    /// retrying cannot help.
    #[error(
        "idempotency key `{0}` is given to more than one message of this request; give each message its own key"
    )]
    RepeatedKey(String),
}

/// What an append with an idempotency key answered.
#[derive(Debug)]
pub enum Appended {
    /// The events are durable now.
    Stored,
    /// The key was stored within the window: nothing was appended; the first append's
    /// ids are the answer.
    Duplicate(Seen),
}

/// The ids an idempotency key was answered with the first time. Kept in the smallest
/// form that gives them back (ingest derives its ids from the key: `KEY` for one event,
/// `KEY-0` … `KEY-(n-1)` for a batch), so a repeat's answer is made only when asked
/// for ([`Seen::ids`]), after the caller knows what it costs ([`Seen::bytes`]).
#[derive(Clone, Debug)]
pub struct Seen {
    key: String,
    ids: Ids,
}

#[derive(Clone, Debug)]
enum Ids {
    Key,
    Numbered(usize),
    Listed(Vec<String>),
}

impl Seen {
    /// The answer `ids` of `key`, compacted.
    pub fn new(key: String, ids: Vec<String>) -> Self {
        let numbered = !ids.is_empty()
            && ids.iter().enumerate().all(|(n, id)| {
                id.strip_prefix(key.as_str())
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|rest| rest.parse::<usize>().ok() == Some(n))
            });
        let ids = if ids.len() == 1 && ids[0] == key {
            Ids::Key
        } else if numbered {
            Ids::Numbered(ids.len())
        } else {
            Ids::Listed(ids)
        };
        Self { key, ids }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// How many ids there are.
    pub fn count(&self) -> usize {
        match &self.ids {
            Ids::Key => 1,
            Ids::Numbered(n) => *n,
            Ids::Listed(list) => list.len(),
        }
    }

    /// Bytes the ids take once made.
    pub fn bytes(&self) -> u64 {
        match &self.ids {
            Ids::Key => self.key.len() as u64,
            Ids::Numbered(n) => *n as u64 * (self.key.len() as u64 + 8),
            Ids::Listed(list) => list.iter().map(|id| id.len() as u64).sum(),
        }
    }

    /// Bytes this value holds beside its key (what remembering it costs).
    pub fn held_bytes(&self) -> usize {
        match &self.ids {
            Ids::Key | Ids::Numbered(_) => 0,
            Ids::Listed(ids) => ids.iter().map(|id| id.len() + 24).sum(),
        }
    }

    /// The ids, made now.
    pub fn ids(&self) -> Vec<String> {
        match &self.ids {
            Ids::Key => vec![self.key.clone()],
            Ids::Numbered(n) => (0..*n).map(|i| format!("{}-{i}", self.key)).collect(),
            Ids::Listed(ids) => ids.clone(),
        }
    }
}

/// The durable destination of events a push source (HTTP ingest) receives.
///
/// Contract: `append` is all or nothing. When it answers `Ok` every event is durable
/// (fsync'd) and will be read by every pipeline of the source; only then may the source
/// acknowledge its client (a 2xx). When it answers `Err` none of them was appended.
///
/// With an idempotency key, an intake stores a key's events at most once within its
/// idempotency window: a repeat answers [`Appended::Duplicate`] with the first answer
/// and appends nothing, and while one append of a key is being stored, another with the
/// same key is refused with [`IntakeError::InFlight`] (so concurrent repeats cannot both
/// be stored).
pub trait Intake: Send + Sync + 'static {
    /// What `key` was answered with within the idempotency window, if it was stored
    /// there. Cheap (no ids are made): a source may answer a repeat from it before it
    /// parses the request.
    fn seen(&self, key: &str) -> Option<Seen>;

    /// Appends all `events` durably, or none of them; with `key`, at most once per key
    /// within the window.
    fn append(
        &self,
        events: Vec<Event>,
        key: Option<String>,
    ) -> BoxFuture<'_, Result<Appended, IntakeError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_kept_by_count_and_given_back_whole() {
        let ids: Vec<String> = (0..1000).map(|i| format!("k-{i}")).collect();
        let seen = Seen::new("k".into(), ids.clone());
        assert_eq!(seen.ids(), ids);
        assert_eq!(seen.count(), 1000);
        assert_eq!(seen.held_bytes(), 0, "derived ids cost no memory each");
        let single = Seen::new("single".into(), vec!["single".into()]);
        assert_eq!(single.ids(), ["single"]);
        let other = Seen::new("other".into(), vec!["a".into(), "b".into()]);
        assert_eq!(other.ids(), ["a", "b"]);
        assert_eq!(other.bytes(), 2);
    }
}
