//! `pail healthcheck`'s client: one GET of the endpoint, so a container image needs no curl.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why the endpoint gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{url}: not an http:// URL with a host and port")]
    Url { url: String },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: cannot connect: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("{url}: {source}")]
    Http { url: String, source: hyper::Error },
}

/// GETs `url` (`http://host:port/path`) and returns the status code.
pub async fn probe(url: &str, timeout: Duration) -> Result<u16, ProbeError> {
    let bad_url = || ProbeError::Url {
        url: url.to_string(),
    };
    let uri: hyper::Uri = url.parse().map_err(|_| bad_url())?;
    if uri.scheme_str() != Some("http") {
        return Err(bad_url());
    }
    let host = uri.host().ok_or_else(bad_url)?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let ask = async {
        let stream = TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|source| ProbeError::Connect {
                url: url.to_string(),
                source,
            })?;
        let http = |source| ProbeError::Http {
            url: url.to_string(),
            source,
        };
        let (mut sender, connection) =
            http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
        tokio::spawn(connection);
        let request = Request::get(path)
            .header(hyper::header::HOST, format!("{host}:{port}"))
            .body(Empty::<Bytes>::new())
            .map_err(|_| bad_url())?;
        let response = sender.send_request(request).await.map_err(http)?;
        Ok(response.status().as_u16())
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| ProbeError::Timeout {
            url: url.to_string(),
            timeout,
        })?
}
