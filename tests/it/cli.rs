//! The `pail` binary as a user runs it: exit codes, messages, and a real `run --once` against
//! a mock Kafka cluster and an S3 server in a child process.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use support::kafka::MockKafka;
use support::read;
use support::s3::{ACCESS_KEY, SECRET_KEY, TestS3};

/// Runs `pail` with `args` in `cwd`, bounded in time.
async fn pail(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    support::run_pail(args, cwd, env, Duration::from_secs(120)).await
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("pail.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn shipped_configs_validate() {
    let o = pail(
        &["check-config", "--config", "config/local.toml"],
        repo(),
        &[],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = pail(
        &["check-config", "--config", "config/kafka-s3.example.toml"],
        repo(),
        &[
            ("KAFKA_BROKERS", "b:9092"),
            ("KAFKA_USERNAME", "u"),
            ("KAFKA_PASSWORD", "kafka-pw-777"),
            ("S3_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("S3_SECRET_ACCESS_KEY", "s3-secret-888"),
        ],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("AKIDEXAMPLE") && out.contains("<redacted>"),
        "{out}"
    );
    assert!(
        !out.contains("kafka-pw-777") && !out.contains("s3-secret-888"),
        "{out}"
    );
}

/// Every `toml` block of the README is a valid configuration, as `check-config` reads it:
/// fragments get a file source, `${VAR}`s a value, and `*_file` paths a file.
#[tokio::test]
async fn readme_config_examples_are_valid() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```toml\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .collect();
    assert!(blocks.len() >= 5, "README toml blocks: {}", blocks.len());
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "not-a-real-secret\n").unwrap();
    for (i, block) in blocks.iter().enumerate() {
        let mut text = String::new();
        if !block.contains("[source]") {
            text.push_str("[source]\nkind = \"file\"\npath = \"in.ndjson\"\n");
        }
        let mut vars: Vec<(String, String)> = Vec::new();
        for line in block.lines() {
            let (key, value) = line.split_once('=').unwrap_or((line, ""));
            let quoted = value.trim().split('"').nth(1).unwrap_or("");
            if key.trim().ends_with("_file") && !quoted.is_empty() && !key.contains('#') {
                text.push_str(&line.replace(quoted, secret.to_str().unwrap()));
            } else {
                text.push_str(line);
            }
            text.push('\n');
            for part in line.split("${").skip(1) {
                let name = part.split(['}', ':']).next().unwrap();
                vars.push((name.to_string(), format!("value-of-{name}")));
            }
        }
        let path = write_config(dir.path(), &text);
        let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let o = pail(
            &["check-config", "--config", path.to_str().unwrap()],
            dir.path(),
            &env,
        )
        .await;
        assert!(
            o.status.success(),
            "README toml block {i} is not a valid config:\n{block}\n{}",
            stderr(&o)
        );
    }
}

#[tokio::test]
async fn unknown_and_missing_keys_name_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[source]\nkind = \"file\"\npath = \"x\"\n[[destinations]]\nname = \"d\"\nurl = \"file://./o\"\ntimestamp = \"field:ts\"\nrotaton = 1\n",
    );
    let o = pail(
        &["check-config", "--config", cfg.to_str().unwrap()],
        dir.path(),
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("pail.toml") && e.contains("destinations[0]") && e.contains("rotaton"),
        "{e}"
    );

    let cfg = write_config(
        dir.path(),
        "[source]\nkind = \"file\"\npath = \"x\"\n[[destinations]]\nname = \"d\"\n",
    );
    let o = pail(
        &["run", "--once", "--config", cfg.to_str().unwrap()],
        dir.path(),
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("`destinations[0].url`: required") && e.contains("pail.toml"),
        "{e}"
    );
    // Only the cause is reported, not what follows from it.
    assert!(!e.contains("no destination lists it"), "{e}");
}

#[tokio::test]
async fn connection_test_and_policy_on_the_local_default() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = std::fs::read_to_string(repo().join("config/local.toml")).unwrap();
    let cfg = write_config(dir.path(), &cfg);
    let o = pail(
        &["connection-test", "--config", cfg.to_str().unwrap()],
        dir.path(),
        &[],
    )
    .await;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(out.contains("ok   put") && out.contains("PASSED"), "{out}");
    let o = pail(
        &[
            "connection-test",
            "--json",
            "--config",
            cfg.to_str().unwrap(),
        ],
        dir.path(),
        &[],
    )
    .await;
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["destinations"][0]["conditional_writes"], "honoured");
    // The test object is gone again, and the directories it needed too.
    let left = walk(&dir.path().join("out"));
    assert!(left.is_empty(), "{left:?}");

    let o = pail(
        &["policy", "--config", cfg.to_str().unwrap()],
        dir.path(),
        &[],
    )
    .await;
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("needs no IAM policy"));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            out.extend(walk(&p));
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn local_default_writes_readable_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = std::fs::read_to_string(repo().join("config/local.toml"))
        .unwrap()
        .replace(
            "examples/events.ndjson",
            repo().join("examples/events.ndjson").to_str().unwrap(),
        );
    let cfg = write_config(dir.path(), &cfg);
    let o = pail(&["run", "--config", cfg.to_str().unwrap()], dir.path(), &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: usize = read::all_parquet(&dir.path().join("out/events"))
        .iter()
        .map(|(_, r)| r.len())
        .sum();
    assert_eq!(rows, 2993);
    assert_eq!(read::dead_letters(&dir.path().join("out/_errors")).len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_child_process_delivers_every_event_from_kafka_to_s3() {
    let kafka = MockKafka::start(&[("clicks", 3)]);
    let s3 = TestS3::start(&["bucket"]).await;
    let payloads: Vec<String> = (0..900)
        .map(|i| format!(r#"{{"id":{i},"page":"/p{}"}}"#, i % 7))
        .collect();
    kafka.produce_round_robin("clicks", 3, &payloads);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[source]\nkind = \"kafka\"\nbrokers = \"{}\"\ngroup_id = \"cli\"\n[source.properties]\n\"session.timeout.ms\" = 6000\n\
             [[destinations]]\nname = \"b\"\ntopics = [\"clicks\"]\nurl = \"s3://bucket/data\"\nendpoint = \"{}\"\npath_style = true\n\
             [destinations.auth]\naccess_key_id = \"${{KEY}}\"\nsecret_access_key = \"${{SECRET}}\"\n",
            kafka.brokers(),
            s3.endpoint()
        ),
    );
    let o = pail(
        &["run", "--once", "--config", cfg.to_str().unwrap()],
        dir.path(),
        &[("KEY", ACCESS_KEY), ("SECRET", SECRET_KEY)],
    )
    .await;
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(!e.contains(SECRET_KEY), "secret leaked into logs");
    let mut ids: Vec<i64> = read::all_parquet(&s3.bucket_dir("bucket").join("data"))
        .iter()
        .flat_map(|(_, rows)| rows.iter().map(|r| r["id"].as_i64().unwrap()))
        .collect();
    ids.sort();
    assert_eq!(ids, (0..900).collect::<Vec<_>>());
}

#[tokio::test]
async fn unreachable_broker_fails_fast_naming_the_brokers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[source]\nkind = \"kafka\"\nbrokers = \"127.0.0.1:1\"\ntopics = [\"t\"]\n[worker]\nstartup_timeout = \"5s\"\n\
         [[destinations]]\nname = \"d\"\ntopics = [\"t\"]\nurl = \"file://./o\"\n",
    );
    let o = pail(
        &["run", "--once", "--config", cfg.to_str().unwrap()],
        dir.path(),
        &[],
    )
    .await;
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("127.0.0.1:1") && e.contains("cannot reach Kafka"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
}

#[tokio::test]
async fn missing_bucket_fails_naming_the_bucket_and_loses_nothing() {
    let s3 = TestS3::start(&["exists"]).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    std::fs::write(&input, "{\"ts\":\"2026-01-01T00:00:00Z\",\"a\":1}\n").unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[source]\nkind = \"file\"\npath = \"{}\"\n[[destinations]]\nname = \"d\"\nurl = \"s3://no-such-bucket/x\"\n\
             endpoint = \"{}\"\npath_style = true\ntimestamp = \"field:ts\"\n[destinations.auth]\n\
             access_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n",
            input.display(),
            s3.endpoint()
        ),
    );
    let o = pail(
        &["run", "--once", "--config", cfg.to_str().unwrap()],
        dir.path(),
        &[],
    )
    .await;
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("NoSuchBucket") && e.contains("s3://no-such-bucket/"),
        "{e}"
    );
    assert!(!e.contains(SECRET_KEY) && !e.contains("panicked"), "{e}");
}

#[tokio::test]
async fn version_names_the_commit_and_every_flag_has_help() {
    let o = pail(&["--version"], repo(), &[]).await;
    assert!(o.status.success());
    let version = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        version.starts_with(&format!("pail {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    for sub in [
        "run",
        "check-config",
        "connection-test",
        "policy",
        "healthcheck",
        "completions",
    ] {
        let o = pail(&[sub, "--help"], repo(), &[]).await;
        assert!(o.status.success(), "{sub} --help");
        let help = String::from_utf8_lossy(&o.stdout).into_owned();
        // Every option has a description: after its name on the same line, or on the lines
        // below it, indented deeper (clap's layout when some help is long).
        let lines: Vec<&str> = help.lines().collect();
        let is_option = |text: &str| {
            text.starts_with("--")
                || (text.starts_with('-')
                    && text
                        .chars()
                        .nth(1)
                        .is_some_and(|c| c.is_ascii_alphanumeric()))
        };
        for (i, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            if !is_option(trimmed) {
                continue;
            }
            let indent = line.len() - trimmed.len();
            let same_line = trimmed
                .split_once("  ")
                .is_some_and(|(_, text)| !text.trim().is_empty());
            let below = lines.get(i + 1).is_some_and(|next| {
                let text = next.trim_start();
                !text.is_empty() && !is_option(text) && next.len() - text.len() > indent
            });
            let described = same_line || below;
            assert!(described, "{sub}: an option without help: {line:?}\n{help}");
        }
    }
}

#[tokio::test]
async fn completions_are_printed_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _pail"),
        ("zsh", "#compdef pail"),
        ("fish", "complete -c pail"),
    ] {
        let o = pail(&["completions", shell], repo(), &[]).await;
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let script = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("connection-test"), "{shell}");
    }
}

#[tokio::test]
async fn healthcheck_asks_the_endpoint_and_fails_when_nobody_answers() {
    use pail::telemetry::{DestinationHealth, Health};
    use std::sync::Arc;
    let health = Arc::new(Health::new(vec![Arc::new(DestinationHealth::new("d"))]));
    health.beat();
    let (addr, task) = pail::telemetry::serve("127.0.0.1:0".parse().unwrap(), health.clone())
        .await
        .unwrap();
    let url = |path: &str| format!("http://{addr}{path}");
    let live = pail(&["healthcheck", "--url", &url("/livez")], repo(), &[]).await;
    assert!(live.status.success(), "{}", stderr(&live));
    // Not ready until the run loop turns: exit 1, naming the answer.
    let ready = pail(&["healthcheck", "--url", &url("/readyz")], repo(), &[]).await;
    assert_eq!(ready.status.code(), Some(1));
    assert!(stderr(&ready).contains("503"), "{}", stderr(&ready));
    health.running();
    let ready = pail(&["healthcheck", "--url", &url("/readyz")], repo(), &[]).await;
    assert!(ready.status.success(), "{}", stderr(&ready));
    task.abort();
    // Nobody listens any more.
    let gone = pail(
        &["healthcheck", "--url", &url("/livez"), "--timeout", "2"],
        repo(),
        &[],
    )
    .await;
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        stderr(&gone).contains("cannot connect"),
        "{}",
        stderr(&gone)
    );
}
