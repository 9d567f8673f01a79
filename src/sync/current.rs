//! The calling thread's cached heap: which global heap (by id) it last allocated through, and
//! its heap's node there. Every `malloc` and `free` reads it first.
//!
//! On x86-64 Linux it is one thread-local of the initial-exec model, found with a load from
//! the GOT and an add of the thread pointer. Rust's own thread-locals in a shared library
//! (strata-malloc is one) use the general-dynamic model, a call to `__tls_get_addr` on every
//! read. The cost of initial-exec: a shared library holding it takes its 16 bytes from the
//! static TLS block, which a library loaded at startup (`LD_PRELOAD`, a dependency) always
//! gets, and a library opened later with `dlopen` gets from glibc's reserve. Elsewhere, and
//! under Miri and loom, it is a std thread-local.

use core::ptr::null;

use super::global::Node;

/// The cached pair: (id of the global heap, its node for this thread); `(0, null)` for none.
pub(crate) type Current = (u64, *const Node);

#[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom)))]
mod imp {
    use super::Current;

    /// The symbol's name carries the crate's version, so that two versions linked into one
    /// program keep a cache each.
    macro_rules! tls_symbol {
        () => {
            concat!(
                "__strata_alloc_current_heap_",
                env!("CARGO_PKG_VERSION_MAJOR"),
                "_",
                env!("CARGO_PKG_VERSION_MINOR"),
                "_",
                env!("CARGO_PKG_VERSION_PATCH")
            )
        };
    }

    // Sixteen zeroed bytes of thread-local storage (`.tbss`): the zero pair is "no heap".
    // Hidden: every reader is in the same linked object, however far its code is inlined.
    core::arch::global_asm!(
        concat!(".pushsection .tbss,\"awT\",@nobits\n", ".p2align 4\n"),
        concat!(".globl ", tls_symbol!(), "\n"),
        concat!(".hidden ", tls_symbol!(), "\n"),
        concat!(".type ", tls_symbol!(), ", @object\n"),
        concat!(".size ", tls_symbol!(), ", 16\n"),
        concat!(tls_symbol!(), ":\n"),
        ".zero 16\n",
        ".popsection",
        options(att_syntax),
    );

    /// The calling thread's copy of the pair.
    #[inline(always)]
    fn slot() -> *mut Current {
        let p: *mut Current;
        // SAFETY: reads the symbol's offset from the thread pointer out of the GOT and adds
        // the thread pointer (`%fs:0` holds the thread control block's own address, by the
        // x86-64 TLS ABI): the address of this thread's copy, valid for the thread's life.
        unsafe {
            core::arch::asm!(
                concat!("movq ", tls_symbol!(), "@gottpoff(%rip), {p}"),
                "addq %fs:0, {p}",
                p = out(reg) p,
                options(att_syntax, nostack, pure, readonly),
            );
        }
        p
    }

    const _: () = assert!(size_of::<Current>() == 16 && align_of::<Current>() <= 16);

    #[inline(always)]
    pub(super) fn get() -> Current {
        // SAFETY: the thread's own 16-byte, 16-aligned copy, zero-initialised (a valid pair:
        // an integer and a null pointer); only this thread touches it.
        unsafe { slot().read() }
    }

    #[inline(always)]
    pub(super) fn set(c: Current) {
        // SAFETY: as in `get`.
        unsafe { slot().write(c) }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom))))]
mod imp {
    use super::Current;
    use core::cell::Cell;

    std::thread_local! {
        static CURRENT: Cell<Current> = const { Cell::new((0, core::ptr::null())) };
    }

    #[inline(always)]
    pub(super) fn get() -> Current {
        // During thread teardown the std thread-local may be gone: no heap then, and the
        // caller takes its slow path.
        CURRENT
            .try_with(Cell::get)
            .unwrap_or((0, core::ptr::null()))
    }

    #[inline(always)]
    pub(super) fn set(c: Current) {
        let _ = CURRENT.try_with(|cell| cell.set(c));
    }
}

/// The calling thread's cached pair.
#[inline(always)]
pub(crate) fn get() -> Current {
    imp::get()
}

/// Caches `c` for the calling thread.
#[inline(always)]
pub(crate) fn set(c: Current) {
    imp::set(c)
}

/// Forgets the calling thread's cached heap.
#[inline(always)]
pub(crate) fn clear() {
    imp::set((0, null()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_has_its_own_pair_starting_empty() {
        let fake = core::ptr::dangling::<Node>();
        set((7, fake));
        assert_eq!(get(), (7, fake));
        std::thread::spawn(|| {
            assert_eq!(get(), (0, null()));
            set((9, null()));
            assert_eq!(get().0, 9);
        })
        .join()
        .unwrap();
        assert_eq!(get(), (7, fake));
        clear();
        assert_eq!(get(), (0, null()));
    }
}
