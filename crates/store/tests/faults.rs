//! Fault injection on one partition: bit rot, full disk, failing fsync.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use switchyard_store::{LogError, LogOptions, PartitionLog, SimStorage, Storage};

const DIR: &str = "/data/q/p0";

fn open(sim: &SimStorage, segment_bytes: u64) -> PartitionLog {
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    PartitionLog::open(
        storage,
        Path::new(DIR),
        LogOptions {
            segment_bytes,
            ..LogOptions::default()
        },
    )
    .expect("open")
}

fn payload(i: u64) -> Vec<u8> {
    format!("record-{i:012}").into_bytes() // 19 bytes → 43 bytes on disk
}

fn append_one_by_one(log: &PartitionLog, n: u64) {
    for i in 0..n {
        let p = payload(log.end());
        log.append(&[(i, &p)]).expect("append");
    }
}

/// A log with `n` records appended one by one and synced, and its last segment file.
fn synced_log(sim: &SimStorage, segment_bytes: u64, n: u64) -> (PartitionLog, PathBuf) {
    let log = open(sim, segment_bytes);
    append_one_by_one(&log, n);
    log.sync().expect("sync");
    let file = segment_files(sim).pop().expect("a segment");
    (log, file)
}

/// Writes `data` at `pos` of the file at `path` and syncs it, behind the log's back.
fn write_synced(sim: &SimStorage, path: &Path, pos: u64, data: &[u8]) {
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let f = storage.open(path, false).expect("open");
    f.write_all_at(data, pos).expect("write");
    f.sync_data().expect("sync");
}

fn segment_files(sim: &SimStorage) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = sim
        .files()
        .into_iter()
        .filter(|p| p.starts_with(DIR) && p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

#[test]
fn flipped_bit_in_a_sealed_segment_is_reported_never_served() {
    let sim = SimStorage::new();
    let log = open(&sim, 130); // 3 records of 43 bytes per segment
    append_one_by_one(&log, 10);
    log.sync().expect("sync");
    let files = segment_files(&sim);
    assert!(files.len() >= 3, "several segments: {files:?}");
    // Payload byte of record 1 in the first (sealed) segment.
    assert!(sim.corrupt_byte(&files[0], 43 + 30, 0x04));

    let assert_corrupt = |log: &PartitionLog| {
        let got = log
            .read(0, 100, usize::MAX)
            .expect("records before the damage");
        assert_eq!(got.len(), 1, "only record 0 precedes the damage");
        match log.read(1, 100, usize::MAX) {
            Err(LogError::Corrupt { path, offset, .. }) => {
                assert_eq!(path, files[0]);
                assert_eq!(offset, 1);
            }
            other => panic!("expected corrupt error, got {other:?}"),
        }
        // Later segments stay readable.
        let later = log.read(3, 100, usize::MAX).expect("later segments");
        assert_eq!(later.first().map(|r| r.offset), Some(3));
        assert_eq!(later.len(), 7);
    };
    assert_corrupt(&log);
    drop(log);
    let log = open(&sim, 130);
    assert_eq!(log.end(), 10, "recovery keeps sealed segments whole");
    assert_corrupt(&log);
    let err = log.read(1, 1, 1).expect_err("corrupt");
    let msg = err.to_string();
    assert!(
        msg.contains("offset 1") && msg.contains(&files[0].display().to_string()),
        "{msg}"
    );
}

#[test]
fn flipped_bit_in_the_last_segment_tail_is_truncated_on_recovery() {
    let sim = SimStorage::new();
    let (log, file) = synced_log(&sim, 1 << 20, 5);
    drop(log);
    assert!(sim.corrupt_byte(&file, 4 * 43 + 40, 0x80));

    let log = open(&sim, 1 << 20);
    assert_eq!(log.end(), 4);
    assert_eq!(log.durable_end(), 4);
    assert_eq!(sim.file_len(&file), Some(4 * 43));
    let all = log.read(0, 100, usize::MAX).expect("read");
    assert_eq!(all.len(), 4);
    let p = payload(4);
    assert_eq!(log.append(&[(9, &p)]).expect("append"), 4..5);
    log.sync().expect("sync");
    assert_eq!(log.read(4, 1, usize::MAX).expect("read")[0].payload, p);
}

#[test]
fn disk_full_writes_nothing_and_the_log_recovers_when_space_frees() {
    let sim = SimStorage::new();
    let (log, file) = synced_log(&sim, 1 << 20, 3);
    let zeroed = sim.file_len(&file).expect("segment file");
    assert!(zeroed > 3 * 43, "zeros were written ahead of the records");
    let used = sim.used_bytes();
    sim.set_space_limit(Some(used + 100));

    // Bigger than the zeros ahead: it needs new space, which the disk does not have.
    let big = vec![7u8; 20 << 10];
    let batch: Vec<(u64, &[u8])> = (0..5).map(|i| (i, big.as_slice())).collect();
    let err = log.append(&batch).expect_err("disk full");
    assert!(err.is_no_space(), "{err:?}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("free disk space"), "{err}");
    assert_eq!(log.end(), 3, "no offset was consumed");
    assert_eq!(
        sim.file_len(&file),
        Some(3 * 43),
        "nothing half-written (the zeros ahead were cut too)"
    );
    assert!(sim.used_bytes() < used);
    assert_eq!(log.sync().expect("sync still works"), 3);

    sim.set_space_limit(None);
    assert_eq!(log.append(&batch).expect("append after space frees"), 3..8);
    log.sync().expect("sync");
    drop(log);
    sim.power_loss(true);
    let log = open(&sim, 1 << 20);
    let all = log.read(0, 100, usize::MAX).expect("read");
    assert_eq!(all.len(), 8);
    assert!(all[3..].iter().all(|r| r.payload == big));
}

#[test]
fn appends_within_the_zeros_ahead_need_no_new_space() {
    let sim = SimStorage::new();
    let (log, file) = synced_log(&sim, 1 << 20, 1);
    let zeroed = sim.file_len(&file).expect("segment file");
    sim.set_space_limit(Some(sim.used_bytes()));
    // The disk is full, but these records overwrite zeros the log already holds.
    let n = (zeroed - 43) / 43;
    append_one_by_one(&log, n);
    assert_eq!(log.sync().expect("sync"), 1 + n);
    assert_eq!(sim.file_len(&file), Some(zeroed), "the file did not grow");
    // The next one needs new space.
    let err = log.append(&[(0, &payload(0)[..])]).expect_err("disk full");
    assert!(err.is_no_space(), "{err:?}");
    assert_eq!(log.end(), 1 + n);
    assert_eq!(log.sync().expect("sync still works"), 1 + n);
}

#[test]
fn a_tail_of_zeros_longer_than_the_log_writes_ahead_is_cut_as_damage() {
    let sim = SimStorage::new();
    let (log, file) = synced_log(&sim, 4 << 20, 3);
    drop(log);
    let long = LogOptions::default().zero_ahead_bytes + 1;
    write_synced(&sim, &file, 3 * 43, &vec![0u8; long as usize]);
    let log = open(&sim, 4 << 20);
    assert_eq!(log.end(), 3);
    assert_eq!(
        sim.file_len(&file),
        Some(3 * 43),
        "cut back to the last record"
    );
}

#[test]
fn zeros_then_other_bytes_after_the_last_record_are_cut_as_a_torn_tail() {
    let sim = SimStorage::new();
    let (log, file) = synced_log(&sim, 1 << 20, 3);
    drop(log);
    let zeroed = sim.file_len(&file).expect("segment file");
    assert!(sim.corrupt_byte(&file, zeroed - 1, 0x01));
    let log = open(&sim, 1 << 20);
    assert_eq!(log.end(), 3);
    assert_eq!(sim.file_len(&file), Some(3 * 43));
    append_one_by_one(&log, 2);
    assert_eq!(log.sync().expect("sync"), 5);
}

#[test]
fn zeros_that_do_not_fit_are_given_up_and_the_append_still_succeeds() {
    let sim = SimStorage::new();
    let (log, file) = synced_log(&sim, 1 << 20, 1);
    let zeroed = sim.file_len(&file).expect("segment file");
    // Syncs of 43 bytes and 30 KB: small enough for zeros ahead to be worth writing.
    let mid = vec![5u8; 30_000];
    for i in 1..3 {
        log.append(&[(i, &mid[..])]).expect("append");
        log.sync().expect("sync");
    }
    assert_eq!(sim.file_len(&file), Some(zeroed), "inside the zeros");
    // Room for a record that reaches past the zeros, not for the next zeros ahead.
    let big = vec![9u8; 10_000];
    sim.set_space_limit(Some(sim.used_bytes() + 8192));
    log.append(&[(3, &big[..])])
        .expect("the record fits; only the zeros ahead did not");
    let data_end = 43 + 2 * (24 + 30_000) + 24 + 10_000;
    assert!(data_end > zeroed);
    assert_eq!(
        sim.file_len(&file),
        Some(data_end),
        "the zeros were cut back"
    );
    assert_eq!(log.sync().expect("sync"), 4);
    // Appends go on without zeros ahead while the disk is full.
    append_one_by_one(&log, 10);
    assert_eq!(log.sync().expect("sync"), 14);
    assert_eq!(sim.file_len(&file), Some(data_end + 10 * 43));
    drop(log);
    sim.power_loss(true);
    let log = open(&sim, 1 << 20);
    assert_eq!(log.end(), 14);
    assert_eq!(log.read(3, 1, usize::MAX).expect("read")[0].payload, big);
}

#[test]
fn a_log_that_syncs_large_batches_writes_each_byte_once() {
    let sim = SimStorage::new();
    let log = open(&sim, 16 << 20);
    let file = || segment_files(&sim).pop().expect("a segment");
    let big = vec![3u8; 40_000];
    let mut end = 0;
    for round in 0..5u64 {
        let batch: Vec<(u64, &[u8])> = (0..3).map(|i| (round * 3 + i, &big[..])).collect();
        log.append(&batch).expect("append");
        log.sync().expect("sync");
        end += 3 * (24 + 40_000);
        if round > 0 {
            // The first stretch (64 KiB) went before the log knew its syncs' size.
            assert_eq!(
                sim.file_len(&file()),
                Some(end),
                "no zeros ahead of 120 KB syncs (round {round})"
            );
        }
    }
    // A few small syncs do not bring the zeros back: the average is still large.
    for _ in 0..2 {
        append_one_by_one(&log, 1);
        log.sync().expect("sync");
        end += 43;
    }
    assert_eq!(sim.file_len(&file()), Some(end));
    // Many do.
    for _ in 0..10 {
        append_one_by_one(&log, 1);
        log.sync().expect("sync");
        end += 43;
    }
    assert!(sim.file_len(&file()).expect("segment file") > end);
}

#[test]
fn zeros_ahead_are_not_damage_and_sealed_segments_end_at_their_last_record() {
    let sim = SimStorage::new();
    let log = open(&sim, 450); // 10 records of 43 bytes per segment, 20 bytes to spare
    append_one_by_one(&log, 25);
    log.sync().expect("sync");
    let files = segment_files(&sim);
    assert_eq!(files.len(), 3, "{files:?}");
    for sealed in &files[..2] {
        assert_eq!(
            sim.file_len(sealed),
            Some(430),
            "a sealed segment ends at its last record: {}",
            sealed.display()
        );
    }
    let active = sim.file_len(&files[2]).expect("active segment");
    assert_eq!(active, 450, "zeros ahead stop at the segment size");
    drop(log);
    // A crash leaves the zeros behind; recovery keeps them as they are.
    sim.power_loss(true);
    let log = open(&sim, 450);
    assert_eq!(log.end(), 25);
    assert_eq!(sim.file_len(&files[2]), Some(active), "nothing was cut");
    assert_eq!(log.read(0, 100, usize::MAX).expect("read").len(), 25);
    append_one_by_one(&log, 5);
    assert_eq!(log.sync().expect("sync"), 30);
    drop(log);
    let log = open(&sim, 450);
    let all = log.read(0, 100, usize::MAX).expect("read");
    assert_eq!(all.len(), 30);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, r)| r.payload == payload(i as u64))
    );
}

#[test]
fn a_sealed_segment_left_with_zeros_after_its_last_record_reads_on() {
    let sim = SimStorage::new();
    let log = open(&sim, 450);
    append_one_by_one(&log, 15);
    log.sync().expect("sync");
    drop(log);
    let files = segment_files(&sim);
    assert_eq!(files.len(), 2);
    // As if the roll's cut had not reached the disk: zeros after the sealed records.
    write_synced(&sim, &files[0], 430, &[0u8; 300]);
    let log = open(&sim, 450);
    let all = log.read(0, 100, usize::MAX).expect("read across the zeros");
    assert_eq!(all.len(), 15);
    assert_eq!(all[10].offset, 10);
}

#[test]
fn failed_fsync_poisons_every_later_write_until_reopen() {
    let sim = SimStorage::new();
    let log = open(&sim, 1 << 20);
    append_one_by_one(&log, 2);
    log.sync().expect("sync");
    append_one_by_one(&log, 1);
    sim.fail_next_sync();
    let err = log.sync().expect_err("fsync fails");
    assert!(err.is_poisoned(), "{err:?}");
    assert!(log.is_poisoned());
    assert_eq!(
        log.durable_end(),
        2,
        "the unsynced record never became durable"
    );
    for _ in 0..3 {
        assert!(
            log.append(&[(0, b"x")])
                .expect_err("poisoned")
                .is_poisoned()
        );
        assert!(log.sync().expect_err("poisoned").is_poisoned());
        assert!(
            log.truncate_unsynced(2)
                .expect_err("poisoned")
                .is_poisoned()
        );
    }
    assert!(
        log.append(&[(0, b"x")])
            .unwrap_err()
            .to_string()
            .contains("restart")
    );
    // Reads of durable data keep working.
    assert_eq!(log.read(0, 10, usize::MAX).expect("read").len(), 2);

    drop(log);
    sim.power_loss(false);
    let log = open(&sim, 1 << 20);
    assert_eq!(log.end(), 2);
    assert_eq!(
        log.append(&[(0, b"again")]).expect("usable after reopen"),
        2..3
    );
    assert_eq!(log.sync().expect("sync"), 3);
}

#[test]
fn reads_see_only_synced_records_and_honour_limits() {
    let sim = SimStorage::new();
    let log = open(&sim, 1 << 20);
    let payloads: Vec<Vec<u8>> = (0..2000u64).map(|i| vec![(i % 251) as u8; 100]).collect();
    for chunk in payloads.chunks(50) {
        let batch: Vec<(u64, &[u8])> = chunk.iter().map(|p| (1, p.as_slice())).collect();
        log.append(&batch).expect("append");
    }
    assert!(
        log.read(0, 10, usize::MAX).expect("read").is_empty(),
        "nothing synced yet"
    );
    log.sync().expect("sync");
    for from in [0u64, 1, 49, 50, 777, 1500, 1999] {
        let got = log.read(from, 3, usize::MAX).expect("read");
        assert_eq!(got[0].offset, from);
        assert_eq!(got[0].payload, payloads[from as usize]);
        assert_eq!(got.len(), 3.min(2000 - from as usize));
    }
    assert_eq!(log.read(10, 100, 250).expect("read").len(), 2, "max_bytes");
    assert_eq!(
        log.read(10, 100, 1).expect("read").len(),
        1,
        "always one record"
    );
    assert!(log.read(2000, 10, usize::MAX).expect("read").is_empty());
}

#[test]
fn truncate_unsynced_never_removes_synced_records() {
    let sim = SimStorage::new();
    let log = open(&sim, 1 << 20);
    append_one_by_one(&log, 3);
    log.sync().expect("sync");
    append_one_by_one(&log, 3);
    let err = log.truncate_unsynced(2).expect_err("below durable end");
    assert!(matches!(err, LogError::InvalidArgument { .. }), "{err:?}");
    log.truncate_unsynced(4).expect("truncate");
    assert_eq!(log.end(), 4);
    assert_eq!(log.append(&[(0, b"after")]).expect("append"), 4..5);
    log.sync().expect("sync");
    let all = log.read(0, 10, usize::MAX).expect("read");
    assert_eq!(all.len(), 5);
    assert_eq!(all[4].payload, b"after");
}

#[test]
fn concurrent_readers_see_a_growing_durable_prefix() {
    let sim = SimStorage::new();
    let log = Arc::new(open(&sim, 4096));
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for i in 0..300u64 {
                let p = payload(i);
                log.append(&[(i, &p), (i, &p)]).expect("append");
                if i % 7 == 0 {
                    log.sync().expect("sync");
                }
            }
            log.sync().expect("sync");
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut next = 0u64;
    while next < 600 {
        assert!(
            std::time::Instant::now() < deadline,
            "reader stalled at {next}"
        );
        let durable = log.durable_end();
        for rec in log.read(next, 64, usize::MAX).expect("read") {
            assert_eq!(rec.offset, next);
            assert!(rec.offset < log.durable_end().max(durable));
            assert_eq!(rec.payload, payload(next / 2));
            next += 1;
        }
        std::thread::yield_now();
    }
    writer.join().expect("writer");
}
