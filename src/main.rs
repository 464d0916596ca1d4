//! The `pail` binary: parse arguments, set up logging and signals, dispatch. Nothing else.

mod cli;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use tokio_util::sync::CancellationToken;

use cli::{Cli, Command, LogFormat, Progress};
use pail::run::{RunOptions, run};
use pail::telemetry::ProgressMode;
use pail::{check, config};

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    pail::telemetry::init_logging(matches!(cli.log_format, LogFormat::Json));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run {
            config,
            once,
            progress,
            progress_every,
        } => {
            let settings = match config::load(&config) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let shutdown = CancellationToken::new();
            tokio::spawn(watch_signals(shutdown.clone()));
            // Every error's Display already carries its causes; print it once, not as a chain.
            let progress = match progress {
                Progress::Auto => ProgressMode::Auto,
                Progress::Bar => ProgressMode::Bar,
                Progress::Log => ProgressMode::Log,
                Progress::Off => ProgressMode::Off,
            };
            let options = RunOptions {
                once,
                progress,
                progress_every: std::time::Duration::from_secs(progress_every),
            };
            let stats = run(settings, options, shutdown)
                .await
                .map_err(|e| anyhow::anyhow!("pail run failed: {e}"))?;
            eprintln!(
                "delivered {} rows ({} dead-lettered, {} skipped) from {} records in {} segments; {} objects written, {} already present",
                stats.rows_written,
                stats.dead_lettered,
                stats.skipped,
                stats.records,
                stats.segments_delivered,
                stats.objects_created,
                stats.objects_existing
            );
            if stats.sealed_for_memory > 0 {
                eprintln!(
                    "{} segments were sealed before their rotation limits to stay within worker.memory_limit",
                    stats.sealed_for_memory
                );
            }
            if stats.packed_bytes > 0 {
                eprintln!(
                    "{:.1} MB of JSON were packed in memory while their files stayed open, to stay within worker.memory_limit",
                    stats.packed_bytes as f64 / 1e6
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => match config::load(&config) {
            Ok(settings) => {
                let text = toml::to_string_pretty(&settings).context("printing the config")?;
                println!("{text}");
                eprintln!("{}: configuration is valid", config.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(2))
            }
        },
        Command::ConnectionTest {
            config,
            destination,
            json,
            multipart,
        } => {
            let Some(dests) = destinations(&config, destination.as_deref()) else {
                return Ok(ExitCode::from(2));
            };
            let report = check::check_all(&dests, check::CheckOptions { multipart }).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", check::render_human(&report));
            }
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Healthcheck { url, timeout } => {
            match pail::telemetry::probe(&url, std::time::Duration::from_secs(timeout)).await {
                Ok(status) if (200..300).contains(&status) => Ok(ExitCode::SUCCESS),
                Ok(status) => {
                    eprintln!("{url} answered {status}");
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "pail", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy {
            config,
            destination,
            json,
        } => {
            let Some(dests) = destinations(&config, destination.as_deref()) else {
                return Ok(ExitCode::from(2));
            };
            let mut reports = Vec::new();
            for d in &dests {
                reports.push(check::policy_report(d).await);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                let texts: Vec<String> = reports.iter().map(check::render_policy).collect();
                print!("{}", texts.join("\n"));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The configured destinations, or only the one named; `None` after reporting why not.
fn destinations(config: &Path, only: Option<&str>) -> Option<Vec<config::DestinationSettings>> {
    let settings = match config::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    match only {
        None => Some(settings.destinations),
        Some(name) => {
            let found: Vec<_> = settings
                .destinations
                .iter()
                .filter(|d| d.name == name)
                .cloned()
                .collect();
            if found.is_empty() {
                let names: Vec<&str> = settings
                    .destinations
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect();
                eprintln!(
                    "error: {}: no destination named {name:?} (configured: {})",
                    config.display(),
                    names.join(", ")
                );
                return None;
            }
            Some(found)
        }
    }
}

/// First SIGTERM/SIGINT: graceful shutdown. Second: exit at once (nothing uncommitted is lost;
/// it is consumed again by the next owner).
async fn watch_signals(shutdown: CancellationToken) {
    #[cfg(unix)]
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    for round in 0..2 {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        if round == 0 {
            tracing::info!(
                "signal received; shutting down gracefully (send again to exit at once)"
            );
            shutdown.cancel();
        } else {
            tracing::warn!("second signal; exiting now without delivering open segments");
            std::process::exit(130);
        }
    }
}

/// glibc's malloc gives each thread that allocates its own arena and keeps what is freed
/// there: records are allocated on reader threads and freed on others, and with one arena a
/// thread the resident set stayed ~100 MiB above what pail holds (BENCHMARKS.md). Two arenas
/// keep it near the memory limit at no measured cost in speed. Called before any thread
/// starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets an allocator parameter; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
