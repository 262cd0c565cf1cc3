//! Talking to netfilter: the operations a sync needs, behind one trait so that the sync
//! loop does not care whether it runs iptables-legacy, iptables-nft or a test recorder.

pub mod apply;
pub mod cleanup;
pub mod command;
pub mod detect;
pub mod host;

pub use command::CliBackend;
pub use detect::{Mode, ModeChoice, Toolset};

use crate::model::ip::IpFamily;
use crate::rules::names::ChainKey;
use std::collections::HashSet;

/// Errors of a backend operation; messages name the command and, for a failed restore,
/// the failing payload line with its neighbours.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{command}: {message}")]
    Command { command: String, message: String },
    #[error("iptables-restore failed at payload line {line}: {message}\n{context}")]
    RestoreLine {
        line: usize,
        message: String,
        /// The failing line and up to 3 lines around it, numbered.
        context: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One IP family's netfilter, as a sync uses it (spec §1.2, §5.3, §5.4).
pub trait Backend: Send {
    fn family(&self) -> IpFamily;
    /// Ensures the jump rules of `rules::jumps::JUMP_RULES` (create chain, insert rule at
    /// the top unless present). Run before every full sync.
    fn ensure_jump_rules(&mut self) -> Result<(), BackendError>;
    /// `iptables-restore --noflush --counters` with `payload` on stdin. On failure nothing
    /// of the payload is applied (restore commits per table, and kube-proxy's payloads
    /// are accepted or rejected whole).
    fn restore(&mut self, payload: &str) -> Result<(), BackendError>;
    /// Names of the chains currently in the nat table (`iptables-save -t nat`).
    fn nat_chains(&mut self) -> Result<HashSet<ChainKey>, BackendError>;
}
