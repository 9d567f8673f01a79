//! The page table: one [`Page`] record per [`PAGE`]-sized cell of a heap's reservation, in a
//! mapping of its own.
//!
//! The records are out of band: no write into a slot, and no overflow past a block, can reach
//! them. A pointer's record is found by address arithmetic alone, `(addr - base) >> 16`, with
//! `base` the reservation's start rounded down to a cell boundary, so that the cells (and the
//! pages carved on them) start on [`PAGE`] boundaries. The mapping is reserved for the whole
//! reservation at once (`MAP_NORESERVE` from its size up) and only the records of cells that
//! hold pages are ever written; a record never written reads as all zero, "not a page".
//!
//! Invariants kept here:
//! - `records` points to `cells` records, zeroed until written, that only this table's owner
//!   reaches.
//! - Cell `i` covers `[base + i * PAGE, base + (i + 1) * PAGE)`, and the cells cover the whole
//!   reservation the table was made for.

use core::ptr::NonNull;

use super::page::{PAGE, PAGE_SHIFT, Page};
use crate::{Error, Region};

/// The page records of one reservation. See the module docs.
pub(crate) struct PageTable {
    records: NonNull<Page>,
    base: usize,
    cells: usize,
    // The records point into this mapping; it lives as long as the table.
    _map: Region,
}

impl PageTable {
    /// A table for the reservation of `len` bytes at `start`.
    pub(crate) fn new(start: usize, len: usize) -> Result<PageTable, Error> {
        let base = start & !(PAGE - 1);
        let cells = (start + len - base).div_ceil(PAGE);
        let bytes = cells.checked_mul(size_of::<Page>()).ok_or(Error::layout(
            len,
            PAGE,
            "page table size overflows",
        ))?;
        let mut map = Region::reserve(bytes)?;
        let records = map.grow(map.capacity())?.cast::<Page>();
        Ok(PageTable {
            records,
            base,
            cells,
            _map: map,
        })
    }

    /// The record of the cell holding `addr`, if `addr` lies in the table's reservation.
    #[inline(always)]
    pub(crate) fn record(&self, addr: usize) -> Option<NonNull<Page>> {
        let i = addr.wrapping_sub(self.base) >> PAGE_SHIFT;
        if i >= self.cells {
            return None;
        }
        // SAFETY: `i < cells`, so the record lies inside the table's mapping (invariant 1).
        Some(unsafe { self.records.add(i) })
    }

    /// The records that describe pages, among the cells that overlap `[from, to)`, with the
    /// first address of each one's cell.
    pub(crate) fn pages_in(&self, from: usize, to: usize) -> impl Iterator<Item = (usize, &Page)> {
        let first = from.saturating_sub(self.base) >> PAGE_SHIFT;
        let last = (to.saturating_sub(self.base).div_ceil(PAGE)).min(self.cells);
        (first..last).filter_map(move |i| {
            // SAFETY: `i < cells` (invariant 1); the reference lives as long as `&self`, during
            // which the owner, which holds the table, does not write records.
            let r = unsafe { self.records.add(i).as_ref() };
            r.is_page().then_some((self.base + (i << PAGE_SHIFT), r))
        })
    }
}
