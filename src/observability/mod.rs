//! Observability: Prometheus metrics, the tamper-evident audit log, the admin HTTP server and
//! the logging setup. These cover the policy's logging and monitoring requirements; the
//! alert rules over these metrics live in `deploy/prometheus/`.
//!
//! - [`metrics`]: one registry, typed recording methods, bounded label values.
//! - [`audit`]: the hash-chained audit log and `audit verify`.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`logging`]: ordinary `tracing` logs in JSON or text.

pub mod admin;
pub mod audit;
pub mod logging;
pub mod metrics;

pub use admin::{AdminServer, AdminState};
pub use audit::{AuditEvent, AuditLog, Category, Outcome};
pub use logging::LogFormat;
pub use metrics::Metrics;
