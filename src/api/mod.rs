//! Custom resource types served under `connectors.openteam.io/v1alpha1`.

pub mod connection;
pub mod manifest;
pub mod review;

pub use connection::{
    AmazonSellerConnection, AmazonSellerConnectionSpec, AmazonSellerConnectionStatus, Delivery,
    Environment,
};
pub use review::{SecurityLogReview, SecurityLogReviewSpec};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every custom resource this operator serves.
pub const GROUP: &str = "connectors.openteam.io";

/// Every CustomResourceDefinition the operator needs, in the order `crd` prints them.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![AmazonSellerConnection::crd(), SecurityLogReview::crd()]
}
