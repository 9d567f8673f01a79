//! Arena behaviour through its public API: a model-based randomized test, every misuse case,
//! and collections living in the arena.

#[path = "../src/test_rng.rs"]
mod test_rng;

use core::alloc::Layout;
use core::ptr::NonNull;
use std::collections::BTreeMap;

use allocator_api2::alloc::Allocator;
use allocator_api2::boxed::Box;
use allocator_api2::vec::Vec;
use strata_alloc::{Arena, BlockState, Error};
use test_rng::Rng;

/// A live block in the model: where it is, how many bytes we own, and the seed of its pattern.
#[derive(Clone, Copy)]
struct Live {
    ptr: NonNull<u8>,
    len: usize,
    seed: u8,
}

fn pattern(seed: u8, i: usize) -> u8 {
    seed.wrapping_add((i as u8).wrapping_mul(31))
}

fn write_pattern(b: Live) {
    for i in 0..b.len {
        // SAFETY: `b` is a live block of at least `b.len` bytes.
        unsafe { b.ptr.as_ptr().add(i).write(pattern(b.seed, i)) };
    }
}

fn assert_pattern(b: Live, len: usize, what: &str) {
    for i in 0..len {
        // SAFETY: `b` is live with at least `len` bytes.
        let got = unsafe { b.ptr.as_ptr().add(i).read() };
        assert_eq!(got, pattern(b.seed, i), "{what}: byte {i} of {:p}", b.ptr);
    }
}

fn assert_disjoint(live: &BTreeMap<usize, Live>, arena: &Arena) {
    let mut end = 0;
    for (&addr, b) in live {
        assert!(addr >= end, "blocks overlap at {addr:#x}");
        let usable = arena.usable_size(b.ptr).unwrap();
        assert!(usable >= b.len);
        end = addr + usable;
    }
}

#[test]
fn model_based_random_operations() {
    let arena = Arena::with_capacity(256 * 1024).unwrap();
    let mut rng = Rng::new(0xA2E7A);
    let mut live: BTreeMap<usize, Live> = BTreeMap::new();
    let mut keys: std::vec::Vec<usize> = std::vec::Vec::new();
    let ops = 120_000;
    let (mut allocs, mut frees, mut reallocs, mut ooms) = (0u64, 0u64, 0u64, 0u64);
    for step in 0..ops {
        let roll = rng.range(0, 100);
        if roll < 45 || keys.is_empty() {
            // Mixed sizes: mostly small, some medium, a few large.
            let len = match rng.range(0, 10) {
                0..=6 => rng.range(1, 256),
                7 | 8 => rng.range(256, 4096),
                _ => rng.range(4096, 40_000),
            };
            let zeroed = rng.chance(1, 10);
            let r = if zeroed {
                arena.calloc(len, 1)
            } else if rng.chance(1, 10) {
                let align = 1 << rng.range(4, 13);
                arena.alloc_layout(Layout::from_size_align(len, align).unwrap())
            } else {
                arena.alloc(len)
            };
            match r {
                Ok(ptr) => {
                    if zeroed {
                        // SAFETY: `len` bytes were just allocated.
                        let bytes = unsafe { core::slice::from_raw_parts(ptr.as_ptr(), len) };
                        assert!(
                            bytes.iter().all(|&x| x == 0),
                            "step {step}: calloc not zeroed"
                        );
                    }
                    let b = Live {
                        ptr,
                        len,
                        seed: rng.byte(),
                    };
                    write_pattern(b);
                    assert!(live.insert(ptr.as_ptr() as usize, b).is_none());
                    keys.push(ptr.as_ptr() as usize);
                    allocs += 1;
                }
                Err(Error::OutOfMemory { .. }) => ooms += 1,
                Err(e) => panic!("step {step}: unexpected {e}"),
            }
        } else if roll < 80 {
            let k = keys.swap_remove(rng.range(0, keys.len()));
            let b = live.remove(&k).unwrap();
            assert_pattern(b, b.len, "before free");
            // SAFETY: `b` is live and forgotten by the model.
            unsafe { arena.free(b.ptr) }.unwrap();
            frees += 1;
        } else {
            let idx = rng.range(0, keys.len());
            let k = keys[idx];
            let b = live[&k];
            let new_len = if rng.chance(1, 2) {
                rng.range(1, b.len.max(2))
            } else {
                rng.range(b.len, b.len * 3 + 64)
            };
            // SAFETY: `b` is live; on success we switch to the returned pointer.
            match unsafe { arena.realloc(b.ptr, new_len) } {
                Ok(ptr) => {
                    let moved = Live { ptr, ..b };
                    assert_pattern(moved, b.len.min(new_len), "after realloc");
                    let nb = Live {
                        ptr,
                        len: new_len,
                        seed: b.seed,
                    };
                    write_pattern(nb);
                    live.remove(&k);
                    live.insert(ptr.as_ptr() as usize, nb);
                    keys[idx] = ptr.as_ptr() as usize;
                    reallocs += 1;
                }
                Err(Error::OutOfMemory { .. }) => {
                    assert_pattern(b, b.len, "after failed realloc");
                    ooms += 1;
                }
                Err(e) => panic!("step {step}: unexpected {e}"),
            }
        }
        // A temporary buffer, freed before the next operation.
        if rng.chance(1, 4) {
            let len = rng.range(1, 600);
            if let Ok(ptr) = arena.alloc(len) {
                let t = Live {
                    ptr,
                    len,
                    seed: rng.byte(),
                };
                write_pattern(t);
                assert_eq!(arena.stats().live_blocks, live.len() + 1);
                assert_pattern(t, len, "temporary");
                // SAFETY: `t` is live and not used after this.
                unsafe { arena.free(ptr) }.unwrap();
            }
        }
        if step % 16 == 0 {
            assert_eq!(arena.stats().live_blocks, live.len(), "step {step}");
            arena.check().unwrap_or_else(|e| panic!("step {step}: {e}"));
        }
        if step % 4096 == 0 {
            assert_disjoint(&live, &arena);
        }
    }
    assert!(
        ooms > 0,
        "the test should reach the arena's limit sometimes"
    );
    assert!(allocs > 40_000 && frees > 30_000 && reallocs > 15_000);
    assert_disjoint(&live, &arena);
    let s = arena.stats();
    assert_eq!(s.live_blocks, live.len());
    let in_use: usize = live
        .values()
        .map(|b| arena.usable_size(b.ptr).unwrap())
        .sum();
    assert_eq!(s.bytes_in_use, in_use);
    // Every byte accounted for: headers + usable bytes + free bytes tile the arena.
    let walked: usize = arena.blocks().map(|b| b.size).sum();
    assert_eq!(walked + 16, arena.capacity());
    assert_eq!(
        s.bytes_in_use + 8 * s.live_blocks + s.free_bytes + 16,
        arena.capacity()
    );
    for b in live.values() {
        assert_pattern(*b, b.len, "at the end");
        // SAFETY: live, freed once.
        unsafe { arena.free(b.ptr) }.unwrap();
    }
    arena.check().unwrap();
    let s = arena.stats();
    assert_eq!((s.live_blocks, s.bytes_in_use), (0, 0));
    assert_eq!(s.free_bytes, arena.capacity() - 16);
    // Everything merges back: one request can take the whole arena.
    let all = arena.alloc(arena.capacity() - 24).unwrap();
    arena.check().unwrap();
    assert_eq!(arena.stats().free_blocks, 0);
    // SAFETY: live, freed once.
    unsafe { arena.free(all) }.unwrap();
}

#[test]
fn double_free_is_reported_and_the_arena_keeps_working() {
    let arena = Arena::new().unwrap();
    let a = arena.alloc(100).unwrap();
    let b = arena.alloc(100).unwrap();
    // SAFETY: live block, freed once.
    unsafe { arena.free(a) }.unwrap();
    // SAFETY: the arena validates; this is the misuse under test.
    let err = unsafe { arena.free(a) }.unwrap_err();
    assert_eq!(
        err,
        Error::DoubleFree {
            addr: a.as_ptr() as usize
        }
    );
    // After the freed block merged with a neighbour, it is still a double free.
    // SAFETY: live block, freed once.
    unsafe { arena.free(b) }.unwrap();
    // SAFETY: misuse under test.
    assert!(matches!(
        unsafe { arena.free(b) },
        Err(Error::DoubleFree { .. })
    ));
    assert_eq!(arena.stats().misuses_caught, 2);
    arena.check().unwrap();
    assert!(arena.alloc(60_000).is_ok());
}

#[test]
fn foreign_interior_and_misaligned_pointers_are_rejected() {
    let arena = Arena::new().unwrap();
    let other = Arena::new().unwrap();
    let a = arena.alloc(256).unwrap();
    // SAFETY: `a` has 256 bytes.
    unsafe { a.as_ptr().write_bytes(0x5A, 256) };
    let foreign = other.alloc(256).unwrap();
    let mut on_stack = [0u8; 64];
    let cases = [
        (foreign, "another arena's block"),
        (NonNull::new(on_stack.as_mut_ptr()).unwrap(), "the stack"),
        // SAFETY (all below): offsets stay inside `a`'s 256 bytes.
        (unsafe { a.add(64) }, "interior, aligned"),
        (unsafe { a.add(1) }, "interior, misaligned"),
        (NonNull::new(0x10 as *mut u8).unwrap(), "a small address"),
    ];
    for (p, what) in cases {
        // SAFETY: the arena validates every pointer before acting.
        let err = unsafe { arena.free(p) }.unwrap_err();
        assert!(
            matches!(err, Error::InvalidPointer { .. }),
            "{what}: got {err}"
        );
        // SAFETY: as above.
        assert!(unsafe { arena.realloc(p, 10) }.is_err(), "{what}");
        assert!(arena.usable_size(p).is_err(), "{what}");
    }
    // Nothing was written anywhere.
    // SAFETY: `a` is live.
    let bytes = unsafe { core::slice::from_raw_parts(a.as_ptr(), 256) };
    assert!(bytes.iter().all(|&b| b == 0x5A));
    assert!(on_stack.iter().all(|&b| b == 0));
    arena.check().unwrap();
    other.check().unwrap();
    // SAFETY: live block, freed once.
    unsafe { arena.free(a) }.unwrap();
}

#[test]
fn an_overflow_is_reported_as_corruption_and_nothing_else_is_lost() {
    let arena = Arena::new().unwrap();
    let keep = arena.alloc(64).unwrap();
    // SAFETY: 64 bytes are ours.
    unsafe { keep.as_ptr().write_bytes(0x77, 64) };
    let victim_owner = arena.alloc(40).unwrap();
    let victim = arena.alloc(40).unwrap();
    let usable = arena.usable_size(victim_owner).unwrap();
    // A buffer overflow: 16 bytes past the end of `victim_owner`, over `victim`'s header.
    // SAFETY: deliberately writes past the block but inside the arena's mapping.
    unsafe { victim_owner.as_ptr().write_bytes(0xFF, usable + 16) };
    // SAFETY: the arena validates before acting.
    let err = unsafe { arena.free(victim) }.unwrap_err();
    assert!(matches!(err, Error::Corrupted { .. }), "{err}");
    assert!(matches!(arena.check(), Err(Error::Corrupted { .. })));
    // Blocks away from the damage keep their contents and are served as before.
    // SAFETY: `keep` is live.
    assert!(
        unsafe { core::slice::from_raw_parts(keep.as_ptr(), 64) }
            .iter()
            .all(|&b| b == 0x77)
    );
    // SAFETY: `keep` is intact and live.
    unsafe { arena.free(keep) }.unwrap();
    assert!(arena.alloc(1000).is_ok());
}

#[test]
fn bad_sizes_and_alignments_are_errors() {
    let arena = Arena::new().unwrap();
    assert!(matches!(arena.alloc(0), Err(Error::InvalidLayout { .. })));
    assert!(matches!(
        arena.alloc(usize::MAX),
        Err(Error::InvalidLayout { .. })
    ));
    assert!(matches!(arena.alloc(65536), Err(Error::OutOfMemory { .. })));
    assert!(matches!(
        arena.calloc(usize::MAX / 2, 3),
        Err(Error::InvalidLayout { .. })
    ));
    assert!(matches!(
        arena.alloc_layout(Layout::from_size_align(8, 8192).unwrap()),
        Err(Error::InvalidLayout { .. })
    ));
    let p = arena.alloc(10).unwrap();
    // SAFETY: realloc to 0 is refused and leaves `p` alone.
    assert!(matches!(
        unsafe { arena.realloc(p, 0) },
        Err(Error::InvalidLayout { .. })
    ));
    // SAFETY: `p` is still live.
    assert!(matches!(
        unsafe { arena.realloc(p, 1 << 20) },
        Err(Error::OutOfMemory { .. })
    ));
    assert_eq!(arena.stats().failed_requests, 7);
    // SAFETY: still live.
    unsafe { arena.free(p) }.unwrap();
    arena.check().unwrap();
}

#[test]
fn realloc_shrinks_in_place_and_grows_into_free_neighbours() {
    let arena = Arena::new().unwrap();
    let p = arena.alloc(1000).unwrap();
    // SAFETY: live; the returned pointer is used afterwards.
    let q = unsafe { arena.realloc(p, 100) }.unwrap();
    assert_eq!(p, q, "shrinking keeps the pointer");
    // SAFETY: as above.
    let r = unsafe { arena.realloc(q, 5000) }.unwrap();
    assert_eq!(q, r, "the next block is free: grow in place");
    let _blocker = arena.alloc(16).unwrap();
    // SAFETY: as above.
    let s = unsafe { arena.realloc(r, 10_000) }.unwrap();
    assert_ne!(r, s, "blocked: moves");
    let st = arena.stats();
    assert_eq!((st.reallocations, st.reallocations_in_place), (3, 2));
    arena.check().unwrap();
}

#[test]
fn calloc_returns_zeros_even_from_dirty_memory() {
    let arena = Arena::new().unwrap();
    let p = arena.alloc(4000).unwrap();
    // SAFETY: 4000 bytes are ours.
    unsafe { p.as_ptr().write_bytes(0xCD, 4000) };
    // SAFETY: freed once.
    unsafe { arena.free(p) }.unwrap();
    let z = arena.calloc(500, 8).unwrap();
    // SAFETY: 4000 zeroed bytes.
    assert!(
        unsafe { core::slice::from_raw_parts(z.as_ptr(), 4000) }
            .iter()
            .all(|&b| b == 0)
    );
}

#[test]
fn collections_live_in_the_arena() {
    let arena = Arena::new().unwrap();
    let mut v: Vec<u64, &Arena> = Vec::new_in(&arena);
    for i in 0..1000 {
        v.push(i);
    }
    assert_eq!(v.iter().sum::<u64>(), 999 * 1000 / 2);
    let b = Box::new_in([7u8; 100], &arena);
    let mut map = hashbrown::HashMap::new_in(&arena);
    for i in 0..200u32 {
        map.insert(i, i * 2);
    }
    assert_eq!(map[&150], 300);
    assert_eq!(arena.stats().live_blocks, 3);
    arena.check().unwrap();
    drop(map);
    drop(b);
    v.shrink_to_fit();
    arena.check().unwrap();
    drop(v);
    assert_eq!(arena.stats().live_blocks, 0);
    arena.check().unwrap();
}

#[test]
fn try_reserve_past_the_capacity_is_an_error() {
    let arena = Arena::new().unwrap();
    let mut v: Vec<u8, &Arena> = Vec::new_in(&arena);
    v.extend_from_slice(&[1, 2, 3]);
    assert!(v.try_reserve(1 << 20).is_err());
    assert!(v.try_reserve_exact(70_000).is_err());
    assert_eq!(v, [1, 2, 3]);
    assert!(v.try_reserve(30_000).is_ok());
    arena.check().unwrap();
}

#[test]
fn trait_paths_handle_zero_sizes_alignment_and_grow_in_place() {
    let arena = Arena::new().unwrap();
    let a = &arena;
    let zst = a.allocate(Layout::new::<()>()).unwrap();
    assert_eq!(zst.len(), 0);
    // SAFETY: zero-sized blocks are never really freed.
    unsafe { a.deallocate(zst.cast(), Layout::new::<()>()) };
    let l = Layout::from_size_align(100, 512).unwrap();
    let p = a.allocate(l).unwrap().cast::<u8>();
    assert_eq!(p.as_ptr() as usize % 512, 0);
    let l2 = Layout::from_size_align(3000, 512).unwrap();
    // SAFETY: `p` was allocated with `l`.
    let q = unsafe { a.grow_zeroed(p, l, l2) }.unwrap().cast::<u8>();
    assert_eq!(q, p, "free space follows: grown in place");
    // SAFETY: the grown tail is zeroed.
    assert!(
        unsafe { core::slice::from_raw_parts(q.as_ptr().add(100), 2900) }
            .iter()
            .all(|&b| b == 0)
    );
    // SAFETY: allocated with `l2`.
    let r = unsafe { a.shrink(q, l2, Layout::from_size_align(10, 16).unwrap()) }.unwrap();
    assert_eq!(r.cast::<u8>(), q);
    // SAFETY: allocated with the shrunk layout.
    unsafe { a.deallocate(q, Layout::from_size_align(10, 16).unwrap()) };
    assert_eq!(arena.stats().live_blocks, 0);
    arena.check().unwrap();
}

#[test]
fn snapshot_and_walk_list_every_block() {
    let arena = Arena::new().unwrap();
    // Above 2 KiB, freed blocks merge at once.
    let a = arena.alloc(2100).unwrap();
    let b = arena.alloc(2200).unwrap();
    let _c = arena.alloc(2300).unwrap();
    // SAFETY: freed once each.
    unsafe {
        arena.free(a).unwrap();
        arena.free(b).unwrap();
    }
    let blocks: std::vec::Vec<_> = arena.blocks().collect();
    assert_eq!(
        blocks.iter().map(|b| b.state).collect::<std::vec::Vec<_>>(),
        [BlockState::Free, BlockState::Allocated, BlockState::Free]
    );
    assert_eq!(
        blocks.iter().map(|b| b.size).sum::<usize>() + 16,
        arena.capacity()
    );
    let snap = arena.snapshot();
    assert_eq!(
        snap.free_lists
            .iter()
            .map(|l| l.blocks.len())
            .sum::<usize>(),
        2
    );
    let text = snap.to_string();
    assert!(
        text.contains("allocated") && text.contains("free"),
        "{text}"
    );
    assert_eq!(arena.leaks().count(), 1);
}

#[test]
fn utilisation_of_the_default_arena() {
    // 60 blocks of 1000 bytes fit in 64 KiB.
    let arena = Arena::new().unwrap();
    let mut n = 0;
    while arena.alloc(1000).is_ok() {
        n += 1;
    }
    assert!(n >= 60, "only {n} blocks of 1000 bytes fit");

    // Sizes uniform in 16..512: live payload at the first failure, with random frees along
    // the way, is at least 85% of the capacity.
    let mut worst = 1.0f64;
    for seed in 0..20 {
        let arena = Arena::new().unwrap();
        let mut rng = Rng::new(seed);
        let mut live: std::vec::Vec<(NonNull<u8>, usize)> = std::vec::Vec::new();
        let mut requested = 0usize;
        loop {
            if !live.is_empty() && rng.chance(1, 4) {
                let (p, len) = live.swap_remove(rng.range(0, live.len()));
                requested -= len;
                // SAFETY: live, freed once.
                unsafe { arena.free(p) }.unwrap();
                continue;
            }
            let len = rng.range(16, 513);
            match arena.alloc(len) {
                Ok(p) => {
                    live.push((p, len));
                    requested += len;
                }
                Err(_) => break,
            }
        }
        worst = worst.min(requested as f64 / arena.capacity() as f64);
    }
    assert!(worst >= 0.85, "utilisation at first failure {worst:.3}");
}

#[test]
fn realloc_slides_back_into_a_free_neighbour_when_nothing_else_fits() {
    let arena = Arena::with_capacity(16 * 1024).unwrap();
    let before = arena.alloc(4000).unwrap();
    let p = arena.alloc(4000).unwrap();
    // SAFETY: 4000 bytes are ours.
    unsafe { p.as_ptr().write_bytes(0x3C, 4000) };
    // Fill the rest so no other free block can take 7000 bytes.
    let mut fillers = std::vec::Vec::new();
    while let Ok(f) = arena.alloc(1500) {
        fillers.push(f);
    }
    // SAFETY: live, freed once.
    unsafe { arena.free(before) }.unwrap();
    // SAFETY: `p` is live; only the returned pointer is used afterwards.
    let q = unsafe { arena.realloc(p, 7000) }.unwrap();
    assert_eq!(q, before, "the block moved down into its free neighbour");
    // SAFETY: 4000 preserved bytes at `q`.
    let kept = unsafe { core::slice::from_raw_parts(q.as_ptr(), 4000) };
    assert!(kept.iter().all(|&b| b == 0x3C));
    assert!(arena.usable_size(q).unwrap() >= 7000);
    arena.check().unwrap();
    // SAFETY: `p` was moved: freeing it now is a misuse, caught.
    assert!(unsafe { arena.free(p) }.is_err());
    // SAFETY: live, freed once.
    unsafe { arena.free(q) }.unwrap();
    arena.check().unwrap();
}
