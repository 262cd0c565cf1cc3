//! Text that went through a web page or a chat: HTML entities (`&quot;`, `&amp;`, `&#39;`),
//! smart quotes, non-breaking spaces and en dashes for `--` are put back as iptables-save
//! wrote them. One pass over the line; entities are decoded once (`&amp;quot;` is `&quot;`).
//! Text inside ASCII double quotes is left alone: there the quotes came through intact, so
//! what is between them is what iptables-save wrote (a genuine comment `"Tom&amp;Jerry"`).

/// The line as iptables-save wrote it, or `None` when there is nothing to undo.
pub fn unescape(line: &str) -> Option<String> {
    if line.is_ascii() && !line.contains('&') {
        return None;
    }
    let mut out = String::with_capacity(line.len());
    let mut changed = false;
    let mut rest = line;
    // Start of a word: where an en/em dash stands for `--` (`–dport` from a blog's typography).
    let mut word_start = true;
    let mut quoted = false;
    let mut escaped = false;
    while let Some(c) = rest.chars().next() {
        let mut step = c.len_utf8();
        if c == '"' && !escaped {
            quoted = !quoted;
        }
        if quoted || c == '"' {
            escaped = c == '\\' && !escaped;
            out.push(c);
            word_start = false;
            rest = &rest[step..];
            continue;
        }
        let mut push = |s: &str, out: &mut String| {
            out.push_str(s);
            changed = true;
        };
        match c {
            '&' => match entity(rest) {
                Some((len, text)) => {
                    step = len;
                    push(text, &mut out);
                }
                None => out.push('&'),
            },
            '\u{201c}' | '\u{201d}' | '\u{201e}' | '\u{2033}' => push("\"", &mut out),
            '\u{2018}' | '\u{2019}' | '\u{201a}' | '\u{2032}' => push("'", &mut out),
            '\u{a0}' | '\u{202f}' | '\u{2007}' | '\u{2009}' => push(" ", &mut out),
            '\u{2013}' | '\u{2014}' if word_start => push("--", &mut out),
            c => out.push(c),
        }
        word_start = out.ends_with(' ') || out.ends_with('\t');
        rest = &rest[step..];
    }
    changed.then_some(out)
}

/// The entity at the start of `s` (`&quot;`, `&#39;`, `&#x27;`): its length and text.
fn entity(s: &str) -> Option<(usize, &'static str)> {
    const NAMED: &[(&str, &str)] = &[
        ("&quot;", "\""),
        ("&amp;", "&"),
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&apos;", "'"),
        ("&nbsp;", " "),
        ("&#39;", "'"),
        ("&#34;", "\""),
        ("&#x27;", "'"),
        ("&#x22;", "\""),
        ("&#47;", "/"),
        ("&#x2F;", "/"),
        ("&#x2f;", "/"),
        ("&#32;", " "),
        ("&#160;", " "),
    ];
    NAMED
        .iter()
        .find(|(e, _)| s.starts_with(e))
        .map(|(e, t)| (e.len(), *t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_text_is_put_back() {
        assert_eq!(unescape("-A X -j Y"), None);
        assert_eq!(unescape("a && b"), None);
        assert_eq!(
            unescape("-m comment --comment &quot;a/b:http&quot; &amp;&amp;quot;").unwrap(),
            "-m comment --comment \"a/b:http\" &&quot;"
        );
        assert_eq!(
            unescape("--comment \u{201c}x\u{201d}\u{a0}-j\u{a0}Y").unwrap(),
            "--comment \"x\" -j Y"
        );
        assert_eq!(
            unescape("-p tcp \u{2013}dport 80").unwrap(),
            "-p tcp --dport 80"
        );
        assert_eq!(unescape("&gt; -A X").unwrap(), "> -A X");
        assert_eq!(unescape("&#39;&#x27;").unwrap(), "''");
        // Inside intact ASCII quotes the text is a genuine comment's, escapes included.
        let genuine =
            "-A INPUT -m comment --comment \"Tom&amp;Jerry \u{2013}ssh \\\"&quot;\" -j ACCEPT";
        assert_eq!(unescape(genuine), None);
        assert_eq!(
            unescape("-A X -m comment --comment \"a&amp;b\"\u{a0}-j Y &amp;").unwrap(),
            "-A X -m comment --comment \"a&amp;b\" -j Y &"
        );
    }
}
