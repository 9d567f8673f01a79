//! The attack driver shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`) and the stable
//! randomized tests (`src/engine/tests.rs`, which includes this file by path): it reads a byte
//! string as a program of actions against an Arena, a Heap or a SlabPool, keeps a shadow model
//! of the byte ranges handed out, and panics the moment a promise is broken.
//!
//! Besides the ordinary actions (alloc, calloc, aligned alloc, realloc, free, check, trim) it
//! plays a program with dangling pointers: it writes arbitrary bytes into memory it freed,
//! reads a word there and writes it back later (a stale but genuine word), frees freed and
//! interior pointers. What must hold, after every action:
//! - no two live blocks overlap, and no live block's contents change;
//! - every error has the kind the action calls for: `OutOfMemory` for a request, `DoubleFree`
//!   or `InvalidPointer` for a bad pointer, `Corrupted` only once memory has been attacked;
//! - damage, once an operation has reported it, is reported by `check()` from then on, and
//!   `check()` reports nothing before the first attack;
//! - the allocator keeps serving: a request or free that met damage succeeds when tried again
//!   (each failure contains one more damaged piece).
//!
//! Attack writes never touch a live block (nor its header): a program may scribble on memory
//! it freed, but what it still owns is the model's promise to check.

use std::collections::BTreeMap;
use std::ptr::NonNull;

use strata_alloc::{Arena, Error, Heap, HeapConfig, SlabPool};

/// Reads the action program: bytes run out as zeros, so every input is a valid program.
struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn done(&self) -> bool {
        self.at >= self.data.len()
    }

    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn u64(&mut self) -> u64 {
        let mut w = [0u8; 8];
        for b in &mut w {
            *b = self.byte();
        }
        u64::from_le_bytes(w)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { self.u16() as usize % n }
    }
}

/// What the driver needs of an allocator.
trait Target {
    fn alloc(&self, size: usize, align: usize) -> Result<NonNull<u8>, Error>;
    fn calloc(&self, size: usize) -> Result<NonNull<u8>, Error>;
    /// # Safety
    /// As the allocator's `free`.
    unsafe fn free(&self, p: NonNull<u8>) -> Result<(), Error>;
    /// # Safety
    /// As the allocator's `realloc`.
    unsafe fn realloc(&self, p: NonNull<u8>, size: usize) -> Result<NonNull<u8>, Error>;
    fn usable(&self, p: NonNull<u8>) -> Result<usize, Error>;
    fn check(&self) -> Result<(), Error>;
    fn trim(&self) {}
    /// Largest request the driver makes.
    fn max_size(&self) -> usize;
    /// Largest alignment the allocator serves.
    fn max_align(&self) -> usize {
        4096
    }
    /// Whether the freed block at `p` of `usable` bytes stays mapped and the allocator's, so
    /// that writing into it is a use after free rather than a fault.
    fn attackable(&self, _p: usize, _usable: usize) -> bool {
        true
    }
    /// A counter that changes whenever memory may have gone back to the OS (dangling ranges
    /// there are forgotten: writing into them would fault or dirty fresh pages).
    fn epoch(&self) -> u64 {
        0
    }
    /// Whether the allocator keeps metadata in freed memory at all (the SlabPool does not:
    /// attacks can never damage it).
    fn in_band(&self) -> bool {
        true
    }
    /// Bytes of header before each block (the SlabPool has none: the word before a slot may
    /// lie before its batch, outside the pool's memory).
    fn header(&self) -> usize {
        8
    }
}

impl Target for Arena {
    fn alloc(&self, size: usize, align: usize) -> Result<NonNull<u8>, Error> {
        match core::alloc::Layout::from_size_align(size, align) {
            Ok(l) if align > 16 => self.alloc_layout(l),
            _ => Arena::alloc(self, size),
        }
    }
    fn calloc(&self, size: usize) -> Result<NonNull<u8>, Error> {
        Arena::calloc(self, 1, size)
    }
    unsafe fn free(&self, p: NonNull<u8>) -> Result<(), Error> {
        // SAFETY: forwarded contract.
        unsafe { Arena::free(self, p) }
    }
    unsafe fn realloc(&self, p: NonNull<u8>, size: usize) -> Result<NonNull<u8>, Error> {
        // SAFETY: forwarded contract.
        unsafe { Arena::realloc(self, p, size) }
    }
    fn usable(&self, p: NonNull<u8>) -> Result<usize, Error> {
        self.usable_size(p)
    }
    fn check(&self) -> Result<(), Error> {
        Arena::check(self)
    }
    fn max_size(&self) -> usize {
        self.capacity() / 4
    }
}

/// A Heap with the thresholds low enough that mapped blocks, break moves and trims happen in
/// short programs.
struct SmallHeap {
    heap: Heap,
    mmap_threshold: usize,
    /// The heap's span lies in `[base, base + max_size)`; mapped blocks never do.
    base: usize,
    max_size: usize,
}

impl SmallHeap {
    /// `pages`: small requests are served from size-class pages (off by default at this size).
    fn new(max_size: usize, pages: bool) -> SmallHeap {
        let mmap_threshold = 48 << 10;
        let config = HeapConfig::default()
            .max_size(max_size)
            .growth_increment(16 << 10)
            .mmap_threshold(mmap_threshold)
            .trim_threshold(64 << 10)
            .small_pages(pages);
        let heap = Heap::with_config(config).expect("a small heap");
        if pages {
            // Past the demand that gives a size class its first page: from here on, every
            // request of up to 2 KiB the program makes is a slot.
            for size in (16..=2048).step_by(16) {
                let ps: Vec<_> = (0..9).map(|_| heap.alloc(size).expect("warm-up")).collect();
                for p in ps {
                    // SAFETY: live, freed once.
                    unsafe { heap.free(p) }.expect("free");
                }
            }
        }
        // The first block's header is 8 bytes into the span: its offset tells where the span
        // starts.
        let p = heap.alloc(16).expect("a first block");
        let first = heap.blocks().next().expect("a block");
        let base = first.addr - 8 - first.offset;
        // SAFETY: live, freed once.
        unsafe { heap.free(p) }.expect("free");
        SmallHeap {
            heap,
            mmap_threshold,
            base,
            max_size,
        }
    }
}

impl Target for SmallHeap {
    fn alloc(&self, size: usize, align: usize) -> Result<NonNull<u8>, Error> {
        match core::alloc::Layout::from_size_align(size, align) {
            Ok(l) if align > 16 => self.heap.alloc_layout(l),
            _ => self.heap.alloc(size),
        }
    }
    fn calloc(&self, size: usize) -> Result<NonNull<u8>, Error> {
        self.heap.calloc(1, size)
    }
    unsafe fn free(&self, p: NonNull<u8>) -> Result<(), Error> {
        // SAFETY: forwarded contract.
        unsafe { self.heap.free(p) }
    }
    unsafe fn realloc(&self, p: NonNull<u8>, size: usize) -> Result<NonNull<u8>, Error> {
        // SAFETY: forwarded contract.
        unsafe { self.heap.realloc(p, size) }
    }
    fn usable(&self, p: NonNull<u8>) -> Result<usize, Error> {
        self.heap.usable_size(p)
    }
    fn check(&self) -> Result<(), Error> {
        self.heap.check()
    }
    fn trim(&self) {
        self.heap.trim();
    }
    fn max_size(&self) -> usize {
        self.mmap_threshold * 2
    }
    fn attackable(&self, p: usize, _usable: usize) -> bool {
        // A mapped block is unmapped when freed: writing there would fault.
        p > self.base && p < self.base + self.max_size
    }
    fn epoch(&self) -> u64 {
        self.heap.stats().break_shrinks
    }
}

impl Target for SlabPool {
    fn alloc(&self, size: usize, align: usize) -> Result<NonNull<u8>, Error> {
        match core::alloc::Layout::from_size_align(size, align) {
            Ok(l) if align > 16 => self.alloc_layout(l),
            _ => SlabPool::alloc(self, size),
        }
    }
    fn calloc(&self, size: usize) -> Result<NonNull<u8>, Error> {
        let p = SlabPool::alloc(self, size)?;
        // SAFETY: a fresh slot of at least `size` bytes.
        unsafe { p.as_ptr().write_bytes(0, size) };
        Ok(p)
    }
    unsafe fn free(&self, p: NonNull<u8>) -> Result<(), Error> {
        // SAFETY: forwarded contract.
        unsafe { SlabPool::free(self, p) }
    }
    unsafe fn realloc(&self, p: NonNull<u8>, size: usize) -> Result<NonNull<u8>, Error> {
        // The pool has no checked realloc: allocate, copy, free, as a program would.
        let old = self.usable_size(p)?;
        let q = SlabPool::alloc(self, size)?;
        // SAFETY: distinct live slots, the smaller size fits both.
        unsafe { core::ptr::copy_nonoverlapping(p.as_ptr(), q.as_ptr(), old.min(size)) };
        // SAFETY: `p` is live and given up.
        unsafe { SlabPool::free(self, p) }?;
        Ok(q)
    }
    fn usable(&self, p: NonNull<u8>) -> Result<usize, Error> {
        self.usable_size(p)
    }
    fn check(&self) -> Result<(), Error> {
        SlabPool::check(self)
    }
    fn max_size(&self) -> usize {
        SlabPool::MAX_SIZE
    }
    fn max_align(&self) -> usize {
        SlabPool::MAX_SIZE
    }
    fn in_band(&self) -> bool {
        false
    }
    fn header(&self) -> usize {
        0
    }
}

/// A live block of the model: what was asked for, what the allocator says is usable, and the
/// seed of the pattern its bytes hold.
#[derive(Clone, Copy)]
struct Live {
    /// The block as handed out (every access to it goes through this pointer's provenance).
    ptr: NonNull<u8>,
    len: usize,
    usable: usize,
    seed: u8,
}

fn pattern(seed: u8, i: usize) -> u8 {
    seed.wrapping_add((i as u8).wrapping_mul(29)) ^ (i >> 8) as u8
}

fn stamp(b: Live) {
    let p = b.ptr.as_ptr();
    for i in 0..b.len {
        // SAFETY: the block is live with at least `len` bytes.
        unsafe { p.add(i).write(pattern(b.seed, i)) };
    }
}

fn intact(b: Live, len: usize) -> bool {
    let p = b.ptr.as_ptr();
    // SAFETY: the block is live with at least `len` bytes.
    (0..len).all(|i| unsafe { p.add(i).read() } == pattern(b.seed, i))
}

/// The driver's state: the model and what the program has done.
struct Model<'t, T: Target> {
    t: &'t T,
    live: BTreeMap<usize, Live>,
    /// Freed blocks whose memory the program may still scribble on: `(payload, usable)`.
    dangling: Vec<(NonNull<u8>, usize)>,
    /// Words read from freed memory, to be written back later: `(address, word)`.
    recorded: Vec<(*mut u8, u64)>,
    /// Whether memory the allocator keeps was ever written by an attack.
    attacked: bool,
    /// Whether an operation reported damage (then `check()` must report it too).
    found: bool,
    epoch: u64,
}

impl<T: Target> Model<'_, T> {
    fn addr_of(&self, k: usize) -> Option<usize> {
        if self.live.is_empty() {
            return None;
        }
        self.live.keys().nth(k % self.live.len()).copied()
    }

    /// Whether `[addr, addr + len)` touches a live block or the 8 bytes before one (its
    /// header, for the block allocators).
    fn touches_live(&self, addr: usize, len: usize) -> bool {
        let end = addr + len;
        if let Some((&a, b)) = self.live.range(..end + 8).next_back() {
            if a < end + 8 && addr < a + b.usable {
                return true;
            }
        }
        false
    }

    /// Whether the block just handed out at `q` overlaps another live block.
    fn assert_disjoint(&self, q: usize, usable: usize, what: &str) {
        if let Some((&a, b)) = self.live.range(..q).next_back() {
            assert!(
                a + b.usable <= q,
                "{what}: block {q:#x} overlaps live {a:#x}+{}",
                b.usable
            );
        }
        if let Some((&a, _)) = self.live.range(q + 1..).next() {
            assert!(
                q + usable <= a,
                "{what}: block {q:#x}+{usable} overlaps live {a:#x}"
            );
        }
    }

    /// An error the action may meet: `Corrupted` only once memory was attacked.
    fn allowed_damage(&mut self, e: &Error, what: &str) {
        match e {
            Error::Corrupted { .. } if self.attacked && self.t.in_band() => self.found = true,
            _ => panic!("{what}: unexpected {e}"),
        }
    }

    fn add_live(&mut self, q: NonNull<u8>, len: usize, seed: u8, what: &str) {
        let addr = q.as_ptr() as usize;
        let usable = self
            .t
            .usable(q)
            .unwrap_or_else(|e| panic!("{what}: usable: {e}"));
        assert!(usable >= len, "{what}: usable {usable} < {len}");
        self.assert_disjoint(addr, usable, what);
        let b = Live {
            ptr: q,
            len,
            usable,
            seed,
        };
        stamp(b);
        self.live.insert(addr, b);
    }

    fn note_freed(&mut self, p: NonNull<u8>, usable: usize) {
        if self.t.attackable(p.as_ptr() as usize, usable) {
            if self.dangling.len() >= 32 {
                self.dangling.remove(0);
            }
            self.dangling.push((p, usable));
        }
    }

    fn sync_epoch(&mut self) {
        let e = self.t.epoch();
        if e != self.epoch {
            self.epoch = e;
            self.dangling.clear();
            self.recorded.clear();
        }
    }

    /// A request, tried again while it meets damage (each try contains one more piece).
    fn request(
        &mut self,
        mut f: impl FnMut(&T) -> Result<NonNull<u8>, Error>,
        what: &str,
    ) -> Option<NonNull<u8>> {
        for _ in 0..16 {
            match f(self.t) {
                Ok(q) => return Some(q),
                Err(Error::OutOfMemory { .. }) => return None,
                Err(e) => self.allowed_damage(&e, what),
            }
        }
        panic!("{what}: still meeting damage after 16 tries: containment does not progress")
    }

    fn alloc(&mut self, inp: &mut Input, zeroed: bool) {
        let max = self.t.max_size();
        let size = match inp.byte() % 8 {
            0..=3 => 1 + inp.below(256),
            4 | 5 => 1 + inp.below(4096),
            6 => 1 + inp.below(1 << 16),
            _ => 1 + inp.below(max),
        }
        .min(max);
        let align = if !zeroed && inp.byte() % 8 == 0 {
            (1usize << (5 + inp.byte() % 8)).min(self.t.max_align())
        } else {
            16
        };
        let seed = inp.byte();
        let what = "alloc";
        let q = if zeroed {
            self.request(|t| t.calloc(size), what)
        } else {
            self.request(|t| t.alloc(size, align), what)
        };
        let Some(q) = q else { return };
        let addr = q.as_ptr() as usize;
        assert_eq!(addr % align, 0, "alloc: misaligned");
        if zeroed {
            // SAFETY: `size` bytes were just handed out.
            let bytes = unsafe { core::slice::from_raw_parts(q.as_ptr(), size) };
            if let Some(i) = bytes.iter().position(|&x| x != 0) {
                panic!(
                    "calloc of {size} at {addr:#x}: byte {i} is {:#x} (attacked: {})",
                    bytes[i], self.attacked
                );
            }
        }
        self.add_live(q, size, seed, what);
    }

    fn free_live(&mut self, k: usize) {
        let Some(addr) = self.addr_of(k) else { return };
        let b = self.live[&addr];
        assert!(
            intact(b, b.len),
            "contents of {addr:#x} changed before free"
        );
        let p = b.ptr;
        for _ in 0..16 {
            // SAFETY: `p` is live and, once freed, no longer used but as a dangling pointer.
            match unsafe { self.t.free(p) } {
                Ok(()) => {
                    self.live.remove(&addr);
                    self.note_freed(p, b.usable);
                    return;
                }
                Err(e) => {
                    self.allowed_damage(&e, "free");
                    assert!(intact(b, b.len), "a failed free changed {addr:#x}");
                }
            }
        }
        panic!("free of {addr:#x}: still meeting damage after 16 tries");
    }

    fn realloc(&mut self, inp: &mut Input) {
        let Some(addr) = self.addr_of(inp.u16() as usize) else {
            return;
        };
        let b = self.live[&addr];
        let max = self.t.max_size();
        let size = match inp.byte() % 4 {
            0 => 1 + inp.below(b.len.max(1)),
            1 => b.len + inp.below(256),
            2 => 1 + inp.below(4096),
            _ => 1 + inp.below(max),
        }
        .min(max);
        let p = b.ptr;
        for _ in 0..16 {
            // SAFETY: `p` is live; on success only the returned pointer is used.
            match unsafe { self.t.realloc(p, size) } {
                Ok(q) => {
                    let qa = q.as_ptr() as usize;
                    self.live.remove(&addr);
                    let kept = Live {
                        ptr: q,
                        len: b.len.min(size),
                        ..b
                    };
                    assert!(intact(kept, kept.len), "realloc lost contents");
                    let seed = b.seed.wrapping_add(1);
                    self.add_live(q, size, seed, "realloc");
                    if qa != addr {
                        self.note_freed(p, b.usable);
                    }
                    return;
                }
                Err(Error::OutOfMemory { .. }) => {
                    assert!(intact(b, b.len), "a failed realloc changed {addr:#x}");
                    return;
                }
                Err(e) => self.allowed_damage(&e, "realloc"),
            }
            assert!(intact(b, b.len), "a failed realloc changed {addr:#x}");
        }
        panic!("realloc of {addr:#x}: still meeting damage after 16 tries");
    }

    /// Writes attacker bytes (or a recorded word) into freed memory, word by word, never into
    /// a live block or its header.
    fn attack(&mut self, inp: &mut Input, replay: bool) {
        self.sync_epoch();
        if replay {
            if self.recorded.is_empty() {
                return;
            }
            let (a, w) = self.recorded[inp.below(self.recorded.len())];
            if !self.touches_live(a as usize, 8) {
                // SAFETY: `a` lies in memory the allocator keeps (a freed block, still mapped);
                // writing there is the use after free under test.
                unsafe { a.cast::<u64>().write_unaligned(w) };
                self.attacked = true;
            }
            return;
        }
        if self.dangling.is_empty() {
            return;
        }
        let (p, usable) = self.dangling[inp.below(self.dangling.len())];
        // Words from the header slot before the payload to the end of the block.
        let header = self.t.header();
        let words = (usable + header) / 8;
        let first = inp.below(words.min(8))
            + if inp.byte() % 4 == 0 {
                inp.below(words)
            } else {
                0
            };
        let n = 1 + inp.below(4);
        let read = inp.byte() % 2 == 0;
        for i in first..(first + n).min(words) {
            // Derived from the freed block's pointer: the allocator's memory, its provenance.
            let a = p.as_ptr().wrapping_add(8 * i).wrapping_sub(header);
            if self.touches_live(a as usize, 8) {
                continue;
            }
            if read {
                // SAFETY: as above; reading freed memory is what the program does.
                let w = unsafe { a.cast::<u64>().read_unaligned() };
                if self.recorded.len() >= 64 {
                    self.recorded.remove(0);
                }
                self.recorded.push((a, w));
            } else {
                let w = match inp.byte() % 4 {
                    0 => 0,
                    1 => inp.u64(),
                    // Something that looks like a pointer into the allocator: another block.
                    2 => self.addr_of(inp.u16() as usize).map_or(0, |x| x as u64 - 8),
                    _ => (p.as_ptr() as u64).wrapping_add(inp.u16() as u64 * 16) - 8,
                };
                // SAFETY: as above.
                unsafe { a.cast::<u64>().write_unaligned(w) };
                self.attacked = true;
            }
        }
    }

    /// Frees a pointer the program does not own: a freed one or one inside a live block.
    fn misuse(&mut self, inp: &mut Input) {
        let p = if inp.byte() % 2 == 0 && !self.dangling.is_empty() {
            self.dangling[inp.below(self.dangling.len())].0
        } else if let Some(a) = self.addr_of(inp.u16() as usize) {
            let b = self.live[&a];
            let inside = b
                .ptr
                .as_ptr()
                .wrapping_add(16 * (1 + inp.below(b.usable / 16)));
            NonNull::new(inside).expect("non-null")
        } else {
            return;
        };
        let addr = p.as_ptr() as usize;
        if self.live.contains_key(&addr) {
            return; // handed out again: freeing it would be a real free
        }
        // SAFETY: not a live block of the model; the allocator must reject it unchanged.
        match unsafe { self.t.free(p) } {
            Err(Error::DoubleFree { .. } | Error::InvalidPointer { .. }) => {}
            Ok(()) => panic!("free of {addr:#x}, which is not live, succeeded"),
            Err(e) => panic!("free of {addr:#x}, which is not live: unexpected {e}"),
        }
    }

    fn check(&mut self) {
        match self.t.check() {
            Ok(()) => assert!(!self.found, "check() forgot damage an operation reported"),
            Err(e @ Error::Corrupted { .. }) => {
                assert!(
                    self.attacked && self.t.in_band(),
                    "check() without an attack: {e}"
                )
            }
            Err(e) => panic!("check(): {e}"),
        }
        for (&a, &b) in &self.live {
            assert!(intact(b, b.len), "contents of {a:#x} changed");
        }
    }
}

fn run<T: Target>(t: &T, data: &[u8]) {
    let mut inp = Input { data, at: 0 };
    let mut m = Model {
        t,
        live: BTreeMap::new(),
        dangling: Vec::new(),
        recorded: Vec::new(),
        attacked: false,
        found: false,
        epoch: t.epoch(),
    };
    let mut steps = 0;
    while !inp.done() && steps < 4000 {
        steps += 1;
        match inp.byte() % 16 {
            0..=3 => m.alloc(&mut inp, false),
            4 => m.alloc(&mut inp, true),
            5..=7 => {
                let k = inp.u16() as usize;
                m.free_live(k)
            }
            8 => m.realloc(&mut inp),
            9 | 10 => m.attack(&mut inp, false),
            11 => m.attack(&mut inp, true),
            12 => m.misuse(&mut inp),
            13 => m.check(),
            14 => {
                t.trim();
                m.sync_epoch();
            }
            _ => {
                // A burst of frees, as when a collection is dropped.
                for _ in 0..m.live.len() / 2 {
                    let k = inp.u16() as usize;
                    m.free_live(k);
                }
            }
        }
        m.sync_epoch();
        if m.live.len() > 96 {
            let k = inp.u16() as usize;
            m.free_live(k);
        }
    }
    m.check();
    while !m.live.is_empty() {
        m.free_live(0);
    }
    m.check();
}

/// One program against a fresh 64 KiB Arena.
pub fn run_arena(data: &[u8]) {
    let arena = Arena::with_capacity(64 << 10).expect("an arena");
    run(&arena, data);
}

/// One program against a fresh small Heap (4 MiB at most).
pub fn run_heap(data: &[u8]) {
    let heap = SmallHeap::new(4 << 20, false);
    run(&heap, data);
}

/// One program against a fresh small Heap (16 MiB at most) whose small requests are served
/// from size-class pages: slots judged by their out-of-band records, pages carved and retired.
pub fn run_heap_pages(data: &[u8]) {
    let heap = SmallHeap::new(16 << 20, true);
    run(&heap, data);
}

/// One program against a SlabPool limited to four batches, which must serve every size class
/// again once emptied.
pub fn run_slab(data: &[u8]) {
    let pool = SlabPool::with_capacity(4 * SlabPool::BATCH_SIZE);
    run(&pool, data);
    for size in [16, 1024, 512, 48] {
        let p = SlabPool::alloc(&pool, size).expect("an emptied pool serves every size");
        // SAFETY: live, freed once.
        unsafe { SlabPool::free(&pool, p) }.expect("free");
    }
}
