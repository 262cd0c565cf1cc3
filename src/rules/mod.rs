//! From the model to iptables-restore text: chain names, the renderer, jump rules.

pub mod jumps;
pub mod names;
pub mod options;
mod order;
pub mod render;
pub mod table;

pub use options::{LocalDetector, NodePortAddresses, ProxierOptions};
pub use render::{RenderOutput, RenderStats, Renderer, SyncRequest};
