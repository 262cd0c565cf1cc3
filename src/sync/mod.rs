//! When to sync and how much: the sync loop's decisions.

pub mod plan;

pub use plan::{SyncPlan, SyncTracker};
