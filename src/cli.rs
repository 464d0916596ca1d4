//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// pail: Kafka (or NDJSON) → partitioned Parquet in S3 or a local directory, append-only.
#[derive(Debug, Parser)]
#[command(name = "pail", version, about)]
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
    Text,
    Json,
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
    },
    /// Validate a configuration and print it resolved, with secrets redacted.
    CheckConfig {
        #[arg(long, short, env = "PAIL_CONFIG")]
        config: PathBuf,
    },
    /// Prove write access to each destination with a PUT and a DELETE of a test object, with
    /// the clients `run` builds; say what to fix when it fails. Exit 0 when every destination
    /// passes, 1 when one fails.
    ConnectionTest {
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
        #[arg(long, short, env = "PAIL_CONFIG")]
        config: PathBuf,
        /// Only this destination.
        #[arg(long)]
        destination: Option<String>,
        /// One JSON document on standard output instead of commented documents.
        #[arg(long)]
        json: bool,
    },
}
