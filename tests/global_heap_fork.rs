//! A test binary whose global allocator is a `GlobalHeap`, forking while other threads
//! allocate: every child must be able to allocate and exit. Without the fork handlers a
//! child inherits the heap's lock held by a thread that does not exist in it, and hangs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use strata_alloc::GlobalHeap;

#[global_allocator]
static HEAP: GlobalHeap = GlobalHeap::new();

/// Waits for `pid` for at most `limit`; kills it and returns `None` if it is still running.
fn wait_with_timeout(pid: libc::pid_t, limit: Duration) -> Option<libc::c_int> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(status);
        }
        if start.elapsed() > limit {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// What a child does: allocate in every size range, check the heap (in every 20th child: the
/// check reads the whole large-block table, whose pages each child faults in afresh), and
/// exit without running any of the parent's atexit machinery.
fn child(n: usize) -> ! {
    let strings: Vec<String> = (0..2000).map(|i| format!("child string {i}")).collect();
    let big = vec![7u8; 1 << 20];
    let ok = strings[1999] == "child string 1999"
        && big[12345] == 7
        && (n % 20 != 0 || HEAP.check().is_ok());
    drop((strings, big));
    // SAFETY: `_exit` ends the child at once, which is all a forked child of a threaded
    // program may safely do after this.
    unsafe { libc::_exit(if ok { 0 } else { 3 }) }
}

#[test]
fn children_forked_while_threads_allocate_can_allocate() {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|t| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut keep: Vec<Vec<u8>> = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    keep.push(vec![t as u8; 16 + (i * 37) % 3000]);
                    if keep.len() > 500 {
                        keep.drain(..250);
                    }
                    i += 1;
                }
                i
            })
        })
        .collect();
    let forks = 200;
    let (mut hung, mut failed) = (0, 0);
    for n in 0..forks {
        // SAFETY: the child only allocates through the global heap and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            child(n);
        }
        match wait_with_timeout(pid, Duration::from_secs(10)) {
            None => hung += 1,
            Some(status) if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 => {
                failed += 1
            }
            Some(_) => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    let allocated: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!((hung, failed), (0, 0), "of {forks} children");
    assert!(allocated > 0);
    HEAP.check().unwrap();
}
