//! Dump forms around the rules: what people paste into bug reports and chats (markdown
//! fences, shell prompts, `> ` quote markers, prose, `grep -n`/`-C` prefixes) is stripped
//! line by line; forms the audit cannot read (`iptables -L` listings, `nft list ruleset`)
//! are refused at their first line with what to give instead.

use super::parse::{echo, ParseError};
use super::prompt::{is_command, prompt_command, prompt_table};
use super::{truncated, unescape};
use std::borrow::Cow;

/// What one input line is, once the paste around it is taken off.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// Save/restore text to parse (quote marker and `grep -n` prefix removed).
    Rule(&'a str),
    /// Nothing to read: blank, fence, save comment.
    Skip,
    /// A shell prompt and its command (`$ sudo iptables -t nat -S`).
    Prompt(&'a str),
    /// Text that is not rules (reported once, in a note).
    Prose,
    /// Prose that starts like a rule (`-A is what I ran`): named in a note of its own.
    NotARule(&'a str),
}

/// Quote bars and table gutters: `>` (mail, markdown, nested `> >`), `|` and `│`.
const GUTTERS: &[char] = &['>', '|', '│', '┃'];

/// Takes off what a paste puts before the rule text, each kind at most once (so the cost
/// is one pass): quote bars and gutters (nested), a `cat -n` / `grep -n` line number, a
/// `grep` file name (`nat.save:`, `nat.save:12:`, `/etc/iptables/rules.v4:`).
pub fn strip_paste(line: &str) -> &str {
    let line = strip_gutters(line);
    if rule_form(line).is_some() {
        return line;
    }
    strip_numbers(line)
}

/// Quote bars and table gutters (nested), and a table row's closing bar.
fn strip_gutters(line: &str) -> &str {
    let mut line = line.trim();
    let mut gutter = false;
    while let Some(c) = line.chars().next().filter(|c| GUTTERS.contains(c)) {
        gutter |= c != '>';
        line = line[c.len_utf8()..].trim_start();
    }
    if gutter {
        // A table row's closing bar: `| -A ... |`.
        if let Some(c) = line.chars().next_back().filter(|c| *c == '|' || *c == '│') {
            line = line[..line.len() - c.len_utf8()].trim_end();
        }
    }
    line
}

/// A `cat -n` / `grep -n` line number or a `grep` file name before the rule.
fn strip_numbers(line: &str) -> &str {
    // `cat -n` (`    12\t-A ...`) or `grep -n` (`12:-A ...`).
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 {
        let rest = &line[digits..];
        let rest = if let Some(r) = rest.strip_prefix(':') {
            Some(r)
        } else if rest.starts_with([' ', '\t']) {
            Some(rest.trim_start())
        } else {
            None
        };
        if let Some(r) = rest {
            return r.trim_start();
        }
        // A `grep -n -A/-B/-C` context line: `13--A ...`, `13-COMMIT`.
        if let Some(r) = line[digits..].strip_prefix('-') {
            if rule_form(r).is_some() || counters_first(r) || r.starts_with('#') {
                return r;
            }
        }
    }
    grep_file_prefix(line).unwrap_or(line)
}

/// Separators a `grep` file-name prefix may end with, looked for in the first word only.
const GREP_SEPARATORS_MAX: usize = 16;

/// The rule after a `grep` file-name prefix in the first word: `FILE:` or `FILE:N:` on a
/// match line, `FILE-` or `FILE-N-` on a `-A/-B/-C` context line.
fn grep_file_prefix(line: &str) -> Option<&str> {
    let word_end = line.find(char::is_whitespace).unwrap_or(line.len());
    let word = &line[..word_end];
    // A file name holds few separators: more is not a prefix (and a bound keeps it linear).
    let seps = word.match_indices([':', '-']).take(GREP_SEPARATORS_MAX);
    for (p, sep) in seps {
        let rest = &line[p + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let rest = match rest[digits..].strip_prefix(sep) {
            Some(r) if digits > 0 => r,
            _ => rest,
        };
        if p > 0 && (rule_form(rest).is_some() || counters_first(rest)) {
            return Some(rest);
        }
    }
    None
}

/// `[pkts:bytes] -A ...` (iptables-save -c).
fn counters_first(line: &str) -> bool {
    line.starts_with('[') && line[1..].starts_with(|c: char| c.is_ascii_digit())
}

/// Classifies one line; `Err` names a form that is refused.
pub fn classify(raw: &str) -> Result<Line<'_>, String> {
    let line = raw.trim();
    // Fast path: what iptables-save and restore input are made of.
    if line.is_empty() {
        return Ok(Line::Skip);
    }
    if let Some(r) = rule_form(line) {
        return Ok(rule_or_prose(r));
    }
    let line = strip_paste(line);
    if line.is_empty() {
        return Ok(Line::Skip);
    }
    if let Some(r) = rule_form(line) {
        return Ok(rule_or_prose(r));
    }
    classify_rest(line)
}

/// A rule-shaped line that is prose (`-A is what I ran`, `*nat seems broken`): iptables-save
/// never puts a bare word right after `-A CHAIN`, nor a space in a table name.
fn rule_or_prose(line: &str) -> Line<'_> {
    let mut w = line.split_whitespace();
    let first = w.next().unwrap_or("");
    if first.starts_with('*') && w.next().is_some() {
        return Line::NotARule(line);
    }
    if matches!(first, "-A" | "--append" | "-I" | "--insert") {
        let _chain = w.next();
        if let Some(third) = w.next() {
            let option = third.starts_with('-') || third.starts_with('!') || third == "\\";
            let position =
                matches!(first, "-I" | "--insert") && third.bytes().all(|b| b.is_ascii_digit());
            if !option && !position {
                return Line::NotARule(line);
            }
        }
    }
    Line::Rule(line)
}

fn classify_rest(line: &str) -> Result<Line<'_>, String> {
    if line == "--" {
        // `grep -A/-B/-C` between groups.
        return Ok(Line::Skip);
    }
    if line.starts_with("```") || line.starts_with("~~~") || is_table_rule(line) {
        return Ok(Line::Skip);
    }
    if let Some(r) = line.strip_prefix('#') {
        let r = r.trim_start();
        return Ok(if is_command(r) {
            Line::Prompt(r)
        } else {
            Line::Skip
        });
    }
    if let Some(r) = line.strip_prefix("$ ").or_else(|| line.strip_prefix("% ")) {
        return Ok(Line::Prompt(r.trim_start()));
    }
    if line.starts_with('[') {
        // `[root@node ~]# cmd`, unlike the `[pkts:bytes]` counters of `iptables-save -c`.
        if let Some(end) = line.find(']') {
            let inner = &line[1..end];
            let after = &line[end + 1..];
            if inner.contains(['@', ' ']) && (after.starts_with('#') || after.starts_with('$')) {
                return Ok(Line::Prompt(after[1..].trim_start()));
            }
        }
        return Ok(Line::Rule(line));
    }
    if let Some(cmd) = prompt_command(line) {
        return Ok(Line::Prompt(cmd));
    }
    if line.starts_with("Chain ")
        && line.ends_with(')')
        && (line.contains(" references)") || line.contains("(policy "))
    {
        return Err(format!(
            "this looks like `iptables -L` output (\"{}\"), which drops rule details: give \
             `iptables-save` (or `iptables -t nat -S`) output instead",
            echo(line, 60)
        ));
    }
    let words: Vec<&str> = line.split_whitespace().take(5).collect();
    if words.starts_with(&["target", "prot", "opt"])
        || words.starts_with(&["pkts", "bytes", "target"])
        || words.starts_with(&["num", "target", "prot"])
    {
        return Err(
            "this looks like the header of an `iptables -L` listing, which drops rule details: give \
             `iptables-save` (or `iptables -t nat -S`) output instead"
                .into(),
        );
    }
    if line.starts_with("table ") && line.ends_with('{') {
        return Err(nft_message(line));
    }
    if is_command(line) && (prompt_table(line).is_some() || line.contains("-save")) {
        // A command without a prompt (or behind fish's `> `, read as a quote bar).
        return Ok(Line::Prompt(line));
    }
    Ok(Line::Prose)
}

/// `line` if it is one of the forms iptables-save and restore input are made of.
fn rule_form(line: &str) -> Option<&str> {
    match line.as_bytes().first() {
        Some(b'*' | b':' | b'-')
            if !line.starts_with("- ")
                && !line.starts_with("* ")
                && !line.starts_with("**")
                && !line.bytes().all(|b| b == b'-' || b == b'*')
                && !is_table_rule(line) =>
        {
            Some(line)
        }
        _ if line == "COMMIT" => Some(line),
        _ => None,
    }
}

/// A markdown table's separator row (`---|---`, `:--- | ---:`, or a cell of it after a
/// grep-prefix cut): bars, dashes, colons only.
fn is_table_rule(line: &str) -> bool {
    line.contains(['|', ':'])
        && line
            .bytes()
            .all(|b| matches!(b, b'-' | b'|' | b':' | b' ' | b'\t'))
}

fn nft_message(line: &str) -> String {
    let family_table = line.trim_end_matches('{').trim();
    if family_table.ends_with(" kube-proxy") {
        format!(
            "this is `nft list ruleset` output of kube-proxy's nftables mode (\"{}\"): the \
             audit tools read iptables mode only; give `iptables-save` output of a node whose \
             kube-proxy runs in iptables mode (mode: iptables), or compare this node's \
             Services with `kubectl` instead",
            echo(family_table, 60)
        )
    } else {
        format!(
            "this is `nft list ruleset` output (\"{}\"): the audit tools read iptables rules; \
             give `iptables-save` (or `iptables-nft-save`, which prints the same rules in \
             iptables form) output instead",
            echo(family_table, 60)
        )
    }
}

/// The lines to parse (paste removed, non-rules blanked, so line numbers stay) and
/// notes on what was left out.
pub struct Prepared<'a> {
    pub lines: Vec<Cow<'a, str>>,
    pub notes: Vec<String>,
}

/// Prose lines quoted in the note before the rest are only counted.
const PROSE_QUOTED: usize = 3;

/// Classifies every line of `text`; refuses the whole input at a refused form. A prompt
/// is kept (as `#` text the parser reads as a prompt) only when it names a table.
pub fn prepare(text: &str) -> Result<Prepared<'_>, ParseError> {
    // kube-proxy's nftables table anywhere wins over whatever comes first.
    for needle in [
        "table ip kube-proxy",
        "table ip6 kube-proxy",
        "table inet kube-proxy",
    ] {
        // At the start of a line only: a rule's comment may say anything.
        let found = text
            .lines()
            .enumerate()
            .find(|(_, l)| l.trim_start().starts_with(needle));
        if let Some((i, l)) = found {
            return Err(ParseError {
                line: i + 1,
                msg: nft_message(l.trim()),
            });
        }
    }
    let mut lines = Vec::new();
    let mut prose = Vec::new();
    let mut not_rules = Vec::new();
    let mut unescaped = Vec::new();
    let mut wrapped = false;
    // Whether anything was taken off (a paste, not a file a program wrote), whether a
    // `*table` line came yet, and the last rule whose quote is still open.
    let mut pasted = false;
    let mut table_seen = false;
    let mut open_quote: Option<usize> = None;
    let mut cut_in_quote = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        // Web and chat text (`&quot;`, smart quotes, U+00A0) put back first.
        let owned = unescape::unescape(raw);
        if owned.is_some() {
            unescaped.push(i + 1);
            pasted = true;
        }
        let src: &str = owned.as_deref().unwrap_or(raw);
        if !src.trim().is_empty() {
            // A rule whose quote the next line does not close was cut inside it.
            if let Some(j) = open_quote.take() {
                if !quote_open(src) {
                    cut_in_quote.push(j);
                }
            }
        }
        // The rest of a rule wrapped with a trailing ` \` is rule text whatever it starts with.
        let l = if wrapped {
            Line::Rule(strip_gutters(src))
        } else {
            classify(src).map_err(|msg| ParseError { line: i + 1, msg })?
        };
        wrapped = matches!(l, Line::Rule(r) if r.ends_with(" \\"));
        let keep = |r: &str| -> Cow<'_, str> {
            match &owned {
                Some(_) => Cow::Owned(r.to_string()),
                None if r.len() == raw.len() => Cow::Borrowed(raw),
                None => {
                    Cow::Borrowed(&raw[r.as_ptr() as usize - raw.as_ptr() as usize..][..r.len()])
                }
            }
        };
        pasted |= match &l {
            Line::Rule(r) => r.len() != src.trim().len(),
            Line::Skip => !src.trim().is_empty() && !src.trim_start().starts_with('#'),
            _ => true,
        };
        lines.push(match l {
            // `grep -A` or a cut paste shows a table's end without its head: nothing to close.
            Line::Rule("COMMIT") if !table_seen => {
                pasted = true;
                Cow::Borrowed("")
            }
            Line::Rule(r) => {
                table_seen |= r.starts_with('*');
                if quote_open(r) {
                    open_quote = Some(i);
                }
                keep(r)
            }
            Line::Skip => {
                if src.trim_start().starts_with('#') {
                    keep(src)
                } else {
                    Cow::Borrowed("")
                }
            }
            Line::Prompt(cmd) => match prompt_table(cmd) {
                Some(t) => Cow::Owned(format!("{PROMPT_MARK}{t}")),
                None => Cow::Borrowed(""),
            },
            Line::Prose => {
                prose.push((i + 1, echo(src.trim(), 60)));
                Cow::Borrowed("")
            }
            Line::NotARule(r) => {
                not_rules.push((i + 1, echo(r, 60)));
                Cow::Borrowed("")
            }
        });
    }
    let mut notes = Vec::new();
    if !prose.is_empty() {
        let quoted: Vec<String> = prose
            .iter()
            .take(PROSE_QUOTED)
            .map(|(n, l)| format!("line {n} \"{l}\""))
            .collect();
        let more = prose.len().saturating_sub(PROSE_QUOTED);
        notes.push(format!(
            "ignored {} line(s) that are not rules: {}{}",
            prose.len(),
            quoted.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    if !not_rules.is_empty() {
        let quoted: Vec<String> = not_rules
            .iter()
            .take(PROSE_QUOTED)
            .map(|(n, l)| format!("line {n} \"{l}\""))
            .collect();
        let more = not_rules.len().saturating_sub(PROSE_QUOTED);
        notes.push(format!(
            "{} line(s) start like rules but are prose (a word where iptables-save puts an \
             option or a table name), not read: {}{}",
            not_rules.len(),
            quoted.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    if !unescaped.is_empty() {
        let shown: Vec<String> = unescaped.iter().take(3).map(|n| n.to_string()).collect();
        let more = unescaped.len().saturating_sub(3);
        notes.push(format!(
            "un-escaped {} line(s) as a web page or chat had changed them (HTML entities such \
             as &quot;, smart quotes, non-breaking spaces, en dashes for --): line(s) {}{}",
            unescaped.len(),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    // The last rule of the paste.
    cut_in_quote.extend(open_quote);
    notes.extend(truncated::drop_cut(&mut lines, &cut_in_quote, pasted));
    Ok(Prepared { lines, notes })
}

/// Whether `line` ends inside a double quote, read as the tokenizer reads it (a backslash
/// escapes the next character).
fn quote_open(line: &str) -> bool {
    if !line.contains('"') {
        return false;
    }
    let (mut open, mut escaped) = (false, false);
    for b in line.bytes() {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => open = !open,
            _ => {}
        }
    }
    open
}

/// A prompt line that names the table of the `-S` listing after it, as the parser sees it.
pub const PROMPT_MARK: &str = "#@table ";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(classify("-A X -j Y").unwrap(), Line::Rule("-A X -j Y"));
        assert_eq!(classify("> -A X").unwrap(), Line::Rule("-A X"));
        assert_eq!(
            classify(">> > :KUBE-X - [0:0]").unwrap(),
            Line::Rule(":KUBE-X - [0:0]")
        );
        assert_eq!(classify("```bash").unwrap(), Line::Skip);
        assert_eq!(
            classify("# Generated by iptables-save v1.8.7").unwrap(),
            Line::Skip
        );
        assert_eq!(
            classify("# iptables -t nat -S").unwrap(),
            Line::Prompt("iptables -t nat -S")
        );
        assert_eq!(
            classify("$ sudo iptables-save").unwrap(),
            Line::Prompt("sudo iptables-save")
        );
        assert_eq!(
            classify("[root@node ~]# iptables -S").unwrap(),
            Line::Prompt("iptables -S")
        );
        assert_eq!(
            classify("root@n1:~# iptables-save").unwrap(),
            Line::Prompt("iptables-save")
        );
        assert_eq!(classify("[0:0] -A X").unwrap(), Line::Rule("[0:0] -A X"));
        assert_eq!(classify("12:-A X -j Y").unwrap(), Line::Rule("-A X -j Y"));
        assert_eq!(classify("Here is my dump:").unwrap(), Line::Prose);
        assert_eq!(classify("- a bullet").unwrap(), Line::Prose);
        assert_eq!(classify("* a bullet").unwrap(), Line::Prose);
        assert!(classify("Chain KUBE-SERVICES (2 references)").is_err());
        assert!(classify("table ip nat {").is_err());
        assert_eq!(
            prompt_table("sudo iptables -S KUBE-FORWARD").as_deref(),
            Some("filter")
        );
        assert_eq!(
            prompt_table("iptables -t nat -S | grep KUBE").as_deref(),
            Some("nat")
        );
        assert_eq!(prompt_table("iptables-save -t nat"), None);
    }
}
