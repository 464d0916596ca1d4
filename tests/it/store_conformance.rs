//! One conformance suite, two stores: the local directory and S3 (an in-process S3 server)
//! must behave the same — create-if-absent, never overwrite, idempotent delete — and the whole
//! pipeline must write the same objects to both.

use crate::support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pail::config::{AuthSettings, DestinationSettings, Secret, StaticKeys};
use pail::store::{LocalStore, ObjectStore, PutOutcome, S3Store, build_s3_client};
use support::read;
use support::s3::{ACCESS_KEY, SECRET_KEY, TestS3};

const KEY: &str = "events/dt=2026-11-20/hour=07/events+3+00000000000000000042.parquet";

/// A store under test and the directory its objects land in.
struct Subject {
    store: Arc<dyn ObjectStore>,
    files: PathBuf,
}

fn read_obj(s: &Subject, key: &str) -> Option<Vec<u8>> {
    std::fs::read(s.files.join(key)).ok()
}

async fn conformance(s: &Subject) {
    let meta = vec![("pail-topic".to_string(), "events".to_string())];
    let put = |key: &'static str, body: &'static [u8]| {
        s.store.put_if_absent(key, Bytes::from_static(body), &meta)
    };

    assert_eq!(put(KEY, b"first").await.unwrap(), PutOutcome::Created);
    assert_eq!(read_obj(s, KEY).as_deref(), Some(&b"first"[..]));

    // A second write to the same key is reported, and does not replace the object.
    assert_eq!(
        put(KEY, b"second").await.unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_eq!(read_obj(s, KEY).as_deref(), Some(&b"first"[..]));

    assert_eq!(
        put("other/key.ndjson", b"x").await.unwrap(),
        PutOutcome::Created
    );

    s.store.delete(KEY).await.unwrap();
    assert_eq!(read_obj(s, KEY), None);
    s.store.delete(KEY).await.unwrap();
    assert_eq!(put(KEY, b"third").await.unwrap(), PutOutcome::Created);
    assert_eq!(read_obj(s, KEY).as_deref(), Some(&b"third"[..]));
}

fn s3_destination(s3: &TestS3, bucket: &str, overwrite_protection: bool) -> DestinationSettings {
    let text = format!(
        r#"
[source]
kind = "file"
path = "x"
[[destinations]]
name = "s3"
url = "s3://{bucket}/p"
endpoint = "{}"
path_style = true
timestamp = "field:ts"
overwrite_protection = {overwrite_protection}
[destinations.auth]
access_key_id = "{ACCESS_KEY}"
secret_access_key = "{SECRET_KEY}"
"#,
        s3.endpoint()
    );
    let mut s = pail::config::parse(Path::new("t.toml"), &text, &|_| None).unwrap();
    s.destinations.remove(0)
}

#[tokio::test]
async fn local_directory_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let subject = Subject {
        store: Arc::new(LocalStore::new(dir.path().to_path_buf(), true)),
        files: dir.path().to_path_buf(),
    };
    conformance(&subject).await;
    // No temporary files are left behind.
    assert!(
        read::files(dir.path())
            .iter()
            .all(|p| !p.to_string_lossy().ends_with(".tmp"))
    );
}

#[tokio::test]
async fn s3_conforms() {
    let s3 = TestS3::start(&["bucket"]).await;
    let dest = s3_destination(&s3, "bucket", true);
    let subject = Subject {
        store: Arc::new(S3Store::new(
            build_s3_client(&dest).await,
            "bucket".into(),
            true,
        )),
        files: s3.bucket_dir("bucket"),
    };
    conformance(&subject).await;
    assert!(s3.puts().iter().all(|p| p.if_none_match && !p.overwrote));
}

#[tokio::test]
async fn without_overwrite_protection_both_stores_replace() {
    let s3 = TestS3::start(&["bucket"]).await;
    let dest = s3_destination(&s3, "bucket", false);
    let dir = tempfile::tempdir().unwrap();
    let subjects = [
        Subject {
            store: Arc::new(S3Store::new(
                build_s3_client(&dest).await,
                "bucket".into(),
                false,
            )),
            files: s3.bucket_dir("bucket"),
        },
        Subject {
            store: Arc::new(LocalStore::new(dir.path().to_path_buf(), false)),
            files: dir.path().to_path_buf(),
        },
    ];
    for s in &subjects {
        let meta = Vec::new();
        for body in [&b"one"[..], b"two"] {
            let outcome = s
                .store
                .put_if_absent(KEY, Bytes::from_static(body), &meta)
                .await
                .unwrap();
            assert_eq!(outcome, PutOutcome::Created);
        }
        assert_eq!(read_obj(s, KEY).as_deref(), Some(&b"two"[..]));
    }
    assert!(s3.puts().iter().all(|p| !p.if_none_match));
}

#[tokio::test]
async fn wrong_secret_is_a_permanent_error_that_names_the_object_not_the_secret() {
    let s3 = TestS3::start(&["bucket"]).await;
    let mut dest = s3_destination(&s3, "bucket", true);
    dest.auth = AuthSettings::Static(StaticKeys {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: Secret::new("wrong-secret-value"),
        session_token: None,
    });
    let store = S3Store::new(build_s3_client(&dest).await, "bucket".into(), true);
    let err = store
        .put_if_absent(KEY, Bytes::from_static(b"x"), &Vec::new())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.class, pail::store::ErrorClass::Permanent, "{text}");
    assert!(text.contains("s3://bucket/events/"), "{text}");
    assert!(!text.contains("wrong-secret-value"), "{text}");
}

/// The same input through the whole pipeline gives the same keys and rows in both stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_writes_identical_objects_to_local_and_s3() {
    let s3 = TestS3::start(&["bucket"]).await;
    let out = tempfile::tempdir().unwrap();
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/events.ndjson");
    let base = format!(
        "[source]\nkind = \"file\"\npath = \"{}\"\n[[destinations]]\nname = \"d\"\ntimestamp = \"field:ts\"\n\
         key_template = \"events/dt={{ts:%Y-%m-%d}}/hour={{ts:%H}}\"\n[destinations.rotation]\nmax_records = 700\n",
        input.display()
    );
    let local = format!("{base}[destinations.auth]\nmethod = \"default\"\n").replace(
        "name = \"d\"",
        &format!("name = \"d\"\nurl = \"file://{}\"", out.path().display()),
    );
    let remote = format!(
        "{base}[destinations.auth]\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n"
    )
    .replace(
        "name = \"d\"",
        &format!("name = \"d\"\nurl = \"s3://bucket/p\"\nendpoint = \"{}\"\npath_style = true", s3.endpoint()),
    );
    for text in [local, remote] {
        support::run_once(&text, Duration::from_secs(60))
            .await
            .unwrap();
    }
    // Each run is a life of its own (a file has no offset store): the names differ in the
    // lineage only.
    let without_lineage =
        |files: Vec<(String, Vec<serde_json::Map<String, serde_json::Value>>)>| {
            files
                .into_iter()
                .map(|(name, rows)| {
                    let (dir, file) = name.rsplit_once('/').unwrap_or(("", &name));
                    let parts: Vec<&str> = file.split('+').collect();
                    assert_eq!(parts.len(), 4, "{name}: topic+partition+lineage+offset");
                    (
                        format!("{dir}/{}+{}+{}", parts[0], parts[1], parts[3]),
                        rows,
                    )
                })
                .collect::<Vec<_>>()
        };
    let from_local = without_lineage(read::all_parquet(out.path()));
    let from_s3 = without_lineage(read::all_parquet(&s3.bucket_dir("bucket").join("p")));
    assert!(!from_local.is_empty());
    assert_eq!(from_local, from_s3);
    let dead_local = read::dead_letters(out.path());
    assert_eq!(
        dead_local,
        read::dead_letters(&s3.bucket_dir("bucket").join("p"))
    );
    assert_eq!(dead_local.len(), 7);
}
