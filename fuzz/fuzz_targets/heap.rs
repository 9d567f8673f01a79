//! Attack programs against the Heap: see `fuzz/src/driver.rs` for the actions and the
//! invariants. `fuzz/run.sh heap SECONDS` runs it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_alloc_fuzz::driver::run_heap(data));
