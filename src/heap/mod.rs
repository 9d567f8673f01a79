//! `Heap`: the block engine over a growable break, plus mapped large blocks.
//!
//! A heap reserves nothing when it is made: until its break first moves it has no engine and
//! no mapping (`HeapCore::space` is `None`), so creating, checking, walking and dropping an
//! empty heap, and rejecting a pointer it never gave out, are a few field reads. The first
//! break move reserves `max_size` of break (with `MAP_NORESERVE`) and a mapping that holds the
//! engine and its start map. When the OS refuses that much address space (an address-space
//! limit), the reservation is retried at half the size, down to [`RESERVE_FLOOR`], and the
//! heap's `max_size` becomes what it got (`Stats::max_size` says so). From then on the break
//! moves forward in `growth_increment` steps only when no free block fits. Requests at or
//! above `mmap_threshold` get their own mapping ([`large`](crate::source::large)), which needs
//! no reservation, and the table that finds them grows with their number. When the free block
//! at the top grows past `trim_threshold`, the break moves back and the pages go to the OS.
//! Requests of up to 8 KiB are served from size-class pages carved from the engine
//! ([`pages`]), unless `HeapConfig::small_pages` turns them off.
//!
//! Invariants kept here (beyond the engine's and the large table's):
//! - With a reservation, the region's break equals the engine's span:
//!   `blocks.brk() == engine.span()`; without one, the break is 0.
//! - `span + large.bytes() <= max_size`, and the break never passes the reservation.
//! - A pointer whose cell's page record is a page is the small-object path's alone; the
//!   engine sees none of them (`small.page_of` is asked first).

mod config;

pub(crate) mod pages;

use core::cell::UnsafeCell;
use core::ptr::NonNull;

use crate::backend::{Backend, check_layout};
use crate::engine::addr::{GRANULE, Granule, HEADER, granule_floor};
use crate::engine::block::MIN_BLOCK;
use crate::engine::{self, Engine, Resize};
use crate::os::region::reserve_halving;
use crate::source::large::LargeBlocks;
use crate::{BlockInfo, BlockState, Error, Region, Snapshot, Stats};
pub use config::HeapConfig;
use pages::{SlotFree, SmallObjects};

/// The highest the trim threshold climbs: twice the 32 MiB up to which glibc's malloc raises
/// its own dynamic thresholds on 64-bit, so that a heap swinging by less than this keeps its
/// pages, and one that truly shrinks still gives back all beyond it.
const TRIM_CEILING: usize = 64 << 20;

/// The heap packs (best fit, no caching) once less than `max_size / TIGHT_FRACTION` is left
/// to grow into (see `HeapCore::choose_fit`).
const TIGHT_FRACTION: usize = 2;

/// The most bytes of freed mapped blocks a heap keeps mapped for reuse (a sixteenth of
/// `max_size` if that is less), so that a program that frees and regrows large buffers does
/// not fault in fresh pages each time; `trim` gives them back.
const SPARE_MAX: usize = 64 << 20;

/// The smallest reservation a refused one is retried down to (or `max_size`, if smaller):
/// below it a heap is better told that the OS has no address space for it.
pub(crate) const RESERVE_FLOOR: usize = 16 << 20;

/// The reservation behind a heap's break and the engine over it. The value lives at the start
/// of its own metadata mapping, the start map right after it, so an empty heap carries none
/// of the engine's bins and stacks.
struct Space {
    engine: Engine,
    /// The small-object path (`pages`): its pages are carved from this engine.
    small: SmallObjects,
    /// The break's reservation; the engine's span is its first `brk` bytes.
    blocks: Region,
    /// Bytes reserved for the break (the engine's limit).
    reserved: usize,
    /// Offset of the start map in `meta` (past this value, a whole number of pages).
    map_at: usize,
    /// The mapping this value and the start map live in. The value is moved out of it before
    /// it is dropped (see `SpaceBox`'s drop), so unmapping it last is sound.
    meta: Region,
}

/// Owns a [`Space`] in its own mapping.
struct SpaceBox(NonNull<Space>);

impl Space {
    /// Reserves `bytes` (a whole number of pages) of break, and the mapping for the engine
    /// and its start map covering them.
    fn reserve(bytes: usize) -> Result<SpaceBox, Error> {
        let page = crate::page_size();
        let mut blocks = Region::reserve(bytes)?;
        let map_at = core::mem::size_of::<Space>().next_multiple_of(page);
        let map_len = engine::map_bytes(Granule::count(bytes));
        let meta_len = map_at.checked_add(map_len).ok_or(Error::layout(
            bytes,
            page,
            "heap reservation overflows",
        ))?;
        let mut meta = Region::reserve(meta_len)?;
        let meta_base = meta.grow(meta.capacity())?;
        // SAFETY: `map_at < meta_len`, inside the fresh mapping.
        let map_ptr = unsafe { NonNull::new_unchecked(meta_base.as_ptr().add(map_at)) };
        // Both mappings are owned by the Space the engine is moved into, and dropped after it.
        // SAFETY: `blocks` is a fresh page-aligned reservation of `bytes` bytes only this engine
        // touches; `map_ptr` starts `map_bytes` zeroed bytes of `meta` that nothing else uses.
        let engine = unsafe { Engine::new(blocks.base(), bytes, map_ptr) };
        // The engine's empty span is one granule; keep the break equal to it.
        blocks.grow(engine.span())?;
        let at = meta_base.cast::<Space>();
        // SAFETY: `at` is the page-aligned start of `meta`, with `map_at >= size_of::<Space>()`
        // bytes free before the start map; nothing else refers to them. The value written
        // owns `meta` from now on.
        unsafe {
            at.as_ptr().write(Space {
                engine,
                small: SmallObjects::new(),
                blocks,
                reserved: bytes,
                map_at,
                meta,
            })
        };
        Ok(SpaceBox(at))
    }

    /// The whole pages of start map (offsets into it) between those the current span needs
    /// and those a span of `span` bytes needs, short of the summary words at the map's end.
    /// Their bits are all clear: nothing starts past the current span or its end mark.
    fn map_tail(&self, span: usize) -> core::ops::Range<usize> {
        let page = crate::page_size();
        let pages_for =
            |span| engine::groups_bytes(Granule::count(span) + 1).next_multiple_of(page);
        let summary = engine::groups_bytes(Granule::count(self.reserved)) & !(page - 1);
        pages_for(self.engine.span())..pages_for(span).min(summary)
    }

    /// Gives back the pages of start map that covered the span cut off since it was
    /// `old_span` bytes: their bits are clear, so they read the same as fresh pages.
    fn release_map_tail(&self, old_span: usize) {
        let tail = self.map_tail(old_span);
        if !tail.is_empty() {
            // A refused release only leaves the pages resident.
            // SAFETY: the range covers map groups past the span's end, whose bits are all
            // clear; the engine reads them as zero, which is what released pages read as.
            let _ = unsafe { self.meta.release(self.map_at + tail.start, tail.len()) };
        }
    }

    /// Faults in, by writing, the pages of start map that the span will cover when it grows
    /// to `new_span` bytes; called before the engine grows over them. They may be pages
    /// [`release_map_tail`](Space::release_map_tail) gave back: the engine's first touch of
    /// a map word is a bit set (a read, then a write), the read maps the shared zero page,
    /// and the write faults again to replace it, shooting down the other cores' TLB entries.
    /// One write of a zero per page is one ordinary fault instead; threads that come and go,
    /// each growing a heap that was emptied and trimmed, paid the double fault on every page.
    fn fault_in_map_tail(&self, new_span: usize) {
        let base = self.meta.base().as_ptr();
        for off in self.map_tail(new_span).step_by(crate::page_size()) {
            // SAFETY: `map_at + off` lies in `meta`, in a page of map groups wholly past the
            // span's current end (and its end mark), whose bytes are all zero; the engine is
            // not running (this is `&self` between its calls): writing a zero changes nothing.
            unsafe { base.add(self.map_at + off).cast::<u64>().write_volatile(0) };
        }
    }
}

impl core::ops::Deref for SpaceBox {
    type Target = Space;
    fn deref(&self) -> &Space {
        // SAFETY: the pointer is to the live Space written by `Space::reserve`, owned by this
        // box alone; `&self` keeps it from being dropped meanwhile.
        unsafe { self.0.as_ref() }
    }
}

impl core::ops::DerefMut for SpaceBox {
    fn deref_mut(&mut self) -> &mut Space {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe { self.0.as_mut() }
    }
}

impl Drop for SpaceBox {
    fn drop(&mut self) {
        // SAFETY: the Space is live and owned by this box; it is moved out exactly once, onto
        // the stack, and dropped there: the engine first, then the break's reservation, then
        // `meta`, the mapping it was read from.
        drop(unsafe { self.0.as_ptr().read() });
    }
}

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
    /// The break's reservation and the engine over it; `None` until the break first moves.
    space: Option<SpaceBox>,
    large: LargeBlocks,
    counters: HeapCounters,
    /// The engine's counters while there is no engine (what the façade counts on an empty
    /// heap: failed requests, misuse caught); they move into the engine with the reservation.
    empty_counters: Stats,
    max_size: usize,
    increment: usize,
    mmap_threshold: usize,
    /// The configured trim threshold, where `trim_threshold` starts.
    trim_floor: usize,
    /// The free top that a free must leave before the break moves back, and the span above
    /// which a heap that empties gives its memory back: `trim_floor`, doubled (up to
    /// [`TRIM_CEILING`]) each time the break grows back over pages such a trim gave away, so
    /// that a heap whose live set swings (or keeps emptying and filling) does not fault the
    /// same pages in and give them back on every swing. An explicit `trim` ignores it.
    trim_threshold: usize,
    /// Whether a free's trim or an emptied heap's gave pages away since the break last grew.
    trimmed: bool,
    /// Whether the heap packs (see `choose_fit`).
    tight: bool,
    /// The break when `trim_after_free` last merged the quick stacks, so that a heap that stays
    /// mostly free without being able to trim merges them once, not on every free.
    flushed_at: usize,
    /// The largest request the small-object path serves (0: none).
    small_max: usize,
}

// SAFETY: a HeapCore exclusively owns its mappings; the engine's raw pointers point only into
// them. Moving it to another thread moves that ownership with it.
unsafe impl Send for HeapCore {}

// SAFETY: a Heap is a HeapCore in a cell; see HeapCore.
unsafe impl Send for Heap {}

impl HeapCore {
    #[inline]
    pub(crate) fn new(config: HeapConfig) -> Result<HeapCore, Error> {
        let page = crate::page_size();
        let round = |n: usize| n.checked_add(page - 1).map(|n| n & !(page - 1));
        if config.max_size == 0 {
            return Err(Error::layout(0, page, "a heap needs a max_size above zero"));
        }
        let max_size = round(config.max_size)
            .filter(|&m| m <= isize::MAX as usize)
            .ok_or(Error::layout(config.max_size, page, "max_size overflows"))?;
        let increment = round(config.growth_increment.max(page)).ok_or(Error::layout(
            config.growth_increment,
            page,
            "growth_increment overflows",
        ))?;
        let trim_floor = config.trim_threshold.max(increment);
        Ok(HeapCore {
            space: None,
            large: LargeBlocks::new(),
            counters: HeapCounters::default(),
            empty_counters: Stats::default(),
            max_size,
            increment,
            mmap_threshold: config.mmap_threshold.max(1),
            trim_floor,
            trim_threshold: trim_floor,
            trimmed: false,
            tight: false,
            flushed_at: 0,
            small_max: if config.pages_on() {
                pages::SMALL_MAX.min(config.mmap_threshold.max(1) - 1)
            } else {
                0
            },
        })
    }

    /// Reserves the heap's space on its first break move (see the module docs).
    #[cold]
    #[inline(never)]
    fn reserve_space(&mut self) -> Result<(), Error> {
        let floor = RESERVE_FLOOR.max(self.increment);
        self.reserve_space_with(floor, Space::reserve)
    }

    /// As `reserve_space`, reserving through `reserve` (tests refuse sizes through it).
    fn reserve_space_with(
        &mut self,
        floor: usize,
        reserve: impl FnMut(usize) -> Result<SpaceBox, Error>,
    ) -> Result<(), Error> {
        debug_assert!(self.space.is_none());
        let (mut space, got) = reserve_halving(self.max_size, floor, reserve)?;
        space.engine.counters = self.empty_counters;
        self.space = Some(space);
        // A smaller reservation lowers the ceiling to it, plus what is mapped already.
        self.max_size = got.saturating_add(self.large.bytes()).min(self.max_size);
        Ok(())
    }

    /// Whether this heap answers for `addr`: it lies in the break's reservation or starts one
    /// of its mapped blocks. Spaces and mappings never overlap, so of several heaps at most one
    /// answers for an address, which is how a global heap finds a pointer's owner.
    pub(crate) fn owns(&self, addr: usize) -> bool {
        self.space.as_ref().is_some_and(|s| {
            let base = s.blocks.base().as_ptr() as usize;
            addr >= base && addr - base < s.reserved
        }) || self.large.holds(addr)
    }

    /// The break's reservation once the heap has one: its first byte and its length in bytes.
    /// It stays put until the heap is dropped (a heap reserves once), so a global heap can
    /// publish it to other threads once.
    pub(crate) fn reservation(&self) -> Option<(NonNull<u8>, usize)> {
        self.space.as_ref().map(|s| (s.blocks.base(), s.reserved))
    }

    /// After a free: a heap left holding no block but more than its trim threshold of break
    /// gives all of it back. Freeing everything need not reach the top (freed small blocks wait
    /// on pages and quick stacks), and a thread-owned heap that has emptied may not allocate
    /// again for a long time. Cheap when it does nothing: a few counters compared.
    #[inline(always)]
    pub(crate) fn trim_if_empty(&mut self) {
        if self.span() > self.trim_threshold && self.holds_no_block() {
            self.trim_cold();
        }
    }

    /// Whether the heap has a break and holds no live block in it or mapped (its only engine
    /// blocks are pages, and no page has a slot in use).
    #[inline(always)]
    pub(crate) fn holds_no_block(&self) -> bool {
        self.large.count() == 0
            && self.space.as_ref().is_some_and(|s| {
                let c = &s.engine.counters;
                c.allocations - c.frees == s.small.pages() as u64 && s.small.live_slots() == 0
            })
    }

    /// [`trim`](Self::trim) out of line, for the hot path's rare call.
    #[cold]
    #[inline(never)]
    fn trim_cold(&mut self) {
        self.trimmed |= self.trim() != 0;
    }

    /// The engine, if the heap has one and `p` lies in its span.
    #[inline(always)]
    fn heap_engine(&mut self, p: NonNull<u8>) -> Option<&mut Engine> {
        match self.space.as_deref_mut() {
            Some(space) if space.engine.contains(p.as_ptr() as usize) => Some(&mut space.engine),
            _ => None,
        }
    }

    /// Bytes of break: the engine's span, 0 before the first reservation.
    #[inline(always)]
    fn span(&self) -> usize {
        self.space.as_ref().map_or(0, |s| s.engine.span())
    }

    /// Bytes taken from the OS and not given back: the break plus mapped blocks and spares.
    fn footprint(&self) -> usize {
        self.span() + self.large.bytes() + self.large.spare_bytes()
    }

    /// How many bytes of freed mapped blocks may be kept as spares.
    fn spare_budget(&self) -> usize {
        SPARE_MAX.min(self.max_size / 16)
    }

    /// Bytes the break may still move up: within `max_size` and the reservation.
    fn break_room(&self) -> usize {
        let room = self.max_size.saturating_sub(self.footprint());
        match &self.space {
            Some(space) => room.min(space.blocks.remaining()),
            None => room,
        }
    }

    #[inline(always)]
    fn note_peak(&mut self) {
        // With no mapped block the total is the engine's, whose peak the engine keeps itself;
        // `stats` takes the larger of the two.
        let large = self.large.bytes();
        if large != 0 {
            let heap = self.space.as_ref().map_or(0, |s| s.engine.bytes_in_use());
            let now = heap + large;
            if now > self.counters.peak {
                self.counters.peak = now;
            }
        }
    }

    fn out_of_memory(&self, size: usize) -> Error {
        let room = self.max_size.saturating_sub(self.footprint());
        let largest = self.space.as_ref().map_or(0, |s| s.engine.largest_free());
        Error::oom(size, room.max(largest))
    }

    /// Moves the break up so that a block of `bsize` bytes fits at the top, reserving the
    /// heap's space first if it has none.
    #[cold]
    fn grow_break(&mut self, bsize: usize, at_least: usize) -> Result<(), Error> {
        if self.space.is_none() {
            self.reserve_space()?;
        }
        let page = crate::page_size();
        let room = granule_floor(self.break_room());
        let Some(space) = self.space.as_deref_mut() else {
            return Err(self.out_of_memory(bsize));
        };
        let top = space.engine.free_top()?.map_or(0, |(_, s)| s);
        // Grow geometrically (an eighth of the heap, at least one increment): a heap that
        // keeps growing moves its break a few dozen times, not once per increment.
        // Near `max_size` the step shrinks to what is left: only the request itself must fit.
        let step = self.increment.max(space.engine.span() / 8);
        let need = bsize
            .saturating_sub(top)
            .max(at_least)
            .next_multiple_of(GRANULE);
        if need > room {
            return Err(self.out_of_memory(bsize));
        }
        let grow = need
            .max(step)
            .next_multiple_of(page)
            .min(room)
            .max(need.max(MIN_BLOCK));
        if grow > room {
            return Err(self.out_of_memory(bsize));
        }
        space.blocks.grow(grow)?;
        space.fault_in_map_tail(space.blocks.brk());
        let end = space.blocks.base().as_ptr() as usize + space.blocks.brk();
        space.engine.grow_span(end)?;
        if self.trimmed {
            // Regrown over what the last trim gave away: trim later next time.
            self.trim_threshold = (self.trim_threshold * 2).clamp(self.trim_floor, TRIM_CEILING);
            self.trimmed = false;
        }
        self.counters.break_growths += 1;
        self.counters.bytes_from_os += grow as u64;
        self.choose_fit();
        Ok(())
    }

    /// Packs once the heap is near `max_size`: best fit, every free merged at once, and a
    /// resized block moved when that leaves the free memory in larger pieces (`moving_packs_better`).
    ///
    /// While the break can grow, a request that finds no free block costs only a break move,
    /// so the default fit and deferred coalescing are good enough. Near the limit,
    /// fragmentation decides when requests start to fail, and both looking at more blocks
    /// for the smallest that fits and merging every free pay for themselves
    /// (docs/BENCHMARKS.md, heap efficiency). Called whenever the break moves; only a switch
    /// off flushes the quick stacks.
    fn choose_fit(&mut self) {
        let room = self.max_size.saturating_sub(self.footprint());
        let tight = room < self.max_size / TIGHT_FRACTION;
        self.tight = tight;
        if let Some(space) = self.space.as_deref_mut() {
            space.engine.set_best_fit(tight);
            // A damaged cached block the flush meets is left in place; `check` and the next
            // free near it report it, as after any flush.
            let _ = space.engine.set_caching(!tight);
        }
    }

    /// A block in its own mapping: every request of `mmap_threshold` bytes or more, and every
    /// request aligned beyond the engine's `MAX_ALIGN` (over-mapped by the alignment when it
    /// exceeds the page, see [`LargeBlocks::alloc_aligned`]).
    /// With `reuse`, a spare mapping may serve it (not zeroed).
    fn alloc_large(
        &mut self,
        size: usize,
        align: usize,
        reuse: bool,
    ) -> Result<NonNull<u8>, Error> {
        let page = crate::page_size();
        let lead = align.saturating_sub(page);
        if size.saturating_add(lead) > self.max_size.saturating_sub(self.footprint()) {
            self.counters.bytes_to_os += self.large.release_spares() as u64;
        }
        let room = self.max_size.saturating_sub(self.footprint());
        if size > isize::MAX as usize - page || size.saturating_add(lead) > room {
            return Err(self.out_of_memory(size));
        }
        let (p, len, reused) = if align > page {
            let (p, len) = self.large.alloc_aligned(size, align)?;
            (p, len, false)
        } else {
            self.large.alloc(size, reuse)?
        };
        if self.footprint() > self.max_size {
            // Page rounding took it over the limit: give it back.
            self.large.free(p.as_ptr() as usize, 0)?;
            return Err(self.out_of_memory(size));
        }
        self.counters.large_allocations += 1;
        if !reused {
            self.counters.bytes_from_os += len as u64;
        }
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
    fn trim_after_free(&mut self, freed: engine::Freed, in_use: usize) -> Result<(), Error> {
        let threshold = self.trim_threshold.max(in_use / 4);
        let mut top = if freed.at_top { freed.size } else { 0 };
        let brk = self.span();
        let Some(space) = self.space.as_deref_mut() else {
            return Ok(());
        };
        if top < threshold
            && in_use < brk / 4
            && brk != self.flushed_at
            && (space.engine.cached_blocks() != 0 || space.small.pages() != 0)
        {
            self.flushed_at = brk;
            // Empty small-object pages kept as spares go back too, so that they can merge.
            space.small.retire_empty(&mut space.engine);
            // A damaged cached block stays where it is; `check` reports it.
            let _ = space.engine.flush_quick();
            top = space.engine.free_top()?.map_or(0, |(_, size)| size);
        }
        if top >= threshold {
            self.trimmed |= self.trim_top(self.increment.max(in_use / 8))? != 0;
        }
        Ok(())
    }

    /// Cuts the free top block down to `keep` bytes (0: remove it) and gives the pages back.
    fn trim_top(&mut self, keep: usize) -> Result<usize, Error> {
        let Some(space) = self.space.as_deref_mut() else {
            return Ok(0);
        };
        let Some((b, size)) = space.engine.free_top()? else {
            return Ok(0);
        };
        // What is kept must be a block of its own, or nothing.
        let keep = if keep >= MIN_BLOCK {
            granule_floor(keep)
        } else {
            0
        };
        if size < keep + crate::page_size() {
            return Ok(0);
        }
        let old_span = space.engine.span();
        let cut = space
            .engine
            .shrink_span((b + keep).span_end(), crate::page_size())?;
        let released = space.blocks.shrink(cut)?;
        space.release_map_tail(old_span);
        self.counters.break_shrinks += 1;
        self.counters.bytes_to_os += released as u64;
        self.choose_fit();
        Ok(released)
    }

    pub(crate) fn trim(&mut self) -> usize {
        let spares = self.large.release_spares();
        self.counters.bytes_to_os += spares as u64;
        let Some(space) = self.space.as_deref_mut() else {
            return spares;
        };
        // Empty small-object pages go back to the engine first, so that they can merge.
        space.small.retire_empty(&mut space.engine);
        // Cached small blocks may sit at the top; merge them first. Damage the flush or the
        // top block meets is contained (quarantined, counted), so trimming goes on after it.
        let _ = space.engine.flush_quick();
        spares + self.trim_top(0).or_else(|_| self.trim_top(0)).unwrap_or(0)
    }

    pub(crate) fn stats(&self) -> Stats {
        let mut s = match &self.space {
            Some(space) => space.engine.stats(),
            None => self.empty_counters,
        };
        if let Some(space) = &self.space {
            space.small.adjust(&mut s);
        }
        let c = &self.counters;
        s.allocations += c.large_allocations;
        s.frees += c.large_frees;
        s.live_blocks += self.large.count();
        s.bytes_in_use += self.large.bytes();
        s.peak_bytes_in_use = c.peak.max(s.peak_bytes_in_use).max(s.bytes_in_use);
        s.managed_bytes = self.footprint();
        s.free_bytes += self.large.spare_bytes();
        s.break_growths = c.break_growths;
        s.break_shrinks = c.break_shrinks;
        s.mapped_blocks = self.large.count();
        s.mapped_bytes = self.large.bytes();
        s.bytes_from_os = c.bytes_from_os;
        s.bytes_to_os = c.bytes_to_os;
        s.max_size = self.max_size;
        s
    }

    /// O(1) for an empty heap: no engine to walk, and a large-block table that has no slots.
    pub(crate) fn check(&mut self) -> Result<(), Error> {
        if let Some(space) = self.space.as_deref_mut() {
            space.engine.check_structure()?;
            let base = space.engine.base();
            let end = base + space.blocks.brk();
            space.small.check(&mut space.engine, base, end)?;
        }
        self.large.check()?;
        let break_agrees = self.space.as_ref().is_none_or(|space| {
            space.blocks.brk() == space.engine.span()
                && space.blocks.base().as_ptr() as usize == space.engine.base()
                && space.blocks.capacity() == space.reserved
        });
        if !break_agrees || self.footprint() > self.max_size {
            return Err(Error::Corrupted {
                addr: self.space.as_ref().map_or(0, |s| s.engine.base()),
                what: "heap break disagrees with the block span",
            });
        }
        // Quarantined damage last: that error means everything else is sound.
        match self.space.as_deref_mut() {
            Some(space) => space.engine.check_quarantine(),
            None => Ok(()),
        }
    }

    /// Where the walk starts; a heap with no engine has no block, so any start finds none.
    pub(crate) fn first_block(&self) -> usize {
        self.space.as_ref().map_or(0, |s| s.engine.first_block())
    }

    /// The block at walk position `b` and the next position. A small-object page shows as its
    /// slots: the walk steps through them before going on to the engine block after the page.
    pub(crate) fn block_at(&mut self, b: usize) -> Option<(BlockInfo, usize)> {
        let space = self.space.as_deref_mut()?;
        let base = space.engine.base();
        if let Some(slot) = space.small.slot_at(b, base) {
            return Some(slot);
        }
        let (info, next) = space.engine.block_at(b)?;
        Some(space.small.first_slot(&info, base).unwrap_or((info, next)))
    }

    /// The slots of the heap block `info`, if it is a small-object page.
    pub(crate) fn page_slots(&self, info: &BlockInfo) -> Option<Vec<BlockInfo>> {
        let base = self.space.as_ref()?.engine.base();
        self.space.as_ref()?.small.slots(info, base)
    }

    pub(crate) fn mapped_blocks(&self) -> Vec<BlockInfo> {
        let base = self.space.as_ref().map_or(0, |s| s.engine.base());
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
        let mut snap = match self.space.as_deref_mut() {
            Some(space) => space.engine.snapshot(title, stats),
            None => Snapshot {
                title,
                stats,
                blocks: Vec::new(),
                free_lists: Vec::new(),
                quick_lists: Vec::new(),
                damaged_at: None,
            },
        };
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

    /// A request the engine serves: from its free blocks, else after moving the break
    /// (reserving the heap's space on the first).
    #[inline(always)]
    fn alloc_engine(&mut self, size: usize, align: usize) -> Result<NonNull<u8>, Error> {
        if let Some(space) = self.space.as_deref_mut() {
            if let Some(p) = space.engine.alloc(size, align)? {
                self.note_peak();
                return Ok(p);
            }
        }
        let slack = if align > 16 { align + 32 } else { 0 };
        let bsize = engine::block_size(size).ok_or_else(|| self.out_of_memory(size))? + slack;
        self.grow_break(bsize, 0)?;
        let p = match self.space.as_deref_mut() {
            Some(space) => space.engine.alloc(size, align)?,
            None => None,
        };
        let p = p.ok_or_else(|| self.out_of_memory(size))?;
        self.note_peak();
        Ok(p)
    }

    /// A small request of class `c` whose current page is full: another page of the class,
    /// else a new page (moving the break for it if need be), else the engine. Near the limit
    /// no page is carved: the engine packs small blocks more tightly than partly used pages.
    #[cold]
    #[inline(never)]
    fn alloc_small(&mut self, c: usize, size: usize, align: usize) -> Result<NonNull<u8>, Error> {
        if let Some(p) = self.small_mut().and_then(|small| small.refill(c)) {
            return Ok(p);
        }
        // The first small request reserves the space, so that its class's demand counts it.
        if self.space.is_none() && self.reserve_space().is_err() {
            return self.alloc_engine(size, align);
        }
        if self.tight || !self.small_mut().is_some_and(|small| small.wants_page(c)) {
            return self.alloc_engine(size, align);
        }
        for grown in [false, true] {
            if grown && self.grow_break(PAGE_NEED, 0).is_err() {
                break;
            }
            let Some(space) = self.space.as_deref_mut() else {
                continue;
            };
            let (start, len) = (
                space.blocks.base().as_ptr() as usize,
                space.blocks.capacity(),
            );
            if let Some(p) = space.small.alloc_slow(c, &mut space.engine, start, len)? {
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
        let keep = self
            .space
            .as_ref()
            .is_some_and(|s| keeps_empty_pages(self.tight, &s.engine));
        let Some(space) = self.space.as_deref_mut() else {
            return Ok(());
        };
        // The slot is free whatever happens to the page: a page the engine does not take back
        // stays a page.
        if let Some(freed) = space.small.emptied(page, keep, &mut space.engine) {
            self.after_free(freed);
        }
        Ok(())
    }

    /// Frees the engine block at `p`, and gives memory back to the OS when that lets it.
    #[inline(always)]
    fn free_block(&mut self, p: NonNull<u8>) -> Result<(), Error> {
        let Some(space) = self.space.as_deref_mut() else {
            return Err(Error::InvalidPointer {
                addr: p.as_ptr() as usize,
                reason: "it does not point into this allocator",
            });
        };
        let freed = space.engine.free(p)?;
        self.after_free(freed);
        Ok(())
    }

    /// After an engine block was freed: gives memory back to the OS when that lets it.
    #[inline(always)]
    fn after_free(&mut self, freed: engine::Freed) {
        let Some(space) = self.space.as_deref_mut() else {
            return;
        };
        // A cached free changes nothing below the top, and is the hot path: only a merged
        // free can let the heap give memory back.
        if freed.binned {
            let (brk, in_use) = (space.engine.span(), space.engine.bytes_in_use());
            if freed.at_top || (in_use < brk / 4 && brk > 4 * self.trim_threshold) {
                // The free is done whatever happens here: damage found on the way to the
                // top is contained (and counted), and only the trim is skipped.
                let _ = self.trim_after_free(freed, in_use);
            }
        }
    }

    /// `reshape` for a block of the engine, judged once: `live` carries what the check
    /// established through packing, growing in place (moving the break for the top block),
    /// and moving.
    fn reshape_engine_block(
        &mut self,
        live: engine::Live,
        new_size: usize,
        align: usize,
    ) -> Result<(NonNull<u8>, bool), Error> {
        let p = live.ptr();
        let old = live.usable();
        // Near the limit a resized block may move where the free memory ends up in larger
        // pieces (see `choose_fit`); the engine's fit search ignores alignment.
        if self.tight && align <= GRANULE && new_size < self.mmap_threshold {
            if let Some(space) = self.space.as_deref_mut() {
                // SAFETY: `live` was made by this engine and its block has not changed since.
                if unsafe { space.engine.moving_packs_better_live(live, new_size) }? {
                    if let Some(q) = space.engine.alloc(new_size, align)? {
                        return self.finish_move(live, q, old.min(new_size));
                    }
                }
            }
        }
        if (p.as_ptr() as usize) % align == 0 {
            let Some(space) = self.space.as_deref_mut() else {
                return Err(self.out_of_memory(new_size));
            };
            // SAFETY: as above; a resize that is not `Done` leaves the block as it was.
            let reach = match unsafe { space.engine.resize_live(live, new_size) }? {
                Resize::Done => {
                    self.note_peak();
                    return Ok((p, true));
                }
                Resize::Blocked => None,
                Resize::AtTop { reach } => Some(reach),
            };
            // At the top of the heap: move the break instead of the block.
            if let (Some(reach), Some(want)) = (reach, engine::block_size(new_size)) {
                if self.grow_break(want, want - (reach + HEADER)).is_ok() {
                    if let Some(space) = self.space.as_deref_mut() {
                        // SAFETY: moving the break changes no live block, so `live` holds.
                        if let Resize::Done = unsafe { space.engine.resize_live(live, new_size) }? {
                            self.note_peak();
                            return Ok((p, true));
                        }
                    }
                }
            }
        }
        // A block growing into the mapped range gets the headroom a mapped block gets.
        let target = if new_size >= self.mmap_threshold && new_size > old {
            self.grown_len(old, new_size)
        } else {
            new_size
        };
        match self.alloc(target, align) {
            // An allocation elsewhere changes no live block, so `live` holds.
            Ok(q) => self.finish_move(live, q, old.min(new_size)),
            Err(Error::OutOfMemory { .. }) if align <= 16 => {
                // Nothing free elsewhere is large enough; the block's own free neighbours
                // merged with it may be.
                let moved = match self.space.as_deref_mut() {
                    // SAFETY: as above.
                    Some(space) => unsafe {
                        space
                            .engine
                            .resize_backward_live(live, new_size, old.min(new_size))
                    }?,
                    None => None,
                };
                let q = moved.ok_or_else(|| self.out_of_memory(new_size))?;
                self.note_peak();
                Ok((q, false))
            }
            Err(e) => Err(e),
        }
    }

    /// Copies the first `keep` bytes of the block `live` to the fresh block `q` and frees it.
    fn finish_move(
        &mut self,
        live: engine::Live,
        q: NonNull<u8>,
        keep: usize,
    ) -> Result<(NonNull<u8>, bool), Error> {
        // SAFETY: both blocks are live and distinct, `keep` is within both.
        unsafe { core::ptr::copy_nonoverlapping(live.ptr().as_ptr(), q.as_ptr(), keep) };
        self.note_peak();
        if let Some(space) = self.space.as_deref_mut() {
            // SAFETY: `live` still names its block: nothing since its check freed or resized it.
            let freed = unsafe { space.engine.free_live(live) }?;
            self.after_free(freed);
        }
        Ok((q, false))
    }

    /// The small-object path, once the heap has space (no page exists before).
    #[inline(always)]
    fn small_mut(&mut self) -> Option<&mut SmallObjects> {
        self.space.as_deref_mut().map(|space| &mut space.small)
    }

    /// The page `addr` lies in, if it is in a small-object page.
    #[inline(always)]
    pub(crate) fn page_of(&self, addr: usize) -> Option<NonNull<pages::Page>> {
        self.space.as_ref()?.small.page_of(addr)
    }

    fn owns_slot(&self, addr: usize) -> bool {
        self.space
            .as_ref()
            .is_some_and(|space| space.small.owns(addr))
    }

    /// Runs `f` on the small-object path of a heap that `page_of` found a page in.
    #[inline(always)]
    fn slot_path<T>(
        &mut self,
        f: impl FnOnce(&mut SmallObjects) -> Result<T, Error>,
    ) -> Result<T, Error> {
        match self.small_mut() {
            Some(small) => f(small),
            None => Err(Error::Corrupted {
                addr: 0,
                what: "a small-object page in a heap without space",
            }),
        }
    }

    fn is_heap_block(&self, p: NonNull<u8>) -> bool {
        self.space
            .as_ref()
            .is_some_and(|s| s.engine.contains(p.as_ptr() as usize))
    }

    fn count_misuse<T>(&mut self, r: Result<T, Error>) -> Result<T, Error> {
        if r.as_ref().is_err_and(Error::is_misuse) {
            self.stats_mut().misuses_caught += 1;
        }
        r
    }
}

/// Whether a page that empties stays a page (if its class has no other page with room): not
/// near the limit, and the engine busy enough that the page's block would not let the heap
/// give memory back.
#[inline(always)]
fn keeps_empty_pages(tight: bool, engine: &Engine) -> bool {
    !tight && engine.bytes_in_use() >= engine.span() / 4
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
            if let Some(p) = self.small_mut().and_then(|small| small.alloc(c)) {
                return Ok(p);
            }
            return self.alloc_small(c, size, align);
        }
        if size >= self.mmap_threshold || align > engine::MAX_ALIGN {
            return self.alloc_large(size, align, true);
        }
        if size <= self.small_max {
            if let Some(c) = pages::class_for(size, align) {
                if let Some(p) = self.small_mut().and_then(|small| small.alloc(c)) {
                    return Ok(p);
                }
                return self.alloc_small(c, size, align);
            }
        }
        self.alloc_engine(size, align)
    }

    fn alloc_zeroed(&mut self, size: usize, align: usize) -> Result<NonNull<u8>, Error> {
        // Before the first reservation every byte the heap will hand out is fresh: nothing
        // below address 0 is dirty.
        if size >= self.mmap_threshold || align > engine::MAX_ALIGN {
            // A fresh mapping, already zero: no spare, whose bytes are not.
            return self.alloc_large(size, align, false);
        }
        let clean = self.space.as_ref().map_or(0, |s| s.engine.clean_mark());
        let p = self.alloc(size, align)?;
        // Mapped blocks are fresh pages, already zero; heap blocks are cleared where dirty,
        // and slots, which are reused without passing through the engine, always.
        if self.owns_slot(p.as_ptr() as usize) {
            // SAFETY: `p` is a fresh slot of at least `size` bytes.
            unsafe { p.as_ptr().write_bytes(0, size) };
        } else if let Some(engine) = self.heap_engine(p) {
            engine.clear_for_calloc(p, size, clean);
        }
        Ok(p)
    }

    #[inline(always)]
    fn free(&mut self, p: NonNull<u8>) -> Result<(), Error> {
        let addr = p.as_ptr() as usize;
        // Pages lie in the span, so a slot needs no span test.
        if let Some(page) = self.page_of(addr) {
            let r = self.slot_path(|small| small.free(page, addr));
            return match self.count_misuse(r)? {
                SlotFree::Done => Ok(()),
                SlotFree::Empty(page) => self.page_emptied(page),
            };
        }
        if self.is_heap_block(p) {
            return self.free_block(p);
        }
        let budget = self.spare_budget();
        let r = self.large.free(p.as_ptr() as usize, budget);
        let (_, unmapped) = self.count_misuse(r)?;
        self.counters.large_frees += 1;
        self.counters.bytes_to_os += unmapped as u64;
        Ok(())
    }

    /// Slots alone: the engine's cached paths would have to keep the peak that
    /// `alloc_engine` notes, and a heap with pages sends few requests there.
    const FAST_PATHS: bool = true;

    #[inline(always)]
    fn alloc_fast(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        if size <= self.small_max && align <= 16 {
            return self.small_mut()?.alloc(pages::class_of(size));
        }
        None
    }

    #[inline(always)]
    fn resize_fast(
        &mut self,
        p: NonNull<u8>,
        keep: usize,
        new_size: usize,
        align: usize,
    ) -> Option<(NonNull<u8>, bool)> {
        if align > 16 {
            return None;
        }
        let small_max = self.small_max;
        self.small_mut()?
            .resize_cached(p, keep, new_size, small_max)
    }

    #[inline(always)]
    fn free_fast(&mut self, p: NonNull<u8>) -> bool {
        let tight = self.tight;
        self.space.as_deref_mut().is_some_and(|space| {
            let engine = &space.engine;
            space
                .small
                .free_cached(p.as_ptr() as usize, || keeps_empty_pages(tight, engine))
        })
    }

    fn usable_size(&mut self, p: NonNull<u8>) -> Result<usize, Error> {
        if let Some(page) = self.page_of(p.as_ptr() as usize) {
            let r = self.slot_path(|small| small.usable(page, p.as_ptr() as usize));
            return self.count_misuse(r);
        }
        if let Some(engine) = self.heap_engine(p) {
            return engine.usable_size(p);
        }
        let r = self.large.len_of(p.as_ptr() as usize);
        self.count_misuse(r)
    }

    fn reshape(
        &mut self,
        p: NonNull<u8>,
        new_size: usize,
        align: usize,
    ) -> Result<(NonNull<u8>, bool), Error> {
        let addr = p.as_ptr() as usize;
        if let Some(page) = self.page_of(addr) {
            // A slot is judged by its page record; it keeps its class, so it stays where the
            // new size fits it and otherwise moves.
            let r = self.slot_path(|small| small.usable(page, addr));
            let old = self.count_misuse(r)?;
            check_layout(new_size, align, Self::MAX_ALIGN)?;
            if new_size <= old && addr % align == 0 {
                return Ok((p, true));
            }
            return self.move_out(p, old, new_size, align).map(|q| (q, false));
        }
        if let Some(engine) = self.heap_engine(p) {
            // Judged once: the token travels through the rest of the decision.
            let live = engine.live(p)?;
            check_layout(new_size, align, Self::MAX_ALIGN)?;
            return self.reshape_engine_block(live, new_size, align);
        }
        self.reshape_mapped(p, new_size, align)
    }

    fn stats(&self) -> Stats {
        HeapCore::stats(self)
    }

    fn check(&mut self) -> Result<(), Error> {
        HeapCore::check(self)
    }

    fn stats_mut(&mut self) -> &mut Stats {
        match self.space.as_deref_mut() {
            Some(space) => &mut space.engine.counters,
            None => &mut self.empty_counters,
        }
    }
}

impl HeapCore {
    /// `reshape` for a mapped block, judged by the table: in place (shrunk, or remapped where
    /// it lies), else remapped elsewhere, else moved.
    fn reshape_mapped(
        &mut self,
        p: NonNull<u8>,
        new_size: usize,
        align: usize,
    ) -> Result<(NonNull<u8>, bool), Error> {
        let addr = p.as_ptr() as usize;
        let r = self.large.len_of(addr);
        let len = self.count_misuse(r)?;
        check_layout(new_size, align, Self::MAX_ALIGN)?;
        let page = crate::page_size();
        if addr % align == 0 {
            if new_size <= len {
                // Give pages back only on a real shrink, below half the mapping: a request
                // that fits the headroom left by `grown_len` must not undo it.
                if new_size < len / 2 && len - new_size >= self.increment {
                    if let Some((_, new_len, old)) = self.large.remap(addr, new_size, false)? {
                        self.counters.bytes_to_os += (old - new_len) as u64;
                    }
                }
                return Ok((p, true));
            }
            let fits = new_size <= self.max_size.saturating_sub(self.footprint()) + len
                && new_size <= isize::MAX as usize - page;
            if fits {
                let target = self.grown_len(len, new_size);
                if let Some((_, new_len, old)) = self.large.remap(addr, target, false)? {
                    self.counters.bytes_from_os += (new_len - old) as u64;
                    self.note_peak();
                    return Ok((p, true));
                }
            }
        }
        // A spare mapping, already faulted in, takes a copy faster than fresh pages fault in.
        // Like a remapped block, it may lie at any page: only page alignment survives.
        if align <= page && new_size >= self.mmap_threshold {
            let target = self.grown_len(len, new_size);
            let budget = self.spare_budget();
            let keep = len.min(new_size);
            if let Some((q, _, unmapped)) = self.large.move_to_spare(addr, target, keep, budget)? {
                self.counters.bytes_to_os += unmapped as u64;
                self.note_peak();
                return Ok((q, false));
            }
        }
        let remappable = align <= page
            && new_size >= self.mmap_threshold
            && new_size <= self.max_size.saturating_sub(self.footprint()) + len;
        if remappable {
            let target = self.grown_len(len, new_size);
            if let Some((q, new_len, old_len)) = self.large.remap(addr, target, true)? {
                self.counters.bytes_from_os += new_len.saturating_sub(old_len) as u64;
                self.note_peak();
                return Ok((q, false));
            }
        }
        self.move_out(p, len, new_size, align).map(|q| (q, false))
    }

    /// Moves the live block at `p` (a slot or a mapped block, of which the first `old` bytes
    /// matter) to a new block of `new_size` bytes: allocate, copy, free. A block growing into
    /// the mapped range gets the headroom a mapped block gets.
    fn move_out(
        &mut self,
        p: NonNull<u8>,
        old: usize,
        new_size: usize,
        align: usize,
    ) -> Result<NonNull<u8>, Error> {
        let target = if new_size >= self.mmap_threshold && new_size > old {
            self.grown_len(old, new_size)
        } else {
            new_size
        };
        let q = self.alloc(target, align)?;
        // SAFETY: both blocks are live and distinct; `old` bytes are readable at `p` and the
        // smaller size fits at `q`.
        unsafe { core::ptr::copy_nonoverlapping(p.as_ptr(), q.as_ptr(), old.min(new_size)) };
        self.free(p)?;
        Ok(q)
    }

    /// How far a mapped block of `len` bytes grows for a request of `new_size`: half as much
    /// again as it had (within `max_size`), so a buffer that keeps growing is remapped a few
    /// times, not on every push. Pages of the headroom are not touched, so they cost address
    /// space, not memory; `usable_size` reports them.
    fn grown_len(&self, len: usize, new_size: usize) -> usize {
        let room = self
            .max_size
            .saturating_sub(self.footprint())
            .saturating_add(len);
        new_size.max(len + len / 2).min(room).max(new_size)
    }
}

impl Heap {
    /// A heap with the default [`HeapConfig`]: at most 64 GiB, 64 KiB growth steps, blocks of
    /// 128 KiB and more mapped on their own. Nothing is reserved until the first allocation
    /// (see [`HeapConfig::max_size`]), so this only fills in a few fields.
    ///
    /// # Errors
    ///
    /// None with the default settings; the `Result` is kept for [`with_config`](Self::with_config).
    ///
    /// ```
    /// let heap = strata_alloc::Heap::new()?;
    /// assert_eq!(heap.stats().live_blocks, 0);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    #[inline]
    pub fn new() -> Result<Heap, Error> {
        Heap::with_config(HeapConfig::default())
    }

    /// A heap with the given settings.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLayout`] for a zero or overflowing `max_size` or `growth_increment`.
    /// The OS is asked for nothing here: a refused reservation surfaces at the first
    /// allocation, after the retries with smaller sizes (see [`HeapConfig::max_size`]).
    ///
    /// ```
    /// use strata_alloc::{Heap, HeapConfig};
    /// let heap = Heap::with_config(HeapConfig::default().max_size(1 << 20))?;
    /// assert!(heap.alloc(4 << 20).is_err());
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    #[inline]
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

    /// Which of the start map's pages covering the first `span` bytes of break are resident.
    #[cfg(all(target_os = "linux", not(miri)))]
    fn resident_map_pages(heap: &Heap, span: usize) -> Vec<bool> {
        heap.with(|c| {
            let space = c.space.as_deref().expect("a heap with a break");
            let page = crate::page_size();
            let len = engine::groups_bytes(Granule::count(span)) & !(page - 1);
            let at = space.meta.base().as_ptr().wrapping_add(space.map_at);
            let mut vec = vec![0u8; len / page];
            // SAFETY: `at` is page aligned (`map_at` is a whole number of pages) and the
            // `len` bytes from it lie in `meta`; mincore only writes `len / page` bytes of `vec`.
            let r = unsafe { libc::mincore(at.cast(), len, vec.as_mut_ptr()) };
            assert_eq!(r, 0, "mincore");
            vec.iter().map(|&v| v & 1 != 0).collect()
        })
    }

    #[test]
    #[cfg(all(target_os = "linux", not(miri)))]
    fn a_growing_break_faults_its_start_map_in_by_writing() {
        // One block of 3 MiB from the break touches map words only at its two ends; the pages
        // between are faulted in by the write before the growth, on a fresh heap and again
        // after a trim gave them back.
        let config = HeapConfig::default()
            .max_size(64 << 20)
            .growth_increment(4 << 20)
            .mmap_threshold(16 << 20)
            .small_pages(false);
        let heap = Heap::with_config(config).unwrap();
        for round in 0..2 {
            let p = heap.alloc(3 << 20).unwrap();
            let pages = resident_map_pages(&heap, 3 << 20);
            assert!(pages.len() >= 16, "{} pages of map", pages.len());
            assert!(
                pages.iter().all(|&r| r),
                "round {round}: map pages not resident: {pages:?}"
            );
            // SAFETY: live, freed once.
            unsafe { heap.free(p) }.unwrap();
            assert!(heap.trim() >= 3 << 20);
            heap.check().unwrap();
        }
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

    /// A live set that fills the heap and empties it again, over and over: the first swings
    /// give the pages back, and once the break has grown back over them a few times the heap
    /// keeps them; an explicit trim still gives them all back.
    #[test]
    fn a_swinging_heap_stops_giving_back_what_it_needs_again() {
        let config = HeapConfig::default()
            .max_size(16 << 20)
            .growth_increment(16 << 10)
            .mmap_threshold(64 << 10)
            .trim_threshold(32 << 10)
            .small_pages(false);
        let heap = Heap::with_config(config).unwrap();
        let mut shrinks_per_swing = Vec::new();
        for _ in 0..16 {
            let before = heap.stats().break_shrinks;
            let blocks: Vec<_> = (0..256).map(|_| heap.alloc(3000).unwrap()).collect();
            for &p in blocks.iter().rev() {
                // SAFETY: live, freed once.
                unsafe { heap.free(p).unwrap() };
            }
            heap.check().unwrap();
            shrinks_per_swing.push(heap.stats().break_shrinks - before);
        }
        // 768 KiB swings against a 32 KiB threshold: it doubles to past the swing in five.
        assert!(shrinks_per_swing[0] >= 1, "{shrinks_per_swing:?}");
        assert!(
            shrinks_per_swing[8..].iter().all(|&n| n == 0),
            "{shrinks_per_swing:?}"
        );
        assert!(heap.trim() >= 512 << 10);
        heap.check().unwrap();
    }

    /// The trait's grow and shrink of slots, which take the fast path when the slot's page
    /// stays put: contents kept, the old slot freed (a second free of it is a double free),
    /// every reallocation counted, and the heap sound after each.
    #[test]
    fn slots_grown_and_shrunk_through_the_trait_keep_contents_and_counts() {
        use allocator_api2::alloc::Allocator;
        let heap = small_heap_with(true);
        let l = |n| core::alloc::Layout::from_size_align(n, 8).unwrap();
        // Enough slots of one class that its page is in use before and after each move.
        // Enough requests of the target sizes that their classes have pages (see
        // `SmallObjects::wants_page`).
        let keep: Vec<_> = [40, 300, 2000]
            .iter()
            .flat_map(|&n| (0..20).map(move |_| n))
            .map(|n| heap.alloc(n).unwrap())
            .collect();
        let p = heap.alloc(40).unwrap();
        // SAFETY: 40 live bytes.
        unsafe { p.as_ptr().write_bytes(0xA5, 40) };
        let before = heap.stats().reallocations;
        // SAFETY: `p` is live with layout (40, 8); only the returned pointer is used after.
        let q = unsafe { (&heap).grow(p, l(40), l(300)) }
            .unwrap()
            .cast::<u8>();
        assert_ne!(q, p);
        // SAFETY: the first 40 bytes were kept.
        assert!((0..40).all(|i| unsafe { q.as_ptr().add(i).read() } == 0xA5));
        // SAFETY: `p` was freed by the move.
        assert!(matches!(
            unsafe { heap.free(p) },
            Err(Error::DoubleFree { .. })
        ));
        heap.check().unwrap();
        // SAFETY: `q` is live with layout (300, 8).
        let r = unsafe { (&heap).shrink(q, l(300), l(290)) }
            .unwrap()
            .cast::<u8>();
        assert_eq!(r, q, "a shrink within the slot stays");
        // SAFETY: `r` is live with layout (290, 8).
        let z = unsafe { (&heap).grow_zeroed(r, l(290), l(2000)) }
            .unwrap()
            .cast::<u8>();
        // SAFETY: 2000 bytes, the first 40 kept and the tail zeroed.
        unsafe {
            assert!((0..40).all(|i| z.as_ptr().add(i).read() == 0xA5));
            assert!((290..2000).all(|i| z.as_ptr().add(i).read() == 0));
        }
        let s = heap.stats();
        assert_eq!(s.reallocations, before + 3);
        assert!(s.reallocations_in_place >= 1);
        // SAFETY: live, freed once each.
        unsafe {
            heap.free(z).unwrap();
            for k in keep {
                heap.free(k).unwrap();
            }
        }
        heap.check().unwrap();
        assert_eq!(heap.stats().live_blocks, 0);
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

    fn reason(e: Error) -> &'static str {
        match e {
            Error::InvalidPointer { reason, .. } => reason,
            other => panic!("expected InvalidPointer, got {other:?}"),
        }
    }

    fn has_space(heap: &Heap) -> bool {
        heap.with(|c| c.space.is_some())
    }

    #[test]
    fn an_empty_heap_reserves_nothing_and_answers_everything() {
        // Miri cannot hold the default 64 GiB reservation the first block makes.
        let config = if cfg!(miri) {
            HeapConfig::default().max_size(1 << 20)
        } else {
            HeapConfig::default()
        };
        let heap = Heap::with_config(config).unwrap();
        assert!(!has_space(&heap));
        assert!(
            core::mem::size_of::<Heap>() <= 4096,
            "an empty heap carries no engine (the engine alone is five times this)"
        );
        heap.check().unwrap();
        let s = heap.stats();
        assert_eq!(
            (
                s.live_blocks,
                s.managed_bytes,
                s.bytes_from_os,
                s.mapped_blocks
            ),
            (0, 0, 0, 0)
        );
        assert_eq!(s.max_size, config.max_size);
        assert_eq!(heap.blocks().count(), 0);
        let snap = heap.snapshot();
        assert!(snap.blocks.is_empty() && snap.free_lists.is_empty());
        assert!(snap.to_string().contains("Heap"));
        assert_eq!(heap.trim(), 0);
        let local = 0u64;
        let foreign = NonNull::from(&local).cast::<u8>();
        assert!(reason(heap.usable_size(foreign).unwrap_err()).contains("does not point into"));
        // SAFETY: misuse under test: the heap validates before it writes.
        let e = unsafe { heap.free(foreign) }.unwrap_err();
        assert!(reason(e).contains("does not point into this allocator"));
        // SAFETY: as above.
        assert!(unsafe { heap.realloc(foreign, 10) }.is_err());
        assert_eq!(local, 0);
        assert!(heap.alloc(0).is_err());
        let s = heap.stats();
        assert_eq!((s.misuses_caught, s.failed_requests), (3, 1));
        assert!(!has_space(&heap), "nothing above reserved any space");
        heap.check().unwrap();

        // The first block reserves; what the empty heap counted carries over.
        let p = heap.calloc(10, 10).unwrap();
        assert!(has_space(&heap));
        // SAFETY: 100 zeroed bytes were allocated.
        assert!(
            unsafe { core::slice::from_raw_parts(p.as_ptr(), 100) }
                .iter()
                .all(|&b| b == 0)
        );
        let s = heap.stats();
        assert_eq!((s.misuses_caught, s.failed_requests), (3, 1));
        assert_eq!((s.live_blocks, s.break_growths), (1, 1));
        heap.check().unwrap();
        // SAFETY: live, freed once.
        unsafe { heap.free(p) }.unwrap();
        heap.check().unwrap();
    }

    #[test]
    fn a_heap_whose_first_block_is_mapped_reserves_no_break() {
        let heap = small_heap();
        let big = heap.alloc(40 << 10).unwrap();
        assert!(!has_space(&heap));
        // SAFETY: the block is 40 KiB.
        unsafe { big.as_ptr().write_bytes(5, 40 << 10) };
        assert_eq!(heap.blocks().count(), 1);
        assert!(heap.usable_size(big).unwrap() >= 40 << 10);
        assert!(
            reason(
                heap.usable_size(NonNull::new(big.as_ptr().wrapping_add(64)).unwrap())
                    .unwrap_err()
            )
            .contains("middle")
        );
        heap.check().unwrap();
        let small = heap.alloc(100).unwrap();
        assert!(has_space(&heap));
        // SAFETY: both live, freed once each; `big` kept its contents.
        unsafe {
            assert_eq!(big.as_ptr().add((40 << 10) - 1).read(), 5);
            heap.free(big).unwrap();
            heap.free(small).unwrap();
        }
        heap.check().unwrap();
    }

    #[test]
    fn many_empty_heaps_alive_at_once_each_usable() {
        let n = if cfg!(miri) { 40 } else { 100_000 };
        let config = if cfg!(miri) {
            HeapConfig::default().max_size(1 << 20)
        } else {
            HeapConfig::default()
        };
        let mut heaps: Vec<Heap> = (0..n).map(|_| Heap::with_config(config).unwrap()).collect();
        assert!(heaps.iter().all(|h| !has_space(h)));
        // A few of them, spread out, serve blocks; the rest stay empty.
        let used: Vec<usize> = (0..n).step_by(n / 8).collect();
        let mut blocks = Vec::new();
        for &i in &used {
            let p = heaps[i].alloc(1000).unwrap();
            // SAFETY: 1000 bytes are ours.
            unsafe { p.as_ptr().write_bytes(i as u8, 1000) };
            blocks.push((i, p));
        }
        let mut addrs: Vec<usize> = blocks.iter().map(|(_, p)| p.as_ptr() as usize).collect();
        addrs.sort_unstable();
        assert!(
            addrs.windows(2).all(|w| w[1] - w[0] >= 1000),
            "blocks overlap"
        );
        for (i, p) in blocks {
            // SAFETY: live; written above.
            assert_eq!(unsafe { p.as_ptr().add(999).read() }, i as u8);
            // A pointer of one heap is foreign to every other.
            let other = &heaps[(i + 1) % n];
            assert!(reason(other.usable_size(p).unwrap_err()).contains("does not point into"));
            // SAFETY: live in heap `i`, freed once.
            unsafe { heaps[i].free(p) }.unwrap();
            heaps[i].check().unwrap();
        }
        for h in heaps.iter().step_by(97) {
            h.check().unwrap();
            assert_eq!(h.stats().live_blocks, 0);
        }
        heaps.truncate(1);
    }

    #[test]
    fn a_heap_refused_its_max_size_works_within_what_it_got() {
        let config = HeapConfig::default()
            .max_size(1 << 20)
            .growth_increment(16 << 10)
            .mmap_threshold(512 << 10);
        let mut core = HeapCore::new(config).unwrap();
        let mut tried = Vec::new();
        core.reserve_space_with(64 << 10, |size| {
            tried.push(size);
            if size > 256 << 10 {
                Err(Error::Os {
                    op: "map",
                    bytes: size,
                    code: libc::ENOMEM,
                })
            } else {
                Space::reserve(size)
            }
        })
        .unwrap();
        assert_eq!(tried, [1 << 20, 512 << 10, 256 << 10]);
        let heap = Heap {
            core: UnsafeCell::new(core),
        };
        assert_eq!(heap.stats().max_size, 256 << 10);
        let mut live = Vec::new();
        let err = loop {
            match heap.alloc(3000) {
                Ok(p) => {
                    // SAFETY: 3000 bytes are ours.
                    unsafe { p.as_ptr().write_bytes(live.len() as u8, 3000) };
                    live.push(p);
                }
                Err(e) => break e,
            }
        };
        assert!(matches!(err, Error::OutOfMemory { .. }), "{err:?}");
        let s = heap.stats();
        assert!(
            s.managed_bytes <= 256 << 10 && live.len() * 3000 > 200 << 10,
            "{s:?}"
        );
        heap.check().unwrap();
        for (i, p) in live.into_iter().enumerate() {
            // SAFETY: live, written above, freed once.
            unsafe {
                assert_eq!(p.as_ptr().add(2999).read(), i as u8);
                heap.free(p).unwrap();
            }
        }
        heap.check().unwrap();
        assert_eq!(heap.stats().live_blocks, 0);
    }

    /// A freed mapped block stays mapped as a spare: the next large request of up to its size
    /// reuses it, a growing mapped block that cannot grow where it lies moves into it with its
    /// contents, a zeroed request
    /// never gets one, and `trim` gives the spares back; every byte stays accounted for.
    #[test]
    fn freed_mapped_blocks_are_reused_as_spares_and_trimmed() {
        let page = crate::page_size();
        let threshold = 4 * page;
        let heap = Heap::with_config(
            HeapConfig::default()
                .max_size(16 << 20)
                .mmap_threshold(threshold),
        )
        .unwrap();
        let accounted = |heap: &Heap| {
            let s = heap.stats();
            assert_eq!(
                s.bytes_from_os - s.bytes_to_os,
                s.managed_bytes as u64,
                "{s}"
            );
            s
        };
        let big = 16 * page;
        let p = heap.alloc(big).unwrap();
        // SAFETY: `p` holds `big` bytes.
        unsafe { p.as_ptr().write_bytes(7, big) };
        // SAFETY: live, freed once.
        unsafe { heap.free(p) }.unwrap();
        let s = accounted(&heap);
        assert_eq!(
            (s.mapped_blocks, s.managed_bytes, s.free_bytes),
            (0, big, big)
        );
        // SAFETY: misuse under test: a spare is still a freed block.
        assert!(matches!(
            unsafe { heap.free(p) },
            Err(Error::DoubleFree { .. })
        ));
        // A zeroed request gets fresh pages, not the spare's sevens.
        let z = heap.calloc(1, 10 * page).unwrap();
        assert_ne!(z, p);
        // SAFETY: `z` holds `10 * page` bytes.
        assert!(
            unsafe { core::slice::from_raw_parts(z.as_ptr(), 10 * page) }
                .iter()
                .all(|&b| b == 0)
        );
        // A smaller block (at least half the spare) reuses it: no new mapping.
        let from_os = accounted(&heap).bytes_from_os;
        let q = heap.alloc(9 * page).unwrap();
        assert_eq!(q, p);
        assert_eq!(accounted(&heap).bytes_from_os, from_os);
        // SAFETY: live, freed once.
        unsafe { heap.free(q) }.unwrap();
        // A mapped block growing past what it has moves into the spare, contents kept.
        let r = heap.alloc(threshold).unwrap();
        // SAFETY: `r` holds `threshold` bytes.
        unsafe { r.as_ptr().write_bytes(3, threshold) };
        // SAFETY: `r` is live; the heap validates.
        let r2 = unsafe { heap.realloc(r, 12 * page) }.unwrap();
        // (In place if the address space after `r` happens to be free.)
        assert!(r2 == p || r2 == r);
        // SAFETY: the first `threshold` bytes were kept.
        assert!(
            unsafe { core::slice::from_raw_parts(r2.as_ptr(), threshold) }
                .iter()
                .all(|&b| b == 3)
        );
        heap.check().unwrap();
        // SAFETY: live, freed once each.
        unsafe {
            heap.free(r2).unwrap();
            heap.free(z).unwrap();
        }
        assert!(accounted(&heap).managed_bytes > 0);
        assert!(heap.trim() > 0);
        let s = accounted(&heap);
        assert_eq!((s.managed_bytes, s.free_bytes, s.live_blocks), (0, 0, 0));
        heap.check().unwrap();
    }

    /// Many mapped blocks grow the large-block table through the heap; pointers into them,
    /// beside them and freed ones are told apart as it grows and shrinks.
    #[test]
    fn many_mapped_blocks_and_misuse_among_them() {
        let page = crate::page_size();
        let n = if cfg!(miri) { 70 } else { 700 };
        let heap = Heap::with_config(
            HeapConfig::default()
                .max_size(64 << 20)
                .mmap_threshold(2 * page),
        )
        .unwrap();
        let mut live: Vec<(NonNull<u8>, u8)> = Vec::new();
        for i in 0..n {
            let p = heap.alloc(2 * page + i % 100).unwrap();
            // SAFETY: the block has at least `2 * page` bytes.
            unsafe {
                p.as_ptr().write(i as u8);
                p.as_ptr().add(2 * page - 1).write(i as u8);
            }
            live.push((p, i as u8));
        }
        assert_eq!(heap.stats().mapped_blocks, n);
        assert!(heap.with(|c| c.large.slots()) >= 2 * n);
        heap.check().unwrap();
        let (p0, _) = live[n / 2];
        let interior = NonNull::new(p0.as_ptr().wrapping_add(page)).unwrap();
        // SAFETY: misuse under test: rejected before anything is written.
        assert!(reason(unsafe { heap.free(interior) }.unwrap_err()).contains("middle"));
        let local = 0u8;
        // SAFETY: as above.
        let e = unsafe { heap.free(NonNull::from(&local)) }.unwrap_err();
        assert!(reason(e).contains("does not point into this allocator"));
        let mut freed = Vec::new();
        for k in (0..n).rev() {
            if k % 10 != 0 {
                let (p, _) = live.swap_remove(k);
                // SAFETY: live, freed once.
                unsafe { heap.free(p) }.unwrap();
                freed.push(p);
            }
        }
        let last = *freed.last().unwrap();
        // SAFETY: misuse under test: `last` was just freed.
        assert!(matches!(
            unsafe { heap.free(last) },
            Err(Error::DoubleFree { .. })
        ));
        assert!(heap.with(|c| c.large.slots()) <= (8 * live.len()).next_power_of_two().max(128));
        heap.check().unwrap();
        for (p, byte) in live {
            // SAFETY: live and written above; freed once.
            unsafe {
                assert_eq!(p.as_ptr().read(), byte);
                assert_eq!(p.as_ptr().add(2 * page - 1).read(), byte);
                heap.free(p).unwrap();
            }
        }
        let s = heap.stats();
        assert_eq!((s.mapped_blocks, s.mapped_bytes, s.live_blocks), (0, 0, 0));
        heap.check().unwrap();
    }
}
