//! Offline checks of `AmazonSellerConnection` manifests, for `amazon-seller-operator validate`.
//!
//! Each YAML document is decoded into the typed resource (reporting the path of any field that
//! does not decode or is unknown) and then checked with the same domain rules the admission
//! webhook applies.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::AmazonSellerConnection;
use crate::domain::validation::{self, FieldError};

/// The `apiVersion` every connection manifest must carry.
pub const API_VERSION: &str = "connectors.openteam.io/v1alpha1";
const KIND: &str = "AmazonSellerConnection";

/// The verdict on one YAML document.
#[derive(Debug, PartialEq, Eq)]
pub struct DocumentReport {
    /// 1-based position among the non-empty documents of the input.
    pub index: usize,
    /// 1-based line of the input where the document's content starts, when it can be told.
    pub line: Option<usize>,
    /// `Kind namespace/name`, or as much of it as the document has.
    pub subject: String,
    /// What was found.
    pub outcome: DocumentOutcome,
}

/// The result of checking one document.
#[derive(Debug, PartialEq, Eq)]
pub enum DocumentOutcome {
    /// A connection that passes every rule.
    Valid,
    /// A connection that breaks one or more rules.
    Invalid(Vec<FieldError>),
    /// Not a connection; reported and not checked.
    Skipped,
}

/// The input is not YAML at all, so no document could be checked.
#[derive(Debug, thiserror::Error)]
#[error("failed to parse YAML: {0}")]
pub struct ParseError(#[source] serde_saphyr::Error);

/// Checks every document of a multi-document YAML stream.
pub fn validate_manifests(input: &str) -> Result<Vec<DocumentReport>, ParseError> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(input).map_err(ParseError)?;
    let starts = document_starts(input);
    // The parser does not say where each document begins; the scan agrees with it whenever it
    // finds as many documents, and no line is better than a wrong one otherwise.
    let starts = (starts.len() == documents.len()).then_some(starts);
    Ok(documents
        .into_iter()
        .enumerate()
        .map(|(i, doc)| {
            let mut report = check_document(i + 1, doc);
            report.line = starts.as_ref().map(|s| s[i]);
            report
        })
        .collect())
}

/// The 1-based line where each non-empty document of a YAML stream starts: its first line that
/// is not blank, a comment, a directive or a document marker (`---`, `...`). A document marker
/// is one at the start of a line, followed by a space or the line's end.
fn document_starts(input: &str) -> Vec<usize> {
    let marker = |line: &str, mark: &str| {
        line.strip_prefix(mark)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
    };
    let mut starts = Vec::new();
    let mut in_document = false;
    for (n, line) in input.lines().enumerate() {
        if marker(line, "---") || marker(line, "...") {
            in_document = false;
            // `--- {a: 1}`: content on the marker line itself.
            let rest = line[3..].trim();
            if line.starts_with("---") && !rest.is_empty() && !rest.starts_with('#') {
                starts.push(n + 1);
                in_document = true;
            }
            continue;
        }
        let content = line.trim();
        if in_document
            || content.is_empty()
            || content.starts_with('#')
            || (line.starts_with('%') && starts.is_empty())
        {
            continue;
        }
        starts.push(n + 1);
        in_document = true;
    }
    starts
}

fn check_document(index: usize, doc: Value) -> DocumentReport {
    let text = |pointer: &str| {
        doc.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let kind = text("/kind");
    let api_version = text("/apiVersion");
    let name = text("/metadata/name");
    let namespace = text("/metadata/namespace");
    let subject = format!(
        "{} {}",
        kind.as_deref().unwrap_or("<no kind>"),
        match (&namespace, &name) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            (None, Some(n)) => n.clone(),
            _ => "<no name>".to_owned(),
        }
    );

    if !doc.is_object() {
        let problem = FieldError::new("<document>", "must be a YAML mapping (a Kubernetes object)");
        return report(index, subject, DocumentOutcome::Invalid(vec![problem]));
    }
    if kind.as_deref() != Some(KIND) {
        return report(index, subject, DocumentOutcome::Skipped);
    }
    if api_version.as_deref() != Some(API_VERSION) {
        let problem = FieldError::new(
            "apiVersion",
            format!(
                "must be {API_VERSION:?}, found {:?}",
                api_version.as_deref().unwrap_or("")
            ),
        );
        return report(index, subject, DocumentOutcome::Invalid(vec![problem]));
    }

    let mut problems = Vec::new();
    let connection: AmazonSellerConnection = match decode(doc, &mut problems) {
        Ok(connection) => connection,
        Err(problem) => {
            problems.push(problem);
            return report(index, subject, DocumentOutcome::Invalid(problems));
        }
    };
    let name = connection.metadata.name.as_deref().unwrap_or_default();
    if name.is_empty() {
        problems.push(FieldError::new("metadata.name", "is required"));
    }
    problems.extend(validation::validate_spec(&connection.spec.view(name)));
    let outcome = if problems.is_empty() {
        DocumentOutcome::Valid
    } else {
        DocumentOutcome::Invalid(problems)
    };
    report(index, subject, outcome)
}

fn report(index: usize, subject: String, outcome: DocumentOutcome) -> DocumentReport {
    DocumentReport {
        index,
        line: None,
        subject,
        outcome,
    }
}

/// Decodes a document, collecting unknown `spec` fields (the API server would reject or drop
/// them, so a misspelt `suspend: true` would silently do nothing) and reporting the path of the
/// first field that does not decode.
fn decode<T: DeserializeOwned>(
    doc: Value,
    problems: &mut Vec<FieldError>,
) -> Result<T, FieldError> {
    let mut unknown = Vec::new();
    let mut on_ignored = |path: serde_ignored::Path<'_>| {
        let path = path.to_string();
        if path.starts_with("spec.") {
            unknown.push(path);
        }
    };
    let ignored = serde_ignored::Deserializer::new(doc, &mut on_ignored);
    let result = serde_path_to_error::deserialize(ignored);
    problems.extend(
        unknown
            .into_iter()
            .map(|path| FieldError::new(path, "unknown field (check the spelling)")),
    );
    result.map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." {
            "<document>".to_owned()
        } else {
            path
        };
        FieldError::new(field, err.into_inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
apiVersion: connectors.openteam.io/v1alpha1
kind: AmazonSellerConnection
metadata: {name: acme-us, namespace: team-acme}
spec:
  teamId: acme
  sellerId: A3FHEXAMPLEYWS
  marketplace: US
  credentialsSecretName: acme-us-lwa
  gateways: [gw-main]
"#;

    fn only(input: &str) -> DocumentOutcome {
        let mut reports = validate_manifests(input).unwrap();
        assert_eq!(reports.len(), 1);
        reports.remove(0).outcome
    }

    fn problem_lines(outcome: DocumentOutcome) -> Vec<String> {
        match outcome {
            DocumentOutcome::Invalid(problems) => {
                problems.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn valid_connection_passes_with_defaults_applied() {
        assert_eq!(only(VALID), DocumentOutcome::Valid);
    }

    #[test]
    fn wrong_type_is_reported_with_its_path() {
        let lines = problem_lines(only(&VALID.replace("[gw-main]", "gw-main")));
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("spec.gateways: invalid type"),
            "{lines:?}"
        );
    }

    #[test]
    fn unknown_environment_names_the_field_and_the_variants() {
        let lines = problem_lines(only(&format!("{VALID}  environment: Prod\n")));
        assert!(
            lines[0].starts_with("spec.environment: unknown variant `Prod`"),
            "{lines:?}"
        );
        assert!(lines[0].contains("Production"), "{lines:?}");
    }

    #[test]
    fn misspelt_spec_field_is_reported() {
        let lines = problem_lines(only(&format!("{VALID}  suspend: true\n")));
        assert_eq!(lines, ["spec.suspend: unknown field (check the spelling)"]);
    }

    #[test]
    fn missing_required_field_is_reported() {
        let lines = problem_lines(only(&VALID.replace("  sellerId: A3FHEXAMPLEYWS\n", "")));
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("missing field `sellerId`"), "{lines:?}");
    }

    #[test]
    fn other_kinds_are_skipped_and_every_document_is_reported() {
        let input = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: team-acme}}\n---\n{VALID}---\n{}",
            VALID.replace("marketplace: US", "marketplace: XX")
        );
        let reports = validate_manifests(&input).unwrap();
        assert_eq!(reports.len(), 3);
        assert_eq!(reports[0].outcome, DocumentOutcome::Skipped);
        assert_eq!(reports[0].subject, "Namespace team-acme");
        assert_eq!(reports[1].outcome, DocumentOutcome::Valid);
        assert_eq!(
            reports[1].subject,
            "AmazonSellerConnection team-acme/acme-us"
        );
        let lines = problem_lines(reports.into_iter().nth(2).unwrap().outcome);
        assert!(lines[0].starts_with("spec.marketplace: unknown marketplace \"XX\" (valid: "));
    }

    #[test]
    fn each_document_knows_the_line_it_starts_on() {
        let input = "# a comment\n---\napiVersion: v1\nkind: Namespace\n---\n\n---\n# c\nkind: A\n...\n--- {kind: B}\n";
        let lines: Vec<_> = validate_manifests(input)
            .unwrap()
            .iter()
            .map(|r| r.line)
            .collect();
        assert_eq!(lines, [Some(3), Some(9), Some(11)]);
        let lines: Vec<_> = validate_manifests(VALID)
            .unwrap()
            .iter()
            .map(|r| r.line)
            .collect();
        assert_eq!(lines, [Some(2)]);
    }

    #[test]
    fn wrong_api_version_is_a_problem() {
        let lines = problem_lines(only(&VALID.replace("v1alpha1", "v1")));
        assert_eq!(
            lines,
            [
                "apiVersion: must be \"connectors.openteam.io/v1alpha1\", found \"connectors.openteam.io/v1\""
            ]
        );
    }

    #[test]
    fn scalar_document_is_a_problem_not_a_panic() {
        let lines = problem_lines(only("just a string\n"));
        assert_eq!(
            lines,
            ["<document>: must be a YAML mapping (a Kubernetes object)"]
        );
    }

    #[test]
    fn unparseable_yaml_is_an_error() {
        assert!(validate_manifests("a: [unclosed\n").is_err());
        assert!(validate_manifests("key: value\n  bad: indent\n").is_err());
    }
}
