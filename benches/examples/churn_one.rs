//! One contender of the churn (benches/examples/churn.rs) alone, for instruction counts under
//! `valgrind --tool=callgrind`: the other contenders' work would only blur the profile.
//!
//! `cargo run --release -p strata-benches --example churn_one -- [arena|heap|system] [steps]`

use std::alloc::Layout;
use std::hint::black_box;

use allocator_api2::alloc::{Allocator, Global};
use strata_alloc::{Arena, Heap};
use strata_benches::Rng;

const LIVE: usize = 100;

fn churn<A: Allocator>(a: A, steps: usize) {
    let mut rng = Rng::new(0x5eed);
    let layout = |s| Layout::from_size_align(s, 16).unwrap();
    let mut live = Vec::with_capacity(LIVE);
    for _ in 0..LIVE {
        let s = rng.range(16, 513);
        live.push((a.allocate(layout(s)).expect("alloc"), s));
    }
    for _ in 0..steps {
        let i = rng.range(0, LIVE);
        let (p, s) = live[i];
        // SAFETY: `p` was allocated by `a` with this layout and is freed once.
        unsafe { a.deallocate(p.cast(), layout(s)) };
        let s = rng.range(16, 513);
        let p = a.allocate(layout(s)).expect("alloc");
        // SAFETY: `p` has at least `s >= 16` bytes.
        unsafe { p.cast::<u8>().as_ptr().write(1) };
        live[i] = (p, s);
    }
    for (p, s) in live {
        // SAFETY: as above.
        unsafe { a.deallocate(black_box(p).cast(), layout(s)) };
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let who = args.get(1).map_or("arena", String::as_str);
    let steps: usize = args.get(2).map_or(200_000, |s| s.parse().expect("steps"));
    match who {
        "arena" => {
            let arena = Arena::new().expect("arena");
            churn(&arena, steps);
            arena.check().expect("arena check");
        }
        "heap" => {
            let heap = Heap::new().expect("heap");
            churn(&heap, steps);
            heap.check().expect("heap check");
        }
        _ => churn(Global, steps),
    }
}
