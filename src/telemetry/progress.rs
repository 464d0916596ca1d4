//! Progress of a bounded run (`run --once`, a file): a bar on a terminal (records committed of
//! those to the log end, records/s, lag remaining, ETA), a log line at info every few seconds
//! otherwise. Log lines never tear the bar: they are written while it is hidden.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::health::{Health, Totals};

/// How a bounded run reports its progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, log lines otherwise (the CLI's default).
    Auto,
    /// Always a bar (on stderr).
    Bar,
    /// Always log lines.
    Log,
    /// Nothing (a library caller's default).
    #[default]
    Off,
}

/// The bar being drawn, if any: the log writer hides it while it writes.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// How often the bar is redrawn.
const DRAW_EVERY: Duration = Duration::from_millis(200);

/// Reports `health`'s progress until `stop` fires; a log line every `log_every`.
pub fn spawn_progress(
    health: Arc<Health>,
    mode: ProgressMode,
    log_every: Duration,
    stop: CancellationToken,
) -> Option<JoinHandle<()>> {
    let bar = match mode {
        ProgressMode::Off => return None,
        ProgressMode::Auto => std::io::stderr().is_terminal(),
        ProgressMode::Bar => true,
        ProgressMode::Log => false,
    };
    let log_every = log_every.max(Duration::from_millis(100));
    Some(tokio::spawn(async move {
        match bar {
            true => draw_bar(&health, &stop).await,
            false => log_lines(&health, log_every, &stop).await,
        }
    }))
}

async fn draw_bar(health: &Health, stop: &CancellationToken) {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} records ({per_sec}, ETA {eta}) {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    *ACTIVE.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar.clone());
    let mut counting = false;
    let mut update = |t: Totals| {
        // Without partitions (a file) there is no end to count to: a spinner and the rows.
        if t.partitions > 0 && !counting {
            counting = true;
            bar.set_style(style.clone());
        }
        bar.set_length(t.to_end);
        bar.set_position(t.committed);
        bar.set_message(match counting {
            true => format!(
                "| {} rows delivered, lag {}",
                t.delivered_rows,
                t.to_end - t.committed
            ),
            false => format!("{} rows delivered", t.delivered_rows),
        });
    };
    loop {
        update(health.totals());
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(DRAW_EVERY) => {}
        }
    }
    update(health.totals());
    ACTIVE.lock().unwrap_or_else(|p| p.into_inner()).take();
    bar.finish();
    // The finished bar stays on screen; what is written next starts on a line of its own.
    if bar.is_hidden() {
        return;
    }
    let _ = std::io::stderr().write_all(b"\n");
}

async fn log_lines(health: &Health, every: Duration, stop: &CancellationToken) {
    let started = Instant::now();
    let mut last = false;
    while !last {
        tokio::select! {
            // One line more at the end: where the run got to.
            () = stop.cancelled() => last = true,
            () = tokio::time::sleep(every) => {}
        }
        let t = health.totals();
        let secs = started.elapsed().as_secs_f64().max(0.001);
        if t.partitions == 0 {
            // A file: no log end to count to.
            let rows_per_s = (t.delivered_rows as f64 / secs).round() as u64;
            tracing::info!(delivered_rows = t.delivered_rows, rows_per_s, "progress");
            continue;
        }
        let rate = t.committed as f64 / secs;
        let lag = t.to_end - t.committed;
        let eta_s = (rate > 0.0).then(|| (lag as f64 / rate).round() as u64);
        tracing::info!(
            committed = t.committed,
            to_end = t.to_end,
            lag,
            delivered_rows = t.delivered_rows,
            records_per_s = rate.round() as u64,
            eta_s,
            "progress"
        );
    }
}

/// Stderr for the log subscriber: a line written while the bar is drawn hides the bar first.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = ACTIVE.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}
