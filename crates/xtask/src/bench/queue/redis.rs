//! Redis Streams' side of `bench queue` (redis-rs with tokio): a stream key and consumer
//! group made for this run and deleted after it, XADD pipelined per batch, XREADGROUP with
//! COUNT and BLOCK, one XACK per received batch. One connection per producer and per
//! consumer. Whether this Redis keeps anything on disk is read from its config and printed.

use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;

use super::{Consumer, Producer, RoundCtx, RunResult, Stamp, drive, with_cpu};

const GROUP: &str = "workers";
const FIELD: &str = "d";

pub async fn round(
    ctx: &RoundCtx<'_>,
    server_pids: &[u32],
) -> anyhow::Result<(Option<String>, RunResult)> {
    let client = redis::Client::open(ctx.args.redis_url.as_str())
        .with_context(|| format!("the Redis URL {}", ctx.args.redis_url))?;
    let key = super::unique_name(&ctx.tag());
    let mut admin = connect(&client).await?;
    let note = durability_note(&mut admin).await;
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async::<()>(&mut admin)
        .await
        .with_context(|| format!("creating the stream {key} and its group"))?;
    let result = async {
        let mut producers = Vec::new();
        for _ in 0..ctx.spec.producers {
            producers.push(RedisProducer {
                conn: connect(&client).await?,
                key: key.clone(),
            });
        }
        let mut consumers = Vec::new();
        for c in 0..ctx.spec.consumers {
            consumers.push(RedisConsumer {
                conn: connect(&client).await?,
                key: key.clone(),
                name: format!("consumer-{c}"),
                ids: Vec::new(),
            });
        }
        with_cpu(
            server_pids,
            drive(ctx.spec, producers, consumers, ctx.deadline),
        )
        .await
    }
    .await;
    let deleted = redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut admin)
        .await
        .with_context(|| format!("deleting the stream {key}"));
    let result = result?;
    deleted?;
    Ok((Some(note), result))
}

async fn connect(client: &redis::Client) -> anyhow::Result<MultiplexedConnection> {
    // The default 500 ms response timeout would cut XREADGROUP … BLOCK short.
    let config = AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .context("connecting to Redis")
}

/// What this server keeps on disk: `appendonly` and `save` from CONFIG GET.
async fn durability_note(conn: &mut MultiplexedConnection) -> String {
    async fn get(conn: &mut MultiplexedConnection, what: &str) -> Option<String> {
        let pair: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(what)
            .query_async(conn)
            .await
            .ok()?;
        pair.get(1).cloned()
    }
    let version = redis::cmd("INFO")
        .arg("server")
        .query_async::<String>(conn)
        .await
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("redis_version:"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".to_owned());
    let aof = get(conn, "appendonly").await;
    let save = get(conn, "save").await;
    let fsync = get(conn, "appendfsync").await;
    match (aof.as_deref(), save.as_deref()) {
        (Some("no"), Some("")) => format!(
            "redis {version}: appendonly no, save \"\" — this Redis keeps nothing on disk (no \
             fsync at all): a non-durable reference, not a durable peer"
        ),
        (Some("no"), Some(save)) => format!(
            "redis {version}: appendonly no, RDB snapshots (save \"{save}\") only — no fsync \
             before an XADD reply: a non-durable reference"
        ),
        (Some("yes"), _) => format!(
            "redis {version}: appendonly yes, appendfsync {} — an XADD reply does not wait for \
             the fsync unless appendfsync is always",
            fsync.as_deref().unwrap_or("?")
        ),
        _ => format!("redis {version}: its persistence settings could not be read"),
    }
}

struct RedisProducer {
    conn: MultiplexedConnection,
    key: String,
}

impl Producer for RedisProducer {
    async fn send(&mut self, payloads: Vec<Bytes>) -> anyhow::Result<()> {
        let mut pipe = redis::pipe();
        for p in &payloads {
            pipe.cmd("XADD")
                .arg(&self.key)
                .arg("*")
                .arg(FIELD)
                .arg(&p[..]);
        }
        let ids: Vec<String> = pipe
            .query_async(&mut self.conn)
            .await
            .context("XADD pipeline")?;
        if ids.len() != payloads.len() {
            bail!("{} XADD replies for {} messages", ids.len(), payloads.len());
        }
        Ok(())
    }
}

struct RedisConsumer {
    conn: MultiplexedConnection,
    key: String,
    name: String,
    /// The entry ids of the last receive.
    ids: Vec<String>,
}

impl Consumer for RedisConsumer {
    async fn receive(&mut self, max: usize, wait: Duration) -> anyhow::Result<Vec<Stamp>> {
        self.ids.clear();
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.name)
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1))
            .arg("STREAMS")
            .arg(&self.key)
            .arg(">")
            .query_async(&mut self.conn)
            .await
            .context("XREADGROUP")?;
        let mut stamps = Vec::new();
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            let stamp = match entry.map.get(FIELD) {
                Some(redis::Value::BulkString(b)) => Stamp::parse(b)?,
                other => bail!("stream entry {} has no payload field: {other:?}", entry.id),
            };
            stamps.push(stamp);
            self.ids.push(entry.id);
        }
        Ok(stamps)
    }

    async fn ack(&mut self) -> anyhow::Result<Vec<usize>> {
        if self.ids.is_empty() {
            return Ok(Vec::new());
        }
        let acked: usize = redis::cmd("XACK")
            .arg(&self.key)
            .arg(GROUP)
            .arg(&self.ids)
            .query_async(&mut self.conn)
            .await
            .context("XACK")?;
        if acked != self.ids.len() {
            bail!("XACK took {acked} of {} entries", self.ids.len());
        }
        Ok(Vec::new())
    }
}
