//! Plaintext outside a credentials Secret's `data`: kubectl's last-applied configuration and
//! every other annotation or label.
//!
//! `kubectl apply` (client-side, and server-side on an object that already carries the
//! annotation) stores the applied file, `stringData` and all, in the annotation
//! [`LAST_APPLIED_ANNOTATION`]. Sealing removes the credential keys from it and keeps
//! everything else (`type: Opaque` included): kubectl's three-way merge compares the file, this
//! annotation and the live object, so a file applied again still sends its `stringData` (which
//! is then sealed again) and never asks to delete the envelope or change the type back. A
//! credential value in any other annotation or label is refused, naming the field: the value
//! came from a file or a tool the user controls, and quietly dropping it would hide that.
//!
//! Values are compared, never formatted: messages name keys and fields only.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::SecretView;

/// The annotation in which `kubectl apply` keeps the configuration it last applied.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The members of an applied Secret that hold values by key.
const VALUE_MEMBERS: [&str; 2] = ["data", "stringData"];

/// Values shorter than this are not looked for in metadata: too short to tell apart from
/// ordinary text (real LWA values are far longer).
const MIN_NEEDLE_LEN: usize = 8;

/// The `keys` a last-applied configuration holds under `data` or `stringData`, as field paths
/// (`stringData.refreshToken`); empty when there are none or it is not a JSON object.
pub(super) fn applied_credential_keys(last_applied: &str, keys: &[&str]) -> Vec<String> {
    let Ok(serde_json::Value::Object(applied)) = serde_json::from_str(last_applied) else {
        return Vec::new();
    };
    VALUE_MEMBERS
        .iter()
        .filter_map(|member| Some((member, applied.get(*member)?.as_object()?)))
        .flat_map(|(member, values)| {
            keys.iter()
                .filter(|key| values.contains_key(**key))
                .map(move |key| format!("{member}.{key}"))
        })
        .collect()
}

/// `last_applied` without `keys` under `data` and `stringData` (a member left empty goes too)
/// and otherwise unchanged, or `None` when it holds none of them or is not a JSON object. Keys
/// come out sorted, as kubectl writes them; a trailing newline is kept.
pub(super) fn scrub_last_applied(last_applied: &str, keys: &[&str]) -> Option<String> {
    let Ok(serde_json::Value::Object(mut applied)) = serde_json::from_str(last_applied) else {
        return None;
    };
    let mut removed = false;
    for member in VALUE_MEMBERS {
        let Some(serde_json::Value::Object(values)) = applied.get_mut(member) else {
            continue;
        };
        for key in keys {
            removed |= values.remove(*key).is_some();
        }
        if values.is_empty() {
            applied.remove(member);
        }
    }
    if !removed {
        return None;
    }
    let mut scrubbed = serde_json::Value::Object(applied).to_string();
    if last_applied.ends_with('\n') {
        scrubbed.push('\n');
    }
    Some(scrubbed)
}

/// What to look for: each value as given, trimmed, and base64-encoded both ways.
pub(super) fn needles<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Vec<Vec<u8>> {
    let mut needles: Vec<Vec<u8>> = Vec::new();
    for value in values {
        let trimmed = value.trim_ascii();
        for needle in [
            trimmed.to_vec(),
            B64.encode(value).into_bytes(),
            B64.encode(trimmed).into_bytes(),
        ] {
            if needle.len() >= MIN_NEEDLE_LEN && !needles.contains(&needle) {
                needles.push(needle);
            }
        }
    }
    needles
}

fn holds(text: &str, needles: &[Vec<u8>]) -> bool {
    let text = text.as_bytes();
    needles
        .iter()
        .any(|needle| text.windows(needle.len()).any(|w| w == needle.as_slice()))
}

/// The first annotation or label of `secret` holding one of `needles`, as its field path
/// (`metadata.annotations["note"]`). The last-applied annotation comes last, so that a value
/// written into an annotation of the file is named where the user wrote it rather than in
/// kubectl's copy; `last_applied` is looked at instead of the stored one (the scrubbed one
/// the patch writes).
pub(super) fn metadata_holding(
    secret: &SecretView<'_>,
    last_applied: Option<&str>,
    needles: &[Vec<u8>],
) -> Option<String> {
    let annotations = secret
        .annotations
        .iter()
        .filter(|(key, _)| *key != LAST_APPLIED_ANNOTATION)
        .map(|(key, value)| ("annotations", key.as_str(), value.as_str()));
    let labels = secret
        .labels
        .iter()
        .map(|(key, value)| ("labels", key.as_str(), value.as_str()));
    let applied = secret
        .annotations
        .get(LAST_APPLIED_ANNOTATION)
        .map(|stored| last_applied.unwrap_or(stored))
        .map(|value| ("annotations", LAST_APPLIED_ANNOTATION, value));
    annotations
        .chain(labels)
        .chain(applied)
        .find(|(_, _, value)| holds(value, needles))
        .map(|(what, key, _)| format!("metadata.{what}[{key:?}]"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::admission::INTAKE_KEYS;

    /// What kubectl writes for an intake file with `type: Opaque` (values replaced).
    const APPLIED: &str = concat!(
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"annotations":{},"labels":{"#,
        r#""connectors.openteam.io/connection":"acme-us","connectors.openteam.io/secret-role":"#,
        r#""lwa-credentials"},"name":"acme-us-lwa","namespace":"team-acme"},"stringData":{"#,
        r#""clientId":"amzn1.application-oa2-client.0123abcd","clientSecret":"#,
        r#""amzn1.oa2-cs.v1.topsecretvalue","refreshToken":"Atzr|IwEBIPlaintextRefresh"},"#,
        r#""type":"Opaque"}"#,
        "\n"
    );

    #[test]
    fn the_last_applied_configuration_loses_only_the_credential_keys() {
        assert_eq!(
            applied_credential_keys(APPLIED, &INTAKE_KEYS),
            [
                "stringData.clientId",
                "stringData.clientSecret",
                "stringData.refreshToken"
            ]
        );
        let scrubbed = scrub_last_applied(APPLIED, &INTAKE_KEYS).unwrap();
        let expected = concat!(
            r#"{"apiVersion":"v1","kind":"Secret","metadata":{"annotations":{},"labels":{"#,
            r#""connectors.openteam.io/connection":"acme-us","connectors.openteam.io/secret-role":"#,
            r#""lwa-credentials"},"name":"acme-us-lwa","namespace":"team-acme"},"type":"Opaque"}"#,
            "\n"
        );
        assert_eq!(scrubbed, expected);
        assert!(applied_credential_keys(&scrubbed, &INTAKE_KEYS).is_empty());
        assert_eq!(
            scrub_last_applied(&scrubbed, &INTAKE_KEYS),
            None,
            "nothing left to scrub"
        );
    }

    #[test]
    fn data_written_as_base64_is_scrubbed_and_other_members_stay() {
        let applied = r#"{"data":{"clientId":"YQ==","refreshToken":"Yg=="},"stringData":{"clientSecret":"c"},"immutable":false}"#;
        assert_eq!(applied_credential_keys(applied, &INTAKE_KEYS).len(), 3);
        assert_eq!(
            scrub_last_applied(applied, &INTAKE_KEYS).unwrap(),
            r#"{"immutable":false}"#
        );
    }

    #[test]
    fn a_configuration_that_is_not_a_json_object_is_left_alone() {
        for odd in [
            "",
            "not json",
            "[1,2]",
            r#""stringData""#,
            r#"{"stringData":"x"}"#,
        ] {
            assert!(
                applied_credential_keys(odd, &INTAKE_KEYS).is_empty(),
                "{odd}"
            );
            assert_eq!(scrub_last_applied(odd, &INTAKE_KEYS), None, "{odd}");
        }
    }

    #[test]
    fn a_value_in_any_annotation_or_label_is_found_by_its_field() {
        let value: &[u8] = b"Atzr|IwEBIPlaintextRefresh";
        let needles = needles([
            value,
            b" amzn1.application-oa2-client.0123abcd\n".as_slice(),
        ]);
        let annotations = BTreeMap::from([
            ("note".to_owned(), "harmless".to_owned()),
            (
                "team.example/copy".to_owned(),
                format!("token={}", B64.encode(value)),
            ),
        ]);
        let labels = BTreeMap::from([(
            "client".to_owned(),
            "amzn1.application-oa2-client.0123abcd".to_owned(),
        )]);
        let mut secret = SecretView::test("acme-us-lwa");
        secret.annotations = &annotations;
        assert_eq!(
            metadata_holding(&secret, None, &needles).as_deref(),
            Some("metadata.annotations[\"team.example/copy\"]")
        );
        let none = BTreeMap::new();
        secret.labels = &labels;
        secret.annotations = &none;
        assert_eq!(
            metadata_holding(&secret, None, &needles).as_deref(),
            Some("metadata.labels[\"client\"]")
        );
    }

    #[test]
    fn the_scrubbed_last_applied_configuration_stands_in_for_the_stored_one() {
        let annotations =
            BTreeMap::from([(LAST_APPLIED_ANNOTATION.to_owned(), APPLIED.to_owned())]);
        let mut secret = SecretView::test("acme-us-lwa");
        secret.annotations = &annotations;
        let needles = needles([b"amzn1.oa2-cs.v1.topsecretvalue".as_slice()]);
        assert!(metadata_holding(&secret, None, &needles).is_some());
        let scrubbed = scrub_last_applied(APPLIED, &INTAKE_KEYS).unwrap();
        assert_eq!(metadata_holding(&secret, Some(&scrubbed), &needles), None);
    }

    #[test]
    fn short_values_are_not_looked_for() {
        assert!(needles([b"abc".as_slice()]).is_empty());
        assert_eq!(
            needles([b"abcdefgh".as_slice()]).len(),
            2,
            "itself and base64"
        );
    }
}
