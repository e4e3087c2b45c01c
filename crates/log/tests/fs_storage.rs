//! Real files: a queue and offsets round trip through a temporary directory.

use std::sync::Arc;

use switchyard_log::{FsStorage, LogError, LogOptions, OffsetStore, Queue, Storage};

#[test]
fn queue_and_offsets_round_trip_on_disk() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("orders");
    let storage: Arc<dyn Storage> = Arc::new(FsStorage::new());
    let opts = LogOptions {
        segment_bytes: 4096,
    };
    {
        let queue = Queue::open(storage.clone(), &dir, 3, opts.clone()).expect("create");
        let p = queue.partition_for(Some(b"customer-42"));
        assert_eq!(p, queue.partition_for(Some(b"customer-42")), "stable hash");
        let log = &queue.partitions()[p as usize];
        for i in 0..200u64 {
            let payload = format!("event {i}");
            log.append(&[(i, payload.as_bytes())]).expect("append");
        }
        assert_eq!(log.sync().expect("sync"), 200);
        assert!(log.segment_count() > 1, "rolled over");
        assert!(queue.size_bytes() > 4096);
        let offsets = OffsetStore::open(storage.clone(), &dir.join("offsets.json")).expect("open");
        offsets.commit("billing", &[(p, 150)]).expect("commit");
    }
    let err = Queue::open(storage.clone(), &dir, 4, opts.clone()).expect_err("count changed");
    assert!(
        matches!(
            err,
            LogError::PartitionCountChanged {
                stored: 3,
                requested: 4,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("configure 3 partitions"), "{err}");

    let queue = Queue::open(storage.clone(), &dir, 3, opts).expect("reopen");
    let p = queue.partition_for(Some(b"customer-42"));
    let log = &queue.partitions()[p as usize];
    assert_eq!(log.end(), 200);
    let offsets = OffsetStore::open(storage, &dir.join("offsets.json")).expect("reopen");
    let from = offsets.get("billing", p).expect("committed");
    let got = log.read(from, 1000, usize::MAX).expect("read");
    assert_eq!(got.len(), 50);
    assert_eq!(got[0].payload, b"event 150");
    assert_eq!(got[49].offset, 199);
    let none = queue.partition_for(None);
    assert_ne!(none, queue.partition_for(None), "round robin");
}
