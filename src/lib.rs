//! pail: an append-only, exactly-once delivery worker from Kafka (or NDJSON files) to
//! partitioned Parquet in S3-compatible stores or a local directory.

pub mod auth;
pub mod buffer;
pub mod check;
pub mod config;
pub mod decode;
pub mod delivery;
pub mod encode;
pub mod partition;
pub mod pipeline;
pub mod protocol;
pub mod run;
pub mod schema;
pub mod source;
pub mod store;
pub mod telemetry;
