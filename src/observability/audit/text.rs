//! The text form of an audit record, written instead of the JSON line under `--log-format text`
//! so that a terminal shows one kind of line. It carries every field of the record, in the
//! canonical order, so `audit verify` rebuilds the same record and checks the same chain:
//!
//! ```text
//! 2026-05-16T10:00:00.123Z AUDIT seq=7 category=gateway_activity action=pod_create outcome=denied actor=system:serviceaccount:team-acme:web team=acme namespace=team-acme connection=acme-us gateway=- reason=gateway_not_listed prev_hash=<64 hex> hash=<64 hex>
//! ```
//!
//! An absent value is `-`, which no identifier or word can be (they start and end with a
//! letter or digit); `pod=` appears only in records about a pod. No value holds a space, so
//! the line splits unambiguously at spaces, and at the first `=` of each field.

use serde::de::DeserializeOwned;

use super::{AuditRecord, LOG_TYPE};

/// The word after the time that marks a text line as an audit record.
pub const MARKER: &str = "AUDIT";

/// Written for an absent value.
const ABSENT: &str = "-";

/// The record as one text line, without the line end.
pub fn render(record: &AuditRecord) -> String {
    let value = |v: &Option<String>| v.clone().unwrap_or_else(|| ABSENT.to_owned());
    let mut fields = vec![
        ("seq", record.seq.to_string()),
        ("category", record.category.as_str().to_owned()),
        ("action", record.action.clone()),
        ("outcome", record.outcome.as_str().to_owned()),
        ("actor", value(&record.actor)),
        ("team", value(&record.team)),
        ("namespace", value(&record.namespace)),
        ("connection", value(&record.connection)),
        ("gateway", value(&record.gateway)),
    ];
    if let Some(pod) = &record.pod {
        fields.push(("pod", pod.clone()));
    }
    fields.extend([
        ("reason", value(&record.reason)),
        ("prev_hash", record.prev_hash.clone()),
        ("hash", record.hash.clone()),
    ]);
    let mut line = format!("{} {MARKER}", record.time);
    for (key, value) in fields {
        line.push(' ');
        line.push_str(key);
        line.push('=');
        line.push_str(&value);
    }
    line
}

/// Reads a text record: `None` when `line` is not one (its second word is not [`MARKER`]),
/// `Some(Err(why))` when it is marked as one but not well formed.
pub fn parse(line: &str) -> Option<Result<AuditRecord, String>> {
    let mut words = line.split(' ');
    let time = words.next()?;
    if words.next()? != MARKER || time.parse::<jiff::Timestamp>().is_err() {
        return None;
    }
    Some(parse_fields(time, words))
}

/// The `key=value` words after the marker, read in the canonical order.
struct Fields<'a, I: Iterator<Item = &'a str>>(std::iter::Peekable<I>);

impl<'a, I: Iterator<Item = &'a str>> Fields<'a, I> {
    /// The next field, which must be `key`; `None` for an absent value (`-`).
    fn take(&mut self, key: &str) -> Result<Option<String>, String> {
        let word = self
            .0
            .next()
            .ok_or_else(|| format!("field {key} is missing"))?;
        let value = word
            .strip_prefix(key)
            .and_then(|rest| rest.strip_prefix('='))
            .ok_or_else(|| format!("expected field {key}, found {word:?}"))?;
        Ok((value != ABSENT).then(|| value.to_owned()))
    }

    /// The next field, which must be `key` and have a value.
    fn required(&mut self, key: &str) -> Result<String, String> {
        self.take(key)?
            .ok_or_else(|| format!("field {key} has no value"))
    }

    /// The next field if it is `key` (a field written only when present).
    fn optional(&mut self, key: &str) -> Result<Option<String>, String> {
        let next_is_key = self
            .0
            .peek()
            .is_some_and(|w| w.split('=').next() == Some(key));
        if next_is_key {
            self.take(key)
        } else {
            Ok(None)
        }
    }
}

fn parse_fields<'a>(
    time: &str,
    words: impl Iterator<Item = &'a str>,
) -> Result<AuditRecord, String> {
    let mut fields = Fields(words.peekable());
    let seq = fields
        .required("seq")?
        .parse::<u64>()
        .map_err(|e| format!("seq: {e}"))?;
    let record = AuditRecord {
        log_type: LOG_TYPE.to_owned(),
        time: time.to_owned(),
        seq,
        category: word_value(&fields.required("category")?)?,
        action: fields.required("action")?,
        outcome: word_value(&fields.required("outcome")?)?,
        actor: fields.take("actor")?,
        team: fields.take("team")?,
        namespace: fields.take("namespace")?,
        connection: fields.take("connection")?,
        gateway: fields.take("gateway")?,
        pod: fields.optional("pod")?,
        reason: fields.take("reason")?,
        prev_hash: fields.required("prev_hash")?,
        hash: fields.required("hash")?,
    };
    match fields.0.next() {
        Some(extra) => Err(format!("unexpected {extra:?} after the hash")),
        None => Ok(record),
    }
}

/// A category or outcome word, read as its JSON form is.
fn word_value<T: DeserializeOwned>(word: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(word.to_owned()))
        .map_err(|e| format!("{word:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::observability::audit::{
        AuditEvent, AuditLog, Category, Outcome, VerifyOptions, verify,
    };
    use crate::observability::logging::LogFormat;
    use crate::observability::metrics::Metrics;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The same events written in both forms.
    fn logs() -> (String, String) {
        let write = |format| {
            let out = Sink::default();
            let log = AuditLog::to_writer_as(out.clone(), format, Metrics::new().unwrap(), "op-0")
                .unwrap();
            log.record(
                AuditEvent::new(Category::GatewayActivity, "pod_create", Outcome::Denied)
                    .actor("system:serviceaccount:team-acme:web")
                    .team("acme")
                    .namespace("team-acme")
                    .connection("acme-us")
                    .reason("gateway_not_listed"),
            )
            .unwrap();
            log.record(
                AuditEvent::new(
                    Category::CredentialAccess,
                    "token_request",
                    Outcome::Allowed,
                )
                .pod("gw-1")
                .gateway("gw-main"),
            )
            .unwrap();
            String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
        };
        (write(LogFormat::Json), write(LogFormat::Text))
    }

    #[test]
    fn a_text_line_holds_the_record_it_was_written_from() {
        let (_, text) = logs();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| !l.starts_with('{')), "{text}");
        assert!(
            lines[1].contains(
                " AUDIT seq=1 category=gateway_activity action=pod_create outcome=denied \
                 actor=system:serviceaccount:team-acme:web team=acme namespace=team-acme \
                 connection=acme-us gateway=- reason=gateway_not_listed prev_hash="
            ),
            "{}",
            lines[1]
        );
        for line in &lines {
            let record = parse(line).unwrap().unwrap();
            assert_eq!(render(&record), *line);
            assert_eq!(record.compute_hash().unwrap(), record.hash);
        }
        assert!(lines[2].contains(" gateway=gw-main pod=gw-1 reason=- "));
    }

    #[test]
    fn verify_checks_a_text_chain_as_it_checks_a_json_chain() {
        let (json, text) = logs();
        for log in [&json, &text] {
            let report = verify(log.as_bytes(), VerifyOptions::default()).unwrap();
            assert!(report.is_intact(), "{report:?}");
            assert_eq!(report.records, 3);
        }
        // Ordinary text log lines beside it are skipped, even one quoting the marker.
        let mixed = format!(
            "2026-05-16T10:00:00.000001Z  INFO operator: started\n\
             2026-05-16T10:00:00.000002Z  WARN operator: saw \"x AUDIT seq=1\"\n{text}"
        );
        let report = verify(mixed.as_bytes(), VerifyOptions::default()).unwrap();
        assert!(report.is_intact());
        assert_eq!(report.ignored_lines, 2);
        // A changed value, a dropped field and an added one are each caught.
        for tampered in [
            text.replace("outcome=denied", "outcome=allowed"),
            text.replace(" team=acme", ""),
            text.replacen(
                " reason=gateway_not_listed",
                " reason=gateway_not_listed x=1",
                1,
            ),
        ] {
            let report = verify(tampered.as_bytes(), VerifyOptions::default()).unwrap();
            assert!(!report.is_intact(), "{tampered}");
        }
        // After a collector's prefix (`kubectl logs --timestamps`, CRI), too.
        let prefixed: String = text
            .lines()
            .map(|l| format!("2026-05-16T10:00:01.5Z stdout F {l}\n"))
            .collect();
        assert!(
            verify(prefixed.as_bytes(), VerifyOptions::default())
                .unwrap()
                .is_intact()
        );
    }
}
