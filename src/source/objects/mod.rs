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
    #[error("{file}:{line}: input is not valid UTF-8{hint}")]
    Utf8 {
        file: String,
        line: usize,
        /// Empty, or `; ` and what the bytes look like instead.
        hint: String,
    },
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

/// Receives the objects of an input one at a time, in input order, as they are decoded:
/// nothing forces a whole dump's objects to be in memory at once.
pub trait ObjectSink {
    fn service(&mut self, obj: Service, origin: Origin);
    fn slice(&mut self, obj: EndpointSlice, origin: Origin);
    fn node(&mut self, obj: Node, origin: Origin);
    /// A note about a skipped document, starting `file:line:`.
    fn warning(&mut self, warning: String);
}

impl ObjectSink for ObjectSet {
    fn service(&mut self, obj: Service, origin: Origin) {
        self.services.push((obj, origin));
    }
    fn slice(&mut self, obj: EndpointSlice, origin: Origin) {
        self.endpoint_slices.push((obj, origin));
    }
    fn node(&mut self, obj: Node, origin: Origin) {
        self.nodes.push((obj, origin));
    }
    fn warning(&mut self, warning: String) {
        self.warnings.push(warning);
    }
}

/// Reads one input (`-` is standard input) as text, capped and checked for UTF-8.
pub fn read_text(path: &str) -> Result<(String, String), LoadError> {
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
    let text = crate::encoding::decode(bytes, name).map_err(|e| LoadError::Utf8 {
        file: name.into(),
        line: e.line,
        hint: match e.kind {
            crate::encoding::NotText::Unknown => String::new(),
            kind => format!("; {}", kind.hint()),
        },
    })?;
    Ok((name.to_string(), text))
}

/// Reads and parses one input; `-` reads standard input.
pub fn load_objects(path: &str) -> Result<ObjectSet, LoadError> {
    let (name, text) = read_text(path)?;
    parse_objects(&text, &name)
}

/// Parses the text of one input; `file` is only used in origins and messages.
pub fn parse_objects(text: &str, file: &str) -> Result<ObjectSet, LoadError> {
    let set = stream_objects(text, file, ObjectSet::default)?;
    Ok(super::duplicates::checked(set, text, file))
}

/// Decodes `text` into a sink made by `new_sink`, one object at a time in input order.
/// In the rare case a fast-path guess must be redone, decoding starts over with a fresh
/// sink, so a sink never sees an object twice. Repeated objects and keys are the
/// caller's to check (see `duplicates`).
pub fn stream_objects<S: ObjectSink>(
    text: &str,
    file: &str,
    new_sink: impl FnMut() -> S,
) -> Result<S, LoadError> {
    super::guard::check_depth(text, super::guard::MAX_DEPTH).map_err(|e| LoadError::Syntax {
        file: file.into(),
        line: e.line,
        column: Some(e.column),
        message: e.to_string(),
    })?;
    // Threads only pay off once there is real work to share.
    parse_with(text, file, 256 << 10, new_sink)
}

fn parse_with<S: ObjectSink>(
    text: &str,
    file: &str,
    min_parallel_bytes: usize,
    mut new_sink: impl FnMut() -> S,
) -> Result<S, LoadError> {
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
        let mut sink = new_sink();
        let failure = run_units(units, &file, threads, &mut |item| {
            deliver(&mut sink, item, &file)
        });
        let Some(failure) = failure else {
            return Ok(sink);
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

fn deliver<S: ObjectSink>(sink: &mut S, item: Item, file: &Arc<str>) {
    let origin = |line| Origin {
        file: file.clone(),
        line,
    };
    match item {
        Item::Service(o, line) => sink.service(*o, origin(line)),
        Item::Slice(o, line) => sink.slice(*o, origin(line)),
        Item::Node(o, line) => sink.node(*o, origin(line)),
        Item::Warning(w) => sink.warning(w),
    }
}

mod fast;
#[cfg(test)]
mod fast_tests;
mod generic;
mod messages;
mod plan;
mod run;
mod split;
#[cfg(test)]
mod tests;

use generic::*;
use messages::*;
use plan::*;
use run::*;
use split::*;
