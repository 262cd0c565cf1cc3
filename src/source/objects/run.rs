//! Running the plan: typed, probing and generic decoding of each piece.

use super::*;
use std::sync::{mpsc, Condvar, Mutex};

/// One result in input order. Objects are boxed: they are large and moved
/// several times on the way into the `ObjectSet`.
pub(super) enum Item {
    Service(Box<Service>, usize),
    Slice(Box<EndpointSlice>, usize),
    Node(Box<Node>, usize),
    Warning(String),
}

pub(super) struct Failure {
    pub(super) error: LoadError,
    /// A split list item failed to parse: the document must be re-checked.
    pub(super) retry_doc: Option<usize>,
}

/// Text decoded per chunk of work: big enough to amortise the hand-off, small enough
/// that the chunks in flight hold only a few hundred objects.
const CHUNK_BYTES: usize = 64 << 10;
/// Chunks the workers may run ahead of the one the consumer waits for.
const CHUNKS_AHEAD: usize = 4;

/// Decodes `units` and hands each result to `emit` in input order, stopping at the first
/// failure (in input order). With several threads, workers decode chunks of consecutive
/// units while the calling thread consumes them: at most a few chunks of decoded objects
/// exist at any time, whatever the input's size.
pub(super) fn run_units(
    units: Vec<Unit<'_>>,
    file: &str,
    threads: usize,
    emit: &mut dyn FnMut(Item),
) -> Option<Failure> {
    if threads <= 1 || units.len() < 2 {
        let (items, failure) = run_group(units, file);
        items.into_iter().for_each(&mut *emit);
        return failure;
    }
    let mut chunks: Vec<Vec<Unit<'_>>> = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for u in units {
        size += u.weight();
        current.push(u);
        if size >= CHUNK_BYTES {
            chunks.push(std::mem::take(&mut current));
            size = 0;
        }
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    let total = chunks.len();
    let queue = Mutex::new(chunks.into_iter().enumerate());
    // The index of the chunk the consumer waits for; `usize::MAX` once it stopped.
    let consumed = (Mutex::new(0usize), Condvar::new());
    let (tx, rx) = mpsc::channel::<(usize, (Vec<Item>, Option<Failure>))>();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (tx, queue, consumed) = (tx.clone(), &queue, &consumed);
                std::thread::Builder::new()
                    .stack_size(8 << 20)
                    .spawn_scoped(scope, move || loop {
                        let next = queue.lock().map(|mut q| q.next());
                        let Ok(Some((i, chunk))) = next else { return };
                        let (lock, cvar) = consumed;
                        let Ok(mut at) = lock.lock() else { return };
                        while *at != usize::MAX && i >= *at + CHUNKS_AHEAD {
                            at = match cvar.wait(at) {
                                Ok(g) => g,
                                Err(_) => return,
                            };
                        }
                        let stopped = *at == usize::MAX;
                        drop(at);
                        if stopped {
                            return;
                        }
                        // A panic becomes this chunk's failure, so the consumer (waiting
                        // for the chunks in order) never waits for a chunk that is gone.
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            run_group(chunk, file)
                        }))
                        .unwrap_or_else(|_| {
                            (Vec::new(), Some(internal(file, "a worker thread panicked")))
                        });
                        if tx.send((i, result)).is_err() {
                            return;
                        }
                    })
            })
            .collect();
        drop(tx);
        let mut waiting = std::collections::BTreeMap::new();
        let mut next = 0;
        let mut failure = None;
        'recv: for (i, result) in rx.iter() {
            waiting.insert(i, result);
            while let Some((items, f)) = waiting.remove(&next) {
                items.into_iter().for_each(&mut *emit);
                next += 1;
                if f.is_some() {
                    failure = f;
                    break 'recv;
                }
                let (lock, cvar) = &consumed;
                if let Ok(mut at) = lock.lock() {
                    *at = next;
                }
                cvar.notify_all();
            }
        }
        // Release workers waiting for room; they exit without decoding more.
        let (lock, cvar) = &consumed;
        if let Ok(mut at) = lock.lock() {
            *at = usize::MAX;
        }
        cvar.notify_all();
        drop(rx);
        // Joining each handle ourselves turns a worker panic into an error
        // instead of a panic of the whole scope.
        let mut broken = None;
        for h in handles {
            let e = match h {
                Ok(h) => h
                    .join()
                    .err()
                    .map(|_| "a worker thread panicked".to_string()),
                Err(e) => Some(format!("cannot start a worker thread: {e}")),
            };
            broken = broken.or(e);
        }
        if failure.is_none() && next < total {
            let message = broken.unwrap_or_else(|| "decoding stopped early".to_string());
            failure = Some(internal(file, &message));
        }
        failure
    })
}

fn internal(file: &str, message: &str) -> Failure {
    Failure {
        error: LoadError::Internal {
            file: file.into(),
            message: message.into(),
        },
        retry_doc: None,
    }
}

/// Runs `f` over contiguous groups of `work` of about equal weight, one group
/// per thread, and returns the results in input order.
pub(super) fn in_parallel<T: Send, R: Send>(
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

pub(super) fn run_group(units: Vec<Unit<'_>>, file: &str) -> (Vec<Item>, Option<Failure>) {
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
pub(super) struct Piece<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
    pub(super) first_line: usize,
    pub(super) place: Place,
}

impl Piece<'_> {
    pub(super) fn run(&self, plan: Plan, out: &mut Vec<Item>) -> Result<(), LoadError> {
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
        // Most pieces are plain block YAML: the quick reader takes them, or says it is
        // not sure and serde_yaml_ng decides.
        if let Ok(obj) = fast::decode::<T>(self.text, self.split()) {
            out.push(obj.into_item(self.place.line));
            return Ok(());
        }
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

    pub(super) fn probe(&self) -> Result<Probe, serde_yaml_ng::Error> {
        fast::decode(self.text, self.split()).or_else(|_| self.read())
    }

    /// Split list items are one-element sequences; whole documents are not.
    pub(super) fn split(&self) -> bool {
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

    pub(super) fn slow(&self, out: &mut Vec<Item>) -> Result<(), LoadError> {
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
pub(super) trait KeptObject: DeserializeOwned {
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
pub(super) fn default_namespace(meta: &mut ObjectMeta) {
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some("default".into());
    }
}
