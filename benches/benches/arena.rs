//! Arena benchmarks (issue 2):
//! - `arena/pair`: one alloc + one free of a size in 16..=512 (pre-generated, cycled), in a
//!   default 64 KiB Arena (checked API and `Allocator` trait) and in `std::alloc::System`.
//! - `arena/pair_live`: the same pair in a 1 MiB Arena holding 10 or 1000 live blocks, packed
//!   (`live`) or with a free hole between every two live blocks (`holes`).
//! - `arena/overlapped`: two blocks allocated, then freed in allocation order, so no free is
//!   of the block allocated last: the pair without the loan fast path (per block: one alloc
//!   and one free).
//! - untimed report: how many 1000-byte blocks fit in a default Arena, and the live payload
//!   fraction at the first failure with sizes uniform in 16..=512.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use criterion::{BenchmarkId, Criterion, Throughput};
use strata_alloc::Arena;
use strata_benches::Rng;

const SIZES: usize = 4096;

fn sizes(seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    (0..SIZES).map(|_| rng.range(16, 513)).collect()
}

fn pair(c: &mut Criterion) {
    let sizes = sizes(7);
    let mut g = c.benchmark_group("arena/pair");
    g.throughput(Throughput::Elements(1));

    let arena = Arena::new().unwrap();
    g.bench_function("strata_arena_checked", |b| {
        let mut i = 0;
        b.iter(|| {
            let p = arena.alloc(sizes[i % SIZES]).unwrap();
            i += 1;
            // SAFETY: live, freed once.
            unsafe { arena.free(black_box(p)).unwrap() };
        })
    });
    assert_eq!(arena.stats().live_blocks, 0);

    g.bench_function("strata_arena_allocator", |b| {
        let a = &arena;
        let mut i = 0;
        b.iter(|| {
            let l = Layout::from_size_align(sizes[i % SIZES], 16).unwrap();
            i += 1;
            let p = a.allocate(l).unwrap().cast::<u8>();
            // SAFETY: live, freed once with its layout.
            unsafe { a.deallocate(black_box(p), l) };
        })
    });

    g.bench_function("system", |b| {
        let mut i = 0;
        b.iter(|| {
            let l = Layout::from_size_align(sizes[i % SIZES], 16).unwrap();
            i += 1;
            // SAFETY: non-zero size; freed once with its layout.
            unsafe {
                let p = System.alloc(l);
                assert!(!p.is_null());
                System.dealloc(black_box(p), l);
            }
        })
    });
    g.finish();
}

fn overlapped(c: &mut Criterion) {
    let sizes = sizes(13);
    let mut g = c.benchmark_group("arena/overlapped");
    g.throughput(Throughput::Elements(2));
    let arena = Arena::new().unwrap();
    g.bench_function("strata_arena_checked", |b| {
        let mut i = 0;
        b.iter(|| {
            let p = arena.alloc(sizes[i % SIZES]).unwrap();
            let q = arena.alloc(sizes[(i + 1) % SIZES]).unwrap();
            i += 2;
            // SAFETY: both live, each freed once.
            unsafe {
                arena.free(black_box(p)).unwrap();
                arena.free(black_box(q)).unwrap();
            }
        })
    });
    assert_eq!(arena.stats().live_blocks, 0);
    g.bench_function("system", |b| {
        let mut i = 0;
        b.iter(|| {
            let l = Layout::from_size_align(sizes[i % SIZES], 16).unwrap();
            let m = Layout::from_size_align(sizes[(i + 1) % SIZES], 16).unwrap();
            i += 2;
            // SAFETY: non-zero sizes; each freed once with its layout.
            unsafe {
                let p = System.alloc(l);
                let q = System.alloc(m);
                assert!(!p.is_null() && !q.is_null());
                System.dealloc(black_box(p), l);
                System.dealloc(black_box(q), m);
            }
        })
    });
    g.finish();
}

fn pair_live(c: &mut Criterion) {
    let sizes = sizes(11);
    let mut g = c.benchmark_group("arena/pair_live");
    g.throughput(Throughput::Elements(1));
    for holes in [false, true] {
        for live in [10usize, 1000] {
            // 1000 blocks of up to 512 bytes (plus as many holes) need more than 64 KiB.
            let arena = Arena::with_capacity(1 << 20).unwrap();
            let mut rng = Rng::new(live as u64);
            let mut kept: Vec<NonNull<u8>> = Vec::new();
            for _ in 0..live {
                kept.push(arena.alloc(rng.range(16, 513)).unwrap());
                if holes {
                    let h = arena.alloc(rng.range(16, 513)).unwrap();
                    kept.push(h);
                }
            }
            if holes {
                // Free every second block: `live` free holes, none adjacent to another.
                let mut i = 0;
                kept.retain(|&p| {
                    i += 1;
                    if i % 2 == 0 {
                        // SAFETY: live, freed once, dropped from `kept`.
                        unsafe { arena.free(p).unwrap() };
                        false
                    } else {
                        true
                    }
                });
            }
            assert_eq!(arena.stats().live_blocks, live);
            let name = if holes { "holes" } else { "live" };
            g.bench_function(BenchmarkId::new(name, live), |b| {
                let mut i = 0;
                b.iter(|| {
                    let p = arena.alloc(sizes[i % SIZES]).unwrap();
                    i += 1;
                    // SAFETY: live, freed once.
                    unsafe { arena.free(black_box(p)).unwrap() };
                })
            });
            arena.check().unwrap();
            for p in kept {
                // SAFETY: live, freed once.
                unsafe { arena.free(p).unwrap() };
            }
        }
    }
    g.finish();
}

/// Untimed: how much of a default Arena can be live payload.
fn utilisation_report() {
    let arena = Arena::new().unwrap();
    let mut n = 0;
    while arena.alloc(1000).is_ok() {
        n += 1;
    }
    println!(
        "arena/utilisation: {n} blocks of 1000 B fit in a default Arena of {} B (target >= 60)",
        arena.capacity()
    );

    let rounds = 50;
    let (mut sum, mut min, mut max) = (0.0f64, f64::MAX, 0.0f64);
    let mut blocks_sum = 0;
    for seed in 0..rounds {
        let arena = Arena::new().unwrap();
        let mut rng = Rng::new(1000 + seed);
        let mut payload = 0usize;
        loop {
            let size = rng.range(16, 513);
            if arena.alloc(size).is_err() {
                break;
            }
            payload += size;
            blocks_sum += 1;
        }
        let f = payload as f64 / arena.capacity() as f64;
        sum += f;
        min = min.min(f);
        max = max.max(f);
    }
    println!(
        "arena/utilisation: sizes uniform in 16..=512, live payload / capacity at the first failure: \
         mean {:.2}% (min {:.2}%, max {:.2}%) over {rounds} seeds, {:.1} blocks per arena (target >= 85%)",
        sum / rounds as f64 * 100.0,
        min * 100.0,
        max * 100.0,
        blocks_sum as f64 / rounds as f64
    );
}

fn main() {
    if strata_benches::report_wanted("arena/utilisation") {
        utilisation_report();
    }
    let mut c = strata_benches::criterion();
    pair(&mut c);
    pair_live(&mut c);
    overlapped(&mut c);
    c.final_summary();
}
