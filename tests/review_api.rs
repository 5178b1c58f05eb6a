//! Tier 2: the `SecurityLogReview` CRD on the real API server (see tests/api_server.rs for the
//! tier). Its schema rules, not the operator, keep review records well formed and unchanged.

mod support;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

use amazon_seller_operator::api::SecurityLogReview;

use support::{cluster, install_crds, repo_path, unique_name};

/// The committed example under a name no other run uses (reviews are cluster-scoped).
fn example() -> SecurityLogReview {
    let text = std::fs::read_to_string(repo_path("examples/security-log-review.yaml"))
        .expect("example readable");
    let mut review: SecurityLogReview = serde_saphyr::from_str(&text).expect("example parses");
    review.metadata.name = Some(unique_name("review"));
    review
}

/// The example with some spec fields replaced, as raw JSON (so that values the Rust type
/// cannot hold, such as a malformed date, reach the server).
fn with_spec(changes: serde_json::Value) -> DynamicObject {
    let mut value = serde_json::to_value(example()).unwrap();
    for (k, v) in changes.as_object().unwrap() {
        value["spec"][k] = v.clone();
    }
    serde_json::from_value(value).unwrap()
}

async fn setup(test: &str) -> Option<Api<SecurityLogReview>> {
    let client: Client = cluster(test).await?;
    install_crds(&client).await;
    Some(Api::all(client))
}

/// Creates `review`, expecting a 422 whose message contains every one of `needles`.
async fn assert_rejected(api: &Api<SecurityLogReview>, review: &DynamicObject, needles: &[&str]) {
    let resource = ApiResource::erase::<SecurityLogReview>(&());
    let api: Api<DynamicObject> = Api::all_with(api.clone().into_client(), &resource);
    let err = api
        .create(&PostParams::default(), review)
        .await
        .expect_err("the API server must reject it");
    let kube::Error::Api(status) = err else {
        panic!("expected an API rejection, got {err}");
    };
    assert_eq!(status.code, 422, "{status:?}");
    for needle in needles {
        assert!(
            status.message.contains(needle),
            "expected {needle:?} in: {}",
            status.message
        );
    }
}

#[tokio::test]
async fn review_crd_is_cluster_scoped_with_printer_columns() {
    let Some(api) = setup("review_crd_is_cluster_scoped_with_printer_columns").await else {
        return;
    };
    let crds: Api<CustomResourceDefinition> = Api::all(api.into_client());
    let crd = crds
        .get("securitylogreviews.connectors.openteam.io")
        .await
        .unwrap();
    assert_eq!(crd.spec.scope, "Cluster");
    let columns: Vec<String> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(
        columns,
        ["Reviewer", "Period start", "Period end", "Findings", "Age"]
    );
}

#[tokio::test]
async fn the_example_review_is_accepted() {
    let Some(api) = setup("the_example_review_is_accepted").await else {
        return;
    };
    let review = example();
    let created = api.create(&PostParams::default(), &review).await.unwrap();
    assert_eq!(created.spec, review.spec);
    assert!(created.metadata.creation_timestamp.is_some());
    api.delete(&created.metadata.name.unwrap(), &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_period_that_does_not_end_after_it_starts_is_rejected() {
    let Some(api) = setup("a_period_that_does_not_end_after_it_starts_is_rejected").await else {
        return;
    };
    for end in ["2026-04-30T00:00:00Z", "2026-05-01T00:00:00Z"] {
        let review = with_spec(json!({ "periodEnd": end }));
        assert_rejected(
            &api,
            &review,
            &["spec.periodEnd", "periodEnd must be after periodStart"],
        )
        .await;
    }
}

#[tokio::test]
async fn negative_findings_and_an_empty_reviewer_are_rejected() {
    let Some(api) = setup("negative_findings_and_an_empty_reviewer_are_rejected").await else {
        return;
    };
    assert_rejected(
        &api,
        &with_spec(json!({ "findingsCount": -1 })),
        &["spec.findingsCount"],
    )
    .await;
    assert_rejected(
        &api,
        &with_spec(json!({ "reviewer": "" })),
        &["spec.reviewer"],
    )
    .await;
    assert_rejected(
        &api,
        &with_spec(json!({ "reviewer": "   " })),
        &["spec.reviewer"],
    )
    .await;
    assert_rejected(
        &api,
        &with_spec(json!({ "periodStart": "last week" })),
        &["spec.periodStart"],
    )
    .await;
}

#[tokio::test]
async fn a_recorded_review_cannot_be_edited() {
    let Some(api) = setup("a_recorded_review_cannot_be_edited").await else {
        return;
    };
    let review = example();
    let name = review.metadata.name.clone().unwrap();
    api.create(&PostParams::default(), &review).await.unwrap();
    let err = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "findingsCount": 0, "summary": "nothing to see" } })),
        )
        .await
        .expect_err("editing a review must be rejected");
    let kube::Error::Api(status) = err else {
        panic!("expected an API rejection, got {err}");
    };
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status.message.contains("cannot be changed"),
        "{}",
        status.message
    );
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}
