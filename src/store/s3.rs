//! S3 and S3-compatible stores through aws-sdk-s3: conditional PUTs and error classification.

use std::time::Duration;

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::Bytes;

use super::{BoxFuture, ErrorClass, ObjectMetadata, ObjectStore, PutOutcome, StoreError};
use crate::auth::{AuthError, credentials_provider};
use crate::config::{DestinationSettings, UploadSettings};

/// Builds the S3 client for a destination: region, endpoint, path style, credentials.
pub async fn build_s3_client(dest: &DestinationSettings) -> Client {
    build_s3_client_with(dest, credentials_provider(dest).await)
}

/// Builds the S3 client for a destination, signing with `credentials`.
///
/// SDK retries are off: the delivery layer retries with its own policy, which knows that a
/// 412 on a retried PUT means an earlier attempt succeeded.
pub fn build_s3_client_with(dest: &DestinationSettings, credentials: SharedCredentialsProvider) -> Client {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .operation_attempt_timeout(Duration::from_secs(300))
        .build();
    let mut builder = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .credentials_provider(credentials);
    builder = builder
        .region(Region::new(dest.region.clone()))
        .force_path_style(dest.path_style)
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts);
    if let Some(endpoint) = &dest.endpoint {
        // The SDK's default flexible checksums break several S3-compatible stores.
        builder = builder
            .endpoint_url(endpoint)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    }
    Client::from_conf(builder.build())
}

/// A bucket, written with `If-None-Match: *` unless overwrite protection is off; objects
/// above the multipart threshold go up in parts.
#[derive(Debug, Clone)]
pub struct S3Store {
    pub(super) client: Client,
    pub(super) bucket: String,
    pub(super) overwrite_protection: bool,
    pub(super) upload: UploadSettings,
    /// Send CRC32 checksums with parts (AWS); S3-compatible stores get none unless required.
    pub(super) part_checksums: bool,
}

impl S3Store {
    /// A store for `bucket` using `client`, with the default multipart settings.
    pub fn new(client: Client, bucket: String, overwrite_protection: bool) -> Self {
        Self {
            client,
            bucket,
            overwrite_protection,
            upload: UploadSettings::default(),
            part_checksums: false,
        }
    }

    /// Uses `upload` to choose between one PUT and a multipart upload.
    pub fn with_upload(mut self, upload: UploadSettings) -> Self {
        self.upload = upload;
        self
    }

    /// Sends part checksums (for AWS; see [`build_s3_client`]).
    pub fn with_part_checksums(mut self, on: bool) -> Self {
        self.part_checksums = on;
        self
    }

    pub(super) fn target(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}

/// Sorts an SDK error into "retry" or "needs a human", keeping the store's code and message.
pub(super) fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &'static str,
    target: String,
    err: &SdkError<E, HttpResponse>,
) -> StoreError {
    let (class, code, message) = match err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code().map(str::to_string);
            let message = ctx
                .err()
                .message()
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {status}"));
            let transient = status >= 500
                || status == 429
                || status == 409
                || matches!(
                    code.as_deref(),
                    Some(
                        "SlowDown"
                            | "RequestTimeout"
                            | "InternalError"
                            | "ServiceUnavailable"
                            // A multipart upload that vanished: start a new one.
                            | "NoSuchUpload"
                    )
                );
            let class = if transient {
                ErrorClass::Transient
            } else {
                ErrorClass::Permanent
            };
            (
                class,
                code.or_else(|| Some(format!("HTTP {status}"))),
                message,
            )
        }
        SdkError::ConstructionFailure(_) => (
            ErrorClass::Permanent,
            None,
            DisplayErrorContext(err).to_string(),
        ),
        _ => match AuthError::find_in(err) {
            // Credentials could not be obtained: say so plainly, and let a refused token or
            // role wait for a human instead of spinning through fast retries.
            Some(auth) => (
                if auth.needs_a_human() {
                    ErrorClass::Permanent
                } else {
                    ErrorClass::Transient
                },
                Some("CredentialsUnavailable".to_string()),
                auth.to_string(),
            ),
            None => (
                ErrorClass::Transient,
                None,
                DisplayErrorContext(err).to_string(),
            ),
        },
    };
    StoreError {
        class,
        op,
        target,
        code,
        message,
    }
}

pub(super) fn is_precondition_failed<E: ProvideErrorMetadata>(
    err: &SdkError<E, HttpResponse>,
) -> bool {
    match err {
        SdkError::ServiceError(ctx) => {
            ctx.raw().status().as_u16() == 412 || ctx.err().code() == Some("PreconditionFailed")
        }
        _ => false,
    }
}

impl ObjectStore for S3Store {
    fn put_if_absent<'a>(
        &'a self,
        key: &'a str,
        body: Bytes,
        metadata: &'a ObjectMetadata,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        Box::pin(async move {
            if body.len() as u64 > self.upload.multipart_threshold {
                return self.put_multipart(key, body, metadata).await;
            }
            let mut req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_length(body.len() as i64)
                .body(ByteStream::from(body));
            if self.overwrite_protection {
                req = req.if_none_match("*");
            }
            for (k, v) in metadata {
                req = req.metadata(k, v);
            }
            match req.send().await {
                Ok(_) => Ok(PutOutcome::Created),
                Err(e) if is_precondition_failed(&e) => Ok(PutOutcome::AlreadyExists),
                Err(e) => Err(classify("PUT", self.target(key), &e)),
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify("DELETE", self.target(key), &e))
        })
    }

    fn describe(&self) -> String {
        format!("s3://{}", self.bucket)
    }
}
