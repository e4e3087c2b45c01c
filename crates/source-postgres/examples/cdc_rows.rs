//! The per-row work of the CDC source without a database: decode a pgoutput Insert of
//! the CDC benchmark's table and turn it into an event, `ROWS` times (default 200000, in
//! transactions of 1000 rows).
//!
//! Run it under callgrind to count instructions per row, a figure the machine's load does
//! not move (docs/decisions/0016-cdc-hot-path.md):
//!
//! ```sh
//! cargo build --release -p switchyard-source-postgres --example cdc_rows
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out target/release/examples/cdc_rows 20000
//! ```
//!
//! Instructions per row: the difference of two runs (e.g. 10000 and 20000 rows) divided by
//! the difference of their rows, so start-up and the test data do not count.

use std::hint::black_box;

use switchyard_source_postgres::change::{ChangeEncoder, KeySpec, RowChange, Transaction};
use switchyard_source_postgres::pgoutput::{self, Message};
use switchyard_source_postgres::values::TypeRegistry;

const TXN_ROWS: u64 = 1000;

fn main() {
    let rows: u64 = std::env::args()
        .nth(1)
        .map_or(200_000, |n| n.parse().expect("ROWS: a number of rows"));
    let Message::Relation(relation) = pgoutput::decode(&relation_message()).expect("relation")
    else {
        panic!("not a relation message");
    };
    let registry = TypeRegistry::new();
    let key_columns = vec!["id".to_owned()];
    // Built up front so the loop measures the source's work, not the test data's.
    let messages: Vec<Vec<u8>> = (1..=TXN_ROWS)
        .map(|id| insert_message(relation.oid, id))
        .collect();
    let mut encoder = ChangeEncoder::new();
    let mut bytes = 0usize;
    let mut id = 1u64;
    while id <= rows {
        let tx = Transaction {
            commit_lsn: 0x1_6B37_4800 + id * 200,
            xid: 741 + id as u32,
            commit_ts_us: 848_916_000_123_456 + id as i64,
        };
        for seq in 0..TXN_ROWS.min(rows - id + 1) {
            let message = &messages[seq as usize];
            let Message::Insert { new, .. } = pgoutput::decode(message).expect("insert") else {
                panic!("not an insert");
            };
            let event = encoder
                .event(
                    "db",
                    &relation,
                    &registry,
                    KeySpec::Columns(&key_columns),
                    &tx,
                    seq as u32,
                    RowChange::Insert { new: &new },
                )
                .expect("event");
            bytes += black_box(event).payload.len();
            id += 1;
        }
    }
    println!("{rows} rows, {bytes} payload bytes");
}

/// `R`: `public.bench_rows (id int8 key, account int4, amount numeric, note text,
/// created_at timestamptz)`.
fn relation_message() -> Vec<u8> {
    let mut m = vec![b'R'];
    m.extend_from_slice(&16385u32.to_be_bytes());
    for s in ["public", "bench_rows"] {
        m.extend_from_slice(s.as_bytes());
        m.push(0);
    }
    m.push(b'd');
    let columns: [(&str, u32, bool); 5] = [
        ("id", 20, true),
        ("account", 23, false),
        ("amount", 1700, false),
        ("note", 25, false),
        ("created_at", 1184, false),
    ];
    m.extend_from_slice(&(columns.len() as u16).to_be_bytes());
    for (name, oid, key) in columns {
        m.push(u8::from(key));
        m.extend_from_slice(name.as_bytes());
        m.push(0);
        m.extend_from_slice(&oid.to_be_bytes());
        m.extend_from_slice(&(-1i32).to_be_bytes());
    }
    m
}

/// `I`: the row the benchmark's load writes for `id`.
fn insert_message(relation: u32, id: u64) -> Vec<u8> {
    let note = format!(
        "{:032x}",
        u128::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    );
    let values = [
        id.to_string(),
        (id % 1000).to_string(),
        format!("{}.{:02}", id % 100_000 / 100, id % 100),
        format!("{note}{note}"),
        "2026-12-03 12:45:01.123456+00".to_owned(),
    ];
    let mut m = vec![b'I'];
    m.extend_from_slice(&relation.to_be_bytes());
    m.push(b'N');
    m.extend_from_slice(&(values.len() as u16).to_be_bytes());
    for v in values {
        m.push(b't');
        m.extend_from_slice(&(v.len() as i32).to_be_bytes());
        m.extend_from_slice(v.as_bytes());
    }
    m
}
