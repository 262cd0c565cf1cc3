//! Lenient probing of kind, apiVersion and metadata, and the texts of messages.

use super::*;

/// Just the identifying fields of a document; everything else is skipped.
/// Never fails on well-formed YAML, which is what tells a syntax error from
/// a type error.
#[derive(Deserialize)]
pub(super) struct Probe {
    #[serde(rename = "apiVersion", default)]
    pub(super) api_version: Loose,
    #[serde(default)]
    pub(super) kind: Loose,
    #[serde(default)]
    pub(super) metadata: Loose,
}

impl Probe {
    pub(super) fn api(&self) -> Option<&str> {
        self.api_version.as_str()
    }
    pub(super) fn kind(&self) -> Option<&str> {
        self.kind.as_str()
    }
    pub(super) fn name(&self, kept: Option<Kept>) -> String {
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
pub(super) enum Loose {
    Str(String),
    Meta {
        name: Option<String>,
        namespace: Option<String>,
    },
    #[default]
    Other,
}

impl Loose {
    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Loose::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(super) fn into_string(self) -> Option<String> {
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

/// `ns/name` (namespace defaulted for namespaced kinds we keep), or just the
/// name for cluster-scoped or unknown objects without a namespace.
pub(super) fn object_name(
    namespace: Option<&str>,
    name: Option<&str>,
    kept: Option<Kept>,
) -> String {
    let name = name.filter(|n| !n.is_empty()).unwrap_or("<unnamed>");
    match namespace.filter(|n| !n.is_empty()) {
        Some(ns) => format!("{ns}/{name}"),
        None if kept.is_some_and(Kept::namespaced) => format!("default/{name}"),
        None => name.to_string(),
    }
}

pub(super) fn skip_warning(
    file: &str,
    place: &Place,
    kind: Option<&str>,
    name: &str,
    reason: &str,
) -> String {
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
pub(super) fn field_path(
    path: &serde_path_to_error::Path,
    item: Option<usize>,
    skip: usize,
) -> String {
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
pub(super) fn bare_message(
    message: &str,
    path: &str,
    location: Option<&serde_yaml_ng::Location>,
) -> String {
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

pub(super) fn syntax_error(file: &str, first_line: usize, e: &serde_yaml_ng::Error) -> LoadError {
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
pub(super) fn rebase_lines(message: &str, offset: usize) -> String {
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
