//! Dump forms around the rules: what people paste into bug reports and chats (markdown
//! fences, shell prompts, `> ` quote markers, prose, `grep -n` prefixes) is stripped
//! line by line; forms the audit cannot read (`iptables -L` listings, `nft list ruleset`)
//! are refused at their first line with what to give instead.

use super::parse::{echo, ParseError};
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

/// Words that start a command after a prompt (`#` alone also starts save comments).
const COMMANDS: &[&str] = &[
    "sudo",
    "iptables",
    "ip6tables",
    "nft",
    "kubectl",
    "cat",
    "grep",
    "egrep",
    "ssh",
    "docker",
    "crictl",
    "less",
    "head",
    "tail",
    "sort",
    "kube-proxy",
    "kube-proxy-rs",
];

fn is_command(rest: &str) -> bool {
    let w = rest.split_whitespace().next().unwrap_or("");
    COMMANDS.contains(&w) || w.starts_with("iptables") || w.starts_with("ip6tables")
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
    }
    grep_file_prefix(line).unwrap_or(line)
}

/// The rule after a `grep` file-name prefix (`FILE:` or `FILE:N:`) in the first word.
fn grep_file_prefix(line: &str) -> Option<&str> {
    let word_end = line.find(char::is_whitespace).unwrap_or(line.len());
    let word = &line[..word_end];
    for (p, _) in word.match_indices(':') {
        let rest = &line[p + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let rest = match rest[digits..].strip_prefix(':') {
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
            let position = first.contains('I') && third.bytes().all(|b| b.is_ascii_digit());
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

/// Prompt characters that end a shell prompt word (bash, zsh, sh, PowerShell, cmd).
fn prompt_end(w: &str) -> bool {
    w.ends_with(['#', '$', '%', '>'])
}

/// The command after a shell prompt: `root@node:~# cmd`, `bash-5.1$ cmd`, `sh-4.2# cmd`,
/// zsh's `user@host ~ % cmd`, PowerShell's `PS C:\Users\me> cmd`, `C:\> cmd`.
fn prompt_command(line: &str) -> Option<&str> {
    // The prompt is in the first few words: look no further (a rule line can be 1 MB).
    let mut words = Vec::with_capacity(4);
    let mut at = 0;
    for _ in 0..4 {
        let r = &line[at..];
        let start = at + (r.len() - r.trim_start().len());
        if start >= line.len() {
            break;
        }
        let end = line[start..]
            .find(char::is_whitespace)
            .map_or(line.len(), |e| start + e);
        words.push((start, end));
        at = end;
    }
    let word = |i: usize| &line[words[i].0..words[i].1];
    let after = |i: usize| line[words[i].1..].trim_start();
    words.first()?;
    let first = word(0);
    // PowerShell: `PS <path>> cmd` (the path may hold spaces).
    if first == "PS" {
        if let Some(p) = line.find("> ") {
            let path = &line[3.min(p)..p];
            if path.contains([':', '\\', '/', '~']) {
                return Some(line[p + 2..].trim_start());
            }
        }
    }
    if words.len() < 2 {
        return None;
    }
    // One word ending the prompt: `root@n:~#`, `bash-5.1$`, `host%`, `C:\>`.
    if first.len() > 1 && prompt_end(first) && (first.contains('@') || is_command(after(0))) {
        return Some(after(0));
    }
    // `user@host ~ % cmd`, `user@host ~ $ cmd`, `host ~ # cmd`: a lone prompt character.
    for i in 1..words.len() {
        let w = word(i);
        if w.len() == 1 && prompt_end(w) && (first.contains('@') || is_command(after(i))) {
            return Some(after(i));
        }
    }
    None
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
    for (i, raw) in text.lines().enumerate() {
        // Web and chat text (`&quot;`, smart quotes, U+00A0) put back first.
        let owned = unescape::unescape(raw);
        if owned.is_some() {
            unescaped.push(i + 1);
        }
        let src: &str = owned.as_deref().unwrap_or(raw);
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
        lines.push(match l {
            Line::Rule(r) => keep(r),
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
    notes.extend(truncated::drop_cut(&mut lines));
    Ok(Prepared { lines, notes })
}

/// A prompt line that names the table of the `-S` listing after it, as the parser sees it.
pub const PROMPT_MARK: &str = "#@table ";

/// The table an `iptables [-t T] -S` command lists (filter when `-t` is not given).
fn prompt_table(cmd: &str) -> Option<String> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let at = words.iter().position(|w| {
        *w == "iptables"
            || *w == "ip6tables"
            || w.starts_with("iptables-") && !w.contains("save")
            || w.starts_with("ip6tables-") && !w.contains("save")
    })?;
    let args = &words[at + 1..];
    let args = match args.iter().position(|w| *w == "|") {
        Some(p) => &args[..p],
        None => args,
    };
    if !args.iter().any(|w| *w == "-S" || *w == "--list-rules") {
        return None;
    }
    let table = args
        .iter()
        .position(|w| *w == "-t" || *w == "--table")
        .and_then(|p| args.get(p + 1))
        .copied()
        .unwrap_or("filter");
    Some(table.to_string())
}

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
