//! Custom resource types served under `connectors.openteam.io/v1alpha1`.

pub mod connection;
pub mod manifest;
pub mod review;

pub use connection::{
    AmazonSellerConnection, AmazonSellerConnectionSpec, AmazonSellerConnectionStatus, Delivery,
    Environment, OnUnauthorizedMount, UnauthorizedPod,
};
pub use review::{SecurityLogReview, SecurityLogReviewSpec};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

/// API group of every custom resource this operator serves.
pub const GROUP: &str = "connectors.openteam.io";

/// Every CustomResourceDefinition the operator needs, in the order `crd` prints them, with
/// each description joined into paragraphs (see [`paragraphs`]).
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![AmazonSellerConnection::crd(), SecurityLogReview::crd()];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                join_descriptions(schema);
            }
        }
    }
    crds
}

/// A doc comment as `kubectl explain` should show it. schemars keeps the source's line breaks
/// (one `///` line, one line of description), and `kubectl explain` prints them as they are,
/// so sentences would break wherever the source wrapped them. Lines are joined with a space
/// within a paragraph; blank lines (paragraph breaks) and list items (`- `, `* `) keep their
/// line break. Nothing else in the text changes.
pub fn paragraphs(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            let mut joined = String::with_capacity(paragraph.len());
            for (i, line) in paragraph.split('\n').enumerate() {
                if i > 0 {
                    let item = line.starts_with("- ") || line.starts_with("* ");
                    joined.push(if item { '\n' } else { ' ' });
                }
                joined.push_str(line);
            }
            joined
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Applies [`paragraphs`] to a schema's description and every nested schema's.
fn join_descriptions(schema: &mut JSONSchemaProps) {
    if let Some(description) = schema.description.as_mut() {
        *description = paragraphs(description);
    }
    let nested = schema
        .properties
        .iter_mut()
        .flat_map(|p| p.values_mut())
        .chain(schema.all_of.iter_mut().flatten())
        .chain(schema.any_of.iter_mut().flatten())
        .chain(schema.one_of.iter_mut().flatten())
        .chain(schema.not.as_deref_mut());
    for child in nested {
        join_descriptions(child);
    }
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(item)) => join_descriptions(item),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => {
            items.iter_mut().for_each(join_descriptions)
        }
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = schema.additional_properties.as_mut() {
        join_descriptions(values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_line_breaks_are_joined_but_paragraphs_and_list_items_stay() {
        assert_eq!(
            paragraphs("The Team that owns\nthis connection.\n\nImmutable."),
            "The Team that owns this connection.\n\nImmutable."
        );
        assert_eq!(
            paragraphs("One of:\n- Secret\n- Endpoint"),
            "One of:\n- Secret\n- Endpoint"
        );
        assert_eq!(paragraphs("one line"), "one line");
    }

    #[test]
    fn no_generated_description_breaks_a_sentence() {
        fn walk(value: &serde_json::Value, path: &str, broken: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    for (key, child) in map {
                        if let (Some(text), "description") = (child.as_str(), key.as_str())
                            && text.replace("\n\n", "").contains('\n')
                        {
                            broken.push(format!("{path}: {text:?}"));
                        }
                        walk(child, &format!("{path}.{key}"), broken);
                    }
                }
                serde_json::Value::Array(items) => {
                    for (i, child) in items.iter().enumerate() {
                        walk(child, &format!("{path}[{i}]"), broken);
                    }
                }
                _ => {}
            }
        }
        let mut broken = Vec::new();
        for crd in crds() {
            walk(&serde_json::to_value(&crd).unwrap(), "", &mut broken);
        }
        assert!(broken.is_empty(), "{broken:#?}");
    }
}
