//! `audit verify`: reads a log (any log: other lines and collector prefixes are skipped) and
//! checks every audit record's hash and its link to the one before, reporting the first break
//! by line and `seq`, each segment's head, and counts. What the chain format is and why it
//! detects tampering is described in the parent module.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, Write};

use super::{AuditRecord, Category, GENESIS_HASH, LOG_TYPE};

/// Where and why a log's chain breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBreak {
    /// 1-based line number in the input.
    pub line: u64,
    /// The record's `seq`, when it could be read.
    pub seq: Option<u64>,
    /// What is wrong.
    pub problem: Problem,
}

/// The kinds of chain break.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A line marked as an audit record is not a well-formed record (edited, truncated or
    /// with an added field).
    Malformed(String),
    /// The record's fields no longer match its hash: it was modified.
    Modified,
    /// `seq` skips ahead: records before this one were deleted (or moved after it).
    Gap {
        /// The `seq` that should have come next.
        expected: u64,
    },
    /// `seq` is not higher than the previous record's: records were inserted, duplicated or
    /// reordered.
    OutOfOrder {
        /// The `seq` that should have come next.
        expected: u64,
    },
    /// `seq` is right but `prev_hash` is not the previous record's hash: a record was
    /// replaced, or the previous one was modified and re-hashed.
    Unlinked,
    /// A `seq` 0 record that is not a proper segment start (`service`/`audit_log_started`
    /// with the genesis `prev_hash`).
    BadSegmentStart,
    /// The first record is not a segment start, so earlier records are missing (allowed with
    /// `--allow-partial-start` for a rotated log file).
    NoSegmentStart,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "not a well-formed audit record ({why})"),
            Self::Modified => f.write_str("hash does not match the record: it was modified"),
            Self::Gap { expected } => write!(
                f,
                "expected seq {expected}: records before this one were deleted or reordered"
            ),
            Self::OutOfOrder { expected } => write!(
                f,
                "expected seq {expected}: records were inserted, duplicated or reordered"
            ),
            Self::Unlinked => f.write_str(
                "prev_hash does not match the previous record: a record was replaced or inserted",
            ),
            Self::BadSegmentStart => f.write_str(
                "seq 0 without a proper segment start (service/audit_log_started, genesis prev_hash)",
            ),
            Self::NoSegmentStart => f.write_str(
                "the log does not begin with a segment start: earlier records are missing",
            ),
        }
    }
}

/// The last verified record: reviewers note it so that a later verification can show the
/// log was not truncated or rewritten before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// 1-based line number.
    pub line: u64,
    /// Its `seq`.
    pub seq: u64,
    /// Its `hash`.
    pub hash: String,
    /// Its `time`.
    pub time: String,
}

/// What [`verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Audit records verified (up to the break, if any).
    pub records: u64,
    /// Chain segments (process starts) seen.
    pub segments: u64,
    /// Lines that are not audit records (ordinary logs), skipped.
    pub ignored_lines: u64,
    /// Verified records per category.
    pub by_category: BTreeMap<Category, u64>,
    /// The last verified record.
    pub head: Option<Head>,
    /// The first break, if the chain is broken.
    pub broken: Option<ChainBreak>,
}

impl VerifyReport {
    /// True when there are records and no break.
    pub fn is_intact(&self) -> bool {
        self.broken.is_none() && self.records > 0
    }
}

/// How [`verify`] treats the start of the input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Accept a first record that is not a segment start (a log file rotated mid-segment).
    /// The chain is then checked from that record on.
    pub allow_partial_start: bool,
}

/// Reads a log (audit lines mixed with any other lines, which are skipped) and checks the
/// chain. Stops at the first break. Fails only when the input cannot be read.
///
/// A line is an audit record when it is a JSON object with `"log_type":"audit"`, or a record in
/// the [`text`](super::text) form, optionally after a collector prefix: an RFC 3339 timestamp
/// (`kubectl logs --timestamps`), or a CRI log prefix (`<time> stdout F `).
pub fn verify(mut input: impl BufRead, options: VerifyOptions) -> io::Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut previous: Option<(u64, String)> = None;
    let mut buffer = Vec::new();
    let mut line_no = 0u64;
    loop {
        buffer.clear();
        if input.read_until(b'\n', &mut buffer)? == 0 {
            break;
        }
        line_no += 1;
        let text = String::from_utf8_lossy(&buffer);
        let record = match parse_line(text.trim_end_matches(['\n', '\r'])) {
            Parsed::Other => {
                report.ignored_lines += 1;
                continue;
            }
            Parsed::Malformed(why) => Err(ChainBreak {
                line: line_no,
                seq: None,
                problem: Problem::Malformed(why),
            }),
            Parsed::Record(record) => {
                check(&record, line_no, previous.as_ref(), options).map(|()| record)
            }
        };
        let record = match record {
            Ok(record) => record,
            Err(broken) => {
                report.broken = Some(broken);
                return Ok(report);
            }
        };
        if record.is_segment_start() {
            report.segments += 1;
        }
        report.records += 1;
        *report.by_category.entry(record.category).or_default() += 1;
        report.head = Some(Head {
            line: line_no,
            seq: record.seq,
            hash: record.hash.clone(),
            time: record.time.clone(),
        });
        previous = Some((record.seq, record.hash));
    }
    Ok(report)
}

/// Checks one record against its own hash and the previous record.
fn check(
    record: &AuditRecord,
    line: u64,
    previous: Option<&(u64, String)>,
    options: VerifyOptions,
) -> Result<(), ChainBreak> {
    let broken = |problem| ChainBreak {
        line,
        seq: Some(record.seq),
        problem,
    };
    let expected = record
        .compute_hash()
        .map_err(|e| broken(Problem::Malformed(e.to_string())))?;
    if expected != record.hash {
        return Err(broken(Problem::Modified));
    }
    if record.seq == 0 || record.prev_hash == GENESIS_HASH {
        return if record.is_segment_start() {
            Ok(())
        } else {
            Err(broken(Problem::BadSegmentStart))
        };
    }
    let Some((prev_seq, prev_hash)) = previous else {
        return if options.allow_partial_start {
            Ok(())
        } else {
            Err(broken(Problem::NoSegmentStart))
        };
    };
    let next = prev_seq + 1;
    if record.seq > next {
        Err(broken(Problem::Gap { expected: next }))
    } else if record.seq < next {
        Err(broken(Problem::OutOfOrder { expected: next }))
    } else if &record.prev_hash != prev_hash {
        Err(broken(Problem::Unlinked))
    } else {
        Ok(())
    }
}

enum Parsed {
    Other,
    Malformed(String),
    // Boxed: a record is ten times the size of the other variants.
    Record(Box<AuditRecord>),
}

fn parse_line(line: &str) -> Parsed {
    // The text form (`--log-format text`), as written or after a collector prefix.
    let text = super::text::parse(line).or_else(|| {
        let (stamp, rest) = line.split_once(' ')?;
        stamp.parse::<jiff::Timestamp>().ok()?;
        let rest = ["stdout F ", "stderr F "]
            .iter()
            .find_map(|p| rest.strip_prefix(p))
            .unwrap_or(rest);
        super::text::parse(rest)
    });
    match text {
        Some(Ok(record)) => return Parsed::Record(Box::new(record)),
        Some(Err(why)) => return Parsed::Malformed(why),
        None => {}
    }
    let Some(json) = strip_collector_prefix(line) else {
        return marked_but_unparsed(line);
    };
    let value: serde_json::Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(_) => return marked_but_unparsed(line),
    };
    if value.get("log_type").and_then(serde_json::Value::as_str) != Some(LOG_TYPE) {
        return Parsed::Other;
    }
    match serde_json::from_value::<AuditRecord>(value) {
        Ok(record) => Parsed::Record(Box::new(record)),
        Err(e) => Parsed::Malformed(e.to_string()),
    }
}

/// A line that is not JSON but carries the audit marker was an audit record once (cut or
/// edited); anything else is an ordinary log line.
fn marked_but_unparsed(line: &str) -> Parsed {
    if line.contains(r#""log_type":"audit""#) {
        Parsed::Malformed("not valid JSON".to_owned())
    } else {
        Parsed::Other
    }
}

/// The JSON part of a line, after an optional collector prefix.
fn strip_collector_prefix(line: &str) -> Option<&str> {
    if line.starts_with('{') {
        return Some(line);
    }
    let (stamp, rest) = line.split_once(' ')?;
    stamp.parse::<jiff::Timestamp>().ok()?;
    let rest = ["stdout F ", "stderr F "]
        .iter()
        .find_map(|p| rest.strip_prefix(p))
        .unwrap_or(rest);
    rest.starts_with('{').then_some(rest)
}

/// `audit verify`: verifies `path` (`-` for standard input) and prints the result. Exit code 0
/// when the chain is intact, 1 when it is broken or holds no record, 2 when the input cannot
/// be read.
pub fn verify_command(
    path: &std::path::Path,
    options: VerifyOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let source = path.display().to_string();
    let result = if source == "-" {
        verify(io::stdin().lock(), options)
    } else {
        std::fs::File::open(path).and_then(|f| verify(io::BufReader::new(f), options))
    };
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            let _ = writeln!(err, "error: failed to read {source}: {e}");
            return ExitCode::from(2);
        }
    };
    let written = print_report(&source, &report, out);
    if let Err(e) = written {
        let _ = writeln!(err, "error: failed to write output: {e}");
        return ExitCode::from(2);
    }
    if report.is_intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_report(source: &str, report: &VerifyReport, out: &mut dyn Write) -> io::Result<()> {
    if let Some(b) = &report.broken {
        let seq = b.seq.map_or_else(|| "?".to_owned(), |s| s.to_string());
        writeln!(
            out,
            "{source}: BROKEN at line {} (seq {seq}): {}",
            b.line, b.problem
        )?;
        writeln!(
            out,
            "{source}: {} records verified before the break",
            report.records
        )?;
        return Ok(());
    }
    if report.records == 0 {
        writeln!(
            out,
            "{source}: no audit records found ({} other lines)",
            report.ignored_lines
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "{source}: OK: {} audit records in {} segments, {} other lines ignored",
        report.records, report.segments, report.ignored_lines
    )?;
    let counts: Vec<String> = Category::ALL
        .iter()
        .map(|c| format!("{c}={}", report.by_category.get(c).copied().unwrap_or(0)))
        .collect();
    writeln!(out, "{source}: by category: {}", counts.join(" "))?;
    if let Some(head) = &report.head {
        writeln!(
            out,
            "{source}: head: line {} seq {} time {} hash {}",
            head.line, head.seq, head.time, head.hash
        )?;
    }
    Ok(())
}
