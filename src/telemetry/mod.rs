//! Telemetry: logs (human-readable or JSON lines on stderr, filtered by `PAIL_LOG` /
//! `RUST_LOG`), metrics (`prometheus-client`), and the health and metrics endpoint (hyper).

mod health;
mod metrics;
mod probe;
mod process;
mod progress;
mod server;

pub use health::{
    DestinationHealth, DestinationReport, Failure, Health, HealthCollector, HealthReport, Totals,
};
pub use metrics::{DestinationLabel, METRICS, Metrics};
pub use probe::{ProbeError, probe};
pub use process::{COMMIT, VERSION};
pub use progress::{ProgressMode, spawn_progress};
pub use server::{ServeError, serve};

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `json` selects one JSON object per line.
pub fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_env("PAIL_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::LogWriter)
        // Colour codes only for a terminal: logs redirected to a file or collector stay plain.
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
