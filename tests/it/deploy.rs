//! The deployment artefacts: `deploy/kubernetes/` and the `Dockerfile`, checked with the tools
//! platform teams run on them (kubernetes-validate, hadolint, from `.venv/`, which
//! `bash scripts/setup.sh --tests` installs from scripts/test-requirements.txt) and against
//! pail's own config reader, with the environment the pod would have.

use crate::support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

/// The Kubernetes version the manifests are validated against: the oldest minor release
/// still in (extended) support on the major clouds, so no field newer than it slips in.
const KUBERNETES_VERSION: &str = "1.30";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn manifests() -> PathBuf {
    repo().join("deploy/kubernetes")
}

fn describe(o: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs a test tool from `.venv/bin` ([`support::test_tool`]) in the repository, bounded;
/// a missing tool fails the test with the command that installs it.
async fn tool<S: AsRef<OsStr>>(name: &str, args: &[S]) -> Output {
    let program = support::test_tool(name);
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(args).current_dir(repo()).kill_on_drop(true);
    let output = support::bounded(Duration::from_secs(120), cmd.output()).await;
    output.unwrap_or_else(|e| {
        panic!(
            "cannot run {} ({e}); install the test tools with `bash scripts/setup.sh --tests`",
            program.display()
        )
    })
}

/// A manifest as JSON, read by PyYAML (installed in `.venv/` with kubernetes-validate): the
/// real YAML semantics, block scalars included.
async fn manifest(file: &str) -> Value {
    let path = manifests().join(file);
    let script = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)";
    let o = tool(
        "python3",
        &[OsStr::new("-c"), OsStr::new(script), path.as_os_str()],
    )
    .await;
    assert!(o.status.success(), "reading {file}: {}", describe(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The `pail.toml` the ConfigMap holds.
async fn configmap_config() -> String {
    let cm = manifest("configmap.yaml").await;
    cm["data"]["pail.toml"]
        .as_str()
        .unwrap_or_else(|| panic!("configmap.yaml has no data.\"pail.toml\": {cm}"))
        .to_string()
}

/// The ConfigMap's pail.toml read by pail's config reader, with the pod's environment.
async fn configmap_settings() -> pail::config::Settings {
    let text = configmap_config().await;
    let env = pod_env().await;
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    pail::config::parse(Path::new("pail.toml"), &text, &lookup)
        .unwrap_or_else(|e| panic!("the ConfigMap's pail.toml: {e}"))
}

/// The `pail` container of the Deployment.
fn container(deployment: &Value) -> &Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "pail"))
        .unwrap_or_else(|| panic!("deployment.yaml has no container named pail"))
}

/// The environment the pail container gets: its `env` values and every key of the Secret it
/// takes with `envFrom` (secret.yaml's placeholders).
async fn pod_env() -> Vec<(String, String)> {
    let deployment = manifest("deployment.yaml").await;
    let secret = manifest("secret.yaml").await;
    let c = container(&deployment);
    let mut env: Vec<(String, String)> = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let value = e["value"].as_str().unwrap_or_else(|| panic!("env {e}"));
            (e["name"].as_str().unwrap().to_string(), value.to_string())
        })
        .collect();
    let from_secret = c["envFrom"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|f| f["secretRef"]["name"] == secret["metadata"]["name"]);
    assert!(from_secret, "the container does not take the Secret's keys");
    for (k, v) in secret["stringData"].as_object().unwrap() {
        env.push((k.clone(), v.as_str().unwrap().to_string()));
    }
    env
}

#[tokio::test]
async fn kubernetes_manifests_pass_kubernetes_validate() {
    let mut files: Vec<String> = std::fs::read_dir(manifests())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    files.sort();
    // kustomization.yaml is kustomize's, not a Kubernetes object: it is checked by listing
    // exactly the manifests validated here.
    let kustomization = manifest("kustomization.yaml").await;
    let mut resources: Vec<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    resources.sort();
    assert_eq!(resources, files, "kustomization.yaml's resources");
    for expected in [
        "configmap.yaml",
        "deployment.yaml",
        "pdb.yaml",
        "secret.yaml",
        "service.yaml",
        "serviceaccount.yaml",
    ] {
        assert!(files.iter().any(|f| f == expected), "{expected} is missing");
    }

    let mut args = vec![
        "--strict".to_string(),
        "-k".into(),
        KUBERNETES_VERSION.into(),
    ];
    args.extend(files.iter().map(|f| format!("deploy/kubernetes/{f}")));
    let o = tool("kubernetes-validate", &args).await;
    assert!(o.status.success(), "kubernetes-validate: {}", describe(&o));
    // An unknown kind or apiVersion is only a warning (exit 0): every file must have passed
    // against a real schema.
    let out = String::from_utf8_lossy(&o.stdout);
    for f in &files {
        assert!(
            out.lines()
                .any(|l| l.contains(&format!("deploy/kubernetes/{f} passed for resource"))),
            "{f} was not validated against a schema: {}",
            describe(&o)
        );
    }
}

#[tokio::test]
async fn dockerfile_passes_hadolint() {
    let o = tool(
        "hadolint",
        &["--no-color", "--config", ".hadolint.yaml", "Dockerfile"],
    )
    .await;
    assert!(o.status.success(), "hadolint: {}", describe(&o));
    // The image's health check is pail itself: no curl or wget in the image.
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert!(
        dockerfile
            .lines()
            .any(|l| l.starts_with("HEALTHCHECK ") && l.ends_with(r#"CMD ["pail", "healthcheck"]"#)),
        "the Dockerfile has no HEALTHCHECK running `pail healthcheck`"
    );
}

#[tokio::test]
async fn termination_grace_period_outlasts_shutdown_timeout() {
    let deployment = manifest("deployment.yaml").await;
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("deployment.yaml sets terminationGracePeriodSeconds");
    let timeout = configmap_settings().await.worker.shutdown_timeout;
    assert!(
        Duration::from_secs(grace) > timeout,
        "terminationGracePeriodSeconds {grace} must be above shutdown_timeout {timeout:?}: \
         the kubelet would SIGKILL pail mid-drain"
    );
}

/// The container's memory limit is sized from `[worker] memory_limit` (deploy/kubernetes/
/// README.md, "Memory"): at least 1.5 times it, for what the shares only estimate.
#[tokio::test]
async fn container_memory_limit_covers_the_memory_budget() {
    let deployment = manifest("deployment.yaml").await;
    let resources = &container(&deployment)["resources"];
    let quantity = |q: &Value| -> u64 {
        let q = q.as_str().unwrap_or_else(|| panic!("memory quantity {q}"));
        let (digits, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
        let scale = match unit {
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            _ => panic!("memory quantity {q}: use Mi or Gi"),
        };
        digits.parse::<u64>().unwrap() * scale
    };
    let limit = quantity(&resources["limits"]["memory"]);
    let request = quantity(&resources["requests"]["memory"]);
    let budget = configmap_settings().await.worker.memory_limit as u64;
    assert!(
        request <= limit && request >= budget,
        "memory request {request} must be between memory_limit {budget} and the limit {limit}"
    );
    assert!(
        limit >= budget * 3 / 2,
        "container memory limit {limit} is under 1.5 x memory_limit {budget}"
    );
}

/// `pail check-config` accepts the ConfigMap's pail.toml with exactly the environment the pod
/// gets (the Deployment's env and the Secret's keys): every `${VAR}` it uses is supplied.
#[tokio::test]
async fn configmap_config_passes_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pail.toml");
    std::fs::write(&path, configmap_config().await).unwrap();
    let mut cmd = tokio::process::Command::new(support::pail_bin());
    cmd.arg("check-config")
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path())
        .env_clear()
        .envs(pod_env().await)
        .kill_on_drop(true);
    let o = support::bounded(Duration::from_secs(60), cmd.output())
        .await
        .unwrap();
    assert!(o.status.success(), "pail check-config: {}", describe(&o));
}

/// What the Deployment mounts and exposes is what the config and the image read: the config
/// at the image's `--config` path, the projected token at `token_file`, the probes on the
/// telemetry port.
#[tokio::test]
async fn deployment_provides_what_the_config_reads() {
    let deployment = manifest("deployment.yaml").await;
    let pod = &deployment["spec"]["template"]["spec"];
    let c = container(&deployment);
    let config: toml::Value = toml::from_str(&configmap_config().await).unwrap();
    let mount = |volume: &str| -> PathBuf {
        let m = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume)
            .unwrap_or_else(|| panic!("volume {volume} is not mounted"));
        PathBuf::from(m["mountPath"].as_str().unwrap())
    };
    let volume = |name: &str| -> &Value {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };

    // The ConfigMap's pail.toml lands where the image's default command reads it.
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let config_mount = mount("config");
    assert!(
        dockerfile.contains(&format!(
            r#"CMD ["run", "--config", "{}"]"#,
            config_mount.join("pail.toml").display()
        )),
        "the image does not read {}/pail.toml",
        config_mount.display()
    );
    assert_eq!(volume("config")["configMap"]["name"], "pail");

    // The projected service account token is the web identity token file, with an audience.
    let source = &volume("token")["projected"]["sources"][0]["serviceAccountToken"];
    let token_path = mount("token").join(source["path"].as_str().unwrap());
    let auth = &config["destinations"][0]["auth"];
    assert_eq!(auth["method"].as_str(), Some("web_identity"));
    assert_eq!(
        auth["token_file"].as_str().map(Path::new),
        Some(token_path.as_path())
    );
    assert_eq!(source["audience"], "sts.amazonaws.com");
    assert_eq!(pod["serviceAccountName"], "pail");

    // The probes and the metrics port are the telemetry listener's port.
    let listen = config["telemetry"]["listen"].as_str().unwrap();
    let port: u64 = listen.rsplit_once(':').unwrap().1.parse().unwrap();
    let metrics = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a container port named metrics");
    assert_eq!(metrics["containerPort"].as_u64(), Some(port));
    for (probe, path) in [
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/livez"),
    ] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "metrics", "{probe}");
    }
}
