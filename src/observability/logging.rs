//! Ordinary (non-audit) logs through `tracing`. They share standard output with the audit
//! log; a JSON log line keeps its event fields under `"fields"`, so no ordinary line can carry
//! a top-level `"log_type":"audit"` and be mistaken for an audit record.

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How ordinary log lines are formatted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for log pipelines.
    #[default]
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}

/// Failures of the logging setup.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The filter is not valid `EnvFilter` syntax.
    #[error("failed to parse log filter {filter:?}: {source}")]
    Filter {
        /// The filter as given.
        filter: String,
        /// The parser's error.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("failed to install the log subscriber: {0}")]
    Install(#[source] tracing::subscriber::SetGlobalDefaultError),
}

/// A subscriber writing to `writer` in `format`, keeping events allowed by `filter` (a level
/// such as `info`, or `EnvFilter` directives such as `info,kube=warn`).
pub fn subscriber<W>(
    format: LogFormat,
    filter: &str,
    writer: W,
) -> Result<Box<dyn Subscriber + Send + Sync>, LoggingError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let env_filter = EnvFilter::try_new(filter).map_err(|source| LoggingError::Filter {
        filter: filter.to_owned(),
        source,
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(writer)
        // Logs are collected, not read on a colour terminal.
        .with_ansi(false);
    Ok(match format {
        // flatten_event stays off: event fields stay under "fields" (see the module docs).
        LogFormat::Json => Box::new(builder.json().flatten_event(false).finish()),
        LogFormat::Text => Box::new(builder.finish()),
    })
}

/// A subscriber for standard output: built (and its filter checked) before `run` starts, and
/// installed with [`install`] once the cluster answers, so that nothing about an unreachable
/// cluster is logged twice.
pub type Stdout = Box<dyn Subscriber + Send + Sync>;

/// The process-wide subscriber writing to standard output; [`install`] it.
pub fn stdout_subscriber(format: LogFormat, filter: &str) -> Result<Stdout, LoggingError> {
    subscriber(format, filter, std::io::stdout)
}

/// Installs `subscriber` for the whole process.
pub fn install(subscriber: Stdout) -> Result<(), LoggingError> {
    tracing::subscriber::set_global_default(subscriber).map_err(LoggingError::Install)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::observability::audit::{self, VerifyOptions};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn json_log_lines_never_look_like_audit_records() {
        let buffer = Buffer::default();
        let sub = subscriber(LogFormat::Json, "info", buffer.clone()).unwrap();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(log_type = "audit", seq = 0, "audit_log_started");
            tracing::warn!(r#"{{"log_type":"audit"}}"#);
            tracing::debug!("filtered out");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(value.get("log_type").is_none(), "{line}");
        }
        let report = audit::verify(text.as_bytes(), VerifyOptions::default()).unwrap();
        assert_eq!((report.records, report.ignored_lines), (0, 2));
    }

    #[test]
    fn text_format_and_bad_filters() {
        let buffer = Buffer::default();
        let sub = subscriber(LogFormat::Text, "warn", buffer.clone()).unwrap();
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(connection = "acme-us", "refresh failed");
            tracing::info!("filtered out");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(
            text.contains("WARN") && text.contains("connection=\"acme-us\""),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'), "no colour codes: {text:?}");
        assert!(matches!(
            subscriber(LogFormat::Text, "info,[", Buffer::default()),
            Err(LoggingError::Filter { .. })
        ));
    }
}
