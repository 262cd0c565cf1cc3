//! The static source: an objects file (same formats as `render`), reloaded when it changes.
//! Only a file whose writer has finished is read: with inotify on the parent directory,
//! after the writer closed it or renamed it into place; when polling (no inotify, or a
//! filesystem inotify cannot see, e.g. a remote writer), after one poll interval without a
//! change. Either way the file must not change while it is read. A file that fails to
//! load, or is empty, keeps the previous objects.

use super::objects::{load_objects, LoadError, ObjectSet};
use super::store::{Change, SourceEvent};
use inotify::{EventMask, EventOwned, Inotify, WatchMask};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

/// The first repeat of an unchanged read error is logged after this; then twice as late
/// each time, up to [`LOG_EVERY_MAX`].
const LOG_EVERY_FIRST: Duration = Duration::from_secs(2);
const LOG_EVERY_MAX: Duration = Duration::from_secs(60);

/// Watches `path` (inotify, polling every `poll` as the fallback) and sends a full list of
/// every kind when a finished file's content changed.
pub async fn run(path: PathBuf, poll: Duration, tx: Sender<SourceEvent>) {
    run_with(path, poll, tx, true).await
}

/// `watch: false` polls only, as on a host without inotify.
pub(crate) async fn run_with(path: PathBuf, poll: Duration, tx: Sender<SourceEvent>, watch: bool) {
    let mut src = FileSource::new(path, tx);
    let mut watcher: Option<Watcher> = None;
    let mut watch_failed = false;
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let woke = tokio::select! {
            ev = next_event(&mut watcher) => Some(ev),
            _ = tick.tick() => None,
        };
        let from_tick = match woke {
            Some(Some(Ok(ev))) => {
                if src.on_event(&ev) {
                    watcher = None;
                }
                false
            }
            Some(other) => {
                if let Some(Err(e)) = other {
                    tracing::warn!(error = %e, "objects file watch failed; polling until it is set up again");
                }
                watcher = None;
                src.events_lost();
                continue;
            }
            None => {
                if watch && watcher.is_none() {
                    match Watcher::new(&src.dir) {
                        Ok(w) => {
                            watcher = Some(w);
                            // Events before the watch are unknown: judge by polling once more.
                            src.events_lost();
                            watch_failed = false;
                        }
                        Err(e) if !watch_failed => {
                            watch_failed = true;
                            tracing::warn!(dir = %src.dir.display(), error = %e,
                                "cannot watch the objects file's directory (inotify); polling it: \
                                 a writer that pauses longer than the poll interval may be read half-written");
                        }
                        Err(_) => {}
                    }
                }
                true
            }
        };
        if !src.check(from_tick).await {
            return;
        }
    }
}

async fn next_event(w: &mut Option<Watcher>) -> Option<std::io::Result<EventOwned>> {
    use futures::StreamExt;
    match w {
        Some(w) => w.stream.next().await,
        None => std::future::pending().await,
    }
}

/// inotify on the file's directory: a rename into place is an event on the directory.
struct Watcher {
    stream: inotify::EventStream<Vec<u8>>,
}

impl Watcher {
    fn new(dir: &Path) -> std::io::Result<Watcher> {
        let inotify = Inotify::init()?;
        let stream = inotify.into_event_stream(vec![0u8; 4096])?;
        stream.watches().add(
            dir,
            WatchMask::CLOSE_WRITE
                | WatchMask::MOVED_TO
                | WatchMask::MOVED_FROM
                | WatchMask::MODIFY
                | WatchMask::CREATE
                | WatchMask::DELETE
                | WatchMask::DELETE_SELF
                | WatchMask::MOVE_SELF,
        )?;
        Ok(Watcher { stream })
    }
}

/// What identifies one version of the file: a writer changes size or mtime, a rename
/// changes the inode, and `cp -p` / `touch -r` still change ctime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    dev: u64,
    ino: u64,
}

async fn stat(path: &Path) -> std::io::Result<Stat> {
    use std::os::unix::fs::MetadataExt;
    let m = tokio::fs::metadata(path).await?;
    Ok(Stat {
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
        dev: m.dev(),
        ino: m.ino(),
    })
}

struct FileSource {
    path: PathBuf,
    dir: PathBuf,
    name: OsString,
    tx: Sender<SourceEvent>,
    /// The version last dealt with (applied, or rejected for its content): not read again.
    /// Set only once a read succeeded, so a read error is retried.
    handled: Option<Stat>,
    /// Digest of the content last applied: a touched file is not applied again.
    applied: Option<[u8; 32]>,
    /// The version the previous poll saw: unchanged for a whole interval counts as finished.
    polled: Option<Stat>,
    /// The watcher saw the writer close the file or rename it into place.
    finished: bool,
    /// The watcher saw a write with no close yet: a writer has the file open.
    writing: bool,
    /// The version last logged as waiting for its writer (logged once).
    waiting: Option<Stat>,
    errors: ErrorLog,
}

impl FileSource {
    fn new(path: PathBuf, tx: Sender<SourceEvent>) -> FileSource {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        FileSource {
            name: path.file_name().map(Into::into).unwrap_or_default(),
            path,
            dir,
            tx,
            handled: None,
            applied: None,
            polled: None,
            finished: false,
            writing: false,
            waiting: None,
            errors: ErrorLog::default(),
        }
    }

    /// Missed events: nothing is known about writers, polling decides.
    fn events_lost(&mut self) {
        self.finished = false;
        self.writing = false;
    }

    /// Notes what an inotify event says about writers; true when the watch is gone.
    fn on_event(&mut self, ev: &EventOwned) -> bool {
        let m = ev.mask;
        if m.intersects(EventMask::IGNORED | EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
            self.events_lost();
            return true;
        }
        if m.contains(EventMask::Q_OVERFLOW) {
            self.events_lost();
            return false;
        }
        let ours = ev.name.as_deref() == Some(self.name.as_os_str());
        // A symlink (a ConfigMap volume's `..data` swap) changes when anything in the
        // directory is renamed or written.
        let via_link = !ours
            && std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.file_type().is_symlink());
        if m.intersects(EventMask::CLOSE_WRITE | EventMask::MOVED_TO) && (ours || via_link) {
            self.finished = true;
            self.writing = false;
        } else if !ours {
        } else if m.contains(EventMask::MODIFY) {
            self.writing = true;
            self.finished = false;
        } else if m.contains(EventMask::CREATE) {
            // An empty new file is being written; a link (`ln`, `ln -s`) arrives complete.
            let empty_file = std::fs::symlink_metadata(&self.path)
                .is_ok_and(|m| m.file_type().is_file() && m.len() == 0);
            self.writing = empty_file;
            self.finished = !empty_file;
        } else if m.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
            self.events_lost();
        }
        false
    }

    /// Loads the file if a finished new version is there; false when the daemon is gone.
    async fn check(&mut self, from_tick: bool) -> bool {
        let before = match stat(&self.path).await {
            Ok(s) => s,
            Err(e) => {
                self.polled = None;
                self.errors.report(&self.path, &e);
                return true;
            }
        };
        if self.handled == Some(before) {
            self.finished = false;
            self.polled = Some(before);
            self.errors.clear(&self.path);
            return true;
        }
        let quiet = from_tick && self.polled == Some(before);
        if from_tick {
            self.polled = Some(before);
        }
        if self.writing || !(self.finished || quiet) {
            if self.waiting != Some(before) {
                self.waiting = Some(before);
                tracing::debug!(file = %self.path.display(), writing = self.writing,
                    "objects file changed; reading it once its writer has finished");
            }
            return true;
        }
        self.load(before).await
    }

    async fn load(&mut self, before: Stat) -> bool {
        let file = self.path.to_string_lossy().into_owned();
        // Refused from its size alone: never read into memory, logged once per version.
        if before.len > super::guard::MAX_OBJECTS_BYTES {
            self.handled = Some(before);
            self.finished = false;
            tracing::error!(
                file,
                bytes = before.len,
                limit_mib = super::guard::MAX_OBJECTS_BYTES >> 20,
                "objects file is larger than the size limit; not read, keeping the previous objects"
            );
            return true;
        }
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(b) => b,
            Err(e) => {
                self.errors.report(&self.path, &e);
                return true;
            }
        };
        let blank = is_blank(&bytes);
        let sum = digest(&bytes);
        drop(bytes);
        let result = if blank || self.applied == Some(sum) {
            None
        } else {
            Some(load_objects(&file))
        };
        if let Some(Err(LoadError::Io { source, .. })) = &result {
            self.errors.report(&self.path, source);
            return true;
        }
        // Still being written (a writer inotify cannot see, or one between two writes).
        if stat(&self.path).await.ok() != Some(before) {
            tracing::debug!(
                file,
                "objects file changed while it was read; reading it later"
            );
            self.polled = None;
            return true;
        }
        self.handled = Some(before);
        self.finished = false;
        self.errors.clear(&self.path);
        let set = match result {
            None if blank => {
                tracing::error!(file, "objects file is empty (no objects, not even an empty `kind: List`); keeping the previous objects");
                return true;
            }
            None => return true,
            Some(Err(e)) => {
                tracing::error!("{e}; keeping the previous objects");
                return true;
            }
            Some(Ok(set)) => set,
        };
        for w in &set.warnings {
            tracing::warn!("{w}");
        }
        tracing::info!(
            file,
            services = set.services.len(),
            slices = set.endpoint_slices.len(),
            nodes = set.nodes.len(),
            "Loaded objects"
        );
        self.applied = Some(sum);
        send_reload(&self.tx, set)
    }
}

/// No document at all: only whitespace, comments and document markers. An explicit
/// empty `kind: List` is content (it means "no objects"); this is a truncated file.
fn is_blank(bytes: &[u8]) -> bool {
    bytes.split(|&b| b == b'\n').all(|line| {
        let line = line.trim_ascii();
        line.is_empty() || line.starts_with(b"#") || line == b"---" || line == b"..."
    })
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// One reload as one change: every kind's list is open before the first object arrives
/// and closed after the last, so the store is mid-list (no sync) until all three are
/// complete. Streamed, so each raw object is freed once the daemon has read it. False
/// when the daemon is gone.
fn send_reload(tx: &Sender<SourceEvent>, set: ObjectSet) -> bool {
    let opens = [
        SourceEvent::Services(Change::ListStart),
        SourceEvent::Slices(Change::ListStart),
        SourceEvent::Nodes(Change::ListStart),
    ];
    let closes = [
        SourceEvent::Services(Change::ListDone),
        SourceEvent::Slices(Change::ListDone),
        SourceEvent::Nodes(Change::ListDone),
    ];
    let services = set.services.into_iter();
    let slices = set.endpoint_slices.into_iter();
    let nodes = set.nodes.into_iter();
    opens
        .into_iter()
        .chain(services.map(|(o, _)| SourceEvent::Services(Change::Listed(Box::new(o)))))
        .chain(slices.map(|(o, _)| SourceEvent::Slices(Change::Listed(Box::new(o)))))
        .chain(nodes.map(|(o, _)| SourceEvent::Nodes(Change::Listed(Box::new(o)))))
        .chain(closes)
        .all(|ev| tx.send(ev).is_ok())
}

/// Read errors, logged when they change and then at growing intervals while they last.
#[derive(Default)]
struct ErrorLog {
    current: Option<Complaint>,
}

struct Complaint {
    what: String,
    next: Instant,
    every: Duration,
    repeats: u64,
}

impl ErrorLog {
    fn report(&mut self, path: &Path, e: &std::io::Error) {
        let what = e.to_string();
        let now = Instant::now();
        let file = path.display();
        match &mut self.current {
            Some(c) if c.what == what => {
                c.repeats += 1;
                if now >= c.next {
                    tracing::error!(%file, error = %e, repeated = c.repeats,
                        "objects file still unreadable; keeping the previous objects");
                    c.every = (c.every * 2).min(LOG_EVERY_MAX);
                    c.next = now + c.every;
                    c.repeats = 0;
                }
            }
            _ => {
                if e.kind() == std::io::ErrorKind::NotFound {
                    tracing::error!(%file, error = %e,
                        "objects file missing; keeping the previous objects until it appears");
                } else {
                    tracing::error!(%file, error = %e,
                        "cannot read the objects file; keeping the previous objects, retrying");
                }
                self.current = Some(Complaint {
                    what,
                    next: now + LOG_EVERY_FIRST,
                    every: LOG_EVERY_FIRST,
                    repeats: 0,
                });
            }
        }
    }

    fn clear(&mut self, path: &Path) {
        if self.current.take().is_some() {
            tracing::info!(file = %path.display(), "objects file readable again");
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::store::SourceEvent;

    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: NAME\n  namespace: ns\nspec:\n  clusterIP: 10.96.0.1\n  ports:\n  - port: 80\n";

    /// The Service names of the next complete list.
    fn next_list(rx: &std::sync::mpsc::Receiver<SourceEvent>) -> Vec<String> {
        let mut names = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(20)).expect("a list") {
                SourceEvent::Services(Change::Listed(s)) => {
                    names.push(s.metadata.name.unwrap_or_default())
                }
                SourceEvent::Services(Change::ListDone) => return names,
                _ => {}
            }
        }
    }

    const SLICE: &str = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: NAME-1\n  namespace: ns\n  labels:\n    kubernetes.io/service-name: NAME\naddressType: IPv4\nendpoints:\n- addresses: [10.244.0.5]\nports:\n- port: 8080\n";

    fn tmp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kprs-file-src-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A Service and its slice, written as a finished writer does.
    fn write_service(dir: &Path, path: &Path, name: &str) {
        let next = dir.join("next.yaml");
        let text = format!(
            "{}---\n{}",
            SVC.replace("NAME", name),
            SLICE.replace("NAME", name)
        );
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, path).unwrap();
    }

    /// Feeds the file source's events into a real store, as the sync loop does, and
    /// checks every state a sync could see (not mid-list, everything listed once).
    #[tokio::test]
    async fn a_reload_is_one_change_for_the_sync_loop() {
        use crate::model::ip::IpFamily;
        use crate::model::ModelOptions;
        let dir = tmp_dir("atomic");
        let path = dir.join("objects.yaml");
        write_service(&dir, &path, "a");
        let (tx, rx) = std::sync::mpsc::channel();
        let task = tokio::spawn(run(path.clone(), Duration::from_millis(50), tx));
        let store = crate::source::store::Store::new(vec![ModelOptions {
            family: IpFamily::V4,
            node_name: "node-a".into(),
            topology_aware_hints: false,
            load_balancer_ip_mode: false,
            node_hints: false,
            compat: crate::compat::Compat::v1_30(),
        }]);
        type Rx = std::sync::mpsc::Receiver<SourceEvent>;
        let consume = |mut store: crate::source::store::Store, rx: Rx, want: &'static str| {
            tokio::task::spawn_blocking(move || {
                let mut seen = Vec::new();
                loop {
                    let ev = rx.recv_timeout(Duration::from_secs(20)).expect("events");
                    store.apply(ev);
                    if store.in_list() || !store.all_synced() {
                        continue;
                    }
                    // What a sync would render now: each Service with its endpoints.
                    let m = store.model(0);
                    let state: Vec<(String, usize)> = m
                        .services
                        .iter()
                        .map(|(k, ports)| (k.to_string(), ports[0].endpoints.len()))
                        .collect();
                    let done = state == [(format!("ns/{want}"), 1)];
                    seen.push(state);
                    if done {
                        return (seen, store, rx);
                    }
                }
            })
        };
        let (first, store, rx) = consume(store, rx, "a").await.unwrap();
        assert_eq!(first, [[("ns/a".to_string(), 1)]]);
        write_service(&dir, &path, "b");
        let (second, _, _) = consume(store, rx, "b").await.unwrap();
        assert_eq!(second, [[("ns/b".to_string(), 1)]], "no half-applied state");
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A ConfigMap volume: `objects.yaml -> ..data/objects.yaml`, `..data` swapped by rename.
    #[tokio::test]
    async fn a_configmap_style_symlink_swap_is_reloaded() {
        use std::os::unix::fs::symlink;
        let dir = tmp_dir("configmap");
        for (v, name) in [("v1", "c1"), ("v2", "c2")] {
            std::fs::create_dir_all(dir.join(v)).unwrap();
            std::fs::write(dir.join(v).join("objects.yaml"), SVC.replace("NAME", name)).unwrap();
        }
        symlink("v1", dir.join("..data")).unwrap();
        symlink("..data/objects.yaml", dir.join("objects.yaml")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let task = tokio::spawn(run(dir.join("objects.yaml"), Duration::from_millis(50), tx));
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let list = |rx: std::sync::Arc<std::sync::Mutex<_>>| {
            tokio::task::spawn_blocking(move || next_list(&rx.lock().unwrap()))
        };
        assert_eq!(list(rx.clone()).await.unwrap(), ["c1"]);
        symlink("v2", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        assert_eq!(list(rx).await.unwrap(), ["c2"]);
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn blank_files_have_no_documents() {
        assert!(is_blank(b""));
        assert!(is_blank(b" \n\t\n"));
        assert!(is_blank(b"# only a comment\n---\n...\n"));
        assert!(!is_blank(b"apiVersion: v1\nkind: List\nitems: []\n"));
        assert!(!is_blank(b"{}"));
    }

    /// Without inotify, a file that has been quiet for a poll interval is read.
    #[tokio::test]
    async fn polling_alone_reloads_a_changed_file() {
        let dir = tmp_dir("poll");
        let path = dir.join("objects.yaml");
        std::fs::write(&path, SVC.replace("NAME", "p1")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let task = tokio::spawn(run_with(path.clone(), Duration::from_millis(50), tx, false));
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let list = |rx: std::sync::Arc<std::sync::Mutex<_>>| {
            tokio::task::spawn_blocking(move || next_list(&rx.lock().unwrap()))
        };
        assert_eq!(list(rx.clone()).await.unwrap(), ["p1"]);
        std::fs::write(&path, SVC.replace("NAME", "p2")).unwrap();
        assert_eq!(list(rx).await.unwrap(), ["p2"]);
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_file_renamed_into_place_with_the_old_mtime_is_reloaded() {
        let dir = std::env::temp_dir().join(format!("kprs-file-src-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("objects.yaml");
        std::fs::write(&path, SVC.replace("NAME", "a1")).unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let task = tokio::spawn(run(path.clone(), Duration::from_millis(50), tx));
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let first = {
            let rx = rx.clone();
            tokio::task::spawn_blocking(move || next_list(&rx.lock().unwrap()))
                .await
                .unwrap()
        };
        assert_eq!(first, ["a1"]);
        // Same size, same mtime, new content, renamed over the old file.
        let next = dir.join("next.yaml");
        std::fs::write(&next, SVC.replace("NAME", "a2")).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&next)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        std::fs::rename(&next, &path).unwrap();
        let second = tokio::task::spawn_blocking(move || next_list(&rx.lock().unwrap()))
            .await
            .unwrap();
        assert_eq!(second, ["a2"]);
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A file over the size cap is refused from its size (a sparse file: nothing to read),
    /// the previous objects stay, and the next good file is loaded.
    #[tokio::test]
    async fn an_oversized_file_is_refused_and_the_next_one_loaded() {
        let dir = tmp_dir("big");
        let path = dir.join("objects.yaml");
        std::fs::write(&path, SVC.replace("NAME", "b1")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let task = tokio::spawn(run(path.clone(), Duration::from_millis(50), tx));
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let list = |rx: std::sync::Arc<std::sync::Mutex<_>>| {
            tokio::task::spawn_blocking(move || next_list(&rx.lock().unwrap()))
        };
        assert_eq!(list(rx.clone()).await.unwrap(), ["b1"]);
        let big = dir.join("big.yaml");
        std::fs::write(&big, SVC.replace("NAME", "huge")).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&big)
            .unwrap()
            .set_len(crate::source::guard::MAX_OBJECTS_BYTES + 1)
            .unwrap();
        std::fs::rename(&big, &path).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        write_service(&dir, &path, "b2");
        assert_eq!(list(rx).await.unwrap(), ["b2"]);
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
