//! nfacct accounting objects through nfnetlink_acct (spec §8 P1/P2, O2): a minimal
//! netlink client for the two requests kube-proxy needs — get an object (its counters)
//! and create it. Objects live per network namespace, in the caller's.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

pub use crate::rules::options::{NFACCT_INVALID, NFACCT_LOCALHOST_NODEPORTS};

/// The objects kube-proxy ensures on every full sync.
pub const OBJECTS: [&str; 2] = [NFACCT_INVALID, NFACCT_LOCALHOST_NODEPORTS];

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_ACCT: u16 = 7;
const NFNL_MSG_ACCT_NEW: u16 = 0;
const NFNL_MSG_ACCT_GET: u16 = 1;
const NFACCT_NAME: u16 = 1;
const NFACCT_PKTS: u16 = 2;
const NFACCT_BYTES: u16 = 3;
/// The kernel's NFACCT_NAME_MAX, terminating NUL included.
const NAME_MAX: usize = 32;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const HDR: usize = 16;
/// A kernel that answers nothing within this is treated as failing.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NfacctError {
    /// No nfnetlink_acct in this kernel (or not permitted): write the 1.30 rule forms.
    #[error("nfacct is not supported here: {0}")]
    Unsupported(io::Error),
    #[error("nfacct object {name:?}: {source}")]
    Object {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("nfacct object name {0:?} is empty or longer than 31 bytes")]
    BadName(String),
}

/// One object's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// A NETLINK_NETFILTER socket in the calling thread's network namespace.
pub struct Nfacct {
    fd: OwnedFd,
    seq: u32,
}

impl Nfacct {
    pub fn open() -> Result<Nfacct, NfacctError> {
        // SAFETY: plain socket(2); the result is checked and owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(NfacctError::Unsupported(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: setsockopt with a valid timeval of the size given.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(NfacctError::Unsupported(io::Error::last_os_error()));
        }
        Ok(Nfacct { fd, seq: 0 })
    }

    /// The counters of `name`; `Ok(None)` if there is no such object.
    pub fn get(&mut self, name: &str) -> Result<Option<Counters>, NfacctError> {
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        match self.request(NFNL_MSG_ACCT_GET, flags, name) {
            Ok(c) => Ok(Some(c.unwrap_or_default())),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(classify(name, e)),
        }
    }

    /// Creates `name` unless it exists (counters of an existing object are kept).
    pub fn add(&mut self, name: &str) -> Result<(), NfacctError> {
        let flags =
            (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        match self.request(NFNL_MSG_ACCT_NEW, flags, name) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(classify(name, e)),
        }
    }

    /// Makes sure `name` exists: a get, then an add if missing (as upstream's Ensure).
    pub fn ensure(&mut self, name: &str) -> Result<(), NfacctError> {
        if self.get(name)?.is_none() {
            self.add(name)?;
        }
        Ok(())
    }

    fn request(&mut self, cmd: u16, flags: u16, name: &str) -> io::Result<Option<Counters>> {
        if name.is_empty() || name.len() >= NAME_MAX || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                NfacctError::BadName(name.into()),
            ));
        }
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = encode(cmd, flags, seq, name);
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `msg` and `addr` are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr() as *const libc::c_void,
                msg.len(),
                0,
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut counters = None;
        let mut buf = vec![0u8; 16384];
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            for m in Messages(&buf[..n as usize]) {
                if m.seq != seq {
                    continue;
                }
                match m.kind {
                    NLMSG_ERROR => {
                        let code = m
                            .payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                            .ok_or_else(|| truncated("error message"))?;
                        return if code == 0 {
                            Ok(counters)
                        } else {
                            Err(io::Error::from_raw_os_error(-code))
                        };
                    }
                    NLMSG_DONE => return Ok(counters),
                    _ => counters = Some(decode_counters(m.payload)?),
                }
            }
        }
    }
}

/// The socket could not talk to nfnetlink_acct at all vs. one object failing.
fn classify(name: &str, e: io::Error) -> NfacctError {
    match e.raw_os_error() {
        // No such subsystem (EINVAL / EOPNOTSUPP / EPROTONOSUPPORT), or not permitted.
        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::EPROTONOSUPPORT | libc::EPERM) => {
            NfacctError::Unsupported(e)
        }
        _ => NfacctError::Object {
            name: name.into(),
            source: e,
        },
    }
}

fn truncated(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("truncated netlink {what}"),
    )
}

/// nlmsghdr + nfgenmsg (AF_UNSPEC, version 0, res_id 0) + NFACCT_NAME.
fn encode(cmd: u16, flags: u16, seq: u32, name: &str) -> Vec<u8> {
    let attr_len = 4 + name.len() + 1;
    let len = HDR + 4 + align(attr_len);
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&((NFNL_SUBSYS_ACCT << 8) | cmd).to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    m.extend_from_slice(&NFACCT_NAME.to_ne_bytes());
    m.extend_from_slice(name.as_bytes());
    m.resize(len, 0);
    m
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

struct Message<'a> {
    kind: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The netlink messages of one datagram.
struct Messages<'a>(&'a [u8]);

impl<'a> Iterator for Messages<'a> {
    type Item = Message<'a>;
    fn next(&mut self) -> Option<Message<'a>> {
        let b = self.0;
        if b.len() < HDR {
            return None;
        }
        let len = u32::from_ne_bytes(b[0..4].try_into().ok()?) as usize;
        if len < HDR || len > b.len() {
            self.0 = &[];
            return None;
        }
        let m = Message {
            kind: u16::from_ne_bytes(b[4..6].try_into().ok()?),
            seq: u32::from_ne_bytes(b[8..12].try_into().ok()?),
            payload: &b[HDR..len],
        };
        self.0 = &b[align(len).min(b.len())..];
        Some(m)
    }
}

/// NFACCT_PKTS / NFACCT_BYTES (big-endian u64) after the nfgenmsg header.
fn decode_counters(payload: &[u8]) -> io::Result<Counters> {
    let mut c = Counters::default();
    let mut rest = payload
        .get(4..)
        .ok_or_else(|| truncated("nfacct message"))?;
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return Err(truncated("attribute"));
        }
        let value = &rest[4..len];
        if let (NFACCT_PKTS | NFACCT_BYTES, Ok(v)) = (kind, <[u8; 8]>::try_from(value)) {
            let v = u64::from_be_bytes(v);
            if kind == NFACCT_PKTS {
                c.packets = v;
            } else {
                c.bytes = v;
            }
        }
        rest = &rest[align(len).min(rest.len())..];
    }
    Ok(c)
}

/// Whether the node supports nfacct, ensuring both objects: what a full sync does before
/// rendering (§8 P1/P2). Unsupported → `false` (1.30 rule forms), logged once per call.
pub fn ensure_objects() -> bool {
    let mut nl = match Nfacct::open() {
        Ok(n) => n,
        Err(e) => {
            tracing::info!(error = %e, "no nfacct: INVALID drops and localhost NodePorts not counted");
            return false;
        }
    };
    let mut ok = true;
    for name in OBJECTS {
        if let Err(e) = nl.ensure(name) {
            tracing::warn!(error = %e, "cannot ensure nfacct object; rules that use it are not written");
            ok = false;
        }
    }
    ok
}

/// Both objects' packet counters (for the metrics), `None` for an object that is missing
/// or unreadable.
pub fn read_counters() -> [Option<u64>; 2] {
    let Ok(mut nl) = Nfacct::open() else {
        return [None, None];
    };
    OBJECTS.map(|name| nl.get(name).ok().flatten().map(|c| c.packets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout_matches_the_kernel_structs() {
        let m = encode(NFNL_MSG_ACCT_NEW, 0x0405, 7, "abc");
        // 16 header + 4 nfgenmsg + attr (4 + "abc\0" = 8).
        assert_eq!(m.len(), 28);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 28);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), 7 << 8);
        assert_eq!(u16::from_ne_bytes(m[6..8].try_into().unwrap()), 0x0405);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(&m[16..20], &[0, 0, 0, 0]);
        assert_eq!(u16::from_ne_bytes(m[20..22].try_into().unwrap()), 8);
        assert_eq!(
            u16::from_ne_bytes(m[22..24].try_into().unwrap()),
            NFACCT_NAME
        );
        assert_eq!(&m[24..28], b"abc\0");
    }

    #[test]
    fn counters_are_read_from_big_endian_attributes_past_padding() {
        let mut p = vec![0u8; 4];
        let attr = |p: &mut Vec<u8>, kind: u16, v: &[u8]| {
            p.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
            p.extend_from_slice(&kind.to_ne_bytes());
            p.extend_from_slice(v);
            p.resize(align(p.len()), 0);
        };
        attr(&mut p, NFACCT_NAME, b"x\0");
        attr(&mut p, 8, &[]); // NFACCT_PAD
        attr(&mut p, NFACCT_PKTS, &5u64.to_be_bytes());
        attr(&mut p, NFACCT_BYTES, &300u64.to_be_bytes());
        let c = decode_counters(&p).unwrap();
        assert_eq!(
            c,
            Counters {
                packets: 5,
                bytes: 300
            }
        );
    }
}
