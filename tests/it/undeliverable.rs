//! A segment that cannot be encoded, in process: the mock cluster, `pail::run` and the
//! in-process S3 server. The encoder panic is real (parquet's writer asserts on a zero row
//! group size, a value `check-config` refuses and this test sets on the validated settings of
//! one destination); what is tested is that it stops only that destination's partitions, at
//! the start of the segment that failed, commits nothing of them, delivers the others, and
//! that the next run (with the fault gone) delivers the stopped partitions exactly once.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use pail::protocol::StopReason;
use pail::run::{PartitionStop, RunError};
use support::kafka::MockKafka;
use support::read;
use support::s3::{ACCESS_KEY, SECRET_KEY, TestS3};

const PARTITIONS: i32 = 2;
const PER_TOPIC: usize = 200;

fn config(brokers: &str, endpoint: &str) -> pail::config::Settings {
    let destination = |name: &str, topic: &str| {
        format!(
            r#"
[[destinations]]
name = "{name}"
topics = ["{topic}"]
url = "s3://lake/{topic}"
region = "us-east-1"
endpoint = "{endpoint}"
path_style = true
key_template = "{{topic}}"
[destinations.auth]
method = "static"
access_key_id = "{ACCESS_KEY}"
secret_access_key = "{SECRET_KEY}"
[destinations.rotation]
max_records = 40
"#
        )
    };
    let text = format!(
        r#"
[source]
kind = "kafka"
brokers = "{brokers}"
group_id = "g"
topics = ["orders", "clicks"]
[source.properties]
"session.timeout.ms" = "6000"
{}{}"#,
        destination("broken", "orders"),
        destination("lake", "clicks"),
    );
    pail::config::parse(Path::new("test.toml"), &text, &|_| None).unwrap()
}

fn produce(kafka: &MockKafka, topic: &str) {
    let payloads: Vec<String> = (0..PER_TOPIC)
        .map(|i| format!(r#"{{"id":"{topic}-{i}","n":{i}}}"#))
        .collect();
    kafka.produce_round_robin(topic, PARTITIONS, &payloads);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoder_panic_stops_only_its_partitions_and_the_next_run_delivers_them_once() {
    let kafka = MockKafka::start(&[("orders", PARTITIONS), ("clicks", PARTITIONS)]);
    let s3 = TestS3::start(&["lake"]).await;
    produce(&kafka, "orders");
    produce(&kafka, "clicks");

    let mut settings = config(&kafka.brokers(), &s3.endpoint());
    let broken = settings
        .destinations
        .iter()
        .position(|d| d.name == "broken")
        .unwrap();
    settings.destinations[broken].parquet.row_group_size = 0;
    let error = support::run_settings_once(settings, Duration::from_secs(90))
        .await
        .unwrap_err();
    let RunError::PartitionsStopped(stops) = error else {
        panic!("expected stopped partitions, got {error}");
    };
    let stopped: BTreeMap<i32, i64> = stops
        .iter()
        .map(|stop| match stop {
            PartitionStop::Protocol {
                topic,
                partition,
                offset,
                reason: StopReason::Undeliverable { segment, error },
            } => {
                assert_eq!(topic, "orders", "{stop}");
                assert!(error.contains("panicked"), "{stop}");
                // At the start of whichever of its segments failed first (segments sealed
                // before it would still be delivered, had they not failed too).
                assert_eq!(segment.start, *offset, "{stop}");
                assert_eq!(offset % 40, 0, "{stop}");
                (*partition, *offset)
            }
            other => panic!("unexpected stop: {other}"),
        })
        .collect();
    assert_eq!(
        stopped.keys().copied().collect::<Vec<_>>(),
        vec![0, 1],
        "both partitions of the broken destination: {stopped:?}"
    );
    let clicks = read::ids(&s3.bucket_dir("lake").join("clicks"));
    assert_eq!(
        clicks.len(),
        PER_TOPIC,
        "the other destination is delivered"
    );
    assert!(clicks.values().all(|n| *n == 1));
    assert!(read::files(&s3.bucket_dir("lake").join("orders")).is_empty());
    // At most the intent that named the segments, at offset 0: nothing past them.
    let orders_committed = kafka.committed("g", "orders", PARTITIONS);
    assert!(
        orders_committed.iter().all(|c| c.is_none_or(|o| o == 0)),
        "nothing of the stopped partitions is committed: {orders_committed:?}"
    );
    let per_partition = (PER_TOPIC / PARTITIONS as usize) as i64;
    assert_eq!(
        kafka.committed("g", "clicks", PARTITIONS),
        vec![Some(per_partition); PARTITIONS as usize]
    );

    // The fault gone (a fixed release, say): the stopped partitions are delivered, once, and
    // nothing of the others again.
    let settings = config(&kafka.brokers(), &s3.endpoint());
    support::run_settings_once(settings, Duration::from_secs(90))
        .await
        .unwrap();
    let orders = read::ids(&s3.bucket_dir("lake").join("orders"));
    assert_eq!(orders.len(), PER_TOPIC);
    assert!(orders.values().all(|n| *n == 1));
    let clicks = read::ids(&s3.bucket_dir("lake").join("clicks"));
    assert_eq!(clicks.len(), PER_TOPIC);
    assert!(clicks.values().all(|n| *n == 1), "none twice");
    assert_eq!(
        kafka.committed("g", "orders", PARTITIONS),
        vec![Some(per_partition); PARTITIONS as usize]
    );
}
