//! `--objects FILE` with the real binary (`--dry-run`: payloads on stdout, no iptables):
//! only finished files are applied, an empty file is refused, a read error is retried on
//! its own, and a missing file is not logged every second.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A Service with one endpoint, as two documents.
fn service(name: &str, ip: &str, endpoint: &str) -> String {
    format!("{}{}", service_only(name, ip), slice(name, endpoint))
}

fn service_only(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: ns\n\
         spec:\n  clusterIP: {ip}\n  ports:\n  - name: http\n    port: 80\n    protocol: TCP\n---\n"
    )
}

fn slice(name: &str, endpoint: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  \
         namespace: ns\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\n\
         endpoints:\n- addresses: [{endpoint}]\nports:\n- name: http\n  port: 8080\n  protocol: TCP\n---\n"
    )
}

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("kprs-objfile-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn objects(&self) -> PathBuf {
        self.0.join("objects.yaml")
    }

    /// As the README tells writers: a temporary file in the same directory, renamed.
    fn replace(&self, text: &str) {
        let tmp = self.0.join(".objects.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.objects()).unwrap();
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Daemon {
    child: Child,
    stdout: Arc<Mutex<String>>,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(dir: &Dir) -> Daemon {
        let log = dir.0.join("daemon.log");
        let mut child = Command::new(common::BIN)
            .args(["--objects", dir.objects().to_str().unwrap()])
            .args(["--hostname-override", "node-a", "--dry-run"])
            .args(["--healthz-bind-address", &free_addr()])
            .args(["--metrics-bind-address", &free_addr()])
            .args(["--conntrack-max-per-core", "0"])
            .env("RUST_LOG", "info,kube_proxy_rs::source::file=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the daemon");
        let stdout = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stdout.take().unwrap();
        let sink = stdout.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    return;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Daemon { child, stdout, log }
    }

    fn out(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn syncs(&self) -> usize {
        self.out().matches("# sync ").count()
    }

    /// The payload of sync `n` (1-based).
    fn payload(&self, n: usize) -> String {
        let out = self.out();
        out.split("# sync ").nth(n).unwrap_or_default().to_string()
    }

    fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Generous bound for a loaded machine; never an assertion about speed.
    fn wait_for(&mut self, what: &str, mut cond: impl FnMut(&Daemon) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond(self) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("exited ({status}) waiting for {what}\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\nstdout:\n{}\nlog:\n{}",
                self.out(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Longer than the daemon's poll interval (1 s) several times over.
const SEVERAL_POLLS: Duration = Duration::from_secs(3);

const WEB_RULE: &str = "ns/web:http cluster IP";

#[test]
fn a_half_written_file_waits_for_its_writer() {
    let dir = Dir::new("half");
    dir.replace(&service("web", "10.96.0.20", "10.244.0.5"));
    let mut d = Daemon::start(&dir);
    d.wait_for("first sync", |d| d.syncs() == 1);
    assert!(d.payload(1).contains(WEB_RULE), "{}", d.payload(1));

    // A writer rewrites the file in place and pauses halfway: the new Service is there,
    // its endpoints are not yet.
    let mut f = std::fs::File::create(dir.objects()).unwrap();
    let head = format!(
        "{}{}",
        service("web", "10.96.0.20", "10.244.0.5"),
        service_only("extra", "10.96.0.21")
    );
    f.write_all(head.as_bytes()).unwrap();
    f.sync_data().unwrap();
    d.wait_for("the daemon to see the change", |d| {
        d.count("reading it once its writer has finished") >= 1
    });
    std::thread::sleep(SEVERAL_POLLS);
    assert_eq!(d.syncs(), 1, "half a file applied:\n{}", d.out());

    f.write_all(slice("extra", "10.244.0.6").as_bytes())
        .unwrap();
    drop(f);
    d.wait_for("the finished file", |d| d.syncs() == 2);
    let p = d.payload(2);
    assert!(p.contains("10.244.0.6") && p.contains(WEB_RULE), "{p}");
    assert!(
        !d.out().contains("has no endpoints"),
        "a sync saw the new Service without its slice:\n{}",
        d.out()
    );
}

#[test]
fn an_empty_file_keeps_the_previous_objects() {
    let dir = Dir::new("empty");
    dir.replace(&service("web", "10.96.0.20", "10.244.0.5"));
    let mut d = Daemon::start(&dir);
    d.wait_for("first sync", |d| d.syncs() == 1);
    assert!(d.payload(1).contains(WEB_RULE));

    const REFUSED: &str = "objects file is empty";
    dir.replace("");
    d.wait_for("a zero-byte file refused", |d| d.count(REFUSED) == 1);
    dir.replace("  \n# nothing here yet\n---\n");
    d.wait_for("a blank file refused", |d| d.count(REFUSED) == 2);
    std::thread::sleep(SEVERAL_POLLS);
    assert_eq!(d.syncs(), 1, "an empty file was applied:\n{}", d.out());

    // An explicit empty list is a real "no objects".
    dir.replace("apiVersion: v1\nkind: List\nitems: []\n");
    d.wait_for("the empty list applied", |d| d.syncs() == 2);
    assert!(!d.payload(2).contains(WEB_RULE), "{}", d.payload(2));
}

/// The lowest descriptor number `pid` does not use: with the soft limit there, every
/// open fails with EMFILE while stat (no descriptor) still works.
fn lowest_free_fd(pid: u32) -> u64 {
    let used: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap()
}

fn set_nofile(pid: u32, soft: Option<u64>) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers to rlimit structs; pid is our child's.
    let rc = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    if let Some(soft) = soft {
        let new = libc::rlimit {
            rlim_cur: soft,
            rlim_max: old.rlim_max,
        };
        // SAFETY: as above.
        let rc =
            unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    }
    old
}

fn restore_nofile(pid: u32, old: libc::rlimit) {
    // SAFETY: valid pointer; pid is our child's.
    let rc = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &old, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// EMFILE while reading a new file (descriptors exhausted, as idle HTTP clients did in
/// the field); once descriptors are free again the file is read without being touched.
#[test]
fn a_read_error_is_retried_without_touching_the_file() {
    let dir = Dir::new("emfile");
    dir.replace(&service("web", "10.96.0.20", "10.244.0.5"));
    let mut d = Daemon::start(&dir);
    d.wait_for("first sync", |d| d.syncs() == 1);
    let pid = d.child.id();

    let old = set_nofile(pid, Some(lowest_free_fd(pid)));
    dir.replace(&format!(
        "{}{}",
        service("web", "10.96.0.20", "10.244.0.5"),
        service("extra", "10.96.0.21", "10.244.0.6")
    ));
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        d.wait_for("the read to fail", |d| {
            d.count("cannot read the objects file") >= 1
        })
    }));
    restore_nofile(pid, old);
    if let Err(e) = waited {
        std::panic::resume_unwind(e);
    }
    assert!(
        d.log().contains("Too many open files"),
        "EMFILE expected:\n{}",
        d.log()
    );
    assert_eq!(d.syncs(), 1);

    d.wait_for("the retried read", |d| d.syncs() == 2);
    assert!(d.payload(2).contains("10.244.0.6"), "{}", d.payload(2));
    assert!(
        d.log().contains("objects file readable again"),
        "{}",
        d.log()
    );
}

/// Before: one error a second, forever. Now: once, then at growing intervals (2 s, 4 s,
/// ...), and the file is still noticed when it appears.
#[test]
fn a_missing_file_is_logged_with_back_off() {
    let dir = Dir::new("missing");
    let mut d = Daemon::start(&dir);
    let complaints =
        |d: &Daemon| d.count("objects file missing") + d.count("objects file still unreadable");
    d.wait_for("the first complaint", |d| complaints(d) == 1);
    // Nine polls: at most the first report and the repeats at 2 s and 6 s (+1 for slack).
    std::thread::sleep(Duration::from_secs(9));
    let n = complaints(&d);
    assert!((1..=4).contains(&n), "{n} complaints in 9 s:\n{}", d.log());
    assert_eq!(d.syncs(), 0);

    dir.replace(&service("web", "10.96.0.20", "10.244.0.5"));
    d.wait_for("the file to be applied", |d| d.syncs() == 1);
    assert!(d.payload(1).contains(WEB_RULE));
    assert!(
        d.log().contains("objects file readable again"),
        "{}",
        d.log()
    );
}
