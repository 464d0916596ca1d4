//! The health and metrics endpoint: `/healthz` (the run loop turns), `/readyz` (every
//! destination accepts uploads) and `/metrics` (Prometheus text format).
//!
//! Three read-only GET routes need no HTTP framework: each connection gets one bounded,
//! time-limited request and one answer, then is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::health::Health;

/// Longest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client gets to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("telemetry endpoint: cannot listen on {addr}: {source}")]
pub struct ServeError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Binds `addr` and serves `health` until the returned task is aborted.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
) -> Result<(SocketAddr, JoinHandle<()>), ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!(address = %local, "health and metrics endpoint listening");
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((socket, _)) => {
                    let health = health.clone();
                    tokio::spawn(async move {
                        let _ =
                            tokio::time::timeout(READ_TIMEOUT * 2, answer(socket, &health)).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "telemetry endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok((local, task))
}

/// Reads one request head and writes one response.
async fn answer(mut socket: TcpStream, health: &Health) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            let n = socket.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&chunk[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(true);
            }
            if head.len() > MAX_HEAD {
                return Ok(false);
            }
        }
    })
    .await;
    let (status, content_type, body) = match complete {
        Ok(Ok(true)) => route(&head, health),
        Ok(Ok(false)) => (400, "text/plain", "bad request\n".to_string()),
        Ok(Err(e)) => return Err(e),
        Err(_) => (408, "text/plain", "request timeout\n".to_string()),
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}

/// Picks the answer for a request head.
fn route(head: &[u8], health: &Health) -> (u16, &'static str, String) {
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return (405, "text/plain", "only GET is served\n".to_string());
    }
    let path = target.split('?').next().unwrap_or("");
    // Live: the run loop turns. Ready: live, and every destination accepts uploads.
    let json = |need_ready: bool| {
        let report = health.report();
        let body = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
        let ok = report.live && (report.ready || !need_ready);
        (if ok { 200 } else { 503 }, "application/json", body)
    };
    match path {
        "/healthz" | "/livez" => json(false),
        "/readyz" => json(true),
        "/metrics" => (200, "text/plain; version=0.0.4", health.render_metrics()),
        _ => (
            404,
            "text/plain",
            "not found (try /healthz, /readyz or /metrics)\n".to_string(),
        ),
    }
}
