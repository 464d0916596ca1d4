//! What pail sends with each object, seen on the wire by the in-process S3 server: SSE, the
//! canned ACL and the storage class on single PUTs and on multipart uploads (s3s-fs stores only
//! STANDARD; the moto tests check other classes); nothing at all when none is configured; and
//! Cloud Storage's own create-only precondition (`x-goog-if-generation-match: 0`) instead of
//! `If-None-Match` for `provider = "gcs"`.

use crate::support;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use pail::store::{ObjectStore, PutOutcome, S3Store, build_s3_client};
use support::s3::{ACCESS_KEY, OptionHeaders, SECRET_KEY, TestS3};

const BUCKET: &str = "opts";

fn config(s3: &TestS3, extra: &str) -> String {
    format!(
        "[source]\nkind = \"file\"\npath = \"in.ndjson\"\n[[destinations]]\nname = \"d\"\n\
         url = \"s3://{BUCKET}/p\"\nendpoint = \"{}\"\ntimestamp = \"field:ts\"\n{extra}\n\
         [destinations.auth]\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n\
         [destinations.upload]\nmultipart_threshold = \"5MiB\"\npart_size = \"5MiB\"\n",
        s3.endpoint()
    )
}

async fn store(s3: &TestS3, extra: &str) -> S3Store {
    let settings = pail::config::parse(Path::new("t.toml"), &config(s3, extra), &|_| None).unwrap();
    let dest = &settings.destinations[0];
    S3Store::for_destination(build_s3_client(dest).await, BUCKET.into(), dest)
}

fn big() -> Bytes {
    Bytes::from(vec![7u8; 6 << 20])
}

/// The recorded requests for `key`, by operation.
fn for_key<'a>(seen: &'a [OptionHeaders], key: &str, op: &str) -> Vec<&'a OptionHeaders> {
    seen.iter()
        .filter(|h| h.key == format!("{BUCKET}/{key}") && h.op == op)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_acl_and_storage_class_go_with_every_put_and_multipart_upload() {
    let s3 = TestS3::start(&[BUCKET]).await;
    let store = store(
        &s3,
        "sse = \"aws:kms\"\nsse_kms_key_id = \"arn:aws:kms:eu-west-1:111122223333:key/k-1\"\n\
         acl = \"bucket-owner-full-control\"\nstorage_class = \"STANDARD\"",
    )
    .await;
    let meta = Vec::new();
    let small = store.put_if_absent("small", Bytes::from_static(b"x"), &meta);
    assert_eq!(small.await.unwrap(), PutOutcome::Created);
    assert_eq!(
        store.put_if_absent("big", big(), &meta).await.unwrap(),
        PutOutcome::Created
    );

    let seen = s3.option_headers();
    let put = for_key(&seen, "small", "PUT");
    let create = for_key(&seen, "big", "CreateMultipartUpload");
    assert_eq!((put.len(), create.len()), (1, 1), "{seen:?}");
    for h in [put[0], create[0]] {
        assert_eq!(
            h.get("x-amz-server-side-encryption"),
            Some("aws:kms"),
            "{h:?}"
        );
        assert_eq!(
            h.get("x-amz-server-side-encryption-aws-kms-key-id"),
            Some("arn:aws:kms:eu-west-1:111122223333:key/k-1"),
            "{h:?}"
        );
        assert_eq!(
            h.get("x-amz-acl"),
            Some("bucket-owner-full-control"),
            "{h:?}"
        );
        assert_eq!(h.get("x-amz-storage-class"), Some("STANDARD"), "{h:?}");
    }
    assert_eq!(put[0].get("if-none-match"), Some("*"));
    let complete = for_key(&seen, "big", "CompleteMultipartUpload");
    assert_eq!(complete.len(), 1);
    assert_eq!(complete[0].get("if-none-match"), Some("*"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_configured_sends_no_sse_acl_or_storage_class_header() {
    let s3 = TestS3::start(&[BUCKET]).await;
    let store = store(&s3, "").await;
    let meta = Vec::new();
    store
        .put_if_absent("small", Bytes::from_static(b"x"), &meta)
        .await
        .unwrap();
    store.put_if_absent("big", big(), &meta).await.unwrap();
    let seen = s3.option_headers();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for h in &seen {
        let names: Vec<&str> = h.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            names.iter().all(|n| *n == "if-none-match"),
            "{} {}: {names:?}",
            h.op,
            h.key
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_writes_carry_its_generation_precondition_and_a_second_write_is_already_there() {
    let s3 = TestS3::start(&[BUCKET]).await;
    // The test server stands in for storage.googleapis.com.
    let store = store(&s3, "provider = \"gcs\"").await;
    let meta = Vec::new();
    let first = store.put_if_absent("g", Bytes::from_static(b"1"), &meta);
    assert_eq!(first.await.unwrap(), PutOutcome::Created);
    let again = store.put_if_absent("g", Bytes::from_static(b"2"), &meta);
    assert_eq!(again.await.unwrap(), PutOutcome::AlreadyExists);
    assert_eq!(
        store.put_if_absent("gbig", big(), &meta).await.unwrap(),
        PutOutcome::Created
    );
    let seen = s3.option_headers();
    let writes: Vec<&OptionHeaders> = seen
        .iter()
        .filter(|h| h.op != "CreateMultipartUpload")
        .collect();
    assert_eq!(writes.len(), 3, "{seen:?}");
    for h in writes {
        assert_eq!(h.get("x-goog-if-generation-match"), Some("0"), "{h:?}");
        assert_eq!(h.get("if-none-match"), None, "{h:?}");
    }
    assert!(s3.puts().iter().all(|p| !p.overwrote));
    let stored = std::fs::read(s3.bucket_dir(BUCKET).join("g")).unwrap();
    assert_eq!(stored, b"1");

    // Without overwrite protection, neither precondition is sent.
    let plain = self::store(&s3, "provider = \"gcs\"\noverwrite_protection = false").await;
    plain
        .put_if_absent("h", Bytes::from_static(b"x"), &meta)
        .await
        .unwrap();
    let last = s3.option_headers().pop().unwrap();
    assert_eq!(last.key, format!("{BUCKET}/h"));
    assert!(last.headers.is_empty(), "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_run_sends_the_options_with_every_object() {
    let s3 = TestS3::start(&[BUCKET]).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    let lines: String = (0..300)
        .map(|i| {
            if i % 50 == 0 {
                format!("{{\"id\":{i},\n")
            } else {
                format!("{{\"id\":{i},\"ts\":\"2026-05-01T{:02}:00:00Z\"}}\n", i % 3)
            }
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    let text = config(&s3, "sse = \"AES256\"\nstorage_class = \"STANDARD\"").replace(
        "path = \"in.ndjson\"",
        &format!("path = \"{}\"", input.display()),
    );
    let stats = support::run_once(&text, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(stats.rows_written, 294);
    let seen = s3.option_headers();
    // Three hours of data and the dead letters: four objects.
    assert_eq!(seen.len(), 4, "{seen:?}");
    for h in &seen {
        assert_eq!(
            h.get("x-amz-server-side-encryption"),
            Some("AES256"),
            "{h:?}"
        );
        assert_eq!(h.get("x-amz-storage-class"), Some("STANDARD"), "{h:?}");
        assert_eq!(h.get("x-amz-acl"), None, "{h:?}");
    }
}
