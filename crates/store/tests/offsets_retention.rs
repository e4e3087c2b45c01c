//! Consumer offsets across power loss, and segment retention.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchyard_store::{LogOptions, OffsetStore, PartitionLog, SimStorage, Storage};

fn storage(sim: &SimStorage) -> Arc<dyn Storage> {
    Arc::new(sim.clone())
}

#[test]
fn committed_offsets_survive_power_loss() {
    let sim = SimStorage::new();
    let path = Path::new("/data/orders/offsets.json");
    let store = OffsetStore::open(storage(&sim), path).expect("open");
    assert_eq!(store.get("billing", 0), None);
    store.commit("billing", &[(0, 5), (1, 7)]).expect("commit");
    store.commit("audit", &[(0, 1)]).expect("commit");
    drop(store);
    sim.power_loss(true);

    let store = OffsetStore::open(storage(&sim), path).expect("reopen");
    assert_eq!(store.get("billing", 0), Some(5));
    assert_eq!(store.get("billing", 1), Some(7));
    assert_eq!(
        store.groups(),
        vec!["audit".to_owned(), "billing".to_owned()]
    );

    // A commit whose fsync fails is not in effect, before or after a power loss.
    sim.fail_next_sync();
    assert!(store.commit("billing", &[(0, 9)]).is_err());
    assert_eq!(store.get("billing", 0), Some(5));
    drop(store);
    sim.power_loss(true);
    let store = OffsetStore::open(storage(&sim), path).expect("reopen");
    assert_eq!(store.get("billing", 0), Some(5));
    store.commit("billing", &[(0, 9)]).expect("commit");
    assert_eq!(store.get("billing", 0), Some(9));
    assert_eq!(
        store.get("billing", 1),
        Some(7),
        "other partitions keep theirs"
    );
}

/// Ten records of 43 bytes, two per segment: segments [0,1] [2,3] [4,5] [6,7] [8,9(active)].
fn log_with_five_segments(sim: &SimStorage) -> PartitionLog {
    let log = PartitionLog::open(
        storage(sim),
        Path::new("/data/q/p0"),
        LogOptions {
            segment_bytes: 100,
            ..LogOptions::default()
        },
    )
    .expect("open");
    for i in 0..10u64 {
        let p = format!("record-{i:012}");
        log.append(&[(i * 1000, p.as_bytes())]).expect("append");
    }
    log.sync().expect("sync");
    assert_eq!(log.segment_count(), 5);
    log
}

#[test]
fn retention_by_consumed_offset_removes_only_fully_consumed_sealed_segments() {
    let sim = SimStorage::new();
    let log = log_with_five_segments(&sim);
    let size = log.size_bytes();
    assert_eq!(
        log.enforce_retention(0, None, Some(5)).expect("retention"),
        2
    );
    assert_eq!(
        log.start_offset(),
        4,
        "segment [4,5] still holds unconsumed offset 5"
    );
    assert!(log.size_bytes() < size);
    let got = log
        .read(0, 100, usize::MAX)
        .expect("read from before start");
    assert_eq!(got.first().map(|r| r.offset), Some(4));
    assert_eq!(got.len(), 6);

    // Everything consumed: the active segment is still kept.
    assert_eq!(
        log.enforce_retention(0, None, Some(100))
            .expect("retention"),
        2
    );
    assert_eq!(log.start_offset(), 8);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(
        log.enforce_retention(0, None, Some(100))
            .expect("retention"),
        0
    );
    assert_eq!(log.end(), 10);

    drop(log);
    sim.power_loss(false);
    let log = PartitionLog::open(
        storage(&sim),
        Path::new("/data/q/p0"),
        LogOptions {
            segment_bytes: 100,
            ..LogOptions::default()
        },
    )
    .expect("reopen");
    assert_eq!(log.start_offset(), 8);
    assert_eq!(log.end(), 10);
    assert_eq!(log.read(0, 100, usize::MAX).expect("read").len(), 2);
}

#[test]
fn retention_by_age_removes_only_segments_whose_newest_record_is_old() {
    let sim = SimStorage::new();
    let log = log_with_five_segments(&sim);
    // Newest timestamps per sealed segment: 1000, 3000, 5000, 7000. Cut-off: 9000 - 3000.
    let removed = log
        .enforce_retention(9000, Some(Duration::from_secs(3)), None)
        .expect("retention");
    assert_eq!(removed, 3);
    assert_eq!(log.start_offset(), 6);
    assert_eq!(
        log.enforce_retention(9000, Some(Duration::from_secs(3)), Some(0))
            .expect("retention"),
        0,
        "segment with newest record at 7000 is kept"
    );
    assert_eq!(
        log.enforce_retention(9000, None, None).expect("retention"),
        0
    );
}
