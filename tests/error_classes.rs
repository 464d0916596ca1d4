//! The failure classes no test server here produces — a bucket in another region, KMS
//! refusals, clock skew, expired session keys, STS refusing a Google token — from AWS's own
//! error answers (status, headers and XML bodies as S3 and STS send them), replayed by a
//! local server through the real SDK and the whole connection test.

mod support;

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

/// A static-key destination on `endpoint`, plus `extra` destination keys.
async fn check_s3(endpoint: &str, extra: &str) -> DestinationCheck {
    let text = format!(
        "[source]\nkind = \"file\"\npath = \"-\"\n[[destinations]]\nname = \"acme\"\n\
         url = \"s3://pail-lake/events\"\nprovider = \"aws\"\nendpoint = \"{endpoint}\"\n\
         region = \"us-east-1\"\ntimestamp = \"field:ts\"\n{extra}\n[destinations.auth]\n\
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

#[tokio::test]
async fn a_permanent_redirect_names_the_buckets_region() {
    let url = replay(
        301,
        &[("x-amz-bucket-region", "eu-west-1")],
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.</Message><Endpoint>pail-lake.s3.eu-west-1.amazonaws.com</Endpoint><Bucket>pail-lake</Bucket><RequestId>4XSNT8Z0Q3JT4C1B</RequestId><HostId>kLeGt5y0Yq4Xh4bq2vtj2gXZ3Yt1Z9Tfi3Z9a1pC5oYhKc0v3pI0mXbqZ8q2Y1r7bT0sWc3dE=</HostId></Error>"#,
    )
    .await;
    let (step, cause, fix) = failure(&check_s3(&url, "").await);
    assert_eq!((step, cause.as_str()), ("put", "wrong_region"));
    assert!(fix.contains("set region = \"eu-west-1\""), "{fix}");
}

#[tokio::test]
async fn a_malformed_authorization_answer_names_the_expected_region_from_its_body() {
    let url = replay(
        400,
        &[],
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-central-1'</Message><Region>eu-central-1</Region><RequestId>P8K2N3YQ1A9M7T5C</RequestId><HostId>bW8xV2dZc3lQd0h5d0N2c2l0V0JxT1Y4c0x5b0p3cXk=</HostId></Error>"#,
    )
    .await;
    let (_, cause, fix) = failure(&check_s3(&url, "").await);
    assert_eq!(cause, "wrong_region");
    assert!(fix.contains("region eu-central-1, not us-east-1"), "{fix}");
}

#[tokio::test]
async fn kms_refusals_name_the_key_and_the_permissions() {
    let key = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let denied = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>AccessDenied</Code><Message>User: arn:aws:sts::111122223333:assumed-role/pail-writer/pail-acme is not authorized to perform: kms:GenerateDataKey on resource: {key} because no identity-based policy allows the kms:GenerateDataKey action</Message><RequestId>YQ3J0E3TDP5S3V8M</RequestId><HostId>c2VjcmV0LWhvc3QtaWQtZm9yLWttcy1kZW5pZWQ=</HostId></Error>"#
    );
    let url = replay(403, &[], &denied).await;
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

    let disabled = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>KMS.DisabledException</Code><Message>{key} is disabled.</Message><RequestId>8F1E9B0C2D7A6E5F</RequestId><HostId>a21zLWRpc2FibGVkLWhvc3QtaWQ=</HostId></Error>"#
    );
    let url = replay(400, &[], &disabled).await;
    let (_, cause, fix) = failure(&check_s3(&url, &sse).await);
    assert_eq!(cause, "kms_denied");
    assert!(fix.contains("exist and be enabled"), "{fix}");
}

#[tokio::test]
async fn clock_skew_and_expired_session_keys_say_what_to_fix() {
    let url = replay(
        403,
        &[],
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>RequestTimeTooSkewed</Code><Message>The difference between the request time and the current time is too large.</Message><RequestTime>20261122T120000Z</RequestTime><ServerTime>2026-11-22T12:47:13Z</ServerTime><MaxAllowedSkewMilliseconds>900000</MaxAllowedSkewMilliseconds><RequestId>4J7QK0C9ZB2T1H6S</RequestId><HostId>c2tldy1ob3N0LWlk</HostId></Error>"#,
    )
    .await;
    let (_, cause, fix) = failure(&check_s3(&url, "").await);
    assert_eq!(cause, "clock_skew");
    assert!(fix.contains("clock"), "{fix}");

    let url = replay(
        400,
        &[],
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message><Token-0>FwoGZXIvYXdzEXAMPLE</Token-0><RequestId>7H2QK9D0ZC3T1B6A</RequestId><HostId>ZXhwaXJlZC1ob3N0LWlk</HostId></Error>"#,
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
