//! GlobalHeap as the process's `#[global_allocator]`, on the shared std workload
//! (`strata_benches::global_workload`). Compare with the `global_system` binary: run both in
//! one command, `cargo bench -p strata-benches --bench global_strata --bench global_system`.

#[global_allocator]
static GLOBAL: strata_alloc::GlobalHeap = strata_alloc::GlobalHeap::new();

fn main() {
    let mut c = strata_benches::criterion();
    strata_benches::global_workload::bench(&mut c, "strata_globalheap");
    c.final_summary();
    if strata_benches::report_wanted("global") {
        let s = GLOBAL.stats();
        println!(
            "GlobalHeap after the run: peak in use {} MiB, taken from OS {} MiB, given back {} MiB, break growths {}, shrinks {}",
            s.peak_bytes_in_use >> 20,
            s.bytes_from_os >> 20,
            s.bytes_to_os >> 20,
            s.break_growths,
            s.break_shrinks
        );
    }
}
