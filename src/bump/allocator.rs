//! `Allocator for &Bump`: collections in the arena, with the last block growing in place.
//!
//! Because the arena bumps upward, the most recent block is followed by free space. `grow`
//! extends it there and `shrink`/`deallocate` hand its tail back, so a `Vec` pushed one element
//! at a time is only copied when it has to move to a new chunk. When it does move and leaves its
//! old chunk empty, that chunk is released, so no dead copy stays mapped.

use core::alloc::Layout;
use core::ptr::{self, NonNull};

use allocator_api2::alloc::{AllocError, Allocator};

use super::Bump;
use crate::Error;

impl Bump {
    /// Whether the block at `addr` of `size` bytes ends at the bump pointer *inside the current
    /// chunk* (the start check rules out a block in an adjacent mapping that happens to end
    /// where the current chunk begins).
    #[inline(always)]
    pub(super) fn is_last(&self, addr: usize, size: usize) -> bool {
        addr + size == self.ptr.get().as_ptr().addr() && addr >= self.start.get()
    }

    /// Aborts with a one-line report if `ptr..ptr + size` does not lie in a chunk in use: a
    /// block about to be copied from must be ours (the trait cannot return the misuse).
    fn check_owned(&self, ptr: NonNull<u8>, size: usize) {
        if size == 0 {
            return;
        }
        let addr = ptr.as_ptr().addr();
        let in_use = self.in_use.get();
        let ours = self.with_chunks(|chunks| {
            chunks[..in_use].iter().any(|c| {
                let base = c.base().as_ptr().addr();
                addr >= base && addr - base <= c.capacity() && size <= c.capacity() - (addr - base)
            })
        });
        if !ours {
            let err = Error::InvalidPointer {
                addr,
                reason: "not a block in use in this Bump",
            };
            crate::os::abort::misuse("Bump", &err);
        }
    }

    /// Grows by moving: frees the old block first if it is the last one (so the new block may
    /// reuse its bytes), allocates, copies, and releases a chunk the move left empty.
    ///
    /// # Safety
    ///
    /// `ptr` must be a block currently allocated from this Bump with layout `old`, and
    /// `new.size() >= old.size()`.
    #[cold]
    #[inline(never)]
    unsafe fn grow_by_moving(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<u8>, Error> {
        self.check_owned(ptr, old.size());
        let saved = self.ptr.get();
        let last = old.size() != 0 && self.is_last(ptr.as_ptr().addr(), old.size());
        if last {
            // SAFETY: the block is the last one in the current chunk, so the pointer minus its
            // size is its start, inside the chunk.
            self.ptr.set(unsafe { saved.sub(old.size()) });
        }
        let chunks_before = self.in_use.get();
        let to = match self.try_alloc_layout(new) {
            Ok(p) => p,
            Err(e) => {
                // A failed allocation changed nothing; take the old block back.
                self.ptr.set(saved);
                return Err(e);
            }
        };
        // Nothing has written over the old bytes: the only allocation since is `to`, which may
        // overlap them when the old block was last (hence `copy`, not `copy_nonoverlapping`).
        // SAFETY: the old block holds `old.size()` bytes and `to` has room for at least as many.
        unsafe { ptr::copy(ptr.as_ptr(), to.as_ptr(), old.size()) };
        if last && self.in_use.get() == chunks_before + 1 {
            self.release_emptied_previous();
        }
        Ok(to)
    }
}

// Blocks are only freed by `scope`, `rewind`, `reset` or dropping the Bump, all of which need
// the Bump by value or `&mut`, so no block is freed while a `&Bump` is alive. `deallocate`,
// `grow` and `shrink` only move the bump pointer back over the last block of the current chunk.
// Errors are returned, never panicked.
// SAFETY: `allocate` returns fresh, disjoint, aligned blocks of at least the requested size,
// valid until the Bump is reset or dropped (see above).
unsafe impl Allocator for &Bump {
    #[inline(always)]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let p = match self.bump_fast(layout) {
            Some(p) => p,
            None => self.alloc_slow(layout)?,
        };
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        let size = layout.size();
        if size != 0 && self.is_last(ptr.as_ptr().addr(), size) {
            // Derive the new pointer from our own (chunk-wide provenance), not from the
            // caller's, which may only cover its block.
            // SAFETY: the block is the last one in the current chunk, so its start lies in it.
            self.ptr.set(unsafe { self.ptr.get().sub(size) });
        }
    }

    #[inline]
    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let cur = self.ptr.get();
        let addr = ptr.as_ptr().addr();
        let extra = new_layout.size() - old_layout.size();
        if self.is_last(addr, old_layout.size())
            && addr & (new_layout.align() - 1) == 0
            && cur
                .as_ptr()
                .addr()
                .checked_add(extra)
                .is_some_and(|e| e <= self.end.get())
        {
            // SAFETY: `ptr + extra <= end`, inside the current chunk;
            // the block starts `old_layout.size()` bytes below the pointer, in the same chunk.
            unsafe {
                self.ptr.set(cur.add(extra));
                let start = cur.sub(old_layout.size());
                return Ok(NonNull::slice_from_raw_parts(start, new_layout.size()));
            }
        }
        // SAFETY: the caller guarantees `ptr`/`old_layout` describe a live block of ours and
        // that the new size is not smaller.
        let p = unsafe { self.grow_by_moving(ptr, old_layout, new_layout) }?;
        Ok(NonNull::slice_from_raw_parts(p, new_layout.size()))
    }

    #[inline]
    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let addr = ptr.as_ptr().addr();
        if addr & (new_layout.align() - 1) == 0 {
            if self.is_last(addr, old_layout.size()) {
                let cut = old_layout.size() - new_layout.size();
                // SAFETY: the block is last in the current chunk; its new end lies inside it.
                self.ptr.set(unsafe { self.ptr.get().sub(cut) });
            }
            return Ok(NonNull::slice_from_raw_parts(ptr, new_layout.size()));
        }
        // The block is not aligned enough for the new layout: move it.
        self.check_owned(ptr, old_layout.size());
        let to = self.try_alloc_layout(new_layout)?;
        // SAFETY: `to` is a fresh block beyond every live one, so disjoint from `ptr`'s, which
        // holds at least `new_layout.size()` initialised bytes.
        unsafe { ptr::copy_nonoverlapping(ptr.as_ptr(), to.as_ptr(), new_layout.size()) };
        Ok(NonNull::slice_from_raw_parts(to, new_layout.size()))
    }
}
