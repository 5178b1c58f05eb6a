//! Tier 2: the real control plane (etcd + kube-apiserver, see hack/control-plane/) or any
//! cluster given by ASO_TEST_KUBECONFIG. The committed CRDs must be accepted and their rules
//! enforced by the API server itself.

mod support;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use amazon_seller_operator::api::AmazonSellerConnection;

use support::{cluster, create_namespace, install_crds, repo_path};

/// Reads an example connection and moves it into `namespace`.
fn example(file: &str, namespace: &str) -> AmazonSellerConnection {
    let text = std::fs::read_to_string(repo_path(file)).expect("example readable");
    let mut connection: AmazonSellerConnection =
        serde_saphyr::from_str(&text).expect("example parses");
    connection.metadata.namespace = Some(namespace.to_owned());
    connection
}

async fn setup(test: &str) -> Option<(Client, String)> {
    let client = cluster(test).await?;
    install_crds(&client).await;
    let namespace = create_namespace(&client, "asc-crd", Some("acme")).await;
    Some((client, namespace))
}

fn api_message(err: kube::Error) -> String {
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "expected 422 Invalid, got {status:?}");
            status.message
        }
        other => panic!("expected an API rejection, got {other}"),
    }
}

#[tokio::test]
async fn crds_become_established_with_the_printer_columns() {
    let Some(client) = cluster("crds_become_established_with_the_printer_columns").await else {
        return;
    };
    let installed = install_crds(&client).await;
    assert!(!installed.is_empty());
    let crd = Api::<CustomResourceDefinition>::all(client)
        .get("amazonsellerconnections.connectors.openteam.io")
        .await
        .unwrap();
    let columns: Vec<String> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    for expected in [
        "Team",
        "Seller",
        "Marketplace",
        "Region",
        "Ready",
        "Token expires",
        "Age",
    ] {
        assert!(
            columns.iter().any(|c| c == expected),
            "missing column {expected}: {columns:?}"
        );
    }
    assert_eq!(
        crd.spec.names.short_names,
        Some(vec!["asc".to_owned(), "sellerconn".to_owned()])
    );
}

#[tokio::test]
async fn valid_example_is_accepted_and_defaults_are_applied() {
    let Some((client, ns)) = setup("valid_example_is_accepted_and_defaults_are_applied").await
    else {
        return;
    };
    let api: Api<AmazonSellerConnection> = Api::namespaced(client, &ns);
    let mut connection = example("examples/connection.yaml", &ns);
    // Leave out the defaulted fields so the server must fill them in.
    let mut value = serde_json::to_value(&connection).unwrap();
    let spec = value["spec"].as_object_mut().unwrap();
    spec.remove("renewBefore");
    spec.remove("environment");
    spec.remove("suspended");
    connection = serde_json::from_value(value).unwrap();
    let created = api
        .create(&PostParams::default(), &connection)
        .await
        .unwrap();
    assert_eq!(created.spec.renew_before, "20m");
    assert!(!created.spec.suspended);
    assert_eq!(created.spec.marketplace, "US");
}

#[tokio::test]
async fn each_schema_invalid_example_is_rejected_naming_its_field() {
    let Some((client, ns)) =
        setup("each_schema_invalid_example_is_rejected_naming_its_field").await
    else {
        return;
    };
    let api: Api<AmazonSellerConnection> = Api::namespaced(client, &ns);
    let mut checked = 0;
    for entry in std::fs::read_dir(repo_path("examples")).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        if !file.starts_with("invalid-") {
            continue;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("# expect: ").map(str::to_owned))
            .unwrap();
        let connection = example(&format!("examples/{file}"), &ns);
        let err = api
            .create(&PostParams::default(), &connection)
            .await
            .expect_err(&format!("{file} must be rejected by the API server"));
        let message = api_message(err);
        assert!(
            message.contains(&format!("{expected}:")),
            "{file}: expected the server to name {expected}, got: {message}"
        );
        checked += 1;
    }
    assert!(checked >= 4);
}

#[tokio::test]
async fn seller_id_and_team_id_cannot_change() {
    let Some((client, ns)) = setup("seller_id_and_team_id_cannot_change").await else {
        return;
    };
    let api: Api<AmazonSellerConnection> = Api::namespaced(client, &ns);
    api.create(
        &PostParams::default(),
        &example("examples/connection.yaml", &ns),
    )
    .await
    .unwrap();
    for (field, value) in [("sellerId", "B3FHEXAMPLEYWS"), ("teamId", "other-team")] {
        let err = api
            .patch(
                "acme-us",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { field: value } })),
            )
            .await
            .expect_err(&format!("changing {field} must be rejected"));
        let message = api_message(err);
        assert!(
            message.contains(&format!("spec.{field}")) && message.contains("immutable"),
            "{field}: {message}"
        );
    }
    // Mutable fields still change.
    let patched = api
        .patch(
            "acme-us",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "suspended": true, "marketplace": "GB" } })),
        )
        .await
        .unwrap();
    assert!(patched.spec.suspended);
    assert_eq!(patched.spec.seller_id, "A3FHEXAMPLEYWS");
}

#[tokio::test]
async fn status_subresource_writes_status_and_never_spec() {
    let Some((client, ns)) = setup("status_subresource_writes_status_and_never_spec").await else {
        return;
    };
    let api: Api<AmazonSellerConnection> = Api::namespaced(client, &ns);
    api.create(
        &PostParams::default(),
        &example("examples/connection.yaml", &ns),
    )
    .await
    .unwrap();
    let patch = json!({
        "apiVersion": "connectors.openteam.io/v1alpha1",
        "kind": "AmazonSellerConnection",
        "spec": { "marketplace": "DE" },
        "status": {
            "marketplaceId": "ATVPDKIKX0DER",
            "region": "NA",
            "conditions": [{
                "type": "Ready", "status": "False", "reason": "Pending",
                "message": "waiting for the first token", "lastTransitionTime": "2026-01-01T00:00:00Z"
            }]
        }
    });
    let after = api
        .patch_status(
            "acme-us",
            &PatchParams::apply("aso-tests").force(),
            &Patch::Apply(&patch),
        )
        .await
        .unwrap();
    assert_eq!(
        after.spec.marketplace, "US",
        "a status write must not change spec"
    );
    let status = after.status.expect("status written");
    assert_eq!(status.marketplace_id.as_deref(), Some("ATVPDKIKX0DER"));
    assert_eq!(status.conditions.len(), 1);

    // And a main-resource write cannot set status.
    let after = api
        .patch(
            "acme-us",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "region": "EU" } })),
        )
        .await
        .unwrap();
    assert_eq!(after.status.unwrap().region.as_deref(), Some("NA"));
}

#[tokio::test]
async fn core_api_round_trips_namespaces_and_secrets() {
    let Some(client) = cluster("core_api_round_trips_namespaces_and_secrets").await else {
        return;
    };
    let ns = create_namespace(&client, "core", Some("acme")).await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let stored = namespaces.get(&ns).await.unwrap();
    assert_eq!(
        stored
            .metadata
            .labels
            .unwrap()
            .get("connectors.openteam.io/team")
            .map(String::as_str),
        Some("acme")
    );
    let secrets: Api<Secret> = Api::namespaced(client, &ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "round-trip" },
        "type": "Opaque",
        "stringData": { "key": "value" }
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let read = secrets.get("round-trip").await.unwrap();
    assert_eq!(read.data.unwrap()["key"].0, b"value");
}

/// What `kubectl explain` reads: the CRD's schema as the API server publishes it in OpenAPI v3.
/// Every description is whole sentences: no line break except between paragraphs.
#[tokio::test]
async fn kubectl_explain_shows_each_description_as_whole_sentences() {
    use std::time::Duration;
    use support::eventually::eventually;
    let Some(client) = cluster("kubectl_explain_shows_each_description_as_whole_sentences").await
    else {
        return;
    };
    install_crds(&client).await;
    let get = |path: String| {
        let client = client.clone();
        async move {
            let request = http::Request::get(path).body(Vec::new()).unwrap();
            client.request::<serde_json::Value>(request).await
        }
    };
    // The aggregated OpenAPI document follows a CRD change after a moment.
    let spec = eventually(
        "the published schema of AmazonSellerConnection.spec",
        Duration::from_secs(60),
    )
    .poll(|| async {
        let document = get("/openapi/v3/apis/connectors.openteam.io/v1alpha1".into())
            .await
            .map_err(|e| e.to_string())?;
        let spec = document["components"]["schemas"]
            ["io.openteam.connectors.v1alpha1.AmazonSellerConnection"]["properties"]["spec"]
            .clone();
        let delivery = spec["properties"]["delivery"]["description"].as_str();
        match delivery {
            Some(text) if !text.contains('\n') => Ok(spec),
            other => Err(format!("spec.delivery: {other:?}")),
        }
    })
    .await;
    let mut descriptions = vec![(
        "spec".to_owned(),
        spec["description"].as_str().unwrap().to_owned(),
    )];
    for (field, schema) in spec["properties"].as_object().unwrap() {
        descriptions.push((
            format!("spec.{field}"),
            schema["description"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ));
    }
    for (field, text) in &descriptions {
        assert!(!text.is_empty(), "{field} has no description");
        assert!(
            !text.replace("\n\n", "").contains('\n'),
            "{field}: a sentence breaks at a source line end: {text:?}"
        );
    }
    let team = &descriptions
        .iter()
        .find(|(f, _)| f == "spec.teamId")
        .unwrap()
        .1;
    assert!(
        team.contains("`connectors.openteam.io/team` label of the namespace"),
        "{team}"
    );
}

/// `kubectl get asc` is narrow; `-o wide` adds the columns an operator looks up next. Read
/// through the API server's own Table rendering, which kubectl prints.
#[tokio::test]
async fn wide_output_adds_columns_to_a_narrow_default_view() {
    let Some((client, ns)) = setup("wide_output_adds_columns_to_a_narrow_default_view").await
    else {
        return;
    };
    let api: Api<AmazonSellerConnection> = Api::namespaced(client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &example("examples/connection.yaml", &ns),
    )
    .await
    .unwrap();
    let status = json!({
        "apiVersion": "connectors.openteam.io/v1alpha1",
        "kind": "AmazonSellerConnection",
        "status": {
            "marketplaceId": "ATVPDKIKX0DER", "region": "NA",
            "tokenExpiresAt": "2026-01-01T01:00:00Z", "lastRefreshAt": "2026-01-01T00:00:00Z",
            "nextRefreshAt": "2026-01-01T00:38:00Z", "keyId": "k-2026-01",
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "TokenIssued",
                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"
            }]
        }
    });
    api.patch_status(
        "acme-us",
        &PatchParams::apply("aso-tests").force(),
        &Patch::Apply(&status),
    )
    .await
    .unwrap();
    let request = http::Request::get(format!(
        "/apis/connectors.openteam.io/v1alpha1/namespaces/{ns}/amazonsellerconnections/acme-us"
    ))
    .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
    .body(Vec::new())
    .unwrap();
    let table: serde_json::Value = client.request(request).await.unwrap();
    let columns = table["columnDefinitions"].as_array().unwrap();
    let names = |wide: bool| -> Vec<&str> {
        columns
            .iter()
            .filter(|c| wide || c["priority"].as_i64().unwrap_or(0) == 0)
            .map(|c| c["name"].as_str().unwrap())
            .collect()
    };
    // `Name` is kubectl's own first column.
    assert_eq!(
        names(false),
        [
            "Name",
            "Team",
            "Marketplace",
            "Region",
            "Ready",
            "Token expires",
            "Age"
        ]
    );
    assert_eq!(
        names(true),
        [
            "Name",
            "Team",
            "Seller",
            "Marketplace",
            "Marketplace ID",
            "Region",
            "Ready",
            "Reason",
            "Token expires",
            "Last refresh",
            "Next refresh",
            "Gateways",
            "Delivery",
            "Key",
            "Age"
        ]
    );
    let cells = table["rows"][0]["cells"].as_array().unwrap();
    let cell = |name: &str| cells[names(true).iter().position(|c| *c == name).unwrap()].clone();
    assert_eq!(cell("Seller"), "A3FHEXAMPLEYWS");
    assert_eq!(cell("Marketplace ID"), "ATVPDKIKX0DER");
    assert_eq!(cell("Reason"), "TokenIssued");
    assert_eq!(cell("Gateways"), r#"["gw-main"]"#);
    assert_eq!(cell("Delivery"), "Secret");
    assert_eq!(cell("Key"), "k-2026-01");
    assert_eq!(cell("Next refresh"), "2026-01-01T00:38:00Z");
}
