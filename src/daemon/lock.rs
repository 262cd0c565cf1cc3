//! One daemon per network namespace: an exclusive flock taken at start, so that a second
//! instance is refused instead of fighting the first over the same tables.

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the default lock files live.
pub const LOCK_DIR: &str = "/run/kube-proxy-rs";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another kube-proxy-rs is running in this network namespace: {path} is locked{}; stop it first, or give a different --lock-file", holder.map(|p| format!(" by pid {p}")).unwrap_or_default())]
    Held { path: PathBuf, holder: Option<u32> },
    #[error("lock file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held for the daemon's lifetime; the kernel releases the lock when the process ends.
#[derive(Debug)]
pub struct InstanceLock {
    _file: std::fs::File,
    pub path: PathBuf,
}

/// `/run/kube-proxy-rs/netns-<inode of this process's network namespace>.lock`: daemons
/// in different namespaces own different tables and do not conflict.
pub fn default_path() -> std::io::Result<PathBuf> {
    let ino = std::fs::metadata("/proc/self/ns/net")?.ino();
    Ok(Path::new(LOCK_DIR).join(format!("netns-{ino}.lock")))
}

/// Takes the lock at `path` (its directory is created), writing this process's pid into it.
pub fn acquire(path: &Path) -> Result<InstanceLock, LockError> {
    let io = |source| LockError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io)?;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io(e));
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        return Err(LockError::Held {
            path: path.to_path_buf(),
            holder: text.trim().parse().ok(),
        });
    }
    // Only the holder writes, so a reader sees a whole pid or an empty file.
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(InstanceLock {
        _file: file,
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_pid() {
        let path = std::env::temp_dir()
            .join(format!("kprs-lock-{}", std::process::id()))
            .join("t.lock");
        let first = acquire(&path).unwrap();
        // A second open file description conflicts even within one process.
        let err = acquire(&path).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&path.display().to_string())
                && msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        let again = acquire(&path).unwrap();
        drop(again);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn default_path_is_per_network_namespace() {
        let p = default_path().unwrap();
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("netns-") && name.ends_with(".lock"),
            "{name}"
        );
        assert!(p.starts_with(LOCK_DIR));
    }
}
