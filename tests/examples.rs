//! The walkthrough in examples/README.md, step by step in its order, against the real API
//! server and the operator's own `run` code (with the LWA emulator standing in for Amazon):
//! the Team namespace, credentials sealed with the real `seal` command, the connection becoming
//! Ready, the Gateway Deployment mounting the runtime Secret, and a security log review.
//!
//! Namespaces and cluster-scoped names are made unique so the test shares a cluster safely.

mod support;

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, PostParams};
use serde_json::Value;

use amazon_seller_operator::api::AmazonSellerConnection;
use amazon_seller_operator::api::review::SecurityLogReview;
use amazon_seller_operator::names::PUBLIC_KEY_CONFIGMAP;

use support::eventually::eventually;
use support::lwa_emulator::LwaEmulator;
use support::operator::{RunFlags, RunningOperator};
use support::scenario::has_condition;
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
    let flags = RunFlags::new()
        .operator_namespace(&operator_ns)
        .watching(&[&ns])
        .lwa(&lwa)
        .without_leader_election()
        .without_webhook();
    let operator = RunningOperator::start(&admin, "walkthrough", flags.args());
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &operator_ns);
    eventually("the published public key", Duration::from_secs(30))
        .until(
            async || configmaps.get_opt(PUBLIC_KEY_CONFIGMAP).await.unwrap(),
            Option::is_some,
        )
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
    let ready = eventually("the connection to become Ready", Duration::from_secs(30))
        .poll(async || {
            let c = connections.get("acme-us").await.unwrap();
            if has_condition(&c, "Ready", "True") {
                Ok(c)
            } else {
                Err(c.status)
            }
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

    operator.stop().await;
}
