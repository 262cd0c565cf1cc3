//! `trace`'s text output: the path every listed outcome shares printed once, then each
//! outcome with the rest of its most likely path.

use super::trace::{Outcome, Step, Trace, Verdict};
use std::fmt::Write as _;

impl Trace {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let p = &self.packet;
        let how = if p.from_node {
            "from the node"
        } else {
            "arriving"
        };
        let _ = writeln!(
            s,
            "packet {} {} -> {}:{} ({how}: {})",
            p.proto, p.src, p.dst, p.dport, self.start
        );
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        let listed = self.outcomes.len();
        let total = listed + self.more.as_ref().map_or(0, |m| m.outcomes);
        let paths: u64 = self.outcomes.iter().map(|o| o.paths).sum::<u64>()
            + self.more.as_ref().map_or(0, |m| m.paths);
        let _ = writeln!(
            s,
            "{} over {}",
            count(total as u64, "outcome"),
            count(paths, "path")
        );
        let shared = if listed > 1 {
            shared_prefix(&self.outcomes)
        } else {
            0
        };
        if shared > 0 {
            let _ = writeln!(s, "\npath shared by the outcomes below:");
            steps(&mut s, &self.outcomes[0].path[..shared]);
        }
        for o in &self.outcomes {
            let _ = writeln!(s, "\n[{:7.3}%] {}", o.probability * 100.0, headline(o));
            steps(&mut s, &o.path[shared..]);
            for n in &o.notes {
                let _ = writeln!(s, "  note: {n}");
            }
        }
        if let Some(m) = &self.more {
            let _ = writeln!(
                s,
                "\n... and {} more {} totalling {:.3}% ({}; --max-outcomes shows more)",
                m.outcomes,
                if m.outcomes == 1 {
                    "outcome"
                } else {
                    "outcomes"
                },
                m.probability * 100.0,
                count(m.paths, "path")
            );
        }
        s
    }
}

fn count(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn headline(o: &Outcome) -> String {
    let v = match &o.verdict {
        Verdict::Accept => "ACCEPT".to_string(),
        Verdict::Drop => "DROP".to_string(),
        Verdict::Reject(w) => format!("REJECT ({w})"),
        Verdict::Loop(l) => format!("loop: {l}"),
        Verdict::Unknown(u) => format!("unknown: {u}"),
    };
    let dnat = o
        .dnat
        .as_ref()
        .map(|d| format!("DNAT to {d}"))
        .unwrap_or_else(|| "no DNAT".into());
    let masq = if o.masquerade {
        "masqueraded"
    } else {
        "not masqueraded"
    };
    let mut h = format!("{v}, {dnat}, {masq}");
    if o.verdict == Verdict::Accept {
        let _ = write!(h, ", delivered {}", o.delivery);
    }
    if o.paths > 1 {
        let _ = write!(h, " ({} paths, the most likely shown)", o.paths);
    }
    h
}

/// Steps at the start of every listed outcome's path.
fn shared_prefix(os: &[Outcome]) -> usize {
    let first = &os[0].path;
    let mut n = first.len();
    for o in &os[1..] {
        n = n.min(
            first
                .iter()
                .zip(&o.path)
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    n
}

fn steps(s: &mut String, path: &[Step]) {
    for st in path {
        if st.chain.is_empty() {
            let _ = writeln!(s, "  {}", st.text);
        } else {
            let _ = writeln!(
                s,
                "  {} {} #{}: {}\n      because {}",
                st.table, st.chain, st.rule, st.text, st.why
            );
        }
    }
}
