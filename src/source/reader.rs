//! One task per assigned partition, reading that partition's own librdkafka queue and handing
//! its records to the run loop in offset order.
//!
//! Reading per partition is what lets a consume error stop only the partition it concerns.
//! librdkafka reports a batch it cannot read (one that does not decompress, a CRC mismatch, a
//! message over the fetch limit, a denied topic, a broker error) as an error carrying its
//! partition; depending on the error it then fetches the same offset again or skips the batch
//! (a CRC mismatch, an unknown message format). The rdkafka crate drops the partition from
//! errors polled off the consumer's main queue, so pail could neither say where the error was
//! nor keep the records after a skipped batch from being consumed, and committed, past the
//! hole. On its own queue an error is known to be this partition's; the reader sends it and
//! ends, reading nothing further. The run loop decides what comes next (see `run::kafka`).

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use futures::{FutureExt as _, StreamExt as _};
use rdkafka::Offset;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::JoinHandle;

use super::Record;
use super::kafka::{PailContext, TopicPartition};
use super::read_ahead::Holding;
pub use super::read_ahead::ReadAhead;

/// A batch being gathered from the queue. Keys and payloads are copied into one buffer, which
/// the batch's records share: one allocation for a batch's bytes, not two per record, and all
/// freed at once (on the run loop's thread, once it has taken them).
struct Gathering {
    bytes: Vec<u8>,
    records: Vec<Gathered>,
    /// What the batch counts against the read-ahead budget so far.
    weight: usize,
    /// What a record holds once prepared, beyond its key and payload.
    overhead: usize,
}

/// A record of a batch being gathered: its key and payload are ranges of the batch's bytes.
struct Gathered {
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<Range<usize>>,
    payload: Option<Range<usize>>,
}

impl Gathering {
    fn new(overhead: usize) -> Self {
        Self {
            bytes: Vec::new(),
            records: Vec::new(),
            weight: 0,
            overhead,
        }
    }

    /// What `m` would count against the read-ahead budget in this batch.
    fn weight_of(&self, m: &BorrowedMessage<'_>) -> usize {
        m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len) + self.overhead
    }

    fn push(&mut self, m: &BorrowedMessage<'_>) {
        let mut copy = |part: Option<&[u8]>| {
            part.map(|part| {
                let start = self.bytes.len();
                self.bytes.extend_from_slice(part);
                start..self.bytes.len()
            })
        };
        let key = copy(m.key());
        let payload = copy(m.payload());
        self.weight += self.weight_of(m);
        self.records.push(Gathered {
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key,
            payload,
        });
    }

    /// The batch's records, of `topic`.
    fn finish(self, topic: &Arc<str>) -> Vec<Record> {
        let bytes = Bytes::from(self.bytes);
        self.records
            .into_iter()
            .map(|g| Record {
                topic: topic.clone(),
                partition: g.partition,
                offset: g.offset,
                timestamp_ms: g.timestamp_ms,
                key: g.key.map(|r| bytes.slice(r)),
                payload: g.payload.map(|r| bytes.slice(r)),
            })
            .collect()
    }
}

/// A partition could not be read at `offset`: nothing from there on is consumed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("topic {topic} partition {partition}: Kafka consume error at offset {offset}: {cause}")]
pub struct ConsumeError {
    /// The partition's topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The first offset not read: the one after the last record handed over, else the
    /// partition's starting point.
    pub offset: i64,
    /// Why.
    pub cause: ReadFailure,
}

/// Why a partition could not be read further: the typed reason of a [`ConsumeError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadFailure {
    /// librdkafka's error for the partition; its `Display` includes librdkafka's description
    /// (e.g. `BadCompression (Local: Invalid compressed data)`).
    #[error("{0}")]
    Kafka(RDKafkaErrorCode),
    /// A record's offset is not above the one before it: the log went back (an offset reset
    /// after the log was truncated, an unclean leader election).
    #[error("offsets went back: offset {offset} came after {previous}")]
    WentBack {
        /// The record's offset.
        offset: i64,
        /// The offset of the record before it.
        previous: i64,
    },
    /// The offset to read is not in the log: retention deleted records pail had not read, or
    /// the log was truncated below it. librdkafka runs with `auto.offset.reset=error`, so this
    /// stops the partition instead of a silent jump to the log's start or end.
    #[error(
        "the offset to read is no longer in the log (retention deleted records pail had not \
         read, or the log was truncated); nothing was skipped"
    )]
    OutOfRange,
    /// A record of an owned partition arrived on the consumer's main queue instead of the
    /// partition's own, possibly out of order with it.
    #[error("a record arrived outside its partition's queue (a pail bug; please report it)")]
    Misrouted,
    /// Preparing a batch of records failed (a panic: a pail bug).
    #[error("preparing the records failed: {0} (a pail bug; please report it)")]
    Unprepared(String),
}

/// Records handed over in one batch at most: what librdkafka had ready, up to this many.
/// One batch is one turn of the run loop, so the loop's per-turn work (health beat, commit
/// and pause checks) is paid per batch, not per record.
pub const MAX_BATCH_RECORDS: usize = 2048;

/// Bytes of records handed over in one batch at most (a record larger than this goes alone).
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// Readers that may hold room for a batch at once, however small the read-ahead budget: each
/// reserves at most this fraction of it.
const READERS_GATHERING: usize = 4;

/// Work done on each batch for its partition's reader, before the run loop takes it.
///
/// CPU work per record that depends on the record alone (decoding and routing it) is done
/// here, on the blocking pool, one batch per core at a time: in parallel over partitions,
/// while the run loop is one task. The source knows nothing of what the work is.
pub trait Prepare: Send + Sync + 'static {
    /// What a batch of records becomes.
    type Batch: Send + 'static;
    /// What a prepared record holds beyond its key and payload (its struct, its slot in the
    /// batch). Room in the read-ahead budget is reserved with it before records are
    /// prepared, so it should cover what [`Prepare::prepare`] reports for ordinary records.
    const RECORD_OVERHEAD: usize;
    /// Prepares `records` (in offset order, at least one), and says how many bytes the
    /// result holds, which is what the read-ahead budget counts for it.
    fn prepare(&self, records: Vec<Record>) -> (Self::Batch, usize);
}

/// One step of a partition's reading, in order.
#[derive(Debug)]
pub enum Read<B = Vec<Record>> {
    /// The next records, in offset order, at least one, as [`Prepare`] made them.
    Records(B),
    /// The consumer's position moved past the last record handed over without a record
    /// (transaction markers, aborted records): the partition is read up to this offset.
    Position(i64),
    /// The partition cannot be read further; its reader has ended.
    Failed(ConsumeError),
}

/// A [`Read`] of one partition under one ownership token (see `Ownership`), holding its share
/// of the read-ahead budget until the run loop drops it.
#[derive(Debug)]
pub struct Fetched<B = Vec<Record>> {
    /// The partition read.
    pub partition: TopicPartition,
    /// The ownership token the partition was read under.
    pub token: u64,
    /// What was read.
    pub read: Read<B>,
    // Declared first, so dropped first: the bytes are no longer counted held before the room
    // they release lets another reader take more.
    _holding: Option<Holding>,
    _budget: Option<OwnedSemaphorePermit>,
}

impl<B> Fetched<B> {
    /// A failure of `partition` found outside its reader.
    pub fn failed(partition: TopicPartition, token: u64, error: ConsumeError) -> Self {
        Self {
            partition,
            token,
            read: Read::Failed(error),
            _budget: None,
            _holding: None,
        }
    }
}

/// How a reader starts.
#[derive(Debug, Clone)]
pub struct ReadFrom {
    /// The ownership token the partition is read under.
    pub token: u64,
    /// The offset reading starts at.
    pub start: i64,
    /// `--once`: the offset the run must reach. Until the reader is there it reports the
    /// consumer's position when it moves past the records (transaction markers); a
    /// long-running reader never asks.
    pub end: Option<i64>,
}

/// The running reader of one partition; stopped with [`PartitionReader::stop`].
pub struct PartitionReader {
    task: JoinHandle<()>,
}

impl PartitionReader {
    /// Starts reading `queue` (the partition's own queue), sending what `prepare` makes of
    /// its records to `out`.
    pub(super) fn spawn<P: Prepare>(
        consumer: Arc<StreamConsumer<PailContext>>,
        queue: StreamPartitionQueue<PailContext>,
        partition: TopicPartition,
        from: ReadFrom,
        budget: ReadAhead,
        prepare: Arc<P>,
        out: mpsc::UnboundedSender<Fetched<P::Batch>>,
    ) -> Self {
        let reader = Reader {
            prepare,
            consumer,
            topic: Arc::from(partition.0.as_str()),
            partition,
            token: from.token,
            next: from.start,
            end: from.end,
            budget,
            out,
        };
        Self {
            task: tokio::spawn(reader.run(queue)),
        }
    }

    /// Stops the reader and waits until it has let go of its queue.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// One message of the queue, judged.
enum Taken {
    /// A record, now in the batch.
    Record,
    /// Not a record and not an error (a partition EOF).
    Nothing,
    /// The partition cannot be read further.
    Failed(ConsumeError),
}

struct Reader<P: Prepare> {
    prepare: Arc<P>,
    consumer: Arc<StreamConsumer<PailContext>>,
    /// Shared by the records of this partition.
    topic: Arc<str>,
    partition: TopicPartition,
    token: u64,
    /// The offset after the last record handed over.
    next: i64,
    end: Option<i64>,
    budget: ReadAhead,
    out: mpsc::UnboundedSender<Fetched<P::Batch>>,
}

impl<P: Prepare> Reader<P> {
    async fn run(mut self, queue: StreamPartitionQueue<PailContext>) {
        let mut idle = tokio::time::interval(Duration::from_secs(1));
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stream = queue.stream();
        // A record taken that did not fit the batch before: it starts the next one.
        let mut carried: Option<Gathering> = None;
        loop {
            let mut batch = match carried.take() {
                Some(batch) => batch,
                None => {
                    let first = tokio::select! {
                        biased;
                        message = stream.next() => message,
                        _ = idle.tick(), if self.end.is_some_and(|end| self.next < end) => {
                            match self.position() {
                                Some(p) if p > self.next => {
                                    self.next = p;
                                    if !self.send(Read::Position(p), None) {
                                        return;
                                    }
                                }
                                _ => {}
                            }
                            continue;
                        }
                    };
                    let Some(first) = first else {
                        continue;
                    };
                    let mut batch = Gathering::new(P::RECORD_OVERHEAD);
                    if let Taken::Failed(error) = self.take(first, &mut batch) {
                        let _ = self.send(Read::Failed(error), None);
                        return;
                    }
                    batch
                }
            };
            // The record in hand is copied before room is reserved for it (a reader waiting
            // here holds that one record, uncounted), so that room covers it however large.
            let Some(mut room) = self.reserve(batch.weight).await else {
                return;
            };
            // What librdkafka has ready goes in the batch while it fits the room reserved
            // (or room the budget has at once); waiting stops at the first pending message.
            let mut failed = None;
            while batch.records.len() < MAX_BATCH_RECORDS && batch.weight < room.num_permits() {
                let Some(message) = stream.next().now_or_never().flatten() else {
                    break;
                };
                let need = match &message {
                    Ok(m) => batch.weight + batch.weight_of(m),
                    Err(_) => 0,
                };
                let into = if need <= room.num_permits() || self.try_grow(&mut room, need) {
                    &mut batch
                } else {
                    carried.insert(Gathering::new(P::RECORD_OVERHEAD))
                };
                if let Taken::Failed(error) = self.take(message, into) {
                    failed = Some(error);
                    break;
                }
                if carried.is_some() {
                    break;
                }
            }
            let taken = batch.weight;
            let batch = batch.finish(&self.topic);
            if batch.is_empty() {
                drop(room);
            } else {
                // Room for what the batch took and no more, before it waits to be prepared.
                drop(room.split(room.num_permits().saturating_sub(taken)));
                let holding = Holding::new(&self.budget.held, taken);
                if !self.send_records(batch, room, holding).await {
                    return;
                }
            }
            if let Some(error) = failed {
                let _ = self.send(Read::Failed(error), None);
                return;
            }
        }
    }

    /// Judges one message of the queue.
    fn take(
        &mut self,
        message: Result<BorrowedMessage<'_>, KafkaError>,
        batch: &mut Gathering,
    ) -> Taken {
        match message {
            Ok(m) if m.offset() < self.next => Taken::Failed(self.failed(ReadFailure::WentBack {
                offset: m.offset(),
                previous: self.next - 1,
            })),
            Ok(m) => {
                self.next = m.offset() + 1;
                batch.push(&m);
                Taken::Record
            }
            // Only with `enable.partition.eof`, which the user may set: not an error.
            Err(KafkaError::PartitionEOF(_)) => Taken::Nothing,
            Err(e) => Taken::Failed(match e.rdkafka_error_code() {
                Some(RDKafkaErrorCode::AutoOffsetReset) => self.failed(ReadFailure::OutOfRange),
                code => self.failed(ReadFailure::Kafka(code.unwrap_or(RDKafkaErrorCode::Fail))),
            }),
        }
    }

    fn failed(&self, cause: ReadFailure) -> ConsumeError {
        ConsumeError {
            topic: self.partition.0.clone(),
            partition: self.partition.1,
            offset: self.next,
            cause,
        }
    }

    /// Reserves room in the read-ahead budget for a batch holding `need` so far: a share of
    /// the budget (so that a few readers gather at once even when it is small), or `need` if
    /// larger, at most the whole budget. `None` when the budget is gone.
    async fn reserve(&self, need: usize) -> Option<OwnedSemaphorePermit> {
        let room = MAX_BATCH_BYTES
            .min(self.budget.bytes / READERS_GATHERING)
            .max(need)
            .clamp(1, self.budget.bytes);
        let permits = u32::try_from(room).unwrap_or(u32::MAX);
        self.budget
            .permits
            .clone()
            .acquire_many_owned(permits)
            .await
            .ok()
    }

    /// Grows `room` to `need` if the budget has the difference now (never waiting while
    /// holding room: readers could then wait on each other for good).
    fn try_grow(&self, room: &mut OwnedSemaphorePermit, need: usize) -> bool {
        let more = need.saturating_sub(room.num_permits());
        match u32::try_from(more)
            .ok()
            .and_then(|n| self.budget.permits.clone().try_acquire_many_owned(n).ok())
        {
            Some(more) => {
                room.merge(more);
                true
            }
            None => false,
        }
    }

    /// Prepares `records`, which hold `room` of the read-ahead budget, and hands them to the
    /// run loop; false when the run loop is gone.
    async fn send_records(
        &self,
        records: Vec<Record>,
        room: OwnedSemaphorePermit,
        mut holding: Holding,
    ) -> bool {
        // On the blocking pool: CPU work in a reader task would hold a runtime thread, and
        // the run loop, which takes what every reader hands over, would wait for it.
        let prepare = self.prepare.clone();
        let first = records.first().map(|r| r.offset);
        let Ok(slot) = self.budget.preparing.clone().acquire_owned().await else {
            return false;
        };
        let prepared = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            prepare.prepare(records)
        });
        match prepared.await {
            Ok((batch, bytes)) => {
                holding.set(bytes);
                let room = self.fit(room, bytes);
                self.send(Read::Records(batch), Some((room, holding)))
            }
            Err(e) => {
                // Nothing from this batch on is taken: the partition stops there.
                let error = ConsumeError {
                    offset: first.unwrap_or(self.next),
                    ..self.failed(ReadFailure::Unprepared(e.to_string()))
                };
                self.send(Read::Failed(error), None);
                false
            }
        }
    }

    /// Hands `read` to the run loop, with the room it holds in the read-ahead budget if it
    /// holds records; false when the run loop is gone.
    fn send(&self, read: Read<P::Batch>, room: Option<(OwnedSemaphorePermit, Holding)>) -> bool {
        let (budget, holding) = room.unzip();
        self.out
            .send(Fetched {
                partition: self.partition.clone(),
                token: self.token,
                read,
                _budget: budget,
                _holding: holding,
            })
            .is_ok()
    }

    /// Fits `room`, reserved for a batch as it was taken, to the `bytes` it holds prepared.
    /// More room is taken only if the budget has it now ([`Reader::try_grow`]); otherwise the
    /// batch is counted short by what preparing added beyond `Prepare::RECORD_OVERHEAD` (a
    /// path of a record's own, the reasons of bad records). What readers really hold is
    /// counted apart, in [`ReadAhead::peak`].
    fn fit(&self, mut room: OwnedSemaphorePermit, bytes: usize) -> OwnedSemaphorePermit {
        let want = bytes.clamp(1, self.budget.bytes);
        let have = room.num_permits();
        if want < have {
            drop(room.split(have - want));
        } else {
            self.try_grow(&mut room, want);
        }
        room
    }

    /// The consumer's position in this partition: the offset after the last message (or
    /// transaction marker) this queue returned. Only `--once` readers ask, once a second while
    /// idle and short of their end.
    fn position(&self) -> Option<i64> {
        let list = self.consumer.position().ok()?;
        let position = match list
            .find_partition(&self.partition.0, self.partition.1)?
            .offset()
        {
            Offset::Offset(o) => Some(o),
            _ => None,
        };
        drop(list);
        position
    }
}
