//! Validation of `[destinations.auth]`: static keys, the SDK default chain, web identity
//! federation (a token from a file, the GCP metadata server or a command) and assume-role.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::raw::RawAuth;
use super::secret::Secret;
use super::settings::{EnvLookup, Problems};
use super::units::parse_duration;

/// The GCP metadata server's host name on Google Cloud.
pub const GCP_METADATA_HOST: &str = "metadata.google.internal";

/// How pail authenticates to the store.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum AuthSettings {
    /// Access key id and secret (plus an optional session token).
    Static(StaticKeys),
    /// The AWS SDK default chain.
    Default,
    /// STS AssumeRoleWithWebIdentity with an OIDC token.
    WebIdentity(WebIdentitySettings),
    /// STS AssumeRole with an external id, from static keys or the default chain.
    AssumeRole(AssumeRoleSettings),
}

/// Static HMAC keys.
#[derive(Debug, Clone, Serialize)]
pub struct StaticKeys {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// The role to assume and how long its credentials last.
#[derive(Debug, Clone, Serialize)]
pub struct RoleSettings {
    pub role_arn: String,
    pub session_name: String,
    #[serde(serialize_with = "super::settings::as_duration")]
    pub duration: Duration,
    /// Regional STS endpoint; the SDK's default for the region when unset.
    pub sts_endpoint: Option<String>,
    /// Region to sign STS calls for; the destination's region when unset.
    pub sts_region: Option<String>,
}

/// `method = "web_identity"`.
#[derive(Debug, Clone, Serialize)]
pub struct WebIdentitySettings {
    #[serde(flatten)]
    pub role: RoleSettings,
    pub token: TokenSource,
}

/// Where the OIDC token comes from; read again at every refresh.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// A file (Kubernetes projected service account tokens rotate it).
    File(PathBuf),
    /// An ID token for `audience` from the GCP metadata server at `host`.
    Gcp { audience: String, host: String },
    /// A command's standard output.
    Command(Vec<String>),
}

/// `method = "assume_role"`.
#[derive(Debug, Clone, Serialize)]
pub struct AssumeRoleSettings {
    #[serde(flatten)]
    pub role: RoleSettings,
    pub external_id: Option<String>,
    /// The identity that assumes the role: static keys, or the default chain when `None`.
    pub source: Option<StaticKeys>,
}

/// STS accepts 15 minutes to 12 hours; shorter is allowed for test servers that take it.
const MIN_DURATION: Duration = Duration::from_secs(10);
const MAX_DURATION: Duration = Duration::from_secs(12 * 3600);

pub(super) fn auth(
    raw: &RawAuth,
    at: &str,
    dest_name: &str,
    aws_store: bool,
    env: EnvLookup<'_>,
    p: &mut Problems,
) -> Option<AuthSettings> {
    let has_any_key = raw.access_key_id.is_some()
        || raw.secret_access_key.is_some()
        || raw.access_key_id_file.is_some()
        || raw.secret_access_key_file.is_some()
        || raw.session_token.is_some()
        || raw.session_token_file.is_some()
        || env("S3_ACCESS_KEY_ID").is_some()
        || env("S3_SECRET_ACCESS_KEY").is_some();
    let role_or_token = raw.role_arn.is_some()
        || raw.token_file.is_some()
        || raw.token_gcp_audience.is_some()
        || raw.token_command.is_some()
        || raw.external_id.is_some();
    // No method and no keys anywhere: the AWS SDK default chain, as every AWS tool does (IRSA,
    // EKS Pod Identity, instance profiles, SSO profiles, AWS_* variables). Not for another
    // store (`aws_store` false): forgotten keys there must be an error, not an AWS identity
    // sent to a third party.
    let method = match raw.method.as_deref() {
        Some(method) => method,
        None if role_or_token => {
            p.push(
                format!("{at}.method"),
                "required with role_arn or a token source: \"web_identity\" or \"assume_role\"",
            );
            return None;
        }
        None if has_any_key || !aws_store => "static",
        None => "default",
    };
    let misplaced = |p: &mut Problems, keys: &[(&str, bool)]| {
        for (key, set) in keys {
            if *set {
                p.push(
                    format!("{at}.{key}"),
                    format!("not used by method = {method:?}"),
                );
            }
        }
    };
    let role_keys = [
        ("role_arn", raw.role_arn.is_some()),
        ("session_name", raw.session_name.is_some()),
        ("duration", raw.duration.is_some()),
        ("sts_endpoint", raw.sts_endpoint.is_some()),
        ("sts_region", raw.sts_region.is_some()),
    ];
    let token_keys = [
        ("token_file", raw.token_file.is_some()),
        ("token_gcp_audience", raw.token_gcp_audience.is_some()),
        ("token_command", raw.token_command.is_some()),
        ("gcp_metadata_host", raw.gcp_metadata_host.is_some()),
    ];
    let has_keys = raw.access_key_id.is_some()
        || raw.secret_access_key.is_some()
        || raw.access_key_id_file.is_some()
        || raw.secret_access_key_file.is_some();
    match method {
        "static" => {
            misplaced(p, &role_keys);
            misplaced(p, &token_keys);
            misplaced(p, &[("external_id", raw.external_id.is_some())]);
            static_keys(raw, at, env, p, true)
                .flatten()
                .map(AuthSettings::Static)
        }
        "default" => {
            misplaced(p, &role_keys);
            misplaced(p, &token_keys);
            Some(AuthSettings::Default)
        }
        "web_identity" => {
            misplaced(p, &[("external_id", raw.external_id.is_some())]);
            if has_keys {
                p.push(
                    at.to_string(),
                    "web_identity takes no access keys: the token is the identity",
                );
            }
            let role = role(raw, at, dest_name, p);
            let token = token_source(raw, at, p);
            Some(AuthSettings::WebIdentity(WebIdentitySettings {
                role: role?,
                token: token?,
            }))
        }
        "assume_role" => {
            misplaced(p, &token_keys);
            let role = role(raw, at, dest_name, p);
            let source = if has_keys {
                Some(static_keys(raw, at, env, p, false)?)
            } else {
                None
            };
            Some(AuthSettings::AssumeRole(AssumeRoleSettings {
                role: role?,
                external_id: raw.external_id.clone().filter(|e| !e.is_empty()),
                source: source.flatten(),
            }))
        }
        other => {
            p.push(
                format!("{at}.method"),
                format!(
                    "{other:?} is not an auth method (use \"static\", \"default\", \"web_identity\" or \"assume_role\")"
                ),
            );
            None
        }
    }
}

fn role(raw: &RawAuth, at: &str, dest_name: &str, p: &mut Problems) -> Option<RoleSettings> {
    let role_arn = match raw.role_arn.as_deref() {
        Some(arn) if arn.starts_with("arn:") => Some(arn.to_string()),
        Some(arn) => {
            p.push(
                format!("{at}.role_arn"),
                format!("{arn:?} is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
            );
            None
        }
        None => {
            p.push(
                format!("{at}.role_arn"),
                "required: the ARN of the role to assume",
            );
            None
        }
    };
    let session_name = raw
        .session_name
        .clone()
        .unwrap_or_else(|| format!("pail-{dest_name}"));
    let valid_session = (2..=64).contains(&session_name.len())
        && session_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "=,.@-_".contains(c));
    if !valid_session {
        p.push(
            format!("{at}.session_name"),
            "2-64 characters of letters, digits and =,.@-_",
        );
    }
    let duration = parse_duration(raw.duration.as_deref().unwrap_or("1h"))
        .map_err(|m| p.push(format!("{at}.duration"), m))
        .ok()?;
    if !(MIN_DURATION..=MAX_DURATION).contains(&duration) {
        p.push(
            format!("{at}.duration"),
            "must be between 10s and 12h (AWS STS itself takes 15m to 12h)",
        );
        return None;
    }
    if let Some(e) = &raw.sts_endpoint
        && !(e.starts_with("https://") || e.starts_with("http://"))
    {
        p.push(
            format!("{at}.sts_endpoint"),
            format!("{e:?} must start with https:// or http://"),
        );
        return None;
    }
    Some(RoleSettings {
        role_arn: role_arn?,
        session_name,
        duration,
        sts_endpoint: raw.sts_endpoint.clone(),
        sts_region: raw.sts_region.clone(),
    })
}

fn token_source(raw: &RawAuth, at: &str, p: &mut Problems) -> Option<TokenSource> {
    let set = [
        raw.token_file.is_some(),
        raw.token_gcp_audience.is_some(),
        raw.token_command.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        p.push(
            at.to_string(),
            "web_identity needs exactly one of token_file, token_gcp_audience or token_command",
        );
        return None;
    }
    if raw.gcp_metadata_host.is_some() && raw.token_gcp_audience.is_none() {
        p.push(
            format!("{at}.gcp_metadata_host"),
            "only used with token_gcp_audience",
        );
    }
    if let Some(path) = &raw.token_file {
        return Some(TokenSource::File(PathBuf::from(path)));
    }
    if let Some(audience) = &raw.token_gcp_audience {
        if audience.is_empty() {
            p.push(format!("{at}.token_gcp_audience"), "must not be empty");
            return None;
        }
        return Some(TokenSource::Gcp {
            audience: audience.clone(),
            host: raw
                .gcp_metadata_host
                .clone()
                .unwrap_or_else(|| GCP_METADATA_HOST.to_string()),
        });
    }
    match raw.token_command.as_deref() {
        Some([program, ..]) if !program.is_empty() => {
            raw.token_command.clone().map(TokenSource::Command)
        }
        _ => {
            p.push(
                format!("{at}.token_command"),
                "a program and its arguments, e.g. [\"gcloud\", \"auth\", \"print-identity-token\"]",
            );
            None
        }
    }
}

/// Static keys from inline values, `*_file` keys or (when `env_fallback`) the conventional
/// environment variables. `Some(None)` after a problem was recorded.
fn static_keys(
    raw: &RawAuth,
    at: &str,
    env: EnvLookup<'_>,
    p: &mut Problems,
    env_fallback: bool,
) -> Option<Option<StaticKeys>> {
    let mut read = |key: &str,
                    inline: &Option<String>,
                    file: &Option<String>,
                    var: Option<&str>| match (inline, file) {
        (Some(_), Some(_)) => {
            p.push(
                format!("{at}.{key}"),
                format!("set {key} or {key}_file, not both"),
            );
            None
        }
        (Some(v), None) => Some(v.clone()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text.trim().to_string()),
            Err(e) => {
                p.push(
                    format!("{at}.{key}_file"),
                    format!("cannot read {path}: {e}"),
                );
                None
            }
        },
        (None, None) => var.filter(|_| env_fallback).and_then(env),
    };
    let id = read(
        "access_key_id",
        &raw.access_key_id,
        &raw.access_key_id_file,
        Some("S3_ACCESS_KEY_ID"),
    );
    let secret = read(
        "secret_access_key",
        &raw.secret_access_key,
        &raw.secret_access_key_file,
        Some("S3_SECRET_ACCESS_KEY"),
    );
    let token = read(
        "session_token",
        &raw.session_token,
        &raw.session_token_file,
        None,
    );
    match (id, secret) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
            Some(Some(StaticKeys {
                access_key_id: id,
                secret_access_key: Secret::new(secret),
                session_token: token.filter(|t| !t.is_empty()).map(Secret::new),
            }))
        }
        _ => {
            p.push(
                at.to_string(),
                "static keys need access_key_id and secret_access_key \
                 (inline, as *_file, or from S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY)",
            );
            Some(None)
        }
    }
}
