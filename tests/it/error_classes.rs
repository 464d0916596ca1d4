//! The failure classes no test server here produces — a bucket in another region, KMS
//! refusals, clock skew, expired session keys, STS refusing a token or the source keys, TLS
//! failures — replayed by a local server through the real SDK and the whole connection test.
//! Where a public report captured AWS's answer, that answer is used verbatim and cited; the
//! others are built from AWS's documented error codes and messages (no AWS account is
//! reachable from here to record them).

use std::convert::Infallible;
use std::path::Path;

use base64::Engine;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use pail::check::{CheckOptions, DestinationCheck, StepStatus, check_destination};
use tokio::net::TcpListener;

/// Answers every request with one recorded response; returns its URL.
async fn replay(status: u16, headers: &[(&str, &str)], body: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body = body.to_string();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (headers, body) = (headers.clone(), body.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let mut resp = Response::new(s3s::Body::from(body.clone()));
                    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                    resp.headers_mut()
                        .insert("content-type", "application/xml".parse().unwrap());
                    for (k, v) in &headers {
                        resp.headers_mut().insert(
                            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                            v.parse().unwrap(),
                        );
                    }
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = ConnBuilder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

/// A static-key destination in us-east-1 on `endpoint`, plus `extra` destination keys.
async fn check_s3(endpoint: &str, extra: &str) -> DestinationCheck {
    check_s3_in(endpoint, "us-east-1", extra).await
}

/// A static-key destination in `region` on `endpoint`, plus `extra` destination keys.
async fn check_s3_in(endpoint: &str, region: &str, extra: &str) -> DestinationCheck {
    let text = format!(
        "[source]\nkind = \"file\"\npath = \"-\"\n[[destinations]]\nname = \"acme\"\n\
         url = \"s3://pail-lake/events\"\nprovider = \"aws\"\nendpoint = \"{endpoint}\"\n\
         region = \"{region}\"\ntimestamp = \"field:ts\"\n{extra}\n[destinations.auth]\n\
         access_key_id = \"AKIAIOSFODNN7EXAMPLE\"\n\
         secret_access_key = \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"\n"
    );
    let settings = pail::config::parse(Path::new("t.toml"), &text, &|_| None).unwrap();
    check_destination(&settings.destinations[0], CheckOptions::default()).await
}

fn failure(check: &DestinationCheck) -> (&'static str, String, String) {
    let step = check
        .steps
        .iter()
        .find(|s| s.status == StepStatus::Failed)
        .unwrap_or_else(|| panic!("no step failed: {check:#?}"));
    let d = step.diagnosis.as_ref().unwrap();
    let cause = serde_json::to_value(d.cause).unwrap();
    (
        step.step,
        cause.as_str().unwrap().to_string(),
        d.fix.clone(),
    )
}

/// Recorded in appoxy/aws#110 (a bucket in ap-northeast-1 asked through another region).
const PERMANENT_REDIRECT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.</Message><RequestId>414883F22C6F5799</RequestId><Bucket>marios-test-bucket.foo</Bucket><HostId>CkUSF4xXXgrt8/ggfBrEudibTUn6E0tbPHU72k7FhSeeAeTtTMIiWVywFTGilZja</HostId><Endpoint>marios-test-bucket.foo.s3-ap-northeast-1.amazonaws.com</Endpoint></Error>"#;

#[tokio::test]
async fn a_permanent_redirect_names_the_buckets_region_from_its_endpoint_or_header() {
    // The region from the body's <Endpoint> alone.
    let url = replay(301, &[], PERMANENT_REDIRECT).await;
    let (step, cause, fix) = failure(&check_s3(&url, "").await);
    assert_eq!((step, cause.as_str()), ("put", "wrong_region"));
    assert!(fix.contains("set region = \"ap-northeast-1\""), "{fix}");
    // S3 also names it in x-amz-bucket-region, which wins.
    let url = replay(
        301,
        &[("x-amz-bucket-region", "ap-northeast-1")],
        PERMANENT_REDIRECT,
    )
    .await;
    let (_, cause, fix) = failure(&check_s3(&url, "").await);
    assert_eq!(cause, "wrong_region");
    assert!(
        fix.contains("region ap-northeast-1, not us-east-1"),
        "{fix}"
    );
}

#[tokio::test]
async fn a_malformed_authorization_answer_names_the_expected_region_from_its_body() {
    // Recorded in JuliaServices/CloudStore.jl#52 (headers included).
    let url = replay(
        400,
        &[
            ("x-amz-request-id", "4RTEHTT2H8YZ1AY1"),
            ("x-amz-id-2", "EoMXqxx5Llr23ZFkiDE9CeCiDBaBH2sAsQiuItCEGZRh57gVrU+NFtracSos44nBZNFakfjVVerrShkdtcEHtavCB6dMafZMIECBFTkg43k="),
            ("server", "AmazonS3"),
        ],
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is malformed; the region 's3' is wrong; expecting 'us-east-1'</Message><Region>us-east-1</Region><RequestId>4RTEHTT2H8YZ1AY1</RequestId><HostId>EoMXqxx5Llr23ZFkiDE9CeCiDBaBH2sAsQiuItCEGZRh57gVrU+NFtracSos44nBZNFakfjVVerrShkdtcEHtavCB6dMafZMIECBFTkg43k=</HostId></Error>"#,
    )
    .await;
    // Configured for another region: that region is named.
    let check = check_s3_in(&url, "eu-west-1", "").await;
    let (_, cause, fix) = failure(&check);
    assert_eq!(cause, "wrong_region");
    assert!(fix.contains("region us-east-1, not eu-west-1"), "{fix}");
    // Configured for that very region: the requests were signed for another one (an endpoint
    // of another region), and the fix says so instead of "us-east-1, not us-east-1".
    let (_, cause, fix) = failure(&check_s3(&url, "").await);
    assert_eq!(cause, "wrong_region");
    assert!(
        fix.contains("expects requests signed for region us-east-1"),
        "{fix}"
    );
}

#[tokio::test]
async fn kms_refusals_name_the_key_and_the_permissions() {
    let key = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    // The message recorded in buildkite/docs#2344 (a PutObject refused by KMS), in S3's
    // error document.
    let denied = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>AccessDenied</Code><Message>User: arn:aws:sts::032379705303:assumed-role/… is not authorized to perform: kms:GenerateDataKey on this resource because the resource does not exist in this Region, no resource-based policies allow access, or a resource-based policy explicitly denies access</Message><RequestId>YQ3J0E3TDP5S3V8M</RequestId><HostId>F0B3kTzKxXn9pW8v1nqkY2rCk6mZ0hV7d3q5uR1sT8eL4wA9bN2cM6xP0oI3jK5h</HostId></Error>"#;
    let url = replay(403, &[], denied).await;
    let sse = format!("sse = \"aws:kms\"\nsse_kms_key_id = \"{key}\"");
    let check = check_s3(&url, &sse).await;
    let (_, cause, fix) = failure(&check);
    assert_eq!(cause, "kms_denied");
    assert!(
        fix.contains("kms:GenerateDataKey") && fix.contains(key),
        "{fix}"
    );
    let policy = check
        .steps
        .iter()
        .find_map(|s| s.diagnosis.as_ref()?.policy.clone())
        .unwrap();
    assert_eq!(policy["Statement"][1]["Resource"], key, "{policy:#}");

    // Built from AWS's documented code for a disabled key.
    let disabled = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>KMS.DisabledException</Code><Message>{key} is disabled.</Message><RequestId>8F1E9B0C2D7A6E5F</RequestId><HostId>Jb9v0cQ3tW7xY2zA5dE8fH1kL4nP6rS9uV2wX5yZ8aC1eG4iK7mO0qT3vW6yZ9bD</HostId></Error>"#
    );
    let url = replay(400, &[], &disabled).await;
    let (_, cause, fix) = failure(&check_s3(&url, &sse).await);
    assert_eq!(cause, "kms_denied");
    assert!(fix.contains("exist and be enabled"), "{fix}");
}

#[tokio::test]
async fn clock_skew_and_expired_session_keys_say_what_to_fix() {
    // Recorded in versity/versitygw#1514.
    let url = replay(
        403,
        &[],
        r#"<?xml version="1.0" encoding="UTF-8"?>
   <Error><Code>RequestTimeTooSkewed</Code><Message>The difference between the request time and the current time is too large.</Message><RequestTime>20250901T162148Z</RequestTime><ServerTime>2025-09-03T16:21:50Z</ServerTime><MaxAllowedSkewMilliseconds>900000</MaxAllowedSkewMilliseconds><RequestId>2J8ZFVZVVRA4T7CF</RequestId><HostId>CRaDrKRM91F3Ea6WY8n+2BLxPeuJIpDDm+7fIUYYE2fvvRnGocv1/406lhxBURvCDnNt0K5M2oEj7G7NjTbhP18orBtCmzj6</HostId></Error>"#,
    )
    .await;
    let (_, cause, fix) = failure(&check_s3(&url, "").await);
    assert_eq!(cause, "clock_skew");
    assert!(fix.contains("clock"), "{fix}");

    // Built from AWS's documented code and message for expired session credentials.
    let url = replay(
        400,
        &[],
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message><Token-0>FwoGZXIvYXdzEXAMPLE</Token-0><RequestId>7H2QK9D0ZC3T1B6A</RequestId><HostId>Zp4Xq8rT1vW3yA6cE9gJ2lN5pR8tV1xZ4bD7fH0kM3oQ6sU9wY2aC5eG8iK1mO4q</HostId></Error>"#,
    )
    .await;
    let (_, cause, _) = failure(&check_s3(&url, "").await);
    assert_eq!(cause, "expired_credentials");
}

/// A Google ID token (unsigned: only its claims matter here).
fn google_token() -> String {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#),
        b64(
            r#"{"iss":"https://accounts.google.com","azp":"117520512345-abc.apps.googleusercontent.com","aud":"sts.amazonaws.com","sub":"104713212345678901234","email":"pail@example.iam.gserviceaccount.com","iat":1795000000,"exp":4102444800}"#
        )
    )
}

#[tokio::test]
async fn sts_refusing_a_google_token_prints_the_trust_policy_with_its_sub_and_azp() {
    // STS's documented error document and messages for web identity refusals.
    let sts = replay(
        403,
        &[],
        r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type>
    <Code>AccessDenied</Code>
    <Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message>
  </Error>
  <RequestId>5a7d8c1e-3f2b-4c9d-8e6f-0a1b2c3d4e5f</RequestId>
</ErrorResponse>"#,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, google_token()).unwrap();
    let text = format!(
        "[source]\nkind = \"file\"\npath = \"-\"\n[[destinations]]\nname = \"acme\"\n\
         url = \"s3://pail-lake/events\"\ntimestamp = \"field:ts\"\n[destinations.auth]\n\
         method = \"web_identity\"\nrole_arn = \"arn:aws:iam::111122223333:role/pail-writer\"\n\
         token_file = \"{}\"\nsts_endpoint = \"{sts}\"\n",
        token_file.display()
    );
    let settings = pail::config::parse(Path::new("t.toml"), &text, &|_| None).unwrap();
    let check = check_destination(&settings.destinations[0], CheckOptions::default()).await;
    let (step, cause, _) = failure(&check);
    assert_eq!((step, cause.as_str()), ("credentials", "token_rejected"));
    let policy = check.steps[0]
        .diagnosis
        .as_ref()
        .unwrap()
        .policy
        .clone()
        .unwrap();
    let st = &policy["Statement"][0];
    assert_eq!(st["Principal"]["Federated"], "accounts.google.com");
    let cond = &st["Condition"]["StringEquals"];
    assert_eq!(cond["accounts.google.com:sub"], "104713212345678901234");
    assert_eq!(
        cond["accounts.google.com:aud"],
        "117520512345-abc.apps.googleusercontent.com"
    );
    // The token itself never appears.
    let json = serde_json::to_string(&check).unwrap();
    assert!(!json.contains(&google_token()), "the token was printed");

    let wrong_aud = replay(
        400,
        &[],
        r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type>
    <Code>InvalidIdentityToken</Code>
    <Message>Incorrect token audience</Message>
  </Error>
  <RequestId>0f9e8d7c-6b5a-4c3d-2e1f-0a9b8c7d6e5f</RequestId>
</ErrorResponse>"#,
    )
    .await;
    let text = text.replace(&sts, &wrong_aud);
    let settings = pail::config::parse(Path::new("t.toml"), &text, &|_| None).unwrap();
    let check = check_destination(&settings.destinations[0], CheckOptions::default()).await;
    let (_, cause, fix) = failure(&check);
    assert_eq!(cause, "wrong_audience");
    assert!(fix.contains("sts.amazonaws.com"), "{fix}");
}

#[tokio::test]
async fn a_region_header_naming_the_configured_region_is_not_a_wrong_region() {
    // MinIO names the bucket's region on every answer, errors included.
    let url = replay(
        403,
        &[("x-amz-bucket-region", "us-east-1")],
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>AccessDenied</Code><Message>Access Denied.</Message><Key>events/_pail/connection-test/x</Key><BucketName>pail-lake</BucketName><Resource>/pail-lake/events/_pail/connection-test/x</Resource><RequestId>1798A2B3C4D5E6F7</RequestId><HostId>dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8</HostId></Error>"#,
    )
    .await;
    let (step, cause, _) = failure(&check_s3(&url, "").await);
    assert_eq!((step, cause.as_str()), ("put", "put_denied"));
}

/// An assume_role destination whose STS is `sts`, with static source keys.
async fn check_assume_role(sts: &str) -> DestinationCheck {
    let text = format!(
        "[source]\nkind = \"file\"\npath = \"-\"\n[[destinations]]\nname = \"acme\"\n\
         url = \"s3://pail-lake/events\"\ntimestamp = \"field:ts\"\n[destinations.auth]\n\
         method = \"assume_role\"\nrole_arn = \"arn:aws:iam::111122223333:role/pail-writer\"\n\
         external_id = \"acme-7f3c2a\"\nsts_endpoint = \"{sts}\"\n\
         access_key_id = \"AKIAIOSFODNN7EXAMPLE\"\n\
         secret_access_key = \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"\n"
    );
    let settings = pail::config::parse(Path::new("t.toml"), &text, &|_| None).unwrap();
    check_destination(&settings.destinations[0], CheckOptions::default()).await
}

/// STS's error document, as its API documents it.
fn sts_error(code: &str, message: &str) -> String {
    format!(
        r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type>
    <Code>{code}</Code>
    <Message>{message}</Message>
  </Error>
  <RequestId>3f1c2b7a-9d8e-4c5b-a6f7-0e1d2c3b4a59</RequestId>
</ErrorResponse>"#
    )
}

#[tokio::test]
async fn assume_role_failures_point_at_the_source_keys_or_the_trust_policy() {
    let bad_key = replay(
        403,
        &[],
        &sts_error(
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        ),
    )
    .await;
    let (step, cause, _) = failure(&check_assume_role(&bad_key).await);
    assert_eq!(
        (step, cause.as_str()),
        ("credentials", "invalid_access_key")
    );

    let bad_secret = replay(
        403,
        &[],
        &sts_error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method.",
        ),
    )
    .await;
    let (_, cause, _) = failure(&check_assume_role(&bad_secret).await);
    assert_eq!(cause, "signature_mismatch");

    let trust = replay(
        403,
        &[],
        &sts_error(
            "AccessDenied",
            "User: arn:aws:iam::999988887777:user/pail is not authorized to perform: \
             sts:AssumeRole on resource: arn:aws:iam::111122223333:role/pail-writer",
        ),
    )
    .await;
    let check = check_assume_role(&trust).await;
    let (_, cause, fix) = failure(&check);
    assert_eq!(cause, "role_trust_denied");
    assert!(fix.contains("acme-7f3c2a"), "{fix}");
    let json = serde_json::to_string(&check).unwrap();
    assert!(!json.contains("wJalrXUtnFEMI"), "the secret was printed");
}

#[tokio::test]
async fn a_missing_token_file_and_a_tls_failure_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[source]\nkind = \"file\"\npath = \"-\"\n[[destinations]]\nname = \"acme\"\n\
         url = \"s3://pail-lake/events\"\ntimestamp = \"field:ts\"\n[destinations.auth]\n\
         method = \"web_identity\"\nrole_arn = \"arn:aws:iam::111122223333:role/pail-writer\"\n\
         token_file = \"{}\"\n",
        dir.path().join("missing-token").display()
    );
    let settings = pail::config::parse(Path::new("t.toml"), &text, &|_| None).unwrap();
    let check = check_destination(&settings.destinations[0], CheckOptions::default()).await;
    let (step, cause, fix) = failure(&check);
    assert_eq!((step, cause.as_str()), ("credentials", "token_unavailable"));
    assert!(fix.contains("missing-token"), "{fix}");

    // Something that is not TLS answers on an https:// endpoint.
    let plain = replay(200, &[], "not tls").await;
    let https = plain.replace("http://", "https://");
    let (_, cause, fix) = failure(&check_s3(&https, "").await);
    assert_eq!(cause, "tls_error", "{fix}");
}
