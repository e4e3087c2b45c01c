//! The feed of a `type = "kafka"` source: one consumer-group member per pipeline reader.
//!
//! Positions are sequential per run (from 0); the consumer maps them to Kafka offsets and
//! commits, per partition, only offsets below the reader's low watermark — on every
//! commit, on partition revoke, and when the feed is dropped at shutdown. A restart
//! resumes at the committed offsets, so nothing unacknowledged is skipped.

use switchyard_config::KafkaSourceConfig;
use switchyard_event::Event;
use switchyard_kafka::{KafkaConsumer, KafkaError};

use crate::feed::{Feed, FeedError};

/// A Kafka consumer as a pipeline reader's [`Feed`].
pub struct KafkaFeed {
    consumer: Option<KafkaConsumer>,
}

impl KafkaFeed {
    /// Joins consumer group `group` for `cfg.topics` (the broker may be down: it is
    /// waited for).
    pub fn start(source: &str, group: &str, cfg: &KafkaSourceConfig) -> Result<Self, KafkaError> {
        Ok(Self {
            consumer: Some(KafkaConsumer::start(source, group, cfg)?),
        })
    }

    fn consumer(&mut self) -> &mut KafkaConsumer {
        self.consumer.as_mut().expect("present until dropped")
    }
}

impl Feed for KafkaFeed {
    fn start(&self) -> u64 {
        0
    }

    async fn next(&mut self, max: usize) -> Result<Option<Vec<(u64, Event)>>, FeedError> {
        self.consumer().next(max).await.map_err(FeedError)
    }

    async fn commit(&mut self, low: u64) -> Result<(), String> {
        self.consumer().commit(low)
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
