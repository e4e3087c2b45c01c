//! The one produce path: HTTP ingest (through [`QueueIntake`], the [`Intake`] of an
//! `http` source's intake log) and the queue API's produce both store events with
//! [`QueueHandle::produce`], so both have the same idempotency window, the same guard
//! against a key stored twice at once, and the same errors. [`restore_idempotency`]
//! rebuilds the windows from the logs after a restart.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_connector::{Appended, BoxFuture, IDEMPOTENCY_HEADER, Intake, IntakeError, Seen};
use switchyard_event::Event;
use switchyard_store::LogError;

use crate::queues::{QueueHandle, now_ms};

/// Events stored together, under one idempotency key or none: a queue API message, or
/// all events of one ingest request.
pub struct Submission {
    pub key: Option<String>,
    pub events: Vec<Event>,
}

/// What became of one [`Submission`].
#[derive(Debug)]
pub enum Produced {
    /// Durable now: each event's (partition, offset), in order.
    Stored(Vec<(u32, u64)>),
    /// Its key was stored within the window: nothing was appended; the first answer.
    Duplicate(Seen),
}

impl QueueHandle {
    /// Stores `submissions` durably (fsync'd) in one append, all or nothing, each
    /// idempotency key at most once within the queue's window:
    ///
    /// * a key stored within the window answers [`Produced::Duplicate`] and is not
    ///   appended again;
    /// * a key being stored right now by another call refuses the whole call with
    ///   [`IntakeError::InFlight`]: the client retries and then gets the stored answer.
    ///   Without this guard, concurrent repeats would both be stored. A key given twice
    ///   in one call refuses it with [`IntakeError::RepeatedKey`];
    /// * a key is remembered only once its events are durable; a failed append leaves
    ///   it unclaimed;
    /// * the append and that bookkeeping run in a task of their own: a caller that goes
    ///   away (a client that disconnects) neither leaves its keys claimed forever nor
    ///   stores events whose key is then forgotten, so its retry gets the first answer.
    pub async fn produce(
        self: &Arc<Self>,
        submissions: Vec<Submission>,
    ) -> Result<Vec<Produced>, IntakeError> {
        if submissions.iter().all(|s| s.key.is_none()) {
            // Nothing to claim or remember: no lock, no task of its own.
            let answers = submissions.iter().map(|_| None).collect();
            return self.store(submissions, answers, Vec::new()).await;
        }
        let mut answers: Vec<Option<Produced>> = Vec::with_capacity(submissions.len());
        let mut claimed: Vec<String> = Vec::new();
        {
            let mut dedup = self.dedup.lock().unwrap_or_else(|e| e.into_inner());
            let (window, pending) = &mut *dedup;
            let now = Instant::now();
            let mut here = HashSet::new();
            for s in &submissions {
                let Some(key) = &s.key else {
                    answers.push(None);
                    continue;
                };
                if !here.insert(key.as_str()) {
                    for k in &claimed {
                        pending.remove(k);
                    }
                    return Err(IntakeError::RepeatedKey(key.clone()));
                }
                if let Some(seen) = window.lookup(key, now) {
                    answers.push(Some(Produced::Duplicate(seen)));
                } else if pending.contains(key) {
                    for k in &claimed {
                        pending.remove(k);
                    }
                    return Err(IntakeError::InFlight(key.clone()));
                } else {
                    pending.insert(key.clone());
                    claimed.push(key.clone());
                    answers.push(None);
                }
            }
        }
        let this = self.clone();
        tokio::spawn(async move { this.store(submissions, answers, claimed).await })
            .await
            .expect("produce task")
    }

    /// The second half of [`QueueHandle::produce`]: appends what is not a duplicate,
    /// releases the claimed keys and remembers the stored ones.
    async fn store(
        &self,
        submissions: Vec<Submission>,
        mut answers: Vec<Option<Produced>>,
        claimed: Vec<String>,
    ) -> Result<Vec<Produced>, IntakeError> {
        // The events to store, and per stored submission: (its index, its key, its ids,
        // how many events it has).
        let mut events = Vec::new();
        let mut stored = Vec::new();
        for (i, s) in submissions.into_iter().enumerate() {
            if answers[i].is_some() {
                continue;
            }
            let ids = s.key.as_ref().map(|_| {
                s.events
                    .iter()
                    .map(|e| e.id.to_string())
                    .collect::<Vec<_>>()
            });
            stored.push((i, s.key, ids, s.events.len()));
            events.extend(s.events);
        }
        let result = if events.is_empty() {
            Ok(Vec::new())
        } else {
            self.append_positions(&events).await
        };
        drop(events);
        // Only claimed keys are remembered (a stored submission's key was claimed).
        let mut dedup =
            (!claimed.is_empty()).then(|| self.dedup.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(dedup) = dedup.as_mut() {
            for k in &claimed {
                dedup.1.remove(k);
            }
        }
        let positions = result.map_err(IntakeError::from)?;
        let now = Instant::now();
        let mut positions = positions.into_iter();
        for (i, key, ids, n) in stored {
            if let (Some(dedup), Some(key), Some(ids)) = (dedup.as_mut(), key, ids) {
                dedup.0.insert(key, ids, now);
            }
            answers[i] = Some(Produced::Stored(positions.by_ref().take(n).collect()));
        }
        drop(dedup);
        Ok(answers
            .into_iter()
            .map(|a| a.expect("every submission is answered"))
            .collect())
    }

    /// What `key` was answered with within the window, if it was stored there.
    pub fn seen(&self, key: &str) -> Option<Seen> {
        let mut dedup = self.dedup.lock().unwrap_or_else(|e| e.into_inner());
        dedup.0.lookup(key, Instant::now())
    }

    /// Rebuilds the idempotency window from the log: keys stored within the window are
    /// remembered again, with the ids and the age they had. Reads only when the queue
    /// has a window. Blocking IO. Returns how many keys were restored.
    pub fn restore_idempotency_blocking(&self) -> Result<usize, LogError> {
        let window = self.limits().dedup_window;
        if window.is_zero() {
            return Ok(0);
        }
        let entries = self.recent_idempotency_keys(window)?;
        let n = entries.len();
        let mut dedup = self.dedup.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for (key, ids, age) in entries {
            dedup
                .0
                .insert(key, ids, now.checked_sub(age).unwrap_or(now));
        }
        Ok(n)
    }

    /// `(key, ids, age)` of idempotency keys stored within `window`, oldest first.
    fn recent_idempotency_keys(
        &self,
        window: Duration,
    ) -> Result<Vec<(String, Vec<String>, Duration)>, LogError> {
        let now = now_ms();
        let since = now.saturating_sub(window.as_millis() as u64);
        let mut by_key: HashMap<String, (u64, Vec<String>)> = HashMap::new();
        for log in self.partitions() {
            let mut from = log.start_offset();
            loop {
                let records = log.read(from, 4096, 16 << 20)?;
                let Some(last) = records.last() else { break };
                from = last.offset + 1;
                for r in records.iter().filter(|r| r.timestamp_ms >= since) {
                    let Ok(event) = Event::decode_record(&r.payload) else {
                        continue;
                    };
                    if let Some(key) = event.header(IDEMPOTENCY_HEADER) {
                        let entry = by_key
                            .entry(key.to_owned())
                            .or_insert((r.timestamp_ms, Vec::new()));
                        entry.0 = entry.0.min(r.timestamp_ms);
                        entry.1.push(event.id.to_string());
                    }
                }
            }
        }
        let mut out: Vec<_> = by_key
            .into_iter()
            .map(|(key, (at, mut ids))| {
                in_request_order(&key, &mut ids);
                (key, ids, Duration::from_millis(now.saturating_sub(at)))
            })
            .collect();
        out.sort_by_key(|e| std::cmp::Reverse(e.2));
        Ok(out)
    }
}

/// Puts the ids of one request back in the order of its body. A request's events are
/// spread over partitions and read back partition by partition; ids given by the
/// `Idempotency-Key` are `<key>-<n>`, so `n` says their order. Other ids stay as read.
fn in_request_order(key: &str, ids: &mut [String]) {
    let index =
        |id: &String| -> Option<u64> { id.strip_prefix(key)?.strip_prefix('-')?.parse().ok() };
    if ids.iter().all(|id| index(id).is_some()) {
        ids.sort_by_key(|id| index(id));
    }
}

/// Rebuilds the idempotency window of each of `queues` from its log, so a producer
/// retrying after a restart is still deduplicated (declared queues and `http` sources'
/// intake logs alike).
pub async fn restore_idempotency(queues: impl IntoIterator<Item = &Arc<QueueHandle>>) {
    for queue in queues {
        let q = queue.clone();
        let found = tokio::task::spawn_blocking(move || q.restore_idempotency_blocking())
            .await
            .expect("idempotency scan task");
        match found {
            Ok(0) => {}
            Ok(keys) => tracing::info!(queue = %queue.name, keys,
                "restored the idempotency window from the log"),
            Err(e) => tracing::warn!(queue = %queue.name, error = %e,
                "could not restore the idempotency window; retried requests may be stored twice"),
        }
    }
}

/// The intake log of an `http` source, as the [`Intake`] HTTP ingest appends to.
pub struct QueueIntake(pub Arc<QueueHandle>);

impl Intake for QueueIntake {
    fn seen(&self, key: &str) -> Option<Seen> {
        self.0.seen(key)
    }

    fn append(
        &self,
        events: Vec<Event>,
        key: Option<String>,
    ) -> BoxFuture<'_, Result<Appended, IntakeError>> {
        Box::pin(async move {
            let mut produced = self.0.produce(vec![Submission { key, events }]).await?;
            Ok(match produced.pop() {
                Some(Produced::Duplicate(seen)) => Appended::Duplicate(seen),
                _ => Appended::Stored,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queues::QueueLimits;
    use switchyard_store::{FsStorage, WorkOptions};

    fn open(dir: &std::path::Path) -> Arc<QueueHandle> {
        QueueHandle::open(
            Arc::new(FsStorage::new()),
            dir,
            "q",
            QueueLimits {
                partitions: 2,
                max_bytes: u64::MAX,
                retention: None,
                work: WorkOptions::default(),
                max_groups: 1,
                group_idle_expiry: None,
                dedup_window: Duration::from_secs(300),
                dedup_keys: 1000,
            },
        )
        .unwrap()
    }

    fn event(id: &str, key: Option<&str>) -> Event {
        Event {
            id: id.into(),
            source: "q".into(),
            kind: "message".into(),
            key: None,
            payload: b"{}".to_vec(),
            content_type: "application/json".into(),
            headers: key
                .map(|k| vec![(IDEMPOTENCY_HEADER.to_owned(), k.to_owned())])
                .unwrap_or_default(),
            timestamp_ms: now_ms(),
            payload_is_compact_json: false,
        }
    }

    fn submission(key: &str, n: usize) -> Submission {
        Submission {
            key: Some(key.to_owned()),
            events: (0..n)
                .map(|i| event(&format!("{key}-{i}"), Some(key)))
                .collect(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_is_stored_once_also_twice_in_one_call_and_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let queue = open(dir.path());
        let first = queue.produce(vec![submission("a", 3)]).await.unwrap();
        assert!(matches!(&first[..], [Produced::Stored(p)] if p.len() == 3));
        // Twice in one call: refused whole, nothing stored, and `b` is not left claimed.
        let twice = queue
            .produce(vec![submission("b", 1), submission("b", 1)])
            .await;
        assert!(matches!(twice, Err(IntakeError::RepeatedKey(k)) if k == "b"));
        let b = queue.produce(vec![submission("b", 1)]).await.unwrap();
        assert!(matches!(&b[..], [Produced::Stored(p)] if p.len() == 1));
        let again = queue
            .produce(vec![
                submission("a", 3),
                Submission {
                    key: None,
                    events: vec![event("x", None)],
                },
            ])
            .await
            .unwrap();
        match &again[..] {
            [Produced::Duplicate(seen), Produced::Stored(p)] => {
                assert_eq!(seen.ids(), ["a-0", "a-1", "a-2"]);
                assert_eq!(p.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(queue.retained_records(), 5);
        queue.shutdown();
        drop(queue);

        let queue = open(dir.path());
        assert!(queue.seen("a").is_none(), "not restored yet");
        let restored = tokio::task::spawn_blocking({
            let q = queue.clone();
            move || q.restore_idempotency_blocking()
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(restored, 2, "the keyed requests");
        let after = queue.produce(vec![submission("a", 3)]).await.unwrap();
        match &after[..] {
            // Spread over both partitions, the ids come back in the request's order.
            [Produced::Duplicate(seen)] => assert_eq!(seen.ids(), ["a-0", "a-1", "a-2"]),
            other => panic!("{other:?}"),
        }
        assert_eq!(queue.retained_records(), 5);
        queue.shutdown();
    }
}
