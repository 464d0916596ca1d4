//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

/// `pail --version`: the version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PAIL_COMMIT"),
    ")"
);

/// pail: Kafka (or NDJSON) → partitioned Parquet in S3 or a local directory, append-only.
#[derive(Debug, Parser)]
#[command(name = "pail", version = VERSION, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PAIL_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Progress {
    /// A bar on a terminal, log lines otherwise.
    Auto,
    /// A bar even where `auto` would log (it is drawn only on a terminal).
    Bar,
    /// Always log lines.
    Log,
    /// Nothing.
    Off,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume, buffer, write Parquet and commit, until stopped (or drained, with --once).
    Run {
        /// The TOML configuration file.
        #[arg(long, short, env = "PAIL_CONFIG")]
        config: PathBuf,
        /// Drain every assigned partition up to its high watermark at start, deliver, commit
        /// and exit 0 (backfills, benchmarks, tests).
        #[arg(long)]
        once: bool,
        /// How a bounded run (--once, a file source) shows its progress: `auto` is a bar when
        /// stderr is a terminal and a log line at info every --progress-every seconds otherwise.
        #[arg(long, value_enum, default_value_t = Progress::Auto)]
        progress: Progress,
        /// Seconds between progress log lines.
        #[arg(long, default_value_t = 5)]
        progress_every: u64,
    },
    /// Validate a configuration and print it resolved, with secrets redacted.
    CheckConfig {
        /// The TOML configuration file.
        #[arg(long, short, env = "PAIL_CONFIG")]
        config: PathBuf,
    },
    /// Prove write access to each destination with a PUT and a DELETE of a test object, with
    /// the clients `run` builds; say what to fix when it fails. Exit 0 when every destination
    /// passes, 1 when one fails.
    ConnectionTest {
        /// The TOML configuration file.
        #[arg(long, short, env = "PAIL_CONFIG")]
        config: PathBuf,
        /// Only this destination.
        #[arg(long)]
        destination: Option<String>,
        /// One JSON document on standard output instead of text.
        #[arg(long)]
        json: bool,
        /// Also run a two-part multipart upload (5 MiB), and delete it.
        #[arg(long)]
        multipart: bool,
    },
    /// Print the least-privilege permissions policy each destination needs, and its role's
    /// trust policy (filled in with the token's real claims), ready to paste.
    Policy {
        /// The TOML configuration file.
        #[arg(long, short, env = "PAIL_CONFIG")]
        config: PathBuf,
        /// Only this destination.
        #[arg(long)]
        destination: Option<String>,
        /// One JSON document on standard output instead of commented documents.
        #[arg(long)]
        json: bool,
    },
    /// Ask a running worker's endpoint whether it is live (or ready): exit 0 when it answers
    /// 2xx, 1 otherwise. For container health checks: the image needs no curl.
    Healthcheck {
        /// The endpoint to ask: `/livez` (the run loop turns) or `/readyz` (it can work).
        #[arg(long, default_value = "http://127.0.0.1:9464/livez")]
        url: String,
        /// How long to wait for the answer, in seconds.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
    /// Print a shell completion script: `pail completions bash > /etc/bash_completion.d/pail`.
    Completions {
        /// The shell to complete for.
        shell: Shell,
    },
}
