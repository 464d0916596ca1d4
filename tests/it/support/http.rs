//! The worker's health endpoint as a client sees it, and polling until a condition holds.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::workers::wait_for_log;

/// Sends raw bytes, returns the status code and body of the answer.
pub async fn request(addr: &str, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(raw).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// A counter or gauge without labels from `/metrics`; 0 when absent.
pub async fn metric(addr: &str, name: &str) -> u64 {
    let (_, body) = get(addr, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// One GET on a connection of its own (the endpoint keeps connections alive otherwise).
pub async fn get(addr: &str, path: &str) -> (u16, String) {
    request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: pail\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// Whether `/healthz` reports every destination accepting uploads and no partition stopped
/// (`/readyz` says only that the worker can work: see `telemetry::health`).
pub async fn healthy(addr: &str) -> bool {
    let (status, body) = get(addr, "/healthz").await;
    status == 200 && body.contains("\"status\": \"ok\"")
}

/// Polls `check` every 100 ms until it holds, failing the test after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The health endpoint's address, from the worker's log.
pub async fn endpoint_address(log: &Path) -> String {
    let needle = "endpoint listening address=";
    assert!(wait_for_log(log, needle, 1, Duration::from_secs(30)).await);
    let text = std::fs::read_to_string(log).unwrap();
    text.lines()
        .find_map(|l| l.split(needle).nth(1))
        .unwrap()
        .trim()
        .to_string()
}
