//! The health and metrics endpoint, served by hyper (HTTP/1.1, keep-alive, HEAD):
//! `/livez` (alias `/healthz`: the run loop turns), `/readyz` (the worker can do its work) and
//! `/metrics` (OpenMetrics text, which Prometheus scrapes).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::health::{Health, HealthCollector};
use super::metrics::METRICS;
use super::process::ProcessCollector;

/// Longest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client gets to send a request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait to be accepted (their backlog is the kernel's).
const MAX_CONNECTIONS: usize = 64;
/// The longest a connection is kept, keep-alive included: a client that sends requests and
/// never reads the answers holds its task no longer than this.
const MAX_CONNECTION_TIME: Duration = Duration::from_secs(60);
/// The OpenMetrics text format's media type.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("telemetry endpoint: cannot listen on {addr}: {source}")]
pub struct ServeError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// What the endpoint answers from.
#[derive(Debug)]
struct Endpoint {
    health: Arc<Health>,
    registry: Registry,
}

/// Binds `addr` and serves `health` and the metrics until the returned task is aborted.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
) -> Result<(SocketAddr, JoinHandle<()>), ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!(address = %local, "health and metrics endpoint listening");
    let mut registry = Registry::default();
    METRICS.register(&mut registry);
    registry.register_collector(Box::new(HealthCollector(health.clone())));
    registry.register_collector(Box::new(ProcessCollector));
    let endpoint = Arc::new(Endpoint { health, registry });
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            let Ok(permit) = connections.clone().acquire_owned().await else {
                return;
            };
            let socket = match listener.accept().await {
                Ok((socket, _)) => socket,
                Err(e) => {
                    tracing::warn!(error = %e, "telemetry endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = service_fn(move |req| {
                    let endpoint = endpoint.clone();
                    async move { Ok::<_, Infallible>(endpoint.answer(&req)) }
                });
                // A client that stalls mid-head is dropped after READ_TIMEOUT; an idle
                // keep-alive connection is closed after the same time.
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(READ_TIMEOUT)
                    .max_buf_size(MAX_HEAD)
                    .serve_connection(TokioIo::new(socket), service);
                let _ = tokio::time::timeout(MAX_CONNECTION_TIME, connection).await;
            });
        }
    });
    Ok((local, task))
}

impl Endpoint {
    /// The answer to one request. HEAD gets GET's head: hyper sends no body for it.
    fn answer<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        // Live: the run loop turns. Ready: live, started and not shutting down.
        let json = |need_ready: bool| {
            let report = self.health.report();
            let body = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
            let ok = report.live && (report.ready || !need_ready);
            let status = match ok {
                true => StatusCode::OK,
                false => StatusCode::SERVICE_UNAVAILABLE,
            };
            with_type(status, body, "application/json")
        };
        match req.uri().path() {
            "/livez" | "/healthz" => json(false),
            "/readyz" => json(true),
            "/metrics" => {
                let mut body = String::with_capacity(16 * 1024);
                match prometheus_client::encoding::text::encode(&mut body, &self.registry) {
                    Ok(()) => with_type(StatusCode::OK, body, OPENMETRICS),
                    Err(_) => plain(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the metrics could not be encoded\n",
                    ),
                }
            }
            _ => plain(
                StatusCode::NOT_FOUND,
                "not found (try /livez, /readyz, /healthz or /metrics)\n",
            ),
        }
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_type(status, body.to_string(), "text/plain; charset=utf-8")
}

fn with_type(
    status: StatusCode,
    body: String,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
