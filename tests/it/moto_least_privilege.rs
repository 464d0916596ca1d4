//! Against moto with IAM enforcement on, through a role allowed nothing but s3:PutObject and
//! s3:DeleteObject: pail delivers every event from Kafka exactly once without ever needing to
//! read, head or list, and the role really cannot read.
//!
//! Needs moto and boto3 (`bash scripts/setup.sh --tests` installs `moto[server]` from PyPI); moto is
//! started through `tests/moto/server.py`, which fixes its SigV4 check for keys with `+`/`=`.

use crate::support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use pail::config::UploadSettings;
use pail::store::{ObjectStore, PutOutcome, S3Store, build_s3_client};
use pail::telemetry::METRICS;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use support::kafka::MockKafka;
use support::moto::{enforcement, python, start_moto};
use support::s3_client as client;

const BUCKET: &str = "least-privilege";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_delete_only_role_delivers_everything_exactly_once() {
    let (_moto, endpoint) = start_moto().await;
    let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/moto/iam_setup.py");
    let creds: serde_json::Value =
        serde_json::from_str(&python(&[setup.to_str().unwrap(), &endpoint, BUCKET, "role"]).await)
            .unwrap();
    let (id, secret, token) = (
        creds["access_key_id"].as_str().unwrap(),
        creds["secret_access_key"].as_str().unwrap(),
        creds["session_token"].as_str().unwrap(),
    );

    let kafka = MockKafka::start(&[("orders", 3)]);
    let payloads: Vec<String> = (0..1500)
        .map(|i| {
            if i % 100 == 7 {
                format!("{{\"id\":{i},")
            } else {
                format!("{{\"id\":{i},\"total\":{i}.5}}")
            }
        })
        .collect();
    kafka.produce_round_robin("orders", 3, &payloads);
    let text = format!(
        "[source]\nkind = \"kafka\"\nbrokers = \"{}\"\ngroup_id = \"lp\"\ntopics = [\"orders\"]\n\
         [[destinations]]\nname = \"m\"\ntopics = [\"orders\"]\nurl = \"s3://{BUCKET}/pail\"\nendpoint = \"{endpoint}\"\n\
         path_style = true\n[destinations.auth]\naccess_key_id = \"{id}\"\nsecret_access_key = \"{secret}\"\n\
         session_token = \"{token}\"\n[destinations.rotation]\nmax_records = 200\n",
        kafka.brokers()
    );
    let stats = support::run_once(&text, Duration::from_secs(180))
        .await
        .unwrap();
    assert_eq!(stats.rows_written + stats.dead_lettered, 1500);
    assert_eq!(stats.dead_lettered, 15);

    // The role is really limited: reading and listing are denied.
    let role = client(&endpoint, id, secret, Some(token));
    let denied = role
        .list_objects_v2()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap_err();
    assert!(format!("{denied:?}").contains("AccessDenied"), "{denied:?}");

    // Multipart through the same role: the Complete carries If-None-Match, a second upload of
    // the key gets 412 and counts as delivered; its abort is denied (the role has no
    // s3:AbortMultipartUpload), which is tolerated and counted.
    let settings = pail::config::parse(Path::new("lp.toml"), &text, &|_| None).unwrap();
    let store = S3Store::new(
        build_s3_client(&settings.destinations[0]).await,
        BUCKET.into(),
        true,
    )
    .with_upload(UploadSettings {
        multipart_threshold: 5 << 20,
        part_size: 5 << 20,
        ..UploadSettings::default()
    });
    let mut rng = fastrand::Rng::with_seed(3);
    let big = Bytes::from((0..(11 << 20)).map(|_| rng.u8(..)).collect::<Vec<u8>>());
    let meta = Vec::new();
    let first = store.put_if_absent("mp/big.bin", big.clone(), &meta).await;
    assert_eq!(first.unwrap(), PutOutcome::Created);
    let denied_before = METRICS.multipart_abort_failures.get();
    let second = store.put_if_absent("mp/big.bin", Bytes::from(vec![1u8; 6 << 20]), &meta);
    assert_eq!(second.await.unwrap(), PutOutcome::AlreadyExists);
    assert_eq!(METRICS.multipart_abort_failures.get(), denied_before + 1);

    // Enforcement off again, so the test can read back what pail wrote.
    enforcement(&endpoint, false).await;
    let admin = client(&endpoint, "admin", "admin", None);
    let listed = admin
        .list_objects_v2()
        .bucket(BUCKET)
        .max_keys(1000)
        .send()
        .await
        .unwrap();
    let mut ids: HashMap<i64, usize> = HashMap::new();
    let mut dead = 0;
    let stored = admin
        .get_object()
        .bucket(BUCKET)
        .key("mp/big.bin")
        .send()
        .await
        .unwrap();
    let stored: Bytes = stored.body.collect().await.unwrap().into_bytes();
    assert!(
        stored == big,
        "the multipart object differs from what was sent"
    );
    for obj in listed.contents() {
        let key = obj.key().unwrap();
        if key.starts_with("mp/") {
            continue;
        }
        let body = admin
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap();
        // Provenance without reading the file: stored by moto as x-amz-meta-*, and true of
        // the rows inside.
        let head = body.metadata().cloned().unwrap_or_default();
        let meta = |k: &str| {
            head.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("{key}: no {k}"))
        };
        assert_eq!(meta("pail-topic"), "orders", "{key}");
        assert_eq!(meta("pail-version"), env!("CARGO_PKG_VERSION"), "{key}");
        let partition: i32 = meta("pail-partition").parse().unwrap();
        let first: i64 = meta("pail-first-offset").parse().unwrap();
        let last: i64 = meta("pail-last-offset").parse().unwrap();
        let count: usize = meta("pail-record-count").parse().unwrap();
        assert!(key.contains(&format!("orders+{partition}+")), "{key}");
        assert!(
            first <= last && count as i64 <= last - first + 1,
            "{key}: {head:?}"
        );
        let bytes: Bytes = body.body.collect().await.unwrap().into_bytes();
        if key.ends_with(".ndjson") {
            let lines = bytes
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count();
            assert_eq!(lines, count, "{key}");
            dead += lines;
            continue;
        }
        let mut offsets = Vec::new();
        for batch in ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
            .unwrap()
            .build()
            .unwrap()
        {
            let batch = batch.unwrap();
            let col = batch
                .column_by_name("_kafka_offset")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
                .clone();
            offsets.extend(col.iter().map(Option::unwrap));
        }
        assert_eq!(offsets.len(), count, "{key}");
        assert_eq!(offsets.iter().min(), Some(&first), "{key}");
        assert_eq!(offsets.iter().max(), Some(&last), "{key}");
        for batch in ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
        {
            let batch = batch.unwrap();
            let col = batch.column_by_name("id").unwrap();
            let col = col
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap();
            for v in col.iter() {
                *ids.entry(v.unwrap()).or_default() += 1;
            }
        }
    }
    assert!(!listed.is_truncated().unwrap_or(false));
    assert_eq!(ids.len(), 1485);
    assert!(ids.values().all(|n| *n == 1));
    assert_eq!(dead, 15);
}
