//! Parser for `iptables-save` output and `iptables-restore` input (and the `-t T -N/-I`
//! lines of `expected.ensure`). Lenient by design: it reads what real nodes print,
//! keeps unknown matches as opaque options, and never panics.

pub use super::lex::{tokenize, Token};
use super::sym::{FxMap, Interner, Sym};
use super::{family, forms};
use crate::model::ip::IpFamily;
use std::borrow::Cow;

/// A parse failure, naming the line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

/// One option of a match or target: `[!] --name [values...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opt {
    pub neg: bool,
    pub name: Sym,
    pub values: Vec<Sym>,
}

/// `-m NAME opts...` (or the implicit protocol match of `-p tcp --dport 80`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    pub name: Sym,
    pub opts: Vec<Opt>,
}

/// `-j NAME opts...` or `-g NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: Sym,
    pub goto: bool,
    pub opts: Vec<Opt>,
}

/// A negatable basic match (`-s`, `-d`, `-p`, `-i`, `-o`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Basic {
    pub neg: bool,
    pub value: Sym,
}

/// The match/target part of a rule, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSpec {
    pub src: Option<Basic>,
    pub dst: Option<Basic>,
    pub proto: Option<Basic>,
    pub in_iface: Option<Basic>,
    pub out_iface: Option<Basic>,
    pub fragment: Option<bool>,
    pub matches: Vec<Match>,
    pub target: Option<Target>,
    /// Tokens that fit nowhere (kept so they still take part in comparisons).
    pub opaque: Vec<Sym>,
}

impl RuleSpec {
    pub fn find_match(&self, name: &str) -> Option<&Match> {
        self.matches.iter().find(|m| m.name == name)
    }

    /// First value of option `opt` of match `m`.
    pub fn match_value(&self, m: &str, opt: &str) -> Option<&str> {
        self.matches
            .iter()
            .filter(|x| x.name == m)
            .flat_map(|x| x.opts.iter())
            .find(|o| o.name == opt)
            .and_then(|o| o.values.first())
            .map(Sym::as_str)
    }

    pub fn comment(&self) -> Option<&str> {
        self.match_value("comment", "--comment")
    }

    /// The chain this rule jumps or goes to, or the builtin target name.
    pub fn target_name(&self) -> Option<&str> {
        self.target.as_ref().map(|t| t.name.as_str())
    }

    pub fn target_value(&self, opt: &str) -> Option<&str> {
        self.target
            .as_ref()?
            .opts
            .iter()
            .find(|o| o.name == opt)
            .and_then(|o| o.values.first())
            .map(Sym::as_str)
    }

    pub fn target_has(&self, opt: &str) -> bool {
        self.target
            .as_ref()
            .is_some_and(|t| t.opts.iter().any(|o| o.name == opt))
    }
}

/// One rule as it stands in a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// 1-based line in the source text.
    pub line: usize,
    /// The rule text after `-A CHAIN ` (as written, counters removed).
    pub text: String,
    pub counters: Option<(u64, u64)>,
    pub spec: RuleSpec,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    /// `ACCEPT`/`DROP` for builtin chains, `None` for `-`.
    pub policy: Option<String>,
    pub counters: Option<(u64, u64)>,
    pub rules: Vec<Rule>,
    /// Line of the declaration (`:NAME` or `-N`), 0 when only implied by a rule.
    pub line: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub chains: Vec<Chain>,
    index: FxMap<String, usize>,
    /// Chains removed with `-X` (restore payloads of partial syncs).
    pub deleted: Vec<String>,
}

impl Table {
    pub fn new(name: &str) -> Table {
        Table {
            name: name.to_string(),
            ..Table::default()
        }
    }

    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.index.get(name).map(|&i| &self.chains[i])
    }

    /// Position of chain `name` in `chains`.
    pub fn chain_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn has_chain(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn chain_mut(&mut self, name: &str, line: usize) -> &mut Chain {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.chains.push(Chain {
                    name: name.to_string(),
                    policy: None,
                    counters: None,
                    rules: Vec::new(),
                    line,
                });
                self.index.insert(name.to_string(), self.chains.len() - 1);
                self.chains.len() - 1
            }
        };
        &mut self.chains[i]
    }

    /// Removal leaves a hole (an empty name) that `compact` drops: many `-X` lines in one
    /// payload must not cost a shift each.
    fn remove_chain(&mut self, name: &str) {
        if let Some(i) = self.index.remove(name) {
            self.chains[i].name.clear();
            self.chains[i].rules.clear();
        }
    }

    fn compact(&mut self) {
        for c in &mut self.chains {
            c.rules.shrink_to_fit();
        }
        if self.chains.iter().any(|c| c.name.is_empty()) {
            self.chains.retain(|c| !c.name.is_empty());
            self.index = self
                .chains
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.clone(), i))
                .collect();
        }
    }
}

/// Tables in order of first appearance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub tables: Vec<Table>,
    /// What was left out of the input (prose, the other IP family's save), for the reader.
    pub notes: Vec<String>,
}

/// Table for rules that appear before any `*table` line (e.g. `iptables-save | grep`).
pub const IMPLICIT_TABLE: &str = "nat";

impl Ruleset {
    pub fn parse(text: &str) -> Result<Ruleset, ParseError> {
        Ruleset::parse_family(text, None)
    }

    /// [`Ruleset::parse`] of a dump that may hold an IPv4 and an IPv6 save: `family` picks
    /// one (IPv4 when `None`), and a note says the other was found.
    pub fn parse_family(text: &str, family: Option<IpFamily>) -> Result<Ruleset, ParseError> {
        let mut rs = Ruleset::default();
        rs.apply_family(text, family)?;
        Ok(rs)
    }

    /// A listing the kernel printed (`iptables-save`, read by the daemon): parsed as it is,
    /// without [`Ruleset::parse`]'s handling of pasted text and mixed families, which could
    /// misread another program's comments.
    pub fn parse_save(text: &str) -> Result<Ruleset, ParseError> {
        let mut rs = Ruleset::default();
        rs.apply_save(text)?;
        Ok(rs)
    }

    /// [`Ruleset::apply`] of text a program wrote (a listing, our own payload): read as it
    /// is, without the paste and family handling meant for what people bring.
    pub fn apply_save(&mut self, text: &str) -> Result<(), ParseError> {
        let lines: Vec<Cow<'_, str>> = text.lines().map(Cow::Borrowed).collect();
        self.apply_lines(&lines)
    }

    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    fn table_mut(&mut self, name: &str) -> &mut Table {
        match self.tables.iter().position(|t| t.name == name) {
            Some(i) => &mut self.tables[i],
            None => {
                self.tables.push(Table::new(name));
                self.tables.last_mut().expect("just pushed")
            }
        }
    }

    /// Applies a save/restore text on top of this state, the way `iptables-restore
    /// --noflush` would: a declared chain is created or flushed, `-A` appends, `-I` inserts,
    /// `-X` deletes, `-F` flushes. Outside `*table` blocks, `-t T` selects the table for one
    /// line, and `-I` / `-N` then only act if the rule / chain is absent (ensure semantics).
    pub fn apply(&mut self, text: &str) -> Result<(), ParseError> {
        self.apply_family(text, None)
    }

    fn apply_family(&mut self, text: &str, family: Option<IpFamily>) -> Result<(), ParseError> {
        let forms::Prepared { mut lines, notes } = forms::prepare(text)?;
        self.notes.extend(notes);
        self.notes.extend(family::pick(&mut lines, family));
        self.apply_lines(&lines)
    }

    fn apply_lines(&mut self, lines: &[Cow<'_, str>]) -> Result<(), ParseError> {
        let mut current: Option<String> = None;
        // Table of lines outside `*table` blocks: nat, or what a `-P` group of
        // `iptables -t T -S` output says (its built-in chains name the table).
        let mut implicit = IMPLICIT_TABLE.to_string();
        let mut after_policy = false;
        let mut words = Interner::default();
        let mut joined = String::new();
        let mut i = 0;
        while i < lines.len() {
            let line_no = i + 1;
            let mut raw: &str = &lines[i];
            i += 1;
            // A rule wrapped with trailing ` \` (pasted from a shell or a bug report).
            if raw.trim_end().ends_with(" \\") && i < lines.len() {
                joined.clear();
                joined.push_str(raw);
                while joined.trim_end().ends_with(" \\") && i < lines.len() {
                    let keep = joined.trim_end().len() - 1;
                    joined.truncate(keep);
                    let keep = joined.trim_end().len();
                    joined.truncate(keep);
                    joined.push(' ');
                    joined.push_str(lines[i].trim_start());
                    i += 1;
                }
                raw = joined.as_str();
            }
            let line = raw.trim();
            if let Some(t) = line.strip_prefix(forms::PROMPT_MARK) {
                // `$ iptables -t T -S` before a listing names its table.
                implicit = t.to_string();
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |msg: String| ParseError { line: line_no, msg };
            if let Some(name) = line.strip_prefix('*') {
                let name = name.trim();
                if name.is_empty() || name.contains(char::is_whitespace) {
                    return Err(err(format!("bad table line \"{}\"", echo(line, ECHO_MAX))));
                }
                self.table_mut(name);
                current = Some(name.to_string());
                continue;
            }
            if line == "COMMIT" {
                if current.take().is_none() {
                    return Err(err("COMMIT outside a table".into()));
                }
                continue;
            }
            if let Some(decl) = line.strip_prefix(':') {
                // Outside a table (`iptables-save | grep`): the implicit table.
                let table = current.clone().unwrap_or_else(|| implicit.clone());
                let mut parts = decl.split_whitespace();
                let name = parts.next().ok_or_else(|| err("empty chain name".into()))?;
                let policy = parts.next().filter(|p| *p != "-").map(str::to_string);
                let counters = parts.next().and_then(parse_bracket_counters);
                let t = self.table_mut(&table);
                let c = t.chain_mut(name, line_no);
                // Restore semantics: a declared chain starts empty.
                c.rules.clear();
                c.line = line_no;
                c.policy = policy;
                c.counters = counters;
                continue;
            }
            let policy_line = current.is_none() && line.starts_with("-P ");
            if policy_line && !after_policy {
                if let Some(t) = guess_table(&lines[line_no - 1..]) {
                    implicit = t.to_string();
                }
            }
            after_policy = policy_line;
            let tokens = tokenize(line).map_err(err)?;
            self.apply_command(
                &tokens,
                current.as_deref(),
                &implicit,
                line_no,
                raw,
                &mut words,
            )
            .map_err(err)?;
        }
        if let Some(t) = current {
            // iptables-save output always commits; a missing COMMIT means truncation.
            tracing::debug!("table {t} not committed at end of input");
        }
        for t in &mut self.tables {
            t.compact();
        }
        Ok(())
    }

    fn apply_command(
        &mut self,
        tokens: &[Token],
        current: Option<&str>,
        implicit: &str,
        line_no: usize,
        raw: &str,
        words: &mut Interner,
    ) -> Result<(), String> {
        let mut toks = tokens;
        let mut counters = None;
        // `[pkts:bytes] -A ...` (iptables-save -c).
        if let Some(first) = toks.first() {
            if !first.quoted && first.text.starts_with('[') {
                counters =
                    Some(parse_bracket_counters(&first.text).ok_or_else(|| {
                        format!("bad counters \"{}\"", echo(&first.text, ECHO_MAX))
                    })?);
                toks = &toks[1..];
            }
        }
        let mut table = current.map(str::to_string);
        let mut ensure = false;
        if toks.len() >= 2 && (toks[0].text == "-t" || toks[0].text == "--table") {
            table = Some(toks[1].text.to_string());
            ensure = current.is_none();
            toks = &toks[2..];
        }
        let table = table.unwrap_or_else(|| implicit.to_string());
        let Some(cmd) = toks.first() else {
            return Err("empty command".into());
        };
        let cmd = &*cmd.text;
        let chain = toks
            .get(1)
            .map(|t| t.text.to_string())
            .ok_or_else(|| format!("{} without a chain name", echo(cmd, ECHO_MAX)))?;
        if chain.is_empty() {
            return Err(format!("{} with an empty chain name", echo(cmd, ECHO_MAX)));
        }
        let rest = &toks[2..];
        let t = self.table_mut(&table);
        match cmd {
            "-A" | "--append" | "-I" | "--insert" => {
                let insert = cmd == "-I" || cmd == "--insert";
                let mut rest = rest;
                let mut pos = 0usize;
                if insert {
                    if let Some(n) = rest.first().and_then(|t| t.text.parse::<usize>().ok()) {
                        pos = n.saturating_sub(1);
                        rest = &rest[1..];
                    }
                }
                let (spec, c2) = parse_spec_in(rest, words)?;
                let text = rule_text(raw, insert);
                let rule = Rule {
                    line: line_no,
                    text,
                    counters: counters.or(c2),
                    spec,
                };
                let c = t.chain_mut(&chain, 0);
                if insert {
                    if ensure && c.rules.iter().any(|r| r.spec == rule.spec) {
                        return Ok(());
                    }
                    let pos = pos.min(c.rules.len());
                    c.rules.insert(pos, rule);
                } else {
                    c.rules.push(rule);
                }
            }
            "-N" | "--new-chain" => {
                // Outside a table (`-S` listings pasted together) `-N` is idempotent.
                if !ensure && current.is_some() && t.has_chain(&chain) {
                    return Err(format!("chain {} already exists", echo(&chain, ECHO_MAX)));
                }
                let c = t.chain_mut(&chain, line_no);
                if c.line == 0 {
                    c.line = line_no;
                }
            }
            "-X" | "--delete-chain" => {
                t.remove_chain(&chain);
                t.deleted.push(chain);
            }
            "-F" | "--flush" => {
                if let Some(&i) = t.index.get(&chain) {
                    t.chains[i].rules.clear();
                }
            }
            "-P" | "--policy" => {
                let p = rest.first().map(|t| t.text.to_string());
                t.chain_mut(&chain, 0).policy = p;
            }
            other => {
                let hint = if other == "Chain" || other == "target" {
                    " (this looks like `iptables -L` output: give iptables-save or `iptables -S` output)"
                } else {
                    ""
                };
                return Err(format!(
                    "unsupported command \"{}\"{hint}",
                    echo(other, ECHO_MAX)
                ));
            }
        }
        Ok(())
    }
}

/// The table a group of `-P CHAIN POLICY` lines (the head of `iptables -t T -S`) lists;
/// `None` for a single line, which a listing of one built-in chain prints.
pub(super) fn guess_table(lines: &[Cow<str>]) -> Option<&'static str> {
    let mut seen = Vec::new();
    for l in lines {
        let Some(rest) = l.trim().strip_prefix("-P ") else {
            break;
        };
        seen.push(rest.split_whitespace().next().unwrap_or(""));
    }
    // One line is the listing of one chain (`iptables -t nat -S PREROUTING`), not a table's.
    if seen.len() < 2 {
        return None;
    }
    let has = |c: &str| seen.contains(&c);
    Some(
        match (has("PREROUTING"), has("FORWARD"), has("POSTROUTING")) {
            (true, true, true) => "mangle",
            (true, false, true) => "nat",
            (true, false, false) => "raw",
            (false, true, _) => "filter",
            _ => return None,
        },
    )
}

pub use crate::encoding::{decode, NotUtf8};

/// The rule text after `-A CHAIN` as written (for reports).
fn rule_text(raw: &str, insert: bool) -> String {
    let s = raw.trim();
    // Skip leading counters / `-t T` / command / chain (and an insert position).
    let mut rest = s;
    fn skip<'a>(rest: &mut &'a str) -> &'a str {
        let r = rest.trim_start();
        let end = r.find(char::is_whitespace).unwrap_or(r.len());
        *rest = &r[end..];
        &r[..end]
    }
    let mut first = skip(&mut rest);
    if first.starts_with('[') {
        first = skip(&mut rest);
    }
    if first == "-t" || first == "--table" {
        skip(&mut rest);
        skip(&mut rest);
    }
    skip(&mut rest); // chain
    if insert {
        let save = rest;
        let n = skip(&mut rest);
        if n.parse::<usize>().is_err() {
            rest = save;
        }
    }
    rest.trim().to_string()
}

fn parse_bracket_counters(s: &str) -> Option<(u64, u64)> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    let (p, b) = inner.split_once(':')?;
    Some((p.parse().ok()?, b.parse().ok()?))
}

/// Echoes untrusted text in an error or report: control characters escaped (`\0`,
/// `\u{1b}`), cut to `max` characters with the total length said.
pub fn echo(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n == max {
            out.push_str(&format!("... ({} bytes in all)", s.len()));
            return out;
        }
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// Longest token echoed in a parse error.
pub const ECHO_MAX: usize = 100;

fn is_value(t: &Token) -> bool {
    t.quoted || !(t.text.starts_with('-') && t.text.len() > 1 || t.text == "!")
}

enum Ctx {
    None,
    Match(usize),
    Target,
}

/// Parses the rule specification after `-A CHAIN`. Returns `-c P B` counters if present.
pub fn parse_spec(toks: &[Token]) -> Result<(RuleSpec, Option<(u64, u64)>), String> {
    parse_spec_in(toks, &mut Interner::default())
}

/// [`parse_spec`] sharing the words of earlier rules.
fn parse_spec_in(
    toks: &[Token],
    words: &mut Interner,
) -> Result<(RuleSpec, Option<(u64, u64)>), String> {
    let mut spec = RuleSpec::default();
    let mut counters = None;
    let mut neg = false;
    let mut ctx = Ctx::None;
    let mut i = 0;
    let value = |i: usize, words: &mut Interner| -> Result<Sym, String> {
        toks.get(i)
            .filter(|t| is_value(t))
            .map(|t| words.get(&t.text))
            .ok_or_else(|| format!("{} needs a value", echo(&toks[i - 1].text, ECHO_MAX)))
    };
    while i < toks.len() {
        let t = &toks[i];
        if !t.quoted && t.text == "!" {
            neg = true;
            i += 1;
            continue;
        }
        if t.quoted || !t.text.starts_with('-') || t.text == "-" {
            spec.opaque.push(words.get(&t.text));
            i += 1;
            continue;
        }
        let basic = |v: Sym, neg: bool| Some(Basic { neg, value: v });
        match &*t.text {
            "-s" | "--source" | "--src" => {
                spec.src = basic(value(i + 1, words)?, neg);
                i += 2;
            }
            "-d" | "--destination" | "--dst" => {
                spec.dst = basic(value(i + 1, words)?, neg);
                i += 2;
            }
            "-p" | "--protocol" => {
                let p = value(i + 1, words)?;
                let p = if p.bytes().any(|c| c.is_ascii_uppercase()) {
                    words.get(&p.to_ascii_lowercase())
                } else {
                    p
                };
                spec.proto = basic(p, neg);
                i += 2;
            }
            "-i" | "--in-interface" => {
                spec.in_iface = basic(value(i + 1, words)?, neg);
                i += 2;
            }
            "-o" | "--out-interface" => {
                spec.out_iface = basic(value(i + 1, words)?, neg);
                i += 2;
            }
            "-f" | "--fragment" => {
                spec.fragment = Some(!neg);
                i += 1;
            }
            "-m" | "--match" => {
                spec.matches.push(Match {
                    name: value(i + 1, words)?,
                    opts: Vec::new(),
                });
                ctx = Ctx::Match(spec.matches.len() - 1);
                i += 2;
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                spec.target = Some(Target {
                    name: value(i + 1, words)?,
                    goto: t.text == "-g" || t.text == "--goto",
                    opts: Vec::new(),
                });
                ctx = Ctx::Target;
                i += 2;
            }
            "-c" | "--set-counters" => {
                let p = value(i + 1, words)?;
                let b = value(i + 2, words)?;
                counters = Some((
                    p.parse()
                        .map_err(|_| format!("bad counter \"{}\"", echo(&p, ECHO_MAX)))?,
                    b.parse()
                        .map_err(|_| format!("bad counter \"{}\"", echo(&b, ECHO_MAX)))?,
                ));
                i += 3;
            }
            name if name.starts_with("--") => {
                let mut values = Vec::new();
                let mut j = i + 1;
                while j < toks.len() && is_value(&toks[j]) {
                    values.push(words.get(&toks[j].text));
                    j += 1;
                }
                let opt = Opt {
                    neg,
                    name: words.get(name),
                    values,
                };
                match ctx {
                    Ctx::Target => spec.target.as_mut().expect("ctx").opts.push(opt),
                    Ctx::Match(m) => spec.matches[m].opts.push(opt),
                    Ctx::None => {
                        // `-p tcp --dport 80`: the protocol's implicit match.
                        let name = spec
                            .proto
                            .as_ref()
                            .map(|p| p.value.clone())
                            .unwrap_or_else(|| words.get("?"));
                        spec.matches.push(Match {
                            name,
                            opts: vec![opt],
                        });
                        ctx = Ctx::Match(spec.matches.len() - 1);
                    }
                }
                i = j;
            }
            other => {
                spec.opaque.push(words.get(other));
                i += 1;
            }
        }
        neg = false;
    }
    // Vecs grow by doubling from 4: a dump holds ~10⁶ of them, so trim each to its length.
    for m in &mut spec.matches {
        for o in &mut m.opts {
            o.values.shrink_to_fit();
        }
        m.opts.shrink_to_fit();
    }
    spec.matches.shrink_to_fit();
    if let Some(t) = &mut spec.target {
        for o in &mut t.opts {
            o.values.shrink_to_fit();
        }
        t.opts.shrink_to_fit();
    }
    Ok((spec, counters))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_save_and_restore_forms() {
        let text = "*nat\n:PREROUTING ACCEPT [5:300]\n:KUBE-SVC-X - [0:0]\n\
            [3:180] -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SVC-X\n\
            -A KUBE-SVC-X -m comment --comment \"say \\\"hi\\\"\" ! -s 10.0.0.0/8 -m tcp -p tcp --dport 80 -j MARK --or-mark 0x4000\n\
            COMMIT\n";
        let rs = Ruleset::parse(text).unwrap();
        let nat = rs.table("nat").unwrap();
        let pre = nat.chain("PREROUTING").unwrap();
        assert_eq!(pre.policy.as_deref(), Some("ACCEPT"));
        assert_eq!(pre.counters, Some((5, 300)));
        assert_eq!(pre.rules[0].counters, Some((3, 180)));
        assert_eq!(
            pre.rules[0].spec.comment(),
            Some("kubernetes service portals")
        );
        let r = &nat.chain("KUBE-SVC-X").unwrap().rules[0];
        assert_eq!(r.spec.comment(), Some("say \"hi\""));
        assert!(r.spec.src.as_ref().unwrap().neg);
        assert_eq!(r.spec.match_value("tcp", "--dport"), Some("80"));
        assert_eq!(r.spec.target_value("--or-mark"), Some("0x4000"));
    }

    #[test]
    fn errors_name_the_line() {
        let e = Ruleset::parse("*nat\n-A X -m comment --comment \"open\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = Ruleset::parse("*filter\n:A -\n-Z A\n").unwrap_err();
        assert_eq!(e.line, 3);
    }
}
