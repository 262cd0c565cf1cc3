//! Repeats in an objects file: two objects with one `Kind ns/name`, or one key twice in a
//! YAML mapping. The API server has neither; a file can. Both resolve as last wins (an API
//! update replaces the object, and the YAML decoder keeps a repeated key's last value) and
//! both are reported with `file:line`, so `render`, `diff` and the daemon agree.

use super::objects::{ObjectSet, Origin};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;

/// Keeps the last of each duplicate object and warns about repeated keys and objects.
pub fn checked(mut set: ObjectSet, text: &str, file: &str) -> ObjectSet {
    set.warnings.extend(duplicate_keys(text, file));
    let mut warnings = Vec::new();
    keep_last(&mut set.services, "Service", &mut warnings, |s| {
        ns_name(&s.metadata)
    });
    keep_last(
        &mut set.endpoint_slices,
        "EndpointSlice",
        &mut warnings,
        |s| ns_name(&s.metadata),
    );
    keep_last(&mut set.nodes, "Node", &mut warnings, |n| {
        n.metadata.name.clone().unwrap_or_default()
    });
    set.warnings.extend(warnings);
    set
}

fn ns_name(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or("default"),
        m.name.as_deref().unwrap_or("")
    )
}

/// Drops every object that a later one with the same key replaces, keeping input order.
fn keep_last<T>(
    list: &mut Vec<(T, Origin)>,
    kind: &str,
    warnings: &mut Vec<String>,
    key: impl Fn(&T) -> String,
) {
    let keys: Vec<String> = list.iter().map(|(o, _)| key(o)).collect();
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        last.insert(k, i);
    }
    if last.len() == keys.len() {
        return;
    }
    let mut i = 0;
    let origins: Vec<Origin> = list.iter().map(|(_, o)| o.clone()).collect();
    list.retain(|_| {
        let keep = last[keys[i].as_str()] == i;
        if !keep {
            let winner = &origins[last[keys[i].as_str()]];
            warnings.push(format!(
                "{}: {kind} {} is repeated at {winner}; the later one is used (last wins, as an API update would)",
                origins[i], keys[i]
            ));
        }
        i += 1;
        keep
    });
}

/// Repeated objects of a stream, found one object at a time: the same warnings, in the
/// same order, as [`checked`] gives for the whole set. `T` is kept per object (for the
/// caller to undo what a replaced object did).
#[derive(Debug)]
pub struct Repeats<T> {
    /// Per kind (0 Service, 1 EndpointSlice, 2 Node): key → (position, origin, extra) of
    /// the last object with that key.
    last: [HashMap<String, (usize, Origin, T)>; 3],
    /// Replaced objects: (kind, position, key, origin).
    replaced: Vec<(usize, usize, String, Origin)>,
    seen: usize,
}

impl<T> Default for Repeats<T> {
    fn default() -> Self {
        Repeats {
            last: [HashMap::new(), HashMap::new(), HashMap::new()],
            replaced: Vec::new(),
            seen: 0,
        }
    }
}

/// `ns/name` as [`checked`] keys namespaced objects.
pub fn object_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    ns_name(meta)
}

const KINDS: [&str; 3] = ["Service", "EndpointSlice", "Node"];

impl<T> Repeats<T> {
    /// Records an object of `kind` (0 Service, 1 EndpointSlice, 2 Node); returns the
    /// extra of the earlier object it replaces, if any.
    pub fn record(&mut self, kind: usize, key: String, origin: &Origin, extra: T) -> Option<T> {
        self.seen += 1;
        let old = self.last[kind].insert(key.clone(), (self.seen, origin.clone(), extra))?;
        self.replaced.push((kind, old.0, key, old.1));
        Some(old.2)
    }

    /// The warnings [`checked`] would give: per kind, in input order of the losers.
    pub fn warnings(mut self) -> Vec<String> {
        self.replaced.sort_by_key(|(kind, pos, _, _)| (*kind, *pos));
        self.replaced
            .iter()
            .map(|(kind, _, key, origin)| {
                let winner = &self.last[*kind][key].1;
                format!(
                    "{origin}: {} {key} is repeated at {winner}; the later one is used (last wins, as an API update would)",
                    KINDS[*kind]
                )
            })
            .collect()
    }
}

/// `file:line:column: duplicate key ...` for the first repeated mapping key of each
/// document (the decoder keeps the last value without a word).
pub fn duplicate_keys(text: &str, file: &str) -> Vec<String> {
    duplicate_keys_scanned(text, file, may_repeat_keys(text))
}

/// False if `text` surely repeats no key, so [`duplicate_keys`] has nothing to find.
/// A line scan only (no YAML parse), so it may run on text the depth guard has not
/// cleared yet, beside the load.
pub fn may_repeat_keys(text: &str) -> bool {
    is_json_like(text) || maybe_repeated(text)
}

fn is_json_like(text: &str) -> bool {
    text.trim_start().starts_with(['{', '['])
}

/// [`duplicate_keys`] with the answer of [`may_repeat_keys`] for `text` given.
pub fn duplicate_keys_scanned(text: &str, file: &str, may_repeat: bool) -> Vec<String> {
    // A second full YAML parse would cost as much as loading; the line scan clears the
    // common case (block-style YAML without repeats) at a fraction of that.
    if !may_repeat {
        return Vec::new();
    }
    if is_json_like(text) {
        if let Some(found) = json_duplicate_keys(text, file) {
            return found;
        }
    }
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let path = RefCell::new(None);
        let Err(e) = Node { path: &path }.deserialize(doc) else {
            continue;
        };
        // Anything but our own error was reported (or accepted) by the loader already;
        // the stream cannot be read past it (the iterator would repeat the error).
        let Some(segments) = path.into_inner() else {
            break;
        };
        let place = match e.location() {
            Some(l) => format!("{file}:{}:{}", l.line(), l.column()),
            None => file.to_string(),
        };
        out.push(message(&place, segments));
    }
    out
}

/// False only if no block mapping of `text` repeats a key. Anything the scan does not
/// follow (flow mappings, JSON, complex keys, tabs, escapes in quoted keys) answers true,
/// and so may text that merely looks like a repeat (inside a block scalar, say).
fn maybe_repeated(text: &str) -> bool {
    // Open mappings: (key column, keys so far), innermost last. Mappings of objects
    // have a handful of keys, where a linear search beats hashing.
    let mut open: Vec<(usize, Keys)> = Vec::new();
    for raw in text.lines() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.starts_with("---") || line.starts_with("...") {
            open.clear();
            continue;
        }
        let body = line.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') || body.starts_with('%') {
            continue;
        }
        if body.starts_with('\t') {
            return true;
        }
        let mut col = line.len() - body.len();
        let mut rest = body;
        let mut item = None;
        while rest == "-" || rest.starts_with("- ") {
            item.get_or_insert(col);
            let after = rest[1..].trim_start_matches(' ');
            col += rest.len() - after.len();
            rest = after;
        }
        if rest.starts_with(['{', '?', '[']) || rest.starts_with("\"{") {
            return true;
        }
        // A new sequence item ends the mappings of the previous one.
        if let Some(dash) = item {
            open.retain(|(c, _)| *c <= dash);
        }
        open.retain(|(c, _)| *c <= col);
        let Some((key, value)) = split_key(rest) else {
            continue;
        };
        let Some(key) = key else {
            return true;
        };
        if value.trim_start().starts_with('{') {
            return true;
        }
        match open.last_mut() {
            Some((c, keys)) if *c == col => {
                if !keys.insert(key) {
                    return true;
                }
            }
            _ => {
                let mut keys = Keys::default();
                keys.insert(key);
                open.push((col, keys));
            }
        }
    }
    false
}

/// The keys of one open mapping: a short list, a set once it grows.
#[derive(Default)]
struct Keys<'a> {
    few: Vec<&'a str>,
    many: Option<HashSet<&'a str>>,
}

impl<'a> Keys<'a> {
    /// False if `key` was there already.
    fn insert(&mut self, key: &'a str) -> bool {
        if let Some(set) = &mut self.many {
            return set.insert(key);
        }
        if self.few.contains(&key) {
            return false;
        }
        self.few.push(key);
        if self.few.len() > 32 {
            self.many = Some(self.few.drain(..).collect());
        }
        true
    }
}

/// `key: value` → (key without quotes, value); `Some((None, _))` for a key the scan
/// cannot read safely; `None` for a line that is no mapping entry.
fn split_key(s: &str) -> Option<(Option<&str>, &str)> {
    if let Some(q) = s.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let end = s[1..].find(q)? + 1;
        let key = &s[1..end];
        // An escape may hide the real end of the key: leave it to the decoder.
        if key.contains('\\') || (q == '\'' && s[end + 1..].starts_with('\'')) {
            return Some((None, ""));
        }
        let after = s[end + 1..].strip_prefix(':')?;
        if !(after.is_empty() || after.starts_with(' ')) {
            return None;
        }
        return Some((Some(key), after));
    }
    let end = s.find(": ").or_else(|| s.strip_suffix(':').map(str::len))?;
    let key = &s[..end];
    if key.contains(" #") {
        return None;
    }
    Some((Some(key.trim_end()), &s[end + 1..]))
}

/// The JSON decoder for JSON input (much faster than YAML's); `None` if it is not one
/// JSON value after all.
fn json_duplicate_keys(text: &str, file: &str) -> Option<Vec<String>> {
    let path = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let e = match (Node { path: &path }).deserialize(&mut de) {
        Ok(()) => return de.end().ok().map(|()| Vec::new()),
        Err(e) => e,
    };
    let segments = path.into_inner()?;
    Some(vec![message(
        &format!("{file}:{}:{}", e.line(), e.column()),
        segments,
    )])
}

/// `place: duplicate key "k" in a.b[0]; ...` from the path, innermost segment first.
fn message(place: &str, mut segments: Vec<String>) -> String {
    segments.reverse();
    let key = segments.pop().unwrap_or_default();
    let mut at = String::new();
    for s in &segments {
        if !s.starts_with('[') && !at.is_empty() {
            at.push('.');
        }
        at.push_str(s);
    }
    let within = if at.is_empty() {
        String::new()
    } else {
        format!(" in {at}")
    };
    format!("{place}: duplicate key {key:?}{within}; the last value is used")
}

/// Walks one value; on a repeated key, fails and leaves the path (innermost first) in
/// `path`, each level adding its own segment as the error passes through.
#[derive(Clone, Copy)]
struct Node<'a> {
    path: &'a RefCell<Option<Vec<String>>>,
}

impl Node<'_> {
    fn add(&self, segment: impl FnOnce() -> String) {
        if let Some(p) = self.path.borrow_mut().as_mut() {
            p.push(segment());
        }
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        // Tagged values (`!tag x`): not part of Kubernetes objects; nothing to check.
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        loop {
            match seq.next_element_seed(self) {
                Ok(Some(())) => i += 1,
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.add(|| format!("[{i}]"));
                    return Err(e);
                }
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen: HashSet<String> = HashSet::new();
        loop {
            // The check runs inside the key's own decoding, so the error (and its
            // location) is the repeated key's, not the mapping's.
            let key = match map.next_key_seed(Key {
                seen: &mut seen,
                path: self.path,
            })? {
                None => return Ok(()),
                Some(k) => k,
            };
            if let Err(e) = map.next_value_seed(self) {
                self.add(|| key.unwrap_or_else(|| "?".into()));
                return Err(e);
            }
        }
    }
}

/// Decodes a mapping key as text (`None` for keys that are not scalars, not compared)
/// and fails on one already `seen`.
struct Key<'a, 'p> {
    seen: &'a mut HashSet<String>,
    path: &'p RefCell<Option<Vec<String>>>,
}

impl Key<'_, '_> {
    fn scalar<E: de::Error>(self, k: String) -> Result<Option<String>, E> {
        if self.seen.insert(k.clone()) {
            return Ok(Some(k));
        }
        *self.path.borrow_mut() = Some(vec![k]);
        Err(E::custom("duplicate key"))
    }
}

impl<'de> DeserializeSeed<'de> for Key<'_, '_> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key<'_, '_> {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<String>, E> {
        self.scalar(v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Option<String>, E> {
        self.scalar(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<String>, E> {
        self.scalar(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<String>, E> {
        self.scalar(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Option<String>, E> {
        self.scalar(v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<String>, E> {
        self.scalar("null".into())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<String>, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
        while map
            .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
            .is_some()
        {}
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUP: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: web
  labels:
    a: \"1\"
    a: \"2\"
spec:
  ports:
  - port: 80
    port: 81
---
kind: Service
kind: Service
";

    #[test]
    fn repeated_keys_are_named_with_their_line_and_path() {
        let w = duplicate_keys(DUP, "in.yaml");
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("in.yaml:7:5: ")
                && w[0].contains("duplicate key \"a\" in metadata.labels"),
            "{w:?}"
        );
        assert!(
            w[1].starts_with("in.yaml:14:1: ") && w[1].contains("duplicate key \"kind\";"),
            "{w:?}"
        );
    }

    #[test]
    fn repeated_keys_in_json_and_flow_style_are_found_too() {
        let w = duplicate_keys(
            "{\"a\": 1,\n \"b\": {\"c\": [1, {\"d\": 1, \"d\": 2}]}}",
            "x.json",
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("x.json:2:28: "), "{w:?}");
        assert!(w[0].contains("duplicate key \"d\" in b.c[1]"), "{w:?}");
    }

    #[test]
    fn the_line_scan_never_clears_a_repeat() {
        for text in [
            DUP,
            "a:\n  b: 1\n  c:\n    d: 1\n  b: 2\n",
            "items:\n- name: x\n  port: 1\n  port: 2\n",
            "items:\n  - name: x\n  - name: y\n    name: z\n",
            "- - a: 1\n    a: 2\n",
            "\"a\": 1\na: 2\n",
            "a: {b: 1, b: 2}\n",
            "{\"a\": 1, \"a\": 2}\n",
            "? a\n: 1\na: 2\n",
            "'a''b': 1\n'a''b': 2\n",
            "\"a\\\"b\": 1\n\"a\\\"b\": 2\n",
        ] {
            assert!(maybe_repeated(text), "{text}");
            assert!(!duplicate_keys(text, "f").is_empty(), "{text}");
        }
        for text in [
            "a: 1\nb: 2\n---\na: 3\n",
            "items:\n- name: x\n  port: 1\n- name: y\n  port: 2\n",
            "a:\n  b: 1\nc:\n  b: 1\n",
            "a: |\n  x: 1\nb: 1\n",
            "note: 'x: 1'\nother: \"{\\\"a\\\": 1}\"\n",
        ] {
            assert!(!maybe_repeated(text), "{text}");
        }
    }

    #[test]
    fn text_the_decoder_rejects_ends_the_scan() {
        // Terminates (the stream iterator repeats a syntax error forever).
        assert!(duplicate_keys("a: 1\na: 2\n---\nb: [oops\n---\nc: 1\n", "f").len() <= 1);
    }

    #[test]
    fn clean_documents_give_no_warning() {
        let text = "a: 1\nb: {c: 1, d: [x, y]}\n---\na: 2\n? [1, 2]\n: z\n";
        assert!(duplicate_keys(text, "f").is_empty());
    }
}
