//! The progress of `run --once`: a bar on a terminal (a pseudo-terminal here), a log line at
//! info every `--progress-every` seconds and at the end otherwise; both end at the log end.

use crate::support;

use std::path::Path;
use std::time::Duration;

use support::kafka::MockKafka;

const N: usize = 600;

/// A Kafka topic with `N` events in 3 partitions, and a config delivering it to `./out`.
fn setup(dir: &Path) -> MockKafka {
    let kafka = MockKafka::start(&[("clicks", 3)]);
    let payloads: Vec<String> = (0..N).map(|i| format!(r#"{{"id":{i}}}"#)).collect();
    kafka.produce_round_robin("clicks", 3, &payloads);
    let config = format!(
        "[source]\nkind = \"kafka\"\nbrokers = \"{}\"\ngroup_id = \"progress\"\n\
         [source.properties]\n\"session.timeout.ms\" = 6000\n\
         [[destinations]]\nname = \"local\"\ntopics = [\"clicks\"]\nurl = \"file://./out\"\nkey_template = \"{{topic}}\"\n",
        kafka.brokers()
    );
    std::fs::write(dir.join("pail.toml"), config).unwrap();
    kafka
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_a_terminal_progress_is_logged_and_ends_at_the_log_end() {
    let dir = tempfile::tempdir().unwrap();
    let _kafka = setup(dir.path());
    let o = support::run_pail(
        &[
            "--log-format",
            "json",
            "run",
            "--once",
            "--config",
            "pail.toml",
            "--progress-every",
            "1",
        ],
        dir.path(),
        &[],
        Duration::from_secs(120),
    )
    .await;
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "progress")
        .collect();
    let last = lines
        .last()
        .unwrap_or_else(|| panic!("no progress line: {stderr}"));
    assert_eq!(last["level"], "INFO");
    let fields = &last["fields"];
    assert_eq!(fields["committed"], N as u64, "{last}");
    assert_eq!(fields["to_end"], N as u64, "{last}");
    assert_eq!(fields["lag"], 0, "{last}");
    assert_eq!(fields["delivered_rows"], N as u64, "{last}");
    // No bar drawn off a terminal: no carriage returns or cursor movement.
    assert!(
        !stderr.contains('\r') && !stderr.contains("\x1b["),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_a_progress_bar_is_drawn_and_ends_at_the_log_end() {
    let dir = tempfile::tempdir().unwrap();
    let _kafka = setup(dir.path());
    // A pseudo-terminal, as a user's shell gives pail: Python's `pty` runs the binary on one
    // and prints what it wrote there.
    let script = "import os, pty, sys\n\
        pid, fd = pty.fork()\n\
        if pid == 0:\n    os.execv(sys.argv[1], sys.argv[1:])\n\
        out = b''\n\
        while True:\n    try:\n        data = os.read(fd, 65536)\n    except OSError:\n        break\n    if not data:\n        break\n    out += data\n\
        _, status = os.waitpid(pid, 0)\n\
        sys.stdout.buffer.write(out)\n\
        sys.exit(os.waitstatus_to_exitcode(status))\n";
    let pail = support::pail_bin();
    let mut cmd = tokio::process::Command::new(support::test_tool("python3"));
    cmd.args(["-c", script])
        .arg(&pail)
        .args(["run", "--once", "--config", "pail.toml"])
        .current_dir(dir.path())
        .env("TERM", "xterm")
        .kill_on_drop(true);
    let o = support::bounded(Duration::from_secs(120), cmd.output())
        .await
        .unwrap();
    let screen = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{screen}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The bar's last state: every record to the log end, none left.
    assert!(
        screen.contains(&format!("{N}/{N} records")) && screen.contains("lag 0"),
        "{screen}"
    );
    assert!(screen.contains("ETA"), "{screen}");
    assert!(screen.contains(&format!("{N} rows delivered")), "{screen}");
    // The bar replaces the progress log lines, and the summary follows it.
    assert!(!screen.contains(" progress "), "{screen}");
    assert!(screen.contains(&format!("delivered {N} rows")), "{screen}");
}
