//! Rules cut short by a chat or a terminal (`... -j KUBE-SEP-HS74D4…`, `... -j KUBE-SEP-ABC`):
//! such a line is not read, so a cut chain name is never taken for a real jump, and a note
//! names it. Two passes at most: the last word of each rule, then (only when a line is in
//! doubt) the chains the dump names. A short hash is taken as cut only when the dump names a
//! longer chain it begins: hand-made dumps use short names (`KUBE-SVC-GONE`), and a jump to
//! one the dump lacks is then reported as absent, not dropped.

use super::parse::echo;
use std::borrow::Cow;
use std::collections::HashSet;

/// Per-service chain prefixes: their names end in a 16-character base32 hash.
const HASHED: &[&str] = &[
    "KUBE-SVC-",
    "KUBE-SEP-",
    "KUBE-EXT-",
    "KUBE-FW-",
    "KUBE-SVL-",
    "KUBE-XLB-",
];

/// Names a cut `-j` may be a prefix of (iptables targets and kube-proxy's fixed chains).
const KNOWN: &[&str] = &[
    "ACCEPT",
    "DROP",
    "RETURN",
    "REJECT",
    "DNAT",
    "SNAT",
    "MASQUERADE",
    "MARK",
    "KUBE-MARK-MASQ",
    "KUBE-MARK-DROP",
    "KUBE-SERVICES",
    "KUBE-NODEPORTS",
    "KUBE-POSTROUTING",
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-FORWARD",
    "KUBE-PROXY-FIREWALL",
    "KUBE-FIREWALL",
];

enum Doubt<'a> {
    /// Ends with `…` or `...`: cut for sure.
    Marked,
    /// Ends in a jump to a cut-looking prefix of a fixed name: cut unless the dump declares it.
    Jump(&'a str),
    /// Ends in a jump to a per-service chain with a short hash: cut when the dump names a
    /// longer chain that begins with it, and does not declare this one.
    ShortHash(&'a str),
}

fn is_rule(l: &str) -> bool {
    let l = l.trim_start();
    let l = match l.strip_prefix('[') {
        Some(r) => r.split_once(']').map_or("", |(_, r)| r.trim_start()),
        None => l,
    };
    l.starts_with("-A ") || l.starts_with("-I ") || l.starts_with("-t ")
}

fn doubt(l: &str) -> Option<Doubt<'_>> {
    let l = l.trim_end();
    if l.ends_with('…') || l.ends_with("...") {
        return Some(Doubt::Marked);
    }
    let (head, last) = l.rsplit_once(char::is_whitespace)?;
    let opt = head.trim_end().rsplit(char::is_whitespace).next()?;
    if !matches!(opt, "-j" | "-g" | "--jump" | "--goto") {
        return None;
    }
    let short_hash = HASHED.iter().any(|p| {
        last.strip_prefix(p).is_some_and(|h| {
            (2..16).contains(&h.len())
                && h.bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        })
    });
    if short_hash {
        return Some(Doubt::ShortHash(last));
    }
    let cut_known = KNOWN
        .iter()
        .any(|k| k.len() > last.len() && k.starts_with(last));
    cut_known.then_some(Doubt::Jump(last))
}

/// Every proper prefix (from the hash's second character on) of the full-length per-service
/// chain names the dump mentions anywhere; 14 entries per name keeps this linear.
fn hash_prefixes<'a>(lines: &'a [Cow<str>]) -> HashSet<&'a str> {
    let mut set = HashSet::new();
    for l in lines {
        for w in l.split(|c: char| c.is_whitespace() || c == ':') {
            let Some(p) = HASHED.iter().find(|p| w.starts_with(*p)) else {
                continue;
            };
            if w.len() - p.len() != 16 {
                continue;
            }
            for n in p.len() + 2..w.len() {
                if w.is_char_boundary(n) {
                    set.insert(&w[..n]);
                }
            }
        }
    }
    set
}

/// Chains the dump names as its own: `:NAME`, `-N NAME`, `-A NAME`.
fn declared<'a>(lines: &'a [Cow<str>]) -> HashSet<&'a str> {
    let mut set = HashSet::new();
    for l in lines {
        let l = l.trim_start();
        let mut w = l.split_whitespace();
        let name = match w.next() {
            Some(d) if d.starts_with(':') => Some(&d[1..]),
            Some("-N" | "-A" | "-I") => w.next(),
            Some(c) if c.starts_with('[') => w.next().and_then(|_| w.next()),
            _ => None,
        };
        set.extend(name);
    }
    set
}

/// Blanks the rules that look cut short; returns the note naming them. `in_quote` are the
/// rules that end inside a quote the next line does not close (or that end the input):
/// cut too when the text is `pasted` (something was taken off, or a line ends in `…`);
/// in a file as a program wrote it, they stay for the parser to report.
pub fn drop_cut(lines: &mut [Cow<str>], in_quote: &[usize], pasted: bool) -> Option<String> {
    let doubts: Vec<(usize, Doubt)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| is_rule(l))
        .filter_map(|(i, l)| Some((i, doubt(l)?)))
        .collect();
    let marked = doubts.iter().any(|(_, d)| matches!(d, Doubt::Marked));
    let in_quote: Vec<usize> = if pasted || marked {
        in_quote
            .iter()
            .copied()
            .filter(|&i| is_rule(&lines[i]))
            .collect()
    } else {
        Vec::new()
    };
    if doubts.is_empty() && in_quote.is_empty() {
        return None;
    }
    let mut cut: Vec<usize> = {
        let names = declared(lines);
        let prefixes = hash_prefixes(lines);
        doubts
            .iter()
            .filter(|(_, d)| match d {
                Doubt::Marked => true,
                Doubt::Jump(n) => !names.contains(n),
                Doubt::ShortHash(n) => !names.contains(n) && prefixes.contains(n),
            })
            .map(|(i, _)| *i)
            .collect()
    };
    if !in_quote.is_empty() {
        cut.extend(in_quote);
        cut.sort_unstable();
        cut.dedup();
    }
    if cut.is_empty() {
        return None;
    }
    let quoted: Vec<String> = cut
        .iter()
        .take(3)
        .map(|&i| {
            let l = lines[i].trim();
            let tail: String = {
                let start = l.char_indices().rev().nth(39).map_or(0, |(p, _)| p);
                echo(&l[start..], 40)
            };
            format!("line {} (\"...{tail}\")", i + 1)
        })
        .collect();
    let more = cut.len().saturating_sub(3);
    for &i in &cut {
        lines[i] = Cow::Borrowed("");
    }
    Some(format!(
        "{} line(s) look truncated (cut short by a chat or a terminal), not read: {}{}",
        cut.len(),
        quoted.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_jumps_are_dropped_unless_declared() {
        let mut l: Vec<Cow<str>> = [
            ":KUBE-SEP-ABC - [0:0]",
            "-A KUBE-SVC-X -j KUBE-SEP-ABC",
            "-A KUBE-SVC-X -j KUBE-SEP-HS74D4",
            "-A KUBE-SVC-X -j KUBE-MARK-MA",
            "-A KUBE-SVC-X -m comment --comment \"web/fr…",
            "-A KUBE-SVC-X -j KUBE-SEP-HS74D427DPRLI62H",
        ]
        .into_iter()
        .map(Cow::Borrowed)
        .collect();
        let note = drop_cut(&mut l, &[], false).unwrap();
        assert!(note.starts_with("3 line(s) look truncated"), "{note}");
        assert!(note.contains("line 3 ("), "{note}");
        assert_eq!(l[1], "-A KUBE-SVC-X -j KUBE-SEP-ABC");
        assert_eq!((&*l[2], &*l[3], &*l[4]), ("", "", ""));
        assert!(!l[5].is_empty());
        // A short name no longer chain begins with is a jump to an absent chain, kept.
        let mut l: Vec<Cow<str>> = ["-A KUBE-SERVICES -j KUBE-SVC-GONE"]
            .into_iter()
            .map(Cow::Borrowed)
            .collect();
        assert_eq!(drop_cut(&mut l, &[], false), None);
        assert_eq!(l[0], "-A KUBE-SERVICES -j KUBE-SVC-GONE");
    }
}
