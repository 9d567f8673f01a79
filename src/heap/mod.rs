//! `Heap`: the block engine over a growable break, plus mapped large blocks.
//!
//! The heap reserves its whole address space once (`max_size`, 64 GiB by default, with
//! `MAP_NORESERVE`) and moves its break forward in `growth_increment` steps only when no free
//! block fits. Requests at or above `mmap_threshold` get their own mapping
//! ([`large`](crate::source::large)). When the free block at the top grows past `trim_threshold`, the break moves
//! back and the pages go to the OS. Requests of up to 2 KiB are served from size-class pages
//! carved from the engine ([`pages`]), unless `HeapConfig::small_pages` turns them off.
//!
//! Invariants kept here (beyond the engine's and the large table's):
//! - The region's break equals the engine's span: `blocks.brk() == engine.span()`.
//! - `blocks.brk() + large.bytes() <= max_size`.
//! - A pointer whose cell's page record is a page is the small-object path's alone; the
//!   engine sees none of them (`small.page_of` is asked first).

mod config;

pub(crate) mod pages;

use core::cell::UnsafeCell;
use core::ptr::NonNull;

use crate::backend::Backend;
use crate::engine::{self, Engine, Resize};
use crate::source::large::LargeBlocks;
use crate::{BlockInfo, BlockState, Error, Region, Snapshot, Stats};
pub use config::HeapConfig;
use pages::{SlotFree, SmallObjects};

/// The heap packs (best fit, no caching) once less than `max_size / TIGHT_FRACTION` is left
/// to grow into (see `HeapCore::choose_fit`).
const TIGHT_FRACTION: usize = 2;

/// Free bytes the engine needs to carve a small-object page wherever the free block lies: the
/// page, the worst misalignment and a lead block.
const PAGE_NEED: usize = 2 * pages::PAGE + 32;

/// A growable heap: segregated free lists with coalescing over an sbrk-style break, large
/// blocks in their own mappings, in-place `realloc`, and memory given back to the OS.
///
/// All methods take `&self`; the heap is `Send` but not `Sync`. Wrap it in a
/// [`LockedHeap`](crate::LockedHeap) to share it between threads.
///
/// # Example
///
/// ```
/// use strata_alloc::Heap;
///
/// let heap = Heap::new()?;
/// let mut map = hashbrown::HashMap::new_in(&heap);
/// for i in 0..1000 {
///     map.insert(i, i.to_string());
/// }
/// assert_eq!(map[&42], "42");
/// heap.check()?;
/// # Ok::<(), strata_alloc::Error>(())
/// ```
pub struct Heap {
    core: UnsafeCell<HeapCore>,
}

/// Counters the heap keeps beside the engine's.
#[derive(Default, Clone, Copy)]
struct HeapCounters {
    break_growths: u64,
    break_shrinks: u64,
    bytes_from_os: u64,
    bytes_to_os: u64,
    large_allocations: u64,
    large_frees: u64,
    peak: usize,
}

/// Everything a heap is; `Heap`, `LockedHeap` and `GlobalHeap` reach it through a cell or a lock.
pub(crate) struct HeapCore {
    engine: Engine,
    large: LargeBlocks,
    counters: HeapCounters,
    max_size: usize,
    increment: usize,
    mmap_threshold: usize,
    trim_threshold: usize,
    /// Whether the heap packs (see `choose_fit`).
    tight: bool,
    /// The break when `give_back` last merged the quick stacks, so that a heap that stays
    /// mostly free without being able to trim merges them once, not on every free.
    packed_at: usize,
    /// The small-object path (`pages`), and the largest request it serves (0: none).
    small: SmallObjects,
    small_max: usize,
    // The engine points into these; they are dropped after it.
    blocks: Region,
    map: Region,
}

// SAFETY: a HeapCore exclusively owns its mappings; the engine's raw pointers point only into
// them. Moving it to another thread moves that ownership with it.
unsafe impl Send for HeapCore {}

// SAFETY: a Heap is a HeapCore in a cell; see HeapCore.
unsafe impl Send for Heap {}

impl HeapCore {
    pub(crate) fn new(config: HeapConfig) -> Result<HeapCore, Error> {
        let page = crate::page_size();
        let round = |n: usize| n.checked_add(page - 1).map(|n| n & !(page - 1));
        if config.max_size == 0 {
            return Err(Error::layout(0, page, "a heap needs a max_size above zero"));
        }
        let max_size = round(config.max_size).ok_or(Error::layout(
            config.max_size,
            page,
            "max_size overflows",
        ))?;
        let increment = round(config.growth_increment.max(page)).ok_or(Error::layout(
            config.growth_increment,
            page,
            "growth_increment overflows",
        ))?;
        let mut blocks = Region::reserve(max_size)?;
        let (map, map_ptr) = engine::reserve_map(max_size)?;
        // SAFETY: `blocks` is a fresh page-aligned reservation of `max_size` bytes that only
        // this engine touches; `map` is a fresh zeroed mapping large enough for its start map.
        // Both are owned by this HeapCore and dropped after the engine.
        let engine = unsafe { Engine::new(blocks.base(), max_size, map_ptr) };
        // The engine's empty span is 16 bytes; keep the break equal to it.
        blocks.grow(16)?;
        let mmap_threshold = config.mmap_threshold.max(1);
        let large = LargeBlocks::new(max_size / mmap_threshold.max(page) + 16)?;
        Ok(HeapCore {
            engine,
            large,
            counters: HeapCounters::default(),
            max_size,
            increment,
            mmap_threshold,
            trim_threshold: config.trim_threshold.max(increment),
            tight: false,
            packed_at: 0,
            small: SmallObjects::new(),
            small_max: if config.pages_on() {
                pages::SMALL_MAX.min(mmap_threshold - 1)
            } else {
                0
            },
            blocks,
            map,
        })
    }

    /// Bytes taken from the OS and not given back: the break plus mapped blocks.
    fn footprint(&self) -> usize {
        self.blocks.brk() + self.large.bytes()
    }

    #[inline(always)]
    fn note_peak(&mut self) {
        // With no mapped block the total is the engine's, whose peak the engine keeps itself;
        // `stats` takes the larger of the two.
        let large = self.large.bytes();
        if large != 0 {
            let now = self.engine.bytes_in_use() + large;
            if now > self.counters.peak {
                self.counters.peak = now;
            }
        }
    }

    fn out_of_memory(&self, size: usize) -> Error {
        let room = self.max_size - self.footprint();
        Error::oom(size, room.max(self.engine.largest_free()))
    }

    /// Moves the break up so that a block of `bsize` bytes fits at the top.
    #[cold]
    fn grow_break(&mut self, bsize: usize, at_least: usize) -> Result<(), Error> {
        let top = self.engine.free_top()?.map_or(0, |(_, s)| s);
        let page = crate::page_size();
        // Grow geometrically (an eighth of the heap, at least one increment): a heap that
        // keeps growing moves its break a few dozen times, not once per increment.
        // Near `max_size` the step shrinks to what is left: only the request itself must fit.
        let step = self.increment.max(self.blocks.brk() / 8);
        let room = (self.max_size - self.footprint()) & !15;
        let need = bsize.saturating_sub(top).max(at_least).next_multiple_of(16);
        if need > room {
            return Err(self.out_of_memory(bsize));
        }
        let grow = need
            .max(step)
            .next_multiple_of(page)
            .min(room)
            .max(need.max(32));
        if grow > room {
            return Err(self.out_of_memory(bsize));
        }
        self.blocks.grow(grow)?;
        let end = self.blocks.base().as_ptr() as usize + self.blocks.brk();
        self.engine.extend(end)?;
        self.counters.break_growths += 1;
        self.counters.bytes_from_os += grow as u64;
        self.choose_fit();
        Ok(())
    }

    /// Packs once the heap is near `max_size`: best fit, every free merged at once, and a
    /// resized block moved when that leaves the free memory in larger pieces (`move_to_pack`).
    ///
    /// While the break can grow, a request that finds no free block costs only a break move,
    /// so the default fit and deferred coalescing are good enough. Near the limit,
    /// fragmentation decides when requests start to fail, and both looking at more blocks
    /// for the smallest that fits and merging every free pay for themselves
    /// (docs/BENCHMARKS.md, heap efficiency). Called whenever the break moves; only a switch
    /// off flushes the quick stacks.
    fn choose_fit(&mut self) {
        let room = self.max_size - self.footprint();
        let tight = room < self.max_size / TIGHT_FRACTION;
        self.tight = tight;
        self.engine.set_best_fit(tight);
        // A damaged cached block the flush meets is left in place; `check` and the next free
        // near it report it, as after any flush.
        let _ = self.engine.set_caching(!tight);
    }

    /// A block in its own mapping: every request of `mmap_threshold` bytes or more, and every
    /// request aligned beyond the engine's `MAX_ALIGN` (over-mapped by the alignment when it
    /// exceeds the page, see [`LargeBlocks::alloc_aligned`]).
    fn alloc_large(&mut self, size: usize, align: usize) -> Result<NonNull<u8>, Error> {
        let page = crate::page_size();
        let lead = align.saturating_sub(page);
        let room = self.max_size - self.footprint();
        if size > isize::MAX as usize - page || size.saturating_add(lead) > room {
            return Err(self.out_of_memory(size));
        }
        let (p, len) = if align > page {
            self.large.alloc_aligned(size, align)?
        } else {
            self.large.alloc(size)?
        };
        if self.footprint() > self.max_size {
            // Page rounding took it over the limit: give it back.
            self.large.free(p.as_ptr() as usize)?;
            return Err(self.out_of_memory(size));
        }
        self.counters.large_allocations += 1;
        self.counters.bytes_from_os += len as u64;
        self.note_peak();
        Ok(p)
    }

    /// After a free that merged a block and reached the free top block, or left most of a
    /// sizeable heap free: gives the top back to the OS once it passes the trim threshold,
    /// which follows the live size, so that a heap that shrinks a little and grows back does
    /// not hand pages to the OS and fault them in again, while a heap that empties gives back
    /// all but one increment.
    ///
    /// Cached blocks (quick stacks) are never merged, so the last small blocks freed can keep
    /// the free memory below them from reaching the top. When most of the heap is free and the
    /// top is still too small to trim, the stacks are merged first: once per break position.
    #[inline(never)]
    fn give_back(&mut self, freed: engine::Freed, in_use: usize) -> Result<(), Error> {
        let threshold = self.trim_threshold.max(in_use / 4);
        let mut top = if freed.at_top { freed.size } else { 0 };
        let brk = self.blocks.brk();
        if top < threshold
            && in_use < brk / 4
            && brk != self.packed_at
            && (self.engine.cached_blocks() != 0 || self.small.pages() != 0)
        {
            self.packed_at = brk;
            // Empty small-object pages kept as spares go back too, so that they can merge.
            self.small.retire_empty(&mut self.engine);
            // A damaged cached block stays where it is; `check` reports it.
            let _ = self.engine.flush_quick();
            top = self.engine.free_top()?.map_or(0, |(_, size)| size);
        }
        if top >= threshold {
            self.trim_top(self.increment.max(in_use / 8))?;
        }
        Ok(())
    }

    /// Cuts the free top block down to `keep` bytes (0: remove it) and gives the pages back.
    fn trim_top(&mut self, keep: usize) -> Result<usize, Error> {
        let Some((b, size)) = self.engine.free_top()? else {
            return Ok(0);
        };
        // What is kept must be a block of its own, or nothing.
        let keep = if keep >= engine::block::MIN_BLOCK {
            keep & !15
        } else {
            0
        };
        if size < keep + crate::page_size() {
            return Ok(0);
        }
        let old_span = self.engine.span();
        let cut = self.engine.truncate_top(b + 8 + keep)?;
        let released = self.blocks.shrink(cut)?;
        self.release_map_tail(old_span);
        self.counters.break_shrinks += 1;
        self.counters.bytes_to_os += released as u64;
        self.choose_fit();
        Ok(released)
    }

    /// Gives back the pages of start map that covered the span cut off since it was
    /// `old_span` bytes: their bits are clear (nothing starts past the span), so they read the
    /// same as fresh pages. The summary words at the map's end stay.
    fn release_map_tail(&mut self, old_span: usize) {
        let page = crate::page_size();
        let keep = engine::groups_bytes(self.engine.span() / 16 + 1).next_multiple_of(page);
        let summary = engine::groups_bytes(self.max_size / 16) & !(page - 1);
        let to = engine::groups_bytes(old_span / 16 + 1)
            .next_multiple_of(page)
            .min(summary);
        if to > keep {
            // A refused release only leaves the pages resident.
            // SAFETY: the range covers map groups past the span's end, whose bits are all
            // clear; the engine reads them as zero, which is what released pages read as.
            let _ = unsafe { self.map.release(keep, to - keep) };
        }
    }

    pub(crate) fn trim(&mut self) -> usize {
        // Empty small-object pages go back to the engine first, so that they can merge.
        self.small.retire_empty(&mut self.engine);
        // Cached small blocks may sit at the top; merge them first. Damage the flush or the
        // top block meets is contained (quarantined, counted), so trimming goes on after it.
        let _ = self.engine.flush_quick();
        self.trim_top(0).or_else(|_| self.trim_top(0)).unwrap_or(0)
    }

    pub(crate) fn stats(&self) -> Stats {
        let mut s = self.engine.stats();
        self.small.adjust(&mut s);
        let c = &self.counters;
        s.allocations += c.large_allocations;
        s.frees += c.large_frees;
        s.live_blocks += self.large.count();
        s.bytes_in_use += self.large.bytes();
        s.peak_bytes_in_use = c.peak.max(s.peak_bytes_in_use).max(s.bytes_in_use);
        s.managed_bytes = self.footprint();
        s.break_growths = c.break_growths;
        s.break_shrinks = c.break_shrinks;
        s.mapped_blocks = self.large.count();
        s.mapped_bytes = self.large.bytes();
        s.bytes_from_os = c.bytes_from_os;
        s.bytes_to_os = c.bytes_to_os;
        s
    }

    pub(crate) fn check(&mut self) -> Result<(), Error> {
        self.engine.check_structure()?;
        let base = self.engine.base();
        self.small
            .check(&mut self.engine, base, base + self.blocks.brk())?;
        self.large.check()?;
        if self.blocks.brk() != self.engine.span() || self.footprint() > self.max_size {
            return Err(Error::Corrupted {
                addr: self.engine.base(),
                what: "heap break disagrees with the block span",
            });
        }
        // Quarantined damage last: that error means everything else is sound.
        self.engine.check_quarantine()
    }

    pub(crate) fn first_block(&self) -> usize {
        self.engine.first_block()
    }

    /// The block at walk position `b` and the next position. A small-object page shows as its
    /// slots: the walk steps through them before going on to the engine block after the page.
    pub(crate) fn block_at(&mut self, b: usize) -> Option<(BlockInfo, usize)> {
        let base = self.engine.base();
        if let Some(slot) = self.small.slot_at(b, base) {
            return Some(slot);
        }
        let (info, next) = self.engine.block_at(b)?;
        Some(self.small.first_slot(&info, base).unwrap_or((info, next)))
    }

    /// The slots of the heap block `info`, if it is a small-object page.
    pub(crate) fn page_slots(&self, info: &BlockInfo) -> Option<Vec<BlockInfo>> {
        self.small.slots(info, self.engine.base())
    }

    pub(crate) fn mapped_blocks(&self) -> Vec<BlockInfo> {
        let base = self.engine.base();
        self.large
            .iter()
            .map(|(addr, len)| BlockInfo {
                addr,
                offset: addr.wrapping_sub(base),
                size: len,
                usable: len,
                state: BlockState::Mapped,
            })
            .collect()
    }

    pub(crate) fn snapshot(&mut self, title: &'static str) -> Snapshot {
        let stats = self.stats();
        let mut snap = self.engine.snapshot(title, stats);
        let blocks = core::mem::take(&mut snap.blocks);
        for b in blocks {
            match self.page_slots(&b) {
                Some(slots) => snap.blocks.extend(slots),
                None => snap.blocks.push(b),
            }
        }
        snap.blocks.extend(self.mapped_blocks());
        snap
    }

    /// A request the engine serves: from its free blocks, else after moving the break.
    #[inline(always)]
    fn alloc_engine(&mut self, size: usize, align: usize) -> Result<NonNull<u8>, Error> {
        if let Some(p) = self.engine.alloc(size, align)? {
            self.note_peak();
            return Ok(p);
        }
        let slack = if align > 16 { align + 32 } else { 0 };
        let bsize = engine::block_size(size).ok_or_else(|| self.out_of_memory(size))? + slack;
        self.grow_break(bsize, 0)?;
        let p = self
            .engine
            .alloc(size, align)?
            .ok_or_else(|| self.out_of_memory(size))?;
        self.note_peak();
        Ok(p)
    }

    /// A small request of class `c` whose current page is full: another page of the class,
    /// else a new page (moving the break for it if need be), else the engine. Near the limit
    /// no page is carved: the engine packs small blocks more tightly than partly used pages.
    #[cold]
    #[inline(never)]
    fn alloc_small(&mut self, c: usize, size: usize, align: usize) -> Result<NonNull<u8>, Error> {
        if let Some(p) = self.small.refill(c) {
            return Ok(p);
        }
        if self.tight || !self.small.wants_page(c) {
            return self.alloc_engine(size, align);
        }
        let (start, len) = (self.blocks.base().as_ptr() as usize, self.blocks.capacity());
        for grown in [false, true] {
            if grown && self.grow_break(PAGE_NEED, 0).is_err() {
                break;
            }
            if let Some(p) = self.small.alloc_slow(c, &mut self.engine, start, len)? {
                self.note_peak();
                return Ok(p);
            }
        }
        self.alloc_engine(size, align)
    }

    /// A small-object page has emptied: a spare stays for the class to refill, unless the heap
    /// is near its limit or mostly free, where the page goes back to the engine and can merge.
    #[cold]
    #[inline(never)]
    fn page_emptied(&mut self, page: NonNull<pages::Page>) -> Result<(), Error> {
        let keep = !self.tight && self.engine.bytes_in_use() >= self.blocks.brk() / 4;
        // The slot is free whatever happens to the page: a page the engine does not take back
        // stays a page.
        if let Some(freed) = self.small.emptied(page, keep, &mut self.engine) {
            self.after_free(freed);
        }
        Ok(())
    }

    /// Frees the engine block at `p`, and gives memory back to the OS when that lets it.
    #[inline(always)]
    fn free_block(&mut self, p: NonNull<u8>) -> Result<(), Error> {
        let freed = self.engine.free(p)?;
        self.after_free(freed);
        Ok(())
    }

    /// After an engine free: gives memory back to the OS when the free lets it.
    #[inline(always)]
    fn after_free(&mut self, freed: engine::Freed) {
        // A cached free or an ended loan changes nothing below the top, and is the hot path:
        // only a merged free can let the heap give memory back.
        if freed.binned {
            let (brk, in_use) = (self.blocks.brk(), self.engine.bytes_in_use());
            if freed.at_top || (in_use < brk / 4 && brk > 4 * self.trim_threshold) {
                // The free is done whatever happens here: damage found on the way to the
                // top is contained (and counted), and only the trim is skipped.
                let _ = self.give_back(freed, in_use);
            }
        }
    }

    fn is_heap_block(&self, p: NonNull<u8>) -> bool {
        self.engine.contains(p.as_ptr() as usize)
    }

    fn count_misuse<T>(&mut self, r: Result<T, Error>) -> Result<T, Error> {
        if r.as_ref().is_err_and(Error::is_misuse) {
            self.engine.counters.misuses_caught += 1;
        }
        r
    }
}

impl Backend for HeapCore {
    const NAME: &'static str = "Heap";

    /// Every power of two that fits the address space: past the engine's 4096, blocks are
    /// served from their own mappings.
    const MAX_ALIGN: usize = 1 << (usize::BITS - 2);

    #[inline(always)]
    fn alloc(&mut self, size: usize, align: usize) -> Result<NonNull<u8>, Error> {
        if size <= self.small_max && align <= 16 {
            let c = pages::class_of(size);
            if let Some(p) = self.small.alloc(c) {
                return Ok(p);
            }
            return self.alloc_small(c, size, align);
        }
        if size >= self.mmap_threshold || align > engine::MAX_ALIGN {
            return self.alloc_large(size, align);
        }
        if size <= self.small_max {
            if let Some(c) = pages::class_for(size, align) {
                if let Some(p) = self.small.alloc(c) {
                    return Ok(p);
                }
                return self.alloc_small(c, size, align);
            }
        }
        self.alloc_engine(size, align)
    }

    fn alloc_zeroed(&mut self, size: usize, align: usize) -> Result<NonNull<u8>, Error> {
        let clean = self.engine.clean_mark();
        let p = self.alloc(size, align)?;
        // Mapped blocks are fresh pages, already zero; heap blocks are cleared where dirty,
        // and slots, which are reused without passing through the engine, always.
        if self.small.owns(p.as_ptr() as usize) {
            // SAFETY: `p` is a fresh slot of at least `size` bytes.
            unsafe { p.as_ptr().write_bytes(0, size) };
        } else if self.is_heap_block(p) {
            self.engine.clear_for_calloc(p, size, clean);
        }
        Ok(p)
    }

    #[inline(always)]
    fn free(&mut self, p: NonNull<u8>) -> Result<(), Error> {
        let addr = p.as_ptr() as usize;
        // Pages lie in the span, so a slot needs no span test.
        if let Some(page) = self.small.page_of(addr) {
            let r = self.small.free(page, addr);
            return match self.count_misuse(r)? {
                SlotFree::Done => Ok(()),
                SlotFree::Empty(page) => self.page_emptied(page),
            };
        }
        if self.is_heap_block(p) {
            return self.free_block(p);
        }
        let r = self.large.free(p.as_ptr() as usize);
        let len = self.count_misuse(r)?;
        self.counters.large_frees += 1;
        self.counters.bytes_to_os += len as u64;
        Ok(())
    }

    fn usable_size(&mut self, p: NonNull<u8>) -> Result<usize, Error> {
        if self.is_heap_block(p) {
            if let Some(page) = self.small.page_of(p.as_ptr() as usize) {
                let r = self.small.usable(page, p.as_ptr() as usize);
                return self.count_misuse(r);
            }
            return self.engine.usable_size(p);
        }
        let r = self.large.len_of(p.as_ptr() as usize);
        self.count_misuse(r)
    }

    fn resize_in_place(&mut self, p: NonNull<u8>, new_size: usize) -> Result<bool, Error> {
        if let Some(page) = self.small.page_of(p.as_ptr() as usize) {
            // A slot keeps its class: it stays where the new size fits it.
            let r = self.small.usable(page, p.as_ptr() as usize);
            return Ok(new_size <= self.count_misuse(r)?);
        }
        if self.is_heap_block(p) {
            let reach = match self.engine.resize(p, new_size)? {
                Resize::Done => {
                    self.note_peak();
                    return Ok(true);
                }
                Resize::Blocked => return Ok(false),
                // At the top of the heap: move the break instead of the block.
                Resize::AtTop { reach } => reach,
            };
            let Some(want) = engine::block_size(new_size) else {
                return Ok(false);
            };
            let need = want - (reach + 8);
            if self.grow_break(want, need).is_err() {
                return Ok(false);
            }
            let grown = self.engine.resize_in_place(p, new_size)?;
            self.note_peak();
            return Ok(grown);
        }
        let addr = p.as_ptr() as usize;
        let r = self.large.len_of(addr);
        let len = self.count_misuse(r)?;
        let page = crate::page_size();
        if new_size <= len {
            // Give pages back only on a real shrink, below half the mapping: a request that
            // fits the headroom left by `grown_len` must not undo it.
            if new_size < len / 2 && len - new_size >= self.increment {
                if let Some((_, new_len, old)) = self.large.remap(addr, new_size, false)? {
                    self.counters.bytes_to_os += (old - new_len) as u64;
                }
            }
            return Ok(true);
        }
        if new_size > self.max_size - self.footprint() + len
            || new_size > isize::MAX as usize - page
        {
            return Ok(false);
        }
        let target = self.grown_len(len, new_size);
        match self.large.remap(addr, target, false)? {
            Some((_, new_len, old)) => {
                self.counters.bytes_from_os += (new_len - old) as u64;
                self.note_peak();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn move_block(
        &mut self,
        p: NonNull<u8>,
        old: usize,
        new_size: usize,
        align: usize,
    ) -> Result<NonNull<u8>, Error> {
        // A remapped block may move to any page: only page alignment survives that.
        let remappable = !self.is_heap_block(p)
            && align <= crate::page_size()
            && new_size >= self.mmap_threshold
            && new_size <= self.max_size - self.footprint() + old;
        if remappable {
            let addr = p.as_ptr() as usize;
            let target = self.grown_len(self.large.len_of(addr)?, new_size);
            if let Some((q, new_len, old_len)) = self.large.remap(addr, target, true)? {
                self.counters.bytes_from_os += new_len.saturating_sub(old_len) as u64;
                self.note_peak();
                return Ok(q);
            }
        }
        // A block growing into the mapped range gets the same headroom.
        let target = if new_size >= self.mmap_threshold && new_size > old {
            self.grown_len(old, new_size)
        } else {
            new_size
        };
        let q = match self.alloc(target, align) {
            Ok(q) => q,
            Err(Error::OutOfMemory { .. })
                if self.is_heap_block(p)
                    && align <= 16
                    && !self.small.owns(p.as_ptr() as usize) =>
            {
                // Nothing free elsewhere is large enough; the block's own free neighbours
                // merged with it may be.
                match self
                    .engine
                    .resize_backward(p, new_size, old.min(new_size))?
                {
                    Some(q) => return Ok(q),
                    None => return Err(self.out_of_memory(new_size)),
                }
            }
            Err(e) => return Err(e),
        };
        self.relocate(p, q, old.min(new_size))
    }

    /// Near the limit, a block being resized may move instead (see `pack_move`); elsewhere
    /// this is one test on the resize path.
    #[inline(always)]
    fn move_to_pack(
        &mut self,
        p: NonNull<u8>,
        old: usize,
        new_size: usize,
        align: usize,
    ) -> Result<Option<NonNull<u8>>, Error> {
        if !self.tight {
            return Ok(None);
        }
        self.pack_move(p, old, new_size, align)
    }

    fn stats(&self) -> Stats {
        HeapCore::stats(self)
    }

    fn check(&mut self) -> Result<(), Error> {
        HeapCore::check(self)
    }

    fn stats_mut(&mut self) -> &mut Stats {
        &mut self.engine.counters
    }
}

impl HeapCore {
    /// Moves the block at `p` that is being resized to `new_size` bytes if the engine finds
    /// that the free memory ends up in larger pieces that way ([`Engine::better_moved`]).
    /// Near the limit, every realloc then doubles as a chance to undo fragmentation: the place
    /// the block leaves merges with its free neighbours. Requests that cannot stay in place
    /// are left to `move_block`.
    #[cold]
    #[inline(never)]
    fn pack_move(
        &mut self,
        p: NonNull<u8>,
        old: usize,
        new_size: usize,
        align: usize,
    ) -> Result<Option<NonNull<u8>>, Error> {
        // The engine's fit search ignores alignment, so only blocks that need none beyond the
        // granule are considered.
        if align > 16
            || new_size >= self.mmap_threshold
            || !self.is_heap_block(p)
            || self.small.owns(p.as_ptr() as usize)
            || !self.engine.better_moved(p, new_size)?
        {
            return Ok(None);
        }
        // `better_moved` found a free block that fits, so this succeeds; should it not,
        // resizing in place still can.
        let Some(q) = self.engine.alloc(new_size, align)? else {
            return Ok(None);
        };
        self.note_peak();
        self.relocate(p, q, old.min(new_size)).map(Some)
    }

    /// How far a mapped block of `len` bytes grows for a request of `new_size`: half as much
    /// again as it had (within `max_size`), so a buffer that keeps growing is remapped a few
    /// times, not on every push. Pages of the headroom are not touched, so they cost address
    /// space, not memory; `usable_size` reports them.
    fn grown_len(&self, len: usize, new_size: usize) -> usize {
        let room = (self.max_size - self.footprint()).saturating_add(len);
        new_size.max(len + len / 2).min(room).max(new_size)
    }
}

impl Heap {
    /// A heap with the default [`HeapConfig`]: 64 GiB of address space reserved (not
    /// committed), 64 KiB growth steps, blocks of 128 KiB and more mapped on their own.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if the OS refuses the reservation.
    ///
    /// ```
    /// let heap = strata_alloc::Heap::new()?;
    /// assert_eq!(heap.stats().live_blocks, 0);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn new() -> Result<Heap, Error> {
        Heap::with_config(HeapConfig::default())
    }

    /// A heap with the given settings.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLayout`] for a zero or overflowing `max_size`; [`Error::Os`] if the OS
    /// refuses the reservation.
    ///
    /// ```
    /// use strata_alloc::{Heap, HeapConfig};
    /// let heap = Heap::with_config(HeapConfig::default().max_size(1 << 20))?;
    /// assert!(heap.alloc(4 << 20).is_err());
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn with_config(config: HeapConfig) -> Result<Heap, Error> {
        Ok(Heap {
            core: UnsafeCell::new(HeapCore::new(config)?),
        })
    }

    pub(crate) fn into_core(self) -> HeapCore {
        self.core.into_inner()
    }

    /// The core, for the façade's checked API (`crate::facade::checked_api`).
    #[inline(always)]
    pub(crate) fn reach<R>(&self, f: impl FnOnce(&mut HeapCore) -> R) -> Result<R, Error> {
        Ok(self.with(f))
    }

    /// As `reach`: a heap always has its core.
    #[inline(always)]
    pub(crate) fn reach_existing<R>(&self, f: impl FnOnce(&mut HeapCore) -> R) -> Option<R> {
        Some(self.with(f))
    }

    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut HeapCore) -> R) -> R {
        // SAFETY: `Heap` is not `Sync`, so only this thread can be here, and `f` is crate code
        // that never calls back into the heap, so this is the only reference to the core.
        f(unsafe { &mut *self.core.get() })
    }

    /// Gives the free memory at the top of the heap back to the OS now; returns the bytes
    /// given back.
    ///
    /// ```
    /// let heap = strata_alloc::Heap::new()?;
    /// let p = heap.alloc(50_000)?;
    /// // SAFETY: live, freed once.
    /// unsafe { heap.free(p)? };
    /// assert!(heap.trim() > 0);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn trim(&self) -> usize {
        self.with(|c| c.trim())
    }

    /// Every block: heap blocks in address order, then mapped blocks. A small-object page
    /// shows as its slots, each allocated or free, in the place of the page's block.
    ///
    /// ```
    /// use strata_alloc::BlockState;
    /// let heap = strata_alloc::Heap::new()?;
    /// let _a = heap.alloc(10)?;
    /// let _b = heap.alloc(1 << 20)?;
    /// let states: Vec<_> = heap.blocks().map(|b| b.state).collect();
    /// assert_eq!(states, [BlockState::Allocated, BlockState::Free, BlockState::Mapped]);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn blocks(&self) -> impl Iterator<Item = BlockInfo> + '_ {
        let mut next = self.with(|c| c.first_block());
        let heap_blocks = core::iter::from_fn(move || {
            let (info, after) = self.with(|c| c.block_at(next))?;
            next = after;
            Some(info)
        });
        heap_blocks.chain(self.with(|c| c.mapped_blocks()))
    }

    /// A printable map of the heap: every block and the free lists.
    ///
    /// ```
    /// let heap = strata_alloc::Heap::new()?;
    /// let _p = heap.alloc(10)?;
    /// assert!(heap.snapshot().to_string().contains("allocated"));
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn snapshot(&self) -> Snapshot {
        self.with(|c| c.snapshot("Heap"))
    }
}

impl core::fmt::Debug for Heap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let s = self.stats();
        f.debug_struct("Heap")
            .field("managed_bytes", &s.managed_bytes)
            .field("live_blocks", &s.live_blocks)
            .field("bytes_in_use", &s.bytes_in_use)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    //! Small heaps, sized for Miri.
    use super::*;
    use crate::test_rng::Rng;

    fn small_heap() -> Heap {
        small_heap_with(false)
    }

    fn small_heap_with(pages: bool) -> Heap {
        let config = HeapConfig::default()
            .max_size(if pages { 2 << 20 } else { 512 << 10 })
            .growth_increment(16 << 10)
            .mmap_threshold(32 << 10)
            .trim_threshold(32 << 10)
            .small_pages(pages);
        Heap::with_config(config).unwrap()
    }

    #[test]
    fn grows_serves_large_blocks_and_trims() {
        let heap = small_heap();
        let a = heap.alloc(1000).unwrap();
        let big = heap.alloc(40 << 10).unwrap();
        let s = heap.stats();
        assert_eq!((s.break_growths, s.mapped_blocks), (1, 1));
        // SAFETY: both live; `a` is grown at the top, only the returned pointer is used.
        let a2 = unsafe { heap.realloc(a, 20_000) }.unwrap();
        assert_eq!(a, a2);
        heap.check().unwrap();
        // SAFETY: live, freed once each.
        unsafe {
            heap.free(a2).unwrap();
            heap.free(big).unwrap();
        }
        // SAFETY: misuse under test: the heap validates.
        assert!(matches!(
            unsafe { heap.free(big) },
            Err(Error::DoubleFree { .. })
        ));
        heap.trim();
        heap.check().unwrap();
        assert_eq!(heap.stats().managed_bytes, 16);
    }

    #[test]
    fn random_operations_on_a_small_heap() {
        random_operations(small_heap(), false);
    }

    #[test]
    fn random_operations_on_a_small_heap_with_pages() {
        let heap = small_heap_with(true);
        // Past the demand that gives a class its pages: the steps below meet slots.
        let warm: Vec<_> = (0..16).map(|_| heap.alloc(40).unwrap()).collect();
        assert_eq!(heap.usable_size(warm[15]).unwrap(), 48);
        for p in warm {
            // SAFETY: live, freed once.
            unsafe { heap.free(p) }.unwrap();
        }
        random_operations(heap, true);
    }

    /// `warm`: a third of the requests are of the two classes just given pages.
    fn random_operations(heap: Heap, warm: bool) {
        let mut rng = Rng::new(99);
        let mut live: Vec<(NonNull<u8>, usize, u8)> = Vec::new();
        for step in 0..if cfg!(miri) { 60 } else { 20_000 } {
            if live.is_empty() || rng.chance(1, 2) {
                // Under Miri, a mapped block's failed in-place remap invalidates its pointer
                // (source/large.rs); the pages run leaves mapped blocks to the native runs.
                let len = if rng.chance(1, 20) && !(warm && cfg!(miri)) {
                    rng.range(32 << 10, 64 << 10)
                } else if !warm || rng.chance(2, 3) {
                    rng.range(1, 3000)
                } else {
                    rng.range(33, 64)
                };
                match heap.alloc(len) {
                    Ok(p) => {
                        let byte = rng.byte();
                        // SAFETY: `len` bytes are ours.
                        unsafe { p.as_ptr().write_bytes(byte, len) };
                        live.push((p, len, byte));
                    }
                    Err(Error::OutOfMemory { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            } else if rng.chance(1, 2) {
                let (p, len, byte) = live.swap_remove(rng.range(0, live.len()));
                // SAFETY: live.
                assert_eq!(unsafe { p.as_ptr().add(len - 1).read() }, byte);
                // SAFETY: freed once.
                unsafe { heap.free(p) }.unwrap();
            } else {
                let i = rng.range(0, live.len());
                let (p, len, byte) = live[i];
                let new = rng.range(1, 6000);
                // SAFETY: live; the returned pointer replaces it.
                if let Ok(q) = unsafe { heap.realloc(p, new) } {
                    // SAFETY: contents kept up to the smaller size.
                    assert_eq!(unsafe { q.as_ptr().add(len.min(new) - 1).read() }, byte);
                    // SAFETY: `new` bytes are ours.
                    unsafe { q.as_ptr().write_bytes(byte, new) };
                    live[i] = (q, new, byte);
                }
            }
            if cfg!(miri) || step % 50 == 0 {
                heap.check().unwrap();
            }
        }
        for (p, _, _) in live {
            // SAFETY: freed once.
            unsafe { heap.free(p) }.unwrap();
        }
        heap.check().unwrap();
        assert_eq!(heap.stats().live_blocks, 0);
    }
}
