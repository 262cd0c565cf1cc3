//! External commands with a deadline, killable at shutdown. A hung `iptables-restore`
//! must not keep the sync loop (and so SIGTERM) waiting forever: each child runs in its
//! own process group, and the whole group is killed when its deadline passes or when
//! [`kill_all`] is called.

use crate::rules::table::{IoOut, Out};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

/// `iptables`, `iptables-save`, `conntrack` and version probes: they wait at most 5 s
/// for the xtables lock, so a minute means they hang.
pub const SHORT_DEADLINE: Duration = Duration::from_secs(60);
/// `iptables-restore`: a full payload of a large cluster takes seconds to tens of seconds.
pub const RESTORE_DEADLINE: Duration = Duration::from_secs(300);

/// A finished (or killed) command.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Killed because its deadline passed or the process is shutting down.
    pub killed: bool,
    /// The first error writing stdin (a broken pipe is normal when the tool stops early).
    pub write_error: Option<std::io::Error>,
}

struct Slot {
    child: Option<Child>,
    done: bool,
}

struct Guard {
    slot: Mutex<Slot>,
    cv: Condvar,
    killed: AtomicBool,
}

impl Guard {
    /// Kills the child's process group unless it has been reaped (so its pid, which is
    /// also the group id, cannot have been reused).
    fn kill(&self) {
        let mut s = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if s.done {
            return;
        }
        if let Some(c) = s.child.as_mut() {
            self.killed.store(true, Ordering::SeqCst);
            // SAFETY: kill(2) has no memory-safety preconditions; the group leader is our
            // unreaped child, so the group id is still ours.
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.kill();
        }
    }
}

static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);
static RUNNING: Mutex<Vec<Weak<Guard>>> = Mutex::new(Vec::new());

/// Shutdown: kills every running child and refuses new ones from now on.
pub fn kill_all() {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
    let running: Vec<Arc<Guard>> = RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for g in running {
        g.kill();
    }
}

/// Whether [`kill_all`] has been called.
pub fn shutting_down() -> bool {
    SHUTTING_DOWN.load(Ordering::SeqCst)
}

/// Writes a command's stdin.
pub type Feed<'a> = &'a mut dyn FnMut(&mut dyn Out);

/// Runs `cmd` to completion or until `deadline`, with `feed` (if any) writing its stdin.
pub fn run(
    cmd: &mut Command,
    deadline: Duration,
    feed: Option<Feed<'_>>,
) -> std::io::Result<Finished> {
    if shutting_down() {
        return Err(std::io::Error::other("shutting down"));
    }
    cmd.stdin(if feed.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut child = cmd.spawn()?;
    let stdin = child.stdin.take();
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let guard = Arc::new(Guard {
        slot: Mutex::new(Slot {
            child: Some(child),
            done: false,
        }),
        cv: Condvar::new(),
        killed: AtomicBool::new(false),
    });
    {
        let mut r = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        r.retain(|w| w.strong_count() > 0);
        r.push(Arc::downgrade(&guard));
    }
    // A shutdown that began between the check above and the registration.
    if shutting_down() {
        guard.kill();
    }
    let watchdog = {
        let g = guard.clone();
        std::thread::spawn(move || {
            let s = g.slot.lock().unwrap_or_else(|e| e.into_inner());
            let (s, _) =
                g.cv.wait_timeout_while(s, deadline, |s| !s.done)
                    .unwrap_or_else(|e| e.into_inner());
            let timed_out = !s.done;
            drop(s);
            if timed_out {
                g.kill();
            }
        })
    };
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let mut write_error = None;
    if let (Some(feed), Some(stdin)) = (feed, stdin) {
        let mut sink = IoOut::new(stdin);
        feed(&mut sink);
        if let Err(e) = sink.finish() {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                write_error = Some(e);
            }
        }
    }
    let mut out = Vec::new();
    let read = stdout.read_to_end(&mut out);
    let err = err_reader.join().unwrap_or_default();
    // Outputs closed: the child is exiting (or was killed). Reap it without holding the
    // lock across a blocking wait, so the watchdog can still kill a child that lingers.
    let status = loop {
        let mut s = guard.slot.lock().unwrap_or_else(|e| e.into_inner());
        let c = s.child.as_mut().expect("reaped once");
        match c.try_wait() {
            Ok(Some(st)) => {
                s.done = true;
                s.child = None;
                break Ok(st);
            }
            Ok(None) => {}
            Err(e) => {
                s.done = true;
                break Err(e);
            }
        }
        drop(s);
        std::thread::sleep(Duration::from_millis(2));
    };
    guard.cv.notify_all();
    let _ = watchdog.join();
    let status = status?;
    read?;
    Ok(Finished {
        status,
        stdout: out,
        stderr: err,
        killed: guard.killed.load(Ordering::SeqCst),
        write_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hanging_child_is_killed_at_its_deadline() {
        // `sh` forks `sleep`: the whole group must die, or stdout would stay open.
        let r = run(
            Command::new("sh").args(["-c", "sleep 600; echo never"]),
            Duration::from_millis(200),
            None,
        )
        .unwrap();
        assert!(r.killed);
        assert!(!r.status.success());
        assert!(r.stdout.is_empty());
    }

    #[test]
    fn a_quick_child_runs_to_completion_with_its_input() {
        let mut feed = |o: &mut dyn Out| o.push_str("a\nb\n");
        let r = run(
            Command::new("wc").arg("-l"),
            Duration::from_secs(60),
            Some(&mut feed),
        )
        .unwrap();
        assert!(!r.killed);
        assert!(r.status.success());
        assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "2");
    }
}
