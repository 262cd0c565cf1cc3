//! Normalization: one canonical text per rule, so a restore payload and the
//! `iptables-save` view of the same kernel rule compare equal (spec §9.6).

use super::parse::{Basic, Match, Opt, RuleSpec, Target};
use super::sym::Sym;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::IpAddr;

/// The canonical form of a rule's matches and target (counters excluded).
pub fn rule_key(spec: &RuleSpec) -> String {
    let mut k = String::with_capacity(160);
    rule_key_into(spec, &mut k);
    k
}

/// [`rule_key`] written into `k` (cleared first): no allocation per rule when `k` is reused.
pub fn rule_key_to(spec: &RuleSpec, k: &mut String) {
    k.clear();
    rule_key_into(spec, k);
}

/// A 64-bit digest of [`rule_key`] (what the diff compares: equal rules have equal
/// digests; two different keys share one with odds of about n²/2⁶⁵, ~10⁻⁸ at 600,000
/// rules). `buf` is scratch space reused across rules.
pub fn rule_hash(spec: &RuleSpec, buf: &mut String) -> u64 {
    use std::hash::{Hash, Hasher};
    buf.clear();
    rule_key_into(spec, buf);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    buf.hash(&mut h);
    h.finish()
}

/// Parts written into one buffer and emitted in sorted order (no String per part).
#[derive(Default)]
struct Parts {
    buf: String,
    at: Vec<(usize, usize)>,
}

thread_local! {
    /// Cleared [`Parts`] for reuse: a key is built per rule, twice per diff.
    static POOL: std::cell::RefCell<Vec<Parts>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Parts {
    /// Runs `f` with an empty `Parts` taken from the pool (nested calls get their own).
    fn with<R>(f: impl FnOnce(&mut Parts) -> R) -> R {
        let mut p = POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default();
        p.buf.clear();
        p.at.clear();
        let r = f(&mut p);
        POOL.with(|pool| pool.borrow_mut().push(p));
        r
    }

    fn push(&mut self, f: impl FnOnce(&mut String)) {
        let start = self.buf.len();
        f(&mut self.buf);
        self.at.push((start, self.buf.len()));
    }

    fn emit_sorted(&mut self, k: &mut String) {
        let buf = &self.buf;
        self.at.sort_by(|a, b| buf[a.0..a.1].cmp(&buf[b.0..b.1]));
        for &(a, b) in &self.at {
            k.push(' ');
            k.push_str(&buf[a..b]);
        }
    }
}

fn rule_key_into(spec: &RuleSpec, k: &mut String) {
    basic(k, "-s", spec.src.as_ref(), addr_cow);
    basic(k, "-d", spec.dst.as_ref(), addr_cow);
    basic(k, "-p", spec.proto.as_ref(), proto);
    basic(k, "-i", spec.in_iface.as_ref(), |s| s);
    basic(k, "-o", spec.out_iface.as_ref(), |s| s);
    if let Some(f) = spec.fragment {
        k.push_str(if f { " -f" } else { " ! -f" });
    }
    let proto_name = spec.proto.as_ref().map(|p| proto(&p.value));
    Parts::with(|ms| {
        for m in &spec.matches {
            if !implicit_empty(m, proto_name.as_deref()) {
                ms.push(|s| match_key(s, m));
            }
        }
        // Option order between modules is not meaningful for the matches kube-proxy uses.
        ms.emit_sorted(k);
    });
    if let Some(t) = &spec.target {
        target_key(k, t, spec);
    }
    for o in &spec.opaque {
        let _ = write!(k, " ?{o}");
    }
}

fn basic<'a, R: AsRef<str>>(
    k: &mut String,
    flag: &str,
    b: Option<&'a Basic>,
    f: impl Fn(&'a str) -> R,
) {
    if let Some(b) = b {
        k.push(' ');
        if b.neg {
            k.push_str("! ");
        }
        k.push_str(flag);
        k.push(' ');
        k.push_str(f(&b.value).as_ref());
    }
}

fn proto(p: &str) -> Cow<'_, str> {
    match p {
        "6" => "tcp".into(),
        "17" => "udp".into(),
        "132" => "sctp".into(),
        "1" => "icmp".into(),
        "58" => "ipv6-icmp".into(),
        "icmpv6" => "ipv6-icmp".into(),
        p if p.bytes().any(|c| c.is_ascii_uppercase()) => p.to_ascii_lowercase().into(),
        p => p.into(),
    }
}

/// `-m tcp` with no options next to `-p tcp` matches nothing more than `-p tcp` does.
fn implicit_empty(m: &Match, proto: Option<&str>) -> bool {
    m.opts.is_empty() && proto == Some(m.name.as_str())
}

/// [`addr`], borrowing when the text is already canonical.
fn addr_cow(s: &str) -> Cow<'_, str> {
    if canonical_v4_cidr(s) {
        return Cow::Borrowed(s);
    }
    match parse_cidr(s) {
        Some((ip, len)) => {
            let mut out = String::with_capacity(s.len() + 3);
            let _ = write!(out, "{ip}/{len}");
            if out == s {
                Cow::Borrowed(s)
            } else {
                Cow::Owned(out)
            }
        }
        None => Cow::Borrowed(s),
    }
}

/// `a.b.c.d/len` as the kernel prints it (std's parser takes no leading zeros, so the
/// text is canonical when it parses and the host bits are clear): no formatting needed.
fn canonical_v4_cidr(s: &str) -> bool {
    let Some((ip, len)) = s.split_once('/') else {
        return false;
    };
    let (Ok(ip), Ok(n)) = (ip.parse::<std::net::Ipv4Addr>(), len.parse::<u8>()) else {
        return false;
    };
    n <= 32
        && (len == "0" || !len.starts_with('0'))
        && !len.starts_with('+')
        && IpAddr::V4(ip) == mask(IpAddr::V4(ip), n)
}

/// `10.1.2.3` → `10.1.2.3/32`, `10.244.1.7/24` → `10.244.1.0/24`, netmask → prefix.
pub fn addr(s: &str) -> String {
    match parse_cidr(s) {
        Some((ip, len)) => format!("{ip}/{len}"),
        None => s.to_string(),
    }
}

/// Parses `ip`, `ip/len` or `ip/netmask`, masking host bits as the kernel stores them.
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip_s, len_s) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let ip: IpAddr = ip_s.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = match len_s {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max => n,
            Ok(_) => return None,
            Err(_) => {
                let m: IpAddr = l.parse().ok()?;
                mask_len(&m)?
            }
        },
    };
    Some((mask(ip, len), len))
}

fn mask_len(m: &IpAddr) -> Option<u8> {
    let bits: u128 = match m {
        IpAddr::V4(a) => (u32::from(*a) as u128) << 96,
        IpAddr::V6(a) => u128::from(*a),
    };
    let len = bits.leading_ones();
    (bits.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

pub fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - len as u32)
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len as u32)
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// Parses `0x4000` or `16384` as the kernel's u32.
pub fn parse_u32(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `value[/mask]` with the given default mask.
pub fn value_mask(s: &str, default_mask: u32) -> Option<(u32, u32)> {
    match s.split_once('/') {
        Some((v, m)) => Some((parse_u32(v)?, parse_u32(m)?)),
        None => Some((parse_u32(s)?, default_mask)),
    }
}

/// The kernel's 32-bit fixed point of a `--probability` (what xt_statistic stores).
pub fn probability_fixed(s: &str) -> Option<u32> {
    let p: f64 = s.parse().ok()?;
    if !(0.0..=1.0).contains(&p) {
        return None;
    }
    Some((p * 2147483648.0).round().min(u32::MAX as f64) as u32)
}

/// The probability the kernel actually applies.
pub fn probability_value(s: &str) -> Option<f64> {
    probability_fixed(s).map(|f| f as f64 / 2147483648.0)
}

fn opt_alias<'a>(module: &str, name: &'a str) -> &'a str {
    match (module, name) {
        (_, "--destination-port") => "--dport",
        (_, "--source-port") => "--sport",
        ("multiport", "--destination-ports") => "--dports",
        ("multiport", "--source-ports") => "--sports",
        ("conntrack", "--state") => "--ctstate",
        (_, n) => n,
    }
}

fn opt_text(o: &Opt, name: &str, values: &[impl AsRef<str>]) -> String {
    let mut s = String::new();
    opt_into(&mut s, o, name, values);
    s
}

fn opt_into(s: &mut String, o: &Opt, name: &str, values: &[impl AsRef<str>]) {
    if o.neg {
        s.push_str("! ");
    }
    s.push_str(name);
    for v in values {
        let v = v.as_ref();
        s.push(' ');
        // Quote only when needed, so comment quoting never matters.
        if v.is_empty() || v.contains(char::is_whitespace) {
            let _ = write!(s, "{v:?}");
        } else {
            s.push_str(v);
        }
    }
}

fn match_key(out: &mut String, m: &Match) {
    Parts::with(|opts| match_key_with(out, m, opts));
}

fn match_key_with(out: &mut String, m: &Match, opts: &mut Parts) {
    let mut has_name = false;
    for o in &m.opts {
        let name = opt_alias(&m.name, &o.name);
        let mut values: Vec<Cow<str>> =
            o.values.iter().map(|v| Cow::Borrowed(v.as_str())).collect();
        match (m.name.as_str(), name) {
            ("statistic", "--probability") => {
                if let Some(f) = values.first().and_then(|v| probability_fixed(v)) {
                    values = vec![format!("fixed:{f}").into()];
                }
            }
            ("mark" | "connmark", "--mark") => {
                if let Some((v, msk)) = values.first().and_then(|v| value_mask(v, u32::MAX)) {
                    values = vec![format!("{v:#x}/{msk:#x}").into()];
                }
            }
            ("conntrack", "--ctstate") | ("state", "--state") => {
                if let Some(v) = values.first() {
                    let mut parts: Vec<&str> = v.split(',').collect();
                    parts.sort_unstable();
                    values = vec![parts.join(",").to_ascii_uppercase().into()];
                }
            }
            ("addrtype", _) => {
                values = values
                    .iter()
                    .map(|v| v.to_ascii_uppercase().into())
                    .collect();
            }
            ("recent", "--mask") => {
                let all_ones = values
                    .first()
                    .and_then(|v| v.parse::<IpAddr>().ok())
                    .is_some_and(|ip| match ip {
                        IpAddr::V4(a) => u32::from(a) == u32::MAX,
                        IpAddr::V6(a) => u128::from(a) == u128::MAX,
                    });
                if all_ones {
                    continue;
                }
            }
            ("recent", "--rsource") => continue,
            ("recent", "--name") => has_name = true,
            ("tcp" | "udp" | "sctp", "--dport" | "--sport") => {
                values = o.values.iter().map(|v| port_range(v)).collect();
            }
            _ => {}
        }
        opts.push(|s| opt_into(s, o, name, &values));
    }
    if m.name == "recent" && !has_name {
        opts.push(|s| s.push_str("--name DEFAULT"));
    }
    out.push_str("-m ");
    out.push_str(&m.name);
    opts.emit_sorted(out);
}

fn port_range(v: &str) -> Cow<'_, str> {
    match v.split_once(':') {
        Some((a, b)) if a == b => a.into(),
        Some((a, "")) => format!("{a}:65535").into(),
        Some(("", b)) => format!("0:{b}").into(),
        _ => v.into(),
    }
}

fn target_key(k: &mut String, t: &Target, spec: &RuleSpec) {
    k.push_str(if t.goto { " -g " } else { " -j " });
    k.push_str(&t.name);
    let mut opts: Vec<String> = Vec::with_capacity(t.opts.len());
    for o in &t.opts {
        let v0 = o.values.first().map(Sym::as_str).unwrap_or("");
        match (t.name.as_str(), o.name.as_str()) {
            (
                "MARK",
                op @ ("--set-xmark" | "--set-mark" | "--or-mark" | "--xor-mark" | "--and-mark"),
            ) => {
                // Every form is stored as (value, xor-mask) = --set-xmark.
                let xm = match op {
                    "--set-xmark" => value_mask(v0, u32::MAX),
                    "--set-mark" => value_mask(v0, u32::MAX).map(|(v, m)| (v, m | v)),
                    "--or-mark" => parse_u32(v0).map(|v| (v, v)),
                    "--xor-mark" => parse_u32(v0).map(|v| (v, 0)),
                    _ => parse_u32(v0).map(|v| (0, !v)),
                };
                match xm {
                    Some((v, m)) => opts.push(format!("--set-xmark {v:#x}/{m:#x}")),
                    None => opts.push(opt_text(o, &o.name, &o.values)),
                }
            }
            ("REJECT", "--reject-with") => {
                let v = match v0 {
                    "icmp-port-unreachable" | "port-unreach" | "icmp6-port-unreachable" => None,
                    other => Some(other),
                };
                if let Some(v) = v {
                    opts.push(format!("--reject-with {v}"));
                }
            }
            ("DNAT" | "SNAT", "--to-destination" | "--to-source" | "--to") => {
                opts.push(format!("--to {}", host_port(v0)));
            }
            _ => opts.push(opt_text(o, &o.name, &o.values)),
        }
    }
    let _ = spec;
    opts.sort();
    for o in opts {
        k.push(' ');
        k.push_str(&o);
    }
}

/// `[fd00::5]:80` / `10.0.0.1:80` with the address re-printed canonically.
fn host_port(s: &str) -> String {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((ip, port)) = rest.split_once(']') {
            if let Ok(ip) = ip.parse::<IpAddr>() {
                return format!("[{ip}]{port}");
            }
        }
    }
    if let Some((ip, port)) = s.rsplit_once(':') {
        if let Ok(ip) = ip.parse::<std::net::Ipv4Addr>() {
            return format!("{ip}:{port}");
        }
    }
    match s.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::parse::{parse_spec, tokenize};

    fn key(s: &str) -> String {
        rule_key(&parse_spec(&tokenize(s).unwrap()).unwrap().0)
    }

    #[test]
    fn restore_and_save_forms_agree() {
        let pairs = [
            (
                "-m comment --comment \"ns/svc:p cluster IP\" -m tcp -p tcp -d 10.96.0.10 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ",
                "! -s 10.244.0.0/16 -d 10.96.0.10/32 -p tcp -m comment --comment \"ns/svc:p cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ",
            ),
            ("-m comment --comment default/web:http -j X", "-m comment --comment \"default/web:http\" -j X"),
            ("-j MARK --or-mark 0x00004000", "-j MARK --set-xmark 0x4000/0x4000"),
            ("-j MARK --xor-mark 0x00004000", "-j MARK --set-xmark 0x4000/0x0"),
            ("-m mark ! --mark 0x00004000/0x00004000 -j RETURN", "-m mark ! --mark 0x4000/0x4000 -j RETURN"),
            ("-m statistic --mode random --probability 0.3333333333 -j A", "-m statistic --mode random --probability 0.33333333349 -j A"),
            ("-m statistic --mode random --probability 0.33333 -j A", "-m statistic --mode random --probability 0.33332999982 -j A"),
            (
                "-m recent --name X --rcheck --seconds 10800 --reap -j A",
                "-m recent --rcheck --seconds 10800 --reap --name X --mask 255.255.255.255 --rsource -j A",
            ),
            ("-d fd00::a -j REJECT", "-d fd00::a/128 -j REJECT --reject-with icmp6-port-unreachable"),
            ("-p tcp --dport 80 -j ACCEPT", "-p tcp -m tcp --dport 80 -j ACCEPT"),
        ];
        for (a, b) in pairs {
            assert_eq!(key(a), key(b), "{a}  vs  {b}");
        }
        assert_ne!(
            key("-m statistic --mode random --probability 0.33333 -j A"),
            key("-m statistic --mode random --probability 0.3333333333 -j A")
        );
        assert_ne!(key("-s 10.0.0.1 -j A"), key("-s 10.0.0.2 -j A"));
        assert_ne!(
            key("-j MARK --or-mark 0x4000"),
            key("-j MARK --xor-mark 0x4000")
        );
    }

    #[test]
    fn cidrs() {
        assert_eq!(addr("10.244.1.7/24"), "10.244.1.0/24");
        assert_eq!(addr("10.0.0.0/255.0.0.0"), "10.0.0.0/8");
        assert_eq!(addr("fd00:10:96::a"), "fd00:10:96::a/128");
        assert_eq!(addr("somehost"), "somehost");
    }
}
