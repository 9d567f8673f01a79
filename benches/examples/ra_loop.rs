//! Stand-alone random actions for profiling (perf, callgrind): a fixed number of steps, so every
//! contender ends with the same live set, and the page faults the run took.
//!
//! `cargo run --release -p strata-benches --example ra_loop -- <strata|strata-nopages|talc|rlsf|system|mimalloc> <max> <steps>`

use std::time::Instant;

use strata_benches::contenders::{self, ArenaMem, BenchAlloc, Rlsf, Strata, Talc};
use strata_benches::random_actions::{self, State};

fn minor_faults() -> i64 {
    // SAFETY: an all-zero `rusage` is a valid value, and getrusage only writes the struct it
    // is given.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_minflt
    }
}

/// Resident memory of this process in MiB, from /proc/self/statm.
fn rss_mib() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (pages * 4096) >> 20
}

fn run<A: BenchAlloc>(name: &str, mut a: A, max: usize, steps: usize, report: impl Fn(&A)) {
    let mut st = State::new(max);
    // Warm up as criterion does, then measure.
    random_actions::steps(&mut a, &mut st, max, steps / 4);
    let faults = minor_faults();
    let t = Instant::now();
    random_actions::steps(&mut a, &mut st, max, steps);
    let ns = t.elapsed().as_nanos() as f64 / steps as f64;
    let faults = minor_faults() - faults;
    let (reallocs, moved, copied) = (st.reallocs, st.moved, st.copied);
    let bytes: usize = st.live.iter().map(|(_, l)| l.size()).sum();
    // The address range the live blocks spread over: a proxy of the footprint for contenders
    // that report no statistics.
    let lo = st.live.iter().map(|(p, _)| *p as usize).min().unwrap_or(0);
    let hi = st
        .live
        .iter()
        .map(|(p, l)| *p as usize + l.size())
        .max()
        .unwrap_or(0);
    println!(
        "{name:<9} max={max:<6} {ns:7.1} ns/step  {:.4} faults/step  live {} blocks, {} MiB requested over {} MiB, {} failed, RSS {} MiB",
        faults as f64 / steps as f64,
        st.live.len(),
        bytes >> 20,
        (hi - lo) >> 20,
        st.failures,
        rss_mib()
    );
    println!(
        "          {:.1}% of {} reallocs moved, {:.0} bytes copied per step",
        100.0 * moved as f64 / reallocs.max(1) as f64,
        reallocs,
        copied as f64 / (steps + steps / 4) as f64
    );
    report(&a);
    st.drain(&mut a);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let who = args.get(1).map_or("strata", String::as_str);
    let max: usize = args.get(2).map_or(30000, |s| s.parse().expect("max"));
    let steps: usize = args.get(3).map_or(5_000_000, |s| s.parse().expect("steps"));
    const ARENA: usize = 512 << 20;
    // RA_UNTOUCHED=1 leaves the peers' arenas untouched, so their RSS shows what they used
    // (page faults then fall inside the timed loop).
    let touch = std::env::var_os("RA_UNTOUCHED").is_none();
    match who {
        "strata" => run(who, Strata::new(), max, steps, |s| {
            let st = s.0.stats();
            println!(
                "          managed {} MiB, in use {} MiB, free {} MiB in {} blocks, reallocs in place {:.1}%, growths {}, shrinks {}",
                st.managed_bytes >> 20,
                st.bytes_in_use >> 20,
                st.free_bytes >> 20,
                st.free_blocks,
                100.0 * st.reallocations_in_place as f64 / st.reallocations.max(1) as f64,
                st.break_growths,
                st.break_shrinks
            );
        }),
        "strata-nopages" => {
            let config = strata_alloc::HeapConfig::default().small_pages(false);
            run(who, Strata::with_config(config), max, steps, |_| {})
        }
        "talc" => run(
            who,
            Talc::new(ArenaMem::new(ARENA, touch)),
            max,
            steps,
            |_| {},
        ),
        "rlsf" => run(
            who,
            Rlsf::new(ArenaMem::new(ARENA, touch)),
            max,
            steps,
            |_| {},
        ),
        "system" => run(who, contenders::system(), max, steps, |_| {}),
        "mimalloc" => run(who, contenders::mimalloc(), max, steps, |_| {}),
        _ => panic!("unknown contender {who}"),
    }
}
