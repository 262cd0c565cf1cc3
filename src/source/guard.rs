//! Cheap bounds checked before any YAML parser sees an input.
//!
//! libyaml (under serde_yaml_ng) spends time proportional to the flow depth
//! on every token, so `[[[[...]]]]` costs quadratic time: an 80 KB file took
//! 9 s, a 300 KB one 16 minutes. One linear pass over the bytes, following
//! libyaml's tokenization closely enough (quoted, plain and block scalars,
//! comments, its block indentation stack), finds the deepest nesting of flow
//! collections plus block collections; anything deeper than [`MAX_DEPTH`] is
//! refused before parsing. Where the scan cannot tell what libyaml will do it
//! assumes the deeper reading, so it never under-counts on inputs libyaml
//! accepts; scalar contents (annotations, block scalars) never count.

use std::io::{self, Read};

/// Real `kubectl get -o yaml|json` dumps nest about 15 deep (managedFields
/// included); serde_yaml_ng itself stops at 128.
pub const MAX_DEPTH: usize = 64;

/// Objects files: a 10,000-Service cluster dumps to 17 MB, so this leaves
/// 15× headroom while bounding memory (decoding takes ~15× the file size).
pub const MAX_OBJECTS_BYTES: u64 = 256 << 20;

/// A KubeProxyConfiguration is a few KB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Where the input nests too deeply (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("nesting deeper than {limit} levels of collections; refused before parsing (YAML parsing time grows with the square of the depth)")]
pub struct TooDeep {
    pub line: usize,
    pub column: usize,
    pub limit: usize,
}

/// Reads at most `cap` bytes; a longer input is an `InvalidData` error, so
/// a huge file is refused without being held in memory.
pub fn read_capped(reader: impl Read, cap: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    reader.take(cap + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than the {} MiB limit", cap >> 20),
        ));
    }
    Ok(buf)
}

/// What a line inherits from the one before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Carry {
    /// Tokens start at the line's first non-space byte.
    Fresh,
    /// Inside a quoted scalar (the quote byte).
    Quoted(u8),
    /// Inside a plain scalar; in block context it continues on lines indented
    /// more than `parent` (libyaml's current block indent, -1 at the root).
    Plain { parent: isize },
    /// Block scalar (`|`, `>`): content lines are indented at least the
    /// content indent, fixed by the header or by the first non-blank line.
    Block {
        explicit: Option<usize>,
        min: usize,
        detected: Option<usize>,
        max_blank: usize,
    },
}

struct Scan {
    limit: usize,
    flow: usize,
    /// libyaml's block indentation stack (columns of block collections).
    indents: Vec<usize>,
    /// Column of the node that would become a simple key at a `:`.
    key_col: Option<usize>,
    line: usize,
}

/// Fails if any point of `text` nests deeper than `limit` collections.
/// Linear in the length of `text`.
pub fn check_depth(text: &str, limit: usize) -> Result<(), TooDeep> {
    let mut s = Scan {
        limit,
        flow: 0,
        indents: Vec::new(),
        key_col: None,
        line: 0,
    };
    let mut carry = Carry::Fresh;
    // libyaml skips a leading byte order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (n, raw) in text.as_bytes().split(|&b| b == b'\n').enumerate() {
        s.line = n + 1;
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        carry = s.line_of(line, carry)?;
    }
    Ok(())
}

fn is_blank(b: Option<&u8>) -> bool {
    matches!(b, None | Some(b' ' | b'\t' | b'\r'))
}

fn is_flow_indicator(b: u8) -> bool {
    matches!(b, b',' | b'[' | b']' | b'{' | b'}')
}

impl Scan {
    fn too_deep(&self, col: usize) -> TooDeep {
        TooDeep {
            line: self.line,
            column: col + 1,
            limit: self.limit,
        }
    }

    fn check(&self, col: usize) -> Result<(), TooDeep> {
        if self.flow + self.indents.len() > self.limit {
            return Err(self.too_deep(col));
        }
        Ok(())
    }

    /// libyaml's roll_indent: a block collection starting at `col`.
    fn roll(&mut self, col: usize) -> Result<(), TooDeep> {
        if self.flow == 0 && self.indents.last().is_none_or(|&top| top < col) {
            self.indents.push(col);
            self.check(col)?;
        }
        Ok(())
    }

    fn parent(&self) -> isize {
        self.indents.last().map_or(-1, |&c| c as isize)
    }

    fn line_of(&mut self, line: &[u8], carry: Carry) -> Result<Carry, TooDeep> {
        let indent = line.iter().take_while(|&&b| b == b' ').count();
        let rest = &line[indent..];
        let blank = rest.iter().all(|&b| b == b' ' || b == b'\t');
        if let Carry::Block {
            explicit,
            min,
            detected,
            max_blank,
        } = carry
        {
            if blank {
                return Ok(Carry::Block {
                    explicit,
                    min,
                    detected,
                    max_blank: max_blank.max(indent),
                });
            }
            let content = explicit
                .or(detected)
                .unwrap_or(max_blank.max(indent).max(min));
            if indent >= content {
                return Ok(Carry::Block {
                    explicit,
                    min,
                    detected: Some(content),
                    max_blank,
                });
            }
            // Less indented: the scalar ended; this line is YAML again.
        }
        // A document marker ends everything; the objects loader parses each
        // document on its own, and libyaml stops at one inside a collection.
        if indent == 0
            && (line.starts_with(b"---") || line.starts_with(b"..."))
            && is_blank(line.get(3))
        {
            self.flow = 0;
            self.indents.clear();
            self.key_col = None;
            if line[0] == b'-' {
                return self.tokens(line, 3);
            }
            return Ok(Carry::Fresh);
        }
        match carry {
            Carry::Quoted(q) => match close_quote(line, 0, q) {
                Some(end) => {
                    self.key_col = None;
                    self.tokens(line, end)
                }
                None => Ok(carry),
            },
            Carry::Plain { parent } => {
                if blank {
                    return Ok(carry);
                }
                if rest[0] == b'#' {
                    return Ok(Carry::Fresh); // a comment ends the scalar
                }
                if self.flow > 0 || indent as isize > parent {
                    return self.plain(line, indent, parent);
                }
                self.fresh(line, indent)
            }
            Carry::Fresh | Carry::Block { .. } => {
                if blank || rest[0] == b'#' || (indent == 0 && rest[0] == b'%' && self.flow == 0) {
                    return Ok(Carry::Fresh);
                }
                self.fresh(line, indent)
            }
        }
    }

    fn fresh(&mut self, line: &[u8], indent: usize) -> Result<Carry, TooDeep> {
        self.key_col = None;
        self.tokens(line, indent)
    }

    /// Scans tokens from `p` to the end of the line.
    fn tokens(&mut self, line: &[u8], mut p: usize) -> Result<Carry, TooDeep> {
        loop {
            while p < line.len() && matches!(line[p], b' ' | b'\t') {
                p += 1;
            }
            let Some(&c) = line.get(p) else {
                return Ok(Carry::Fresh);
            };
            let col = p;
            if self.flow == 0 {
                // libyaml's unroll_indent, before every block-context token.
                while self.indents.last().is_some_and(|&top| top > col) {
                    self.indents.pop();
                }
            }
            let next_blank = is_blank(line.get(p + 1));
            match c {
                b'#' => return Ok(Carry::Fresh),
                b'[' | b'{' => {
                    if self.flow == 0 && self.key_col.is_none() {
                        self.key_col = Some(col);
                    }
                    self.flow += 1;
                    self.check(col)?;
                    p += 1;
                }
                b']' | b'}' => {
                    self.flow = self.flow.saturating_sub(1);
                    p += 1;
                }
                b',' => p += 1,
                b'-' | b'?' if next_blank => {
                    self.roll(col)?;
                    self.key_col = None;
                    p += 1;
                }
                b':' if next_blank || self.flow > 0 => {
                    if let Some(k) = self.key_col.take() {
                        self.roll(k)?;
                    }
                    p += 1;
                }
                b'"' | b'\'' => {
                    if self.flow == 0 && self.key_col.is_none() {
                        self.key_col = Some(col);
                    }
                    match close_quote(line, p + 1, c) {
                        Some(end) => p = end,
                        None => return Ok(Carry::Quoted(c)),
                    }
                }
                b'|' | b'>' if self.flow == 0 => return Ok(self.block_header(&line[p + 1..])),
                b'&' | b'*' | b'!' => {
                    if self.flow == 0 && self.key_col.is_none() {
                        self.key_col = Some(col);
                    }
                    p += 1;
                    if c == b'!' && line.get(p) == Some(&b'<') {
                        while p < line.len() && line[p] != b'>' {
                            p += 1;
                        }
                    } else {
                        while p < line.len()
                            && !matches!(line[p], b' ' | b'\t')
                            && !is_flow_indicator(line[p])
                        {
                            p += 1;
                        }
                    }
                }
                _ => {
                    if self.flow == 0 && self.key_col.is_none() {
                        self.key_col = Some(col);
                    }
                    let parent = self.parent();
                    match self.plain_end(line, p) {
                        Some(end) => p = end,
                        None => return Ok(Carry::Plain { parent }),
                    }
                }
            }
        }
    }

    /// Continues a plain scalar at `p` on a continuation line.
    fn plain(&mut self, line: &[u8], p: usize, parent: isize) -> Result<Carry, TooDeep> {
        match self.plain_end(line, p) {
            Some(end) => {
                // A multi-line scalar is never a simple key.
                self.key_col = None;
                self.tokens(line, end)
            }
            None => Ok(Carry::Plain { parent }),
        }
    }

    /// Where a plain scalar starting at `p` ends on this line, or `None` if
    /// it runs to the end of the line (and may continue on the next).
    fn plain_end(&self, line: &[u8], mut p: usize) -> Option<usize> {
        while p < line.len() {
            let c = line[p];
            match c {
                b':' if is_blank(line.get(p + 1))
                    || (self.flow > 0
                        && line.get(p + 1).is_some_and(|&n| is_flow_indicator(n))) =>
                {
                    return Some(p)
                }
                b' ' | b'\t' if line.get(p + 1) == Some(&b'#') => return Some(line.len()),
                _ if self.flow > 0 && is_flow_indicator(c) => return Some(p),
                _ => p += 1,
            }
        }
        None
    }

    /// After `|` or `>`: the indentation rule for the content lines.
    fn block_header(&self, header: &[u8]) -> Carry {
        let base = self.indents.last().copied();
        let digit = header
            .iter()
            .take_while(|b| b.is_ascii_digit() || **b == b'+' || **b == b'-')
            .find(|b| b.is_ascii_digit())
            .map(|b| usize::from(b - b'0'));
        Carry::Block {
            explicit: digit.filter(|&d| d > 0).map(|d| base.unwrap_or(0) + d),
            min: base.map_or(1, |b| b + 1),
            detected: None,
            max_blank: 0,
        }
    }
}

/// The index just past the closing quote, if it is on this line.
fn close_quote(line: &[u8], mut p: usize, q: u8) -> Option<usize> {
    while p < line.len() {
        let c = line[p];
        if q == b'"' && c == b'\\' {
            p += 2;
            continue;
        }
        if c == q {
            if q == b'\'' && line.get(p + 1) == Some(&b'\'') {
                p += 2;
                continue;
            }
            return Some(p + 1);
        }
        p += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_error(text: &str) -> Option<(usize, usize)> {
        check_depth(text, 8).err().map(|e| (e.line, e.column))
    }

    #[test]
    fn flow_and_block_nesting_are_counted() {
        assert_eq!(depth_error("[[[[[[[[]]]]]]]]\n"), None);
        assert_eq!(depth_error("[[[[[[[[[]]]]]]]]]\n"), Some((1, 9)));
        assert_eq!(depth_error("- - - - - - - - x\n"), None);
        assert_eq!(depth_error("- - - - - - - - - x\n"), Some((1, 17)));
        let mut block = String::new();
        for i in 0..9 {
            block.push_str(&format!("{}k{i}:\n", "  ".repeat(i)));
        }
        assert_eq!(depth_error(&block), Some((9, 17)));
        // Block and flow add up.
        assert_eq!(
            depth_error("a:\n  b:\n    c: [[[[[[]]]]]]\n"),
            Some((3, 13))
        );
        // JSON is YAML flow style.
        assert_eq!(
            depth_error(r#"{"a":{"b":[{"c":[[[[[1]]]]]}]}}"#),
            Some((1, 21))
        );
    }

    #[test]
    fn scalars_never_count() {
        let text = r#"a: "[[[[[[[[[[[[ \" [[[["
b: '[[[[[[[[[[['' [[[[[['
c: x [[[[[[[[[[[[[[[[[ y
d: |
  [[[[[[[[[[[[[[[[[[[[[
    [[[[[[[[[[[[[[[
e: >-
  {{{{{{{{{{{{{{{{{{{
f: "multi [[[[[[[[[[
  line [[[[[[[[[[[[[[["
g: plain
  continued [[[[[[[[[[[[[[[[[[[
h: [a, "]]]]]]", b, 'x]]]]]]]]]']
i: x # [[[[[[[[[[[[[[[[[[[
"#;
        assert_eq!(depth_error(text), None);
        // After the block scalar, structure counts again.
        assert_eq!(
            depth_error("d: |\n  [[[[\nx: [[[[[[[[[]]]]]]]]]\n"),
            Some((3, 11))
        );
    }

    #[test]
    fn quotes_hidden_inside_plain_scalars_do_not_hide_brackets() {
        // libyaml reads `a "` as a plain scalar, then real flow openers.
        assert_eq!(
            depth_error("[a \"[[[[[[[[[[]]]]]]]]]]]\" ]\n"),
            Some((1, 12))
        );
        // A quote inside a block plain scalar is literal; the next key's
        // value still counts.
        assert_eq!(
            depth_error("a: it's\nb: [[[[[[[[[]]]]]]]]]\n"),
            Some((2, 11))
        );
        // A line less indented than the scalar's parent is not a
        // continuation, even if it starts with a quote.
        assert_eq!(
            depth_error("k:\n  a: x\n  \"b\": [[[[[[[[]]]]]]]]\n"),
            Some((3, 14))
        );
    }

    #[test]
    fn documents_reset_the_count() {
        assert_eq!(depth_error("[[[[[[[[\n---\n[[[[[[[[]]]]]]]]\n"), None);
        assert_eq!(depth_error("a: 1\n--- [[[[[[[[[]]]]]]]]]\n"), Some((2, 13)));
    }

    #[test]
    fn json_dumps_are_yaml_flow() {
        let text = r#"{"items":[{"metadata":{"annotations":{"x":"[[[[[[[[[[\"[["}}}]}"#;
        assert_eq!(depth_error(text), None);
    }

    #[test]
    fn read_capped_refuses_long_inputs() {
        assert_eq!(read_capped(&b"12345"[..], 5).unwrap(), b"12345");
        let e = read_capped(&b"123456"[..], 5).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
