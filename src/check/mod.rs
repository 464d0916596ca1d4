//! The connection test: with exactly the clients `pail run` builds, obtain credentials, PUT a
//! test object, probe whether the store honours create-only writes, optionally run a
//! two-part multipart upload, and DELETE what was written — never List, Get or Head. Each
//! step's failure is classified with its fix. `pail run` runs the same test as its preflight.

pub mod diagnose;
pub mod policy;
mod render;

use std::sync::Arc;

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use bytes::Bytes;
use serde::Serialize;

pub use diagnose::{Cause, Diagnosis, Operation};
pub use render::render_human;

use crate::auth::{Claims, SystemClock, read_token};
use crate::config::{AuthSettings, DestinationSettings, Location, UploadSettings};
use crate::store::{
    LocalStore, ObjectStore, PutOutcome, S3Store, build_s3_client_with, key_prefix,
};

/// What the connection test does besides PUT, probe and DELETE.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Also run a two-part multipart upload (and delete it).
    pub multipart: bool,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Ok,
    /// Works, with something the user should know (e.g. no overwrite protection).
    Warning,
    Failed,
    Skipped,
}

/// One step of the test.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// `credentials`, `put`, `conditional_write`, `multipart` or `delete`.
    pub step: &'static str,
    pub status: StepStatus,
    /// What was done or found.
    pub detail: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<Diagnosis>,
}

/// Whether the store refuses to overwrite an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionalWrites {
    /// A second create-only PUT of the same key answered 412.
    Honoured,
    /// The store accepted it: overwrite protection is unavailable there.
    Ignored,
    /// `overwrite_protection = false`: not probed.
    NotUsed,
    /// The test did not get that far.
    Unknown,
}

/// The test of one destination.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationCheck {
    pub destination: String,
    pub url: String,
    /// Every step passed (warnings allowed).
    pub ok: bool,
    /// The PUT passed: pail can deliver here.
    pub writable: bool,
    /// The identity the store saw, when known (the assumed role's session ARN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    pub conditional_writes: ConditionalWrites,
    pub steps: Vec<Step>,
}

impl DestinationCheck {
    /// A report for `dest` with no step yet: nothing known to work.
    fn new(dest: &DestinationSettings) -> Self {
        Self {
            destination: dest.name.clone(),
            url: dest.location.to_string(),
            ok: false,
            writable: false,
            identity: None,
            conditional_writes: ConditionalWrites::Unknown,
            steps: Vec::new(),
        }
    }

    /// The result of a test that got no answer within `after`.
    pub fn timed_out(dest: &DestinationSettings, after: std::time::Duration) -> Self {
        let message = format!("the connection test got no answer within {after:?}");
        let endpoint = dest
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("the S3 endpoint of region {}", dest.region));
        let mut report = Self::new(dest);
        report.steps.push(failed(
            "put",
            message.clone(),
            Diagnosis {
                cause: Cause::EndpointUnreachable,
                message,
                fix: format!(
                    "check that {endpoint} (and STS, for roles) answers from here: DNS, \
                     firewall, proxy"
                ),
                policy: None,
                transient: true,
            },
        ));
        report
    }

    /// The first failed step's diagnosis.
    pub fn failure(&self) -> Option<&Diagnosis> {
        self.steps
            .iter()
            .find(|s| s.status == StepStatus::Failed)
            .and_then(|s| s.diagnosis.as_ref())
    }
}

/// The whole report, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub ok: bool,
    pub destinations: Vec<DestinationCheck>,
}

fn step(name: &'static str, status: StepStatus, detail: impl Into<String>) -> Step {
    Step {
        step: name,
        status,
        detail: detail.into(),
        diagnosis: None,
    }
}

fn failed(name: &'static str, detail: impl Into<String>, diagnosis: Diagnosis) -> Step {
    Step {
        step: name,
        status: StepStatus::Failed,
        detail: detail.into(),
        diagnosis: Some(diagnosis),
    }
}

/// The claims of the token a web identity destination would present, if it can be read.
pub async fn token_claims(dest: &DestinationSettings) -> Option<Claims> {
    match &dest.auth {
        AuthSettings::WebIdentity(w) => {
            let token = read_token(&w.token).await.ok()?;
            Claims::of(token.expose())
        }
        _ => None,
    }
}

/// Credentials exactly as `pail run` obtains them; for STS methods also who they are.
async fn credentials(
    dest: &DestinationSettings,
) -> (Step, Option<SharedCredentialsProvider>, Option<String>) {
    const NAME: &str = "credentials";
    match &dest.auth {
        AuthSettings::Static(keys) => (
            step(
                NAME,
                StepStatus::Ok,
                format!("static keys, access key id {}", keys.access_key_id),
            ),
            Some(crate::auth::credentials_provider(dest).await),
            None,
        ),
        AuthSettings::Default => {
            let provider = crate::auth::credentials_provider(dest).await;
            match provider.provide_credentials().await {
                Ok(c) => (
                    step(
                        NAME,
                        StepStatus::Ok,
                        format!("AWS SDK default chain, access key id {}", c.access_key_id()),
                    ),
                    Some(provider),
                    None,
                ),
                Err(e) => {
                    let message = format!("the AWS SDK default chain found no credentials: {e}");
                    let diagnosis = Diagnosis {
                        cause: Cause::StoreError,
                        message: message.clone(),
                        fix: "provide credentials to the default chain (AWS_* variables, a \
                              profile, AWS_WEB_IDENTITY_TOKEN_FILE, ECS or instance role), or \
                              choose another auth method"
                            .into(),
                        policy: None,
                        transient: false,
                    };
                    (failed(NAME, message, diagnosis), None, None)
                }
            }
        }
        AuthSettings::WebIdentity(_) | AuthSettings::AssumeRole(_) => {
            let Some(refreshing) =
                crate::auth::refreshing_credentials(dest, Arc::new(SystemClock)).await
            else {
                return (
                    step(NAME, StepStatus::Skipped, "no STS credentials configured"),
                    None,
                    None,
                );
            };
            match refreshing.credentials().await {
                Ok(_) => {
                    let identity = refreshing.identity();
                    let role = policy::role_arn(dest).unwrap_or_default().to_string();
                    let detail = match &identity {
                        Some(arn) => format!("assumed {role} as {arn}"),
                        None => format!("assumed {role}"),
                    };
                    (
                        step(NAME, StepStatus::Ok, detail),
                        Some(SharedCredentialsProvider::new(refreshing)),
                        identity,
                    )
                }
                Err(e) => {
                    let claims = token_claims(dest).await;
                    let diagnosis = diagnose::diagnose_auth(&e, dest, claims.as_ref());
                    (failed(NAME, e.to_string(), diagnosis), None, None)
                }
            }
        }
    }
}

/// Tests one destination.
pub async fn check_destination(dest: &DestinationSettings, opts: CheckOptions) -> DestinationCheck {
    let mut report = DestinationCheck::new(dest);
    let mut multipart_store = None;
    let store: Arc<dyn ObjectStore> = match &dest.location {
        Location::Local { root } => {
            report.steps.push(step(
                "credentials",
                StepStatus::Skipped,
                "a local directory needs none",
            ));
            Arc::new(LocalStore::new(root.clone(), dest.overwrite_protection))
        }
        Location::S3 { bucket, .. } => {
            let (cred_step, provider, identity) = credentials(dest).await;
            report.steps.push(cred_step);
            report.identity = identity;
            let Some(provider) = provider else {
                return report;
            };
            if opts.multipart {
                // The destination's own settings, with parts as small as S3 allows.
                let mut settings = dest.clone();
                settings.upload = UploadSettings {
                    multipart_threshold: MULTIPART_PART,
                    part_size: MULTIPART_PART,
                    ..settings.upload
                };
                let client = build_s3_client_with(&settings, provider.clone());
                multipart_store = Some(S3Store::for_destination(client, bucket.clone(), &settings));
            }
            let client = build_s3_client_with(dest, provider);
            Arc::new(S3Store::for_destination(client, bucket.clone(), dest))
        }
    };
    run_steps(dest, store.as_ref(), multipart_store.as_ref(), &mut report).await;
    report.ok = report.steps.iter().all(|s| s.status != StepStatus::Failed);
    report
}

/// A random (version 4) UUID.
fn random_uuid() -> String {
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// The key of a test object: `{prefix}/_pail/connection-test/{uuid}`.
fn test_key(dest: &DestinationSettings, suffix: &str) -> String {
    let prefix = key_prefix(&dest.location);
    let id = random_uuid();
    if prefix.is_empty() {
        format!("_pail/connection-test/{id}{suffix}")
    } else {
        format!("{prefix}/_pail/connection-test/{id}{suffix}")
    }
}

async fn run_steps(
    dest: &DestinationSettings,
    store: &dyn ObjectStore,
    multipart_store: Option<&S3Store>,
    report: &mut DestinationCheck,
) {
    let key = test_key(dest, "");
    let body = Bytes::from(format!(
        "pail connection test for destination {:?}; safe to delete\n",
        dest.name
    ));
    let meta = vec![("pail-connection-test".to_string(), "1".to_string())];
    let target = format!("{}/{key}", store.describe());
    match store.put_if_absent(&key, body.clone(), &meta).await {
        Ok(_) => {
            report.writable = true;
            report
                .steps
                .push(step("put", StepStatus::Ok, format!("wrote {target}")));
        }
        Err(e) => {
            let d = diagnose::diagnose_store(&e, dest, Operation::Put);
            report.steps.push(failed("put", format!("PUT {target}"), d));
            return;
        }
    }
    let mut written = vec![key.clone()];

    // The same key again: a store that honours If-None-Match answers 412.
    if dest.overwrite_protection {
        match store.put_if_absent(&key, body, &meta).await {
            Ok(PutOutcome::AlreadyExists) => {
                report.conditional_writes = ConditionalWrites::Honoured;
                report.steps.push(step(
                    "conditional_write",
                    StepStatus::Ok,
                    "a second create-only PUT of the same key was refused (412): objects are \
                     never overwritten",
                ));
            }
            Ok(PutOutcome::Created) => {
                report.conditional_writes = ConditionalWrites::Ignored;
                report.steps.push(step(
                    "conditional_write",
                    StepStatus::Warning,
                    "the store accepted a second create-only PUT of the same key: it ignores \
                     If-None-Match, so overwrite protection is unavailable here. Delivery stays \
                     exactly-once in content (a replay rewrites the same records under the same \
                     key) but is not append-only; set overwrite_protection = false to say so",
                ));
            }
            Err(e) => {
                let d = diagnose::diagnose_store(&e, dest, Operation::ConditionalProbe);
                report.steps.push(failed(
                    "conditional_write",
                    format!("second create-only PUT of {target}"),
                    d,
                ));
            }
        }
    } else {
        report.conditional_writes = ConditionalWrites::NotUsed;
        report.steps.push(step(
            "conditional_write",
            StepStatus::Skipped,
            "overwrite_protection = false: not probed",
        ));
    }

    match multipart_store {
        Some(mp) => multipart(dest, mp, report, &mut written).await,
        None => report.steps.push(step(
            "multipart",
            StepStatus::Skipped,
            match dest.location {
                Location::S3 { .. } => "not requested (--multipart)",
                Location::Local { .. } => "a local directory has no multipart uploads",
            },
        )),
    }

    let mut deleted = 0;
    for k in &written {
        match store.delete(k).await {
            Ok(()) => deleted += 1,
            Err(e) => {
                let d = diagnose::diagnose_store(&e, dest, Operation::Delete);
                let left = written[deleted..].join(", ");
                report.steps.push(failed(
                    "delete",
                    format!("DELETE {}/{k}; left behind: {left}", store.describe()),
                    d,
                ));
                return;
            }
        }
    }
    report.steps.push(step(
        "delete",
        StepStatus::Ok,
        format!("deleted the {deleted} test object(s)"),
    ));
}

/// Smallest part S3 takes; the test uploads one full part and a small last one.
const MULTIPART_PART: u64 = 5 << 20;

/// A two-part multipart upload through the destination's own store settings.
async fn multipart(
    dest: &DestinationSettings,
    mp: &S3Store,
    report: &mut DestinationCheck,
    written: &mut Vec<String>,
) {
    let key = test_key(dest, ".multipart");
    let target = format!("{}/{key}", mp.describe());
    let body = Bytes::from(vec![b'p'; MULTIPART_PART as usize + 1024]);
    match mp.put_if_absent(&key, body, &Vec::new()).await {
        Ok(_) => {
            written.push(key);
            report.steps.push(step(
                "multipart",
                StepStatus::Ok,
                format!("completed a two-part upload of {target}"),
            ));
        }
        Err(e) => {
            let d = diagnose::diagnose_store(&e, dest, Operation::Multipart);
            report.steps.push(failed(
                "multipart",
                format!("multipart upload of {target}"),
                d,
            ));
        }
    }
}

/// Tests every destination (or the one named), one after another.
pub async fn check_all(destinations: &[DestinationSettings], opts: CheckOptions) -> CheckReport {
    let mut checks = Vec::new();
    for dest in destinations {
        checks.push(check_destination(dest, opts).await);
    }
    CheckReport {
        ok: checks.iter().all(|c| c.ok),
        destinations: checks,
    }
}

/// What `pail policy` prints for one destination.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyReport {
    pub destination: String,
    pub url: String,
    /// The role the policies go on, when pail assumes one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// Least privilege: attach to the role (or the keys' user). None for a local directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions_policy: Option<serde_json::Value>,
    /// Optional: lets pail abort its incomplete multipart uploads after a crash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optional_abort_statement: Option<serde_json::Value>,
    /// The alternative to the abort permission: a bucket lifecycle rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle_rule: Option<serde_json::Value>,
    /// The role's trust policy (web identity with the real token claims, or assume-role
    /// with the external id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_policy: Option<serde_json::Value>,
    /// What the documents were filled in from, and what pail could not know.
    pub notes: Vec<String>,
}

/// The documents a destination needs, with the token's real claims for web identity.
pub async fn policy_report(dest: &DestinationSettings) -> PolicyReport {
    let mut notes = Vec::new();
    if let Location::Local { root } = &dest.location {
        return PolicyReport {
            destination: dest.name.clone(),
            url: dest.location.to_string(),
            role_arn: None,
            permissions_policy: None,
            optional_abort_statement: None,
            lifecycle_rule: None,
            trust_policy: None,
            notes: vec![format!(
                "a local directory needs no IAM policy: pail needs write access to {}",
                root.display()
            )],
        };
    }
    if !dest.provider.is_aws() {
        notes.push(format!(
            "provider {:?} does not use AWS IAM: grant the same rights (write and delete \
             objects under the prefix) in the store's own access settings",
            dest.provider.as_str()
        ));
    }
    let trust_policy = match &dest.auth {
        AuthSettings::WebIdentity(w) => {
            let claims = token_claims(dest).await;
            match &claims {
                Some(c) => notes.push(format!("trust policy filled in from the token: {c}")),
                None => notes.push(
                    "the token could not be read here: the trust policy has placeholders"
                        .to_string(),
                ),
            }
            Some(policy::web_identity_trust_policy(
                &w.role.role_arn,
                claims.as_ref(),
            ))
        }
        AuthSettings::AssumeRole(a) => {
            notes.push(
                "the identity pail runs as must also be allowed sts:AssumeRole on the role"
                    .to_string(),
            );
            Some(policy::assume_role_trust_policy(
                None,
                a.external_id.as_deref(),
            ))
        }
        AuthSettings::Static(_) | AuthSettings::Default => None,
    };
    notes.push(
        "s3:DeleteObject is used only by `pail connection-test`; pail itself never deletes"
            .to_string(),
    );
    PolicyReport {
        destination: dest.name.clone(),
        url: dest.location.to_string(),
        role_arn: policy::role_arn(dest).map(str::to_string),
        permissions_policy: Some(policy::permissions_policy(dest)),
        optional_abort_statement: Some(policy::abort_statement(dest)),
        lifecycle_rule: Some(policy::abort_lifecycle_rule(dest)),
        trust_policy,
        notes,
    }
}

/// The policy report as text: headings and JSON documents ready to paste.
pub fn render_policy(report: &PolicyReport) -> String {
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let target = report
        .role_arn
        .as_deref()
        .map_or("the identity pail uses".to_string(), |r| {
            format!("role {r}")
        });
    let mut out = format!("# destination {:?} ({})\n", report.destination, report.url);
    if let (Some(permissions), Some(abort), Some(lifecycle)) = (
        &report.permissions_policy,
        &report.optional_abort_statement,
        &report.lifecycle_rule,
    ) {
        out.push_str(&format!(
            "\n# Permissions policy: attach to {target}\n{}\n\n\
             # Optional: add to the policy above so pail can abort incomplete multipart \
             uploads after a crash\n{}\n\n\
             # Or instead: this bucket lifecycle rule removes them after a day\n{}\n",
            pretty(permissions),
            pretty(abort),
            pretty(lifecycle),
        ));
    }
    if let Some(trust) = &report.trust_policy {
        out.push_str(&format!(
            "\n# Trust policy of {target}\n{}\n",
            pretty(trust)
        ));
    }
    for note in &report.notes {
        out.push_str(&format!("\n# note: {note}"));
    }
    out.push('\n');
    out
}
