//! Shared test harness: an in-process S3 server with a PUT log and fault injection, a mock
//! Kafka cluster with a producer, and readers for what pail wrote.
#![allow(dead_code)]

pub mod kafka;
pub mod moto;
pub mod oidc;
pub mod read;
pub mod s3;
pub mod seaweed;
pub mod workers;

use std::time::Duration;

/// Fails the test if `fut` takes longer than `limit`: tests are bounded.
pub async fn bounded<T>(limit: Duration, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("test step did not finish within {limit:?}"),
    }
}

/// Parses a config text and runs it with `--once` semantics, bounded by `limit`.
pub async fn run_once(
    text: &str,
    limit: Duration,
) -> Result<pail::pipeline::RunStats, pail::run::RunError> {
    let settings = pail::config::parse(std::path::Path::new("test.toml"), text, &|_| None).unwrap();
    run_settings_once(settings, limit).await
}

/// Runs validated settings with `--once` semantics, bounded by `limit`.
pub async fn run_settings_once(
    settings: pail::config::Settings,
    limit: Duration,
) -> Result<pail::pipeline::RunStats, pail::run::RunError> {
    let shutdown = tokio_util::sync::CancellationToken::new();
    bounded(
        limit,
        pail::run::run(settings, pail::run::RunOptions { once: true }, shutdown),
    )
    .await
}

/// Decodes `%XX` escapes (invalid ones are kept as they are; invalid UTF-8 is replaced).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A path-style S3 client in us-east-1 for `endpoint`, signing with these keys.
pub fn s3_client(
    endpoint: &str,
    id: &str,
    secret: &str,
    token: Option<&str>,
) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            id,
            secret,
            token.map(str::to_string),
            None,
            "test",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Writes `n` NDJSON events (`id` 0..n, one event time) to `dir/in.ndjson`.
pub fn ndjson_input(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let path = dir.join("in.ndjson");
    let lines: String = (0..n)
        .map(|i| format!("{{\"id\":{i},\"ts\":\"2026-05-01T10:00:00Z\"}}\n"))
        .collect();
    std::fs::write(&path, lines).unwrap();
    path
}
