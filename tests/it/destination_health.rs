//! A destination that refuses uploads for good (here: its bucket does not exist yet) keeps its
//! data, pauses only its own partitions, shows as failing in `/healthz` and `/metrics` (the
//! worker stays ready), and
//! delivers everything exactly once as soon as it is fixed — while the other destination goes
//! on. With the start-up connection test (`preflight`, the default) such a destination's
//! topics are not even consumed until the test passes. Also: the endpoint answers hostile
//! requests without harm.

use crate::support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use support::http::{endpoint_address, eventually, get, request};
use support::kafka::MockKafka;
use support::read;
use support::s3::{ACCESS_KEY, SECRET_KEY, TestS3};
use support::workers::{log_count, spawn_worker, terminate};
use tokio::net::TcpStream;

/// Ids delivered under `root`, with how often each appears.
fn delivered(root: &Path) -> HashMap<String, usize> {
    read::ids(root)
}

fn payloads(topic: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| format!(r#"{{"id":"{topic}-{i}","n":{i}}}"#))
        .collect()
}

fn config(dir: &Path, brokers: &str, endpoint: &str, preflight: bool) -> std::path::PathBuf {
    let dest = |name: &str, topic: &str, bucket: &str| {
        format!(
            "[[destinations]]\nname = \"{name}\"\ntopics = [\"{topic}\"]\nurl = \"s3://{bucket}/raw\"\n\
             endpoint = \"{endpoint}\"\npath_style = true\nkey_template = \"{{topic}}\"\n\
             preflight = {preflight}\n\
             [destinations.auth]\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n\
             [destinations.rotation]\nmax_records = 100\nmax_age = \"1s\"\n"
        )
    };
    let text = format!(
        "[source]\nkind = \"kafka\"\nbrokers = \"{brokers}\"\ngroup_id = \"health\"\n\
         [source.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\
         {}{}\n[worker]\npermanent_error_retry = \"1s\"\n[telemetry]\nlisten = \"127.0.0.1:0\"\n",
        dest("good", "a", "lake"),
        dest("bad", "b", "late"),
    );
    let path = dir.join("health.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Creates the missing bucket; waits until topic b's `n` events arrived there and the worker
/// is ready again.
async fn create_late_bucket(s3: &TestS3, late: &Path, addr: &str, n: usize) {
    std::fs::create_dir(s3.bucket_dir("late")).unwrap();
    eventually("topic b delivered", Duration::from_secs(90), || async {
        delivered(late).len() == n
    })
    .await;
    eventually("healthy again", Duration::from_secs(30), || async {
        let (status, body) = get(addr, "/healthz").await;
        status == 200 && body.contains("\"status\": \"ok\"")
    })
    .await;
}

/// Stops the worker cleanly; every one of the `n` events of each topic is there exactly once.
async fn stop_and_audit(child: tokio::process::Child, good: &Path, late: &Path, n: usize) {
    stop(child).await;
    for (seen, topic) in [(delivered(good), "a"), (delivered(late), "b")] {
        assert_eq!(seen.len(), n, "topic {topic}");
        assert!(seen.values().all(|c| *c == 1), "topic {topic} duplicated");
    }
}

/// SIGTERM, then a clean exit.
async fn stop(child: tokio::process::Child) {
    let status = terminate(child, Duration::from_secs(40)).await;
    assert!(status.success(), "exit status {status:?}");
}

/// A running worker with destinations `good` (topic a, bucket `lake`) and `bad` (topic b,
/// bucket `late`, missing), `n` events produced to each topic.
struct Setup {
    kafka: MockKafka,
    s3: TestS3,
    log: std::path::PathBuf,
    child: tokio::process::Child,
    addr: String,
    good: std::path::PathBuf,
    late: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn start(preflight: bool, n: usize) -> Setup {
    let kafka = MockKafka::start(&[("a", 2), ("b", 2)]);
    let s3 = TestS3::start(&["lake"]).await;
    kafka.produce_round_robin("a", 2, &payloads("a", 0..n));
    kafka.produce_round_robin("b", 2, &payloads("b", 0..n));
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &kafka.brokers(), &s3.endpoint(), preflight);
    let log = dir.path().join("worker.log");
    let child = spawn_worker(&config, &log);
    let addr = endpoint_address(&log).await;
    let good = s3.bucket_dir("lake").join("raw").join("a");
    let late = s3.bucket_dir("late").join("raw").join("b");
    Setup {
        kafka,
        s3,
        log,
        child,
        addr,
        good,
        late,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_failing_its_start_up_test_is_not_consumed_until_it_passes() {
    // Every field bound: what `..` leaves out is dropped at once (the cluster, the directory).
    let Setup {
        kafka: _kafka,
        s3,
        log,
        child,
        addr,
        good,
        late,
        _dir,
    } = start(true, 200).await;
    let addr = addr.as_str();
    eventually("topic a delivered", Duration::from_secs(60), || async {
        delivered(&good).len() == 200
    })
    .await;
    // `bad` failed its connection test: degraded, with the classified cause, and its topic
    // was never subscribed (only topic a's records were consumed). The worker stays ready:
    // one destination's fault must not take every replica of a fleet out of rotation.
    let (status, body) = get(addr, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("NoSuchBucket")
            && body.contains("no_such_bucket")
            && body.contains("\"status\": \"degraded\""),
        "{body}"
    );
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(
        status, 200,
        "a failing destination leaves the worker ready: {body}"
    );
    let (_, metrics) = get(addr, "/metrics").await;
    assert!(
        metrics.contains("\npail_records_consumed_total 200\n"),
        "{metrics}"
    );
    assert!(log_count(&log, "connection test failed") >= 1);
    assert_eq!(log_count(&log, "upload refused by the store"), 0);

    // Fixed: the next retry passes, its topic is subscribed, and everything arrives once.
    create_late_bucket(&s3, &late, addr, 200).await;
    assert!(log_count(&log, "passed its connection test; consuming its topics") >= 1);
    stop_and_audit(child, &good, &late, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_destination_pauses_only_its_partitions_and_catches_up_once_fixed() {
    // Without the start-up test: the bucket might as well have vanished after start-up.
    let Setup {
        kafka,
        s3,
        log,
        child,
        addr,
        good,
        late,
        _dir,
    } = start(false, 300).await;
    let addr = addr.as_str();
    eventually("topic a delivered", Duration::from_secs(60), || async {
        delivered(&good).len() == 300
    })
    .await;
    eventually("bad shown as failing", Duration::from_secs(60), || async {
        let (status, body) = get(addr, "/healthz").await;
        status == 200 && body.contains("NoSuchBucket") && body.contains("\"failing\"")
    })
    .await;
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(
        status, 200,
        "a failing destination leaves the worker ready: {body}"
    );
    eventually(
        "bad's partitions paused",
        Duration::from_secs(30),
        || async {
            let (_, metrics) = get(addr, "/metrics").await;
            metrics.contains("pail_destination_up{destination=\"bad\"} 0")
                && metrics.contains("pail_destination_up{destination=\"good\"} 1")
                && metrics.contains("\npail_partitions_paused 2\n")
        },
    )
    .await;
    let (_, metrics) = get(addr, "/metrics").await;
    let permanent = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pail_upload_permanent_errors_total{destination=\"bad\"} "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    assert!(permanent >= 1);
    assert!(log_count(&log, "upload refused by the store") >= 1);

    // The other destination goes on while `bad` is refused.
    kafka.produce_round_robin("a", 2, &payloads("a", 300..600));
    kafka.produce_round_robin("b", 2, &payloads("b", 300..600));
    eventually(
        "more of topic a delivered",
        Duration::from_secs(60),
        || async { delivered(&good).len() == 600 },
    )
    .await;

    // Fix the destination: everything it held, and what waited in Kafka, arrives once.
    create_late_bucket(&s3, &late, addr, 600).await;
    assert!(log_count(&log, "accepts uploads again") >= 1);
    stop_and_audit(child, &good, &late, 600).await;
    let puts = s3.puts();
    assert!(puts.iter().all(|p| p.if_none_match && !p.overwrote));
}

#[tokio::test]
async fn the_endpoint_answers_hostile_requests_and_keeps_serving() {
    use pail::telemetry::{DestinationHealth, Health};
    let health = Arc::new(Health::new(vec![Arc::new(DestinationHealth::new("d"))]));
    health.beat();
    let (addr, task) = pail::telemetry::serve("127.0.0.1:0".parse().unwrap(), health.clone())
        .await
        .unwrap();
    let addr = addr.to_string();

    let huge = format!("GET /{} HTTP/1.1\r\n", "a".repeat(64 * 1024));
    let (status, _) = request(&addr, huge.as_bytes()).await;
    assert!((400..500).contains(&status), "an oversized head: {status}");
    assert_eq!(request(&addr, b"\xff\xfe\x00garbage\r\n\r\n").await.0, 400);
    assert_eq!(
        request(&addr, b"POST /readyz HTTP/1.1\r\nConnection: close\r\n\r\n")
            .await
            .0,
        405
    );
    assert_eq!(get(&addr, "/../../etc/passwd").await.0, 404);
    // A client that connects and says nothing does not block the others.
    let _idle = TcpStream::connect(&addr).await.unwrap();
    // Not ready until the run loop turns.
    assert_eq!(get(&addr, "/readyz").await.0, 503);
    assert_eq!(get(&addr, "/livez").await.0, 200);
    health.running();
    let (status, body) = get(&addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["destinations"][0]["state"], "ok");
    let (status, metrics) = get(&addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("# TYPE pail_records_consumed counter"));
    assert!(metrics.contains("\npail_records_consumed_total "));
    assert!(metrics.contains("pail_destination_up{destination=\"d\"} 1"));
    assert!(metrics.contains("pail_build_info{version=\""), "{metrics}");
    assert!(metrics.ends_with("# EOF\n"));
    // Two requests on one connection (keep-alive), the first a HEAD: a head, no body.
    let (status, answer) = request(
        &addr,
        b"HEAD /metrics HTTP/1.1\r\nHost: pail\r\n\r\nGET /livez HTTP/1.1\r\nHost: pail\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        answer.starts_with("HTTP/1.1 200 OK") && answer.contains("\"live\": true"),
        "the HEAD answer has no body, the GET after it on the same connection is answered: {answer}"
    );
    // A shutdown began: no longer ready, still live.
    health.stopping();
    assert_eq!(get(&addr, "/readyz").await.0, 503);
    assert_eq!(get(&addr, "/livez").await.0, 200);
    task.abort();
}
