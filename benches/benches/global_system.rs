//! `std::alloc::System` (glibc malloc) as the process's `#[global_allocator]`, on the same
//! shared workload as `global_strata`.

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() {
    let mut c = strata_benches::criterion();
    strata_benches::global_workload::bench(&mut c, "system");
    c.final_summary();
}
