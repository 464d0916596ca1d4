//! `/metrics` scraped during and after a Kafka run, as Prometheus sees it: what was delivered
//! equals what was produced, consumer lag reaches 0 where everything is delivered and stays at
//! the undelivered count where a destination refuses, the latency histograms have counts, a
//! refusing destination shows in its error counter, and the process and build series are
//! there.

use crate::support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use support::http::{endpoint_address, eventually, get};
use support::kafka::MockKafka;
use support::read;
use support::s3::{ACCESS_KEY, SECRET_KEY, TestS3};
use support::workers::{spawn_worker, terminate};

/// The value of the sample `series` (a name with its labels, as exposed), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

async fn scrape(addr: &str) -> String {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

fn config(dir: &Path, brokers: &str, endpoint: &str) -> std::path::PathBuf {
    let dest = |name: &str, topic: &str, bucket: &str| {
        format!(
            "[[destinations]]\nname = \"{name}\"\ntopics = [\"{topic}\"]\nurl = \"s3://{bucket}/raw\"\n\
             endpoint = \"{endpoint}\"\npath_style = true\nkey_template = \"{{topic}}\"\n\
             preflight = false\n\
             [destinations.auth]\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n\
             [destinations.rotation]\nmax_records = 100\nmax_age = \"1s\"\n"
        )
    };
    let text = format!(
        "[source]\nkind = \"kafka\"\nbrokers = \"{brokers}\"\ngroup_id = \"metrics\"\n\
         [source.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\
         {}{}\n[worker]\npermanent_error_retry = \"1s\"\n[telemetry]\nlisten = \"127.0.0.1:0\"\n",
        dest("good", "a", "lake"),
        dest("denied", "b", "late"),
    );
    let path = dir.join("metrics.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn payloads(topic: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!(r#"{{"id":"{topic}-{i}","n":{i}}}"#))
        .collect()
}

fn delivered(root: &Path) -> HashMap<String, usize> {
    read::ids(root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_delivery_lag_latency_and_a_refusing_destination() {
    const N: usize = 300;
    const M: usize = 100;
    let kafka = MockKafka::start(&[("a", 2), ("b", 2)]);
    let s3 = TestS3::start(&["lake"]).await;
    kafka.produce_round_robin("a", 2, &payloads("a", N));
    kafka.produce_round_robin("b", 2, &payloads("b", N));
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &kafka.brokers(), &s3.endpoint());
    let log = dir.path().join("worker.log");
    let child = spawn_worker(&config, &log);
    let addr = endpoint_address(&log).await;
    let good = s3.bucket_dir("lake").join("raw").join("a");
    let late = s3.bucket_dir("late").join("raw").join("b");

    // During the run: `good` has everything and its partitions' lag is 0; `denied` (its bucket
    // does not exist) refuses, its records stay in Kafka and are all counted as lag.
    let lag = |m: &str, topic: &str| -> Option<f64> {
        let p0 = sample(
            m,
            &format!("pail_consumer_lag_records{{topic=\"{topic}\",partition=\"0\"}}"),
        )?;
        let p1 = sample(
            m,
            &format!("pail_consumer_lag_records{{topic=\"{topic}\",partition=\"1\"}}"),
        )?;
        Some(p0 + p1)
    };
    eventually(
        "good delivered and committed, denied refused",
        Duration::from_secs(90),
        || async {
            let m = scrape(&addr).await;
            sample(&m, "pail_records_delivered_total{destination=\"good\"}") == Some(N as f64)
                && lag(&m, "a") == Some(0.0)
                && lag(&m, "b") == Some(N as f64)
                && sample(
                    &m,
                    "pail_upload_permanent_errors_total{destination=\"denied\"}",
                )
                .is_some_and(|n| n >= 1.0)
        },
    )
    .await;
    let m = scrape(&addr).await;
    assert_eq!(
        delivered(&good).len(),
        N,
        "the objects hold what the metric says"
    );
    assert_eq!(
        sample(&m, "pail_destination_up{destination=\"good\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "pail_destination_up{destination=\"denied\"}"),
        Some(0.0)
    );
    // The refused requests are timed too, apart from the successful ones.
    assert!(
        sample(
            &m,
            "pail_upload_duration_seconds_count{destination=\"denied\",outcome=\"error\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "pail_records_delivered_total{destination=\"denied\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&m, "pail_records_consumed_total"),
        Some(2.0 * N as f64),
        "{m}"
    );
    // The histograms have counts: every object of `good` took at least one timed request.
    let objects = sample(&m, "pail_objects_created_total{destination=\"good\"}").unwrap();
    assert!(objects >= 1.0, "{m}");
    let requests = sample(
        &m,
        "pail_upload_duration_seconds_count{destination=\"good\",outcome=\"ok\"}",
    )
    .unwrap();
    assert!(
        requests >= objects,
        "{requests} timed requests for {objects} objects"
    );
    assert_eq!(
        sample(&m, "pail_object_size_bytes_count{destination=\"good\"}"),
        Some(objects)
    );
    assert!(sample(&m, "pail_commit_duration_seconds_count").unwrap() >= 1.0);
    // Freshness: the newest timestamp delivered is the last record's (the mock producer
    // stamps them one second apart from a fixed time); `denied` has delivered nothing.
    let newest = (1_763_600_000_000 + (N as i64 - 1) * 1000) as f64 / 1000.0;
    assert_eq!(
        sample(
            &m,
            "pail_last_delivered_timestamp_seconds{destination=\"good\"}"
        ),
        Some(newest)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let fresh = sample(&m, "pail_freshness_seconds{destination=\"good\"}").unwrap();
    assert!(
        (now - newest - fresh).abs() < 60.0,
        "freshness {fresh} s is now minus the newest timestamp delivered"
    );
    assert_eq!(
        sample(&m, "pail_freshness_seconds{destination=\"denied\"}"),
        None
    );
    // Static keys do not expire: no expiry series.
    assert!(
        !m.contains("pail_credential_expiry_timestamp_seconds{"),
        "{m}"
    );
    // The process and the build.
    assert!(sample(&m, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(sample(&m, "process_cpu_seconds_total").unwrap() > 0.0);
    assert_eq!(
        sample(&m, "pail_memory_limit_bytes"),
        Some(256.0 * 1024.0 * 1024.0)
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with("pail_build_info{version=\"")
                && l.contains(",commit=\"")
                && l.ends_with("} 1")),
        "{m}"
    );

    // More arrives for `denied` while its partitions are paused: its lag grows with the log
    // (regression: librdkafka's cached log end stands still for a paused partition).
    kafka.produce_round_robin("b", 2, &payloads("b-more", M));
    eventually(
        "lag follows the log of paused partitions",
        Duration::from_secs(60),
        || async { lag(&scrape(&addr).await, "b") == Some((N + M) as f64) },
    )
    .await;

    // Fixed: the bucket appears; `denied` catches up and the lag of b reaches 0 as well.
    std::fs::create_dir(s3.bucket_dir("late")).unwrap();
    eventually("denied caught up", Duration::from_secs(90), || async {
        let m = scrape(&addr).await;
        sample(&m, "pail_records_delivered_total{destination=\"denied\"}") == Some((N + M) as f64)
            && lag(&m, "b") == Some(0.0)
            && sample(&m, "pail_destination_up{destination=\"denied\"}") == Some(1.0)
    })
    .await;
    assert_eq!(delivered(&late).len(), N + M);
    let status = terminate(child, Duration::from_secs(40)).await;
    assert!(status.success(), "exit status {status:?}");
}
