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

use bytes::Bytes;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::Record;
use super::ownership::Ownership;
use super::prefetch::{self, Prefetch};
use super::reader::{Fetched, PartitionReader, Prepare, ReadAhead, ReadFrom};
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
    /// An assignment is not applied here: the partitions' queues are detached, the event goes
    /// to the run loop, and librdkafka waits until the run loop has read their commits and
    /// calls [`KafkaSource::start_fetching`] with an explicit offset for each (librdkafka
    /// allows the assign call to come later, outside the callback). So where a partition
    /// starts is always pail's choice, and librdkafka's `auto.offset.reset` only ever decides
    /// what happens when a fetch position falls out of the log — an error, by default.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                detach_fetch_queues(consumer, tpl);
                let owned = self.ownership.assign(list(tpl));
                let _ = self.events.send(KafkaEvent::Assigned(owned));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked = list(tpl);
                self.ownership.revoke(&revoked);
                let _ = self.events.send(KafkaEvent::Revoked(revoked));
                unassign(consumer, tpl);
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                let _ = self.events.send(KafkaEvent::Error {
                    message: format!("rebalance failed: {code}"),
                    fatal: false,
                    all_brokers_down: false,
                });
                unassign(consumer, tpl);
            }
        }
    }
}

/// Gives up `tpl` (cooperative) or everything (eager), as the rebalance protocol requires.
fn unassign(consumer: &BaseConsumer<PailContext>, tpl: &TopicPartitionList) {
    let result = match consumer.rebalance_protocol() {
        RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
        _ => consumer.unassign(),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot give up revoked partitions");
    }
}

/// Where an assigned partition stands.
#[derive(Debug, Clone)]
pub struct PartitionStart {
    pub partition: TopicPartition,
    /// The group's commit (offset and metadata, pail's delivery intent), if any; or why it
    /// cannot be known.
    pub committed: Result<Option<(i64, String)>, String>,
    /// The log's first offset and the offset after its last.
    pub low: i64,
    pub high: i64,
}

/// How the user's `auto.offset.reset` bears on the delivery protocol: whether it was set at
/// all (accepting a jump when the commit is out of range) and whether it points at the end.
pub fn offset_reset(settings: &KafkaSettings) -> (bool, bool) {
    let reset = settings.properties.0.get("auto.offset.reset");
    (
        reset.is_some(),
        matches!(
            reset.map(String::as_str),
            Some("latest" | "largest" | "end")
        ),
    )
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
}

/// The librdkafka configuration pail runs with: the user's properties over pail's defaults
/// (the prefetch limits among them), except the settings the delivery protocol depends on.
pub fn client_config(settings: &KafkaSettings, prefetch: &Prefetch) -> ClientConfig {
    let prefetch = prefetch.properties();
    let mut defaults: BTreeMap<&str, &str> = BTreeMap::from([
        // A commit out of range (retention deleted records pail had not read, a truncated log)
        // is an error that stops the partition, not a silent jump; pail seeks partitions with
        // no commit to their start itself. Setting it in [source.properties] accepts the jump.
        ("auto.offset.reset", "error"),
        // As the Java consumer does: a batch damaged on its way is a consume error that stops
        // its partition (see `reader`), not records read wrong.
        ("check.crcs", "true"),
        ("client.id", "pail"),
        // Partitions that stay with a member across a rebalance keep their open segments;
        // with the eager protocol every rebalance would drop every buffer and read it again.
        ("partition.assignment.strategy", "cooperative-sticky"),
        ("session.timeout.ms", "45000"),
    ]);
    defaults.extend(prefetch.iter().map(|(k, v)| (*k, v.as_str())));
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
        prefetch: &Prefetch,
    ) -> Result<(Self, UnboundedReceiver<KafkaEvent>), KafkaSourceError> {
        let (tx, rx) = unbounded_channel();
        let ownership = Arc::new(Ownership::default());
        let create = |source| KafkaSourceError::Create {
            brokers: settings.brokers.clone(),
            source,
        };
        let consumer: StreamConsumer<PailContext> = client_config(settings, prefetch)
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
        };
        Ok((source, rx))
    }

    /// The prefetch limits for `share` bytes of fetch queues over every partition of the
    /// configured topics. When the partitions cannot be counted in `timeout` (the brokers do
    /// not answer yet), each gets the least it may have, and the connection is tried again by
    /// the consumer itself.
    pub async fn prefetch(settings: &KafkaSettings, share: usize, timeout: Duration) -> Prefetch {
        let config = client_config(settings, &Prefetch::of(share, 1));
        let topics = settings.topics.clone();
        let counted = tokio::task::spawn_blocking(move || {
            prefetch::count_partitions(&config, &topics, timeout)
        })
        .await;
        match counted {
            Ok(Ok(partitions)) => {
                let prefetch = Prefetch::of(share, partitions);
                tracing::debug!(
                    partitions,
                    per_partition = prefetch.per_partition,
                    "librdkafka prefetch sized from the memory limit"
                );
                prefetch
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not count the topics' partitions; each \
                    prefetches the least it may ({} KiB)", prefetch::MIN_PER_PARTITION >> 10);
                Prefetch::of(0, 1)
            }
            Err(e) => {
                tracing::warn!(error = %e, "partition count task failed");
                Prefetch::of(0, 1)
            }
        }
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

    /// Starts reading an assigned partition from its own queue; its records, as `prepare`
    /// makes them, and a consume error, if one comes, go to `out` tagged with the token of
    /// `from`, each batch holding its share of `budget` (bytes read ahead of the run loop)
    /// until dropped.
    pub fn read_partition<P: Prepare>(
        &self,
        partition: TopicPartition,
        from: ReadFrom,
        budget: ReadAhead,
        prepare: Arc<P>,
        out: UnboundedSender<Fetched<P::Batch>>,
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
            prepare,
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
            key: msg.key().map(Bytes::copy_from_slice),
            payload: msg.payload().map(Bytes::copy_from_slice),
        })
    }

    /// For each partition: its commit (offset and intent metadata) and the watermarks now,
    /// all within `timeout` (the run loop waits for this: it must stay well under the
    /// liveness threshold whatever the number of partitions). Whatever fails or runs out of
    /// time — the whole request or one partition's answer in it — is that partition's error,
    /// never "no commit": reading that as a fresh start would drop a recorded intent.
    pub async fn partition_starts(
        &self,
        partitions: Vec<TopicPartition>,
        timeout: Duration,
    ) -> Result<Vec<PartitionStart>, KafkaSourceError> {
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in &partitions {
                tpl.add_partition(t, *p);
            }
            let deadline = std::time::Instant::now() + timeout;
            let committed = consumer.committed_offsets(tpl, timeout);
            let mut out = Vec::with_capacity(partitions.len());
            for (t, p) in partitions {
                let commit = match &committed {
                    Err(e) => Err(format!("fetching committed offsets: {e}")),
                    Ok(list) => match list.find_partition(&t, p) {
                        None => Err("the committed-offsets answer left the partition out".into()),
                        Some(elem) => match (elem.error(), elem.offset()) {
                            (Err(e), _) => Err(format!("committed-offsets answer: {e}")),
                            (Ok(()), Offset::Offset(o)) => {
                                Ok(Some((o, elem.metadata().to_string())))
                            }
                            (Ok(()), _) => Ok(None),
                        },
                    },
                };
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let watermarks = match left.is_zero() {
                    true => Err(format!("no time left within {timeout:?}")),
                    false => consumer
                        .fetch_watermarks(&t, p, left)
                        .map_err(|e| e.to_string()),
                };
                let (commit, low, high) = match watermarks {
                    Ok((low, high)) => (commit, low, high),
                    Err(e) => (Err(format!("fetching watermarks: {e}")), 0, 0),
                };
                out.push(PartitionStart {
                    partition: (t, p),
                    committed: commit,
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

    /// Starts fetching newly assigned partitions, each from its offset (`None`: the log's
    /// end, for a partition that is stopped and must not be read). A partition revoked since
    /// is left out: the rebalance callbacks run inside this consumer's poll, on the run loop's
    /// task, so ownership cannot change between the check and the call.
    pub fn start_fetching(
        &self,
        partitions: &[(TopicPartition, u64, Option<i64>)],
    ) -> Result<(), KafkaSourceError> {
        let mut tpl = TopicPartitionList::new();
        for ((t, p), token, offset) in partitions {
            if !self.ownership.is_current(&(t.clone(), *p), *token) {
                continue;
            }
            let offset = offset.map_or(Offset::End, Offset::Offset);
            tpl.add_partition_offset(t, *p, offset)
                .map_err(|source| KafkaSourceError::Call {
                    op: "assign",
                    source,
                })?;
        }
        // Called even with nothing left to assign: librdkafka waits for the call to finish the
        // rebalance (a cooperative one takes a second round once it is made).
        let result = match self.consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => self.consumer.incremental_assign(&tpl),
            // Eager: every assignment is whole (the previous one was revoked entirely).
            _ => self.consumer.assign(&tpl),
        };
        result.map_err(|source| KafkaSourceError::Call {
            op: "assign",
            source,
        })
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

    /// The consumer and the ownership its rebalance callbacks keep current, for the
    /// committer (`super::commit`).
    pub(super) fn consumer_and_ownership(
        &self,
    ) -> (Arc<StreamConsumer<PailContext>>, Arc<Ownership>) {
        (self.consumer.clone(), self.ownership.clone())
    }

    /// The partition's log end offset as librdkafka last saw it (updated with every fetch
    /// response; no request is made). `None` before it is known.
    pub fn log_end(&self, topic: &str, partition: i32) -> Option<i64> {
        // rdkafka wraps only the blocking query (`fetch_watermarks`); this one reads
        // librdkafka's cache and is cheap enough for the run loop's tick.
        let topic = CString::new(topic).ok()?;
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: the client outlives the call; `topic` is a valid C string for its duration
        // and the out-pointers point at live locals.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                topic.as_ptr(),
                partition,
                &mut low,
                &mut high,
            )
        };
        (err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
    }

    /// Asks the brokers for each partition's log end, off the run loop (the cached value of
    /// [`KafkaSource::log_end`] stands still while a partition is paused or stopped, and its
    /// lag must still grow). Partitions whose answers fail, or do not come within `timeout`
    /// for them all, are left out.
    pub fn fetch_log_ends(
        &self,
        partitions: Vec<TopicPartition>,
        timeout: Duration,
    ) -> tokio::task::JoinHandle<Vec<(TopicPartition, i64)>> {
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + timeout;
            let mut out = Vec::with_capacity(partitions.len());
            for (t, p) in partitions {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                if let Ok((_, high)) = consumer.fetch_watermarks(&t, p, left) {
                    out.push(((t, p), high));
                }
            }
            out
        })
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
