//! Real files: a queue and offsets round trip through a temporary directory.

use std::sync::Arc;

use switchyard_store::{FsStorage, LogError, LogOptions, OffsetStore, Queue, Storage};

#[test]
fn queue_and_offsets_round_trip_on_disk() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("orders");
    let storage: Arc<dyn Storage> = Arc::new(FsStorage::new());
    let opts = LogOptions {
        segment_bytes: 4096,
        ..LogOptions::default()
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

/// The log holds every payload: what it creates is readable by its owner only (set at
/// creation: the usual umask 022 would leave 0644 files and 0755 directories).
#[test]
fn files_are_0600_and_directories_0700() {
    use std::os::unix::fs::PermissionsExt as _;

    fn walk(path: &std::path::Path, seen: &mut Vec<(std::path::PathBuf, u32, bool)>) {
        let meta = std::fs::metadata(path).expect("metadata");
        seen.push((
            path.to_owned(),
            meta.permissions().mode() & 0o7777,
            meta.is_dir(),
        ));
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).expect("read_dir") {
                walk(&entry.expect("entry").path(), seen);
            }
        }
    }

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data/queues/orders");
    let storage: Arc<dyn Storage> = Arc::new(FsStorage::new());
    {
        let queue = Queue::open(storage.clone(), &dir, 2, LogOptions::default()).expect("create");
        let log = &queue.partitions()[0];
        log.append(&[(0, b"payload".as_slice())]).expect("append");
        log.sync().expect("sync");
        let offsets = OffsetStore::open(storage, &dir.join("offsets")).expect("open");
        offsets.commit("billing", &[(0, 1)]).expect("commit");
    }

    let mut seen = Vec::new();
    walk(&tmp.path().join("data"), &mut seen);
    assert!(
        seen.iter().filter(|(_, _, dir)| !dir).count() >= 3,
        "{seen:?}"
    );
    for (path, mode, is_dir) in &seen {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} is {mode:o}", path.display());
    }
}
