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
    let (code, stderr) = run_with_kubeconfig(path.to_str().unwrap());
    assert_eq!(code, Some(1));
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0]
            .starts_with("error: cannot reach the Kubernetes API server at https://127.0.0.1:1"),
        "{stderr}"
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
