//! The Secrets the operator writes for a connection, their names, builders and readers:
//!
//! - [`runtime_secret`]: `<connection>-sp-api`, the access token and the connection's derived,
//!   non-secret metadata, mounted by gateway pods (`spec.delivery` `Secret` or `Both`);
//! - [`token_store`]: `<connection>-sp-api-sealed`, the access token sealed to the operator's
//!   key, read by the runtime credential endpoint (`Endpoint` or `Both`).
//!
//! Both the controller (which writes them) and the HTTPS server (which reads the token store)
//! use these, so they sit below both.

pub mod runtime_secret;
pub mod token_store;
