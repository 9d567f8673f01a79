//! Heaps under an address-space limit (`ulimit -v 4000000`, where a 64 GiB reservation is
//! refused). The test runs this binary again under the limit, so that the `GlobalHeap` below
//! (the program's allocator, the test harness's included) meets the limit from its first
//! allocation on.

use std::process::Command;

use strata_alloc::{GlobalHeap, Heap};

#[global_allocator]
static HEAP: GlobalHeap = GlobalHeap::new();

/// Set in the run under the limit.
const CHILD: &str = "STRATA_ADDRESS_LIMIT_CHILD";
/// The limit, in KiB as `ulimit -v` takes it.
const LIMIT_KIB: u64 = 4_000_000;

#[test]
fn heaps_work_under_an_address_space_limit() {
    if std::env::var_os(CHILD).is_some() {
        under_the_limit();
        return;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {LIMIT_KIB} && exec \"$0\" --exact heaps_work_under_an_address_space_limit \
             --nocapture --test-threads 1"
        ))
        .arg(&exe)
        .env(CHILD, "1")
        .output()
        .expect("sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("under the limit: done"),
        "{stdout}\n{stderr}"
    );
}

fn under_the_limit() {
    // What a default heap reports before it has reserved anything: its configured ceiling.
    let default_max = Heap::new().expect("Heap::new").stats().max_size;
    assert_eq!(default_max, 64 << 30);
    // The limit is in force: the default reservation alone would break it.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) }, 0);
    assert_eq!(limit.rlim_cur, LIMIT_KIB * 1024);
    assert!((default_max as u64) > limit.rlim_cur);

    // The global heap has served the harness and serves this.
    let v: Vec<u64> = (0..1_000_000).collect();
    assert_eq!(v.iter().sum::<u64>(), 999_999 * 1_000_000 / 2);
    let global = HEAP.stats();
    assert!(global.live_blocks > 0, "{global:?}");
    assert!(
        global.max_size < default_max && global.max_size >= 16 << 20,
        "{global:?}"
    );
    HEAP.check().expect("global heap");

    // A heap of one's own: made without reserving, then settling for what the OS allows.
    let heap = Heap::new().expect("Heap::new under the limit");
    assert_eq!(heap.stats().max_size, default_max);
    let mut blocks = Vec::new();
    for i in 0..600u32 {
        let p = heap.alloc(100_000).expect("100 KB from the heap's break");
        // SAFETY: 100,000 bytes are ours.
        unsafe { p.as_ptr().write_bytes(i as u8, 100_000) };
        blocks.push(p);
    }
    let s = heap.stats();
    assert!(s.max_size < default_max && s.max_size >= 16 << 20, "{s:?}");
    assert!(
        s.managed_bytes >= 60_000_000 && s.managed_bytes <= s.max_size,
        "{s:?}"
    );
    heap.check().expect("heap");
    for (i, p) in blocks.into_iter().enumerate() {
        // SAFETY: live, written above, freed once.
        unsafe {
            assert_eq!(p.as_ptr().add(99_999).read(), i as u8);
            heap.free(p).expect("free");
        }
    }
    heap.check().expect("heap");
    println!(
        "under the limit: done (global heap {} MiB, own heap {} MiB)",
        global.max_size >> 20,
        s.max_size >> 20
    );
}
