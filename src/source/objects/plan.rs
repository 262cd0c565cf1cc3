//! Planning: which path each document or list item takes.

use super::*;

#[derive(Clone, Copy, Debug)]
pub(super) enum Plan {
    /// Deserialize straight into the kept kind.
    Typed(Kept),
    /// A kind we skip: read just enough to name it in the warning.
    Probe,
    /// Anything else: go through `serde_yaml_ng::Value`.
    Slow,
}

/// Where a piece sits in the input, for origins and messages.
#[derive(Clone, Copy, Debug)]
pub(super) struct Place {
    pub(super) doc: usize,
    /// The document's (list's) start line.
    pub(super) doc_line: usize,
    /// The line reported as the object's origin.
    pub(super) line: usize,
    /// Index in the list's `items`, for list items.
    pub(super) item: Option<usize>,
    /// Kind assumed for list items that carry none.
    pub(super) default: Option<Kept>,
}

pub(super) enum Unit<'a> {
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
    pub(super) fn weight(&self) -> usize {
        match self {
            Unit::Yaml { text, .. } => text.len(),
            // Already parsed; converting is a fraction of parsing.
            Unit::Json { .. } => 256,
        }
    }
}

pub(super) fn plan<'a>(docs: Vec<(usize, &Doc<'a>)>, slow_docs: &HashSet<usize>) -> Vec<Unit<'a>> {
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
pub(super) fn head_is_list(head: &str, default: Option<Kept>) -> bool {
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

pub(super) fn plan_items<'a>(
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

pub(super) fn item_unit<'a>(
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

pub(super) fn plan_json(mut value: serde_json::Value, place: Place, units: &mut Vec<Unit<'_>>) {
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
