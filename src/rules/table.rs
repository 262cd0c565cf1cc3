//! One table of a restore payload, assembled directly in canonical order.
//!
//! Shared chains get their own buffer; per-service chains are written contiguously into
//! one arena and remembered as ranges, so the final text needs one sort of chain keys and
//! one copy, no per-rule allocation.

use super::names::ChainKey;
use super::order::{self, Item};

/// Where payload text goes: a `String`, or a pipe (see [`IoOut`]).
pub trait Out {
    fn push_str(&mut self, s: &str);
    /// For pieces of a few dozen bytes (a `String` copies them inline, see [`Put`]).
    fn push_short(&mut self, s: &str) {
        self.push_str(s);
    }
    fn push(&mut self, c: char) {
        let mut b = [0u8; 4];
        self.push_str(c.encode_utf8(&mut b));
    }
}

impl Out for String {
    fn push_str(&mut self, s: &str) {
        String::push_str(self, s);
    }
    fn push(&mut self, c: char) {
        String::push(self, c);
    }
    fn push_short(&mut self, s: &str) {
        self.put(s);
    }
}

/// Buffered text into an `io::Write`; the first error is kept and later writes are
/// skipped, so the writer of a long payload checks once, at the end.
pub struct IoOut<W: std::io::Write> {
    w: std::io::BufWriter<W>,
    err: Option<std::io::Error>,
    bytes: usize,
}

impl<W: std::io::Write> IoOut<W> {
    pub fn new(w: W) -> IoOut<W> {
        IoOut {
            w: std::io::BufWriter::with_capacity(256 << 10, w),
            err: None,
            bytes: 0,
        }
    }

    /// Flushes; returns the bytes written or the first error.
    pub fn finish(mut self) -> std::io::Result<usize> {
        if let Some(e) = self.err.take() {
            return Err(e);
        }
        std::io::Write::flush(&mut self.w)?;
        Ok(self.bytes)
    }
}

impl<W: std::io::Write> Out for IoOut<W> {
    fn push_str(&mut self, s: &str) {
        if self.err.is_none() {
            match std::io::Write::write_all(&mut self.w, s.as_bytes()) {
                Ok(()) => self.bytes += s.len(),
                Err(e) => self.err = Some(e),
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Body {
    Named(usize),
    /// (arena: 0 = this table's, i = parts[i - 1]'s, start, end)
    Range(u8, u32, u32),
    Deleted,
}

pub struct Table {
    name: &'static str,
    /// Chains written whole (fixed and shared ones), in declaration order of creation.
    named: Vec<(ChainKey, String)>,
    /// Buffers of chains declared before the last `clear`, for the next declarations.
    spare: Vec<String>,
    arena: String,
    ranges: Vec<(ChainKey, u32, u32)>,
    deleted: Vec<ChainKey>,
    /// Lines that must end nat KUBE-SERVICES, sorted by the whole line on output.
    tail: Vec<String>,
    tail_chain: Option<usize>,
    /// Rule lines in `arena`, as counted by [`Table::count_lines_from`].
    arena_lines: usize,
    /// Rule lines of the per-service chains written by the last `write_to` (all arenas).
    written_arena_lines: usize,
    /// Chain declarations written by the last `write_to`.
    chains: usize,
    /// `write_to`'s chains (in the order they were gathered), its sort keys and the
    /// canonical order (indices into `entries`), kept for the next render: a large
    /// cluster's are megabytes, and fresh ones cost page faults every sync.
    entries: Vec<(ChainKey, Body)>,
    keys: Vec<Item>,
    keys_tmp: Vec<Item>,
    order: Vec<u32>,
}

impl Table {
    pub fn new(name: &'static str) -> Table {
        Table {
            name,
            named: Vec::new(),
            spare: Vec::new(),
            arena: String::new(),
            ranges: Vec::new(),
            deleted: Vec::new(),
            tail: Vec::new(),
            tail_chain: None,
            arena_lines: 0,
            written_arena_lines: 0,
            chains: 0,
            entries: Vec::new(),
            keys: Vec::new(),
            keys_tmp: Vec::new(),
            order: Vec::new(),
        }
    }

    /// Empties the table, keeping its buffers' capacity for the next render.
    pub fn clear(&mut self) {
        // Reversed, so that `declare` in the same order gets each chain's own buffer back.
        for (_, mut b) in self.named.drain(..).rev() {
            b.clear();
            self.spare.push(b);
        }
        self.arena.clear();
        self.ranges.clear();
        self.deleted.clear();
        self.tail.clear();
        self.tail_chain = None;
        self.arena_lines = 0;
    }

    /// Lines of a table that is never written out: its shared chains and counted arena.
    pub fn rule_lines(&self) -> usize {
        self.named_and_tail_lines() + self.arena_lines
    }

    /// Declares a shared/fixed chain; returns its slot for `buf`.
    pub fn declare(&mut self, chain: &str) -> usize {
        let key = ChainKey::named(chain).expect("fixed chain names are short");
        self.named.push((key, self.spare.pop().unwrap_or_default()));
        self.named.len() - 1
    }

    pub fn buf(&mut self, slot: usize) -> &mut String {
        &mut self.named[slot].1
    }

    /// Shared/fixed chains declared so far.
    pub fn named_len(&self) -> usize {
        self.named.len()
    }

    /// The buffers of `N` distinct slots at once (panics on a repeated or unknown slot).
    pub fn bufs_mut<const N: usize>(&mut self, slots: [usize; N]) -> [&mut String; N] {
        self.named
            .get_disjoint_mut(slots)
            .expect("distinct declared slots")
            .map(|(_, b)| b)
    }

    pub fn named_buf(&self, slot: usize) -> &str {
        &self.named[slot].1
    }

    /// Starts a per-service chain: its rules are whatever is appended to `arena()` until
    /// the next `begin_chain` or `finish_chain`.
    pub fn begin_chain(&mut self, key: ChainKey) {
        let at = self.arena.len() as u32;
        self.ranges.push((key, at, at));
    }

    /// Per-service chains begun so far.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// Index (in `begin_chain` order) of the chain `key`, if this table wrote it.
    pub fn range_position(&self, key: ChainKey) -> Option<usize> {
        self.ranges.iter().position(|(k, _, _)| *k == key)
    }

    pub fn arena(&mut self) -> &mut String {
        &mut self.arena
    }

    pub fn arena_len(&self) -> usize {
        self.arena.len()
    }

    /// Counts the rule lines appended to the arena since it was `start` bytes long (call
    /// once per run of chains, while the text is still in cache); returns that count.
    pub fn count_lines_from(&mut self, start: usize) -> usize {
        let n = count_lines(self.arena.as_bytes().get(start..).unwrap_or_default());
        self.arena_lines += n;
        n
    }

    /// Rule lines counted in the arena so far.
    pub fn arena_lines(&self) -> usize {
        self.arena_lines
    }

    pub fn finish_chain(&mut self) {
        let end = self.arena.len() as u32;
        if let Some(last) = self.ranges.last_mut() {
            last.2 = end;
        }
    }

    /// Declares a chain (flushing it) and deletes it with `-X`.
    pub fn delete_chain(&mut self, key: ChainKey) {
        self.deleted.push(key);
    }

    /// Rules that go after every other rule of the chain in `slot`.
    pub fn push_tail(&mut self, slot: usize, line: String) {
        self.tail_chain = Some(slot);
        self.tail.push(line);
    }

    pub fn arena_reserve(&mut self, bytes: usize) {
        self.arena.reserve(bytes);
    }

    /// After `write_to`: lines of the shared chains and of every arena written.
    pub fn written_rule_lines(&self) -> usize {
        self.named_and_tail_lines() + self.written_arena_lines
    }

    /// Chain declaration lines of the last `write_to`.
    pub fn written_chains(&self) -> usize {
        self.chains
    }

    fn named_and_tail_lines(&self) -> usize {
        self.named
            .iter()
            .map(|(_, b)| count_lines(b.as_bytes()))
            .sum::<usize>()
            + self.tail.len()
    }

    /// Writes the table in canonical order; `parts` contribute their per-service chains
    /// (their shared-chain buffers must already be merged into this table's).
    pub fn write_to<O: Out + ?Sized>(&mut self, out: &mut O, parts: &[&Table]) {
        self.gather_order(parts);
        let arenas: Vec<&str> = std::iter::once(&self.arena)
            .chain(parts.iter().map(|p| &p.arena))
            .map(|a| a.as_str())
            .collect();
        let (entries, order) = (&self.entries, &self.order);

        out.push('*');
        out.push_str(self.name);
        out.push('\n');
        for &i in order {
            out.push_short(":");
            out.push_short(entries[i as usize].0.as_str());
            out.push_short(" - [0:0]\n");
        }
        // Chain bodies sit in the arena in emission order and are read here in sorted
        // order: prefetching a body a few chains ahead hides most of its cache miss.
        const LOOKAHEAD: usize = 16;
        let mut deleted = 0;
        for (pos, &i) in order.iter().enumerate() {
            if let Some(&ahead) = order.get(pos + LOOKAHEAD) {
                if let Body::Range(a, s, _) = entries[ahead as usize].1 {
                    prefetch(arenas[a as usize].as_bytes(), s as usize);
                }
            }
            match entries[i as usize].1 {
                Body::Named(i) => {
                    out.push_str(&self.named[i].1);
                    if self.tail_chain == Some(i) {
                        for l in &self.tail {
                            out.push_str(l);
                        }
                    }
                }
                Body::Range(a, s, e) => {
                    // Ranges end where the renderer's pushes ended: on char boundaries, so
                    // slicing the str checks two bytes, not the whole body.
                    let body = arenas[a as usize]
                        .get(s as usize..e as usize)
                        .unwrap_or_default();
                    out.push_str(body);
                }
                Body::Deleted => deleted += 1,
            }
        }
        if deleted > 0 {
            for &i in order {
                let (k, body) = &entries[i as usize];
                if matches!(body, Body::Deleted) {
                    out.push_str("-X ");
                    out.push_str(k.as_str());
                    out.push('\n');
                }
            }
        }
        out.push_str("COMMIT\n");
        self.written_arena_lines =
            self.arena_lines + parts.iter().map(|p| p.arena_lines).sum::<usize>();
        self.chains = order.len();
    }

    /// Fills `entries` with every chain of the table and `order` with their canonical
    /// order. Shared and fixed chains are a handful, sorted by [`ChainKey::canonical_cmp`];
    /// the per-service and deleted ones (tens of thousands, all `KUBE-*`: rank 2) are
    /// radix sorted ([`order`]), then merged.
    fn gather_order(&mut self, parts: &[&Table]) {
        let entries = &mut self.entries;
        let keys = &mut self.keys;
        let order = &mut self.order;
        entries.clear();
        keys.clear();
        order.clear();
        let total_ranges = self.ranges.len() + parts.iter().map(|p| p.ranges.len()).sum::<usize>();
        entries.reserve(self.named.len() + total_ranges + self.deleted.len());
        keys.reserve(total_ranges + self.deleted.len());
        order.reserve(entries.capacity());
        for (i, (k, _)) in self.named.iter().enumerate() {
            entries.push((*k, Body::Named(i)));
        }
        let named = entries.len();
        let mut push = |k: ChainKey, body: Body| {
            keys.push(Item {
                word: order::order_word(&k),
                entry: entries.len() as u32,
            });
            entries.push((k, body));
        };
        for (arena, ranges) in std::iter::once(&self.ranges)
            .chain(parts.iter().map(|p| &p.ranges))
            .enumerate()
        {
            for &(k, s, e) in ranges {
                push(k, Body::Range(arena as u8, s, e));
            }
        }
        for &k in &self.deleted {
            push(k, Body::Deleted);
        }
        // By (key, emission order), as a sort of (key, index) pairs would.
        order::radix_sort(keys, &mut self.keys_tmp);
        order::break_ties(keys, |e| entries[e as usize].0);
        let mut fixed: Vec<u32> = (0..named as u32).collect();
        fixed.sort_by(|a, b| {
            let (ka, kb) = (&entries[*a as usize].0, &entries[*b as usize].0);
            ka.canonical_cmp(kb).then(a.cmp(b))
        });
        // Fixed chains of ranks 0 and 1, then rank 2 merged with the sorted keys, then 3.
        let mut big = keys.iter().map(|k| k.entry).peekable();
        for f in fixed {
            let k = entries[f as usize].0;
            if k.canonical_rank() >= 2 {
                while let Some(&b) = big.peek() {
                    let kb = &entries[b as usize].0;
                    // Rank 3 sorts after every per-service chain; rank 2 by name.
                    if k.canonical_rank() == 2 && kb.cmp(&k).then(b.cmp(&f)).is_gt() {
                        break;
                    }
                    order.push(b);
                    big.next();
                }
            }
            order.push(f);
        }
        order.extend(big);
        self.tail.sort();
    }

    /// Chains the last `write_to` declared, each with whether it was deleted (`-X`): what
    /// the kernel's table holds of them after that payload is restored.
    pub fn written_chain_keys(&self) -> impl Iterator<Item = (ChainKey, bool)> + '_ {
        self.order.iter().map(|&i| {
            let (k, body) = &self.entries[i as usize];
            (*k, matches!(body, Body::Deleted))
        })
    }

    pub fn approx_len(&self) -> usize {
        self.arena.len()
            + self.named.iter().map(|(_, b)| b.len()).sum::<usize>()
            + self.ranges.len() * 40
            + 4096
    }
}

/// A hint to load `bytes[at]` into cache; no effect on results.
#[inline(always)]
fn prefetch(bytes: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(b) = bytes.get(at) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of the x86_64 baseline, and a prefetch of an in-bounds
        // address neither reads nor writes program-visible memory.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(b as *const u8 as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, at);
}

/// Newlines in `b`: memchr's vectorised count (AVX2 where the CPU has it), a fraction of
/// an instruction per byte; every rule line of a payload is counted once.
fn count_lines(b: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', b).count()
}

/// Appending the short pieces rule text is made of. `String::push_str` calls `memcpy`
/// for every piece whose length is not a constant (names, addresses, ports: a few to 30
/// bytes, millions per large sync); two overlapping fixed-size copies do it inline.
pub trait Put {
    fn put(&mut self, s: &str);
}

impl Put for String {
    #[inline(always)]
    fn put(&mut self, s: &str) {
        let n = s.len();
        if n > 32 {
            self.push_str(s);
            return;
        }
        self.reserve(32);
        // SAFETY: `reserve` left at least 32 bytes of spare capacity, every write below
        // stays within the first `n` <= 32 of them, every read within `s`; the bytes
        // written are `s`'s, so the string stays UTF-8 when its length grows by `n`.
        unsafe {
            let v = self.as_mut_vec();
            let dst = v.as_mut_ptr().add(v.len());
            let src = s.as_ptr();
            if n >= 16 {
                let a = (src as *const u128).read_unaligned();
                let b = (src.add(n - 16) as *const u128).read_unaligned();
                (dst as *mut u128).write_unaligned(a);
                (dst.add(n - 16) as *mut u128).write_unaligned(b);
            } else if n >= 8 {
                let a = (src as *const u64).read_unaligned();
                let b = (src.add(n - 8) as *const u64).read_unaligned();
                (dst as *mut u64).write_unaligned(a);
                (dst.add(n - 8) as *mut u64).write_unaligned(b);
            } else if n >= 4 {
                let a = (src as *const u32).read_unaligned();
                let b = (src.add(n - 4) as *const u32).read_unaligned();
                (dst as *mut u32).write_unaligned(a);
                (dst.add(n - 4) as *mut u32).write_unaligned(b);
            } else if n > 0 {
                *dst = *src;
                *dst.add(n / 2) = *src.add(n / 2);
                *dst.add(n - 1) = *src.add(n - 1);
            }
            let len = v.len();
            v.set_len(len + n);
        }
    }
}
