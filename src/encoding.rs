//! A user's file (dump or objects) to text. Besides UTF-8, what Windows tools write when
//! output is redirected to a file: a UTF-8 byte-order mark (PowerShell 7, Notepad) or UTF-16
//! with its mark (Windows PowerShell 5.1's `>` and `Out-File`; YAML allows UTF-16 too).
//! Anything else that is not UTF-8 is an error naming the byte offset, line and column in
//! the file as given.

/// A dump that is not text we read: names the file, byte offset, line and column.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{name}: not UTF-8 text at byte offset {offset} (line {line}, column {column}): {}", kind.hint())]
pub struct NotUtf8 {
    pub name: String,
    pub offset: usize,
    pub line: usize,
    pub column: usize,
    pub kind: NotText,
}

/// What the bytes that are not UTF-8 look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotText {
    /// Neither UTF-8 nor UTF-16.
    Unknown,
    /// NULs in every other byte, no byte-order mark.
    Utf16WithoutMark,
    /// A UTF-16 byte-order mark, then no valid UTF-16.
    BadUtf16,
}

impl NotText {
    pub fn hint(self) -> &'static str {
        match self {
            NotText::Unknown => "is this an iptables-save dump?",
            NotText::Utf16WithoutMark => {
                "this looks like UTF-16 without a byte-order mark; save the file as UTF-8 (PowerShell: `| Out-File -Encoding utf8`)"
            }
            NotText::BadUtf16 => "not valid UTF-16 (the file starts with a UTF-16 byte-order mark)",
        }
    }
}

/// Decodes a dump read as bytes.
pub fn decode(bytes: Vec<u8>, name: &str) -> Result<String, NotUtf8> {
    match bytes.as_slice() {
        [0xEF, 0xBB, 0xBF, ..] => {
            let mut bytes = bytes;
            bytes.drain(..3);
            utf8(bytes, name, 3)
        }
        [0xFF, 0xFE, rest @ ..] => utf16(rest, name, u16::from_le_bytes),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, name, u16::from_be_bytes),
        _ => utf8(bytes, name, 0),
    }
}

fn utf8(bytes: Vec<u8>, name: &str, skipped: usize) -> Result<String, NotUtf8> {
    if looks_utf16(&bytes) {
        // NULs are valid UTF-8: without this, the parser would stop at the first one.
        let nul = bytes.iter().position(|b| *b == 0).unwrap_or(0);
        return Err(utf8_error(
            &bytes[..nul],
            name,
            skipped,
            NotText::Utf16WithoutMark,
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        utf8_error(&e.as_bytes()[..valid], name, skipped, NotText::Unknown)
    })
}

/// ASCII text in UTF-16: every other byte of the first 64 is NUL.
fn looks_utf16(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(64)];
    head.len() >= 8
        && (head.iter().step_by(2).all(|b| *b == 0)
            || head.iter().skip(1).step_by(2).all(|b| *b == 0))
}

fn utf16(body: &[u8], name: &str, unit: fn([u8; 2]) -> u16) -> Result<String, NotUtf8> {
    let units = body.chunks_exact(2).map(|c| unit([c[0], c[1]]));
    let mut text = String::with_capacity(body.len() / 2);
    // Code units read so far: a character outside the BMP takes two.
    let mut read = 0;
    for c in char::decode_utf16(units) {
        match c {
            Ok(c) => {
                text.push(c);
                read += c.len_utf16();
            }
            Err(_) => return Err(utf16_error(&text, name, 2 + 2 * read)),
        }
    }
    if body.len() % 2 == 1 {
        return Err(utf16_error(&text, name, 2 + body.len() - 1));
    }
    Ok(text)
}

/// The decoded text so far gives line and column; the offset is into the file's bytes.
fn utf16_error(text: &str, name: &str, offset: usize) -> NotUtf8 {
    NotUtf8 {
        name: name.to_string(),
        offset,
        line: text.bytes().filter(|b| *b == b'\n').count() + 1,
        column: text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
        kind: NotText::BadUtf16,
    }
}

/// `head` is the valid text before the bad byte, after `skipped` bytes of mark.
fn utf8_error(head: &[u8], name: &str, skipped: usize, kind: NotText) -> NotUtf8 {
    let line_start = head.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    NotUtf8 {
        name: name.to_string(),
        offset: skipped + head.len(),
        line: head.iter().filter(|b| **b == b'\n').count() + 1,
        column: head.len() - line_start + 1,
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16le(s: &str) -> Vec<u8> {
        let mut b = vec![0xFF, 0xFE];
        b.extend(s.encode_utf16().flat_map(u16::to_le_bytes));
        b
    }

    #[test]
    fn byte_order_marks_are_read() {
        let text = "*nat\r\n-A KUBE-X -m comment --comment \"é\" -j ACCEPT\r\nCOMMIT\r\n";
        let mut bom = vec![0xEF, 0xBB, 0xBF];
        bom.extend(text.as_bytes());
        assert_eq!(decode(bom, "f").unwrap(), text);
        assert_eq!(decode(utf16le(text), "f").unwrap(), text);
        let mut be = vec![0xFE, 0xFF];
        be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
        assert_eq!(decode(be, "f").unwrap(), text);
    }

    #[test]
    fn errors_name_the_offset_in_the_file() {
        // After a UTF-8 mark the offset still counts the mark's three bytes.
        let e = decode(b"\xEF\xBB\xBF*nat\n-A X \xFF\n".to_vec(), "d.save").unwrap_err();
        assert_eq!((e.offset, e.line, e.column), (3 + 5 + 5, 2, 6));
        assert_eq!(
            e.to_string(),
            "d.save: not UTF-8 text at byte offset 13 (line 2, column 6): is this an iptables-save dump?"
        );
        // A lone surrogate in UTF-16: offset of its unit in the file.
        let mut b = utf16le("*nat\nAB");
        b.extend([0x00, 0xD8]);
        let e = decode(b, "w.txt").unwrap_err();
        assert_eq!((e.offset, e.line, e.column), (2 + 14, 2, 3));
        // A character outside the BMP (two code units) before it.
        let mut b = utf16le("*nat\n\u{1F600}");
        b.extend([0x00, 0xD8]);
        assert_eq!(decode(b, "w.txt").unwrap_err().offset, 2 + 2 * 7);
        // An odd byte count.
        let mut b = utf16le("ab");
        b.push(b'c');
        assert_eq!(decode(b, "w.txt").unwrap_err().offset, 6);
        // UTF-16 without a mark gets a hint.
        let b: Vec<u8> = "*nat\n-A KUBE-X -j ACCEPT\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let e = decode(b, "w.txt").unwrap_err();
        assert!(
            e.to_string().contains("UTF-16 without a byte-order mark"),
            "{e}"
        );
    }
}
