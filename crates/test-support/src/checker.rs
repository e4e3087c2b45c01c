//! The delivery checker of fault tests: compares what producers were told was accepted
//! with what a receiver got, and counts what the delivery contract forbids (lost,
//! reordered) and what it allows (duplicated).
//!
//! * **lost** — acknowledged to the producer (2xx) but never delivered;
//! * **duplicated** — deliveries beyond the first of the same event id;
//! * **reordered** — events delivered for the *first* time after a later event (higher
//!   sequence number) of the same key was first delivered. Redeliveries of old events
//!   after a crash are duplicates, not reorderings: at-least-once allows them.
//!
//! Deliveries of ids the producers never saw acknowledged are counted as `unacked`: not
//! an error in itself (a request can be made durable and the answer lost in a crash),
//! but a test that never lets that happen may assert it is zero.

use std::collections::{HashMap, HashSet};
use std::fmt;

/// One event as a producer sent it or a receiver got it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tracked {
    /// The event id (the `Idempotency-Key` sent, the `webhook-id` received).
    pub id: String,
    /// The ordering key.
    pub key: String,
    /// Position in the key's sequence, as the producer sent them (0, 1, 2, …).
    pub seq: u64,
}

impl Tracked {
    pub fn new(id: impl Into<String>, key: impl Into<String>, seq: u64) -> Self {
        Self {
            id: id.into(),
            key: key.into(),
            seq,
        }
    }

    /// Reads a delivery made by a webhook sink whose payload is a JSON object with
    /// `"key"` (string) and `"seq"` (number) fields, the id from `webhook-id`. `None` when
    /// the request does not have that shape. The sink sends `webhook-id` only when it
    /// signs, so give the sink a `secret`.
    pub fn from_webhook(request: &crate::ReceivedRequest) -> Option<Self> {
        let id = request.header("webhook-id")?.to_owned();
        let body: serde_json::Value = serde_json::from_slice(&request.body).ok()?;
        Some(Self {
            id,
            key: body.get("key")?.as_str()?.to_owned(),
            seq: body.get("seq")?.as_u64()?,
        })
    }
}

/// Counts of one check. `Display` prints one line, e.g.
/// `lost=0 duplicated=37 reordered=0 acked=10000 delivered=10037`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Acknowledged events never delivered.
    pub lost: usize,
    /// Deliveries beyond the first of an event.
    pub duplicated: usize,
    /// Events first delivered after a later event of their key was.
    pub reordered: usize,
    /// Distinct events acknowledged to producers.
    pub acked: usize,
    /// Deliveries in all (duplicates included).
    pub delivered: usize,
    /// Distinct delivered ids that were never acknowledged.
    pub unacked: usize,
    /// Up to ten lost ids, for the failure message.
    pub lost_examples: Vec<String>,
    /// Up to ten reorderings as `key: seq N first delivered after seq M`.
    pub reordered_examples: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lost={} duplicated={} reordered={} acked={} delivered={}",
            self.lost, self.duplicated, self.reordered, self.acked, self.delivered
        )?;
        if self.unacked > 0 {
            write!(f, " unacked={}", self.unacked)?;
        }
        if !self.lost_examples.is_empty() {
            write!(f, " lost_ids={:?}", self.lost_examples)?;
        }
        if !self.reordered_examples.is_empty() {
            write!(f, " reorderings={:?}", self.reordered_examples)?;
        }
        Ok(())
    }
}

const EXAMPLES: usize = 10;

/// Checks `delivered` (in arrival order, duplicates included) against `acked` (the
/// events producers got a 2xx for, in any order; repeated ids count once).
pub fn check(acked: &[Tracked], delivered: &[Tracked]) -> Report {
    let acked_ids: HashSet<&str> = acked.iter().map(|t| t.id.as_str()).collect();
    let mut report = Report {
        acked: acked_ids.len(),
        delivered: delivered.len(),
        ..Report::default()
    };
    let mut first_seen: HashSet<&str> = HashSet::new();
    // Per key: the highest sequence number first-delivered so far.
    let mut highest: HashMap<&str, u64> = HashMap::new();
    for d in delivered {
        if !first_seen.insert(d.id.as_str()) {
            report.duplicated += 1;
            continue;
        }
        if !acked_ids.contains(d.id.as_str()) {
            report.unacked += 1;
        }
        match highest.get_mut(d.key.as_str()) {
            Some(top) if *top > d.seq => {
                report.reordered += 1;
                if report.reordered_examples.len() < EXAMPLES {
                    report.reordered_examples.push(format!(
                        "{}: seq {} first delivered after seq {}",
                        d.key, d.seq, top
                    ));
                }
            }
            Some(top) => *top = d.seq,
            None => {
                highest.insert(d.key.as_str(), d.seq);
            }
        }
    }
    let mut lost: Vec<&str> = acked_ids
        .iter()
        .filter(|id| !first_seen.contains(*id))
        .copied()
        .collect();
    lost.sort_unstable();
    report.lost = lost.len();
    report.lost_examples = lost
        .iter()
        .take(EXAMPLES)
        .map(|s| (*s).to_owned())
        .collect();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(key: &str, seq: u64) -> Tracked {
        Tracked::new(format!("{key}-{seq}"), key, seq)
    }

    #[test]
    fn a_clean_run_reports_nothing() {
        let acked = vec![t("a", 0), t("a", 1), t("b", 0), t("b", 1)];
        // Keys interleave freely; each key's order holds.
        let delivered = vec![t("b", 0), t("a", 0), t("a", 1), t("b", 1)];
        let r = check(&acked, &delivered);
        assert_eq!(
            r.to_string(),
            "lost=0 duplicated=0 reordered=0 acked=4 delivered=4"
        );
    }

    #[test]
    fn detects_a_lost_event() {
        let acked = vec![t("a", 0), t("a", 1), t("a", 2)];
        let delivered = vec![t("a", 0), t("a", 2)];
        let r = check(&acked, &delivered);
        assert_eq!(r.lost, 1);
        assert_eq!(r.lost_examples, ["a-1"]);
        // The missing event is lost, not reordered: it never arrived.
        assert_eq!(r.reordered, 0);
        assert!(r.to_string().starts_with("lost=1 duplicated=0 reordered=0"));
    }

    #[test]
    fn counts_redeliveries_as_duplicates_not_reorderings() {
        let acked = vec![t("a", 0), t("a", 1), t("a", 2)];
        // A crash after delivering 0 and 1: both come again, then 2.
        let delivered = vec![t("a", 0), t("a", 1), t("a", 0), t("a", 1), t("a", 2)];
        let r = check(&acked, &delivered);
        assert_eq!(
            (r.lost, r.duplicated, r.reordered, r.delivered),
            (0, 2, 0, 5)
        );
    }

    #[test]
    fn detects_an_event_first_delivered_after_a_later_one() {
        let acked = vec![t("a", 0), t("a", 1), t("a", 2), t("b", 0)];
        let delivered = vec![t("a", 0), t("a", 2), t("b", 0), t("a", 1), t("a", 2)];
        let r = check(&acked, &delivered);
        assert_eq!((r.lost, r.duplicated, r.reordered), (0, 1, 1));
        assert_eq!(
            r.reordered_examples,
            ["a: seq 1 first delivered after seq 2"]
        );
    }

    #[test]
    fn counts_deliveries_nobody_was_told_about() {
        let acked = vec![t("a", 0)];
        let delivered = vec![t("a", 0), t("a", 1)];
        let r = check(&acked, &delivered);
        assert_eq!((r.lost, r.unacked), (0, 1));
        assert!(r.to_string().ends_with("unacked=1"));
    }

    #[test]
    fn repeated_acks_of_one_id_count_once() {
        // A producer retried after a crash and was told "accepted" twice.
        let acked = vec![t("a", 0), t("a", 0)];
        let r = check(&acked, &[t("a", 0)]);
        assert_eq!((r.acked, r.lost, r.duplicated), (1, 0, 0));
    }
}
