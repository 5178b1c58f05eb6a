//! The status this operator last wrote for each connection, with the `resourceVersion` of the
//! object it was computed from and the one the write produced.
//!
//! A reconcile can run on a cached copy that predates the operator's own last status write (the
//! runtime Secret's watch event often arrives before the connection's). Comparing against that
//! stale copy would write the same status again and report its transitions (Events, audit
//! records) twice. When the cached copy is exactly the version the last write started from, and
//! the status computed now equals the one written, the write already happened: skip it. Any
//! other version (a newer one, or someone else's change) is compared as usual, so nothing is
//! ever skipped on a guess.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::api::AmazonSellerConnectionStatus;

/// One connection's last status write.
struct Write {
    /// The object version the status was computed from.
    from: String,
    /// What was written.
    status: AmazonSellerConnectionStatus,
}

/// Last status writes by connection key (`namespace/name`).
#[derive(Default)]
pub struct AppliedStatus {
    writes: Mutex<HashMap<String, Write>>,
}

impl std::fmt::Debug for AppliedStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppliedStatus").finish_non_exhaustive()
    }
}

impl AppliedStatus {
    fn writes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Write>> {
        self.writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `observed_version` is the cached copy from before this operator wrote exactly
    /// `desired`: the write is already done and its transitions already reported.
    pub fn already_written(
        &self,
        key: &str,
        observed_version: Option<&str>,
        desired: &AmazonSellerConnectionStatus,
    ) -> bool {
        let Some(observed) = observed_version else {
            return false;
        };
        self.writes()
            .get(key)
            .is_some_and(|w| w.from == observed && w.status == *desired)
    }

    /// Remembers a status write computed from object version `from`.
    pub fn record(&self, key: &str, from: Option<&str>, status: AmazonSellerConnectionStatus) {
        let mut writes = self.writes();
        match from {
            Some(from) => {
                writes.insert(
                    key.to_owned(),
                    Write {
                        from: from.to_owned(),
                        status,
                    },
                );
            }
            None => {
                writes.remove(key);
            }
        }
    }

    /// Forgets a deleted connection.
    pub fn forget(&self, key: &str) {
        self.writes().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(marketplace_id: &str) -> AmazonSellerConnectionStatus {
        AmazonSellerConnectionStatus {
            marketplace_id: Some(marketplace_id.into()),
            ..AmazonSellerConnectionStatus::default()
        }
    }

    #[test]
    fn only_the_exact_stale_version_with_the_same_status_counts_as_written() {
        let applied = AppliedStatus::default();
        assert!(!applied.already_written("ns/a", Some("7"), &status("X")));
        applied.record("ns/a", Some("7"), status("X"));
        // The cached copy is still version 7: the write of X is done.
        assert!(applied.already_written("ns/a", Some("7"), &status("X")));
        // Something else is due now, or the copy is another version: compare as usual.
        assert!(!applied.already_written("ns/a", Some("7"), &status("Y")));
        assert!(!applied.already_written("ns/a", Some("8"), &status("X")));
        assert!(!applied.already_written("ns/a", None, &status("X")));
        assert!(!applied.already_written("ns/b", Some("7"), &status("X")));
        applied.forget("ns/a");
        assert!(!applied.already_written("ns/a", Some("7"), &status("X")));
    }
}
