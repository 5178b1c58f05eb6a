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
