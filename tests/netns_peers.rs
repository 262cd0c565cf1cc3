//! Clients and peers against the real daemon binary in a node namespace: a flood of idle
//! connections starves neither the servers nor the sync loop, a second daemon on the same
//! network namespace is refused, and bindAddressHardFail makes a taken port fatal.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const HEALTHZ: &str = "127.0.0.1:10256";
const METRICS: &str = "127.0.0.1:10249";

/// SIGTERM on drop, as the kubelet would stop it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn set_nofile(soft: u64, hard: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit only reads `lim`.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn hard_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into `lim`.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim.rlim_max
}

fn svc_objects(cluster_ip: &str) -> String {
    let svc = Svc {
        name: "web",
        cluster_ip,
        endpoints: Some(vec![(0, false)]),
        ..Svc::default()
    };
    format!("{NODE_YAML}{}", svc.yaml())
}

/// The test config with server addresses and `extra` settings (the config file wins over
/// flags, so they go into the file).
fn write_config(topo: &Topology, name: &str, healthz: &str, metrics: &str, extra: &str) -> PathBuf {
    let p = topo.dir.join(name);
    std::fs::write(
        &p,
        format!("{CONFIG}healthzBindAddress: {healthz}\nmetricsBindAddress: {metrics}\n{extra}"),
    )
    .unwrap();
    p
}

fn daemon_cmd(ns: &Netns, cfg: &Path, obj: &Path) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &ns.name, BIN])
        .args(["--config", cfg.to_str().unwrap()])
        .args(["--objects", obj.to_str().unwrap()]);
    c
}

/// One GET over a new connection from inside `ns`; None when it was refused or closed.
fn get(ns: &Netns, addr: &str, path: &str) -> Option<(u16, String)> {
    let addr: SocketAddr = addr.parse().unwrap();
    let path = path.to_string();
    ns.enter(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let code = text.split(' ').nth(1)?.parse().ok()?;
        Some((code, text))
    })
}

/// Polls (bounded) until `f` holds; returns how long it took. The bound limits waiting on
/// a loaded machine; it is not a measure.
fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Started with the soft limit of 1024 a service manager hands out, the daemon raises it;
/// 1,200 idle connections to the healthz port are capped and timed out, /metrics keeps
/// answering, /healthz answers at once (idle connections give way), and an objects change
/// still reaches the kernel.
#[test]
fn idle_connection_flood_starves_neither_servers_nor_sync() {
    if !can_run() {
        return;
    }
    let hard = hard_nofile();
    if hard < 4096 {
        eprintln!("SKIPPED: the hard open-files limit {hard} is too low for this test");
        return;
    }
    // This process holds the 1,200 client ends.
    set_nofile(hard, hard).unwrap();
    let topo = Topology::new(1);
    let (_, obj) = topo.write_inputs(&svc_objects("10.96.0.20"));
    let cfg = write_config(&topo, "c.yaml", HEALTHZ, METRICS, "");
    let mut cmd = daemon_cmd(&topo.node, &cfg, &obj);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| set_nofile(1024, 2048));
    }
    let daemon = Daemon(cmd.spawn().expect("start the daemon"));
    let pid = daemon.0.id();
    let save_has = |needle: &str| topo.node.save("legacy").contains(needle);
    assert!(
        wait_until(Duration::from_secs(60), || save_has("10.96.0.20/32")).is_some(),
        "first sync never happened"
    );
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        line.split_whitespace().nth(3),
        Some("2048"),
        "soft limit raised to the hard one: {line}"
    );

    let addr: SocketAddr = HEALTHZ.parse().unwrap();
    let idle: Vec<TcpStream> = topo.node.enter(move || {
        (0..1200)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok())
            .collect()
    });
    assert!(idle.len() > 1100, "only {} connections opened", idle.len());
    std::thread::sleep(Duration::from_millis(500));
    let fds = open_fds(pid);
    // The cap at this limit is 512 connections; the rest is listeners, pipes, the runtime.
    assert!(fds < 700, "the daemon holds {fds} descriptors");
    let (code, _) = get(&topo.node, METRICS, "/metrics").expect("/metrics answers");
    assert_eq!(code, 200);
    // The flood's idle connections make room: the first probe is answered.
    let (code, _) = get(&topo.node, HEALTHZ, "/healthz").expect("/healthz answers in the flood");
    assert_eq!(code, 200);

    // Atomic replace: the change must be applied while the flood holds its connections.
    let tmp = obj.with_extension("new");
    std::fs::write(&tmp, svc_objects("10.96.0.30")).unwrap();
    std::fs::rename(&tmp, &obj).unwrap();
    let took = wait_until(Duration::from_secs(60), || save_has("10.96.0.30/32"))
        .expect("objects change never reached the kernel during the flood");
    eprintln!("objects change applied {took:?} into the flood");
    let took = wait_until(Duration::from_secs(60), || {
        get(&topo.node, HEALTHZ, "/healthz").is_some_and(|(c, _)| c == 200)
    })
    .expect("/healthz never answered during the flood");
    eprintln!("/healthz answered {took:?} after the change (idle connections time out after 10 s)");
    drop(idle);
}

/// A client sending its request one byte every half second is cut off by the header
/// timeout, before the request is complete.
#[test]
fn slowloris_is_disconnected_by_the_header_timeout() {
    if !can_run() {
        return;
    }
    let topo = Topology::new(0);
    let (_, obj) = topo.write_inputs(&svc_objects("10.96.0.20"));
    let cfg = write_config(&topo, "c.yaml", HEALTHZ, METRICS, "");
    let mut cmd = daemon_cmd(&topo.node, &cfg, &obj);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let _daemon = Daemon(cmd.spawn().expect("start the daemon"));
    assert!(
        wait_until(Duration::from_secs(60), || get(
            &topo.node, HEALTHZ, "/healthz"
        )
        .is_some())
        .is_some(),
        "healthz never came up"
    );
    let addr: SocketAddr = HEALTHZ.parse().unwrap();
    // Two bytes a second: over 50 s to send in full, far past the 10 s timeout.
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(80)
    );
    let total = request.len();
    let (sent, answer, took) = topo.node.enter(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let start = Instant::now();
        let mut sent = 0;
        let mut answer = Vec::new();
        for b in request.as_bytes() {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            sent += 1;
            let mut buf = [0u8; 512];
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        (
            sent,
            String::from_utf8_lossy(&answer).into_owned(),
            start.elapsed(),
        )
    });
    eprintln!("slow client cut off after {took:?}, {sent} of {total} bytes sent");
    assert!(sent < total, "the whole request went through: {answer:?}");
    assert!(!answer.contains("200 OK"), "{answer}");
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn output(mut cmd: Command) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if wait_exit(&mut child, Duration::from_secs(60)).is_none() {
        let _ = child.kill();
    }
    child.wait_with_output().unwrap()
}

/// A second daemon in the same network namespace exits 1 naming the lock and its holder;
/// one in another namespace runs; --cleanup still works beside a running daemon.
#[test]
fn second_daemon_in_the_same_netns_is_refused() {
    if !can_run() {
        return;
    }
    let topo = Topology::new(0);
    let (_, obj) = topo.write_inputs(&svc_objects("10.96.0.20"));
    let cfg = write_config(&topo, "c.yaml", HEALTHZ, METRICS, "");
    let mut cmd = daemon_cmd(&topo.node, &cfg, &obj);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let first = Daemon(cmd.spawn().expect("start the daemon"));
    assert!(
        wait_until(Duration::from_secs(60), || get(
            &topo.node, METRICS, "/healthz"
        )
        .is_some())
        .is_some(),
        "first daemon never came up"
    );
    let ino = topo
        .node
        .exec_ok(&["stat", "-L", "-c", "%i", "/proc/self/ns/net"]);
    let lock = format!("/run/kube-proxy-rs/netns-{}.lock", ino.trim());

    let other = write_config(
        &topo,
        "other.yaml",
        "127.0.0.1:20256",
        "127.0.0.1:20249",
        "",
    );
    let second = output(daemon_cmd(&topo.node, &other, &obj));
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains(&lock), "{err}");
    assert!(err.contains(&format!("pid {}", first.0.id())), "{err}");

    // The client namespace is another network namespace: no conflict there.
    let mut cmd = daemon_cmd(&topo.client, &cfg, &obj);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut elsewhere = Daemon(cmd.spawn().unwrap());
    assert!(
        wait_until(Duration::from_secs(60), || get(
            &topo.client,
            METRICS,
            "/healthz"
        )
        .is_some())
        .is_some(),
        "a daemon in another namespace must run"
    );
    assert!(elsewhere.0.try_wait().unwrap().is_none());

    let cleanup = topo.node.exec(&[BIN, "--cleanup"]);
    assert!(
        cleanup.status.success(),
        "{}",
        String::from_utf8_lossy(&cleanup.stderr)
    );
    drop(first);
    // Once the holder is gone the lock is free again.
    let mut cmd = daemon_cmd(&topo.node, &other, &obj);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut again = Daemon(cmd.spawn().unwrap());
    assert!(
        wait_until(Duration::from_secs(60), || get(
            &topo.node,
            "127.0.0.1:20249",
            "/healthz"
        )
        .is_some())
        .is_some(),
        "a daemon after the first one stopped must run"
    );
    assert!(again.0.try_wait().unwrap().is_none());
}

/// With bindAddressHardFail a taken healthz or metrics port ends the daemon with status 1.
#[test]
fn hard_fail_exits_when_a_server_port_is_taken() {
    if !can_run() {
        return;
    }
    let topo = Topology::new(0);
    let (_, obj) = topo.write_inputs(&svc_objects("10.96.0.20"));
    let cfg = write_config(
        &topo,
        "c.yaml",
        HEALTHZ,
        METRICS,
        "bindAddressHardFail: true\n",
    );
    for (what, addr) in [("healthz", HEALTHZ), ("metrics", METRICS)] {
        let a: SocketAddr = addr.parse().unwrap();
        let blocker = topo
            .node
            .enter(move || std::net::TcpListener::bind(a).unwrap());
        let out = output(daemon_cmd(&topo.node, &cfg, &obj));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&format!("{what} server on {addr}")), "{err}");
        drop(blocker);
    }
}
