//! `run` start-up failures: one clear line and a non-zero exit, never a stack of retries.
//! Unreachable server and missing RBAC use the real binary (the RBAC case against the real
//! API server, impersonating an identity without rights); the missing CRD uses the mocked API
//! tier, because the shared test cluster always has the CRD installed.

mod support;

use std::process::Command;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;

use amazon_seller_operator::operator::{RunError, preflight};

use support::cluster;

fn run_with_kubeconfig(kubeconfig: &str) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_amazon-seller-operator"))
        .args([
            "run",
            "--leader-election=false",
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "text",
        ])
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Everything a failed start printed, stdout and stderr together: what a person at a terminal
/// reads.
fn everything(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// One line: what was tried, the cause, the fix; no doubled quotes, no wrapped errors' words,
/// no log or audit lines.
fn one_clear_line(output: &std::process::Output) -> String {
    let text = everything(output);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{text}");
    let line = lines[0].to_owned();
    assert!(line.starts_with("error: "), "{line}");
    for noise in [
        "'\"",
        "\"'",
        "ServiceError",
        "(os error",
        "failed to infer config",
        "{",
    ] {
        assert!(!line.contains(noise), "{noise:?} in {line}");
    }
    assert!(
        line.contains("make demo") || line.contains("--context"),
        "no fix: {line}"
    );
    line
}

fn run_without_cluster(env: &[(&str, &str)]) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_amazon-seller-operator"));
    command
        .args([
            "run",
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "text",
        ])
        .env("HOME", home.path())
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("binary runs")
}

#[test]
fn an_unreachable_api_server_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]\n\
         users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
    )
    .unwrap();
    let output = run_without_cluster(&[("KUBECONFIG", path.to_str().unwrap())]);
    assert_eq!(output.status.code(), Some(1));
    let line = one_clear_line(&output);
    assert_eq!(
        line,
        format!(
            "error: cannot reach the Kubernetes API server at https://127.0.0.1:1 (kubeconfig {} from KUBECONFIG): \
             connection refused; is the cluster running? run `make demo` for a local control plane, \
             or point KUBECONFIG=/path/to/kubeconfig (or --kubeconfig, --context) at a cluster",
            path.display()
        )
    );
    // The same file named by the flag, with a context it does not have.
    let named = Command::new(env!("CARGO_BIN_EXE_amazon-seller-operator"))
        .args([
            "run",
            "--kubeconfig",
            path.to_str().unwrap(),
            "--context",
            "staging",
        ])
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let line = one_clear_line(&named);
    assert!(
        line.contains(&format!("kubeconfig {} from --kubeconfig, context staging: it has no context \"staging\" (it has: x)", path.display())),
        "{line}"
    );
}

#[test]
fn no_cluster_at_all_is_one_line_naming_what_was_tried_and_the_fix() {
    let output = run_without_cluster(&[]);
    assert_eq!(output.status.code(), Some(1));
    let line = one_clear_line(&output);
    assert!(
        line.starts_with("error: no Kubernetes cluster to connect to: no kubeconfig found (KUBECONFIG is not set and "),
        "{line}"
    );
    assert!(
        line.contains("/.kube/config does not exist) and not running in a pod; run `make demo`")
            && line.contains("KUBECONFIG=/path/to/kubeconfig"),
        "{line}"
    );

    let output = run_without_cluster(&[("KUBECONFIG", "/nonexistent/kubeconfig")]);
    let line = one_clear_line(&output);
    assert!(
        line.starts_with(
            "error: cannot use the kubeconfig /nonexistent/kubeconfig from KUBECONFIG: no such file or directory; run `make demo`"
        ),
        "{line}"
    );
}

#[tokio::test]
async fn missing_rbac_is_one_clear_line() {
    let Some(_) = cluster("missing_rbac_is_one_clear_line").await else {
        return;
    };
    // The admin kubeconfig, impersonating a user no Role grants anything.
    let admin = std::fs::read_to_string(std::env::var("ASO_TEST_KUBECONFIG").unwrap()).unwrap();
    let mut config: serde_json::Value = serde_saphyr::from_str(&admin).unwrap();
    config["users"][0]["user"]["as"] = "aso-test-nobody".into();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    let (code, stderr) =
        tokio::task::spawn_blocking(move || run_with_kubeconfig(path.to_str().unwrap()))
            .await
            .unwrap();
    assert_eq!(code, Some(1));
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("error: missing RBAC permission: the operator's identity cannot list amazonsellerconnections in all namespaces"),
        "{stderr}"
    );
}

/// `--log-format text` is for a person at a terminal: no JSON line at all. Audit records come
/// as `AUDIT` text lines, and `audit verify` checks that chain as it checks JSON lines.
#[tokio::test]
async fn text_logs_carry_audit_records_as_verifiable_text_lines() {
    let Some(client) = cluster("text_logs_carry_audit_records_as_verifiable_text_lines").await
    else {
        return;
    };
    let namespace = support::create_namespace(&client, "aso-text", None).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_amazon-seller-operator"))
        .args([
            "run",
            "--no-leader-election",
            "--no-webhook-enabled",
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "text",
            "--operator-namespace",
            &namespace,
            "--watch-namespace",
            &namespace,
        ])
        .env("KUBECONFIG", std::env::var("ASO_TEST_KUBECONFIG").unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    let started = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut line = String::new();
        while stdout.read_line(&mut line).unwrap_or(0) > 0 {
            text.push_str(&line);
            if line.contains("leader_acquired") {
                break;
            }
            line.clear();
        }
        (stdout, text)
    });
    let started = tokio::time::timeout(std::time::Duration::from_secs(60), started).await;
    if started.is_err() {
        // The reading task ends with the child's output.
        child.kill().unwrap();
        panic!("the operator did not start within 60 s");
    }
    let (mut stdout, mut text) = started.unwrap().unwrap();
    // Killed, not stopped: this checks what it wrote, not how it stops.
    child.kill().unwrap();
    child.wait().unwrap();
    use std::io::Read;
    stdout.read_to_string(&mut text).unwrap();
    assert!(
        text.lines().all(|l| !l.trim_start().starts_with('{')),
        "a JSON line in text logs:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(" AUDIT seq=0 category=service action=audit_log_started ")),
        "{text}"
    );
    assert!(text.contains(" INFO "), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("operator.log");
    std::fs::write(&log, &text).unwrap();
    let verified = Command::new(env!("CARGO_BIN_EXE_amazon-seller-operator"))
        .args(["audit", "verify", log.to_str().unwrap()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{report}\n{text}");
    assert!(report.contains(": OK: "), "{report}");
}

/// Mocked API: `/version` answers, the CRD's list endpoint is 404.
#[tokio::test]
async fn a_missing_crd_is_reported_with_the_fix() {
    let service = tower::service_fn(|request: Request<Body>| async move {
        let path = request.uri().path().to_owned();
        let (status, body) = if path == "/version" {
            (200, r#"{"major":"1","minor":"36","gitVersion":"v1.36.3","gitCommit":"","gitTreeState":"","buildDate":"","goVersion":"","compiler":"","platform":""}"#.to_owned())
        } else {
            assert!(
                path.starts_with("/apis/connectors.openteam.io/v1alpha1/amazonsellerconnections"),
                "unexpected request {path}"
            );
            (404, r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","code":404}"#.to_owned())
        };
        Ok::<_, std::convert::Infallible>(
            Response::builder()
                .status(status)
                .body(Body::from(body.into_bytes()))
                .unwrap(),
        )
    });
    let client = Client::new(service, "default");
    let err = preflight(&client, "mock", &[None]).await.unwrap_err();
    assert!(matches!(err, RunError::CrdMissing));
    assert!(
        err.to_string()
            .contains("amazon-seller-operator crd | kubectl apply -f -")
    );
}
