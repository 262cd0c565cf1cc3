//! Start-up conntrack sysctls (spec §6.7): nf_conntrack_max (and the module's hashsize),
//! TCP timeouts, be-liberal, UDP timeouts. Each is written only when its current value
//! differs. Paths are rooted at [`Roots`] so tests run on temp dirs.

use crate::config::KubeProxyConntrackConfiguration;
use std::io;
use std::path::{Path, PathBuf};

/// Where `/proc/sys` and `/sys/module` are.
#[derive(Clone, Debug)]
pub struct Roots {
    pub proc_sys: PathBuf,
    pub sys_module: PathBuf,
    /// Whether this is the initial network namespace; `None` = detect (nf_conntrack_max
    /// is writable only there). hashsize is global, so it is touched only there.
    pub initial_netns: Option<bool>,
}

impl Roots {
    pub fn host() -> Roots {
        Roots {
            proc_sys: "/proc/sys".into(),
            sys_module: "/sys/module".into(),
            initial_netns: None,
        }
    }

    fn sysctl(&self, name: &str) -> PathBuf {
        self.proc_sys.join("net/netfilter").join(name)
    }

    fn hashsize(&self) -> PathBuf {
        self.sys_module.join("nf_conntrack/parameters/hashsize")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} holds {text:?}, not an integer")]
    Parse { path: PathBuf, text: String },
    #[error("setting {name} to {value}: {source}")]
    Write {
        name: String,
        value: i64,
        source: io::Error,
    },
}

const MAX: &str = "nf_conntrack_max";

/// nf_conntrack_max wanted: max(maxPerCore × CPUs, min), or `None` when maxPerCore is 0.
pub fn conntrack_max(cfg: &KubeProxyConntrackConfiguration, cpus: u32) -> Option<i64> {
    (cfg.max_per_core > 0)
        .then(|| (i64::from(cfg.max_per_core) * i64::from(cpus)).max(i64::from(cfg.min)))
}

/// The per-namespace sysctls wanted (name under net/netfilter, value).
fn wanted(cfg: &KubeProxyConntrackConfiguration) -> Vec<(&'static str, i64)> {
    let secs = |d: std::time::Duration| (!d.is_zero()).then_some(d.as_secs() as i64);
    let mut out = Vec::new();
    let timeouts = [
        (
            "nf_conntrack_tcp_timeout_established",
            cfg.tcp_established_timeout,
        ),
        (
            "nf_conntrack_tcp_timeout_close_wait",
            cfg.tcp_close_wait_timeout,
        ),
    ];
    for (name, d) in timeouts {
        out.extend(secs(d).map(|v| (name, v)));
    }
    if cfg.tcp_be_liberal {
        out.push(("nf_conntrack_tcp_be_liberal", 1));
    }
    let udp = [
        ("nf_conntrack_udp_timeout", cfg.udp_timeout),
        ("nf_conntrack_udp_timeout_stream", cfg.udp_stream_timeout),
    ];
    for (name, d) in udp {
        out.extend(secs(d).map(|v| (name, v)));
    }
    out
}

fn read_int(path: &Path) -> Result<i64, SysctlError> {
    let text = std::fs::read_to_string(path).map_err(|source| SysctlError::Read {
        path: path.into(),
        source,
    })?;
    text.trim().parse().map_err(|_| SysctlError::Parse {
        path: path.into(),
        text,
    })
}

/// Refusals that mean "not ours to change here" (read-only in this network namespace or
/// a read-only mount), not a broken host.
fn refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EACCES | libc::EPERM | libc::EROFS)
    )
}

fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

fn read_only_mount(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statvfs only writes into `st`, which lives across the call.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        libc::statvfs(c.as_ptr(), &mut st) == 0 && st.f_flag & libc::ST_RDONLY != 0
    }
}

/// Writes `value` to `path` unless it already holds it. `Ok(Some(warning))` when the
/// kernel refused in a way start-up tolerates.
fn set(path: &Path, name: &str, value: i64) -> Result<Option<String>, SysctlError> {
    let current = read_int(path)?;
    if current == value {
        return Ok(None);
    }
    tracing::info!(sysctl = name, from = current, to = value, "Setting sysctl");
    match std::fs::write(path, value.to_string()) {
        Ok(()) => Ok(None),
        Err(e) if refused(&e) => Ok(Some(format!(
            "{name} is not writable here ({e}); leaving it at {current} instead of {value}"
        ))),
        Err(source) => Err(SysctlError::Write {
            name: name.into(),
            value,
            source,
        }),
    }
}

/// Applies the configuration; returns the warnings (also logged). Errors are fatal to
/// start-up, as upstream's are.
pub fn configure(
    roots: &Roots,
    cfg: &KubeProxyConntrackConfiguration,
    cpus: u32,
) -> Result<Vec<String>, SysctlError> {
    let mut warnings = Vec::new();
    if let Some(max) = conntrack_max(cfg, cpus) {
        let path = roots.sysctl(MAX);
        warnings.extend(set(&path, MAX, max)?);
        let initial = roots.initial_netns.unwrap_or_else(|| writable(&path));
        if initial {
            warnings.extend(raise_hashsize(roots, max / 4)?);
        } else {
            tracing::debug!("not the initial network namespace: hashsize left alone");
        }
    }
    for (name, value) in wanted(cfg) {
        warnings.extend(set(&roots.sysctl(name), name, value)?);
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    Ok(warnings)
}

/// hashsize = `want` when currently smaller (it is never lowered).
fn raise_hashsize(roots: &Roots, want: i64) -> Result<Option<String>, SysctlError> {
    let path = roots.hashsize();
    let current = read_int(&path)?;
    if current >= want {
        return Ok(None);
    }
    if read_only_mount(&roots.sys_module) {
        return Ok(Some(format!(
            "hashsize: /sys is read-only, leaving it at {current} instead of {want}"
        )));
    }
    tracing::info!(from = current, to = want, "Setting nf_conntrack hashsize");
    match std::fs::write(&path, want.to_string()) {
        Ok(()) => Ok(None),
        // EOPNOTSUPP: the kernel's answer outside the initial network namespace.
        Err(e) if refused(&e) || e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(Some(format!(
            "hashsize is not writable here ({e}); leaving it at {current}"
        ))),
        Err(source) => Err(SysctlError::Write {
            name: "hashsize".into(),
            value: want,
            source,
        }),
    }
}

/// `net.ipv4.conf.all.route_localnet=1`, which NodePorts on 127.0.0.1 need (spec §3.16),
/// written only when different; a refusal is an error, as upstream's is.
pub fn enable_route_localnet(roots: &Roots) -> Result<(), SysctlError> {
    let name = "net.ipv4.conf.all.route_localnet";
    let path = roots.proc_sys.join("net/ipv4/conf/all/route_localnet");
    match set(&path, name, 1)? {
        None => Ok(()),
        Some(refusal) => Err(SysctlError::Write {
            name: name.into(),
            value: 1,
            source: io::Error::other(refusal),
        }),
    }
}

/// CPUs this process may run on (Go's `runtime.NumCPU`: the affinity mask).
pub fn cpus() -> u32 {
    // SAFETY: sched_getaffinity fills `set`, a plain bitmask we own.
    let n = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            libc::CPU_COUNT(&set)
        } else {
            0
        }
    };
    match u32::try_from(n) {
        Ok(n) if n > 0 => n,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Tmp(PathBuf);

    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A fake /proc/sys and /sys/module holding `values`.
    fn fake(tag: &str, values: &[(&str, &str)], hashsize: &str) -> (Tmp, Roots) {
        let dir = std::env::temp_dir().join(format!("kprs-sysctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let roots = Roots {
            proc_sys: dir.join("proc"),
            sys_module: dir.join("module"),
            initial_netns: Some(true),
        };
        std::fs::create_dir_all(roots.proc_sys.join("net/netfilter")).unwrap();
        std::fs::create_dir_all(roots.hashsize().parent().unwrap()).unwrap();
        for (k, v) in values {
            std::fs::write(roots.sysctl(k), v).unwrap();
        }
        std::fs::write(roots.hashsize(), hashsize).unwrap();
        (Tmp(dir), roots)
    }

    fn get(roots: &Roots, name: &str) -> String {
        std::fs::read_to_string(roots.sysctl(name)).unwrap()
    }

    fn all_defaults() -> Vec<(&'static str, &'static str)> {
        vec![
            (MAX, "65536\n"),
            ("nf_conntrack_tcp_timeout_established", "432000\n"),
            ("nf_conntrack_tcp_timeout_close_wait", "60\n"),
            ("nf_conntrack_tcp_be_liberal", "0\n"),
            ("nf_conntrack_udp_timeout", "30\n"),
            ("nf_conntrack_udp_timeout_stream", "120\n"),
        ]
    }

    fn cfg() -> KubeProxyConntrackConfiguration {
        crate::config::KubeProxyConfiguration::default().conntrack
    }

    #[test]
    fn max_is_per_core_with_a_floor() {
        let mut c = cfg();
        assert_eq!(conntrack_max(&c, 2), Some(131072), "32768 × 2 < min");
        assert_eq!(conntrack_max(&c, 8), Some(262144));
        c.max_per_core = 0;
        assert_eq!(conntrack_max(&c, 8), None);
    }

    #[test]
    fn writes_what_differs() {
        let (_t, roots) = fake("differs", &all_defaults(), "16384\n");
        let mut c = cfg();
        c.tcp_be_liberal = true;
        c.udp_timeout = Duration::from_secs(45);
        c.udp_stream_timeout = Duration::from_secs(120);
        let warnings = configure(&roots, &c, 4).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(get(&roots, MAX), "131072");
        assert_eq!(
            std::fs::read_to_string(roots.hashsize()).unwrap(),
            "32768",
            "raised to max/4"
        );
        // Defaults: 24 h established, 1 h close-wait.
        assert_eq!(get(&roots, "nf_conntrack_tcp_timeout_established"), "86400");
        assert_eq!(get(&roots, "nf_conntrack_tcp_timeout_close_wait"), "3600");
        assert_eq!(get(&roots, "nf_conntrack_tcp_be_liberal"), "1");
        assert_eq!(get(&roots, "nf_conntrack_udp_timeout"), "45");
        // Equal already: left untouched (the original text, newline included).
        assert_eq!(get(&roots, "nf_conntrack_udp_timeout_stream"), "120\n");
    }

    #[test]
    fn zero_leaves_alone_and_hashsize_never_lowers() {
        let (_t, roots) = fake("zero", &all_defaults(), "65536\n");
        let mut c = cfg();
        c.tcp_established_timeout = Duration::ZERO;
        c.tcp_close_wait_timeout = Duration::ZERO;
        configure(&roots, &c, 2).unwrap();
        assert_eq!(
            get(&roots, "nf_conntrack_tcp_timeout_established"),
            "432000\n"
        );
        assert_eq!(get(&roots, "nf_conntrack_tcp_timeout_close_wait"), "60\n");
        assert_eq!(get(&roots, "nf_conntrack_tcp_be_liberal"), "0\n");
        assert_eq!(get(&roots, "nf_conntrack_udp_timeout"), "30\n");
        assert_eq!(
            std::fs::read_to_string(roots.hashsize()).unwrap(),
            "65536\n"
        );
        assert_eq!(get(&roots, MAX), "131072");

        c.max_per_core = 0;
        std::fs::write(roots.sysctl(MAX), "7\n").unwrap();
        std::fs::write(roots.hashsize(), "1\n").unwrap();
        configure(&roots, &c, 2).unwrap();
        assert_eq!(get(&roots, MAX), "7\n");
        assert_eq!(std::fs::read_to_string(roots.hashsize()).unwrap(), "1\n");
    }

    #[test]
    fn hashsize_untouched_outside_the_initial_netns() {
        let (_t, mut roots) = fake("netns", &all_defaults(), "16384\n");
        roots.initial_netns = Some(false);
        configure(&roots, &cfg(), 2).unwrap();
        assert_eq!(
            std::fs::read_to_string(roots.hashsize()).unwrap(),
            "16384\n"
        );
    }

    #[test]
    fn missing_sysctl_and_write_errors_fail() {
        let mut values = all_defaults();
        values.retain(|(k, _)| *k != "nf_conntrack_tcp_timeout_close_wait");
        let (_t, roots) = fake("missing", &values, "65536\n");
        let e = configure(&roots, &cfg(), 2).unwrap_err();
        assert!(
            matches!(&e, SysctlError::Read { path, .. } if path.ends_with("nf_conntrack_tcp_timeout_close_wait")),
            "{e}"
        );
        let (_t2, roots) = fake("broken", &all_defaults(), "65536\n");
        std::fs::write(roots.sysctl(MAX), "lots\n").unwrap();
        assert!(matches!(
            configure(&roots, &cfg(), 2),
            Err(SysctlError::Parse { .. })
        ));
    }

    #[test]
    fn refusals_are_warnings_other_errors_are_not() {
        for errno in [libc::EACCES, libc::EPERM, libc::EROFS] {
            assert!(refused(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
        assert!(!refused(&io::Error::from_raw_os_error(libc::EINVAL)));
        assert!(!refused(&io::Error::from_raw_os_error(libc::ENOENT)));
    }

    #[test]
    fn counts_cpus() {
        let n = cpus();
        assert!(n >= 1 && n as usize <= 4096, "{n}");
    }

    #[test]
    fn route_localnet_is_set_once() {
        let (_tmp, roots) = fake("localnet", &[], "1024");
        let path = roots.proc_sys.join("net/ipv4/conf/all/route_localnet");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "0\n").unwrap();
        enable_route_localnet(&roots).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1");
        // Already 1: nothing written (a rewrite would drop the newline).
        std::fs::write(&path, "1\n").unwrap();
        enable_route_localnet(&roots).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
    }
}
