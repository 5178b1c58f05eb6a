//! The security audit log: one JSON line per security-relevant event, linked into a SHA-256
//! hash chain so that modified, deleted, inserted or reordered records are detectable
//! (`amazon-seller-operator audit verify`). docs/audit-log.md is the user-facing description.
//!
//! # Record
//!
//! ```json
//! {"log_type":"audit","time":"2026-05-16T10:00:00.123Z","seq":7,"category":"gateway_activity",
//!  "action":"pod_create","outcome":"denied","actor":"system:serviceaccount:team-acme:web",
//!  "team":"acme","namespace":"team-acme","connection":"acme-us","gateway":null,
//!  "reason":"gateway_not_listed","prev_hash":"<64 hex>","hash":"<64 hex>"}
//! ```
//!
//! # What is hashed
//!
//! `hash` is the lowercase hex SHA-256 of the record's *canonical form*: the JSON object with
//! every field except `hash`, in exactly the order above, without whitespace, absent values as
//! `null`, except `pod` (between `gateway` and `reason`), which is present only in records about
//! a pod, such as calls to the runtime credential endpoint, and left out otherwise. The written line is that canonical form with `,"hash":"…"` inserted before the
//! closing brace. Every value is ASCII without quotes, backslashes or control characters (the
//! writer enforces it), so the canonical form is unambiguous and any JSON library can rebuild
//! it from a parsed record.
//!
//! # Segments
//!
//! Each process start opens a new chain segment with a `service` record, action
//! [`SEGMENT_START_ACTION`], `seq` 0 and `prev_hash` [`GENESIS_HASH`]; every later record of the
//! process has `seq` one higher than the previous one and `prev_hash` equal to its `hash`. So a
//! verifier accepts a `seq` 0 record as a legitimate restart, and any other discontinuity is a
//! break. What a chain cannot show from the log alone (a truncated tail, a whole deleted
//! segment, a rewrite of the chain from some record onwards) is covered by shipping the log to
//! append-only storage and recording the verified head in each review (docs/audit-log.md).
//!
//! # No secrets
//!
//! An [`AuditEvent`] carries only identifiers and bounded words: `action` and `reason` are
//! `&'static str` constants; `category` and `outcome` are enums; actor, team, namespace,
//! connection, gateway and pod are names that must have the shape of a Kubernetes name or user name
//! (see [`identifier`]). A value of the wrong shape, or one that looks like an LWA token or
//! client secret, is written as [`REDACTED`] (identifiers) or [`UNCLASSIFIED`] (words) and the
//! record is still written, so that the event itself is never lost. There is no field for
//! free text, request bodies or credential material.
//!
//! `verify` holds the checking side (`audit verify`).

mod verify;

pub use verify::{ChainBreak, Head, Problem, VerifyOptions, VerifyReport, verify, verify_command};

use std::fmt;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::metrics::{Metrics, is_category};

/// The `log_type` value that marks a line as an audit record.
pub const LOG_TYPE: &str = "audit";

/// `prev_hash` of the first record of every chain segment.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `action` of the `service` record that opens a chain segment at process start.
pub const SEGMENT_START_ACTION: &str = "audit_log_started";

/// Written in place of an identifier that does not have the shape of a name.
pub const REDACTED: &str = "<redacted>";

/// Written in place of an action or reason that is not a bounded word.
pub const UNCLASSIFIED: &str = "unclassified";

/// Prefixes of LWA credential material; a value starting with one is never written.
const SECRET_PREFIXES: &[&str] = &["Atza|", "Atzr|", "Atzc|", "amzn1.oa2-cs."];

/// The policy's log categories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Who called the operator or the webhook and whether they were recognised.
    Authentication,
    /// Creating, changing, suspending or deleting connections and their sealed credentials.
    ConnectorSetup,
    /// Access to runtime credentials: token refreshes, runtime Secret mounts.
    CredentialAccess,
    /// Errors from Amazon (LWA) and from the Kubernetes API.
    ApiError,
    /// What gateway pods do with connections: admitted, refused, ephemeral containers.
    GatewayActivity,
    /// The operator's own lifecycle: start, stop, leadership, key rotation.
    Service,
}

impl Category {
    /// Every category, in log order.
    pub const ALL: [Category; 6] = [
        Self::Authentication,
        Self::ConnectorSetup,
        Self::CredentialAccess,
        Self::ApiError,
        Self::GatewayActivity,
        Self::Service,
    ];

    /// The value written to the log and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authentication => "authentication",
            Self::ConnectorSetup => "connector_setup",
            Self::CredentialAccess => "credential_access",
            Self::ApiError => "api_error",
            Self::GatewayActivity => "gateway_activity",
            Self::Service => "service",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the recorded action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The action was carried out.
    Success,
    /// The action was attempted and failed.
    Failure,
    /// An access decision let the request through.
    Allowed,
    /// An access decision refused the request.
    Denied,
}

impl Outcome {
    /// The value written to the log and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Allowed => "allowed",
            Self::Denied => "denied",
        }
    }
}

/// What a component reports. Build with [`AuditEvent::new`] and the setters, then pass to
/// [`AuditLog::record`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    category: Category,
    action: &'static str,
    outcome: Outcome,
    actor: Option<String>,
    team: Option<String>,
    namespace: Option<String>,
    connection: Option<String>,
    gateway: Option<String>,
    pod: Option<String>,
    reason: Option<&'static str>,
}

impl AuditEvent {
    /// An event of `category`: `action` is a bounded verb such as `"refresh_token"`.
    pub fn new(category: Category, action: &'static str, outcome: Outcome) -> Self {
        Self {
            category,
            action,
            outcome,
            actor: None,
            team: None,
            namespace: None,
            connection: None,
            gateway: None,
            pod: None,
            reason: None,
        }
    }

    /// Who acted: a Kubernetes user or ServiceAccount name, or the operator itself.
    pub fn actor(mut self, actor: &str) -> Self {
        self.actor = Some(actor.to_owned());
        self
    }

    /// The Team concerned.
    pub fn team(mut self, team: &str) -> Self {
        self.team = Some(team.to_owned());
        self
    }

    /// The namespace concerned.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self
    }

    /// The AmazonSellerConnection concerned.
    pub fn connection(mut self, connection: &str) -> Self {
        self.connection = Some(connection.to_owned());
        self
    }

    /// The gateway id concerned.
    pub fn gateway(mut self, gateway: &str) -> Self {
        self.gateway = Some(gateway.to_owned());
        self
    }

    /// The pod concerned (the caller of the runtime credential endpoint).
    pub fn pod(mut self, pod: &str) -> Self {
        self.pod = Some(pod.to_owned());
        self
    }

    /// Why: a bounded word such as an error `category()` or a rule name.
    pub fn reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }
}

/// One audit line as written, and as `verify` reads it back.
///
/// Field order is the canonical order (see the module docs). Unknown fields are refused when
/// reading, so a field added to a stored line is detected as tampering.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Always [`LOG_TYPE`].
    pub log_type: String,
    /// When the record was written, RFC 3339 in UTC with milliseconds.
    pub time: String,
    /// Position in the chain segment, from 0.
    pub seq: u64,
    /// The policy category.
    pub category: Category,
    /// What happened, a bounded verb.
    pub action: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Who acted.
    pub actor: Option<String>,
    /// The Team concerned.
    pub team: Option<String>,
    /// The namespace concerned.
    pub namespace: Option<String>,
    /// The connection concerned.
    pub connection: Option<String>,
    /// The gateway concerned.
    pub gateway: Option<String>,
    /// The pod concerned. Written only when set (runtime credential endpoint calls), so records
    /// without it, older ones included, keep their canonical form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Why, a bounded word.
    pub reason: Option<String>,
    /// `hash` of the previous record in the segment, or [`GENESIS_HASH`].
    pub prev_hash: String,
    /// SHA-256 of the canonical form, lowercase hex.
    pub hash: String,
}

/// The canonical form: every field but `hash`, in order. Serialized compactly by serde_json.
#[derive(Serialize)]
struct Canonical<'a> {
    log_type: &'a str,
    time: &'a str,
    seq: u64,
    category: Category,
    action: &'a str,
    outcome: Outcome,
    actor: Option<&'a str>,
    team: Option<&'a str>,
    namespace: Option<&'a str>,
    connection: Option<&'a str>,
    gateway: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<&'a str>,
    reason: Option<&'a str>,
    prev_hash: &'a str,
}

impl AuditRecord {
    fn canonical(&self) -> Canonical<'_> {
        Canonical {
            log_type: &self.log_type,
            time: &self.time,
            seq: self.seq,
            category: self.category,
            action: &self.action,
            outcome: self.outcome,
            actor: self.actor.as_deref(),
            team: self.team.as_deref(),
            namespace: self.namespace.as_deref(),
            connection: self.connection.as_deref(),
            gateway: self.gateway.as_deref(),
            pod: self.pod.as_deref(),
            reason: self.reason.as_deref(),
            prev_hash: &self.prev_hash,
        }
    }

    /// The canonical form's bytes: what [`AuditRecord::hash`] covers.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, AuditError> {
        serde_json::to_vec(&self.canonical()).map_err(AuditError::Serialize)
    }

    /// The hash this record should carry, computed from its other fields.
    pub fn compute_hash(&self) -> Result<String, AuditError> {
        Ok(hex(&Sha256::digest(self.canonical_bytes()?)))
    }

    /// Whether this record opens a chain segment.
    pub fn is_segment_start(&self) -> bool {
        self.seq == 0
            && self.prev_hash == GENESIS_HASH
            && self.category == Category::Service
            && self.action == SEGMENT_START_ACTION
    }
}

fn hex(bytes: &[u8]) -> String {
    hex_digits(bytes).map(char::from).collect()
}

/// Failures of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The record could not be written to the log's output.
    #[error("failed to write audit record: {0}")]
    Write(#[source] io::Error),
    /// The record could not be serialized (not expected: every field is a plain value).
    #[error("failed to serialize audit record: {0}")]
    Serialize(#[source] serde_json::Error),
}

impl crate::error::Categorized for AuditError {
    fn category(&self) -> &'static str {
        match self {
            Self::Write(_) => "audit_write",
            Self::Serialize(_) => "audit_serialize",
        }
    }
}

/// The shared audit log. Clones write to the same chain; safe to use from many tasks.
#[derive(Clone)]
pub struct AuditLog {
    chain: Arc<Mutex<Chain>>,
    metrics: Metrics,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

struct Chain {
    out: Box<dyn Write + Send>,
    next_seq: u64,
    prev_hash: String,
    /// The line being written; kept so that its allocation is reused.
    line: Vec<u8>,
}

impl AuditLog {
    /// Opens a new chain segment on standard output. `instance` names this process (the pod
    /// name) and becomes the actor of the segment's first record.
    pub fn stdout(metrics: Metrics, instance: &str) -> Result<Self, AuditError> {
        Self::to_writer(io::stdout(), metrics, instance)
    }

    /// Opens a new chain segment on `out`: writes the segment's `service` record at once.
    ///
    /// Each record is written with one `write_all` and flushed, so lines never interleave
    /// with other writers of the same stream (standard output locks per call).
    pub fn to_writer(
        out: impl Write + Send + 'static,
        metrics: Metrics,
        instance: &str,
    ) -> Result<Self, AuditError> {
        let log = Self {
            chain: Arc::new(Mutex::new(Chain {
                out: Box::new(out),
                next_seq: 0,
                prev_hash: GENESIS_HASH.to_owned(),
                line: Vec::with_capacity(512),
            })),
            metrics,
        };
        log.record(
            AuditEvent::new(Category::Service, SEGMENT_START_ACTION, Outcome::Success)
                .actor(instance)
                .reason("process_start"),
        )?;
        Ok(log)
    }

    /// Appends one record and counts it in `amazon_seller_audit_events_total`. Returns its
    /// `seq`. On a write failure the chain does not advance, so the next record links to the
    /// last one actually written.
    pub fn record(&self, event: AuditEvent) -> Result<u64, AuditError> {
        // A panic elsewhere while holding the lock leaves the chain state consistent (it is
        // only updated after a successful write), so a poisoned lock is still usable.
        let mut guard = self
            .chain
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let chain = &mut *guard;
        let seq = chain.next_seq;
        let line = &mut chain.line;
        line.clear();
        write_canonical(line, &event, seq, &chain.prev_hash);
        let hash = Sha256::digest(&line[..]);
        // Insert `,"hash":"…"` before the closing brace: the line is the canonical form plus
        // the hash, byte for byte.
        line.pop();
        line.extend_from_slice(br#","hash":""#);
        for digit in hex_digits(&hash) {
            line.push(digit);
        }
        line.extend_from_slice(b"\"}\n");
        chain
            .out
            .write_all(line)
            .and_then(|()| chain.out.flush())
            .map_err(AuditError::Write)?;
        chain.next_seq += 1;
        chain.prev_hash.clear();
        chain.prev_hash.extend(hex_digits(&hash).map(char::from));
        drop(guard);
        self.metrics
            .record_audit_event(event.category.as_str(), event.outcome.as_str());
        Ok(seq)
    }
}

/// Writes the canonical form of `event` as record `seq` after `prev_hash`: byte for byte what
/// serde_json makes of [`AuditRecord::canonical_bytes`]'s struct, without building the record
/// (the time is taken now).
fn write_canonical(line: &mut Vec<u8>, event: &AuditEvent, seq: u64, prev_hash: &str) {
    let field = |line: &mut Vec<u8>, name: &str| {
        line.push(if line.is_empty() { b'{' } else { b',' });
        line.push(b'"');
        line.extend_from_slice(name.as_bytes());
        line.extend_from_slice(b"\":");
    };
    field(line, "log_type");
    push_str(line, LOG_TYPE);
    field(line, "time");
    // jiff writes RFC 3339 (digits, `-`, `:`, `T`, `.`, `Z`): nothing JSON escapes.
    line.push(b'"');
    let _ = write!(line, "{:.3}", jiff::Timestamp::now());
    line.push(b'"');
    field(line, "seq");
    let _ = write!(line, "{seq}");
    field(line, "category");
    push_str(line, event.category.as_str());
    field(line, "action");
    push_str(line, word(event.action));
    field(line, "outcome");
    push_str(line, event.outcome.as_str());
    let identifiers = [
        ("actor", &event.actor),
        ("team", &event.team),
        ("namespace", &event.namespace),
        ("connection", &event.connection),
        ("gateway", &event.gateway),
    ];
    for (name, value) in identifiers {
        field(line, name);
        push_option(line, value.as_deref().map(identifier));
    }
    if let Some(pod) = event.pod.as_deref() {
        field(line, "pod");
        push_str(line, identifier(pod));
    }
    field(line, "reason");
    push_option(line, event.reason.map(word));
    field(line, "prev_hash");
    push_str(line, prev_hash);
    line.push(b'}');
}

/// A JSON string as serde_json writes it. Written values are identifiers and words, which
/// never need escaping; anything else is left to serde_json so the bytes stay the same.
fn push_str(line: &mut Vec<u8>, value: &str) {
    if value.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        let _ = serde_json::to_writer(&mut *line, value);
    } else {
        line.push(b'"');
        line.extend_from_slice(value.as_bytes());
        line.push(b'"');
    }
}

fn push_option(line: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => push_str(line, value),
        None => line.extend_from_slice(b"null"),
    }
}

/// The lowercase hex digits of `bytes`, as [`hex`] writes them.
fn hex_digits(bytes: &[u8]) -> impl Iterator<Item = u8> + '_ {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0x0f)]])
}

/// The value written for an identifier (actor, team, namespace, connection, gateway, pod): kept
/// when it is 1-256 ASCII characters from letters, digits and `-._:@/+=`, starts and ends with a
/// letter or digit, and does not start like LWA credential material; otherwise [`REDACTED`].
pub fn identifier(value: &str) -> &str {
    let bytes = value.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    let shape = (1..=256).contains(&bytes.len())
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && bytes.iter().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'.' | b'_' | b':' | b'@' | b'/' | b'+' | b'=')
        });
    let secret = SECRET_PREFIXES.iter().any(|p| value.starts_with(p));
    if shape && !secret { value } else { REDACTED }
}

/// The value written for an action or reason: a bounded word, otherwise [`UNCLASSIFIED`].
fn word(value: &'static str) -> &'static str {
    if is_category(value) {
        value
    } else {
        UNCLASSIFIED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose bytes the test can read back while the log still holds it.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    fn log() -> (AuditLog, Sink, Metrics) {
        let out = Sink::default();
        let metrics = Metrics::new().unwrap();
        let log = AuditLog::to_writer(out.clone(), metrics.clone(), "operator-0").unwrap();
        (log, out, metrics)
    }

    /// A log of one segment with `n` records after the segment start.
    fn sample(n: usize) -> Vec<String> {
        let (log, out, _) = log();
        for i in 0..n {
            let event = if i % 2 == 0 {
                AuditEvent::new(
                    Category::CredentialAccess,
                    "refresh_token",
                    Outcome::Success,
                )
                .actor("amazon-seller-operator")
                .team("acme")
                .namespace("team-acme")
                .connection("acme-us")
            } else {
                AuditEvent::new(
                    Category::GatewayActivity,
                    "mount_runtime_secret",
                    Outcome::Denied,
                )
                .actor("system:serviceaccount:team-acme:web")
                .team("acme")
                .namespace("team-acme")
                .connection("acme-us")
                .gateway("gw-main")
                .reason("gateway_not_listed")
            };
            log.record(event).unwrap();
        }
        out.lines()
    }

    fn run(lines: &[String]) -> VerifyReport {
        let text = lines.join("\n") + "\n";
        verify(text.as_bytes(), VerifyOptions::default()).unwrap()
    }

    fn break_of(lines: &[String]) -> ChainBreak {
        run(lines).broken.expect("chain must be broken")
    }

    #[test]
    fn an_untouched_log_verifies_with_counts_and_head() {
        let lines = sample(4);
        let report = run(&lines);
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records, 5);
        assert_eq!(report.segments, 1);
        assert_eq!(report.by_category[&Category::Service], 1);
        assert_eq!(report.by_category[&Category::CredentialAccess], 2);
        assert_eq!(report.head.as_ref().unwrap().seq, 4);
    }

    #[test]
    fn the_written_line_is_the_canonical_form_plus_its_hash() {
        let lines = sample(1);
        let record: AuditRecord = serde_json::from_str(&lines[1]).unwrap();
        let canonical = String::from_utf8(record.canonical_bytes().unwrap()).unwrap();
        let expected = format!(
            "{},\"hash\":\"{}\"}}",
            canonical.strip_suffix('}').unwrap(),
            record.hash
        );
        assert_eq!(lines[1], expected);
        // Independently: SHA-256 over exactly the line without its hash field.
        let without_hash = lines[1].replace(&format!(",\"hash\":\"{}\"", record.hash), "");
        assert_eq!(hex(&Sha256::digest(without_hash.as_bytes())), record.hash);
        assert!(lines[1].starts_with(r#"{"log_type":"audit","time":""#));
        assert_eq!(record.prev_hash.len(), 64);
    }

    #[test]
    fn every_written_line_is_the_serialized_canonical_form_plus_its_hash() {
        // The writer builds lines by hand; serde_json's form of the record is the reference.
        let (log, out, _) = log();
        let names = [
            None,
            Some("acme"),
            Some("system:serviceaccount:team-acme:gw"),
            Some("alice@example.com"),
            Some("a b"),
            Some("Atzr|x"),
            Some(""),
            Some("x\"y\\z\n"),
        ];
        let words: [&'static str; 5] =
            ["none", "gateway_not_listed", "not a word", "Atza|x", "q\""];
        let outcomes = [
            Outcome::Success,
            Outcome::Failure,
            Outcome::Allowed,
            Outcome::Denied,
        ];
        let mut n = 0usize;
        for category in Category::ALL {
            for outcome in outcomes {
                n += 1;
                let name = |k: usize| names[(n + k) % names.len()];
                let mut event = AuditEvent::new(category, words[n % words.len()], outcome);
                if let Some(v) = name(0) {
                    event = event.actor(v);
                }
                if let Some(v) = name(1) {
                    event = event.team(v);
                }
                if let Some(v) = name(2) {
                    event = event.namespace(v);
                }
                if let Some(v) = name(3) {
                    event = event.connection(v);
                }
                if let Some(v) = name(4) {
                    event = event.gateway(v);
                }
                if n.is_multiple_of(3) {
                    event = event.pod(name(5).unwrap_or("gw-main-7d9f"));
                }
                if n.is_multiple_of(2) {
                    event = event.reason(words[(n + 1) % words.len()]);
                }
                log.record(event).unwrap();
            }
        }
        let lines = out.lines();
        assert_eq!(lines.len(), n + 1);
        for line in &lines {
            let record: AuditRecord = serde_json::from_str(line).unwrap();
            let canonical = String::from_utf8(record.canonical_bytes().unwrap()).unwrap();
            let expected = format!(
                "{},\"hash\":\"{}\"}}",
                canonical.strip_suffix('}').unwrap(),
                record.compute_hash().unwrap()
            );
            assert_eq!(line, &expected);
        }
        assert!(run(&lines).is_intact());
    }

    #[test]
    fn strings_that_would_need_escaping_are_written_as_serde_json_writes_them() {
        for value in ["plain", "a\"b", "back\\slash", "new\nline", "\u{1}", "é"] {
            let mut line = Vec::new();
            push_str(&mut line, value);
            assert_eq!(line, serde_json::to_vec(value).unwrap(), "{value:?}");
        }
    }

    #[test]
    fn first_record_opens_a_segment_from_genesis() {
        let lines = sample(0);
        let first: AuditRecord = serde_json::from_str(&lines[0]).unwrap();
        assert!(first.is_segment_start());
        assert_eq!(first.seq, 0);
        assert_eq!(first.prev_hash, GENESIS_HASH);
        assert_eq!(first.actor.as_deref(), Some("operator-0"));
    }

    #[test]
    fn a_modified_field_is_detected_at_its_line() {
        let mut lines = sample(4);
        lines[2] = lines[2].replace(r#""outcome":"denied""#, r#""outcome":"allowed""#);
        let b = break_of(&lines);
        assert_eq!((b.line, b.seq, b.problem), (3, Some(2), Problem::Modified));
    }

    #[test]
    fn a_modified_and_rehashed_record_is_detected_at_the_next_line() {
        let mut lines = sample(4);
        let mut record: AuditRecord = serde_json::from_str(&lines[2]).unwrap();
        record.outcome = Outcome::Allowed;
        record.hash = record.compute_hash().unwrap();
        lines[2] = serde_json::to_string(&record).unwrap();
        let b = break_of(&lines);
        assert_eq!((b.line, b.seq, b.problem), (4, Some(3), Problem::Unlinked));
    }

    #[test]
    fn a_deleted_record_is_detected() {
        let mut lines = sample(4);
        lines.remove(2);
        let b = break_of(&lines);
        assert_eq!(
            (b.line, b.seq, b.problem),
            (3, Some(3), Problem::Gap { expected: 2 })
        );
    }

    #[test]
    fn an_inserted_copy_of_a_record_is_detected() {
        let mut lines = sample(4);
        let copy = lines[1].clone();
        lines.insert(3, copy);
        let b = break_of(&lines);
        assert_eq!(
            (b.line, b.seq, b.problem),
            (4, Some(1), Problem::OutOfOrder { expected: 3 })
        );
    }

    #[test]
    fn an_inserted_forged_record_is_detected() {
        let mut lines = sample(4);
        // A forger who knows the format builds a record that links correctly to line 3…
        let before: AuditRecord = serde_json::from_str(&lines[2]).unwrap();
        let mut forged: AuditRecord = serde_json::from_str(&lines[3]).unwrap();
        forged.prev_hash = before.hash.clone();
        forged.seq = before.seq + 1;
        forged.outcome = Outcome::Allowed;
        forged.hash = forged.compute_hash().unwrap();
        lines.insert(3, serde_json::to_string(&forged).unwrap());
        // …but the genuine record after it no longer fits.
        let b = break_of(&lines);
        assert_eq!(
            (b.line, b.seq, b.problem),
            (5, Some(3), Problem::OutOfOrder { expected: 4 })
        );
    }

    #[test]
    fn reordered_records_are_detected() {
        let mut lines = sample(4);
        lines.swap(2, 3);
        let b = break_of(&lines);
        assert_eq!(
            (b.line, b.seq, b.problem),
            (3, Some(3), Problem::Gap { expected: 2 })
        );
    }

    #[test]
    fn an_added_field_is_detected() {
        let mut lines = sample(2);
        lines[1] = lines[1].replacen('{', r#"{"note":"approved","#, 1);
        let b = break_of(&lines);
        assert!(matches!(b.problem, Problem::Malformed(_)), "{b:?}");
        assert_eq!(b.line, 2);
    }

    #[test]
    fn a_cut_record_is_detected() {
        let mut lines = sample(2);
        let half = lines[1].len() / 2;
        lines[1].truncate(half);
        let b = break_of(&lines);
        assert_eq!(b.line, 2);
        assert!(matches!(b.problem, Problem::Malformed(_)), "{b:?}");
    }

    #[test]
    fn a_truncated_tail_still_verifies_and_the_head_shows_where_it_ends() {
        let lines = sample(4);
        let report = run(&lines[..3]);
        assert!(report.is_intact());
        assert_eq!(report.head.unwrap().seq, 2);
    }

    #[test]
    fn deleting_the_segment_start_is_detected_unless_partial_start_is_allowed() {
        let lines = sample(3);
        let b = break_of(&lines[1..]);
        assert_eq!((b.line, b.problem), (1, Problem::NoSegmentStart));
        let text = lines[1..].join("\n");
        let report = verify(
            text.as_bytes(),
            VerifyOptions {
                allow_partial_start: true,
            },
        )
        .unwrap();
        assert!(report.is_intact());
        assert_eq!(report.segments, 0);
    }

    #[test]
    fn a_restart_opens_a_legitimate_new_segment() {
        let mut lines = sample(2);
        lines.extend(sample(3));
        let report = run(&lines);
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.segments, 2);
        assert_eq!(report.records, 7);
    }

    #[test]
    fn a_forged_segment_start_is_detected() {
        let mut lines = sample(3);
        let mut record: AuditRecord = serde_json::from_str(&lines[2]).unwrap();
        record.seq = 0;
        record.prev_hash = GENESIS_HASH.to_owned();
        record.hash = record.compute_hash().unwrap();
        lines[2] = serde_json::to_string(&record).unwrap();
        let b = break_of(&lines);
        assert_eq!((b.line, b.problem), (3, Problem::BadSegmentStart));
    }

    #[test]
    fn ordinary_log_lines_and_collector_prefixes_are_handled() {
        let lines = sample(2);
        let mixed = vec![
            "2026-05-16T10:00:00Z INFO amazon_seller_operator: started".to_owned(),
            format!("2026-05-16T10:00:00.1Z stdout F {}", lines[0]),
            r#"{"timestamp":"2026-05-16T10:00:00Z","level":"INFO","fields":{"message":"hi","log_type":"audit"}}"#.to_owned(),
            format!("2026-05-16T10:00:00.2Z {}", lines[1]),
            String::new(),
            lines[2].clone(),
        ];
        let report = run(&mixed);
        assert!(report.is_intact(), "{report:?}");
        assert_eq!((report.records, report.ignored_lines), (3, 3));
    }

    #[test]
    fn an_empty_log_is_not_reported_as_intact() {
        let report = run(&["just a line".to_owned()]);
        assert!(!report.is_intact());
        assert!(report.broken.is_none());
    }

    #[test]
    fn every_record_is_counted_by_category_and_outcome() {
        let (log, _, metrics) = log();
        log.record(AuditEvent::new(
            Category::Authentication,
            "token_review",
            Outcome::Denied,
        ))
        .unwrap();
        let text = metrics.encode().unwrap();
        assert!(text.contains(
            "amazon_seller_audit_events_total{category=\"authentication\",outcome=\"denied\"} 1"
        ));
        assert!(text.contains(
            "amazon_seller_audit_events_total{category=\"service\",outcome=\"success\"} 1"
        ));
    }

    #[test]
    fn concurrent_writers_produce_one_unbroken_chain() {
        let (log, out, _) = log();
        std::thread::scope(|s| {
            for _ in 0..8 {
                let log = log.clone();
                s.spawn(move || {
                    for _ in 0..50 {
                        log.record(AuditEvent::new(
                            Category::CredentialAccess,
                            "refresh_token",
                            Outcome::Success,
                        ))
                        .unwrap();
                    }
                });
            }
        });
        let report = run(&out.lines());
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records, 401);
    }

    #[test]
    fn a_record_has_only_identifier_and_bounded_fields() {
        let lines = sample(2);
        let value: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = vec![
            "log_type",
            "time",
            "seq",
            "category",
            "action",
            "outcome",
            "actor",
            "team",
            "namespace",
            "connection",
            "gateway",
            "reason",
            "prev_hash",
            "hash",
        ];
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        expected.sort_unstable();
        assert_eq!(sorted, expected);
    }

    #[test]
    fn secret_looking_values_are_never_written() {
        let (log, out, _) = log();
        let leaked_reason: &'static str = "Atza|IwEBIAccessTokenValue";
        log.record(
            AuditEvent::new(
                Category::CredentialAccess,
                "refresh_token",
                Outcome::Failure,
            )
            .actor("Atzr|IwEBIRefreshTokenValue")
            .team("amzn1.oa2-cs.v1.0123456789abcdef")
            .namespace("team acme\"},{\"x\":\"")
            .connection(&"c".repeat(300))
            .gateway("gw-main")
            .reason(leaked_reason),
        )
        .unwrap();
        let lines = out.lines();
        let written = &lines[1];
        for secret in ["Atza", "Atzr", "amzn1", "team acme", "ccccc"] {
            assert!(!written.contains(secret), "{secret} written: {written}");
        }
        let record: AuditRecord = serde_json::from_str(written).unwrap();
        assert_eq!(record.actor.as_deref(), Some(REDACTED));
        assert_eq!(record.team.as_deref(), Some(REDACTED));
        assert_eq!(record.namespace.as_deref(), Some(REDACTED));
        assert_eq!(record.gateway.as_deref(), Some("gw-main"));
        assert_eq!(record.reason.as_deref(), Some(UNCLASSIFIED));
        // The redacted record is still part of an intact chain.
        assert!(run(&lines).is_intact());
    }

    #[test]
    fn the_pod_field_is_written_only_when_set_and_is_covered_by_the_hash() {
        let (log, out, _) = log();
        log.record(
            AuditEvent::new(
                Category::CredentialAccess,
                "token_request",
                Outcome::Allowed,
            )
            .actor("system:serviceaccount:team-acme:gateway")
            .pod("gw-main-7d9f")
            .reason("none"),
        )
        .unwrap();
        log.record(AuditEvent::new(
            Category::Service,
            "webhook_started",
            Outcome::Success,
        ))
        .unwrap();
        let lines = out.lines();
        assert!(lines[1].contains(r#""gateway":null,"pod":"gw-main-7d9f","reason":"none""#));
        assert!(!lines[2].contains("\"pod\""), "{}", lines[2]);
        assert!(run(&lines).is_intact());
        let mut tampered = lines.clone();
        tampered[1] = tampered[1].replace("gw-main-7d9f", "gw-main-0000");
        assert!(!run(&tampered).is_intact());
    }

    #[test]
    fn identifiers_keep_kubernetes_and_user_names() {
        for name in [
            "acme",
            "team-acme",
            "system:serviceaccount:team-acme:gateway",
            "alice@example.com",
            "system:node:ip-10-0-0-1.ec2.internal",
        ] {
            assert_eq!(identifier(name), name);
        }
        for bad in ["", " acme", "a b", "a\"b", "a\\b", "é", "Atza|x", "x\n"] {
            assert_eq!(identifier(bad), REDACTED, "{bad:?}");
        }
    }
}
