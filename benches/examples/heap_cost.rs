//! What an empty `Heap` costs (issue 17): creating and dropping one against a `Vec` with one
//! element allocated through glibc, the memory a live empty heap keeps resident, how many can
//! be alive at once, and the time to reject a foreign pointer and to check an empty heap.
//!
//! `cargo run --release -p strata-benches --example heap_cost -- [heaps]`

use std::hint::black_box;
use std::time::Instant;

use strata_alloc::Heap;

fn rss_kib() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4
}

/// Mean time of `f` over `n` calls, or over as many as fit in a second if that is fewer.
fn per_op(n: usize, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    let mut done = 0;
    while done < n && (done % 64 != 0 || t.elapsed().as_secs() < 1) {
        f();
        done += 1;
    }
    t.elapsed().as_nanos() as f64 / done as f64
}

fn main() {
    let heaps: usize = std::env::args()
        .nth(1)
        .map_or(100_000, |s| s.parse().expect("heaps"));
    for round in 0..3 {
        let n = 200_000;
        let vec_ns = per_op(n, || drop(black_box(vec![black_box(1u64)])));
        let heap_ns = per_op(n, || drop(black_box(Heap::new())));
        let used_ns = per_op(n / 10, || {
            let h = Heap::new().expect("heap");
            let p = h.alloc(black_box(24)).expect("alloc");
            // SAFETY: `p` is live and freed once.
            unsafe { h.free(p).expect("free") };
            drop(black_box(h));
        });
        println!(
            "round {round}: Vec with one element {vec_ns:.0} ns; empty Heap {heap_ns:.0} ns ({:.1}x the Vec); \
             Heap with one alloc+free {used_ns:.0} ns",
            heap_ns / vec_ns
        );
    }
    let before = rss_kib();
    let t = Instant::now();
    let mut alive = Vec::with_capacity(heaps);
    for i in 0..heaps {
        if t.elapsed().as_secs() > 20 {
            println!("stopped after {i} heaps: 20 s spent creating them");
            break;
        }
        match Heap::new() {
            Ok(h) => alive.push(h),
            Err(e) => {
                println!("Heap::new failed after {i} heaps: {e}");
                break;
            }
        }
    }
    println!(
        "{} empty heaps alive: {:.1} KiB resident each, {:.0} ns each to create",
        alive.len(),
        (rss_kib() - before) as f64 / alive.len().max(1) as f64,
        t.elapsed().as_nanos() as f64 / alive.len().max(1) as f64
    );
    drop(alive);
    let heap = Heap::new().expect("heap");
    let local = 0u64;
    let foreign = std::ptr::NonNull::from(&local).cast::<u8>();
    let reject_ns = per_op(1000, || {
        // SAFETY: the point is handing back a pointer the heap never gave out; it is refused
        // before anything is written.
        assert!(unsafe { heap.free(black_box(foreign)) }.is_err());
    });
    let check_ns = per_op(1000, || heap.check().expect("check"));
    println!(
        "rejecting a foreign pointer: {reject_ns:.0} ns; check() of an empty heap: {check_ns:.0} ns"
    );
}
