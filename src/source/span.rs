//! A span: one reservation of address space, used from its start up to a break, with the
//! engine over it and the span's metadata in a mapping of its own.
//!
//! The metadata mapping holds, one after the other: the engine's start map, a *side table* of
//! one fixed-size record per [`CELL`] of the span for the span's owner (the heap keeps its
//! small-object page records there), and optionally the bitmap of frees from other threads
//! ([`RemoteFrees`]). None of it can be reached by writing past a block: it is not in the
//! span. Every part is reserved for the whole span at once and touched only as it is used, so
//! a span costs address space in proportion to its reservation and memory in proportion to
//! what is used.
//!
//! A span's first byte is aligned as its owner asks (a heap aligns to [`CELL`], so that cells,
//! and the pages carved on them, start on a cell boundary). The reservation is made that much
//! larger and the bytes before the aligned start are never touched.
//!
//! Invariants kept here:
//! - `blocks.brk() == lead + engine.span()`: the region's break is the engine's span end.
//! - The side table has `reserved / CELL` records of `stride` bytes, zeroed until the owner
//!   writes them.

use core::ptr::NonNull;

use super::remote::{self, RemoteFrees};
use crate::engine::{self, Engine};
use crate::{Error, Region};

/// log2 of [`CELL`].
pub(crate) const CELL_SHIFT: usize = 16;
/// The unit of the side table: one record per this many bytes of span.
pub(crate) const CELL: usize = 1 << CELL_SHIFT;

/// One span. See the module docs.
pub(crate) struct Span {
    engine: Engine,
    /// Bytes of the reservation before the aligned start; the region's break starts past them.
    lead: usize,
    /// Bytes reserved from the aligned start on (a multiple of [`CELL`]).
    reserved: usize,
    side: *mut u8,
    stride: usize,
    remote: Option<RemoteFrees>,
    // The engine, the side table and the remote bitmap point into these; they are dropped
    // after them.
    blocks: Region,
    _meta: Region,
}

// SAFETY: a Span exclusively owns its two mappings, and its raw pointers point only into them;
// moving it to another thread moves that ownership. The remote bitmap is `Sync` on its own.
unsafe impl Send for Span {}

fn align8(n: usize) -> usize {
    n.next_multiple_of(8)
}

impl Span {
    /// Reserves a span of `reserved` bytes (a multiple of [`CELL`]) whose start is aligned to
    /// `align` (a power of two, at least a page), with side records of `stride` bytes and, if
    /// `remote`, a bitmap for frees from other threads.
    pub(crate) fn reserve(
        reserved: usize,
        align: usize,
        stride: usize,
        remote: bool,
    ) -> Result<Span, Error> {
        debug_assert!(reserved % CELL == 0 && align.is_power_of_two());
        let page = crate::page_size();
        let align = align.max(page);
        let slack = align - page;
        let total = reserved.checked_add(slack).ok_or(Error::layout(
            reserved,
            align,
            "span size overflows",
        ))?;
        let mut blocks = Region::reserve(total)?;
        let raw = blocks.base().as_ptr() as usize;
        let lead = raw.next_multiple_of(align) - raw;
        blocks.grow(lead)?;

        let granules = reserved / engine::block::GRANULE;
        let map_len = align8(engine::map_bytes(granules));
        let side_len = align8((reserved / CELL) * stride);
        let remote_len = if remote {
            remote::bitmap_bytes(granules)
        } else {
            0
        };
        let mut meta = Region::reserve(map_len + side_len + remote_len.max(8))?;
        let meta_base = meta.grow(meta.capacity())?;
        // SAFETY: the offsets are inside the fresh, zeroed metadata mapping, laid out so that
        // the start map, the side table and the bitmap do not overlap; each part is 8-aligned.
        let (side, bitmap) = unsafe {
            (
                meta_base.as_ptr().add(map_len),
                meta_base.as_ptr().add(map_len + side_len),
            )
        };
        // Both mappings are owned by the span and dropped after the engine; the reservation
        // before `base` is never used.
        // SAFETY: `base` starts `reserved` bytes only this engine touches; the start map is
        // the first `map_bytes(granules)` zeroed bytes of the metadata mapping, used by no one else.
        let engine = unsafe {
            let base = NonNull::new_unchecked(blocks.base().as_ptr().add(lead));
            Engine::new(base, reserved, meta_base)
        };
        // The engine's empty span is one granule; keep the break equal to its end.
        blocks.grow(engine.span())?;
        let remote = if remote {
            // SAFETY: `remote_len` zeroed, 8-aligned bytes reserved for the bitmap alone.
            Some(unsafe { RemoteFrees::new(bitmap, granules) })
        } else {
            None
        };
        Ok(Span {
            engine,
            lead,
            reserved,
            side,
            stride,
            remote,
            blocks,
            _meta: meta,
        })
    }

    /// The engine over this span.
    #[inline(always)]
    pub(crate) fn engine(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// The engine, to read.
    #[inline(always)]
    pub(crate) fn engine_ref(&self) -> &Engine {
        &self.engine
    }

    /// First address of the span.
    #[inline(always)]
    pub(crate) fn base(&self) -> usize {
        self.engine.base()
    }

    /// Bytes reserved.
    #[inline(always)]
    pub(crate) fn reserved(&self) -> usize {
        self.reserved
    }

    /// Bytes in use: from the start to the break.
    #[inline(always)]
    pub(crate) fn used(&self) -> usize {
        self.engine.span()
    }

    /// Bytes the break can still move up.
    #[inline(always)]
    pub(crate) fn room(&self) -> usize {
        self.reserved - self.engine.span()
    }

    /// Whether `addr` lies in the reservation.
    #[inline(always)]
    pub(crate) fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base()) < self.reserved
    }

    /// The side record of the cell holding `addr`, which lies in the span.
    #[inline(always)]
    pub(crate) fn side_record(&self, addr: usize) -> NonNull<u8> {
        debug_assert!(self.contains(addr));
        let cell = (addr - self.base()) >> CELL_SHIFT;
        // SAFETY: `addr` lies in the reservation, so `cell < reserved / CELL`, and the side
        // table has a record of `stride` bytes for each such cell.
        unsafe { NonNull::new_unchecked(self.side.add(cell * self.stride)) }
    }

    /// The side records of the cells in use, in address order, with the cell's address.
    pub(crate) fn side_records(&self) -> impl Iterator<Item = (usize, NonNull<u8>)> + '_ {
        let cells = self.used().div_ceil(CELL);
        (0..cells).map(move |c| {
            let addr = self.base() + c * CELL;
            (addr, self.side_record(addr))
        })
    }

    /// The bitmap of frees from other threads, if the span has one.
    #[inline(always)]
    pub(crate) fn remote(&self) -> Option<&RemoteFrees> {
        self.remote.as_ref()
    }

    /// Moves the break up by `bytes` (a multiple of 16, at most [`room`](Self::room)) and adds
    /// the memory to the engine as free.
    pub(crate) fn grow(&mut self, bytes: usize) -> Result<(), Error> {
        if bytes > self.room() {
            return Err(Error::oom(bytes, self.room()));
        }
        let end = self.base() + self.engine.span() + bytes;
        self.engine.grow_span(end)?;
        self.blocks.grow(bytes)?;
        Ok(())
    }

    /// Cuts the free last block so that `keep` bytes of it remain (0: all of it) and gives the
    /// whole pages past the new break back to the OS. Returns the bytes given back; 0 when
    /// the last block is not free or there is less than a page to give.
    pub(crate) fn trim_top(&mut self, keep: usize) -> Result<usize, Error> {
        let Some((b, size)) = self.engine.free_top()? else {
            return Ok(0);
        };
        let keep = if keep >= engine::block::MIN_BLOCK {
            engine::addr::granule_floor(keep)
        } else {
            0
        };
        if size < keep + crate::page_size() {
            return Ok(0);
        }
        let cut = self
            .engine
            .shrink_span((b + keep).span_end(), crate::page_size())?;
        self.blocks.shrink(cut)
    }

    /// Whether the region's break agrees with the engine (the span's own invariant).
    pub(crate) fn break_agrees(&self) -> bool {
        self.blocks.brk() == self.lead + self.engine.span()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_is_aligned_grows_and_trims() {
        let mut s = Span::reserve(4 * CELL, CELL, 64, true).unwrap();
        assert_eq!(s.base() % CELL, 0);
        assert!(s.break_agrees());
        s.grow(2 * CELL).unwrap();
        assert!(s.break_agrees());
        assert_eq!(s.used(), 2 * CELL + engine::block::GRANULE);
        let p = s.engine().alloc(1000, 16).unwrap().unwrap();
        assert!(s.contains(p.as_ptr() as usize));
        // SAFETY: a side record is `stride` zeroed bytes of the span's metadata.
        let rec = s.side_record(p.as_ptr() as usize);
        assert_eq!(unsafe { rec.as_ptr().read() }, 0);
        assert_eq!(s.side_records().count(), 3);
        assert!(s.remote().is_some_and(|r| r.is_empty()));
        s.engine().free(p).unwrap();
        let given = s.trim_top(0).unwrap();
        assert!(given >= CELL, "{given}");
        assert!(s.break_agrees());
        assert!(s.grow(s.room() + 16).is_err());
        s.engine().check().unwrap();
    }
}
