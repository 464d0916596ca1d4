//! An S3 server on 127.0.0.1:0 (s3s-fs over a temp directory), wrapped so a test can see every
//! object write (PUT, or the Complete of a multipart upload) and inject faults into them: 503
//! SlowDown, a reset before the store sees the request, and a reset after the store saved the
//! object. Multipart uploads started, completed and aborted are counted, and the headers that
//! carry write options (SSE, ACL, storage class, `x-goog-*`) are recorded per request. Like
//! Cloud Storage, it honours `x-goog-if-generation-match: 0` as well as `If-None-Match: *`.
//! Connection-test objects (`_pail/connection-test/`, written by every run's preflight) are
//! stored like any other but left out of the logs and spared the injected faults: the tests
//! audit delivery.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;

pub const ACCESS_KEY: &str = "pail-test-access";
pub const SECRET_KEY: &str = "pail-test-secret-do-not-print";

/// A fault to apply to a future PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer 503 SlowDown without storing.
    SlowDown,
    /// Drop the connection before the store sees the request.
    ResetBefore,
    /// Store the object, then drop the connection without answering.
    ResetAfter,
}

/// One object write the server saw: a PUT or a CompleteMultipartUpload.
#[derive(Debug, Clone)]
pub struct PutRecord {
    pub key: String,
    /// The write completed a multipart upload.
    pub multipart: bool,
    /// The write carried a create-only precondition (`If-None-Match: *` or
    /// `x-goog-if-generation-match: 0`).
    pub if_none_match: bool,
    pub status: u16,
    pub fault: Option<Fault>,
    /// The key already held an object and this PUT replaced it.
    pub overwrote: bool,
}

/// Multipart uploads by outcome.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MultipartCounts {
    pub started: u64,
    pub completed: u64,
    pub aborted: u64,
}

/// The write-option headers of one PUT, CreateMultipartUpload or Complete.
#[derive(Debug, Clone)]
pub struct OptionHeaders {
    /// `PUT`, `CreateMultipartUpload` or `CompleteMultipartUpload`.
    pub op: &'static str,
    pub key: String,
    /// Lower-case names and values.
    pub headers: Vec<(String, String)>,
}

impl OptionHeaders {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    puts: Vec<PutRecord>,
    options: Vec<OptionHeaders>,
    multipart: MultipartCounts,
    /// The sizes of the parts uploaded (UploadPart answered 2xx), in order.
    parts: Vec<u64>,
    /// UploadPart answers NoSuchUpload.
    vanish_uploads: bool,
    faults: VecDeque<Fault>,
    /// How long every object write takes, key reserved, before it is stored.
    write_latency: std::time::Duration,
    existing: HashSet<String>,
    /// Keys with a write under way: taken together with the existence check, so two racing
    /// writers to one key (a zombie and the new owner) cannot both pass it unseen.
    writing: HashMap<String, usize>,
}

/// A running test S3 server.
pub struct TestS3 {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Reply = Response<s3s::Body>;

/// Returned by the handler to make hyper drop the connection without an answer.
#[derive(Debug)]
pub struct ConnectionDropped(String);

impl std::fmt::Display for ConnectionDropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectionDropped {}

fn error_response(status: StatusCode, code: &str, message: &str) -> Reply {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let mut resp = Response::new(s3s::Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("content-type", "application/xml".parse().unwrap());
    resp
}

impl TestS3 {
    /// Starts a server with the given buckets.
    pub async fn start(buckets: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for b in buckets {
            std::fs::create_dir(dir.path().join(b)).unwrap();
        }
        let fs = s3s_fs::FileSystem::new(dir.path()).unwrap();
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let s3 = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let root = Arc::new(dir.path().to_path_buf());
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let s3 = s3.clone();
                let st = st.clone();
                let root = root.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let s3 = s3.clone();
                        let st = st.clone();
                        let root = root.clone();
                        async move { handle(req, s3, st, root).await }
                    });
                    let _ = ConnBuilder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            dir,
            state,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The directory holding a bucket's objects.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.dir.path().join(bucket)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Queues faults for the next PUTs, in order.
    pub fn inject(&self, faults: &[Fault]) {
        self.state
            .lock()
            .unwrap()
            .faults
            .extend(faults.iter().copied());
    }

    /// Makes every object write take `latency` before it is stored, as a distant store does:
    /// segments stay in flight long enough for a test's kills to land mid-delivery.
    pub fn set_write_latency(&self, latency: std::time::Duration) {
        self.state.lock().unwrap().write_latency = latency;
    }

    /// Answers every UploadPart with 404 NoSuchUpload, as a store does once a lifecycle rule
    /// has aborted the upload.
    pub fn vanish_uploads(&self, on: bool) {
        self.state.lock().unwrap().vanish_uploads = on;
    }

    /// Drops the faults not yet applied.
    pub fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    /// Every object write seen so far.
    pub fn puts(&self) -> Vec<PutRecord> {
        self.state.lock().unwrap().puts.clone()
    }

    /// The write-option headers of every PUT, CreateMultipartUpload and Complete so far.
    pub fn option_headers(&self) -> Vec<OptionHeaders> {
        self.state.lock().unwrap().options.clone()
    }

    /// Multipart uploads started, completed and aborted so far.
    pub fn multipart(&self) -> MultipartCounts {
        self.state.lock().unwrap().multipart
    }

    /// The sizes of the multipart parts stored so far, in order.
    pub fn parts(&self) -> Vec<u64> {
        self.state.lock().unwrap().parts.clone()
    }
}

/// What a request does, as far as the audit cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// PUT of a whole object, or the Complete of a multipart upload.
    Write {
        multipart: bool,
    },
    Delete,
    CreateUpload,
    UploadPart,
    AbortUpload,
    Other,
}

fn kind(req: &Request<Incoming>) -> Kind {
    let query = req.uri().query().unwrap_or("");
    let has = |name: &str| query.split('&').any(|p| p.split('=').next() == Some(name));
    let is_object = req
        .uri()
        .path()
        .trim_start_matches('/')
        .split_once('/')
        .is_some_and(|(_, k)| !k.is_empty());
    if !is_object {
        return Kind::Other;
    }
    match *req.method() {
        Method::PUT if !has("uploadId") => Kind::Write { multipart: false },
        Method::PUT => Kind::UploadPart,
        Method::POST if has("uploadId") => Kind::Write { multipart: true },
        Method::POST if has("uploads") => Kind::CreateUpload,
        Method::DELETE if has("uploadId") => Kind::AbortUpload,
        Method::DELETE => Kind::Delete,
        _ => Kind::Other,
    }
}

/// `bucket/key` of an object request (path-style).
fn object_key(req: &Request<Incoming>) -> Option<String> {
    let path = req.uri().path().trim_start_matches('/');
    let (bucket, key) = path.split_once('/')?;
    (!key.is_empty()).then(|| format!("{bucket}/{}", super::percent_decode(key)))
}

/// s3s-fs creates missing bucket directories on PUT; real S3 answers NoSuchBucket.
fn bucket_missing(root: &Path, key: &str) -> bool {
    !root
        .join(key.split('/').next().unwrap_or_default())
        .is_dir()
}

fn no_such_bucket() -> Reply {
    error_response(
        StatusCode::NOT_FOUND,
        "NoSuchBucket",
        "The specified bucket does not exist",
    )
}

/// Hands a request to the S3 service untouched.
async fn pass_through(
    req: Request<Incoming>,
    s3: s3s::service::S3Service,
) -> Result<Reply, ConnectionDropped> {
    s3.call(req.map(s3s::Body::from))
        .await
        .map_err(|e| ConnectionDropped(format!("{e:?}")))
}

/// A write in progress to `key`, released on drop unless released already.
struct Reservation {
    st: Arc<Mutex<State>>,
    key: String,
    held: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.held {
            let mut s = self.st.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = s.writing.get_mut(&self.key) {
                *n -= 1;
            }
        }
    }
}

/// Headers that set how an object is stored, and GCS preconditions.
fn option_headers(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.headers()
        .iter()
        .filter(|(name, _)| {
            let n = name.as_str();
            n.starts_with("x-amz-server-side-encryption")
                || n == "x-amz-acl"
                || n == "x-amz-storage-class"
                || n.starts_with("x-goog-")
                || n == "if-none-match"
        })
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect()
}

async fn handle(
    req: Request<Incoming>,
    s3: s3s::service::S3Service,
    st: Arc<Mutex<State>>,
    root: Arc<PathBuf>,
) -> Result<Reply, ConnectionDropped> {
    let kind = kind(&req);
    let op = match kind {
        Kind::Write { multipart: false } => Some("PUT"),
        Kind::Write { multipart: true } => Some("CompleteMultipartUpload"),
        Kind::CreateUpload => Some("CreateMultipartUpload"),
        _ => None,
    };
    let probe = object_key(&req).filter(|k| k.contains("/_pail/connection-test/"));
    if let Some(key) = probe {
        if matches!(kind, Kind::Write { .. }) && bucket_missing(&root, &key) {
            return Ok(no_such_bucket());
        }
        return pass_through(req, s3).await;
    }
    if let (Some(op), Some(key)) = (op, object_key(&req)) {
        st.lock().unwrap().options.push(OptionHeaders {
            op,
            key,
            headers: option_headers(&req),
        });
    }
    let pass = |req: Request<Incoming>| {
        let s3 = s3.clone();
        async move {
            s3.call(req.map(s3s::Body::from))
                .await
                .map_err(|e| ConnectionDropped(format!("{e:?}")))
        }
    };
    match kind {
        Kind::UploadPart => {
            if st.lock().unwrap().vanish_uploads {
                return Ok(error_response(
                    StatusCode::NOT_FOUND,
                    "NoSuchUpload",
                    "The specified multipart upload does not exist.",
                ));
            }
            let len: u64 = req
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(0);
            let resp = pass(req).await?;
            if resp.status().is_success() {
                st.lock().unwrap().parts.push(len);
            }
            return Ok(resp);
        }
        Kind::Delete | Kind::CreateUpload | Kind::AbortUpload => {
            let key = object_key(&req).unwrap_or_default();
            let resp = pass(req).await?;
            if resp.status().is_success() {
                let mut s = st.lock().unwrap();
                match kind {
                    Kind::Delete => {
                        s.existing.remove(&key);
                    }
                    Kind::CreateUpload => s.multipart.started += 1,
                    _ => s.multipart.aborted += 1,
                }
            }
            return Ok(resp);
        }
        Kind::Write { .. } | Kind::Other => {}
    }
    let multipart = kind == (Kind::Write { multipart: true });
    let key = matches!(kind, Kind::Write { .. })
        .then(|| object_key(&req))
        .flatten();
    if let Some(key) = &key
        && bucket_missing(&root, key)
    {
        return Ok(no_such_bucket());
    }
    let Some(key) = key else {
        return pass(req).await;
    };
    let if_none_match = req.headers().get("if-none-match").is_some_and(|v| v == "*")
        || req
            .headers()
            .get("x-goog-if-generation-match")
            .is_some_and(|v| v == "0");
    // Like S3: a conditional write to a key that holds an object gets 412; one racing another
    // write still in progress gets 409 ConditionalRequestConflict (retryable: the other write
    // may yet fail, so this is not "already written"). The checks and the reservation of the
    // key happen under one lock.
    let (fault, exists, conflict, reserved, latency) = {
        let mut s = st.lock().unwrap();
        let exists = s.existing.contains(&key);
        let in_progress = s.writing.get(&key).is_some_and(|n| *n > 0);
        let fault = s.faults.pop_front();
        let conflict = if_none_match && in_progress && !exists;
        let refused = matches!(fault, Some(Fault::SlowDown | Fault::ResetBefore))
            || (if_none_match && exists)
            || conflict;
        if !refused {
            *s.writing.entry(key.clone()).or_default() += 1;
        }
        (
            fault,
            exists || in_progress,
            conflict,
            !refused,
            s.write_latency,
        )
    };
    // Released however the request ends: hyper drops this future when the client goes away
    // mid-request (a killed worker), and the key must not stay "in progress" forever.
    let mut reservation = Reservation {
        st: st.clone(),
        key: key.clone(),
        held: reserved,
    };
    let record = |status: u16, overwrote: bool| PutRecord {
        key: key.clone(),
        multipart,
        if_none_match,
        status,
        fault,
        overwrote,
    };
    match fault {
        Some(Fault::SlowDown) => {
            st.lock().unwrap().puts.push(record(503, false));
            return Ok(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "SlowDown",
                "Please reduce your request rate.",
            ));
        }
        Some(Fault::ResetBefore) => {
            st.lock().unwrap().puts.push(record(0, false));
            return Err(ConnectionDropped(
                "injected reset before the store saw the request".into(),
            ));
        }
        _ => {}
    }
    if conflict {
        st.lock().unwrap().puts.push(record(409, false));
        return Ok(error_response(
            StatusCode::CONFLICT,
            "ConditionalRequestConflict",
            "A conflicting conditional operation is currently in progress against this resource.",
        ));
    }
    if if_none_match && exists {
        st.lock().unwrap().puts.push(record(412, false));
        return Ok(error_response(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
        ));
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let passed = pass(req).await;
    let resp = {
        let mut s = st.lock().unwrap();
        // Released under the same lock that records the result, so no other writer sees the
        // key free before it exists.
        if reservation.held {
            if let Some(n) = s.writing.get_mut(&key) {
                *n -= 1;
            }
            reservation.held = false;
        }
        let resp = passed?;
        let stored = resp.status().is_success();
        // An overwrite: the key held an object, or another write to it landed meanwhile.
        let overwrote = stored && (exists || s.existing.contains(&key));
        if stored {
            s.existing.insert(key.clone());
            if multipart {
                s.multipart.completed += 1;
            }
        }
        s.puts.push(record(resp.status().as_u16(), overwrote));
        resp
    };
    if fault == Some(Fault::ResetAfter) && resp.status().is_success() {
        return Err(ConnectionDropped(
            "injected reset after the store saved the object".into(),
        ));
    }
    Ok(resp)
}
