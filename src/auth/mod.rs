//! Credentials for a destination: static keys, the SDK default chain, or temporary
//! credentials from STS (web identity federation, assume-role) cached and refreshed in the
//! background well before they expire, so uploads never wait on STS.

mod clock;
mod gcp;
mod refresh;
mod sts;
mod token;

use std::sync::Arc;

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_s3::config::Region;

pub use clock::{Clock, ShiftedClock, SystemClock};
pub use refresh::RefreshingCredentials;
pub use token::{Claims, read_token};

use crate::config::{AuthSettings, DestinationSettings, StaticKeys};

/// Why credentials could not be obtained. Never contains a secret or a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading the web identity token from {path}: {message}")]
    TokenFile { path: String, message: String },
    #[error("fetching an ID token from the GCP metadata server {host}: {message}")]
    Gcp { host: String, message: String },
    #[error("running token_command {program:?}: {message}")]
    TokenCommand { program: String, message: String },
    #[error("STS {op} for role {role_arn}: {}{message}{}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default(), token_hint(claims.as_deref()))]
    Sts {
        op: &'static str,
        role_arn: String,
        code: Option<String>,
        /// The HTTP status, when STS answered.
        status: Option<u16>,
        message: String,
        /// The token's claims (never the token), to say which identity was refused.
        claims: Option<Box<Claims>>,
    },
}

fn token_hint(claims: Option<&Claims>) -> String {
    claims.map_or(String::new(), |c| format!(" (token {c})"))
}

impl AuthError {
    /// The STS error code, when STS answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Sts { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Whether retrying soon cannot help: STS refused the token or the role, or the token
    /// source is broken. STS throttling, STS outages and unreachable endpoints are transient.
    pub fn needs_a_human(&self) -> bool {
        match self {
            // An answer without a readable code: a client error still needs a human.
            Self::Sts {
                code: None, status, ..
            } => status.is_some_and(|s| (400..500).contains(&s) && s != 429),
            Self::Sts {
                code: Some(code), ..
            } => !matches!(
                code.as_str(),
                "Throttling"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "ServiceUnavailable"
                    | "InternalFailure"
                    | "InternalError"
                    | "IDPCommunicationError"
            ),
            // The metadata server answers 4xx for a bad request; anything else may pass.
            Self::Gcp { message, .. } => message.starts_with("HTTP 4"),
            Self::TokenFile { .. } | Self::TokenCommand { .. } => true,
        }
    }

    /// The [`AuthError`] behind an SDK error, if credentials are what failed.
    pub fn find_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a AuthError> {
        let mut next = Some(err);
        while let Some(e) = next {
            if let Some(auth) = e.downcast_ref::<AuthError>() {
                return Some(auth);
            }
            next = e.source();
        }
        None
    }
}

/// Static keys as SDK credentials.
pub fn static_credentials(keys: &StaticKeys) -> Credentials {
    Credentials::new(
        &keys.access_key_id,
        keys.secret_access_key.expose(),
        keys.session_token.as_ref().map(|t| t.expose().to_string()),
        None,
        "pail-static",
    )
}

/// The credentials provider a destination's S3 client signs with. STS-based methods start a
/// background refresh that lives as long as the provider.
pub async fn credentials_provider(dest: &DestinationSettings) -> SharedCredentialsProvider {
    let region = Region::new(dest.region.clone());
    match &dest.auth {
        AuthSettings::Static(keys) => SharedCredentialsProvider::new(static_credentials(keys)),
        AuthSettings::Default => default_chain(region).await,
        AuthSettings::WebIdentity(_) | AuthSettings::AssumeRole(_) => {
            match refreshing_credentials(dest, Arc::new(SystemClock)).await {
                Some(refreshing) => SharedCredentialsProvider::new(refreshing),
                None => default_chain(region).await,
            }
        }
    }
}

/// The refreshing STS credentials of a `web_identity` or `assume_role` destination, scheduled
/// by `clock`; `None` for the other methods.
pub async fn refreshing_credentials(
    dest: &DestinationSettings,
    clock: Arc<dyn Clock>,
) -> Option<RefreshingCredentials> {
    let region = Region::new(dest.region.clone());
    match &dest.auth {
        AuthSettings::WebIdentity(settings) => {
            let fetch = sts::WebIdentity::new(settings, region);
            Some(RefreshingCredentials::start(&dest.name, fetch, clock))
        }
        AuthSettings::AssumeRole(settings) => {
            let source = match &settings.source {
                Some(keys) => SharedCredentialsProvider::new(static_credentials(keys)),
                None => default_chain(region.clone()).await,
            };
            let fetch = sts::AssumeRole::new(settings, region, source);
            Some(RefreshingCredentials::start(&dest.name, fetch, clock))
        }
        AuthSettings::Static(_) | AuthSettings::Default => None,
    }
}

async fn default_chain(region: Region) -> SharedCredentialsProvider {
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .load()
        .await;
    match shared.credentials_provider() {
        Some(p) => p,
        // No provider at all: requests fail with a clear "no credentials" error.
        None => SharedCredentialsProvider::new(
            aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                .build()
                .await,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts(code: Option<&str>, status: Option<u16>) -> AuthError {
        AuthError::Sts {
            op: "AssumeRole",
            role_arn: "arn:aws:iam::1:role/r".into(),
            code: code.map(str::to_string),
            status,
            message: "m".into(),
            claims: None,
        }
    }

    #[test]
    fn refusals_need_a_human_and_outages_are_retried() {
        for code in [
            "AccessDenied",
            "InvalidIdentityToken",
            "ExpiredTokenException",
            "InvalidParameterValue",
        ] {
            assert!(sts(Some(code), Some(403)).needs_a_human(), "{code}");
        }
        for code in ["Throttling", "IDPCommunicationError", "InternalFailure"] {
            assert!(!sts(Some(code), Some(400)).needs_a_human(), "{code}");
        }
        // No readable code: the status decides; no answer at all is a network problem.
        assert!(sts(None, Some(403)).needs_a_human());
        assert!(!sts(None, Some(503)).needs_a_human());
        assert!(!sts(None, Some(429)).needs_a_human());
        assert!(!sts(None, None).needs_a_human());
        let gcp = |message: &str| AuthError::Gcp {
            host: "metadata.google.internal".into(),
            message: message.into(),
        };
        assert!(gcp("HTTP 404: not found").needs_a_human());
        assert!(!gcp("no answer within 10s (is this running on GCP?)").needs_a_human());
    }
}
