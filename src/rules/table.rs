//! One table of a restore payload, assembled directly in canonical order.
//!
//! Shared chains get their own buffer; per-service chains are written contiguously into
//! one arena and remembered as ranges, so the final text needs one sort of chain keys and
//! one copy, no per-rule allocation.

use super::names::ChainKey;

/// Where payload text goes: a `String`, or a pipe (see [`IoOut`]).
pub trait Out {
    fn push_str(&mut self, s: &str);
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
    arena: String,
    ranges: Vec<(ChainKey, u32, u32)>,
    deleted: Vec<ChainKey>,
    /// Lines that must end nat KUBE-SERVICES, sorted by the whole line on output.
    tail: Vec<String>,
    tail_chain: Option<usize>,
    /// Rule lines of the per-service chains written by the last `write_to`.
    arena_lines: usize,
    /// Chain declarations written by the last `write_to`.
    chains: usize,
    /// `write_to`'s sort entries and bodies, kept for the next render (a large cluster's
    /// are megabytes: fresh ones cost page faults every sync).
    order: Vec<(u8, ChainKey, u32)>,
    bodies: Vec<Body>,
}

impl Table {
    pub fn new(name: &'static str) -> Table {
        Table {
            name,
            named: Vec::new(),
            arena: String::new(),
            ranges: Vec::new(),
            deleted: Vec::new(),
            tail: Vec::new(),
            tail_chain: None,
            arena_lines: 0,
            chains: 0,
            order: Vec::new(),
            bodies: Vec::new(),
        }
    }

    /// Empties the table, keeping its buffers' capacity for the next render.
    pub fn clear(&mut self) {
        self.named.clear();
        self.arena.clear();
        self.ranges.clear();
        self.deleted.clear();
        self.tail.clear();
        self.tail_chain = None;
        self.arena_lines = 0;
    }

    /// Declares a shared/fixed chain; returns its slot for `buf`.
    pub fn declare(&mut self, chain: &str) -> usize {
        let key = ChainKey::named(chain).expect("fixed chain names are short");
        self.named.push((key, String::new()));
        self.named.len() - 1
    }

    pub fn buf(&mut self, slot: usize) -> &mut String {
        &mut self.named[slot].1
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

    /// Number of rule lines (for the rule-count metrics).
    /// For a table never written out.
    pub fn rule_lines(&self) -> usize {
        self.named_and_tail_lines() + count_lines(&self.arena)
    }

    /// After `write_to` (which counted the per-service chains it copied).
    pub fn written_rule_lines(&self) -> usize {
        self.named_and_tail_lines() + self.arena_lines
    }

    /// Chain declaration lines of the last `write_to`.
    pub fn written_chains(&self) -> usize {
        self.chains
    }

    fn named_and_tail_lines(&self) -> usize {
        self.named
            .iter()
            .map(|(_, b)| count_lines(b))
            .sum::<usize>()
            + self.tail.len()
    }

    /// Writes the table in canonical order; `parts` contribute their per-service chains
    /// (their shared-chain buffers must already be merged into this table's).
    pub fn write_to<O: Out + ?Sized>(&mut self, out: &mut O, parts: &[&Table]) {
        // (rank, key words, index into `bodies`): small, cheaply compared sort entries.
        let total_ranges = self.ranges.len() + parts.iter().map(|p| p.ranges.len()).sum::<usize>();
        let mut order = std::mem::take(&mut self.order);
        let mut bodies = std::mem::take(&mut self.bodies);
        order.clear();
        bodies.clear();
        order.reserve(self.named.len() + total_ranges + self.deleted.len());
        bodies.reserve(order.capacity());
        for (i, (k, _)) in self.named.iter().enumerate() {
            order.push((k.canonical_rank(), *k, bodies.len() as u32));
            bodies.push(Body::Named(i));
        }
        // Per-service and deleted chains are all KUBE-SVC/SVL/EXT/FW/SEP-*: rank 2.
        let arenas: Vec<&str> = std::iter::once(&self.arena)
            .chain(parts.iter().map(|p| &p.arena))
            .map(|a| a.as_str())
            .collect();
        for (arena, ranges) in std::iter::once(&self.ranges)
            .chain(parts.iter().map(|p| &p.ranges))
            .enumerate()
        {
            for (k, s, e) in ranges {
                order.push((2, *k, bodies.len() as u32));
                bodies.push(Body::Range(arena as u8, *s, *e));
            }
        }
        for k in &self.deleted {
            order.push((2, *k, bodies.len() as u32));
            bodies.push(Body::Deleted);
        }
        order.sort_unstable();
        self.tail.sort();

        out.push('*');
        out.push_str(self.name);
        out.push('\n');
        for (_, k, _) in &order {
            out.push(':');
            out.push_str(k.as_str());
            out.push_str(" - [0:0]\n");
        }
        // Chain bodies sit in the arena in emission order and are read here in sorted
        // order: prefetching a body a few chains ahead hides most of its cache miss.
        const LOOKAHEAD: usize = 16;
        let mut arena_lines = 0;
        for (pos, (_, _, i)) in order.iter().enumerate() {
            if let Some((_, _, ahead)) = order.get(pos + LOOKAHEAD) {
                if let Body::Range(a, s, _) = bodies[*ahead as usize] {
                    prefetch(arenas[a as usize].as_bytes(), s as usize);
                }
            }
            match bodies[*i as usize] {
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
                    // Counted here, while the body is in cache, rather than in a pass of its own.
                    arena_lines += memchr::memchr_iter(b'\n', body.as_bytes()).count();
                }
                Body::Deleted => {}
            }
        }
        self.arena_lines = arena_lines;
        self.chains = order.len();
        for (_, k, i) in &order {
            if matches!(bodies[*i as usize], Body::Deleted) {
                out.push_str("-X ");
                out.push_str(k.as_str());
                out.push('\n');
            }
        }
        out.push_str("COMMIT\n");
        self.order = order;
        self.bodies = bodies;
    }

    /// Chains the last `write_to` declared, each with whether it was deleted (`-X`): what
    /// the kernel's table holds of them after that payload is restored.
    pub fn written_chain_keys(&self) -> impl Iterator<Item = (ChainKey, bool)> + '_ {
        self.order
            .iter()
            .map(|(_, k, i)| (*k, matches!(self.bodies[*i as usize], Body::Deleted)))
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

fn count_lines(s: &str) -> usize {
    memchr::memchr_iter(b'\n', s.as_bytes()).count()
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
