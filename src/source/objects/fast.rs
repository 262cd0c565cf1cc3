//! A quick decoder for the plain block YAML that big dumps are made of.
//!
//! libyaml (through serde_yaml_ng) reads a 17 MB dump at a few tens of MB/s, and most of a
//! `render` went there. This reads a strict subset of YAML by lines: block mappings and
//! sequences indented with spaces, single-line plain and quoted scalars without escapes,
//! `{}` and `[]`, comments. It hands the visitor exactly what serde_yaml_ng would for the
//! same text (same scalar resolution: null, bool, decimal integers, strings). Anything
//! outside the subset (anchors, tags, block or multi-line scalars, flow collections,
//! escapes, tabs, non-ASCII, unusual numbers) and every error at all is [`Bail`]: the
//! caller then decodes the piece with serde_yaml_ng, which gives the real result or the
//! real message. So this can only make a piece faster, never change its outcome.

use serde::de::{self, DeserializeOwned, DeserializeSeed, Visitor};
use serde::Deserialize;
use std::fmt;

/// "Not sure": decode this piece the slow way.
#[derive(Debug)]
pub(super) struct Bail;

impl fmt::Display for Bail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("outside the fast YAML subset")
    }
}

impl std::error::Error for Bail {}

impl de::Error for Bail {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Bail
    }
}

/// Decodes one document (or, with `split`, a one-item block sequence: a cut list item).
pub(super) fn decode<T: DeserializeOwned>(text: &str, split: bool) -> Result<T, Bail> {
    let evs = events(text)?;
    let mut de = De { evs: &evs, pos: 0 };
    let value = if split {
        <(T,)>::deserialize(&mut de).map(|(t,)| t)?
    } else {
        T::deserialize(&mut de)?
    };
    if de.pos != evs.len() {
        return Err(Bail);
    }
    Ok(value)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Ev<'a> {
    Map,
    Seq,
    End,
    Plain(&'a str),
    Quoted(&'a str),
}

struct Line<'a> {
    indent: usize,
    /// From the first non-space character to the end of the line.
    text: &'a str,
}

/// Longest implicit key libyaml takes (it refuses longer ones).
const MAX_KEY: usize = 1000;
/// Nesting past this is left to serde_yaml_ng.
const MAX_DEPTH: usize = 64;

fn events(text: &str) -> Result<Vec<Ev<'_>>, Bail> {
    // Printable ASCII and line feeds only: no tabs, CRs, control or non-ASCII characters
    // (line separators, BOMs) whose handling differs between YAML readers.
    if !text
        .bytes()
        .all(|b| b == b'\n' || (0x20..0x7f).contains(&b))
    {
        return Err(Bail);
    }
    let mut lines = Vec::with_capacity(text.len() / 24);
    for raw in text.split('\n') {
        let body = raw.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = raw.len() - body.len();
        if indent == 0 && (body.starts_with("---") || body.starts_with("...")) {
            // Only a bare leading `---` (the splitter's document start) is ours.
            let rest = &body[3..];
            let bare = body.starts_with("---")
                && (rest.trim_start_matches(' ').is_empty()
                    || (rest.starts_with(' ') && rest.trim_start_matches(' ').starts_with('#')));
            if bare && lines.is_empty() {
                continue;
            }
            return Err(Bail);
        }
        if indent == 0 && body.starts_with('%') {
            return Err(Bail);
        }
        lines.push(Line { indent, text: body });
    }
    let Some(first) = lines.first() else {
        return Err(Bail);
    };
    let (col, head) = (first.indent, first.text);
    let mut p = Parser {
        lines: &lines,
        i: 1,
        evs: Vec::with_capacity(lines.len() * 3),
        depth: 0,
    };
    if is_dash(head) {
        p.seq(col, head)?;
    } else {
        let (key, rest) = split_key(head).ok_or(Bail)?;
        p.map(col, key, rest)?;
    }
    if p.i != lines.len() {
        return Err(Bail);
    }
    Ok(p.evs)
}

fn is_dash(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

fn blank_or_comment(s: &str) -> bool {
    let t = s.trim_start_matches(' ');
    t.is_empty() || (t.len() < s.len() && t.starts_with('#'))
}

/// Characters that may not start a plain scalar here (YAML indicators, and `-`, `?`, `:`
/// which only some readers take as the start of a plain scalar).
fn bad_start(b: u8) -> bool {
    b"-?:,[]{}#&*!|>'\"%@`".contains(&b)
}

/// `key: rest` → (key, rest after the colon), for keys this reader takes; `None` for
/// anything else (not a mapping entry, or a key it does not read).
fn split_key(text: &str) -> Option<(Ev<'_>, &str)> {
    let b = text.as_bytes();
    if b[0] == b'"' || b[0] == b'\'' {
        let q = b[0];
        let end = 1 + text[1..].bytes().position(|c| c == q)?;
        let key = &text[1..end];
        if key.contains('\\') || b.get(end + 1) == Some(&q) || key.len() > MAX_KEY {
            return None;
        }
        let after = text[end + 1..].strip_prefix(':')?;
        if !(after.is_empty() || after.starts_with(' ')) {
            return None;
        }
        return Some((Ev::Quoted(key), after));
    }
    if bad_start(b[0]) {
        return None;
    }
    // One pass: the first `: ` (or final `:`) ends the key; a comment or a flow
    // indicator before it means this is not a key we read.
    let mut colon = None;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b':' if i + 1 == b.len() || b[i + 1] == b' ' => {
                colon = Some(i);
                break;
            }
            b'#' if i > 0 && b[i - 1] == b' ' => return None,
            b',' | b'[' | b']' | b'{' | b'}' => return None,
            _ => {}
        }
    }
    let colon = colon?;
    let key = text[..colon].trim_end_matches(' ');
    // libyaml's simple-key limit runs from the key's start to the `:`, spaces included.
    if colon > MAX_KEY {
        return None;
    }
    Some((Ev::Plain(key), &text[colon + 1..]))
}

/// A one-line value: `{}`, `[]`, a quoted scalar without escapes or a plain scalar,
/// optionally followed by a comment.
fn inline(s: &str) -> Result<[Option<Ev<'_>>; 2], Bail> {
    if let Some(rest) = s.strip_prefix("{}") {
        if rest.is_empty() || blank_or_comment(rest) {
            return Ok([Some(Ev::Map), Some(Ev::End)]);
        }
        return Err(Bail);
    }
    if let Some(rest) = s.strip_prefix("[]") {
        if rest.is_empty() || blank_or_comment(rest) {
            return Ok([Some(Ev::Seq), Some(Ev::End)]);
        }
        return Err(Bail);
    }
    let b = s.as_bytes();
    if b[0] == b'"' || b[0] == b'\'' {
        let q = b[0];
        let end = 1 + s[1..].bytes().position(|c| c == q).ok_or(Bail)?;
        let value = &s[1..end];
        let rest = &s[end + 1..];
        if value.contains('\\') || !(rest.is_empty() || blank_or_comment(rest)) {
            return Err(Bail);
        }
        return Ok([Some(Ev::Quoted(value)), None]);
    }
    // A leading `-` only for negative numbers and words, never an entry.
    if bad_start(b[0]) && !(b[0] == b'-' && b.len() > 1 && b[1].is_ascii_alphanumeric()) {
        return Err(Bail);
    }
    // One pass: a comment ends the value; `: ` or a final `:` (a mapping where a value
    // should be) and flow indicators are left to serde_yaml_ng.
    let mut end = b.len();
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'#' if i > 0 && b[i - 1] == b' ' => {
                end = i;
                break;
            }
            b':' if i + 1 == b.len() || b[i + 1] == b' ' => return Err(Bail),
            b',' | b'[' | b']' | b'{' | b'}' => return Err(Bail),
            _ => {}
        }
    }
    Ok([Some(Ev::Plain(s[..end].trim_end_matches(' '))), None])
}

struct Parser<'a, 'l> {
    lines: &'l [Line<'a>],
    /// The next line not read yet.
    i: usize,
    evs: Vec<Ev<'a>>,
    /// Open collections; deep nesting is left to serde_yaml_ng's recursion limit (the
    /// guard refuses it before any parse anyway).
    depth: usize,
}

impl<'a> Parser<'a, '_> {
    fn peek(&self) -> Option<(usize, &'a str)> {
        self.lines.get(self.i).map(|l| (l.indent, l.text))
    }

    fn push_inline(&mut self, s: &'a str) -> Result<(), Bail> {
        for ev in inline(s)?.into_iter().flatten() {
            self.evs.push(ev);
        }
        Ok(())
    }

    /// A node whose text starts at column `col` of a line already read; lines indented
    /// deeper than `owner` belong to it.
    fn node(&mut self, col: usize, text: &'a str, owner: usize) -> Result<(), Bail> {
        if is_dash(text) {
            return self.seq(col, text);
        }
        if let Some((key, rest)) = split_key(text) {
            return self.map(col, key, rest);
        }
        self.push_inline(text)?;
        // A deeper line would continue a plain scalar over lines.
        match self.peek() {
            Some((indent, _)) if indent > owner => Err(Bail),
            _ => Ok(()),
        }
    }

    /// The value after `key:` when nothing follows on the line.
    fn value_below(&mut self, col: usize) -> Result<(), Bail> {
        match self.peek() {
            Some((indent, text)) if indent > col => {
                self.i += 1;
                self.node(indent, text, col)
            }
            // A sequence may sit at its key's own column.
            Some((indent, text)) if indent == col && is_dash(text) => {
                self.i += 1;
                self.seq(col, text)
            }
            _ => {
                self.evs.push(Ev::Plain(""));
                Ok(())
            }
        }
    }

    fn open(&mut self, ev: Ev<'a>) -> Result<(), Bail> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Bail);
        }
        self.evs.push(ev);
        Ok(())
    }

    fn close(&mut self) {
        self.depth -= 1;
        self.evs.push(Ev::End);
    }

    fn seq(&mut self, col: usize, mut text: &'a str) -> Result<(), Bail> {
        self.open(Ev::Seq)?;
        loop {
            let after = &text[1..];
            let rest = after.trim_start_matches(' ');
            if rest.is_empty() || rest.starts_with('#') {
                match self.peek() {
                    Some((indent, t)) if indent > col => {
                        self.i += 1;
                        self.node(indent, t, col)?;
                    }
                    _ => self.evs.push(Ev::Plain("")),
                }
            } else {
                self.node(col + 1 + (after.len() - rest.len()), rest, col)?;
            }
            match self.peek() {
                Some((indent, t)) if indent == col && is_dash(t) => {
                    self.i += 1;
                    text = t;
                }
                Some((indent, _)) if indent > col => return Err(Bail),
                _ => break,
            }
        }
        self.close();
        Ok(())
    }

    fn map(&mut self, col: usize, mut key: Ev<'a>, mut rest: &'a str) -> Result<(), Bail> {
        self.open(Ev::Map)?;
        loop {
            self.evs.push(key);
            let value = rest.trim_start_matches(' ');
            if value.is_empty() || value.starts_with('#') {
                self.value_below(col)?;
            } else {
                self.push_inline(value)?;
                if matches!(self.peek(), Some((indent, _)) if indent > col) {
                    return Err(Bail);
                }
            }
            match self.peek() {
                Some((indent, t)) if indent == col => {
                    (key, rest) = split_key(t).ok_or(Bail)?;
                    self.i += 1;
                }
                Some((indent, _)) if indent > col => return Err(Bail),
                _ => break,
            }
        }
        self.close();
        Ok(())
    }
}

// --- serde side: the events, read as serde_yaml_ng reads libyaml's -------------------

struct De<'a, 'b> {
    evs: &'b [Ev<'a>],
    pos: usize,
}

fn is_null(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// A plain decimal integer (`0`, `-?[1-9][0-9]*`); other numeric forms are left to
/// serde_yaml_ng.
fn decimal(s: &str) -> Option<&str> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let ok = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && s != "-0";
    ok.then_some(s)
}

/// Whether serde_yaml_ng might read `s` as a number other than a plain decimal integer
/// (floats, `.inf`, hex, octal, binary, leading zeros): such scalars are left to it. IP
/// addresses, names and the like answer false.
fn maybe_number(s: &str) -> bool {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    s.starts_with(['+', '.'])
        || unsigned.starts_with('.')
        || unsigned.parse::<f64>().is_ok()
        || ["0x", "0o", "0b"].iter().any(|p| unsigned.starts_with(p))
        || (unsigned.len() > 1
            && unsigned.starts_with('0')
            && unsigned.bytes().all(|b| b.is_ascii_digit()))
}

impl<'a> De<'a, '_> {
    fn next(&mut self) -> Result<Ev<'a>, Bail> {
        let ev = *self.evs.get(self.pos).ok_or(Bail)?;
        self.pos += 1;
        Ok(ev)
    }

    fn peek(&self) -> Result<Ev<'a>, Bail> {
        self.evs.get(self.pos).copied().ok_or(Bail)
    }

    fn end(&mut self) -> Result<(), Bail> {
        match self.next()? {
            Ev::End => Ok(()),
            _ => Err(Bail),
        }
    }

    fn skip(&mut self) -> Result<(), Bail> {
        let mut depth = 0usize;
        loop {
            match self.next()? {
                Ev::Map | Ev::Seq => depth += 1,
                Ev::End => depth = depth.checked_sub(1).ok_or(Bail)?,
                Ev::Plain(_) | Ev::Quoted(_) => {}
            }
            if depth == 0 {
                return Ok(());
            }
        }
    }

    fn seq_body<V: Visitor<'a>>(&mut self, v: V) -> Result<V::Value, Bail> {
        let value = v.visit_seq(Access { de: self })?;
        self.end()?;
        Ok(value)
    }

    fn map_body<V: Visitor<'a>>(&mut self, v: V) -> Result<V::Value, Bail> {
        let value = v.visit_map(Access { de: self })?;
        self.end()?;
        Ok(value)
    }
}

struct Access<'r, 'a, 'b> {
    de: &'r mut De<'a, 'b>,
}

impl<'de> de::SeqAccess<'de> for Access<'_, 'de, '_> {
    type Error = Bail;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Bail> {
        if self.de.peek()? == Ev::End {
            return Ok(None);
        }
        seed.deserialize(&mut *self.de).map(Some)
    }
}

impl<'de> de::MapAccess<'de> for Access<'_, 'de, '_> {
    type Error = Bail;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Bail> {
        if self.de.peek()? == Ev::End {
            return Ok(None);
        }
        seed.deserialize(&mut *self.de).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Bail> {
        seed.deserialize(&mut *self.de)
    }
}

/// The empty sequence or mapping an empty plain scalar stands for.
struct Empty;

impl<'de> de::SeqAccess<'de> for Empty {
    type Error = Bail;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        _: T,
    ) -> Result<Option<T::Value>, Bail> {
        Ok(None)
    }
}

impl<'de> de::MapAccess<'de> for Empty {
    type Error = Bail;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, _: K) -> Result<Option<K::Value>, Bail> {
        Ok(None)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, _: V) -> Result<V::Value, Bail> {
        Err(Bail)
    }
}

impl<'de> de::Deserializer<'de> for &mut De<'de, '_> {
    type Error = Bail;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bail> {
        match self.next()? {
            Ev::Map => self.map_body(v),
            Ev::Seq => self.seq_body(v),
            Ev::Quoted(s) => v.visit_borrowed_str(s),
            Ev::Plain(s) if is_null(s) => v.visit_unit(),
            Ev::Plain(s) => {
                if let Some(b) = parse_bool(s) {
                    return v.visit_bool(b);
                }
                if let Some(n) = decimal(s) {
                    return match n.parse::<u64>() {
                        Ok(u) => v.visit_u64(u),
                        Err(_) => v.visit_i64(n.parse::<i64>().map_err(|_| Bail)?),
                    };
                }
                if maybe_number(s) {
                    return Err(Bail);
                }
                v.visit_borrowed_str(s)
            }
            Ev::End => Err(Bail),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bail> {
        match self.next()? {
            Ev::Plain(s) => v.visit_bool(parse_bool(s).ok_or(Bail)?),
            _ => Err(Bail),
        }
    }

    fn deserialize_i8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bail> {
        self.deserialize_i64(v)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bail> {
        self.deserialize_i64(v)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bail> {
        self.deserialize_i64(v)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bail> {
        match self.next()? {
            Ev::Plain(s) => {
                let n = decimal(s).ok_or(Bail)?;
                v.visit_i64(n.parse().map_err(|_| Bail)?)
            }
            _ => Err(Bail),
        }
    }
    fn deserialize_u8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bail> {
        self.deserialize_u64(v)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bail> {
        self.deserialize_u64(v)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bail> {
        self.deserialize_u64(v)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bail> {
        match self.next()? {
            Ev::Plain(s) if !s.starts_with('-') => {
                let n = decimal(s).ok_or(Bail)?;
                v.visit_u64(n.parse().map_err(|_| Bail)?)
            }
            _ => Err(Bail),
        }
    }
    fn deserialize_f32<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Bail> {
        Err(Bail)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Bail> {
        Err(Bail)
    }
    fn deserialize_char<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Bail> {
        Err(Bail)
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bail> {
        match self.next()? {
            Ev::Plain(s) | Ev::Quoted(s) => v.visit_borrowed_str(s),
            _ => Err(Bail),
        }
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bail> {
        self.deserialize_str(v)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Bail> {
        Err(Bail)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Bail> {
        Err(Bail)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bail> {
        match self.peek()? {
            Ev::Plain(s) if is_null(s) => {
                self.pos += 1;
                v.visit_none()
            }
            Ev::End => Err(Bail),
            _ => v.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bail> {
        match self.next()? {
            Ev::Plain(s) if is_null(s) => v.visit_unit(),
            _ => Err(Bail),
        }
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Bail> {
        self.deserialize_unit(v)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Bail> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bail> {
        match self.next()? {
            Ev::Seq => self.seq_body(v),
            Ev::Plain("") => v.visit_seq(Empty),
            _ => Err(Bail),
        }
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, Bail> {
        self.deserialize_seq(v)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        v: V,
    ) -> Result<V::Value, Bail> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bail> {
        match self.next()? {
            Ev::Map => self.map_body(v),
            Ev::Plain("") => v.visit_map(Empty),
            _ => Err(Bail),
        }
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Bail> {
        self.deserialize_map(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Bail> {
        Err(Bail)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bail> {
        self.deserialize_str(v)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bail> {
        self.skip()?;
        v.visit_unit()
    }
}
