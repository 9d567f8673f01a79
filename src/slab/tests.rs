//! Small unit tests, also run under Miri (`cargo +nightly miri test --lib slab`).

use super::*;
use crate::test_rng::Rng;
use std::collections::BTreeMap;

fn addr(p: NonNull<u8>) -> usize {
    p.as_ptr().addr()
}

#[test]
fn reciprocal_division_is_exact_and_rejects_interior_offsets() {
    let step = if cfg!(miri) { 16 } else { 1 };
    for (class, &recip) in RECIP.iter().enumerate() {
        let size = slot_size(class);
        for off in (0..BATCH_SIZE).step_by(step) {
            let q = ((off as u64 * recip) >> 32) as usize;
            assert_eq!(
                q * size == off,
                off % size == 0,
                "class {class} offset {off}"
            );
            if off % size == 0 {
                assert_eq!(q, off / size);
            }
        }
    }
}

#[test]
fn classes_round_to_16_and_to_the_alignment() {
    assert_eq!(class_for(0, 1).map(slot_size), Ok(16));
    assert_eq!(class_for(1, 1).map(slot_size), Ok(16));
    assert_eq!(class_for(16, 16).map(slot_size), Ok(16));
    assert_eq!(class_for(17, 8).map(slot_size), Ok(32));
    assert_eq!(class_for(40, 64).map(slot_size), Ok(64));
    assert_eq!(class_for(65, 64).map(slot_size), Ok(128));
    assert_eq!(class_for(1, 1024).map(slot_size), Ok(1024));
    assert_eq!(class_for(1024, 1).map(slot_size), Ok(1024));
    assert!(class_for(1025, 1).is_err());
    assert!(class_for(1, 2048).is_err());
}

#[test]
fn the_seed_walkthrough() {
    let pool = SlabPool::new();
    // malloc(12), malloc(10): the first two 16-byte slots of the first batch.
    let a = pool.alloc(12).unwrap();
    let b = pool.alloc(10).unwrap();
    assert_eq!(addr(b), addr(a) + 16);
    assert_eq!(addr(a) % BATCH_SIZE, 0);
    // malloc(28): a new list of 32-byte slots with its own batch.
    let c = pool.alloc(28).unwrap();
    assert_eq!(pool.usable_size(c), Ok(32));
    let snap = pool.snapshot();
    assert_eq!((snap.lists(), snap.batches()), (2, 2));
    let text = snap.to_string();
    assert!(text.contains("list of 16-byte slots: 1 batches"), "{text}");
    assert!(text.contains("list of 32-byte slots: 1 batches"), "{text}");
    assert!(text.contains("##.."), "{text}");
    for p in [a, b, c] {
        // SAFETY: each pointer came from this pool and is freed once.
        unsafe { pool.free(p).unwrap() };
    }
    pool.check().unwrap();
}

#[test]
fn a_full_list_gets_a_new_batch() {
    let pool = SlabPool::new();
    // 1024-byte slots: 16 per batch.
    let ptrs: Vec<_> = (0..17).map(|_| pool.alloc(1000).unwrap()).collect();
    assert_eq!(pool.snapshot().batches(), 2);
    assert_ne!(addr(ptrs[16]) >> BATCH_SHIFT, addr(ptrs[0]) >> BATCH_SHIFT);
    pool.check().unwrap();
    for p in ptrs {
        // SAFETY: ours, freed once.
        unsafe { pool.free(p).unwrap() };
    }
    pool.check().unwrap();
}

#[test]
fn misuse_is_caught_exactly_and_the_pool_goes_on() {
    let pool = SlabPool::new();
    let p = pool.alloc(48).unwrap();
    let q = pool.alloc(48).unwrap();
    // SAFETY (all frees below): misuse is validated before anything is written.
    unsafe {
        let interior = p.add(16);
        assert!(matches!(
            pool.free(interior),
            Err(Error::InvalidPointer {
                reason: "points inside a slot, not at its start",
                ..
            })
        ));
        let never = p.add(48 * 5);
        assert!(matches!(
            pool.free(never),
            Err(Error::InvalidPointer {
                reason: "the slot was never handed out",
                ..
            })
        ));
        // 16384 / 48 = 341 slots; the last 16 bytes belong to no slot.
        let past = NonNull::new_unchecked(p.as_ptr().with_addr(addr(p) + 341 * 48));
        assert!(matches!(
            pool.free(past),
            Err(Error::InvalidPointer {
                reason: "points past the last slot of its batch",
                ..
            })
        ));
        let mut local = 0u64;
        let foreign = NonNull::from(&mut local).cast::<u8>();
        assert!(matches!(
            pool.free(foreign),
            Err(Error::InvalidPointer { .. })
        ));
        pool.free(p).unwrap();
        assert_eq!(pool.free(p), Err(Error::DoubleFree { addr: addr(p) }));
        assert!(matches!(
            pool.usable_size(p),
            Err(Error::InvalidPointer { .. })
        ));
    }
    assert_eq!(pool.stats().misuses_caught, 6);
    pool.check().unwrap();
    // The freed slot is reused, the live one is untouched.
    let r = pool.alloc(48).unwrap();
    assert_eq!(r, p);
    // SAFETY: ours, freed once.
    unsafe {
        pool.free(q).unwrap();
        pool.free(r).unwrap();
    }
    pool.check().unwrap();
}

#[test]
fn pointers_of_another_pool_are_foreign() {
    let a = SlabPool::new();
    let b = SlabPool::new();
    let p = a.alloc(16).unwrap();
    let _q = b.alloc(16).unwrap();
    // SAFETY: `p` is not b's; b rejects it without touching it.
    assert!(matches!(
        unsafe { b.free(p) },
        Err(Error::InvalidPointer { .. })
    ));
    // SAFETY: ours, freed once.
    unsafe { a.free(p).unwrap() };
}

#[test]
fn empty_batches_beyond_the_reserve_are_given_back() {
    let pool = SlabPool::new();
    let ptrs: Vec<_> = (0..16 * 3).map(|_| pool.alloc(1024).unwrap()).collect();
    assert_eq!(pool.stats().managed_bytes, 3 * BATCH_SIZE);
    for p in &ptrs {
        // SAFETY: ours, freed once.
        unsafe { pool.free(*p).unwrap() };
        pool.check().unwrap();
    }
    let s = pool.stats();
    assert_eq!(
        s.managed_bytes, BATCH_SIZE,
        "one empty batch kept in reserve"
    );
    assert_eq!(s.free_blocks, 16);
    assert_eq!(s.bytes_to_os as usize, 2 * BATCH_SIZE);
    // The kept batch and the reused frames serve again.
    let again: Vec<_> = (0..16 * 2).map(|_| pool.alloc(1024).unwrap()).collect();
    pool.check().unwrap();
    for p in again {
        // SAFETY: ours, freed once.
        unsafe { pool.free(p).unwrap() };
    }
    pool.check().unwrap();
}

#[test]
fn alignment_is_honoured_or_refused() {
    let pool = SlabPool::new();
    let served = [
        (1, 32, 32),
        (40, 64, 64),
        (100, 256, 256),
        (600, 512, 1024),
        (1, 1024, 1024),
    ];
    for (size, align, slot) in served {
        let p = pool
            .alloc_layout(Layout::from_size_align(size, align).unwrap())
            .unwrap();
        assert_eq!(addr(p) % align, 0);
        assert_eq!(pool.usable_size(p), Ok(slot));
        // SAFETY: ours, freed once.
        unsafe { pool.free(p).unwrap() };
    }
    let refused = [(8, 2048), (1025, 8), (1, 4096)];
    for (size, align) in refused {
        let l = Layout::from_size_align(size, align).unwrap();
        assert!(
            matches!(pool.alloc_layout(l), Err(Error::InvalidLayout { .. })),
            "{l:?}"
        );
    }
    assert_eq!(pool.stats().failed_requests, 3);
    pool.check().unwrap();
}

#[test]
fn region_capacity_runs_out_cleanly() {
    let pool = SlabPool::with_capacity(2 * BATCH_SIZE);
    let a: Vec<_> = (0..32).map(|_| pool.alloc(1024).unwrap()).collect();
    assert!(matches!(pool.alloc(1024), Err(Error::OutOfMemory { .. })));
    assert!(matches!(pool.alloc(16), Err(Error::OutOfMemory { .. })));
    assert_eq!(pool.stats().failed_requests, 2);
    pool.check().unwrap();
    // SAFETY: ours, freed once.
    unsafe { pool.free(a[0]).unwrap() };
    assert!(pool.alloc(1024).is_ok());
}

#[test]
fn batches_from_an_allocator() {
    let pool = SlabPool::new_in(Global);
    let p = pool.alloc(200).unwrap();
    assert_eq!(addr(p) % BATCH_SIZE, 0);
    // SAFETY: ours; 208 bytes are usable.
    unsafe { p.as_ptr().write_bytes(0xAB, 208) };
    // SAFETY: ours, freed once.
    unsafe { pool.free(p).unwrap() };
    // SAFETY: misuse is caught.
    assert!(matches!(
        unsafe { pool.free(p) },
        Err(Error::DoubleFree { .. })
    ));
    pool.check().unwrap();
}

/// A source that refuses alignments above `max`, like allocators with an alignment limit.
struct Limited {
    max: usize,
    live: core::cell::Cell<usize>,
}

// SAFETY: forwards to Global, which upholds the contract, after refusing some layouts.
unsafe impl Allocator for Limited {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.align() > self.max {
            return Err(AllocError);
        }
        self.live.set(self.live.get() + 1);
        Global.allocate(layout)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        self.live.set(self.live.get() - 1);
        // SAFETY: `ptr` came from `Global.allocate(layout)` in `allocate`.
        unsafe { Global.deallocate(ptr, layout) }
    }
}

#[test]
fn sources_with_small_alignment_limits_still_give_aligned_batches() {
    for max in [16, 4096] {
        let src = Limited {
            max,
            live: core::cell::Cell::new(0),
        };
        {
            let pool = SlabPool::new_in(&src);
            let ptrs: Vec<_> = (0..40).map(|_| pool.alloc(1024).unwrap()).collect();
            assert_eq!(src.live.get(), 3);
            for p in &ptrs {
                // SAFETY: each slot is 1024 bytes and ours.
                unsafe { p.as_ptr().write_bytes(0x5A, 1024) };
            }
            pool.check().unwrap();
            for p in ptrs {
                // SAFETY: ours, freed once.
                unsafe { pool.free(p).unwrap() };
            }
            assert_eq!(src.live.get(), 1, "one empty batch kept");
            pool.check().unwrap();
        }
        assert_eq!(src.live.get(), 0, "drop gives the rest back");
    }
}

#[test]
fn vec_and_box_live_in_the_pool() {
    let pool = SlabPool::new();
    let mut v = allocator_api2::vec::Vec::new_in(&pool);
    for i in 0..200u32 {
        v.push(i);
    }
    assert_eq!(v.iter().sum::<u32>(), 199 * 100);
    assert!(v.capacity() * 4 <= SlabPool::MAX_SIZE);
    assert!(pool.stats().reallocations >= 1);
    v.shrink_to_fit();
    assert_eq!(v.len(), 200);
    drop(v);
    let b = allocator_api2::boxed::Box::new_in([7u8; 100], &pool);
    assert_eq!(b[99], 7);
    drop(b);
    // Zero-sized values never reach the bitmaps.
    let z = allocator_api2::boxed::Box::new_in((), &pool);
    drop(z);
    assert_eq!(pool.stats().live_blocks, 0);
    pool.check().unwrap();
}

#[test]
fn grow_and_shrink_stay_in_place_within_a_slot() {
    let pool = SlabPool::new();
    let a = &pool;
    let l20 = Layout::from_size_align(20, 4).unwrap();
    let l30 = Layout::from_size_align(30, 4).unwrap();
    let l40 = Layout::from_size_align(40, 4).unwrap();
    let l8 = Layout::from_size_align(8, 4).unwrap();
    let p = a.allocate(l20).unwrap();
    assert_eq!(p.len(), 32);
    let p = p.cast::<u8>();
    // SAFETY: 20 bytes of the block are ours.
    unsafe { p.as_ptr().write_bytes(9, 20) };
    // SAFETY (grow/shrink below): each block is live with the layout passed as old.
    let q = unsafe { a.grow_zeroed(p, l20, l30) }.unwrap();
    assert_eq!(q.cast::<u8>(), p);
    // SAFETY: the returned block is 32 bytes; bytes past the old size were zeroed.
    let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), 32) };
    assert!(bytes[..20].iter().all(|&b| b == 9) && bytes[20..].iter().all(|&b| b == 0));
    assert_eq!(pool.stats().reallocations_in_place, 1);
    // SAFETY: `p` is live with layout `l30`.
    let r = unsafe { a.grow(p, l30, l40) }.unwrap().cast::<u8>();
    assert_ne!(r, p, "40 bytes need the 48-byte class");
    assert_eq!(pool.usable_size(r), Ok(48));
    // SAFETY: 20 bytes were copied.
    assert_eq!(unsafe { r.as_ptr().add(19).read() }, 9);
    // SAFETY: `r` is live with layout `l40`.
    let t = unsafe { a.shrink(r, l40, l8) }.unwrap().cast::<u8>();
    assert_eq!(pool.usable_size(t), Ok(16));
    // SAFETY: `t` is a live 16-byte slot whose first byte was copied.
    assert_eq!(unsafe { t.as_ptr().read() }, 9);
    // SAFETY: `t` is live with layout `l8`.
    let z = unsafe { a.shrink(t, l8, Layout::from_size_align(0, 4).unwrap()) }.unwrap();
    assert_eq!(z.len(), 0);
    let s = pool.stats();
    assert_eq!(
        (s.live_blocks, s.reallocations, s.reallocations_in_place),
        (0, 3, 1)
    );
    pool.check().unwrap();
}

#[test]
fn clear_returns_everything() {
    let mut pool = SlabPool::new_in(Global);
    for size in [16, 100, 1000] {
        pool.alloc(size).unwrap();
    }
    pool.clear();
    let s = pool.stats();
    assert_eq!((s.live_blocks, s.managed_bytes, s.free_blocks), (0, 0, 0));
    assert_eq!(pool.snapshot().batches(), 0);
    pool.check().unwrap();
    let p = pool.alloc(100).unwrap();
    pool.check().unwrap();
    // SAFETY: ours, freed once.
    unsafe { pool.free(p).unwrap() };
}

#[test]
fn small_model_with_check_after_every_op() {
    let mut rng = Rng::new(0x51ab);
    let pool = SlabPool::new();
    let mut live: BTreeMap<usize, (NonNull<u8>, usize, u8)> = BTreeMap::new();
    let ops = if cfg!(miri) { 25 } else { 5_000 };
    for _ in 0..ops {
        if live.is_empty() || rng.chance(3, 5) {
            let size = rng.range(0, 1025);
            let p = pool.alloc(size).unwrap();
            let usable = pool.usable_size(p).unwrap();
            assert!(usable >= size && usable % 16 == 0);
            let a = addr(p);
            if let Some((&lo, &(_, lsize, _))) = live.range(..a).next_back() {
                assert!(lo + lsize <= a, "overlap below");
            }
            if let Some((&hi, _)) = live.range(a..).next() {
                assert!(a + usable <= hi, "overlap above");
            }
            let tag = rng.byte();
            // SAFETY: the slot is ours and `usable` bytes long.
            unsafe { p.as_ptr().write_bytes(tag, usable) };
            live.insert(a, (p, usable, tag));
        } else {
            let k = *live.keys().nth(rng.range(0, live.len())).unwrap();
            let (p, usable, tag) = live.remove(&k).unwrap();
            // SAFETY: the slot is live and `usable` bytes long.
            let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), usable) };
            assert!(bytes.iter().all(|&b| b == tag));
            // SAFETY: ours, freed once.
            unsafe { pool.free(p).unwrap() };
        }
        pool.check().unwrap();
        let s = pool.stats();
        assert_eq!(s.live_blocks, live.len());
        assert_eq!(s.bytes_in_use, live.values().map(|v| v.1).sum::<usize>());
    }
}
