//! `type = "redis"` sink.
//!
//! Each event is one stream entry: `id`, `source`, `kind`, `content-type`, `key` (when
//! the event has one), `payload` (what the sink's `format` writes) and one
//! `header:NAME` field per event header. A lane's batch is appended in one MULTI/EXEC,
//! in order; the reply of each XADD (the entry id) is the event's ack.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{Client, RedisResult};
use switchyard_config::RedisSinkConfig;
use switchyard_connector::format::{self, Body, Formatter};
use switchyard_connector::template::NameTemplate;
use switchyard_connector::{BoxFuture, BuildContext, BuildError, Outcome, RetryPolicy, Sink};
use switchyard_event::Event;
use tokio::sync::Mutex;
use tracing::warn;

use crate::fields;

/// Most events handed to one delivery attempt (one lane).
const MAX_BATCH: usize = 500;
/// Longest stream key made from an event.
const MAX_KEY: usize = 1024;

/// Builds the `redis` sink `name`: the runtime's registration calls this. The URL and TLS
/// files are checked now; the server is connected to on the first delivery.
pub fn build(
    name: &str,
    cfg: &RedisSinkConfig,
    ctx: &BuildContext<'_>,
) -> Result<Arc<dyn Sink>, BuildError> {
    let client = crate::client("sink", name, &cfg.url, &cfg.tls)?;
    let retry = cfg.retry.as_ref().map_or(
        RetryPolicy {
            max_attempts: u32::MAX,
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
        },
        RetryPolicy::from,
    );
    Ok(Arc::new(RedisSink {
        name: name.to_owned(),
        cfg: cfg.clone(),
        client,
        template: NameTemplate::parse("stream", &cfg.stream),
        connection: Mutex::new(None),
        retry,
        formatter: Formatter::for_config(cfg.format, ctx.config),
    }))
}

/// Appends events to Redis streams; see the module docs for the contract.
pub struct RedisSink {
    name: String,
    cfg: RedisSinkConfig,
    client: Client,
    template: NameTemplate,
    /// Shared by the lanes (it multiplexes); replaced after it breaks.
    connection: Mutex<Option<MultiplexedConnection>>,
    retry: RetryPolicy,
    formatter: Formatter,
}

impl RedisSink {
    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = crate::connect(&self.client, self.cfg.timeout).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn forget_connection(&self) {
        *self.connection.lock().await = None;
    }

    /// Appends the XADD of `event` to `pipe`, or answers why it cannot be written.
    fn xadd(
        &self,
        pipe: &mut redis::Pipeline,
        event: &Event,
        now_us: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), Outcome> {
        let permanent = |error: String| Outcome::Permanent { error };
        let key = self.template.render_borrowed(event).map_err(permanent)?;
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(permanent(format!(
                "stream {:?} gives a key of {} bytes for event {}; a stream key has 1 to {MAX_KEY}",
                self.template.text(),
                key.len(),
                event.id
            )));
        }
        buf.clear();
        let (payload, content_type): (&[u8], &str) = if self.formatter.is_native() {
            (&event.payload, &event.content_type)
        } else {
            match self.formatter.write(event, now_us, buf) {
                Body::Skip => return Err(Outcome::Skipped),
                Body::Native => (&event.payload, &event.content_type),
                Body::Written { .. } => (buf.as_slice(), self.formatter.written_content_type()),
            }
        };
        // Sized up front: growing a command's buffers argument by argument was a tenth
        // of the sink's CPU.
        let fields = 4 + usize::from(event.key.is_some()) + 1 + event.headers.len();
        let data = key.len()
            + 40
            + event.id.len()
            + event.source.len()
            + event.kind.len()
            + content_type.len()
            + event.key.as_ref().map_or(0, Vec::len)
            + payload.len()
            + event
                .headers
                .iter()
                .map(|(n, v)| fields::HEADER_PREFIX.len() + n.len() + v.len())
                .sum::<usize>()
            + 16 * fields;
        let mut cmd = redis::Cmd::with_capacity(6 + 2 * fields, data);
        cmd.arg("XADD").arg(&*key);
        if let Some(maxlen) = self.cfg.maxlen {
            cmd.arg("MAXLEN").arg("~").arg(maxlen);
        }
        cmd.arg("*")
            .arg(fields::ID)
            .arg(&*event.id)
            .arg(fields::SOURCE)
            .arg(&*event.source)
            .arg(fields::KIND)
            .arg(&*event.kind)
            .arg(fields::CONTENT_TYPE)
            .arg(content_type);
        if let Some(k) = &event.key {
            cmd.arg(fields::KEY).arg(k.as_slice());
        }
        cmd.arg(fields::PAYLOAD).arg(payload);
        for (name, value) in &event.headers {
            cmd.arg(format!("{}{name}", fields::HEADER_PREFIX))
                .arg(value);
        }
        pipe.add_command(cmd);
        Ok(())
    }

    async fn attempt(&self, batch: &[Arc<Event>]) -> Vec<Outcome> {
        let retry_all = |error: String| {
            batch
                .iter()
                .map(|_| Outcome::Retry {
                    error: error.clone(),
                    retry_after: None,
                })
                .collect::<Vec<_>>()
        };
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        let mut pipe = redis::Pipeline::with_capacity(batch.len());
        pipe.atomic().ignore_errors();
        let mut sent = Vec::with_capacity(batch.len());
        let now_us = format::now_us();
        let mut buf = Vec::new();
        for (i, event) in batch.iter().enumerate() {
            match self.xadd(&mut pipe, event, now_us, &mut buf) {
                Ok(()) => sent.push(i),
                Err(outcome) => outcomes[i] = Some(outcome),
            }
        }
        if !sent.is_empty() {
            let mut connection = match self.connection().await {
                Ok(c) => c,
                Err(e) => {
                    return retry_all(format!(
                        "cannot connect to redis at {}: {e}",
                        switchyard_config::redact::url(&self.cfg.url)
                    ));
                }
            };
            // Each reply is an entry id or an error; kept as the parsed value (the id
            // itself is not needed, only that there is one).
            let replies: Vec<RedisResult<redis::Value>> = match pipe
                .query_async(&mut connection)
                .await
            {
                Ok(replies) => replies,
                Err(e) => {
                    if crate::connection_lost(&e) {
                        self.forget_connection().await;
                    }
                    if e.code() == Some("OOM") || e.code() == Some("EXECABORT") {
                        warn!(sink = %self.name, error = %e,
                            "redis refuses writes (maxmemory reached?); events wait and are retried");
                    }
                    // Out of memory, a connection lost, a timeout: the transaction did not
                    // run, or its fate is unknown; retried (an entry may then be twice in
                    // the stream, never missing).
                    return retry_all(format!("redis XADD failed: {e}"));
                }
            };
            if replies.len() != sent.len() {
                return retry_all(format!(
                    "redis answered {} replies to {} XADDs",
                    replies.len(),
                    sent.len()
                ));
            }
            for (i, reply) in sent.into_iter().zip(replies) {
                outcomes[i] = Some(match reply {
                    Ok(redis::Value::BulkString(_) | redis::Value::SimpleString(_)) => {
                        Outcome::Delivered
                    }
                    Ok(other) => Outcome::Retry {
                        error: format!("redis answered XADD with {other:?}, not an entry id"),
                        retry_after: None,
                    },
                    Err(e) if e.code() == Some("WRONGTYPE") => Outcome::Permanent {
                        error: format!(
                            "the key of event {} holds a value that is not a stream: {e}; \
                             change `stream` or remove the key",
                            batch[i].id
                        ),
                    },
                    Err(e) => Outcome::Retry {
                        error: format!("redis XADD failed: {e}"),
                        retry_after: None,
                    },
                });
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("every event answered"))
            .collect()
    }
}

impl Sink for RedisSink {
    fn deliver<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(self.attempt(batch))
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    fn concurrency(&self) -> usize {
        self.cfg.concurrency.max(1)
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }
}
