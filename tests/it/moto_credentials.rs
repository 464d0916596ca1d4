//! Static keys and assume-role against moto with IAM enforcement on. An IAM user allowed
//! nothing but s3:PutObject and s3:DeleteObject: keys from the conventional `S3_*` environment
//! names deliver (with SSE and a storage class the store really records), and a wrong secret
//! or an unknown key id fails at once with a message that names the access key id and never
//! the secret. A user allowed only sts:AssumeRole: pail assumes a Put/Delete-only role with an
//! external id and delivers through it.
//!
//! Needs moto and boto3 (`bash scripts/setup.sh --tests` installs `moto[server]` from PyPI).

use crate::support;

use std::path::Path;
use std::time::Duration;

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use support::moto::{enforcement, python, start_moto};
use support::s3_client as client;

const BUCKET: &str = "static-keys";

/// moto with BUCKET and the identities `iam_setup.py KIND` makes; enforcement is on when
/// this returns.
async fn moto_with(kind: &str) -> (tokio::process::Child, String, serde_json::Value) {
    let (child, endpoint) = start_moto().await;
    let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/moto/iam_setup.py");
    let out = python(&[setup.to_str().unwrap(), &endpoint, BUCKET, kind]).await;
    (child, endpoint, serde_json::from_str(&out).unwrap())
}

/// moto with BUCKET and a Put/Delete-only IAM user: its key id and secret.
async fn moto_with_user() -> (tokio::process::Child, String, String, String) {
    let (child, endpoint, keys) = moto_with("user").await;
    let id = keys["access_key_id"].as_str().unwrap().to_string();
    let secret = keys["secret_access_key"].as_str().unwrap().to_string();
    (child, endpoint, id, secret)
}

fn input(dir: &Path, n: usize) -> std::path::PathBuf {
    support::ndjson_input(dir, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_the_conventional_environment_names_deliver_with_sse_and_storage_class() {
    let (_moto, endpoint, id, secret) = moto_with_user().await;
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path(), 400);
    // No url and no keys in the file: S3_BUCKET_NAME, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY
    // and S3_REGION fill them in.
    let text = format!(
        "[source]\nkind = \"file\"\npath = \"{}\"\n[[destinations]]\nname = \"m\"\n\
         endpoint = \"{endpoint}\"\ntimestamp = \"field:ts\"\nsse = \"AES256\"\n\
         storage_class = \"STANDARD_IA\"\n",
        input.display()
    );
    let env = |name: &str| match name {
        "S3_BUCKET_NAME" => Some(BUCKET.to_string()),
        "S3_ACCESS_KEY_ID" => Some(id.clone()),
        "S3_SECRET_ACCESS_KEY" => Some(secret.clone()),
        "S3_REGION" => Some("us-east-1".to_string()),
        _ => None,
    };
    let settings = pail::config::parse(Path::new("m.toml"), &text, &env).unwrap();
    assert!(!format!("{settings:?}").contains(&secret));
    let stats = support::run_settings_once(settings, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(stats.rows_written, 400);

    // Enforcement is really on: these keys cannot list.
    let writer = client(&endpoint, &id, &secret, None);
    let denied = writer.list_objects_v2().bucket(BUCKET).send().await;
    let denied = format!("{:?}", denied.unwrap_err());
    assert!(denied.contains("AccessDenied"), "{denied}");

    enforcement(&endpoint, false).await;
    let admin = client(&endpoint, "admin", "admin", None);
    let listed = admin.list_objects_v2().bucket(BUCKET).send().await.unwrap();
    let mut rows = 0;
    for obj in listed.contents() {
        let key = obj.key().unwrap();
        let got = admin
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.server_side_encryption().map(|s| s.as_str()),
            Some("AES256"),
            "{key}"
        );
        assert_eq!(
            got.storage_class().map(|s| s.as_str()),
            Some("STANDARD_IA"),
            "{key}"
        );
        let body = got.body.collect().await.unwrap().into_bytes();
        rows += ParquetRecordBatchReaderBuilder::try_new(body)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap().num_rows())
            .sum::<usize>();
    }
    assert_eq!(rows, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_says_the_signature_did_not_match_and_names_the_key_id_not_the_secret() {
    let (_moto, endpoint, id, secret) = moto_with_user().await;
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path(), 10);
    let config = |key_id: &str, key_secret: &str| {
        format!(
            "[source]\nkind = \"file\"\npath = \"{}\"\n[[destinations]]\nname = \"m\"\n\
             url = \"s3://{BUCKET}/p\"\nendpoint = \"{endpoint}\"\ntimestamp = \"field:ts\"\n\
             [destinations.auth]\naccess_key_id = \"{key_id}\"\nsecret_access_key = \"{key_secret}\"\n",
            input.display()
        )
    };
    let wrong = format!("{}Wrong", &secret[..secret.len() - 5]);
    let err = support::run_once(&config(&id, &wrong), Duration::from_secs(120))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("SignatureDoesNotMatch"), "{err}");
    assert!(err.contains("signature did not match"), "{err}");
    assert!(err.contains(&format!("access key id {id}")), "{err}");
    assert!(!err.contains(&wrong) && !err.contains(&secret), "{err}");

    let unknown = "AKIAUNKNOWNKEY000000";
    let err = support::run_once(&config(unknown, &secret), Duration::from_secs(120))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("InvalidAccessKeyId"), "{err}");
    assert!(
        err.contains(&format!("access key id {unknown} is unknown")),
        "{err}"
    );
    assert!(!err.contains(&secret), "{err}");

    // The right keys work against the same server.
    let stats = support::run_once(&config(&id, &secret), Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(stats.rows_written, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_with_an_external_id_from_static_source_keys_delivers() {
    let (_moto, endpoint, out) = moto_with("assume").await;
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path(), 50);
    let text = format!(
        "[source]\nkind = \"file\"\npath = \"{}\"\n[[destinations]]\nname = \"m\"\n\
         url = \"s3://{BUCKET}/assumed\"\nendpoint = \"{endpoint}\"\ntimestamp = \"field:ts\"\n\
         [destinations.auth]\nmethod = \"assume_role\"\nrole_arn = \"{}\"\n\
         external_id = \"pail-external-id\"\nsts_endpoint = \"{endpoint}\"\n\
         access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
        input.display(),
        out["role_arn"].as_str().unwrap(),
        out["access_key_id"].as_str().unwrap(),
        out["secret_access_key"].as_str().unwrap(),
    );
    // moto checks the trust policy's external id condition: a wrong one is refused at once.
    let wrong = text.replace("pail-external-id", "someone-elses-id");
    let err = support::run_once(&wrong, Duration::from_secs(120))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("STS AssumeRole for role"), "{err}");
    assert!(
        err.contains("not authorized to perform: sts:AssumeRole"),
        "{err}"
    );
    assert!(
        !err.contains(out["secret_access_key"].as_str().unwrap()),
        "{err}"
    );

    let stats = support::run_once(&text, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(stats.rows_written, 50);
    // The source user itself may not write: the objects came through the role.
    let source = client(
        &endpoint,
        out["access_key_id"].as_str().unwrap(),
        out["secret_access_key"].as_str().unwrap(),
        None,
    );
    let denied = source
        .put_object()
        .bucket(BUCKET)
        .key("assumed/direct")
        .body(bytes::Bytes::from_static(b"x").into())
        .send()
        .await;
    assert!(
        format!("{:?}", denied.unwrap_err()).contains("AccessDenied"),
        "the source user could write without the role"
    );
}
