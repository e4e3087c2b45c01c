//! The `kafka` source: one consumer-group member per pipeline reader.
//!
//! Positions are sequential per run (from 0); the consumer maps them to Kafka offsets and
//! commits, per partition, only offsets below the reader's low watermark — on every
//! commit, on partition revoke, and when the feed is dropped at shutdown. A restart
//! resumes at the committed offsets, so nothing unacknowledged is skipped.

use switchyard_config::KafkaSourceConfig;
use switchyard_connector::{Batch, BoxFuture, BuildContext, BuildError, Feed, FeedError, Source};

use crate::KafkaConsumer;

/// A configured `kafka` source.
pub struct KafkaSource {
    name: String,
    config: KafkaSourceConfig,
}

/// Builds the `kafka` source `name`: the runtime's registration calls this.
///
/// A consumer group hands each message to one member, so a source read by two
/// pipelines would split its messages between them: that is refused here.
pub fn build(
    name: &str,
    cfg: &KafkaSourceConfig,
    ctx: &BuildContext<'_>,
) -> Result<Box<dyn Source>, BuildError> {
    let readers = ctx.readers_of(name);
    if readers.len() > 1 {
        return Err(BuildError::new(format!(
            "kafka source `{name}` is read by {} pipelines, but its consumer group `{}` hands each message to one of them; declare one kafka source (with its own group) per pipeline",
            readers.len(),
            cfg.group
        )));
    }
    Ok(Box::new(KafkaSource {
        name: name.to_string(),
        config: cfg.clone(),
    }))
}

impl Source for KafkaSource {
    /// Joins the consumer group for the topics (the broker may be down: it is waited
    /// for). One feed: the group spreads the topics' partitions over its members.
    fn open<'a>(
        &'a self,
        _pipeline: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Box<dyn Feed>>, BuildError>> {
        Box::pin(async move {
            let consumer = KafkaConsumer::start(&self.name, &self.config.group, &self.config)
                .map_err(|e| BuildError::from_error(&e))?;
            Ok(vec![Box::new(KafkaFeed {
                consumer: Some(consumer),
            }) as Box<dyn Feed>])
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// A Kafka consumer as a pipeline reader's [`Feed`].
pub struct KafkaFeed {
    consumer: Option<KafkaConsumer>,
}

impl KafkaFeed {
    fn consumer(&mut self) -> &mut KafkaConsumer {
        self.consumer.as_mut().expect("present until dropped")
    }
}

impl Feed for KafkaFeed {
    fn start(&self) -> u64 {
        0
    }

    fn next(&mut self, max: usize) -> BoxFuture<'_, Result<Option<Batch>, FeedError>> {
        Box::pin(async move {
            match self.consumer().next(max).await {
                Ok(events) => Ok(events.map(Batch::from_iter)),
                Err(e) => Err(FeedError::Permanent(e)),
            }
        })
    }

    fn commit(&mut self, low: u64) -> BoxFuture<'_, Result<(), FeedError>> {
        let result = self.consumer().commit(low).map_err(FeedError::Transient);
        Box::pin(std::future::ready(result))
    }

    fn lag(&self, low: u64) -> u64 {
        self.consumer
            .as_ref()
            .map_or(0, |c| c.handed_out().saturating_sub(low))
    }

    fn partition(&self) -> u32 {
        0
    }
}

impl Drop for KafkaFeed {
    fn drop(&mut self) {
        // Closing commits the final offsets and leaves the group: it blocks for up to a
        // few seconds, so keep it off the async worker's hot path when possible.
        let Some(consumer) = self.consumer.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(move || drop(consumer));
            }
            _ => drop(consumer),
        }
    }
}
