//! moto (a real S3 + STS + IAM server from PyPI) on a free loopback port, started through
//! `tests/moto/server.py` (which fixes its SigV4 check for keys with `+`/`=`), and the
//! helpers the tests use to set it up.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

use super::bounded;

/// Starts moto; returns the child (killed on drop) and its endpoint.
pub async fn start_moto() -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let launcher = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/moto/server.py");
    let mut child = Command::new(super::test_tool("python3"))
        .args([
            launcher.to_str().unwrap(),
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start moto ({e}); run `bash scripts/setup.sh --tests` to install moto[server]")
        });
    let ready = async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "moto exited ({status}); run `bash scripts/setup.sh --tests` to install moto[server]"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    bounded(Duration::from_secs(60), ready).await;
    (child, format!("http://127.0.0.1:{port}"))
}

/// Runs `python3 ARGS`, which must succeed; returns its stdout.
pub async fn python(args: &[&str]) -> String {
    let out = bounded(
        Duration::from_secs(120),
        Command::new(super::test_tool("python3"))
            .args(args)
            .output(),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "python3 {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Turns IAM enforcement on (every request from now on is checked) or off.
pub async fn enforcement(endpoint: &str, on: bool) {
    let free_requests = if on { "0" } else { "1000000000" };
    python(&[
        "-c",
        &format!(
            "import urllib.request as u; u.urlopen(u.Request('{endpoint}/moto-api/reset-auth', \
             data=b'{free_requests}', method='POST', headers={{'Content-Type': 'text/plain'}})).read()"
        ),
    ])
    .await;
}
