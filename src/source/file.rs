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
        // Size and mtime first: re-reading a large unchanged file every poll costs memory.
        let meta = tokio::fs::metadata(&path)
            .await
            .ok()
            .map(|m| (m.len(), m.modified().ok()));
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
