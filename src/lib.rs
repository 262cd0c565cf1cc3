//! kube-proxy-rs: Kubernetes kube-proxy (iptables mode), rule for rule.
//!
//! Data flows one way: objects → [`model`] → [`rules`] (pure) → payload text; [`sync`]
//! decides full vs partial, [`offline`] drives it without a kernel.

pub mod audit;
pub mod compat;
pub mod config;
pub mod daemon;
pub mod encoding;
pub mod iptables;
pub mod logging;
pub mod model;
pub mod offline;
pub mod resolve;
pub mod rules;
pub mod server;
pub mod source;
pub mod sync;
