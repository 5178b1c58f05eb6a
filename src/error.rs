//! What every error of the crate shares: a bounded category, and the one way to print a cause
//! chain.
//!
//! Each module keeps its own error enum with its sources attached (conventions §4). Its
//! [`Categorized::category`] is a short, fixed, snake_case name: the label of metrics, the
//! `reason` field of logs and audit records and the reason of Warning Events. A category never
//! carries a value from the error, so it can neither grow a metric's cardinality nor leak a
//! secret; `format!("{err:?}")` is never used as a label.

/// An error with a bounded name.
pub trait Categorized: std::error::Error {
    /// A short, fixed, snake_case name for what failed.
    fn category(&self) -> &'static str;
}

/// `error` and its sources joined by `: `, for logs and the CLI, for errors whose message leaves
/// the cause to `source()`. No error of this crate carries a secret value in its message, so
/// the whole chain is safe to print.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("failed to open {0}")]
    struct Outer(&'static str, #[source] std::io::Error);

    #[test]
    fn the_chain_names_every_cause() {
        let io = std::io::Error::other("disk on fire");
        assert_eq!(
            chain(&Outer("a.json", io)),
            "failed to open a.json: disk on fire"
        );
    }
}
