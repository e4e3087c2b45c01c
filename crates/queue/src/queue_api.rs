//! The queue API (`docs/queues.md`, `docs/openapi.yaml`): produce, receive, ack, nack,
//! extend, stats and deleting work groups, behind the admin bearer token; the task that
//! moves messages out of work groups into their dead-letter queue, and the one that deletes
//! idle work groups.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use base64::Engine as _;
use http::{HeaderMap, StatusCode};
use std::borrow::Cow;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use switchyard_api::{
    AckAnswer, DeadLetterStats, ExtendAnswer, GroupDeleted, GroupStats, NackAnswer, ProduceAnswer,
    ProduceBatch, ProduceMessage, Produced as ProducedAnswer, QueueList, QueueStats,
    ReceiveAnswerOut, ReceiveRequest, ReceivedOut, SettleRequest,
};
use switchyard_config::SourceConfig;
use switchyard_event::{Event, KIND_MESSAGE};
use switchyard_source_http::{Admin, ApiError, IDEMPOTENCY_HEADER, IntakeError};
use switchyard_store::{LogError, Receipt, WorkGroup};
use tracing::{info, warn};

use crate::Broker as Shared;
use crate::dlq_headers;
use crate::find_queue;
use crate::produce::{Produced, Submission};
use crate::queues::{GroupError, NOT_BEFORE_HEADER, PRIORITY_HEADER, QueueHandle, now_ms};

/// Largest produce body.
pub const MAX_BODY: usize = 16 << 20;
/// Most messages per produce, receive or ack call.
pub const MAX_BATCH: usize = 1000;
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Longest delay (produce `delay`/`not_before`, nack `delay`) and lease (receive
/// `ack_timeout`, extend `by`): state kept for longer than a week is a mistake or an attack.
const MAX_DELAY: Duration = switchyard_config::MAX_QUEUE_DELAY;
/// How often idle work groups are looked for.
const EXPIRY_EVERY: Duration = Duration::from_secs(1);

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/queues", get(list))
        .route("/queues/{queue}/stats", get(stats))
        .route("/queues/{queue}/messages", post(produce))
        .route("/queues/{queue}/groups/{group}/receive", post(receive))
        .route("/queues/{queue}/groups/{group}/ack", post(ack))
        .route("/queues/{queue}/groups/{group}/nack", post(nack))
        .route("/queues/{queue}/groups/{group}/extend", post(extend))
        .route("/queues/{queue}/groups/{group}", delete(delete_group))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

/// Checks a body as JSON, keeping its values as sent ([`RawObject`] takes it apart).
fn raw_object_body(body: &Bytes) -> Result<&RawValue, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad("the body is empty; send a JSON object"));
    }
    let body: &RawValue = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the body is not valid JSON: {e}")))?;
    if body.get().starts_with('{') {
        Ok(body)
    } else {
        Err(bad("the body must be a JSON object"))
    }
}

/// Parses a JSON object body; an empty body is `{}` when `empty_ok`.
fn object_body(body: &Bytes, empty_ok: bool) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return if empty_ok {
            Ok(Map::new())
        } else {
            Err(bad("the body is empty; send a JSON object"))
        };
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("the body must be a JSON object")),
        Err(e) => Err(bad(format!("the body is not valid JSON: {e}"))),
    }
}

fn check_keys(obj: &Map<String, Value>, at: &str, known: &[&str]) -> Result<(), ApiError> {
    check_names(obj.keys().map(String::as_str), at, known)
}

fn check_names<'k>(
    mut names: impl Iterator<Item = &'k str>,
    at: &str,
    known: &[&str],
) -> Result<(), ApiError> {
    match names.find(|k| !known.contains(k)) {
        Some(k) => Err(bad(format!(
            "unknown field `{k}`{at}; expected: {}",
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

fn duration_field(
    obj: &Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<Duration>, ApiError> {
    duration_value(obj.get(key), key, at)
}

fn duration_value(
    value: Option<&Value>,
    key: &str,
    at: &str,
) -> Result<Option<Duration>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => switchyard_config::units::parse_duration(s)
            .map(Some)
            .map_err(|e| bad(format!("`{key}`{at}: {e}"))),
        Some(_) => Err(bad(format!(
            "`{key}`{at} must be a duration string such as \"5s\" or \"200ms\""
        ))),
    }
}

/// Refuses a delay or lease longer than [`MAX_DELAY`].
fn at_most_max_delay(key: &str, at: &str, d: Duration) -> Result<Duration, ApiError> {
    if d > MAX_DELAY {
        return Err(bad(format!(
            "`{key}`{at} may be at most 7d ({}s), got {}s",
            MAX_DELAY.as_secs(),
            d.as_secs()
        )));
    }
    Ok(d)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Checks a group name: it becomes a directory name.
fn check_group(group: &str) -> Result<(), ApiError> {
    let ok = !group.is_empty()
        && group.len() <= 100
        && !group.starts_with('.')
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "`{group}` is not a valid group name: use 1–100 letters, digits, `-`, `_` or `.`, not starting with `.`"
        )))
    }
}

/// The answer for a work group that cannot be had.
fn group_error(e: GroupError) -> ApiError {
    match e {
        GroupError::TooMany { .. } => ApiError::conflict(e.to_string()),
        GroupError::NotFound { .. } | GroupError::Log(LogError::GroupDeleted { .. }) => {
            ApiError::not_found(e.to_string())
        }
        GroupError::Log(_) => ApiError::internal(e.to_string()),
    }
}

/// The queue, after checking the group name and refusing the group of a pipeline.
fn work_queue(
    shared: &Shared,
    queue_name: &str,
    group: &str,
) -> Result<Arc<QueueHandle>, ApiError> {
    let queue = find_queue(shared, queue_name)?;
    check_group(group)?;
    let pipeline_group = shared.config.sources.iter().find_map(|(name, s)| match s {
        SourceConfig::Queue(q) if q.queue == queue_name && q.group == group => Some(name),
        _ => None,
    });
    if let Some(source) = pipeline_group
        .or_else(|| (group == crate::REPLAY_GROUP).then_some(&shared.config.server.dead_letter))
    {
        return Err(ApiError::conflict(format!(
            "group `{group}` of queue `{queue_name}` is a pub/sub group (used by `{source}`); receive with another group name"
        )));
    }
    Ok(queue)
}

/// The queue and its work group `group`: created on first use by a receive (`create`), an
/// existing one for ack, nack and extend (a receipt cannot belong to a group that does
/// not exist, and those calls must not create groups).
async fn work_group(
    shared: &Shared,
    queue_name: &str,
    group: &str,
    create: bool,
) -> Result<(Arc<QueueHandle>, Arc<WorkGroup>), ApiError> {
    let queue = work_queue(shared, queue_name, group)?;
    // A group in use is in the queue's map: found without a hop to a blocking thread
    // (every receive and ack asks for its group). The map's lock is held while a group
    // opens or is deleted, which does IO: then the lookup waits on a blocking thread,
    // never on a runtime worker.
    if let Some(g) = queue.try_existing_work_group(group) {
        return Ok((queue, g));
    }
    let q = queue.clone();
    let name = group.to_owned();
    match tokio::task::spawn_blocking(move || {
        if create {
            q.work_group(&name)
        } else {
            q.existing_work_group(&name)
        }
    })
    .await
    .expect("work group task")
    {
        Ok(g) => Ok((queue, g)),
        Err(e) => Err(group_error(e)),
    }
}

/// A JSON object of a produce body, its values left as the text they were sent as: a
/// payload is stored as sent (checked, never rebuilt), and the small fields are parsed
/// one by one. A field sent twice counts with its last value, as with a parsed object.
struct RawObject<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> RawObject<'a> {
    fn raw(&self, name: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }

    /// The field as a parsed value (for the small fields). The text is JSON (the body
    /// was checked); parsing it can still fail on nesting deeper than serde_json's limit.
    fn get(&self, name: &str, at: &str) -> Result<Option<Value>, ApiError> {
        self.raw(name)
            .map(|v| serde_json::from_str(v.get()))
            .transpose()
            .map_err(|e| bad(format!("`{name}`{at}: {e}")))
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_ref())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Fields<'a> {
            type Value = RawObject<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut fields = Vec::new();
                while let Some(Name(name)) = map.next_key()? {
                    fields.push((name, map.next_value()?));
                }
                Ok(RawObject(fields))
            }
        }
        d.deserialize_map(Fields(PhantomData))
    }
}

/// A produce body taken apart in one pass: its fields as text, except `messages`, whose
/// elements are taken apart as they are read ([`Item`]s; the last `messages` when sent
/// twice, as [`RawObject::raw`] takes). A body that does not parse this way is taken
/// apart again field by field, which finds the answer to give.
struct Body<'a> {
    fields: RawObject<'a>,
    messages: Option<Vec<Item<'a>>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Body<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Fields<'a> {
            type Value = Body<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut fields = Vec::new();
                let mut messages = None;
                while let Some(Name(name)) = map.next_key()? {
                    if name == "messages" {
                        messages = Some(map.next_value()?);
                    } else {
                        fields.push((name, map.next_value()?));
                    }
                }
                Ok(Body {
                    fields: RawObject(fields),
                    messages,
                })
            }
        }
        d.deserialize_map(Fields(PhantomData))
    }
}

/// An element of a batch's `messages`: an object with its fields left as text
/// ([`RawObject`]), or any other JSON value (refused with its position).
enum Item<'a> {
    Object(RawObject<'a>),
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Item<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AnyValue<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for AnyValue<'a> {
            type Value = Item<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut fields = Vec::new();
                while let Some(Name(name)) = map.next_key()? {
                    fields.push((name, map.next_value()?));
                }
                Ok(Item::Object(RawObject(fields)))
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Item::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Item::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Item::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Item::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Item::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Item::Other)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Item::Other)
            }
        }
        d.deserialize_any(AnyValue(PhantomData))
    }
}

/// JSON checked as strictly as reading it into a `serde_json::Value` would check it
/// (nesting depth, numbers in range, escapes that decode), without building anything:
/// the raw parse of a body skips over values more leniently, and a payload that
/// receivers cannot read back must be refused when it is produced.
struct StrictJson;

impl<'de> Deserialize<'de> for StrictJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictJson)
    }
}

impl<'de> Visitor<'de> for StrictJson {
    type Value = StrictJson;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<StrictJson>()?.is_some() {}
        Ok(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<StrictJson, StrictJson>()?.is_some() {}
        Ok(self)
    }
}

/// A field name, borrowed from the body unless it has escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Text<'a> {
            type Value = Name<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(Text(PhantomData))
    }
}

/// A message of a produce request, turned into an event.
fn parse_message(
    obj: RawObject<'_>,
    at: &str,
    queue: &str,
    now: u64,
    header_key: Option<&str>,
) -> Result<(Event, Option<String>), ApiError> {
    let at_s = format!(" in {at}");
    check_names(obj.names(), &at_s, ProduceMessage::FIELDS)?;
    let payload_base64 = obj.get("payload_base64", &at_s)?;
    let (payload, default_type) = match (obj.raw("payload"), payload_base64.as_ref()) {
        (Some(p), None) => {
            serde_json::from_str::<StrictJson>(p.get())
                .map_err(|e| bad(format!("`payload` in {at}: {e}")))?;
            (p.get().as_bytes().to_vec(), "application/json")
        }
        (None, Some(Value::String(b))) => (
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| bad(format!("`payload_base64` in {at} is not base64: {e}")))?,
            "application/octet-stream",
        ),
        (None, Some(_)) => return Err(bad(format!("`payload_base64` in {at} must be a string"))),
        (Some(_), Some(_)) => {
            return Err(bad(format!(
                "{at} has both `payload` and `payload_base64`; send one"
            )));
        }
        (None, None) => {
            return Err(bad(format!(
                "{at} has no `payload` (any JSON value) or `payload_base64`"
            )));
        }
    };
    let string = |key: &str| -> Result<Option<String>, ApiError> {
        match obj.get(key, &at_s)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
            Some(_) => Err(bad(format!("`{key}` in {at} must be a non-empty string"))),
        }
    };
    let content_type = string("content_type")?.unwrap_or_else(|| default_type.to_owned());
    let key = string("key")?;
    let idempotency = string("idempotency_key")?.or(header_key.map(str::to_owned));
    if let Some(k) = &idempotency
        && k.len() > switchyard_source_http::MAX_IDEMPOTENCY_KEY
    {
        return Err(bad(format!(
            "the idempotency key of {at} is {} bytes long; at most {} are accepted",
            k.len(),
            switchyard_source_http::MAX_IDEMPOTENCY_KEY
        )));
    }
    let priority = match obj.get("priority", &at_s)? {
        None | Some(Value::Null) => 0,
        Some(p) => match p.as_u64() {
            Some(p) if p <= 9 => p as u8,
            _ => {
                return Err(bad(format!(
                    "`priority` in {at} must be an integer from 0 to 9 (higher is delivered first), got {p}"
                )));
            }
        },
    };
    let delay = duration_value(obj.get("delay", &at_s)?.as_ref(), "delay", &at_s)?
        .map(|d| at_most_max_delay("delay", &at_s, d))
        .transpose()?;
    let not_before = match (delay, obj.get("not_before", &at_s)?) {
        (Some(_), Some(nb)) if !nb.is_null() => {
            return Err(bad(format!(
                "{at} has both `delay` and `not_before`; send one"
            )));
        }
        (Some(d), _) => now.saturating_add(ms(d)),
        (None, None | Some(Value::Null)) => 0,
        (None, Some(nb)) => nb.as_u64().ok_or_else(|| {
            bad(format!(
                "`not_before` in {at} must be milliseconds since the Unix epoch"
            ))
        })?,
    };
    if not_before.saturating_sub(now) > ms(MAX_DELAY) {
        return Err(bad(format!(
            "`not_before` in {at} is more than 7d ({}s) from now; messages may be delayed by at most 7d",
            MAX_DELAY.as_secs()
        )));
    }
    let mut headers = Vec::new();
    match obj.get("headers", &at_s)? {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (name, value) in h {
                let Value::String(value) = value else {
                    return Err(bad(format!("header `{name}` in {at} must be a string")));
                };
                if name.starts_with("switchyard-") || name.starts_with("x-switchyard-") {
                    return Err(bad(format!(
                        "header `{name}` in {at}: names starting with `switchyard-` are reserved"
                    )));
                }
                headers.push((name, value));
            }
        }
        Some(_) => {
            return Err(bad(format!(
                "`headers` in {at} must be an object of strings"
            )));
        }
    }
    if priority > 0 {
        headers.push((PRIORITY_HEADER.to_owned(), priority.to_string()));
    }
    if not_before > now {
        headers.push((NOT_BEFORE_HEADER.to_owned(), not_before.to_string()));
    }
    if let Some(k) = &idempotency {
        headers.push((IDEMPOTENCY_HEADER.to_owned(), k.clone()));
    }
    let event = Event {
        id: uuid::Uuid::now_v7().to_string().into(),
        source: queue.into(),
        kind: KIND_MESSAGE.into(),
        key: key.map(String::into_bytes),
        payload,
        content_type: content_type.into(),
        headers,
        timestamp_ms: now,
        payload_is_compact_json: false,
    };
    Ok((event, idempotency))
}

/// The answer to a failed produce: the same table as HTTP ingest's.
fn append_error(e: IntakeError) -> ApiError {
    switchyard_source_http::intake_error(&e)
}

/// The messages of a produce body (one message, or `{"messages": [...]}`) as events for
/// `queue`, with their idempotency keys.
fn parse_produce(
    body: &Bytes,
    queue: &str,
    now: u64,
    header_key: Option<&str>,
) -> Result<Vec<(Event, Option<String>)>, ApiError> {
    // Each byte of a body is parsed once (twice within a payload, which is checked
    // strictly on its own): the body into its fields and `messages` into its objects'
    // fields in one pass, then a payload by the strict check. A payload's bytes are what
    // a produce is made of, so every pass over them counts. A body this pass refuses is
    // taken apart again the slower way, field by field and value by value, only to find
    // the error to answer with: the answers stay those of that way for every body.
    // Before it, a plain scan checks the whole body is UTF-8: the one pass skips the
    // insides of elements that are not messages without checking, where a separate
    // pass over the `messages` text did check.
    let text = std::str::from_utf8(body).ok().filter(|t| {
        t.trim_start_matches(|c: char| c.is_ascii_whitespace())
            .starts_with('{')
    });
    match text.and_then(|t| serde_json::from_str::<Body>(t).ok()) {
        Some(Body {
            fields,
            messages: None,
        }) => Ok(vec![parse_message(
            fields,
            "the message",
            queue,
            now,
            header_key,
        )?]),
        Some(Body {
            fields,
            messages: Some(list),
        }) => {
            check_names(fields.names().chain(["messages"]), "", ProduceBatch::FIELDS)?;
            parse_items(list, queue, now, header_key)
        }
        None => parse_produce_by_fields(body, queue, now, header_key),
    }
}

/// The messages of a batch whose elements were taken apart.
fn parse_items(
    list: Vec<Item<'_>>,
    queue: &str,
    now: u64,
    header_key: Option<&str>,
) -> Result<Vec<(Event, Option<String>)>, ApiError> {
    check_batch(list.len(), header_key)?;
    list.into_iter()
        .enumerate()
        .map(|(i, m)| {
            let at = format!("messages[{i}]");
            match m {
                Item::Object(obj) => parse_message(obj, &at, queue, now, None),
                Item::Other => Err(not_a_message(&at)),
            }
        })
        .collect()
}

/// [`parse_produce`] for a body that does not parse in one pass: its fields first, then
/// `messages` on its own, then (when that fails too) value by value.
fn parse_produce_by_fields(
    body: &Bytes,
    queue: &str,
    now: u64,
    header_key: Option<&str>,
) -> Result<Vec<(Event, Option<String>)>, ApiError> {
    let fast = (body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'))
        .then(|| serde_json::from_slice::<RawObject>(body).ok())
        .flatten();
    let Some(obj) = fast else {
        return Err(body_error(body));
    };
    let Some(list) = obj.raw("messages") else {
        return Ok(vec![parse_message(
            obj,
            "the message",
            queue,
            now,
            header_key,
        )?]);
    };
    check_names(obj.names(), "", ProduceBatch::FIELDS)?;
    match serde_json::from_str::<Vec<Item>>(list.get()) {
        Ok(items) => parse_items(items, queue, now, header_key),
        Err(_) => parse_messages_one_by_one(list, queue, now, header_key),
    }
}

/// Why `body` is not a produce body: empty, not JSON, or not a JSON object.
fn body_error(body: &Bytes) -> ApiError {
    match raw_object_body(body) {
        Err(e) => e,
        Ok(raw) => match serde_json::from_str::<RawObject>(raw.get()) {
            Err(_) => bad("the body must be a JSON object"),
            Ok(_) => bad("the body is not valid JSON"),
        },
    }
}

/// A batch of `len` messages holds 1 to [`MAX_BATCH`], and its keys are its messages'.
fn check_batch(len: usize, header_key: Option<&str>) -> Result<(), ApiError> {
    if len == 0 || len > MAX_BATCH {
        return Err(bad(format!(
            "`messages` holds {len} messages; send 1 to {MAX_BATCH} per request"
        )));
    }
    if header_key.is_some() {
        return Err(bad(
            "the Idempotency-Key header applies to a single message; give each message of a batch its own `idempotency_key`",
        ));
    }
    Ok(())
}

fn not_a_message(at: &str) -> ApiError {
    bad(format!("{at} must be a JSON object with a `payload`"))
}

/// `messages` taken apart value by value (the array, then each element on its own), so
/// the answer names the first message that is wrong and how.
fn parse_messages_one_by_one(
    list: &RawValue,
    queue: &str,
    now: u64,
    header_key: Option<&str>,
) -> Result<Vec<(Event, Option<String>)>, ApiError> {
    let list: Vec<&RawValue> = serde_json::from_str(list.get())
        .map_err(|_| bad("`messages` must be an array of messages"))?;
    check_batch(list.len(), header_key)?;
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let at = format!("messages[{i}]");
            let obj = m
                .get()
                .starts_with('{')
                .then(|| serde_json::from_str::<RawObject>(m.get()).ok())
                .flatten()
                .ok_or_else(|| not_a_message(&at))?;
            parse_message(obj, &at, queue, now, None)
        })
        .collect()
}

/// `POST /queues/{queue}/messages`
async fn produce(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    _: Admin,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<ProduceAnswer>), ApiError> {
    let queue = find_queue(&shared, &name)?;
    let header_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty());
    let parsed = parse_produce(&body, &queue.name, now_ms(), header_key)?;

    // Deduplicate: answered keys get their first id; keys being stored by another request
    // right now are refused (the client retries and then gets the stored answer).
    let ids: Vec<String> = parsed.iter().map(|(e, _)| e.id.to_string()).collect();
    let submissions = parsed
        .into_iter()
        .map(|(event, key)| Submission {
            key,
            events: vec![event],
        })
        .collect();
    let produced = queue.produce(submissions).await.map_err(append_error)?;
    let messages = produced
        .into_iter()
        .zip(ids)
        .map(|(p, id)| match p {
            Produced::Stored(positions) => {
                let (partition, offset) = positions[0];
                ProducedAnswer {
                    id,
                    partition: Some(partition),
                    offset: Some(offset),
                    duplicate: false,
                }
            }
            Produced::Duplicate(seen) => ProducedAnswer {
                id: seen.ids().first().cloned().unwrap_or_default(),
                partition: None,
                offset: None,
                duplicate: true,
            },
        })
        .collect();
    Ok((StatusCode::CREATED, Json(ProduceAnswer { messages })))
}

/// `POST /queues/{queue}/groups/{group}/receive`
async fn receive(
    State(shared): State<Arc<Shared>>,
    Path((name, group_name)): Path<(String, String)>,
    _: Admin,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (shared, name, group_name) = (&*shared, name.as_str(), group_name.as_str());
    let obj = object_body(&body, true)?;
    check_keys(&obj, "", ReceiveRequest::FIELDS)?;
    let max = match obj.get("max") {
        None | Some(Value::Null) => 1,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_BATCH as u64).contains(&n) => n as usize,
            _ => {
                return Err(bad(format!(
                    "`max` must be an integer from 1 to {MAX_BATCH}, got {v}"
                )));
            }
        },
    };
    let wait = duration_field(&obj, "wait", "")?.unwrap_or(Duration::ZERO);
    if wait > MAX_WAIT {
        return Err(bad(format!(
            "`wait` may be at most {}s",
            MAX_WAIT.as_secs()
        )));
    }
    let lease = duration_field(&obj, "ack_timeout", "")?
        .map(|l| at_most_max_delay("ack_timeout", "", l))
        .transpose()?;
    if lease.is_some_and(|l| l.is_zero()) {
        return Err(bad("`ack_timeout` must be greater than 0"));
    }
    let (queue, mut group) = work_group(shared, name, group_name, true).await?;
    let deadline = tokio::time::Instant::now() + wait;
    let lease_ms = lease.map(ms);
    loop {
        let notified = queue.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let g = group.clone();
        let got = match tokio::task::spawn_blocking(move || g.receive(now_ms(), max, lease_ms))
            .await
            .expect("receive task")
        {
            Ok(got) => got,
            // Deleted (or expired) while this receive waited: the name now starts a new group.
            Err(LogError::GroupDeleted { .. }) => {
                let next = work_group(shared, name, group_name, true).await?.1;
                // Still the deleted one: its delete failed halfway and left it in the
                // queue's map; asking again would only spin.
                if Arc::ptr_eq(&next, &group) {
                    return Err(ApiError::unavailable(format!(
                        "work group `{group_name}` of queue `{name}` is being deleted and its delete did not finish (see the log); retry later"
                    )));
                }
                group = next;
                continue;
            }
            Err(e) => return Err(ApiError::internal(e.to_string())),
        };
        let now = tokio::time::Instant::now();
        if !got.is_empty() || now >= deadline {
            let events: Vec<_> = got
                .iter()
                .map(|l| Event::decode_record(&l.record.payload))
                .collect();
            let messages = got
                .iter()
                .zip(&events)
                .map(|(l, e)| ReceivedOut {
                    event: switchyard_api::EventOut::of(e),
                    receipt: l.receipt.to_string(),
                    partition: l.receipt.partition,
                    offset: l.receipt.offset,
                    priority: l.priority,
                    deliveries: l.receipt.delivery,
                    lease_expires_ms: l.lease_expires_ms,
                })
                .collect();
            return Ok(Json(ReceiveAnswerOut { messages }).into_response());
        }
        // Wake for new messages, freed keys, or the next lease expiry or delay.
        let mut wake = deadline;
        if let Some(due) = group.next_due_ms() {
            let in_ms = due.saturating_sub(now_ms());
            wake = wake.min(now + Duration::from_millis(in_ms.max(1)));
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// A receipts body: the whole object, the parsed receipts and their texts.
struct ReceiptsBody {
    obj: Map<String, Value>,
    receipts: Vec<Receipt>,
    texts: Vec<String>,
}

/// Parses `{"receipts": [...]}` plus the allowed extra keys.
fn receipts_body(body: &Bytes, extra: &[&str]) -> Result<ReceiptsBody, ApiError> {
    let obj = object_body(body, false)?;
    let mut known = SettleRequest::FIELDS.to_vec();
    known.extend_from_slice(extra);
    check_keys(&obj, "", &known)?;
    let Some(Value::Array(list)) = obj.get("receipts") else {
        return Err(bad(
            "expected {\"receipts\": [\"…\"]} with the receipts from receive",
        ));
    };
    if list.is_empty() || list.len() > 10 * MAX_BATCH {
        return Err(bad(format!(
            "`receipts` holds {} entries; send 1 to {}",
            list.len(),
            10 * MAX_BATCH
        )));
    }
    let mut receipts = Vec::with_capacity(list.len());
    let mut texts = Vec::with_capacity(list.len());
    for (i, r) in list.iter().enumerate() {
        let Value::String(s) = r else {
            return Err(bad(format!("receipts[{i}] must be a string")));
        };
        receipts.push(
            s.parse::<Receipt>()
                .map_err(|e| bad(format!("receipts[{i}]: {e}")))?,
        );
        texts.push(s.clone());
    }
    Ok(ReceiptsBody {
        obj,
        receipts,
        texts,
    })
}

fn stale(texts: &[String], ok: impl Iterator<Item = bool>) -> Vec<String> {
    texts
        .iter()
        .zip(ok)
        .filter(|(_, ok)| !ok)
        .map(|(t, _)| t.clone())
        .collect()
}

/// Applies `op` (ack or nack) to the receipts on a blocking thread and wakes long-polls;
/// answers how many were settled and the stale receipts.
async fn settle(
    shared: &Shared,
    name: &str,
    group: &str,
    body: ReceiptsBody,
    op: impl FnOnce(&WorkGroup, &[Receipt]) -> Result<Vec<bool>, switchyard_store::LogError>
    + Send
    + 'static,
) -> Result<(u64, Vec<String>), ApiError> {
    let (queue, group) = work_group(shared, name, group, false).await?;
    let receipts = body.receipts;
    let result = tokio::task::spawn_blocking(move || op(&group, &receipts))
        .await
        .expect("ack task")
        .map_err(|e| match e {
            LogError::GroupDeleted { .. } => group_error(e.into()),
            e => ApiError::unavailable(e.to_string()),
        })?;
    queue.changed.notify_waiters();
    let n = result.iter().filter(|&&ok| ok).count() as u64;
    Ok((n, stale(&body.texts, result.into_iter())))
}

/// `POST /queues/{queue}/groups/{group}/ack`
async fn ack(
    State(shared): State<Arc<Shared>>,
    Path((name, group)): Path<(String, String)>,
    _: Admin,
    body: Bytes,
) -> Result<Json<AckAnswer>, ApiError> {
    let b = receipts_body(&body, &[])?;
    let (acked, stale) = settle(&shared, &name, &group, b, |g, r| g.ack(r, now_ms())).await?;
    Ok(Json(AckAnswer { acked, stale }))
}

/// `POST /queues/{queue}/groups/{group}/nack`
async fn nack(
    State(shared): State<Arc<Shared>>,
    Path((name, group)): Path<(String, String)>,
    _: Admin,
    body: Bytes,
) -> Result<Json<NackAnswer>, ApiError> {
    let b = receipts_body(&body, &["delay"])?;
    let delay = duration_field(&b.obj, "delay", "")?
        .map(|d| at_most_max_delay("delay", "", d))
        .transpose()?
        .map_or(0, ms);
    let (nacked, stale) = settle(&shared, &name, &group, b, move |g, r| {
        g.nack(r, delay, now_ms())
    })
    .await?;
    Ok(Json(NackAnswer { nacked, stale }))
}

/// `POST /queues/{queue}/groups/{group}/extend`
async fn extend(
    State(shared): State<Arc<Shared>>,
    Path((name, group)): Path<(String, String)>,
    _: Admin,
    body: Bytes,
) -> Result<Json<ExtendAnswer>, ApiError> {
    let ReceiptsBody {
        obj,
        receipts,
        texts,
    } = receipts_body(&body, &["by"])?;
    let by = duration_field(&obj, "by", "")?
        .map(|d| at_most_max_delay("by", "", d))
        .transpose()?;
    let (_, group) = work_group(&shared, &name, &group, false).await?;
    let by = match by {
        Some(d) if !d.is_zero() => ms(d),
        Some(_) => return Err(bad("`by` must be greater than 0")),
        None => group.options().ack_timeout_ms,
    };
    let result = group.extend(&receipts, by, now_ms());
    Ok(Json(ExtendAnswer {
        extended: result.iter().filter(|r| r.is_some()).count() as u64,
        lease_expires_ms: result.iter().flatten().max().copied(),
        stale: stale(&texts, result.iter().map(Option::is_some)),
    }))
}

/// `DELETE /queues/{queue}/groups/{group}`
async fn delete_group(
    State(shared): State<Arc<Shared>>,
    Path((name, group)): Path<(String, String)>,
    _: Admin,
) -> Result<Json<GroupDeleted>, ApiError> {
    let queue = work_queue(&shared, &name, &group)?;
    let g = group.clone();
    let q = queue.clone();
    tokio::task::spawn_blocking(move || q.delete_work_group(&g))
        .await
        .expect("delete group task")
        .map_err(group_error)?;
    info!(queue = %queue.name, group = %group, "work group deleted by request");
    Ok(Json(GroupDeleted {
        queue: queue.name.clone(),
        group,
        deleted: true,
    }))
}

/// Deletes work groups that were idle for their queue's `group_idle_expiry`, every second.
pub async fn group_expiry_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(EXPIRY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for queue in shared.queues.values() {
            if queue.limits().group_idle_expiry.is_none() {
                continue;
            }
            let q = queue.clone();
            let expired = tokio::task::spawn_blocking(move || q.expire_idle_groups(now_ms()))
                .await
                .expect("expiry task");
            for (group, last_active_ms) in expired {
                info!(queue = %queue.name, group = %group,
                    idle_ms = now_ms().saturating_sub(last_active_ms),
                    "work group expired after group_idle_expiry without receive, ack, nack or extend; deleted");
            }
        }
    }
}

/// The dead-letter queue of `queue`.
fn dead_letter_of<'a>(shared: &'a Shared, queue: &str) -> Option<&'a Arc<QueueHandle>> {
    let name = shared
        .config
        .queues
        .get(queue)
        .and_then(|q| q.dead_letter.clone())
        .unwrap_or_else(|| shared.config.server.dead_letter.clone());
    shared.queues.get(&name)
}

fn queue_stats(shared: &Shared, queue: &QueueHandle) -> QueueStats {
    let now = now_ms();
    let mut groups = Vec::new();
    let mut pubsub: Vec<String> = queue.pubsub_groups();
    pubsub.extend(shared.config.sources.values().filter_map(|s| match s {
        SourceConfig::Queue(q) if q.queue == queue.name => Some(q.group.clone()),
        _ => None,
    }));
    pubsub.sort();
    pubsub.dedup();
    for g in pubsub {
        let depth: u64 = queue
            .partitions()
            .iter()
            .enumerate()
            .map(|(p, log)| {
                log.durable_end()
                    .saturating_sub(queue.committed(&g, p as u32))
            })
            .sum();
        groups.push((
            g,
            GroupStats {
                mode: "pubsub".into(),
                depth: Some(depth),
                ..GroupStats::default()
            },
        ));
    }
    for g in queue.work_groups() {
        let s = g.stats(now);
        // A name shared with a pub/sub group replaces it, in its place (as an object).
        let work = GroupStats {
            mode: "work".into(),
            depth: Some(s.depth),
            in_flight: Some(s.in_flight),
            delayed: Some(s.delayed),
            oldest_age_ms: Some(s.oldest_age_ms),
            dead_lettered: Some(s.dead_lettered),
            memory_bytes: Some(s.memory_bytes),
        };
        match groups.iter_mut().find(|(n, _)| n == g.name()) {
            Some(slot) => slot.1 = work,
            None => groups.push((g.name().to_owned(), work)),
        }
    }
    let oldest = queue
        .partitions()
        .iter()
        .filter(|p| p.durable_end() > p.start_offset())
        .filter_map(|p| {
            p.read(p.start_offset(), 1, 1)
                .ok()?
                .first()
                .map(|r| r.timestamp_ms)
        })
        .min();
    let dlq = dead_letter_of(shared, &queue.name).filter(|d| d.name != queue.name);
    QueueStats {
        queue: queue.name.clone(),
        partitions: Some(queue.partitions().len() as u64),
        messages: Some(queue.retained_records()),
        bytes: Some(queue.size_bytes()),
        max_bytes: Some(queue.limits().max_bytes),
        oldest_age_ms: oldest.map(|t| now.saturating_sub(t)),
        groups,
        work_groups: Some(queue.work_groups().len() as u64),
        max_groups: Some(queue.limits().max_groups as u64),
        work_memory_bytes: Some(queue.limits().work.budget.used() as u64),
        max_work_memory: Some(queue.limits().work.budget.max() as u64),
        dead_letter: dlq.map(|d| DeadLetterStats {
            queue: d.name.clone(),
            messages: Some(d.retained_records()),
        }),
    }
}

/// `GET /queues/{queue}/stats`
async fn stats(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    _: Admin,
) -> Result<Json<QueueStats>, ApiError> {
    let queue = find_queue(&shared, &name)?;
    let s = shared.clone();
    let v = tokio::task::spawn_blocking(move || queue_stats(&s, &queue))
        .await
        .expect("stats task");
    Ok(Json(v))
}

/// `GET /queues`
async fn list(State(shared): State<Arc<Shared>>, _: Admin) -> Json<QueueList> {
    let s = shared.clone();
    let queues = tokio::task::spawn_blocking(move || {
        s.queues
            .values()
            .map(|q| queue_stats(&s, q))
            .collect::<Vec<_>>()
    })
    .await
    .expect("stats task");
    Json(QueueList { queues })
}

/// Moves messages that used up `max_deliveries` from every work group into the queue's
/// dead-letter queue, every 200 ms. A message leaves its group only once it is durable in
/// the dead-letter queue.
pub async fn dead_letter_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for queue in shared.queues.values() {
            for group in queue.work_groups() {
                let exhausted = group.take_exhausted(now_ms());
                if exhausted.is_empty() {
                    continue;
                }
                let Some(dlq) = dead_letter_of(&shared, &queue.name) else {
                    warn!(queue = %queue.name, "no dead-letter queue; messages stay in the group");
                    continue;
                };
                let mut events = Vec::with_capacity(exhausted.len());
                for x in &exhausted {
                    let mut event =
                        Event::decode_record(&x.record.payload).unwrap_or_else(|e| Event {
                            id: switchyard_event::format_compact!(
                                "{}/{}/{}",
                                queue.name,
                                x.partition,
                                x.offset
                            ),
                            source: queue.name.as_str().into(),
                            kind: KIND_MESSAGE.into(),
                            key: None,
                            payload: x.record.payload.clone(),
                            content_type: "application/octet-stream".into(),
                            headers: vec![(dlq_headers::ERROR.into(), format!("undecodable: {e}"))],
                            timestamp_ms: x.record.timestamp_ms,
                            payload_is_compact_json: false,
                        });
                    event.set_header(dlq_headers::QUEUE, queue.name.clone());
                    event.set_header(dlq_headers::GROUP, group.name().to_owned());
                    event.set_header(dlq_headers::ERROR, x.reason.clone());
                    event.set_header(dlq_headers::ATTEMPTS, x.deliveries.to_string());
                    event.set_header(dlq_headers::AT_MS, now_ms().to_string());
                    warn!(queue = %queue.name, group = %group.name(), event = %event.id,
                        deliveries = x.deliveries, reason = %x.reason, dead_letter = %dlq.name,
                        "dead-lettering message");
                    events.push(event);
                }
                if let Err(e) = dlq.append(&events).await {
                    warn!(queue = %dlq.name, error = %e, "cannot store dead letters yet; retrying");
                    // Handed out again by take_exhausted only after a restart; keep them
                    // for the next round instead.
                    group.requeue_exhausted(&exhausted);
                    continue;
                }
                let done: Vec<(u32, u64)> =
                    exhausted.iter().map(|x| (x.partition, x.offset)).collect();
                let g = group.clone();
                let r = tokio::task::spawn_blocking(move || g.dead_lettered(&done, now_ms()))
                    .await
                    .expect("dead-letter task");
                if let Err(e) = r {
                    warn!(queue = %queue.name, group = %group.name(), error = %e,
                        "dead letters stored but not recorded in the group; they may be dead-lettered twice after a restart");
                }
                queue.changed.notify_waiters();
            }
        }
    }
}

/// Arbitrary request bodies against the queue API's parsing (a stable, bounded stand-in
/// for a fuzzer): it answers every input, valid or not, without panicking.
#[cfg(test)]
mod body_properties {
    use super::*;
    use proptest::prelude::*;

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-z0-9 _.:-]{0,12}".prop_map(Value::from),
            prop_oneof!["5s", "200ms", "8d", "7d", "0s", "-1s", "1e9h"].prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            let keys = prop_oneof![
                Just("payload".to_owned()),
                Just("payload_base64".to_owned()),
                Just("messages".to_owned()),
                Just("key".to_owned()),
                Just("priority".to_owned()),
                Just("delay".to_owned()),
                Just("not_before".to_owned()),
                Just("headers".to_owned()),
                Just("idempotency_key".to_owned()),
                Just("content_type".to_owned()),
                Just("max".to_owned()),
                Just("wait".to_owned()),
                Just("ack_timeout".to_owned()),
                "[a-z]{1,6}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(keys, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// What the produce and receive handlers do with a body before touching a queue.
    fn parse(body: &[u8]) {
        let body = Bytes::copy_from_slice(body);
        if let Ok(events) = parse_produce(&body, "q", now_ms(), None) {
            assert!(!events.is_empty());
            for (event, _) in events {
                assert_eq!(event.source, "q");
                // Whatever was stored can be written out again.
                let _ = event.to_wire_line();
            }
        }
        let Ok(obj) = object_body(&body, true) else {
            return;
        };
        for key in ["wait", "ack_timeout", "delay", "by"] {
            if let Ok(Some(d)) = duration_field(&obj, key, "") {
                let _ = at_most_max_delay(key, "", d);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_bytes_get_an_answer(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            parse(&bytes);
        }

        #[test]
        fn any_json_gets_an_answer(value in json()) {
            parse(&serde_json::to_vec(&value).unwrap());
        }
    }
}

#[cfg(test)]
mod produce_tests {
    use super::*;

    fn produce(body: &str) -> Result<Vec<Event>, String> {
        produce_bytes(body.as_bytes())
    }

    fn produce_bytes(body: &[u8]) -> Result<Vec<Event>, String> {
        parse_produce(&Bytes::copy_from_slice(body), "q", 1_000, None)
            .map(|events| events.into_iter().map(|(e, _)| e).collect())
            .map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn a_payload_is_stored_as_sent_without_losing_digits() {
        let payload = r#"{ "n": 123456789012345678901234567890, "f": 1.50, "s": "aé" }"#;
        for body in [
            format!(r#"{{"payload": {payload}, "key": "k"}}"#),
            format!(r#"{{"messages": [ {{"payload": {payload}}}, {{"payload": [1, 2]}} ]}}"#),
        ] {
            let events = produce(&body).unwrap();
            assert_eq!(events[0].payload, payload.as_bytes(), "{body}");
            assert_eq!(events[0].content_type, "application/json");
            let mut line = Vec::new();
            events[0].write_wire_line(&mut line);
            let line = String::from_utf8(line).unwrap();
            assert!(line.contains("123456789012345678901234567890"), "{line}");
        }
        assert_eq!(
            produce(r#"{"messages":[{"payload":1},{"payload":[1, 2]}]}"#).unwrap()[1].payload,
            b"[1, 2]"
        );
    }

    #[test]
    fn field_names_may_be_escaped_and_a_repeated_field_counts_with_its_last_value() {
        let events = produce(r#"{"pay\u006coad": "x", "key": "a", "k\u0065y": "b"}"#).unwrap();
        assert_eq!(events[0].payload, br#""x""#);
        assert_eq!(events[0].key.as_deref(), Some(&b"b"[..]));
        // `messages` too, whether the first one parses as messages or not.
        for body in [
            r#"{"messages": [{"payload": 1}], "m\u0065ssages": [{"payload": 2}, {"payload": 3}]}"#,
            r#"{"messages": "x", "messages": [{"payload": 2}, {"payload": 3}]}"#,
        ] {
            let events = produce(body).unwrap();
            let payloads: Vec<&[u8]> = events.iter().map(|e| &e.payload[..]).collect();
            assert_eq!(payloads, [b"2", b"3"], "{body}");
        }
    }

    #[test]
    fn bodies_that_are_not_messages_get_clear_errors() {
        for (body, expected) in [
            ("", "the body is empty"),
            ("[1]", "the body must be a JSON object"),
            (r#"{"payload": 1"#, "the body is not valid JSON"),
            (
                r#"{"messages": {"payload": 1}}"#,
                "`messages` must be an array",
            ),
            (
                r#"{"messages": [1]}"#,
                "messages[0] must be a JSON object with a `payload`",
            ),
            (
                r#"{"messages": [{"payload": 1}, [{"payload": 2}], "x", null]}"#,
                "messages[1] must be a JSON object with a `payload`",
            ),
            (
                r#"{"messages": [{"payload": 1}, {"payload": 2]}"#,
                "the body is not valid JSON",
            ),
            // Values the one-pass reading refuses get the answers of the value-by-value
            // reading: the message they are in is named.
            (
                r#"{"messages": [{"payload": 1}, 1e400]}"#,
                "messages[1] must be a JSON object with a `payload`",
            ),
            (
                r#"{"messages": [{"payload": 1, "colour": 1}, "\ud800"]}"#,
                "unknown field `colour` in messages[0]",
            ),
            (r#"{"\ud800": 1}"#, "the body must be a JSON object"),
            (r#"{"messages": [], "x": 1}"#, "unknown field `x`"),
            (r#"{"messages": []}"#, "send 1 to 1000"),
            (
                r#"{"payload": 1, "colour": "red"}"#,
                "unknown field `colour` in the message",
            ),
            (r#"{"key": "k"}"#, "has no `payload`"),
            (r#"{"payload": 1, "payload_base64": "AA=="}"#, "has both"),
            (r#"{"payload_base64": 7}"#, "must be a string"),
            // JSON a receiver could not read back into a tree is refused, as it was when
            // the whole body was parsed into one.
            (
                r#"{"payload": [1e400]}"#,
                "`payload` in the message: number out of range",
            ),
            (
                r#"{"messages": [{"payload": "\ud800"}]}"#,
                "`payload` in messages[0]",
            ),
        ] {
            let error = produce(body).unwrap_err();
            assert!(error.contains(expected), "{body}: {error}");
        }
        let deep = format!(
            r#"{{"payload": 1, "headers": {}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let error = produce(&deep).unwrap_err();
        assert!(error.contains("`headers` in the message"), "{error}");
        let deep = format!(r#"{{"payload": {}1{}}}"#, "[".repeat(200), "]".repeat(200));
        let error = produce(&deep).unwrap_err();
        assert!(
            error.contains("`payload` in the message: recursion limit"),
            "{error}"
        );
        let nested = format!(r#"{{"payload": {}1{}}}"#, "[".repeat(100), "]".repeat(100));
        assert!(produce(&nested).is_ok(), "nesting within the limit is fine");
        // Bytes that are not UTF-8 anywhere in the body make it invalid JSON, also inside
        // an element that is not a message, and also when a later `messages` replaces it.
        for body in [
            &b"{\"messages\": [[\"\xff\"]]}"[..],
            b"{\"messages\": [[\"\xff\"]], \"messages\": [{\"payload\": 1}]}",
            b"{\"payload\": 1, \"x\": \"\xff\"}",
        ] {
            let error = produce_bytes(body).unwrap_err();
            assert!(error.contains("the body is not valid JSON"), "{error}");
        }
        let events = produce(r#"{"payload_base64": "AAE="}"#).unwrap();
        assert_eq!(events[0].payload, [0, 1]);
        assert_eq!(events[0].content_type, "application/octet-stream");
    }
}
