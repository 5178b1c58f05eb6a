//! The walkthrough in examples/README.md, step by step in its order, against the real API
//! server and the operator's own `run` code (with the LWA emulator standing in for Amazon):
//! the Team namespace, credentials sealed with the real `seal` command, the connection becoming
//! Ready, the Gateway Deployment mounting the runtime Secret, and a security log review.
//!
//! Namespaces and cluster-scoped names are made unique so the test shares a cluster safely.

mod support;

use std::process::Command;
use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, PostParams};
use serde_json::Value;
use tokio::sync::oneshot;

use amazon_seller_operator::api::AmazonSellerConnection;
use amazon_seller_operator::api::review::SecurityLogReview;
use amazon_seller_operator::config::{Cli, Command as Sub};
use amazon_seller_operator::names::PUBLIC_KEY_CONFIGMAP;
use amazon_seller_operator::observability::audit::AuditLog;
use amazon_seller_operator::observability::metrics::Metrics;
use amazon_seller_operator::operator::{self, Deps};

use support::lwa_emulator::LwaEmulator;
use support::{cluster, create_namespace, install_crds, repo_path, unique_name};

/// An example file with the walkthrough's namespace `team-acme` replaced by `namespace`.
fn example(file: &str, namespace: &str) -> String {
    std::fs::read_to_string(repo_path(file))
        .unwrap()
        .replace("namespace: team-acme", &format!("namespace: {namespace}"))
        .replace("name: team-acme", &format!("name: {namespace}"))
}

fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_saphyr::from_str(yaml).unwrap()
}

async fn wait<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..300 {
        if let Some(found) = probe().await {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn the_examples_walkthrough_works_in_order() {
    let Some(admin) = cluster("the_examples_walkthrough_works_in_order").await else {
        return;
    };
    install_crds(&admin).await;
    let lwa = LwaEmulator::start().await;
    let seller = lwa.new_seller();
    let operator_ns = create_namespace(&admin, "aso", None).await;
    let ns = unique_name("team-acme");

    // 1. The Team's namespace, labelled for Team acme.
    let namespace: Namespace = parse(&example("examples/team-namespace.yaml", &ns));
    assert_eq!(
        namespace.metadata.labels.as_ref().unwrap()["connectors.openteam.io/team"],
        "acme"
    );
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();

    // The operator, as installed, watching that namespace.
    let argv = [
        "amazon-seller-operator",
        "run",
        "--metrics-addr",
        "127.0.0.1:0",
        "--operator-namespace",
        &operator_ns,
        "--watch-namespace",
        &ns,
        "--lwa-endpoint",
        &lwa.https_url(),
        "--lwa-ca-file",
        &lwa.ca_file().display().to_string(),
        "--leader-election=false",
        "--webhook-enabled=false",
    ];
    let Sub::Run(args) = Cli::parse_from(argv).command else {
        unreachable!()
    };
    let metrics = Metrics::new().unwrap();
    let deps = Deps {
        client: admin.clone(),
        url: "test".into(),
        identity: "walkthrough".into(),
        metrics: metrics.clone(),
        audit: AuditLog::to_writer(std::io::sink(), metrics, "walkthrough").unwrap(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(operator::run_with(*args, deps, async move {
        let _ = stopped.await;
    }));
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &operator_ns);
    wait("the published public key", async || {
        configmaps.get_opt(PUBLIC_KEY_CONFIGMAP).await.unwrap()
    })
    .await;

    // 2. The README's `seal` command, secrets from files, the public key from the cluster.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("client-secret"), &seller.client_secret).unwrap();
    std::fs::write(dir.path().join("refresh-token"), &seller.refresh_token).unwrap();
    let kubeconfig = std::env::var("ASO_TEST_KUBECONFIG").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_amazon-seller-operator"))
        .current_dir(dir.path())
        .env("KUBECONFIG", &kubeconfig)
        .args([
            "seal",
            "--public-key-from-cluster",
            "--operator-namespace",
            &operator_ns,
        ])
        .args([
            "--team",
            "acme",
            "--namespace",
            &ns,
            "--name",
            "acme-us-lwa",
            "--connection",
            "acme-us",
        ])
        .args(["--client-id", &seller.client_id])
        .args([
            "--client-secret-file",
            "client-secret",
            "--refresh-token-file",
            "refresh-token",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sealed_yaml = String::from_utf8(output.stdout).unwrap();
    for plaintext in [&seller.client_secret, &seller.refresh_token] {
        assert!(
            !sealed_yaml.contains(plaintext.as_str()),
            "the sealed Secret holds plaintext"
        );
    }
    let sealed: Secret = parse(&sealed_yaml);
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    secrets
        .create(&PostParams::default(), &sealed)
        .await
        .unwrap();

    // The webhook-only alternative is a placeholder intake, never real values.
    let intake: Secret = parse(&example("examples/intake-secret.yaml", &ns));
    let labels = intake.metadata.labels.clone().unwrap();
    assert_eq!(
        labels["connectors.openteam.io/secret-role"],
        "lwa-credentials"
    );
    let string_data = intake.string_data.clone().unwrap();
    for key in ["clientId", "clientSecret", "refreshToken"] {
        assert!(
            string_data[key].starts_with('<'),
            "{key} must stay a placeholder"
        );
    }
    assert!(
        std::fs::read_to_string(repo_path("examples/intake-secret.yaml"))
            .unwrap()
            .starts_with("# REQUIRES THE ADMISSION WEBHOOK")
    );

    // 3. The connection becomes Ready with the derived metadata.
    let connection: AmazonSellerConnection = parse(&example("examples/connection.yaml", &ns));
    let connections: Api<AmazonSellerConnection> = Api::namespaced(admin.clone(), &ns);
    connections
        .create(&PostParams::default(), &connection)
        .await
        .unwrap();
    let ready = wait("the connection to become Ready", async || {
        let c = connections.get("acme-us").await.unwrap();
        let ready = c
            .status
            .as_ref()?
            .conditions
            .iter()
            .any(|x| x.type_ == "Ready" && x.status == "True");
        ready.then_some(c)
    })
    .await;
    let status = ready.status.clone().unwrap();
    assert_eq!(status.marketplace_id.as_deref(), Some("ATVPDKIKX0DER"));
    assert_eq!(status.region.as_deref(), Some("NA"));
    let runtime_name = status.runtime_secret_name.clone().unwrap();
    assert!(secrets.get_opt(&runtime_name).await.unwrap().is_some());

    // 4. The Gateway: a pod of a listed gateway, mounting exactly that Secret as a volume.
    let gateway: Deployment = parse(&example("examples/gateway.yaml", &ns));
    let created = Api::<Deployment>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &gateway)
        .await
        .unwrap();
    let pod = created.spec.unwrap().template;
    let gateway_id =
        pod.metadata.unwrap().labels.unwrap()["connectors.openteam.io/gateway"].clone();
    assert!(
        ready.spec.gateways.contains(&gateway_id),
        "{gateway_id} is not in spec.gateways"
    );
    let pod = serde_json::to_value(pod.spec.unwrap()).unwrap();
    let volumes: Vec<&Value> = pod["volumes"].as_array().unwrap().iter().collect();
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0]["secret"]["secretName"], runtime_name.as_str());
    for container in pod["containers"].as_array().unwrap() {
        assert!(container.get("env").is_none() && container.get("envFrom").is_none());
        for mount in container["volumeMounts"].as_array().unwrap() {
            assert!(
                mount.get("subPath").is_none(),
                "subPath copies never see a new token"
            );
            assert_eq!(mount["readOnly"], true);
        }
    }

    // 5. A security log review, under a name of its own.
    let review_name = unique_name("review");
    let review_yaml = std::fs::read_to_string(repo_path("examples/security-log-review.yaml"))
        .unwrap()
        .replace("name: review-2026-05-15", &format!("name: {review_name}"));
    let review: SecurityLogReview = parse(&review_yaml);
    Api::<SecurityLogReview>::all(admin.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    let _ = Api::<SecurityLogReview>::all(admin.clone())
        .delete(&review_name, &Default::default())
        .await;

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the operator stops")
        .unwrap()
        .expect("the operator ran without error");
}
