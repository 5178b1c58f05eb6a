//! Standard status conditions as plain values, and the rule that keeps `lastTransitionTime`
//! stable when a condition's status has not changed.

use jiff::Timestamp;

/// `Ready`: the runtime Secret holds a valid token for the Team's gateways.
pub const READY: &str = "Ready";
/// `CredentialsValid`: the sealed credentials open and LWA accepts them.
pub const CREDENTIALS_VALID: &str = "CredentialsValid";
/// `Suspended`: the connection is contained (`spec.suspended: true`).
pub const SUSPENDED: &str = "Suspended";
/// `UnauthorizedMounts`: pods reference the connection's Secrets outside the rules (present
/// once such a pod was found; `False` again when none is left).
pub const UNAUTHORIZED_MOUNTS: &str = "UnauthorizedMounts";

/// A condition's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    Unknown,
}

impl Status {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }

    /// Parses the API spelling; anything else is `Unknown`.
    pub fn parse(value: &str) -> Self {
        match value {
            "True" => Status::True,
            "False" => Status::False,
            _ => Status::Unknown,
        }
    }

    /// `True` when `holds`, else `False`.
    pub fn from_bool(holds: bool) -> Self {
        if holds { Status::True } else { Status::False }
    }
}

/// One condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// `Ready`, `CredentialsValid`, `Suspended`.
    pub type_: &'static str,
    /// Whether it holds.
    pub status: Status,
    /// A CamelCase reason.
    pub reason: &'static str,
    /// A sentence for people; never a secret.
    pub message: String,
    /// The generation it describes.
    pub observed_generation: Option<i64>,
    /// When `status` last changed.
    pub last_transition_time: Timestamp,
}

/// A condition as observed in the stored status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Its type.
    pub type_: String,
    /// Its status.
    pub status: Status,
    /// When it last changed.
    pub last_transition_time: Timestamp,
}

/// What a reconcile wants a condition to say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Its type.
    pub type_: &'static str,
    /// Whether it holds.
    pub status: Status,
    /// Why.
    pub reason: &'static str,
    /// For people.
    pub message: String,
}

impl Desired {
    /// A desired condition.
    pub fn new(
        type_: &'static str,
        status: Status,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// The conditions to store: each desired condition, keeping the observed
/// `lastTransitionTime` when its status is unchanged and taking `now` when it changed.
pub fn merge(
    observed: &[Observed],
    desired: Vec<Desired>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    desired
        .into_iter()
        .map(|d| {
            let last_transition_time = observed
                .iter()
                .find(|o| o.type_ == d.type_ && o.status == d.status)
                .map_or(now, |o| o.last_transition_time);
            Condition {
                type_: d.type_,
                status: d.status,
                reason: d.reason,
                message: d.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    #[test]
    fn unchanged_status_keeps_its_transition_time() {
        let observed = [Observed {
            type_: READY.into(),
            status: Status::True,
            last_transition_time: at(100),
        }];
        let merged = merge(
            &observed,
            vec![Desired::new(
                READY,
                Status::True,
                "TokenPublished",
                "new message",
            )],
            Some(2),
            at(500),
        );
        assert_eq!(merged[0].last_transition_time, at(100));
        assert_eq!(merged[0].message, "new message");
        assert_eq!(merged[0].observed_generation, Some(2));
    }

    #[test]
    fn changed_status_takes_the_current_time() {
        let observed = [Observed {
            type_: READY.into(),
            status: Status::True,
            last_transition_time: at(100),
        }];
        let merged = merge(
            &observed,
            vec![Desired::new(READY, Status::False, "Suspended", "")],
            None,
            at(500),
        );
        assert_eq!(merged[0].last_transition_time, at(500));
    }

    #[test]
    fn new_condition_takes_the_current_time() {
        let merged = merge(
            &[],
            vec![Desired::new(SUSPENDED, Status::False, "Active", "")],
            None,
            at(7),
        );
        assert_eq!(merged[0].last_transition_time, at(7));
    }
}
