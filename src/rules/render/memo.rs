//! What a partial sync reuses of the last render: per Service, its text in the shared
//! chains, its rule counts and its chain names. An unchanged Service is then copied, not
//! rendered again (issue 11: a partial sync costs O(changed Services)).
//!
//! A Service's rules are a function of its ports (endpoints included) and of the inputs
//! in [`Inputs`]; nothing else (not the other Services) goes into them. Entries are found
//! by the address of the Service's `Arc`'d ports, which the entry holds: while it does,
//! that allocation cannot be freed or changed, so the same address means the same ports.

use super::{Mark, Run};
use crate::model::service::ServicePort;
use crate::rules::names::ChainKey;
use crate::rules::options::ProxierOptions;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// Everything a Service's rules depend on besides its ports: when any differs from the
/// last render's, nothing is reused.
#[derive(Clone, PartialEq, Debug)]
pub(super) struct Inputs {
    pub(super) opts: ProxierOptions,
    pub(super) zone: Option<String>,
    pub(super) large: bool,
}

/// One Service of the last render.
pub(super) struct Entry {
    /// Held so that its address identifies these very ports (see the module comment).
    ports: Arc<Vec<ServicePort>>,
    /// Byte ranges of its rules in [`Memo::shared`] (slots as in [`Mark::shared`]).
    pub(super) shared: [[u32; 2]; 6],
    /// Its chain names: `Memo::chains[part][chains[0]..chains[1]]`.
    pub(super) part: u32,
    pub(super) chains: [u32; 2],
    /// Rule lines of its own chains, and its ports without internal/external endpoints.
    pub(super) nat_lines: u32,
    pub(super) no_local: [u32; 2],
}

#[derive(Default)]
pub(super) struct Memo {
    inputs: Option<Inputs>,
    entries: Vec<Entry>,
    spare: Vec<Entry>,
    /// Each part's chain names of the last render (swapped out of the parts, no copy).
    pub(super) chains: Vec<Vec<ChainKey>>,
    /// The merged shared-chain text of the last render. It stays in the renderer's
    /// tables (they are written out after the render) until [`Memo::take_shared`].
    pub(super) shared: [String; 6],
    shared_pending: bool,
}

/// The memo of a render whose inputs match, indexed by ports address.
pub(super) struct Lookup<'m> {
    pub(super) memo: &'m Memo,
    by_ports: HashMap<usize, u32, BuildHasherDefault<AddrHasher>>,
}

impl Lookup<'_> {
    pub(super) fn get(&self, ports: &Arc<Vec<ServicePort>>) -> Option<&Entry> {
        let i = *self.by_ports.get(&(Arc::as_ptr(ports) as usize))?;
        let e = &self.memo.entries[i as usize];
        Arc::ptr_eq(&e.ports, ports).then_some(e)
    }
}

impl Memo {
    /// The memo, if it was recorded under `inputs` and its shared text is at hand.
    pub(super) fn lookup(&self, inputs: &Inputs) -> Option<Lookup<'_>> {
        if self.shared_pending || self.inputs.as_ref() != Some(inputs) {
            return None;
        }
        let mut by_ports =
            HashMap::with_capacity_and_hasher(self.entries.len(), BuildHasherDefault::default());
        for (i, e) in self.entries.iter().enumerate() {
            by_ports.insert(Arc::as_ptr(&e.ports) as usize, i as u32);
        }
        Some(Lookup {
            memo: self,
            by_ports,
        })
    }

    /// The last render's shared text is still in the renderer's tables.
    pub(super) fn shared_pending(&self) -> bool {
        self.shared_pending
    }

    /// Takes the last render's shared-chain text out of `bufs` (the renderer's six merged
    /// buffers, in slot order) before they are cleared or dropped.
    pub(super) fn take_shared(&mut self, bufs: [&mut String; 6]) {
        if std::mem::take(&mut self.shared_pending) {
            for (mine, theirs) in self.shared.iter_mut().zip(bufs) {
                std::mem::swap(mine, theirs);
            }
        }
    }

    /// Forgets everything (nothing is reused by the next render).
    /// The chain names of the last render recorded (`None` after a clear).
    pub(super) fn active_chains(&self) -> Option<impl Iterator<Item = &ChainKey> + '_> {
        self.inputs.as_ref()?;
        Some(self.chains.iter().flatten())
    }

    pub(super) fn clear(&mut self) {
        self.inputs = None;
        self.entries.clear();
        self.shared_pending = false;
    }

    /// Records the render just done. `runs[p]` are the Services part `p` rendered,
    /// `bases[p]` where its shared text starts in the merged buffers, `chains[p]` its
    /// chain names (taken). The merged buffers become the memo's at the next render.
    pub(super) fn record<'a>(
        &mut self,
        inputs: Inputs,
        runs: &[&Run<'a>],
        marks: &[(&[Mark], Mark)],
        bases: &[[u32; 6]],
        chains: impl Iterator<Item = &'a mut Vec<ChainKey>>,
    ) {
        let mut entries = std::mem::take(&mut self.spare);
        entries.clear();
        for (p, ((run, (marks, end)), base)) in runs.iter().zip(marks).zip(bases).enumerate() {
            for (i, (_, ports)) in run.iter().enumerate() {
                let (a, b) = (&marks[i], marks.get(i + 1).unwrap_or(end));
                let span = |s: usize| [base[s] + a.shared[s], base[s] + b.shared[s]];
                entries.push(Entry {
                    ports: Arc::clone(ports),
                    shared: [span(0), span(1), span(2), span(3), span(4), span(5)],
                    part: p as u32,
                    chains: [a.chains, b.chains],
                    nat_lines: b.lines - a.lines,
                    no_local: [b.no_local[0] - a.no_local[0], b.no_local[1] - a.no_local[1]],
                });
            }
        }
        self.spare = std::mem::replace(&mut self.entries, entries);
        self.spare.clear();
        self.chains.resize_with(runs.len(), Vec::new);
        self.chains.truncate(runs.len());
        for (mine, theirs) in self.chains.iter_mut().zip(chains) {
            std::mem::swap(mine, theirs);
        }
        self.inputs = Some(inputs);
        self.shared_pending = true;
    }
}

/// Hashes an address: multiplied so that the (aligned, zero) low bits do not decide the bucket.
#[derive(Default)]
pub(super) struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        let h = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}
