//! Configuration: TOML file → `${VAR}` interpolation → raw serde structs → validated settings.

mod auth;
mod connection;
mod destination;
mod interpolate;
mod lenient;
mod raw;
mod schema;
mod secret;
mod settings;
mod units;

use std::path::{Path, PathBuf};

use thiserror::Error;

pub use auth::{
    AssumeRoleSettings, AuthSettings, GCP_METADATA_HOST, RoleSettings, StaticKeys, TokenSource,
    WebIdentitySettings,
};
pub use connection::{Provider, Sse, WriteOptions};
pub use destination::parse_url;
pub use secret::Secret;
pub use settings::{
    BadRecordPolicy, Compression, DestinationSettings, FILE_TOPIC, FileSettings, KafkaProperties,
    KafkaSettings, Location, MIN_MEMORY_LIMIT, MemoryShares, MetadataColumns, ParquetSettings,
    RotationSettings, Settings, SourceSettings, TelemetrySettings, UploadSettings, WorkerSettings,
};
pub use units::{format_duration, parse_duration, parse_size};

/// Why a configuration could not be loaded. Every variant names the file.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the config file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: key `{key}`: {source}")]
    Interpolate {
        path: PathBuf,
        key: String,
        source: interpolate::InterpolateError,
    },
    #[error("{path}: key `{key}`: {message}")]
    Shape {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{path}: invalid configuration:{}", list(.problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<(String, String)>,
    },
}

fn list(problems: &[(String, String)]) -> String {
    problems
        .iter()
        .map(|(key, message)| format!("\n  - `{key}`: {message}"))
        .collect()
}

/// Loads and validates a config file, resolving `${VAR}` from the process environment.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text, &|name| std::env::var(name).ok())
}

/// Parses config text; `env` resolves `${VAR}` and the conventional `S3_*` fallbacks.
pub fn parse(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    // The parser's own message quotes the offending line, which may hold a secret: say where
    // the error is and what, not what the line says.
    let mut value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: match e.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}: {}", e.message())
            }
            None => e.message().to_string(),
        },
    })?;
    interpolate::interpolate_tree(&mut value, &mut Vec::new(), env).map_err(|(key, source)| {
        ConfigError::Interpolate {
            path: path.to_path_buf(),
            key,
            source,
        }
    })?;
    let raw: raw::RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::Shape {
            path: path.to_path_buf(),
            key: if key == "." {
                "(top level)".into()
            } else {
                key
            },
            message: e.into_inner().to_string(),
        }
    })?;
    Settings::from_raw(raw, env).map_err(|problems| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems: problems.0,
    })
}

#[cfg(test)]
mod tests;
