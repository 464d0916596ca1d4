//! Multipart uploads: objects above the threshold go up in parts and complete with
//! `If-None-Match: *`; a Complete answered 412 (an earlier attempt wrote the object) or failed
//! is aborted, and a reset after the store completed the upload is retried into a 412.

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use pail::config::UploadSettings;
use pail::delivery::{RetryContext, RetryPolicy, put_with_retry};
use pail::store::{ObjectStore, PutOutcome, S3Store, build_s3_client};
use pail::telemetry::DestinationHealth;
use support::read;
use support::s3::{ACCESS_KEY, Fault, MultipartCounts, SECRET_KEY, TestS3};
use tokio_util::sync::CancellationToken;

const MIB: u64 = 1 << 20;

fn small_parts() -> UploadSettings {
    UploadSettings {
        multipart_threshold: 5 * MIB,
        part_size: 5 * MIB,
        ..UploadSettings::default()
    }
}

async fn store(s3: &TestS3) -> S3Store {
    let text = format!(
        "[source]\nkind = \"file\"\npath = \"x\"\n[[destinations]]\nname = \"l\"\nurl = \"s3://lake/x\"\n\
         endpoint = \"{}\"\npath_style = true\ntimestamp = \"field:ts\"\n[destinations.auth]\naccess_key_id = \"{ACCESS_KEY}\"\n\
         secret_access_key = \"{SECRET_KEY}\"\n",
        s3.endpoint()
    );
    let settings = pail::config::parse(std::path::Path::new("t.toml"), &text, &|_| None).unwrap();
    let client = build_s3_client(&settings.destinations[0]).await;
    S3Store::new(client, "lake".into(), true).with_upload(small_parts())
}

fn random_body(len: usize) -> Bytes {
    let mut rng = fastrand::Rng::with_seed(7);
    Bytes::from((0..len).map(|_| rng.u8(..)).collect::<Vec<u8>>())
}

#[tokio::test]
async fn a_large_object_goes_up_in_parts_and_a_second_upload_gets_412_and_is_aborted() {
    let s3 = TestS3::start(&["lake"]).await;
    let store = store(&s3).await;
    let body = random_body(12 * MIB as usize + 123);
    let meta = vec![("pail-topic".to_string(), "t".to_string())];

    let first = store
        .put_if_absent("x/big.parquet", body.clone(), &meta)
        .await;
    assert_eq!(first.unwrap(), PutOutcome::Created);
    let stored = std::fs::read(s3.bucket_dir("lake").join("x/big.parquet")).unwrap();
    assert!(
        stored == body,
        "the completed object differs from what was sent"
    );

    let second = store.put_if_absent("x/big.parquet", random_body(6 * MIB as usize), &meta);
    assert_eq!(second.await.unwrap(), PutOutcome::AlreadyExists);
    let stored = std::fs::read(s3.bucket_dir("lake").join("x/big.parquet")).unwrap();
    assert!(stored == body, "the 412'd upload replaced the object");

    assert_eq!(
        s3.multipart(),
        MultipartCounts {
            started: 2,
            completed: 1,
            aborted: 1
        }
    );
    let puts = s3.puts();
    assert_eq!(puts.len(), 2);
    assert!(
        puts.iter()
            .all(|p| p.multipart && p.if_none_match && !p.overwrote)
    );
    assert_eq!(puts[1].status, 412);

    // Below the threshold: one PUT.
    let small = store
        .put_if_absent("x/small", random_body(1000), &meta)
        .await;
    assert_eq!(small.unwrap(), PutOutcome::Created);
    assert!(!s3.puts()[2].multipart);
}

#[tokio::test]
async fn a_store_that_does_not_answer_fails_the_attempt_in_time_and_the_upload_is_aborted() {
    let s3 = TestS3::start(&["lake"]).await;
    let store = store(&s3).await.with_upload(UploadSettings {
        request_timeout: Duration::from_secs(1),
        ..small_parts()
    });
    // Every object write (a PUT, a Complete) hangs far past the request timeout.
    s3.set_write_latency(Duration::from_secs(600));
    let meta = Vec::new();
    let bound = Duration::from_secs(60);

    let small = tokio::time::timeout(
        bound,
        store.put_if_absent("x/small", random_body(1000), &meta),
    )
    .await
    .expect("the attempt outlived its timeout");
    let error = small.unwrap_err();
    assert_eq!(error.class, pail::store::ErrorClass::Transient, "{error}");

    // Parts go up; the Complete gets 1 s plus 1 s per MiB, then the upload is aborted.
    let big = store.put_if_absent("x/big", random_body(6 * MIB as usize), &meta);
    let big = tokio::time::timeout(bound, big)
        .await
        .expect("the upload outlived its timeouts");
    let error = big.unwrap_err();
    assert_eq!(error.class, pail::store::ErrorClass::Transient, "{error}");
    assert_eq!(error.op, "CompleteMultipartUpload", "{error}");
    assert_eq!(
        s3.multipart(),
        MultipartCounts {
            started: 1,
            completed: 0,
            aborted: 1
        }
    );
    assert!(!s3.bucket_dir("lake").join("x/big").exists());
}

#[tokio::test]
async fn a_reset_after_the_store_completed_the_upload_is_retried_into_412() {
    let s3 = TestS3::start(&["lake"]).await;
    let store = store(&s3).await;
    let health = DestinationHealth::new("l");
    let body = random_body(11 * MIB as usize);
    s3.inject(&[Fault::SlowDown, Fault::ResetAfter]);
    let policy = RetryPolicy {
        base: Duration::from_millis(10),
        ..RetryPolicy::bounded()
    };
    let cx = RetryContext {
        policy: &policy,
        health: &health,
        slots: &tokio::sync::Semaphore::new(1),
        shutdown: &CancellationToken::new(),
    };
    let outcome = put_with_retry(&store, "x/k.parquet", body.clone(), &Vec::new(), cx)
        .await
        .unwrap();
    // SlowDown on the first Complete, the second completed behind a reset, the third got 412.
    assert_eq!(outcome, PutOutcome::AlreadyExists);
    let statuses: Vec<(u16, Option<Fault>)> =
        s3.puts().iter().map(|p| (p.status, p.fault)).collect();
    assert_eq!(
        statuses,
        vec![
            (503, Some(Fault::SlowDown)),
            (200, Some(Fault::ResetAfter)),
            (412, None)
        ]
    );
    let stored = std::fs::read(s3.bucket_dir("lake").join("x/k.parquet")).unwrap();
    assert!(stored == body);
    // Every upload that did not complete was aborted: no parts left behind.
    let counts = s3.multipart();
    assert_eq!((counts.started, counts.completed), (3, 1));
    assert_eq!(counts.aborted, 2);
    assert_eq!(health.transient_errors.get(), 2);
    assert_eq!(health.objects_existing.get(), 1);
    assert!(!health.failing());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_writes_large_segments_as_multipart_and_every_row_reads_back() {
    let s3 = TestS3::start(&["lake"]).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    // Random text that compresses poorly, so one segment's Parquet file exceeds 5 MiB.
    let mut rng = fastrand::Rng::with_seed(11);
    let lines: String = (0..16_000)
        .map(|i| {
            let blob: String = (0..1200).map(|_| rng.alphanumeric()).collect();
            format!("{{\"id\":{i},\"ts\":\"2026-05-01T10:00:00Z\",\"blob\":\"{blob}\"}}\n")
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    let text = format!(
        "[source]\nkind = \"file\"\npath = \"{}\"\n[[destinations]]\nname = \"l\"\nurl = \"s3://lake/x\"\n\
         endpoint = \"{}\"\npath_style = true\nkey_template = \"{{topic}}\"\ntimestamp = \"field:ts\"\n\
         [destinations.upload]\nmultipart_threshold = \"5MiB\"\npart_size = \"5MiB\"\n\
         [destinations.rotation]\nmax_records = 8000\nmax_bytes = \"64MiB\"\n\
         [destinations.auth]\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n",
        input.display(),
        s3.endpoint()
    );
    let stats = support::run_once(&text, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!((stats.rows_written, stats.objects_created), (16_000, 2));

    let puts = s3.puts();
    assert_eq!(puts.len(), 2, "{puts:?}");
    assert!(
        puts.iter()
            .all(|p| p.multipart && p.if_none_match && p.status == 200),
        "{puts:?}"
    );
    assert_eq!(
        s3.multipart(),
        MultipartCounts {
            started: 2,
            completed: 2,
            aborted: 0
        }
    );
    let mut ids: HashMap<i64, usize> = HashMap::new();
    for (_, rows) in read::all_parquet(&s3.bucket_dir("lake").join("x")) {
        for row in rows {
            assert_eq!(row["blob"].as_str().unwrap().len(), 1200);
            *ids.entry(row["id"].as_i64().unwrap()).or_default() += 1;
        }
    }
    assert_eq!(ids.len(), 16_000);
    assert!(ids.values().all(|n| *n == 1));
}
