//! Cutting the text into documents and list items, and peeking at `kind` and
//! `apiVersion` by line scanning.

/// One YAML document of the input, still as text.
pub(super) struct Doc<'a> {
    /// From the document's first line (its `---`, if any) to its end.
    pub(super) text: &'a str,
    /// 1-based line of `text`'s first line in the file.
    pub(super) first_line: usize,
    /// 1-based line of the first content (what `Origin` reports).
    pub(super) line: usize,
    /// `text` from the first content character on.
    pub(super) body: &'a str,
}

/// Returns what follows a `---`/`...` marker, if `line` is one. libyaml ends a
/// document at such a line even inside scalars, so splitting here is safe.
pub(super) fn marker_rest<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(marker)?;
    (rest.is_empty() || rest.starts_with([' ', '\t'])).then_some(rest)
}

pub(super) fn is_blank_or_comment(s: &str) -> bool {
    let t = s.trim_start_matches([' ', '\t']);
    t.is_empty() || t.starts_with('#')
}

/// Iterates `(offset, line without its line break, offset of the next line)`.
pub(super) fn lines_with_offsets(text: &str) -> impl Iterator<Item = (usize, &str, usize)> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= text.len() {
            return None;
        }
        let start = pos;
        let (end, next) = match text[start..].find('\n') {
            Some(i) => (start + i, start + i + 1),
            None => (text.len(), text.len()),
        };
        pos = next;
        let line = &text[start..end];
        Some((start, line.strip_suffix('\r').unwrap_or(line), next))
    })
}

pub(super) fn split_documents(text: &str) -> Vec<Doc<'_>> {
    struct Open {
        start: usize,
        first_line: usize,
        /// (line, byte offset) of the first content.
        content: Option<(usize, usize)>,
        directives: bool,
        marker: bool,
    }
    impl Open {
        fn at(start: usize, first_line: usize) -> Self {
            Open {
                start,
                first_line,
                content: None,
                directives: false,
                marker: false,
            }
        }
    }
    let mut docs = Vec::new();
    let mut push = |open: &Open, end: usize| {
        // Empty and comment-only documents are dropped here; a lone directive
        // is kept so libyaml reports it.
        let (line, body_at) = match open.content {
            Some(c) => c,
            None if open.directives => (open.first_line, open.start),
            None => return,
        };
        docs.push(Doc {
            text: &text[open.start..end],
            first_line: open.first_line,
            line,
            body: &text[body_at..end],
        });
    };
    let mut open = Open::at(0, 1);
    for (line_no, (start, line, next)) in lines_with_offsets(text).enumerate() {
        let line_no = line_no + 1;
        if let Some(rest) = marker_rest(line, "---") {
            if open.marker || open.content.is_some() {
                push(&open, start);
                open = Open::at(start, line_no);
            } else if !open.directives {
                // Leading comments belong to nothing; start at the marker.
                open = Open::at(start, line_no);
            }
            open.marker = true;
            if !is_blank_or_comment(rest) {
                let skip = 3 + (rest.len() - rest.trim_start_matches([' ', '\t']).len());
                open.content = Some((line_no, start + skip));
            }
        } else if marker_rest(line, "...").is_some() {
            push(&open, next);
            open = Open::at(next, line_no + 1);
        } else if open.content.is_none() {
            if !open.marker && line.starts_with('%') {
                open.directives = true;
            } else if !is_blank_or_comment(line) {
                let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
                open.content = Some((line_no, start + indent));
            }
        }
    }
    push(&open, text.len());
    docs
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kept {
    Service,
    Slice,
    Node,
}

impl Kept {
    pub(super) fn kind(self) -> &'static str {
        match self {
            Kept::Service => "Service",
            Kept::Slice => "EndpointSlice",
            Kept::Node => "Node",
        }
    }

    pub(super) fn api_version(self) -> &'static str {
        match self {
            Kept::Slice => "discovery.k8s.io/v1",
            Kept::Service | Kept::Node => "v1",
        }
    }

    pub(super) fn namespaced(self) -> bool {
        self != Kept::Node
    }

    pub(super) fn from_kind(kind: &str) -> Option<Kept> {
        [Kept::Service, Kept::Slice, Kept::Node]
            .into_iter()
            .find(|k| k.kind() == kind)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Class {
    Keep(Kept),
    /// A list; its items default to this kind when they carry none.
    List(Option<Kept>),
    Skip(String),
}

pub(super) fn classify(api: Option<&str>, kind: Option<&str>, default: Option<Kept>) -> Class {
    let (api, kind) = match (api, kind, default) {
        // The API server leaves kind and apiVersion out of typed list items.
        (None, None, Some(k)) => return Class::Keep(k),
        (_, None, _) => return Class::Skip("no kind".into()),
        (None, Some(_), _) => return Class::Skip("no apiVersion".into()),
        (Some(a), Some(k), _) => (a, k),
    };
    match (api, kind) {
        ("v1", "List") => return Class::List(None),
        ("v1", "ServiceList") => return Class::List(Some(Kept::Service)),
        ("v1", "NodeList") => return Class::List(Some(Kept::Node)),
        ("discovery.k8s.io/v1", "EndpointSliceList") => return Class::List(Some(Kept::Slice)),
        _ => {}
    }
    match Kept::from_kind(kind) {
        Some(k) if k.api_version() == api => Class::Keep(k),
        Some(k) => Class::Skip(format!(
            "apiVersion {api} is not supported, want {}",
            k.api_version()
        )),
        None => Class::Skip(format!(
            "{api} {kind} is not a Service, EndpointSlice or Node"
        )),
    }
}

/// What the line scan found for one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Peeked<'a> {
    Missing,
    One(&'a str),
    /// Repeated, or a value too fancy to read without a parser.
    Unclear,
}

impl<'a> Peeked<'a> {
    pub(super) fn add(&mut self, value: Option<&'a str>) {
        *self = match (*self, value) {
            (Peeked::Missing, Some(v)) => Peeked::One(v),
            _ => Peeked::Unclear,
        };
    }
}

/// Reads a simple scalar after `key:`; `None` when a real parser is needed.
pub(super) fn simple_scalar(rest: &str) -> Option<&str> {
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let v = rest.trim_matches([' ', '\t']);
    let (value, after) = if let Some(q) = v.strip_prefix('"') {
        let end = q.find('"')?;
        (&q[..end], &q[end + 1..])
    } else if let Some(q) = v.strip_prefix('\'') {
        let end = q.find('\'')?;
        (&q[..end], &q[end + 1..])
    } else {
        let end = v.find(" #").or_else(|| v.find("\t#")).unwrap_or(v.len());
        let plain = v[..end].trim_end_matches([' ', '\t']);
        if plain.is_empty()
            || plain.starts_with(|c: char| "&*!|>{}[]@`%,\"'#?:-".contains(c))
            || plain.contains(": ")
        {
            return None;
        }
        (plain, "")
    };
    // Escapes and doubled quotes would need unescaping.
    if value.contains(['\\', '"', '\'']) || !is_blank_or_comment(after) {
        return None;
    }
    Some(value)
}

#[derive(Debug)]
pub(super) struct Peek<'a> {
    pub(super) api_version: Peeked<'a>,
    pub(super) kind: Peeked<'a>,
    /// Offset just past the `items:` line, when that line has no inline value.
    pub(super) items_block: Option<usize>,
}

/// Scans the keys of the block mapping whose keys sit at column `col` of
/// `text`. `first` is how much of the first line to skip (a list item's `- `).
pub(super) fn peek_keys(text: &str, col: usize, first: usize) -> Peek<'_> {
    let mut peek = Peek {
        api_version: Peeked::Missing,
        kind: Peeked::Missing,
        items_block: None,
    };
    let mut items_lines = 0;
    for (i, (_, line, next)) in lines_with_offsets(text).enumerate() {
        let key_part = if i == 0 {
            match line.get(first..) {
                Some(k) => k,
                None => continue,
            }
        } else {
            match line.get(..col) {
                Some(indent) if indent.bytes().all(|b| b == b' ') => &line[col..],
                _ => continue,
            }
        };
        if let Some(rest) = key_part.strip_prefix("kind:") {
            peek.kind.add(simple_scalar(rest));
        } else if let Some(rest) = key_part.strip_prefix("apiVersion:") {
            peek.api_version.add(simple_scalar(rest));
        } else if let Some(rest) = key_part.strip_prefix("items:") {
            items_lines += 1;
            if is_blank_or_comment(rest) {
                peek.items_block = Some(next);
            }
        }
    }
    if items_lines != 1 {
        peek.items_block = None;
    }
    peek
}

/// A list item cut out of a list document: a one-element YAML sequence.
pub(super) struct ItemText<'a> {
    pub(super) text: &'a str,
    pub(super) first_line: usize,
    /// Column of the item's keys, when the first line has `- key`.
    pub(super) key_col: Option<usize>,
}

/// Cuts the block sequence starting at `from` (just past `items:`) into one
/// text per item. Returns the items and the document without them.
pub(super) fn split_items<'a>(doc: &Doc<'a>, from: usize) -> Option<(Vec<ItemText<'a>>, String)> {
    let text = doc.text;
    let base_line = doc.first_line + text[..from].matches('\n').count();
    // Starts (offset, line, key column) of the items, and where the block ends.
    let mut starts: Vec<(usize, usize, Option<usize>)> = Vec::new();
    let mut dash = None;
    let mut end = text.len();
    for (i, (start, line, _)) in lines_with_offsets(&text[from..]).enumerate() {
        if is_blank_or_comment(line) {
            continue;
        }
        let indent = line.len() - line.trim_start_matches(' ').len();
        let rest = &line[indent..];
        let is_dash = rest == "-" || rest.starts_with("- ");
        let d = *dash.get_or_insert(indent);
        if indent == d && is_dash {
            // Keys follow the dash and its spaces; a bare `-` leaves it open.
            let key_col = (rest.len() > 1).then(|| {
                let after = &rest[1..];
                indent + 1 + (after.len() - after.trim_start_matches(' ').len())
            });
            starts.push((from + start, base_line + i, key_col));
        } else if indent <= d || starts.is_empty() {
            end = from + start;
            break;
        }
    }
    let first = starts.first()?.0;
    let items = starts
        .iter()
        .enumerate()
        .map(|(n, &(s, line, key_col))| ItemText {
            text: &text[s..starts.get(n + 1).map_or(end, |next| next.0)],
            first_line: line,
            key_col,
        })
        .collect();
    let mut head = String::with_capacity(first + (text.len() - end));
    head.push_str(&text[..first]);
    head.push_str(&text[end..]);
    Some((items, head))
}
