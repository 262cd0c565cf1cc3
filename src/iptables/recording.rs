//! An in-memory [`Backend`] for tests and dry runs: it keeps the filter/nat/mangle tables
//! as `iptables-restore --noflush` would leave them, records every payload, and can be
//! told to fail the next restore or to lose its canaries (a flushed table).

use super::{Backend, BackendError, CANARY_CHAIN, CANARY_TABLES};
use crate::model::ip::IpFamily;
use crate::rules::jumps::JUMP_RULES;
use crate::rules::names::ChainKey;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// table → chain → rule lines (`-A …` text without the `-A <chain> ` prefix).
pub type Tables = BTreeMap<String, BTreeMap<String, Vec<String>>>;

#[derive(Debug, Default)]
struct State {
    tables: Tables,
    payloads: Vec<String>,
    ensure_calls: usize,
    fail_next_restore: Option<String>,
    restore_failures: usize,
    /// Listings of the nat table (what `iptables-save` would have been run for).
    listings: usize,
    /// Simulates an iptables older than 1.6.2.
    no_random_fully: bool,
}

/// A cloneable handle: clones share the same simulated kernel, so a test keeps one while
/// the daemon owns another.
#[derive(Clone, Debug)]
pub struct RecordingBackend {
    family: IpFamily,
    state: Arc<Mutex<State>>,
}

const BUILTIN: &[(&str, &[&str])] = &[
    ("filter", &["INPUT", "FORWARD", "OUTPUT"]),
    ("nat", &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]),
    (
        "mangle",
        &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
    ),
];

impl RecordingBackend {
    pub fn new(family: IpFamily) -> RecordingBackend {
        let mut st = State::default();
        for (t, chains) in BUILTIN {
            let tab = st.tables.entry(t.to_string()).or_default();
            for c in *chains {
                tab.insert(c.to_string(), Vec::new());
            }
        }
        RecordingBackend {
            family,
            state: Arc::new(Mutex::new(st)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the state from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every payload restored successfully, in order.
    pub fn payloads(&self) -> Vec<String> {
        self.lock().payloads.clone()
    }

    pub fn payload_count(&self) -> usize {
        self.lock().payloads.len()
    }

    pub fn last_payload(&self) -> Option<String> {
        self.lock().payloads.last().cloned()
    }

    pub fn ensure_calls(&self) -> usize {
        self.lock().ensure_calls
    }

    /// How many times the nat table was listed (`nat_chains` or `live_tables`).
    pub fn listings(&self) -> usize {
        self.lock().listings
    }

    /// The tables in `iptables-save`'s layout (rules as they were restored).
    pub fn save_text(&self, tables: &[&str]) -> String {
        let st = self.lock();
        let mut out = String::new();
        for t in tables {
            let Some(tab) = st.tables.get(*t) else {
                continue;
            };
            out.push_str(&format!("*{t}\n"));
            for c in tab.keys() {
                out.push_str(&format!(":{c} - [0:0]\n"));
            }
            for (c, rules) in tab {
                for r in rules {
                    out.push_str(&format!("-A {c} {r}\n"));
                }
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    pub fn restore_failures(&self) -> usize {
        self.lock().restore_failures
    }

    /// The simulated tables.
    pub fn tables(&self) -> Tables {
        self.lock().tables.clone()
    }

    /// Pretends to be an iptables without `--random-fully` (older than 1.6.2).
    pub fn set_random_fully(&self, supported: bool) {
        self.lock().no_random_fully = !supported;
    }

    /// Makes the next restore fail with `message`, leaving the tables untouched.
    pub fn fail_next_restore(&self, message: &str) {
        self.lock().fail_next_restore = Some(message.to_string());
    }

    /// What `iptables -t <table> -F` plus deleting the non-built-in chains does: the table's
    /// user chains (canary included) vanish.
    pub fn flush_table(&self, table: &str) {
        let mut st = self.lock();
        if let Some(tab) = st.tables.get_mut(table) {
            let builtin: &[&str] = BUILTIN
                .iter()
                .find(|(t, _)| *t == table)
                .map_or(&[], |(_, c)| c);
            tab.retain(|c, _| builtin.contains(&c.as_str()));
            for rules in tab.values_mut() {
                rules.clear();
            }
        }
    }

    /// Applies `payload` to `tables` with `--noflush` semantics. Pure, for tests that want
    /// the state a sequence of golden payloads leaves.
    pub fn apply_payload(tables: &mut Tables, payload: &str) -> Result<(), BackendError> {
        let mut work = tables.clone();
        let mut current: Option<String> = None;
        let fail = |line: usize, message: String| BackendError::RestoreLine {
            line,
            message,
            context: payload.lines().nth(line - 1).unwrap_or("").to_string(),
        };
        for (i, line) in payload.lines().enumerate() {
            let n = i + 1;
            if let Some(t) = line.strip_prefix('*') {
                current = Some(t.to_string());
                work.entry(t.to_string()).or_default();
                continue;
            }
            if line == "COMMIT" {
                current = None;
                continue;
            }
            let Some(table) = current.as_deref() else {
                return Err(fail(n, "line outside a table section".into()));
            };
            let tab = work.get_mut(table).expect("created at section start");
            if let Some(rest) = line.strip_prefix(':') {
                let name = rest.split(' ').next().unwrap_or("");
                tab.entry(name.to_string()).or_default().clear();
            } else if let Some(name) = line.strip_prefix("-X ") {
                if tab.remove(name).is_none() {
                    return Err(fail(n, format!("chain {name} does not exist")));
                }
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let (chain, rule) = rest.split_once(' ').unwrap_or((rest, ""));
                match tab.get_mut(chain) {
                    Some(rules) => rules.push(rule.to_string()),
                    None => return Err(fail(n, format!("chain {chain} does not exist"))),
                }
            } else {
                return Err(fail(n, format!("unsupported line {line:?}")));
            }
        }
        if current.is_some() {
            return Err(fail(payload.lines().count(), "missing COMMIT".into()));
        }
        *tables = work;
        Ok(())
    }
}

impl Backend for RecordingBackend {
    fn family(&self) -> IpFamily {
        self.family
    }

    fn ensure_jump_rules(&mut self) -> Result<(), BackendError> {
        let mut st = self.lock();
        st.ensure_calls += 1;
        for j in JUMP_RULES {
            let tab = st.tables.entry(j.table.to_string()).or_default();
            tab.entry(j.dst_chain.to_string()).or_default();
            let rule = j.rule_args().join(" ");
            let src = tab.entry(j.src_chain.to_string()).or_default();
            if !src.contains(&rule) {
                src.insert(0, rule);
            }
        }
        Ok(())
    }

    fn restore(&mut self, payload: &str) -> Result<(), BackendError> {
        let mut st = self.lock();
        if let Some(message) = st.fail_next_restore.take() {
            st.restore_failures += 1;
            return Err(BackendError::Command {
                command: "iptables-restore".into(),
                message,
            });
        }
        let mut tables = std::mem::take(&mut st.tables);
        let res = match payload.lines().position(|l| l.contains(" --random-fully")) {
            // As an old iptables-restore rejects it.
            Some(i) if st.no_random_fully => Err(BackendError::RestoreLine {
                line: i + 1,
                message: "unknown option \"--random-fully\"".into(),
                context: payload.lines().nth(i).unwrap_or("").to_string(),
            }),
            _ => Self::apply_payload(&mut tables, payload),
        };
        st.tables = tables;
        match res {
            Ok(()) => {
                st.payloads.push(payload.to_string());
                Ok(())
            }
            Err(e) => {
                st.restore_failures += 1;
                Err(e)
            }
        }
    }

    fn nat_chains(&mut self) -> Result<HashSet<ChainKey>, BackendError> {
        let mut st = self.lock();
        st.listings += 1;
        Ok(st
            .tables
            .get("nat")
            .map(|t| t.keys().filter_map(|c| ChainKey::named(c)).collect())
            .unwrap_or_default())
    }

    fn live_tables(&mut self) -> Result<Option<String>, BackendError> {
        self.lock().listings += 1;
        Ok(Some(self.save_text(&["filter", "nat"])))
    }

    fn create_canary(&mut self, table: &str) -> Result<(), BackendError> {
        debug_assert!(CANARY_TABLES.contains(&table));
        self.lock()
            .tables
            .entry(table.to_string())
            .or_default()
            .entry(CANARY_CHAIN.to_string())
            .or_default();
        Ok(())
    }

    fn canary_exists(&mut self, table: &str) -> Result<bool, BackendError> {
        Ok(self
            .lock()
            .tables
            .get(table)
            .is_some_and(|t| t.contains_key(CANARY_CHAIN)))
    }

    fn supports_random_fully(&self) -> bool {
        !self.lock().no_random_fully
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noflush_semantics() {
        let mut b = RecordingBackend::new(IpFamily::V4);
        b.restore("*nat\n:KUBE-SVC-A - [0:0]\n:KUBE-SVC-B - [0:0]\n-A KUBE-SVC-A -j ACCEPT\n-A KUBE-SVC-B -j DROP\nCOMMIT\n")
            .unwrap();
        // Declaring flushes; undeclared chains keep their rules; -X removes.
        b.restore("*nat\n:KUBE-SVC-A - [0:0]\n:KUBE-SVC-B - [0:0]\n-X KUBE-SVC-B\nCOMMIT\n")
            .unwrap();
        let t = b.tables();
        assert_eq!(t["nat"]["KUBE-SVC-A"], Vec::<String>::new());
        assert!(!t["nat"].contains_key("KUBE-SVC-B"));
        assert_eq!(b.payload_count(), 2);
    }

    #[test]
    fn failed_restore_changes_nothing() {
        let mut b = RecordingBackend::new(IpFamily::V4);
        let err = b
            .restore("*nat\n:KUBE-SVC-A - [0:0]\n-A KUBE-SVC-Z -j ACCEPT\nCOMMIT\n")
            .unwrap_err();
        assert!(
            matches!(err, BackendError::RestoreLine { line: 3, .. }),
            "{err}"
        );
        assert!(!b.tables()["nat"].contains_key("KUBE-SVC-A"));
        b.fail_next_restore("boom");
        assert!(b.restore("*nat\nCOMMIT\n").is_err());
        assert!(b.restore("*nat\nCOMMIT\n").is_ok());
        assert_eq!(b.restore_failures(), 2);
        assert_eq!(b.payload_count(), 1);
    }

    #[test]
    fn canaries_vanish_with_a_flush() {
        let mut b = RecordingBackend::new(IpFamily::V4);
        for t in CANARY_TABLES {
            b.create_canary(t).unwrap();
        }
        assert!(b.canary_exists("mangle").unwrap());
        b.flush_table("mangle");
        assert!(!b.canary_exists("mangle").unwrap());
        assert!(b.canary_exists("nat").unwrap());
    }
}
