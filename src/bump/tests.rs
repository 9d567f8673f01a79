//! Unit tests, small enough for Miri (`cargo +nightly miri test --lib bump`).

use core::alloc::Layout;
use std::panic::{AssertUnwindSafe, catch_unwind};

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec as AVec;

use super::*;
use crate::test_rng::Rng;
use std::string::String;
use std::vec::Vec;

fn scale(miri: usize, native: usize) -> usize {
    if cfg!(miri) { miri } else { native }
}

/// Checks the invariants written at the top of `mod.rs`.
fn check(b: &Bump) {
    let ptr = b.ptr.get().as_ptr().addr();
    assert!(b.start.get() <= ptr, "start <= ptr");
    assert!(ptr <= b.chunk_end.get(), "ptr <= chunk end");
    assert!(b.start.get() <= b.end.get() && b.end.get() <= b.chunk_end.get());
    let in_use = b.in_use.get();
    let infos: Vec<ChunkInfo> = b.chunks().collect();
    assert!(in_use <= infos.len());
    if in_use > 0 {
        let cur = infos[in_use - 1];
        assert_eq!(cur.addr, b.start.get());
        assert_eq!(cur.addr + cur.capacity, b.chunk_end.get());
    }
    for (i, c) in infos.iter().enumerate() {
        assert_eq!(c.in_use, i < in_use);
        assert!(c.used <= c.capacity);
    }
    let done: usize = infos[..in_use.saturating_sub(1)]
        .iter()
        .map(|c| c.used)
        .sum();
    assert_eq!(done, b.done.get());
    let used: usize = infos.iter().map(|c| c.used).sum();
    assert_eq!(used, b.allocated_bytes());
    let stamp = b.with_chunks(|c| in_use.checked_sub(1).map_or(0, |i| c[i].stamp));
    assert_eq!(
        stamp,
        b.stamp.get(),
        "the current chunk's stamp is mirrored"
    );
    // The fast path cannot pass the limit.
    assert!(b.done.get() + (b.end.get() - b.start.get()) <= b.limit.get().max(b.done.get()));
}

#[test]
fn new_maps_nothing_and_zero_sized_requests_stay_free() {
    let b = Bump::new();
    check(&b);
    assert_eq!(b.chunk_capacity(), 0);
    let z = b.alloc_layout(Layout::from_size_align(0, 64).unwrap());
    assert_eq!(z.as_ptr() as usize % 64, 0);
    b.alloc(());
    b.alloc_slice_copy::<u64>(&[]);
    assert_eq!(b.chunk_capacity(), 0);
    assert_eq!(b.allocated_bytes(), 0);
    check(&b);
}

#[test]
fn allocations_are_aligned_disjoint_and_keep_their_contents() {
    let mut rng = Rng::new(7);
    let b = Bump::new();
    let mut live: Vec<(*const u8, usize, u8)> = Vec::new();
    for _ in 0..scale(300, 20_000) {
        let size = if rng.chance(1, 50) {
            rng.range(1, 20_000)
        } else {
            rng.range(0, 64)
        };
        let align = 1 << rng.range(0, 8);
        let layout = Layout::from_size_align(size, align).unwrap();
        let before = b.allocated_bytes();
        let p = b.alloc_layout(layout);
        assert_eq!(p.as_ptr() as usize % align, 0);
        assert!(b.allocated_bytes() >= before + size);
        let fill = rng.byte();
        // SAFETY: `p` is a fresh block of `size` bytes.
        unsafe { p.as_ptr().write_bytes(fill, size) };
        if size > 0 {
            live.push((p.as_ptr(), size, fill));
        }
        check(&b);
    }
    live.sort();
    for w in live.windows(2) {
        assert!(
            w[0].0 as usize + w[0].1 <= w[1].0 as usize,
            "blocks overlap"
        );
    }
    for &(addr, size, fill) in &live {
        // SAFETY: every block is still allocated; nothing was freed.
        let s = unsafe { core::slice::from_raw_parts(addr, size) };
        assert!(s.iter().all(|&x| x == fill));
    }
}

#[test]
fn nested_scopes_free_exactly_what_they_allocated() {
    fn go(b: &mut Bump, rng: &mut Rng, depth: u32, outside: &mut Vec<(*const u64, u64)>) {
        for _ in 0..rng.range(0, 6) {
            let v = rng.next_u64();
            let p = b.alloc(v);
            outside.push((p as *const u64, v));
            if rng.chance(1, 10) {
                b.alloc_slice_copy(&[0u8; 3000]); // sometimes cross into a new chunk
            }
        }
        if depth < 4 {
            for _ in 0..rng.range(0, 3) {
                let before = b.allocated_bytes();
                let mark = outside.len();
                b.scope(|b| go(b, rng, depth + 1, outside));
                assert_eq!(b.allocated_bytes(), before);
                outside.truncate(mark);
                check(b);
                for &(addr, v) in outside.iter() {
                    // SAFETY: allocated outside every scope that has ended since.
                    assert_eq!(unsafe { addr.read() }, v);
                }
            }
        }
    }
    let mut rng = Rng::new(11);
    let mut b = Bump::new();
    for _ in 0..scale(3, 40) {
        let mut outside = Vec::new();
        go(&mut b, &mut rng, 0, &mut outside);
        b.reset();
        check(&b);
    }
}

#[test]
fn a_panicking_scope_keeps_its_bytes_until_the_enclosing_scope_ends() {
    let mut b = Bump::new();
    b.alloc(1u32);
    let before = b.allocated_bytes();
    b.scope(|b| {
        let inner = b.allocated_bytes();
        let r = catch_unwind(AssertUnwindSafe(|| {
            b.scope(|b| {
                b.alloc([0u8; 5000]);
                panic!("boom");
            })
        }));
        assert!(r.is_err());
        assert!(b.allocated_bytes() >= inner + 5000);
        check(b);
        assert_eq!(*b.alloc(7u8), 7); // still usable
    });
    assert_eq!(b.allocated_bytes(), before);
    check(&b);
}

#[test]
fn reset_or_outer_rewind_inside_a_scope_is_honoured() {
    let mut b = Bump::new();
    b.alloc(1u64);
    let outer = b.checkpoint();
    b.alloc(2u64);
    b.scope(|b| {
        b.alloc([0u8; 9000]);
        b.rewind(outer);
    });
    assert_eq!(b.allocated_bytes(), 8);
    b.scope(|b| b.reset());
    assert_eq!(b.allocated_bytes(), 0);
    check(&b);
}

#[test]
fn invalid_checkpoints_are_refused_and_change_nothing() {
    let mut b = Bump::new();
    let a = b.checkpoint();
    b.alloc(1u8);
    let c = b.checkpoint();
    b.alloc(2u8);
    b.rewind(a);
    assert!(matches!(b.try_rewind(c), Err(Error::InvalidPointer { .. })));
    let other = Bump::new();
    assert!(b.try_rewind(other.checkpoint()).is_err());
    b.alloc(3u16);
    b.reset();
    assert!(b.try_rewind(a).is_err());
    let r = catch_unwind(AssertUnwindSafe(|| b.rewind(c)));
    assert!(r.is_err());
    assert_eq!(b.allocated_bytes(), 0);
    check(&b);
}

#[test]
fn vec_grows_in_place_until_it_must_change_chunk() {
    let b = Bump::new();
    let mut v: AVec<u8, &Bump> = AVec::new_in(&b);
    let mut moves = 0;
    let mut last = v.as_ptr();
    for i in 0..scale(20_000, 300_000) {
        v.push(i as u8);
        if v.as_ptr() != last {
            if !last.is_null() && v.len() > 1 {
                moves += 1;
                let holder = b
                    .chunks()
                    .find(|c| (c.addr..c.addr + c.capacity).contains(&(v.as_ptr() as usize)));
                let old = last as usize;
                assert!(
                    !(holder.unwrap().addr..holder.unwrap().addr + holder.unwrap().capacity)
                        .contains(&old)
                );
            }
            last = v.as_ptr();
        }
    }
    // Doubling chunks: one move per chunk boundary, not one per growth.
    assert!(moves <= 8, "{moves} moves");
    // The chunks the Vec left are released: only the one holding it stays.
    assert_eq!(b.chunks().count(), 1);
    assert_eq!(b.allocated_bytes(), v.capacity());
    check(&b);
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u8));
}

#[test]
fn reserve_exact_one_never_copies_inside_a_chunk() {
    let b = Bump::with_capacity(1 << 16);
    let mut v: AVec<u32, &Bump> = AVec::new_in(&b);
    v.push(0);
    let first = v.as_ptr();
    for i in 1..scale(1000, 15_000) {
        v.reserve_exact(1);
        v.push(i as u32);
    }
    assert_eq!(v.as_ptr(), first);
    assert_eq!(b.allocated_bytes(), v.capacity() * 4);
}

#[test]
fn last_block_shrinks_and_frees_in_place() {
    let b = Bump::new();
    let a = &b;
    let keep = b.alloc(5u64);
    let before = b.allocated_bytes();
    let layout = Layout::from_size_align(100, 8).unwrap();
    let p = a.allocate(layout).unwrap().cast::<u8>();
    let small = Layout::from_size_align(10, 8).unwrap();
    // SAFETY: `p` is the live block of `layout` just allocated.
    let q = unsafe { a.shrink(p, layout, small) }.unwrap().cast::<u8>();
    assert_eq!(p, q);
    assert_eq!(b.allocated_bytes(), before + 10);
    // SAFETY: `q` is live with layout `small`.
    unsafe { a.deallocate(q, small) };
    assert_eq!(b.allocated_bytes(), before);
    // Freeing a block that is not the last one changes nothing.
    let x = a.allocate(small).unwrap().cast::<u8>();
    let _y = a.allocate(small).unwrap();
    let after = b.allocated_bytes();
    // SAFETY: `x` is live with layout `small`.
    unsafe { a.deallocate(x, small) };
    assert_eq!(b.allocated_bytes(), after);
    assert_eq!(*keep, 5);
    check(&b);
}

#[test]
fn growing_to_a_larger_alignment_moves_and_keeps_the_bytes() {
    let b = Bump::new();
    let a = &b;
    b.alloc(1u8);
    let old = Layout::from_size_align(24, 8).unwrap();
    let p = a.allocate(old).unwrap().cast::<u8>();
    // SAFETY: fresh block of 24 bytes.
    unsafe {
        p.as_ptr()
            .copy_from(b"abcdefghijklmnopqrstuvwx".as_ptr(), 24)
    };
    let new = Layout::from_size_align(48, 4096).unwrap();
    // SAFETY: `p` is live with layout `old`; the new size is larger.
    let q = unsafe { a.grow(p, old, new) }.unwrap().cast::<u8>();
    assert_eq!(q.as_ptr() as usize % 4096, 0);
    // SAFETY: `q` holds the 24 copied bytes.
    let s = unsafe { core::slice::from_raw_parts(q.as_ptr(), 24) };
    assert_eq!(s, b"abcdefghijklmnopqrstuvwx");
    check(&b);
}

#[test]
fn the_limit_is_enforced_and_the_bump_stays_usable() {
    let b = Bump::new();
    b.set_allocation_limit(Some(1000));
    let mut n = 0;
    while b.try_alloc(0u64).is_ok() {
        n += 1;
        check(&b);
    }
    assert_eq!(n, 125);
    let err = b.try_alloc(0u8).unwrap_err();
    assert!(
        matches!(err, Error::OutOfMemory { available: 0, .. }),
        "{err:?}"
    );
    assert!((&b).allocate(Layout::new::<u8>()).is_err());
    let panic = catch_unwind(AssertUnwindSafe(|| b.alloc(1u8))).unwrap_err();
    let msg = panic.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains("Bump allocation failed") && msg.contains("out of memory"),
        "{msg}"
    );
    b.set_allocation_limit(Some(1008));
    assert_eq!(*b.alloc(9u64), 9);
    b.set_allocation_limit(None);
    assert_eq!(b.alloc_str("free again"), "free again");
    check(&b);
}

#[test]
fn limit_below_usage_and_across_chunks() {
    let b = Bump::new();
    b.alloc([0u8; 3000]);
    b.set_allocation_limit(Some(1000));
    assert!(b.try_alloc(1u8).is_err());
    check(&b);
    // Freeing below the old usage does not reopen the space above the limit.
    let mut b2 = Bump::new();
    let cp = b2.checkpoint();
    b2.alloc([0u8; 3000]);
    b2.set_allocation_limit(Some(1000));
    b2.rewind(cp);
    assert!(b2.try_alloc([0u8; 1001]).is_err());
    assert!(b2.try_alloc([0u8; 1000]).is_ok());
    b2.alloc_slice_copy(&[0u8; 0]);
    assert!(b2.try_alloc(0u8).is_err());
    check(&b2);
    b.set_allocation_limit(Some(10_000));
    for _ in 0..2 {
        b.alloc([0u8; 3000]); // the second crosses into a new chunk
        check(&b);
    }
    assert!(b.try_alloc([0u8; 1001]).is_err());
    assert!(b.try_alloc([0u8; 1000]).is_ok());
    assert_eq!(b.allocated_bytes(), 10_000);
}

#[test]
fn bad_layouts_are_errors() {
    let b = Bump::new();
    assert!(matches!(
        b.try_alloc_raw(8, 0),
        Err(Error::InvalidLayout { .. })
    ));
    assert!(matches!(
        b.try_alloc_raw(8, 12),
        Err(Error::InvalidLayout { .. })
    ));
    assert!(matches!(
        b.try_alloc_raw(isize::MAX as usize, 2),
        Err(Error::InvalidLayout { .. })
    ));
    assert!(matches!(
        b.try_alloc_slice_fill_with(usize::MAX / 2, |_| 0u32),
        Err(Error::InvalidLayout { .. })
    ));
    let r = catch_unwind(AssertUnwindSafe(|| {
        b.alloc_slice_fill_with(usize::MAX / 4, |_| 0u64)
    }));
    assert!(r.is_err());
    assert_eq!(b.allocated_bytes(), 0);
    assert_eq!(*b.alloc(3u8), 3);
}

#[test]
fn an_oversized_request_gets_its_own_chunk() {
    let b = Bump::new();
    b.alloc(1u8);
    let big = b.alloc_slice_fill_with(100_000, |i| i as u8);
    assert_eq!(big[99_999], (99_999 % 256) as u8);
    let infos: Vec<_> = b.chunks().collect();
    assert_eq!(infos.len(), 2);
    assert!(infos[1].capacity >= 100_000 && infos[1].capacity < 100_000 + page_size());
    check(&b);
}

#[test]
fn reset_keeps_chunks_up_to_the_bound() {
    let mut b = Bump::new();
    for _ in 0..scale(10, 100) {
        b.alloc([0u8; 1000]);
    }
    b.alloc_slice_copy(&[0u8; 200_000]);
    let all = b.chunk_capacity();
    b.set_retained_capacity(all);
    b.reset();
    assert_eq!(b.chunk_capacity(), all); // the round's chunks, kept (merging would pass the bound)
    let largest = b.chunks().map(|c| c.capacity).max().unwrap();
    assert_eq!(b.chunks().next().unwrap().capacity, largest); // the next round starts there
    check(&b);
    b.set_retained_capacity(largest - 1);
    b.reset();
    assert!(b.chunk_capacity() < largest);
    check(&b);
    b.set_retained_capacity(0);
    b.reset();
    assert_eq!(b.chunk_capacity(), 0);
    check(&b);
    b.alloc(1u8);
    check(&b);
}

#[test]
fn spares_are_reused_after_a_rewind() {
    let mut b = Bump::new();
    let cp = b.checkpoint();
    for _ in 0..scale(20, 200) {
        b.alloc([0u8; 500]);
    }
    let footprint = b.chunk_capacity();
    b.rewind(cp);
    check(&b);
    for _ in 0..scale(20, 200) {
        b.alloc([0u8; 500]);
        check(&b);
    }
    assert_eq!(b.chunk_capacity(), footprint);
}

#[test]
fn bump_box_runs_drop() {
    use std::rc::Rc;
    let b = Bump::new();
    let rc = Rc::new(5);
    {
        let mut boxed = b.alloc_box(Rc::clone(&rc));
        assert_eq!(Rc::strong_count(&rc), 2);
        *boxed = Rc::new(6);
        assert_eq!(Rc::strong_count(&rc), 1);
        let back = BumpBox::into_inner(b.alloc_box(Rc::clone(&rc)));
        assert_eq!(Rc::strong_count(&rc), 2);
        drop(back);
    }
    assert_eq!(Rc::strong_count(&rc), 1);
}

#[test]
fn chunk_iteration_survives_allocation_in_between() {
    let b = Bump::new();
    b.alloc(1u8);
    let mut it = b.chunks();
    assert!(it.next().is_some());
    b.alloc_slice_copy(&[0u8; 50_000]);
    assert!(it.next().is_some());
    assert!(it.next().is_none());
}

#[test]
fn hashbrown_lives_in_a_bump() {
    let b = Bump::new();
    let mut m = hashbrown::HashMap::new_in(&b);
    for i in 0..scale(200, 10_000) {
        *m.entry(i % 97).or_insert(0u32) += 1;
    }
    assert_eq!(m.len(), 97);
    assert_eq!(m.values().sum::<u32>() as usize, scale(200, 10_000));
}

#[test]
fn reset_merges_a_spread_round_into_one_chunk() {
    let mut b = Bump::new();
    for i in 0..scale(2000, 10_000) {
        b.alloc(i as u64);
    }
    assert!(b.in_use.get() > 1);
    let spread = b.chunk_capacity();
    b.reset();
    assert_eq!(b.chunks().count(), 1);
    assert_eq!(b.chunk_capacity(), spread);
    for i in 0..scale(2000, 10_000) {
        b.alloc(i as u64);
    }
    assert_eq!(b.in_use.get(), 1, "the next round fits in the merged chunk");
    check(&b);
}

#[test]
fn a_checkpoint_made_stale_by_an_older_rewind_stays_refused_when_the_position_passes_it() {
    let page = page_size();
    let mut b = Bump::new();
    let old = b.checkpoint();
    b.alloc_slice_copy(&vec![1u8; page - 100]);
    b.alloc_slice_copy(&vec![2u8; page]); // a second chunk
    let stale = b.checkpoint();
    assert_eq!(stale.in_use, 2);
    b.rewind(old); // frees both: `stale` marks freed memory from now on
    assert!(b.try_rewind(stale).is_err());
    // Refill differently: a little in the first chunk, then more than it holds.
    b.alloc(7u8);
    b.alloc_slice_copy(&vec![3u8; 3 * page]);
    b.alloc_slice_copy(&vec![4u8; 2 * page]);
    check(&b);
    let before = b.allocated_bytes();
    assert!(
        matches!(b.try_rewind(stale), Err(Error::InvalidPointer { .. })),
        "a stale checkpoint was accepted"
    );
    assert_eq!(b.allocated_bytes(), before);
    check(&b);

    // The limit holds too: nothing above it can be handed out after any rewind.
    let mut b = Bump::new();
    let old = b.checkpoint();
    b.alloc_slice_copy(&vec![0u8; page / 2]);
    b.alloc_slice_copy(&vec![0u8; page]);
    let stale = b.checkpoint();
    b.rewind(old);
    b.alloc_slice_copy(&vec![0u8; 2 * page]);
    b.alloc_slice_copy(&vec![0u8; 2 * page]);
    b.set_allocation_limit(Some(b.allocated_bytes() + 64));
    let _ = b.try_rewind(stale);
    while b.try_alloc(0u64).is_ok() {}
    let limit = b.allocation_limit().unwrap();
    let chunks_used: usize = b.chunks().map(|c| c.used).sum();
    assert!(
        chunks_used <= limit,
        "{chunks_used} bytes used past the limit {limit}"
    );
    check(&b);
}

#[test]
fn a_scope_around_a_vec_that_leaves_its_chunk_frees_it() {
    // The grow that moves the last block into a new chunk releases the emptied chunk; the
    // scope's checkpoint, taken at that chunk's start, must still be honoured.
    let mut b = Bump::new();
    b.alloc_slice_copy(&vec![0u8; page_size()]); // fill the first chunk exactly
    let before = b.allocated_bytes();
    b.scope(|b| {
        let mut v: AVec<u8, &Bump> = AVec::new_in(&*b);
        for i in 0..scale(20_000, 100_000) {
            v.push(i as u8);
        }
    });
    assert_eq!(b.allocated_bytes(), before);
    check(&b);
}

#[test]
fn small_chunks_come_from_the_global_allocator_and_large_ones_are_mapped() {
    let b = Bump::new();
    b.alloc(1u8);
    let first = b.chunks().next().unwrap();
    assert!(!first.mapped && first.capacity == page_size());
    let big = b.alloc_layout(Layout::from_size_align(chunk::MAPPED_FROM, 8).unwrap());
    // SAFETY: a fresh block of MAPPED_FROM bytes; its ends are written to show they are ours.
    unsafe {
        big.as_ptr().write(1);
        big.as_ptr().add(chunk::MAPPED_FROM - 1).write(2);
    }
    let info = b
        .chunks()
        .find(|c| c.capacity >= chunk::MAPPED_FROM)
        .unwrap();
    assert!(info.mapped && info.capacity % page_size() == 0);
    assert!(
        b.chunks()
            .filter(|c| c.capacity < chunk::MAPPED_FROM)
            .all(|c| !c.mapped)
    );
    check(&b);
    drop(b); // both kinds are given back (Miri checks the global allocator's side)

    let b = Bump::try_with_capacity(100).unwrap();
    let only = b.chunks().next().unwrap();
    assert!(!only.mapped && only.capacity >= 100);
    assert!(b.try_alloc([0u8; 100]).is_ok());
    assert_eq!(b.chunks().count(), 1);
    assert!(matches!(
        Bump::try_with_capacity(usize::MAX),
        Err(Error::InvalidLayout { .. })
    ));
    if !cfg!(miri) {
        let r = catch_unwind(|| Bump::with_capacity(isize::MAX as usize));
        assert!(r.is_err(), "with_capacity must not quietly start empty");
    }
}

// ---- the collections and slice methods, against bumpalo's behaviour -------------------------

#[test]
fn strings_and_format_match_bumpalo() {
    use core::fmt::Write;
    let ours = Bump::new();
    let theirs = bumpalo::Bump::new();
    let mut a = String::new();
    let mut s = super::String::new_in(&ours);
    let mut t = bumpalo::collections::String::new_in(&theirs);
    for i in 0..scale(50, 2_000) {
        let piece = format!("{i}:{}", "é".repeat(i % 3));
        s.push_str(&piece);
        t.push_str(&piece);
        a.push_str(&piece);
        if i % 7 == 0 {
            s.push('ß');
            t.push('ß');
            a.push('ß');
        }
        if i % 11 == 0 {
            assert_eq!(s.pop(), t.pop());
            a.pop();
        }
    }
    assert_eq!(s.as_str(), t.as_str());
    assert_eq!(s, a);
    write!(s, "{}-{:>4}", 7, "x").unwrap();
    write!(t, "{}-{:>4}", 7, "x").unwrap();
    assert_eq!(s.as_str(), t.as_str());
    let f = crate::bump_format!(in &ours, "{:?} {:.2}", [1, 2], 1.5f32);
    let g = bumpalo::format!(in &theirs, "{:?} {:.2}", [1, 2], 1.5f32);
    assert_eq!(f.as_str(), g.as_str());
    let kept: &str = f.into_bump_str();
    let kept2: &str = g.into_bump_str();
    assert_eq!(kept, kept2);
    // Growing one string in place: it is the last allocation, so its bytes never move.
    let mut grow = super::String::new_in(&ours);
    grow.reserve(1);
    let at = grow.as_ptr();
    for _ in 0..100 {
        grow.push_str("0123456789");
    }
    assert_eq!(grow.as_ptr(), at);
    check(&ours);
}

#[test]
fn vecs_match_bumpalo() {
    let ours = Bump::new();
    let theirs = bumpalo::Bump::new();
    let mut v = crate::bump_vec![in &ours; 1u64, 2, 3];
    let mut w = bumpalo::vec![in &theirs; 1u64, 2, 3];
    for i in 0..scale(100, 10_000) as u64 {
        v.push(i);
        w.push(i);
        if i % 5 == 0 {
            v.remove(0);
            w.remove(0);
        }
    }
    v.retain(|x| x % 3 != 0);
    w.retain(|x| x % 3 != 0);
    assert_eq!(&v[..], &w[..]);
    let zeros = crate::bump_vec![in &ours; 0u8; 33];
    assert_eq!(&zeros[..], &bumpalo::vec![in &theirs; 0u8; 33][..]);
    assert_eq!(v.leak().len(), w.into_bump_slice().len());
    check(&ours);
}

#[test]
fn slice_methods_match_bumpalo() {
    let ours = Bump::new();
    let theirs = bumpalo::Bump::new();
    let src: Vec<&str> = (0..scale(20, 500))
        .map(|i| ["a", "bb", "ccc"][i % 3])
        .collect();
    assert_eq!(ours.alloc_slice_clone(&src), theirs.alloc_slice_clone(&src));
    assert_eq!(
        ours.alloc_slice_fill_copy(17, 0xABu8),
        theirs.alloc_slice_fill_copy(17, 0xABu8)
    );
    assert_eq!(
        ours.alloc_slice_fill_clone(5, &"x"),
        theirs.alloc_slice_fill_clone(5, &"x")
    );
    assert_eq!(
        ours.alloc_slice_fill_default::<(u8, u64)>(9),
        theirs.alloc_slice_fill_default::<(u8, u64)>(9)
    );
    let iter = || (0..100u32).map(|i| i.wrapping_mul(2_654_435_761));
    assert_eq!(
        ours.alloc_slice_fill_iter(iter()),
        theirs.alloc_slice_fill_iter(iter())
    );
    assert!(
        ours.alloc_slice_fill_iter(core::iter::empty::<u8>())
            .is_empty()
    );
    // Too few values for the promised length panics in both.
    struct Liar(u8);
    impl Iterator for Liar {
        type Item = u8;
        fn next(&mut self) -> Option<u8> {
            self.0 = self.0.checked_sub(1)?;
            Some(self.0)
        }
    }
    impl ExactSizeIterator for Liar {
        fn len(&self) -> usize {
            10
        }
    }
    assert!(catch_unwind(AssertUnwindSafe(|| ours.alloc_slice_fill_iter(Liar(3)))).is_err());
    assert!(catch_unwind(AssertUnwindSafe(|| theirs.alloc_slice_fill_iter(Liar(3)))).is_err());
    check(&ours);
}

#[test]
fn alloc_try_with_matches_bumpalo_and_gives_back_a_failure() {
    let ours = Bump::new();
    let theirs = bumpalo::Bump::new();
    let ok: Result<&mut [u32; 4], ()> = ours.alloc_try_with(|| Ok([1, 2, 3, 4]));
    let ok2: Result<&mut [u32; 4], ()> = theirs.alloc_try_with(|| Ok([1, 2, 3, 4]));
    assert_eq!(ok.unwrap(), ok2.unwrap());
    let before = ours.allocated_bytes();
    let e = ours.alloc_try_with(|| Err::<[u8; 64], _>("no"));
    let e2 = theirs.alloc_try_with(|| Err::<[u8; 64], _>("no"));
    assert_eq!(e.unwrap_err(), e2.unwrap_err());
    assert_eq!(
        ours.allocated_bytes(),
        before,
        "the failed value's space is given back"
    );
    // When `f` allocates too, the reserved space is no longer last: it stays (as in bumpalo).
    let e = ours.alloc_try_with(|| {
        ours.alloc(1u8);
        Err::<u64, _>(())
    });
    assert!(e.is_err());
    assert!(ours.allocated_bytes() >= before + 9);
    check(&ours);
}

#[test]
fn allocated_chunks_hold_every_value_in_order_as_in_bumpalo() {
    let mut ours = Bump::new();
    let mut theirs = bumpalo::Bump::new();
    let words: Vec<std::string::String> =
        (0..scale(300, 3_000)).map(|i| format!("<{i}>")).collect();
    for w in &words {
        ours.alloc_str(w);
        theirs.alloc_str(w);
    }
    let all: Vec<u8> = ours
        .iter_allocated_chunks()
        .flatten()
        // SAFETY: only strings were allocated (alignment 1): no padding.
        .map(|b| unsafe { b.assume_init() })
        .collect();
    assert_eq!(all, words.concat().into_bytes());
    // bumpalo bumps downward and lists the newest chunk first: reversed, its bytes are the
    // same strings in the same order once each string is read forwards.
    let mut theirs_bytes: Vec<u8> = Vec::new();
    for chunk in theirs
        .iter_allocated_chunks()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        // SAFETY: as above.
        theirs_bytes.splice(0..0, chunk.iter().map(|b| unsafe { b.assume_init() }));
    }
    let mut sorted_ours = all.clone();
    sorted_ours.sort_unstable();
    theirs_bytes.sort_unstable();
    assert_eq!(
        sorted_ours, theirs_bytes,
        "the same bytes, whatever the order"
    );
    let total: usize = ours.iter_allocated_chunks().map(<[_]>::len).sum();
    assert_eq!(total, ours.allocated_bytes());
}

#[test]
fn unsized_boxes_drop_their_values() {
    use std::rc::Rc;
    let b = Bump::new();
    let rc = Rc::new(());
    let slice = b.alloc_box_slice_clone(&[Rc::clone(&rc), Rc::clone(&rc)]);
    assert_eq!(Rc::strong_count(&rc), 3);
    drop(slice);
    assert_eq!(Rc::strong_count(&rc), 1);
    let dynamic: BumpBox<'_, dyn core::any::Any> =
        crate::unsize_bump_box!(b.alloc_box(Rc::clone(&rc)));
    assert!(dynamic.downcast_ref::<Rc<()>>().is_some());
    assert_eq!(Rc::strong_count(&rc), 2);
    drop(dynamic);
    assert_eq!(Rc::strong_count(&rc), 1);
    let s = b.alloc_box_str("unsized");
    assert_eq!(&*s, "unsized");
    let arr: BumpBox<'_, [u16]> = crate::unsize_bump_box!(b.alloc_box([1u16, 2, 3]));
    assert_eq!(&*arr, &[1, 2, 3]);
    let leaked: &mut [u16] = BumpBox::leak(arr);
    leaked[0] = 9;
    assert_eq!(leaked, &[9, 2, 3]);
}
