//! Pure domain rules: the marketplace table, connection validation, the admission rules,
//! status conditions, the runtime credential access rule, the re-judging of running pods
//! (drift) and security log review coverage.
//!
//! Nothing here imports Kubernetes types; the API layer, the CLI and the webhook convert their
//! inputs into these plain types, so every rule can be tested without a cluster.

pub mod admission;
pub mod conditions;
pub mod credential_access;
pub mod drift;
pub mod marketplace;
pub mod review;
pub mod validation;

pub use credential_access::Delivery;
pub use drift::OnUnauthorizedMount;
pub use marketplace::{Environment, Marketplace, Region};
pub use validation::{FieldError, SpecView};
