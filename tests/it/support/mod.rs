//! Shared test harness: an in-process S3 server with a PUT log and fault injection, a mock
//! Kafka cluster with a producer, and readers for what pail wrote.
#![allow(dead_code)]

pub mod http;
pub mod kafka;
pub mod kafka_wire;
pub mod moto;
pub mod oidc;
mod percent;
pub mod read;
pub mod s3;
pub mod seaweed;
pub mod workers;

pub use percent::percent_decode;

use std::path::PathBuf;
use std::time::Duration;

/// The `pail` binary the child-process tests run: `PAIL_BIN` when set (CI and
/// `scripts/test.sh` point it at `cargo build --release --locked --bin pail`, the artifact
/// users run), else the binary `cargo test` built, whose dependencies may carry features that
/// only dev-dependencies switch on.
pub fn pail_bin() -> PathBuf {
    match std::env::var_os("PAIL_BIN") {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "PAIL_BIN={} is not a file; build it with `cargo build --release --locked --bin pail`",
                path.display()
            );
            path
        }
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but PAIL_BIN is not: run the tests with `bash scripts/test.sh`, \
                 which builds the release binary and points PAIL_BIN at it"
            );
            PathBuf::from(env!("CARGO_BIN_EXE_pail"))
        }
    }
}

/// Runs the `pail` binary ([`pail_bin`]) with `args` in `cwd`, with `env` added (and
/// `PAIL_CONFIG` removed), bounded by `limit`; returns its output.
pub async fn run_pail(
    args: &[&str],
    cwd: &std::path::Path,
    env: &[(&str, &str)],
    limit: Duration,
) -> std::process::Output {
    run_pail_without(args, cwd, env, &[], limit).await
}

/// [`run_pail`] with the variables `remove` taken out of the environment it inherits.
pub async fn run_pail_without(
    args: &[&str],
    cwd: &std::path::Path,
    env: &[(&str, &str)],
    remove: &[&str],
    limit: Duration,
) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(pail_bin());
    cmd.args(args)
        .current_dir(cwd)
        .kill_on_drop(true)
        .env_remove("PAIL_CONFIG");
    for k in remove {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    bounded(limit, cmd.output()).await.unwrap()
}

/// A program the tests run (`python3`, `weed`): from the project's `.venv/`, which
/// `bash scripts/setup.sh --tests` creates, else from `PATH`.
pub fn test_tool(name: &str) -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin")
        .join(name);
    if venv.is_file() {
        venv
    } else {
        PathBuf::from(name)
    }
}

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
        pail::run::run(
            settings,
            pail::run::RunOptions {
                once: true,
                ..Default::default()
            },
            shutdown,
        ),
    )
    .await
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
