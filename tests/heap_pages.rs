//! The heap's small-object pages through the public API: a model of live blocks under random
//! operations of mixed sizes, each misuse of a slot, the block walk over pages, and pages
//! going back to the engine and the OS.

#[path = "../src/test_rng.rs"]
mod test_rng;

use core::alloc::Layout;
use core::ptr::NonNull;
use std::collections::BTreeMap;

use strata_alloc::{BlockState, Error, Heap, HeapConfig};
use test_rng::Rng;

const KIB: usize = 1 << 10;
/// The largest request pages serve.
const SMALL: usize = 8 * KIB;

/// A size class's slot (what `usable_size` reports for a slot), as docs/ARCHITECTURE.md
/// describes the classes.
fn slot_of(size: usize) -> usize {
    if size <= 128 {
        return size.max(1).next_multiple_of(16);
    }
    let base = (size - 1).ilog2();
    let step = (1usize << base) / 8;
    size.next_multiple_of(step)
}

fn pages_heap() -> Heap {
    Heap::with_config(HeapConfig::default().small_pages(true)).unwrap()
}

/// Allocates `n` blocks of `size` bytes; past the first few of a class they are slots.
fn many(heap: &Heap, n: usize, size: usize) -> Vec<NonNull<u8>> {
    (0..n).map(|_| heap.alloc(size).unwrap()).collect()
}

fn fill(p: NonNull<u8>, len: usize, seed: u8) {
    // SAFETY: callers pass a live block of at least `len` bytes.
    unsafe { p.as_ptr().write_bytes(seed, len) };
}

fn holds(p: NonNull<u8>, len: usize, seed: u8) -> bool {
    // SAFETY: callers pass a live block of at least `len` bytes.
    unsafe { core::slice::from_raw_parts(p.as_ptr(), len) }
        .iter()
        .all(|&b| b == seed)
}

#[test]
fn small_requests_are_served_from_slots_of_their_class() {
    let heap = pages_heap();
    for size in [
        1, 16, 24, 100, 129, 700, 1500, 2048, 2049, 3000, 4096, 5000, 7000, SMALL,
    ] {
        let ps = many(&heap, 40, size);
        let last = *ps.last().unwrap();
        assert_eq!(
            heap.usable_size(last).unwrap(),
            slot_of(size),
            "size {size}"
        );
        // Past the class's first requests (which the engine serves until the class is in
        // demand), every block is a slot: a whole number of slots from its page's start.
        for p in &ps[30..] {
            assert_eq!(
                p.as_ptr() as usize % (64 * KIB) % slot_of(size),
                0,
                "size {size}"
            );
        }
    }
    heap.check().unwrap();
    // Off, the engine serves every request: usable sizes are the engine's.
    let off = Heap::with_config(HeapConfig::default().small_pages(false)).unwrap();
    let ps = many(&off, 40, 24);
    assert_eq!(off.usable_size(ps[39]).unwrap(), 24);
    // A small bounded heap has none by default.
    let bounded = Heap::with_config(HeapConfig::default().max_size(64 << 20)).unwrap();
    let ps = many(&bounded, 40, 24);
    assert_eq!(bounded.usable_size(ps[39]).unwrap(), 24);
}

#[test]
fn aligned_small_requests_get_aligned_slots() {
    let heap = pages_heap();
    for align in [32, 64, 256, 1024, 2048, 4096] {
        for size in [8, 100, 1000, 2000] {
            let l = Layout::from_size_align(size, align).unwrap();
            for _ in 0..20 {
                let p = heap.alloc_layout(l).unwrap();
                assert_eq!(p.as_ptr() as usize % align, 0, "{size} aligned to {align}");
                assert!(heap.usable_size(p).unwrap() >= size);
                fill(p, size, 0x5A);
            }
        }
    }
    heap.check().unwrap();
}

#[test]
fn model_based_random_operations_with_mixed_sizes() {
    let heap = pages_heap();
    let mut rng = Rng::new(0x51075);
    // Live blocks by address: (length, fill byte).
    let mut live: BTreeMap<usize, (NonNull<u8>, usize, u8)> = BTreeMap::new();
    let mut keys: Vec<usize> = Vec::new();
    let size = |rng: &mut Rng| match rng.range(0, 100) {
        0..=69 => rng.range(1, 2049),
        70..=79 => rng.range(2049, SMALL + 1),
        80..=95 => rng.range(SMALL + 1, 32 * KIB),
        _ => rng.range(128 * KIB, 300 * KIB),
    };
    let no_overlap = |live: &BTreeMap<usize, (NonNull<u8>, usize, u8)>, a: usize, len: usize| {
        if let Some((&b, &(_, blen, _))) = live.range(..=a).next_back() {
            assert!(b + blen <= a, "{a:#x} overlaps the block at {b:#x}");
        }
        if let Some((&b, _)) = live.range(a..).next() {
            assert!(a + len <= b, "{a:#x}+{len} overlaps the block at {b:#x}");
        }
    };
    let mut slots_seen = 0;
    for step in 0..60_000 {
        let roll = rng.range(0, 100);
        if keys.is_empty() || (keys.len() < 3000 && roll < 45) {
            let len = size(&mut rng);
            let p = if rng.chance(1, 10) {
                heap.calloc(1, len).unwrap()
            } else {
                heap.alloc(len).unwrap()
            };
            let a = p.as_ptr() as usize;
            // Engine blocks have 8 bytes less than a multiple of 16; slots are multiples of 16.
            if len <= SMALL && heap.usable_size(p).unwrap() == slot_of(len) {
                slots_seen += 1;
            }
            no_overlap(&live, a, len);
            let seed = rng.byte();
            fill(p, len, seed);
            live.insert(a, (p, len, seed));
            keys.push(a);
        } else if roll < 75 {
            let a = keys.swap_remove(rng.range(0, keys.len()));
            let (p, len, seed) = live.remove(&a).unwrap();
            assert!(
                holds(p, len, seed),
                "step {step}: contents of {a:#x} changed"
            );
            // SAFETY: live, freed once.
            unsafe { heap.free(p) }.unwrap();
        } else {
            let k = rng.range(0, keys.len());
            let a = keys[k];
            let (p, len, seed) = live.remove(&a).unwrap();
            let new = if rng.chance(1, 2) {
                rng.range(1, SMALL + 1)
            } else {
                size(&mut rng)
            };
            // SAFETY: live; the returned pointer replaces it.
            let q = unsafe { heap.realloc(p, new) }.unwrap();
            assert!(
                holds(q, len.min(new), seed),
                "step {step}: realloc lost contents"
            );
            if new <= len && len <= SMALL {
                assert_eq!(q, p, "a slot shrinks in place");
            }
            let b = q.as_ptr() as usize;
            no_overlap(&live, b, new);
            fill(q, new, seed);
            live.insert(b, (q, new, seed));
            keys[k] = b;
        }
        if step % 500 == 0 {
            heap.check().unwrap();
            let s = heap.stats();
            assert_eq!(s.live_blocks, live.len(), "step {step}");
            let walked = heap
                .blocks()
                .filter(|b| matches!(b.state, BlockState::Allocated | BlockState::Mapped))
                .count();
            assert_eq!(walked, live.len(), "step {step}: the walk sees every block");
        }
    }
    assert!(slots_seen > 1000, "pages served only {slots_seen} requests");
    for (_, (p, len, seed)) in std::mem::take(&mut live) {
        assert!(holds(p, len, seed));
        // SAFETY: live, freed once.
        unsafe { heap.free(p) }.unwrap();
    }
    heap.check().unwrap();
    let s = heap.stats();
    assert_eq!((s.live_blocks, s.bytes_in_use), (0, 0), "{s}");
}

#[test]
fn every_misuse_of_a_slot_is_reported_and_writes_nothing() {
    // A small class, one of 3 KiB and the largest: pages of 1000, 21 and 7 slots.
    for size in [64, 3000, SMALL] {
        misuse_of_a_slot(size);
    }
}

fn misuse_of_a_slot(size: usize) {
    let heap = pages_heap();
    let ps = many(&heap, 20, size);
    let (a, b, c) = (ps[17], ps[18], ps[19]);
    assert_eq!(heap.usable_size(b).unwrap(), slot_of(size));
    fill(a, size, 0xA1);
    fill(c, size, 0xC3);
    // SAFETY: live, freed once.
    unsafe { heap.free(b) }.unwrap();
    let before = heap.stats();

    // SAFETY (every call below): misuse under test; the heap validates before writing.
    let double = unsafe { heap.free(b) };
    assert!(
        matches!(double, Err(Error::DoubleFree { .. })),
        "{size}: {double:?}"
    );
    let r = unsafe { heap.realloc(b, 10) };
    assert!(matches!(r, Err(Error::DoubleFree { .. })), "{r:?}");
    assert!(matches!(heap.usable_size(b), Err(Error::DoubleFree { .. })));
    // SAFETY: an address inside `a`, not handed out.
    let inside = unsafe { NonNull::new_unchecked(a.as_ptr().add(16)) };
    let r = unsafe { heap.free(inside) };
    assert!(
        matches!(r, Err(Error::InvalidPointer { reason, .. }) if reason.contains("allocated")),
        "{size}: {r:?}"
    );
    let r = unsafe { heap.realloc(inside, 200) };
    assert!(matches!(r, Err(Error::InvalidPointer { .. })), "{r:?}");
    // SAFETY: an address inside the freed slot `b`.
    let inside_free = unsafe { NonNull::new_unchecked(b.as_ptr().add(8)) };
    let r = unsafe { heap.free(inside_free) };
    assert!(
        matches!(r, Err(Error::InvalidPointer { reason, .. }) if reason.contains("free")),
        "{size}: {r:?}"
    );
    // A pointer of no allocator of this heap's.
    let mut local = [0u8; 64];
    let foreign = NonNull::new(local.as_mut_ptr()).unwrap();
    let r = unsafe { heap.free(foreign) };
    assert!(matches!(r, Err(Error::InvalidPointer { .. })), "{r:?}");
    let other = pages_heap();
    let theirs = many(&other, 20, size)[19];
    let r = unsafe { heap.free(theirs) };
    assert!(matches!(r, Err(Error::InvalidPointer { .. })), "{r:?}");

    // Nothing was written or counted but the misuses.
    assert!(holds(a, size, 0xA1) && holds(c, size, 0xC3));
    let after = heap.stats();
    assert_eq!(after.misuses_caught, before.misuses_caught + 8, "{after}");
    assert_eq!(
        (after.live_blocks, after.bytes_in_use, after.frees),
        (before.live_blocks, before.bytes_in_use, before.frees)
    );
    heap.check().unwrap();
    other.check().unwrap();
    // The freed slot is handed out again, and is the same memory.
    assert_eq!(heap.alloc(size).unwrap(), b);
}

#[test]
fn slot_reallocation_stays_in_the_slot_or_moves_with_its_contents() {
    let heap = pages_heap();
    let ps = many(&heap, 20, 100);
    let p = ps[19];
    assert_eq!(heap.usable_size(p).unwrap(), 112);
    fill(p, 100, 0x77);
    // SAFETY: live; only the returned pointer is used after each call.
    let q = unsafe { heap.realloc(p, 112) }.unwrap();
    assert_eq!(q, p, "within the slot");
    // SAFETY: as above.
    let q = unsafe { heap.realloc(q, 10) }.unwrap();
    assert_eq!(q, p, "a shrink stays");
    // SAFETY: as above.
    let q = unsafe { heap.realloc(q, 1000) }.unwrap();
    assert_ne!(q, p, "past the slot: moved");
    assert!(holds(q, 10, 0x77));
    // SAFETY: as above.
    let r = unsafe { heap.realloc(q, 100 * KIB) }.unwrap();
    assert!(holds(r, 10, 0x77));
    // SAFETY: misuse under test: the slot was freed by the move.
    assert!(matches!(
        unsafe { heap.free(p) },
        Err(Error::DoubleFree { .. })
    ));
    // SAFETY: live, freed once.
    unsafe { heap.free(r) }.unwrap();
    heap.check().unwrap();
}

#[test]
fn calloc_clears_a_reused_slot() {
    let heap = pages_heap();
    let ps = many(&heap, 20, 200);
    let p = ps[19];
    fill(p, 200, 0xFF);
    // SAFETY: live, freed once.
    unsafe { heap.free(p) }.unwrap();
    let q = heap.calloc(10, 20).unwrap();
    assert_eq!(q, p, "the slot just freed comes back");
    assert!(holds(q, 200, 0));
}

#[test]
fn the_walk_shows_a_page_as_its_slots() {
    let heap = pages_heap();
    let ps = many(&heap, 100, 48);
    let slots: Vec<_> = heap.blocks().filter(|b| b.size == 48).collect();
    let cap = (64 * KIB - 8) / 48;
    assert_eq!(slots.len(), cap, "every slot of the page");
    let allocated = slots
        .iter()
        .filter(|b| b.state == BlockState::Allocated)
        .count();
    assert_eq!(allocated, 92, "the first 8 were the engine's");
    assert!(slots.windows(2).all(|w| w[1].addr == w[0].addr + 48));
    assert_eq!(
        slots[0].addr % (64 * KIB),
        0,
        "a page starts on a 64 KiB boundary"
    );
    let snap = heap.snapshot();
    assert_eq!(snap.blocks.iter().filter(|b| b.size == 48).count(), cap);
    let s = heap.stats();
    assert_eq!(s.live_blocks, 100);
    assert_eq!(s.bytes_in_use, 92 * 48 + 8 * 56);
    for p in ps {
        // SAFETY: live, freed once.
        unsafe { heap.free(p) }.unwrap();
    }
    heap.check().unwrap();
}

#[test]
fn emptied_pages_stay_as_spares_until_trimmed_and_then_go_back() {
    let heap = pages_heap();
    // A large live engine block keeps the heap from being mostly free.
    let keep = heap.alloc(100 * KIB).unwrap();
    let ps = many(&heap, 4000, 80);
    let pages_of = |heap: &Heap| heap.blocks().filter(|b| b.size == 80).count() / (65528 / 80);
    assert_eq!(pages_of(&heap), 4000 / (65528 / 80) + 1);
    for &p in &ps {
        // SAFETY: live, freed once.
        unsafe { heap.free(p) }.unwrap();
    }
    heap.check().unwrap();
    // The current page and one spare stay: refilling the class costs no carving.
    assert_eq!(pages_of(&heap), 2);
    let again = many(&heap, 100, 80);
    assert_eq!(pages_of(&heap), 2);
    for p in again {
        // SAFETY: live, freed once.
        unsafe { heap.free(p) }.unwrap();
    }
    let grown = heap.stats().managed_bytes;
    assert!(heap.trim() > 0);
    assert_eq!(pages_of(&heap), 0, "trim retires every empty page");
    assert!(heap.stats().managed_bytes < grown);
    heap.check().unwrap();
    // SAFETY: live, freed once.
    unsafe { heap.free(keep) }.unwrap();
    heap.check().unwrap();
}

#[test]
fn a_heap_emptied_of_small_blocks_gives_its_memory_back() {
    let heap = pages_heap();
    let mut rng = Rng::new(5);
    let mut ps: Vec<NonNull<u8>> = (0..100_000)
        .map(|_| heap.alloc(rng.range(1, 2049)).unwrap())
        .collect();
    let grown = heap.stats().managed_bytes;
    assert!(grown > 50 << 20, "{}", heap.stats());
    while !ps.is_empty() {
        let p = ps.swap_remove(rng.range(0, ps.len()));
        // SAFETY: live, freed once.
        unsafe { heap.free(p) }.unwrap();
    }
    heap.check().unwrap();
    let s = heap.stats();
    assert!(s.managed_bytes < 4 << 20, "without a trim: {s}");
    heap.trim();
    heap.check().unwrap();
    assert_eq!(heap.stats().managed_bytes, 16, "{}", heap.stats());
}

#[test]
fn a_bounded_heap_with_pages_fills_up_and_recovers() {
    let heap =
        Heap::with_config(HeapConfig::default().max_size(4 << 20).small_pages(true)).unwrap();
    let mut rng = Rng::new(77);
    let mut ps = Vec::new();
    loop {
        match heap.alloc(rng.range(1, 2049)) {
            Ok(p) => ps.push(p),
            Err(Error::OutOfMemory { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    heap.check().unwrap();
    let used: usize = ps.iter().map(|&p| heap.usable_size(p).unwrap()).sum();
    assert!(used > 3 << 20, "filled only {used} bytes of 4 MiB");
    for p in ps {
        // SAFETY: live, freed once.
        unsafe { heap.free(p) }.unwrap();
    }
    heap.trim();
    heap.check().unwrap();
    assert_eq!(heap.stats().live_blocks, 0);
    assert!(heap.alloc(1 << 20).is_ok());
}
