//! When to sync and how much: the sync loop's decisions.

pub mod canary;
pub mod chain_record;
pub mod conntrack;
pub mod conntrack_reconcile;
pub mod fault;
pub mod latency;
pub mod live_jumps;
pub mod minimal;
pub mod plan;
pub mod proxier;
pub mod restart_diff;
mod restart_fast;
pub mod runner;
mod save_spelling;

pub use plan::{SyncPlan, SyncTracker};
