//! The configuration file exactly as written: serde structs that reject unknown keys.
//!
//! Nothing here is validated beyond its TOML type; `settings` turns these into typed,
//! checked settings.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where records come from.
    pub source: RawSource,
    /// Where records go; each topic goes to exactly one destination.
    pub destinations: Vec<RawDestination>,
    /// Worker-wide limits and timeouts.
    #[serde(default)]
    pub worker: RawWorker,
    /// Health and metrics endpoint.
    #[serde(default)]
    pub telemetry: RawTelemetry,
}

/// `[source]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// `kafka` or `file`.
    pub kind: String,
    /// Kafka bootstrap servers.
    pub brokers: Option<String>,
    /// Kafka consumer group.
    pub group_id: Option<String>,
    /// Topics to consume; defaults to every topic named by a destination.
    pub topics: Option<Vec<String>>,
    /// NDJSON file for `kind = "file"`; `-` reads standard input.
    pub path: Option<String>,
    /// librdkafka properties passed through verbatim.
    #[serde(default)]
    pub properties: BTreeMap<String, toml::Value>,
}

/// `[[destinations]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    pub name: String,
    pub topics: Option<Vec<String>>,
    /// `s3://bucket/prefix` or `file://dir`; `s3://$S3_BUCKET_NAME` when left out.
    pub url: Option<String>,
    /// `aws`, `r2`, `gcs`, `minio` or `generic`.
    pub provider: Option<String>,
    /// Cloudflare account id (R2's endpoint).
    pub account_id: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    #[serde(default, deserialize_with = "super::lenient::opt_bool")]
    pub path_style: Option<bool>,
    /// `AES256` or `aws:kms`.
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    /// Canned ACL, e.g. `bucket-owner-full-control`.
    pub acl: Option<String>,
    pub storage_class: Option<String>,
    pub key_template: Option<String>,
    /// The IANA time zone `{ts:…}` renders in (default `UTC`).
    pub timezone: Option<String>,
    pub timestamp: Option<String>,
    pub on_bad_record: Option<String>,
    #[serde(default, deserialize_with = "super::lenient::opt_bool")]
    pub overwrite_protection: Option<bool>,
    /// Run the connection test at start-up and consume nothing for this destination until it
    /// passes (default true).
    #[serde(default, deserialize_with = "super::lenient::opt_bool")]
    pub preflight: Option<bool>,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub rotation: RawRotation,
    #[serde(default)]
    pub parquet: RawParquet,
    #[serde(default)]
    pub upload: RawUpload,
    #[serde(default)]
    pub schema: RawSchema,
    #[serde(default)]
    pub limits: RawLimits,
}

/// `[destinations.schema]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchema {
    /// `infer` (the default) or `declared`.
    pub mode: Option<String>,
    /// Infer mode: a type conflict makes the record bad instead of the field a string.
    #[serde(default, deserialize_with = "super::lenient::opt_bool")]
    pub strict: Option<bool>,
    /// Infer mode: recognise RFC 3339 strings as timestamps and `YYYY-MM-DD` as dates.
    #[serde(default, deserialize_with = "super::lenient::opt_bool")]
    pub detect_timestamps: Option<bool>,
    /// Fields (dotted paths) kept as JSON text.
    pub json_columns: Option<Vec<String>>,
    /// Declared mode: the columns.
    pub columns: Option<Vec<RawColumn>>,
    /// Declared mode: an Arrow JSON schema or a Parquet message type.
    pub schema_file: Option<String>,
    /// Declared mode: `dead_letter` (the default) or `ignore`.
    pub unknown_fields: Option<String>,
    /// `true` (the default), `false`, or a list of `_kafka_*` column names.
    pub metadata_columns: Option<toml::Value>,
}

/// One `columns` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default, deserialize_with = "super::lenient::opt_bool")]
    pub nullable: Option<bool>,
}

/// `[destinations.limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_record_size: Option<String>,
    #[serde(default, deserialize_with = "super::lenient::opt_u64")]
    pub max_depth: Option<u64>,
    #[serde(default, deserialize_with = "super::lenient::opt_u64")]
    pub max_columns: Option<u64>,
}

/// `[destinations.upload]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpload {
    pub multipart_threshold: Option<String>,
    pub part_size: Option<String>,
    pub request_timeout: Option<String>,
}

/// `[destinations.auth]`. Its `Debug` shows which secrets are set, never their values.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub method: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub access_key_id_file: Option<String>,
    pub secret_access_key_file: Option<String>,
    pub session_token_file: Option<String>,
    pub role_arn: Option<String>,
    pub session_name: Option<String>,
    pub duration: Option<String>,
    pub external_id: Option<String>,
    pub sts_endpoint: Option<String>,
    pub sts_region: Option<String>,
    pub token_file: Option<String>,
    pub token_gcp_audience: Option<String>,
    pub token_command: Option<Vec<String>>,
    /// Host (and port) of the GCP metadata server; tests point it at a local server.
    pub gcp_metadata_host: Option<String>,
}

/// `[destinations.rotation]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRotation {
    #[serde(default, deserialize_with = "super::lenient::opt_u64")]
    pub max_records: Option<u64>,
    pub max_bytes: Option<toml::Value>,
    pub target_file_size: Option<String>,
    pub max_age: Option<String>,
    #[serde(default, deserialize_with = "super::lenient::opt_u64")]
    pub max_open_paths: Option<u64>,
}

/// `[destinations.parquet]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawParquet {
    pub compression: Option<String>,
    #[serde(default, deserialize_with = "super::lenient::opt_u64")]
    pub row_group_size: Option<u64>,
    pub row_group_bytes: Option<String>,
}

/// `[worker]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorker {
    pub shutdown_timeout: Option<String>,
    #[serde(default, deserialize_with = "super::lenient::opt_u64")]
    pub max_in_flight_segments: Option<u64>,
    #[serde(default, deserialize_with = "super::lenient::opt_u64")]
    pub max_concurrent_uploads: Option<u64>,
    pub max_buffer_bytes: Option<String>,
    pub memory_limit: Option<String>,
    pub startup_timeout: Option<String>,
    pub permanent_error_retry: Option<String>,
}

/// `[telemetry]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// Address of the health and metrics HTTP endpoint, e.g. `0.0.0.0:9464`.
    pub listen: Option<String>,
}

impl std::fmt::Debug for RawAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("RawAuth")
            .field("method", &self.method)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .field("access_key_id_file", &self.access_key_id_file)
            .field("secret_access_key_file", &self.secret_access_key_file)
            .field("session_token_file", &self.session_token_file)
            .field("role_arn", &self.role_arn)
            .field("external_id", &self.external_id)
            .field("token_file", &self.token_file)
            .field("token_gcp_audience", &self.token_gcp_audience)
            .finish_non_exhaustive()
    }
}
