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
