//! Stand-alone trace replay for profiling (perf, callgrind): the recorded malloc trace replayed
//! `reps` times on one allocator, with the best and median time.
//!
//! `cargo run --release -p strata-benches --example trace_loop -- <strata|strata-nopages|talc|system|mimalloc> [reps]`

use std::time::Instant;

use strata_benches::contenders::{self, ArenaMem, BenchAlloc, Strata, Talc};
use strata_benches::trace::{self, Trace};

fn run<A: BenchAlloc>(name: &str, mut a: A, t: &Trace, reps: usize) {
    let mut blocks = Vec::new();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(trace::replay(&mut a, t, &mut blocks));
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "{name:<9} best {:7.1} ms  median {:7.1} ms  ({reps} replays of {} ops)",
        times[0],
        times[reps / 2],
        t.ops.len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let who = args.get(1).map_or("strata", String::as_str);
    let reps: usize = args.get(2).map_or(5, |s| s.parse().expect("reps"));
    let t = trace::load(&trace::default_trace_path()).expect("trace");
    match who {
        "strata" => {
            let mut s = Strata::new();
            let mut blocks = Vec::new();
            trace::replay(&mut s, &t, &mut blocks);
            let st = s.0.stats();
            println!(
                "one replay: {} allocations, {} frees, {} splits, {} coalesces, {} of {} reallocs in place, {} growths, {} shrinks",
                st.allocations,
                st.frees,
                st.splits,
                st.coalesces,
                st.reallocations_in_place,
                st.reallocations,
                st.break_growths,
                st.break_shrinks
            );
            run(who, s, &t, reps)
        }
        "strata-nopages" => {
            let config = strata_alloc::HeapConfig::default().small_pages(false);
            run(who, Strata::with_config(config), &t, reps)
        }
        "talc" => {
            let bytes = (t.peak_live_bytes * 4).max(512 << 20);
            run(who, Talc::new(ArenaMem::new(bytes, false)), &t, reps)
        }
        "system" => run(who, contenders::system(), &t, reps),
        "mimalloc" => run(who, contenders::mimalloc(), &t, reps),
        _ => panic!("unknown contender {who}"),
    }
}
