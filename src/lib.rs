//! amazon-seller-operator: keeps Amazon SP-API seller credentials sealed in Kubernetes and
//! publishes short-lived Login-with-Amazon access tokens to a Team's gateways.
//!
//! - [`domain`]: pure rules (marketplace table, validation), no Kubernetes types.
//! - [`api`]: the custom resource types and offline manifest checks.
//! - [`config`]: command-line flags; [`cli`]: the subcommands. `main` only joins the two.

pub mod api;
pub mod cli;
pub mod config;
pub mod domain;
