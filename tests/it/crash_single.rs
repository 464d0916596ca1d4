//! kill -9 at random moments: one worker, killed and restarted twelve times over 100k events
//! (valid and malformed) fed in batches so that every kill lands while it consumes and
//! delivers, then drained with `--once`; the audit proves every valid event landed exactly
//! once, every malformed record was dead-lettered exactly once, and no object was ever
//! overwritten.

use crate::support;

use std::time::Duration;

use support::kafka::MockKafka;
use support::s3::TestS3;
use support::workers::{
    Produced, audit, batch, drain_once, produce_range, spawn_worker, wait_for_puts, worker_config,
};

const PARTITIONS: i32 = 8;
const PER_PARTITION: i64 = 12_500;
const KILLS: i64 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_ten_times_still_delivers_everything_exactly_once() {
    let kafka = MockKafka::start(&[("events", PARTITIONS)]);
    let s3 = TestS3::start(&["lake"]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = worker_config(dir.path(), &kafka.brokers(), &s3.endpoint(), "crash", "1s");
    let log = dir.path().join("workers.log");
    let mut produced = Produced::default();

    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..KILLS {
        // A new batch for this round.
        let events = batch(round, KILLS, PER_PARTITION);
        produce_range(&kafka, PARTITIONS, events, &mut produced);
        let mut child = spawn_worker(&config, &log);
        // Wait until this worker delivers (the group join waits out the killed member's
        // session), then kill it after a random number of further PUTs (mid-upload,
        // mid-commit) or at a random moment between segments, whichever comes first.
        assert!(
            wait_for_puts(&s3, s3.puts().len() + 1, Duration::from_secs(60)).await,
            "round {round}: the restarted worker delivered nothing"
        );
        let target = s3.puts().len() + rng.usize(0..10);
        wait_for_puts(&s3, target, Duration::from_millis(rng.u64(0..2000))).await;
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        eprintln!("round {round}: killed after {} PUTs", s3.puts().len());
    }
    assert_eq!(produced.len(), 100_000);
    drain_once(&config, &log).await;
    audit(&s3, &produced);
    assert!(
        s3.puts().iter().any(|p| p.status == 412),
        "no replayed upload hit an existing object: the kills did not land mid-delivery"
    );
}
