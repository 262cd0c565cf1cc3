//! Loader for the Kubernetes object dumps read by `render --objects`.
//!
//! Accepts multi-document YAML, list documents (`kind: List` as printed by
//! `kubectl get -o yaml`, or the typed `ServiceList`/`EndpointSliceList`/
//! `NodeList` the API server returns) and JSON. Only `v1 Service`,
//! `discovery.k8s.io/v1 EndpointSlice` and `v1 Node` are kept; other kinds
//! are skipped with a warning.
//!
//! Dumps of big clusters are tens of megabytes, so the common shapes take a
//! fast path: the text is cut into documents (and list items) by line scanning,
//! `kind`/`apiVersion` are peeked from top-level lines, and each piece is
//! deserialized straight into its typed object on a pool of scoped threads.
//! Anything the fast path is not sure about goes through a generic
//! `Value`-based path, and every fast-path failure is re-checked before it is
//! reported, so a wrong guess by the line scan costs time, not correctness.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{self, DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_path_to_error::Segment;

/// Where an object starts: the 1-based line of its document or list item.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub file: Arc<str>,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// The objects kept from one or more inputs, in input order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectSet {
    pub services: Vec<(Service, Origin)>,
    pub endpoint_slices: Vec<(EndpointSlice, Origin)>,
    pub nodes: Vec<(Node, Origin)>,
    /// Human-readable notes about skipped documents, each starting `file:line:`.
    pub warnings: Vec<String>,
}

impl ObjectSet {
    /// Appends everything from `other`, keeping its order after ours.
    pub fn extend(&mut self, other: ObjectSet) {
        self.services.extend(other.services);
        self.endpoint_slices.extend(other.endpoint_slices);
        self.nodes.extend(other.nodes);
        self.warnings.extend(other.warnings);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: cannot read")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: input is not valid UTF-8")]
    Utf8 { file: String, line: usize },
    #[error("{file}:{line}{}: invalid YAML: {message}", column_suffix(*.column))]
    Syntax {
        file: String,
        line: usize,
        column: Option<usize>,
        message: String,
    },
    /// A document that is valid YAML but does not fit its typed object.
    #[error("{0}")]
    Type(Box<TypeError>),
    #[error("{file}: internal error while loading: {message}")]
    Internal { file: String, message: String },
}

/// Details of [`LoadError::Type`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeError {
    pub file: String,
    /// The document's start line (the list's, for list items).
    pub line: usize,
    /// `Kind ns/name`, as far as known.
    pub object: String,
    /// Field path, e.g. `spec.ports[0].port` or `items[3].spec.ports[0].port`.
    pub path: String,
    pub message: String,
    /// Exact line and column of the offending value, when known.
    pub at: Option<(usize, usize)>,
}

impl fmt::Display for TypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}: {}",
            self.file, self.line, self.object, self.path, self.message
        )?;
        if let Some((line, column)) = self.at {
            write!(f, " (at line {line}, column {column})")?;
        }
        Ok(())
    }
}

fn column_suffix(column: Option<usize>) -> String {
    column.map(|c| format!(":{c}")).unwrap_or_default()
}

/// Reads and parses one input; `-` reads standard input.
pub fn load_objects(path: &str) -> Result<ObjectSet, LoadError> {
    let (name, bytes) = if path == "-" {
        let buf =
            super::guard::read_capped(std::io::stdin().lock(), super::guard::MAX_OBJECTS_BYTES)
                .map_err(|source| LoadError::Io {
                    file: "<stdin>".into(),
                    source,
                })?;
        ("<stdin>", buf)
    } else {
        let buf = std::fs::File::open(path)
            .and_then(|f| super::guard::read_capped(f, super::guard::MAX_OBJECTS_BYTES))
            .map_err(|source| LoadError::Io {
                file: path.into(),
                source,
            })?;
        (path, buf)
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        LoadError::Utf8 {
            file: name.into(),
            line: 1 + good.iter().filter(|&&b| b == b'\n').count(),
        }
    })?;
    parse_objects(&text, name)
}

/// Parses the text of one input; `file` is only used in origins and messages.
pub fn parse_objects(text: &str, file: &str) -> Result<ObjectSet, LoadError> {
    super::guard::check_depth(text, super::guard::MAX_DEPTH).map_err(|e| LoadError::Syntax {
        file: file.into(),
        line: e.line,
        column: Some(e.column),
        message: e.to_string(),
    })?;
    // Threads only pay off once there is real work to share.
    parse_with(text, file, 256 << 10)
}

fn parse_with(text: &str, file: &str, min_parallel_bytes: usize) -> Result<ObjectSet, LoadError> {
    // libyaml skips a byte order mark only at the very start; so do we.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let docs = split_documents(text);
    let threads = if text.len() >= min_parallel_bytes {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
    } else {
        1
    };
    let file: Arc<str> = Arc::from(file);
    // Docs whose list items could not be split safely; only grows after a
    // fast-path failure, so normal inputs run exactly once.
    let mut slow_docs = HashSet::new();
    loop {
        let planned = in_parallel(
            docs.iter().enumerate().collect(),
            |(_, doc)| doc.text.len(),
            threads,
            |group| plan(group, &slow_docs),
        )
        .map_err(|message| LoadError::Internal {
            file: file.to_string(),
            message,
        })?;
        let units = planned.into_iter().flatten().collect();
        let (items, failure) = run_units(units, &file, threads);
        let Some(failure) = failure else {
            return Ok(super::duplicates::checked(
                collect(items, &file),
                text,
                &file,
            ));
        };
        match failure.retry_doc {
            Some(d) if !slow_docs.contains(&d) => {
                let doc = &docs[d];
                if let Err(e) = serde_yaml_ng::from_str::<IgnoredAny>(doc.text) {
                    return Err(syntax_error(&file, doc.first_line, &e));
                }
                // The document is fine as a whole, so cutting it into items
                // was wrong: redo it the generic way.
                slow_docs.insert(d);
            }
            _ => return Err(failure.error),
        }
    }
}

fn collect(items: Vec<Item>, file: &Arc<str>) -> ObjectSet {
    let mut set = ObjectSet::default();
    let origin = |line| Origin {
        file: file.clone(),
        line,
    };
    for item in items {
        match item {
            Item::Service(o, line) => set.services.push((*o, origin(line))),
            Item::Slice(o, line) => set.endpoint_slices.push((*o, origin(line))),
            Item::Node(o, line) => set.nodes.push((*o, origin(line))),
            Item::Warning(w) => set.warnings.push(w),
        }
    }
    set
}

// ---------------------------------------------------------------------------
// Splitting the text into documents

/// One YAML document of the input, still as text.
struct Doc<'a> {
    /// From the document's first line (its `---`, if any) to its end.
    text: &'a str,
    /// 1-based line of `text`'s first line in the file.
    first_line: usize,
    /// 1-based line of the first content (what `Origin` reports).
    line: usize,
    /// `text` from the first content character on.
    body: &'a str,
}

/// Returns what follows a `---`/`...` marker, if `line` is one. libyaml ends a
/// document at such a line even inside scalars, so splitting here is safe.
fn marker_rest<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(marker)?;
    (rest.is_empty() || rest.starts_with([' ', '\t'])).then_some(rest)
}

fn is_blank_or_comment(s: &str) -> bool {
    let t = s.trim_start_matches([' ', '\t']);
    t.is_empty() || t.starts_with('#')
}

/// Iterates `(offset, line without its line break, offset of the next line)`.
fn lines_with_offsets(text: &str) -> impl Iterator<Item = (usize, &str, usize)> {
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

fn split_documents(text: &str) -> Vec<Doc<'_>> {
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

// ---------------------------------------------------------------------------
// Cheap peeking at `kind` and `apiVersion`

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kept {
    Service,
    Slice,
    Node,
}

impl Kept {
    fn kind(self) -> &'static str {
        match self {
            Kept::Service => "Service",
            Kept::Slice => "EndpointSlice",
            Kept::Node => "Node",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Kept::Slice => "discovery.k8s.io/v1",
            Kept::Service | Kept::Node => "v1",
        }
    }

    fn namespaced(self) -> bool {
        self != Kept::Node
    }

    fn from_kind(kind: &str) -> Option<Kept> {
        [Kept::Service, Kept::Slice, Kept::Node]
            .into_iter()
            .find(|k| k.kind() == kind)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Class {
    Keep(Kept),
    /// A list; its items default to this kind when they carry none.
    List(Option<Kept>),
    Skip(String),
}

fn classify(api: Option<&str>, kind: Option<&str>, default: Option<Kept>) -> Class {
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
enum Peeked<'a> {
    Missing,
    One(&'a str),
    /// Repeated, or a value too fancy to read without a parser.
    Unclear,
}

impl<'a> Peeked<'a> {
    fn add(&mut self, value: Option<&'a str>) {
        *self = match (*self, value) {
            (Peeked::Missing, Some(v)) => Peeked::One(v),
            _ => Peeked::Unclear,
        };
    }
}

/// Reads a simple scalar after `key:`; `None` when a real parser is needed.
fn simple_scalar(rest: &str) -> Option<&str> {
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
struct Peek<'a> {
    api_version: Peeked<'a>,
    kind: Peeked<'a>,
    /// Offset just past the `items:` line, when that line has no inline value.
    items_block: Option<usize>,
}

/// Scans the keys of the block mapping whose keys sit at column `col` of
/// `text`. `first` is how much of the first line to skip (a list item's `- `).
fn peek_keys(text: &str, col: usize, first: usize) -> Peek<'_> {
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
struct ItemText<'a> {
    text: &'a str,
    first_line: usize,
    /// Column of the item's keys, when the first line has `- key`.
    key_col: Option<usize>,
}

/// Cuts the block sequence starting at `from` (just past `items:`) into one
/// text per item. Returns the items and the document without them.
fn split_items<'a>(doc: &Doc<'a>, from: usize) -> Option<(Vec<ItemText<'a>>, String)> {
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

// ---------------------------------------------------------------------------
// Planning: which path each piece takes

#[derive(Clone, Copy, Debug)]
enum Plan {
    /// Deserialize straight into the kept kind.
    Typed(Kept),
    /// A kind we skip: read just enough to name it in the warning.
    Probe,
    /// Anything else: go through `serde_yaml_ng::Value`.
    Slow,
}

/// Where a piece sits in the input, for origins and messages.
#[derive(Clone, Copy, Debug)]
struct Place {
    doc: usize,
    /// The document's (list's) start line.
    doc_line: usize,
    /// The line reported as the object's origin.
    line: usize,
    /// Index in the list's `items`, for list items.
    item: Option<usize>,
    /// Kind assumed for list items that carry none.
    default: Option<Kept>,
}

enum Unit<'a> {
    Yaml {
        text: &'a str,
        first_line: usize,
        place: Place,
        plan: Plan,
    },
    Json {
        value: serde_json::Value,
        place: Place,
    },
}

impl Unit<'_> {
    fn weight(&self) -> usize {
        match self {
            Unit::Yaml { text, .. } => text.len(),
            // Already parsed; converting is a fraction of parsing.
            Unit::Json { .. } => 256,
        }
    }
}

fn plan<'a>(docs: Vec<(usize, &Doc<'a>)>, slow_docs: &HashSet<usize>) -> Vec<Unit<'a>> {
    let mut units = Vec::with_capacity(docs.len());
    for (d, doc) in docs {
        let place = Place {
            doc: d,
            doc_line: doc.line,
            line: doc.line,
            item: None,
            default: None,
        };
        let whole = |plan| Unit::Yaml {
            text: doc.text,
            first_line: doc.first_line,
            place,
            plan,
        };
        if doc.body.starts_with('{') {
            // `kubectl -o json`: serde_json is far quicker than libyaml. On a
            // JSON syntax error fall through, so YAML-only syntax still works
            // and errors are reported by the YAML parser.
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(doc.body) {
                plan_json(value, place, &mut units);
                continue;
            }
        }
        let peek = peek_keys(doc.text, 0, 0);
        let (Peeked::One(api), Peeked::One(kind)) = (peek.api_version, peek.kind) else {
            units.push(whole(Plan::Slow));
            continue;
        };
        match classify(Some(api), Some(kind), None) {
            Class::Keep(k) => units.push(whole(Plan::Typed(k))),
            Class::Skip(_) => units.push(whole(Plan::Probe)),
            Class::List(default) => {
                let split = match peek.items_block {
                    Some(from) if !slow_docs.contains(&d) => split_items(doc, from),
                    _ => None,
                };
                match split {
                    Some((items, head)) if head_is_list(&head, default) => {
                        plan_items(items, place, default, &mut units)
                    }
                    _ => units.push(whole(Plan::Slow)),
                }
            }
        }
    }
    units
}

/// Checks the list document minus its items: it must parse and really be the
/// list the line scan took it for.
fn head_is_list(head: &str, default: Option<Kept>) -> bool {
    #[derive(Deserialize)]
    struct Head {
        #[serde(rename = "apiVersion")]
        api_version: Option<String>,
        kind: Option<String>,
    }
    match serde_yaml_ng::from_str::<Head>(head) {
        Ok(h) => {
            classify(h.api_version.as_deref(), h.kind.as_deref(), None) == Class::List(default)
        }
        Err(_) => false,
    }
}

fn plan_items<'a>(
    items: Vec<ItemText<'a>>,
    place: Place,
    default: Option<Kept>,
    units: &mut Vec<Unit<'a>>,
) {
    for (i, item) in items.into_iter().enumerate() {
        let plan = match item.key_col {
            Some(col) => {
                let peek = peek_keys(item.text, col, col);
                let api = match peek.api_version {
                    Peeked::One(v) => Some(v),
                    Peeked::Missing => None,
                    Peeked::Unclear => {
                        units.push(item_unit(item, place, i, default, Plan::Slow));
                        continue;
                    }
                };
                let kind = match peek.kind {
                    Peeked::One(v) => Some(v),
                    Peeked::Missing => None,
                    Peeked::Unclear => {
                        units.push(item_unit(item, place, i, default, Plan::Slow));
                        continue;
                    }
                };
                match classify(api, kind, default) {
                    Class::Keep(k) => Plan::Typed(k),
                    Class::Skip(_) if api.is_some() && kind.is_some() => Plan::Probe,
                    _ => Plan::Slow,
                }
            }
            None => Plan::Slow,
        };
        units.push(item_unit(item, place, i, default, plan));
    }
}

fn item_unit<'a>(
    item: ItemText<'a>,
    place: Place,
    index: usize,
    default: Option<Kept>,
    plan: Plan,
) -> Unit<'a> {
    Unit::Yaml {
        text: item.text,
        first_line: item.first_line,
        place: Place {
            line: item.first_line,
            item: Some(index),
            default,
            ..place
        },
        plan,
    }
}

fn plan_json(mut value: serde_json::Value, place: Place, units: &mut Vec<Unit<'_>>) {
    let class = classify(
        value.get("apiVersion").and_then(|v| v.as_str()),
        value.get("kind").and_then(|v| v.as_str()),
        None,
    );
    // Expand lists here so their items spread over the threads.
    if let Class::List(default) = class {
        if let Some(serde_json::Value::Array(items)) = value.get_mut("items") {
            let items = std::mem::take(items);
            units.extend(items.into_iter().enumerate().map(|(i, value)| Unit::Json {
                value,
                place: Place {
                    item: Some(i),
                    default,
                    ..place
                },
            }));
            return;
        }
    }
    units.push(Unit::Json { value, place });
}

// ---------------------------------------------------------------------------
// Running the plan

/// One result in input order. Objects are boxed: they are large and moved
/// several times on the way into the `ObjectSet`.
enum Item {
    Service(Box<Service>, usize),
    Slice(Box<EndpointSlice>, usize),
    Node(Box<Node>, usize),
    Warning(String),
}

struct Failure {
    error: LoadError,
    /// A split list item failed to parse: the document must be re-checked.
    retry_doc: Option<usize>,
}

fn run_units(units: Vec<Unit<'_>>, file: &str, threads: usize) -> (Vec<Item>, Option<Failure>) {
    let results = match in_parallel(units, Unit::weight, threads, |group| run_group(group, file)) {
        Ok(results) => results,
        Err(message) => {
            let error = LoadError::Internal {
                file: file.into(),
                message,
            };
            let failure = Failure {
                error,
                retry_doc: None,
            };
            return (Vec::new(), Some(failure));
        }
    };
    let mut items = Vec::new();
    for (group_items, failure) in results {
        items.extend(group_items);
        if failure.is_some() {
            return (items, failure);
        }
    }
    (items, None)
}

/// Runs `f` over contiguous groups of `work` of about equal weight, one group
/// per thread, and returns the results in input order.
fn in_parallel<T: Send, R: Send>(
    work: Vec<T>,
    weight: impl Fn(&T) -> usize,
    threads: usize,
    f: impl Fn(Vec<T>) -> R + Sync,
) -> Result<Vec<R>, String> {
    if threads <= 1 || work.len() < 2 {
        return Ok(vec![f(work)]);
    }
    let share = work.iter().map(&weight).sum::<usize>().div_ceil(threads);
    let mut groups: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut current = Vec::new();
    let mut size = 0;
    for w in work {
        size += weight(&w);
        current.push(w);
        if size >= share && groups.len() + 1 < threads {
            groups.push(std::mem::take(&mut current));
            size = 0;
        }
    }
    groups.push(current);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|group| {
                std::thread::Builder::new()
                    .stack_size(8 << 20)
                    .spawn_scoped(scope, move || f(group))
            })
            .collect();
        // Joining each handle ourselves turns a worker panic into an error
        // instead of a panic of the whole scope.
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h.join().map_err(|_| "a worker thread panicked".to_string()),
                Err(e) => Err(format!("cannot start a worker thread: {e}")),
            })
            .collect()
    })
}

fn run_group(units: Vec<Unit<'_>>, file: &str) -> (Vec<Item>, Option<Failure>) {
    let mut out = Vec::with_capacity(units.len());
    for unit in units {
        let result = match unit {
            Unit::Yaml {
                text,
                first_line,
                place,
                plan,
            } => {
                let piece = Piece {
                    file,
                    text,
                    first_line,
                    place,
                };
                piece.run(plan, &mut out).map_err(|error| Failure {
                    retry_doc: (place.item.is_some() && matches!(error, LoadError::Syntax { .. }))
                        .then_some(place.doc),
                    error,
                })
            }
            Unit::Json { value, place } => {
                dispatch(value, file, place, &mut out).map_err(|error| Failure {
                    error,
                    retry_doc: None,
                })
            }
        };
        if let Err(failure) = result {
            return (out, Some(failure));
        }
    }
    (out, None)
}

/// One YAML document or split list item.
struct Piece<'a> {
    file: &'a str,
    text: &'a str,
    first_line: usize,
    place: Place,
}

impl Piece<'_> {
    fn run(&self, plan: Plan, out: &mut Vec<Item>) -> Result<(), LoadError> {
        match plan {
            Plan::Typed(Kept::Service) => self.typed::<Service>(Kept::Service, out),
            Plan::Typed(Kept::Slice) => self.typed::<EndpointSlice>(Kept::Slice, out),
            Plan::Typed(Kept::Node) => self.typed::<Node>(Kept::Node, out),
            Plan::Probe => match self.probe() {
                Ok(p) => match classify(p.api(), p.kind(), self.place.default) {
                    Class::Skip(reason) => {
                        out.push(Item::Warning(skip_warning(
                            self.file,
                            &self.place,
                            p.kind(),
                            &p.name(None),
                            &reason,
                        )));
                        Ok(())
                    }
                    // The line scan was wrong about the kind.
                    _ => self.slow(out),
                },
                Err(_) => self.slow(out),
            },
            Plan::Slow => self.slow(out),
        }
    }

    fn typed<T: KeptObject>(&self, kept: Kept, out: &mut Vec<Item>) -> Result<(), LoadError> {
        // Path tracking allocates for every key, so it only runs to explain
        // a failure.
        let result = self.read::<T>().or_else(|_| self.read_tracked::<T>());
        let err = match result {
            Ok(obj) => {
                out.push(obj.into_item(self.place.line));
                return Ok(());
            }
            Err(err) => err,
        };
        // Tell a syntax error from a type error, and check the line scan's
        // idea of the kind, with a lenient read of the same text.
        let probe = match self.probe() {
            Ok(p) => p,
            Err(e) => return Err(syntax_error(self.file, self.first_line, &e)),
        };
        if classify(probe.api(), probe.kind(), self.place.default) != Class::Keep(kept) {
            return self.slow(out);
        }
        let location = err.inner().location();
        let skip = usize::from(self.split());
        let path = field_path(err.path(), self.place.item, skip);
        let message = bare_message(
            &err.inner().to_string(),
            &err.path().to_string(),
            location.as_ref(),
        );
        Err(LoadError::Type(Box::new(TypeError {
            file: self.file.into(),
            line: self.place.doc_line,
            object: format!("{} {}", kept.kind(), probe.name(Some(kept))),
            path,
            message,
            at: location.map(|l| (self.first_line + l.line() - 1, l.column())),
        })))
    }

    fn probe(&self) -> Result<Probe, serde_yaml_ng::Error> {
        self.read()
    }

    /// Split list items are one-element sequences; whole documents are not.
    fn split(&self) -> bool {
        self.place.item.is_some()
    }

    fn read<T: DeserializeOwned>(&self) -> Result<T, serde_yaml_ng::Error> {
        let de = serde_yaml_ng::Deserializer::from_str(self.text);
        if self.split() {
            <(T,)>::deserialize(de).map(|(t,)| t)
        } else {
            T::deserialize(de)
        }
    }

    fn read_tracked<T: DeserializeOwned>(
        &self,
    ) -> Result<T, serde_path_to_error::Error<serde_yaml_ng::Error>> {
        let de = serde_yaml_ng::Deserializer::from_str(self.text);
        if self.split() {
            serde_path_to_error::deserialize::<_, (T,)>(de).map(|(t,)| t)
        } else {
            serde_path_to_error::deserialize(de)
        }
    }

    fn slow(&self, out: &mut Vec<Item>) -> Result<(), LoadError> {
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(self.text)
            .map_err(|e| syntax_error(self.file, self.first_line, &e))?;
        let value = match (self.split(), value) {
            (true, serde_yaml_ng::Value::Sequence(mut seq)) if seq.len() == 1 => seq.remove(0),
            (true, _) => {
                return Err(LoadError::Internal {
                    file: self.file.into(),
                    message: format!(
                        "line {}: list item did not parse as one item",
                        self.first_line
                    ),
                })
            }
            (false, v) => v,
        };
        dispatch(value, self.file, self.place, out)
    }
}

/// The kinds we keep, as the typed paths need them.
trait KeptObject: DeserializeOwned {
    fn into_item(self, line: usize) -> Item;
}

impl KeptObject for Service {
    fn into_item(mut self, line: usize) -> Item {
        default_namespace(&mut self.metadata);
        Item::Service(Box::new(self), line)
    }
}

impl KeptObject for EndpointSlice {
    fn into_item(mut self, line: usize) -> Item {
        default_namespace(&mut self.metadata);
        Item::Slice(Box::new(self), line)
    }
}

impl KeptObject for Node {
    fn into_item(self, line: usize) -> Item {
        Item::Node(Box::new(self), line)
    }
}

/// Objects read from files lack the namespace the API server would fill in.
fn default_namespace(meta: &mut ObjectMeta) {
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some("default".into());
    }
}

// ---------------------------------------------------------------------------
// The generic path over parsed values (YAML or JSON)

/// What the generic path needs from a parsed document.
trait Tree: Sized + serde::Deserializer<'static> {
    fn str_at(&self, key: &str) -> Option<&str>;
    fn meta_str(&self, key: &str) -> Option<&str>;
    fn is_map(&self) -> bool;
    /// `None` when absent or null, `Some(None)` when not a sequence.
    fn take_items(&mut self) -> Option<Option<Vec<Self>>>;
}

impl Tree for serde_yaml_ng::Value {
    fn str_at(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }
    fn meta_str(&self, key: &str) -> Option<&str> {
        self.get("metadata")?.get(key)?.as_str()
    }
    fn is_map(&self) -> bool {
        self.is_mapping()
    }
    fn take_items(&mut self) -> Option<Option<Vec<Self>>> {
        match self.get_mut("items")? {
            serde_yaml_ng::Value::Null => None,
            serde_yaml_ng::Value::Sequence(seq) => Some(Some(std::mem::take(seq))),
            _ => Some(None),
        }
    }
}

impl Tree for serde_json::Value {
    fn str_at(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }
    fn meta_str(&self, key: &str) -> Option<&str> {
        self.get("metadata")?.get(key)?.as_str()
    }
    fn is_map(&self) -> bool {
        self.is_object()
    }
    fn take_items(&mut self) -> Option<Option<Vec<Self>>> {
        match self.get_mut("items")? {
            serde_json::Value::Null => None,
            serde_json::Value::Array(seq) => Some(Some(std::mem::take(seq))),
            _ => Some(None),
        }
    }
}

fn dispatch<V: Tree>(
    mut value: V,
    file: &str,
    place: Place,
    out: &mut Vec<Item>,
) -> Result<(), LoadError> {
    if !value.is_map() {
        let what = place
            .item
            .map_or("document".to_string(), |i| format!("items[{i}]"));
        out.push(Item::Warning(format!(
            "{file}:{}: skipping {what}: not a mapping",
            place.line
        )));
        return Ok(());
    }
    let name = object_name(value.meta_str("namespace"), value.meta_str("name"), None);
    let class = classify(
        value.str_at("apiVersion"),
        value.str_at("kind"),
        place.default,
    );
    match class {
        Class::Keep(k) => {
            let name = object_name(value.meta_str("namespace"), value.meta_str("name"), Some(k));
            let item = match k {
                Kept::Service => typed_from::<Service, V>(value, place.line),
                Kept::Slice => typed_from::<EndpointSlice, V>(value, place.line),
                Kept::Node => typed_from::<Node, V>(value, place.line),
            };
            match item {
                Ok(item) => {
                    out.push(item);
                    Ok(())
                }
                Err((path, message)) => Err(LoadError::Type(Box::new(TypeError {
                    file: file.into(),
                    line: place.doc_line,
                    object: format!("{} {name}", k.kind()),
                    path: field_path(&path, place.item, 0),
                    message,
                    at: None,
                }))),
            }
        }
        Class::List(default) if place.item.is_none() => match value.take_items() {
            None => Ok(()),
            Some(None) => Err(LoadError::Type(Box::new(TypeError {
                file: file.into(),
                line: place.doc_line,
                object: value.str_at("kind").unwrap_or("List").to_string(),
                path: "items".into(),
                message: "expected a sequence".into(),
                at: None,
            }))),
            Some(Some(items)) => {
                for (i, item) in items.into_iter().enumerate() {
                    let place = Place {
                        item: Some(i),
                        default,
                        ..place
                    };
                    dispatch(item, file, place, out)?;
                }
                Ok(())
            }
        },
        Class::List(_) => {
            out.push(Item::Warning(skip_warning(
                file,
                &place,
                value.str_at("kind"),
                &name,
                "lists inside lists are not supported",
            )));
            Ok(())
        }
        Class::Skip(reason) => {
            out.push(Item::Warning(skip_warning(
                file,
                &place,
                value.str_at("kind"),
                &name,
                &reason,
            )));
            Ok(())
        }
    }
}

fn typed_from<T: KeptObject, V: Tree>(
    value: V,
    line: usize,
) -> Result<Item, (serde_path_to_error::Path, String)> {
    serde_path_to_error::deserialize::<_, T>(value)
        .map(|obj| obj.into_item(line))
        .map_err(|e| (e.path().clone(), e.inner().to_string()))
}

// ---------------------------------------------------------------------------
// Lenient probing of kind, apiVersion and metadata for messages

/// Just the identifying fields of a document; everything else is skipped.
/// Never fails on well-formed YAML, which is what tells a syntax error from
/// a type error.
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "apiVersion", default)]
    api_version: Loose,
    #[serde(default)]
    kind: Loose,
    #[serde(default)]
    metadata: Loose,
}

impl Probe {
    fn api(&self) -> Option<&str> {
        self.api_version.as_str()
    }
    fn kind(&self) -> Option<&str> {
        self.kind.as_str()
    }
    fn name(&self, kept: Option<Kept>) -> String {
        let (namespace, name) = match &self.metadata {
            Loose::Meta { namespace, name } => (namespace.as_deref(), name.as_deref()),
            _ => (None, None),
        };
        object_name(namespace, name, kept)
    }
}

/// Any value, keeping only what a probe needs: a string, or a mapping's
/// `name` and `namespace` strings.
#[derive(Default)]
enum Loose {
    Str(String),
    Meta {
        name: Option<String>,
        namespace: Option<String>,
    },
    #[default]
    Other,
}

impl Loose {
    fn as_str(&self) -> Option<&str> {
        match self {
            Loose::Str(s) => Some(s),
            _ => None,
        }
    }

    fn into_string(self) -> Option<String> {
        match self {
            Loose::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Loose;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Loose, E> {
                Ok(Loose::Str(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_none<E: de::Error>(self) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Loose, D::Error> {
                Loose::deserialize(d)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Loose, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose::Other)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Loose, A::Error> {
                let (mut name, mut namespace) = (None, None);
                while let Some(key) = map.next_key::<Loose>()? {
                    match key.as_str() {
                        Some("name") => name = map.next_value::<Loose>()?.into_string(),
                        Some("namespace") => namespace = map.next_value::<Loose>()?.into_string(),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Loose::Meta { name, namespace })
            }
            // serde_yaml_ng hands explicitly tagged values (`!foo x`) over as enums.
            fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Loose, A::Error> {
                use de::VariantAccess;
                let (IgnoredAny, variant) = data.variant()?;
                variant.newtype_variant::<IgnoredAny>()?;
                Ok(Loose::Other)
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------
// Messages

/// `ns/name` (namespace defaulted for namespaced kinds we keep), or just the
/// name for cluster-scoped or unknown objects without a namespace.
fn object_name(namespace: Option<&str>, name: Option<&str>, kept: Option<Kept>) -> String {
    let name = name.filter(|n| !n.is_empty()).unwrap_or("<unnamed>");
    match namespace.filter(|n| !n.is_empty()) {
        Some(ns) => format!("{ns}/{name}"),
        None if kept.is_some_and(Kept::namespaced) => format!("default/{name}"),
        None => name.to_string(),
    }
}

fn skip_warning(file: &str, place: &Place, kind: Option<&str>, name: &str, reason: &str) -> String {
    let item = place
        .item
        .map(|i| format!("items[{i}] "))
        .unwrap_or_default();
    match kind {
        Some(kind) => format!(
            "{file}:{}: skipping {item}{kind} {name}: {reason}",
            place.line
        ),
        None => format!("{file}:{}: skipping {item}{name}: {reason}", place.line),
    }
}

/// Formats a field path, dropping `skip` leading segments (the wrapper
/// sequence of a split list item) and prefixing `items[N]` for list items.
fn field_path(path: &serde_path_to_error::Path, item: Option<usize>, skip: usize) -> String {
    let mut s = item.map(|i| format!("items[{i}]")).unwrap_or_default();
    for segment in path.iter().skip(skip) {
        match segment {
            Segment::Seq { index } => s.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(key);
            }
            Segment::Enum { variant } => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(variant);
            }
            Segment::Unknown => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push('?');
            }
        }
    }
    if s.is_empty() {
        s.push('.');
    }
    s
}

/// serde_yaml_ng decorates messages with its own path and a position
/// relative to the piece it parsed; we report both ourselves.
fn bare_message(message: &str, path: &str, location: Option<&serde_yaml_ng::Location>) -> String {
    let mut m = message;
    // Its path spells a leading index as `.[0]`.
    let dotted = format!(".{path}");
    for prefix in [path, dotted.as_str()] {
        if let Some(rest) = m.strip_prefix(prefix).and_then(|r| r.strip_prefix(": ")) {
            m = rest;
            break;
        }
    }
    if let Some(l) = location {
        let suffix = format!(" at line {} column {}", l.line(), l.column());
        if let Some(rest) = m.strip_suffix(suffix.as_str()) {
            m = rest;
        }
    }
    m.to_string()
}

fn syntax_error(file: &str, first_line: usize, e: &serde_yaml_ng::Error) -> LoadError {
    let location = e.location();
    let (line, column) = match &location {
        Some(l) => (first_line + l.line() - 1, Some(l.column())),
        None => (first_line, None),
    };
    let mut message = rebase_lines(&e.to_string(), first_line - 1);
    // The main position is already in front of the message.
    if column.is_some() {
        for pos in [
            format!(" at line {line} column {}", column.unwrap_or(0)),
            format!(
                " at position {}",
                location.as_ref().map_or(0, |l| l.index())
            ),
        ] {
            if let Some(i) = message.find(&pos) {
                message.replace_range(i..i + pos.len(), "");
                break;
            }
        }
    }
    LoadError::Syntax {
        file: file.into(),
        line,
        column,
        message,
    }
}

/// Shifts every `line N column M` in a libyaml message by `offset` lines.
fn rebase_lines(message: &str, offset: usize) -> String {
    let mut out = String::with_capacity(message.len() + 8);
    let mut rest = message;
    while let Some(i) = rest.find("line ") {
        out.push_str(&rest[..i + 5]);
        rest = &rest[i + 5..];
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let number = rest[..digits].parse::<usize>();
        match number {
            Ok(n) if rest[digits..].starts_with(" column ") => {
                out.push_str(&(n + offset).to_string());
                rest = &rest[digits..];
            }
            _ => {}
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  clusterIP: 10.96.0.10
  ports:
  - name: http
    port: 80
    protocol: TCP
    targetPort: 8080
  selector:
    app: web
";

    const SLICE: &str = "addressType: IPv4
apiVersion: discovery.k8s.io/v1
endpoints:
- addresses:
  - 10.244.1.5
  conditions:
    ready: true
  nodeName: node-a
  zone: zone-a
kind: EndpointSlice
metadata:
  labels:
    kubernetes.io/service-name: web
  name: web-abc
  namespace: shop
ports:
- name: http
  port: 8080
  protocol: TCP
";

    const NODE: &str = "apiVersion: v1
kind: Node
metadata:
  name: node-a
status:
  addresses:
  - address: 192.168.1.10
    type: InternalIP
";

    fn parse(text: &str) -> ObjectSet {
        match parse_objects(text, "in.yaml") {
            Ok(set) => set,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn parse_err(text: &str) -> LoadError {
        match parse_objects(text, "in.yaml") {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    fn names(set: &ObjectSet) -> Vec<String> {
        let meta = |m: &ObjectMeta| {
            format!(
                "{}/{}",
                m.namespace.clone().unwrap_or_default(),
                m.name.clone().unwrap_or_default()
            )
        };
        let mut v: Vec<String> = set
            .services
            .iter()
            .map(|(s, o)| format!("svc {} @{}", meta(&s.metadata), o.line))
            .collect();
        v.extend(
            set.endpoint_slices
                .iter()
                .map(|(s, o)| format!("eps {} @{}", meta(&s.metadata), o.line)),
        );
        v.extend(
            set.nodes
                .iter()
                .map(|(s, o)| format!("node {} @{}", meta(&s.metadata), o.line)),
        );
        v
    }

    /// Indents a top-level object as a `kubectl -o yaml` list item.
    fn as_item(obj: &str) -> String {
        let mut s = String::new();
        for (i, line) in obj.lines().enumerate() {
            s.push_str(if i == 0 { "- " } else { "  " });
            s.push_str(line);
            s.push('\n');
        }
        s
    }

    #[test]
    fn multi_document_with_empty_and_comment_documents() {
        let text = format!(
            "# leading comment\n---\n{SVC}---\n\n---\n# only a comment\n---\n{SLICE}--- \n{NODE}"
        );
        let set = parse(&text);
        assert_eq!(
            names(&set),
            [
                "svc shop/web @3",
                "eps shop/web-abc @22",
                "node /node-a @42"
            ]
        );
        assert_eq!(
            set.services[0]
                .0
                .spec
                .as_ref()
                .unwrap()
                .ports
                .as_ref()
                .unwrap()[0]
                .port,
            80
        );
        assert_eq!(
            set.endpoint_slices[0].0.endpoints.as_ref().unwrap()[0]
                .node_name
                .as_deref(),
            Some("node-a")
        );
        assert_eq!(set.services[0].1.to_string(), "in.yaml:3");
        assert!(set.warnings.is_empty(), "{:?}", set.warnings);
    }

    #[test]
    fn document_end_markers_and_directives() {
        let text = format!("%YAML 1.1\n---\n{SVC}...\n{NODE}...\n");
        let set = parse(&text);
        assert_eq!(names(&set), ["svc shop/web @3", "node /node-a @18"]);
    }

    #[test]
    fn kubectl_list() {
        let text = format!(
            "apiVersion: v1\nitems:\n{}{}{}kind: List\nmetadata:\n  resourceVersion: \"\"\n",
            as_item(SVC),
            as_item(SLICE),
            as_item(NODE)
        );
        let set = parse(&text);
        assert_eq!(
            names(&set),
            [
                "svc shop/web @3",
                "eps shop/web-abc @17",
                "node /node-a @36"
            ]
        );
    }

    #[test]
    fn list_parsed_the_same_on_fast_and_generic_paths() {
        // Indented items with an unusual dash layout still take the fast path;
        // a flow-style list only the generic one. Both must agree.
        let block = format!(
            "apiVersion: v1\nkind: List\nitems:\n{}",
            as_item(SVC)
                .lines()
                .map(|l| format!("  {l}\n"))
                .collect::<String>()
        );
        let flow = "{apiVersion: v1, kind: List, items: [{apiVersion: v1, kind: Service, metadata: {name: web, namespace: shop}}]}";
        let a = parse(&block);
        let b = parse(flow);
        assert_eq!(a.services.len(), 1);
        assert_eq!(a.services[0].0.metadata, b.services[0].0.metadata);
        assert_eq!(a.services[0].1.line, 4);
    }

    #[test]
    fn typed_lists_from_the_api_server_omit_item_kinds() {
        let text = "apiVersion: v1\nkind: ServiceList\nitems:\n- metadata:\n    name: a\n- metadata:\n    name: b\n    namespace: x\n";
        let set = parse(text);
        assert_eq!(names(&set), ["svc default/a @4", "svc x/b @6"]);
        let text = "{\"apiVersion\":\"discovery.k8s.io/v1\",\"kind\":\"EndpointSliceList\",\"items\":[{\"addressType\":\"IPv4\",\"endpoints\":[],\"metadata\":{\"name\":\"s\"}}]}";
        let set = parse(text);
        assert_eq!(names(&set), ["eps default/s @1"]);
    }

    #[test]
    fn json_list_as_kubectl_prints_it() {
        let svc: serde_json::Value = serde_yaml_ng::from_str(SVC).unwrap();
        let node: serde_json::Value = serde_yaml_ng::from_str(NODE).unwrap();
        let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "kube-system"}});
        let list = serde_json::json!({"apiVersion": "v1", "items": [svc, pod, node], "kind": "List", "metadata": {"resourceVersion": ""}});
        let text = serde_json::to_string_pretty(&list).unwrap();
        let set = parse(&text);
        assert_eq!(names(&set), ["svc shop/web @1", "node /node-a @1"]);
        assert_eq!(set.warnings.len(), 1);
        assert!(
            set.warnings[0].starts_with("in.yaml:1: skipping items[1] Pod kube-system/p:"),
            "{}",
            set.warnings[0]
        );
    }

    #[test]
    fn json_single_object_and_yaml_only_json() {
        let set = parse(
            "\n{\"apiVersion\": \"v1\", \"kind\": \"Node\", \"metadata\": {\"name\": \"n1\"}}\n",
        );
        assert_eq!(names(&set), ["node /n1 @2"]);
        // A trailing comment is YAML, not JSON: the YAML parser takes over.
        let set = parse(
            "{\"apiVersion\": \"v1\", \"kind\": \"Node\", \"metadata\": {\"name\": \"n2\"}} # c\n",
        );
        assert_eq!(names(&set), ["node /n2 @1"]);
    }

    #[test]
    fn missing_namespace_defaults() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: IPv4\nendpoints: []\nmetadata:\n  name: a-1\n  namespace: \"\"\n";
        let set = parse(text);
        assert_eq!(
            set.services[0].0.metadata.namespace.as_deref(),
            Some("default")
        );
        assert_eq!(
            set.endpoint_slices[0].0.metadata.namespace.as_deref(),
            Some("default")
        );
        let node = parse(NODE);
        assert_eq!(node.nodes[0].0.metadata.namespace, None);
    }

    #[test]
    fn unknown_kinds_and_missing_fields_warn() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p1\n  namespace: kube-system\n---\nkind: Service\nmetadata:\n  name: x\n---\napiVersion: v1\nmetadata:\n  name: y\n---\n- just a list\n---\napiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata:\n  name: old\n";
        let set = parse(text);
        assert!(names(&set).is_empty());
        assert_eq!(
            set.warnings,
            [
                "in.yaml:1: skipping Pod kube-system/p1: v1 Pod is not a Service, EndpointSlice or Node",
                "in.yaml:7: skipping Service x: no apiVersion",
                "in.yaml:11: skipping y: no kind",
                "in.yaml:15: skipping document: not a mapping",
                "in.yaml:17: skipping EndpointSlice old: apiVersion discovery.k8s.io/v1beta1 is not supported, want discovery.k8s.io/v1",
            ]
        );
    }

    #[test]
    fn syntax_error_reports_file_line_and_column() {
        // Line 8 has a mapping value where none is allowed.
        let text = format!("{NODE}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: a: b\n");
        let err = parse_err(&text);
        match &err {
            LoadError::Syntax { line, column, .. } => {
                assert_eq!((*line, *column), (13, Some(10)), "{err}");
            }
            other => panic!("wrong error: {other}"),
        }
        let msg = err.to_string();
        assert!(
            msg.starts_with("in.yaml:13:10: invalid YAML: mapping values are not allowed"),
            "{msg}"
        );
        assert!(
            !msg.contains("line 4 "),
            "position must be file-relative: {msg}"
        );
    }

    #[test]
    fn syntax_error_context_lines_are_file_relative() {
        let text = format!("{SVC}---\napiVersion: v1\nkind: Node\nmetadata:\n  name: [a\n");
        let msg = parse_err(&text).to_string();
        assert!(msg.starts_with("in.yaml:20:"), "{msg}");
        // libyaml names where the unclosed flow sequence started.
        assert!(msg.contains("line 19 column 9"), "{msg}");
    }

    #[test]
    fn type_error_names_object_and_field_path() {
        let text = format!("{NODE}---\n{}", SVC.replace("port: 80", "port: abc"));
        let err = parse_err(&text);
        let msg = err.to_string();
        assert_eq!(
            msg,
            "in.yaml:10: Service shop/web: spec.ports[0].port: invalid type: string \"abc\", expected i32 (at line 19, column 11)"
        );
    }

    #[test]
    fn wrong_shape_at_the_top_is_a_type_error_not_a_syntax_error() {
        let err = parse_err("apiVersion: v1\nkind: Service\nmetadata: 5\n");
        match err {
            LoadError::Type(t) => {
                assert_eq!((t.path.as_str(), t.at), ("metadata", Some((3, 11))));
                assert_eq!(t.object, "Service default/<unnamed>");
            }
            other => panic!("wrong error: {other}"),
        }
    }

    #[test]
    fn type_error_in_generic_path_has_path_too() {
        let text =
            "{apiVersion: v1, kind: Service, metadata: {name: w}, spec: {ports: [{port: x}]}}";
        let msg = parse_err(text).to_string();
        assert_eq!(msg, "in.yaml:1: Service default/w: spec.ports[0].port: invalid type: string \"x\", expected i32");
    }

    #[test]
    fn list_item_error_reports_list_line_and_index() {
        let bad = SLICE.replace("ready: true", "ready: maybe");
        let text = format!(
            "# dump\napiVersion: v1\nitems:\n{}{}kind: List\n",
            as_item(SVC),
            as_item(&bad)
        );
        let msg = parse_err(&text).to_string();
        assert_eq!(
            msg,
            "in.yaml:2: EndpointSlice shop/web-abc: items[1].endpoints[0].conditions.ready: invalid type: string \"maybe\", expected a boolean (at line 24, column 14)"
        );
        // Same through JSON, where only the list's line is known.
        let mut v: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        v["items"][1]["endpoints"][0]["conditions"]["ready"] = "maybe".into();
        let msg = parse_err(&format!("\n{v}")).to_string();
        assert_eq!(
            msg,
            "in.yaml:2: EndpointSlice shop/web-abc: items[1].endpoints[0].conditions.ready: invalid type: string \"maybe\", expected a boolean"
        );
    }

    #[test]
    fn list_item_syntax_error_is_file_relative() {
        let text = format!("apiVersion: v1\nitems:\n{}- apiVersion: v1\n  kind: Node\n  metadata: {{name: [}}\nkind: List\n", as_item(SVC));
        let err = parse_err(&text);
        match err {
            LoadError::Syntax { line, .. } => assert_eq!(line, 19),
            other => panic!("wrong error: {other}"),
        }
    }

    #[test]
    fn multi_line_quoted_scalar_at_column_zero_does_not_fool_the_splitter() {
        // The continuation line looks like the end of the items block and
        // like a `kind:` key, but it is inside a quoted string.
        let text = "apiVersion: v1\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata:\n    name: a\n    annotations:\n      note: \"x\nkind: Pod\"\nkind: List\n";
        let set = parse(text);
        // Only the generic path can read this, and it knows no item lines.
        assert_eq!(names(&set), ["svc default/a @1"]);
        let note = &set.services[0].0.metadata.annotations.as_ref().unwrap()["note"];
        assert_eq!(note, "x kind: Pod");
    }

    #[test]
    fn alias_across_list_items_is_read_as_a_whole() {
        // Cut into items, the second one loses its anchor; the loader must
        // notice and read the list in one piece instead of failing.
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata: &m\n    name: n1\n- apiVersion: v1\n  kind: Node\n  metadata: *m\n";
        let set = parse(text);
        // Both items name n1: the later one is kept, with a warning.
        assert_eq!(names(&set), ["node /n1 @1"]);
        assert!(
            set.warnings[0].contains("Node n1 is repeated"),
            "{:?}",
            set.warnings
        );
    }

    #[test]
    fn block_scalar_with_dashes_is_not_split() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  annotations:\n    note: |\n      ---\n      --- x\n      ...\n---\napiVersion: v1\nkind: Node\nmetadata:\n  name: n\n";
        let set = parse(text);
        assert_eq!(names(&set), ["svc default/a @1", "node /n @11"]);
        let note = &set.services[0].0.metadata.annotations.as_ref().unwrap()["note"];
        assert_eq!(note, "---\n--- x\n...\n");
    }

    #[test]
    fn parallel_run_keeps_order_and_matches_sequential() {
        let mut text = String::new();
        for i in 0..50 {
            text.push_str("---\n");
            text.push_str(&SVC.replace("name: web", &format!("name: web{i}")));
            text.push_str("---\n");
            text.push_str(&SLICE.replace("name: web-abc", &format!("name: web{i}-abc")));
        }
        let seq = parse_with(&text, "in.yaml", usize::MAX).unwrap();
        let par = parse_with(&text, "in.yaml", 0).unwrap();
        assert_eq!(seq, par);
        assert_eq!(par.services.len(), 50);
        assert_eq!(par.services[49].0.metadata.name.as_deref(), Some("web49"));
        // An error in the second half is still the one reported.
        let bad = text.replacen("port: 8080\n  protocol: TCP\n", "port: x\n", 1);
        let e1 = parse_with(&bad, "in.yaml", 0).unwrap_err().to_string();
        let e2 = parse_with(&bad, "in.yaml", usize::MAX)
            .unwrap_err()
            .to_string();
        assert_eq!(e1, e2);
        assert!(
            e1.contains("EndpointSlice shop/web0-abc: ports[0].port"),
            "{e1}"
        );
    }

    #[test]
    fn extend_appends_in_order() {
        let mut a = parse(SVC);
        let b = parse_objects(NODE, "b.yaml").unwrap();
        a.extend(b);
        assert_eq!(a.services.len(), 1);
        assert_eq!(a.nodes[0].1.to_string(), "b.yaml:1");
    }

    #[test]
    fn load_objects_reports_missing_file_and_bad_utf8() {
        let err = load_objects("/nonexistent/objects.yaml").unwrap_err();
        assert_eq!(err.to_string(), "/nonexistent/objects.yaml: cannot read");
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert!(source.is_some_and(|s| s.contains("No such file")));

        let path = std::env::temp_dir().join(format!("objects-utf8-{}.yaml", std::process::id()));
        std::fs::write(
            &path,
            b"apiVersion: v1\nkind: Node\nmetadata:\n  name: \xff\n",
        )
        .unwrap();
        let path = path.to_str().unwrap().to_string();
        let err = load_objects(&path).unwrap_err();
        std::fs::remove_file(&path).ok();
        assert_eq!(
            err.to_string(),
            format!("{path}:4: input is not valid UTF-8")
        );
    }

    /// xorshift64*: deterministic, no extra crates.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn random_and_mutated_inputs_never_panic() {
        let list = format!(
            "apiVersion: v1\nitems:\n{}{}kind: List\n",
            as_item(SVC),
            as_item(SLICE)
        );
        let json =
            serde_json::to_string(&serde_yaml_ng::from_str::<serde_json::Value>(&list).unwrap())
                .unwrap();
        let seeds = [
            format!("{SVC}---\n{SLICE}---\n{NODE}"),
            list,
            json,
            "%YAML 1.1\n---\n...\n--- |\n  text\n".to_string(),
        ];
        let alphabet: Vec<char> = " \n\t-:#'\"[]{},|>&*!%?.\\0aZ\u{e9}\u{feff}\r"
            .chars()
            .collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut outcomes = [0usize; 2];
        for round in 0..400 {
            let seed = &seeds[round % seeds.len()];
            let mut chars: Vec<char> = seed.chars().collect();
            for _ in 0..1 + rng.below(6) {
                let at = rng.below(chars.len() + 1);
                match rng.below(6) {
                    0 => {
                        let end = (at + rng.below(40)).min(chars.len());
                        chars.drain(at..end);
                    }
                    1 => {
                        for _ in 0..1 + rng.below(8) {
                            let c = alphabet[rng.below(alphabet.len())];
                            chars.insert(at.min(chars.len()), c);
                        }
                    }
                    2 => {
                        let end = (at + rng.below(80)).min(chars.len());
                        let copy: Vec<char> = chars[at..end].to_vec();
                        let to = rng.below(chars.len() + 1);
                        chars.splice(to..to, copy);
                    }
                    3 => chars.truncate(at),
                    4 => {
                        if at < chars.len() {
                            chars[at] = alphabet[rng.below(alphabet.len())];
                        }
                    }
                    _ => {
                        // Pure noise now and then.
                        chars = (0..rng.below(200))
                            .map(|_| alphabet[rng.below(alphabet.len())])
                            .collect();
                    }
                }
            }
            let text: String = chars.into_iter().collect();
            // libyaml also breaks lines at a lone CR.
            let lines = 1 + text.replace("\r\n", "\n").matches(['\n', '\r']).count();
            // Alternate between the sequential and threaded runners.
            let threshold = if round % 2 == 0 { usize::MAX } else { 0 };
            match parse_with(&text, "fuzz.yaml", threshold) {
                Ok(set) => {
                    outcomes[0] += 1;
                    let origins = set
                        .services
                        .iter()
                        .map(|o| &o.1)
                        .chain(set.endpoint_slices.iter().map(|o| &o.1))
                        .chain(set.nodes.iter().map(|o| &o.1));
                    for o in origins {
                        assert!(
                            o.line >= 1 && o.line <= lines,
                            "origin {o} outside input:\n{text}"
                        );
                    }
                    for w in &set.warnings {
                        assert!(w.starts_with("fuzz.yaml:"), "{w}");
                    }
                }
                Err(e) => {
                    outcomes[1] += 1;
                    let msg = e.to_string();
                    assert!(msg.starts_with("fuzz.yaml:"), "{msg}");
                    assert!(!matches!(e, LoadError::Internal { .. }), "{msg}\n{text}");
                    let line = match &e {
                        LoadError::Syntax { line, .. } => Some(*line),
                        LoadError::Type(t) => Some(t.line),
                        _ => None,
                    };
                    if let Some(line) = line {
                        assert!(line >= 1 && line <= lines + 1, "{msg}\n{text}");
                    }
                }
            }
        }
        // The mutations must exercise both outcomes to be worth anything.
        assert!(outcomes[0] > 20 && outcomes[1] > 20, "{outcomes:?}");
    }
}
