//! The contract every block backend fulfils (the Arena's core, the Heap's core), and the one
//! thing the façade above knows about them.
//!
//! It sits in the backends' layer so that they implement it without naming the façade; the
//! façade (`crate::facade`) writes the checked API and the `Allocator` impls once over it.

use core::ptr::NonNull;

use crate::engine::MAX_ALIGN;
use crate::{Error, Stats};

/// Checks a request against the rules every backend shares, for a backend that serves
/// alignments up to `max_align`.
#[inline(always)]
pub(crate) fn check_layout(size: usize, align: usize, max_align: usize) -> Result<(), Error> {
    if size == 0 {
        return Err(Error::layout(
            size,
            align,
            "zero-sized requests are not served",
        ));
    }
    if !align.is_power_of_two() {
        return Err(Error::layout(
            size,
            align,
            "alignment is not a power of two",
        ));
    }
    if align > max_align {
        return Err(Error::layout(
            size,
            align,
            "alignment above 4096 is not supported",
        ));
    }
    if size > isize::MAX as usize - align {
        return Err(Error::layout(
            size,
            align,
            "size overflows the address space",
        ));
    }
    Ok(())
}

/// What an allocator's core does; everything else is shared.
pub(crate) trait Backend {
    /// Name used in abort messages.
    const NAME: &'static str;

    /// The largest alignment served: the engine's by default; the heap serves larger ones
    /// from their own mappings.
    const MAX_ALIGN: usize = MAX_ALIGN;

    /// Allocates `size > 0` bytes aligned to `align` (a power of two, at most
    /// `Self::MAX_ALIGN`), or fails with `OutOfMemory`.
    fn alloc(&mut self, size: usize, align: usize) -> Result<NonNull<u8>, Error>;

    /// As `alloc`, with the first `size` bytes zeroed.
    fn alloc_zeroed(&mut self, size: usize, align: usize) -> Result<NonNull<u8>, Error> {
        let p = self.alloc(size, align)?;
        // SAFETY: `p` is a fresh block of at least `size` bytes.
        unsafe { p.as_ptr().write_bytes(0, size) };
        Ok(p)
    }

    /// Frees the live block at `p`, validating it first.
    fn free(&mut self, p: NonNull<u8>) -> Result<(), Error>;

    /// Whether `alloc_fast` and `free_fast` are worth trying before `alloc` and `free`.
    const FAST_PATHS: bool = false;

    /// The common case of `alloc` (`size > 0`, `align` as there), or `None` with nothing
    /// changed: the caller then calls `alloc`.
    #[inline(always)]
    fn alloc_fast(&mut self, _size: usize, _align: usize) -> Option<NonNull<u8>> {
        None
    }

    /// `alloc` right after `alloc_fast` returned `None` for the same request.
    #[inline(always)]
    fn alloc_missed(&mut self, size: usize, align: usize) -> Result<NonNull<u8>, Error> {
        self.alloc(size, align)
    }

    /// The common case of `free`: `true` if `p` was a live block and is freed now; `false`
    /// with nothing changed, and the caller then calls `free`, which judges `p` in full.
    #[inline(always)]
    fn free_fast(&mut self, _p: NonNull<u8>) -> bool {
        false
    }

    /// The common case of `reshape` for a live block at `p` whose caller owns its first
    /// `keep` bytes: the block and whether it stayed where it was, or `None` with nothing
    /// changed, and the caller then calls `reshape`, which judges `p` in full.
    #[inline(always)]
    fn resize_fast(
        &mut self,
        _p: NonNull<u8>,
        _keep: usize,
        _new_size: usize,
        _align: usize,
    ) -> Option<(NonNull<u8>, bool)> {
        None
    }

    /// Usable bytes of the live block at `p`.
    fn usable_size(&mut self, p: NonNull<u8>) -> Result<usize, Error>;

    /// Resizes the live block at `p` to `new_size` bytes aligned to `align`, keeping its first
    /// bytes (up to the smaller size): the whole decision of `realloc`, with `p` judged once.
    /// The pointer is judged before the request (a freed or foreign pointer is reported as
    /// what it is, whatever size it is asked to become, then [`check_layout`]). Returns the
    /// block and whether it stayed where it was; on every error the old block is untouched.
    fn reshape(
        &mut self,
        p: NonNull<u8>,
        new_size: usize,
        align: usize,
    ) -> Result<(NonNull<u8>, bool), Error>;

    /// The counters, for recording failures and reallocations.
    fn stats_mut(&mut self) -> &mut Stats;

    /// The counters as users see them.
    fn stats(&self) -> Stats;

    /// Verifies every invariant of the backend.
    fn check(&mut self) -> Result<(), Error>;
}
