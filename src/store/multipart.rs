//! Multipart uploads for objects above the threshold: parts, then a Complete carrying
//! `If-None-Match: *`, and an abort whenever the upload does not complete — including the
//! 412 that means an earlier attempt already wrote the object.

use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::s3::{S3Store, is_precondition_failed, with_object_options};
use super::{ErrorClass, ObjectMetadata, PartReceipt, PutOutcome, StoreError, UploadId};
use crate::telemetry::METRICS;

/// Parts of one object uploaded at the same time.
const PART_CONCURRENCY: usize = 4;

impl S3Store {
    /// Writes `body` at `key` as a multipart upload unless an object already exists there.
    pub(super) async fn put_multipart(
        &self,
        key: &str,
        body: Bytes,
        metadata: &ObjectMetadata,
    ) -> Result<PutOutcome, StoreError> {
        let upload = self.create(key, metadata).await?;
        let result = self.parts_and_complete(key, &upload, body).await;
        if !matches!(result, Ok(PutOutcome::Created)) {
            // Parts of an upload that did not complete are billed until aborted.
            self.abort(key, &upload).await;
        }
        result
    }

    pub(super) async fn create(
        &self,
        key: &str,
        metadata: &ObjectMetadata,
    ) -> Result<UploadId, StoreError> {
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key);
        if self.part_checksums {
            create = create.checksum_algorithm(ChecksumAlgorithm::Crc32);
        }
        let created = with_object_options!(create, self, metadata)
            .customize()
            .config_override(self.timeouts(0))
            .send()
            .await
            .map_err(|e| self.error("CreateMultipartUpload", key, &e))?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(StoreError {
                class: ErrorClass::Transient,
                op: "CreateMultipartUpload",
                target: self.target(key),
                code: None,
                message: "the store returned no upload id".into(),
                status: None,
                bucket_region: None,
            });
        };
        METRICS.multipart_uploads.inc();
        Ok(UploadId(upload_id))
    }

    async fn parts_and_complete(
        &self,
        key: &str,
        upload: &UploadId,
        body: Bytes,
    ) -> Result<PutOutcome, StoreError> {
        let part_size = self.upload.part_size as usize;
        let chunks = (0..body.len().div_ceil(part_size)).map(|i| {
            let end = ((i + 1) * part_size).min(body.len());
            (i as i32 + 1, body.slice(i * part_size..end))
        });
        let parts: Vec<PartReceipt> = futures::stream::iter(chunks)
            .map(|(number, chunk)| self.part(key, upload, number, chunk))
            .buffered(PART_CONCURRENCY)
            .try_collect()
            .await?;
        self.complete(key, upload, &parts).await
    }

    /// Completes with `If-None-Match: *`: a 412 means an earlier attempt wrote the object.
    pub(super) async fn complete(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[PartReceipt],
    ) -> Result<PutOutcome, StoreError> {
        let completed = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number)
                    .set_e_tag(p.etag.clone())
                    .set_checksum_crc32(p.checksum_crc32.clone())
                    .build()
            })
            .collect();
        let complete = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload.0)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            );
        let precondition = self.precondition;
        // Completing takes longer the larger the object (S3 assembles it meanwhile): allow
        // for the parts' bytes.
        let total = parts.len() as u64 * self.upload.part_size;
        let sent = complete
            .customize()
            .config_override(self.timeouts(total))
            .mutate_request(move |r| precondition.apply(r))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(PutOutcome::Created),
            Err(e) if is_precondition_failed(&e) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(self.error("CompleteMultipartUpload", key, &e)),
        }
    }

    pub(super) async fn part(
        &self,
        key: &str,
        upload: &UploadId,
        number: i32,
        chunk: Bytes,
    ) -> Result<PartReceipt, StoreError> {
        let len = chunk.len() as u64;
        let mut req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload.0)
            .part_number(number)
            .content_length(chunk.len() as i64)
            .body(chunk.into());
        if self.part_checksums {
            req = req.checksum_algorithm(ChecksumAlgorithm::Crc32);
        }
        let out = req
            .customize()
            .config_override(self.timeouts(len))
            .send()
            .await
            .map_err(|e| self.error("UploadPart", key, &e))?;
        Ok(PartReceipt {
            number,
            etag: out.e_tag().map(str::to_string),
            checksum_crc32: out.checksum_crc32().map(str::to_string),
        })
    }

    /// Best effort: a store that refuses (no s3:AbortMultipartUpload) leaves the parts to a
    /// lifecycle rule; the refusal is counted and logged, never fatal.
    pub(super) async fn abort(&self, key: &str, upload: &UploadId) {
        let result = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload.0)
            .send()
            .await;
        match result {
            Ok(_) => {
                METRICS.multipart_aborts.inc();
            }
            Err(e) => {
                let error = self.error("AbortMultipartUpload", key, &e);
                if error.code.as_deref() == Some("NoSuchUpload") {
                    // Completed after all (the answer to Complete was lost) or already aborted.
                    return;
                }
                METRICS.multipart_abort_failures.inc();
                tracing::warn!(%error, upload_id = %upload.0,
                    "cannot abort an incomplete multipart upload; its parts stay until removed. \
                     Allow s3:AbortMultipartUpload or add a lifecycle rule that aborts incomplete \
                     multipart uploads after a day");
            }
        }
    }
}
