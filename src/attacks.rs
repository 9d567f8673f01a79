//! Attacks on every block allocator, through the public API: programs with dangling pointers,
//! and the fuzz targets' driver run on stable. They sit at the crate root because they play a
//! user of every layer.

use crate::test_rng::Rng;

// Each test plays a program with a dangling pointer: it writes into memory it freed, or writes
// back a word it read there earlier, and then checks that the engine neither hands out memory
// that overlaps a live block nor writes into one, reports the damage, and keeps serving.

mod dangling {
    use core::ptr::NonNull;

    use crate::{Arena, BlockState, Error, Heap, HeapConfig, SlabPool};

    /// Reads the word at `p + off` (a dangling or live pointer: the program's view).
    fn peek_word(p: NonNull<u8>, off: isize) -> u64 {
        // SAFETY: tests pass offsets inside the arena's mapping, which stays mapped.
        unsafe { p.as_ptr().offset(off).cast::<u64>().read() }
    }

    /// Writes `w` at `p + off`, as a use after free (or an underflow) would.
    fn poke_word(p: NonNull<u8>, off: isize, w: u64) {
        // SAFETY: as in `peek_word`; the memory belongs to the arena, which must cope.
        unsafe { p.as_ptr().offset(off).cast::<u64>().write(w) }
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

    fn overlaps(a: NonNull<u8>, alen: usize, b: NonNull<u8>, blen: usize) -> bool {
        let (a, b) = (a.as_ptr() as usize, b.as_ptr() as usize);
        a < b + blen && b < a + alen
    }

    /// Allocates from `arena` until it refuses (or `limit` blocks), checking that no block
    /// handed out overlaps `(p, len)`; frees them all again.
    fn no_allocation_overlaps(arena: &Arena, p: NonNull<u8>, len: usize, sizes: &[usize]) {
        let mut got = Vec::new();
        for &size in sizes.iter().cycle().take(400) {
            match arena.alloc(size) {
                Ok(q) => {
                    assert!(
                        !overlaps(q, size, p, len),
                        "a block of {size} bytes at {q:p} overlaps the live block at {p:p}"
                    );
                    got.push(q);
                }
                Err(Error::OutOfMemory { .. }) => {}
                Err(Error::Corrupted { .. }) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        for q in got {
            // SAFETY: allocated just above, freed once.
            let _ = unsafe { arena.free(q) };
        }
    }

    #[test]
    fn forged_links_into_a_live_block_are_not_followed() {
        // The example: guard, A, guard, X, guard, D, guard; X and A freed (A is the
        // head of their bin, X next); A's `prev` set to X and X's `next` to A.
        let arena = Arena::with_capacity(64 << 10).unwrap();
        let n = 3000;
        let g1 = arena.alloc(n).unwrap();
        let a = arena.alloc(n).unwrap();
        let g2 = arena.alloc(n).unwrap();
        let x = arena.alloc(n).unwrap();
        let g3 = arena.alloc(n).unwrap();
        let d = arena.alloc(n).unwrap();
        let g4 = arena.alloc(n).unwrap();
        for (i, g) in [g1, g2, g3, g4].into_iter().enumerate() {
            fill(g, n, 0x10 + i as u8);
        }
        fill(d, n, 0xDD);
        // SAFETY: live blocks, freed once; afterwards only their dangling pointers are used.
        unsafe {
            arena.free(x).unwrap();
            arena.free(a).unwrap();
        }
        let (a_hdr, x_hdr) = (a.as_ptr() as u64 - 8, x.as_ptr() as u64 - 8);
        poke_word(a, 8, x_hdr); // A.prev = X
        poke_word(x, 0, a_hdr); // X.next = A
        let first = arena.alloc(n);
        let live_a = match first {
            Ok(p) => {
                fill(p, n, 0xAA);
                Some(p)
            }
            Err(Error::Corrupted { .. }) => None,
            Err(e) => panic!("unexpected {e}"),
        };
        // Freeing D merges it with X: that must not write into whatever is live.
        // SAFETY: `d` is live and freed once.
        let _ = unsafe { arena.free(d) };
        if let Some(p) = live_a {
            assert!(
                holds(p, n, 0xAA),
                "free(D) wrote into the live block at {p:p}"
            );
            no_allocation_overlaps(&arena, p, n, &[n, 100, 2500, 5000]);
            assert!(holds(p, n, 0xAA));
        }
        for (i, g) in [g1, g2, g3, g4].into_iter().enumerate() {
            assert!(holds(g, n, 0x10 + i as u8), "guard {i} changed");
        }
        assert!(arena.check().is_err(), "the damage is reported by check()");
        // The arena keeps serving.
        let q = arena.alloc(n).unwrap();
        fill(q, n, 1);
    }

    /// `guard, X (4112-byte block), Y (480-byte block), guard` where X and Y were carved from
    /// one free block of 4592 bytes whose header word was read before the carve; X is freed.
    /// Returns the arena, the word, the pointers `(before, x, y, after)`.
    fn stale_header_setup() -> (Arena, u64, [NonNull<u8>; 4]) {
        let arena = Arena::with_capacity(64 << 10).unwrap();
        let before = arena.alloc(3000).unwrap();
        let f = arena.alloc(4584).unwrap(); // a 4592-byte block
        let after = arena.alloc(3000).unwrap();
        // SAFETY: `f` is live and freed once; only its dangling pointer is used afterwards.
        unsafe { arena.free(f).unwrap() };
        let stale = peek_word(f, -8);
        let x = arena.alloc(4104).unwrap(); // carved at the front of the free block
        assert_eq!(x, f);
        let y = arena.alloc(472).unwrap(); // the 480-byte remainder
        assert_eq!(y.as_ptr() as usize, x.as_ptr() as usize + 4112);
        fill(y, 472, 0x77);
        fill(before, 3000, 0xBB);
        fill(after, 3000, 0xCC);
        // SAFETY: `x` is live and freed once.
        unsafe { arena.free(x).unwrap() };
        (arena, stale, [before, x, y, after])
    }

    #[test]
    fn a_stale_header_written_back_is_caught_by_alloc() {
        let (arena, stale, [before, x, y, after]) = stale_header_setup();
        poke_word(x, -8, stale); // X's header claims 4592 bytes again: over Y
        match arena.alloc(4584) {
            Ok(p) => {
                assert!(!overlaps(p, 4584, y, 472), "alloc handed out memory over Y");
                fill(p, 4584, 0x55);
            }
            Err(Error::Corrupted { .. } | Error::OutOfMemory { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
        no_allocation_overlaps(&arena, y, 472, &[4584, 4104, 400, 40]);
        assert!(holds(y, 472, 0x77) && holds(before, 3000, 0xBB) && holds(after, 3000, 0xCC));
        assert!(arena.check().is_err());
    }

    #[test]
    fn a_stale_header_written_back_is_caught_by_a_merging_free() {
        let (arena, stale, [before, x, y, after]) = stale_header_setup();
        poke_word(x, -8, stale);
        // Freeing the block before X merges with X: by its header, over Y.
        // SAFETY: `before` is live and freed once (whatever the result, it is not used again).
        let _ = unsafe { arena.free(before) };
        no_allocation_overlaps(&arena, y, 472, &[7000, 4584, 3000, 100]);
        assert!(holds(y, 472, 0x77) && holds(after, 3000, 0xCC));
        assert!(arena.check().is_err());
    }

    #[test]
    fn a_stale_header_written_back_is_caught_by_realloc_in_place() {
        let (arena, stale, [before, x, y, after]) = stale_header_setup();
        poke_word(x, -8, stale);
        // Growing `before` in place takes X: by its header, over Y.
        // SAFETY: `before` is live; on success only the returned pointer is used.
        match unsafe { arena.realloc(before, 3000 + 4500) } {
            Ok(p) => {
                assert!(!overlaps(p, 7500, y, 472), "realloc grew over Y");
                assert!(holds(p, 3000, 0xBB));
                fill(p, 7500, 0x66);
            }
            Err(Error::Corrupted { .. }) => assert!(holds(before, 3000, 0xBB)),
            Err(e) => panic!("unexpected {e}"),
        }
        assert!(holds(y, 472, 0x77) && holds(after, 3000, 0xCC));
        assert!(arena.check().is_err());
    }

    #[test]
    fn a_damaged_top_block_is_quarantined_and_every_size_is_still_served() {
        let arena = Arena::with_capacity(64 << 10).unwrap();
        let keep = arena.alloc(100).unwrap();
        let x = arena.alloc(3000).unwrap();
        // SAFETY: live, freed once: X merges into the free top block, whose links are at `x`.
        unsafe { arena.free(x).unwrap() };
        poke_word(x, 0, 0x4141_4141_4141_4141);
        poke_word(x, 8, 0x4141_4141_4141_4141);
        let before = arena.stats();
        let mut corrupted = 0;
        for size in (16..=20 << 10).step_by(997) {
            match arena.alloc(size) {
                // SAFETY: freed once.
                Ok(p) => unsafe { arena.free(p).unwrap() },
                Err(Error::Corrupted { .. }) => corrupted += 1,
                Err(e) => panic!("{size} bytes: {e}"),
            }
        }
        assert!(
            corrupted <= 1,
            "the damage is reported once, then contained"
        );
        for size in (16..=20 << 10).step_by(997) {
            let p = arena
                .alloc(size)
                .unwrap_or_else(|e| panic!("{size} bytes: {e}"));
            // SAFETY: freed once.
            unsafe { arena.free(p).unwrap() };
        }
        let s = arena.stats();
        assert_eq!(s.misuses_caught, before.misuses_caught + 1);
        assert!(s.quarantined_blocks >= 1 && s.quarantined_bytes >= 32);
        assert!(
            s.quarantined_bytes <= 64,
            "only the damaged words are quarantined"
        );
        let Err(Error::Corrupted { what, .. }) = arena.check() else {
            panic!("check() must report the quarantined damage")
        };
        assert!(what.contains("quarantine"), "{what}");
        let snap = arena.snapshot();
        assert!(
            snap.blocks
                .iter()
                .any(|b| b.state == BlockState::Quarantined)
        );
        assert!(snap.to_string().contains("quarantined"));
        // SAFETY: live, freed once.
        unsafe { arena.free(keep).unwrap() };
    }

    #[test]
    fn calloc_of_a_cached_block_with_a_zeroed_header_does_not_panic() {
        let arena = Arena::new().unwrap();
        let _guard = arena.alloc(64).unwrap();
        let p = arena.alloc(100).unwrap();
        // SAFETY: live, freed once: it waits on its quick stack.
        unsafe { arena.free(p).unwrap() };
        poke_word(p, -8, 0);
        match arena.calloc(1, 100) {
            Ok(q) => assert!(holds(q, 100, 0)),
            Err(Error::Corrupted { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
        assert!(arena.check().is_err());
        let q = arena.calloc(4, 50).unwrap();
        assert!(holds(q, 200, 0));
    }

    #[test]
    fn an_interior_pointer_into_free_memory_is_an_invalid_pointer() {
        let arena = Arena::new().unwrap();
        let a = arena.alloc(3000).unwrap();
        let _guard = arena.alloc(64).unwrap();
        // SAFETY: live, freed once.
        unsafe { arena.free(a).unwrap() };
        // SAFETY: 64 bytes into the freed block, inside the arena.
        let inner = unsafe { a.add(64) };
        // SAFETY: misuse under test: the arena validates it.
        assert!(matches!(
            unsafe { arena.free(inner) },
            Err(Error::InvalidPointer { .. })
        ));
        // SAFETY: as above.
        assert_eq!(
            unsafe { arena.free(a) },
            Err(Error::DoubleFree {
                addr: a.as_ptr() as usize
            })
        );
        arena.check().unwrap();
    }

    #[test]
    fn realloc_of_a_freed_pointer_to_an_impossible_size_is_a_double_free() {
        let arena = Arena::new().unwrap();
        let a = arena.alloc(100).unwrap();
        let _guard = arena.alloc(64).unwrap();
        // SAFETY: live, freed once.
        unsafe { arena.free(a).unwrap() };
        for size in [usize::MAX, isize::MAX as usize, 0] {
            // SAFETY: misuse under test: the arena validates the pointer.
            let r = unsafe { arena.realloc(a, size) };
            assert_eq!(
                r,
                Err(Error::DoubleFree {
                    addr: a.as_ptr() as usize
                }),
                "realloc to {size}"
            );
        }
    }

    fn small_heap() -> Heap {
        Heap::with_config(
            HeapConfig::default()
                .max_size(if cfg!(miri) { 4 << 20 } else { 64 << 20 })
                .mmap_threshold(32 << 10),
        )
        .unwrap()
    }

    #[test]
    fn a_double_free_of_a_mapped_block_after_trim_is_reported_as_one() {
        let heap = small_heap();
        let small = heap.alloc(1000).unwrap();
        let big = heap.alloc(40 << 10).unwrap();
        // SAFETY: live, freed once each.
        unsafe {
            heap.free(big).unwrap();
            heap.free(small).unwrap();
        }
        heap.trim();
        // SAFETY: misuse under test: the heap validates the pointer.
        let r = unsafe { heap.free(big) };
        assert!(
            matches!(r, Err(Error::DoubleFree { .. }))
                || matches!(r, Err(Error::InvalidPointer { reason, .. }) if reason.contains("unmapped")),
            "{r:?}"
        );
    }

    #[test]
    fn a_double_free_of_a_mapped_block_after_many_large_frees_is_reported_honestly() {
        let heap = small_heap();
        let first = heap.alloc(40 << 10).unwrap();
        // More blocks than the heap remembers, all live at once so that none reuses the
        // address of `first`, freed after it.
        let later: Vec<_> = (0..70).map(|_| heap.alloc(40 << 10).unwrap()).collect();
        // SAFETY: live, freed once each.
        unsafe {
            heap.free(first).unwrap();
            for p in later {
                heap.free(p).unwrap();
            }
        }
        // SAFETY: misuse under test.
        let r = unsafe { heap.free(first) };
        match r {
            Err(Error::DoubleFree { .. }) => {}
            Err(Error::InvalidPointer { reason, .. }) if reason.contains("unmapped") => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_emptied_slab_pool_with_a_limit_serves_every_size_again() {
        let pool = SlabPool::with_capacity(SlabPool::BATCH_SIZE);
        let p = pool.alloc(16).unwrap();
        // SAFETY: live, freed once: its batch is now an empty reserve of the 16-byte class.
        unsafe { pool.free(p).unwrap() };
        let q = pool
            .alloc(1024)
            .expect("the empty reserve batch goes to the class that needs it");
        pool.check().unwrap();
        // SAFETY: live, freed once.
        unsafe { pool.free(q).unwrap() };
        let r = pool.alloc(16).unwrap();
        // SAFETY: live, freed once.
        unsafe { pool.free(r).unwrap() };
        pool.check().unwrap();
    }
}

// ---------------------------------------------------------------- the fuzz driver, on stable

/// The cargo-fuzz targets' driver (`fuzz/src/driver.rs`): the same attack actions and
/// invariants, fed seeded random programs instead of a fuzzer's.
#[path = "../fuzz/src/driver.rs"]
mod driver;

/// Random programs of `len` bytes for `driver`, `cases` of them from `seed`. Runs of one byte
/// value now and then steer programs into long streaks of one action.
fn random_programs(seed: u64, cases: usize, len: usize, driver: fn(&[u8])) {
    let mut rng = Rng::new(seed);
    for case in 0..cases {
        let mut data = vec![0u8; rng.range(1, len)];
        for b in data.iter_mut() {
            *b = rng.byte();
        }
        if rng.chance(1, 3) {
            let at = rng.range(0, data.len());
            let end = (at + rng.range(1, 64)).min(data.len());
            let v = rng.byte();
            data[at..end].fill(v);
        }
        let r = std::panic::catch_unwind(|| driver(&data));
        if r.is_err() {
            panic!("seed {seed:#x} case {case} ({} bytes) failed", data.len());
        }
    }
}

/// Programs per target: thousands natively, a handful under Miri.
const PROGRAMS: usize = if cfg!(miri) { 2 } else { 1500 };
const PROGRAM_LEN: usize = if cfg!(miri) { 60 } else { 1500 };

#[test]
fn random_attack_programs_against_the_arena() {
    random_programs(0xA77AC, PROGRAMS, PROGRAM_LEN, driver::run_arena);
}

#[test]
fn random_attack_programs_against_the_heap() {
    random_programs(0x4EA9, PROGRAMS, PROGRAM_LEN, driver::run_heap);
}

#[test]
fn random_attack_programs_against_the_heap_with_pages() {
    random_programs(0x9A6E5, PROGRAMS, PROGRAM_LEN, driver::run_heap_pages);
}

#[test]
fn random_attack_programs_against_the_slab_pool() {
    random_programs(0x51AB, PROGRAMS, PROGRAM_LEN, driver::run_slab);
}
