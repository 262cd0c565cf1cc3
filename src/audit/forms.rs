//! Dump forms around the rules: what people paste into bug reports and chats (markdown
//! fences, shell prompts, `> ` quote markers, prose, `grep -n` prefixes) is stripped
//! line by line; forms the audit cannot read (`iptables -L` listings, `nft list ruleset`)
//! are refused at their first line with what to give instead.

use super::parse::{echo, ParseError};
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

/// Classifies one line; `Err` names a form that is refused.
pub fn classify(raw: &str) -> Result<Line<'_>, String> {
    let mut line = raw.trim();
    // Fast path: what iptables-save and restore input are made of.
    if line.is_empty() {
        return Ok(Line::Skip);
    }
    if let Some(r) = rule_form(line) {
        return Ok(Line::Rule(r));
    }
    // Email / markdown quote markers, nested (`> > `).
    if line.starts_with('>') {
        while let Some(r) = line.strip_prefix('>') {
            line = r.trim();
        }
        return classify(line);
    }
    if line.starts_with("```") || line.starts_with("~~~") {
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
    if let Some(r) = line.strip_prefix("$ ") {
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
    // `root@node:~# cmd`, `bash-5.1$ cmd`.
    if let Some((w, rest)) = line.split_once(char::is_whitespace) {
        let prompt_end = w.len() > 1 && (w.ends_with('#') || w.ends_with('$'));
        if prompt_end && (w.contains('@') || is_command(rest)) {
            return Ok(Line::Prompt(rest.trim_start()));
        }
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
    // `grep -n` output: `123:-A KUBE-SERVICES ...`. One prefix, then only the rule
    // forms: no recursion, so `1:1:1:...` costs one pass.
    if let Some((n, r)) = line.split_once(':') {
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            if let Some(r) = rule_form(r.trim()) {
                return Ok(Line::Rule(r));
            }
        }
    }
    Ok(Line::Prose)
}

/// `line` if it is one of the forms iptables-save and restore input are made of.
fn rule_form(line: &str) -> Option<&str> {
    match line.as_bytes().first() {
        Some(b'*' | b':' | b'-')
            if !line.starts_with("- ") && !line.starts_with("* ") && line != "-" =>
        {
            Some(line)
        }
        _ if line == "COMMIT" => Some(line),
        _ => None,
    }
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
    let mut wrapped = false;
    for (i, raw) in text.lines().enumerate() {
        // The rest of a rule wrapped with a trailing ` \` is rule text whatever it starts with.
        let l = if wrapped {
            let mut r = raw.trim();
            while let Some(x) = r.strip_prefix('>') {
                r = x.trim();
            }
            Line::Rule(r)
        } else {
            classify(raw).map_err(|msg| ParseError { line: i + 1, msg })?
        };
        wrapped = matches!(l, Line::Rule(r) if r.ends_with(" \\"));
        lines.push(match l {
            Line::Rule(r) if r.len() == raw.len() => Cow::Borrowed(raw),
            Line::Rule(r) => Cow::Borrowed(r),
            Line::Skip => Cow::Borrowed(if raw.trim_start().starts_with('#') {
                raw
            } else {
                ""
            }),
            Line::Prompt(cmd) => match prompt_table(cmd) {
                Some(t) => Cow::Owned(format!("{PROMPT_MARK}{t}")),
                None => Cow::Borrowed(""),
            },
            Line::Prose => {
                prose.push((i + 1, raw.trim()));
                Cow::Borrowed("")
            }
        });
    }
    let mut notes = Vec::new();
    if !prose.is_empty() {
        let quoted: Vec<String> = prose
            .iter()
            .take(PROSE_QUOTED)
            .map(|(n, l)| format!("line {n} \"{}\"", echo(l, 60)))
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
