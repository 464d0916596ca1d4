//! The IAM documents a customer pastes: the least-privilege permissions policy for a
//! destination, and the trust policy its role needs, filled in with the real token claims or
//! the real external id.

use serde_json::{Value, json};

use crate::auth::Claims;
use crate::config::{AuthSettings, DestinationSettings, Location, Sse};

/// `arn:aws:s3:::bucket/prefix/*` (the partition follows the role ARN when there is one).
pub fn objects_arn(dest: &DestinationSettings) -> String {
    let partition = role_arn(dest)
        .and_then(|arn| arn.split(':').nth(1))
        .unwrap_or("aws");
    match &dest.location {
        Location::S3 { bucket, prefix } if prefix.is_empty() => {
            format!("arn:{partition}:s3:::{bucket}/*")
        }
        Location::S3 { bucket, prefix } => format!("arn:{partition}:s3:::{bucket}/{prefix}/*"),
        Location::Local { root } => root.display().to_string(),
    }
}

/// The role a destination assumes, if any.
pub fn role_arn(dest: &DestinationSettings) -> Option<&str> {
    match &dest.auth {
        AuthSettings::WebIdentity(w) => Some(&w.role.role_arn),
        AuthSettings::AssumeRole(a) => Some(&a.role.role_arn),
        AuthSettings::Static(_) | AuthSettings::Default => None,
    }
}

/// The permissions pail needs: s3:PutObject (and s3:DeleteObject for the connection test)
/// on the prefix, s3:PutObjectAcl with an ACL, and the KMS key with `sse = "aws:kms"`.
pub fn permissions_policy(dest: &DestinationSettings) -> Value {
    let objects = objects_arn(dest);
    let mut actions = vec!["s3:PutObject", "s3:DeleteObject"];
    if dest.write.acl.is_some() {
        actions.push("s3:PutObjectAcl");
    }
    let mut statements = vec![json!({
        "Sid": "PailWriteObjects",
        "Effect": "Allow",
        "Action": actions,
        "Resource": objects,
    })];
    if let Some(Sse::Kms { sse_kms_key_id }) = &dest.write.sse {
        statements.push(json!({
            "Sid": "PailEncryptWithKmsKey",
            "Effect": "Allow",
            // GenerateDataKey for every object; Decrypt to complete multipart uploads.
            "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
            "Resource": sse_kms_key_id.clone().unwrap_or_else(|| "<the ARN of the bucket's KMS key>".into()),
        }));
    }
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// The optional statement that lets pail abort its incomplete multipart uploads after a
/// crash (a lifecycle rule is the alternative).
pub fn abort_statement(dest: &DestinationSettings) -> Value {
    json!({
        "Sid": "PailAbortIncompleteUploads",
        "Effect": "Allow",
        "Action": "s3:AbortMultipartUpload",
        "Resource": objects_arn(dest),
    })
}

/// The lifecycle rule that removes incomplete multipart uploads after a day, instead of
/// s3:AbortMultipartUpload.
pub fn abort_lifecycle_rule(dest: &DestinationSettings) -> Value {
    let prefix = match &dest.location {
        Location::S3 { prefix, .. } if !prefix.is_empty() => format!("{prefix}/"),
        _ => String::new(),
    };
    json!({ "Rules": [{
        "ID": "pail-abort-incomplete-multipart-uploads",
        "Status": "Enabled",
        "Filter": { "Prefix": prefix },
        "AbortIncompleteMultipartUpload": { "DaysAfterInitiation": 1 },
    }]})
}

/// The account id of a role ARN (`arn:aws:iam::ACCOUNT:role/NAME`).
fn account_of(role_arn: &str) -> &str {
    role_arn
        .split(':')
        .nth(4)
        .filter(|a| !a.is_empty())
        .unwrap_or("<ACCOUNT_ID>")
}

/// The trust policy a role needs for web identity federation with tokens like `claims`.
///
/// For Google, AWS's condition key `accounts.google.com:aud` is matched against the token's
/// `azp` claim when it has one (and `accounts.google.com:oaud` against `aud`).
pub fn web_identity_trust_policy(role_arn: &str, claims: Option<&Claims>) -> Value {
    let iss = claims
        .and_then(|c| c.iss.clone())
        .unwrap_or_else(|| "<issuer of your OIDC tokens>".into());
    let host = iss
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let google = host == "accounts.google.com";
    let partition = role_arn.split(':').nth(1).unwrap_or("aws");
    let federated = if google {
        host.clone()
    } else {
        format!(
            "arn:{partition}:iam::{}:oidc-provider/{host}",
            account_of(role_arn)
        )
    };
    let sub = claims
        .and_then(|c| c.sub.clone())
        .unwrap_or_else(|| "<the token's sub>".into());
    let aud = claims
        .and_then(|c| {
            if google {
                c.azp.clone().or_else(|| c.aud.first().cloned())
            } else {
                c.aud.first().cloned()
            }
        })
        .unwrap_or_else(|| "<the token's audience>".into());
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Federated": federated },
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": { "StringEquals": {
                format!("{host}:sub"): sub,
                format!("{host}:aud"): aud,
            }},
        }],
    })
}

/// The trust policy a role needs to be assumed by `principal` with `external_id`.
pub fn assume_role_trust_policy(principal: Option<&str>, external_id: Option<&str>) -> Value {
    let principal = principal.unwrap_or("<the ARN of the identity pail runs as>");
    let mut statement = json!({
        "Effect": "Allow",
        "Principal": { "AWS": principal },
        "Action": "sts:AssumeRole",
    });
    if let Some(id) = external_id {
        statement["Condition"] = json!({ "StringEquals": { "sts:ExternalId": id } });
    }
    json!({ "Version": "2012-10-17", "Statement": [statement] })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(iss: &str, sub: &str, aud: &str, azp: Option<&str>) -> Claims {
        Claims {
            iss: Some(iss.into()),
            sub: Some(sub.into()),
            aud: vec![aud.into()],
            azp: azp.map(str::to_string),
            exp: None,
        }
    }

    #[test]
    fn google_tokens_trust_accounts_google_com_with_sub_and_azp() {
        let c = claims(
            "https://accounts.google.com",
            "112233445566778899000",
            "sts.amazonaws.com",
            Some("1234567890.apps.googleusercontent.com"),
        );
        let p = web_identity_trust_policy("arn:aws:iam::111122223333:role/pail", Some(&c));
        let st = &p["Statement"][0];
        assert_eq!(st["Principal"]["Federated"], "accounts.google.com");
        assert_eq!(st["Action"], "sts:AssumeRoleWithWebIdentity");
        let cond = &st["Condition"]["StringEquals"];
        assert_eq!(cond["accounts.google.com:sub"], "112233445566778899000");
        assert_eq!(
            cond["accounts.google.com:aud"],
            "1234567890.apps.googleusercontent.com"
        );
    }

    #[test]
    fn other_issuers_are_iam_oidc_providers_in_the_roles_account() {
        let c = claims(
            "https://oidc.eks.eu-west-1.amazonaws.com/id/ABC",
            "system:serviceaccount:pail:worker",
            "sts.amazonaws.com",
            None,
        );
        let p = web_identity_trust_policy("arn:aws:iam::111122223333:role/pail", Some(&c));
        let st = &p["Statement"][0];
        assert_eq!(
            st["Principal"]["Federated"],
            "arn:aws:iam::111122223333:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/ABC"
        );
        let cond = &st["Condition"]["StringEquals"];
        assert_eq!(
            cond["oidc.eks.eu-west-1.amazonaws.com/id/ABC:sub"],
            "system:serviceaccount:pail:worker"
        );
        assert_eq!(
            cond["oidc.eks.eu-west-1.amazonaws.com/id/ABC:aud"],
            "sts.amazonaws.com"
        );
    }

    #[test]
    fn assume_role_trust_requires_the_external_id() {
        let p = assume_role_trust_policy(Some("arn:aws:iam::2:role/pail"), Some("ext-7"));
        assert_eq!(
            p["Statement"][0]["Principal"]["AWS"],
            "arn:aws:iam::2:role/pail"
        );
        assert_eq!(
            p["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"],
            "ext-7"
        );
    }
}
