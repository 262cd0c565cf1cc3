//! Splitting a rule line into words the way iptables-restore does.

use std::borrow::Cow;

/// A word of a rule line; `quoted` if any part of it was inside quotes. Borrowed from
/// the line unless quotes or backslashes had to be removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token<'a> {
    pub text: Cow<'a, str>,
    pub quoted: bool,
}

/// Splits a line like iptables-restore does: whitespace separates words, double quotes
/// group, a backslash escapes the next character (`\"` inside a quoted comment).
pub fn tokenize(line: &str) -> Result<Vec<Token<'_>>, String> {
    let mut out = Vec::new();
    tokenize_into(line, &mut out)?;
    Ok(out)
}

/// [`tokenize`] into `out` (cleared first), so one buffer serves many lines.
pub fn tokenize_into<'a>(line: &'a str, out: &mut Vec<Token<'a>>) -> Result<(), String> {
    out.clear();
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        // Fast path: a plain word up to the next ASCII whitespace.
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'"' && b[i] != b'\\' {
            i += 1;
        }
        if i == b.len() || b[i].is_ascii_whitespace() {
            out.push(Token {
                text: Cow::Borrowed(&line[start..i]),
                quoted: false,
            });
            continue;
        }
        let (tok, next) = slow_word(line, start)?;
        out.push(tok);
        i = next;
    }
    Ok(())
}

/// A word with quotes or backslashes, from byte `start`; returns it and where it ended.
fn slow_word(line: &str, start: usize) -> Result<(Token<'static>, usize), String> {
    let mut cur = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut chars = line[start..].char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, n)) => cur.push(n),
                None => cur.push('\\'),
            },
            '"' => {
                in_quotes = !in_quotes;
                quoted = true;
            }
            c if c.is_ascii_whitespace() && !in_quotes => {
                let text = Cow::Owned(cur);
                return Ok((Token { text, quoted }, start + at));
            }
            c => cur.push(c),
        }
    }
    if in_quotes {
        return Err("unterminated quote".into());
    }
    let text = Cow::Owned(cur);
    Ok((Token { text, quoted }, line.len()))
}
