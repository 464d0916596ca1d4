//! Files that stream out while they are open: row groups are encoded as records arrive and
//! their bytes go up as multipart parts before the file is sealed; the object appears only
//! at the conditional Complete. A `kill -9` mid-object leaves no visible object, and the run
//! again delivers every record exactly once.
//!
//! The input is stdin, held open, so the file cannot be sealed by the end of input while the
//! test looks: librdkafka's mock cluster keeps only 5 MiB per partition, too little for an
//! object of several 5 MiB parts to be replayed from it. The Kafka side of streaming (intents,
//! replays to recorded ends, rebalances, `kill -9`) runs in `crash_*.rs`, whose workers
//! stream every file in row groups of 250 rows.

use crate::support;

use std::collections::HashSet;
use std::fs::File;
use std::time::{Duration, Instant};

use parquet::file::reader::{FileReader, SerializedFileReader};
use std::process::Stdio;
use support::s3::TestS3;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

const EVENTS: usize = 48_000;

fn config(dir: &std::path::Path, endpoint: &str) -> std::path::PathBuf {
    let path = dir.join("stream.toml");
    let text = format!(
        r#"
[source]
kind = "file"
path = "-"

[[destinations]]
name = "lake"
url = "s3://lake/raw"
endpoint = "{endpoint}"
path_style = true
key_template = "{{topic}}"
timestamp = "field:ts"
[destinations.auth]
access_key_id = "{key}"
secret_access_key = "{secret}"
[destinations.rotation]
max_records = 10000000
max_age = "1h"
[destinations.parquet]
row_group_bytes = "1MiB"
[destinations.upload]
part_size = "5MiB"
multipart_threshold = "5MiB"
"#,
        key = support::s3::ACCESS_KEY,
        secret = support::s3::SECRET_KEY,
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// NDJSON of ~1 KB events of random hex (about half of it survives compression): ~25 MB of
/// Parquet, five 5 MiB parts.
fn input(dir: &std::path::Path, events: usize) -> (std::path::PathBuf, HashSet<String>) {
    let mut rng = fastrand::Rng::with_seed(13);
    let mut ids = HashSet::new();
    let mut text = String::new();
    for i in 0..events {
        let id = format!("s{i}");
        let blob: String = (0..1000).map(|_| rng.digit(16)).collect();
        text.push_str(&format!(
            r#"{{"id":"{id}","n":{i},"ts":"2026-03-01T10:00:00Z","blob":"{blob}"}}"#
        ));
        text.push('\n');
        ids.insert(id);
    }
    let path = dir.join("events.ndjson");
    std::fs::write(&path, text).unwrap();
    (path, ids)
}

fn pail(config: &std::path::Path, stdin: Stdio, log: &std::path::Path) -> Child {
    Command::new(support::pail_bin())
        .args(["run", "--config", config.to_str().unwrap()])
        .stdin(stdin)
        .stderr(File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_streams_parts_while_open_and_a_crash_mid_object_leaves_nothing_visible() {
    let s3 = TestS3::start(&["lake"]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &s3.endpoint());
    let (events, ids) = input(dir.path(), EVENTS);
    let log = dir.path().join("first.log");

    // Every event goes in; stdin stays open, so the one file stays open while parts of it go
    // up.
    let mut child = pail(&config, Stdio::piped(), &log);
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(&std::fs::read(&events).unwrap())
        .await
        .unwrap();
    stdin.flush().await.unwrap();
    let start = Instant::now();
    while s3.parts().len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no parts went up while the file was open ({} so far); log: {}",
            s3.parts().len(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    drop(stdin);

    // Nothing is visible: no object was written, and the upload is left incomplete (for the
    // bucket's lifecycle rule to abort).
    let root = s3.bucket_dir("lake").join("raw");
    assert!(
        support::read::files(&root).is_empty(),
        "an object appeared before its file was sealed"
    );
    assert!(s3.puts().is_empty(), "{:?}", s3.puts());
    let crashed = s3.multipart();
    assert_eq!((crashed.started, crashed.completed), (1, 0));
    let parts_before = s3.parts().len();

    // Run again over the same input: the object is written whole, streaming again, and
    // appears at its conditional Complete.
    let log = dir.path().join("second.log");
    let status = pail(&config, Stdio::from(File::open(&events).unwrap()), &log)
        .wait()
        .await
        .unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let puts = s3.puts();
    assert_eq!(puts.len(), 1, "one object: {puts:?}");
    assert!(
        puts[0].multipart && puts[0].if_none_match && puts[0].status == 200 && !puts[0].overwrote,
        "the object completes a multipart upload with If-None-Match: * : {puts:?}"
    );
    let parts = &s3.parts()[parts_before..];
    assert!(
        parts.len() >= 4,
        "the object is larger than several parts ({parts:?})"
    );
    // Every part but the last is exactly part_size (R2 refuses uneven parts), the last no
    // larger.
    let (last, whole) = parts.split_last().unwrap();
    assert!(whole.iter().all(|&n| n == 5 << 20), "{parts:?}");
    assert!(*last > 0 && *last <= 5 << 20, "{parts:?}");
    let files = support::read::files(&root);
    assert_eq!(files.len(), 1, "{files:?}");
    let reader = SerializedFileReader::new(File::open(&files[0]).unwrap()).unwrap();
    let metadata = reader.metadata();
    assert!(
        metadata.num_row_groups() > 1,
        "row groups encoded as they filled"
    );
    assert_eq!(metadata.file_metadata().num_rows() as usize, EVENTS);
    let rows = support::read::parquet_rows(&files[0]);
    let seen: HashSet<String> = rows
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(rows.len(), EVENTS, "no event twice");
    assert_eq!(seen, ids, "every event once");
}

/// An upload that vanishes while its file is open (a lifecycle rule aborted it) cannot be
/// completed by retrying with its id: the run stops, naming it, with nothing visible, instead
/// of retrying forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_upload_stops_the_run_instead_of_retrying_forever() {
    let s3 = TestS3::start(&["lake"]).await;
    s3.vanish_uploads(true);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &s3.endpoint());
    // ~6 MB of Parquet: one part goes up while the file is open.
    let (events, _) = input(dir.path(), 12_000);
    let log = dir.path().join("run.log");
    let mut child = pail(&config, Stdio::from(File::open(&events).unwrap()), &log);
    let status = support::bounded(Duration::from_secs(120), child.wait())
        .await
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success(), "{text}");
    assert!(text.contains("no longer exists"), "{text}");
    assert!(support::read::files(&s3.bucket_dir("lake")).is_empty());
    assert!(s3.puts().is_empty(), "{:?}", s3.puts());
}
