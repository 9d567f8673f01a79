//! What an empty `Heap` costs (issue 17): creating and dropping one against a `Vec` with one
//! element allocated through glibc, the memory a live empty heap keeps resident, how many can
//! be alive at once, and the time to reject a foreign pointer and to check an empty heap.
//!
//! `cargo run --release -p strata-benches --example heap_cost -- [heaps]`; under an
//! address-space limit: `(ulimit -v 4000000; target/release/examples/heap_cost)`.

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
        // Each figure is the median of 9 interleaved measurements of a few milliseconds,
        // so that one preemption on a shared machine does not decide a round.
        let (mut vecs, mut heaps_ns) = (Vec::new(), Vec::new());
        for _ in 0..9 {
            vecs.push(per_op(n, || drop(black_box(vec![black_box(1u64)]))));
            heaps_ns.push(per_op(n, || drop(black_box(Heap::new()))));
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (vec_ns, heap_ns) = (median(&mut vecs), median(&mut heaps_ns));
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
    // Heaps that each hold one small block have reserved their space: how many fit, and what
    // the later ones settle for once the address space runs short.
    let t = Instant::now();
    let mut used = Vec::new();
    let mut stop = String::from("all made");
    while used.len() < heaps {
        if t.elapsed().as_secs() > 20 {
            stop = "20 s spent".into();
            break;
        }
        let h = Heap::new().expect("heap");
        match h.alloc(24) {
            Ok(p) => used.push((h, p)),
            Err(e) => {
                stop = format!("the next failed: {e}");
                break;
            }
        }
    }
    let smallest = used
        .iter()
        .map(|(h, _)| h.stats().max_size)
        .min()
        .unwrap_or(0);
    println!(
        "{} heaps with one block alive ({stop}); the last one's max_size {} MiB, the smallest {} MiB",
        used.len(),
        used.last().map_or(0, |(h, _)| h.stats().max_size >> 20),
        smallest >> 20
    );
    drop(used);
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
    // The same with mapped blocks alive: the large-block table grows with them, and a pointer
    // outside every mapping is still rejected without a scan.
    for mapped in [100usize, 10_000] {
        let heap = Heap::new().expect("heap");
        let blocks: Vec<_> = (0..mapped)
            .map(|_| heap.alloc(black_box(200 << 10)).expect("alloc"))
            .collect();
        let reject_ns = per_op(1000, || {
            // SAFETY: as above: refused before anything is written.
            assert!(unsafe { heap.free(black_box(foreign)) }.is_err());
        });
        let lookup_ns = per_op(1000, || {
            assert!(heap.usable_size(black_box(blocks[mapped / 2])).is_ok());
        });
        let check_ns = per_op(100, || heap.check().expect("check"));
        println!(
            "{mapped} mapped blocks: rejecting a foreign pointer {reject_ns:.0} ns; \
             finding a mapped block {lookup_ns:.0} ns; check() {check_ns:.0} ns"
        );
        for p in blocks {
            // SAFETY: live, freed once.
            unsafe { heap.free(p).expect("free") };
        }
    }
}
