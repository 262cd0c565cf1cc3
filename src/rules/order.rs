//! Sorting a payload's per-service chains (tens of thousands) into canonical order: each
//! name is reduced to a 64-bit word that orders like the name, the words are radix
//! sorted, and the rare equal words fall back to the whole name. A comparison sort of
//! the names was half of a large render's serial work.

use super::names::ChainKey;
use std::cmp::Ordering;

/// One chain to be ordered: its word ([`order_word`]) and its index in the caller's list.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Item {
    pub(crate) word: u64,
    pub(crate) entry: u32,
}

/// A word with `a <= b` ⇒ `order_word(a) <= order_word(b)` in byte order of the names:
/// 2 bits for how the first five bytes compare with `KUBE-`, then, for names that start
/// so, bytes 5..13 (kind and 3–4 hash characters) as 7-bit fields, cut after the first
/// byte >= 0x7f (those all share the field 0x7f, so what follows must not order them).
/// Equal words say nothing about the order.
pub(crate) fn order_word(k: &ChainKey) -> u64 {
    let b = k.bytes();
    let word = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    const KUBE: u64 = u64::from_be_bytes(*b"KUBE-\0\0\0") >> 24;
    match (word(0) >> 24).cmp(&KUBE) {
        Ordering::Less => return 0,
        Ordering::Greater => return 2 << 60,
        Ordering::Equal => {}
    }
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut v = word(5);
    // High bit of each byte >= 0x7f (a low 0x7f carries into it, never further).
    let wide = (v | ((v & LOW7) + 0x0101_0101_0101_0101)) & HIGH;
    if wide != 0 {
        let cut = 56 - (wide.leading_zeros() & !7);
        v = (v & (u64::MAX << cut)) | (0x7f << cut);
    }
    // The eight 7-bit fields packed into 56 bits.
    let mut x = v & LOW7;
    x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
    x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
    x = (x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4);
    (1 << 60) | x
}

/// Sorts `items` by word, stably (equal words keep their order): LSD radix, 11-bit
/// digits, skipping digits all words share. `tmp` is scratch, kept by the caller.
pub(crate) fn radix_sort(items: &mut Vec<Item>, tmp: &mut Vec<Item>) {
    const BITS: usize = 11;
    const DIGITS: usize = 64_usize.div_ceil(BITS);
    const MASK: u64 = (1 << BITS) - 1;
    let n = items.len();
    if n < 256 {
        items.sort_by_key(|i| i.word);
        return;
    }
    let mut counts = vec![[0u32; 1 << BITS]; DIGITS];
    for it in items.iter() {
        for (d, c) in counts.iter_mut().enumerate() {
            c[((it.word >> (d * BITS)) & MASK) as usize] += 1;
        }
    }
    tmp.clear();
    tmp.resize(n, Item::default());
    for (d, c) in counts.iter_mut().enumerate() {
        let shift = d * BITS;
        let first = ((items[0].word >> shift) & MASK) as usize;
        if c[first] as usize == n {
            continue;
        }
        let mut sum = 0;
        for x in c.iter_mut() {
            let v = *x;
            *x = sum;
            sum += v;
        }
        for it in items.iter() {
            let slot = &mut c[((it.word >> shift) & MASK) as usize];
            tmp[*slot as usize] = *it;
            *slot += 1;
        }
        std::mem::swap(items, tmp);
    }
}

/// Puts `items` (radix sorted by word) in the order of `(key, entry)`: only runs of
/// equal words need sorting, by the whole name.
pub(crate) fn break_ties(items: &mut [Item], key: impl Fn(u32) -> ChainKey) {
    let mut i = 0;
    while i + 1 < items.len() {
        if items[i].word != items[i + 1].word {
            i += 1;
            continue;
        }
        let mut j = i + 2;
        while j < items.len() && items[j].word == items[i].word {
            j += 1;
        }
        items[i..j]
            .sort_unstable_by(|a, b| key(a.entry).cmp(&key(b.entry)).then(a.entry.cmp(&b.entry)));
        i = j;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::names::{ChainHash, ChainKind};

    /// A small deterministic generator (xorshift), enough for test names.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Hashed names of every kind, near-duplicates, odd hand-made names (short, not
    /// `KUBE-`, non-ASCII, bytes on both sides of the hash alphabet) and repeats.
    fn names(n: usize) -> Vec<ChainKey> {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let kinds = [
            ChainKind::Svc,
            ChainKind::Svl,
            ChainKind::Ext,
            ChainKind::Fw,
            ChainKind::Sep,
        ];
        let odd = [
            "KUBE-SVC-GONE",
            "KUBE-SEP-",
            "KUBE-SEP",
            "KUBE",
            "KUBE-",
            "KUBE-SEP-AAAAAAA",
            "KUBE-SEP-AAAAAAAA",
            "KUBE-SEP-AAAAAAA8",
            "KUBE-SEP-AAAAAAA1",
            "KUBE-SEP-AAAAAAAz",
            "KUBE-SEP-AAAAAA[",
            "KUBE-SEP-AAAAAA@",
            "KUBE-SEP-AAAAAA9",
            "KUBE-SEP-AAAAAA!",
            "KUBE-sep-x",
            "KUBE-é-ü",
            "KUBE-SEP-\u{7f}A",
            "KUBE-SEP-\u{7f}B",
            "KUBE-SEP-\u{7f}\u{7f}",
            "KUBE-SEP-éA",
            "KUBE-SEP-ÿ",
            "KUBE-SEP-~Z",
            "KUBA-SEP-A",
            "KUBF-SEP-A",
            "A",
            "kube-sep-a",
            "ZZZ",
        ];
        let mut out = Vec::new();
        for i in 0..n {
            let r = rng.next();
            let k = match r % 10 {
                0 => ChainKey::named(odd[(r >> 8) as usize % odd.len()]).unwrap(),
                1 if !out.is_empty() => out[(r >> 8) as usize % out.len()],
                2 => {
                    // Shares the first 15 bytes with a hashed name: only the tie-break
                    // tells them apart.
                    let base = ChainKey::hashed(ChainKind::Sep, &ChainHash::of(&[&i.to_string()]));
                    let mut s = base.to_string();
                    s.truncate(15);
                    s.push(['A', 'Z', '2', '7', 'a'][(r >> 8) as usize % 5]);
                    ChainKey::named(&s).unwrap()
                }
                _ => ChainKey::hashed(
                    kinds[(r >> 8) as usize % kinds.len()],
                    &ChainHash::of(&[&i.to_string()]),
                ),
            };
            out.push(k);
        }
        out
    }

    #[test]
    fn words_order_like_the_names() {
        let keys = names(3000);
        for a in &keys[..300] {
            for b in &keys {
                if a < b {
                    assert!(order_word(a) <= order_word(b), "{a} {b}");
                }
            }
        }
    }

    #[test]
    fn radix_sort_and_ties_give_the_order_of_key_then_entry() {
        for n in [0, 1, 2, 255, 256, 257, 5000, 40_000] {
            let keys = names(n);
            let mut items: Vec<Item> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| Item {
                    word: order_word(k),
                    entry: i as u32,
                })
                .collect();
            let mut tmp = Vec::new();
            radix_sort(&mut items, &mut tmp);
            break_ties(&mut items, |e| keys[e as usize]);
            let got: Vec<u32> = items.iter().map(|i| i.entry).collect();
            let mut want: Vec<u32> = (0..n as u32).collect();
            want.sort_by(|a, b| keys[*a as usize].cmp(&keys[*b as usize]).then(a.cmp(b)));
            assert_eq!(got, want, "n = {n}");
        }
    }
}
