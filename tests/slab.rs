//! Heavier SlabPool tests: a model-based randomized test against a map of live slots, misuse
//! detection, alignment, collections living in the pool, clear and give-back.

#[path = "../src/test_rng.rs"]
mod test_rng;

use std::collections::BTreeMap;
use std::ptr::NonNull;

use allocator_api2::alloc::{Allocator, Global, Layout};
use strata_alloc::{Arena, Error, Heap, SlabPool};
use test_rng::Rng;

const BATCH: usize = SlabPool::BATCH_SIZE;

fn addr(p: NonNull<u8>) -> usize {
    p.as_ptr() as usize
}

/// A live slot in the model: its pointer, usable size and the pattern seed written into it.
#[derive(Clone, Copy)]
struct Slot {
    ptr: NonNull<u8>,
    usable: usize,
    tag: u8,
    /// The op that allocated it.
    born: usize,
}

fn fill(s: &Slot) {
    for i in 0..s.usable {
        // SAFETY: the slot is live and `usable` bytes long.
        unsafe { s.ptr.as_ptr().add(i).write(s.tag.wrapping_add(i as u8)) };
    }
}

fn verify(s: &Slot) {
    for i in 0..s.usable {
        // SAFETY: the slot is live and `usable` bytes long.
        let b = unsafe { s.ptr.as_ptr().add(i).read() };
        assert_eq!(
            b,
            s.tag.wrapping_add(i as u8),
            "slot {:#x} byte {i}",
            addr(s.ptr)
        );
    }
}

/// Random alloc / free / misuse against a model of live slots, `check()` after every op.
fn run_model<A: Allocator>(pool: &SlabPool<A>, seed: u64, ops: usize) {
    let mut rng = Rng::new(seed);
    let mut live: BTreeMap<usize, Slot> = BTreeMap::new();
    // Recently freed addresses (and the op that freed them) that are not live again:
    // double-free candidates.
    let mut freed: Vec<(usize, usize)> = Vec::new();
    let (mut allocs, mut frees, mut misuses) = (0u64, 0u64, 0u64);
    // Phases: grow for a while, then shrink, so batches fill up and get given back.
    for op in 0..ops {
        let growing = (op / 2000) % 2 == 0;
        let roll = rng.range(0, 100);
        if live.is_empty() || roll < if growing { 60 } else { 35 } {
            let size = match rng.range(0, 4) {
                0 => rng.range(0, 33),
                1 => rng.range(0, 257),
                _ => rng.range(0, SlabPool::MAX_SIZE + 1),
            };
            let align = 1usize << rng.range(0, 11);
            let layout = Layout::from_size_align(size, align).unwrap();
            let p = match pool.alloc_layout(layout) {
                Ok(p) => p,
                Err(Error::InvalidLayout { .. }) => {
                    // Only when the size rounded up to the alignment passes the largest slot.
                    assert!(size.max(1).next_multiple_of(align.max(16)) > SlabPool::MAX_SIZE);
                    continue;
                }
                Err(e) => panic!("unexpected {e}"),
            };
            allocs += 1;
            let usable = pool.usable_size(p).unwrap();
            assert!(usable >= size && usable % 16 == 0 && usable <= SlabPool::MAX_SIZE);
            assert_eq!(addr(p) % align.max(16), 0, "misaligned for {layout:?}");
            let a = addr(p);
            if let Some((&lo, s)) = live.range(..a).next_back() {
                assert!(lo + s.usable <= a, "overlaps the slot below");
            }
            if let Some((&hi, _)) = live.range(a..).next() {
                assert!(a + usable <= hi, "overlaps the slot above");
            }
            freed.retain(|&(f, _)| f != a);
            let slot = Slot {
                ptr: p,
                usable,
                tag: rng.byte(),
                born: op,
            };
            fill(&slot);
            live.insert(a, slot);
        } else if roll < 92 {
            let k = *live.keys().nth(rng.range(0, live.len())).unwrap();
            let slot = live.remove(&k).unwrap();
            verify(&slot);
            // SAFETY: the slot is live, ours, and not used after this.
            unsafe { pool.free(slot.ptr) }.unwrap();
            frees += 1;
            freed.push((k, op));
            if freed.len() > 64 {
                freed.remove(0);
            }
        } else if roll < 96 && !freed.is_empty() {
            // Double free: exactly DoubleFree when a slot allocated before the free is still
            // live in the same batch frame (the batch then never emptied, so it is the same
            // batch); otherwise the batch may have been given back, or even replaced by a new
            // batch at the same address, and InvalidPointer is allowed too.
            let (f, freed_at) = freed[rng.range(0, freed.len())];
            let p = NonNull::new(f as *mut u8).unwrap();
            // SAFETY: `f` is not live; the pool rejects it without touching memory.
            let err = unsafe { pool.free(p) }.unwrap_err();
            let batch_held = live
                .iter()
                .any(|(&k, s)| k / BATCH == f / BATCH && s.born < freed_at);
            if batch_held {
                assert_eq!(err, Error::DoubleFree { addr: f });
            } else {
                assert!(matches!(
                    err,
                    Error::DoubleFree { .. } | Error::InvalidPointer { .. }
                ));
            }
            misuses += 1;
        } else if !live.is_empty() {
            // Interior pointer into a live slot: rejected, the slot untouched.
            let k = *live.keys().nth(rng.range(0, live.len())).unwrap();
            let slot = live[&k];
            let off = rng.range(1, slot.usable);
            let p = NonNull::new((k + off) as *mut u8).unwrap();
            // SAFETY: not the start of a slot; rejected without effect.
            let err = unsafe { pool.free(p) }.unwrap_err();
            assert!(matches!(err, Error::InvalidPointer { .. }), "{err}");
            verify(&slot);
            misuses += 1;
        }
        pool.check()
            .unwrap_or_else(|e| panic!("op {op}: {e}\n{}", pool.snapshot()));
        let s = pool.stats();
        assert_eq!(s.live_blocks, live.len());
        assert_eq!(
            s.bytes_in_use,
            live.values().map(|s| s.usable).sum::<usize>()
        );
        assert_eq!(
            (s.allocations, s.frees, s.misuses_caught),
            (allocs, frees, misuses)
        );
        // All memory accounted for: slots in use + free slots fit the batches, and the waste is
        // less than one slot per batch.
        assert_eq!(s.managed_bytes % BATCH, 0);
        let batches = s.managed_bytes / BATCH;
        assert!(s.bytes_in_use + s.free_bytes <= s.managed_bytes);
        assert!(s.managed_bytes - s.bytes_in_use - s.free_bytes < batches * SlabPool::MAX_SIZE);
    }
    assert!(
        misuses > ops as u64 / 50,
        "the model exercised misuse: {misuses}"
    );
    for slot in live.values() {
        verify(slot);
        // SAFETY: the slot is live, ours, and not used after this.
        unsafe { pool.free(slot.ptr) }.unwrap();
    }
    pool.check().unwrap();
    let s = pool.stats();
    assert_eq!((s.live_blocks, s.bytes_in_use), (0, 0));
    // Everything empty: at most the one reserve batch per size class is kept.
    assert!(s.managed_bytes <= 64 * BATCH, "{s}");
    assert_eq!(s.managed_bytes, pool.snapshot().batches() * BATCH);
}

#[test]
fn model_region_backed() {
    for seed in 1..=3 {
        let pool = SlabPool::new();
        run_model(&pool, seed, 20_000);
    }
}

#[test]
fn model_allocator_backed() {
    let pool = SlabPool::new_in(Global);
    run_model(&pool, 99, 20_000);
}

#[test]
fn model_heap_backed() {
    // The Heap serves alignments up to 4096, so batches are carved from larger blocks.
    let heap = Heap::new().unwrap();
    {
        let pool = SlabPool::new_in(&heap);
        run_model(&pool, 7, 10_000);
    }
    heap.check().unwrap();
    assert_eq!(
        heap.stats().live_blocks,
        0,
        "every batch went back to the heap"
    );
}

#[test]
fn arena_backed_pool_runs_out_cleanly() {
    let arena = Arena::with_capacity(256 * 1024).unwrap();
    let pool = SlabPool::new_in(&arena);
    let mut held = Vec::new();
    let err = loop {
        match pool.alloc(1024) {
            Ok(p) => held.push(p),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
    assert!(held.len() >= 16 * 4, "{} slots", held.len());
    pool.check().unwrap();
    for p in held {
        // SAFETY: ours, freed once.
        unsafe { pool.free(p).unwrap() };
    }
    pool.check().unwrap();
    assert!(pool.alloc(1024).is_ok(), "usable again after the error");
}

#[test]
fn double_free_is_caught_and_the_pool_goes_on() {
    let pool = SlabPool::new();
    let keep = pool.alloc(64).unwrap();
    let p = pool.alloc(64).unwrap();
    // SAFETY: ours, freed once.
    unsafe { pool.free(p).unwrap() };
    for _ in 0..2 {
        // SAFETY: a double free is rejected before anything is written.
        let err = unsafe { pool.free(p) };
        assert_eq!(err, Err(Error::DoubleFree { addr: addr(p) }));
    }
    assert_eq!(pool.stats().misuses_caught, 2);
    assert_eq!(pool.stats().frees, 1);
    pool.check().unwrap();
    // The slot is handed out again, once.
    let q = pool.alloc(64).unwrap();
    assert_eq!(q, p);
    let r = pool.alloc(64).unwrap();
    assert_ne!(r, q);
    // SAFETY: ours, freed once each.
    unsafe {
        pool.free(q).unwrap();
        pool.free(r).unwrap();
        pool.free(keep).unwrap();
    }
    pool.check().unwrap();
}

#[test]
fn foreign_pointers_are_invalid() {
    let pool = SlabPool::new();
    let live = pool.alloc(32).unwrap();
    let boxed = Box::new([0u8; 64]);
    let heap = NonNull::from(&boxed[0]);
    let mut local = [0u8; 16];
    let stack = NonNull::from(&mut local[0]);
    for p in [
        heap,
        stack,
        NonNull::new(0xDEAD_BEEF as *mut u8).unwrap(),
        NonNull::new(16 as *mut u8).unwrap(),
        NonNull::new(usize::MAX as *mut u8).unwrap(),
    ] {
        // SAFETY: foreign pointers are rejected without being read or written.
        let err = unsafe { pool.free(p) }.unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidPointer {
                    reason: "not inside any batch of this pool",
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            pool.usable_size(p),
            Err(Error::InvalidPointer { .. })
        ));
    }
    assert_eq!(boxed[0], 0);
    assert_eq!(local[0], 0);
    assert_eq!(pool.usable_size(live), Ok(32));
    pool.check().unwrap();
    // SAFETY: ours, freed once.
    unsafe { pool.free(live).unwrap() };
}

#[test]
fn interior_pointers_are_invalid_at_every_offset() {
    let pool = SlabPool::new();
    for size in [16, 48, 336, 1024] {
        let p = pool.alloc(size).unwrap();
        for off in 1..size {
            let q = NonNull::new((addr(p) + off) as *mut u8).unwrap();
            // SAFETY: an interior pointer is rejected without effect.
            let err = unsafe { pool.free(q) }.unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidPointer {
                        reason: "points inside a slot, not at its start",
                        ..
                    }
                ),
                "size {size} offset {off}: {err}"
            );
        }
        assert_eq!(pool.usable_size(p), Ok(size));
        // SAFETY: ours, freed once.
        unsafe { pool.free(p).unwrap() };
        pool.check().unwrap();
    }
}

#[test]
fn every_alignment_and_size_combination() {
    let pool = SlabPool::new();
    let mut held = Vec::new();
    for shift in 0..=12 {
        let align = 1usize << shift;
        for size in [0, 1, 15, 16, 17, 100, 511, 512, 513, 1000, 1024, 1025] {
            let layout = Layout::from_size_align(size, align).unwrap();
            let want = size.max(1).next_multiple_of(align.max(16));
            match pool.alloc_layout(layout) {
                Ok(p) => {
                    assert!(want <= SlabPool::MAX_SIZE, "{layout:?} should be refused");
                    assert_eq!(addr(p) % align, 0);
                    assert_eq!(pool.usable_size(p), Ok(want), "{layout:?}");
                    held.push(p);
                }
                Err(Error::InvalidLayout {
                    size: s, align: a, ..
                }) => {
                    assert!(want > SlabPool::MAX_SIZE, "{layout:?} should be served");
                    assert_eq!(s, size);
                    assert!(a == align || align <= 16);
                }
                Err(e) => panic!("{layout:?}: {e}"),
            }
        }
    }
    pool.check().unwrap();
    for p in held {
        // SAFETY: ours, freed once.
        unsafe { pool.free(p).unwrap() };
    }
    pool.check().unwrap();
}

#[test]
fn allocator_trait_refuses_what_it_cannot_serve() {
    let pool = SlabPool::new();
    let a = &pool;
    assert!(
        a.allocate(Layout::from_size_align(1025, 8).unwrap())
            .is_err()
    );
    assert!(
        a.allocate(Layout::from_size_align(64, 2048).unwrap())
            .is_err()
    );
    let z = a
        .allocate(Layout::from_size_align(0, 256).unwrap())
        .unwrap();
    assert_eq!((z.len(), z.cast::<u8>().as_ptr() as usize % 256), (0, 0));
    // SAFETY: zero-sized blocks are never freed for real; this is a no-op.
    unsafe { a.deallocate(z.cast(), Layout::from_size_align(0, 256).unwrap()) };
    let p = a
        .allocate_zeroed(Layout::from_size_align(100, 32).unwrap())
        .unwrap();
    assert_eq!(p.len(), 128);
    // SAFETY: a fresh, zeroed block of p.len() bytes.
    assert!(unsafe { p.as_ref() }.iter().all(|&b| b == 0));
    // SAFETY: ours, freed once with its layout.
    unsafe { a.deallocate(p.cast(), Layout::from_size_align(100, 32).unwrap()) };
    assert_eq!(pool.stats().live_blocks, 0);
    assert_eq!(pool.stats().failed_requests, 2);
}

#[test]
fn vec_and_hashmap_live_in_the_pool() {
    let pool = SlabPool::new();
    {
        let mut v: allocator_api2::vec::Vec<u64, &SlabPool> =
            allocator_api2::vec::Vec::new_in(&pool);
        v.extend(0..100u64);
        assert_eq!(v.iter().sum::<u64>(), 4950);
        let mut map = hashbrown::HashMap::new_in(&pool);
        for i in 0..40u32 {
            map.insert(i, i * 3);
        }
        for i in (0..40u32).step_by(2) {
            map.remove(&i);
        }
        assert_eq!(map.len(), 20);
        assert_eq!(map.get(&7), Some(&21));
        assert!(pool.stats().live_blocks >= 2);
        pool.check().unwrap();
    }
    assert_eq!(pool.stats().live_blocks, 0);
    pool.check().unwrap();
}

#[test]
fn clear_gives_everything_back_and_starts_over() {
    for backed_by_global in [false, true] {
        let check_clear = |pool: &mut SlabPool<Global>| {
            let _: Vec<_> = (0..500)
                .map(|i| pool.alloc(1 + i % 1024).unwrap())
                .collect();
            assert!(pool.stats().managed_bytes > 10 * BATCH);
            let allocs = pool.stats().allocations;
            pool.clear();
            let s = pool.stats();
            assert_eq!((s.live_blocks, s.bytes_in_use, s.managed_bytes), (0, 0, 0));
            assert_eq!((s.free_blocks, s.free_bytes), (0, 0));
            assert_eq!(s.allocations, allocs, "cumulative counters survive clear");
            assert_eq!(pool.snapshot().lists(), 0);
            pool.check().unwrap();
            let p = pool.alloc(77).unwrap();
            pool.check().unwrap();
            // SAFETY: ours, freed once.
            unsafe { pool.free(p).unwrap() };
        };
        let mut pool = if backed_by_global {
            SlabPool::new_in(Global)
        } else {
            SlabPool::new()
        };
        check_clear(&mut pool);
        check_clear(&mut pool);
    }
}

#[test]
fn batches_are_given_back_beyond_one_per_size() {
    let pool = SlabPool::new();
    // 64-byte slots: 256 per batch; 10 batches' worth.
    let ptrs: Vec<_> = (0..2560).map(|_| pool.alloc(64).unwrap()).collect();
    assert_eq!(pool.stats().managed_bytes, 10 * BATCH);
    let before = pool.stats().bytes_to_os;
    for (i, p) in ptrs.iter().enumerate() {
        // SAFETY: ours, freed once.
        unsafe { pool.free(*p).unwrap() };
        if i % 97 == 0 {
            pool.check().unwrap();
        }
    }
    let s = pool.stats();
    assert_eq!(s.managed_bytes, BATCH, "one empty batch is kept in reserve");
    assert_eq!(s.bytes_to_os - before, 9 * BATCH as u64);
    // A slot of a batch given back is no longer the pool's: a second free is rejected too.
    // SAFETY: rejected without effect.
    let err = unsafe { pool.free(ptrs[0]) }.unwrap_err();
    assert!(err.is_misuse());
    // An alloc/free pair on the boundary does not thrash.
    let given_back = pool.stats().bytes_to_os;
    for _ in 0..1000 {
        let p = pool.alloc(64).unwrap();
        // SAFETY: ours, freed once.
        unsafe { pool.free(p).unwrap() };
    }
    assert_eq!(pool.stats().bytes_to_os, given_back);
    pool.check().unwrap();
}

#[test]
fn snapshot_lists_sizes_in_first_request_order() {
    let pool = SlabPool::new();
    let a = pool.alloc(500).unwrap();
    let b = pool.alloc(16).unwrap();
    let c = pool.alloc(17).unwrap();
    let text = pool.snapshot().to_string();
    let pos = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle} in {text}"))
    };
    assert!(pos("list of 512-byte slots") < pos("list of 16-byte slots"));
    assert!(pos("list of 16-byte slots") < pos("list of 32-byte slots"));
    assert!(text.contains("32 slots, 1 used, 31 free"), "{text}");
    assert!(text.contains("64..1023: all free"), "{text}");
    // SAFETY: ours, freed once each.
    unsafe {
        pool.free(a).unwrap();
        pool.free(b).unwrap();
        pool.free(c).unwrap();
    }
}

#[test]
fn the_pool_can_move_to_another_thread() {
    let pool = SlabPool::new();
    let p = pool.alloc(100).unwrap().as_ptr() as usize;
    let pool = std::thread::spawn(move || {
        // SAFETY: the slot is live and owned by the moved pool.
        unsafe { pool.free(NonNull::new(p as *mut u8).unwrap()).unwrap() };
        pool
    })
    .join()
    .unwrap();
    assert_eq!(pool.stats().live_blocks, 0);
}
