//! The Kafka consumer: group membership, rebalance events handed to the run loop, offsets.
//!
//! The rebalance callbacks run inside librdkafka's poll; they only push an event onto a
//! channel and return. Blocking calls (metadata, watermarks, commits) run on the blocking pool.
//! Each assigned partition is read from its own queue (see [`super::reader`]); the consumer's
//! main queue only serves the callbacks and client-wide errors.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Semaphore;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::Record;
use super::ownership::Ownership;
use super::reader::{Fetched, PartitionReader, ReadFrom};
use crate::config::KafkaSettings;

/// A topic and partition, owned.
pub type TopicPartition = (String, i32);

/// Something the consumer reports outside the message stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaEvent {
    /// Newly assigned partitions, each with its ownership token (see [`Ownership`]).
    Assigned(Vec<(TopicPartition, u64)>),
    Revoked(Vec<TopicPartition>),
    Error {
        message: String,
        fatal: bool,
        all_brokers_down: bool,
    },
}

/// Kafka failures, each naming the brokers, topic or partition involved.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error("cannot create the Kafka consumer for {brokers}: {source}")]
    Create { brokers: String, source: KafkaError },
    #[error("cannot reach Kafka brokers {brokers}: {message}")]
    Unreachable { brokers: String, message: String },
    #[error("topic {topic:?} does not exist on {brokers}")]
    NoSuchTopic { topic: String, brokers: String },
    #[error("Kafka {op} failed: {source}")]
    Call {
        op: &'static str,
        source: KafkaError,
    },
    #[error("Kafka background task failed: {0}")]
    Task(String),
    #[error("not committed: topic {topic:?} partition {partition} was revoked since")]
    NotOwned { topic: String, partition: i32 },
    /// librdkafka could not give an assigned partition its own queue (see `reader`).
    #[error("topic {topic:?} partition {partition}: librdkafka has no queue for it")]
    PartitionQueue { topic: String, partition: i32 },
}

/// Hands rebalances and client errors to the run loop, and keeps [`Ownership`] current;
/// never blocks (the ownership lock is held only for a map update).
pub struct PailContext {
    events: UnboundedSender<KafkaEvent>,
    ownership: Arc<Ownership>,
}

fn list(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ClientContext for PailContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", fac, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        let _ = self.events.send(KafkaEvent::Error {
            message: format!("{error}: {reason}"),
            fatal: code == Some(RDKafkaErrorCode::Fatal),
            all_brokers_down: code == Some(RDKafkaErrorCode::AllBrokersDown),
        });
    }
}

/// Takes the partitions about to be assigned off the consumer's main queue, before librdkafka
/// starts fetching them: their records and consume errors then wait in each partition's own
/// queue for its [`PartitionReader`]. Done here, in the callback, because a split made later by
/// the run loop could let the first records of a partition reach the main queue, out of order
/// with the rest. librdkafka remembers that the application set the forwarding, so its own
/// fetch start leaves it alone (rd_kafka_toppar_op_fetch_start, `RD_KAFKA_Q_F_FWD_APP`).
fn detach_fetch_queues(consumer: &BaseConsumer<PailContext>, tpl: &TopicPartitionList) {
    let client = consumer.client().native_ptr();
    for element in tpl.elements() {
        let Ok(topic) = CString::new(element.topic()) else {
            continue;
        };
        // SAFETY: `client` is the live handle of the consumer whose callback this is, and
        // `topic` outlives the call. rd_kafka_queue_get_partition returns a new reference to
        // the partition's fetch queue (or null); forwarding it to null detaches it from the
        // main queue, and rd_kafka_queue_destroy releases only that reference.
        unsafe {
            let queue = rdkafka::bindings::rd_kafka_queue_get_partition(
                client,
                topic.as_ptr(),
                element.partition(),
            );
            if !queue.is_null() {
                rdkafka::bindings::rd_kafka_queue_forward(queue, std::ptr::null_mut());
                rdkafka::bindings::rd_kafka_queue_destroy(queue);
            }
        }
    }
}

impl ConsumerContext for PailContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let revoked = list(tpl);
                self.ownership.revoke(&revoked);
                let _ = self.events.send(KafkaEvent::Revoked(revoked));
            }
            Rebalance::Assign(tpl) => detach_fetch_queues(consumer, tpl),
            Rebalance::Error(_) => {}
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let owned = self.ownership.assign(list(tpl));
                let _ = self.events.send(KafkaEvent::Assigned(owned));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                let _ = self.events.send(KafkaEvent::Error {
                    message: format!("rebalance failed: {e}"),
                    fatal: false,
                    all_brokers_down: false,
                });
            }
        }
    }
}

/// Commits offsets with intent metadata; cheap to clone, used from the commit task.
#[derive(Clone)]
pub struct KafkaCommitter {
    consumer: Arc<StreamConsumer<PailContext>>,
    ownership: Arc<Ownership>,
}

impl KafkaCommitter {
    /// Commits one partition's offset with its metadata synchronously, if the partition is
    /// still owned under `token`; returns when the group coordinator has it. The broker fences
    /// commits by group generation only, so a commit from an earlier ownership of the
    /// partition, landing after a rebalance, would be accepted: it is refused here instead.
    pub async fn commit_owned(
        &self,
        tp: TopicPartition,
        token: u64,
        offset: i64,
        metadata: String,
    ) -> Result<(), KafkaSourceError> {
        if !self.ownership.is_current(&tp, token) {
            return Err(KafkaSourceError::NotOwned {
                topic: tp.0,
                partition: tp.1,
            });
        }
        self.commit(vec![(tp, offset, metadata)]).await
    }

    /// Commits offsets with their metadata synchronously; returns when the group coordinator
    /// has them.
    pub async fn commit(
        &self,
        offsets: Vec<(TopicPartition, i64, String)>,
    ) -> Result<(), KafkaSourceError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let consumer = self.consumer.clone();
        let call = |source| KafkaSourceError::Call {
            op: "commit",
            source,
        };
        tokio::task::spawn_blocking(move || {
            let mut tpl = TopicPartitionList::new();
            for ((t, p), o, metadata) in &offsets {
                let mut elem = tpl.add_partition(t, *p);
                elem.set_offset(Offset::Offset(*o)).map_err(call)?;
                elem.set_metadata(metadata.as_str());
            }
            let result = consumer.commit(&tpl, CommitMode::Sync);
            drop(tpl);
            result.map_err(call)
        })
        .await
        .map_err(|e| KafkaSourceError::Task(e.to_string()))?
    }
}

/// Where an assigned partition stands.
#[derive(Debug, Clone)]
pub struct PartitionStart {
    pub partition: TopicPartition,
    /// The group's committed offset, if any.
    pub committed: Option<i64>,
    /// The commit's metadata (pail's delivery intent).
    pub metadata: String,
    /// Where consumption starts: the commit, else per `auto.offset.reset`.
    pub start: i64,
    pub low: i64,
    pub high: i64,
}

/// A subscribed consumer plus the channel of its events.
pub struct KafkaSource {
    consumer: Arc<StreamConsumer<PailContext>>,
    /// Kept current by the rebalance callbacks; read by the committer.
    ownership: Arc<Ownership>,
    brokers: String,
    topics: Vec<String>,
    /// Shared topic names, so records of one topic share one allocation.
    topic_names: Vec<Arc<str>>,
    /// `auto.offset.reset` points at the end: a partition without a commit starts at its end.
    starts_at_end: bool,
}

/// The librdkafka configuration pail runs with: the user's properties over pail's defaults,
/// except the settings the delivery protocol depends on.
pub fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut defaults = BTreeMap::from([
        ("auto.offset.reset", "earliest"),
        // As the Java consumer does: a batch damaged on its way is a consume error that stops
        // its partition (see `reader`), not records read wrong.
        ("check.crcs", "true"),
        ("client.id", "pail"),
        // Every partition has its own queue (see `reader`), and librdkafka's prefetch limits
        // then apply per partition: its defaults (64 MiB, 100k messages) would let a worker
        // with 64 partitions prefetch 4 GiB.
        ("queued.max.messages.kbytes", "2048"),
        ("queued.min.messages", "10000"),
        ("session.timeout.ms", "45000"),
    ]);
    let mut config = ClientConfig::new();
    for (k, v) in &settings.properties.0 {
        defaults.remove(k.as_str());
        config.set(k, v);
    }
    for (k, v) in defaults {
        config.set(k, v);
    }
    for (k, v) in [
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
    ] {
        if settings.properties.0.get(k).is_some_and(|user| user != v) {
            tracing::warn!(
                property = k,
                "ignoring {k}: pail commits offsets itself, after delivery"
            );
        }
        config.set(k, v);
    }
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", &settings.group_id);
    config
}

impl KafkaSource {
    /// Creates the consumer, subscribes to `subscribe` (some of the configured topics; none
    /// subscribes later, with [`KafkaSource::subscribe`]), and returns the receiver of its
    /// rebalance and error events.
    pub fn connect(
        settings: &KafkaSettings,
        subscribe: &[String],
    ) -> Result<(Self, UnboundedReceiver<KafkaEvent>), KafkaSourceError> {
        let (tx, rx) = unbounded_channel();
        let ownership = Arc::new(Ownership::default());
        let create = |source| KafkaSourceError::Create {
            brokers: settings.brokers.clone(),
            source,
        };
        let consumer: StreamConsumer<PailContext> = client_config(settings)
            .set_log_level(RDKafkaLogLevel::Warning)
            .create_with_context(PailContext {
                events: tx,
                ownership: ownership.clone(),
            })
            .map_err(create)?;
        if !subscribe.is_empty() {
            let topics: Vec<&str> = subscribe.iter().map(String::as_str).collect();
            consumer.subscribe(&topics).map_err(create)?;
        }
        let source = Self {
            consumer: Arc::new(consumer),
            ownership,
            brokers: settings.brokers.clone(),
            topics: settings.topics.clone(),
            topic_names: settings
                .topics
                .iter()
                .map(|t| Arc::from(t.as_str()))
                .collect(),
            starts_at_end: matches!(
                settings
                    .properties
                    .0
                    .get("auto.offset.reset")
                    .map(String::as_str),
                Some("latest" | "largest" | "end")
            ),
        };
        Ok((source, rx))
    }

    /// Checks that the brokers answer and every topic exists.
    pub async fn check_topics(&self, timeout: Duration) -> Result<(), KafkaSourceError> {
        let consumer = self.consumer.clone();
        let brokers = self.brokers.clone();
        let topics = self.topics.clone();
        tokio::task::spawn_blocking(move || {
            let metadata = consumer.fetch_metadata(None, timeout).map_err(|e| {
                KafkaSourceError::Unreachable {
                    brokers: brokers.clone(),
                    message: e.to_string(),
                }
            })?;
            for topic in topics {
                let found = metadata
                    .topics()
                    .iter()
                    .any(|t| t.name() == topic && t.error().is_none());
                if !found {
                    return Err(KafkaSourceError::NoSuchTopic { topic, brokers });
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| KafkaSourceError::Task(e.to_string()))?
    }

    /// Starts reading an assigned partition from its own queue; its records and a consume
    /// error, if one comes, go to `out` tagged with the token of `from`, each record holding its
    /// share of `budget` (bytes read ahead of the run loop) until dropped.
    pub fn read_partition(
        &self,
        partition: TopicPartition,
        from: ReadFrom,
        budget: Arc<Semaphore>,
        out: UnboundedSender<Fetched>,
    ) -> Result<PartitionReader, KafkaSourceError> {
        let queue = self
            .consumer
            .split_partition_queue(&partition.0, partition.1)
            .ok_or_else(|| KafkaSourceError::PartitionQueue {
                topic: partition.0.clone(),
                partition: partition.1,
            })?;
        Ok(PartitionReader::spawn(
            self.consumer.clone(),
            queue,
            partition,
            from,
            budget,
            out,
        ))
    }

    /// Moves an assigned partition's fetch position to `offset` (a partition stopped on a
    /// consume error is tried again from its first undelivered offset, whatever librdkafka
    /// skipped meanwhile).
    pub async fn seek(
        &self,
        partition: TopicPartition,
        offset: i64,
    ) -> Result<(), KafkaSourceError> {
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || {
            consumer
                .seek(
                    &partition.0,
                    partition.1,
                    Offset::Offset(offset),
                    Duration::from_secs(10),
                )
                .map_err(|source| KafkaSourceError::Call { op: "seek", source })
        })
        .await
        .map_err(|e| KafkaSourceError::Task(e.to_string()))?
    }

    /// Waits for the next event of the main queue, serving the rebalance callbacks. Records
    /// arrive here only if a partition's queue was not detached (see `detach_fetch_queues`);
    /// errors are returned, not retried.
    pub async fn recv(&self) -> Result<Record, KafkaError> {
        let msg = self.consumer.recv().await?;
        let topic = self
            .topic_names
            .iter()
            .find(|t| ***t == *msg.topic())
            .cloned()
            .unwrap_or_else(|| Arc::from(msg.topic()));
        Ok(Record {
            topic,
            partition: msg.partition(),
            offset: msg.offset(),
            timestamp_ms: msg.timestamp().to_millis(),
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec),
        })
    }

    /// For each partition: its committed offset and intent metadata, where consumption
    /// starts, and the watermarks now.
    pub async fn partition_starts(
        &self,
        partitions: Vec<TopicPartition>,
        timeout: Duration,
    ) -> Result<Vec<PartitionStart>, KafkaSourceError> {
        let consumer = self.consumer.clone();
        let latest = self.starts_at_end;
        tokio::task::spawn_blocking(move || {
            let call = |op| move |source| KafkaSourceError::Call { op, source };
            let mut tpl = TopicPartitionList::new();
            for (t, p) in &partitions {
                tpl.add_partition(t, *p);
            }
            let committed = consumer
                .committed_offsets(tpl, timeout)
                .map_err(call("committed offsets"))?;
            let mut out = Vec::with_capacity(partitions.len());
            for (t, p) in partitions {
                let (low, high) = consumer
                    .fetch_watermarks(&t, p, timeout)
                    .map_err(call("fetch watermarks"))?;
                let elem = committed.find_partition(&t, p);
                let offset = match elem.as_ref().map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                };
                let metadata = elem
                    .as_ref()
                    .map(|e| e.metadata().to_string())
                    .unwrap_or_default();
                let start = offset.unwrap_or(if latest { high } else { low });
                out.push(PartitionStart {
                    partition: (t, p),
                    committed: offset,
                    metadata,
                    start,
                    low,
                    high,
                });
            }
            drop(committed);
            Ok(out)
        })
        .await
        .map_err(|e| KafkaSourceError::Task(e.to_string()))?
    }

    /// Replaces the subscription with `topics` (a destination passed its connection test).
    pub fn subscribe(&self, topics: &[String]) -> Result<(), KafkaSourceError> {
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.consumer
            .subscribe(&topics)
            .map_err(|source| KafkaSourceError::Call {
                op: "subscribe",
                source,
            })
    }

    /// A handle that commits offsets from another task, so the run loop keeps polling (and
    /// serving rebalances) while a commit waits for the coordinator.
    pub fn committer(&self) -> KafkaCommitter {
        KafkaCommitter {
            consumer: self.consumer.clone(),
            ownership: self.ownership.clone(),
        }
    }

    /// Pauses fetching for the assigned partitions `pause` selects and resumes the others;
    /// callbacks are still served. Returns how many partitions are paused.
    pub fn apply_pause(&self, pause: impl Fn(&str, i32) -> bool) -> usize {
        let Ok(assignment) = self.consumer.assignment() else {
            return 0;
        };
        let (mut stop, mut go) = (TopicPartitionList::new(), TopicPartitionList::new());
        for el in assignment.elements() {
            let list = if pause(el.topic(), el.partition()) {
                &mut stop
            } else {
                &mut go
            };
            list.add_partition(el.topic(), el.partition());
        }
        for (list, paused) in [(&stop, true), (&go, false)] {
            if list.count() == 0 {
                continue;
            }
            let result = if paused {
                self.consumer.pause(list)
            } else {
                self.consumer.resume(list)
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, paused, "cannot pause/resume partitions");
            }
        }
        stop.count()
    }

    /// Leaves the group cleanly.
    pub async fn close(self) {
        let consumer = self.consumer;
        let _ = tokio::task::spawn_blocking(move || {
            consumer.unsubscribe();
            drop(consumer);
        })
        .await;
    }
}
