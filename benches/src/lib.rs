//! Shared helpers for the strata-alloc benchmarks: a PRNG, one allocation interface over every
//! contender (so all of them run the identical loop), talc's size/alignment generators, the
//! trace reader and the std workload of the global-allocator comparison.
//!
//! The contenders are driven through [`BenchAlloc`], which takes `&mut self`: the arena
//! allocators (talc, rlsf, linked_list_allocator) are used without a lock, as the strata `Heap`
//! is (it is `!Sync` and takes no lock), while `System` and mimalloc are what a program gets.

#![allow(clippy::missing_safety_doc)]

pub mod buffers;
pub mod contenders;
pub mod global_workload;
pub mod random_actions;
pub mod trace;

use std::time::Duration;

use criterion::Criterion;

/// A small, fast, deterministic PRNG (wyrand). Every contender in a group gets the same seed,
/// so they all see the same request stream.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    #[inline(always)]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        (t >> 64) as u64 ^ t as u64
    }

    /// Uniform in `lo..hi` (`hi > lo`), by multiply-shift (bias is negligible for bench use).
    #[inline(always)]
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        debug_assert!(hi > lo);
        lo + ((u128::from(self.next_u64()) * (hi - lo) as u128) >> 64) as usize
    }
}

/// talc's request-size distribution: `uniform[4, cap)` with `cap = uniform[16, max)`, which
/// leans towards small sizes.
#[inline(always)]
pub fn talc_size(rng: &mut Rng, max: usize) -> usize {
    let cap = rng.range(16, max);
    rng.range(4, cap)
}

/// talc's alignment distribution: `8 << (trailing_zeros(random u16) / 2)`: 75% 8, 19% 16, ...
/// up to 2048.
#[inline(always)]
pub fn talc_align(rng: &mut Rng) -> usize {
    8 << ((rng.next_u64() as u16).trailing_zeros() / 2)
}

/// Criterion with the short settings this shared 2-core machine needs; command-line options
/// (`--warm-up-time`, `--measurement-time`, a filter...) still override them.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args()
}

/// True when this run is `cargo bench` (criterion gets `--bench`), not `cargo test --benches`,
/// and the command-line filter (if any) is a substring of `name`. Used to gate the untimed
/// reports (utilisation, heap efficiency) that run beside the criterion groups.
pub fn report_wanted(name: &str) -> bool {
    // Criterion options that take a value; their values are not filters.
    const VALUED: &[&str] = &[
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--profile-time",
        "--load-baseline",
        "--color",
        "-c",
        "--output-format",
        "--plotting-backend",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--nresamples",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        return false;
    }
    let mut filters = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if VALUED.contains(&a.as_str()) {
            i += 2;
            continue;
        }
        if !a.starts_with('-') {
            filters.push(a.clone());
        }
        i += 1;
    }
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}
