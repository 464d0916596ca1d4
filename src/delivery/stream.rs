//! Objects written while their file is still open: one task per streamed file encodes its
//! row groups as the pipeline hands them over, uploads the Parquet bytes as multipart parts
//! once a part's worth is ready, and completes the object (`If-None-Match: *`) only when told
//! to, after the segment's intent is committed. Until then nothing is visible: a crash leaves
//! parts of an upload that never completes (aborted when the task ends without completing,
//! or left to the bucket's lifecycle rule after a `kill -9`), and the replay writes the object
//! again from the same records.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::upload::{RetryContext, RetryPolicy, UploadError, count_outcome, with_retry};
use super::{DeliveryError, Target};
use crate::buffer::OpenFile;
use crate::encode::stream::ParquetStream;
use crate::encode::{EncodeError, Provenance};
use crate::schema::FileSchema;
use crate::store::{BoxFuture, ObjectMetadata, PartReceipt, PutOutcome, StoreError, UploadId};
use crate::telemetry::METRICS;

/// Memory the streaming writers hold (rows handed over and not yet encoded, encoded bytes not
/// yet uploaded), shared with the pipeline's budget, and a signal when some is given back.
#[derive(Debug, Clone, Default)]
pub struct StreamMemory {
    held: Arc<AtomicUsize>,
    released: Arc<Notify>,
}

impl StreamMemory {
    /// Bytes held by every writer.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Resolves after some writer gave memory back.
    pub async fn released(&self) {
        self.released.notified().await;
    }
}

/// Bytes counted on a segment, its destination and the worker at once.
#[derive(Debug, Clone)]
struct Counted {
    segment: Arc<AtomicUsize>,
    destination: Arc<AtomicUsize>,
    memory: StreamMemory,
}

impl Counted {
    fn add(&self, n: usize) {
        self.segment.fetch_add(n, Ordering::Relaxed);
        self.destination.fetch_add(n, Ordering::Relaxed);
        self.memory.held.fetch_add(n, Ordering::Relaxed);
    }

    fn release(&self, n: usize) {
        self.segment.fetch_sub(n, Ordering::Relaxed);
        self.destination.fetch_sub(n, Ordering::Relaxed);
        self.memory.held.fetch_sub(n, Ordering::Relaxed);
        self.memory.released.notify_one();
    }
}

/// What one writer holds; whatever remains is given back when the writer ends.
#[derive(Debug)]
struct Held {
    mine: usize,
    counted: Counted,
}

impl Held {
    /// Takes over bytes already counted (rows the handle handed over).
    fn adopt(&mut self, n: usize) {
        self.mine += n;
    }

    fn add(&mut self, n: usize) {
        self.mine += n;
        self.counted.add(n);
    }

    fn release(&mut self, n: usize) {
        let n = n.min(self.mine);
        self.mine -= n;
        self.counted.release(n);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release(self.mine);
    }
}

enum Message {
    /// One row group's rows, with the schema to write them with.
    Group { rows: OpenFile, schema: FileSchema },
    /// The last rows; then the footer, with `also`'s columns carried as well.
    Finish {
        rows: OpenFile,
        schema: FileSchema,
        also: FileSchema,
    },
    /// The intent is committed: make the object visible.
    Complete,
}

/// What a completed streamed object wrote.
#[derive(Debug, Clone, Copy)]
pub struct StreamReport {
    pub outcome: PutOutcome,
    pub rows: u64,
    pub parts: u32,
}

/// The parts of the delivery stage every writer shares.
#[derive(Debug, Clone)]
pub struct Writers {
    pub memory: StreamMemory,
    pub encoders: Arc<Semaphore>,
    pub uploads: Arc<Semaphore>,
    pub policy: RetryPolicy,
    pub shutdown: CancellationToken,
}

/// Everything a writer needs to know about its object.
#[derive(Debug, Clone)]
pub struct StreamObject {
    pub key: String,
    pub topic: Arc<str>,
    pub partition: i32,
    /// Sent when the upload is created, so it can only say what is known then.
    pub metadata: ObjectMetadata,
    /// Counts what the writers of one segment hold.
    pub segment_held: Arc<AtomicUsize>,
}

/// The handle an open file keeps on its writer. Dropped without completing (its partition
/// revoked or stopped), the writer stops at once, whatever it was retrying, and aborts its
/// upload.
#[derive(Debug)]
pub struct ObjectStream {
    tx: mpsc::UnboundedSender<Message>,
    task: Option<JoinHandle<Result<StreamReport, DeliveryError>>>,
    /// Cancelled when the handle is dropped without completing.
    cancel: CancellationToken,
    encoded: Arc<AtomicU64>,
    counted: Counted,
    rows: u64,
}

impl Drop for ObjectStream {
    fn drop(&mut self) {
        if self.task.is_some() {
            self.cancel.cancel();
        }
    }
}

impl ObjectStream {
    /// Starts the writer of one object.
    pub fn start(object: StreamObject, target: Target, writers: &Writers) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let encoded = Arc::new(AtomicU64::new(0));
        let counted = Counted {
            segment: object.segment_held.clone(),
            destination: target.streamed.clone(),
            memory: writers.memory.clone(),
        };
        let cancel = writers.shutdown.child_token();
        let mut writers = writers.clone();
        writers.shutdown = cancel.clone();
        let writer = Writer {
            held: Held {
                mine: 0,
                counted: counted.clone(),
            },
            object,
            target,
            writers,
            encoded: encoded.clone(),
        };
        Self {
            tx,
            task: Some(tokio::spawn(writer.run(rx))),
            cancel,
            encoded,
            counted,
            rows: 0,
        }
    }

    /// Parquet bytes encoded so far.
    pub fn encoded(&self) -> u64 {
        self.encoded.load(Ordering::Relaxed)
    }

    /// Rows handed over so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Hands over one row group's rows.
    pub fn write_group(&mut self, rows: OpenFile, schema: FileSchema) {
        self.hand_over(&rows);
        let _ = self.tx.send(Message::Group { rows, schema });
    }

    /// Hands over the last rows: the writer encodes them and the footer, and waits for
    /// [`ObjectStream::complete`].
    pub fn finish(&mut self, rows: OpenFile, schema: FileSchema, also: FileSchema) {
        self.hand_over(&rows);
        let _ = self.tx.send(Message::Finish { rows, schema, also });
    }

    /// Rows handed over are counted from here until the writer has encoded them.
    fn hand_over(&mut self, rows: &OpenFile) {
        self.rows += rows.rows.len() as u64;
        self.counted.add(rows.capacity());
    }

    /// Makes the object visible (its intent is committed) and waits for it.
    pub async fn complete(mut self) -> Result<StreamReport, DeliveryError> {
        let _ = self.tx.send(Message::Complete);
        let Some(task) = self.task.take() else {
            return Err(DeliveryError::Task(
                "the writer was already completed".into(),
            ));
        };
        drop(self);
        task.await.map_err(|e| DeliveryError::Task(e.to_string()))?
    }
}

struct Writer {
    object: StreamObject,
    target: Target,
    writers: Writers,
    encoded: Arc<AtomicU64>,
    held: Held,
}

/// An upload begun, with the parts it has.
struct Upload {
    id: UploadId,
    parts: Vec<PartReceipt>,
}

impl Writer {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Message>,
    ) -> Result<StreamReport, DeliveryError> {
        let mut stream = ParquetStream::new(
            &self.target.parquet,
            Provenance {
                topic: &self.object.topic,
                partition: self.object.partition,
            },
        );
        let mut upload: Option<Upload> = None;
        let mut failed: Option<DeliveryError> = None;
        let mut finished = false;
        while let Some(message) = rx.recv().await {
            let (rows, schema, also) = match message {
                Message::Group { rows, schema } => (rows, schema, None),
                Message::Finish { rows, schema, also } => (rows, schema, Some(also)),
                Message::Complete => {
                    if let Some(e) = failed.take() {
                        self.abort(upload).await;
                        return Err(e);
                    }
                    if !finished {
                        self.abort(upload).await;
                        return Err(DeliveryError::Task(format!(
                            "{}: completed before its last rows were handed over",
                            self.object.key
                        )));
                    }
                    let rows = stream.rows() as u64;
                    return self.complete(upload, stream.take(), rows).await;
                }
            };
            self.held.adopt(rows.capacity());
            if failed.is_some() {
                // Already failed: what keeps arriving is only given back.
                self.held.release(rows.capacity());
                continue;
            }
            finished |= also.is_some();
            let step = match self.encode(stream, rows, schema, also).await {
                Ok(s) => {
                    stream = s;
                    self.ship_parts(&mut stream, &mut upload).await
                }
                Err((s, e)) => {
                    stream = s;
                    Err(e)
                }
            };
            if let Err(e) = step {
                failed = Some(e);
            }
        }
        // Dropped without completing (its partition was revoked or stopped, or the worker is
        // shutting down): the object must not appear.
        self.abort(upload).await;
        Err(DeliveryError::Upload {
            destination: self.target.name.clone(),
            source: UploadError::Cancelled,
        })
    }

    /// Encodes rows as a row group (and, with `also`, ends the file) off the async threads.
    async fn encode(
        &mut self,
        mut stream: ParquetStream,
        rows: OpenFile,
        schema: FileSchema,
        also: Option<FileSchema>,
    ) -> Result<ParquetStream, (ParquetStream, DeliveryError)> {
        let raw = rows.capacity();
        let before = stream.ready();
        let permit = match self.writers.encoders.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(e) => return Err((stream, DeliveryError::Task(e.to_string()))),
        };
        let joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut result = stream.write_group(&rows, &schema);
            drop(rows);
            if let (Ok(()), Some(also)) = (&result, also) {
                result = stream.finish(&also);
            }
            (stream, result)
        })
        .await;
        self.held.release(raw);
        let (stream, result) = match joined {
            Ok(done) => done,
            // The encoder panicked and took the stream with it: the writer fails with an empty
            // one in its place.
            Err(e) => {
                let lost = ParquetStream::new(
                    &self.target.parquet,
                    Provenance {
                        topic: &self.object.topic,
                        partition: self.object.partition,
                    },
                );
                return Err((lost, DeliveryError::Task(e.to_string())));
            }
        };
        if let Err(e) = result {
            let error = self.encode_error(&stream, e);
            return Err((stream, error));
        }
        self.held.add(stream.ready().saturating_sub(before));
        self.encoded.store(stream.position(), Ordering::Relaxed);
        Ok(stream)
    }

    fn encode_error(&self, stream: &ParquetStream, source: EncodeError) -> DeliveryError {
        DeliveryError::Encode {
            destination: self.target.name.clone(),
            topic: self.object.topic.to_string(),
            partition: self.object.partition,
            start: 0,
            end: stream.rows() as i64,
            source: Box::new(source),
        }
    }

    fn retry(&self) -> RetryContext<'_> {
        RetryContext {
            policy: &self.writers.policy,
            health: &self.target.health,
            slots: &self.writers.uploads,
            shutdown: &self.writers.shutdown,
        }
    }

    fn upload_error(&self, source: UploadError) -> DeliveryError {
        DeliveryError::Upload {
            destination: self.target.name.clone(),
            source,
        }
    }

    /// Uploads every whole part's worth that is ready. Parts are all exactly `part_size`
    /// (R2 requires equal parts; the last may be smaller): the rest waits for more rows or
    /// goes up as the last part at completion.
    async fn ship_parts(
        &mut self,
        stream: &mut ParquetStream,
        upload: &mut Option<Upload>,
    ) -> Result<(), DeliveryError> {
        let part_size = self.target.part_size as usize;
        while stream.ready() >= part_size {
            let body = Bytes::from(stream.take_front(part_size));
            let store = self.target.store.clone();
            let key = self.object.key.clone();
            if upload.is_none() {
                let id = with_retry(self.retry(), || {
                    store.create_upload(&key, &self.object.metadata)
                })
                .await
                .map_err(|e| self.upload_error(e))?;
                *upload = Some(Upload {
                    id,
                    parts: Vec::new(),
                });
            }
            let Some(up) = upload.as_mut() else {
                return Ok(());
            };
            let number = up.parts.len() as i32 + 1;
            let id = up.id.clone();
            let receipt = with_retry(self.retry(), || {
                vanished(store.upload_part(&key, &id, number, body.clone()))
            })
            .await
            .map_err(|e| self.upload_error(e))?
            .map_err(|e| self.vanished_error(e))?;
            up.parts.push(receipt);
            METRICS.streamed_parts.inc();
            self.target.health.bytes_uploaded.inc_by(part_size as u64);
            self.held.release(part_size);
        }
        Ok(())
    }

    /// The upload is gone (a lifecycle rule aborted it while the file was open or waited for
    /// its intent, or a Complete whose answer was lost is retried): its parts' bytes are gone
    /// with it, so the segment cannot be delivered from here. Its partition stops; the replay
    /// writes the object again (or finds it written).
    fn vanished_error(&self, error: StoreError) -> DeliveryError {
        DeliveryError::Task(format!(
            "{}: the multipart upload no longer exists (a lifecycle rule may have aborted it): \
             {error}; its partition stops here, and reading it again writes the object again",
            self.object.key
        ))
    }

    /// Makes the object visible: the last part and a conditional Complete, or a single
    /// conditional PUT when no part went up.
    async fn complete(
        mut self,
        upload: Option<Upload>,
        tail: Vec<u8>,
        rows: u64,
    ) -> Result<StreamReport, DeliveryError> {
        let store = self.target.store.clone();
        let key = self.object.key.clone();
        let len = tail.len();
        let body = Bytes::from(tail);
        let Some(mut up) = upload else {
            let outcome = with_retry(self.retry(), || {
                store.put_if_absent(&key, body.clone(), &self.object.metadata)
            })
            .await
            .map_err(|e| self.upload_error(e))?;
            count_outcome(&self.target.health, outcome, len as u64, len as u64);
            self.held.release(len);
            return Ok(StreamReport {
                outcome,
                rows,
                parts: 0,
            });
        };
        let size = up.parts.len() as u64 * self.target.part_size + len as u64;
        if !body.is_empty() {
            let number = up.parts.len() as i32 + 1;
            let last = with_retry(self.retry(), || {
                vanished(store.upload_part(&key, &up.id, number, body.clone()))
            })
            .await;
            let last = match last {
                Ok(Ok(receipt)) => receipt,
                Ok(Err(gone)) => return Err(self.vanished_error(gone)),
                Err(e) => {
                    let error = self.upload_error(e);
                    self.abort(Some(up)).await;
                    return Err(error);
                }
            };
            up.parts.push(last);
        }
        self.held.release(len);
        let outcome = with_retry(self.retry(), || {
            vanished(store.complete_if_absent(&key, &up.id, &up.parts))
        })
        .await;
        match outcome {
            Ok(Err(gone)) => Err(self.vanished_error(gone)),
            Ok(Ok(outcome)) => {
                if outcome == PutOutcome::AlreadyExists {
                    // An earlier attempt wrote it; this upload's parts are not needed.
                    store.abort_upload(&key, &up.id).await;
                }
                count_outcome(&self.target.health, outcome, len as u64, size);
                Ok(StreamReport {
                    outcome,
                    rows,
                    parts: up.parts.len() as u32,
                })
            }
            Err(e) => {
                let error = self.upload_error(e);
                self.abort(Some(up)).await;
                Err(error)
            }
        }
    }

    async fn abort(&self, upload: Option<Upload>) {
        if let Some(up) = upload {
            self.target
                .store
                .abort_upload(&self.object.key, &up.id)
                .await;
        }
    }
}

/// Runs a request of an upload in progress, answering `NoSuchUpload` apart (as `Ok(Err(_))`):
/// retrying it with the same upload id could never succeed. To `with_retry` that answer is a
/// success, and so to the destination's health: the store answered and authorized the
/// request; it is this upload that is gone, which stops only its partition.
async fn vanished<T>(
    request: BoxFuture<'_, Result<T, StoreError>>,
) -> Result<Result<T, StoreError>, StoreError> {
    match request.await {
        Ok(done) => Ok(Ok(done)),
        Err(e) if e.code.as_deref() == Some("NoSuchUpload") => Ok(Err(e)),
        Err(e) => Err(e),
    }
}
