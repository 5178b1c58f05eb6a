//! The security model (docs/security-model.md) names, for each claim of the policy, the tests
//! that show it. Those names must stay real: a renamed or removed test fails here until the
//! document follows.

mod support;

use std::collections::BTreeSet;

use support::repo_path;

/// Every `fn name` in the Rust sources under `dir`.
fn functions(dir: &str, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(repo_path(dir)).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            functions(&path.to_string_lossy(), out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for rest in text.split("fn ").skip(1) {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                out.insert(name);
            }
        }
    }
}

#[test]
fn every_test_the_security_model_names_exists() {
    let doc = std::fs::read_to_string(repo_path("docs/security-model.md")).unwrap();
    // Test names are backticked snake_case identifiers of three words or more.
    let named: BTreeSet<&str> = doc
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.split('_').count() >= 3
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    assert!(named.len() > 40, "found only {} test names", named.len());
    let mut defined = BTreeSet::new();
    functions("tests", &mut defined);
    functions("src", &mut defined);
    let missing: Vec<&&str> = named.iter().filter(|n| !defined.contains(**n)).collect();
    assert!(
        missing.is_empty(),
        "docs/security-model.md names tests that do not exist: {missing:?}"
    );
}

/// The audit policy docs/security-model.md recommends (deploy/audit-policy.yaml) records
/// Secrets and token-bearing requests at `Metadata` level at most, never with bodies: the first
/// rule that matches a request decides, so every rule that could match one of them before an
/// unconditional match must be `None` or `Metadata`. (The test control plane also runs with it,
/// so the API server itself has accepted it.)
#[test]
fn the_recommended_audit_policy_never_records_secret_bodies() {
    let text = std::fs::read_to_string(repo_path("deploy/audit-policy.yaml")).unwrap();
    let policy: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(policy["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(policy["kind"], "Policy");
    let rules = policy["rules"].as_array().expect("rules");
    for (group, resource) in [
        ("", "secrets"),
        ("", "serviceaccounts/token"),
        ("authentication.k8s.io", "tokenreviews"),
    ] {
        let mut decided = false;
        for rule in rules {
            let matches = match rule["resources"].as_array() {
                None => true,
                Some(kinds) => kinds.iter().any(|k| {
                    k["group"].as_str().unwrap_or("") == group
                        && k["resources"].as_array().is_none_or(|r| {
                            r.iter().any(|r| r == resource || r == "*" || r == "*/*")
                        })
                }),
            };
            if !matches || rule.get("nonResourceURLs").is_some() {
                continue;
            }
            let level = rule["level"].as_str().unwrap_or("");
            assert!(
                matches!(level, "None" | "Metadata"),
                "{group}/{resource} may be recorded at level {level}: {rule}"
            );
            let conditional = ["users", "userGroups", "verbs", "namespaces"]
                .iter()
                .any(|k| rule.get(*k).is_some());
            if !conditional {
                decided = true;
                break;
            }
        }
        assert!(decided, "no rule decides {group}/{resource}");
    }
}
