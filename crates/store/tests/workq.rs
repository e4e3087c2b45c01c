//! Work-group semantics on a real log: leases, ack, nack, redelivery, dead letters, priority,
//! FIFO per key, and recovery after a crash (reopen) and power loss (SimStorage).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use switchyard_store::{
    Classify, FsStorage, LogError, LogOptions, MemoryBudget, MessageMeta, PartitionLog, Receipt,
    SimStorage, Storage, WorkGroup, WorkOptions, entry_cost,
};

/// Payload format of these tests: `priority;key;not_before;body`.
fn classify() -> Classify {
    Arc::new(|r| {
        let s = std::str::from_utf8(&r.payload).unwrap();
        let mut it = s.split(';');
        let priority = it.next().unwrap().parse().unwrap();
        let key = it.next().unwrap();
        let not_before_ms = it.next().unwrap().parse().unwrap();
        MessageMeta {
            priority,
            key: (!key.is_empty()).then(|| key.bytes().map(u64::from).sum::<u64>() + 1),
            not_before_ms,
        }
    })
}

fn msg(priority: u8, key: &str, not_before: u64, body: &str) -> Vec<u8> {
    format!("{priority};{key};{not_before};{body}").into_bytes()
}

fn body(l: &switchyard_store::Leased) -> String {
    let s = String::from_utf8(l.record.payload.clone()).unwrap();
    s.rsplit(';').next().unwrap().to_owned()
}

struct Fixture {
    storage: Arc<dyn Storage>,
    dir: std::path::PathBuf,
    log: Arc<PartitionLog>,
}

impl Fixture {
    fn new(storage: Arc<dyn Storage>, dir: &Path) -> Self {
        let log = Arc::new(
            PartitionLog::open(storage.clone(), &dir.join("p0"), LogOptions::default()).unwrap(),
        );
        Fixture {
            storage,
            dir: dir.to_path_buf(),
            log,
        }
    }

    fn append(&self, msgs: &[Vec<u8>]) {
        let recs: Vec<(u64, &[u8])> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| (i as u64, m.as_slice()))
            .collect();
        self.log.append(&recs).unwrap();
        self.log.sync().unwrap();
    }

    fn group(&self, opts: WorkOptions) -> WorkGroup {
        self.named(opts, "g")
    }

    fn named(&self, opts: WorkOptions, name: &str) -> WorkGroup {
        WorkGroup::open(
            self.storage.clone(),
            &self.dir.join(name),
            name,
            vec![self.log.clone()],
            opts,
            classify(),
        )
        .unwrap()
    }
}

fn opts() -> WorkOptions {
    WorkOptions {
        ack_timeout_ms: 1000,
        max_deliveries: 3,
        ..WorkOptions::default()
    }
}

#[test]
fn each_message_goes_to_one_consumer_until_acked() {
    let tmp = tempfile::tempdir().unwrap();
    let f = Fixture::new(Arc::new(FsStorage::new()), tmp.path());
    f.append(
        &(0..100)
            .map(|i| msg(0, "", 0, &i.to_string()))
            .collect::<Vec<_>>(),
    );
    let g = f.group(opts());
    let a = g.receive(0, 60, None).unwrap();
    let b = g.receive(0, 60, None).unwrap();
    assert_eq!((a.len(), b.len()), (60, 40));
    let seen: HashSet<String> = a.iter().chain(&b).map(body).collect();
    assert_eq!(seen.len(), 100, "no message handed out twice while leased");
    assert!(g.receive(10, 10, None).unwrap().is_empty());
    let receipts: Vec<Receipt> = a.iter().chain(&b).map(|l| l.receipt).collect();
    assert!(g.ack(&receipts, 20).unwrap().iter().all(|&ok| ok));
    assert_eq!(g.stats(20).depth, 0);
    // Acking again is stale, not an error.
    assert!(g.ack(&receipts[..1], 30).unwrap().iter().all(|&ok| !ok));
    assert_eq!(g.consumed(), vec![100]);
}

#[test]
fn an_expired_lease_is_handed_out_again_then_dead_lettered() {
    let tmp = tempfile::tempdir().unwrap();
    let f = Fixture::new(Arc::new(FsStorage::new()), tmp.path());
    f.append(&[msg(0, "", 0, "poison"), msg(0, "", 0, "fine")]);
    let g = f.group(opts());
    let mut now = 0;
    let mut deliveries = Vec::new();
    for _ in 0..3 {
        let got = g.receive(now, 10, None).unwrap();
        let poison = got.iter().find(|l| body(l) == "poison").unwrap();
        deliveries.push(poison.receipt.delivery);
        let fine: Vec<Receipt> = got
            .iter()
            .filter(|l| body(l) == "fine")
            .map(|l| l.receipt)
            .collect();
        g.ack(&fine, now).unwrap();
        now += 1001;
    }
    assert_eq!(deliveries, vec![1, 2, 3]);
    assert!(
        g.receive(now, 10, None).unwrap().is_empty(),
        "no fourth delivery"
    );
    let dead = g.take_exhausted(now);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].deliveries, 3);
    assert!(dead[0].reason.contains("expired"), "{}", dead[0].reason);
    // Stays unfinished until the caller stored it elsewhere.
    assert_eq!(g.stats(now).depth, 1);
    g.dead_lettered(&[(dead[0].partition, dead[0].offset)], now)
        .unwrap();
    let s = g.stats(now);
    assert_eq!((s.depth, s.dead_lettered), (0, 1));
}

#[test]
fn nack_with_delay_and_stale_receipts() {
    let tmp = tempfile::tempdir().unwrap();
    let f = Fixture::new(Arc::new(FsStorage::new()), tmp.path());
    f.append(&[msg(0, "", 0, "a")]);
    let g = f.group(opts());
    let first = g.receive(0, 1, None).unwrap();
    assert_eq!(g.nack(&[first[0].receipt], 500, 10).unwrap(), vec![true]);
    assert!(g.receive(100, 1, None).unwrap().is_empty(), "delayed");
    assert_eq!(g.stats(100).delayed, 1);
    let second = g.receive(510, 1, None).unwrap();
    assert_eq!(second[0].receipt.delivery, 2);
    // The first delivery's receipt no longer acks.
    assert_eq!(g.ack(&[first[0].receipt], 520).unwrap(), vec![false]);
    // Extending keeps it leased past the original deadline.
    let until = g.extend(&[second[0].receipt], 5000, 600);
    assert_eq!(until, vec![Some(5600)]);
    assert!(g.receive(2000, 1, None).unwrap().is_empty());
    assert_eq!(g.ack(&[second[0].receipt], 2100).unwrap(), vec![true]);
}

#[test]
fn not_before_delays_the_first_delivery() {
    let tmp = tempfile::tempdir().unwrap();
    let f = Fixture::new(Arc::new(FsStorage::new()), tmp.path());
    f.append(&[msg(0, "", 5000, "later"), msg(0, "", 0, "now")]);
    let g = f.group(opts());
    let first = g.receive(100, 10, None).unwrap();
    assert_eq!(first.iter().map(body).collect::<Vec<_>>(), vec!["now"]);
    // Due next: the lease of "now" (100 + 1000), before "later" (5000).
    assert_eq!(g.next_due_ms(), Some(1100));
    g.ack(&[first[0].receipt], 200).unwrap();
    assert_eq!(g.next_due_ms(), Some(5000));
    assert!(g.receive(4999, 10, None).unwrap().is_empty());
    let got: Vec<String> = g
        .receive(5000, 10, Some(60_000))
        .unwrap()
        .iter()
        .map(body)
        .collect();
    assert_eq!(got, vec!["later"]);
}

#[test]
fn higher_priority_first_and_equal_priorities_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let f = Fixture::new(Arc::new(FsStorage::new()), tmp.path());
    let mut msgs = Vec::new();
    for i in 0..30 {
        msgs.push(msg(
            (i % 3) as u8 * 4,
            "",
            0,
            &format!("{}-{i}", (i % 3) * 4),
        ));
    }
    f.append(&msgs);
    let g = f.group(opts());
    let got: Vec<String> = g.receive(0, 30, None).unwrap().iter().map(body).collect();
    let prios: Vec<u32> = got
        .iter()
        .map(|b| b.split('-').next().unwrap().parse().unwrap())
        .collect();
    let mut sorted = prios.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(prios, sorted, "higher priority first: {got:?}");
    for p in [0, 4, 8] {
        let seq: Vec<u32> = got
            .iter()
            .filter(|b| b.starts_with(&format!("{p}-")))
            .map(|b| b.split('-').nth(1).unwrap().parse().unwrap())
            .collect();
        assert!(
            seq.windows(2).all(|w| w[0] < w[1]),
            "FIFO within priority {p}: {seq:?}"
        );
    }
}

#[test]
fn a_key_waits_for_its_earlier_message() {
    let tmp = tempfile::tempdir().unwrap();
    let f = Fixture::new(Arc::new(FsStorage::new()), tmp.path());
    f.append(&[
        msg(0, "k", 0, "k1"),
        msg(0, "k", 0, "k2"),
        msg(9, "k", 0, "k3"),
        msg(0, "", 0, "free1"),
        msg(0, "", 0, "free2"),
    ]);
    let g = f.group(opts());
    let got = g.receive(0, 10, None).unwrap();
    let names: Vec<String> = got.iter().map(body).collect();
    assert_eq!(names, vec!["k1", "free1", "free2"]);
    // Redelivery of k1 keeps k2 waiting.
    assert_eq!(g.nack(&[got[0].receipt], 0, 1).unwrap(), vec![true]);
    let again = g.receive(2, 10, None).unwrap();
    assert_eq!(again.iter().map(body).collect::<Vec<_>>(), vec!["k1"]);
    g.ack(&[again[0].receipt], 3).unwrap();
    let next: Vec<String> = g.receive(4, 10, None).unwrap().iter().map(body).collect();
    assert_eq!(
        next,
        vec!["k2"],
        "k3's priority does not overtake its key's order"
    );
}

#[test]
fn state_survives_reopen_and_snapshots_compact_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(FsStorage::new());
    let f = Fixture::new(storage.clone(), tmp.path());
    f.append(
        &(0..2000)
            .map(|i| msg(0, "", 0, &i.to_string()))
            .collect::<Vec<_>>(),
    );
    let small = WorkOptions {
        snapshot_every: 100,
        lookahead: 300,
        ..opts()
    };
    let mut acked = HashSet::new();
    let mut leased_at_crash = HashMap::new();
    {
        let g = f.group(small.clone());
        // Ack every other message of several receives, leaving gaps.
        for round in 0..5 {
            let got = g.receive(round, 200, None).unwrap();
            let (ack, keep): (Vec<_>, Vec<_>) = got.iter().partition(|l| l.receipt.offset % 2 == 0);
            g.ack(&ack.iter().map(|l| l.receipt).collect::<Vec<_>>(), round)
                .unwrap();
            acked.extend(ack.iter().map(|l| l.receipt.offset));
            for l in keep {
                leased_at_crash.insert(l.receipt.offset, l.receipt.delivery);
            }
        }
    }
    let journal_files = storage
        .list_files(&tmp.path().join("g/journal"))
        .unwrap()
        .len();
    let g = f.group(small);
    let mut seen = HashSet::new();
    let mut now = 10;
    loop {
        let got = g.receive(now, 500, None).unwrap();
        if got.is_empty() {
            break;
        }
        for l in &got {
            assert!(
                !acked.contains(&l.receipt.offset),
                "acked offset {} came back",
                l.receipt.offset
            );
            if let Some(d) = leased_at_crash.get(&l.receipt.offset) {
                assert_eq!(l.receipt.delivery, d + 1, "delivery count kept");
            }
            seen.insert(l.receipt.offset);
        }
        g.ack(&got.iter().map(|l| l.receipt).collect::<Vec<_>>(), now)
            .unwrap();
        now += 1;
    }
    assert_eq!(seen.len() + acked.len(), 2000);
    assert_eq!(g.consumed(), vec![2000]);
    assert!(journal_files >= 1);
}

#[test]
fn power_loss_keeps_every_answered_ack() {
    let storage = Arc::new(SimStorage::new());
    let dir = Path::new("/q");
    let f = Fixture::new(storage.clone(), dir);
    f.append(
        &(0..500)
            .map(|i| msg(0, "", 0, &i.to_string()))
            .collect::<Vec<_>>(),
    );
    let mut answered = HashSet::new();
    {
        let g = f.group(WorkOptions {
            snapshot_every: 50,
            ..opts()
        });
        for round in 0..4 {
            let got = g.receive(round, 100, None).unwrap();
            let receipts: Vec<Receipt> = got.iter().map(|l| l.receipt).collect();
            g.ack(&receipts, round).unwrap();
            answered.extend(receipts.iter().map(|r| r.offset));
        }
        // Handed out but never acked: must come back.
        let _ = g.receive(10, 50, None).unwrap();
    }
    storage.power_loss(true);
    let f = Fixture::new(storage.clone(), dir);
    let g = f.group(opts());
    let mut rest = HashSet::new();
    loop {
        let got = g.receive(100, 1000, None).unwrap();
        if got.is_empty() {
            break;
        }
        rest.extend(got.iter().map(|l| l.receipt.offset));
        g.ack(&got.iter().map(|l| l.receipt).collect::<Vec<_>>(), 100)
            .unwrap();
    }
    assert!(answered.is_disjoint(&rest), "an answered ack was lost");
    assert_eq!(answered.len() + rest.len(), 500);
}

/// The cost of one loaded message of `body`, as the budget counts it.
fn cost_of(body: &str) -> usize {
    entry_cost(&switchyard_store::Record {
        offset: 0,
        timestamp_ms: 0,
        payload: msg(0, "", 0, body),
    })
}

#[test]
fn a_shared_budget_bounds_the_windows_of_all_groups_and_each_still_progresses() {
    let tmp = tempfile::tempdir().unwrap();
    let f = Fixture::new(Arc::new(FsStorage::new()), tmp.path());
    let body = |i: usize| format!("{i:04}{}", "x".repeat(996));
    f.append(
        &(0..100)
            .map(|i| msg(0, "", 0, &body(i)))
            .collect::<Vec<_>>(),
    );
    let cost = cost_of(&body(0));
    // Room for 10 messages across every group; each group alone would load all 100.
    let budget = MemoryBudget::new(10 * cost);
    let o = WorkOptions {
        budget: budget.clone(),
        ..opts()
    };
    let groups: Vec<WorkGroup> = (0..5)
        .map(|i| f.named(o.clone(), &format!("g{i}")))
        .collect();
    let mut got = Vec::new();
    for g in &groups {
        let leased = g.receive(0, 100, None).unwrap();
        assert!(
            !leased.is_empty(),
            "a group past the budget still gets a message"
        );
        got.push(leased);
    }
    // The first group filled the budget; the others load their one message of progress.
    assert_eq!(got[0].len(), 10);
    for leased in &got[1..] {
        assert_eq!(leased.len(), 1);
    }
    assert_eq!(budget.used(), 14 * cost);
    let held: u64 = groups.iter().map(|g| g.stats(0).memory_bytes).sum();
    assert_eq!(held as usize, budget.used());
    // More receives load nothing more while the budget is spent.
    for g in &groups {
        assert!(g.receive(0, 100, None).unwrap().is_empty());
    }
    assert_eq!(budget.used(), 14 * cost);

    // Acks give memory back: the last group then drains the queue, in order, within the
    // budget, and nothing is lost.
    for (g, leased) in groups.iter().zip(&got).take(4) {
        g.ack(&leased.iter().map(|l| l.receipt).collect::<Vec<_>>(), 0)
            .unwrap();
    }
    assert_eq!(budget.used(), cost);
    let last = &groups[4];
    let mut seen: Vec<String> = got[4].iter().map(body_prefix).collect();
    last.ack(&got[4].iter().map(|l| l.receipt).collect::<Vec<_>>(), 0)
        .unwrap();
    loop {
        let leased = last.receive(1, 100, None).unwrap();
        if leased.is_empty() {
            break;
        }
        assert!(
            budget.used() <= 10 * cost,
            "{} > {}",
            budget.used(),
            10 * cost
        );
        seen.extend(leased.iter().map(body_prefix));
        last.ack(&leased.iter().map(|l| l.receipt).collect::<Vec<_>>(), 1)
            .unwrap();
    }
    let expected: Vec<String> = (0..100).map(|i| format!("{i:04}")).collect();
    assert_eq!(seen, expected);
    // Dropping a group gives its memory back too.
    let g0 = groups.into_iter().next().unwrap();
    let more = g0.receive(2, 100, None).unwrap();
    assert_eq!(more.len(), 10);
    assert_eq!(budget.used(), 10 * cost);
    drop(g0);
    assert_eq!(budget.used(), 0);
}

fn body_prefix(l: &switchyard_store::Leased) -> String {
    body(l)[..4].to_owned()
}

#[test]
fn a_large_message_past_the_budget_is_still_loaded_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let f = Fixture::new(Arc::new(FsStorage::new()), tmp.path());
    let big = "y".repeat(64 << 10);
    f.append(&[msg(0, "", 0, &big), msg(0, "", 0, &big)]);
    let budget = MemoryBudget::new(1024);
    let g = f.group(WorkOptions {
        budget: budget.clone(),
        ..opts()
    });
    let first = g.receive(0, 10, None).unwrap();
    assert_eq!(first.len(), 1, "one message at a time past the budget");
    assert_eq!(budget.used(), cost_of(&big));
    g.ack(&[first[0].receipt], 0).unwrap();
    let second = g.receive(0, 10, None).unwrap();
    assert_eq!(
        second.iter().map(|l| l.receipt.offset).collect::<Vec<_>>(),
        vec![1]
    );
}

#[test]
fn deleting_a_group_frees_its_memory_and_files_and_the_name_starts_afresh() {
    let tmp = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(FsStorage::new());
    let f = Fixture::new(storage.clone(), tmp.path());
    f.append(
        &(0..20)
            .map(|i| msg(0, "", 0, &i.to_string()))
            .collect::<Vec<_>>(),
    );
    let budget = MemoryBudget::new(1 << 20);
    let o = WorkOptions {
        budget: budget.clone(),
        snapshot_every: 5,
        ..opts()
    };
    let g = f.group(o.clone());
    let got = g.receive(0, 10, None).unwrap();
    g.ack(&got.iter().map(|l| l.receipt).collect::<Vec<_>>(), 0)
        .unwrap();
    let leased = g.receive(0, 1, None).unwrap();
    assert!(budget.used() > 0);
    assert!(tmp.path().join("g/journal").is_dir());

    g.delete().unwrap();
    assert_eq!(budget.used(), 0, "its loaded messages are freed");
    assert!(
        !tmp.path().join("g").exists(),
        "its journal and directory are gone"
    );
    assert!(matches!(
        g.receive(1, 1, None),
        Err(LogError::GroupDeleted { .. })
    ));
    assert!(matches!(
        g.ack(&[leased[0].receipt], 1),
        Err(LogError::GroupDeleted { .. })
    ));
    assert_eq!(g.extend(&[leased[0].receipt], 1000, 1), vec![None]);
    assert_eq!(g.stats(1).in_flight, 0);
    g.delete().unwrap();
    drop(g);
    assert_eq!(budget.used(), 0);

    // A new group of the same name knows nothing of the old one's acks.
    let again = f.group(o);
    let got = again.receive(2, 100, None).unwrap();
    assert_eq!(got.len(), 20);
    assert_eq!(got[0].receipt.delivery, 1);
}

/// A group `g` over five messages in `dir` of `storage`, all received and acked.
fn five_acked_on(storage: &Arc<SimStorage>, dir: &Path) -> (Fixture, WorkGroup) {
    let f = Fixture::new(storage.clone(), dir);
    f.append(
        &(0..5)
            .map(|i| msg(0, "", 0, &i.to_string()))
            .collect::<Vec<_>>(),
    );
    let g = f.group(opts());
    let got = g.receive(0, 5, None).unwrap();
    g.ack(&got.iter().map(|l| l.receipt).collect::<Vec<_>>(), 0)
        .unwrap();
    (f, g)
}

#[test]
fn deleting_works_on_sim_storage_and_survives_power_loss() {
    let storage = Arc::new(SimStorage::new());
    let dir = Path::new("/q");
    let (_f, g) = five_acked_on(&storage, dir);
    g.delete().unwrap();
    drop(g);
    let journal = dir.join("g/journal");
    storage.power_loss(false);
    assert!(storage.list_files(&journal).is_err(), "the journal is gone");
    let f = Fixture::new(storage.clone(), dir);
    let g = f.group(opts());
    assert_eq!(g.receive(1, 10, None).unwrap().len(), 5, "a fresh group");
}

#[test]
fn a_delete_that_failed_halfway_finishes_when_asked_again() {
    let storage = Arc::new(SimStorage::new());
    let dir = Path::new("/q");
    let (f, g) = five_acked_on(&storage, dir);
    // The journal's segments are removed, then its directory's sync fails: the
    // directories stay.
    storage.fail_next_sync();
    assert!(g.delete().is_err());
    let group_dir = dir.join("g");
    assert!(storage.list_files(&group_dir).is_ok(), "left halfway");
    g.delete().unwrap();
    assert!(
        storage.list_files(&group_dir).is_err(),
        "the second delete removes what the first left"
    );
    drop(g);
    let g = f.group(opts());
    assert_eq!(g.receive(1, 10, None).unwrap().len(), 5, "a fresh group");
}

#[test]
fn idle_time_counts_from_the_last_operation_also_after_a_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let f = Fixture::new(Arc::new(FsStorage::new()), tmp.path());
    f.append(
        &(0..3)
            .map(|i| msg(0, "", 0, &i.to_string()))
            .collect::<Vec<_>>(),
    );
    // Far in the future of the wall clock, so the open (which counts as activity for a new
    // group) is older than every operation below.
    let t = 4_000_000_000_000u64;
    let g = f.group(opts());
    assert!(g.last_active_ms() < t);
    let got = g.receive(t, 2, None).unwrap();
    assert_eq!(g.last_active_ms(), t);
    assert!(!g.is_idle(t + 4_999, 5_000));
    assert!(g.is_idle(t + 5_000, 5_000));
    g.extend(&[got[0].receipt], 1_000, t + 1_000);
    assert_eq!(g.last_active_ms(), t + 1_000);
    g.nack(&[got[1].receipt], 0, t + 2_000).unwrap();
    assert_eq!(g.last_active_ms(), t + 2_000);
    g.ack(&[got[0].receipt], t + 3_000).unwrap();
    assert_eq!(g.last_active_ms(), t + 3_000);
    // An empty receive is activity too.
    let _ = g.receive(t + 4_000, 0, None).unwrap();
    assert_eq!(g.last_active_ms(), t + 4_000);
    drop(g);
    // After a reopen: the last journaled operation (the ack; the empty receive wrote nothing).
    let g = f.group(opts());
    assert_eq!(g.last_active_ms(), t + 3_000);
    assert!(g.is_idle(t + 8_000, 5_000));
    assert!(!g.is_idle(t + 7_999, 5_000));
}
