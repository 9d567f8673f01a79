//! Engine tests over small spans: small enough for Miri, each checking the invariants after
//! every step.

use core::alloc::Layout;
use core::ptr::NonNull;

use super::block::{HEADER, MIN_BLOCK};
use super::*;
use crate::test_rng::Rng;

/// The page size the tests pretend the owner releases memory in.
const PAGE: usize = 4096;

/// What an owner hands an engine: zeroed, page-aligned memory for a span and its start map.
/// It comes from the global allocator, so the engine's tests need no os layer (and run
/// under Miri as they are).
struct Memory {
    blocks: NonNull<u8>,
    blocks_layout: Layout,
    map: NonNull<u8>,
    map_layout: Layout,
}

impl Memory {
    fn new(bytes: usize) -> Memory {
        let blocks_layout = Layout::from_size_align(bytes, PAGE).unwrap();
        let map_layout = Layout::from_size_align(map_bytes(bytes / block::GRANULE), 64).unwrap();
        // SAFETY: both layouts have a non-zero size (`bytes` is at least a page in every test,
        // and the map of a non-empty span is at least one group).
        let (blocks, map) = unsafe {
            (
                std::alloc::alloc_zeroed(blocks_layout),
                std::alloc::alloc_zeroed(map_layout),
            )
        };
        Memory {
            blocks: NonNull::new(blocks).expect("test memory"),
            blocks_layout,
            map: NonNull::new(map).expect("test memory"),
            map_layout,
        }
    }

    fn base(&self) -> usize {
        self.blocks.as_ptr() as usize
    }

    fn capacity(&self) -> usize {
        self.blocks_layout.size()
    }

    /// An engine over this memory, with an empty span. The engine must be dropped first.
    fn engine(&self) -> Engine {
        // SAFETY: both allocations are fresh, zeroed, suitably aligned and sized (the map by
        // `map_bytes`), used by this one engine only, and outlive it (every test declares the
        // memory before the engine, so the engine is dropped first).
        unsafe { Engine::new(self.blocks, self.capacity(), self.map) }
    }

    /// What an owner's release of whole pages does: the bytes read as zero again.
    ///
    /// # Safety
    ///
    /// `[from, from + len)` lies in this memory, above the engine's span.
    unsafe fn release(&self, from: usize, len: usize) {
        debug_assert!(from >= self.base() && from + len <= self.base() + self.capacity());
        // SAFETY: inside this allocation (the caller's promise) and outside every block.
        unsafe { self.blocks.as_ptr().with_addr(from).write_bytes(0, len) }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts and freed only here.
        unsafe {
            std::alloc::dealloc(self.blocks.as_ptr(), self.blocks_layout);
            std::alloc::dealloc(self.map.as_ptr(), self.map_layout);
        }
    }
}

/// An engine over `bytes` of fresh memory, with the memory that backs it.
struct Harness {
    // Fields drop in declaration order: the engine before the memory it points into.
    engine: Engine,
    _mem: Memory,
}

impl Harness {
    fn new(bytes: usize) -> Harness {
        let mem = Memory::new(bytes);
        let mut engine = mem.engine();
        engine.grow_span(mem.base() + mem.capacity()).unwrap();
        engine.check().unwrap();
        Harness { engine, _mem: mem }
    }

    fn alloc(&mut self, size: usize) -> NonNull<u8> {
        let p = self.engine.alloc(size, 16).unwrap().expect("fits");
        self.engine.check_structure().unwrap();
        p
    }

    fn free(&mut self, p: NonNull<u8>) {
        self.engine.free(p).unwrap();
        self.engine.check_structure().unwrap();
    }
}

fn fill(p: NonNull<u8>, len: usize, byte: u8) {
    // SAFETY: callers pass live blocks of at least `len` usable bytes.
    unsafe { p.as_ptr().write_bytes(byte, len) }
}

fn holds(p: NonNull<u8>, len: usize, byte: u8) -> bool {
    // SAFETY: callers pass live blocks of at least `len` usable bytes.
    unsafe { core::slice::from_raw_parts(p.as_ptr(), len) }
        .iter()
        .all(|&b| b == byte)
}

#[test]
fn split_then_coalesce_both_ways_restores_one_block() {
    // Blocks above 2 KiB skip the quick stacks and coalesce at once.
    let mut h = Harness::new(16384);
    let free0 = h.engine.stats().free_bytes;
    let a = h.alloc(2100);
    let b = h.alloc(2200);
    let c = h.alloc(2300);
    assert_eq!(h.engine.stats().splits, 3);
    h.free(a);
    h.free(c); // merges with the tail
    assert_eq!(h.engine.stats().free_blocks, 2);
    h.free(b); // merges with both neighbours
    assert_eq!(h.engine.stats().free_blocks, 1);
    assert_eq!(h.engine.stats().free_bytes, free0);
    assert_eq!(h.engine.stats().coalesces, 3);
}

#[test]
fn freed_blocks_are_reused_first_fit_exact() {
    let mut h = Harness::new(4096);
    let a = h.alloc(64);
    let _guard = h.alloc(16);
    h.free(a);
    let b = h.alloc(64);
    assert_eq!(a, b, "an exact-size free block is reused");
}

#[test]
fn misuse_is_detected_before_anything_is_written() {
    let mut h = Harness::new(4096);
    let a = h.alloc(64);
    let b = h.alloc(64);
    fill(b, 64, 0xB0);
    h.free(a);
    let before = h.engine.stats();
    assert_eq!(
        h.engine.free(a).unwrap_err(),
        Error::DoubleFree {
            addr: a.as_ptr() as usize
        }
    );
    // SAFETY: 16 bytes into a live 64-byte block is still inside it.
    let interior = unsafe { b.add(16) };
    assert!(matches!(
        h.engine.free(interior),
        Err(Error::InvalidPointer { .. })
    ));
    // SAFETY: 8 bytes into a live block: inside it, misaligned for a block.
    let misaligned = unsafe { b.add(8) };
    assert!(matches!(
        h.engine.free(misaligned),
        Err(Error::InvalidPointer { .. })
    ));
    let mut local = 0u64;
    let foreign = NonNull::from(&mut local).cast::<u8>();
    assert!(matches!(
        h.engine.free(foreign),
        Err(Error::InvalidPointer { .. })
    ));
    assert_eq!(h.engine.stats().misuses_caught, before.misuses_caught + 4);
    h.engine.check().unwrap();
    assert!(holds(b, 64, 0xB0));
    h.free(b);
}

#[test]
fn a_cached_block_handed_out_again_is_recorded_and_checked_like_any_other() {
    let mut h = Harness::new(4096);
    let keep = h.alloc(100);
    let a = h.alloc(48);
    h.free(a); // cached on its quick stack
    let s0 = h.engine.stats();
    // Taken again from the stack: live in the map and counted at once, so every operation
    // (the check included) sees it as allocated.
    let b = h.engine.alloc(48, 16).unwrap().unwrap();
    assert_eq!(b, a, "the cached block is handed out again");
    let taken = h.engine.stats();
    assert_eq!(taken.live_blocks, s0.live_blocks + 1);
    assert_eq!(taken.bytes_in_use, s0.bytes_in_use + 56);
    assert_eq!(taken.free_blocks, s0.free_blocks - 1);
    assert!(taken.peak_bytes_in_use >= taken.bytes_in_use);
    h.engine.check().unwrap();
    assert_eq!(h.engine.live(b).unwrap().usable(), 56);
    fill(b, 48, 0x5A);
    h.engine.free(b).unwrap();
    let s1 = h.engine.stats();
    assert_eq!(s1.allocations, s0.allocations + 1);
    assert_eq!(s1.frees, s0.frees + 1);
    assert_eq!(
        (s1.live_blocks, s1.bytes_in_use, s1.free_blocks),
        (s0.live_blocks, s0.bytes_in_use, s0.free_blocks)
    );
    h.engine.check().unwrap();
    // Cached again: a second free is a double free, as always.
    assert_eq!(
        h.engine.free(b).unwrap_err(),
        Error::DoubleFree {
            addr: b.as_ptr() as usize
        }
    );
    h.engine.check().unwrap();

    let c = h.engine.alloc(48, 16).unwrap().unwrap();
    assert_eq!(h.engine.usable_size(c).unwrap(), 56);
    // SAFETY: 16 bytes into the 56-byte block `c`.
    let interior = unsafe { c.add(16) };
    assert!(matches!(
        h.engine.free(interior),
        Err(Error::InvalidPointer { .. })
    ));
    h.free(c);

    // A header overwritten while the block is live is caught by the free, which changes
    // nothing; with the header repaired, the same free succeeds.
    let d = h.engine.alloc(48, 16).unwrap().unwrap();
    let header = d.as_ptr().wrapping_sub(HEADER).cast::<u64>();
    // SAFETY: the header word of the live block `d`: engine memory the test damages on
    // purpose, as an underflow from the program would, and restores below.
    let word = unsafe { header.read() };
    // SAFETY: as above.
    unsafe { header.write(word + 64) };
    assert!(matches!(h.engine.free(d), Err(Error::Corrupted { .. })));
    assert_eq!(h.engine.stats().live_blocks, s0.live_blocks + 1);
    // SAFETY: as above.
    unsafe { header.write(word) };
    h.free(d);

    // A dangling pointer of a small address (8: a dangling `u64`) is foreign.
    let dangling = NonNull::<u64>::dangling().cast::<u8>();
    assert!(matches!(
        h.engine.free(dangling),
        Err(Error::InvalidPointer { .. })
    ));
    h.free(keep);
    assert_eq!(h.engine.stats().live_blocks, 0);
}

#[test]
fn one_check_makes_a_live_token_that_the_live_methods_trust() {
    let mut h = Harness::new(16384);
    let small = h.alloc(100);
    let big = h.alloc(3000);
    let _guard = h.alloc(16);
    fill(small, 100, 0x11);
    fill(big, 3000, 0x22);

    // The token carries what the check found: the payload and its usable size, for a block
    // measured by one window of the map and for one confirmed the general way.
    let ts = h.engine.live(small).unwrap();
    let tb = h.engine.live(big).unwrap();
    assert_eq!((ts.ptr(), ts.usable()), (small, 104));
    assert_eq!((tb.ptr(), tb.usable()), (big, 3000));
    assert_eq!(ts.usable(), h.engine.usable_size(small).unwrap());

    // Every bad pointer is refused by the check itself, with the right error and nothing
    // written.
    let misuses = h.engine.stats().misuses_caught;
    // SAFETY: 16 bytes into the live 104-byte block.
    let interior = unsafe { small.add(16) };
    assert!(matches!(
        h.engine.live(interior),
        Err(Error::InvalidPointer { .. })
    ));
    let mut local = 0u64;
    let foreign = NonNull::from(&mut local).cast::<u8>();
    assert!(matches!(
        h.engine.live(foreign),
        Err(Error::InvalidPointer { .. })
    ));
    assert_eq!(h.engine.stats().misuses_caught, misuses + 2);
    h.engine.check().unwrap();

    // Asking whether moving packs better writes nothing, so the token stays good for the
    // resize that follows; growing into the free memory after `big` keeps its contents.
    // SAFETY: made by this engine; nothing changed blocks since.
    let moved = unsafe { h.engine.moving_packs_better_live(tb, 4000) }.unwrap();
    assert!(
        !moved,
        "4000 bytes do not fit in place: not a choice between staying and moving"
    );
    h.engine.check().unwrap();
    let before = h.engine.stats();
    // SAFETY: as above.
    let r = unsafe { h.engine.resize_live(tb, 2000) }.unwrap();
    assert_eq!(r, Resize::Done);
    assert!(holds(big, 2000, 0x22), "shrinking kept the contents");
    assert!(h.engine.usable_size(big).unwrap() >= 2000);
    assert!(h.engine.stats().bytes_in_use < before.bytes_in_use);
    h.engine.check().unwrap();

    // Allocations and frees of other blocks leave a token valid (a reallocation allocates
    // between its check and its free). Freed on the token's word, a small block is cached,
    // and the pointer is then a double free for the check.
    let other = h.alloc(100);
    let tiny = h.alloc(20);
    h.free(tiny);
    // SAFETY: made by this engine; `small` was neither freed nor resized since.
    let freed = unsafe { h.engine.free_live(ts) }.unwrap();
    assert!(!freed.binned, "a small block goes on its quick stack");
    assert_eq!(
        h.engine.live(small).unwrap_err(),
        Error::DoubleFree {
            addr: small.as_ptr() as usize
        }
    );
    h.engine.check().unwrap();

    // A header overwritten after the block was handed out fails the check, on both paths
    // (the map window and the general confirmation), and the block stays live.
    let header = big.as_ptr().wrapping_sub(HEADER).cast::<u64>();
    // SAFETY: the header word of the live block `big`: engine memory damaged on purpose, as an
    // underflow from the program would, and restored below.
    let word = unsafe { header.read() };
    // SAFETY: as above.
    unsafe { header.write(word + 16) };
    assert!(matches!(h.engine.live(big), Err(Error::Corrupted { .. })));
    // SAFETY: as above.
    unsafe { header.write(word) };
    let c = h.alloc(40);
    let header = c.as_ptr().wrapping_sub(HEADER).cast::<u64>();
    // SAFETY: as above, for the live block `c`.
    let word = unsafe { header.read() };
    // SAFETY: as above.
    unsafe { header.write(word + 16) };
    assert!(matches!(h.engine.live(c), Err(Error::Corrupted { .. })));
    // SAFETY: as above.
    unsafe { header.write(word) };
    h.free(c);
    h.free(big);
    h.free(other);
    h.engine.check().unwrap();
}

#[test]
fn an_overflow_into_the_next_header_is_reported_not_followed() {
    let mut h = Harness::new(4096);
    let a = h.alloc(40);
    let b = h.alloc(40);
    let usable = h.engine.usable_size(a).unwrap();
    // Overflow `a` by 8 bytes: exactly the header of `b`.
    fill(a, usable + 8, 0x41);
    assert!(matches!(h.engine.free(b), Err(Error::Corrupted { .. })));
    assert!(matches!(h.engine.check(), Err(Error::Corrupted { .. })));
    // Freeing `a` (its own header is intact) caches it without looking at `b`; merging it
    // later asks the map whether `b` is free, which it is not, so `b`'s damaged header is
    // never read and the merge goes ahead without it.
    h.engine.free(a).unwrap();
    h.engine.flush_quick().unwrap();
    assert!(matches!(h.engine.free(b), Err(Error::Corrupted { .. })));
    // Other requests are still served from intact memory.
    let c = h.engine.alloc(64, 16).unwrap().unwrap();
    fill(c, 64, 1);
    let d = h.engine.alloc(2000, 16).unwrap().unwrap();
    fill(d, 2000, 2);
}

#[test]
fn a_forged_header_with_a_plausible_size_is_caught_by_the_start_map() {
    let mut h = Harness::new(4096);
    let a = h.alloc(40);
    let b = h.alloc(40);
    let c = h.alloc(40);
    // Forge `b`'s header to claim it spans `c` too, with a valid tag: only the out-of-band
    // start map can tell.
    let bb = PayloadAddr::of(b).block();
    let bsize = h.engine.usable_size(b).unwrap() + HEADER;
    let csize = h.engine.usable_size(c).unwrap() + HEADER;
    let forged = h.engine.tagger.encode(bb, bsize + csize, 0);
    // SAFETY: `bb` is the header slot of block `b`, inside the span.
    unsafe { b.as_ptr().with_addr(bb.get()).cast::<u64>().write(forged) };
    assert!(matches!(h.engine.free(b), Err(Error::Corrupted { .. })));
    let _ = a;
}

#[test]
fn a_free_neighbour_with_a_damaged_link_is_reported_only_when_it_would_be_taken() {
    // Blocks above 2 KiB skip the quick stacks: `f` is binned as soon as it is freed.
    let mut h = Harness::new(16384);
    let a = h.alloc(2100);
    let f = h.alloc(2200);
    let _c = h.alloc(2300);
    fill(a, 2100, 0xA1);
    h.free(f);
    // A write through the dangling `f` lands on its free-list link.
    let link = f.as_ptr().cast::<u64>();
    // SAFETY: the first payload word of the free block `f`: engine memory that the test
    // damages on purpose, as a use after free would, and restores below.
    let word = unsafe { link.read() };
    // SAFETY: as above.
    unsafe { link.write(0xDEAD_BEE0) };
    // Growing past what `f` offers does not take it, so its links are not read.
    assert_eq!(h.engine.resize(a, 9000).unwrap(), Resize::Blocked);
    // Growing into it would unlink it: the damage is found first, `a` is left as it was, and
    // the damaged words (the first 32 bytes of `f`) are quarantined; the rest of `f` stays
    // free.
    let before = h.engine.stats();
    assert!(matches!(
        h.engine.resize(a, 3000),
        Err(Error::Corrupted { .. })
    ));
    assert_eq!(h.engine.usable_size(a).unwrap(), 2104);
    assert!(holds(a, 2100, 0xA1));
    let s = h.engine.stats();
    assert_eq!(s.misuses_caught, before.misuses_caught + 1);
    assert_eq!((s.quarantined_blocks, s.quarantined_bytes), (1, 32));
    assert_eq!(s.free_bytes, before.free_bytes - 32);
    h.engine.check_structure().unwrap();
    assert!(matches!(h.engine.check(), Err(Error::Corrupted { .. })));
    // Repairing the word changes nothing: the quarantined piece is never used again, and `a`
    // no longer borders free memory.
    // SAFETY: as above.
    unsafe { link.write(word) };
    assert_eq!(h.engine.resize(a, 3000).unwrap(), Resize::Blocked);
    h.engine.check_structure().unwrap();
    assert!(holds(a, 2100, 0xA1));
    // The rest of `f` serves requests.
    let g = h.alloc(2100);
    assert_eq!(g.as_ptr() as usize, f.as_ptr() as usize + 32);
}

#[test]
fn realloc_in_place_grows_into_the_next_free_block_and_shrinks() {
    let mut h = Harness::new(4096);
    let a = h.alloc(32);
    fill(a, 32, 9);
    assert!(h.engine.resize_in_place(a, 500).unwrap());
    h.engine.check().unwrap();
    assert!(h.engine.usable_size(a).unwrap() >= 500);
    assert!(holds(a, 32, 9));
    assert!(h.engine.resize_in_place(a, 40).unwrap());
    h.engine.check().unwrap();
    assert!(h.engine.usable_size(a).unwrap() < 100);
    let b = h.alloc(32);
    // `b` sits right after `a` now, so `a` cannot grow in place.
    assert!(!h.engine.resize_in_place(a, 500).unwrap());
    h.free(b);
    // `b` waits on its quick stack; once merged, `a` can grow over it.
    assert!(!h.engine.resize_in_place(a, 3000).unwrap());
    h.engine.flush_quick().unwrap();
    assert!(h.engine.resize_in_place(a, 3000).unwrap());
    h.engine.check().unwrap();
}

#[test]
fn aligned_requests_land_on_their_alignment() {
    let mut h = Harness::new(64 * 1024);
    let mut live = Vec::new();
    for (i, align) in [32, 64, 256, 1024, 4096, 128].into_iter().enumerate() {
        let _pad = h.alloc(16 + i * 16);
        let p = h.engine.alloc(100, align).unwrap().unwrap();
        h.engine.check().unwrap();
        assert_eq!(p.as_ptr() as usize % align, 0);
        live.push(p);
    }
    for p in live {
        h.free(p);
    }
}

#[test]
fn an_aligned_hole_is_reused_by_the_next_aligned_request_of_its_size() {
    // As the small-object pages ask: a block of a 64 KiB cell less its header, on 64 KiB.
    const ALIGN: usize = 64 * 1024;
    const SIZE: usize = ALIGN - HEADER;
    let mut h = Harness::new(16 * ALIGN);
    let mut blocks = Vec::new();
    for _ in 0..3 {
        let p = h.engine.alloc_over_aligned(SIZE, ALIGN).unwrap().unwrap();
        assert_eq!(p.as_ptr() as usize % ALIGN, 0);
        // A live neighbour after each, so that a freed block cannot merge upwards.
        blocks.push((p, h.alloc(16)));
    }
    h.engine.check().unwrap();
    let hole = blocks[1].0;
    h.free(hole);
    let in_use = h.engine.bytes_in_use();
    let q = h.engine.alloc_over_aligned(SIZE, ALIGN).unwrap().unwrap();
    h.engine.check().unwrap();
    assert_eq!(
        q, hole,
        "the hole fits the request exactly and was passed over"
    );
    assert_eq!(h.engine.bytes_in_use(), in_use + SIZE);
    for (p, pad) in blocks {
        h.free(p);
        h.free(pad);
    }
    h.engine.check().unwrap();
}

#[test]
fn a_full_engine_says_so_and_recovers() {
    let mut h = Harness::new(4096);
    let mut live = Vec::new();
    while let Some(p) = h.engine.alloc(100, 16).unwrap() {
        live.push(p);
    }
    assert!(live.len() >= 4096 / 128 - 1);
    h.engine.check().unwrap();
    for p in live.drain(..) {
        h.free(p);
    }
    // Small freed blocks wait on their quick stacks; once flushed, everything is one block.
    assert!(h.engine.stats().free_blocks > 1);
    h.engine.flush_quick().unwrap();
    h.engine.check().unwrap();
    assert_eq!(h.engine.stats().free_blocks, 1);
    assert!(h.engine.alloc(4000, 16).unwrap().is_some());
}

#[test]
fn resize_tells_a_block_at_the_top_from_a_blocked_one() {
    let mem = Memory::new(16 * 4096);
    let mut e = mem.engine();
    let base = mem.base();
    e.grow_span(base + 4096).unwrap();
    let a = e.alloc(1000, 16).unwrap().unwrap();
    // SAFETY: `a` is a live block of at least 1000 bytes.
    unsafe { a.as_ptr().write_bytes(0xA5, 1000) };
    let reach = 4096 - 2 * HEADER - HEADER;
    assert_eq!(e.resize(a, 10_000).unwrap(), Resize::AtTop { reach });
    // Nothing changed; growing the span lets the same call succeed in place.
    e.check().unwrap();
    e.grow_span(base + 4 * 4096).unwrap();
    assert_eq!(e.resize(a, 10_000).unwrap(), Resize::Done);
    assert!(e.usable_size(a).unwrap() >= 10_000);
    // SAFETY: the block kept its first 1000 bytes and now has at least 10000.
    assert!(
        unsafe { core::slice::from_raw_parts(a.as_ptr(), 1000) }
            .iter()
            .all(|&x| x == 0xA5)
    );
    e.check().unwrap();
    // An allocated block after it blocks it, however much is free past that.
    let _guard = e.alloc(2000, 16).unwrap().unwrap();
    assert_eq!(e.resize(a, 20_000).unwrap(), Resize::Blocked);
    // A size no block can have is blocked too, or at the top, but never done.
    assert_ne!(e.resize(a, usize::MAX - 64).unwrap(), Resize::Done);
    e.check().unwrap();
}

#[test]
fn growing_and_shrinking_the_span_moves_the_top() {
    let mem = Memory::new(16 * 4096);
    let mut e = mem.engine();
    let base = mem.base();
    assert_eq!(
        e.alloc(10, 16).unwrap(),
        None,
        "an empty span has no blocks"
    );
    e.grow_span(base + 4096).unwrap();
    let a = e.alloc(3000, 16).unwrap().unwrap();
    e.grow_span(base + 8192).unwrap();
    e.check().unwrap();
    assert_eq!(
        e.stats().free_blocks,
        1,
        "new memory merges with the free top"
    );
    let (top, size) = e.free_top().unwrap().unwrap();
    assert_eq!((top + size).span_end(), base + 8192);
    // Cut the top back to one page.
    assert_eq!(e.shrink_span(base + 4096, PAGE).unwrap(), 4096);
    e.check().unwrap();
    // Growth in place at the top of the span: blocked by the span's end alone, the block
    // could reach everything up to it, and does once the span grows.
    assert_eq!(
        e.resize(a, 10_000).unwrap(),
        Resize::AtTop {
            reach: 4096 - 2 * HEADER - HEADER
        }
    );
    e.free(a).unwrap();
    let (top, _) = e.free_top().unwrap().unwrap();
    assert_eq!(
        e.shrink_span(top.span_end(), PAGE).unwrap(),
        base + 4096 - top.span_end()
    );
    assert_eq!(e.span(), 16);
    e.check().unwrap();
    e.grow_span(base + 4096).unwrap();
    e.check().unwrap();
}

#[test]
fn a_top_block_cut_off_leaves_nothing_for_calloc_to_miss() {
    // A top block cut off must not leave its header and links past the new end of the span:
    // growing the span again would merge them into a block that calloc trusts to be zero.
    let mem = Memory::new(8 * 4096);
    let mut e = mem.engine();
    let base = mem.base();
    // | x 8320 | guard 112 | a 3008 | top 8704 |: x and the top share a bin, so once x is
    // freed the top's `prev` link names it.
    e.grow_span(base + 16 + 8320 + 112 + 3008 + 8704).unwrap();
    let x = e.alloc(8300, 16).unwrap().unwrap();
    let _guard = e.alloc(100, 16).unwrap().unwrap();
    let a = e.alloc(3000, 16).unwrap().unwrap();
    e.free(x).unwrap();
    let (top, size) = e.free_top().unwrap().unwrap();
    assert_eq!(bin_of(size), bin_of(8320));
    e.shrink_span(top.span_end(), PAGE).unwrap();
    e.free(a).unwrap();
    e.grow_span(base + 8 * 4096).unwrap();
    let clean = e.clean_mark();
    let p = e.alloc(20_000, 16).unwrap().unwrap();
    assert_eq!(p, a);
    e.clear_for_calloc(p, 20_000, clean);
    assert!(holds(p, 20_000, 0), "calloc memory is not all zero");
    e.check().unwrap();
}

#[test]
fn random_operations_keep_every_invariant() {
    random_operations(
        0x5EED,
        SMALL,
        |rng| rng.range(1, 700),
        |rng| rng.range(1, 1200),
    );
}

#[test]
fn random_operations_on_few_sizes_keep_every_invariant() {
    // Three sizes only: the quick stacks fill up and overflow into merges.
    random_operations(
        0xC4A1,
        SMALL,
        |rng| [24, 100, 300][rng.range(0, 3)],
        |rng| rng.range(1, 1200),
    );
}

#[test]
fn random_operations_on_large_blocks_keep_every_invariant() {
    // Blocks up to a few hundred KiB among small ones: their extents cross many start map
    // groups and several summary words, and freeing them merges across those.
    let large = |rng: &mut Rng| {
        if rng.chance(1, 4) {
            rng.range(1, if cfg!(miri) { 20_000 } else { 300_000 })
        } else {
            rng.range(1, 700)
        }
    };
    random_operations(0x1A26E, LARGE, large, large);
}

/// Span of the random-operation tests on small blocks.
const SMALL: usize = 32 * 1024;
/// Span of those on large blocks: 64 summary words of start map groups (4 under Miri, where
/// every step is checked).
const LARGE: usize = if cfg!(miri) { 256 << 10 } else { 4 << 20 };

/// Random alloc/free/resize against a model over `span` bytes, with every invariant checked,
/// the fit policy and deferred coalescing switched now and then, and bursts of frees.
fn random_operations(
    seed: u64,
    span: usize,
    mut size_of: impl FnMut(&mut Rng) -> usize,
    mut resize_to: impl FnMut(&mut Rng) -> usize,
) {
    let mut h = Harness::new(span);
    let mut rng = Rng::new(seed);
    let mut live: Vec<(NonNull<u8>, usize, u8)> = Vec::new();
    let steps = match (cfg!(miri), span > SMALL) {
        (true, _) => 100,
        (false, false) => 20_000,
        (false, true) => 5_000,
    };
    for step in 0..steps {
        // Every combination of the policies, and every switch (turning caching off merges
        // what is cached), keeps the invariants.
        if rng.chance(1, 200) {
            h.engine.set_best_fit(rng.chance(1, 2));
        }
        if rng.chance(1, 200) {
            h.engine.set_caching(rng.chance(1, 2)).unwrap();
        }
        // Now and then a burst of frees, as when a collection is dropped.
        if rng.chance(1, 100) {
            for _ in 0..live.len() / 2 {
                let (p, size, byte) = live.swap_remove(rng.range(0, live.len()));
                assert!(holds(p, size, byte), "step {step}: contents changed");
                h.engine.free(p).unwrap();
            }
        }
        let roll = rng.range(0, 10);
        if roll < 5 || live.is_empty() {
            let size = size_of(&mut rng);
            let align = if rng.chance(1, 8) {
                1 << rng.range(5, 10)
            } else {
                16
            };
            if let Some(p) = h.engine.alloc(size, align).unwrap() {
                assert_eq!(p.as_ptr() as usize % align, 0);
                let byte = rng.byte();
                fill(p, size, byte);
                live.push((p, size, byte));
            }
        } else if roll < 8 {
            let (p, size, byte) = live.swap_remove(rng.range(0, live.len()));
            assert!(holds(p, size, byte), "step {step}: contents changed");
            if rng.chance(1, 2) {
                h.engine.free(p).unwrap();
            } else {
                // Judged once, then freed on the token's word.
                let token = h.engine.live(p).unwrap();
                assert_eq!(token.ptr(), p);
                assert!(token.usable() >= size, "step {step}: usable size");
                // SAFETY: just made by this engine; nothing changed since.
                unsafe { h.engine.free_live(token) }.unwrap();
            }
        } else {
            let i = rng.range(0, live.len());
            let (p, size, byte) = live[i];
            let new = resize_to(&mut rng);
            let done = if rng.chance(1, 2) {
                h.engine.resize_in_place(p, new).unwrap()
            } else {
                let token = h.engine.live(p).unwrap();
                assert_eq!(token.usable(), h.engine.usable_size(p).unwrap());
                // SAFETY: just made by this engine; `usable_size` only reads.
                let r = unsafe { h.engine.resize_live(token, new) }.unwrap();
                r == Resize::Done
            };
            if done {
                assert!(
                    h.engine.usable_size(p).unwrap() >= new,
                    "step {step}: resized block too small"
                );
                assert!(
                    holds(p, size.min(new), byte),
                    "step {step}: resize lost data"
                );
                fill(p, new, byte);
                live[i].1 = new;
            }
        }
        // A temporary: a small block freed right away (the quick stack's favourite case), or
        // after a look at it.
        if rng.chance(1, 4) {
            let size = rng.range(1, 600);
            if let Some(t) = h.engine.alloc(size, 16).unwrap() {
                let byte = rng.byte();
                fill(t, size, byte);
                assert_eq!(h.engine.stats().live_blocks, live.len() + 1);
                if rng.chance(1, 3) {
                    assert!(h.engine.usable_size(t).unwrap() >= size);
                }
                assert!(holds(t, size, byte), "step {step}: temporary changed");
                h.engine.free(t).unwrap();
            }
        }
        assert_eq!(h.engine.stats().live_blocks, live.len(), "step {step}");
        if step % 7 == 0 || cfg!(miri) {
            h.engine.check().unwrap();
        }
        // No two live blocks overlap.
        if step % 101 == 0 {
            let mut spans: Vec<_> = live
                .iter()
                .map(|&(p, size, _)| (p.as_ptr() as usize, size))
                .collect();
            spans.sort();
            for w in spans.windows(2) {
                assert!(w[0].0 + w[0].1 <= w[1].0, "step {step}: blocks overlap");
            }
        }
    }
    for (p, size, byte) in live {
        assert!(holds(p, size, byte));
        h.engine.free(p).unwrap();
    }
    h.engine.check().unwrap();
    h.engine.flush_quick().unwrap();
    h.engine.check().unwrap();
    assert_eq!(h.engine.stats().live_blocks, 0);
    assert_eq!(h.engine.stats().free_blocks, 1);
    assert_eq!(h.engine.stats().free_bytes, span - 16);
    let _ = MIN_BLOCK;
}

#[test]
fn calloc_clears_exactly_what_may_be_dirty() {
    // Dirty blocks are freed, merged with clean ones and trimmed; every zeroed allocation
    // must read as zero whatever mix of clean and dirty memory it came from.
    for seed in 0..if cfg!(miri) { 1 } else { 20 } {
        calloc_run(seed);
    }
}

fn calloc_run(seed: u64) {
    let mem = Memory::new(256 * 1024);
    let mut e = mem.engine();
    let base = mem.base();
    let mut end = base + 16;
    let mut rng = Rng::new(seed);
    let mut live: Vec<(NonNull<u8>, usize)> = Vec::new();
    for step in 0..if cfg!(miri) { 40 } else { 6000 } {
        match rng.range(0, 10) {
            0..=3 => {
                let size = rng.range(1, 3000);
                let clean = e.clean_mark();
                let p = match e.alloc(size, 16).unwrap() {
                    Some(p) => p,
                    None => {
                        let grow = (size + 4096 + 4095) & !4095;
                        if end + grow > base + mem.capacity() {
                            continue;
                        }
                        end += grow;
                        e.grow_span(end).unwrap();
                        e.alloc(size, 16).unwrap().unwrap()
                    }
                };
                e.clear_for_calloc(p, size, clean.min(e.clean_mark()));
                if !holds(p, size, 0) {
                    // SAFETY: `size` bytes at `p`.
                    let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), size) };
                    let bad: Vec<usize> = (0..size).filter(|&i| bytes[i] != 0).collect();
                    panic!(
                        "step {step}: calloc of {size} at off {} not zeroed at {:?}..{:?} (clean was off {}, end off {})",
                        p.as_ptr() as usize - base,
                        bad.first(),
                        bad.last(),
                        clean as isize - base as isize,
                        end - base
                    );
                }
                fill(p, size, 0xEE);
                live.push((p, size));
            }
            4..=7 if !live.is_empty() => {
                let (p, _) = live.swap_remove(rng.range(0, live.len()));
                e.free(p).unwrap();
            }
            8 if !live.is_empty() => {
                let i = rng.range(0, live.len());
                let new = rng.range(1, 4000);
                if e.resize_in_place(live[i].0, new).unwrap() {
                    fill(live[i].0, new, 0xDD);
                    live[i].1 = new;
                }
            }
            _ => {
                e.flush_quick().unwrap();
                if let Some((b, size)) = e.free_top().unwrap() {
                    if size > 8192 {
                        let keep = rng.range(0, 2) * 4096;
                        let new_end = (b + keep).span_end();
                        e.shrink_span(new_end, PAGE).unwrap();
                        // What an owner's shrink does: release the whole pages from the new
                        // end up to the page the old end was on.
                        let from = new_end.next_multiple_of(PAGE);
                        let to = end.next_multiple_of(PAGE);
                        // SAFETY: the pages lie above the engine's new end: no block, no
                        // reference.
                        unsafe { mem.release(from, to - from) };
                        end = new_end;
                    }
                }
            }
        }
        if step % 25 == 0 || cfg!(miri) {
            e.check().unwrap();
        }
    }
}

#[test]
fn without_caching_frees_merge_at_once_and_the_cache_is_flushed() {
    let mut h = Harness::new(8 * 1024);
    let a = h.alloc(100);
    let _b = h.alloc(100);
    h.free(a);
    assert_eq!(h.engine.quick.total(), 1);
    h.engine.set_caching(false).unwrap();
    h.engine.check().unwrap();
    assert_eq!(h.engine.quick.total(), 0, "switching caching off flushes");
    let c = h.alloc(100);
    h.free(c);
    assert_eq!(h.engine.quick.total(), 0, "frees merge at once");
    assert_eq!(h.engine.stats().free_blocks, 2);
}

#[test]
fn best_fit_also_searches_the_next_bin() {
    let mut h = Harness::new(64 * 1024);
    // Free blocks of 2608 and 2720 bytes share the size-range bin 2560..2816; freed smaller
    // first, the larger is the head of the bin. A request of 2100 bytes (bin 2048..2304,
    // empty) is served from that next bin.
    let a = h.alloc(2600);
    let _g1 = h.alloc(16);
    let b = h.alloc(2700);
    let _g2 = h.alloc(16);
    h.free(a);
    h.free(b);
    let c = h.alloc(2100);
    assert_eq!(
        c, b,
        "by default the head of the next bin, every block of which fits"
    );
    h.free(c);
    h.engine.set_best_fit(true);
    assert_eq!(h.alloc(2100), a, "best fit takes the smaller block");
}

#[test]
fn a_resized_block_moves_when_that_leaves_larger_free_pieces() {
    let mut h = Harness::new(64 * 1024);
    h.engine.set_best_fit(true);
    h.engine.set_caching(false).unwrap();
    // | before 2016 | a 4016 | guard | hole 5008 | guard | small 1120 | guard | rest |
    let before = h.alloc(2000);
    let a = h.alloc(4000);
    let _g1 = h.alloc(100);
    let hole = h.alloc(5000);
    let _g2 = h.alloc(100);
    let small = h.alloc(1100);
    let _g3 = h.alloc(100);
    let top = h.engine.largest_free();
    let _rest = h.alloc(top);
    h.free(hole);
    h.free(small);
    let free_before = h.engine.stats();

    // Between allocated blocks, `a` moves only to a free block smaller than its own place.
    assert!(
        h.engine.moving_packs_better(a, 1000).unwrap(),
        "the 1120-byte block holds 1000 bytes"
    );
    assert!(
        !h.engine.moving_packs_better(a, 3000).unwrap(),
        "only the 5008-byte block holds 3000 bytes; shrinking in place is better"
    );
    assert!(
        !h.engine.moving_packs_better(a, 6000).unwrap(),
        "growing beyond its place is not a choice between staying and moving"
    );

    // A free block before `a` tips the balance: leaving merges the place with it.
    h.free(before);
    assert!(h.engine.moving_packs_better(a, 3000).unwrap());
    // The block before is itself the best fit: carving it and freeing `a` leaves one piece.
    assert!(h.engine.moving_packs_better(a, 1500).unwrap());

    // Nothing was written by asking.
    h.engine.check().unwrap();
    let s = h.engine.stats();
    assert_eq!(s.free_blocks, free_before.free_blocks + 1);
    assert_eq!(s.splits, free_before.splits);
}

#[test]
fn a_request_whose_stack_is_empty_splits_the_smallest_larger_cached_block() {
    let mut h = Harness::new(4096);
    let keep = h.alloc(100);
    let a = h.alloc(200); // a block of 208 bytes
    let b = h.alloc(300); // 320 bytes
    let fence = h.alloc(24);
    h.free(b);
    h.free(a); // both cached, on the stacks of 208 and 320
    let s0 = h.engine.stats();
    // 48 bytes: its stack and its exact bin are empty, so the front of the 208-byte block
    // (the smallest larger one cached) serves it and the 160 bytes after stay cached.
    let c = h.engine.alloc(40, 16).unwrap().unwrap();
    assert_eq!(c, a, "the smallest larger cached block is split");
    h.engine.check().unwrap();
    let s1 = h.engine.stats();
    assert_eq!(s1.live_blocks, s0.live_blocks + 1);
    assert_eq!(
        s1.free_blocks, s0.free_blocks,
        "one cached block became another"
    );
    assert_eq!(s1.bytes_in_use, s0.bytes_in_use + 40);
    assert_eq!(s1.splits, s0.splits + 1);
    assert_eq!(h.engine.usable_size(c).unwrap(), 40);
    // The rest was never handed out, yet a block starts there that is not live: freeing it
    // is refused like any free block, and an address inside it is no block at all.
    // SAFETY: 48 bytes into the 208-byte block the test allocated at `a`: the rest's payload.
    let rest = unsafe { a.add(48) };
    assert!(matches!(h.engine.free(rest), Err(Error::DoubleFree { .. })));
    // SAFETY: as above, 16 bytes further.
    let inside = unsafe { a.add(64) };
    assert!(matches!(
        h.engine.free(inside),
        Err(Error::InvalidPointer { .. })
    ));
    h.engine.check().unwrap();
    // The rest serves its own size from its stack.
    let d = h.alloc(150);
    assert_eq!(d, rest);
    fill(c, 40, 0xC1);
    fill(d, 150, 0xD1);
    // 16 bytes short of a cached block: nothing could be left, so it goes whole.
    let e = h.engine.alloc(300 - 16, 16).unwrap().unwrap();
    assert_eq!(e, b);
    assert_eq!(h.engine.usable_size(e).unwrap(), 312);
    h.engine.check().unwrap();
    assert!(holds(c, 40, 0xC1) && holds(d, 150, 0xD1));
    for p in [c, d, e, fence, keep] {
        h.free(p);
    }
    h.engine.flush_quick().unwrap();
    h.engine.check().unwrap();
    assert_eq!(h.engine.stats().free_blocks, 1, "the pieces merge again");
}

#[test]
fn a_damaged_larger_cached_block_is_quarantined_not_split() {
    let mut h = Harness::new(4096);
    let keep = h.alloc(100);
    let a = h.alloc(200);
    let fence = h.alloc(24);
    h.free(a);
    let header = a.as_ptr().wrapping_sub(HEADER).cast::<u64>();
    // SAFETY: the header word of the cached block `a`: engine memory the test damages on
    // purpose, as a dangling write from the program would.
    unsafe { header.write(header.read() ^ 0x40) };
    assert!(matches!(
        h.engine.alloc(40, 16),
        Err(Error::Corrupted { .. })
    ));
    let s = h.engine.stats();
    assert_eq!((s.quarantined_blocks, s.quarantined_bytes), (1, 208));
    h.engine.check_structure().unwrap();
    // Served elsewhere on the next try; the quarantined block is never handed out.
    let c = h.engine.alloc(40, 16).unwrap().unwrap();
    assert_ne!(c, a);
    for p in [c, fence, keep] {
        h.free(p);
    }
    assert!(matches!(h.engine.check(), Err(Error::Corrupted { .. })));
}

#[test]
fn the_churn_keeps_every_invariant() {
    // The pattern the split path is for: a fixed number of live blocks, each step freeing a
    // random one and asking for a random small size, on a span that the cached blocks fill
    // (so flushes happen too), checked against a model of every block's contents.
    let mut h = Harness::new(16 * 1024);
    let mut rng = Rng::new(0xC4_2A);
    let mut live: Vec<(NonNull<u8>, usize, u8)> = Vec::new();
    let steps = if cfg!(miri) { 300 } else { 30_000 };
    for step in 0..steps {
        if live.len() == 30 || (!live.is_empty() && rng.chance(1, 3)) {
            let (p, size, byte) = live.swap_remove(rng.range(0, live.len()));
            assert!(holds(p, size, byte), "step {step}: contents changed");
            // The owners' order: the fast path, then the full free when it declines.
            if !h.engine.free_cached(p) {
                h.engine.free(p).unwrap();
            }
        }
        let size = rng.range(16, 513);
        let p = match h.engine.alloc_cached(size, 16) {
            Some(p) => p,
            None => h.engine.alloc(size, 16).unwrap().expect("fits"),
        };
        assert!(h.engine.usable_size(p).unwrap() >= size);
        let byte = rng.byte();
        fill(p, size, byte);
        live.push((p, size, byte));
        if step % 5 == 0 {
            h.engine.check().unwrap();
        }
        assert_eq!(h.engine.stats().live_blocks, live.len());
    }
    for (p, size, byte) in live {
        assert!(holds(p, size, byte));
        h.engine.free(p).unwrap();
    }
    h.engine.flush_quick().unwrap();
    h.engine.check().unwrap();
    assert_eq!(h.engine.stats().free_blocks, 1);
}

#[test]
fn a_damaged_cached_block_of_the_size_asked_is_quarantined_and_reported() {
    let mut h = Harness::new(4096);
    let keep = h.alloc(100);
    let a = h.alloc(48);
    let b = h.alloc(48);
    let fence = h.alloc(24);
    h.free(a);
    h.free(b); // `b` is the top of the stack of 64-byte blocks, `a` below it
    let header = b.as_ptr().wrapping_sub(HEADER).cast::<u64>();
    // SAFETY: the header word of the cached block `b`: engine memory the test damages on
    // purpose, as a dangling write from the program would.
    unsafe { header.write(header.read() + 16) };
    // The hot path leaves the damaged top to the slow path, which takes it off, quarantines
    // it and reports it; nothing else changed.
    let live = h.engine.stats().live_blocks;
    assert!(matches!(
        h.engine.alloc(48, 16),
        Err(Error::Corrupted { .. })
    ));
    let s = h.engine.stats();
    assert_eq!(s.live_blocks, live);
    assert_eq!((s.quarantined_blocks, s.quarantined_bytes), (1, 64));
    h.engine.check_structure().unwrap();
    // The next request of that size gets the sound block below it.
    assert_eq!(h.engine.alloc(48, 16).unwrap(), Some(a));
    for p in [a, fence, keep] {
        h.free(p);
    }
    assert!(matches!(h.engine.check(), Err(Error::Corrupted { .. })));
}

#[test]
fn the_free_fast_path_frees_only_what_free_would_cache_and_declines_the_rest_untouched() {
    let mut h = Harness::new(8192);
    let small = h.alloc(48);
    let large = h.alloc(1500); // more than 64 granules: the map's window does not show it
    let damaged = h.alloc(48);
    let fence = h.alloc(24);
    let freed = h.alloc(100);
    h.free(freed);
    let header = damaged.as_ptr().wrapping_sub(HEADER).cast::<u64>();
    // SAFETY: the header word of the live block `damaged`: engine memory the test damages
    // on purpose, as an overflow from the block before would.
    unsafe { header.write(header.read() + 16) };
    let mut local = 0u64;
    let foreign = NonNull::from(&mut local).cast::<u8>();
    // SAFETY: 16 and 8 bytes into a live 48-byte block are still inside it.
    let (interior, misaligned) = unsafe { (small.add(16), small.add(8)) };
    let declined = [freed, foreign, interior, misaligned, large, damaged];
    for p in declined {
        let before = h.engine.stats();
        assert!(!h.engine.free_cached(p), "{p:?}");
        assert_eq!(h.engine.stats(), before, "a declined free changed nothing");
    }
    // What it declines, the full free judges as before.
    assert!(matches!(
        h.engine.free(freed),
        Err(Error::DoubleFree { .. })
    ));
    assert!(matches!(
        h.engine.free(damaged),
        Err(Error::Corrupted { .. })
    ));
    // SAFETY: as above; the header is put back as it was.
    unsafe { header.write(header.read() - 16) };
    h.engine.check_structure().unwrap();
    // A sound small block goes on its stack, exactly as `free` would put it there.
    let (before, cached) = (h.engine.stats(), h.engine.cached_blocks());
    assert!(h.engine.free_cached(small));
    let after = h.engine.stats();
    assert_eq!(after.live_blocks, before.live_blocks - 1);
    assert_eq!(after.bytes_in_use, before.bytes_in_use - (64 - HEADER));
    assert_eq!(h.engine.cached_blocks(), cached + 1);
    assert!(matches!(
        h.engine.free(small),
        Err(Error::DoubleFree { .. })
    ));
    assert!(!h.engine.free_cached(small));
    h.engine.check_structure().unwrap();
    // A full stack declines, and the full free merges instead.
    let mut same = Vec::new();
    for _ in 0..=quick::LIMIT {
        same.push(h.alloc(200));
    }
    let last = same.pop().unwrap();
    for p in same {
        assert!(h.engine.free_cached(p));
    }
    assert!(!h.engine.free_cached(last));
    assert!(h.engine.free(last).unwrap().binned);
    h.free(large);
    h.free(fence);
    h.engine.check_structure().unwrap();
}
