//! RabbitMQ's side of `bench connectors` (lapin): two durable queues made for this run and
//! deleted after it, one filled by the raw publisher and one by switchyard's sink (through
//! the default exchange, routed by queue name); each is then read by its own kind of
//! reader, since reading a RabbitMQ queue consumes it.

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

use super::super::kafka::{Message, queue_drain};
use super::{
    ConnectorsArgs, ENVELOPE_CONTENT_TYPE, ENVELOPE_KIND, ENVELOPE_SOURCE, Measured, PUBLISHERS,
    READ_BATCH, WINDOW, envelope_id, sy_source, unique,
};

pub(super) fn measure(
    rt: &tokio::runtime::Runtime,
    args: &ConnectorsArgs,
    bin: &Path,
    dir: &Path,
    messages: &[Message],
) -> anyhow::Result<Measured> {
    let url = args.rabbitmq_url.as_str();
    let raw = unique("swb-raw-");
    let sy = unique("swb-sy-");
    let admin = rt.block_on(async {
        let connection = connect(url).await?;
        let channel = connection.create_channel().await?;
        for queue in [&raw, &sy] {
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("declaring the durable queue {queue}"))?;
        }
        anyhow::Ok((connection, channel))
    })?;
    let measured = (|| {
        let raw_publish = rt.block_on(publish(url, &raw, messages))?;
        let sink = format!(
            "type = \"rabbitmq\"\nurl = \"{url}\"\nexchange = \"\"\nrouting_key = \"{sy}\"\n"
        );
        let sy_sink = queue_drain(rt, bin, &dir.join("sink"), &sink, messages)?;
        let raw_read = rt.block_on(read(url, &raw, messages.len()))?;
        let source = format!("type = \"rabbitmq\"\nurl = \"{url}\"\nqueue = \"{sy}\"\n");
        let sy_source = sy_source(rt, bin, dir, &source, messages.len())?;
        anyhow::Ok(Measured {
            raw_publish,
            sy_sink,
            raw_read,
            sy_source,
        })
    })();
    rt.block_on(async {
        let (connection, channel) = admin;
        for queue in [&raw, &sy] {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = connection.close(200, "bench done".into()).await;
    });
    measured
}

async fn connect(url: &str) -> anyhow::Result<Connection> {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to RabbitMQ at {url}"))
}

/// Events/s of lapin publishing `messages` as persistent messages to `queue` (publisher
/// confirms, [`WINDOW`] unconfirmed per channel, [`PUBLISHERS`] connections).
async fn publish(url: &str, queue: &str, messages: &[Message]) -> anyhow::Result<f64> {
    let mut channels = Vec::new();
    for _ in 0..PUBLISHERS {
        let connection = connect(url).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channels.push((connection, channel));
    }
    let chunk = messages.len().div_ceil(PUBLISHERS).max(1);
    // Made before the clock starts: the ids are the events', not the client's work.
    let parts: Vec<Vec<(String, String, Bytes)>> = messages
        .chunks(chunk)
        .enumerate()
        .map(|(t, part)| {
            part.iter()
                .enumerate()
                .map(|(i, m)| (envelope_id(t * chunk + i), m.key.clone(), m.payload.clone()))
                .collect()
        })
        .collect();
    let start = Instant::now();
    let tasks = parts
        .into_iter()
        .zip(channels)
        .map(|(part, (connection, channel))| {
            let queue = queue.to_owned();
            tokio::spawn(async move {
                let mut confirms = VecDeque::with_capacity(WINDOW);
                for (id, key, payload) in &part {
                    // The properties and headers the rabbitmq sink writes
                    // (docs/decisions/0025).
                    let mut table = FieldTable::default();
                    for (name, value) in [
                        ("switchyard-id", id.as_str()),
                        ("switchyard-source", ENVELOPE_SOURCE),
                        ("switchyard-kind", ENVELOPE_KIND),
                    ] {
                        table.insert(name.into(), AMQPValue::LongString(value.into()));
                    }
                    table.insert(
                        "switchyard-key".into(),
                        AMQPValue::LongString(key.as_bytes().into()),
                    );
                    let properties = BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type(ENVELOPE_CONTENT_TYPE.into())
                        .with_timestamp(1_700_000_000)
                        .with_headers(table)
                        .with_message_id(id.as_str().into());
                    confirms.push_back(
                        channel
                            .basic_publish(
                                "".into(),
                                queue.as_str().into(),
                                BasicPublishOptions::default(),
                                payload,
                                properties,
                            )
                            .await
                            .context("publishing")?,
                    );
                    if confirms.len() >= WINDOW
                        && let Some(confirm) = confirms.pop_front()
                    {
                        confirmed(confirm.await)?;
                    }
                }
                for confirm in confirms {
                    confirmed(confirm.await)?;
                }
                drop(connection);
                anyhow::Ok(())
            })
        })
        .collect::<Vec<_>>();
    for task in futures::future::join_all(tasks).await {
        task.context("a publisher panicked")??;
    }
    Ok(messages.len() as f64 / start.elapsed().as_secs_f64())
}

fn confirmed(confirm: lapin::Result<lapin::Confirmation>) -> anyhow::Result<()> {
    if !confirm.context("waiting for a publisher confirm")?.is_ack() {
        bail!("RabbitMQ nacked a published message");
    }
    Ok(())
}

/// Events/s of one consumer reading the `n` messages of `queue` (prefetch [`READ_BATCH`],
/// one `multiple` ack per half of it, as switchyard's source acks).
async fn read(url: &str, queue: &str, n: usize) -> anyhow::Result<f64> {
    let connection = connect(url).await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(READ_BATCH as u16, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .context("consuming")?;
    let mut read = 0;
    let mut start = None;
    while read < n {
        let delivery = tokio::time::timeout(Duration::from_secs(60), consumer.next())
            .await
            .context("no message for 60 s")?
            .context("the consumer was cancelled")?
            .context("receiving")?;
        start.get_or_insert_with(Instant::now);
        read += 1;
        if read % (READ_BATCH / 2) == 0 || read == n {
            channel
                .basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true })
                .await
                .context("acking")?;
        }
    }
    let start = start.unwrap_or_else(Instant::now);
    let rate = (n - 1).max(1) as f64 / start.elapsed().as_secs_f64();
    let _ = connection.close(200, "bench done".into()).await;
    Ok(rate)
}
