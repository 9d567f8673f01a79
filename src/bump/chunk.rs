//! Where a Bump's chunks come from: the global allocator, or the OS for oversized ones.
//!
//! A fresh `Bump` per request is the pattern the docs invite, so its first chunks must cost no
//! more than a `malloc`: mapping a page from the OS (and unmapping it on drop) costs two system
//! calls and a page fault per request. Chunks of up to [`MAX_CHUNK`] (the size doubling stops
//! at) therefore come from the global allocator (`std::alloc`, which is `System` unless the
//! program set another; a Bump is never a global allocator itself, being `!Sync`, so this never
//! recurses into it), which also reuses the memory of chunks freed by earlier Bumps. Larger
//! chunks, made only for a request that needs more than the next chunk size, are anonymous
//! mappings ([`Region`]s): they cost address space until touched and go straight back to the
//! OS when released.

use core::alloc::Layout;
use core::ptr::NonNull;

use super::MAX_CHUNK;
use crate::{Error, Region};

/// Chunks of at least this many bytes are mapped; smaller ones come from the global allocator.
pub(super) const MAPPED_FROM: usize = MAX_CHUNK + 1;

/// Alignment of chunks from the global allocator (mapped chunks start on a page boundary).
pub(super) const CHUNK_ALIGN: usize = 16;

/// The memory behind one chunk.
enum Memory {
    /// An anonymous mapping, unmapped when the Region drops.
    Mapped(Region),
    /// A block from the global allocator, of `CHUNK_ALIGN` alignment.
    Global { base: NonNull<u8>, size: usize },
}

/// One chunk of a Bump: a span whose every byte the Bump may hand out.
pub(super) struct Chunk {
    memory: Memory,
    /// Bytes used, recorded when the bump pointer leaves this chunk for a later one.
    pub(super) used: usize,
    /// Changes every time the pointer enters this chunk from an earlier one (see the Bump's
    /// module invariants).
    pub(super) stamp: u64,
}

// SAFETY: a chunk owns its memory uniquely (a Region, or a block of the global allocator, which
// may be freed from any thread); it holds no reference to anything else.
unsafe impl Send for Chunk {}

impl Chunk {
    /// A chunk of at least `bytes` bytes (whole pages once it is mapped).
    pub(super) fn new(bytes: usize) -> Result<Chunk, Error> {
        let memory = if bytes >= MAPPED_FROM {
            let mut region = Region::reserve(bytes)?;
            region.grow(region.capacity())?;
            Memory::Mapped(region)
        } else {
            // Round to 16 bytes so `capacity` stays a multiple of every small alignment.
            let size = bytes.max(CHUNK_ALIGN).next_multiple_of(CHUNK_ALIGN);
            let layout = Layout::from_size_align(size, CHUNK_ALIGN)
                .map_err(|_| Error::layout(bytes, CHUNK_ALIGN, "chunk size overflows"))?;
            // SAFETY: the layout has a non-zero size.
            let raw = unsafe { std::alloc::alloc(layout) };
            let base = NonNull::new(raw).ok_or(Error::oom(size, 0))?;
            Memory::Global { base, size }
        };
        let chunk = Chunk {
            memory,
            used: 0,
            stamp: 0,
        };
        let end = chunk.base().as_ptr().addr().checked_add(chunk.capacity());
        if cfg!(target_pointer_width = "64") && end.is_none_or(|e| e > isize::MAX as usize) {
            // User space lies in the lower half on every 64-bit target Rust supports; memory
            // above it would break the fast path's unchecked sums, so it is refused.
            return Err(Error::oom(bytes, 0));
        }
        Ok(chunk)
    }

    /// First byte of the chunk; its provenance covers the whole chunk.
    #[inline]
    pub(super) fn base(&self) -> NonNull<u8> {
        match &self.memory {
            Memory::Mapped(region) => region.base(),
            Memory::Global { base, .. } => *base,
        }
    }

    /// Bytes in the chunk.
    #[inline]
    pub(super) fn capacity(&self) -> usize {
        match &self.memory {
            Memory::Mapped(region) => region.capacity(),
            Memory::Global { size, .. } => *size,
        }
    }

    /// Whether the chunk is an anonymous mapping (else a block of the global allocator).
    pub(super) fn is_mapped(&self) -> bool {
        matches!(self.memory, Memory::Mapped(_))
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let Memory::Global { base, size } = self.memory {
            // SAFETY: `base` came from `std::alloc::alloc` with this very layout (checked when
            // it was made) and is freed once, here; no pointer into it is used afterwards (a
            // chunk is dropped only with `&mut Bump` or the Bump itself).
            unsafe {
                std::alloc::dealloc(
                    base.as_ptr(),
                    Layout::from_size_align_unchecked(size, CHUNK_ALIGN),
                )
            };
        }
    }
}
