//! The `http` source: `POST /ingest/{source}`.
//!
//! A request body becomes events:
//! * `application/json` (or `+json`): one event whose payload is the body;
//! * `application/x-ndjson` / `application/jsonl`: one event per non-empty line;
//! * `application/cloudevents+json`: one CloudEvent in structured mode, and
//!   `application/cloudevents-batch+json`: a JSON array of them — each event's payload is
//!   the CloudEvent's data, its content type `datacontenttype`, its attributes kept as
//!   `ce-*` headers (`ce-id`, `ce-type`, …) so that a sink writing CloudEvents passes
//!   them on;
//! * a request with a `ce-specversion` header: one CloudEvent in binary mode, the body
//!   its data, every `ce-*` header an attribute (percent-decoded);
//! * anything else: one event with the body as opaque bytes.
//!
//! The key comes from the `x-key` header (else a CloudEvent's `partitionkey`), the id from `Idempotency-Key` (deduplicated
//! by the intake within the source's window: a repeat gets the original ids and is not
//! appended again; a repeat sent while the first is being stored gets 409) or a fresh
//! UUIDv7. The answer is 200 with the event ids **only after** the [`Intake`] reports
//! the events durable; on any error nothing was appended.
//!
//! This crate parses and answers; the durable append and the idempotency window are
//! behind [`Intake`], which the queue broker implements on the source's intake log.
//! [`intake_error`] is the one table from a failed append to an HTTP answer.
//!
//! What one request may cost is bounded before it is paid: the body by the source's
//! `max_body` (a larger `Content-Length` is refused before reading), the events by
//! `max_events`, the `Idempotency-Key` by [`MAX_IDEMPOTENCY_KEY`] bytes, and the memory of
//! all requests in flight together by a [`MemoryBudget`] (429 past it).

mod api_error;
mod auth;
mod budget;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::value::RawValue;
use switchyard_config::HttpSourceConfig;
use switchyard_event::formats::cloudevents;
use switchyard_event::{Event, KIND_MESSAGE, is_json_content_type};

pub use api_error::ApiError;
pub use auth::{Admin, AdminToken, authorize_admin, bearer_matches, bearer_token};
pub use budget::{MemoryBudget, Refused, Reservation};
/// The durable destination of ingested events and its idempotency key: the connector
/// contract.
pub use switchyard_connector::{
    Appended, IDEMPOTENCY_HEADER, Intake, IntakeError, MAX_IDEMPOTENCY_KEY, Seen,
};

/// What an event costs in memory beside its payload, key, id and headers (the struct,
/// its strings' headers, the answer's JSON per id), used to size a request's reservation.
const EVENT_OVERHEAD: u64 = 256;

/// The request body took longer than `server.body_timeout` to arrive.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(pub Duration);

/// Metrics hooks the runtime provides.
pub trait IngestObserver: Send + Sync + 'static {
    /// A request to `source` was answered with `status` carrying `events` new events.
    fn request(&self, source: &str, status: u16, events: usize);
}

/// One configured `http` source.
pub struct HttpSource {
    pub name: String,
    pub config: HttpSourceConfig,
    /// Where its events go; it also keeps the source's idempotency window
    /// (`dedup_window`).
    pub intake: Arc<dyn Intake>,
}

impl HttpSource {
    pub fn new(name: &str, config: HttpSourceConfig, intake: Arc<dyn Intake>) -> Self {
        Self {
            name: name.to_owned(),
            config,
            intake,
        }
    }
}

#[derive(Clone)]
struct IngestState {
    sources: Arc<HashMap<String, Arc<HttpSource>>>,
    observer: Arc<dyn IngestObserver>,
    budget: MemoryBudget,
}

/// Routes for every `http` source: `POST /ingest/{source}`. `budget` bounds the memory
/// of all requests in flight (shared with the server's other routes).
///
/// A source whose name needs no escaping in a path gets a route of its own, so a request
/// to it is matched without extracting and decoding a path parameter; every other name,
/// and a name that is no source, goes through `/ingest/{source}`.
pub fn router(
    sources: Vec<Arc<HttpSource>>,
    observer: Arc<dyn IngestObserver>,
    budget: MemoryBudget,
) -> Router {
    let mut router = Router::new().route("/ingest/{source}", post(ingest_by_name));
    for source in sources.iter().filter(|s| plain_path_segment(&s.name)) {
        let source = source.clone();
        let path = format!("/ingest/{}", source.name);
        router = router.route(
            &path,
            post(move |State(state): State<IngestState>, request: Request| {
                let source = source.clone();
                async move { ingest(&state, &source, request).await }
            }),
        );
    }
    let sources = sources.into_iter().map(|s| (s.name.clone(), s)).collect();
    router.with_state(IngestState {
        sources: Arc::new(sources),
        observer,
        budget,
    })
}

/// Whether `name` is a path segment as it is: letters, digits, `-`, `_` and `.`, and not
/// `.` or `..`.
fn plain_path_segment(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

async fn ingest_by_name(
    State(state): State<IngestState>,
    Path(source_name): Path<String>,
    request: Request,
) -> Response {
    let Some(source) = state.sources.get(&source_name).cloned() else {
        // Nothing is named to a stranger: not the configured sources, and, where sources
        // have tokens, not even whether this one exists (without one of their tokens the
        // answer is the same 401 an existing source gives).
        let headers = request.headers();
        let guarded = state
            .sources
            .values()
            .filter_map(|s| s.config.token.as_deref());
        let mut tokens = guarded.clone().peekable();
        if tokens.peek().is_some() && !guarded.into_iter().any(|t| bearer_matches(headers, t)) {
            return unauthorized();
        }
        return error(
            StatusCode::NOT_FOUND,
            "no http source by that name; POST to /ingest/<name of an http source in the config>",
        );
    };
    ingest(&state, &source, request).await
}

async fn ingest(state: &IngestState, source: &HttpSource, request: Request) -> Response {
    // The request's own headers, not a copy of them (a `HeaderMap` extractor clones).
    let (parts, body) = request.into_parts();
    let (response, count) = handle(source, &state.budget, &parts.headers, body).await;
    state
        .observer
        .request(&source.name, response.status().as_u16(), count);
    response
}

async fn handle(
    source: &HttpSource,
    budget: &MemoryBudget,
    headers: &HeaderMap,
    body: Body,
) -> (Response, usize) {
    if let Some(expected) = &source.config.token
        && !bearer_matches(headers, expected)
    {
        return (unauthorized(), 0);
    }
    let max = source.config.max_body.0 as usize;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "body is larger than max_body ({max} bytes) of source `{}`; split it or raise max_body",
                source.name
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return (too_large(), 0);
    }
    let idempotency_key = match header_str(headers, "idempotency-key") {
        Ok(k) => k.filter(|k| !k.is_empty()),
        Err(msg) => return (error(StatusCode::BAD_REQUEST, &msg), 0),
    };
    if let Some(k) = idempotency_key
        && k.len() > MAX_IDEMPOTENCY_KEY
    {
        return (
            error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "the Idempotency-Key header is {} bytes long; at most {MAX_IDEMPOTENCY_KEY} are accepted (a UUID is 36)",
                    k.len()
                ),
            ),
            0,
        );
    }
    // The body's memory is reserved before it is read: all of it when the length is
    // declared, else the most it may be.
    let mut reservation = match budget.try_reserve(declared.unwrap_or(max as u64)) {
        Ok(r) => r,
        Err(refused) => return (over_budget(refused), 0),
    };
    let body = match Limited::new(body, max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return (too_large(), 0);
        }
        Err(e) if caused_by::<BodyTimeout>(e.as_ref()) => {
            return (
                error(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!("{e}; send the body faster or in smaller requests"),
                ),
                0,
            );
        }
        Err(e) => {
            return (
                error(
                    StatusCode::BAD_REQUEST,
                    &format!("could not read the body: {e}"),
                ),
                0,
            );
        }
    };
    // A repeat is answered before its body is parsed.
    if let Some(seen) = idempotency_key.and_then(|k| source.intake.seen(k)) {
        return (repeat(seen, &mut reservation, body.len()), 0);
    }
    let count = match count_events(headers, &body) {
        Ok(n) => n,
        Err(msg) => return (error(StatusCode::BAD_REQUEST, &msg), 0),
    };
    if count > source.config.max_events {
        return (
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "the body carries {count} events; source `{}` accepts at most {} per request \
                     (max_events): split it into smaller requests",
                    source.name, source.config.max_events
                ),
            ),
            0,
        );
    }
    // What the events and the answer will hold beside the body.
    let key_len = headers.get("x-key").map_or(0, |v| v.len()) as u64;
    // A binary-mode CloudEvent's attributes are copied into its event's headers.
    let attributes_len: usize = headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with(cloudevents::HEADER_PREFIX))
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    let id_len = idempotency_key.map_or(36, |k| k.len() + 8) as u64;
    let header_len =
        (idempotency_key.map_or(0, |k| k.len() + IDEMPOTENCY_HEADER.len()) + attributes_len) as u64;
    let per_event = EVENT_OVERHEAD + key_len + 2 * id_len + header_len + source.name.len() as u64;
    // Structured CloudEvents become events and headers worth more than their text.
    let structured = header_str(headers, "content-type")
        .ok()
        .flatten()
        .is_some_and(|c| is_cloudevent(c) || is_cloudevents_batch(c));
    let per_byte = if structured {
        cloudevents::STRUCTURED_EXPANSION
    } else {
        2
    };
    let expanded = body.len() as u64 * per_byte + count as u64 * per_event;
    if let Err(refused) = reservation.grow_to(expanded) {
        return (over_budget(refused), 0);
    }
    let events = match parse_events(&source.name, headers, &body, idempotency_key) {
        Ok(events) => events,
        Err(msg) => return (error(StatusCode::BAD_REQUEST, &msg), 0),
    };
    let body_len = body.len();
    drop(body);
    let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    let count = events.len();
    match source
        .intake
        .append(events, idempotency_key.map(str::to_owned))
        .await
    {
        Ok(Appended::Stored) => (accepted(ids, false), count),
        // Stored by another request between the look-up above and this append.
        Ok(Appended::Duplicate(seen)) => (repeat(seen, &mut reservation, body_len), 0),
        Err(e) => (intake_error(&e).into_response(), 0),
    }
}

/// The answer to a repeated idempotency key: the first request's ids. The answer can be
/// far larger than its request: it is paid for from the memory budget like any other,
/// and its ids are made only then.
fn repeat(seen: Seen, reservation: &mut Reservation, body_len: usize) -> Response {
    let answer = seen.bytes() + seen.count() as u64 * 8;
    if let Err(refused) = reservation.grow_to(body_len as u64 + answer) {
        return over_budget(refused);
    }
    accepted(seen.ids(), true)
}

/// The answer to a failed durable append, with `Retry-After`: the one table from
/// [`IntakeError`] to an HTTP status, for every HTTP surface that appends (ingest and
/// the queue API's produce).
pub fn intake_error(e: &IntakeError) -> ApiError {
    let (status, retry_after) = match e {
        IntakeError::Busy { retry_after } => (StatusCode::TOO_MANY_REQUESTS, *retry_after),
        IntakeError::Full(_) => (StatusCode::TOO_MANY_REQUESTS, Duration::from_secs(5)),
        IntakeError::NoSpace(_) => (StatusCode::INSUFFICIENT_STORAGE, Duration::from_secs(10)),
        IntakeError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(30)),
        IntakeError::InFlight(_) => (StatusCode::CONFLICT, Duration::from_secs(1)),
        IntakeError::RepeatedKey(_) => return ApiError::bad_request(e.to_string()),
    };
    ApiError::new(status, e.to_string()).retry_after(retry_after.as_secs().max(1))
}

fn unauthorized() -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token: send `Authorization: Bearer <token>` with the source's token",
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The answer to a request that does not fit in the memory budget.
fn over_budget(refused: Refused) -> Response {
    match refused {
        Refused::TooLarge { wanted, total } => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "this request would hold {wanted} bytes in memory, more than \
                 server.max_request_memory ({total} bytes); send fewer or smaller events per request"
            ),
        ),
        Refused::Busy => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many request bytes in flight (server.max_request_memory); retry shortly",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
    }
}

/// Whether `error` or one of its causes is an `E`.
fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<E>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// How many events [`parse_events`] would make of this body, without making them.
pub fn count_events(headers: &HeaderMap, body: &[u8]) -> Result<usize, String> {
    let content_type = header_str(headers, "content-type")?.unwrap_or_default();
    if is_cloudevents_batch(content_type) {
        let batch: Vec<serde::de::IgnoredAny> = serde_json::from_slice(body)
            .map_err(|e| format!("a CloudEvents batch must be a JSON array of CloudEvents: {e}"))?;
        return Ok(batch.len());
    }
    if !is_ndjson(content_type) {
        return Ok(1);
    }
    Ok(body
        .split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .count())
}

/// The media type of `content_type` without its parameters.
fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

fn is_cloudevents_batch(content_type: &str) -> bool {
    essence(content_type).eq_ignore_ascii_case(cloudevents::BATCH_CONTENT_TYPE)
}

fn is_cloudevent(content_type: &str) -> bool {
    essence(content_type).eq_ignore_ascii_case("application/cloudevents+json")
}

fn is_ndjson(content_type: &str) -> bool {
    let essence = essence(content_type);
    [
        "application/x-ndjson",
        "application/jsonl",
        "application/json-seq",
    ]
    .iter()
    .any(|t| essence.eq_ignore_ascii_case(t))
}

/// Turns a request body into events. Errors name the problem (and the NDJSON line).
pub fn parse_events(
    source: &str,
    headers: &HeaderMap,
    body: &Bytes,
    idempotency_key: Option<&str>,
) -> Result<Vec<Event>, String> {
    let content_type = header_str(headers, "content-type")?.unwrap_or("application/octet-stream");
    let x_key = headers.get("x-key").map(|v| v.as_bytes().to_vec());
    let timestamp_ms = now_ms();
    let mut common: Vec<(String, String)> = idempotency_key
        .map(|k| vec![(IDEMPOTENCY_HEADER.to_owned(), k.to_owned())])
        .unwrap_or_default();
    let id_for = |n: Option<usize>| match (idempotency_key, n) {
        (Some(k), None) => k.to_owned(),
        (Some(k), Some(n)) => format!("{k}-{n}"),
        (None, _) => uuid::Uuid::now_v7().to_string(),
    };
    // The key: `x-key`, else the CloudEvent's `partitionkey`.
    let key_of = |attributes: &[(String, String)]| {
        x_key.clone().or_else(|| {
            attributes
                .iter()
                .find(|(name, _)| name == "ce-partitionkey")
                .map(|(_, key)| key.as_bytes().to_vec())
        })
    };
    let received = |id: String, r: cloudevents::Received| {
        let key = key_of(&r.headers);
        let mut headers = common.clone();
        headers.extend(r.headers);
        Event {
            id: id.into(),
            source: source.into(),
            kind: KIND_MESSAGE.into(),
            key,
            payload: r.payload,
            content_type: r.content_type.into(),
            headers,
            timestamp_ms,
            payload_is_compact_json: false,
        }
    };
    if is_cloudevent(content_type) {
        let raw: &RawValue = serde_json::from_slice(body).map_err(|e| {
            format!("invalid JSON: {e}; a structured CloudEvent is one JSON object")
        })?;
        let event = cloudevents::parse_structured(raw)?;
        return Ok(vec![received(id_for(None), event)]);
    }
    if is_cloudevents_batch(content_type) {
        let batch: Vec<&RawValue> = serde_json::from_slice(body)
            .map_err(|e| format!("a CloudEvents batch must be a JSON array of CloudEvents: {e}"))?;
        if batch.is_empty() {
            return Err("the CloudEvents batch has no events".to_owned());
        }
        return batch
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                let event = cloudevents::parse_structured(raw).map_err(|e| {
                    format!(
                        "CloudEvent {} of the batch: {e}; nothing from this request was accepted",
                        i + 1
                    )
                })?;
                Ok(received(id_for(Some(i)), event))
            })
            .collect();
    }
    let mut attributes = Vec::new();
    for (name, value) in headers {
        if !name.as_str().starts_with(cloudevents::HEADER_PREFIX) {
            continue;
        }
        let value = value
            .to_str()
            .map_err(|_| format!("header `{name}` is not valid text"))?;
        if let Some((attribute, value)) = cloudevents::attribute_from_header(name.as_str(), value)?
        {
            attributes.push((attribute, value));
        }
    }
    if !attributes.is_empty() && is_ndjson(content_type) {
        return Err(
            "a CloudEvent in binary mode (`ce-*` headers) is one event: send several as \
             application/cloudevents-batch+json, each with its own id"
                .to_owned(),
        );
    }
    if !attributes.is_empty() {
        // Binary mode: the body is the data, the `ce-*` headers its attributes.
        cloudevents::check_required(&attributes)
            .map_err(|e| format!("{e} (binary mode: `ce-*` headers)"))?;
        common.extend(
            attributes
                .into_iter()
                .map(|(name, value)| (cloudevents::header_name(&name), value)),
        );
    }
    let key = key_of(&common);
    let make = |id: String, payload: Vec<u8>, content_type: &str| Event {
        id: id.into(),
        source: source.into(),
        kind: KIND_MESSAGE.into(),
        key: key.clone(),
        payload,
        content_type: content_type.into(),
        headers: common.clone(),
        timestamp_ms,
        payload_is_compact_json: false,
    };
    if is_ndjson(content_type) {
        let mut events = Vec::new();
        for (i, line) in body.split(|b| *b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(line) {
                return Err(format!(
                    "line {}: invalid JSON: {e}; nothing from this request was accepted",
                    i + 1
                ));
            }
            events.push(make(
                id_for(Some(events.len())),
                line.to_vec(),
                "application/json",
            ));
        }
        if events.is_empty() {
            return Err("the NDJSON body has no events".to_owned());
        }
        return Ok(events);
    }
    if is_json_content_type(content_type)
        && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(body)
    {
        return Err(format!(
            "invalid JSON: {e}; send valid JSON or another content type for opaque bytes"
        ));
    }
    Ok(vec![make(id_for(None), body.to_vec(), content_type)])
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, String> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| format!("header `{name}` is not valid text"))
        })
        .transpose()
}

fn accepted(ids: Vec<String>, duplicate: bool) -> Response {
    let body = switchyard_api::IngestAnswer { ids, duplicate };
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// A JSON error answer `{"error": "..."}` ([`ApiError`]).
pub fn error(status: StatusCode, message: &str) -> Response {
    ApiError::new(status, message).into_response()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests;
