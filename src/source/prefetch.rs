//! librdkafka's prefetch, sized from the fetch queues' share of `worker.memory_limit`.
//!
//! Every assigned partition is read from its own queue (see `reader`), and librdkafka's
//! prefetch limits then apply to each partition: its defaults (64 MiB and 100k messages a
//! partition) let a worker with 64 partitions prefetch 4 GiB. pail divides the share over
//! every partition of the configured topics, counted once at start. A worker that owns only
//! some of them (one of several group members) holds less than its share; partitions added
//! later are not counted until the next start.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;

/// The least a partition may prefetch, whatever the share: below this, fetches of many small
/// batches cost more than the memory saved.
pub const MIN_PER_PARTITION: usize = 64 << 10;

/// The most a partition prefetches, whatever the share: more buys no throughput.
pub const MAX_PER_PARTITION: usize = 16 << 20;

/// librdkafka's own ceiling of one fetch response (`fetch.max.bytes`'s default).
const MAX_FETCH_RESPONSE: usize = 50 << 20;

/// The largest part of one partition in a fetch response (`max.partition.fetch.bytes`'s
/// default); a record larger than this still arrives, alone.
const MAX_PARTITION_FETCH: usize = 1 << 20;

/// What a queued message costs librdkafka beyond its payload (its op and message structs),
/// measured with ~100-byte records: 64 partitions × 9000 more queued messages took 228 MB
/// more. Prefetch limits in bytes count payloads only, so the count limit is set from this.
pub const MESSAGE_OVERHEAD: usize = 400;

/// How much librdkafka may prefetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefetch {
    /// Bytes queued per partition before librdkafka stops fetching it.
    pub per_partition: usize,
    /// Bytes of one fetch response, over all its partitions.
    pub per_request: usize,
}

impl Prefetch {
    /// `share` bytes over `partitions` partitions.
    pub fn of(share: usize, partitions: usize) -> Self {
        Self {
            per_partition: (share / partitions.max(1)).clamp(MIN_PER_PARTITION, MAX_PER_PARTITION),
            per_request: (share / 2).clamp(MAX_PARTITION_FETCH, MAX_FETCH_RESPONSE),
        }
    }

    /// The librdkafka properties that enforce it (the user's `[source.properties]` win).
    /// librdkafka stops fetching a partition once its queue holds either limit (payload bytes,
    /// or messages, each of which costs [`MESSAGE_OVERHEAD`] more), and one fetch may bring up
    /// to `max.partition.fetch.bytes` more: a third of the partition's part goes to each.
    pub fn properties(&self) -> [(&'static str, String); 5] {
        let third = self.per_partition / 3;
        [
            (
                "queued.max.messages.kbytes",
                (third / 1024).max(1).to_string(),
            ),
            (
                "queued.min.messages",
                (third / MESSAGE_OVERHEAD).clamp(16, 100_000).to_string(),
            ),
            (
                "max.partition.fetch.bytes",
                third.min(MAX_PARTITION_FETCH).to_string(),
            ),
            ("fetch.max.bytes", self.per_request.to_string()),
            // Shallow queues refill often: librdkafka's default waits a second before it
            // fetches again for a partition whose queue was full, which left consumption at a
            // third of the speed with these limits.
            ("fetch.queue.backoff.ms", "10".to_string()),
        ]
    }
}

/// Counts the partitions of `topics` with a short-lived metadata client built from `config`
/// (it joins no group). Blocks up to `timeout`: run it off the async threads.
pub fn count_partitions(
    config: &ClientConfig,
    topics: &[String],
    timeout: Duration,
) -> Result<usize, KafkaError> {
    let client: BaseConsumer = config.create()?;
    let metadata = client.fetch_metadata(None, timeout)?;
    let count = metadata
        .topics()
        .iter()
        .filter(|t| topics.iter().any(|name| name == t.name()))
        .map(|t| t.partitions().len())
        .sum();
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_is_divided_over_the_partitions_within_bounds() {
        let share = 64 << 20;
        assert_eq!(Prefetch::of(share, 64).per_partition, 1 << 20);
        assert_eq!(
            Prefetch::of(share, 100_000).per_partition,
            MIN_PER_PARTITION
        );
        assert_eq!(Prefetch::of(share, 1).per_partition, MAX_PER_PARTITION);
        assert_eq!(Prefetch::of(share, 0).per_partition, MAX_PER_PARTITION);
        assert_eq!(Prefetch::of(share, 64).per_request, 32 << 20);
        assert_eq!(Prefetch::of(1 << 20, 64).per_request, MAX_PARTITION_FETCH);
    }

    #[test]
    fn the_properties_say_the_same_in_librdkafka_units() {
        let props = Prefetch::of(64 << 20, 128).properties();
        let get = |k: &str| props.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("queued.max.messages.kbytes").as_deref(), Some("170"));
        assert_eq!(get("queued.min.messages").as_deref(), Some("436"));
        assert_eq!(get("max.partition.fetch.bytes").as_deref(), Some("174762"));
        assert_eq!(get("fetch.max.bytes").as_deref(), Some("33554432"));
    }
}
