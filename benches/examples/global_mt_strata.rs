//! The multi-threaded global-allocator workloads of issue 19 with `strata` as the
//! `#[global_allocator]`; the `global_mt_*` examples differ only in that line.
//!
//! `cargo run --release -p strata-benches --example global_mt_strata -- [threads|short|all]`

#[global_allocator]
static GLOBAL: strata_alloc::GlobalHeap = strata_alloc::GlobalHeap::new();

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    strata_benches::global_workload::run_mt("strata", &mode);
}
