//! Debezium's change event format: Postgres change events as Debezium's PostgreSQL
//! connector writes them, read with Kafka Connect's JSON converter without schemas
//! (`value.converter.schemas.enable=false`).
//!
//! ```json
//! {"before":null,"after":{"id":7,"status":"paid"},
//!  "source":{"version":"switchyard-0.1.0","connector":"postgresql","name":"db",
//!            "ts_ms":1795600800000,"snapshot":"false","db":"app","sequence":null,
//!            "ts_us":1795600800000000,"ts_ns":1795600800000000000,"schema":"public",
//!            "table":"orders","txId":741,"lsn":23803720,"xmin":null},
//!  "transaction":null,"op":"c","ts_ms":1795600800123,"ts_us":1795600800123456,
//!  "ts_ns":1795600800123456000}
//! ```
//!
//! The input is the change record a `postgres_cdc` source writes as an event's payload
//! (`docs/design.md`, "Event model"); the mapping and what differs from Debezium are in
//! `docs/decisions/0022-debezium-envelope.md`:
//!
//! * `op`: `insert` → `c`, `update` → `u`, `delete` → `d`, `read` (a snapshot row) → `r`,
//!   `truncate` → `t` (with `before` and `after` null). A `schema` event has no Debezium
//!   form: [`Body::Skip`]. Any other event — HTTP, queue and Kafka `message`s, or a
//!   change-kind event whose payload is not a change record of that kind (a transform
//!   rewrote it) — is [`Body::Native`].
//! * `before` and `after` are the record's, byte for byte (values keep switchyard's JSON
//!   forms of Postgres types); a column whose unchanged TOAST value Postgres did not send
//!   is `"__debezium_unavailable_value"` in `after`, as with Debezium's default
//!   placeholder.
//! * `source`: `name` is the source's name, `ts_ms`/`ts_us`/`ts_ns` the commit time (the
//!   read time for a snapshot row), `snapshot` `"incremental"` for snapshot rows (they
//!   interleave with streamed changes, as Debezium's incremental snapshots do) and
//!   `"false"` otherwise, `db` the database of the source's `dsn`, `txId` the transaction
//!   id (null for snapshot rows), `lsn` the commit LSN as a number (the snapshot's
//!   watermark for snapshot rows), `version` [`VERSION`]; `sequence` and `xmin` are null.
//! * the envelope's `ts_ms`/`ts_us`/`ts_ns` are the time the sink processed the event.
//! * a delete with a key asks for a tombstone after it (`Written { tombstone: true }`).
//!
//! The message key is not written here: it is the event key as it is, the key columns as
//! a JSON object (`{"id":7}`), which is Debezium's key form already.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::Body;
use crate::Event;

/// `source.version`: which switchyard wrote the event (there is no Debezium version to
/// name).
pub const VERSION: &str = concat!("switchyard-", env!("CARGO_PKG_VERSION"));

/// `source.connector`.
pub const CONNECTOR: &str = "postgresql";

/// The value of a column Postgres did not send (an unchanged TOAST value): Debezium's
/// default `unavailable.value.placeholder`.
pub const UNAVAILABLE_VALUE: &str = "__debezium_unavailable_value";

/// `source.snapshot` of a snapshot row.
pub const SNAPSHOT_READ: &str = "incremental";

/// What an event's Debezium form needs besides the event.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The database the event's source reads (`source.db`); `None` writes `null`.
    pub database: Option<&'a str>,
    /// When the sink processes the event, in microseconds since the Unix epoch: the
    /// envelope's `ts_ms`, `ts_us` and `ts_ns`.
    pub now_us: u64,
}

/// The fields of a change record this format reads; the others (`key`, `cascade`, …) are
/// skipped. Strings are borrowed unless they hold escapes, rows are borrowed as raw JSON.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(borrow)]
    schema: Cow<'a, str>,
    #[serde(borrow)]
    table: Cow<'a, str>,
    #[serde(borrow, default)]
    lsn: Option<Cow<'a, str>>,
    #[serde(default)]
    xid: Option<u64>,
    #[serde(borrow, default)]
    commit_ts: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    before: Option<&'a RawValue>,
    #[serde(borrow, default)]
    after: Option<&'a RawValue>,
    #[serde(borrow, default)]
    unchanged_toast: Vec<Cow<'a, str>>,
}

/// Appends the Debezium form of `event` to `out` (see the module docs), or says why not.
/// Nothing is appended unless the answer is [`Body::Written`].
pub fn write(event: &Event, cx: &Context<'_>, out: &mut Vec<u8>) -> Body {
    let op = match event.kind.as_str() {
        "insert" => "c",
        "update" => "u",
        "delete" => "d",
        "read" => "r",
        "truncate" => "t",
        "schema" => "",
        _ => return Body::Native,
    };
    let Ok(record) = serde_json::from_slice::<Record<'_>>(&event.payload) else {
        return Body::Native;
    };
    if record.op != event.kind {
        return Body::Native;
    }
    if op.is_empty() {
        return Body::Skip;
    }
    let (before, after) = match op {
        "t" => (None, None),
        _ => (record.before, record.after),
    };

    out.extend_from_slice(br#"{"before":"#);
    write_row(out, before, &[]);
    out.extend_from_slice(br#","after":"#);
    write_row(out, after, &record.unchanged_toast);

    let commit_us = record
        .commit_ts
        .as_deref()
        .and_then(rfc3339_micros)
        .unwrap_or_else(|| i64::try_from(event.timestamp_ms.saturating_mul(1000)).unwrap_or(0));
    out.extend_from_slice(br#","source":{"version":"#);
    write_str(out, VERSION);
    out.extend_from_slice(br#","connector":"#);
    write_str(out, CONNECTOR);
    out.extend_from_slice(br#","name":"#);
    write_str(out, &event.source);
    out.extend_from_slice(br#","ts_ms":"#);
    write_number(out, commit_us.div_euclid(1000));
    out.extend_from_slice(br#","snapshot":"#);
    write_str(out, if op == "r" { SNAPSHOT_READ } else { "false" });
    out.extend_from_slice(br#","db":"#);
    match cx.database {
        Some(db) => write_str(out, db),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(br#","sequence":null,"ts_us":"#);
    write_number(out, commit_us);
    out.extend_from_slice(br#","ts_ns":"#);
    write_number(out, i128::from(commit_us) * 1000);
    out.extend_from_slice(br#","schema":"#);
    write_str(out, &record.schema);
    out.extend_from_slice(br#","table":"#);
    write_str(out, &record.table);
    out.extend_from_slice(br#","txId":"#);
    match record.xid {
        Some(xid) => write_number(out, xid),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(br#","lsn":"#);
    match record.lsn.as_deref().and_then(parse_lsn) {
        Some(lsn) => write_number(out, lsn),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(br#","xmin":null},"transaction":null,"op":""#);
    out.extend_from_slice(op.as_bytes());
    out.extend_from_slice(br#"","ts_ms":"#);
    write_number(out, cx.now_us / 1000);
    out.extend_from_slice(br#","ts_us":"#);
    write_number(out, cx.now_us);
    out.extend_from_slice(br#","ts_ns":"#);
    write_number(out, u128::from(cx.now_us) * 1000);
    out.push(b'}');
    Body::Written {
        tombstone: op == "d" && event.key.is_some(),
    }
}

/// Writes a row (`null` when absent) as the record had it, on one line; columns named in
/// `unavailable` are added with [`UNAVAILABLE_VALUE`].
fn write_row(out: &mut Vec<u8>, row: Option<&RawValue>, unavailable: &[Cow<'_, str>]) {
    let Some(row) = row else {
        out.extend_from_slice(b"null");
        return;
    };
    let text = row.get();
    let object = text.strip_suffix('}').filter(|_| text.starts_with('{'));
    let Some(open) = object.filter(|_| !unavailable.is_empty()) else {
        write_one_line(out, text);
        return;
    };
    // `{…` without its `}`: the members Postgres sent, then the ones it did not.
    write_one_line(out, open);
    let mut empty = open.trim_end() == "{";
    for column in unavailable {
        if !empty {
            out.push(b',');
        }
        empty = false;
        write_str(out, column);
        out.push(b':');
        write_str(out, UNAVAILABLE_VALUE);
    }
    out.push(b'}');
}

/// Copies checked JSON, its line breaks (whitespace between tokens: a string holds none
/// raw) made spaces, so a line-oriented sink's line stays one line.
fn write_one_line(out: &mut Vec<u8>, json: &str) {
    let start = out.len();
    out.extend_from_slice(json.as_bytes());
    if memchr::memchr2(b'\n', b'\r', json.as_bytes()).is_some() {
        for byte in &mut out[start..] {
            if matches!(*byte, b'\n' | b'\r') {
                *byte = b' ';
            }
        }
    }
}

fn write_str(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(&mut *out, text).expect("writing to memory");
}

fn write_number(out: &mut Vec<u8>, n: impl serde::Serialize) {
    serde_json::to_writer(&mut *out, &n).expect("writing to memory");
}

/// An LSN in Postgres notation (`16/B374D848`) as a number.
fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    let half = |s: &str| {
        (!s.is_empty() && s.len() <= 8)
            .then(|| u32::from_str_radix(s, 16).ok())
            .flatten()
    };
    Some(u64::from(half(high)?) << 32 | u64::from(half(low)?))
}

/// Microseconds since the Unix epoch of a UTC time as change records write it:
/// `2026-11-25T10:00:00Z` or `2026-11-25T10:00:00.123456Z` (up to six fraction digits).
fn rfc3339_micros(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b.last() != Some(&b'Z')
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let fraction = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', rest @ ..] if (1..=6).contains(&rest.len()) => {
            digits(20..20 + rest.len())? * 10i64.pow(6 - rest.len() as u32)
        }
        _ => return None,
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(seconds * 1_000_000 + fraction)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-25T10:00:00.123456Z, the sink's clock in these tests.
    const NOW_US: u64 = 1_795_600_800_123_456;

    fn cx() -> Context<'static> {
        Context {
            database: Some("app"),
            now_us: NOW_US,
        }
    }

    /// A change event as the `postgres_cdc` source makes it: kind, key and record.
    fn change(kind: &str, key: Option<&str>, record: &str) -> Event {
        Event {
            id: "0/16B3748/0".into(),
            source: "db".into(),
            kind: kind.into(),
            key: key.map(|k| k.as_bytes().to_vec()),
            payload: record.as_bytes().to_vec(),
            content_type: "application/json".into(),
            headers: vec![
                ("pg-table".into(), "public.orders".into()),
                ("pg-lsn".into(), "0/16B3748".into()),
            ],
            timestamp_ms: 1_795_600_800_000,
            payload_is_compact_json: true,
        }
    }

    fn written(event: &Event) -> (String, Body) {
        let mut out = b"earlier lines\n".to_vec();
        let body = write(event, &cx(), &mut out);
        let text = String::from_utf8(out).expect("UTF-8");
        let line = text.strip_prefix("earlier lines\n").expect("appended");
        if body != Body::Native && body != Body::Skip {
            let value: serde_json::Value = serde_json::from_str(line).expect("one JSON value");
            assert!(value.is_object() && !line.contains('\n'), "{line}");
        } else {
            assert!(line.is_empty(), "nothing appended: {line}");
        }
        (versionless(line), body)
    }

    /// The `source` block of a streamed change committed at 2026-11-25T10:00:00Z in
    /// transaction 741 at `0/16B3748`.
    const SOURCE: &str = r#""source":{"version":"<version>","connector":"postgresql","name":"db","ts_ms":1795600800000,"snapshot":"false","db":"app","sequence":null,"ts_us":1795600800000000,"ts_ns":1795600800000000000,"schema":"public","table":"orders","txId":741,"lsn":23803720,"xmin":null}"#;
    /// The envelope's fields after `source`, at [`NOW_US`].
    const TAIL: &str =
        r#""ts_ms":1795600800123,"ts_us":1795600800123456,"ts_ns":1795600800123456000}"#;

    /// `line` with [`VERSION`] written `<version>`, so the expected JSON here holds for
    /// every release.
    fn versionless(line: &str) -> String {
        line.replace(&format!("\"{VERSION}\""), "\"<version>\"")
    }

    #[test]
    fn the_version_is_switchyards() {
        assert_eq!(VERSION, format!("switchyard-{}", env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn an_insert_is_a_create() {
        let event = change(
            "insert",
            Some(r#"{"id":7}"#),
            r#"{"op":"insert","schema":"public","table":"orders","lsn":"0/16B3748","xid":741,"commit_ts":"2026-11-25T10:00:00Z","key":{"id":7},"before":null,"after":{"id":7,"status":"paid","body":null,"total":"10.50"}}"#,
        );
        let (line, body) = written(&event);
        assert_eq!(body, Body::Written { tombstone: false });
        assert_eq!(
            line,
            format!(
                r#"{{"before":null,"after":{{"id":7,"status":"paid","body":null,"total":"10.50"}},{SOURCE},"transaction":null,"op":"c",{TAIL}"#
            )
        );
    }

    #[test]
    fn an_update_keeps_before_as_postgres_sent_it() {
        let without_old_row = change(
            "update",
            Some(r#"{"id":7}"#),
            r#"{"op":"update","schema":"public","table":"orders","lsn":"0/16B3748","xid":741,"commit_ts":"2026-11-25T10:00:00Z","key":{"id":7},"before":null,"after":{"id":7,"status":"shipped"}}"#,
        );
        let (line, body) = written(&without_old_row);
        assert_eq!(body, Body::Written { tombstone: false });
        assert_eq!(
            line,
            format!(
                r#"{{"before":null,"after":{{"id":7,"status":"shipped"}},{SOURCE},"transaction":null,"op":"u",{TAIL}"#
            )
        );
        let full = change(
            "update",
            Some(r#"{"id":7}"#),
            r#"{"op":"update","schema":"public","table":"orders","lsn":"0/16B3748","xid":741,"commit_ts":"2026-11-25T10:00:00Z","key":{"id":7},"before":{"id":7,"status":"paid"},"after":{"id":7,"status":"shipped"}}"#,
        );
        let (line, _) = written(&full);
        assert_eq!(
            line,
            format!(
                r#"{{"before":{{"id":7,"status":"paid"}},"after":{{"id":7,"status":"shipped"}},{SOURCE},"transaction":null,"op":"u",{TAIL}"#
            )
        );
    }

    #[test]
    fn a_delete_has_the_old_key_in_before_and_asks_for_a_tombstone() {
        let event = change(
            "delete",
            Some(r#"{"id":7}"#),
            r#"{"op":"delete","schema":"public","table":"orders","lsn":"0/16B3748","xid":741,"commit_ts":"2026-11-25T10:00:00Z","key":{"id":7},"before":{"id":7},"after":null}"#,
        );
        let (line, body) = written(&event);
        assert_eq!(body, Body::Written { tombstone: true });
        assert_eq!(
            line,
            format!(
                r#"{{"before":{{"id":7}},"after":null,{SOURCE},"transaction":null,"op":"d",{TAIL}"#
            )
        );
        // Without a key (a table without one) there is nothing to compact away.
        let keyless = Event { key: None, ..event };
        assert_eq!(written(&keyless).1, Body::Written { tombstone: false });
    }

    #[test]
    fn a_snapshot_row_is_a_read_with_its_read_time_and_no_transaction() {
        let event = change(
            "read",
            Some(r#"{"id":7}"#),
            r#"{"op":"read","schema":"public","table":"orders","lsn":"1/A0","xid":null,"commit_ts":"2026-11-25T09:59:59.5Z","key":{"id":7},"before":null,"after":{"id":7,"status":"paid"}}"#,
        );
        let (line, body) = written(&event);
        assert_eq!(body, Body::Written { tombstone: false });
        assert_eq!(
            line,
            format!(
                r#"{{"before":null,"after":{{"id":7,"status":"paid"}},"source":{{"version":"<version>","connector":"postgresql","name":"db","ts_ms":1795600799500,"snapshot":"incremental","db":"app","sequence":null,"ts_us":1795600799500000,"ts_ns":1795600799500000000,"schema":"public","table":"orders","txId":null,"lsn":4294967456,"xmin":null}},"transaction":null,"op":"r",{TAIL}"#
            )
        );
    }

    #[test]
    fn a_truncate_has_neither_row() {
        let event = change(
            "truncate",
            None,
            r#"{"op":"truncate","schema":"public","table":"orders","lsn":"0/16B3748","xid":741,"commit_ts":"2026-11-25T10:00:00Z","cascade":false,"restart_identity":true}"#,
        );
        let (line, body) = written(&event);
        assert_eq!(body, Body::Written { tombstone: false });
        assert_eq!(
            line,
            format!(r#"{{"before":null,"after":null,{SOURCE},"transaction":null,"op":"t",{TAIL}"#)
        );
    }

    #[test]
    fn a_schema_event_has_no_form_and_messages_stay_as_they_are() {
        let schema = change(
            "schema",
            None,
            r#"{"op":"schema","schema":"public","table":"orders","lsn":"0/16B3748","columns":[{"name":"id","type_oid":23,"type":"int4","key":true}],"replica_identity":"default"}"#,
        );
        assert_eq!(written(&schema), (String::new(), Body::Skip));

        let message = Event {
            kind: crate::KIND_MESSAGE.into(),
            ..change("insert", Some("customer-7"), r#"{"op":"insert","n":1}"#)
        };
        assert_eq!(written(&message), (String::new(), Body::Native));
        // A change kind whose payload a transform replaced: not a record of that kind.
        for payload in [
            r#"{"order":1}"#,
            r#"{"op":"update","schema":"public","table":"orders","before":null,"after":{}}"#,
            "not json",
            r#"{"op":"insert","schema":"public","table":7}"#,
        ] {
            let rewritten = change("insert", None, payload);
            assert_eq!(
                written(&rewritten),
                (String::new(), Body::Native),
                "{payload}"
            );
        }
    }

    #[test]
    fn unchanged_toast_columns_get_debeziums_placeholder() {
        let event = change(
            "update",
            Some(r#"{"id":1}"#),
            r#"{"op":"update","schema":"public","table":"orders","lsn":"0/16B3748","xid":741,"commit_ts":"2026-11-25T10:00:00Z","key":{"id":1},"before":null,"after":{"id":1,"n":1},"unchanged_toast":["body","notes"]}"#,
        );
        let (line, _) = written(&event);
        assert_eq!(
            line,
            format!(
                r#"{{"before":null,"after":{{"id":1,"n":1,"body":"__debezium_unavailable_value","notes":"__debezium_unavailable_value"}},{SOURCE},"transaction":null,"op":"u",{TAIL}"#
            )
        );
        // Every column unchanged but none sent: the object holds only the placeholders.
        let mut out = Vec::new();
        write_row(
            &mut out,
            Some(&RawValue::from_string("{ }".into()).unwrap()),
            &[Cow::Borrowed("body")],
        );
        assert_eq!(out, br#"{ "body":"__debezium_unavailable_value"}"#);
    }

    #[test]
    fn names_and_values_are_escaped_and_kept_on_one_line() {
        let event = Event {
            source: "db \"main\"".into(),
            ..change(
                "insert",
                Some(r#"{"id":1}"#),
                "{\"op\":\"insert\",\"schema\":\"s\\u00e9\",\"table\":\"t\\\"q\",\n\"lsn\":\"0/1\",\"xid\":1,\"commit_ts\":\"1970-01-01T00:00:00.000001Z\",\"before\":null,\r\n\"after\":{\"a\":\r\n\"x\\ny\"}}",
            )
        };
        let no_db = Context {
            database: None,
            now_us: 0,
        };
        let mut out = Vec::new();
        assert_eq!(
            write(&event, &no_db, &mut out),
            Body::Written { tombstone: false }
        );
        let line = versionless(&String::from_utf8(out).unwrap());
        assert_eq!(
            line,
            r#"{"before":null,"after":{"a":  "x\ny"},"source":{"version":"<version>","connector":"postgresql","name":"db \"main\"","ts_ms":0,"snapshot":"false","db":null,"sequence":null,"ts_us":1,"ts_ns":1000,"schema":"sé","table":"t\"q","txId":1,"lsn":1,"xmin":null},"transaction":null,"op":"c","ts_ms":0,"ts_us":0,"ts_ns":0}"#
        );
    }

    #[test]
    fn commit_times_are_read_to_the_microsecond() {
        for (text, micros) in [
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2026-11-25T10:00:00Z", Some(1_795_600_800_000_000)),
            ("2026-11-25T10:00:00.5Z", Some(1_795_600_800_500_000)),
            ("2024-02-29T23:59:59.999999Z", Some(1_709_251_199_999_999)),
            ("1969-12-31T23:59:59Z", Some(-1_000_000)),
            ("2026-11-25T10:00:00", None),
            ("2026-11-25T10:00:00.1234567Z", None),
            ("2026-13-25T10:00:00Z", None),
            ("20261125T100000Z", None),
        ] {
            assert_eq!(rfc3339_micros(text), micros, "{text}");
        }
        // A record without a readable commit time takes the event's time.
        let event = change(
            "insert",
            None,
            r#"{"op":"insert","schema":"public","table":"orders","lsn":"0/16B3748","xid":741,"commit_ts":"soon","before":null,"after":{}}"#,
        );
        let (line, _) = written(&event);
        assert!(line.contains(r#""ts_us":1795600800000000,"#), "{line}");
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("0/"), None);
        assert_eq!(parse_lsn("x/1"), None);
    }
}
