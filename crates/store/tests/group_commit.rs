//! Group committer: concurrent submitters, durability of acknowledged records across a power
//! loss, bounded pending queue, all-or-nothing submissions.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_store::{
    GroupCommitter, LogError, LogOptions, Parts, Queue, SimStorage, Storage, SubmitError,
};

const WAIT: Duration = Duration::from_secs(20);

fn open_queue(sim: &SimStorage, partitions: u32) -> Queue {
    open_queue_with(sim, partitions, LogOptions::default().zero_ahead_bytes)
}

fn open_queue_with(sim: &SimStorage, partitions: u32, zero_ahead_bytes: u64) -> Queue {
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    Queue::open(
        storage,
        Path::new("/data/orders"),
        partitions,
        LogOptions {
            segment_bytes: 2048,
            zero_ahead_bytes,
        },
    )
    .expect("open queue")
}

fn no_op() -> Arc<dyn Fn(u32, u64) + Send + Sync> {
    Arc::new(|_, _| {})
}

/// A submission's callback result.
type Answer = Result<Vec<Range<u64>>, LogError>;

type Acked = Vec<(u32, Range<u64>, Vec<Vec<u8>>)>;

#[test]
fn acknowledged_records_survive_power_loss() {
    let sim = SimStorage::with_seed(42);
    let queue = open_queue(&sim, 4);
    let durable_seen: Arc<Vec<AtomicU64>> = Arc::new((0..4).map(|_| AtomicU64::new(0)).collect());
    let seen = durable_seen.clone();
    let committer = Arc::new(GroupCommitter::start(
        "orders",
        queue.partitions().to_vec(),
        16,
        Arc::new(move |p, end| {
            seen[p as usize].fetch_max(end, Ordering::SeqCst);
        }),
    ));
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let early_ack = Arc::new(AtomicBool::new(false));
    let queue = Arc::new(queue);

    let threads: Vec<_> = (0..8u32)
        .map(|t| {
            let (committer, acked, early_ack, queue) = (
                committer.clone(),
                acked.clone(),
                early_ack.clone(),
                queue.clone(),
            );
            std::thread::spawn(move || {
                for i in 0..60u32 {
                    let key = format!("key-{t}");
                    let p = queue.partition_for(Some(key.as_bytes()));
                    let mut parts: Parts =
                        vec![(p, vec![(u64::from(i), format!("{t}/{i}/a").into_bytes())])];
                    if i % 3 == 0 {
                        let q = (p + 1) % 4;
                        let recs = (0..3)
                            .map(|j| (u64::from(i), format!("{t}/{i}/b{j}").into_bytes()))
                            .collect();
                        parts.push((q, recs));
                    }
                    let payloads: Vec<Vec<Vec<u8>>> = parts
                        .iter()
                        .map(|(_, r)| r.iter().map(|(_, b)| b.clone()).collect())
                        .collect();
                    let partition_ids: Vec<u32> = parts.iter().map(|(p, _)| *p).collect();
                    let (acked, early_ack, queue2) =
                        (acked.clone(), early_ack.clone(), queue.clone());
                    committer
                        .submit(
                            parts,
                            Box::new(move |result| {
                                let ranges = result.expect("commit succeeds");
                                let mut acked = acked.lock().unwrap();
                                for ((p, range), payloads) in
                                    partition_ids.into_iter().zip(ranges).zip(payloads)
                                {
                                    if queue2.partitions()[p as usize].durable_end() < range.end {
                                        early_ack.store(true, Ordering::SeqCst);
                                    }
                                    acked.push((p, range, payloads));
                                }
                            }),
                        )
                        .expect("submit");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("submitter");
    }
    committer.shutdown();
    assert!(matches!(
        committer.submit(vec![], Box::new(|_| {})),
        Err(SubmitError::Closed)
    ));
    assert!(
        !early_ack.load(Ordering::SeqCst),
        "a callback ran before its fsync"
    );

    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert_eq!(acked.len(), 8 * 60 + 8 * 20, "every part acknowledged");
    for (p, range, _) in &acked {
        assert!(
            durable_seen[*p as usize].load(Ordering::SeqCst) >= range.end,
            "on_durable"
        );
    }
    // Per-key order: one submitter's records on its key's partition have increasing offsets.
    for t in 0..8u32 {
        let prefix = format!("{t}/");
        let offsets: Vec<u64> = acked
            .iter()
            .filter(|(_, _, ps)| ps[0].starts_with(prefix.as_bytes()) && ps[0].ends_with(b"/a"))
            .map(|(_, r, _)| r.start)
            .collect();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "order for submitter {t}"
        );
    }

    drop(committer);
    drop(queue);
    sim.power_loss(true);
    let queue = open_queue(&sim, 4);
    for (p, range, payloads) in &acked {
        let got = queue.partitions()[*p as usize]
            .read(range.start, payloads.len(), usize::MAX)
            .expect("read acknowledged records");
        let got: Vec<Vec<u8>> = got.into_iter().map(|r| r.payload).collect();
        assert_eq!(&got, payloads, "partition {p} range {range:?}");
    }
}

#[test]
fn try_submit_is_bounded_by_max_pending() {
    let sim = SimStorage::new();
    let queue = open_queue(&sim, 1);
    let committer = GroupCommitter::start("bounded", queue.partitions().to_vec(), 2, no_op());
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel();

    // The first submission's callback holds the commit thread until released.
    let done = done_tx.clone();
    committer
        .try_submit(
            vec![(0, vec![(0, b"first".to_vec())])],
            Box::new(move |r| {
                entered_tx.send(()).unwrap();
                release_rx.recv_timeout(WAIT).expect("released");
                done.send(r.is_ok()).unwrap();
            }),
        )
        .expect("room");
    entered_rx.recv_timeout(WAIT).expect("commit thread busy");
    for _ in 0..2 {
        let done = done_tx.clone();
        committer
            .try_submit(
                vec![(0, vec![(0, b"queued".to_vec())])],
                Box::new(move |r| done.send(r.is_ok()).unwrap()),
            )
            .expect("room for max_pending");
    }
    let full = committer.try_submit(vec![(0, vec![(0, b"x".to_vec())])], Box::new(|_| {}));
    assert!(matches!(full, Err(SubmitError::Full)), "{full:?}");
    assert!(full.unwrap_err().to_string().contains("retry later"));

    release_tx.send(()).unwrap();
    for _ in 0..3 {
        assert!(done_rx.recv_timeout(WAIT).expect("callback"), "committed");
    }
    committer.shutdown();
    assert_eq!(queue.partitions()[0].durable_end(), 3);
}

fn submit_and_wait(committer: &GroupCommitter, parts: Parts) -> Result<Vec<Range<u64>>, LogError> {
    let (tx, rx) = mpsc::channel();
    committer
        .try_submit(parts, Box::new(move |r| tx.send(r).unwrap()))
        .expect("submit");
    rx.recv_timeout(WAIT).expect("callback")
}

#[test]
fn a_failed_part_undoes_the_whole_submission() {
    let sim = SimStorage::new();
    let queue = open_queue(&sim, 2);
    let committer = GroupCommitter::start("atomic", queue.partitions().to_vec(), 8, no_op());
    let ok = submit_and_wait(&committer, vec![(0, vec![(1, b"a".to_vec())])]).expect("ok");
    assert_eq!(ok, vec![0..1]);

    // A partition that does not exist.
    let err = submit_and_wait(
        &committer,
        vec![(0, vec![(1, b"b".to_vec())]), (7, vec![(1, b"c".to_vec())])],
    )
    .expect_err("bad partition");
    assert!(matches!(err, LogError::InvalidArgument { .. }), "{err:?}");
    assert_eq!(queue.partitions()[0].end(), 1, "part on p0 was undone");

    // A full disk on the second part.
    sim.set_space_limit(Some(sim.used_bytes() + 200));
    let err = submit_and_wait(
        &committer,
        vec![(0, vec![(1, b"d".to_vec())]), (1, vec![(1, vec![0; 500])])],
    )
    .expect_err("disk full");
    assert!(err.is_no_space(), "{err:?}");
    assert_eq!(queue.partitions()[0].end(), 1);
    assert_eq!(queue.partitions()[1].end(), 0);

    sim.set_space_limit(None);
    let ok = submit_and_wait(
        &committer,
        vec![(0, vec![(1, b"e".to_vec())]), (1, vec![(1, vec![0; 500])])],
    )
    .expect("space again");
    assert_eq!(ok, vec![1..2, 0..1]);
    let p0 = queue.partitions()[0].read(0, 10, usize::MAX).expect("read");
    let p0: Vec<&[u8]> = p0.iter().map(|r| r.payload.as_slice()).collect();
    assert_eq!(p0, vec![b"a".as_slice(), b"e".as_slice()]);
}

#[test]
fn a_failed_fsync_fails_the_batch_and_poisons_the_partition() {
    let sim = SimStorage::new();
    let queue = open_queue(&sim, 1);
    let committer = GroupCommitter::start("poison", queue.partitions().to_vec(), 8, no_op());
    sim.fail_next_sync();
    let err = submit_and_wait(&committer, vec![(0, vec![(1, b"a".to_vec())])]).expect_err("fsync");
    assert!(err.is_poisoned(), "{err:?}");
    let err =
        submit_and_wait(&committer, vec![(0, vec![(1, b"b".to_vec())])]).expect_err("poisoned");
    assert!(err.is_poisoned(), "{err:?}");
    assert_eq!(queue.partitions()[0].durable_end(), 0);
}

/// Holds the commit thread in a callback until released, so the submissions made meanwhile
/// are committed as one batch.
fn hold(committer: &GroupCommitter) -> mpsc::Sender<()> {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    committer
        .try_submit(
            vec![(0, vec![(0, b"hold".to_vec())])],
            Box::new(move |r| {
                r.expect("the holding submission commits");
                entered_tx.send(()).unwrap();
                release_rx.recv_timeout(WAIT).expect("released");
            }),
        )
        .expect("room");
    entered_rx.recv_timeout(WAIT).expect("commit thread busy");
    release_tx
}

#[test]
fn one_batch_keeps_submission_order_per_partition_and_answers_each() {
    let sim = SimStorage::new();
    let queue = open_queue(&sim, 2);
    let committer = GroupCommitter::start("order", queue.partitions().to_vec(), 64, no_op());
    let release = hold(&committer);
    let (tx, rx) = mpsc::channel();
    // Single-part submissions on both partitions, with a two-part one in between.
    let subs: Vec<Parts> = vec![
        vec![(0, vec![(1, b"a".to_vec()), (1, b"b".to_vec())])],
        vec![(1, vec![(1, b"c".to_vec())])],
        vec![(0, vec![(1, b"d".to_vec())]), (1, vec![(1, b"e".to_vec())])],
        vec![(0, vec![(1, b"f".to_vec())])],
        vec![(1, vec![])],
    ];
    for (i, parts) in subs.into_iter().enumerate() {
        let tx = tx.clone();
        committer
            .try_submit(parts, Box::new(move |r| tx.send((i, r)).unwrap()))
            .expect("room");
    }
    release.send(()).unwrap();
    let mut answers: Vec<(usize, Vec<Range<u64>>)> = (0..5)
        .map(|_| {
            let (i, r) = rx.recv_timeout(WAIT).expect("callback");
            (i, r.expect("committed"))
        })
        .collect();
    answers.sort_by_key(|(i, _)| *i);
    let ranges: Vec<Vec<Range<u64>>> = answers.into_iter().map(|(_, r)| r).collect();
    assert_eq!(
        ranges,
        vec![
            vec![1..3],
            vec![0..1],
            vec![3..4, 1..2],
            vec![4..5],
            vec![2..2],
        ]
    );
    let read = |p: usize| -> Vec<Vec<u8>> {
        queue.partitions()[p]
            .read(0, 10, usize::MAX)
            .expect("read")
            .into_iter()
            .map(|r| r.payload)
            .collect()
    };
    assert_eq!(read(0), [&b"hold"[..], b"a", b"b", b"d", b"f"]);
    assert_eq!(read(1), [&b"c"[..], b"e"]);
    committer.shutdown();
}

#[test]
fn a_failed_shared_write_fails_exactly_its_submissions() {
    let sim = SimStorage::new();
    // Without zeros ahead: every byte written needs new space (zeros ahead are tested in
    // faults.rs).
    let queue = open_queue_with(&sim, 2, 0);
    let committer = GroupCommitter::start("shared", queue.partitions().to_vec(), 64, no_op());
    let release = hold(&committer);
    // Room for the small submissions to partition 1, not for the large ones to partition 0.
    sim.set_space_limit(Some(sim.used_bytes() + 300));
    let (tx, rx) = mpsc::channel();
    for (i, (p, size)) in [(0, 400), (1, 10), (0, 400), (1, 10)]
        .into_iter()
        .enumerate()
    {
        let tx = tx.clone();
        committer
            .try_submit(
                vec![(p, vec![(1, vec![b'x'; size])])],
                Box::new(move |r| tx.send((i, r)).unwrap()),
            )
            .expect("room");
    }
    release.send(()).unwrap();
    let mut answers: Vec<(usize, Answer)> = (0..4)
        .map(|_| rx.recv_timeout(WAIT).expect("callback"))
        .collect();
    answers.sort_by_key(|(i, _)| *i);
    for (i, r) in &answers {
        match (i % 2, r) {
            (0, Err(e)) => assert!(e.is_no_space(), "{e:?}"),
            (1, Ok(_)) => {}
            other => panic!("submission {i}: {other:?}"),
        }
    }
    assert_eq!(queue.partitions()[0].end(), 1, "only the holding record");
    assert_eq!(queue.partitions()[1].durable_end(), 2);

    sim.set_space_limit(None);
    let ok = submit_and_wait(&committer, vec![(0, vec![(1, vec![b'y'; 400])])]).expect("room");
    assert_eq!(ok, vec![1..2]);
    committer.shutdown();
}

#[test]
fn a_blocked_submit_waits_for_room_and_an_idle_committer_wakes_for_each_submission() {
    let sim = SimStorage::new();
    let queue = open_queue(&sim, 1);
    let committer = Arc::new(GroupCommitter::start(
        "blocking",
        queue.partitions().to_vec(),
        1,
        no_op(),
    ));
    // Idle between submissions: each one alone must wake the commit thread.
    for n in 0..3u64 {
        let ranges = submit_and_wait(&committer, vec![(0, vec![(0, b"idle".to_vec())])])
            .expect("an idle committer commits");
        assert_eq!(ranges, vec![n..n + 1]);
    }
    // Busy, with its one pending place taken: `submit` waits until the batch is taken.
    let release = hold(&committer);
    let (done_tx, done_rx) = mpsc::channel();
    let done = done_tx.clone();
    committer
        .try_submit(
            vec![(0, vec![(0, b"queued".to_vec())])],
            Box::new(move |r| done.send(r.is_ok()).unwrap()),
        )
        .expect("room for one");
    let (submitted_tx, submitted_rx) = mpsc::channel();
    let blocked = {
        let committer = committer.clone();
        std::thread::spawn(move || {
            let r = committer.submit(
                vec![(0, vec![(0, b"blocked".to_vec())])],
                Box::new(move |r| done_tx.send(r.is_ok()).unwrap()),
            );
            submitted_tx.send(r.is_ok()).unwrap();
        })
    };
    assert!(
        submitted_rx
            .recv_timeout(Duration::from_millis(200))
            .is_err(),
        "submit returned while the pending place was taken"
    );
    release.send(()).unwrap();
    assert!(submitted_rx.recv_timeout(WAIT).expect("submit returns"));
    for _ in 0..2 {
        assert!(done_rx.recv_timeout(WAIT).expect("callback"), "committed");
    }
    blocked.join().unwrap();
    committer.shutdown();
    assert_eq!(queue.partitions()[0].durable_end(), 6);
}
