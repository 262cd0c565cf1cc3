//! Talking to netfilter: the operations a sync needs, behind one trait so that the sync
//! loop does not care whether it runs iptables-legacy, iptables-nft or a test recorder.

pub mod apply;
pub mod cleanup;
pub mod command;
pub mod detect;
pub mod host;
pub mod nfacct;
pub mod process;

pub use command::CliBackend;
pub use detect::{Mode, ModeChoice, Toolset};

use crate::model::ip::IpFamily;
use crate::rules::names::ChainKey;
use crate::rules::table::Out;
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
    /// [`Backend::ensure_jump_rules`] for the rules a listing did not show: `present[i]`
    /// says rule `i` of `JUMP_RULES` and its chain are already there. The default checks
    /// them all.
    fn ensure_missing_jump_rules(&mut self, present: &[bool]) -> Result<(), BackendError> {
        let _ = present;
        self.ensure_jump_rules()
    }
    /// `iptables-restore --noflush --counters` with `payload` on stdin. On failure nothing
    /// of the payload is applied (restore commits per table, and kube-proxy's payloads
    /// are accepted or rejected whole).
    fn restore(&mut self, payload: &str) -> Result<(), BackendError>;
    /// [`Backend::restore`] of the text `write` produces; a backend may stream it rather
    /// than hold it (a full payload is tens of MB). `write` may be called more than once.
    fn restore_from(&mut self, write: &mut dyn FnMut(&mut dyn Out)) -> Result<(), BackendError> {
        let mut payload = String::new();
        write(&mut payload);
        self.restore(&payload)
    }
    /// `iptables-restore --test` of `payload`: parses and checks it, commits nothing.
    /// The default accepts everything.
    fn test_restore(&mut self, payload: &str) -> Result<(), BackendError> {
        let _ = payload;
        Ok(())
    }
    /// The filter and nat tables with counters (`iptables-save -c`), for [`Backend::rollback`].
    /// The default has none.
    fn snapshot(&mut self) -> Result<Option<String>, BackendError> {
        Ok(None)
    }
    /// Replaces the tables of `snapshot` with it (`iptables-restore --counters`, flushing).
    fn rollback(&mut self, snapshot: &str) -> Result<(), BackendError> {
        let _ = snapshot;
        Ok(())
    }
    /// Names of the chains currently in the nat table (`iptables-save -t nat`).
    fn nat_chains(&mut self) -> Result<HashSet<ChainKey>, BackendError>;
    /// The filter and nat tables as `iptables-save -t filter` and `-t nat` print them (no
    /// counters), for a restart to restore only what differs. `None` (the default): this
    /// backend cannot list rules; the sync then restores everything.
    fn live_tables(&mut self) -> Result<Option<String>, BackendError> {
        Ok(None)
    }
    /// Creates chain [`CANARY_CHAIN`] in `table` (`-N`; an existing chain is fine), for the
    /// canary monitor (spec §1.3). The default does nothing.
    fn create_canary(&mut self, table: &str) -> Result<(), BackendError> {
        let _ = table;
        Ok(())
    }
    /// Whether [`CANARY_CHAIN`] exists in `table` (`-S KUBE-PROXY-CANARY -t <table>`; a
    /// lock timeout, exit status 4, counts as "exists"). The default says it does.
    fn canary_exists(&mut self, table: &str) -> Result<bool, BackendError> {
        let _ = table;
        Ok(true)
    }
    /// Whether `-j MASQUERADE --random-fully` is accepted (iptables >= 1.6.2, spec §5.7).
    /// The default says yes, as every supported distribution's iptables does.
    fn supports_random_fully(&self) -> bool {
        true
    }
    /// Ensures the nfacct objects the 1.31+ rules count into; whether they exist after.
    /// Run before every full sync of such a release. `None` (the default): this backend
    /// has no kernel, keep the host facts' value.
    fn ensure_nfacct(&mut self) -> Option<bool> {
        None
    }
}

/// The chain whose disappearance tells that someone flushed the tables (spec §1.3).
pub const CANARY_CHAIN: &str = "KUBE-PROXY-CANARY";
/// Tables holding a canary, in the order the monitor creates them.
pub const CANARY_TABLES: [&str; 3] = ["mangle", "nat", "filter"];

pub mod recording;
