//! The jump rules from the built-in chains (spec §1.2), as data.

use std::fmt::Write as _;

/// One "ensure chain + ensure rule at the top" pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JumpRule {
    pub table: &'static str,
    pub src_chain: &'static str,
    pub dst_chain: &'static str,
    pub extra_args: &'static [&'static str],
    /// Empty = no `-m comment`.
    pub comment: &'static str,
    /// Shared with kubelet: never removed by `--cleanup`.
    pub kubelet_owned: bool,
}

const NEW: &[&str] = &["-m", "conntrack", "--ctstate", "NEW"];

const fn jump(
    table: &'static str,
    src_chain: &'static str,
    dst_chain: &'static str,
    extra_args: &'static [&'static str],
    comment: &'static str,
) -> JumpRule {
    JumpRule {
        table,
        src_chain,
        dst_chain,
        extra_args,
        comment,
        kubelet_owned: false,
    }
}

/// In the order upstream ensures them on every full sync (both families).
pub const JUMP_RULES: &[JumpRule] = &[
    jump(
        "filter",
        "INPUT",
        "KUBE-EXTERNAL-SERVICES",
        NEW,
        "kubernetes externally-visible service portals",
    ),
    jump(
        "filter",
        "FORWARD",
        "KUBE-EXTERNAL-SERVICES",
        NEW,
        "kubernetes externally-visible service portals",
    ),
    jump(
        "filter",
        "INPUT",
        "KUBE-NODEPORTS",
        &[],
        "kubernetes health check service ports",
    ),
    jump(
        "filter",
        "FORWARD",
        "KUBE-SERVICES",
        NEW,
        "kubernetes service portals",
    ),
    jump(
        "filter",
        "OUTPUT",
        "KUBE-SERVICES",
        NEW,
        "kubernetes service portals",
    ),
    jump(
        "filter",
        "FORWARD",
        "KUBE-FORWARD",
        &[],
        "kubernetes forwarding rules",
    ),
    jump(
        "filter",
        "INPUT",
        "KUBE-PROXY-FIREWALL",
        NEW,
        "kubernetes load balancer firewall",
    ),
    jump(
        "filter",
        "OUTPUT",
        "KUBE-PROXY-FIREWALL",
        NEW,
        "kubernetes load balancer firewall",
    ),
    jump(
        "filter",
        "FORWARD",
        "KUBE-PROXY-FIREWALL",
        NEW,
        "kubernetes load balancer firewall",
    ),
    jump(
        "nat",
        "OUTPUT",
        "KUBE-SERVICES",
        &[],
        "kubernetes service portals",
    ),
    jump(
        "nat",
        "PREROUTING",
        "KUBE-SERVICES",
        &[],
        "kubernetes service portals",
    ),
    jump(
        "nat",
        "POSTROUTING",
        "KUBE-POSTROUTING",
        &[],
        "kubernetes postrouting rules",
    ),
    JumpRule {
        kubelet_owned: true,
        ..jump("filter", "INPUT", "KUBE-FIREWALL", &[], "")
    },
    JumpRule {
        kubelet_owned: true,
        ..jump("filter", "OUTPUT", "KUBE-FIREWALL", &[], "")
    },
];

impl JumpRule {
    /// The rule's arguments after `-I/-C/-D <chain>`, one argv element each.
    /// [`JumpRule::rule_args`] as restore input writes them: each after a space,
    /// those with spaces double-quoted.
    pub fn quoted_args(&self) -> String {
        let mut out = String::new();
        for a in self.rule_args() {
            if a.contains(' ') {
                let _ = write!(out, " \"{a}\"");
            } else {
                let _ = write!(out, " {a}");
            }
        }
        out
    }

    pub fn rule_args(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self.extra_args.to_vec();
        if !self.comment.is_empty() {
            v.extend(["-m", "comment", "--comment", self.comment]);
        }
        v.extend(["-j", self.dst_chain]);
        v
    }
}

/// The `expected.ensure` text: `-N` then `-I` per rule, arguments with spaces quoted.
pub fn ensure_text() -> String {
    let mut out = String::new();
    for j in JUMP_RULES {
        let _ = writeln!(out, "-t {} -N {}", j.table, j.dst_chain);
        let _ = write!(out, "-t {} -I {}", j.table, j.src_chain);
        out.push_str(&j.quoted_args());
        out.push('\n');
    }
    out
}
