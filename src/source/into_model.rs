//! An objects file decoded straight into one family's model, one object at a time (as the
//! daemon's API source feeds its store): the raw objects of a dump are never all in memory.
//! The result, warnings included and in the same order, is the one of loading the whole
//! [`ObjectSet`](super::objects::ObjectSet) and building the model from it.

use super::duplicates::{self, Repeats};
use super::objects::{self, LoadError, ObjectSink, Origin};
use crate::model::cache::ModelCache;
use crate::model::node::NodeInfo;
use crate::model::{service_key, slice_key, ClusterModel, ModelOptions, Warnings};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::ops::Range;

/// What one objects file gave.
pub struct Loaded {
    pub model: ClusterModel,
    /// The loader's notes (skipped documents, repeated objects and keys), `file:line: ...`.
    pub load_warnings: Vec<String>,
    /// What reading the objects into the model found (as `ClusterModel::build` reports).
    pub model_warnings: Warnings,
}

/// Decodes `text` (the contents of `file`) into a model.
pub fn load_model(text: &str, file: &str, opts: &ModelOptions) -> Result<Loaded, LoadError> {
    let load = || objects::stream_objects(text, file, || ModelSink::new(opts.clone()));
    // The repeated-key line scan reads the whole text again: on a big file it runs
    // beside the load. Only the scan: a YAML parse waits for the load's depth guard.
    let (sink, scanned) = if text.len() >= PARALLEL_SCAN {
        std::thread::scope(|s| {
            let scan = s.spawn(|| duplicates::may_repeat_keys(text));
            let sink = load();
            (
                sink,
                Some(scan.join().expect("the key scan does not panic")),
            )
        })
    } else {
        (load(), None)
    };
    let sink = sink?;
    let may_repeat = scanned.unwrap_or_else(|| duplicates::may_repeat_keys(text));
    Ok(sink.finish(text, file, may_repeat))
}

/// Below this many bytes a thread costs more than the scan it would overlap.
const PARALLEL_SCAN: usize = 256 << 10;

/// [`load_model`] of a path (`-` is standard input).
pub fn load_model_file(path: &str, opts: &ModelOptions) -> Result<Loaded, LoadError> {
    let (name, text) = objects::read_text(path)?;
    load_model(&text, &name, opts)
}

struct ModelSink {
    cache: ModelCache,
    node_name: String,
    /// The last Node named like this node (the only one the model reads).
    node: Option<Node>,
    load_warnings: Vec<String>,
    /// Per kind, as `ClusterModel::build` orders them: Services', then slices'.
    service_warnings: Warnings,
    slice_warnings: Warnings,
    /// Warnings of objects a later one replaced (dropped: the loader drops the object).
    dropped: Vec<(usize, Range<usize>)>,
    repeats: Repeats<Range<usize>>,
}

impl ModelSink {
    fn new(opts: ModelOptions) -> ModelSink {
        ModelSink {
            node_name: opts.node_name.clone(),
            cache: ModelCache::one_shot(opts),
            node: None,
            load_warnings: Vec::new(),
            service_warnings: Vec::new(),
            slice_warnings: Vec::new(),
            dropped: Vec::new(),
            repeats: Repeats::default(),
        }
    }

    fn record(&mut self, kind: usize, key: String, origin: &Origin, warnings: Range<usize>) {
        if let Some(old) = self.repeats.record(kind, key, origin, warnings) {
            self.dropped.push((kind, old));
        }
    }

    /// `may_repeat`: [`duplicates::may_repeat_keys`] of `text`.
    fn finish(mut self, text: &str, file: &str, may_repeat: bool) -> Loaded {
        let mut load_warnings = self.load_warnings;
        load_warnings.extend(duplicates::duplicate_keys_scanned(text, file, may_repeat));
        load_warnings.extend(self.repeats.warnings());
        let mut model_warnings = Vec::new();
        for (kind, list) in [(0, self.service_warnings), (1, self.slice_warnings)] {
            let mut drop = vec![false; list.len()];
            for (_, r) in self.dropped.iter().filter(|(k, _)| *k == kind) {
                drop[r.clone()].iter_mut().for_each(|d| *d = true);
            }
            model_warnings.extend(
                list.into_iter()
                    .zip(drop)
                    .filter(|(_, d)| !d)
                    .map(|(w, _)| w),
            );
        }
        let node = self.node.map(|n| NodeInfo::read(&n, &mut model_warnings));
        self.cache.set_node(node);
        Loaded {
            model: self.cache.model(),
            load_warnings,
            model_warnings,
        }
    }
}

impl ObjectSink for ModelSink {
    fn service(&mut self, obj: Service, origin: Origin) {
        let before = self.service_warnings.len();
        self.cache
            .apply_service(&service_key(&obj), Some(&obj), &mut self.service_warnings);
        let range = before..self.service_warnings.len();
        self.record(0, duplicates::object_key(&obj.metadata), &origin, range);
    }

    fn slice(&mut self, obj: EndpointSlice, origin: Origin) {
        let before = self.slice_warnings.len();
        self.cache
            .apply_slice(&slice_key(&obj), Some(&obj), &mut self.slice_warnings);
        let range = before..self.slice_warnings.len();
        self.record(1, duplicates::object_key(&obj.metadata), &origin, range);
    }

    fn node(&mut self, obj: Node, origin: Origin) {
        let name = obj.metadata.name.clone().unwrap_or_default();
        self.record(2, name.clone(), &origin, 0..0);
        if name == self.node_name {
            self.node = Some(obj);
        }
    }

    fn warning(&mut self, warning: String) {
        self.load_warnings.push(warning);
    }
}
