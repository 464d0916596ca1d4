//! A store that is down (here: every PUT answered 503 SlowDown, as an overloaded or failing
//! S3-compatible store does) pauses only the partitions of its own destination: the other
//! destination delivers everything meanwhile, and the one that was down catches up, exactly
//! once, when its store answers again.

use crate::support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use support::http::{endpoint_address, eventually, get, healthy};
use support::kafka::MockKafka;
use support::read;
use support::s3::{ACCESS_KEY, Fault, SECRET_KEY, TestS3};
use support::workers::{spawn_worker, terminate};

/// Ids delivered under `root`, with how often each appears.
fn delivered(root: &Path) -> HashMap<String, usize> {
    read::ids(root)
}

fn destination(name: &str, topic: &str, endpoint: &str) -> String {
    format!(
        "[[destinations]]\nname = \"{name}\"\ntopics = [\"{topic}\"]\nurl = \"s3://lake/raw\"\n\
         endpoint = \"{endpoint}\"\npath_style = true\nkey_template = \"{{topic}}\"\n\
         preflight = false\n\
         [destinations.auth]\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n\
         [destinations.rotation]\nmax_records = 100\nmax_age = \"1s\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_pauses_only_its_own_partitions() {
    let kafka = MockKafka::start(&[("a", 2), ("b", 2)]);
    let up = TestS3::start(&["lake"]).await;
    let down = TestS3::start(&["lake"]).await;
    down.inject(&[Fault::SlowDown; 100_000]);
    let payloads = |topic: &str| -> Vec<String> {
        (0..2000)
            .map(|i| format!(r#"{{"id":"{topic}-{i}","n":{i}}}"#))
            .collect()
    };
    kafka.produce_round_robin("b", 2, &payloads("b"));
    let dir = tempfile::tempdir().unwrap();
    // Few segments in flight: the down store's would fill the limit and stop everyone, were
    // they counted against it.
    let text = format!(
        "[source]\nkind = \"kafka\"\nbrokers = \"{}\"\ngroup_id = \"outage\"\n\
         [source.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\
         {}{}\n[worker]\nmax_in_flight_segments = 4\n[telemetry]\nlisten = \"127.0.0.1:0\"\n",
        kafka.brokers(),
        destination("up", "a", &up.endpoint()),
        destination("down", "b", &down.endpoint()),
    );
    let config = dir.path().join("outage.toml");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("worker.log");
    let child = spawn_worker(&config, &log);
    let addr = endpoint_address(&log).await;
    let (a, b) = (
        up.bucket_dir("lake").join("raw/a"),
        down.bucket_dir("lake").join("raw/b"),
    );
    eventually(
        "the down store noticed",
        Duration::from_secs(120),
        || async {
            let (status, body) = get(&addr, "/healthz").await;
            status == 200 && body.contains("\"down\"") && body.contains("does not answer")
        },
    )
    .await;
    // Topic a's events come while b's segments are stuck in flight.
    kafka.produce_round_robin("a", 2, &payloads("a"));
    eventually(
        "topic a delivered while b's store is down",
        Duration::from_secs(120),
        || async { delivered(&a).len() == 2000 },
    )
    .await;
    assert!(delivered(&b).is_empty());

    down.clear_faults();
    eventually(
        "topic b delivered once its store answers",
        Duration::from_secs(120),
        || async { delivered(&b).len() == 2000 },
    )
    .await;
    eventually("healthy again", Duration::from_secs(30), || async {
        healthy(&addr).await
    })
    .await;
    let status = terminate(child, Duration::from_secs(40)).await;
    assert!(status.success(), "exit status {status:?}");
    for root in [&a, &b] {
        assert!(
            delivered(root).values().all(|n| *n == 1),
            "duplicates under {root:?}"
        );
    }
}
