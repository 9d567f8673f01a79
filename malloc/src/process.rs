//! What the library does when it is loaded and when the process exits: read its settings,
//! install a panic hook that cannot allocate, and print the statistics if asked.
//!
//! The constructor runs from `.init_array`, after the dynamic loader may already have
//! called `malloc`: nothing here is needed for allocating, which works from the first call.

use core::ffi::CStr;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::HEAP;

/// Whether `STRATA_MALLOC_STATS` asked for the statistics at exit.
static STATS_AT_EXIT: AtomicBool = AtomicBool::new(false);

/// Whether an environment variable's value turns a setting on: set, not empty, not "0".
fn is_on(value: Option<&CStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v.to_bytes() != b"0")
}

/// Reads the environment variable `name` without allocating.
fn env(name: &CStr) -> Option<&'static CStr> {
    // SAFETY: `name` is NUL-terminated; getenv returns NULL or a pointer into the
    // environment, which no thread changes while the library's constructor runs.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    // SAFETY: a non-null result is a NUL-terminated string that lives as long as the
    // environment entry; it is read here, once.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) })
}

/// The constructor: reads `STRATA_MALLOC_STATS` and installs the panic hook.
pub(crate) extern "C" fn at_load() {
    STATS_AT_EXIT.store(is_on(env(c"STRATA_MALLOC_STATS")), Ordering::Relaxed);
    // The hook is a function item: boxing it allocates nothing. (Not in the unit tests,
    // whose failed assertions must be reported by the harness.)
    #[cfg(not(test))]
    std::panic::set_hook(Box::new(on_panic));
}

/// Nothing in the library should panic; if something ever does, say where in one line, and
/// abort at once: unwinding into C is not allowed, and the default hook would allocate,
/// perhaps with the heap locked by this very thread.
#[cfg_attr(test, allow(dead_code))]
fn on_panic(info: &std::panic::PanicHookInfo<'_>) {
    match info.location() {
        Some(at) => strata_alloc::write_stderr(format_args!(
            "strata-malloc: internal error at {at}; aborting\n"
        )),
        None => {
            strata_alloc::write_stderr(format_args!("strata-malloc: internal error; aborting\n"))
        }
    }
    std::process::abort();
}

/// The destructor: prints the heap's statistics if `STRATA_MALLOC_STATS` asked for them.
/// It runs among the last destructors (the library is loaded before the program's others),
/// so the figures include what they freed.
pub(crate) extern "C" fn at_exit() {
    if STATS_AT_EXIT.load(Ordering::Relaxed) {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        let stats = HEAP.stats();
        strata_alloc::write_stderr(format_args!(
            "strata-malloc: heap statistics at exit of pid {pid}\n{stats}\n"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_on_unless_unset_empty_or_zero() {
        assert!(!is_on(None));
        assert!(!is_on(Some(c"")));
        assert!(!is_on(Some(c"0")));
        assert!(is_on(Some(c"1")));
        assert!(is_on(Some(c"yes")));
    }
}
