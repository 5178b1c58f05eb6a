//! amazon-seller-operator: keeps Amazon SP-API seller credentials sealed in Kubernetes and
//! publishes short-lived Login-with-Amazon access tokens to a Team's gateways.
//!
//! - [`domain`]: pure rules (marketplace table, validation), no Kubernetes types.
//! - [`api`]: the custom resource types and offline manifest checks.
//! - [`config`]: command-line flags; [`cli`]: the subcommands. `main` only joins the two.
//! - [`rbac`]: the Kubernetes permissions the code uses, which the Helm chart must grant.

pub mod api;
pub mod cli;
pub mod config;
pub mod controller;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod https;
pub mod keystore;
pub mod lwa;
pub mod names;
pub mod observability;
pub mod operator;
pub mod rbac;
pub mod secrets;
