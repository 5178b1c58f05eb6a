//! `SecurityLogReview`: the record that someone reviewed the Amazon-related security logs for a
//! period, as the policy requires at least every two weeks. The operator exports the latest
//! review's time as a metric; an alert fires when it is older than 14 days.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::review::{self, ReviewTimes};

/// A completed review of the security logs (audit log and alerts) for one period.
#[derive(CustomResource, Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "connectors.openteam.io",
    version = "v1alpha1",
    kind = "SecurityLogReview",
    doc = "A record that the Amazon-related security logs for a period were reviewed. Create one after each review (at least every 14 days); records are immutable.",
    shortname = "slr",
    printcolumn = r#"{"name":"Reviewer","type":"string","jsonPath":".spec.reviewer"}"#,
    printcolumn = r#"{"name":"Period start","type":"date","jsonPath":".spec.periodStart"}"#,
    printcolumn = r#"{"name":"Period end","type":"date","jsonPath":".spec.periodEnd"}"#,
    printcolumn = r#"{"name":"Findings","type":"integer","jsonPath":".spec.findingsCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.periodEnd > self.periodStart",
        "message": "periodEnd must be after periodStart",
        "fieldPath": ".periodEnd",
        "reason": "FieldValueInvalid"
    },
    {
        "rule": "self == oldSelf",
        "message": "a review is a record and cannot be changed: create a new SecurityLogReview"
    }
]))]
pub struct SecurityLogReviewSpec {
    /// Who did the review: a person's user name or e-mail address. Not empty.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"\S"))]
    pub reviewer: String,

    /// Start of the reviewed period (RFC 3339, e.g. `2026-05-01T00:00:00Z`).
    pub period_start: Time,

    /// End of the reviewed period (RFC 3339); must be after `periodStart`. The review counts as
    /// covering the logs up to this time, or up to its creation time if that is earlier.
    pub period_end: Time,

    /// What was reviewed and found: alerts looked at, `audit verify` result (record count and
    /// head hash), follow-ups. No secret values.
    #[schemars(length(min = 1, max = 8192))]
    pub summary: String,

    /// How many findings need follow-up (0 when none).
    #[schemars(range(min = 0))]
    pub findings_count: i32,
}

impl SecurityLogReview {
    /// The times the review rule needs.
    pub fn times(&self) -> ReviewTimes {
        ReviewTimes {
            period_end: self.spec.period_end.0,
            recorded_at: self.metadata.creation_timestamp.as_ref().map(|t| t.0),
        }
    }
}

/// Unix seconds up to which `reviews` vouch for the logs (see [`crate::domain::review`]), for
/// the `amazon_seller_security_log_review_last_timestamp_seconds` gauge; `None` without any.
pub fn latest_review_time(reviews: &[SecurityLogReview]) -> Option<i64> {
    review::reviewed_until(reviews.iter().map(SecurityLogReview::times)).map(|t| t.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(end: &str, created: &str) -> SecurityLogReview {
        let mut r: SecurityLogReview = serde_json::from_value(serde_json::json!({
            "apiVersion": "connectors.openteam.io/v1alpha1",
            "kind": "SecurityLogReview",
            "metadata": {"name": "r", "creationTimestamp": created},
            "spec": {
                "reviewer": "alice@example.com",
                "periodStart": "2026-04-01T00:00:00Z",
                "periodEnd": end,
                "summary": "reviewed",
                "findingsCount": 0
            }
        }))
        .unwrap();
        r.metadata.name = Some(end.to_owned());
        r
    }

    #[test]
    fn latest_review_time_uses_the_domain_rule() {
        let reviews = [
            review("2026-05-01T00:00:00Z", "2026-05-01T08:00:00Z"),
            review("2030-01-01T00:00:00Z", "2026-05-10T00:00:00Z"),
        ];
        let expected: jiff::Timestamp = "2026-05-10T00:00:00Z".parse().unwrap();
        assert_eq!(latest_review_time(&reviews), Some(expected.as_second()));
        assert_eq!(latest_review_time(&[]), None);
    }

    #[test]
    fn schema_carries_the_period_rule_and_bounds() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(SecurityLogReview::crd()).unwrap();
        assert_eq!(crd["spec"]["scope"], "Cluster");
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let rules = spec["x-kubernetes-validations"].as_array().unwrap();
        assert!(
            rules
                .iter()
                .any(|r| r["rule"] == "self.periodEnd > self.periodStart")
        );
        assert_eq!(
            spec["properties"]["findingsCount"]["minimum"].as_f64(),
            Some(0.0)
        );
        assert_eq!(spec["properties"]["reviewer"]["minLength"], 1);
        assert_eq!(spec["properties"]["periodEnd"]["format"], "date-time");
    }
}
