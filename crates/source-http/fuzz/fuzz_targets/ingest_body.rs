//! The ingest body parser on arbitrary bytes, under an arbitrary content type and
//! idempotency key: it must never panic, and it must make exactly the events it counted.
#![no_main]

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

const TYPES: &[&str] = &[
    "application/json",
    "application/x-ndjson",
    "application/jsonl; charset=utf-8",
    "application/json-seq",
    "text/plain",
    "application/vnd.api+json",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static(TYPES[selector as usize % TYPES.len()]),
    );
    let key = (selector & 0x80 != 0).then_some("fuzz-key");
    let body = Bytes::copy_from_slice(rest);
    let counted = switchyard_source_http::count_events(&headers, &body).expect("valid header");
    if let Ok(events) = switchyard_source_http::parse_events("api", &headers, &body, key) {
        assert_eq!(events.len(), counted, "count_events disagrees with parse_events");
        for event in &events {
            assert!(!event.id.is_empty());
        }
    }
});
