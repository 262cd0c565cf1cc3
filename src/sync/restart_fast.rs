//! The restart compare's fast path: chains found by a line scan, rules compared as text.
//!
//! [`super::restart_diff`] must give exactly what parsing both texts whole and comparing
//! every rule canonically gives. This path gets there without the full parse: both texts
//! are cut into chains by their `-A NAME`/`:NAME` lines, and a live rule equal to the
//! desired one, as written or in `iptables-save`'s spelling ([`super::save_spelling`],
//! which keeps the canonical key), is equal. Only chains where that fails are parsed and
//! compared canonically, and every other live rule is parsed too, for the parse errors the
//! full parse would report. Anything the scan does not read exactly as the parser would
//! (a line outside the plain save/restore forms, a redeclared chain, a parse error, or
//! too many chains to parse) gives `None`, and the caller takes the full path.

use super::restart_diff::{Diff, Emitter};
use super::save_spelling::{Spelled, Speller};
use crate::audit::lex::tokenize;
use crate::audit::norm::rule_key_to;
use crate::audit::parse::{parse_spec, RuleSpec};
use crate::audit::sym::FxMap;

/// One chain as the scan found it.
struct Chain<'a> {
    name: &'a str,
    /// 1-based line of the declaration (0 when only rules named it).
    line: usize,
    /// Line and text after `-A NAME ` of each rule.
    rules: Vec<(usize, &'a str)>,
    /// Deleted by a later `-X` (the parser drops it from the table).
    removed: bool,
}

struct Table<'a> {
    name: &'a str,
    chains: Vec<Chain<'a>>,
    index: FxMap<&'a str, usize>,
    deleted: Vec<&'a str>,
}

impl<'a> Table<'a> {
    fn chain(&self, name: &str) -> Option<&Chain<'a>> {
        self.index.get(name).map(|&i| &self.chains[i])
    }
}

/// Whether the text is the renderer's payload (every chain declared before its rules,
/// `-X` allowed) or a kernel listing (rules may name undeclared chains, no `-X`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Payload,
    Listing,
}

/// A chain name the tokenizer and the parser's rule-text cut both end at the next space.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| (0x21..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// The tables of `lines` as `crate::audit::parse::Ruleset::apply_save` would build them,
/// or `None` for a line it may read otherwise.
fn scan<'a>(
    lines: impl Iterator<Item = &'a str>,
    len: usize,
    kind: Kind,
) -> Option<Vec<Table<'a>>> {
    let mut tables: Vec<Table<'a>> = Vec::new();
    // Rehashing a growing index was a twentieth of the compare: sized from the text
    // (~300 bytes a chain at 10,000 Services).
    let capacity = len / 256;
    let mut current: Option<usize> = None;
    let mut removed: FxMap<(usize, &'a str), ()> = FxMap::default();
    // The chain of the last rule line: (name, position in the current table).
    let mut last: Option<(&'a str, usize)> = None;
    for (i, raw) in lines.enumerate() {
        let line_no = i + 1;
        // A trailing ` \` joins lines in the parser.
        if raw.trim_end().ends_with('\\') {
            return None;
        }
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !line.starts_with("-A ") {
            last = None;
        }
        if let Some(name) = line.strip_prefix('*') {
            let name = name.trim();
            if name.is_empty()
                || name.contains(char::is_whitespace)
                || tables.iter().any(|t| t.name == name)
            {
                return None;
            }
            let mut index = FxMap::default();
            index.reserve(capacity);
            tables.push(Table {
                name,
                chains: Vec::with_capacity(capacity),
                index,
                deleted: Vec::new(),
            });
            current = Some(tables.len() - 1);
            continue;
        }
        let ti = current?;
        if line == "COMMIT" {
            current = None;
            continue;
        }
        let t = &mut tables[ti];
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next()?;
            // A second declaration empties the chain (restore semantics): not done here.
            if t.index.insert(name, t.chains.len()).is_some()
                || (!removed.is_empty() && removed.contains_key(&(ti, name)))
            {
                return None;
            }
            t.chains.push(Chain {
                name,
                line: line_no,
                rules: Vec::new(),
                removed: false,
            });
            continue;
        }
        if let Some(rest) = line.strip_prefix("-A ") {
            let (name, rule) = match rest.find(' ') {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, ""),
            };
            // A chain's rules follow each other: look its name up once.
            let at = match last {
                Some((n, at)) if n == name => at,
                _ => {
                    if !plain_name(name) {
                        return None;
                    }
                    let at = match t.index.get(name) {
                        Some(&at) => at,
                        None if kind == Kind::Listing => {
                            t.index.insert(name, t.chains.len());
                            t.chains.push(Chain {
                                name,
                                line: 0,
                                rules: Vec::new(),
                                removed: false,
                            });
                            t.chains.len() - 1
                        }
                        None => return None,
                    };
                    last = Some((name, at));
                    at
                }
            };
            t.chains[at].rules.push((line_no, rule));
            continue;
        }
        if let Some(name) = line.strip_prefix("-X ") {
            if kind != Kind::Payload || !plain_name(name) {
                return None;
            }
            if let Some(at) = t.index.remove(name) {
                // Its rules would have been parsed (and could fail): not done here.
                if !t.chains[at].rules.is_empty() {
                    return None;
                }
                t.chains[at].removed = true;
                removed.insert((ti, name), ());
            }
            t.deleted.push(name);
            continue;
        }
        return None;
    }
    Some(tables)
}

/// How far the fast path got, for tests and profiles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastStats {
    /// Desired chains found equal as text.
    pub text_equal_chains: usize,
    /// Desired chains compared canonically (parsed): differing, or spelled otherwise.
    pub parsed_chains: usize,
    /// Rules parsed (both sides, including live chains the payload does not declare).
    pub parsed_rules: usize,
}

/// Past this share of all rules to parse (and this many), the full path (on two threads)
/// costs no more.
const MAX_PARSED_SHARE: usize = 4;
const MIN_PARSED_LIMIT: usize = 20_000;

/// Parsed rules of one chain; `None` on a parse error (the full path reports it).
fn parse_rules(rules: &[(usize, &str)]) -> Option<Vec<(String, RuleSpec)>> {
    rules
        .iter()
        .map(|(_, r)| {
            let toks = tokenize(r).ok()?;
            let (spec, _) = parse_spec(&toks).ok()?;
            Some((r.trim().to_string(), spec))
        })
        .collect()
}

/// Rules equal as text: the live one is the desired one as written or in its save
/// spelling. The desired rule must spell (so it is known to parse) even when the texts
/// are equal. `v6`: which family's defaults spell best (learnt from the rules).
fn text_equal<'a>(want: &Chain<'a>, have: &Chain, v6: &mut bool, sp: &mut Speller<'a>) -> bool {
    want.rules.len() == have.rules.len()
        && want
            .rules
            .iter()
            .zip(&have.rules)
            .all(|(&(_, w), &(_, h))| match sp.spell(w, *v6) {
                Spelled::Unknown => false,
                Spelled::Done => sp.spelled() == h || w == h,
                Spelled::FamilyDefault => {
                    sp.spelled() == h || w == h || {
                        let other = sp.spell(w, !*v6) != Spelled::Unknown && sp.spelled() == h;
                        if other {
                            *v6 = !*v6;
                        }
                        other
                    }
                }
            })
}

/// Which chains of `t` equal their live ones as text, on two threads for a large table.
fn text_verdicts(t: &Table, lt: Option<&Table>) -> Vec<bool> {
    let judge = |chains: &[Chain]| -> Vec<bool> {
        let (mut v6, mut sp) = (false, Speller::default());
        chains
            .iter()
            .map(|c| match lt.and_then(|l| l.chain(c.name)) {
                Some(h) => !c.removed && text_equal(c, h, &mut v6, &mut sp),
                None => false,
            })
            .collect()
    };
    if t.chains.len() < PARALLEL_CHAINS {
        return judge(&t.chains);
    }
    let (a, b) = t.chains.split_at(t.chains.len() / 2);
    std::thread::scope(|s| {
        let second = std::thread::Builder::new().spawn_scoped(s, || judge(b));
        let mut v = judge(a);
        match second {
            Ok(h) => v.extend(h.join().expect("compare does not panic")),
            Err(_) => v.extend(judge(b)),
        }
        v
    })
}

/// Tables with fewer chains are compared on one thread.
const PARALLEL_CHAINS: usize = 2000;

/// The full path's rule-by-rule compare (`same_rules`) on parsed rules.
fn same_parsed(want: &[(String, RuleSpec)], have: &[(String, RuleSpec)]) -> bool {
    let mut keys = (String::new(), String::new());
    want.len() == have.len()
        && want.iter().zip(have).all(|(a, b)| {
            a.0 == b.0 || {
                rule_key_to(&a.1, &mut keys.0);
                rule_key_to(&b.1, &mut keys.1);
                keys.0 == keys.1
            }
        })
}

/// [`super::restart_diff::differing_payload`] by the fast path, or `None` where only the
/// full parse can say.
pub fn differing_payload(desired: &str, live: &str) -> Option<(Diff, FastStats)> {
    let listing = || scan(live.lines(), live.len(), Kind::Listing);
    let (lines, want, have) = std::thread::scope(|s| {
        let have = std::thread::Builder::new().spawn_scoped(s, listing);
        let lines: Vec<&str> = desired.lines().collect();
        let want = scan(lines.iter().copied(), desired.len(), Kind::Payload);
        let have = match have {
            Ok(h) => h.join().expect("scan does not panic"),
            Err(_) => listing(),
        };
        (lines, want, have)
    });
    let (want, have) = (want?, have?);
    let mut stats = FastStats::default();
    // Per desired table: its live table and whether each chain is equal as text (if
    // not, it is compared canonically, and its live chain parsed too).
    let verdicts: Vec<(Option<usize>, Vec<bool>)> = want
        .iter()
        .map(|t| {
            let li = have.iter().position(|l| l.name == t.name);
            (li, text_verdicts(t, li.map(|i| &have[i])))
        })
        .collect();
    // Live chains not proven equal as text, by table: parsed for errors (and compared
    // where the payload declares them).
    let mut covered: Vec<Vec<bool>> = have.iter().map(|t| vec![false; t.chains.len()]).collect();
    let mut to_parse = 0usize;
    for (t, (li, v)) in want.iter().zip(&verdicts) {
        for (c, verdict) in t.chains.iter().zip(v) {
            if c.removed {
                continue;
            }
            if let Some(li) = *li {
                let lt = &have[li];
                if let Some(&at) = lt.index.get(c.name) {
                    covered[li][at] = true;
                    if !verdict {
                        to_parse += lt.chains[at].rules.len();
                    }
                }
            }
            if !verdict {
                to_parse += c.rules.len();
            }
        }
    }
    for (lt, cov) in have.iter().zip(&covered) {
        for (c, done) in lt.chains.iter().zip(cov) {
            if !done {
                to_parse += c.rules.len();
            }
        }
    }
    let total: usize = want
        .iter()
        .chain(&have)
        .flat_map(|t| &t.chains)
        .map(|c| c.rules.len())
        .sum();
    if to_parse > MIN_PARSED_LIMIT && to_parse > total / MAX_PARSED_SHARE {
        return None;
    }
    // Live rules no desired chain compares: they must parse as the full path's would.
    for (lt, cov) in have.iter().zip(&covered) {
        for (c, done) in lt.chains.iter().zip(cov) {
            if !done {
                parse_rules(&c.rules)?;
                stats.parsed_rules += c.rules.len();
            }
        }
    }
    let mut emit = Emitter::new(&lines);
    for (t, (li, v)) in want.iter().zip(&verdicts) {
        let lt = li.map(|i| &have[i]);
        let mut differing: Vec<&Chain> = Vec::new();
        let mut live_chains = 0;
        for (c, verdict) in t.chains.iter().zip(v) {
            if c.removed {
                continue;
            }
            live_chains += 1;
            let equal = match verdict {
                true => {
                    stats.text_equal_chains += 1;
                    true
                }
                false => {
                    stats.parsed_chains += 1;
                    let w = parse_rules(&c.rules)?;
                    stats.parsed_rules += w.len();
                    match lt.and_then(|l| l.chain(c.name)) {
                        Some(h) => {
                            let h = parse_rules(&h.rules)?;
                            stats.parsed_rules += h.len();
                            same_parsed(&w, &h)
                        }
                        None => false,
                    }
                }
            };
            if !equal {
                differing.push(c);
            }
        }
        let kept: usize = t
            .chains
            .iter()
            .filter(|c| !c.removed)
            .map(|c| c.rules.len())
            .sum::<usize>()
            - differing.iter().map(|c| c.rules.len()).sum::<usize>();
        let deleted: Vec<&str> = t
            .deleted
            .iter()
            .copied()
            .filter(|n| lt.is_some_and(|l| l.index.contains_key(n)))
            .collect();
        let decls: Vec<(usize, &str)> = differing.iter().map(|c| (c.line, c.name)).collect();
        let rules: Vec<usize> = differing
            .iter()
            .flat_map(|c| c.rules.iter().map(|r| r.0))
            .collect();
        emit.table(t.name, live_chains, kept, decls, rules, &deleted);
    }
    Some((emit.finish(), stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::restart_diff::differing_payload_canonical;

    const DESIRED: &str = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SEP-A - [0:0]\n:KUBE-SEP-OLD - [0:0]\n\
        -A KUBE-SERVICES -m comment --comment \"ns/a cluster IP\" -m tcp -p tcp -d 10.96.0.1 --dport 80 -j KUBE-SEP-A\n\
        -A KUBE-SEP-A -m comment --comment ns/a -m tcp -p tcp -j DNAT --to-destination 10.244.0.5:80\n\
        -X KUBE-SEP-OLD\nCOMMIT\n";
    const LIVE: &str = "# Generated by iptables-save v1.8.9\n*nat\n:PREROUTING ACCEPT [0:0]\n\
        :KUBE-SEP-A - [0:0]\n:KUBE-SEP-OLD - [0:0]\n:KUBE-SERVICES - [0:0]\n\
        -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
        -A KUBE-SEP-A -p tcp -m comment --comment \"ns/a\" -m tcp -j DNAT --to-destination 10.244.0.5:80\n\
        -A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment \"ns/a cluster IP\" -m tcp --dport 80 -j KUBE-SEP-A\n\
        COMMIT\n";

    fn fast(desired: &str, live: &str) -> Option<(Diff, FastStats)> {
        differing_payload(desired, live)
    }

    #[test]
    fn equal_listing_is_settled_as_text() {
        let (d, stats) = fast(DESIRED, LIVE).expect("fast path decides");
        assert_eq!(Ok(&d), differing_payload_canonical(DESIRED, LIVE).as_ref());
        assert_eq!(
            d.payload.as_deref(),
            Some("*nat\n:KUBE-SEP-OLD - [0:0]\n-X KUBE-SEP-OLD\nCOMMIT\n")
        );
        assert_eq!((stats.text_equal_chains, stats.parsed_chains), (2, 0));
        // PREROUTING is not ours: parsed only for the errors the full parse would see.
        assert_eq!(stats.parsed_rules, 1);
    }

    #[test]
    fn a_spelling_miss_is_decided_canonically() {
        // Same rule, another spelling (option order the save never prints): parsed, equal.
        let live = LIVE.replace(
            "-m comment --comment \"ns/a\" -m tcp -j DNAT",
            "-m tcp -m comment --comment \"ns/a\" -j DNAT",
        );
        let (d, stats) = fast(DESIRED, &live).expect("fast path decides");
        assert_eq!(Ok(&d), differing_payload_canonical(DESIRED, &live).as_ref());
        assert_eq!(d.rewritten_chains, 0);
        assert_eq!((stats.text_equal_chains, stats.parsed_chains), (1, 1));
    }

    #[test]
    fn what_only_the_full_parse_can_say_goes_back_to_it() {
        let unparsable_foreign_rule = LIVE.replace(
            "-A PREROUTING -m comment --comment \"kubernetes service portals\"",
            "-A PREROUTING -m comment --comment \"open",
        );
        let redeclared = LIVE.replace("COMMIT\n", ":KUBE-SEP-A - [0:0]\nCOMMIT\n");
        let counters = LIVE.replace("-A KUBE-SEP-A", "[1:2] -A KUBE-SEP-A");
        let continued = LIVE.replace("-j KUBE-SERVICES\n", "-j KUBE-SERVICES \\\n");
        let twice = format!("{LIVE}{LIVE}");
        for live in [
            unparsable_foreign_rule,
            redeclared,
            counters,
            continued,
            twice,
        ] {
            assert_eq!(fast(DESIRED, &live).map(|x| x.0), None, "{live}");
        }
        // The payload: a rule for an undeclared chain, one in a chain it then deletes.
        let undeclared = DESIRED.replace(":KUBE-SEP-A - [0:0]\n", "");
        let deleted_with_rules = DESIRED.replace(
            "-X KUBE-SEP-OLD",
            "-A KUBE-SEP-OLD -j DROP\n-X KUBE-SEP-OLD",
        );
        for desired in [undeclared, deleted_with_rules] {
            assert_eq!(fast(&desired, LIVE).map(|x| x.0), None, "{desired}");
        }
        // Canonical parse errors stay errors through the public entry point.
        let bad = DESIRED.replace("--dport 80", "--dport 80 -m");
        assert!(crate::sync::restart_diff::differing_payload(&bad, LIVE).is_err());
    }

    #[test]
    fn a_fresh_node_costs_no_more_than_the_full_parse() {
        // Nothing of ours listed: every desired rule would need parsing.
        let fresh = "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n";
        let (d, _) = fast(DESIRED, fresh).expect("small: parsed here");
        assert_eq!(Ok(&d), differing_payload_canonical(DESIRED, fresh).as_ref());
        let mut large = String::from("*nat\n");
        for i in 0..MIN_PARSED_LIMIT + 1 {
            large.push_str(&format!(":KUBE-SEP-{i} - [0:0]\n-A KUBE-SEP-{i} -j DROP\n"));
        }
        large.push_str("COMMIT\n");
        assert_eq!(fast(&large, fresh).map(|x| x.0), None);
    }
}
