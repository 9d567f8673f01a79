//! The alloc/free churn of issue 18: 100 live blocks; each step frees a random one and
//! allocates a block of 16..=512 bytes in its place. Every contender runs the same steps
//! (same seed), in interleaved rounds so that a noisy spell of the machine hits all of them;
//! the report gives each round's ns per step and the ratios against glibc (`System`).
//!
//! `cargo run --release -p strata-benches --example churn -- [rounds] [steps]`

use std::alloc::Layout;
use std::hint::black_box;
use std::time::Instant;

use allocator_api2::alloc::Allocator;
use strata_alloc::{Arena, Heap};
use strata_benches::Rng;
use strata_benches::contenders::{self, BenchAlloc};

/// Any `Allocator` (here `&Heap` and `&Arena`) driven through the trait, as collections do.
struct ApiAlloc<A>(A);

impl<A: Allocator> BenchAlloc for ApiAlloc<A> {
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        self.0
            .allocate(layout)
            .map_or(std::ptr::null_mut(), |p| p.as_ptr().cast())
    }
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract: `ptr` was allocated here with `layout`.
        unsafe {
            self.0
                .deallocate(std::ptr::NonNull::new_unchecked(ptr), layout)
        }
    }
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = Layout::from_size_align(new_size, layout.align()).expect("layout");
        // SAFETY: forwarded contract.
        let r = unsafe {
            let p = std::ptr::NonNull::new_unchecked(ptr);
            if new_size >= layout.size() {
                self.0.grow(p, layout, new)
            } else {
                self.0.shrink(p, layout, new)
            }
        };
        r.map_or(std::ptr::null_mut(), |p| p.as_ptr().cast())
    }
}

const LIVE: usize = 100;

fn churn<A: BenchAlloc>(a: &mut A, steps: usize) -> f64 {
    let mut rng = Rng::new(0x5eed);
    let mut live: Vec<(*mut u8, usize)> = Vec::with_capacity(LIVE);
    let layout = |s| Layout::from_size_align(s, 16).unwrap();
    // SAFETY: every pointer freed was allocated by `a` with the layout it is freed with, once.
    unsafe {
        for _ in 0..LIVE {
            let s = rng.range(16, 513);
            let p = a.alloc(layout(s));
            assert!(!p.is_null());
            p.write(1);
            live.push((p, s));
        }
        let t = Instant::now();
        for _ in 0..steps {
            let i = rng.range(0, LIVE);
            let (p, s) = live[i];
            a.dealloc(p, layout(s));
            let s = rng.range(16, 513);
            let p = a.alloc(layout(s));
            assert!(!p.is_null());
            p.write(1);
            live[i] = (p, s);
        }
        let ns = t.elapsed().as_nanos() as f64 / steps as f64;
        for (p, s) in live {
            a.dealloc(black_box(p), layout(s));
        }
        ns
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).map_or(5, |s| s.parse().expect("rounds"));
    let steps: usize = args
        .get(2)
        .map_or(10_000_000, |s| s.parse().expect("steps"));
    let names = ["system", "mimalloc", "strata_heap", "strata_arena"];
    let mut all: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for round in 0..rounds {
        let heap = Heap::new().expect("heap");
        let arena = Arena::new().expect("arena");
        let t = [
            churn(&mut contenders::system(), steps),
            churn(&mut contenders::mimalloc(), steps),
            churn(&mut ApiAlloc(&heap), steps),
            churn(&mut ApiAlloc(&arena), steps),
        ];
        assert_eq!(heap.stats().live_blocks, 0);
        assert_eq!(arena.stats().live_blocks, 0);
        heap.check().expect("heap check");
        arena.check().expect("arena check");
        print!("round {round}:");
        for (i, ns) in t.iter().enumerate() {
            print!("  {} {ns:.2} ns ({:.2}x)", names[i], t[0] / ns);
            all[i].push(t[0] / ns);
        }
        println!();
    }
    println!(
        "ratio to System (time of System / time of contender), min..median..max over {rounds} rounds:"
    );
    for (i, r) in all.iter_mut().enumerate() {
        r.sort_by(f64::total_cmp);
        println!(
            "  {:<13} {:.2} .. {:.2} .. {:.2}",
            names[i],
            r[0],
            r[r.len() / 2],
            r[r.len() - 1]
        );
    }
}
