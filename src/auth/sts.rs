//! The STS calls behind temporary credentials: AssumeRoleWithWebIdentity (unsigned; the OIDC
//! token is the proof) and AssumeRole with an external id (signed by the source identity).

use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_s3::config::Region;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::timeout::TimeoutConfig;

use super::AuthError;
use super::refresh::{Fetch, Fetched};
use super::token::{Claims, read_token};
use crate::config::{AssumeRoleSettings, RoleSettings, TokenSource, WebIdentitySettings};
use crate::store::BoxFuture;

fn sts_client(
    role: &RoleSettings,
    region: Region,
    creds: Option<SharedCredentialsProvider>,
) -> aws_sdk_sts::Client {
    let region = role.sts_region.clone().map_or(region, Region::new);
    // Bounded, so an STS that accepts connections and never answers cannot hold the refresh
    // (and every caller waiting on it) for ever.
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .operation_attempt_timeout(Duration::from_secs(30))
        .operation_timeout(Duration::from_secs(90))
        .build();
    let mut conf = aws_sdk_sts::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(region)
        .timeout_config(timeouts);
    if let Some(endpoint) = &role.sts_endpoint {
        conf = conf.endpoint_url(endpoint);
    }
    if let Some(creds) = creds {
        conf = conf.credentials_provider(creds);
    }
    aws_sdk_sts::Client::from_conf(conf.build())
}

fn sts_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &'static str,
    role_arn: &str,
    claims: Option<Claims>,
    err: &SdkError<E, HttpResponse>,
) -> AuthError {
    let status = match err {
        SdkError::ServiceError(ctx) => Some(ctx.raw().status().as_u16()),
        _ => None,
    };
    let (code, message) = match err {
        SdkError::ServiceError(ctx) => {
            let message = match (ctx.err().code(), ctx.err().message()) {
                (_, Some(m)) => m.to_string(),
                // An answer the SDK could not read (a non-AWS STS, a proxy): show what it was.
                (code, None) => {
                    let status = ctx.raw().status().as_u16();
                    let body = ctx.raw().body().bytes().unwrap_or_default();
                    let body: String = String::from_utf8_lossy(body)
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(300)
                        .collect();
                    match code {
                        Some(_) => format!("HTTP {status}"),
                        None => format!("HTTP {status}: {}", body.trim()),
                    }
                }
            };
            (ctx.err().code().map(str::to_string), message)
        }
        other => (None, DisplayErrorContext(other).to_string()),
    };
    AuthError::Sts {
        op,
        role_arn: role_arn.to_string(),
        code,
        status,
        message,
        claims: claims.map(Box::new),
    }
}

fn into_credentials(
    op: &'static str,
    role_arn: &str,
    creds: Option<&aws_sdk_sts::types::Credentials>,
    identity: Option<String>,
    provider: &'static str,
) -> Result<Fetched, AuthError> {
    let Some(c) = creds else {
        return Err(AuthError::Sts {
            op,
            role_arn: role_arn.to_string(),
            code: None,
            status: None,
            message: "STS answered without credentials".into(),
            claims: None,
        });
    };
    let expiry = SystemTime::try_from(*c.expiration()).ok();
    Ok(Fetched {
        credentials: Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            expiry,
            provider,
        ),
        expiry,
        identity,
    })
}

/// AssumeRoleWithWebIdentity with a token read afresh at every call.
#[derive(Debug)]
pub struct WebIdentity {
    role: RoleSettings,
    token: TokenSource,
    client: aws_sdk_sts::Client,
}

impl WebIdentity {
    /// A fetcher for `settings`, calling STS in `region` unless the settings name another.
    pub fn new(settings: &WebIdentitySettings, region: Region) -> Self {
        Self {
            role: settings.role.clone(),
            token: settings.token.clone(),
            client: sts_client(&settings.role, region, None),
        }
    }
}

impl Fetch for WebIdentity {
    fn fetch(&self) -> BoxFuture<'_, Result<Fetched, AuthError>> {
        Box::pin(async move {
            const OP: &str = "AssumeRoleWithWebIdentity";
            let token = read_token(&self.token).await?;
            let claims = Claims::of(token.expose());
            let out = self
                .client
                .assume_role_with_web_identity()
                .role_arn(&self.role.role_arn)
                .role_session_name(&self.role.session_name)
                .duration_seconds(self.role.duration.as_secs() as i32)
                .web_identity_token(token.expose())
                .send()
                .await
                .map_err(|e| {
                    let mut error = sts_error(OP, &self.role.role_arn, claims.clone(), &e);
                    if let (None, AuthError::Sts { message, .. }) = (&claims, &mut error) {
                        message.push_str(" (the token read is not a JWT)");
                    }
                    error
                })?;
            let arn = out.assumed_role_user().map(|u| u.arn().to_string());
            tracing::info!(role = %self.role.role_arn, assumed = ?arn, "assumed role with web identity");
            tracing::debug!(token = %claims.clone().unwrap_or_default(), "web identity token claims");
            into_credentials(
                OP,
                &self.role.role_arn,
                out.credentials(),
                arn,
                "pail-web-identity",
            )
        })
    }
}

/// AssumeRole (with an external id) signed by a source identity.
#[derive(Debug)]
pub struct AssumeRole {
    role: RoleSettings,
    external_id: Option<String>,
    client: aws_sdk_sts::Client,
}

impl AssumeRole {
    /// A fetcher for `settings` whose STS calls are signed with `source`.
    pub fn new(
        settings: &AssumeRoleSettings,
        region: Region,
        source: SharedCredentialsProvider,
    ) -> Self {
        Self {
            role: settings.role.clone(),
            external_id: settings.external_id.clone(),
            client: sts_client(&settings.role, region, Some(source)),
        }
    }
}

impl Fetch for AssumeRole {
    fn fetch(&self) -> BoxFuture<'_, Result<Fetched, AuthError>> {
        Box::pin(async move {
            const OP: &str = "AssumeRole";
            let out = self
                .client
                .assume_role()
                .role_arn(&self.role.role_arn)
                .role_session_name(&self.role.session_name)
                .duration_seconds(self.role.duration.as_secs() as i32)
                .set_external_id(self.external_id.clone())
                .send()
                .await
                .map_err(|e| sts_error(OP, &self.role.role_arn, None, &e))?;
            let arn = out.assumed_role_user().map(|u| u.arn().to_string());
            tracing::info!(role = %self.role.role_arn, assumed = ?arn, "assumed role");
            into_credentials(
                OP,
                &self.role.role_arn,
                out.credentials(),
                arn,
                "pail-assume-role",
            )
        })
    }
}
