//! A rule we write, spelled the way `iptables-save` (legacy, 1.8) prints it back.
//!
//! The restart compare ([`super::restart_diff`]) checks a live chain byte for byte against
//! the desired rules in this spelling before it falls back to the audit's canonical form.
//! Only a fixed set of shapes is spelled (those the renderer writes: kube-proxy's matches
//! and targets); anything else gives `None` and takes the canonical path.
//!
//! Soundness: every rewrite below keeps the rule's canonical key
//! ([`crate::audit::norm::rule_key`]) as it is. The rule is read with the parser's own
//! grammar (same tokens, same option grouping), and each change is one the key ignores:
//! basics moved to the front, `/32` added, matches and options reordered, `-m PROTO` made
//! explicit, quoting, and values re-printed that the key reads as the same number
//! (probability, marks, conntrack states) or drops (`--mask` all ones, `--rsource`, the
//! default `--reject-with`). So a live rule equal to the spelling has the desired rule's
//! key; a spelling the kernel prints differently only costs the canonical compare.

use crate::audit::lex::{tokenize_into, Token};
use crate::audit::norm::{addr, parse_u32, probability_fixed, value_mask};
use std::borrow::Cow;
use std::fmt::Write as _;

/// What [`Speller::spell`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spelled {
    /// A shape this module does not know: compare canonically.
    Unknown,
    /// Written; the same for both IP families.
    Done,
    /// Written with a default that the family decides (`--mask` of `recent`, the
    /// default `--reject-with`): the other family's spelling may be the kernel's.
    FamilyDefault,
}

/// One option of a match or target: `[!] --name values`, the name at token `at` and its
/// values the `n` tokens after it.
#[derive(Clone, Copy)]
struct Opt {
    neg: bool,
    at: usize,
    n: usize,
}

/// `-m NAME` or `-j NAME` with its options (a range of [`Speller::opts`]: a module's
/// options follow each other, as the parser gives each option to the latest module).
#[derive(Clone, Copy)]
struct Module<'a> {
    name: &'a str,
    opts: (usize, usize),
}

#[derive(Default)]
struct Basics<'a> {
    src: Option<(bool, &'a str)>,
    dst: Option<(bool, &'a str)>,
    proto: Option<(bool, &'a str)>,
    in_iface: Option<(bool, &'a str)>,
    out_iface: Option<(bool, &'a str)>,
}

/// Spells rules of one text; its buffers are reused from rule to rule.
#[derive(Default)]
pub struct Speller<'a> {
    toks: Vec<Token<'a>>,
    opts: Vec<Opt>,
    matches: Vec<Module<'a>>,
    out: String,
}

impl<'a> Speller<'a> {
    /// The last spelling (no leading space).
    pub fn spelled(&self) -> &str {
        self.out.get(1..).unwrap_or("")
    }

    /// Spells `rule` (the text after `-A CHAIN `, as the renderer wrote it) in
    /// `iptables-save`'s way; `v6` picks the family's defaults. Read the result with
    /// [`Speller::spelled`].
    pub fn spell(&mut self, rule: &'a str, v6: bool) -> Spelled {
        self.out.clear();
        if tokenize_into(rule, &mut self.toks).is_err() {
            return Spelled::Unknown;
        }
        let Some((basics, target)) = self.read() else {
            return Spelled::Unknown;
        };
        match self.write(&basics, target, v6) {
            Some(s) => s,
            None => {
                self.out.clear();
                Spelled::Unknown
            }
        }
    }

    fn opt(&self, o: &Opt) -> &str {
        &self.toks[o.at].text
    }

    fn values(&self, o: &Opt) -> &[Token<'a>] {
        &self.toks[o.at + 1..o.at + 1 + o.n]
    }

    fn value(&self, o: &Opt) -> &str {
        &self.toks[o.at + 1].text
    }

    /// Reads the tokens as `crate::audit::parse::parse_spec` groups them, refusing every
    /// case where it would not (or could fail): opaque tokens, repeated basics, counters,
    /// long spellings of basics. Values other than a comment's must be plain.
    #[allow(clippy::type_complexity)]
    fn read(&mut self) -> Option<(Basics<'a>, Option<(bool, Module<'a>)>)> {
        let toks = &self.toks;
        self.opts.clear();
        self.matches.clear();
        let mut b = Basics::default();
        let mut target: Option<(bool, Module<'a>)> = None;
        let mut neg = false;
        // Where a `--option` goes: before any -m/-j, the last match, or the target.
        #[derive(PartialEq)]
        enum Ctx {
            None,
            Match,
            Target,
        }
        let mut ctx = Ctx::None;
        let mut i = 0;
        let value =
            |i: usize| -> Option<&'a str> { toks.get(i).filter(|t| is_value(t)).and_then(plain) };
        while i < toks.len() {
            let text = plain(&toks[i])?;
            if text == "!" {
                if neg {
                    return None;
                }
                neg = true;
                i += 1;
                continue;
            }
            if !text.starts_with('-') || text == "-" || LONG_FORMS.contains(&text) {
                return None; // opaque, or a spelling the parser reads as a basic
            }
            let slot = match text {
                "-s" => Some(&mut b.src),
                "-d" => Some(&mut b.dst),
                "-p" => Some(&mut b.proto),
                "-i" => Some(&mut b.in_iface),
                "-o" => Some(&mut b.out_iface),
                _ => None,
            };
            if let Some(slot) = slot {
                let v = value(i + 1)?;
                if slot.is_some() || (text == "-p" && v.bytes().any(|c| c.is_ascii_uppercase())) {
                    return None;
                }
                *slot = Some((neg, v));
                i += 2;
                neg = false;
                continue;
            }
            if text == "-m" || text == "-j" || text == "-g" {
                if neg {
                    return None;
                }
                let name = value(i + 1)?;
                let at = self.opts.len();
                let m = Module {
                    name,
                    opts: (at, at),
                };
                if text == "-m" {
                    self.matches.push(m);
                    ctx = Ctx::Match;
                } else {
                    if target.is_some() {
                        return None;
                    }
                    target = Some((text == "-g", m));
                    ctx = Ctx::Target;
                }
                i += 2;
                continue;
            }
            if !text.starts_with("--") {
                return None;
            }
            // Only a comment's text may be quoted (the parser keeps its value as text).
            let comment = text == "--comment"
                && ctx == Ctx::Match
                && self.matches.last().is_some_and(|m| m.name == "comment");
            let mut j = i + 1;
            while j < toks.len() && is_value(&toks[j]) {
                if plain(&toks[j]).is_none() && !comment {
                    return None;
                }
                j += 1;
            }
            if ctx == Ctx::None {
                // `-p tcp --dport 80`: the protocol's implicit match, named by the
                // protocol given so far (written back as an explicit `-m tcp`).
                let (_, p) = b.proto?;
                let at = self.opts.len();
                self.matches.push(Module {
                    name: p,
                    opts: (at, at),
                });
                ctx = Ctx::Match;
            }
            self.opts.push(Opt {
                neg,
                at: i,
                n: j - i - 1,
            });
            let end = self.opts.len();
            match ctx {
                Ctx::Target => target.as_mut().expect("ctx").1.opts.1 = end,
                _ => self.matches.last_mut().expect("ctx").opts.1 = end,
            }
            i = j;
            neg = false;
        }
        if neg {
            return None;
        }
        Some((b, target))
    }

    /// The options of `m` by name, each at most once, all of them among `known` with the
    /// given value count; `None` otherwise.
    fn find<const N: usize>(
        &self,
        m: &Module,
        known: [(&str, usize); N],
    ) -> Option<[Option<Opt>; N]> {
        let mut found = [None; N];
        for o in &self.opts[m.opts.0..m.opts.1] {
            let name = self.opt(o);
            let k = known.iter().position(|(n, _)| *n == name)?;
            if found[k].is_some() || o.n != known[k].1 {
                return None;
            }
            found[k] = Some(*o);
        }
        Some(found)
    }

    fn write(&mut self, b: &Basics, target: Option<(bool, Module)>, v6: bool) -> Option<Spelled> {
        let mut out = std::mem::take(&mut self.out);
        let r = self.write_into(&mut out, b, target, v6);
        self.out = out;
        r
    }

    fn write_into(
        &self,
        out: &mut String,
        b: &Basics,
        target: Option<(bool, Module)>,
        v6: bool,
    ) -> Option<Spelled> {
        let mut spelled = Spelled::Done;
        basic(out, "-s", b.src, true);
        basic(out, "-d", b.dst, true);
        basic(out, "-i", b.in_iface, false);
        basic(out, "-o", b.out_iface, false);
        basic(out, "-p", b.proto, false);
        for m in &self.matches {
            out.push_str(" -m ");
            out.push_str(m.name);
            match m.name {
                "comment" => {
                    let [c] = self.find(m, [("--comment", 1)])?;
                    let c = c?;
                    if c.neg {
                        return None;
                    }
                    out.push_str(" --comment");
                    save_string(out, self.value(&c));
                }
                "tcp" | "udp" | "sctp" => {
                    for o in self
                        .find(m, [("--sport", 1), ("--dport", 1)])?
                        .into_iter()
                        .flatten()
                    {
                        neg(out, &o);
                        let _ = write!(out, " {} {}", self.opt(&o), self.value(&o));
                    }
                }
                "statistic" => {
                    let [mode, p] = self.find(m, [("--mode", 1), ("--probability", 1)])?;
                    let (mode, p) = (mode?, p?);
                    if mode.neg || p.neg || self.value(&mode) != "random" {
                        return None;
                    }
                    let fixed = probability_fixed(self.value(&p))?;
                    let _ = write!(
                        out,
                        " --mode random --probability {:.11}",
                        fixed as f64 / 2147483648.0
                    );
                }
                "mark" => {
                    let [o] = self.find(m, [("--mark", 1)])?;
                    let o = o?;
                    let (v, msk) = value_mask(self.value(&o), u32::MAX)?;
                    neg(out, &o);
                    if msk == u32::MAX {
                        let _ = write!(out, " --mark {v:#x}");
                    } else {
                        let _ = write!(out, " --mark {v:#x}/{msk:#x}");
                    }
                }
                "conntrack" => {
                    let [o] = self.find(m, [("--ctstate", 1)])?;
                    let o = o?;
                    neg(out, &o);
                    out.push_str(" --ctstate ");
                    ct_states(out, self.value(&o))?;
                }
                "addrtype" => {
                    let found = self.find(
                        m,
                        [
                            ("--src-type", 1),
                            ("--dst-type", 1),
                            ("--limit-iface-in", 0),
                            ("--limit-iface-out", 0),
                        ],
                    )?;
                    for o in found.into_iter().flatten() {
                        if o.n == 1 {
                            if !ADDR_TYPES.contains(&self.value(&o)) {
                                return None;
                            }
                        } else if o.neg {
                            return None;
                        }
                        neg(out, &o);
                        out.push(' ');
                        out.push_str(self.opt(&o));
                        for v in self.values(&o) {
                            out.push(' ');
                            out.push_str(&v.text);
                        }
                    }
                }
                "recent" => {
                    let [set, rcheck, seconds, reap, name] = self.find(
                        m,
                        [
                            ("--set", 0),
                            ("--rcheck", 0),
                            ("--seconds", 1),
                            ("--reap", 0),
                            ("--name", 1),
                        ],
                    )?;
                    if self.opts[m.opts.0..m.opts.1].iter().any(|o| o.neg)
                        || set.is_some() == rcheck.is_some()
                    {
                        return None;
                    }
                    out.push_str(if set.is_some() { " --set" } else { " --rcheck" });
                    if let Some(s) = seconds {
                        // The kernel prints the number it stores (`%d`).
                        let v = self.value(&s);
                        let n: u32 = v.parse().ok()?;
                        if n == 0 || n.to_string() != v {
                            return None;
                        }
                        let _ = write!(out, " --seconds {n}");
                    }
                    if reap.is_some() {
                        out.push_str(" --reap");
                    }
                    out.push_str(" --name ");
                    out.push_str(self.value(&name?));
                    // Dropped by the key when all ones (the default), like `--rsource`.
                    out.push_str(if v6 {
                        " --mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff --rsource"
                    } else {
                        " --mask 255.255.255.255 --rsource"
                    });
                    spelled = Spelled::FamilyDefault;
                }
                "nfacct" => {
                    let [o] = self.find(m, [("--nfacct-name", 1)])?;
                    let o = o?;
                    if o.neg {
                        return None;
                    }
                    // libxt_nfacct prints its own space before save_string's.
                    out.push_str(" --nfacct-name ");
                    save_string(out, self.value(&o));
                }
                _ => return None,
            }
        }
        let Some((goto, t)) = target else {
            return Some(spelled);
        };
        out.push_str(if goto { " -g " } else { " -j " });
        out.push_str(t.name);
        let topts = &self.opts[t.opts.0..t.opts.1];
        if topts.iter().any(|o| o.neg) {
            return None;
        }
        match t.name {
            "MARK" => {
                let [o] = topts else {
                    return None;
                };
                if o.n != 1 {
                    return None;
                }
                let v = self.value(o);
                // Every form is stored as (value, xor-mask) and printed as --set-xmark.
                let (v, msk) = match self.opt(o) {
                    "--set-xmark" => value_mask(v, u32::MAX)?,
                    "--set-mark" => value_mask(v, u32::MAX).map(|(v, m)| (v, m | v))?,
                    "--or-mark" => parse_u32(v).map(|v| (v, v))?,
                    "--xor-mark" => parse_u32(v).map(|v| (v, 0))?,
                    "--and-mark" => parse_u32(v).map(|v| (0, !v))?,
                    _ => return None,
                };
                let _ = write!(out, " --set-xmark {v:#x}/{msk:#x}");
            }
            "DNAT" | "SNAT" => {
                let flag = if t.name == "DNAT" {
                    "--to-destination"
                } else {
                    "--to-source"
                };
                let [o] = self.find(&t, [(flag, 1)])?;
                let _ = write!(out, " {flag} {}", self.value(&o?));
            }
            "MASQUERADE" => {
                let found = self.find(&t, [("--random", 0), ("--random-fully", 0)])?;
                for o in found.into_iter().flatten() {
                    out.push(' ');
                    out.push_str(self.opt(&o));
                }
            }
            "REJECT" => match self.find(&t, [("--reject-with", 1)])? {
                [Some(o)] => {
                    out.push_str(" --reject-with ");
                    out.push_str(self.value(&o));
                }
                [None] => {
                    // The kernel's default, which the key drops.
                    out.push_str(if v6 {
                        " --reject-with icmp6-port-unreachable"
                    } else {
                        " --reject-with icmp-port-unreachable"
                    });
                    spelled = Spelled::FamilyDefault;
                }
            },
            _ if topts.is_empty() => {}
            _ => return None,
        }
        Some(spelled)
    }
}

/// The parser's `is_value` (`crate::audit::parse`): what an option takes as its value.
fn is_value(t: &Token) -> bool {
    t.quoted || !(t.text.starts_with('-') && t.text.len() > 1 || t.text == "!")
}

/// A token written as it reads: no quotes, no backslashes (so printing it back bare
/// gives the same token).
fn plain<'a>(t: &Token<'a>) -> Option<&'a str> {
    match t.text {
        Cow::Borrowed(s) if !t.quoted => Some(s),
        _ => None,
    }
}

/// The parser's long spellings of basics (not options of a match).
const LONG_FORMS: [&str; 12] = [
    "--source",
    "--src",
    "--destination",
    "--dst",
    "--protocol",
    "--in-interface",
    "--out-interface",
    "--fragment",
    "--match",
    "--jump",
    "--goto",
    "--set-counters",
];

fn neg(out: &mut String, o: &Opt) {
    if o.neg {
        out.push_str(" !");
    }
}

/// `xtables_save_string`: bare when made only of `[A-Za-z0-9_-]`, else quoted with `"`,
/// `\` and `'` escaped. A bare text starting with `-` would read as an option: quoted.
fn save_string(out: &mut String, s: &str) {
    let bare = !s.is_empty()
        && !s.starts_with('-')
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
    out.push(' ');
    if bare {
        out.push_str(s);
        return;
    }
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\' | '\'') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

fn basic(out: &mut String, flag: &str, b: Option<(bool, &str)>, address: bool) {
    if let Some((n, v)) = b {
        out.push_str(if n { " ! " } else { " " });
        out.push_str(flag);
        out.push(' ');
        if address {
            // A bare IPv4 address (std reads only the canonical dotted quad) needs no
            // formatting.
            if v.parse::<std::net::Ipv4Addr>().is_ok() {
                out.push_str(v);
                out.push_str("/32");
            } else {
                out.push_str(&addr(v));
            }
        } else {
            out.push_str(v);
        }
    }
}

/// libxt_addrtype's type names (one type per option here).
const ADDR_TYPES: [&str; 12] = [
    "UNSPEC",
    "UNICAST",
    "LOCAL",
    "BROADCAST",
    "ANYCAST",
    "MULTICAST",
    "BLACKHOLE",
    "UNREACHABLE",
    "PROHIBIT",
    "THROW",
    "NAT",
    "XRESOLVE",
];

/// Conntrack states in the order libxt_conntrack prints them; each at most once.
fn ct_states(out: &mut String, v: &str) -> Option<()> {
    const ORDER: [&str; 7] = [
        "INVALID",
        "NEW",
        "RELATED",
        "ESTABLISHED",
        "UNTRACKED",
        "SNAT",
        "DNAT",
    ];
    let mut seen = [false; 7];
    for s in v.split(',') {
        let k = ORDER.iter().position(|o| *o == s)?;
        if seen[k] {
            return None;
        }
        seen[k] = true;
    }
    let mut sep = "";
    for (k, name) in ORDER.iter().enumerate() {
        if seen[k] {
            out.push_str(sep);
            out.push_str(name);
            sep = ",";
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::lex::tokenize;
    use crate::audit::norm::rule_key;
    use crate::audit::parse::parse_spec;

    fn key(s: &str) -> String {
        rule_key(&parse_spec(&tokenize(s).unwrap()).unwrap().0)
    }

    fn spelled(s: &str, v6: bool) -> Option<String> {
        let mut sp = Speller::default();
        (sp.spell(s, v6) != Spelled::Unknown).then(|| sp.spelled().to_string())
    }

    #[test]
    fn renderer_shapes_in_the_kernels_spelling() {
        let pairs = [
            (
                "-m comment --comment \"default/hello:http cluster IP\" -m tcp -p tcp -d 10.96.0.50 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ",
                "! -s 10.244.0.0/16 -d 10.96.0.50/32 -p tcp -m comment --comment \"default/hello:http cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ",
            ),
            (
                "-m comment --comment default/hello:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.20:8080",
                "-p tcp -m comment --comment \"default/hello:http\" -m tcp -j DNAT --to-destination 10.244.1.20:8080",
            ),
            ("-j MARK --or-mark 0x00004000", "-j MARK --set-xmark 0x4000/0x4000"),
            ("-j MARK --xor-mark 0x00004000", "-j MARK --set-xmark 0x4000/0x0"),
            ("-m mark ! --mark 0x00004000/0x00004000 -j RETURN", "-m mark ! --mark 0x4000/0x4000 -j RETURN"),
            (
                "-m comment --comment \"a -> b\" -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-X",
                "-m comment --comment \"a -> b\" -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-X",
            ),
            (
                "-m conntrack ! --ctstate DNAT,RELATED,ESTABLISHED -j DROP",
                "-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
            ),
            (
                "-m recent --name KUBE-SEP-X --rcheck --seconds 10800 --reap -j KUBE-SEP-X",
                "-m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-X --mask 255.255.255.255 --rsource -j KUBE-SEP-X",
            ),
            (
                "-m nfacct --nfacct-name localhost_nps_accepted_pkts -j X",
                "-m nfacct --nfacct-name  localhost_nps_accepted_pkts -j X",
            ),
            ("-p tcp --dport 80 -j ACCEPT", "-p tcp -m tcp --dport 80 -j ACCEPT"),
            ("-d fd00::a -j REJECT", "-d fd00::a/128 -j REJECT --reject-with icmp-port-unreachable"),
            ("-m comment --comment \"say \\\"hi\\\"\" -j X", "-m comment --comment \"say \\\"hi\\\"\" -j X"),
            ("-m comment --comment plain_name-1 -j X", "-m comment --comment plain_name-1 -j X"),
        ];
        for (ours, kernel) in pairs {
            assert_eq!(spelled(ours, false).as_deref(), Some(kernel), "{ours}");
            // The soundness the compare rests on: the spelling has the rule's key.
            assert_eq!(key(ours), key(kernel), "{ours}");
        }
    }

    #[test]
    fn unknown_shapes_are_refused() {
        for s in [
            "-m comment --comment a b -j X",     // two words where one is taken
            "-m foo --bar -j X",                 // a module not known here
            "-j X stray",                        // an opaque word
            "--dport 80 -j X",                   // an implicit match without -p
            "-s 10.0.0.1 -s 10.0.0.2 -j X",      // a repeated basic
            "-m tcp --dport \"80\" -p tcp -j X", // a quoted value
            "-j DNAT --to-destination 1.2.3.4:80 --random",
            "-m statistic --mode random --probability 1.5 -j X",
            "-m comment --comment \"open",
            "-m conntrack --ctstate NEW,NEW -j X",
            "! ! -s 10.0.0.1 -j X",
        ] {
            assert_eq!(spelled(s, false), None, "{s}");
        }
    }

    #[test]
    fn family_defaults_are_said() {
        let mut sp = Speller::default();
        assert_eq!(sp.spell("-j REJECT", true), Spelled::FamilyDefault);
        assert_eq!(
            sp.spelled(),
            "-j REJECT --reject-with icmp6-port-unreachable"
        );
        assert_eq!(sp.spell("-j ACCEPT", true), Spelled::Done);
    }
}
