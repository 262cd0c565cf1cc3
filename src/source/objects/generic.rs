//! The generic path over parsed values (YAML or JSON).

use super::*;

/// What the generic path needs from a parsed document.
pub(super) trait Tree: Sized + serde::Deserializer<'static> {
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

pub(super) fn dispatch<V: Tree>(
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

pub(super) fn typed_from<T: KeptObject, V: Tree>(
    value: V,
    line: usize,
) -> Result<Item, (serde_path_to_error::Path, String)> {
    serde_path_to_error::deserialize::<_, T>(value)
        .map(|obj| obj.into_item(line))
        .map_err(|e| (e.path().clone(), e.inner().to_string()))
}
