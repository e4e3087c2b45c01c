//! Slot safety against a real, throwaway Postgres cluster: a slot the server invalidated
//! (`wal_status = lost`, past `max_slot_wal_keep_size`) stops the source with the fix,
//! and `recreate_slot = true` starts over with a new slot and a new snapshot; writes in
//! another database of the cluster do not hold the slot back while its tables are idle.

use std::time::Duration;

use switchyard_test_support::{PgCluster, Switchyard, tail};
use switchyard_tests::{read_jsonl, wait_until};

fn config(dsn: &str, snapshot: &str, extra: &str) -> String {
    switchyard_tests::cdc_config(
        dsn,
        &format!(
            "slot = \"sy_slot\"
tables = [\"public.t\"]
snapshot = \"{snapshot}\"
{extra}"
        ),
    )
}

fn ids(dir: &std::path::Path, kind: &str) -> Vec<i64> {
    let mut ids: Vec<i64> = read_jsonl(&dir.join("out.jsonl"))
        .iter()
        .filter(|e| e["kind"] == kind)
        .filter_map(|e| e["payload"]["after"]["id"].as_i64())
        .collect();
    ids.sort_unstable();
    ids
}

#[test]
fn a_slot_the_server_invalidated_stops_the_source_with_the_fix_and_recreate_slot_starts_over() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY);
         INSERT INTO t SELECT g FROM generate_series(1, 50) g;
         CREATE TABLE filler (pad text);
         ALTER SYSTEM SET max_slot_wal_keep_size = '1MB';
         SELECT pg_reload_conf();",
    );
    let mut switchyard = Switchyard::start(&config(&dsn, "initial", ""));
    assert!(
        wait_until(Duration::from_secs(60), || ids(switchyard.dir(), "read")
            .len()
            == 50),
        "{}",
        tail(&switchyard.logs(), 30)
    );
    assert!(switchyard.terminate().success());
    // Changes while switchyard is down; then the server needs the WAL room.
    pg.sql("app", "INSERT INTO t VALUES (51);");
    let lost = wait_until(Duration::from_secs(120), || {
        pg.sql(
            "app",
            "INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 20000);
             SELECT pg_switch_wal(); CHECKPOINT;",
        );
        pg.sql(
            "app",
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'sy_slot'",
        ) == "lost"
    });
    assert!(lost, "the slot was not invalidated");

    // The source stops at once with what happened and the fix; it does not retry.
    let (exited, status, text) = switchyard_tests::run_expecting_exit(&config(&dsn, "initial", ""));
    assert!(
        exited,
        "the source kept retrying a lost slot: {}",
        tail(&text, 20)
    );
    assert!(!status.success());
    assert!(
        text.contains("was invalidated") && text.contains("recreate_slot = true"),
        "{}",
        tail(&text, 20)
    );

    // recreate_slot: a new slot, and a new snapshot that has the row written meanwhile.
    let switchyard = Switchyard::start(&config(&dsn, "initial", "recreate_slot = true"));
    let all = wait_until(Duration::from_secs(60), || {
        ids(switchyard.dir(), "read") == (1..=51).collect::<Vec<_>>()
    });
    assert!(
        all,
        "snapshot after recreating: {:?}\n{}",
        ids(switchyard.dir(), "read"),
        tail(&switchyard.logs(), 30)
    );
    pg.sql("app", "INSERT INTO t VALUES (52);");
    assert!(wait_until(Duration::from_secs(60), || ids(
        switchyard.dir(),
        "insert"
    ) == [52]));
    let status = pg.sql(
        "app",
        "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'sy_slot'",
    );
    assert_ne!(status, "lost");
}

#[test]
fn writes_in_another_database_do_not_hold_the_slot_back_while_its_tables_are_idle() {
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.create_database("elsewhere");
    pg.sql("app", "CREATE TABLE t (id int PRIMARY KEY);");
    pg.sql("elsewhere", "CREATE TABLE busy (id int, pad text);");
    let switchyard = Switchyard::start(&config(&dsn, "never", ""));
    assert!(wait_until(Duration::from_secs(60), || switchyard
        .logs()
        .contains("replication started")));
    pg.sql(
        "elsewhere",
        "INSERT INTO busy SELECT g, repeat('x', 200) FROM generate_series(1, 50000) g;",
    );
    let written = pg.sql("elsewhere", "SELECT pg_current_wal_lsn()");
    let moved = wait_until(Duration::from_secs(60), || {
        pg.sql(
            "app",
            &format!(
                "SELECT confirmed_flush_lsn >= '{written}' FROM pg_replication_slots \
                 WHERE slot_name = 'sy_slot'"
            ),
        ) == "t"
    });
    assert!(
        moved,
        "the slot stayed behind WAL it has nothing to send from: {}\n{}",
        pg.sql(
            "app",
            "SELECT confirmed_flush_lsn, restart_lsn, pg_current_wal_lsn() FROM pg_replication_slots"
        ),
        tail(&switchyard.logs(), 20)
    );
}
