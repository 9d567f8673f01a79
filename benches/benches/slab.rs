//! SlabPool alloc+free pairs of 16..256 bytes against the crate's Heap (its small bins) and
//! `std::alloc::System` (mimalloc and jemalloc for context), in the same run, so the ratios are
//! what to quote.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo bench -p strata-benches --bench slab --
//!       --warm-up-time 1 --measurement-time 3`

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mimalloc::MiMalloc;
use strata_alloc::{Heap, SlabPool};
use tikv_jemallocator::Jemalloc;

const SIZES: [usize; 5] = [16, 32, 64, 128, 256];

/// A fixed pseudo-random sequence of sizes in 16..=256, so every peer sees the same requests.
fn mixed_sizes(n: usize) -> Vec<usize> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            16 + (x % 241) as usize
        })
        .collect()
}

/// One alloc+free pair through a `GlobalAlloc` peer.
#[inline]
fn global_pair<G: GlobalAlloc>(g: &G, size: usize) {
    let layout = Layout::from_size_align(size, 16).unwrap();
    // SAFETY: a non-zero layout; the block is freed right away with the same layout.
    unsafe {
        let p = g.alloc(layout);
        assert!(!p.is_null());
        g.dealloc(black_box(p), layout);
    }
}

fn pairs(c: &mut Criterion) {
    let mut group = c.benchmark_group("slab_pair");
    for size in SIZES {
        let pool = SlabPool::new();
        group.bench_with_input(BenchmarkId::new("SlabPool", size), &size, |b, &s| {
            b.iter(|| {
                let p = pool.alloc(black_box(s)).unwrap();
                // SAFETY: `p` is ours and unused after this.
                unsafe { pool.free(black_box(p)).unwrap() };
            })
        });
        group.bench_with_input(
            BenchmarkId::new("SlabPool-Allocator", size),
            &size,
            |b, &s| {
                let a = &pool;
                b.iter(|| {
                    let layout = Layout::from_size_align(black_box(s), 8).unwrap();
                    let p = a.allocate(layout).unwrap();
                    // SAFETY: `p` is ours, freed once with its layout.
                    unsafe { a.deallocate(black_box(p.cast()), layout) };
                })
            },
        );
        let heap = Heap::new().unwrap();
        group.bench_with_input(BenchmarkId::new("Heap", size), &size, |b, &s| {
            b.iter(|| {
                let p = heap.alloc(black_box(s)).unwrap();
                // SAFETY: `p` is ours and unused after this.
                unsafe { heap.free(black_box(p)).unwrap() };
            })
        });
        group.bench_with_input(BenchmarkId::new("System", size), &size, |b, &s| {
            b.iter(|| global_pair(&System, black_box(s)))
        });
        group.bench_with_input(BenchmarkId::new("mimalloc", size), &size, |b, &s| {
            b.iter(|| global_pair(&MiMalloc, black_box(s)))
        });
        group.bench_with_input(BenchmarkId::new("jemalloc", size), &size, |b, &s| {
            b.iter(|| global_pair(&Jemalloc, black_box(s)))
        });
    }
    group.finish();
}

fn mixed_pairs(c: &mut Criterion) {
    let sizes = mixed_sizes(1024);
    let mut group = c.benchmark_group("slab_pair_mixed_16_256");
    let pool = SlabPool::new();
    group.bench_function("SlabPool", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 1023;
            let p = pool.alloc(black_box(sizes[i])).unwrap();
            // SAFETY: `p` is ours and unused after this.
            unsafe { pool.free(black_box(p)).unwrap() };
        })
    });
    let heap = Heap::new().unwrap();
    group.bench_function("Heap", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 1023;
            let p = heap.alloc(black_box(sizes[i])).unwrap();
            // SAFETY: `p` is ours and unused after this.
            unsafe { heap.free(black_box(p)).unwrap() };
        })
    });
    group.bench_function("System", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 1023;
            global_pair(&System, black_box(sizes[i]))
        })
    });
    group.bench_function("mimalloc", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 1023;
            global_pair(&MiMalloc, black_box(sizes[i]))
        })
    });
    group.finish();
}

/// 1000 live blocks of mixed sizes, then freed in a scrambled order: batches fill, bitmaps
/// are searched past full words, and frees land in many batches.
fn churn(c: &mut Criterion) {
    const N: usize = 1000;
    let sizes = mixed_sizes(N);
    // Free order: a stride permutation coprime with N.
    let order: Vec<usize> = (0..N).map(|i| (i * 617) % N).collect();
    let mut group = c.benchmark_group("slab_1000_live_mixed_16_256");
    let pool = SlabPool::new();
    let mut held: Vec<NonNull<u8>> = Vec::with_capacity(N);
    group.bench_function("SlabPool", |b| {
        b.iter(|| {
            held.extend(sizes.iter().map(|&s| pool.alloc(s).unwrap()));
            for &k in &order {
                // SAFETY: each block is ours and freed once.
                unsafe { pool.free(held[k]).unwrap() };
            }
            held.clear();
        })
    });
    let heap = Heap::new().unwrap();
    group.bench_function("Heap", |b| {
        b.iter(|| {
            held.extend(sizes.iter().map(|&s| heap.alloc(s).unwrap()));
            for &k in &order {
                // SAFETY: each block is ours and freed once.
                unsafe { heap.free(held[k]).unwrap() };
            }
            held.clear();
        })
    });
    let mut raw: Vec<(*mut u8, Layout)> = Vec::with_capacity(N);
    group.bench_function("System", |b| {
        b.iter(|| {
            for &s in &sizes {
                let layout = Layout::from_size_align(s, 16).unwrap();
                // SAFETY: non-zero layout; freed below with the same layout.
                raw.push((unsafe { System.alloc(layout) }, layout));
            }
            for &k in &order {
                let (p, layout) = raw[k];
                // SAFETY: allocated above with `layout`, freed once.
                unsafe { System.dealloc(p, layout) };
            }
            raw.clear();
        })
    });
    group.finish();
}

criterion_group!(benches, pairs, mixed_pairs, churn);
criterion_main!(benches);
