//! Object stores: the one operation pail needs (create an object if absent) and the delete the
//! connection test uses, for S3 and for a local directory.

mod local;
mod multipart;
mod s3;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;

pub use local::LocalStore;
pub use s3::{Precondition, S3Store, build_s3_client, build_s3_client_with};

use crate::config::{DestinationSettings, Location};

/// A boxed, sendable future: the trait is used behind `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a conditional PUT found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was written now.
    Created,
    /// An object already had this key (412): an earlier attempt wrote it.
    AlreadyExists,
}

/// Whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 5xx, SlowDown, timeouts, connection errors: retry with backoff.
    Transient,
    /// Access denied, missing bucket, bad credentials: needs a human; retry slowly.
    Permanent,
}

/// A failed store operation, naming the object and the store's error code.
#[derive(Debug, Error)]
#[error("{op} {target}: {}{message}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
pub struct StoreError {
    pub class: ErrorClass,
    pub op: &'static str,
    pub target: String,
    pub code: Option<String>,
    pub message: String,
    /// The HTTP status, when the store answered.
    pub status: Option<u16>,
    /// The region the store says the bucket is in (a redirect, a malformed-authorization
    /// answer), to tell the user what to set.
    pub bucket_region: Option<String>,
}

/// User metadata stored with an object (`x-amz-meta-*` on S3).
pub type ObjectMetadata = Vec<(String, String)>;

/// A multipart upload in progress: the store's id for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadId(pub String);

/// What the store answered for one uploaded part, needed to complete the upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartReceipt {
    /// 1-based, in the order of the object's bytes.
    pub number: i32,
    pub etag: Option<String>,
    pub checksum_crc32: Option<String>,
}

/// Where sealed segments are written. Implementations never read, list or overwrite.
///
/// Large objects are streamed: parts go up while their file is still being written, and the
/// object appears only when [`ObjectStore::complete_if_absent`] succeeds.
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// Writes `body` at `key` unless an object already exists there.
    fn put_if_absent<'a>(
        &'a self,
        key: &'a str,
        body: Bytes,
        metadata: &'a ObjectMetadata,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>>;

    /// Starts a multipart upload of `key`; nothing is visible until it completes.
    fn create_upload<'a>(
        &'a self,
        key: &'a str,
        metadata: &'a ObjectMetadata,
    ) -> BoxFuture<'a, Result<UploadId, StoreError>> {
        let _ = metadata;
        Box::pin(async move { Err(no_multipart(key, "CreateMultipartUpload")) })
    }

    /// Uploads part `number` of an upload.
    fn upload_part<'a>(
        &'a self,
        key: &'a str,
        upload: &'a UploadId,
        number: i32,
        body: Bytes,
    ) -> BoxFuture<'a, Result<PartReceipt, StoreError>> {
        let _ = (upload, number, body);
        Box::pin(async move { Err(no_multipart(key, "UploadPart")) })
    }

    /// Completes an upload from its parts unless an object already exists at `key`
    /// (`If-None-Match: *`): `AlreadyExists` means an earlier attempt wrote it.
    fn complete_if_absent<'a>(
        &'a self,
        key: &'a str,
        upload: &'a UploadId,
        parts: &'a [PartReceipt],
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        let _ = (upload, parts);
        Box::pin(async move { Err(no_multipart(key, "CompleteMultipartUpload")) })
    }

    /// Abandons an upload, best effort: a store that refuses leaves its parts to a lifecycle
    /// rule (counted and logged by the implementation).
    fn abort_upload<'a>(&'a self, key: &'a str, upload: &'a UploadId) -> BoxFuture<'a, ()> {
        let _ = (key, upload);
        Box::pin(async {})
    }

    /// Deletes `key` (used by the connection test only).
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The store's URL, for messages.
    fn describe(&self) -> String;
}

fn no_multipart(key: &str, op: &'static str) -> StoreError {
    StoreError {
        class: ErrorClass::Permanent,
        op,
        target: key.to_string(),
        code: None,
        message: "this store does not take multipart uploads".into(),
        status: None,
        bucket_region: None,
    }
}

/// Builds the store a destination writes to.
pub async fn build_store(dest: &DestinationSettings) -> Result<Arc<dyn ObjectStore>, StoreError> {
    Ok(match &dest.location {
        Location::Local { root } => {
            Arc::new(LocalStore::new(root.clone(), dest.overwrite_protection))
        }
        Location::S3 { bucket, .. } => {
            let client = build_s3_client(dest).await;
            Arc::new(S3Store::for_destination(client, bucket.clone(), dest))
        }
    })
}

/// The key prefix inside the store (empty for a local directory, whose root is the prefix).
pub fn key_prefix(location: &Location) -> &str {
    match location {
        Location::S3 { prefix, .. } => prefix,
        Location::Local { .. } => "",
    }
}
