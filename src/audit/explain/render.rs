//! `explain`'s text output.

use super::{ChainInfo, Explanation};
use std::fmt::Write as _;

fn presence(c: &ChainInfo) -> String {
    if !c.in_dump {
        return format!(
            " (not in the dump: only jumped to, {} jump(s))",
            c.jumped_from
        );
    }
    let mut s = String::new();
    if c.rules == 0 {
        s.push_str(" (no rules)");
    }
    if c.jumped_from == 0 && c.source != "shared" {
        s.push_str(" (nothing jumps here)");
    }
    s
}

impl Explanation {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for n in &self.input_notes {
            let _ = writeln!(s, "note: {n}");
        }
        let _ = writeln!(s, "chains:");
        for c in &self.chains {
            let _ = write!(
                s,
                "  {:<27} {} {}",
                c.chain,
                c.service_port.as_deref().unwrap_or("?"),
                c.kind
            );
            if let Some(e) = &c.endpoint {
                let _ = write!(s, " {e}");
            }
            let _ = write!(s, " [{}", c.source);
            if let Some(f) = c.hash_form {
                let _ = write!(s, ", {f} hash input");
            }
            let _ = writeln!(s, "]{}", presence(c));
        }
        if !self.shared_chains.is_empty() {
            let _ = writeln!(s, "\nshared chains:");
            for c in &self.shared_chains {
                let _ = writeln!(
                    s,
                    "  {:<8}{:<24} {} [{}]{}",
                    c.table,
                    c.chain,
                    c.kind,
                    c.owner,
                    presence(c)
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(s, "  {n}");
        }
        if !self.other_software.is_empty() {
            let _ = writeln!(s, "\nother software (not kube-proxy's, never findings):");
            for o in &self.other_software {
                let _ = writeln!(
                    s,
                    "  {:<32} {} chain(s): {}{}",
                    o.owner,
                    o.chains,
                    o.examples.join(" "),
                    if o.chains > o.examples.len() {
                        " ..."
                    } else {
                        ""
                    }
                );
            }
        }
        for p in &self.ports {
            let _ = writeln!(s, "\nservice port {}", p.service_port);
            for e in &p.entries {
                let _ = writeln!(s, "  entry {e}");
            }
            let _ = writeln!(s, "  chains: {}", p.chains.join(" "));
            if let Some(t) = p.internal_traffic_policy {
                let _ = writeln!(s, "  internalTrafficPolicy: {t}");
            }
            if let Some(t) = p.external_traffic_policy {
                let _ = writeln!(s, "  externalTrafficPolicy: {t}");
            }
            for e in &p.policy_evidence {
                let _ = writeln!(s, "    from {e}");
            }
            match p.affinity_timeout {
                Some(t) => {
                    let _ = writeln!(s, "  session affinity: ClientIP, timeout {t}s");
                }
                None => {
                    let _ = writeln!(s, "  session affinity: none");
                }
            }
            if !p.source_ranges.is_empty() {
                let _ = writeln!(s, "  source ranges: {}", p.source_ranges.join(" "));
            }
            for (title, eps) in [
                ("endpoints", &p.endpoints),
                ("local endpoints", &p.local_endpoints),
            ] {
                if eps.is_empty() {
                    continue;
                }
                let _ = writeln!(s, "  {title}:");
                for e in eps {
                    let _ = write!(
                        s,
                        "    {:<24} {} share {:.4}% (rule probability {:.11})",
                        e.endpoint.as_deref().unwrap_or("?"),
                        e.chain,
                        e.share * 100.0,
                        e.probability
                    );
                    match e.local {
                        Some(true) if title == "endpoints" => s.push_str(" local"),
                        Some(false) => s.push_str(" remote"),
                        _ => {}
                    }
                    s.push('\n');
                }
            }
            if p.unbalanced_remainder > 1e-6 {
                let _ = writeln!(
                    s,
                    "  {:.4}% of new connections match no endpoint rule",
                    p.unbalanced_remainder * 100.0
                );
            }
            if p.skewed {
                let _ = writeln!(s, "  WARNING: endpoint shares are skewed");
            }
            for n in &p.notes {
                let _ = writeln!(s, "  {n}");
            }
            for r in &p.rejects {
                let _ = writeln!(s, "  {r}");
            }
        }
        if !self.findings.is_empty() {
            let _ = writeln!(s, "\nfindings: {}", self.findings.len());
            for f in &self.findings {
                let _ = write!(s, "  [{}]", f.id);
                if let Some(p) = &f.service_port {
                    let _ = write!(s, " {p}:");
                }
                let _ = writeln!(s, " {}", f.message);
                for e in &f.evidence {
                    let _ = writeln!(s, "      {e}");
                }
            }
        }
        s
    }
}
