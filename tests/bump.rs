//! Heavier Bump tests: randomized scopes against a model, Vec growth across chunks, hashbrown,
//! limits and errors, compared against bumpalo where a figure is promised.

#[path = "../src/test_rng.rs"]
mod test_rng;

use core::alloc::Layout;
use std::panic::{AssertUnwindSafe, catch_unwind};

use allocator_api2::vec::Vec as AVec;
use strata_alloc::{Bump, Error};
use test_rng::Rng;

/// One live allocation in the model: where it is, how long, and the byte it was filled with.
#[derive(Clone, Copy)]
struct Block {
    addr: usize,
    len: usize,
    fill: u8,
}

fn verify(blocks: &[Block]) {
    let mut sorted = blocks.to_vec();
    sorted.sort_by_key(|b| b.addr);
    for w in sorted.windows(2) {
        assert!(
            w[0].addr + w[0].len <= w[1].addr,
            "live allocations overlap"
        );
    }
    for b in blocks {
        // SAFETY: every block in the model is still allocated in the arena.
        let s = unsafe { core::slice::from_raw_parts(b.addr as *const u8, b.len) };
        assert!(
            s.iter().all(|&x| x == b.fill),
            "a value written outside a scope changed"
        );
    }
}

/// Random allocations at this level, then random nested scopes; after each scope the model's
/// blocks (allocated outside it) must be intact and `allocated_bytes` back to its old value.
fn run_level(bump: &mut Bump, rng: &mut Rng, depth: u32, model: &mut Vec<Block>, ops: &mut usize) {
    let n = rng.range(0, 12);
    for _ in 0..n {
        let len = match rng.range(0, 20) {
            0 => rng.range(1000, 70_000), // crosses chunks, sometimes oversized
            1..=3 => 0,
            _ => rng.range(1, 100),
        };
        let align = 1usize << rng.range(0, 7);
        let fill = rng.byte();
        let p = match rng.range(0, 4) {
            0 => bump.alloc_layout(Layout::from_size_align(len, align).unwrap()),
            1 => {
                let s = bump.alloc_slice_fill_with(len, |_| fill);
                core::ptr::NonNull::from(s).cast::<u8>()
            }
            2 => bump.try_alloc_raw(len, align).unwrap(),
            _ => {
                let src = vec![fill; len];
                core::ptr::NonNull::from(bump.alloc_slice_copy(&src)).cast::<u8>()
            }
        };
        // SAFETY: a fresh block of `len` bytes.
        unsafe { p.as_ptr().write_bytes(fill, len) };
        if len > 0 {
            model.push(Block {
                addr: p.as_ptr() as usize,
                len,
                fill,
            });
        }
        *ops += 1;
        if *ops % 64 == 0 {
            verify(model);
        }
    }
    if depth < 6 {
        for _ in 0..rng.range(0, 3) {
            let before = bump.allocated_bytes();
            let mark = model.len();
            if rng.chance(1, 4) {
                let cp = bump.checkpoint();
                run_level(bump, rng, depth + 1, model, ops);
                bump.rewind(cp);
            } else {
                bump.scope(|b| run_level(b, rng, depth + 1, model, ops));
            }
            assert_eq!(bump.allocated_bytes(), before);
            let used: usize = bump.chunks().map(|c| c.used).sum();
            assert_eq!(used, before);
            model.truncate(mark);
            verify(model);
        }
    }
}

#[test]
fn randomized_nested_scopes_never_overlap_and_restore_usage() {
    for seed in 0..40 {
        let mut rng = Rng::new(seed);
        let mut bump = if seed % 2 == 0 {
            Bump::new()
        } else {
            Bump::with_capacity(rng.range(1, 200_000))
        };
        let mut model = Vec::new();
        let mut ops = 0;
        for _ in 0..10 {
            run_level(&mut bump, &mut rng, 0, &mut model, &mut ops);
            verify(&model);
            if rng.chance(1, 3) {
                bump.reset();
                model.clear();
                assert_eq!(bump.allocated_bytes(), 0);
            }
        }
    }
}

#[test]
fn vec_pushed_to_a_mebibyte_moves_only_into_new_chunks() {
    let bump = Bump::new();
    let mut v: AVec<u8, &Bump> = AVec::new_in(&bump);
    let mut last = v.as_ptr() as usize;
    let mut moves = 0;
    let mut growths = 0;
    let mut cap = v.capacity();
    for i in 0..(1usize << 20) {
        v.push(i as u8);
        if v.capacity() != cap {
            growths += 1;
            cap = v.capacity();
        }
        let now = v.as_ptr() as usize;
        if now != last && i > 0 {
            moves += 1;
            // It moved: the new place must be in a different chunk than the old one.
            let holder = bump
                .chunks()
                .find(|c| (c.addr..c.addr + c.capacity).contains(&now))
                .expect("the Vec lies in a chunk");
            assert!(!(holder.addr..holder.addr + holder.capacity).contains(&last));
            assert_eq!(holder.addr, now, "a moved Vec starts its new chunk");
        }
        last = now;
    }
    assert!(growths >= 17, "{growths} growths");
    assert!(moves <= 9, "{moves} moves for {growths} growths");
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u8));
    // No dead copies stay mapped: only the chunk that holds the Vec.
    assert_eq!(bump.chunks().count(), 1);
    assert_eq!(bump.chunk_capacity(), 1 << 20);

    // The promise against bumpalo: at most 60% of the bytes it holds for the same Vec.
    let bb = bumpalo::Bump::new();
    let mut w = bumpalo::collections::Vec::new_in(&bb);
    for i in 0..(1usize << 20) {
        w.push(i as u8);
    }
    let ratio = bump.chunk_capacity() as f64 / bb.allocated_bytes() as f64;
    assert!(ratio <= 0.6, "holds {ratio:.2} of bumpalo's bytes");
}

#[test]
fn vec_in_a_reused_arena_never_moves() {
    let mut bump = Bump::new();
    for round in 0..3 {
        let mut v: AVec<u8, &Bump> = AVec::new_in(&bump);
        v.push(0);
        let first = v.as_ptr();
        for i in 1..(1usize << 20) {
            v.push(i as u8);
        }
        if round > 0 {
            assert_eq!(
                v.as_ptr(),
                first,
                "the kept 1 MiB chunk serves the whole Vec"
            );
        }
        drop(v);
        bump.reset();
    }
}

#[test]
fn hashbrown_map_in_a_bump_with_scopes() {
    let mut bump = Bump::new();
    let mut rng = Rng::new(3);
    for _ in 0..20 {
        let before = bump.allocated_bytes();
        bump.scope(|b| {
            let mut model = std::collections::HashMap::new();
            let mut map = hashbrown::HashMap::new_in(&*b);
            for _ in 0..5_000 {
                let k = rng.range(0, 1000);
                let key: &str = b.alloc_str(&format!("key-{k}"));
                *map.entry(key).or_insert(0u32) += 1;
                *model.entry(format!("key-{k}")).or_insert(0u32) += 1;
                if rng.chance(1, 10) {
                    map.remove(key);
                    model.remove(key);
                }
            }
            assert_eq!(map.len(), model.len());
            for (k, v) in &model {
                assert_eq!(map.get(k.as_str()), Some(v));
            }
        });
        assert_eq!(bump.allocated_bytes(), before);
    }
}

#[test]
fn limit_errors_lose_nothing() {
    let bump = Bump::new();
    let kept = bump.alloc_str("kept");
    bump.set_allocation_limit(Some(50_000));
    let mut v: AVec<u64, &Bump> = AVec::new_in(&bump);
    let mut pushed = 0u64;
    while v.try_reserve(1).is_ok() {
        v.push(pushed);
        pushed += 1;
    }
    assert!(pushed > 1000);
    assert!(bump.allocated_bytes() <= 50_000);
    // The failed growth kept the Vec intact.
    assert!(v.iter().copied().eq(0..pushed));
    for e in [
        bump.try_alloc([0u8; 60_000]).map(|_| ()).unwrap_err(),
        bump.try_alloc_str(&"x".repeat(60_000))
            .map(|_| ())
            .unwrap_err(),
        bump.try_alloc_slice_copy(&[0u32; 20_000])
            .map(|_| ())
            .unwrap_err(),
        bump.try_alloc_layout(Layout::new::<[u8; 60_000]>())
            .map(|_| ())
            .unwrap_err(),
    ] {
        assert!(matches!(e, Error::OutOfMemory { .. }), "{e}");
    }
    let msg = catch_unwind(AssertUnwindSafe(|| {
        bump.alloc([0u8; 60_000]);
    }))
    .unwrap_err();
    let msg = msg.downcast_ref::<String>().unwrap();
    assert!(msg.contains("out of memory"), "{msg}");
    drop(v);
    assert_eq!(kept, "kept");
    bump.set_allocation_limit(None);
    assert_eq!(bump.alloc_slice_copy(&[7u8; 60_000])[59_999], 7);
}

#[test]
fn overflowing_and_misaligned_requests_are_errors() {
    let bump = Bump::new();
    for (size, align) in [(1, 3), (1, 0), (usize::MAX, 1), (isize::MAX as usize, 4096)] {
        let e = bump.try_alloc_raw(size, align).unwrap_err();
        assert!(
            matches!(e, Error::InvalidLayout { .. }),
            "{size} {align}: {e}"
        );
    }
    // Valid but impossible: the OS refuses, the arena stays fine.
    assert!(bump.try_alloc_raw(isize::MAX as usize / 2, 8).is_err());
    assert!(
        bump.try_alloc_slice_fill_with(usize::MAX / 8 + 1, |_| 0u64)
            .is_err()
    );
    assert_eq!(bump.allocated_bytes(), 0);
    assert_eq!(*bump.alloc(1u32), 1);
}

#[test]
fn request_workload_footprint_is_flat() {
    let mut bump = Bump::new();
    let mut footprints = Vec::new();
    for req in 0..2_000u64 {
        bump.scope(|b| {
            for i in 0..200u64 {
                b.alloc(i ^ req);
                if i % 20 == 0 {
                    b.alloc_str("header: value");
                }
            }
        });
        footprints.push(bump.chunk_capacity());
    }
    assert!(footprints[10..].iter().all(|&f| f == footprints[10]));
}
