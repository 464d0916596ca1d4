//! librdkafka's mock cluster (real Kafka protocol on loopback) and a producer for it.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A mock cluster with a producer attached.
pub struct MockKafka {
    pub cluster: MockCluster<'static, DefaultProducerContext>,
    producer: ThreadedProducer<DefaultProducerContext>,
}

/// One record to produce.
pub struct Produce<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub timestamp_ms: i64,
}

impl MockKafka {
    /// Starts a one-broker cluster with the given topics and partition counts.
    pub fn start(topics: &[(&str, i32)]) -> Self {
        let cluster = MockCluster::new(1).unwrap();
        for (t, parts) in topics {
            cluster.create_topic(t, *parts, 1).unwrap();
        }
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("linger.ms", "5")
            .create()
            .unwrap();
        Self { cluster, producer }
    }

    pub fn brokers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// The group's committed offset and its metadata for each partition of `topic`.
    pub fn commits(&self, group: &str, topic: &str, partitions: i32) -> Vec<Option<(i64, String)>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("group.id", group)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let answer = consumer
            .committed_offsets(tpl, Duration::from_secs(30))
            .unwrap();
        let commits = (0..partitions)
            .map(|p| {
                let elem = answer.find_partition(topic, p)?;
                match elem.offset() {
                    Offset::Offset(o) => Some((o, elem.metadata().to_string())),
                    _ => None,
                }
            })
            .collect();
        // A partition list alive while its consumer is dropped hangs librdkafka's destroy.
        drop(answer);
        commits
    }

    /// The group's committed offset of each partition of `topic`, as a new member reads them.
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
        self.commits(group, topic, partitions)
            .into_iter()
            .map(|c| c.map(|(offset, _)| offset))
            .collect()
    }

    /// The log start and end offsets of a partition now.
    pub fn watermarks(&self, topic: &str, partition: i32) -> (i64, i64) {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .unwrap();
        consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(30))
            .unwrap()
    }

    /// Commits `offset` with no metadata for `group`, as `kafka-consumer-groups
    /// --reset-offsets` does.
    pub fn reset_offset(&self, group: &str, topic: &str, partition: i32, offset: i64) {
        self.commit_offset(group, topic, partition, offset, "");
    }

    /// Commits `offset` with `metadata` for `group`, as another tool would; as a member of
    /// the group, since the mock broker takes commits only from members.
    pub fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        offset: i64,
        metadata: &str,
    ) {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while consumer.assignment().unwrap().count() == 0 {
            assert!(std::time::Instant::now() < deadline, "never assigned");
            let _ = consumer.poll(Duration::from_millis(100));
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .unwrap();
        if let Some(mut elem) = tpl.find_partition(topic, partition) {
            elem.set_metadata(metadata);
        }
        consumer.commit(&tpl, CommitMode::Sync).unwrap();
        drop(tpl);
        consumer.unsubscribe();
    }

    /// Produces `payloads` to `topic`, round-robin over `partitions`, one second apart from
    /// 2025-11-20T00:53:20Z, and waits until all are acknowledged.
    pub fn produce_round_robin(&self, topic: &str, partitions: i32, payloads: &[String]) {
        let records: Vec<Produce<'_>> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| Produce {
                topic,
                partition: i as i32 % partitions,
                key: None,
                payload: Some(p.as_bytes()),
                timestamp_ms: 1_763_600_000_000 + i as i64 * 1000,
            })
            .collect();
        self.produce(&records);
    }

    /// Produces `payloads` to one partition in batches compressed with `codec` (librdkafka's
    /// `compression.type`: none, gzip, snappy, lz4, zstd), timestamps one second apart from
    /// `first_ms`, and waits until all are acknowledged.
    pub fn produce_compressed(
        &self,
        codec: &str,
        topic: &str,
        partition: i32,
        payloads: &[String],
        first_ms: i64,
    ) {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", self.cluster.bootstrap_servers())
            .set("compression.type", codec)
            .set("linger.ms", "20")
            .set("batch.num.messages", "500")
            .create()
            .unwrap_or_else(|e| panic!("a {codec} producer: {e}"));
        for (i, p) in payloads.iter().enumerate() {
            let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
                .partition(partition)
                .timestamp(first_ms + i as i64 * 1000)
                .payload(p.as_bytes());
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        producer.flush(Duration::from_millis(100)).ok();
                        rec = back;
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    }

    /// Produces records and waits until all are acknowledged.
    pub fn produce(&self, records: &[Produce<'_>]) {
        for r in records {
            let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(r.topic)
                .partition(r.partition)
                .timestamp(r.timestamp_ms);
            if let Some(k) = r.key {
                rec = rec.key(k);
            }
            if let Some(p) = r.payload {
                rec = rec.payload(p);
            }
            let mut rec = rec;
            loop {
                match self.producer.send(rec) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        // Queue full: let librdkafka deliver, then try again.
                        self.producer.flush(Duration::from_millis(100)).ok();
                        rec = back;
                    }
                }
            }
        }
        self.producer.flush(Duration::from_secs(30)).unwrap();
    }
}
