//! Heap benchmarks (issue 3). Every contender of a group runs the identical loop through
//! `strata_benches::contenders::BenchAlloc` with the same PRNG seed.
//!
//! - `heap/random_actions/max=200|30000`: talc's "random actions" (single thread): each step
//!   picks 0..=6: 0-2 allocate, 3-5 free a random live block (allocate instead while fewer than
//!   300 are live), 6 realloc a random live block to `uniform[1, 3*max)`; sizes
//!   `uniform[4, uniform[16, max))`, alignment `8 << (tz(random u16) / 2)`. Criterion times
//!   batches of 100 steps, so the throughput (steps/s) is "operations in a fixed time".
//! - untimed report `heap/efficiency`: talc's "heap efficiency" on a 128 MiB heap.
//! - `heap/realloc_buffers/*`: 64 buffers grown one push at a time, in random order, to 1 MiB.
//! - `heap/trace_replay/python-json`: the recorded CPython malloc trace, replayed in full.

use std::alloc::{Layout, System};
use std::time::{Duration, Instant};

use allocator_api2::alloc::Allocator;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use mimalloc::MiMalloc;
use strata_alloc::{Heap, HeapConfig};
use strata_benches::buffers::{BUFFER_BYTES, BUFFERS};
use strata_benches::contenders::{
    self, ApiGlobal, ArenaMem, BenchAlloc, LinkedList, Rlsf, Strata, Talc,
};
use strata_benches::{Rng, random_actions, talc_align, talc_size, trace};

/// The arena given to talc, rlsf and linked_list_allocator (talc's benchmark uses 128 MiB).
const ARENA: usize = 128 << 20;

// ------------------------------------------------------------------------ random actions

const RA_BATCH: usize = 100;

fn ra_one<A: BenchAlloc>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, max: usize, mut a: A) {
    let mut st = random_actions::State::new(max);
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            random_actions::steps(&mut a, &mut st, max, iters as usize * RA_BATCH);
            start.elapsed()
        })
    });
    if st.failures != 0 {
        println!("  {name}: {} failed requests", st.failures);
    }
    st.drain(&mut a);
}

fn random_actions(c: &mut Criterion) {
    for max in [200usize, 30000] {
        let mut g = c.benchmark_group(format!("heap/random_actions/max={max}"));
        g.throughput(Throughput::Elements(RA_BATCH as u64));
        ra_one(&mut g, "strata_heap", max, Strata::new());
        ra_one(&mut g, "talc", max, Talc::new(ArenaMem::new(ARENA, true)));
        ra_one(&mut g, "rlsf", max, Rlsf::new(ArenaMem::new(ARENA, true)));
        ra_one(
            &mut g,
            "linked_list",
            max,
            LinkedList::new(ArenaMem::new(ARENA, true)),
        );
        ra_one(&mut g, "system", max, contenders::system());
        ra_one(&mut g, "mimalloc", max, contenders::mimalloc());
        g.finish();
    }
}

// ------------------------------------------------------------------------ heap efficiency

const HE_MAX_ALLOC: usize = 10_000;
const HE_MAX_REALLOC: usize = 100_000;
const HE_ROUNDS: usize = 100;

/// Rounds of random steps until the first failed request; returns (mean, min, max) of
/// live requested bytes / `heap_size` at that moment.
fn efficiency<A: BenchAlloc>(a: &mut A, heap_size: usize, seed: u64) -> (f64, f64, f64) {
    let mut rng = Rng::new(seed);
    let mut live: Vec<(*mut u8, Layout)> = Vec::with_capacity(100_000);
    let (mut sum, mut min, mut max) = (0.0, f64::MAX, 0.0f64);
    for _ in 0..HE_ROUNDS {
        loop {
            match rng.range(0, 10) {
                0..=4 => {
                    let size = talc_size(&mut rng, HE_MAX_ALLOC);
                    let align = talc_align(&mut rng);
                    let l = Layout::from_size_align(size, align).unwrap();
                    // SAFETY: non-zero size.
                    let p = unsafe { a.alloc(l) };
                    if p.is_null() {
                        break;
                    }
                    live.push((p, l));
                }
                5 => {
                    if !live.is_empty() {
                        let i = rng.range(0, live.len());
                        let (p, l) = live.swap_remove(i);
                        // SAFETY: live, freed once.
                        unsafe { a.dealloc(p, l) };
                    }
                }
                _ => {
                    if !live.is_empty() {
                        let i = rng.range(0, live.len());
                        let new_size = rng.range(1, HE_MAX_REALLOC);
                        let (p, l) = live[i];
                        // SAFETY: live block with its layout; non-zero size.
                        let q = unsafe { a.realloc(p, l, new_size) };
                        if q.is_null() {
                            break;
                        }
                        live[i] = (q, Layout::from_size_align(new_size, l.align()).unwrap());
                    }
                }
            }
        }
        let used: usize = live.iter().map(|(_, l)| l.size()).sum();
        let f = used as f64 / heap_size as f64;
        sum += f;
        min = min.min(f);
        max = max.max(f);
        for (p, l) in live.drain(..) {
            // SAFETY: live, freed once.
            unsafe { a.dealloc(p, l) };
        }
    }
    (sum / HE_ROUNDS as f64, min, max)
}

fn efficiency_report() {
    println!(
        "heap/efficiency: live requested bytes / 128 MiB at the first failed request, {HE_ROUNDS} rounds \
         (talc publishes 95.2%, dlmalloc 97.7%; target >= 98%)"
    );
    let row = |name: &str, f: &mut dyn FnMut() -> (f64, f64, f64)| {
        let t = Instant::now();
        let (mean, min, max) = f();
        println!(
            "heap/efficiency: {name:<14} mean {:6.2}%  min {:6.2}%  max {:6.2}%  ({:.1} s)",
            mean * 100.0,
            min * 100.0,
            max * 100.0,
            t.elapsed().as_secs_f64()
        );
    };
    let seed = 0xeff;
    row("strata_heap", &mut || {
        let config = HeapConfig::default()
            .max_size(ARENA)
            .mmap_threshold(2 * ARENA);
        let mut s = Strata::with_config(config);
        let r = efficiency(&mut s, ARENA, seed);
        s.0.check()
            .expect("strata heap consistent after the efficiency run");
        r
    });
    row("strata_pages", &mut || {
        // The same heap with small-object pages forced on (off by default at this bound).
        let config = HeapConfig::default()
            .max_size(ARENA)
            .mmap_threshold(2 * ARENA)
            .small_pages(true);
        let mut s = Strata::with_config(config);
        let r = efficiency(&mut s, ARENA, seed);
        s.0.check()
            .expect("strata heap consistent after the efficiency run");
        r
    });
    row("talc", &mut || {
        efficiency(&mut Talc::new(ArenaMem::new(ARENA, false)), ARENA, seed)
    });
    row("rlsf", &mut || {
        efficiency(&mut Rlsf::new(ArenaMem::new(ARENA, false)), ARENA, seed)
    });
    row("linked_list", &mut || {
        efficiency(
            &mut LinkedList::new(ArenaMem::new(ARENA, false)),
            ARENA,
            seed,
        )
    });
}

// ---------------------------------------------------------------------- realloc buffers

/// Bytes per push of the exact-reserve variant.
const CHUNK: usize = 4096;
/// What the pushes copy.
const DATA: [u8; CHUNK] = [0xa5; CHUNK];

fn buffers_api<A: Allocator + Clone>(a: A, rng: &mut Rng, chunk: usize) -> usize {
    strata_benches::grow_buffers!(
        allocator_api2::vec::Vec::<u8, A>::new_in(a.clone()),
        rng,
        chunk,
        &DATA,
        reserve_exact
    )
}

fn buffers_std(rng: &mut Rng, chunk: usize) -> usize {
    strata_benches::grow_buffers!(Vec::<u8>::new(), rng, chunk, &DATA, reserve_exact)
}

fn realloc_buffers(c: &mut Criterion) {
    for (name, chunk) in [("vec_push_u8", 1usize), ("push_4k_exact", CHUNK)] {
        let mut g = c.benchmark_group(format!("heap/realloc_buffers/{name}"));
        g.sample_size(10);
        g.throughput(Throughput::Bytes((BUFFERS * BUFFER_BYTES) as u64));
        let heap = Heap::new().unwrap();
        g.bench_function("strata_heap", |b| {
            let mut rng = Rng::new(64);
            b.iter(|| buffers_api(&heap, &mut rng, chunk))
        });
        assert_eq!(heap.stats().live_blocks, 0);
        heap.check().unwrap();
        drop(heap);
        g.bench_function("system", |b| {
            let mut rng = Rng::new(64);
            b.iter(|| buffers_api(ApiGlobal(&System), &mut rng, chunk))
        });
        g.bench_function("system_std_vec", |b| {
            let mut rng = Rng::new(64);
            b.iter(|| buffers_std(&mut rng, chunk))
        });
        g.bench_function("mimalloc", |b| {
            let mut rng = Rng::new(64);
            b.iter(|| buffers_api(ApiGlobal(&MiMalloc), &mut rng, chunk))
        });
        g.finish();
    }
}

// -------------------------------------------------------------------------- trace replay

fn replay_one<A: BenchAlloc>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    t: &trace::Trace,
    a: &mut A,
) {
    let mut blocks = Vec::new();
    g.bench_function(name, |b| b.iter(|| trace::replay(a, t, &mut blocks)));
}

fn trace_replay(c: &mut Criterion) {
    let path = trace::default_trace_path();
    let started = Instant::now();
    let Some(t) = trace::load(&path) else { return };
    println!(
        "heap/trace_replay: {} ops (a {}, c {}, r {}, f {}), {} ids, peak live {} MiB requested; parsed in {:.1} s",
        t.ops.len(),
        t.counts[0],
        t.counts[1],
        t.counts[2],
        t.counts[3],
        t.ids,
        t.peak_live_bytes >> 20,
        started.elapsed().as_secs_f64()
    );
    let name = path
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .replace(".trace", "");
    let mut g = c.benchmark_group(format!("heap/trace_replay/{name}"));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(t.ops.len() as u64));
    let mut strata = Strata::new();
    replay_one(&mut g, "strata_heap", &t, &mut strata);
    strata
        .0
        .check()
        .expect("strata heap consistent after the replays");
    let s = strata.0.stats();
    println!(
        "  strata_heap after the replays: peak in use {} MiB, break growths {}, shrinks {}, \
         {} MiB taken from the OS in total, in-place reallocs {} of {}",
        s.peak_bytes_in_use >> 20,
        s.break_growths,
        s.break_shrinks,
        s.bytes_from_os >> 20,
        s.reallocations_in_place,
        s.reallocations
    );
    drop(strata);
    replay_one(&mut g, "system", &t, &mut contenders::system());
    replay_one(&mut g, "mimalloc", &t, &mut contenders::mimalloc());
    // talc needs an arena: four times the trace's peak (at least 512 MiB), untouched pages.
    let talc_bytes = (t.peak_live_bytes * 4)
        .max(512 << 20)
        .next_multiple_of(1 << 20);
    replay_one(
        &mut g,
        "talc",
        &t,
        &mut Talc::new(ArenaMem::new(talc_bytes, false)),
    );
    g.finish();
}

fn main() {
    if strata_benches::report_wanted("heap/efficiency") {
        efficiency_report();
    }
    let mut c = strata_benches::criterion();
    random_actions(&mut c);
    realloc_buffers(&mut c);
    trace_replay(&mut c);
    c.final_summary();
}
