//! Attack programs against a Heap with small-object pages: see `fuzz/src/driver.rs` for the
//! actions and the invariants. `fuzz/run.sh heap_pages SECONDS` runs it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_alloc_fuzz::driver::run_heap_pages(data));
