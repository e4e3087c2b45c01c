//! The wire form of every answer, byte for byte as the server has always written it, and
//! what clients read back from it.

use super::*;
use serde_json::json;
use switchyard_event::Event;

fn text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

fn event() -> Event {
    Event {
        id: "01J".into(),
        source: "orders".into(),
        kind: "message".into(),
        key: Some(b"customer-7".to_vec()),
        payload: br#"{"order":42}"#.to_vec(),
        content_type: "application/json".into(),
        headers: vec![("trace".into(), "abc".into())],
        timestamp_ms: 17,
        payload_is_compact_json: false,
    }
}

#[test]
fn ingest_and_error_answers() {
    let ids = vec!["a".to_owned(), "b".to_owned()];
    let fresh = IngestAnswer {
        ids: ids.clone(),
        duplicate: false,
    };
    assert_eq!(text(&fresh), r#"{"ids":["a","b"]}"#);
    let repeat = IngestAnswer {
        ids,
        duplicate: true,
    };
    assert_eq!(text(&repeat), r#"{"ids":["a","b"],"duplicate":true}"#);
    assert_eq!(
        serde_json::from_str::<IngestAnswer>(r#"{"ids":["a","b"]}"#).unwrap(),
        fresh
    );
    assert_eq!(text(&ErrorBody { error: "no".into() }), r#"{"error":"no"}"#);
}

#[test]
fn produce_requests_and_answers() {
    let m = ProduceMessage {
        payload: Some(json!({"order": 42})),
        key: Some("customer-7".into()),
        priority: Some(5),
        delay: Some("30s".into()),
        headers: vec![("trace".into(), "abc".into()), ("eq".into(), "a=b".into())],
        idempotency_key: Some("order-42".into()),
        ..ProduceMessage::default()
    };
    assert_eq!(
        text(&m),
        r#"{"payload":{"order":42},"key":"customer-7","priority":5,"delay":"30s","headers":{"trace":"abc","eq":"a=b"},"idempotency_key":"order-42"}"#
    );
    assert_eq!(
        serde_json::from_str::<ProduceMessage>(&text(&m)).unwrap(),
        m
    );
    // A null payload is the payload `null`, not a missing one.
    let null: ProduceMessage = serde_json::from_str(r#"{"payload":null}"#).unwrap();
    assert_eq!(null.payload, Some(Value::Null));
    assert_eq!(text(&null), r#"{"payload":null}"#);
    // Requests are strict.
    let e = serde_json::from_str::<ProduceMessage>(r#"{"payload":1,"colour":"red"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `colour`"), "{e}");
    // FIELDS names every field.
    let full = ProduceMessage {
        payload: Some(json!(1)),
        payload_base64: Some("AA==".into()),
        content_type: Some("t".into()),
        not_before: Some(1),
        ..m.clone()
    };
    let keys: Vec<String> = match serde_json::to_value(&full).unwrap() {
        Value::Object(o) => o.keys().cloned().collect(),
        _ => unreachable!(),
    };
    assert_eq!(keys, ProduceMessage::FIELDS);
    let batch = ProduceRequest::Batch(ProduceBatch {
        messages: vec![ProduceMessage {
            payload: Some(json!("x")),
            ..ProduceMessage::default()
        }],
    });
    assert_eq!(text(&batch), r#"{"messages":[{"payload":"x"}]}"#);

    let answer = ProduceAnswer {
        messages: vec![
            Produced {
                id: "a".into(),
                partition: Some(0),
                offset: Some(17),
                duplicate: false,
            },
            Produced {
                id: "b".into(),
                partition: None,
                offset: None,
                duplicate: true,
            },
        ],
    };
    assert_eq!(
        text(&answer),
        r#"{"messages":[{"id":"a","partition":0,"offset":17,"duplicate":false},{"id":"b","duplicate":true}]}"#
    );
    assert_eq!(
        serde_json::from_str::<ProduceAnswer>(&text(&answer)).unwrap(),
        answer
    );
}

#[test]
fn a_received_message_is_the_wire_form_plus_its_lease() {
    let e = event();
    let out = ReceiveAnswerOut {
        messages: vec![
            ReceivedOut {
                event: EventOut::Event(e.wire()),
                receipt: "0-3-1".into(),
                partition: 0,
                offset: 3,
                priority: 2,
                deliveries: 1,
                lease_expires_ms: 99,
            },
            ReceivedOut {
                event: EventOut::Undecodable {
                    decode_error: "empty record".into(),
                },
                receipt: "1-0-2".into(),
                partition: 1,
                offset: 0,
                priority: 0,
                deliveries: 2,
                lease_expires_ms: 98,
            },
        ],
    };
    let line = text(&out);
    // The event's own wire JSON with the lease fields after it.
    let mut wire = e.to_wire_line();
    wire.pop();
    let expected = format!(
        r#"{{"messages":[{wire},"receipt":"0-3-1","partition":0,"offset":3,"priority":2,"deliveries":1,"lease_expires_ms":99}},{{"decode_error":"empty record","receipt":"1-0-2","partition":1,"offset":0,"priority":0,"deliveries":2,"lease_expires_ms":98}}]}}"#
    );
    assert_eq!(line, expected);

    let back: ReceiveAnswer = serde_json::from_str(&line).unwrap();
    let m = &back.messages[0];
    assert_eq!(
        (m.id.as_str(), m.key.as_deref(), m.receipt.as_str()),
        ("01J", Some("customer-7"), "0-3-1")
    );
    assert_eq!(m.payload, Some(json!({"order": 42})));
    assert_eq!(m.headers, vec![("trace".to_owned(), "abc".to_owned())]);
    assert_eq!(
        back.messages[1].decode_error.as_deref(),
        Some("empty record")
    );

    // A client may read the payloads as its own type.
    #[derive(Deserialize, Debug, PartialEq)]
    struct Order {
        order: u32,
    }
    let typed: ReceiveAnswer<Order> = serde_json::from_str(&text(&ReceiveAnswerOut {
        messages: vec![out.messages.into_iter().next().unwrap()],
    }))
    .unwrap();
    assert_eq!(typed.messages[0].payload, Some(Order { order: 42 }));
}

#[test]
fn settle_requests_and_answers() {
    let nack = SettleRequest {
        receipts: vec!["r1".into(), "r2".into()],
        delay: Some("10s".into()),
        by: None,
    };
    assert_eq!(text(&nack), r#"{"receipts":["r1","r2"],"delay":"10s"}"#);
    assert_eq!(
        text(&AckAnswer {
            acked: 2,
            stale: vec!["r3".into()]
        }),
        r#"{"acked":2,"stale":["r3"]}"#
    );
    assert_eq!(
        text(&ExtendAnswer {
            extended: 0,
            lease_expires_ms: None,
            stale: vec![]
        }),
        r#"{"extended":0,"lease_expires_ms":null,"stale":[]}"#
    );
    assert_eq!(
        text(&GroupDeleted {
            queue: "q".into(),
            group: "g".into(),
            deleted: true
        }),
        r#"{"queue":"q","group":"g","deleted":true}"#
    );
    assert_eq!(
        text(&ReceiveRequest {
            max: Some(10),
            wait: Some("5s".into()),
            ack_timeout: None
        }),
        r#"{"max":10,"wait":"5s"}"#
    );
}

#[test]
fn stats_read_back_as_written() {
    // The example of docs/queues.md.
    let doc = r#"{"queue":"orders","partitions":4,"messages":1200,"bytes":1310720,"max_bytes":1073741824,"oldest_age_ms":5300,"groups":{"workers":{"mode":"work","depth":180,"in_flight":16,"delayed":2,"oldest_age_ms":5300,"dead_lettered":1,"memory_bytes":190000},"fanout":{"mode":"pubsub","depth":0}},"work_groups":1,"max_groups":64,"work_memory_bytes":190000,"max_work_memory":268435456,"dead_letter":{"queue":"orders-dlq","messages":1}}"#;
    let stats: QueueStats = serde_json::from_str(doc).unwrap();
    assert_eq!(text(&stats), doc);
    assert!(stats.groups[0].1.is_work());
    assert!(!stats.groups[1].1.is_work());
    let idle = r#"{"mode":"work","depth":0,"in_flight":0,"delayed":0,"oldest_age_ms":null,"dead_lettered":0,"memory_bytes":0}"#;
    let g: GroupStats = serde_json::from_str(idle).unwrap();
    assert_eq!(text(&g), idle);
    // An older or newer server's answer still reads.
    let sparse: QueueStats =
        serde_json::from_str(r#"{"queue":"q","groups":{},"future_field":1}"#).unwrap();
    assert_eq!(sparse.queue, "q");
    assert_eq!(sparse.dead_letter, None);
}

#[test]
fn admin_answers() {
    let mut e = event();
    e.content_type = "application/octet-stream".into();
    let out = DeadLettersOut {
        queue: "dlq",
        dead_letters: vec![RecordOut {
            partition: 0,
            offset: 5,
            event: EventOut::Event(e.wire()),
        }],
    };
    let line = text(&out);
    assert_eq!(
        line,
        format!(
            r#"{{"queue":"dlq","dead_letters":[{{"partition":0,"offset":5,"event":{}}}]}}"#,
            e.to_wire_line()
        )
    );
    let back: DeadLetters = serde_json::from_str(&line).unwrap();
    let view = &back.dead_letters[0].event;
    assert_eq!(view.header("trace"), Some("abc"));
    assert_eq!(view.payload_encoding.as_deref(), Some("base64"));
    // Written back, the view is the wire form again.
    assert_eq!(text(view), e.to_wire_line());

    assert_eq!(
        text(&ReplayAnswer {
            queue: "dlq".into(),
            replayed: 2,
            skipped: 1
        }),
        r#"{"queue":"dlq","replayed":2,"skipped":1}"#
    );
    assert_eq!(
        text(&PurgeAnswer {
            queue: "dlq".into(),
            purged: 3
        }),
        r#"{"queue":"dlq","purged":3}"#
    );
    assert_eq!(
        text(&SnapshotStarted {
            source: "pg".into(),
            table: "public.t".into(),
            snapshot: "started".into()
        }),
        r#"{"source":"pg","table":"public.t","snapshot":"started"}"#
    );
    let status = SourceStatus {
        source: "pg".into(),
        status: CdcStatus {
            slot: "s".into(),
            snapshot: vec![(
                "public.t".into(),
                SnapshotProgress {
                    state: "running".into(),
                    rows_emitted: 2,
                    rows_acknowledged: 2,
                    rows_estimate: Some(10),
                    rows_per_second: Some(1),
                    eta_seconds: Some(8),
                    filter: Some("id > 1".into()),
                    error: None,
                },
            )],
            ..CdcStatus::default()
        },
    };
    assert_eq!(
        text(&status),
        r#"{"source":"pg","status":{"slot":"s","role":"","lock_key":0,"connected":false,"confirmed_lsn":"","slot_lag_bytes":0,"events":0,"streaming_transactions":0,"streaming_buffered_bytes":0,"spilled_bytes":0,"last_error":null,"stopped":false,"reconnects":0,"snapshot":{"public.t":{"state":"running","rows_emitted":2,"rows_acknowledged":2,"rows_estimate":10,"rows_per_second":1,"eta_seconds":8,"filter":"id > 1"}}}}"#
    );
    // Older clients send only the table; `where` is the JSON name of the filter.
    let request: SnapshotRequest = serde_json::from_str(r#"{"table":"t"}"#).unwrap();
    assert_eq!((request.action, request.filter), (None, None));
    let request: SnapshotRequest =
        serde_json::from_str(r#"{"table":"t","where":"id > 1"}"#).unwrap();
    assert_eq!(request.filter.as_deref(), Some("id > 1"));
    assert_eq!(text(&request), r#"{"table":"t","where":"id > 1"}"#);
    assert!(serde_json::from_str::<ReplayRequest>(r#"{"sinks":"x"}"#).is_err());
}
