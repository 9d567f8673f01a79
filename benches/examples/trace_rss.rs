//! The peak resident memory of one replay of the recorded malloc trace, the allocator's share
//! alone: the trace's tables (the parsed ops, the block table sized to every ID) are built and
//! touched first, the kernel's high-water mark is reset (`/proc/self/clear_refs`, 5), and the
//! replay's peak is the new high-water mark less the resident memory before it.
//!
//! `cargo run --release -p strata-benches --example trace_rss -- <strata|strata-nopages|system|mimalloc>`

use strata_benches::contenders::{self, BenchAlloc, Strata};
use strata_benches::trace::{self, Trace};

/// A field of /proc/self/status in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS/VmHWM line")
}

fn run<A: BenchAlloc>(name: &str, mut a: A, t: &Trace) {
    let mut blocks = vec![(std::ptr::null_mut(), 0); t.ids];
    // Resets VmHWM to the current RSS, so parsing's peak does not count.
    std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs (Linux 4.0+)");
    let base = status_kib("VmRSS");
    std::hint::black_box(trace::replay(&mut a, t, &mut blocks));
    let peak = status_kib("VmHWM");
    let after = status_kib("VmRSS");
    println!(
        "{name:<14} allocator peak RSS {:7.1} MiB  (at the end {:7.1} MiB; replayer {:6.1} MiB; peak live requested {:6.1} MiB)",
        (peak - base) as f64 / 1024.0,
        after.saturating_sub(base) as f64 / 1024.0,
        base as f64 / 1024.0,
        t.peak_live_bytes as f64 / (1 << 20) as f64,
    );
}

fn main() {
    let who = std::env::args().nth(1).unwrap_or_else(|| "strata".into());
    let t = trace::load(&trace::default_trace_path()).expect("trace");
    match who.as_str() {
        "strata" => run(&who, Strata::new(), &t),
        "strata-nopages" => {
            let config = strata_alloc::HeapConfig::default().small_pages(false);
            run(&who, Strata::with_config(config), &t)
        }
        "system" => run(&who, contenders::system(), &t),
        "mimalloc" => run(&who, contenders::mimalloc(), &t),
        _ => panic!("unknown contender {who}"),
    }
}
