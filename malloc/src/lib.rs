//! strata-malloc: the C `malloc` family on strata-alloc's [`GlobalHeap`], as a drop-in for
//! glibc's.
//!
//! `cargo build --release -p strata-malloc` gives `target/release/libstrata_malloc.so`;
//! `LD_PRELOAD=target/release/libstrata_malloc.so prog` runs any dynamically linked program
//! on it (`libstrata_malloc.a` links it in statically). Every function here only translates:
//! C's calling conventions (null pointers, zero sizes, `errno`, status codes) into one call of
//! the heap's checked API, and the heap's [`Error`]s back. The allocator is the root crate's.
//!
//! What each function does follows glibc:
//!
//! | call | result |
//! |------|--------|
//! | `malloc(0)`, `calloc(0, n)` | a unique pointer that can be freed |
//! | `free(NULL)`, `free_sized(NULL, n)` | nothing |
//! | `realloc(NULL, n)` | `malloc(n)` |
//! | `realloc(p, 0)` | frees `p`, returns NULL (errno unchanged) |
//! | no memory, `calloc`/`reallocarray` overflow | NULL, `errno = ENOMEM` (the old block of a failed `realloc` is untouched) |
//! | `posix_memalign` with an alignment that is not a power of two times `sizeof(void *)` | `EINVAL` |
//! | `aligned_alloc` with an alignment that is not a power of two | NULL, `errno = EINVAL` (glibc 2.38) |
//! | `memalign` with an alignment that is not a power of two | the next power of two |
//! | any power-of-two alignment | served: up to 4096 from the heap, above from a mapping of its own |
//!
//! A misuse (double free, a pointer the heap never handed out, an interior or misaligned
//! pointer, a corrupted header, `free_sized` with more bytes than the block has) aborts with
//! one line on stderr naming the function, the misuse and the address, written without
//! allocating: `strata-alloc: free: double free of 0x...: the block was already freed`.
//!
//! The library works from the first call: the heap is set up by whichever call comes first
//! (the dynamic loader's, a constructor's, any thread's) and setting it up only maps memory.
//! Nothing on these paths panics; should an internal error ever panic, the library's own
//! panic hook (installed by its constructor) writes one line and aborts, so nothing unwinds
//! into C and nothing allocates while the heap may be locked. `STRATA_MALLOC_STATS=1`
//! prints the heap's counters to stderr at exit; `strata_malloc_check()` runs the full
//! integrity check.
//!
//! The Rust functions below are the C symbols themselves (`#[unsafe(no_mangle)]`); Rust code
//! has no reason to call them, and the crate has no Rust API beyond them.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod process;

use core::alloc::Layout;
use core::ffi::{c_int, c_void};
use core::ptr::{NonNull, null_mut};

use strata_alloc::{Error, GlobalHeap};

/// The heap behind every call. Only its checked API is used here, so whatever the heap
/// becomes behind that API (one heap per thread, say), this layer stays as it is.
static HEAP: GlobalHeap = GlobalHeap::new();

/// The alignment `malloc` guarantees on x86-64 and aarch64 (`alignof(max_align_t)`).
const MALLOC_ALIGN: usize = 16;

// The library's constructor and destructor, in this module so that a static link that pulls
// in `malloc` pulls them in too (strata-malloc is built as one codegen unit).
#[used]
#[unsafe(link_section = ".init_array")]
static CONSTRUCTOR: extern "C" fn() = process::at_load;

#[used]
#[unsafe(link_section = ".fini_array")]
static DESTRUCTOR: extern "C" fn() = process::at_exit;

/// Sets the calling thread's `errno`.
#[cold]
fn set_errno(code: c_int) {
    // SAFETY: `__errno_location` returns the calling thread's errno slot, always valid.
    unsafe { *libc::__errno_location() = code };
}

/// Reports a misuse found by the C function `who` and aborts.
#[cold]
#[inline(never)]
fn misuse(who: &str, err: &Error) -> ! {
    strata_alloc::abort_on_misuse(who, err)
}

/// The C result of an allocation: the block, or NULL with `errno` set to ENOMEM for
/// anything but a misuse, which aborts.
#[inline(always)]
fn served(who: &str, r: Result<NonNull<u8>, Error>) -> *mut c_void {
    match r {
        Ok(p) => p.as_ptr().cast(),
        Err(e) => refused(who, &e),
    }
}

#[cold]
#[inline(never)]
fn refused(who: &str, e: &Error) -> *mut c_void {
    if e.is_misuse() {
        misuse(who, e)
    }
    set_errno(libc::ENOMEM);
    null_mut()
}

/// `size` bytes aligned to `align` (a power of two).
#[inline]
fn alloc_aligned(align: usize, size: usize) -> Result<NonNull<u8>, Error> {
    let size = size.max(1);
    if align <= MALLOC_ALIGN {
        return HEAP.alloc(size);
    }
    match Layout::from_size_align(size, align) {
        Ok(layout) => HEAP.alloc_layout(layout),
        Err(_) => Err(Error::OutOfMemory {
            requested: size,
            available: 0,
        }),
    }
}

/// Allocates `size` bytes, 16-byte aligned; `malloc(0)` returns a unique pointer.
///
/// Returns NULL with `errno = ENOMEM` when the memory cannot be had.
///
/// ```c
/// char *s = malloc(64);
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    served("malloc", HEAP.alloc(size.max(1)))
}

/// Frees a block; `free(NULL)` does nothing. A pointer that is not a live block aborts with
/// a one-line report.
///
/// # Safety
///
/// `ptr` is NULL or was returned by this library's allocation functions and not freed
/// (anything else is detected and aborts, before anything is written).
///
/// ```c
/// free(s);
/// ```
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    // SAFETY: the caller hands the block back; the heap validates it before writing.
    unsafe { free_as("free", ptr) }
}

/// `free` on behalf of the C function `who` (named in a misuse report).
///
/// # Safety
///
/// As [`free`].
#[inline(always)]
unsafe fn free_as(who: &str, ptr: *mut c_void) {
    let Some(p) = NonNull::new(ptr.cast::<u8>()) else {
        return;
    };
    // SAFETY: as the caller's contract says; the heap validates `p` before writing.
    if let Err(e) = unsafe { HEAP.free(p) } {
        free_failed(who, &e)
    }
}

/// A `free` that failed: a misuse aborts; anything else (the OS refusing to take pages back)
/// leaves the block freed.
#[cold]
#[inline(never)]
fn free_failed(who: &str, e: &Error) {
    if e.is_misuse() {
        misuse(who, e)
    }
}

/// Allocates `count * size` zeroed bytes; an overflowing product is NULL with
/// `errno = ENOMEM`.
///
/// ```c
/// int *v = calloc(1000, sizeof *v);
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    let (count, size) = if count == 0 || size == 0 {
        (1, 1)
    } else {
        (count, size)
    };
    served("calloc", HEAP.calloc(count, size))
}

/// Resizes a block, keeping its contents: `realloc(NULL, n)` is `malloc(n)`, `realloc(p, 0)`
/// frees `p` and returns NULL (as glibc does). On failure the old block is untouched and the
/// result is NULL with `errno = ENOMEM`.
///
/// # Safety
///
/// As [`free`]; after a successful call only the returned pointer is used.
///
/// ```c
/// buf = realloc(buf, 2 * cap);
/// ```
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    let Some(p) = NonNull::new(ptr.cast::<u8>()) else {
        return malloc(size);
    };
    if size == 0 {
        // SAFETY: as the caller's contract says.
        unsafe { free_as("realloc", ptr) };
        return null_mut();
    }
    // SAFETY: as the caller's contract says; the heap validates `p` first.
    served("realloc", unsafe { HEAP.realloc(p, size) })
}

/// `realloc(ptr, count * size)`, with an overflowing product NULL and `errno = ENOMEM`
/// (the old block untouched).
///
/// # Safety
///
/// As [`realloc`].
///
/// ```c
/// v = reallocarray(v, n, sizeof *v);
/// ```
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reallocarray(ptr: *mut c_void, count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        // SAFETY: as the caller's contract says.
        Some(total) => unsafe { realloc(ptr, total) },
        None => {
            set_errno(libc::ENOMEM);
            null_mut()
        }
    }
}

/// Stores a block of `size` bytes aligned to `align` in `*out` and returns 0; returns
/// `EINVAL` for an alignment that is not a power of two times `sizeof(void *)` (or a NULL
/// `out`), `ENOMEM` when the memory cannot be had. `*out` is untouched on failure.
///
/// # Safety
///
/// `out` is NULL or valid for writing a pointer.
///
/// ```c
/// void *p;
/// if (posix_memalign(&p, 2 << 20, len) != 0) abort();
/// ```
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || align % size_of::<*mut c_void>() != 0 || out.is_null() {
        return libc::EINVAL;
    }
    match alloc_aligned(align, size) {
        Ok(p) => {
            // SAFETY: `out` is valid for writing, per the contract.
            unsafe { out.write(p.as_ptr().cast()) };
            0
        }
        Err(_) => libc::ENOMEM,
    }
}

/// C11 `aligned_alloc`: a block of `size` bytes aligned to `align`; NULL with
/// `errno = EINVAL` for an alignment that is not a power of two.
///
/// ```c
/// void *page = aligned_alloc(4096, 4096);
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return null_mut();
    }
    served("aligned_alloc", alloc_aligned(align, size))
}

/// A block of `size` bytes aligned to `align`, rounded up to a power of two as glibc does;
/// NULL with `errno = EINVAL` for an alignment above `SIZE_MAX / 2 + 1`.
///
/// ```c
/// void *p = memalign(64, 1000);
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    let Some(align) = align.checked_next_power_of_two() else {
        set_errno(libc::EINVAL);
        return null_mut();
    };
    served("memalign", alloc_aligned(align, size))
}

/// `memalign(page size, size)`.
///
/// ```c
/// void *p = valloc(100);
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    served("valloc", alloc_aligned(strata_alloc::page_size(), size))
}

/// `valloc` of `size` rounded up to whole pages; an overflowing size is NULL with
/// `errno = ENOMEM`.
///
/// ```c
/// void *p = pvalloc(100); // a whole page
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = strata_alloc::page_size();
    match size.max(1).checked_next_multiple_of(page) {
        Some(rounded) => served("pvalloc", alloc_aligned(page, rounded)),
        None => {
            set_errno(libc::ENOMEM);
            null_mut()
        }
    }
}

/// The usable bytes of a live block (at least what was asked for); 0 for NULL.
///
/// # Safety
///
/// As [`free`], except that the block stays allocated.
///
/// ```c
/// size_t room = malloc_usable_size(p);
/// ```
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    let Some(p) = NonNull::new(ptr.cast::<u8>()) else {
        return 0;
    };
    match HEAP.usable_size(p) {
        Ok(n) => n,
        Err(e) => misuse("malloc_usable_size", &e),
    }
}

/// C23 `free_sized`: `free`, for a block allocated with `size` bytes. A size larger than the
/// block aborts as a misuse.
///
/// # Safety
///
/// As [`free`].
///
/// ```c
/// free_sized(p, 64);
/// ```
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free_sized(ptr: *mut c_void, size: usize) {
    // SAFETY: as the caller's contract says.
    unsafe { free_checked("free_sized", ptr, 1, size) }
}

/// C23 `free_aligned_sized`: `free`, for a block allocated with `align` and `size`. A
/// pointer not aligned to `align`, or a size larger than the block, aborts as a misuse.
///
/// # Safety
///
/// As [`free`].
///
/// ```c
/// free_aligned_sized(p, 4096, 100);
/// ```
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free_aligned_sized(ptr: *mut c_void, align: usize, size: usize) {
    // SAFETY: as the caller's contract says.
    unsafe { free_checked("free_aligned_sized", ptr, align, size) }
}

/// Frees `ptr` after checking what the caller says about it: aligned to `align`, at least
/// `size` bytes.
///
/// # Safety
///
/// As [`free`].
unsafe fn free_checked(who: &str, ptr: *mut c_void, align: usize, size: usize) {
    let Some(p) = NonNull::new(ptr.cast::<u8>()) else {
        return;
    };
    let addr = p.as_ptr() as usize;
    if !align.is_power_of_two() || addr % align != 0 {
        misuse(
            who,
            &Error::InvalidPointer {
                addr,
                reason: "it is not aligned as the caller says it was allocated",
            },
        );
    }
    match HEAP.usable_size(p) {
        Ok(n) if n >= size => {}
        Ok(_) => misuse(
            who,
            &Error::InvalidPointer {
                addr,
                reason: "the block is smaller than the size the caller gives",
            },
        ),
        Err(e) => misuse(who, &e),
    }
    // SAFETY: as the caller's contract says.
    unsafe { free_as(who, ptr) }
}

/// glibc's `malloc_trim`: gives the free top of the heap back to the OS; returns 1 if any
/// memory was given back. `pad` is ignored.
///
/// ```c
/// malloc_trim(0);
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn malloc_trim(_pad: usize) -> c_int {
    c_int::from(HEAP.trim() > 0)
}

/// Runs the heap's full integrity check; returns 0 when it holds, and otherwise writes the
/// first damage found to stderr (one line, without allocating) and returns 1.
///
/// ```c
/// extern int strata_malloc_check(void);
/// assert(strata_malloc_check() == 0);
/// ```
#[unsafe(no_mangle)]
pub extern "C" fn strata_malloc_check() -> c_int {
    match HEAP.check() {
        Ok(()) => 0,
        Err(e) => {
            strata_alloc::write_stderr(format_args!("strata-malloc: check: {e}\n"));
            1
        }
    }
}

#[cfg(test)]
mod tests;
