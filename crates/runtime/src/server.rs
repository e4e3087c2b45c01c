//! The HTTP surface: ingest (from `switchyard-source-http`), `/healthz`, `/readyz`,
//! `/metrics`, and the admin API behind `server.admin_token`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{HeaderMap, StatusCode, header};
use prometheus_client::metrics::counter::Counter;
use switchyard_ack::Watermark;
use switchyard_api::{
    CdcStatus, DeadLettersOut, EventOut, ListQuery, MessagesOut, PurgeAnswer, RecordOut,
    ReplayAnswer, ReplayRequest, SnapshotProgress, SnapshotRequest, SnapshotStarted, SourceStatus,
};
use switchyard_config::{SourceConfig, redact};
use switchyard_event::{DecodeError, Event};
use switchyard_source_http::{
    Admin, AdminToken, ApiError, HttpSource, IngestObserver, MemoryBudget, bearer_matches, error,
};
use tokio::sync::mpsc;

use crate::Shared;
use crate::delivery::{AckToken, Delivery, dlq_headers};
use crate::metrics::{HttpLabels, Metrics, SourceLabels};
use switchyard_queue::{QueueHandle, QueueIntake};

pub use switchyard_queue::REPLAY_GROUP;

/// Counts ingest answers. The counters of a source's 200s and of its events are looked
/// up once, when the routes are built: a request then costs two atomic adds, not a
/// look-up in the metric families with labels made for it.
struct Observer {
    metrics: Arc<Metrics>,
    accepted: HashMap<String, (Counter, Counter)>,
}

impl Observer {
    fn new(metrics: Arc<Metrics>, sources: &[Arc<HttpSource>]) -> Self {
        let accepted = sources
            .iter()
            .map(|s| {
                let answers = metrics
                    .http_requests
                    .get_or_create(&HttpLabels {
                        source: s.name.clone(),
                        status: 200,
                    })
                    .clone();
                let events = metrics
                    .source_events
                    .get_or_create(&SourceLabels {
                        source: s.name.clone(),
                    })
                    .clone();
                (s.name.clone(), (answers, events))
            })
            .collect();
        Self { metrics, accepted }
    }
}

impl IngestObserver for Observer {
    fn request(&self, source: &str, status: u16, events: usize) {
        if status == 200
            && let Some((answers, accepted)) = self.accepted.get(source)
        {
            answers.inc();
            accepted.inc_by(events as u64);
            return;
        }
        self.metrics
            .http_requests
            .get_or_create(&HttpLabels {
                source: source.to_owned(),
                status,
            })
            .inc();
        if events > 0 {
            self.metrics
                .source_events
                .get_or_create(&SourceLabels {
                    source: source.to_owned(),
                })
                .inc_by(events as u64);
        }
    }
}

/// One `HttpSource` per configured `http` source, appending to its intake log.
pub fn http_sources(shared: &Shared) -> Vec<Arc<HttpSource>> {
    shared
        .config
        .sources
        .iter()
        .filter_map(|(name, s)| match s {
            SourceConfig::Http(cfg) => Some(Arc::new(HttpSource::new(
                name,
                cfg.clone(),
                Arc::new(QueueIntake(shared.intakes[name].clone())),
            ))),
            _ => None,
        })
        .collect()
}

pub fn router(shared: Arc<Shared>, sources: Vec<Arc<HttpSource>>) -> Router {
    let budget = MemoryBudget::new(shared.config.server.max_request_memory.0);
    let observer = Observer::new(shared.metrics.clone(), &sources);
    let ingest = switchyard_source_http::router(sources, Arc::new(observer), budget.clone());
    let ops = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/queues/{queue}/messages", get(list_messages))
        .route("/admin/dlq/{queue}", get(list_dead_letters))
        .route("/admin/dlq/{queue}/replay", post(replay))
        .route("/admin/dlq/{queue}/purge", post(purge))
        .route("/admin/sources/{source}/status", get(source_status))
        .route("/admin/sources/{source}/snapshot", post(source_snapshot))
        .merge(crate::console::admin_routes())
        .merge(switchyard_queue::routes().with_state(shared.broker.clone()))
        .layer(axum::middleware::from_fn_with_state(
            (shared.clone(), budget),
            reserve_body,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared);
    ingest.merge(ops).merge(crate::console::asset_routes())
}

/// The largest body the admin and queue APIs read (JSON requests; a produce batch).
const BODY_LIMIT: usize = switchyard_queue::MAX_BODY;

/// Guards every request that carries a body (all of them admin or queue API calls):
/// the admin token is checked before a byte of the body is read, then what the body may
/// hold in memory is reserved (twice its `Content-Length` for the parsed form, or twice
/// [`BODY_LIMIT`] when it declares none), so that requests in flight together stay within
/// `server.max_request_memory`; past it the answer is 429.
async fn reserve_body(
    State((shared, budget)): State<(Arc<Shared>, MemoryBudget)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // GET handlers never read a body (hyper discards one as it arrives).
    let bodyless =
        declared == Some(0) || matches!(*request.method(), http::Method::GET | http::Method::HEAD);
    if bodyless {
        return next.run(request).await;
    }
    if let Err(refused) = authorize(&shared, request.headers()) {
        return refused.into_response();
    }
    let bytes = match declared {
        Some(n) if n > BODY_LIMIT as u64 => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is larger than {BODY_LIMIT} bytes; send smaller batches"),
            );
        }
        Some(n) => n,
        None => BODY_LIMIT as u64,
    };
    // The body and the values parsed from it.
    let _reservation = match budget.try_reserve(bytes * 2) {
        Ok(r) => r,
        Err(_) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many request bytes in flight (server.max_request_memory); retry shortly",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
            return r;
        }
    };
    next.run(request).await
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    match readiness(&shared) {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => error(StatusCode::SERVICE_UNAVAILABLE, &why),
    }
}

/// Whether switchyard is ready (`/readyz`, the console's banner); `Err` says why not.
pub(crate) fn readiness(shared: &Shared) -> Result<(), String> {
    let broken: Vec<_> = shared
        .queues
        .values()
        .chain(shared.intakes.values())
        .filter(|q| q.is_poisoned())
        .map(|q| q.name.clone())
        .collect();
    if !broken.is_empty() {
        return Err(format!(
            "queues refuse writes after an fsync failure: {}; restart switchyard",
            broken.join(", ")
        ));
    }
    let stopped: Vec<String> = shared
        .sources
        .iter()
        .filter_map(|(name, source)| source.stopped().map(|why| format!("{name}: {why}")))
        .collect();
    if !stopped.is_empty() {
        return Err(format!("sources stopped: {}", stopped.join("; ")));
    }
    // A standby is alive (/healthz) but not ready: a readiness probe tells the leader.
    let standby: Vec<String> = shared
        .cdc
        .iter()
        .filter_map(|(name, control)| {
            let view = control.status.view();
            (view.role == switchyard_source_postgres::stream::ROLE_STANDBY).then(|| {
                format!(
                    "standby: another instance reads slot {} (source {name}, lock key {})",
                    view.slot, view.lock_key
                )
            })
        })
        .collect();
    if !standby.is_empty() {
        return Err(standby.join("; "));
    }
    let readers = shared.stopped_readers.list();
    if !readers.is_empty() {
        return Err(format!(
            "pipeline readers stopped (they resume after a restart): {}",
            readers.join("; ")
        ));
    }
    Ok(())
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(token) = &shared.config.server.metrics_token
        && !bearer_matches(&headers, token)
    {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: send `Authorization: Bearer <server.metrics_token>`",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
        .into_response()
}

/// Checks the admin bearer token; `Err` is the answer to send.
pub(crate) fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    switchyard_queue::authorize(&shared.broker, headers)
}

impl AdminToken for Shared {
    fn admin_token(&self) -> Option<&str> {
        self.config.server.admin_token.as_deref()
    }
}

/// The queue called `name`, or 404 naming the queues there are.
pub(crate) fn find_queue(shared: &Shared, name: &str) -> Result<Arc<QueueHandle>, ApiError> {
    switchyard_queue::find_queue(&shared.broker, name)
}

fn find_cdc<'a>(shared: &'a Shared, name: &str) -> Result<&'a crate::CdcControl, ApiError> {
    shared.cdc.get(name).ok_or_else(|| {
        let known: Vec<_> = shared.cdc.keys().map(String::as_str).collect();
        ApiError::not_found(format!(
            "no running postgres_cdc source named `{name}`; running ones: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))
    })
}

/// A Postgres source's replication and snapshot status.
async fn source_status(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    _: Admin,
) -> Result<Json<SourceStatus>, ApiError> {
    let view = find_cdc(&shared, &name)?.status.view();
    Ok(Json(SourceStatus {
        source: name,
        status: CdcStatus {
            slot: view.slot,
            role: view.role.to_owned(),
            lock_key: view.lock_key,
            connected: view.connected,
            confirmed_lsn: view.confirmed_lsn,
            slot_lag_bytes: view.slot_lag_bytes,
            events: view.events,
            streaming_transactions: view.streaming_transactions as u64,
            streaming_buffered_bytes: view.streaming_buffered_bytes as u64,
            spilled_bytes: view.spilled_bytes,
            last_error: view.last_error,
            stopped: view.stopped,
            reconnects: view.reconnects,
            snapshot: view
                .snapshot
                .into_iter()
                .map(|(table, s)| {
                    let progress = SnapshotProgress {
                        state: s.state.to_owned(),
                        rows_emitted: s.rows_emitted,
                        rows_acknowledged: s.rows_acknowledged,
                        rows_estimate: s.rows_estimate,
                        rows_per_second: s.rows_per_second,
                        eta_seconds: s.eta_seconds,
                        filter: s.filter,
                        error: s.error,
                    };
                    (table, progress)
                })
                .collect(),
        },
    }))
}

/// Takes the snapshot of one table again (`switchyard snapshot TABLE`).
async fn source_snapshot(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    _: Admin,
    body: Result<Json<SnapshotRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<SnapshotStarted>, ApiError> {
    let control = find_cdc(&shared, &name)?;
    let request = match body {
        Ok(b) => b.0,
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "expected a JSON body {{\"table\": \"schema.table\"}}: {e}"
            )));
        }
    };
    let table = request.table;
    use switchyard_source_postgres::SnapshotAction;
    let (action, done) = match (request.action.as_deref(), request.filter) {
        (None | Some("start"), filter) => (SnapshotAction::Start { filter }, "started"),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "`where` goes with starting a snapshot, not with pause, resume or cancel",
            ));
        }
        (Some("pause"), None) => (SnapshotAction::Pause, "paused"),
        (Some("resume"), None) => (SnapshotAction::Resume, "resumed"),
        (Some("cancel"), None) => (SnapshotAction::Cancel, "cancelled"),
        (Some(other), None) => {
            return Err(ApiError::bad_request(format!(
                "unknown snapshot action `{other}`: use start, pause, resume or cancel"
            )));
        }
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let sent = control
        .commands
        .send(switchyard_source_postgres::Command::Snapshot {
            table: table.clone(),
            action,
            reply,
        })
        .await;
    if sent.is_err() {
        return Err(ApiError::unavailable(format!(
            "source `{name}` has stopped; see its log"
        )));
    }
    match answer.await {
        Ok(Ok(())) => Ok(Json(SnapshotStarted {
            source: name,
            table,
            snapshot: done.into(),
        })),
        Ok(Err(e)) => Err(ApiError::bad_request(e)),
        Err(_) => Err(ApiError::unavailable(format!(
            "source `{name}` stopped before answering; see its log"
        ))),
    }
}

/// Records of a queue from `from(partition)`, at most `limit` in all, with their
/// partition and offset; events redacted for an admin answer ([`redacted`]).
type Records = Vec<(u32, u64, Result<Event, DecodeError>)>;

async fn read_records(
    queue: Arc<QueueHandle>,
    from: impl Fn(u32) -> u64,
    limit: usize,
) -> Result<Records, ApiError> {
    let starts: Vec<u64> = (0..queue.partitions().len() as u32).map(from).collect();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for (p, log) in queue.partitions().iter().enumerate() {
            if out.len() >= limit {
                break;
            }
            let records = log
                .read(starts[p], limit - out.len(), 16 << 20)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            for r in records {
                let event = Event::decode_record(&r.payload).map(redacted);
                out.push((p as u32, r.offset, event));
            }
        }
        Ok(out)
    })
    .await
    .expect("read task")
}

/// The records of [`read_records`] as they are answered.
fn records_out(records: &Records) -> Vec<RecordOut<'_>> {
    records
        .iter()
        .map(|(partition, offset, event)| RecordOut {
            partition: *partition,
            offset: *offset,
            event: EventOut::of(event),
        })
        .collect()
}

/// A stored event for an admin answer: headers named like secrets (`authorization`,
/// `*token*`, …) are masked and URLs in header values (a dead letter's error, also one
/// stored by an older version) lose their passwords and query values. Only the answer
/// changes: a replay sends the stored event as it is.
fn redacted(mut event: Event) -> Event {
    for (name, value) in &mut event.headers {
        *value = if redact::is_secret_name(name) {
            redact::MASK.to_owned()
        } else {
            redact::text(value).into_owned()
        };
    }
    event
}

/// How many records a listing answers: `limit` (default 100), at most 10,000.
fn list_limit(q: &ListQuery) -> usize {
    q.limit
        .unwrap_or(ListQuery::DEFAULT_LIMIT)
        .min(ListQuery::MAX_LIMIT)
}

async fn list_messages(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    _: Admin,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let queue = find_queue(&shared, &name)?;
    let offset = q.offset.unwrap_or(0);
    let records = read_records(queue, |_| offset, list_limit(&q)).await?;
    Ok(Json(MessagesOut {
        queue: &name,
        messages: records_out(&records),
    })
    .into_response())
}

/// Dead letters not yet replayed.
async fn list_dead_letters(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    _: Admin,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let queue = find_queue(&shared, &name)?;
    let from_queue = queue.clone();
    let offset = q.offset;
    let from = move |p| offset.unwrap_or_else(|| from_queue.committed(REPLAY_GROUP, p));
    let records = read_records(queue, from, list_limit(&q)).await?;
    Ok(Json(DeadLettersOut {
        queue: &name,
        dead_letters: records_out(&records),
    })
    .into_response())
}

/// Drops every dead letter listed now: the replay position moves to the end.
async fn purge(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    _: Admin,
) -> Result<Json<PurgeAnswer>, ApiError> {
    let queue = find_queue(&shared, &name)?;
    let _one_at_a_time = dead_letter_op(&shared)?;
    let mut purged = 0;
    let mut ends = Vec::new();
    for (p, log) in queue.partitions().iter().enumerate() {
        let end = log.durable_end();
        purged += end.saturating_sub(queue.committed(REPLAY_GROUP, p as u32));
        ends.push((p as u32, end));
    }
    let q = queue.clone();
    let committed = tokio::task::spawn_blocking(move || q.commit_blocking(REPLAY_GROUP, &ends))
        .await
        .expect("commit task");
    committed.map_err(|e| ApiError::internal(e.to_string()))?;
    tracing::warn!(queue = %name, purged, "dead letters purged");
    Ok(Json(PurgeAnswer {
        queue: name,
        purged,
    }))
}

/// Most event ids one replay request may pick.
const MAX_REPLAY_IDS: usize = 10_000;

/// The dead-letter lock, or 409 while another replay or purge runs.
fn dead_letter_op(shared: &Shared) -> Result<tokio::sync::MutexGuard<'_, ()>, ApiError> {
    shared.dead_letter_ops.try_lock().map_err(|_| {
        ApiError::conflict(
            "another dead-letter replay or purge is running; try again when it has answered",
        )
    })
}

/// Sends dead letters back to the sink that failed them, and moves the queue's replay
/// position past those that were delivered (or dead-lettered again, at the end of the
/// queue). Answers when every replayed event completed.
async fn replay(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    _: Admin,
    body: axum::body::Bytes,
) -> Result<Json<ReplayAnswer>, ApiError> {
    // The body is optional; one that is there must be a replay request (400 otherwise,
    // with the JSON error body every answer of the API has).
    let req: ReplayRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ReplayRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "expected a JSON body {{\"sink\": \"…\", \"limit\": N}} (both optional): {e}"
            ))
        })?
    };
    let queue = find_queue(&shared, &name)?;
    if req.ids.len() > MAX_REPLAY_IDS {
        return Err(ApiError::bad_request(format!(
            "{} ids: at most {MAX_REPLAY_IDS} at once; replay the rest in another request",
            req.ids.len()
        )));
    }
    let ids: std::collections::HashSet<&str> = req.ids.iter().map(String::as_str).collect();
    let _one_at_a_time = dead_letter_op(&shared)?;
    let mut replayed = 0u64;
    let mut skipped = 0u64;
    let mut budget = req.limit.unwrap_or(ReplayRequest::DEFAULT_LIMIT);
    for p in 0..queue.partitions().len() as u32 {
        let start = queue.committed(REPLAY_GROUP, p);
        let log = queue.partitions()[p as usize].clone();
        let records = match tokio::task::spawn_blocking(move || log.read(start, budget, 64 << 20))
            .await
            .expect("read task")
        {
            Ok(r) => r,
            Err(e) => return Err(ApiError::internal(e.to_string())),
        };
        budget -= records.len();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut mark = Watermark::new(start);
        for r in &records {
            mark.track(r.offset).expect("offsets increase");
            let Ok(mut event) = Event::decode_record(&r.payload) else {
                // Undecodable: nothing can replay it. A replay of everything moves past
                // it; a replay of picked ids leaves it for the operator to purge.
                if ids.is_empty() {
                    let _ = tx.send(r.offset);
                }
                skipped += 1;
                continue;
            };
            let sink_name = event.header(dlq_headers::SINK).map(str::to_owned);
            // Not chosen by id: skipped like a dead letter of another sink.
            let chosen = ids.is_empty() || ids.contains(event.id.as_str());
            let origin = event
                .header(dlq_headers::QUEUE)
                .filter(|_| sink_name.is_none() && req.sink.is_none())
                .filter(|_| chosen)
                .and_then(|q| shared.queue(q))
                .cloned();
            if let Some(origin) = origin {
                // A work-group message that used up its deliveries: back to its queue, with
                // a fresh delivery count.
                event
                    .headers
                    .retain(|(n, _)| !n.starts_with("x-switchyard-dead-letter-"));
                if let Err(e) = origin.append(std::slice::from_ref(&event)).await {
                    return Err(ApiError::unavailable(format!(
                        "cannot append to queue `{}`: {e}",
                        origin.name
                    )));
                }
                let _ = tx.send(r.offset);
                replayed += 1;
                continue;
            }
            let pipeline = event
                .header(dlq_headers::PIPELINE)
                .unwrap_or("replay")
                .to_owned();
            let target = sink_name.as_deref().filter(|_| chosen).and_then(|s| {
                let wanted = req.sink.as_deref().is_none_or(|w| w == s);
                shared.sinks.get(s).filter(|_| wanted)
            });
            let Some(sink) = target else {
                // Not selected: stays in the queue for a later replay; we stop the
                // replay position here by not completing it.
                skipped += 1;
                continue;
            };
            event
                .headers
                .retain(|(n, _)| !n.starts_with("x-switchyard-dead-letter-"));
            let delivery = Delivery {
                events: vec![Arc::new(event)],
                ack: AckToken::new(1, r.offset, tx.clone()),
                pipeline: Arc::from(pipeline.as_str()),
                dead_letter: queue.clone(),
            };
            if sink.dispatch(delivery).await.is_err() {
                return Err(ApiError::unavailable("sink is shutting down"));
            }
            replayed += 1;
        }
        drop(tx);
        while let Some(offset) = rx.recv().await {
            let _ = mark.complete(offset);
        }
        let low = mark.low_watermark();
        let q = queue.clone();
        let committed =
            tokio::task::spawn_blocking(move || q.commit_blocking(REPLAY_GROUP, &[(p, low)]))
                .await
                .expect("commit task");
        if let Err(e) = committed {
            return Err(ApiError::internal(e.to_string()));
        }
        if budget == 0 {
            break;
        }
    }
    tokio::time::sleep(Duration::ZERO).await;
    Ok(Json(ReplayAnswer {
        queue: name,
        replayed,
        skipped,
    }))
}
