//! The objects a daemon has received, keyed by namespace/name, and the events sources send.

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::Metadata;
use std::collections::BTreeMap;

/// One watch event, or a complete (re)list.
#[derive(Clone, Debug)]
pub enum Change<K> {
    /// The full set after an initial list or a relist.
    Replace(Vec<K>),
    // Boxed: objects are large and most events carry one.
    Apply(Box<K>),
    Delete(Box<K>),
}

#[derive(Clone, Debug)]
pub enum SourceEvent {
    Services(Change<Service>),
    Slices(Change<EndpointSlice>),
    Nodes(Change<Node>),
}

/// What applying events did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub services_changed: usize,
    pub slices_changed: usize,
    pub nodes_changed: usize,
}

impl Applied {
    pub fn any(&self) -> bool {
        self.services_changed + self.slices_changed + self.nodes_changed > 0
    }
}

#[derive(Debug, Default)]
pub struct Store {
    pub services: BTreeMap<String, Service>,
    pub slices: BTreeMap<String, EndpointSlice>,
    pub nodes: BTreeMap<String, Node>,
    pub services_synced: bool,
    pub slices_synced: bool,
    pub nodes_synced: bool,
}

fn key(m: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or("")
    )
}

/// Applies one change; returns how many objects actually changed (identical relists and
/// resyncs change nothing, so they never touch the rules).
fn apply<K: Metadata<Ty = ObjectMeta> + PartialEq>(
    map: &mut BTreeMap<String, K>,
    change: Change<K>,
) -> usize {
    match change {
        Change::Replace(items) => {
            let new: BTreeMap<String, K> =
                items.into_iter().map(|o| (key(o.metadata()), o)).collect();
            let mut n = new.iter().filter(|(k, v)| map.get(*k) != Some(*v)).count();
            n += map.keys().filter(|k| !new.contains_key(*k)).count();
            *map = new;
            n
        }
        Change::Apply(o) => {
            let k = key(o.metadata());
            if map.get(&k) == Some(&*o) {
                0
            } else {
                map.insert(k, *o);
                1
            }
        }
        Change::Delete(o) => usize::from(map.remove(&key(o.metadata())).is_some()),
    }
}

impl Store {
    pub fn all_synced(&self) -> bool {
        self.services_synced && self.slices_synced && self.nodes_synced
    }

    pub fn apply(&mut self, ev: SourceEvent) -> Applied {
        let mut a = Applied::default();
        match ev {
            SourceEvent::Services(c) => {
                self.services_synced |= matches!(c, Change::Replace(_));
                a.services_changed = apply(&mut self.services, c);
            }
            SourceEvent::Slices(c) => {
                self.slices_synced |= matches!(c, Change::Replace(_));
                a.slices_changed = apply(&mut self.slices, c);
            }
            SourceEvent::Nodes(c) => {
                self.nodes_synced |= matches!(c, Change::Replace(_));
                a.nodes_changed = apply(&mut self.nodes, c);
            }
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, rv: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}
        }))
        .unwrap()
    }

    #[test]
    fn identical_relist_changes_nothing() {
        let mut s = Store::default();
        let a = s.apply(SourceEvent::Services(Change::Replace(vec![
            svc("a", "1"),
            svc("b", "2"),
        ])));
        assert_eq!(a.services_changed, 2);
        assert!(s.services_synced && !s.all_synced());
        let a = s.apply(SourceEvent::Services(Change::Replace(vec![
            svc("b", "2"),
            svc("a", "1"),
        ])));
        assert!(!a.any());
        let a = s.apply(SourceEvent::Services(Change::Replace(vec![svc("a", "3")])));
        assert_eq!(a.services_changed, 2, "a changed, b removed");
        assert_eq!(
            s.apply(SourceEvent::Services(Change::Apply(Box::new(svc(
                "a", "3"
            )))))
            .services_changed,
            0
        );
        assert_eq!(
            s.apply(SourceEvent::Services(Change::Delete(Box::new(svc(
                "a", "3"
            )))))
            .services_changed,
            1
        );
        assert!(s.services.is_empty());
    }
}
