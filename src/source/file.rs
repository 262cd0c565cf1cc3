//! The static source: an objects file (same formats as `render`), reloaded when its
//! content changes. A file that fails to load keeps the previous objects.

use super::objects::load_objects;
use super::store::{Change, SourceEvent};
use std::path::PathBuf;
use std::time::Duration;

/// Polls `path` every `poll` and sends a full list of every kind when it changed.
pub async fn run(path: PathBuf, poll: Duration, tx: std::sync::mpsc::Sender<SourceEvent>) {
    // A digest, not the bytes: a large file is not worth keeping twice.
    let mut last: Option<[u8; 32]> = None;
    let mut last_meta = None;
    loop {
        // Metadata first: re-reading a large unchanged file every poll costs memory. The
        // inode and ctime catch a file renamed into place with an old mtime (`cp -p`, `mv`).
        let meta = tokio::fs::metadata(&path).await.ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                m.ino(),
                m.ctime(),
                m.ctime_nsec(),
            )
        });
        if meta.is_some() && meta == last_meta {
            tokio::time::sleep(poll).await;
            continue;
        }
        last_meta = meta;
        match tokio::fs::read(&path).await {
            Ok(bytes) if last != Some(digest(&bytes)) => {
                let sum = digest(&bytes);
                drop(bytes);
                match load_objects(&path.to_string_lossy()) {
                    Ok(set) => {
                        for w in &set.warnings {
                            tracing::warn!("{w}");
                        }
                        tracing::info!(file = %path.display(), services = set.services.len(),
                            slices = set.endpoint_slices.len(), "Loaded objects");
                        // Streamed, so each raw object is freed once the daemon has read it.
                        let sent = stream(&tx, set.services, SourceEvent::Services)
                            && stream(&tx, set.endpoint_slices, SourceEvent::Slices)
                            && stream(&tx, set.nodes, SourceEvent::Nodes);
                        if !sent {
                            return;
                        }
                    }
                    Err(e) => tracing::error!("{e}; keeping the previous objects"),
                }
                last = Some(sum);
            }
            Ok(_) => {}
            Err(e) => tracing::error!(file = %path.display(), error = %e, "reading objects"),
        }
        tokio::time::sleep(poll).await;
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Sends one kind as a list; false when the daemon is gone.
fn stream<K, O>(
    tx: &std::sync::mpsc::Sender<SourceEvent>,
    objects: Vec<(K, O)>,
    wrap: fn(Change<K>) -> SourceEvent,
) -> bool {
    std::iter::once(Change::ListStart)
        .chain(
            objects
                .into_iter()
                .map(|(o, _)| Change::Listed(Box::new(o))),
        )
        .chain(std::iter::once(Change::ListDone))
        .all(|c| tx.send(wrap(c)).is_ok())
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
}
