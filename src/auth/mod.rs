//! Credentials for a destination: static keys, the SDK default chain, or temporary
//! credentials from STS (web identity federation, assume-role) cached and refreshed in the
//! background well before they expire, so uploads never wait on STS.

mod gcp;
mod refresh;
mod sts;
mod token;

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_s3::config::Region;

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
        AuthSettings::WebIdentity(settings) => {
            let fetch = sts::WebIdentity::new(settings, region);
            SharedCredentialsProvider::new(RefreshingCredentials::start(&dest.name, fetch))
        }
        AuthSettings::AssumeRole(settings) => {
            let source = match &settings.source {
                Some(keys) => SharedCredentialsProvider::new(static_credentials(keys)),
                None => default_chain(region.clone()).await,
            };
            let fetch = sts::AssumeRole::new(settings, region, source);
            SharedCredentialsProvider::new(RefreshingCredentials::start(&dest.name, fetch))
        }
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
