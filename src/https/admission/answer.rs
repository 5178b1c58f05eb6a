//! Writing the answer to a decided review: byte for byte what kube's `AdmissionReview` (built
//! by `respond`) serializes to, written straight into one buffer instead of through a
//! response struct, its annotation map and serde.

use crate::domain::admission::Mutation;

use super::views::json_patch;

/// What the answer to a decided review says.
pub(super) struct Verdict<'a> {
    /// The request's uid.
    pub uid: &'a str,
    pub allowed: bool,
    /// The decision's bounded reason, for the API server's audit annotation.
    pub reason: &'a str,
    /// For a denial: why.
    pub message: &'a str,
    pub warnings: &'a [String],
    /// A change to the object, made only when allowed.
    pub patch: Option<&'a Mutation>,
}

const HEAD: &[u8] =
    br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"#;

/// The answer's bytes.
pub(super) fn write(verdict: &Verdict<'_>) -> Vec<u8> {
    let patch = match verdict.patch.filter(|_| verdict.allowed) {
        None => None,
        Some(mutation) => match serde_json::to_vec(&json_patch(mutation)) {
            Ok(patch) => Some(patch),
            Err(_) => return unencodable(verdict.uid),
        },
    };
    let mut out = Vec::with_capacity(
        HEAD.len()
            + 160
            + verdict.uid.len()
            + verdict.message.len()
            + patch.as_ref().map_or(0, |p| 4 * p.len()),
    );
    out.extend_from_slice(HEAD);
    string(&mut out, verdict.uid);
    if verdict.allowed {
        out.extend_from_slice(br#","allowed":true,"status":{}"#);
    } else {
        out.extend_from_slice(br#","allowed":false,"status":{"status":"Failure","code":403"#);
        if !verdict.message.is_empty() {
            out.extend_from_slice(br#","message":"#);
            string(&mut out, verdict.message);
        }
        out.extend_from_slice(br#","reason":"Forbidden"}"#);
    }
    if let Some(patch) = patch {
        // kube writes the patch bytes as an array of numbers, which the API server accepts.
        out.extend_from_slice(br#","patch":["#);
        for (i, byte) in patch.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            decimal(&mut out, *byte);
        }
        out.extend_from_slice(br#"],"patchType":"JSONPatch""#);
    }
    out.extend_from_slice(br#","auditAnnotations":{"reason":"#);
    string(&mut out, verdict.reason);
    out.push(b'}');
    if !verdict.warnings.is_empty() {
        out.extend_from_slice(br#","warnings":["#);
        for (i, warning) in verdict.warnings.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(&mut out, warning);
        }
        out.push(b']');
    }
    out.extend_from_slice(b"}}");
    out
}

/// The answer when the patch cannot be encoded: denied, nothing stored.
fn unencodable(uid: &str) -> Vec<u8> {
    let mut out = HEAD.to_vec();
    string(&mut out, uid);
    out.extend_from_slice(
        br#","allowed":false,"status":{"code":500,"message":"the webhook could not encode its patch; nothing was stored"}}}"#,
    );
    out
}

/// A JSON string as serde_json writes it.
fn string(out: &mut Vec<u8>, value: &str) {
    if value.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        // Escaping is left to serde_json so that the bytes stay its bytes; writing into a
        // vector does not fail.
        let _ = serde_json::to_writer(&mut *out, value);
    } else {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    }
}

fn decimal(out: &mut Vec<u8>, byte: u8) {
    if byte >= 100 {
        out.push(b'0' + byte / 100);
    }
    if byte >= 10 {
        out.push(b'0' + byte / 10 % 10);
    }
    out.push(b'0' + byte % 10);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape of answer, against kube's answer serialized.
    #[test]
    fn the_written_answer_is_the_serialized_review_byte_for_byte() {
        let uids = ["705ab4f5-6393-11e8-b7cc-42010a800002", "a\"b\\c\u{1}é"];
        let messages = [
            "",
            "spec.gateways: gateway \"gw-x\" is not listed; see <docs> & retry\n\ttab \u{7f} é",
        ];
        let warnings = [
            Vec::new(),
            vec!["one".to_owned()],
            vec!["quoted \"two\"".to_owned(), "line\nthree".to_owned()],
        ];
        let seal = |remove_string_data, last_applied: Option<&str>| Mutation::SealCredentials {
            envelope: (0..=255u8).chain([0, 9, 10, 99, 100]).collect(),
            remove_string_data,
            last_applied: last_applied.map(str::to_owned),
        };
        let patches = [
            None,
            Some(seal(true, None)),
            Some(seal(false, None)),
            Some(seal(
                true,
                Some("{\"kind\":\"Secret\",\"type\":\"Opaque\"}\n"),
            )),
        ];
        let mut checked = 0;
        for uid in uids {
            for allowed in [true, false] {
                for reason in ["none", "gateway_not_listed"] {
                    for message in messages {
                        for warnings in &warnings {
                            for patch in &patches {
                                let verdict = Verdict {
                                    uid,
                                    allowed,
                                    reason,
                                    message,
                                    warnings,
                                    patch: patch.as_ref(),
                                };
                                let expected =
                                    serde_json::to_vec(&super::super::respond(&verdict)).unwrap();
                                assert_eq!(
                                    String::from_utf8(write(&verdict)).unwrap(),
                                    String::from_utf8(expected).unwrap()
                                );
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 192);
    }

    #[test]
    fn the_answer_to_an_unencodable_patch_is_kubes() {
        let mut denied = super::super::response_for("u\"1")
            .deny("the webhook could not encode its patch; nothing was stored");
        denied.result.code = 500;
        assert_eq!(
            unencodable("u\"1"),
            serde_json::to_vec(&denied.into_review()).unwrap()
        );
    }

    #[test]
    fn bytes_are_written_as_serde_json_writes_numbers() {
        for byte in 0..=255u8 {
            let mut out = Vec::new();
            decimal(&mut out, byte);
            assert_eq!(out, byte.to_string().into_bytes());
        }
    }
}
