//! The static source: an objects file (same formats as `render`), reloaded when its
//! content changes. A file that fails to load keeps the previous objects.

use super::objects::load_objects;
use super::store::{Change, SourceEvent};
use std::path::PathBuf;
use std::time::Duration;

/// Polls `path` every `poll` and sends a full replace of every kind when it changed.
pub async fn run(path: PathBuf, poll: Duration, tx: std::sync::mpsc::Sender<SourceEvent>) {
    let mut last: Option<Vec<u8>> = None;
    loop {
        match tokio::fs::read(&path).await {
            Ok(bytes) if last.as_ref() != Some(&bytes) => {
                match load_objects(&path.to_string_lossy()) {
                    Ok(set) => {
                        for w in &set.warnings {
                            tracing::warn!("{w}");
                        }
                        tracing::info!(file = %path.display(), services = set.services.len(),
                            slices = set.endpoint_slices.len(), "Loaded objects");
                        let events = [
                            SourceEvent::Services(Change::Replace(
                                set.services.into_iter().map(|(o, _)| o).collect(),
                            )),
                            SourceEvent::Slices(Change::Replace(
                                set.endpoint_slices.into_iter().map(|(o, _)| o).collect(),
                            )),
                            SourceEvent::Nodes(Change::Replace(
                                set.nodes.into_iter().map(|(o, _)| o).collect(),
                            )),
                        ];
                        for e in events {
                            if tx.send(e).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => tracing::error!("{e}; keeping the previous objects"),
                }
                last = Some(bytes);
            }
            Ok(_) => {}
            Err(e) => tracing::error!(file = %path.display(), error = %e, "reading objects"),
        }
        tokio::time::sleep(poll).await;
    }
}
