//! The multi-threaded global-allocator workloads of issue 19 with `strata` as the
//! `#[global_allocator]`; the `global_mt_*` examples differ only in that line.
//!
//! `cargo run --release -p strata-benches --example global_mt_strata -- [threads|short|all]`

#[global_allocator]
static GLOBAL: strata_alloc::GlobalHeap = strata_alloc::GlobalHeap::new();

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    // One batch of short-lived threads first, so that whatever main keeps for the rest of
    // its life (the stdout buffer, std's thread bookkeeping) is live before the count.
    strata_benches::global_workload::short_lived_threads(8, 8, 1 << 10);
    println!("strata: warmed up");
    let before = GLOBAL.stats().live_blocks;
    strata_benches::global_workload::run_mt("strata", &mode);
    GLOBAL.check().expect("check after the workloads");
    println!(
        "strata: live blocks in stats(): {before} before the workloads, {} after",
        GLOBAL.stats().live_blocks
    );
}
