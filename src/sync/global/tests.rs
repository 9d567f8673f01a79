use super::*;

fn small() -> HeapConfig {
    HeapConfig::default()
        .max_size(1 << 20)
        .growth_increment(16 << 10)
        .mmap_threshold(64 << 10)
}

/// Serialises the tests that set up global heaps: a registry mapped by one could land at the
/// address another just unmapped and is asking the fork list about.
static SET_UP: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn listed(p: *mut Shared) -> bool {
    let list = FORK_LIST.lock();
    let mut q = list.head;
    while !q.is_null() {
        if q == p {
            return true;
        }
        // SAFETY: the list is locked; its entries are alive.
        q = unsafe { *(*q).next.get() };
    }
    false
}

/// Fills `n` bytes at `p` with a pattern of `seed`.
fn fill(p: NonNull<u8>, n: usize, seed: u8) {
    // SAFETY: callers pass a live block of at least `n` bytes.
    unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), n) }
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = seed.wrapping_add(i as u8));
}

/// Whether the `n` bytes at `p` hold `fill`'s pattern of `seed`.
fn holds(p: NonNull<u8>, n: usize, seed: u8) -> bool {
    // SAFETY: callers pass a live block of at least `n` bytes.
    unsafe { core::slice::from_raw_parts(p.as_ptr(), n) }
        .iter()
        .enumerate()
        .all(|(i, &b)| b == seed.wrapping_add(i as u8))
}

/// A pointer as plain data, to hand between threads.
#[derive(Clone, Copy)]
struct Addr(usize);

impl Addr {
    fn of(p: NonNull<u8>) -> Addr {
        Addr(p.as_ptr() as usize)
    }
    fn ptr(self) -> NonNull<u8> {
        NonNull::new(core::ptr::with_exposed_provenance_mut(self.0)).unwrap()
    }
}

fn exposed(p: NonNull<u8>) -> Addr {
    Addr(p.as_ptr().expose_provenance())
}

#[test]
fn the_global_heaps_checked_api() {
    let _serial = SET_UP.lock();
    let heap = GlobalHeap::with_config(small());
    let never = NonNull::new(core::ptr::without_provenance_mut::<u8>(0x1000)).unwrap();
    // SAFETY: the heap validates; it has not been set up, so nothing is its block.
    let err = unsafe { heap.free(never) }.unwrap_err();
    assert!(matches!(err, Error::InvalidPointer { .. }), "{err}");
    assert_eq!(heap.stats(), crate::Stats::default());

    let p = heap.alloc(100).unwrap();
    fill(p, 100, 0xA5);
    // SAFETY: live; only the returned pointer is used afterwards.
    let q = unsafe { heap.realloc(p, 5000) }.unwrap();
    assert!(holds(q, 100, 0xA5));
    assert!(heap.usable_size(q).unwrap() >= 5000);
    let z = heap.calloc(50, 20).unwrap();
    // SAFETY: 1000 zeroed bytes.
    assert!(
        unsafe { core::slice::from_raw_parts(z.as_ptr(), 1000) }
            .iter()
            .all(|&b| b == 0)
    );
    assert!(matches!(
        heap.calloc(usize::MAX, 3),
        Err(Error::InvalidLayout { .. })
    ));
    let a = heap
        .alloc_layout(Layout::from_size_align(10, 8192).unwrap())
        .unwrap();
    assert_eq!(a.as_ptr() as usize % 8192, 0);
    assert!(matches!(
        heap.alloc(2 << 20),
        Err(Error::OutOfMemory { .. })
    ));
    heap.check().unwrap();
    // SAFETY: each live, freed once.
    unsafe {
        heap.free(q).unwrap();
        heap.free(z).unwrap();
        heap.free(a).unwrap();
    }
    // SAFETY: the misuse under test; the heap validates.
    assert_eq!(
        unsafe { heap.free(z) },
        Err(Error::DoubleFree {
            addr: z.as_ptr() as usize
        })
    );
    let s = heap.stats();
    assert_eq!((s.live_blocks, s.misuses_caught), (0, 1));
    heap.check().unwrap();
}

#[test]
fn a_moved_global_heap_stays_on_the_fork_list_until_dropped() {
    let _serial = SET_UP.lock();
    let heap = GlobalHeap::with_config(small());
    let p = heap.alloc(10).unwrap();
    let shared = heap.shared.load(Ordering::Acquire);
    assert!(listed(shared));
    let moved = [heap];
    // SAFETY: live, freed once; the heap moved but its block did not.
    unsafe { moved[0].free(p) }.unwrap();
    assert_eq!(moved[0].stats().live_blocks, 0);
    drop(moved);
    assert!(!listed(shared));
}

#[test]
fn threads_allocate_from_their_own_heaps_and_free_each_others_blocks() {
    let _serial = SET_UP.lock();
    let heap = GlobalHeap::with_config(HeapConfig::default().max_size(64 << 20));
    let threads = 4usize;
    // Under Miri every byte written is interpreted: fewer, smaller blocks.
    let (per, sizes): (usize, &[usize]) = if cfg!(miri) {
        (8, &[8, 24, 100, 700])
    } else {
        (3000, &[8, 24, 100, 700, 3000, 70_000])
    };
    // Each thread allocates its blocks, patterned by thread and index, and hands them on.
    let blocks: Vec<Vec<(Addr, usize, u8)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let heap = &heap;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..per {
                        let size = sizes[(i + t) % sizes.len()];
                        let p = heap.alloc(size).unwrap();
                        let seed = (t * 31 + i) as u8;
                        fill(p, size, seed);
                        mine.push((exposed(p), size, seed));
                        // Some blocks stay home: freed by their own thread.
                        if i % 5 == 0 {
                            let (a, n, sd) = mine.swap_remove(mine.len() / 2);
                            assert!(holds(a.ptr(), n, sd));
                            // SAFETY: live, freed once, by its owner.
                            unsafe { heap.free(a.ptr()) }.unwrap();
                        }
                    }
                    mine
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // No two live blocks overlap.
    let mut spans: Vec<(usize, usize)> = blocks
        .iter()
        .flatten()
        .map(|&(a, n, _)| (a.0, a.0 + n))
        .collect();
    spans.sort_unstable();
    assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0));
    assert!(heap.heaps() >= 2, "threads share heaps: {}", heap.heaps());
    // Every thread frees the blocks of the next one, checking their contents first, some
    // after resizing them on the way (a resized block stays in its owner's heap).
    std::thread::scope(|s| {
        for t in 0..threads {
            let theirs = &blocks[(t + 1) % threads];
            let heap = &heap;
            s.spawn(move || {
                for (k, &(a, n, seed)) in theirs.iter().enumerate() {
                    assert!(holds(a.ptr(), n, seed));
                    let mut p = a.ptr();
                    if k % 7 == 0 {
                        // SAFETY: live; only the returned pointer is used afterwards.
                        p = unsafe { heap.realloc(p, n + 500) }.unwrap();
                        assert!(holds(p, n, seed));
                    }
                    // SAFETY: live, freed once.
                    unsafe { heap.free(p) }.unwrap();
                }
            });
        }
    });
    let s = heap.stats();
    assert_eq!(
        (s.live_blocks, s.bytes_in_use, s.misuses_caught),
        (0, 0, 0),
        "{s}"
    );
    heap.check().unwrap();
}

/// Frees `a` on a thread of its own.
///
/// # Safety
///
/// As [`GlobalHeap::free`].
unsafe fn free_elsewhere(heap: &GlobalHeap, a: Addr) -> Result<(), Error> {
    // SAFETY: as the caller's contract says.
    std::thread::scope(|s| s.spawn(move || unsafe { heap.free(a.ptr()) }).join()).unwrap()
}

/// Frees the live block at `a` on one thread, then again on another: the second's result.
fn freed_twice_on_two_threads(heap: &GlobalHeap, a: Addr) -> Result<(), Error> {
    std::thread::scope(|s| {
        // SAFETY: live, freed once on another thread.
        s.spawn(move || unsafe { heap.free(a.ptr()) })
            .join()
            .unwrap()
            .unwrap();
        // SAFETY: the misuse under test, which the heap validates before it writes anything.
        s.spawn(move || unsafe { heap.free(a.ptr()) })
            .join()
            .unwrap()
    })
}

#[test]
fn a_double_free_from_two_threads_is_caught_while_the_first_waits() {
    for heap in [
        GlobalHeap::with_config(small()),
        GlobalHeap::with_config(small()).symmetric(),
    ] {
        let _serial = SET_UP.lock();
        let (small_block, large_block) = (heap.alloc(48).unwrap(), heap.alloc(100_000).unwrap());
        let (a, b) = (exposed(small_block), exposed(large_block));
        let heap = &heap;
        // A mapped block is freed under an intrusion, and judged there at once.
        assert_eq!(
            freed_twice_on_two_threads(heap, b),
            Err(Error::DoubleFree { addr: b.0 })
        );
        // A block in the break is pushed to its owner; a second push while the first waits
        // for the drain is refused at once.
        let second_small = freed_twice_on_two_threads(heap, a);
        assert_eq!(second_small, Err(Error::DoubleFree { addr: a.0 }));
        // And on the owner's own thread, which drains the first free before its own.
        // SAFETY: as above.
        assert_eq!(
            unsafe { heap.free(small_block) },
            Err(Error::DoubleFree { addr: a.0 })
        );
        let s = heap.stats();
        assert_eq!((s.misuses_caught, s.live_blocks), (3, 0), "{s}");
        heap.check().unwrap();
    }
}

#[test]
fn a_block_freed_on_another_thread_then_by_its_owner_is_a_double_free() {
    let _serial = SET_UP.lock();
    let heap = GlobalHeap::with_config(small().small_pages(true));
    // Neighbours on the same page keep it in use, so the owner's second free takes its fast
    // path, which must not free a block that waits for the drain. (A class's first few
    // blocks come from the engine, before it gets a page.)
    let ps: Vec<_> = (0..40).map(|_| heap.alloc(48).unwrap()).collect();
    let a = exposed(ps[30]);
    // SAFETY: live, freed once on another thread.
    unsafe { free_elsewhere(&heap, a) }.unwrap();
    // SAFETY: the misuse under test, judged before anything is written.
    assert_eq!(
        unsafe { heap.free(ps[30]) },
        Err(Error::DoubleFree { addr: a.0 })
    );
    let s = heap.stats();
    assert_eq!((s.misuses_caught, s.live_blocks), (1, 39), "{s}");
    heap.check().unwrap();
    for (i, &p) in ps.iter().enumerate() {
        if i != 30 {
            // SAFETY: live, freed once.
            unsafe { heap.free(p) }.unwrap();
        }
    }
    assert_eq!(heap.stats().live_blocks, 0);
}

/// Runs `misuse` in a child process (this test binary, re-run on `test` alone) and checks
/// that the child aborted with a report that contains `report`.
#[cfg(not(miri))]
fn aborts_with(test: &str, report: &str, misuse: impl FnOnce()) {
    const CHILD: &str = "STRATA_GLOBAL_ABORT_CHILD";
    if std::env::var_os(CHILD).is_some() {
        misuse();
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &format!("sync::global::tests::{test}"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{err}");
    assert!(err.contains(report), "{err}");
}

#[cfg(not(miri))]
#[test]
fn a_double_free_from_two_threads_after_the_owner_drained_aborts_at_the_next_drain() {
    aborts_with(
        "a_double_free_from_two_threads_after_the_owner_drained_aborts_at_the_next_drain",
        "double free of",
        || {
            let heap = GlobalHeap::with_config(small());
            let p = heap.alloc(48).unwrap();
            let a = exposed(p);
            let heap = &heap;
            // SAFETY: live, freed once on another thread.
            unsafe { free_elsewhere(heap, a) }.unwrap();
            // The owner drains: the block is free now.
            let q = heap.alloc(2000).unwrap();
            assert_eq!(heap.stats().live_blocks, 1);
            // SAFETY: the misuse under test: pushed (the bit was taken), judged at the drain.
            unsafe { free_elsewhere(heap, a) }.unwrap();
            // SAFETY: live, freed once: the owner's fast free, which does not drain.
            unsafe { heap.free(q) }.unwrap();
            // The next drain (here a check's, which intrudes) aborts.
            let _ = heap.check();
            unreachable!("the drain did not judge the second free");
        },
    );
}

#[cfg(not(miri))]
#[test]
fn an_interior_pointer_freed_on_another_thread_aborts_at_the_drain() {
    aborts_with(
        "an_interior_pointer_freed_on_another_thread_aborts_at_the_drain",
        "invalid pointer",
        || {
            let heap = GlobalHeap::with_config(small());
            let p = heap.alloc(100).unwrap();
            let inner = Addr(exposed(p).0 + 32);
            let heap = &heap;
            // SAFETY: the misuse under test: nothing is written through it; it is pushed.
            unsafe { free_elsewhere(heap, inner) }.unwrap();
            fill(p, 100, 9);
            // The owner's next slow path (a class it has no page for yet) drains, which aborts.
            let _ = heap.alloc(10);
            unreachable!("the drain did not judge the interior pointer");
        },
    );
}

#[test]
fn blocks_produced_on_one_thread_and_consumed_on_another_keep_their_contents() {
    for heap in [
        GlobalHeap::with_config(HeapConfig::default().max_size(64 << 20)),
        GlobalHeap::with_config(HeapConfig::default().max_size(64 << 20)).symmetric(),
    ] {
        let _serial = SET_UP.lock();
        let n = if cfg!(miri) { 30 } else { 100_000 };
        let sizes = [16usize, 40, 100, 333, 1500, 4000];
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Addr, usize, u8)>(64);
        let heap = &heap;
        let peak = std::thread::scope(|s| {
            let producer = s.spawn(move || {
                for i in 0..n {
                    let size = sizes[i % sizes.len()];
                    let p = heap.alloc(size).unwrap();
                    fill(p, size, i as u8);
                    tx.send((exposed(p), size, i as u8)).unwrap();
                }
                heap.stats().managed_bytes
            });
            s.spawn(move || {
                for (a, size, seed) in rx {
                    assert!(holds(a.ptr(), size, seed));
                    // SAFETY: live, freed once, on the thread that does not own it.
                    unsafe { heap.free(a.ptr()) }.unwrap();
                }
            });
            producer.join().unwrap()
        });
        // The producer's drains reuse what the consumer freed: its heap stays small.
        assert!(peak < 8 << 20 || cfg!(miri), "{peak}");
        let s = heap.stats();
        assert_eq!(
            (s.live_blocks, s.bytes_in_use, s.misuses_caught),
            (0, 0, 0),
            "{s}"
        );
        assert_eq!(s.frees, n as u64, "{s}");
        heap.check().unwrap();
    }
}

#[test]
fn stats_count_frees_from_other_threads_the_owner_has_not_drained() {
    let _serial = SET_UP.lock();
    let heap = GlobalHeap::with_config(small());
    let ps: Vec<Addr> = (0..50)
        .map(|i| exposed(heap.alloc(16 + i * 8).unwrap()))
        .collect();
    let (heap, theirs) = (&heap, &ps[..30]);
    std::thread::scope(|s| {
        s.spawn(move || {
            for a in theirs {
                // SAFETY: live, freed once.
                unsafe { heap.free(a.ptr()) }.unwrap();
            }
        });
    });
    // The owner has not run since: stats() drains first, so its counts are exact.
    let s = heap.stats();
    assert_eq!((s.live_blocks, s.frees), (20, 30), "{s}");
    heap.check().unwrap();
    for a in &ps[30..] {
        // SAFETY: live, freed once.
        unsafe { heap.free(a.ptr()) }.unwrap();
    }
    assert_eq!(heap.stats().live_blocks, 0);
}

#[test]
fn blocks_freed_on_another_thread_are_reused_before_the_owner_takes_more_memory() {
    let _serial = SET_UP.lock();
    let heap = GlobalHeap::with_config(small().small_pages(true));
    let heap = &heap;
    let n = if cfg!(miri) { 600 } else { 8000 };
    for round in 0..4u8 {
        // Several pages of one class, all freed by another thread.
        let ps: Vec<Addr> = (0..n)
            .map(|_| {
                let p = heap.alloc(48).unwrap();
                fill(p, 48, round);
                exposed(p)
            })
            .collect();
        let took = heap.stats().managed_bytes;
        std::thread::scope(|s| {
            s.spawn(move || {
                for a in &ps {
                    assert!(holds(a.ptr(), 48, round));
                    // SAFETY: live, freed once.
                    unsafe { heap.free(a.ptr()) }.unwrap();
                }
            });
        });
        // The owner's fast path serves what its current page has left; when that runs
        // out, its slow path drains the frees (pages that empty may go back to the OS, the
        // heap being all but empty then), so the same number of blocks again needs no more
        // memory than the first took.
        let again: Vec<_> = (0..n).map(|_| heap.alloc(48).unwrap()).collect();
        let s = heap.stats();
        assert!(s.managed_bytes <= took, "round {round}: took {took}: {s}");
        assert_eq!((s.live_blocks, s.misuses_caught), (n, 0), "{s}");
        for p in again {
            // SAFETY: live, freed once, on the owner's thread.
            unsafe { heap.free(p) }.unwrap();
        }
    }
    heap.check().unwrap();
}

#[test]
fn a_free_pushed_to_a_thread_that_then_exits_is_drained_by_its_exit() {
    let _serial = SET_UP.lock();
    let heap = std::sync::Arc::new(GlobalHeap::with_config(small()));
    let (to_owner, owner_rx) = std::sync::mpsc::channel::<()>();
    let (to_main, main_rx) = std::sync::mpsc::channel::<Addr>();
    let owner = {
        let heap = heap.clone();
        // Not a scoped thread: joining it waits for its exit destructors too.
        std::thread::spawn(move || {
            let p = heap.alloc(64).unwrap();
            fill(p, 64, 3);
            to_main.send(exposed(p)).unwrap();
            // Idle until the block was freed elsewhere, then exit without a call.
            owner_rx.recv().unwrap();
        })
    };
    let a = main_rx.recv().unwrap();
    assert!(holds(a.ptr(), 64, 3));
    // SAFETY: live, freed once, by a thread that does not own it (and has no heap).
    unsafe { heap.free(a.ptr()) }.unwrap();
    to_owner.send(()).unwrap();
    owner.join().unwrap();
    // The owner exited; its heap, an orphan now, was drained and trimmed on the way.
    let n = heap.heaps();
    assert_eq!(n, 1);
    let s = heap.stats();
    assert_eq!((s.live_blocks, s.frees), (0, 1), "{s}");
    assert!(s.managed_bytes <= GRANULE, "{s}");
}

#[test]
fn a_foreign_pointer_is_caught_on_any_thread() {
    let _serial = SET_UP.lock();
    let heap = GlobalHeap::with_config(small());
    let ours = heap.alloc(64).unwrap();
    let mut elsewhere = [0u8; 64];
    let foreign = Addr::of(NonNull::from(&mut elsewhere).cast::<u8>());
    let inner = exposed(ours);
    let heap = &heap;
    let errs = std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: the misuse under test; the heap validates and writes nothing.
            let e1 = unsafe { heap.free(foreign.ptr()) };
            let e2 = heap.usable_size(foreign.ptr());
            // A pointer off a granule, inside another thread's heap: judged there at once.
            // SAFETY: as above.
            let e3 = unsafe { heap.free(Addr(inner.0 + 8).ptr()) };
            (e1, e2, e3)
        })
        .join()
        .unwrap()
    });
    assert!(
        matches!(errs.0, Err(Error::InvalidPointer { .. })),
        "{errs:?}"
    );
    assert!(
        matches!(errs.1, Err(Error::InvalidPointer { .. })),
        "{errs:?}"
    );
    assert!(
        matches!(errs.2, Err(Error::InvalidPointer { .. })),
        "{errs:?}"
    );
    assert_eq!(elsewhere, [0; 64]);
    // SAFETY: live, freed once.
    unsafe { heap.free(ours) }.unwrap();
    assert_eq!(heap.stats().live_blocks, 0);
}

#[test]
fn short_lived_threads_reuse_heaps_and_leave_nothing_live() {
    let _serial = SET_UP.lock();
    let heap = GlobalHeap::with_config(small());
    let heap = &heap;
    let rounds = if cfg!(miri) { 5 } else { 1000 };
    let mut kept = Vec::new();
    for r in 0..rounds {
        let left = std::thread::scope(|s| {
            s.spawn(move || {
                let ps: Vec<_> = (0..20).map(|i| heap.alloc(16 + i * 40).unwrap()).collect();
                for (i, &p) in ps.iter().enumerate() {
                    fill(p, 16 + i * 40, r as u8);
                }
                // One block outlives its thread, freed later from the main thread.
                for &p in &ps[1..] {
                    // SAFETY: live, freed once.
                    unsafe { heap.free(p) }.unwrap();
                }
                exposed(ps[0])
            })
            .join()
            .unwrap()
        });
        assert!(holds(left.ptr(), 16, r as u8));
        kept.push((left, r as u8));
    }
    // Threads ran one at a time: each adopted the heap the one before left.
    assert!(heap.heaps() <= 2, "{} heaps", heap.heaps());
    for &(a, r) in &kept {
        assert!(holds(a.ptr(), 16, r));
        // SAFETY: live, freed once, from a thread that does not own it.
        unsafe { heap.free(a.ptr()) }.unwrap();
    }
    let s = heap.stats();
    assert_eq!(
        (s.live_blocks, s.allocations),
        (0, 20 * rounds as u64),
        "{s}"
    );
    // The orphan was left empty: every page it took went back to the OS (a heap keeps its
    // reservation for its life, and its break may keep a free block in its first page, which
    // is released with the others but not counted out of the span).
    assert!(s.managed_bytes < 4096, "{s}");
    assert_eq!(s.bytes_from_os, s.bytes_to_os, "{s}");
    heap.check().unwrap();
}

#[test]
fn a_heap_emptied_on_its_fast_path_gives_its_memory_back() {
    let _serial = SET_UP.lock();
    let heap = GlobalHeap::with_config(HeapConfig::default().max_size(64 << 20).small_pages(true));
    let mut rng = crate::test_rng::Rng::new(6);
    // A page in each of many classes, each its class's current page, kept when it empties
    // (pages are all the heap holds, so it stays busy) until the very last free: that one
    // finds the heap holding nothing and gives everything back, though the fast path takes
    // the frees before it.
    let per = if cfg!(miri) { 12 } else { 30 };
    let mut ps: Vec<NonNull<u8>> = (0..40)
        .flat_map(|k| (0..per).map(move |_| 16 + k * 48))
        .map(|n| heap.alloc(n).unwrap())
        .collect();
    assert!(heap.stats().managed_bytes > 1 << 20, "{}", heap.stats());
    while !ps.is_empty() {
        let p = ps.swap_remove(rng.range(0, ps.len()));
        // SAFETY: live, freed once.
        unsafe { heap.free(p) }.unwrap();
    }
    let s = heap.stats();
    assert_eq!(s.live_blocks, 0, "{s}");
    assert!(s.managed_bytes < 64 << 10, "{s}");
    heap.check().unwrap();
}

#[test]
fn a_heap_its_thread_empties_gives_its_memory_back_before_the_thread_exits() {
    let _serial = SET_UP.lock();
    let heap = GlobalHeap::with_config(HeapConfig::default().max_size(64 << 20));
    let heap = &heap;
    let n = if cfg!(miri) { 100 } else { 4000 };
    let (full, emptied) = std::thread::scope(|s| {
        s.spawn(move || {
            let ps: Vec<_> = (0..n).map(|i| heap.alloc(16 + i % 300).unwrap()).collect();
            for (i, &p) in ps.iter().enumerate() {
                fill(p, 16 + i % 300, i as u8);
            }
            let full = heap.stats().managed_bytes;
            for (i, &p) in ps.iter().enumerate() {
                assert!(holds(p, 16 + i % 300, i as u8));
                // SAFETY: live, freed once, by its owner.
                unsafe { heap.free(p) }.unwrap();
            }
            (full, heap.stats())
        })
        .join()
        .unwrap()
    });
    assert!(full > 256 << 10 || cfg!(miri), "{full}");
    assert_eq!(emptied.live_blocks, 0);
    assert!(
        emptied.managed_bytes < 64 << 10 || cfg!(miri),
        "an emptied heap kept {emptied}"
    );
}
