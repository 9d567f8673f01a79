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

    /// Usable bytes of the live block at `p`.
    fn usable_size(&mut self, p: NonNull<u8>) -> Result<usize, Error>;

    /// Makes the live block at `p` hold at least `new_size` bytes without moving it, if it
    /// can; shrinking must always succeed. `Ok(false)` means it has to move.
    fn resize_in_place(&mut self, p: NonNull<u8>, new_size: usize) -> Result<bool, Error>;

    /// Moves the live block at `p` (of which the first `old` bytes matter) to a block of
    /// `new_size` bytes aligned to `align`, keeping the contents. The default allocates,
    /// copies and frees; a backend may do better (the heap remaps large blocks).
    /// On error the old block is untouched.
    fn move_block(
        &mut self,
        p: NonNull<u8>,
        old: usize,
        new_size: usize,
        align: usize,
    ) -> Result<NonNull<u8>, Error> {
        let q = self.alloc(new_size, align)?;
        self.relocate(p, q, old.min(new_size))
    }

    /// Copies the first `bytes` of the live block `p` into the fresh block `q`, frees `p` and
    /// returns `q`: the end of every move that is not done in place. (Inlined: `move_block`
    /// is on the hot path of `realloc`, and the call alone shows in the trace replay.)
    #[inline(always)]
    fn relocate(
        &mut self,
        p: NonNull<u8>,
        q: NonNull<u8>,
        bytes: usize,
    ) -> Result<NonNull<u8>, Error> {
        // SAFETY: both blocks are live and distinct, and callers pass `bytes` no larger than
        // either block.
        unsafe { core::ptr::copy_nonoverlapping(p.as_ptr(), q.as_ptr(), bytes) };
        self.free(p)?;
        Ok(q)
    }

    /// Resizes the live block at `p` to `new_size` bytes aligned to `align`, keeping its first
    /// bytes (up to the smaller size): the whole decision of `realloc`. The pointer is judged
    /// before the request (a freed or foreign pointer is reported as what it is, whatever size
    /// it is asked to become). Returns the block and whether it stayed where it was; on every
    /// error the old block is untouched.
    ///
    /// The default asks the steps below in turn, each judging the pointer itself; a backend
    /// whose engine hands out a token for a judged block overrides it to judge once.
    fn reshape(
        &mut self,
        p: NonNull<u8>,
        new_size: usize,
        align: usize,
    ) -> Result<(NonNull<u8>, bool), Error> {
        reshape_by_steps(self, p, new_size, align)
    }

    /// Asked before every resize: moves the live block at `p` (of which the first `old` bytes
    /// matter) to a new block of `new_size` bytes aligned to `align` if the backend's policy
    /// prefers that to resizing in place, and returns it; `None` leaves the decision to
    /// `resize_in_place` and `move_block`. The default never moves.
    fn move_to_pack(
        &mut self,
        _p: NonNull<u8>,
        _old: usize,
        _new_size: usize,
        _align: usize,
    ) -> Result<Option<NonNull<u8>>, Error> {
        Ok(None)
    }

    /// The counters, for recording failures and reallocations.
    fn stats_mut(&mut self) -> &mut Stats;

    /// The counters as users see them.
    fn stats(&self) -> Stats;

    /// Verifies every invariant of the backend.
    fn check(&mut self) -> Result<(), Error>;
}

/// `Backend::reshape` by its steps, each judging the pointer itself: the default, and what a
/// backend whose blocks carry no token (a mapped block) falls back to.
pub(crate) fn reshape_by_steps<B: Backend + ?Sized>(
    b: &mut B,
    p: NonNull<u8>,
    new_size: usize,
    align: usize,
) -> Result<(NonNull<u8>, bool), Error> {
    let old = b.usable_size(p)?;
    check_layout(new_size, align, B::MAX_ALIGN)?;
    if let Some(q) = b.move_to_pack(p, old, new_size, align)? {
        return Ok((q, false));
    }
    if (p.as_ptr() as usize) % align == 0 && b.resize_in_place(p, new_size)? {
        return Ok((p, true));
    }
    b.move_block(p, old, new_size, align).map(|q| (q, false))
}
