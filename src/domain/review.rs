//! The security log review rule: how far the recorded reviews vouch for the logs.
//!
//! The policy asks for a review at least every two weeks. A review covers its period, but it
//! cannot vouch for logs written after it was recorded, so each review counts up to the earlier
//! of its `periodEnd` and its creation time; the latest such time over all reviews is what the
//! `amazon_seller_security_log_review_last_timestamp_seconds` gauge exports and what the
//! overdue alert compares with now.

use jiff::Timestamp;

/// The times of one recorded review that the rule needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReviewTimes {
    /// The end of the reviewed period.
    pub period_end: Timestamp,
    /// When the review was recorded (the object's creation time), if known.
    pub recorded_at: Option<Timestamp>,
}

impl ReviewTimes {
    /// How far this review vouches for the logs: `period_end`, but never past the time the
    /// review was recorded (a future `periodEnd` cannot postpone the next review).
    pub fn reviewed_until(&self) -> Timestamp {
        match self.recorded_at {
            Some(recorded) => self.period_end.min(recorded),
            None => self.period_end,
        }
    }
}

/// The latest time up to which the logs have been reviewed, or `None` when there is no review.
pub fn reviewed_until(reviews: impl IntoIterator<Item = ReviewTimes>) -> Option<Timestamp> {
    reviews.into_iter().map(|r| r.reviewed_until()).max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn review(end: &str, recorded: Option<&str>) -> ReviewTimes {
        ReviewTimes {
            period_end: at(end),
            recorded_at: recorded.map(at),
        }
    }

    #[test]
    fn no_review_means_never_reviewed() {
        assert_eq!(reviewed_until([]), None);
    }

    #[test]
    fn the_latest_period_end_wins() {
        let reviews = [
            review("2026-05-01T00:00:00Z", Some("2026-05-02T09:00:00Z")),
            review("2026-05-15T00:00:00Z", Some("2026-05-15T10:00:00Z")),
            review("2026-04-17T00:00:00Z", Some("2026-05-20T10:00:00Z")),
        ];
        assert_eq!(reviewed_until(reviews), Some(at("2026-05-15T00:00:00Z")));
    }

    #[test]
    fn a_period_end_in_the_future_counts_only_until_the_review_was_recorded() {
        let reviews = [review("2027-01-01T00:00:00Z", Some("2026-05-16T12:00:00Z"))];
        assert_eq!(reviewed_until(reviews), Some(at("2026-05-16T12:00:00Z")));
    }

    #[test]
    fn without_a_creation_time_the_period_end_counts() {
        let reviews = [review("2026-05-01T00:00:00Z", None)];
        assert_eq!(reviewed_until(reviews), Some(at("2026-05-01T00:00:00Z")));
    }
}
