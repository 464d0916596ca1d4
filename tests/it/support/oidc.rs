//! A local OIDC issuer for the STS tests: serves its discovery document and JWKS on
//! 127.0.0.1:0 and mints RS256 ID tokens (a test-only RSA key, PKCS#1 DER, in tests/fixtures). Also a fake GCP
//! metadata server that hands out those tokens only with the `Metadata-Flavor: Google` header.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use tokio::net::TcpListener;

const KEY: &[u8] = include_bytes!("../../fixtures/oidc-test-key.der");

type Handler = Arc<dyn Fn(&Request<Incoming>) -> (u16, String) + Send + Sync>;

/// Serves `handler` on 127.0.0.1:0 until the returned task is aborted.
async fn serve(handler: Handler) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (status, body) = handler(&req);
                    async move {
                        let mut resp = Response::new(s3s::Body::from(body));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = ConnBuilder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

/// A running issuer.
pub struct Issuer {
    pub url: String,
    key: RsaKeyPair,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl Issuer {
    pub async fn start() -> Self {
        let key = RsaKeyPair::from_der(KEY).unwrap();
        let public: ring::rsa::PublicKeyComponents<Vec<u8>> = key.public().into();
        let n = URL_SAFE_NO_PAD.encode(&public.n);
        let e = URL_SAFE_NO_PAD.encode(&public.e);
        let url = Arc::new(Mutex::new(String::new()));
        let url_in = url.clone();
        let handler: Handler = Arc::new(move |req| {
            let base = url_in.lock().unwrap().clone();
            match req.uri().path() {
                "/.well-known/openid-configuration" => (
                    200,
                    serde_json::json!({
                        "issuer": base,
                        "jwks_uri": format!("{base}/keys"),
                        "id_token_signing_alg_values_supported": ["RS256"],
                        "response_types_supported": ["id_token"],
                        "subject_types_supported": ["public"],
                    })
                    .to_string(),
                ),
                "/keys" => (
                    200,
                    serde_json::json!({"keys": [{
                        "kty": "RSA", "alg": "RS256", "use": "sig", "kid": "pail-test",
                        "n": n, "e": e,
                    }]})
                    .to_string(),
                ),
                _ => (404, "not found".into()),
            }
        });
        let (addr, task) = serve(handler).await;
        let base = format!("http://{addr}");
        *url.lock().unwrap() = base.clone();
        Self {
            url: base,
            key,
            task,
        }
    }

    /// An RS256 token for `sub` and `aud`, expiring `ttl` seconds from now (negative: expired).
    pub fn token(&self, sub: &str, aud: &str, ttl: i64) -> String {
        self.sign(&serde_json::json!({
            "iss": self.url, "sub": sub, "aud": aud, "azp": aud,
            "iat": now() - 5, "exp": now() + ttl,
        }))
    }

    /// Signs arbitrary claims.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "pail-test"});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .unwrap();
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

/// A fake GCP metadata server: answers the identity endpoint with `token(audience)` when the
/// request carries `Metadata-Flavor: Google`, and records every audience asked for.
pub struct FakeMetadata {
    pub host: String,
    pub audiences: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeMetadata {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeMetadata {
    pub async fn start(token: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        let audiences = Arc::new(Mutex::new(Vec::new()));
        let seen = audiences.clone();
        let handler: Handler = Arc::new(move |req| {
            let flavor = req
                .headers()
                .get("metadata-flavor")
                .is_some_and(|v| v == "Google");
            if !flavor {
                return (403, "Missing Metadata-Flavor:Google header.".into());
            }
            if req.uri().path() != "/computeMetadata/v1/instance/service-accounts/default/identity"
            {
                return (404, "not found".into());
            }
            let query = req.uri().query().unwrap_or("");
            let audience = query
                .split('&')
                .find_map(|p| p.strip_prefix("audience="))
                .map(super::percent_decode)
                .unwrap_or_default();
            if !query.split('&').any(|p| p == "format=full") || audience.is_empty() {
                return (400, "audience and format=full are required".into());
            }
            seen.lock().unwrap().push(audience.clone());
            (200, token(&audience))
        });
        let (addr, task) = serve(handler).await;
        Self {
            host: addr.to_string(),
            audiences,
            task,
        }
    }
}
