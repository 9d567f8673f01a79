//! The multi-threaded global-allocator workloads of issue 19 with `system` as the
//! `#[global_allocator]`; the `global_mt_*` examples differ only in that line.
//!
//! `cargo run --release -p strata-benches --example global_mt_system -- [threads|short|all]`

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    strata_benches::global_workload::run_mt("system", &mode);
}
