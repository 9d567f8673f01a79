//! The checked API and the allocator-api2 `Allocator` logic, written once for every block
//! allocator (Arena, Heap, LockedHeap).
//!
//! An allocator supplies a [`Backend`] (what allocating, freeing and resizing mean for it) and
//! a way to reach it (`&mut` through a cell or a lock); the functions here add what every
//! allocator does the same way: layout rules, `calloc` overflow checks, the move-or-resize
//! decision of `realloc`, counting failures, zero-sized requests on the trait path, and
//! aborting with a one-line report when a trait caller hands back a bad pointer.

use core::alloc::Layout;
use core::ptr::NonNull;

use allocator_api2::alloc::AllocError;

use crate::Error;
use crate::backend::Backend;
pub(crate) use crate::backend::check_layout;
use crate::engine::MAX_ALIGN;

mod checked;
pub(crate) use checked::checked_api;

/// The error for a pointer handed to an allocator that has no backend yet (a global heap
/// that has never allocated): it cannot be one of its blocks.
#[cold]
pub(crate) fn not_a_block(ptr: NonNull<u8>) -> Error {
    Error::InvalidPointer {
        addr: ptr.as_ptr() as usize,
        reason: "it does not point into this allocator (which has not allocated anything yet)",
    }
}

#[inline(always)]
fn counted<T>(b: &mut impl Backend, r: Result<T, Error>) -> Result<T, Error> {
    if let Err(e) = &r {
        if !e.is_misuse() {
            b.stats_mut().failed_requests += 1;
        }
    }
    r
}

/// `alloc_layout` of the checked API.
#[inline(always)]
pub(crate) fn alloc<B: Backend>(
    b: &mut B,
    size: usize,
    align: usize,
) -> Result<NonNull<u8>, Error> {
    let r = check_layout(size, align, B::MAX_ALIGN).and_then(|()| b.alloc(size, align));
    counted(b, r)
}

/// `alloc` for the paths that cannot report damage (the `Allocator` trait, `GlobalAlloc`):
/// damage an allocation meets is contained before it is reported (quarantined, counted in
/// `misuses_caught`, reported by `check()`), so the request is tried again on sound memory.
#[inline(always)]
pub(crate) fn alloc_contained(
    b: &mut impl Backend,
    size: usize,
    align: usize,
) -> Result<NonNull<u8>, Error> {
    match alloc(b, size, align) {
        Err(Error::Corrupted { .. }) => retry_after_damage(b, |b| alloc(b, size, align)),
        r => r,
    }
}

/// `f`, tried again if it met (and so contained) damage.
#[inline(always)]
fn contained<B: Backend, T>(
    b: &mut B,
    mut f: impl FnMut(&mut B) -> Result<T, Error>,
) -> Result<T, Error> {
    match f(b) {
        Err(Error::Corrupted { .. }) => retry_after_damage(b, f),
        r => r,
    }
}

/// Tries `f` again after it met (and contained) damage; each failure contains one more
/// damaged piece, so a few tries suffice.
#[cold]
#[inline(never)]
fn retry_after_damage<B: Backend, T>(
    b: &mut B,
    mut f: impl FnMut(&mut B) -> Result<T, Error>,
) -> Result<T, Error> {
    let mut r = f(b);
    for _ in 0..3 {
        if !matches!(r, Err(Error::Corrupted { .. })) {
            break;
        }
        r = f(b);
    }
    r
}

/// `calloc` of the checked API.
pub(crate) fn calloc(
    b: &mut impl Backend,
    count: usize,
    size: usize,
) -> Result<NonNull<u8>, Error> {
    let r = match count.checked_mul(size) {
        None => Err(Error::layout(usize::MAX, 16, "count * size overflows")),
        Some(total) => check_layout(total, 16, MAX_ALIGN).and_then(|()| b.alloc_zeroed(total, 16)),
    };
    counted(b, r)
}

/// `realloc` of the checked API: in place when the backend can, else allocate, copy, free.
/// The old block is untouched on every error.
pub(crate) fn realloc(
    b: &mut impl Backend,
    p: NonNull<u8>,
    new_size: usize,
) -> Result<NonNull<u8>, Error> {
    if new_size == 0 {
        b.usable_size(p)?;
        return counted(
            b,
            Err(Error::layout(0, 16, "realloc to zero bytes; use free")),
        );
    }
    let r = b.reshape(p, new_size, 16);
    let (q, in_place) = counted(b, r)?;
    let s = b.stats_mut();
    s.reallocations += 1;
    s.reallocations_in_place += u64::from(in_place);
    Ok(q)
}

// ---------------------------------------------------------------- allocator-api2 paths

#[inline(always)]
fn dangling(align: usize) -> NonNull<[u8]> {
    // A well-aligned, never-dereferenced address for zero-sized blocks, as the trait requires.
    let p =
        NonNull::new(core::ptr::without_provenance_mut::<u8>(align)).unwrap_or(NonNull::dangling());
    NonNull::slice_from_raw_parts(p, 0)
}

#[cold]
#[inline(never)]
fn misuse<B: Backend>(e: &Error) -> ! {
    crate::os::abort::misuse(B::NAME, e)
}

/// `Allocator::allocate`.
#[inline(always)]
pub(crate) fn allocate<B: Backend>(b: &mut B, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
    if B::FAST_PATHS {
        // The hit carries no error, and the miss is a tail call: no stack frame on the way.
        if layout.size() != 0 {
            if let Some(p) = b.alloc_fast(layout.size(), layout.align()) {
                return Ok(NonNull::slice_from_raw_parts(p, layout.size()));
            }
        }
        return allocate_checked(b, layout);
    }
    allocate_in_full(b, layout)
}

/// `allocate` after its fast path missed: the backend need not look where it just did.
#[inline(never)]
fn allocate_checked<B: Backend>(b: &mut B, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
    allocate_with(b, layout, B::alloc_missed)
}

/// `allocate` without a fast path.
#[inline(always)]
fn allocate_in_full<B: Backend>(b: &mut B, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
    allocate_with(b, layout, B::alloc)
}

/// `allocate`, trying `first` before the damage retries (which use `Backend::alloc`).
#[inline(always)]
fn allocate_with<B: Backend>(
    b: &mut B,
    layout: Layout,
    first: impl FnOnce(&mut B, usize, usize) -> Result<NonNull<u8>, Error>,
) -> Result<NonNull<[u8]>, AllocError> {
    if layout.size() == 0 {
        return Ok(dangling(layout.align()));
    }
    // A `Layout`'s alignment is a power of two and its size is not 0 here; what is left of
    // `check_layout` is two comparisons in the common case.
    let (size, align) = (layout.size(), layout.align());
    let r = if align <= MAX_ALIGN && size <= isize::MAX as usize - MAX_ALIGN {
        first(b, size, align)
    } else {
        check_layout(size, align, B::MAX_ALIGN).and_then(|()| first(b, size, align))
    };
    let r = match r {
        Err(Error::Corrupted { .. }) => retry_after_damage(b, |b| b.alloc(size, align)),
        r => r,
    };
    let p = counted(b, r)?;
    Ok(NonNull::slice_from_raw_parts(p, layout.size()))
}

/// `Allocator::allocate_zeroed`.
pub(crate) fn allocate_zeroed<B: Backend>(
    b: &mut B,
    layout: Layout,
) -> Result<NonNull<[u8]>, AllocError> {
    if layout.size() == 0 {
        return Ok(dangling(layout.align()));
    }
    let (size, align) = (layout.size(), layout.align());
    let r = check_layout(size, align, B::MAX_ALIGN).and_then(|()| b.alloc_zeroed(size, align));
    let r = match r {
        Err(Error::Corrupted { .. }) => retry_after_damage(b, |b| b.alloc_zeroed(size, align)),
        r => r,
    };
    let p = counted(b, r)?;
    Ok(NonNull::slice_from_raw_parts(p, layout.size()))
}

/// `Allocator::deallocate`: a bad pointer aborts with a report.
#[inline(always)]
pub(crate) fn deallocate<B: Backend>(b: &mut B, p: NonNull<u8>, layout: Layout) {
    if layout.size() == 0 {
        return;
    }
    if B::FAST_PATHS {
        if !b.free_fast(p) {
            free_or_abort_checked(b, p);
        }
        return;
    }
    free_or_abort(b, p);
}

/// `deallocate` for a caller whose own fast path has just declined `p`: straight to the full
/// path.
#[inline(always)]
pub(crate) fn deallocate_in_full<B: Backend>(b: &mut B, p: NonNull<u8>, layout: Layout) {
    if layout.size() != 0 {
        free_or_abort(b, p);
    }
}

/// `deallocate` after its fast path missed.
#[inline(never)]
fn free_or_abort_checked<B: Backend>(b: &mut B, p: NonNull<u8>) {
    free_or_abort(b, p);
}

/// Frees `p`, or aborts with a report if it is not a live block.
#[inline(always)]
fn free_or_abort<B: Backend>(b: &mut B, p: NonNull<u8>) {
    if let Err(e) = b.free(p) {
        misuse::<B>(&e)
    }
}

/// `Allocator::grow` and `grow_zeroed`; `shrink` when `new.size() < old.size()`.
pub(crate) fn resize<B: Backend>(
    b: &mut B,
    p: NonNull<u8>,
    old: Layout,
    new: Layout,
    zeroed: bool,
) -> Result<NonNull<[u8]>, AllocError> {
    if old.size() == 0 {
        return if zeroed {
            allocate_zeroed(b, new)
        } else {
            allocate(b, new)
        };
    }
    if new.size() == 0 {
        deallocate(b, p, old);
        return Ok(dangling(new.align()));
    }
    let fast = if B::FAST_PATHS {
        b.resize_fast(p, old.size(), new.size(), new.align())
    } else {
        None
    };
    let (q, in_place) = match fast {
        Some(done) => done,
        None => reshape_or_abort(b, p, new)?,
    };
    let s = b.stats_mut();
    s.reallocations += 1;
    s.reallocations_in_place += u64::from(in_place);
    if zeroed && new.size() > old.size() {
        // SAFETY: the block at `q` holds `new.size()` bytes; the tail past `old.size()` is ours.
        unsafe {
            q.as_ptr()
                .add(old.size())
                .write_bytes(0, new.size() - old.size())
        };
    }
    Ok(NonNull::slice_from_raw_parts(q, new.size()))
}

/// `resize`'s full path: `reshape`, with a bad pointer aborting and a refusal counted.
#[inline(never)]
fn reshape_or_abort<B: Backend>(
    b: &mut B,
    p: NonNull<u8>,
    new: Layout,
) -> Result<(NonNull<u8>, bool), AllocError> {
    // Damage met on the way (in a neighbour, on a free list) is contained before it is
    // reported, so the resize is tried again once it has been (a failed one leaves the block
    // untouched); damage that stays (the block's own header) is a misuse like a bad pointer.
    match contained(b, |b| b.reshape(p, new.size(), new.align())) {
        Ok(done) => Ok(done),
        Err(e) if e.is_misuse() => misuse::<B>(&e),
        Err(_) => {
            b.stats_mut().failed_requests += 1;
            Err(AllocError)
        }
    }
}

/// Implements allocator-api2's `Allocator` for `&$ty`, where `$ty` has
/// `fn with<R>(&self, f: impl FnOnce(&mut Backend) -> R) -> R`.
macro_rules! impl_allocator {
    ($ty:ty) => {
        // Every method forwards to the shared logic in `crate::facade`, which keeps contents across
        // grow/shrink and aborts instead of writing when given a pointer it did not hand out.
        // SAFETY: blocks stay valid until freed through this allocator and are never handed out
        // twice.
        unsafe impl allocator_api2::alloc::Allocator for &$ty {
            #[inline]
            fn allocate(
                &self,
                layout: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, allocator_api2::alloc::AllocError> {
                self.with(|b| $crate::facade::allocate(b, layout))
            }

            #[inline]
            fn allocate_zeroed(
                &self,
                layout: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, allocator_api2::alloc::AllocError> {
                self.with(|b| $crate::facade::allocate_zeroed(b, layout))
            }

            #[inline]
            unsafe fn deallocate(&self, ptr: core::ptr::NonNull<u8>, layout: core::alloc::Layout) {
                self.with(|b| $crate::facade::deallocate(b, ptr, layout))
            }

            #[inline]
            unsafe fn grow(
                &self,
                ptr: core::ptr::NonNull<u8>,
                old: core::alloc::Layout,
                new: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, allocator_api2::alloc::AllocError> {
                self.with(|b| $crate::facade::resize(b, ptr, old, new, false))
            }

            #[inline]
            unsafe fn grow_zeroed(
                &self,
                ptr: core::ptr::NonNull<u8>,
                old: core::alloc::Layout,
                new: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, allocator_api2::alloc::AllocError> {
                self.with(|b| $crate::facade::resize(b, ptr, old, new, true))
            }

            #[inline]
            unsafe fn shrink(
                &self,
                ptr: core::ptr::NonNull<u8>,
                old: core::alloc::Layout,
                new: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, allocator_api2::alloc::AllocError> {
                self.with(|b| $crate::facade::resize(b, ptr, old, new, false))
            }
        }
    };
}
pub(crate) use impl_allocator;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_rules() {
        assert!(check_layout(1, 1, MAX_ALIGN).is_ok());
        assert!(check_layout(100, 4096, MAX_ALIGN).is_ok());
        assert!(check_layout(100, 1 << 21, 1 << 30).is_ok());
        for (size, align) in [(0, 16), (8, 3), (8, 8192), (usize::MAX, 16)] {
            assert!(
                matches!(
                    check_layout(size, align, MAX_ALIGN),
                    Err(Error::InvalidLayout { .. })
                ),
                "{size} {align}"
            );
        }
        assert!(matches!(
            check_layout(isize::MAX as usize - 100, 1 << 20, usize::MAX),
            Err(Error::InvalidLayout { .. })
        ));
    }
}
