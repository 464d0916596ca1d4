//! An ID token from the GCP metadata server: one plain-HTTP GET on the instance's link-local
//! server, so a minimal client suffices (bounded response, timeout, `Metadata-Flavor` header).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::AuthError;

const TIMEOUT: Duration = Duration::from_secs(10);
/// ID tokens are a few KiB; anything far larger is not one.
const MAX_RESPONSE: usize = 64 * 1024;

/// Fetches `.../service-accounts/default/identity?audience=AUD&format=full` from `host`.
pub(super) async fn fetch_identity_token(host: &str, audience: &str) -> Result<String, AuthError> {
    let err = |message: String| AuthError::Gcp {
        host: host.to_string(),
        message,
    };
    let path = format!(
        "/computeMetadata/v1/instance/service-accounts/default/identity?audience={}&format=full",
        percent_encode(audience)
    );
    let addr = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let exchange = async {
        let mut stream = TcpStream::connect(&addr).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nMetadata-Flavor: Google\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE as u64 + 1)
            .read_to_end(&mut response)
            .await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| {
            err(format!(
                "no answer within {TIMEOUT:?} (is this running on GCP?)"
            ))
        })?
        .map_err(|e| err(e.to_string()))?;
    if response.len() > MAX_RESPONSE {
        return Err(err("the answer is too large to be an ID token".into()));
    }
    let (status, body) =
        parse_response(&response).ok_or_else(|| err("not an HTTP answer".into()))?;
    if status != 200 {
        let text: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        return Err(err(format!("HTTP {status}: {}", text.trim())));
    }
    String::from_utf8(body).map_err(|_| err("the token is not UTF-8".into()))
}

/// Status and body of an HTTP/1.1 response (Content-Length, chunked, or read to close).
fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        }
    }
    if chunked {
        let mut out = Vec::new();
        let mut rest = body;
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n")?;
            let size_text = std::str::from_utf8(&rest[..eol]).ok()?;
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[eol + 2..];
            if size == 0 {
                return Some((status, out));
            }
            out.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
    }
    let body = match length {
        Some(n) => body.get(..n)?,
        None => body,
    };
    Some((status, body.to_vec()))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_with_length_chunks_or_close_are_read() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef";
        assert_eq!(parse_response(r), Some((200, b"abc".to_vec())));
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(r), Some((200, b"abcde".to_vec())));
        let r = b"HTTP/1.0 404 Not Found\r\n\r\nnope";
        assert_eq!(parse_response(r), Some((404, b"nope".to_vec())));
        assert_eq!(parse_response(b"garbage"), None);
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            None
        );
        assert_eq!(
            percent_encode("https://x.y/a b"),
            "https%3A%2F%2Fx.y%2Fa%20b"
        );
    }
}
