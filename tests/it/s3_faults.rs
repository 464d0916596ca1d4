//! Faults injected by the test S3 server: 503 SlowDown, a connection reset before the store
//! saw the request, and a reset after the store saved the object (the retry must get 412 and
//! move on). Everything is delivered once and nothing is overwritten.

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use support::read;
use support::s3::{ACCESS_KEY, Fault, SECRET_KEY, TestS3};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowdown_and_resets_before_and_after_the_store_are_retried_to_exactly_once() {
    let s3 = TestS3::start(&["lake"]).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    let lines: String = (0..3000)
        .map(|i| {
            format!(
                "{{\"id\":{i},\"ts\":\"2026-05-0{}T1{}:00:00Z\"}}\n",
                1 + i % 3,
                i % 10
            )
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    let text = format!(
        "[source]\nkind = \"file\"\npath = \"{}\"\n[[destinations]]\nname = \"l\"\nurl = \"s3://lake/x\"\n\
         endpoint = \"{}\"\npath_style = true\ntimestamp = \"field:ts\"\n[destinations.rotation]\nmax_records = 500\n\
         [destinations.auth]\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n\
         [worker]\nmax_concurrent_uploads = 1\n",
        input.display(),
        s3.endpoint()
    );
    s3.inject(&[
        Fault::SlowDown,
        Fault::ResetAfter,
        Fault::ResetBefore,
        Fault::SlowDown,
        Fault::ResetAfter,
        Fault::ResetBefore,
        Fault::ResetAfter,
    ]);
    let stats = support::run_once(&text, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(stats.rows_written, 3000);

    let mut ids: HashMap<i64, usize> = HashMap::new();
    for (_, rows) in read::all_parquet(&s3.bucket_dir("lake").join("x")) {
        for row in rows {
            *ids.entry(row["id"].as_i64().unwrap()).or_default() += 1;
        }
    }
    assert_eq!(ids.len(), 3000);
    assert!(ids.values().all(|n| *n == 1));

    let puts = s3.puts();
    let faults = |f: Fault| puts.iter().filter(|p| p.fault == Some(f)).count();
    assert_eq!(
        (
            faults(Fault::SlowDown),
            faults(Fault::ResetBefore),
            faults(Fault::ResetAfter)
        ),
        (2, 2, 3)
    );
    // Each object the store saved behind a reset was retried, answered 412, and counted as
    // delivered. (A reset that hit a retry already answered 412 saved nothing new.)
    let saved_then_reset: Vec<_> = puts
        .iter()
        .filter(|p| p.fault == Some(Fault::ResetAfter) && p.status == 200)
        .collect();
    assert!(!saved_then_reset.is_empty());
    for reset in &saved_then_reset {
        assert!(
            puts.iter().any(|p| p.key == reset.key && p.status == 412),
            "no 412 retry for {}",
            reset.key
        );
    }
    assert_eq!(stats.objects_existing as usize, saved_then_reset.len());
    assert!(puts.iter().all(|p| p.if_none_match && !p.overwrote));
}
