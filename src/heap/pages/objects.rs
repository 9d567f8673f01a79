//! `SmallObjects`: the small-object path as a heap owns it: the per-class state
//! ([`SmallPages`]), the page table that holds the records, and the traffic with the engine
//! (a page is carved from the engine as one block, and goes back to it as one block).
//!
//! The heap keeps only hooks: it asks here first for a small request, and for a pointer whose
//! cell's record says "page"; everything else is the engine's, as without pages.
//!
//! Hysteresis: a page whose last slot is freed stays, empty, while it is its class's only
//! listed page (besides the current one, which always stays), so that a class that empties
//! and refills does not carve and retire a page each time; a second empty page goes back to
//! the engine. A heap near its limit (`tight`) keeps no empty page, and `trim` retires them
//! all.
//!
//! Invariants kept here (beyond [`SmallPages`]'s and the table's):
//! - Every record that is a page describes an engine block of exactly [`PAGE`] bytes, live
//!   (allocated), whose payload is the record's cell start; the engine hands out nothing else
//!   in that cell.
//! - `carved - retired == pages.pages()`.

use core::ptr::NonNull;

use super::page::{NotASlot, PAGE, Page, SLOT_BYTES};
use super::table::PageTable;
use super::{CLASSES, SlotFreed, SmallPages};
use crate::engine::{Engine, Freed};
use crate::{BlockInfo, BlockState, Error, Stats};

/// What a free of a slot leaves for the heap to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotFree {
    /// Nothing.
    Done,
    /// The page emptied: the heap decides with [`SmallObjects::emptied`] whether it stays.
    Empty(NonNull<Page>),
}

/// The small-object path of one heap. See the module docs.
pub(crate) struct SmallObjects {
    pages: SmallPages,
    /// Made on the first page, for the heap's whole reservation.
    table: Option<PageTable>,
    /// Pages taken from the engine and given back to it, over the heap's life.
    carved: u64,
    retired: u64,
    /// Requests of each class the engine served because the class had no page yet.
    demand: [u8; CLASSES],
}

/// Requests of a class the engine serves before the class gets its first page: a page costs
/// 64 KiB of span, which a heap that asks for a few blocks of a size should not pay.
const PAGE_DEMAND: u8 = 8;

impl SmallObjects {
    pub(crate) fn new() -> SmallObjects {
        SmallObjects {
            pages: SmallPages::new(),
            table: None,
            carved: 0,
            retired: 0,
            demand: [0; CLASSES],
        }
    }

    /// A slot of class `c` from its current page: the fast path.
    #[inline(always)]
    pub(crate) fn alloc(&mut self, c: usize) -> Option<NonNull<u8>> {
        self.pages.alloc(c)
    }

    /// A slot of class `c` from a page with room, without carving a new one.
    #[inline]
    pub(crate) fn refill(&mut self, c: usize) -> Option<NonNull<u8>> {
        self.pages.refill(c)
    }

    /// Whether class `c`, which has no page with room, has been asked for often enough to
    /// get one; counts the request if not.
    #[inline]
    pub(crate) fn wants_page(&mut self, c: usize) -> bool {
        let d = &mut self.demand[c % CLASSES];
        if *d >= PAGE_DEMAND {
            return true;
        }
        *d += 1;
        false
    }

    /// A slot of class `c` from a page with room, else from a page carved from `engine`, whose
    /// span is the reservation of `len` bytes at `start`. `Ok(None)` when the engine has no
    /// room for a page: the owner may grow the span and ask again.
    #[cold]
    #[inline(never)]
    pub(crate) fn alloc_slow(
        &mut self,
        c: usize,
        engine: &mut Engine,
        start: usize,
        len: usize,
    ) -> Result<Option<NonNull<u8>>, Error> {
        if let Some(p) = self.pages.refill(c) {
            return Ok(Some(p));
        }
        if self.table.is_none() {
            self.table = Some(PageTable::new(start, len)?);
        }
        let Some(table) = self.table.as_ref() else {
            return Ok(None);
        };
        let Some(mem) = engine.alloc_over_aligned(SLOT_BYTES, PAGE)? else {
            return Ok(None);
        };
        let addr = mem.as_ptr() as usize;
        let record = table.record(addr).filter(|_| addr % PAGE == 0);
        let Some(record) = record else {
            // Not a cell of this table: the engine's span is not the reservation it was made
            // for. Nothing was handed out; the block goes back.
            debug_assert!(false, "page outside the page table");
            engine.free(mem)?;
            return Ok(None);
        };
        // The record is not in use: a page's record describes a live engine block covering its
        // whole cell (invariant 1), and the engine just handed out this cell's first byte.
        // SAFETY: the record is in this heap's table and free, as said; the block's SLOT_BYTES
        // bytes at `mem` are handed out by this path alone from now on.
        unsafe { self.pages.install(record, mem.as_ptr(), c) };
        self.carved += 1;
        Ok(self.pages.alloc(c))
    }

    /// The record of the page holding `addr`, if `addr` lies in one.
    #[inline(always)]
    pub(crate) fn page_of(&self, addr: usize) -> Option<NonNull<Page>> {
        let r = self.table.as_ref()?.record(addr)?;
        // SAFETY: a record of this heap's table; reading its tag is a read of owned memory.
        unsafe { r.as_ref() }.is_page().then_some(r)
    }

    /// Whether `addr` lies in a page of this path.
    #[inline(always)]
    pub(crate) fn owns(&self, addr: usize) -> bool {
        self.page_of(addr).is_some()
    }

    /// Frees the slot at `addr` of `page` (from [`page_of`](Self::page_of)), judged by the
    /// record alone: nothing is written unless it is an allocated slot.
    #[inline(always)]
    pub(crate) fn free(&mut self, page: NonNull<Page>, addr: usize) -> Result<SlotFree, Error> {
        // SAFETY: `page` is a live page record of this heap holding `addr` (`page_of`).
        match unsafe { self.pages.free(page, addr) } {
            Ok(SlotFreed::Done) => Ok(SlotFree::Done),
            Ok(SlotFreed::PageEmpty(p) | SlotFreed::CurrentEmpty(p)) => Ok(SlotFree::Empty(p)),
            Err(e) => Err(misuse(addr, e)),
        }
    }

    /// The common case of [`free`](Self::free), for the owner's fast path: `true` when the
    /// slot at `addr` was allocated and is freed now with no page to move; `false` with
    /// nothing changed (not a slot, not allocated, or a free that moves its page), and the
    /// owner then calls `free`.
    /// A page the free empties counts as staying when `keeps_empty` says that an emptied page
    /// stays (see [`emptied`](Self::emptied)) and it is its class's current or only listed
    /// page; `keeps_empty` is asked only then.
    #[inline(always)]
    pub(crate) fn free_cached(&mut self, addr: usize, keeps_empty: impl FnOnce() -> bool) -> bool {
        match self.page_of(addr) {
            // SAFETY: `page_of` found the live page record holding `addr`.
            Some(page) => unsafe { self.pages.free_cached(page, addr, keeps_empty) },
            None => false,
        }
    }

    /// The common case of resizing the slot at `p` (whose first `keep` bytes the caller owns)
    /// to `new_size` bytes aligned to 16 at most: it stays if it is large enough, else moves
    /// to a slot of the current page of the new size's class (at most `small_max`), when its
    /// own page stays where it is after the free. `None` with nothing changed otherwise: not
    /// an allocated slot, or a move these conditions do not cover.
    #[inline(always)]
    pub(crate) fn resize_cached(
        &mut self,
        p: NonNull<u8>,
        keep: usize,
        new_size: usize,
        small_max: usize,
    ) -> Option<(NonNull<u8>, bool)> {
        let page = self.page_of(p.as_ptr() as usize)?;
        // SAFETY: `page_of` found the live page record holding `p`.
        unsafe { self.pages.resize_cached(page, p, keep, new_size, small_max) }
    }

    /// The page `p` (from [`SlotFree::Empty`]) has just emptied: it stays if `keep` (the heap
    /// is neither near its limit nor mostly free) and it is its class's current page or only
    /// listed one; else its block is freed in `engine` and the page retired. What the engine
    /// free left is returned, for the heap to give memory back.
    #[cold]
    pub(crate) fn emptied(
        &mut self,
        p: NonNull<Page>,
        keep: bool,
        engine: &mut Engine,
    ) -> Option<Freed> {
        // SAFETY: `p` is a live record of this heap (it was just freed into); only read.
        let (used, class, start) =
            unsafe { (p.as_ref().used(), p.as_ref().class(), p.as_ref().start) };
        if used != 0 {
            return None;
        }
        let current = self.pages.is_current(p, class);
        // SAFETY: `p` is a live record of this heap; only read.
        if keep && (current || self.pages.only_listed(unsafe { p.as_ref() })) {
            return None;
        }
        let freed = release(engine, NonNull::new(start)?)?;
        // SAFETY: a live, empty page; `retire_current` for the current one, `retire` for any
        // other.
        unsafe {
            if current {
                self.pages.retire_current(p)
            } else {
                self.pages.retire(p)
            }
        };
        self.retired += 1;
        Some(freed)
    }

    /// Pages in use by this path.
    pub(crate) fn pages(&self) -> usize {
        self.pages.pages()
    }

    /// Slots handed out and not freed.
    #[inline(always)]
    pub(crate) fn live_slots(&self) -> u64 {
        let (allocs, frees) = self.pages.counts();
        allocs - frees
    }

    /// Usable bytes of the allocated slot at `addr` of `page`, else the misuse it is.
    #[inline(always)]
    pub(crate) fn usable(&self, page: NonNull<Page>, addr: usize) -> Result<usize, Error> {
        // SAFETY: as in `free`; only read.
        let page = unsafe { page.as_ref() };
        match page.allocated_slot(addr) {
            Ok(_) => Ok(page.slot_size()),
            Err(e) => Err(misuse(addr, e)),
        }
    }

    /// Retires every empty page whose block `engine` takes back, the current ones included;
    /// for `trim` and for a heap that is mostly free.
    pub(crate) fn retire_empty(&mut self, engine: &mut Engine) {
        let mut retired = 0;
        let mut give = |start: *mut u8| {
            let taken = NonNull::new(start)
                .and_then(|p| release(engine, p))
                .is_some();
            retired += u64::from(taken);
            taken
        };
        self.pages.retire_empty_current(&mut give);
        self.pages.retire_empty_listed(&mut give);
        self.retired += retired;
    }

    /// Turns the engine's counters into the heap's: the pages are not blocks the program
    /// asked for, their slots are.
    pub(crate) fn adjust(&self, s: &mut Stats) {
        let pages = self.pages.pages();
        let (allocs, frees) = self.pages.counts();
        s.allocations = s.allocations - self.carved + allocs;
        s.frees = s.frees - self.retired + frees;
        s.live_blocks = s.live_blocks - pages + (allocs - frees) as usize;
        s.bytes_in_use = s.bytes_in_use - pages * SLOT_BYTES + self.pages.in_use();
        s.free_bytes += pages * SLOT_BYTES - self.pages.in_use();
    }

    /// The block walk inside pages: if `cursor` is a slot of a page, that slot and the cursor
    /// after it (the next slot, or the header of the engine block after the page).
    pub(crate) fn slot_at(&self, cursor: usize, base: usize) -> Option<(BlockInfo, usize)> {
        let r = self.page_of(cursor)?;
        // SAFETY: a live record of this heap; only read.
        let page = unsafe { r.as_ref() };
        let (size, rel) = (page.slot_size(), cursor.wrapping_sub(page.start()));
        let i = rel / size;
        if rel % size != 0 || i >= page.capacity() {
            return None;
        }
        let next = if i + 1 < page.capacity() {
            cursor + size
        } else {
            page.start() + PAGE - crate::engine::block::HEADER
        };
        Some((slot_info(page, i, base), next))
    }

    /// The first slot of the engine block `info`, if it is a page, as [`slot_at`](Self::slot_at).
    pub(crate) fn first_slot(&self, info: &BlockInfo, base: usize) -> Option<(BlockInfo, usize)> {
        if info.state != BlockState::Allocated || info.size != PAGE {
            return None;
        }
        self.slot_at(info.addr, base)
    }

    /// The slots of the engine block `info`, if it is a page: each as a block of its own.
    pub(crate) fn slots(&self, info: &BlockInfo, base: usize) -> Option<Vec<BlockInfo>> {
        if info.state != BlockState::Allocated || info.size != PAGE {
            return None;
        }
        let r = self.page_of(info.addr)?;
        // SAFETY: a live record of this heap; only read.
        let page = unsafe { r.as_ref() };
        if page.start() != info.addr {
            return None;
        }
        Some(
            (0..page.capacity())
                .map(|i| slot_info(page, i, base))
                .collect(),
        )
    }

    /// Checks the invariants in the module docs and [`SmallPages::check`], for the engine's
    /// span `[from, to)`.
    pub(crate) fn check(&self, engine: &mut Engine, from: usize, to: usize) -> Result<(), Error> {
        let Some(table) = self.table.as_ref() else {
            return match self.pages.pages() {
                0 => Ok(()),
                _ => Err(corrupted(from, "small-object pages without a page table")),
            };
        };
        for (cell, page) in table.pages_in(from, to) {
            let block = engine.block_at(cell.wrapping_sub(crate::engine::block::HEADER));
            let sound = page.start() == cell
                && block.is_some_and(|(b, _)| {
                    b.state == BlockState::Allocated && b.size == PAGE && b.addr == cell
                });
            if !sound {
                return Err(corrupted(
                    cell,
                    "page record disagrees with its engine block",
                ));
            }
        }
        if self.carved - self.retired != self.pages.pages() as u64 {
            return Err(corrupted(from, "page counts disagree"));
        }
        self.pages
            .check(table.pages_in(from, to).map(|(_, p)| p))
            .map_err(|(addr, what)| corrupted(addr, what))
    }
}

/// Slot `i` of `page` as a block.
fn slot_info(page: &Page, i: usize, base: usize) -> BlockInfo {
    let size = page.slot_size();
    BlockInfo {
        addr: page.slot_addr(i),
        offset: page.slot_addr(i) - base,
        size,
        usable: size,
        state: if page.is_free(i) {
            BlockState::Free
        } else {
            BlockState::Allocated
        },
    }
}

/// Frees the engine block of an empty page at `p`, if the engine takes it back. A page whose
/// block's header was overwritten (the word before the page, outside its cell) stays a page:
/// its records and slots are intact, the slot path keeps judging its pointers, and `check`
/// reports the damage the engine sees.
fn release(engine: &mut Engine, p: NonNull<u8>) -> Option<Freed> {
    engine.live(p).ok()?;
    // Damage met in a neighbour is contained by the engine before it is reported; the free is
    // then tried again.
    (0..4).find_map(|_| engine.free(p).ok())
}

fn corrupted(addr: usize, what: &'static str) -> Error {
    Error::Corrupted { addr, what }
}

/// The error for a pointer into a page that is not an allocated slot's start.
#[cold]
fn misuse(addr: usize, e: NotASlot) -> Error {
    match e {
        NotASlot::Free => Error::DoubleFree { addr },
        NotASlot::InsideAllocated => Error::InvalidPointer {
            addr,
            reason: "it points into the middle of an allocated block",
        },
        NotASlot::InsideFree => Error::InvalidPointer {
            addr,
            reason: "it points into free memory, not at the start of a block",
        },
    }
}
