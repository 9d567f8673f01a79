//! The std workload of the global-allocator comparison, shared by the `global_strata` and
//! `global_system` bench binaries so that the only difference between them is their
//! `#[global_allocator]`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use criterion::Criterion;

use crate::Rng;

/// Entries in the map.
pub const ENTRIES: usize = 1_000_000;

/// Builds a `BTreeMap<String, Vec<u8>>` of `n` entries (16-hex-digit random keys, values of
/// 0..128 bytes) and drops it. Returns the map's length before the drop.
pub fn btree_build_drop(n: usize, seed: u64) -> usize {
    let mut rng = Rng::new(seed);
    let mut map: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for _ in 0..n {
        let key = format!("{:016x}", rng.next_u64());
        let len = rng.range(0, 128);
        map.insert(key, vec![len as u8; len]);
    }
    let len = black_box(&map).len();
    drop(map);
    len
}

/// Registers the benchmark `global/btreemap_1M/<name>`; `name` is the binary's allocator.
pub fn bench(c: &mut Criterion, name: &str) {
    // Let the allocator reach its steady state (and GlobalHeap set itself up) untimed.
    btree_build_drop(ENTRIES / 10, 1);
    let mut group = c.benchmark_group("global/btreemap_1M");
    group.sample_size(10);
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(btree_build_drop(ENTRIES, 42));
            }
            start.elapsed()
        })
    });
    group.finish();
}

/// The multi-threaded std workload of issue 19: `threads` threads each build and drop a map
/// of `n` entries ([`btree_build_drop`]) at the same time; returns the wall time in ms.
pub fn threads_build_drop(threads: usize, n: usize) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || black_box(btree_build_drop(n, 42 + t as u64)));
        }
    });
    start.elapsed().as_secs_f64() * 1e3
}

/// Short-lived threads (issue 19): `threads` threads one after another (at most `at_once`
/// running), each allocating `bytes` in small blocks (16..=256 bytes) and freeing them, then
/// joined. Returns the wall time in ms.
pub fn short_lived_threads(threads: usize, at_once: usize, bytes: usize) -> f64 {
    let start = Instant::now();
    let mut started = 0;
    while started < threads {
        let batch = at_once.min(threads - started);
        std::thread::scope(|s| {
            for t in 0..batch {
                s.spawn(move || {
                    let mut rng = Rng::new((started + t) as u64);
                    let mut blocks: Vec<Box<[u8]>> = Vec::new();
                    let mut total = 0;
                    while total < bytes {
                        let len = rng.range(16, 257);
                        blocks.push(vec![len as u8; len].into_boxed_slice());
                        total += len;
                    }
                    black_box(&blocks);
                });
            }
        });
        started += batch;
    }
    start.elapsed().as_secs_f64() * 1e3
}

/// Peak resident memory of this process in KiB (getrusage's `ru_maxrss`).
pub fn peak_rss_kib() -> i64 {
    // SAFETY: an all-zero `rusage` is a valid value, and getrusage only writes the struct.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_maxrss
    }
}

/// The body of the `global_mt_*` examples: `mode` is `threads` (the std workload at 1, 2, 8
/// and 16 threads), `short` (10,000 short-lived threads) or `all`; `name` labels the lines.
pub fn run_mt(name: &str, mode: &str) {
    if mode == "threads" || mode == "all" {
        // Warm up (and let a lazily built allocator set itself up) untimed.
        threads_build_drop(2, ENTRIES / 20);
        for threads in [1, 2, 8, 16] {
            let n = ENTRIES / 4;
            let mut times: Vec<f64> = (0..3).map(|_| threads_build_drop(threads, n)).collect();
            times.sort_by(f64::total_cmp);
            println!(
                "{name}: {threads:>2} threads x {n} entries: best {:.1} ms, median {:.1} ms, {:.2} M entries/s",
                times[0],
                times[1],
                (threads * n) as f64 / times[1] / 1e3
            );
        }
    }
    if mode == "short" || mode == "all" {
        let ms = short_lived_threads(10_000, 8, 1 << 20);
        println!(
            "{name}: 10000 short-lived threads x 1 MiB: {ms:.0} ms, peak RSS {} MiB",
            peak_rss_kib() >> 10
        );
    }
}
