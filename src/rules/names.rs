//! Chain names: `KUBE-<KIND>-` + the first 16 base32 characters of sha256(input) (spec §2).

use sha2::{Digest, Sha256};
use std::cmp::Ordering;
use std::fmt;

/// The 16-character hash part of a per-service or per-endpoint chain name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainHash(pub [u8; 16]);

impl ChainHash {
    /// Hashes the concatenation of `parts` (no separators, as upstream does).
    pub fn of(parts: &[&str]) -> ChainHash {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p.as_bytes());
        }
        let digest = h.finalize();
        ChainHash(base32_prefix16(&digest))
    }

    /// `KUBE-<KIND>-<hash>`.
    pub fn chain_name(&self, kind: ChainKind) -> String {
        let mut s = String::with_capacity(25);
        s.push_str(kind.prefix());
        s.push_str(self.as_str());
        s
    }

    pub fn as_str(&self) -> &str {
        // Only base32 alphabet bytes are ever stored.
        std::str::from_utf8(&self.0).expect("base32 is ASCII")
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 4648 base32 of the first 10 bytes = exactly the first 16 characters of the full
/// encoding, so there is no need to encode the whole digest.
fn base32_prefix16(d: &[u8]) -> [u8; 16] {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = [0u8; 16];
    for (group, chunk) in d[..10].chunks(5).enumerate() {
        let mut v: u64 = 0;
        for b in chunk {
            v = (v << 8) | *b as u64;
        }
        for i in 0..8 {
            out[group * 8 + i] = ALPHABET[((v >> (35 - 5 * i)) & 31) as usize];
        }
    }
    out
}

/// The kinds of hashed chains kube-proxy owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChainKind {
    Svc,
    Svl,
    Ext,
    Fw,
    Sep,
}

impl ChainKind {
    pub fn prefix(self) -> &'static str {
        match self {
            ChainKind::Svc => "KUBE-SVC-",
            ChainKind::Svl => "KUBE-SVL-",
            ChainKind::Ext => "KUBE-EXT-",
            ChainKind::Fw => "KUBE-FW-",
            ChainKind::Sep => "KUBE-SEP-",
        }
    }

    /// Chains with these prefixes are kube-proxy's: stale ones are deleted, `--cleanup` removes them.
    pub fn is_owned(name: &str) -> bool {
        [
            "KUBE-SVC-",
            "KUBE-SVL-",
            "KUBE-EXT-",
            "KUBE-FW-",
            "KUBE-SEP-",
        ]
        .iter()
        .any(|p| name.starts_with(p))
    }
}

/// Longest chain name iptables accepts is 28 bytes; 32 leaves room and keeps keys `Copy`.
pub const CHAIN_KEY_LEN: usize = 32;

/// A chain name as a fixed-size, zero-padded byte array: compares exactly like the string
/// (zero sorts before every character) without allocating.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainKey([u8; CHAIN_KEY_LEN]);

impl Ord for ChainKey {
    // Two big-endian 128-bit words compare like the bytes, without a memcmp call.
    fn cmp(&self, other: &Self) -> Ordering {
        let words = |k: &ChainKey| {
            let (a, b) = k.0.split_at(16);
            (
                u128::from_be_bytes(a.try_into().expect("16 bytes")),
                u128::from_be_bytes(b.try_into().expect("16 bytes")),
            )
        };
        words(self).cmp(&words(other))
    }
}

impl PartialOrd for ChainKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl ChainKey {
    pub fn hashed(kind: ChainKind, hash: &ChainHash) -> ChainKey {
        let mut k = [0u8; CHAIN_KEY_LEN];
        let p = kind.prefix().as_bytes();
        k[..p.len()].copy_from_slice(p);
        k[p.len()..p.len() + 16].copy_from_slice(&hash.0);
        ChainKey(k)
    }

    /// `None` if the name is too long or contains NUL (never a chain we write).
    pub fn named(name: &str) -> Option<ChainKey> {
        let b = name.as_bytes();
        if b.len() > CHAIN_KEY_LEN {
            return None;
        }
        let mut k = [0u8; CHAIN_KEY_LEN];
        k[..b.len()].copy_from_slice(b);
        let k = ChainKey(k);
        // A NUL in `name` would end the key early (a word-at-a-time scan, where a
        // `contains` was a memchr call per chain of a render).
        (k.len() == b.len()).then_some(k)
    }

    pub fn as_str(&self) -> &str {
        let b = &self.0[..self.len()];
        debug_assert!(std::str::from_utf8(b).is_ok());
        // SAFETY: keys are only built from a `&str` (`named`, which rejects NUL, so the
        // bytes before the first NUL are the whole string) or from ASCII (`hashed`).
        unsafe { std::str::from_utf8_unchecked(b) }
    }

    /// Length of the name: the index of the first NUL, found a word at a time (this runs
    /// for every chain declaration of a payload).
    #[inline]
    pub fn len(&self) -> usize {
        for (i, w) in self.0.chunks_exact(8).enumerate() {
            let v = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            // The lowest set bit marks the first zero byte (higher ones may be false).
            let zero = v.wrapping_sub(0x0101_0101_0101_0101) & !v & 0x8080_8080_8080_8080;
            if zero != 0 {
                return i * 8 + zero.trailing_zeros() as usize / 8;
            }
        }
        CHAIN_KEY_LEN
    }

    /// Never true for a key that names a chain; for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.0[0] == 0
    }

    /// The name's bytes, NUL-padded.
    #[inline]
    pub fn bytes(&self) -> &[u8; CHAIN_KEY_LEN] {
        &self.0
    }

    /// Canonical chain order (golden README §3): KUBE-NODEPORTS, KUBE-SERVICES, other KUBE-*
    /// chains, then the rest, each group byte-wise.
    pub fn canonical_cmp(&self, other: &ChainKey) -> Ordering {
        self.canonical_rank()
            .cmp(&other.canonical_rank())
            .then_with(|| self.0.cmp(&other.0))
    }

    /// The group of the canonical order this chain belongs to (sort by rank, then key).
    pub fn canonical_rank(&self) -> u8 {
        match self.as_str() {
            "KUBE-NODEPORTS" => 0,
            "KUBE-SERVICES" => 1,
            s if s.starts_with("KUBE-") => 2,
            _ => 3,
        }
    }
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(kind: ChainKind, parts: &[&str]) -> String {
        ChainKey::hashed(kind, &ChainHash::of(parts)).to_string()
    }

    // Vectors from spec §2.2 (they appear in upstream's unit-test expectations).
    #[test]
    fn spec_hash_vectors() {
        assert_eq!(
            name(ChainKind::Svc, &["ns1/svc1:p80", "tcp"]),
            "KUBE-SVC-XPGD46QRK7WJZT7O"
        );
        assert_eq!(
            name(ChainKind::Sep, &["ns1/svc1:p80", "tcp", "10.180.0.1:80"]),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
        assert_eq!(
            name(ChainKind::Ext, &["ns2/svc2:p80", "tcp"]),
            "KUBE-EXT-GNZBNJ2PO5MGZ6GT"
        );
        assert_eq!(
            name(ChainKind::Fw, &["ns5/svc5:p80", "tcp"]),
            "KUBE-FW-NUKIZ6OKUXPJNT4C"
        );
        assert_eq!(
            name(ChainKind::Sep, &["ns5/svc5:p80", "tcp", "10.180.0.3:80"]),
            "KUBE-SEP-I77PXRDZVX7PMWMN"
        );
    }

    #[test]
    fn truncated_encoding_matches_full_base32() {
        let digest = Sha256::digest(b"default/web:httptcp");
        let full = base32::encode(base32::Alphabet::Rfc4648 { padding: true }, &digest);
        assert_eq!(
            &full[..16],
            std::str::from_utf8(&base32_prefix16(&digest)).unwrap()
        );
    }

    #[test]
    fn len_finds_the_first_nul() {
        for n in 1..=CHAIN_KEY_LEN {
            let name: String = "KUBE-SEP-ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                .chars()
                .cycle()
                .take(n)
                .collect();
            let k = ChainKey::named(&name).unwrap();
            assert_eq!(k.len(), n, "{name}");
            assert_eq!(k.as_str(), name);
        }
        // Bytes >= 0x80 (UTF-8) must not look like NULs.
        let k = ChainKey::named("é\u{80}ÿ").unwrap();
        assert_eq!(k.as_str(), "é\u{80}ÿ");
        // A NUL anywhere (it would cut the key short) is refused.
        for bad in ["\0", "KUBE\0", "KUBE-SEP-\0X", "\0KUBE"] {
            assert!(ChainKey::named(bad).is_none(), "{bad:?}");
        }
        assert_eq!(ChainKey::named(&"X".repeat(33)), None);
    }

    #[test]
    fn canonical_chain_order() {
        let mut keys: Vec<ChainKey> = [
            "KUBE-SEP-A",
            "KUBE-SERVICES",
            "OTHER",
            "KUBE-NODEPORTS",
            "KUBE-MARK-MASQ",
        ]
        .iter()
        .map(|n| ChainKey::named(n).unwrap())
        .collect();
        keys.sort_by(|a, b| a.canonical_cmp(b));
        let names: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "KUBE-NODEPORTS",
                "KUBE-SERVICES",
                "KUBE-MARK-MASQ",
                "KUBE-SEP-A",
                "OTHER"
            ]
        );
    }
}
