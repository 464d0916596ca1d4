//! `pail connection-test` as a customer runs it (the binary, `--json` and text), against real
//! servers: SeaweedFS with STS validating real OIDC tokens, and moto with IAM enforcement.
//! A good setup passes; each failure the servers can produce exits non-zero and names its
//! cause and fix: bad, expired and wrong-audience tokens, Put denied, Delete denied, a missing
//! bucket, a wrong secret and an unreachable endpoint.
//!
//! Needs `weed` and moto (`bash scripts/setup.sh --tests`).

use crate::support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::moto::{python, start_moto};
use support::oidc::Issuer;
use support::seaweed::{AUDIENCE, ROLE_ADMIN, ROLE_PUT_DELETE, Seaweed};
use tokio::process::Command;

/// Runs `pail connection-test --config <text> ARGS`; returns the exit code, stdout, stderr.
async fn connection_test(
    dir: &Path,
    name: &str,
    config: &str,
    args: &[&str],
) -> (i32, String, String) {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let out = support::bounded(
        Duration::from_secs(120),
        Command::new(support::pail_bin())
            .args(["connection-test", "--config", path.to_str().unwrap()])
            .args(args)
            .env("PAIL_LOG", "warn")
            .output(),
    )
    .await
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The JSON report of one destination, and the exit code.
async fn check_json(dir: &Path, name: &str, config: &str, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = connection_test(dir, name, config, &all).await;
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {stdout}\nstderr: {stderr}"));
    assert_eq!(report["ok"], code == 0, "{name}: {report:#}");
    (code, report["destinations"][0].clone())
}

/// The failed step of a destination report.
fn failed_step(dest: &Value) -> &Value {
    dest["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["status"] == "failed")
        .unwrap_or_else(|| panic!("no failed step: {dest:#}"))
}

fn step<'a>(dest: &'a Value, name: &str) -> &'a Value {
    dest["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {dest:#}"))
}

fn web_identity(sw: &Seaweed, url: &str, role: &str, token_file: &Path) -> String {
    format!(
        "[source]\nkind = \"file\"\npath = \"-\"\n[[destinations]]\nname = \"sw\"\nurl = \"{url}\"\n\
         endpoint = \"{0}\"\ntimestamp = \"field:ts\"\n[destinations.auth]\nmethod = \"web_identity\"\n\
         role_arn = \"{role}\"\ntoken_file = \"{1}\"\nsts_endpoint = \"{0}\"\n",
        sw.endpoint,
        token_file.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_identity_setups_pass_and_token_problems_name_the_trust_policy_to_fix() {
    let issuer = Issuer::start().await;
    let sw = Seaweed::start(&issuer.url, &["lake"]).await;
    let dir = tempfile::tempdir().unwrap();
    let token = |name: &str, aud: &str, ttl: i64| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            issuer.token("system:serviceaccount:pail:worker", aud, ttl),
        )
        .unwrap();
        path
    };
    let good = token("good", AUDIENCE, 600);

    // A good setup, through the Put/Delete-only role, with a multipart upload too.
    let cfg = web_identity(&sw, "s3://lake/ct", ROLE_PUT_DELETE, &good);
    let (code, dest) = check_json(dir.path(), "good", &cfg, &["--multipart"]).await;
    assert_eq!(code, 0, "{dest:#}");
    assert_eq!(dest["writable"], true);
    assert!(
        step(&dest, "credentials")["detail"]
            .as_str()
            .unwrap()
            .contains(ROLE_PUT_DELETE),
        "{dest:#}"
    );
    for name in ["put", "multipart", "delete"] {
        assert_eq!(step(&dest, name)["status"], "ok", "{name}: {dest:#}");
    }
    assert_ne!(dest["conditional_writes"], "unknown", "{dest:#}");
    // Nothing is left behind: the admin sees no test object.
    assert!(
        sw.objects("lake")
            .await
            .iter()
            .all(|(k, _)| !k.contains("connection-test")),
        "test objects left behind"
    );

    // The text output says the same in lines.
    let (code, text, _) = connection_test(dir.path(), "good-text", &cfg, &[]).await;
    assert_eq!(code, 0);
    assert!(
        text.contains("ok   put") && text.contains("PASSED"),
        "{text}"
    );

    // A garbage token: STS refuses; the fix is the role's trust policy.
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, "not-a-jwt").unwrap();
    let cfg = web_identity(&sw, "s3://lake/ct", ROLE_ADMIN, &garbage);
    let (code, dest) = check_json(dir.path(), "garbage", &cfg, &[]).await;
    assert_eq!(code, 1);
    let failed = failed_step(&dest);
    assert_eq!(failed["step"], "credentials");
    assert_eq!(failed["cause"], "token_rejected", "{failed:#}");
    assert!(
        failed["fix"].as_str().unwrap().contains("trust"),
        "{failed:#}"
    );
    assert_eq!(
        failed["policy"]["Statement"][0]["Action"],
        "sts:AssumeRoleWithWebIdentity"
    );
    assert_eq!(dest["writable"], false);

    // A token for another audience: named, with the trust policy filled in from its claims.
    let other = token("other-aud", "someone-else", 600);
    let cfg = web_identity(&sw, "s3://lake/ct", ROLE_ADMIN, &other);
    let (code, dest) = check_json(dir.path(), "audience", &cfg, &[]).await;
    assert_eq!(code, 1);
    let failed = failed_step(&dest);
    assert_eq!(failed["cause"], "wrong_audience", "{failed:#}");
    assert!(
        failed["fix"].as_str().unwrap().contains("someone-else"),
        "{failed:#}"
    );
    let conditions = &failed["policy"]["Statement"][0]["Condition"]["StringEquals"];
    let host = issuer.url.trim_start_matches("http://");
    assert_eq!(
        conditions[format!("{host}:sub")],
        "system:serviceaccount:pail:worker",
        "{failed:#}"
    );

    // An expired token.
    let expired = token("expired", AUDIENCE, -600);
    let cfg = web_identity(&sw, "s3://lake/ct", ROLE_ADMIN, &expired);
    let (code, dest) = check_json(dir.path(), "expired", &cfg, &[]).await;
    assert_eq!(code, 1);
    assert_eq!(failed_step(&dest)["cause"], "token_expired", "{dest:#}");
}

fn static_keys(endpoint: &str, bucket: &str, id: &str, secret: &str) -> String {
    format!(
        "[source]\nkind = \"file\"\npath = \"-\"\n[[destinations]]\nname = \"m\"\n\
         url = \"s3://{bucket}/onboarding\"\nendpoint = \"{endpoint}\"\ntimestamp = \"field:ts\"\n\
         [destinations.auth]\naccess_key_id = \"{id}\"\nsecret_access_key = \"{secret}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_key_setups_name_denied_put_denied_delete_bad_secrets_and_unreachable_stores() {
    let (_moto, endpoint) = start_moto().await;
    let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/moto/iam_setup.py");
    let bucket = "onboard";
    let users: Value =
        serde_json::from_str(&python(&[setup.to_str().unwrap(), &endpoint, bucket, "users"]).await)
            .unwrap();
    let keys = |who: &str| {
        (
            users[who]["access_key_id"].as_str().unwrap().to_string(),
            users[who]["secret_access_key"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    };
    let dir = tempfile::tempdir().unwrap();

    // Put and Delete allowed, nothing else: passes, and If-None-Match is honoured.
    let (id, secret) = keys("writer");
    let cfg = static_keys(&endpoint, bucket, &id, &secret);
    let (code, dest) = check_json(dir.path(), "writer", &cfg, &["--multipart"]).await;
    assert_eq!(code, 0, "{dest:#}");
    assert_eq!(dest["conditional_writes"], "honoured", "{dest:#}");
    assert_eq!(step(&dest, "multipart")["status"], "ok", "{dest:#}");

    // No s3:DeleteObject: writable, but the test fails and says DeleteObject is only for it.
    let (id, secret) = keys("put_only");
    let cfg = static_keys(&endpoint, bucket, &id, &secret);
    let (code, dest) = check_json(dir.path(), "put-only", &cfg, &[]).await;
    assert_eq!(code, 1, "{dest:#}");
    assert_eq!(dest["writable"], true);
    let failed = failed_step(&dest);
    assert_eq!(failed["step"], "delete");
    assert_eq!(failed["cause"], "delete_denied", "{failed:#}");
    assert!(
        failed["fix"]
            .as_str()
            .unwrap()
            .contains("only by this test"),
        "{failed:#}"
    );

    // No s3:PutObject: the permissions policy to attach, with the bucket and prefix.
    let (id, secret) = keys("delete_only");
    let cfg = static_keys(&endpoint, bucket, &id, &secret);
    let (code, dest) = check_json(dir.path(), "delete-only", &cfg, &[]).await;
    assert_eq!(code, 1);
    let failed = failed_step(&dest);
    assert_eq!(
        (&failed["step"], &failed["cause"]),
        (&"put".into(), &"put_denied".into())
    );
    let statement = &failed["policy"]["Statement"][0];
    assert_eq!(
        statement["Resource"],
        format!("arn:aws:s3:::{bucket}/onboarding/*")
    );
    assert!(
        statement["Action"]
            .as_array()
            .unwrap()
            .contains(&"s3:PutObject".into())
    );

    // A wrong secret: the key id is named, the secret is not printed.
    let (id, secret) = keys("writer");
    let wrong = format!("{}x", &secret[..secret.len() - 1]);
    let cfg = static_keys(&endpoint, bucket, &id, &wrong);
    let (code, stdout, _) = connection_test(dir.path(), "secret", &cfg, &["--json"]).await;
    assert_eq!(code, 1);
    assert!(
        !stdout.contains(&wrong) && !stdout.contains(&secret),
        "{stdout}"
    );
    let dest = serde_json::from_str::<Value>(&stdout).unwrap()["destinations"][0].clone();
    let failed = failed_step(&dest);
    assert_eq!(failed["cause"], "signature_mismatch", "{failed:#}");
    assert!(
        failed["message"].as_str().unwrap().contains(&id),
        "{failed:#}"
    );

    // A bucket that does not exist (for keys allowed to write to any bucket: with a policy
    // limited to one bucket, moto, like S3, answers AccessDenied first).
    let (id, secret) = keys("anywhere");
    let cfg = static_keys(&endpoint, "no-such-bucket", &id, &secret);
    let (code, dest) = check_json(dir.path(), "bucket", &cfg, &[]).await;
    assert_eq!(code, 1);
    let failed = failed_step(&dest);
    assert_eq!(failed["step"], "put");
    assert_eq!(failed["cause"], "no_such_bucket", "{failed:#}");
    assert!(failed["fix"].as_str().unwrap().contains("no-such-bucket"));

    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let cfg = static_keys(&dead, bucket, &id, &secret);
    let (code, dest) = check_json(dir.path(), "unreachable", &cfg, &[]).await;
    assert_eq!(code, 1);
    let failed = failed_step(&dest);
    assert_eq!(failed["cause"], "endpoint_unreachable", "{failed:#}");
    assert!(
        failed["fix"].as_str().unwrap().contains(&dead),
        "{failed:#}"
    );

    // A destination that is not configured is a usage error.
    let (code, _, stderr) =
        connection_test(dir.path(), "named", &cfg, &["--destination", "nope"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("no destination named \"nope\""), "{stderr}");
}
