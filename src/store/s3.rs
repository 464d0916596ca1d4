//! S3 and S3-compatible stores through aws-sdk-s3: conditional PUTs and error classification.

use std::time::Duration;

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::IdentityCache;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::Bytes;

use super::{
    BoxFuture, ErrorClass, ObjectMetadata, ObjectStore, PartReceipt, PutOutcome, StoreError,
    UploadId,
};
use crate::auth::{AuthError, credentials_provider};
use crate::config::{AuthSettings, DestinationSettings, Provider, UploadSettings, WriteOptions};

/// Builds the S3 client for a destination: region, endpoint, path style, credentials.
pub async fn build_s3_client(dest: &DestinationSettings) -> Client {
    build_s3_client_with(dest, credentials_provider(dest).await)
}

/// Whether pail's own refresher caches the destination's credentials (STS methods): then the
/// SDK must not cache them too, or a refresh would only take effect when the old credentials
/// are about to expire.
fn refreshed_by_pail(dest: &DestinationSettings) -> bool {
    matches!(
        dest.auth,
        AuthSettings::WebIdentity(_) | AuthSettings::AssumeRole(_)
    )
}

/// How long the store may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The slowest transfer a request waits for: one MiB a second.
const SLOWEST_UPLOAD: u64 = 1 << 20;

/// How long one request carrying `len` bytes may take: `floor` plus a second per MiB.
pub fn attempt_timeout(floor: Duration, len: u64) -> Duration {
    floor + Duration::from_secs(len / SLOWEST_UPLOAD)
}

/// Builds the S3 client for a destination, signing with `credentials`.
///
/// SDK retries are off: the delivery layer retries with its own policy, which knows that a
/// 412 on a retried PUT means an earlier attempt succeeded.
pub fn build_s3_client_with(
    dest: &DestinationSettings,
    credentials: SharedCredentialsProvider,
) -> Client {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
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
        builder = builder.endpoint_url(endpoint);
    }
    if refreshed_by_pail(dest) {
        builder = builder.identity_cache(IdentityCache::no_cache());
    }
    if !dest.provider.is_aws() {
        // The SDK's default flexible checksums break several S3-compatible stores.
        builder = builder
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    }
    Client::from_conf(builder.build())
}

/// How a write says "only if nothing is there yet".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// No condition: `overwrite_protection = false`, for stores that ignore it.
    None,
    /// `If-None-Match: *` (S3, R2, MinIO, most S3-compatible stores).
    IfNoneMatch,
    /// `x-goog-if-generation-match: 0`, Cloud Storage's own create-only precondition.
    GoogGenerationZero,
}

impl Precondition {
    /// The condition a destination's writes carry.
    pub fn for_destination(dest: &DestinationSettings) -> Self {
        match (dest.overwrite_protection, dest.provider) {
            (false, _) => Self::None,
            (true, Provider::Gcs) => Self::GoogGenerationZero,
            (true, _) => Self::IfNoneMatch,
        }
    }

    /// Adds the condition's header to a write request.
    pub(super) fn apply(self, req: &mut HttpRequest) {
        let (name, value) = match self {
            Self::None => return,
            Self::IfNoneMatch => ("if-none-match", "*"),
            Self::GoogGenerationZero => ("x-goog-if-generation-match", "0"),
        };
        req.headers_mut().insert(name, value);
    }
}

/// Applies the write options (SSE, ACL, storage class) and metadata to a PutObject or
/// CreateMultipartUpload request, whose builders share these setters.
macro_rules! with_object_options {
    ($req:expr, $store:expr, $metadata:expr) => {{
        let mut req = $req;
        match &$store.write.sse {
            Some($crate::config::Sse::Aes256) => {
                req = req.server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
            }
            Some($crate::config::Sse::Kms { sse_kms_key_id }) => {
                req = req
                    .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                    .set_ssekms_key_id(sse_kms_key_id.clone())
            }
            None => {}
        }
        if let Some(acl) = &$store.write.acl {
            req = req.acl(aws_sdk_s3::types::ObjectCannedAcl::from(acl.as_str()));
        }
        if let Some(class) = &$store.write.storage_class {
            req = req.storage_class(aws_sdk_s3::types::StorageClass::from(class.as_str()));
        }
        for (k, v) in $metadata {
            req = req.metadata(k, v);
        }
        req
    }};
}
pub(super) use with_object_options;

/// A bucket, written with `If-None-Match: *` unless overwrite protection is off; objects
/// above the multipart threshold go up in parts.
#[derive(Debug, Clone)]
pub struct S3Store {
    pub(super) client: Client,
    pub(super) bucket: String,
    pub(super) precondition: Precondition,
    pub(super) upload: UploadSettings,
    /// Send CRC32 checksums with parts (AWS); S3-compatible stores get none unless required.
    pub(super) part_checksums: bool,
    pub(super) write: WriteOptions,
    /// The static access key id, named when the store says the signature does not match.
    access_key_id: Option<String>,
}

impl S3Store {
    /// A store for `bucket` using `client`, with the default multipart settings and no
    /// write options; `If-None-Match: *` unless `overwrite_protection` is off.
    pub fn new(client: Client, bucket: String, overwrite_protection: bool) -> Self {
        Self {
            client,
            bucket,
            precondition: if overwrite_protection {
                Precondition::IfNoneMatch
            } else {
                Precondition::None
            },
            upload: UploadSettings::default(),
            part_checksums: false,
            write: WriteOptions::default(),
            access_key_id: None,
        }
    }

    /// The store a destination's settings describe, writing to `bucket` through `client`.
    pub fn for_destination(client: Client, bucket: String, dest: &DestinationSettings) -> Self {
        Self {
            client,
            bucket,
            precondition: Precondition::for_destination(dest),
            upload: dest.upload,
            part_checksums: dest.provider.is_aws(),
            write: dest.write.clone(),
            access_key_id: match &dest.auth {
                AuthSettings::Static(keys) => Some(keys.access_key_id.clone()),
                _ => None,
            },
        }
    }

    /// Uses `upload` to choose between one PUT and a multipart upload.
    /// Timeouts for one request carrying `len` bytes: `request_timeout` plus a second per MiB.
    /// The SDK cancels a request that runs over, and the error is transient; a multipart
    /// upload whose part timed out is aborted like any that does not complete.
    pub(super) fn timeouts(&self, len: u64) -> aws_sdk_s3::config::Builder {
        let attempt = attempt_timeout(self.upload.request_timeout, len);
        aws_sdk_s3::config::Builder::new().timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(attempt)
                .build(),
        )
    }

    pub fn with_upload(mut self, upload: UploadSettings) -> Self {
        self.upload = upload;
        self
    }

    pub(super) fn target(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// Classifies an SDK error for `op` on `key`, saying which access key a signature or key
    /// error concerns (never the secret).
    pub(super) fn error<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        op: &'static str,
        key: &str,
        err: &SdkError<E, HttpResponse>,
    ) -> StoreError {
        let mut error = classify(op, self.target(key), err);
        if let Some(id) = &self.access_key_id {
            match error.code.as_deref() {
                Some("SignatureDoesNotMatch") => error.message.push_str(&format!(
                    " (the signature did not match: the secret access key is wrong for access \
                     key id {id})"
                )),
                Some("InvalidAccessKeyId") => error
                    .message
                    .push_str(&format!(" (access key id {id} is unknown to this store)")),
                _ => {}
            }
        }
        error
    }
}

/// Sorts an SDK error into "retry" or "needs a human", keeping the store's code and message.
pub(super) fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &'static str,
    target: String,
    err: &SdkError<E, HttpResponse>,
) -> StoreError {
    let (status, bucket_region) = match err {
        SdkError::ServiceError(ctx) => (
            Some(ctx.raw().status().as_u16()),
            bucket_region(ctx.raw(), ctx.err().message()),
        ),
        _ => (None, None),
    };
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
        status,
        bucket_region,
    }
}

/// The bucket's region as the store tells it: the `x-amz-bucket-region` header of a redirect,
/// `<Region>` in an AuthorizationHeaderMalformed body, "expecting 'REGION'" in its message, or
/// the regional `<Endpoint>` of a PermanentRedirect body.
fn bucket_region(raw: &HttpResponse, message: Option<&str>) -> Option<String> {
    let valid = |r: &str| {
        !r.is_empty() && r.len() < 32 && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if let Some(r) = raw.headers().get("x-amz-bucket-region")
        && valid(r)
    {
        return Some(r.to_string());
    }
    let body = std::str::from_utf8(raw.body().bytes().unwrap_or_default()).unwrap_or("");
    let between = |text: &str, open: &str, close: &str| -> Option<String> {
        let start = text.find(open)? + open.len();
        let len = text[start..].find(close)?;
        Some(text[start..start + len].to_string())
    };
    if let Some(r) = between(body, "<Region>", "</Region>").filter(|r| valid(r)) {
        return Some(r);
    }
    if let Some(r) = message
        .and_then(|m| between(m, "expecting '", "'"))
        .filter(|r| valid(r))
    {
        return Some(r);
    }
    // bucket.s3.eu-west-1.amazonaws.com or bucket.s3-eu-west-1.amazonaws.com
    let endpoint = between(body, "<Endpoint>", "</Endpoint>")?;
    let host = endpoint.strip_suffix(".amazonaws.com")?;
    let (_, region) = host
        .rsplit_once(".s3.")
        .or_else(|| host.rsplit_once(".s3-"))?;
    valid(region).then(|| region.to_string())
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
            let len = body.len() as u64;
            if len > self.upload.multipart_threshold {
                return self.put_multipart(key, body, metadata).await;
            }
            let req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_length(body.len() as i64)
                .body(ByteStream::from(body));
            let req = with_object_options!(req, self, metadata);
            let precondition = self.precondition;
            let sent = req
                .customize()
                .config_override(self.timeouts(len))
                .mutate_request(move |r| precondition.apply(r))
                .send()
                .await;
            match sent {
                Ok(_) => Ok(PutOutcome::Created),
                Err(e) if is_precondition_failed(&e) => Ok(PutOutcome::AlreadyExists),
                Err(e) => Err(self.error("PUT", key, &e)),
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
                .map_err(|e| self.error("DELETE", key, &e))
        })
    }

    fn create_upload<'a>(
        &'a self,
        key: &'a str,
        metadata: &'a ObjectMetadata,
    ) -> BoxFuture<'a, Result<UploadId, StoreError>> {
        Box::pin(self.create(key, metadata))
    }

    fn upload_part<'a>(
        &'a self,
        key: &'a str,
        upload: &'a UploadId,
        number: i32,
        body: Bytes,
    ) -> BoxFuture<'a, Result<PartReceipt, StoreError>> {
        Box::pin(self.part(key, upload, number, body))
    }

    fn complete_if_absent<'a>(
        &'a self,
        key: &'a str,
        upload: &'a UploadId,
        parts: &'a [PartReceipt],
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        Box::pin(self.complete(key, upload, parts))
    }

    fn abort_upload<'a>(&'a self, key: &'a str, upload: &'a UploadId) -> BoxFuture<'a, ()> {
        Box::pin(self.abort(key, upload))
    }

    fn describe(&self) -> String {
        format!("s3://{}", self.bucket)
    }
}
