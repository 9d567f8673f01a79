//! Heap behaviour through its public API: model-based randomized operations across the
//! small, medium and mapped size ranges, limits, trimming, in-place growth, and collections.

#[path = "../src/test_rng.rs"]
mod test_rng;

use core::alloc::Layout;
use core::ptr::NonNull;
use std::collections::HashMap;

use allocator_api2::vec::Vec;
use strata_alloc::{Error, Heap, HeapConfig, LockedHeap};
use test_rng::Rng;

#[derive(Clone, Copy)]
struct Live {
    ptr: NonNull<u8>,
    len: usize,
    seed: u8,
}

/// Writes a pattern cheaply: every 64th byte plus the last one, so large blocks stay fast.
fn stamp(b: Live) {
    for i in (0..b.len).step_by(61).chain(core::iter::once(b.len - 1)) {
        // SAFETY: `b` is live with `b.len` bytes.
        unsafe { b.ptr.as_ptr().add(i).write(b.seed ^ (i as u8)) };
    }
}

fn verify(b: Live, len: usize, what: &str) {
    for i in (0..len).step_by(61) {
        // SAFETY: `b` is live with at least `len` bytes.
        let got = unsafe { b.ptr.as_ptr().add(i).read() };
        assert_eq!(got, b.seed ^ (i as u8), "{what}: byte {i} of {:p}", b.ptr);
    }
}

fn random_size(rng: &mut Rng) -> usize {
    match rng.range(0, 100) {
        0..=69 => rng.range(1, 512),
        70..=92 => rng.range(512, 16 << 10),
        93..=97 => rng.range(16 << 10, 128 << 10),
        _ => rng.range(128 << 10, 512 << 10),
    }
}

#[test]
fn model_based_random_operations_across_all_size_ranges() {
    let heap = Heap::with_config(HeapConfig::default().max_size(1 << 30)).unwrap();
    let mut rng = Rng::new(0x4EA9);
    let mut live: HashMap<usize, Live> = HashMap::new();
    let mut keys: std::vec::Vec<usize> = std::vec::Vec::new();
    let ops = 500_000;
    for step in 0..ops {
        let roll = rng.range(0, 100);
        // Keep the live set around 2000 blocks.
        let want_alloc = keys.len() < 200 || (keys.len() < 2000 && roll < 50);
        if keys.is_empty() || want_alloc {
            let len = random_size(&mut rng);
            let p = match rng.range(0, 20) {
                0 => {
                    heap.alloc_layout(Layout::from_size_align(len, 1 << rng.range(5, 13)).unwrap())
                }
                1 => heap.calloc(1, len),
                _ => heap.alloc(len),
            }
            .unwrap_or_else(|e| panic!("step {step}: {e}"));
            let b = Live {
                ptr: p,
                len,
                seed: rng.byte(),
            };
            stamp(b);
            assert!(
                live.insert(p.as_ptr() as usize, b).is_none(),
                "step {step}: handed out twice"
            );
            keys.push(p.as_ptr() as usize);
        } else if roll < 80 {
            let k = keys.swap_remove(rng.range(0, keys.len()));
            let b = live.remove(&k).unwrap();
            verify(b, b.len, "before free");
            // SAFETY: live, forgotten by the model.
            unsafe { heap.free(b.ptr) }.unwrap_or_else(|e| panic!("step {step}: {e}"));
        } else {
            let i = rng.range(0, keys.len());
            let b = live.remove(&keys[i]).unwrap();
            let new_len = if rng.chance(1, 3) {
                rng.range(1, b.len + 1)
            } else {
                random_size(&mut rng).max(b.len)
            };
            // SAFETY: live; we switch to the returned pointer.
            let q = unsafe { heap.realloc(b.ptr, new_len) }
                .unwrap_or_else(|e| panic!("step {step}: {e}"));
            verify(Live { ptr: q, ..b }, b.len.min(new_len), "after realloc");
            let nb = Live {
                ptr: q,
                len: new_len,
                seed: b.seed.wrapping_add(1),
            };
            stamp(nb);
            live.insert(q.as_ptr() as usize, nb);
            keys[i] = q.as_ptr() as usize;
        }
        // A temporary buffer, freed before the next operation.
        if rng.chance(1, 4) {
            let len = rng.range(1, 1000);
            let p = heap
                .alloc(len)
                .unwrap_or_else(|e| panic!("step {step}: {e}"));
            let t = Live {
                ptr: p,
                len,
                seed: rng.byte(),
            };
            stamp(t);
            assert!(!live.contains_key(&(p.as_ptr() as usize)), "step {step}");
            verify(t, len, "temporary");
            // SAFETY: live and not used after this.
            unsafe { heap.free(p) }.unwrap_or_else(|e| panic!("step {step}: {e}"));
        }
        if step % 500 == 0 {
            assert_eq!(heap.stats().live_blocks, live.len(), "step {step}");
        }
        if step % 5000 == 0 {
            heap.check().unwrap_or_else(|e| panic!("step {step}: {e}"));
            let s = heap.stats();
            assert_eq!(s.live_blocks, live.len());
        }
    }
    // No two live blocks overlap.
    let mut spans: std::vec::Vec<(usize, usize)> = live
        .values()
        .map(|b| (b.ptr.as_ptr() as usize, heap.usable_size(b.ptr).unwrap()))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "blocks overlap");
    }
    let s = heap.stats();
    assert!(s.mapped_blocks > 0 && s.break_growths > 0 && s.reallocations_in_place > 0);
    for b in live.values() {
        verify(*b, b.len, "at the end");
        // SAFETY: live, freed once.
        unsafe { heap.free(b.ptr) }.unwrap();
    }
    heap.check().unwrap();
    let s = heap.stats();
    assert_eq!((s.live_blocks, s.bytes_in_use, s.mapped_blocks), (0, 0, 0));
    heap.trim();
    assert!(heap.stats().managed_bytes <= 64 << 10, "{}", heap.stats());
}

#[test]
fn a_small_heap_fills_up_then_refills_after_frees() {
    let heap = Heap::with_config(
        HeapConfig::default()
            .max_size(1 << 20)
            .mmap_threshold(64 << 10),
    )
    .unwrap();
    let mut blocks = std::vec::Vec::new();
    let mut rng = Rng::new(3);
    let err = loop {
        match heap.alloc(rng.range(100, 40_000)) {
            Ok(p) => blocks.push(p),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
    heap.check().unwrap();
    let full = heap.stats();
    assert!(full.managed_bytes <= 1 << 20);
    assert!(full.bytes_in_use > (1 << 20) * 7 / 10, "{full}");
    // A request larger than max_size, and one larger than the address space.
    assert!(matches!(
        heap.alloc(2 << 20),
        Err(Error::OutOfMemory { .. })
    ));
    assert!(matches!(
        heap.alloc(usize::MAX - 10),
        Err(Error::InvalidLayout { .. })
    ));
    for p in blocks.drain(..) {
        // SAFETY: live, freed once.
        unsafe { heap.free(p) }.unwrap();
    }
    heap.check().unwrap();
    let refilled = loop {
        match heap.alloc(rng.range(100, 40_000)) {
            Ok(p) => blocks.push(p),
            Err(_) => break heap.stats(),
        }
    };
    assert!(refilled.bytes_in_use > (1 << 20) * 7 / 10, "{refilled}");
    heap.check().unwrap();
}

#[test]
fn near_max_size_frees_merge_at_once() {
    let heap = Heap::with_config(
        HeapConfig::default()
            .max_size(1 << 20)
            .growth_increment(64 << 10),
    )
    .unwrap();
    let first = heap.alloc(100).unwrap();
    let _keep = heap.alloc(100).unwrap();
    // SAFETY: live, freed once.
    unsafe { heap.free(first) }.unwrap();
    let cached = |heap: &Heap| {
        heap.snapshot()
            .quick_lists
            .iter()
            .map(|l| l.blocks.len())
            .sum::<usize>()
    };
    assert_eq!(cached(&heap), 1, "far from max_size a small free is cached");
    // Grow past half of max_size: from then on the heap packs (best fit, no caching).
    let big: std::vec::Vec<_> = (0..6).map(|_| heap.alloc(100_000).unwrap()).collect();
    assert!(heap.stats().managed_bytes > 1 << 19);
    assert_eq!(
        cached(&heap),
        0,
        "switching to packing merged the cached block"
    );
    let small = heap.alloc(100).unwrap();
    let _guard = heap.alloc(100).unwrap();
    // SAFETY: live, freed once.
    unsafe { heap.free(small) }.unwrap();
    assert_eq!(
        cached(&heap),
        0,
        "near max_size a small free merges at once"
    );
    heap.check().unwrap();
    for p in big {
        // SAFETY: live, freed once.
        unsafe { heap.free(p) }.unwrap();
    }
    heap.check().unwrap();
}

#[test]
fn near_max_size_a_resized_block_moves_where_the_free_memory_stays_in_larger_pieces() {
    use allocator_api2::alloc::Allocator;
    let layout = |n| Layout::from_size_align(n, 8).unwrap();
    for tight in [false, true] {
        let heap = Heap::with_config(
            HeapConfig::default()
                .max_size(1 << 20)
                .growth_increment(64 << 10),
        )
        .unwrap();
        // Past half of max_size the heap packs.
        let big: std::vec::Vec<_> = (0..if tight { 6 } else { 0 })
            .map(|_| heap.alloc(100_000).unwrap())
            .collect();
        let before = heap.alloc(2000).unwrap();
        let a = (&heap).allocate(layout(4000)).unwrap().cast::<u8>();
        let _guard = heap.alloc(100).unwrap();
        let hole = heap.alloc(5000).unwrap();
        let _guard2 = heap.alloc(100).unwrap();
        // SAFETY: live blocks of these sizes; freed once.
        unsafe {
            a.as_ptr().write_bytes(0xA5, 4000);
            hole.as_ptr().write_bytes(0xFF, 5000);
            heap.free(before).unwrap();
            heap.free(hole).unwrap();
        }
        // `a` (a block of 4016 bytes) could grow to 4008 bytes in place, but moving it into the
        // 5008-byte hole frees its place, which merges with the free block before it into one
        // of 6032 bytes.
        // SAFETY: `a` is live with the old layout; only the returned block is used after.
        let q = unsafe { (&heap).grow_zeroed(a, layout(4000), layout(4008)) }
            .unwrap()
            .cast::<u8>();
        // SAFETY: `q` holds 4008 bytes.
        let bytes = unsafe { core::slice::from_raw_parts(q.as_ptr(), 4008) };
        assert!(bytes[..4000].iter().all(|&b| b == 0xA5), "contents kept");
        assert!(bytes[4000..].iter().all(|&b| b == 0), "the tail is zeroed");
        let merged = heap
            .blocks()
            .any(|b| b.addr == before.as_ptr() as usize && b.size >= 6032);
        if tight {
            assert_eq!(q, hole, "near max_size the block moves");
            assert!(merged, "its old place merged with the free block before it");
        } else {
            assert_eq!(q, a, "far from max_size it grows in place");
            assert!(!merged);
        }
        // Only the merged 6032-byte block could take it; shrinking in place leaves the free
        // pieces larger.
        // SAFETY: live with 4008 bytes; only the returned pointer is used after.
        let r = unsafe { heap.realloc(q, 3000) }.unwrap();
        assert_eq!(r, q, "nothing better to move to: resized in place");
        heap.check().unwrap();
        for p in big.into_iter().chain([r]) {
            // SAFETY: live, freed once.
            unsafe { heap.free(p) }.unwrap();
        }
        heap.check().unwrap();
    }
}

#[test]
fn small_blocks_cached_at_the_top_do_not_keep_an_emptied_heap_from_trimming() {
    // The engine's own small blocks: quick stacks, loans and the top block.
    let heap = Heap::with_config(HeapConfig::default().small_pages(false)).unwrap();
    let big: std::vec::Vec<_> = (0..512).map(|_| heap.alloc(8 << 10).unwrap()).collect();
    // The last block before the free top is small: freed first, it waits on its quick stack
    // (not free, so the big blocks freed after it can never merge with the top through it).
    let small = heap.alloc(100).unwrap();
    let grown = heap.stats().managed_bytes;
    assert!(grown >= 4 << 20, "{}", heap.stats());
    // SAFETY: live, freed once.
    unsafe { heap.free(small) }.unwrap();
    assert!(
        heap.snapshot()
            .quick_lists
            .iter()
            .any(|l| !l.blocks.is_empty())
    );
    for p in big {
        // SAFETY: live, freed once.
        unsafe { heap.free(p) }.unwrap();
    }
    heap.check().unwrap();
    let s = heap.stats();
    assert!(
        s.managed_bytes <= grown / 4 && s.bytes_to_os >= (3 << 20) as u64,
        "an emptied heap gives its memory back: {s}"
    );
    // Still usable, and what comes next is served as before.
    let p = heap.alloc(100).unwrap();
    // SAFETY: live, freed once.
    unsafe { heap.free(p) }.unwrap();
    heap.check().unwrap();
}

#[test]
fn the_top_block_grows_in_place() {
    // The engine's own small blocks: quick stacks, loans and the top block.
    let heap = Heap::with_config(HeapConfig::default().small_pages(false)).unwrap();
    let _below = heap.alloc(100).unwrap();
    let mut p = heap.alloc(100).unwrap();
    // SAFETY: live block; we keep using the returned pointer.
    unsafe { p.as_ptr().write_bytes(0xAA, 100) };
    for size in [1000, 50_000, 100_000, 120_000] {
        // SAFETY: as above.
        let q = unsafe { heap.realloc(p, size) }.unwrap();
        assert_eq!(p, q, "grew to {size} in place");
        p = q;
    }
    // SAFETY: the first 100 bytes survived.
    assert!(
        unsafe { core::slice::from_raw_parts(p.as_ptr(), 100) }
            .iter()
            .all(|&b| b == 0xAA)
    );
    let s = heap.stats();
    assert_eq!(s.reallocations_in_place, 4);
    assert!(s.break_growths >= 2);
    heap.check().unwrap();
}

#[test]
fn mapped_blocks_grow_by_remapping_and_free_once() {
    let heap = Heap::new().unwrap();
    let p = heap.alloc(200_000).unwrap();
    // SAFETY: 200 000 bytes are ours.
    unsafe { p.as_ptr().write_bytes(5, 200_000) };
    // SAFETY: live; only the returned pointer is used afterwards.
    let q = unsafe { heap.realloc(p, 5 << 20) }.unwrap();
    // SAFETY: contents preserved.
    assert!(
        unsafe { core::slice::from_raw_parts(q.as_ptr(), 200_000) }
            .iter()
            .all(|&b| b == 5)
    );
    assert_eq!(heap.stats().mapped_blocks, 1);
    // SAFETY: live, freed once.
    unsafe { heap.free(q) }.unwrap();
    // SAFETY: the heap validates; this is the misuse under test.
    assert_eq!(
        unsafe { heap.free(q) },
        Err(Error::DoubleFree {
            addr: q.as_ptr() as usize
        })
    );
    // A foreign pointer handed to realloc is an error and touches nothing.
    let mut local = [9u8; 32];
    let foreign = NonNull::new(local.as_mut_ptr()).unwrap();
    // SAFETY: the heap validates before acting.
    assert!(matches!(
        unsafe { heap.realloc(foreign, 100) },
        Err(Error::InvalidPointer { .. })
    ));
    assert!(local.iter().all(|&b| b == 9));
    assert_eq!(heap.stats().misuses_caught, 2);
    heap.check().unwrap();
}

#[test]
fn calloc_zeroes_reused_memory_and_alignments_hold() {
    let heap = Heap::new().unwrap();
    let p = heap.alloc(3000).unwrap();
    // SAFETY: 3000 bytes are ours.
    unsafe { p.as_ptr().write_bytes(0xEE, 3000) };
    // SAFETY: freed once.
    unsafe { heap.free(p) }.unwrap();
    let z = heap.calloc(3, 1000).unwrap();
    assert_eq!(z, p, "the dirty block is reused");
    // SAFETY: 3000 bytes.
    assert!(
        unsafe { core::slice::from_raw_parts(z.as_ptr(), 3000) }
            .iter()
            .all(|&b| b == 0)
    );
    for shift in 0..=12 {
        let align = 1usize << shift;
        for size in [1, 24, 100, 5000, 300_000] {
            let q = heap
                .alloc_layout(Layout::from_size_align(size, align).unwrap())
                .unwrap();
            assert_eq!(q.as_ptr() as usize % align, 0, "align {align} size {size}");
        }
    }
    heap.check().unwrap();
}

#[test]
fn alignments_beyond_4096_come_from_their_own_mappings() {
    let heap = Heap::new().unwrap();
    let mut live = std::vec::Vec::new();
    for shift in 13..=22 {
        let align = 1usize << shift;
        for (i, size) in [1usize, 5000, 300_000].into_iter().enumerate() {
            let p = heap
                .alloc_layout(Layout::from_size_align(size, align).unwrap())
                .unwrap();
            assert_eq!(p.as_ptr() as usize % align, 0, "align {align} size {size}");
            let usable = heap.usable_size(p).unwrap();
            assert!(
                usable >= size && usable < size + 2 * 4096,
                "{usable} for {size}"
            );
            let b = Live {
                ptr: p,
                len: usable,
                seed: (shift * 3 + i) as u8,
            };
            stamp(b);
            live.push(b);
        }
    }
    assert_eq!(heap.stats().mapped_blocks, live.len());
    // An interior pointer and the lead before an aligned payload are not blocks.
    let first = live[0].ptr.as_ptr();
    for bad in [first.wrapping_add(4096), first.wrapping_sub(4096)] {
        // SAFETY: the heap validates the pointer before touching anything.
        let err = unsafe { heap.free(NonNull::new(bad).unwrap()) }.unwrap_err();
        assert!(matches!(err, Error::InvalidPointer { .. }), "{err}");
    }
    heap.check().unwrap();
    for b in &mut live {
        verify(*b, b.len, "aligned block before realloc");
        // SAFETY: live; only the returned pointer is used afterwards.
        let q = unsafe { heap.realloc(b.ptr, b.len * 3) }.unwrap();
        let moved = Live { ptr: q, ..*b };
        verify(moved, b.len, "aligned block after realloc");
        *b = Live {
            ptr: q,
            len: b.len * 3,
            seed: b.seed,
        };
        stamp(*b);
    }
    heap.check().unwrap();
    for b in live {
        // SAFETY: live, freed once.
        unsafe { heap.free(b.ptr) }.unwrap();
        // SAFETY: misuse under test: the heap validates.
        let again = unsafe { heap.free(b.ptr) }.unwrap_err();
        // A heap block freed next to a free one merged with it: its address is now inside
        // free memory, which is all the heap can say of it.
        let merged =
            matches!(again, Error::InvalidPointer { reason, .. } if reason.contains("free memory"));
        assert!(
            matches!(again, Error::DoubleFree { .. }) || merged,
            "{again}"
        );
    }
    let s = heap.stats();
    assert_eq!((s.mapped_blocks, s.mapped_bytes, s.live_blocks), (0, 0, 0));
    heap.check().unwrap();
}

#[test]
fn aligned_collections_grow_and_keep_their_alignment() {
    #[repr(align(65536))]
    #[derive(Clone, Copy)]
    struct Page64K([u8; 16]);
    let heap = Heap::new().unwrap();
    let mut v: Vec<Page64K, &Heap> = Vec::new_in(&heap);
    for i in 0..40u8 {
        v.push(Page64K([i; 16]));
        assert_eq!(v.as_ptr() as usize % 65536, 0);
    }
    assert!(v.iter().enumerate().all(|(i, p)| p.0 == [i as u8; 16]));
    v.truncate(3);
    v.shrink_to_fit();
    assert_eq!(v.as_ptr() as usize % 65536, 0);
    assert_eq!(v[2].0, [2; 16]);
    drop(v);
    assert_eq!(heap.stats().mapped_blocks, 0);
    heap.check().unwrap();
}

#[test]
fn collections_live_in_the_heap() {
    let heap = Heap::new().unwrap();
    let mut map = hashbrown::HashMap::new_in(&heap);
    let mut v: Vec<u32, &Heap> = Vec::new_in(&heap);
    for i in 0..100_000u32 {
        map.insert(i, i.wrapping_mul(7));
        v.push(i);
    }
    assert_eq!(map[&99_999], 99_999u32.wrapping_mul(7));
    assert_eq!(
        v.iter().map(|&x| x as u64).sum::<u64>(),
        99_999 * 100_000 / 2
    );
    heap.check().unwrap();
    drop(map);
    drop(v);
    assert_eq!(heap.stats().live_blocks, 0);
    heap.check().unwrap();
}

#[test]
fn locked_heap_survives_two_threads() {
    let heap = LockedHeap::new(Heap::with_config(HeapConfig::default().max_size(1 << 30)).unwrap());
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let heap = &heap;
            s.spawn(move || {
                let mut rng = Rng::new(t);
                let mut mine: std::vec::Vec<(NonNull<u8>, usize, u8)> = std::vec::Vec::new();
                for _ in 0..100_000 {
                    if mine.len() < 500 && rng.chance(3, 5) || mine.is_empty() {
                        let len = random_size(&mut rng) / 4 + 1;
                        let p = heap.alloc(len).unwrap();
                        let byte = rng.byte();
                        // SAFETY: `len` bytes are ours.
                        unsafe { p.as_ptr().write_bytes(byte, len) };
                        mine.push((p, len, byte));
                    } else {
                        let (p, len, byte) = mine.swap_remove(rng.range(0, mine.len()));
                        // SAFETY: ours and live.
                        let s = unsafe { core::slice::from_raw_parts(p.as_ptr(), len) };
                        assert!(
                            s.iter().all(|&b| b == byte),
                            "another thread wrote into my block"
                        );
                        // SAFETY: freed once.
                        unsafe { heap.free(p) }.unwrap();
                    }
                }
                for (p, _, _) in mine {
                    // SAFETY: freed once.
                    unsafe { heap.free(p) }.unwrap();
                }
            });
        }
    });
    heap.check().unwrap();
    assert_eq!(heap.stats().live_blocks, 0);
}

#[test]
fn the_peak_counts_heap_blocks_mapped_blocks_and_a_lent_block() {
    // The engine's own small blocks: quick stacks, loans and the top block.
    let heap = Heap::with_config(HeapConfig::default().small_pages(false)).unwrap();
    let a = heap.alloc(1000).unwrap();
    let big = heap.alloc(300 << 10).unwrap();
    let both = heap.stats().bytes_in_use;
    assert!(both > 300 << 10);
    assert_eq!(heap.stats().peak_bytes_in_use, both);
    // SAFETY: live, freed once.
    unsafe { heap.free(big) }.unwrap();
    assert_eq!(heap.stats().peak_bytes_in_use, both, "the peak stays");

    // A higher peak reached with heap blocks alone, and one that a lent block makes.
    let many: std::vec::Vec<_> = (0..400).map(|_| heap.alloc(1000).unwrap()).collect();
    let now = heap.stats().bytes_in_use;
    assert!(now > both);
    assert_eq!(heap.stats().peak_bytes_in_use, now);
    let t = heap.alloc(40).unwrap();
    // SAFETY: live, freed once.
    unsafe { heap.free(t) }.unwrap(); // cached on its quick stack
    let lent = heap.alloc(40).unwrap(); // taken back from it: a loan
    assert_eq!(lent, t);
    let with_lent = heap.stats().bytes_in_use;
    assert_eq!(with_lent, now + heap.usable_size(lent).unwrap());
    assert_eq!(heap.stats().peak_bytes_in_use, with_lent);
    for p in many.into_iter().chain([a, lent]) {
        // SAFETY: live, freed once.
        unsafe { heap.free(p) }.unwrap();
    }
    let s = heap.stats();
    assert_eq!((s.bytes_in_use, s.peak_bytes_in_use), (0, with_lent));
    heap.check().unwrap();
}
