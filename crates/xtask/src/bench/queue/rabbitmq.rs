//! RabbitMQ's side of `bench queue` (lapin, AMQP 0-9-1): a durable queue made for this run
//! and deleted after it, persistent messages (delivery_mode 2) published with publisher
//! confirms awaited per batch, consumers with manual acks (one `multiple` ack per received
//! batch) and a prefetch of one batch. One connection per producer and per consumer.

use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures::{FutureExt as _, StreamExt as _};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongLongUInt};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::{Consumer, Producer, RabbitQueueType, RoundCtx, RunResult, Stamp, drive, with_cpu};

pub async fn round(
    ctx: &RoundCtx<'_>,
    server_pids: &[u32],
) -> anyhow::Result<(Option<String>, RunResult)> {
    let url = &ctx.args.rabbitmq_url;
    let queue = super::unique_name(&ctx.tag());
    let admin = connect(url).await?;
    let admin_channel = admin.create_channel().await?;
    let mut arguments = FieldTable::default();
    if ctx.args.rabbitmq_queue_type == RabbitQueueType::Quorum {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    admin_channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .with_context(|| format!("declaring the durable queue {queue}"))?;
    let result = async {
        let mut producers = Vec::new();
        for _ in 0..ctx.spec.producers {
            let connection = connect(url).await?;
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            producers.push(RabbitProducer {
                _connection: connection,
                channel,
                queue: queue.clone(),
            });
        }
        let mut consumers = Vec::new();
        for c in 0..ctx.spec.consumers {
            let connection = connect(url).await?;
            let channel = connection.create_channel().await?;
            let prefetch = u16::try_from(ctx.spec.batch).unwrap_or(u16::MAX);
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await?;
            let consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    format!("bench-{c}").into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            consumers.push(RabbitConsumer {
                _connection: connection,
                channel,
                consumer,
                last_tag: None,
            });
        }
        with_cpu(
            server_pids,
            drive(ctx.spec, producers, consumers, ctx.deadline),
        )
        .await
    }
    .await;
    let deleted = admin_channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .with_context(|| format!("deleting the queue {queue}"));
    let _ = admin.close(200, "bench done".into()).await;
    let result = result?;
    deleted?;
    Ok((None, result))
}

async fn connect(url: &str) -> anyhow::Result<Connection> {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to RabbitMQ at {url}"))
}

struct RabbitProducer {
    _connection: Connection,
    channel: Channel,
    queue: String,
}

impl Producer for RabbitProducer {
    async fn send(&mut self, payloads: Vec<Bytes>) -> anyhow::Result<()> {
        let mut confirms = Vec::with_capacity(payloads.len());
        for p in &payloads {
            confirms.push(
                self.channel
                    .basic_publish(
                        "".into(),
                        self.queue.as_str().into(),
                        BasicPublishOptions::default(),
                        p,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?,
            );
        }
        for c in confirms {
            let confirmation = c.await.context("waiting for a publisher confirm")?;
            if !confirmation.is_ack() {
                bail!("RabbitMQ nacked a published message");
            }
        }
        Ok(())
    }
}

struct RabbitConsumer {
    _connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
    last_tag: Option<LongLongUInt>,
}

impl Consumer for RabbitConsumer {
    async fn receive(&mut self, max: usize, wait: Duration) -> anyhow::Result<Vec<Stamp>> {
        self.last_tag = None;
        let first = match tokio::time::timeout(wait, self.consumer.next()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(None) => bail!("the RabbitMQ consumer was cancelled"),
            Ok(Some(d)) => d.context("receiving from RabbitMQ")?,
        };
        let mut stamps = vec![Stamp::parse(&first.data)?];
        self.last_tag = Some(first.delivery_tag);
        // Then whatever has arrived already, up to a batch (no waiting for more).
        while stamps.len() < max {
            match self.consumer.next().now_or_never() {
                Some(Some(d)) => {
                    let d = d.context("receiving from RabbitMQ")?;
                    stamps.push(Stamp::parse(&d.data)?);
                    self.last_tag = Some(d.delivery_tag);
                }
                Some(None) => bail!("the RabbitMQ consumer was cancelled"),
                None => break,
            }
        }
        Ok(stamps)
    }

    async fn ack(&mut self) -> anyhow::Result<Vec<usize>> {
        // AMQP has no answer to basic.ack: done when written.
        if let Some(tag) = self.last_tag.take() {
            self.channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await
                .context("acking on RabbitMQ")?;
        }
        Ok(Vec::new())
    }
}
