//! NATS JetStream's side of `bench queue` (async-nats): a file-storage stream made for this
//! run and deleted after it, async publishes whose PubAcks are awaited per batch, one
//! durable pull consumer shared by every consumer connection, explicit acks sent with
//! `double_ack` (the server answers each one) for every message of a received batch at
//! once. One client connection per producer and per consumer.

use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::{FutureExt as _, StreamExt as _};

use super::{Consumer, Producer, RoundCtx, RunResult, Stamp, drive, with_cpu};

const DURABLE: &str = "workers";

pub async fn round(
    ctx: &RoundCtx<'_>,
    server_pids: &[u32],
) -> anyhow::Result<(Option<String>, RunResult)> {
    let url = &ctx.args.nats_url;
    let name = super::unique_name(&ctx.tag());
    let subject = format!("switchyard-bench.{name}");
    let admin = connect(url).await?;
    let version = admin.server_info().version;
    let js = jetstream::new(admin);
    let stream = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating the JetStream stream {name}"))?;
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(DURABLE.to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .context("creating the durable pull consumer")?;
    let result = async {
        let mut producers = Vec::new();
        for _ in 0..ctx.spec.producers {
            producers.push(NatsProducer {
                js: jetstream::new(connect(url).await?),
                subject: subject.clone(),
            });
        }
        let mut consumers = Vec::new();
        for _ in 0..ctx.spec.consumers {
            let js = jetstream::new(connect(url).await?);
            let consumer: consumer::PullConsumer = js
                .get_stream(&name)
                .await?
                .get_consumer(DURABLE)
                .await
                .map_err(|e| anyhow::anyhow!("looking up the durable consumer: {e}"))?;
            let messages = consumer
                .stream()
                .max_messages_per_batch(ctx.spec.batch)
                .messages()
                .await
                .context("starting to pull")?;
            consumers.push(NatsConsumer {
                messages,
                received: Vec::new(),
            });
        }
        with_cpu(
            server_pids,
            drive(ctx.spec, producers, consumers, ctx.deadline),
        )
        .await
    }
    .await;
    let deleted = js
        .delete_stream(&name)
        .await
        .with_context(|| format!("deleting the stream {name}"));
    let result = result?;
    deleted?;
    let note = format!(
        "nats-server {version}: JetStream file storage; a PubAck follows the write to the \
         stream's files, which the server fsyncs on its sync interval (2 min unless \
         configured), not per message"
    );
    Ok((Some(note), result))
}

async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))
}

struct NatsProducer {
    js: jetstream::Context,
    subject: String,
}

impl Producer for NatsProducer {
    async fn send(&mut self, payloads: Vec<Bytes>) -> anyhow::Result<()> {
        let mut acks = Vec::with_capacity(payloads.len());
        for p in payloads {
            acks.push(
                self.js
                    .publish(self.subject.clone(), p)
                    .await
                    .context("publishing to JetStream")?,
            );
        }
        for a in acks {
            a.await.context("waiting for a PubAck")?;
        }
        Ok(())
    }
}

struct NatsConsumer {
    messages: consumer::pull::Stream,
    received: Vec<jetstream::Message>,
}

impl NatsConsumer {
    fn take(
        &mut self,
        m: Option<Result<jetstream::Message, impl std::fmt::Display>>,
    ) -> anyhow::Result<Stamp> {
        match m {
            None => bail!("the JetStream pull stream ended"),
            Some(Err(e)) => bail!("pulling from JetStream: {e}"),
            Some(Ok(m)) => {
                let stamp = Stamp::parse(&m.payload)?;
                self.received.push(m);
                Ok(stamp)
            }
        }
    }
}

impl Consumer for NatsConsumer {
    async fn receive(&mut self, max: usize, wait: Duration) -> anyhow::Result<Vec<Stamp>> {
        self.received.clear();
        let first = match tokio::time::timeout(wait, self.messages.next()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(m) => m,
        };
        let mut stamps = vec![self.take(first)?];
        // Then whatever has arrived already, up to a batch (no waiting for more).
        while stamps.len() < max {
            match self.messages.next().now_or_never() {
                Some(m) => stamps.push(self.take(m)?),
                None => break,
            }
        }
        Ok(stamps)
    }

    async fn ack(&mut self) -> anyhow::Result<Vec<usize>> {
        let acks = self.received.iter().map(|m| m.double_ack());
        for (pos, r) in futures::future::join_all(acks)
            .await
            .into_iter()
            .enumerate()
        {
            r.map_err(|e| anyhow::anyhow!("acking message {pos} of a batch on JetStream: {e}"))?;
        }
        self.received.clear();
        Ok(Vec::new())
    }
}
