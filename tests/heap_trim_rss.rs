//! Memory goes back to the OS. Resident memory is per process, so this test has a binary to
//! itself: no other test allocates while it measures.

#[path = "../src/test_rng.rs"]
mod test_rng;

use strata_alloc::Heap;
use test_rng::Rng;

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * strata_alloc::page_size()
}

#[test]
fn freed_memory_goes_back_to_the_os() {
    let heap = Heap::new().unwrap();
    let before = resident_bytes();
    let mut rng = Rng::new(11);
    let mut blocks = std::vec::Vec::new();
    let mut total = 0;
    while total < 256 << 20 {
        let len = rng.range(1 << 10, 100 << 10);
        let p = heap.alloc(len).unwrap();
        // SAFETY: touch every page so it is resident.
        unsafe { p.as_ptr().write_bytes(1, len) };
        blocks.push(p);
        total += len;
    }
    let peak = resident_bytes();
    assert!(peak > before + (200 << 20), "the blocks should be resident");
    // Free in random order.
    while !blocks.is_empty() {
        let p = blocks.swap_remove(rng.range(0, blocks.len()));
        // SAFETY: live, freed once.
        unsafe { heap.free(p) }.unwrap();
    }
    heap.check().unwrap();
    let after = resident_bytes();
    assert!(
        after < before + (8 << 20),
        "resident before {before}, peak {peak}, after {after}"
    );
    let s = heap.stats();
    assert!(s.bytes_to_os >= 250 << 20 && s.break_shrinks > 0, "{s}");
}
