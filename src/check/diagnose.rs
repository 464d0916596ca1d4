//! Turns a failure into a cause a program can switch on and a fix a person can apply, using
//! what pail knows: the destination's settings, the token's claims, the store's error code,
//! status and the region it names.

use serde::Serialize;
use serde_json::Value;

use super::policy::{
    assume_role_trust_policy, objects_arn, permissions_policy, role_arn, web_identity_trust_policy,
};
use crate::auth::{AuthError, Claims};
use crate::config::{AuthSettings, DestinationSettings, Location, Sse, TokenSource};
use crate::store::{ErrorClass, StoreError};

/// What went wrong, as a stable snake_case word in the JSON output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The OIDC token could not be read (file, metadata server, command).
    TokenUnavailable,
    /// STS refused the token: the role's trust policy or identity provider does not match it.
    TokenRejected,
    /// The token has expired.
    TokenExpired,
    /// The token's audience is not one the identity provider accepts.
    WrongAudience,
    /// STS refused AssumeRole: trust policy, external id, or the caller's own permissions.
    RoleTrustDenied,
    /// STS did not answer (network) or answered with a server error.
    StsUnavailable,
    /// The store refused the PUT.
    PutDenied,
    /// The store refused the DELETE.
    DeleteDenied,
    /// The KMS key refused (or does not exist, or is disabled).
    KmsDenied,
    NoSuchBucket,
    /// The bucket is in another region.
    WrongRegion,
    /// The endpoint could not be reached.
    EndpointUnreachable,
    /// TLS to the endpoint failed.
    TlsError,
    /// The machine's clock is too far from the store's.
    ClockSkew,
    /// The access key id is unknown to the store.
    InvalidAccessKey,
    /// The secret access key does not match the access key id.
    SignatureMismatch,
    /// Temporary credentials (a session token) have expired.
    ExpiredCredentials,
    /// The store rejects conditional writes.
    ConditionalWritesUnsupported,
    /// Anything else: the store's own message says what.
    StoreError,
}

/// A classified failure.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub cause: Cause,
    /// What happened, with the store's or STS's code and message.
    pub message: String,
    /// What to change.
    pub fix: String,
    /// A policy document to paste, when the fix is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Value>,
    /// Trying again soon may pass (throttling, a server error, a connection problem).
    #[serde(skip)]
    pub transient: bool,
}

impl Diagnosis {
    fn new(cause: Cause, message: String, fix: impl Into<String>) -> Self {
        Self {
            cause,
            message,
            fix: fix.into(),
            policy: None,
            transient: false,
        }
    }

    fn transient(mut self, transient: bool) -> Self {
        self.transient = transient;
        self
    }

    fn with_policy(mut self, policy: Value) -> Self {
        self.policy = Some(policy);
        self
    }
}

/// Why credentials could not be obtained, and what to change.
pub fn diagnose_auth(
    err: &AuthError,
    dest: &DestinationSettings,
    claims: Option<&Claims>,
) -> Diagnosis {
    classify_auth(err, dest, claims).transient(!err.needs_a_human())
}

fn classify_auth(
    err: &AuthError,
    dest: &DestinationSettings,
    claims: Option<&Claims>,
) -> Diagnosis {
    let message = err.to_string();
    let role = role_arn(dest).unwrap_or("<role>");
    match err {
        AuthError::TokenFile { .. } | AuthError::Gcp { .. } | AuthError::TokenCommand { .. } => {
            let fix = match &dest.auth {
                AuthSettings::WebIdentity(w) => match &w.token {
                    TokenSource::File(p) => format!(
                        "make {} readable by pail and non-empty (on Kubernetes: a projected \
                         service account token volume with the audience your role trusts)",
                        p.display()
                    ),
                    TokenSource::Gcp { host, .. } => format!(
                        "run on GCP with a service account attached, or point gcp_metadata_host \
                         at a reachable metadata server (now {host})"
                    ),
                    TokenSource::Command(argv) => format!(
                        "make token_command ({}) print an ID token on standard output and exit 0",
                        argv.first().map_or("", String::as_str)
                    ),
                },
                _ => "check the token source".into(),
            };
            Diagnosis::new(Cause::TokenUnavailable, message, fix)
        }
        AuthError::Sts {
            op, code, status, ..
        } => {
            // The caller's own credentials (assume_role's source identity) or clock, not the
            // role's trust policy.
            match code.as_deref() {
                Some("InvalidClientTokenId") => {
                    return Diagnosis::new(
                        Cause::InvalidAccessKey,
                        message,
                        "STS does not know the access key pail signs with: check the source \
                         keys in [destinations.auth] (or the default chain's)",
                    );
                }
                Some("SignatureDoesNotMatch") => {
                    return Diagnosis::new(
                        Cause::SignatureMismatch,
                        message,
                        "the source secret access key does not belong to its access key id: \
                         copy it again, or create a new key pair",
                    );
                }
                Some("ExpiredToken") => {
                    return Diagnosis::new(
                        Cause::ExpiredCredentials,
                        message,
                        "the source identity's session token expired: supply fresh temporary \
                         keys, or long-lived keys for the source identity",
                    );
                }
                Some("IDPCommunicationError") => {
                    let iss = claims
                        .and_then(|c| c.iss.clone())
                        .unwrap_or_else(|| "the token's issuer".into());
                    return Diagnosis::new(
                        Cause::StsUnavailable,
                        message,
                        format!(
                            "STS could not fetch the signing keys of {iss}: its OIDC discovery \
                             document and JWKS must be reachable from AWS over HTTPS; retry"
                        ),
                    );
                }
                _ => {}
            }
            if message.contains("Signature expired") || code.as_deref() == Some("RequestExpired") {
                return Diagnosis::new(
                    Cause::ClockSkew,
                    message,
                    "this machine's clock differs from STS's by more than 5 minutes: \
                     synchronise it (NTP, chrony, or the container host's clock)",
                );
            }
            let unavailable =
                code.is_none() && status.is_none_or(|s| s >= 500) || !err.needs_a_human();
            if unavailable {
                let endpoint = match &dest.auth {
                    AuthSettings::WebIdentity(w) => w.role.sts_endpoint.clone(),
                    AuthSettings::AssumeRole(a) => a.role.sts_endpoint.clone(),
                    _ => None,
                };
                return Diagnosis::new(
                    Cause::StsUnavailable,
                    message,
                    format!(
                        "check that STS is reachable from here ({}) and retry; set sts_endpoint \
                         and sts_region to use a regional STS",
                        endpoint.unwrap_or_else(|| "the SDK's endpoint for the region".into())
                    ),
                );
            }
            if *op == "AssumeRole" {
                let external = match &dest.auth {
                    AuthSettings::AssumeRole(a) => a.external_id.as_deref(),
                    _ => None,
                };
                return Diagnosis::new(
                    Cause::RoleTrustDenied,
                    message,
                    format!(
                        "role {role} must trust the identity pail runs as{}, and that identity \
                         must be allowed sts:AssumeRole on the role; the role's trust policy:",
                        external.map_or(String::new(), |e| format!(" with the external id {e:?}"))
                    ),
                )
                .with_policy(assume_role_trust_policy(None, external));
            }
            let lower = message.to_lowercase();
            let trust = web_identity_trust_policy(role, claims);
            if code.as_deref() == Some("ExpiredTokenException") || lower.contains("expired") {
                let when = claims
                    .and_then(|c| c.exp)
                    .and_then(|e| chrono::DateTime::from_timestamp(e, 0))
                    .map_or("already".to_string(), |t| format!("at {}", t.to_rfc3339()));
                return Diagnosis::new(
                    Cause::TokenExpired,
                    message,
                    format!(
                        "the token expired {when}: the token source must deliver a fresh one \
                         (a projected token file is rotated by the kubelet; a command must \
                         print a new token each time)"
                    ),
                );
            }
            if lower.contains("audience") {
                let aud = claims.map_or("-".to_string(), |c| c.aud.join(","));
                return Diagnosis::new(
                    Cause::WrongAudience,
                    message,
                    format!(
                        "the token's audience is {aud}: request tokens for the audience the \
                         identity provider accepts, or add {aud} to the provider's audiences \
                         (client ids) in IAM and to the role's trust policy:"
                    ),
                )
                .with_policy(trust);
            }
            Diagnosis::new(
                Cause::TokenRejected,
                message,
                format!(
                    "STS refused the token for role {role}: the role must trust the token's \
                     issuer, subject and audience (and the issuer must be an IAM OIDC identity \
                     provider in the role's account, except accounts.google.com); the role's \
                     trust policy, filled in with this token's claims:"
                ),
            )
            .with_policy(trust)
        }
    }
}

/// The step of the connection test (or the upload) that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Put,
    ConditionalProbe,
    Multipart,
    Delete,
}

/// Why a store operation failed, and what to change.
pub fn diagnose_store(
    err: &StoreError,
    dest: &DestinationSettings,
    operation: Operation,
) -> Diagnosis {
    classify_store(err, dest, operation).transient(err.class == ErrorClass::Transient)
}

fn classify_store(err: &StoreError, dest: &DestinationSettings, operation: Operation) -> Diagnosis {
    let message = err.to_string();
    let code = err.code.as_deref().unwrap_or("");
    let lower = err.message.to_lowercase();
    let bucket = match &dest.location {
        Location::S3 { bucket, .. } => bucket.as_str(),
        Location::Local { .. } => "",
    };
    let endpoint = dest
        .endpoint
        .clone()
        .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", dest.region));
    let who = role_arn(dest).map_or_else(
        || match &dest.auth {
            AuthSettings::Static(k) => format!("the owner of access key {}", k.access_key_id),
            _ => "pail's identity".to_string(),
        },
        |r| format!("role {r}"),
    );

    if err.status.is_none() && err.code.is_none() {
        let tls = ["certificate", "tls", "ssl", "handshake"]
            .iter()
            .any(|w| lower.contains(w));
        return if tls {
            Diagnosis::new(
                Cause::TlsError,
                message,
                format!(
                    "TLS to {endpoint} failed: check that the endpoint serves a certificate \
                     trusted by this machine (or use http:// for a local test store)"
                ),
            )
        } else {
            Diagnosis::new(
                Cause::EndpointUnreachable,
                message,
                format!(
                    "cannot reach {endpoint}: check the endpoint (host and port), DNS, firewall \
                     and proxy settings"
                ),
            )
        };
    }
    if code == "NoSuchBucket" {
        return Diagnosis::new(
            Cause::NoSuchBucket,
            message,
            format!(
                "bucket {bucket:?} does not exist at {endpoint}: check the bucket name in `url` \
                 (and the endpoint or region), or create the bucket"
            ),
        );
    }
    let redirect = matches!(
        code,
        "PermanentRedirect"
            | "TemporaryRedirect"
            | "AuthorizationHeaderMalformed"
            | "IllegalLocationConstraintException"
    ) || matches!(err.status, Some(301 | 307))
        // Some stores (MinIO) name the bucket's region on every answer: only another region
        // than the configured one says anything.
        || err
            .bucket_region
            .as_deref()
            .is_some_and(|r| r != dest.region && dest.region != "auto");
    if redirect {
        let fix = match &err.bucket_region {
            Some(r) if *r != dest.region => format!(
                "bucket {bucket:?} is in region {r}, not {}: set region = \"{r}\"",
                dest.region
            ),
            Some(r) => format!(
                "the store expects requests signed for region {r}: check that the endpoint \
                 ({endpoint}) belongs to region = \"{}\"",
                dest.region
            ),
            None => format!(
                "bucket {bucket:?} is not in region {}: set `region` to the bucket's region",
                dest.region
            ),
        };
        return Diagnosis::new(Cause::WrongRegion, message, fix);
    }
    if code == "RequestTimeTooSkewed" {
        return Diagnosis::new(
            Cause::ClockSkew,
            message,
            "this machine's clock differs from the store's by more than 15 minutes: synchronise \
             it (NTP, chrony, or the container host's clock)",
        );
    }
    if code == "InvalidAccessKeyId" {
        return Diagnosis::new(
            Cause::InvalidAccessKey,
            message,
            "the access key id is not known to this store: check that the key belongs to this \
             store (endpoint, account), that it is active, and that access_key_id is copied \
             whole",
        );
    }
    if code == "SignatureDoesNotMatch" {
        return Diagnosis::new(
            Cause::SignatureMismatch,
            message,
            "the secret access key does not belong to the access key id: copy the secret again \
             (no surrounding spaces or newline), or create a new key pair",
        );
    }
    if matches!(
        code,
        "ExpiredToken" | "TokenRefreshRequired" | "InvalidToken"
    ) {
        return Diagnosis::new(
            Cause::ExpiredCredentials,
            message,
            "the temporary credentials (session token) expired or are invalid: supply fresh \
             ones, or let pail obtain them with method = \"web_identity\" or \"assume_role\"",
        );
    }
    let kms = code.starts_with("KMS.") || lower.contains("kms:") || lower.contains("kms key");
    if kms {
        let key = match &dest.write.sse {
            Some(Sse::Kms {
                sse_kms_key_id: Some(k),
            }) => k.clone(),
            _ => "the bucket's KMS key".into(),
        };
        return Diagnosis::new(
            Cause::KmsDenied,
            message,
            format!(
                "{who} must be allowed kms:GenerateDataKey and kms:Decrypt on {key} (in its IAM \
                 policy and in the key policy), and the key must exist and be enabled"
            ),
        )
        .with_policy(permissions_policy(dest));
    }
    let denied = code == "AccessDenied" || err.status == Some(403);
    match (operation, denied) {
        (Operation::Delete, true) => {
            return Diagnosis::new(
                Cause::DeleteDenied,
                message,
                format!(
                    "{who} may not delete objects under {}: s3:DeleteObject is needed only by \
                     this test, to remove its test object; allow it while testing and remove \
                     it afterwards if you wish (pail itself never deletes)",
                    objects_arn(dest)
                ),
            );
        }
        (_, true) => {
            // S3 often answers a KMS refusal with a bare "Access Denied".
            let kms = match &dest.write.sse {
                Some(Sse::Kms { .. }) => {
                    " (with sse = \"aws:kms\", also kms:GenerateDataKey and kms:Decrypt on the \
                     key, in the key policy too)"
                }
                _ => "",
            };
            return Diagnosis::new(
                Cause::PutDenied,
                message,
                format!(
                    "{who} may not write objects under {}{kms}: attach this permissions policy",
                    objects_arn(dest)
                ),
            )
            .with_policy(permissions_policy(dest));
        }
        _ => {}
    }
    // The first PUT already carries the precondition: a store that rejects the header fails
    // there, the probe only when it rejects the second use.
    let conditional = matches!(operation, Operation::Put | Operation::ConditionalProbe)
        && dest.overwrite_protection;
    if conditional && (code == "NotImplemented" || err.status == Some(501)) {
        return Diagnosis::new(
            Cause::ConditionalWritesUnsupported,
            message,
            "this store rejects conditional writes (If-None-Match): set overwrite_protection = \
             false; replays then rewrite the same objects with the same records",
        );
    }
    Diagnosis::new(
        Cause::StoreError,
        message,
        "the store's message above says what failed",
    )
}
