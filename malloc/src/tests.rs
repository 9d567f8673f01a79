//! The C semantics, called from Rust. This test binary defines the malloc family itself, so
//! the test harness and std run on strata-malloc too.
//!
//! One test function: the checks read `errno` and freed addresses, which other test
//! threads allocating at the same time would disturb.

use super::*;

fn errno() -> c_int {
    // SAFETY: the calling thread's errno slot is always valid.
    unsafe { *libc::__errno_location() }
}

/// Whether `p` is NULL, hidden from the optimiser: LLVM knows `malloc` by name and may
/// remove a call whose result is only compared with NULL, assuming it succeeded.
fn null(p: *mut c_void) -> bool {
    core::hint::black_box(p).is_null()
}

fn clear_errno() {
    set_errno(0);
}

fn bytes<'a>(p: *mut c_void, n: usize) -> &'a [u8] {
    // SAFETY: callers pass a live block of at least `n` initialised bytes.
    unsafe { core::slice::from_raw_parts(p.cast::<u8>(), n) }
}

fn fill(p: *mut c_void, byte: u8, n: usize) {
    // SAFETY: callers pass a live block of at least `n` bytes.
    unsafe { p.cast::<u8>().write_bytes(byte, n) };
}

#[test]
fn the_malloc_family_has_glibcs_semantics() {
    // SAFETY (whole test): every pointer passed back is live and freed once, except where a
    // misuse-free failure path is under test.
    unsafe {
        // malloc(0) and calloc(0, n): unique, freeable pointers.
        let (a, b) = (malloc(0), malloc(0));
        assert!(!a.is_null() && !b.is_null() && a != b);
        let c = calloc(0, 8);
        assert!(!c.is_null() && c != a && c != b);
        free(a);
        free(b);
        free(c);
        free(null_mut());
        free_sized(null_mut(), 10);

        // Failures: NULL and ENOMEM.
        clear_errno();
        assert!(null(malloc(usize::MAX / 2)));
        assert_eq!(errno(), libc::ENOMEM);
        clear_errno();
        assert!(null(calloc(usize::MAX / 2, 3)));
        assert_eq!(errno(), libc::ENOMEM);

        // calloc zeroes reused memory.
        let dirty = malloc(3000);
        fill(dirty, 0xEE, 3000);
        free(dirty);
        let z = calloc(30, 100);
        assert!(bytes(z, 3000).iter().all(|&x| x == 0));
        free(z);

        // realloc: NULL is malloc, contents kept through the heap and the mapped range,
        // a failure leaves the block as it was, 0 frees and returns NULL.
        let mut p = realloc(null_mut(), 100);
        fill(p, 7, 100);
        for n in [1000, 200_000, 5_000_000, 50] {
            p = realloc(p, n);
            assert!(!p.is_null());
            assert!(bytes(p, 50).iter().all(|&x| x == 7), "{n}");
            assert!(malloc_usable_size(p) >= n);
        }
        clear_errno();
        assert!(null(realloc(p, usize::MAX / 2)));
        assert_eq!(errno(), libc::ENOMEM);
        assert!(null(reallocarray(p, usize::MAX / 2, 4)));
        assert_eq!(errno(), libc::ENOMEM);
        assert!(bytes(p, 50).iter().all(|&x| x == 7), "kept after failures");
        let q = reallocarray(p, 10, 10);
        assert!(bytes(q, 50).iter().all(|&x| x == 7));
        clear_errno();
        assert!(null(realloc(q, 0)));
        assert_eq!(errno(), 0, "realloc(p, 0) is not a failure");
        assert!(matches!(
            HEAP.usable_size(NonNull::new(q.cast()).unwrap()),
            Err(Error::DoubleFree { .. })
        ));

        // posix_memalign: EINVAL for bad alignments, *out untouched; every power of two up
        // to 64 MiB served.
        let mut out: *mut c_void = core::ptr::without_provenance_mut::<c_void>(0x8);
        for bad in [0, 1, 2, 4, 24, 48, 1000] {
            assert_eq!(posix_memalign(&mut out, bad, 8), libc::EINVAL, "{bad}");
            assert_eq!(out, core::ptr::without_provenance_mut::<c_void>(0x8));
        }
        assert_eq!(posix_memalign(null_mut(), 64, 8), libc::EINVAL);
        for shift in 3..=26 {
            let align = 1usize << shift;
            for size in [0, 1, 100, 200_000] {
                assert_eq!(posix_memalign(&mut out, align, size), 0, "{align} {size}");
                assert_eq!(out as usize % align, 0);
                fill(out, 1, size);
                free_aligned_sized(out, align, size);
            }
        }
        assert_eq!(posix_memalign(&mut out, 1 << 62, 1), libc::ENOMEM);

        // aligned_alloc, memalign, valloc, pvalloc.
        clear_errno();
        assert!(null(aligned_alloc(3, 10)));
        assert_eq!(errno(), libc::EINVAL);
        let x = aligned_alloc(1 << 16, 100);
        assert_eq!(x as usize % (1 << 16), 0);
        free(x);
        let m = memalign(24, 10);
        assert_eq!(m as usize % 32, 0, "rounded up to a power of two");
        free(m);
        let m0 = memalign(0, 10);
        assert!(!m0.is_null());
        free(m0);
        clear_errno();
        assert!(null(memalign(usize::MAX, 10)));
        assert_eq!(errno(), libc::EINVAL);
        let page = strata_alloc::page_size();
        let v = valloc(10);
        assert_eq!(v as usize % page, 0);
        free(v);
        let pv = pvalloc(10);
        assert_eq!(pv as usize % page, 0);
        assert!(malloc_usable_size(pv) >= page);
        fill(pv, 3, page);
        free(pv);
        clear_errno();
        assert!(null(pvalloc(usize::MAX - 10)));
        assert_eq!(errno(), libc::ENOMEM);

        // malloc_usable_size and the sized frees.
        assert_eq!(malloc_usable_size(null_mut()), 0);
        let s = malloc(40);
        assert!(malloc_usable_size(s) >= 40);
        free_sized(s, 40);

        assert_eq!(strata_malloc_check(), 0);
        let _ = malloc_trim(0);
        assert_eq!(strata_malloc_check(), 0);
    }
}
