//! The block engine: boundary-tagged blocks over one contiguous span, segregated free lists,
//! splitting, coalescing, in-place resizing and a full integrity check.
//!
//! It is written once and configured twice: the [`Arena`](crate::Arena) runs it over one fixed
//! span, the [`Heap`](crate::Heap) over a span whose end follows a program break
//! ([`Engine::extend`], [`Engine::truncate_top`]). The engine never allocates and never maps
//! memory; its owner hands it the span and the memory for its start map.
//!
//! The span `[base, end)` is tiled by blocks from `base + 8` to `end - 8`, so every payload is
//! 16-byte aligned and `end - 8` is where the header of a block appended by `extend` goes. An
//! empty span has `end == base + 16`.
//!
//! Invariants (checked in full by [`Engine::check`]):
//! 1. Blocks tile `[base + 8, end - 8)` exactly; each header decodes (its tag matches).
//! 2. The start map has a `starts` bit at each block's payload granule and nowhere else; the
//!    `live` bit is set exactly for allocated blocks, and a header's `FREE` flag agrees with it.
//!    Its summary marks exactly the groups of 64 granules that hold a start ([`starts`]).
//! 3. No two binned free blocks are adjacent (freeing coalesces with both neighbours). Small
//!    freed blocks may instead wait, uncoalesced, on a quick list ([`quick`]); they count as
//!    free for misuse detection and as allocated for their neighbours.
//! 4. A free block's footer equals its header word (except the last block's, which nothing
//!    reads), and the next block's `PREV_FREE` flag is set exactly when the block before it is
//!    free.
//! 5. Every free block is on the list of its bin exactly once (see [`bins`]).
//! 6. The counters in `stats` (live blocks, bytes in use, free blocks, free bytes) agree with
//!    the walk.
//! 7. At most one block is *lent* ([`quick`]): handed out by the latest allocation but still
//!    on its quick stack. It is allocated in every way but two: its `live` bit is still clear
//!    and the counters leave it out. Freeing it next ends the loan with nothing else to undo;
//!    any other operation first settles it ([`Engine::settle`]), so only `alloc` and `free`
//!    ever meet a lent block.
//!
//! Misuse and damage are reported, never followed: a pointer handed back is judged by the start
//! map alone before its header is read, and every header, footer and free-list link is checked
//! against its tag and the start map before the engine acts on it. Each operation validates
//! everything it will touch first and writes only after all checks passed.

pub(crate) mod bins;
pub(crate) mod block;
pub(crate) mod quick;
pub(crate) mod starts;

use core::ptr::NonNull;

use crate::{BlockInfo, BlockState, Error, Stats};
use bins::{Bins, bin_floor, bin_is_exact, bin_of};
use block::{
    FREE, GRANULE, HEADER, Header, MIN_BLOCK, PREV_FREE, Tagger, block_size_for, small_block_size,
};
use quick::Quick;
use starts::StartMap;

pub(crate) use block::block_size_for as block_size;

// The free fast path (`Engine::free`) relies on blocks spanning at least two granules.
static_assertions::const_assert_eq!(MIN_BLOCK / GRANULE, 2);
pub(crate) use starts::map_bytes;

/// Maps the zeroed memory an engine over `limit` bytes needs for its start map: the mapping
/// (which must outlive the engine) and the pointer to hand to [`Engine::new`].
pub(crate) fn reserve_map(limit: usize) -> Result<(crate::Region, NonNull<u8>), Error> {
    let mut map = crate::Region::reserve(map_bytes(limit / GRANULE))?;
    let ptr = map.grow(map.capacity())?;
    Ok((map, ptr))
}

/// Largest alignment `alloc` accepts.
pub(crate) const MAX_ALIGN: usize = 4096;

/// How many blocks of a size-range bin are looked at for a fit before moving to a larger bin.
const BIN_SCAN: usize = 4;
/// How many blocks of a bin best-fit mode looks at (see `Engine::set_best_fit`).
const BEST_FIT_SCAN: usize = 256;

/// What [`Engine::resize`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resize {
    /// The block now has at least the usable bytes asked for.
    Done,
    /// It cannot grow in place.
    Blocked,
    /// It cannot grow in place, but nothing but the end of the span stops it: it could reach
    /// `reach` usable bytes without growing the span, and any size after `extend`.
    AtTop {
        /// Usable bytes the block would have with the free last block (if any) added.
        reach: usize,
    },
}

/// The result of freeing a block: where the (possibly merged) free block now lies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Freed {
    /// Whether the free block is the last one of the span (it borders `end`).
    pub at_top: bool,
    /// Whether the block was merged and binned (not cached on a quick stack or a loan ended).
    pub binned: bool,
    /// Size of the free block after merging.
    pub size: usize,
}

/// The block engine. See the module docs for its layout and invariants.
pub(crate) struct Engine {
    /// Pointer to the first byte of the span; every address the engine touches is derived
    /// from it, so accesses keep the mapping's provenance.
    base_ptr: *mut u8,
    /// `base_ptr` as an address.
    base: usize,
    /// One past the last byte of the span.
    end: usize,
    /// The most `end - base` may become (what the start map covers).
    limit: usize,
    map: StartMap,
    bins: Bins,
    quick: Quick,
    tagger: Tagger,
    /// Binned free blocks (quick-listed ones are counted by `quick`).
    binned: usize,
    /// Whether `take_fit` looks further for the smallest fitting block.
    best_fit: bool,
    /// Every byte at or above this address is zero, except the links and footers of free
    /// blocks (the first 16 and last 8 payload bytes a block would have), which `calloc`
    /// always clears. Memory fresh from the OS starts out zero; this mark rises as blocks are
    /// handed out, so `calloc` only writes what may be dirty.
    clean_from: usize,
    /// Counters kept on the hot paths: allocations, frees, bytes in use and its peak, splits,
    /// coalesces, misuses (and the owner's: failed requests, reallocations). The block and
    /// byte counts that follow from these are derived in [`Engine::stats`]. The lent block
    /// and the ended loans are not in them.
    pub counters: Stats,
    /// Loans ended by a free: each counts as one allocation and one free in
    /// [`Engine::stats`].
    loans_ended: u64,
}

impl Engine {
    /// An engine over an empty span at `base`; `extend` adds memory to it.
    ///
    /// # Safety
    ///
    /// - `base` is 16-byte aligned (a page start in practice), and `[base, base + limit)` is
    ///   memory only this engine will access, for as long as it is used, except the payloads
    ///   it hands out; `limit` is a multiple of 16 and at least 16.
    /// - `map` points to `map_bytes(limit / 16)` zeroed bytes, aligned for `u64`, that only
    ///   this engine accesses.
    pub unsafe fn new(base: NonNull<u8>, limit: usize, map: NonNull<u8>) -> Engine {
        debug_assert!(limit % GRANULE == 0 && limit >= GRANULE);
        let addr = base.as_ptr() as usize;
        debug_assert!(addr % GRANULE == 0);
        Engine {
            base_ptr: base.as_ptr(),
            base: addr,
            end: addr + GRANULE,
            limit,
            // SAFETY: forwarded from this function's contract.
            map: unsafe { StartMap::new(map.as_ptr(), limit / GRANULE) },
            bins: Bins::new(),
            quick: Quick::new(),
            tagger: Tagger::new(addr as u64),
            binned: 0,
            best_fit: false,
            clean_from: addr,
            counters: Stats::default(),
            loans_ended: 0,
        }
    }

    /// Bytes of span in use (`end - base`).
    #[inline]
    pub fn span(&self) -> usize {
        self.end - self.base
    }

    /// The counters, with the block and byte counts derived from them: live blocks are
    /// allocations minus frees, and since blocks tile the span, free bytes are whatever the
    /// live blocks and their headers do not cover.
    pub fn stats(&self) -> Stats {
        let mut s = self.counters;
        s.allocations += self.loans_ended;
        s.frees += self.loans_ended;
        s.allocations += (self.quick.lent() != 0) as u64;
        s.bytes_in_use = self.bytes_in_use();
        s.live_blocks = (s.allocations - s.frees) as usize;
        s.free_blocks = self.binned + self.quick.total();
        s.free_bytes = self.span() - GRANULE - s.bytes_in_use - HEADER * s.live_blocks;
        s.managed_bytes = self.span();
        s
    }

    /// Bytes handed out and not freed (usable bytes of live blocks, the lent one included).
    #[inline(always)]
    pub fn bytes_in_use(&self) -> usize {
        self.counters.bytes_in_use
            + if self.quick.lent() != 0 {
                self.quick.lent_size() - HEADER
            } else {
                0
            }
    }

    /// Settles the loan (invariant 7), if there is one: the lent block leaves its stack, gets
    /// its `live` bit and is counted. Every entry point other than `alloc` and `free` that
    /// reads the map or the stacks, or changes anything, calls this first; the read-only
    /// ones that do not (`stats`, `bytes_in_use`, the bins and the span) account for the
    /// loan or are not affected by it.
    #[inline(always)]
    pub fn settle(&mut self) {
        if let Some((b, size)) = self.quick.settle_loan() {
            // The peak was noted when the block was lent.
            self.record_cached_allocated(b, size);
        }
    }

    /// Marks the cached block `b` of `size` bytes, just taken off its stack, live and counts
    /// it (all but the peak).
    #[inline(always)]
    fn record_cached_allocated(&mut self, b: usize, size: usize) {
        let g = self.granule(b);
        self.map.set_live(g, true);
        let s = &mut self.counters;
        s.allocations += 1;
        s.bytes_in_use += size - HEADER;
    }

    /// First address of the span.
    #[inline]
    pub fn base(&self) -> usize {
        self.base
    }

    /// Whether `addr` lies in the span's current extent.
    #[inline]
    pub fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base) < self.end - self.base
    }

    // ---------------------------------------------------------------- raw words

    #[inline(always)]
    fn ptr(&self, addr: usize) -> *mut u64 {
        debug_assert!(addr >= self.base && addr + 8 <= self.base + self.limit);
        self.base_ptr.with_addr(addr).cast()
    }

    #[inline(always)]
    fn read(&self, addr: usize) -> u64 {
        // SAFETY: every caller passes an 8-aligned address inside the span (a header, footer or
        // link slot of a block the start map vouches for), which is engine-owned memory.
        unsafe { self.ptr(addr).read() }
    }

    #[inline(always)]
    fn write(&mut self, addr: usize, word: u64) {
        // SAFETY: as in `read`; `&mut self` makes the engine the only writer.
        unsafe { self.ptr(addr).write(word) }
    }

    #[inline(always)]
    fn granule(&self, b: usize) -> usize {
        (b + HEADER - self.base) / GRANULE
    }

    #[inline(always)]
    fn block_of_granule(&self, g: usize) -> usize {
        self.base + g * GRANULE - HEADER
    }

    #[inline(always)]
    fn last_slot(&self) -> usize {
        self.end - HEADER
    }

    /// Whether the start map confirms that the block whose payload granule is `g` is exactly
    /// `size` bytes long: the next block starts right after it (or the span ends there) and
    /// no block starts inside it.
    #[inline(always)]
    fn map_confirms(&self, g: usize, size: usize) -> bool {
        let k = size / GRANULE;
        let at_end = self.block_of_granule(g + k) == self.last_slot();
        self.map.spans_exactly(g, k, at_end)
    }

    fn corrupted(&mut self, addr: usize, what: &'static str) -> Error {
        self.counters.misuses_caught += 1;
        Error::Corrupted { addr, what }
    }

    /// Decodes the header at `b`, which the start map says begins a block.
    #[inline(always)]
    fn header(&mut self, b: usize) -> Result<Header, Error> {
        let word = self.read(b);
        match self.tagger.decode(b, word) {
            Some(h) if b + h.size <= self.last_slot() => Ok(h),
            _ => Err(self.corrupted(b, "block header was overwritten")),
        }
    }

    #[inline(always)]
    fn write_header(&mut self, b: usize, size: usize, flags: u64) {
        let word = self.tagger.encode(b, size, flags);
        self.write(b, word);
    }

    // ---------------------------------------------------------------- free lists

    #[inline(always)]
    fn next_link(&self, b: usize) -> usize {
        self.read(b + HEADER) as usize
    }

    #[inline(always)]
    fn prev_link(&self, b: usize) -> usize {
        self.read(b + 2 * HEADER) as usize
    }

    /// Whether `b` is the address of a free block, by the start map alone.
    #[inline(always)]
    fn is_free_block(&self, b: usize) -> bool {
        b > self.base
            && b < self.last_slot()
            && (b + HEADER - self.base) % GRANULE == 0
            && self.map.is_free_start(self.granule(b))
    }

    /// Writes a free block's header and footer, puts it on its bin and in the start map. No
    /// allocated block may start at `b` (it is new, or a free block cut shorter), and the
    /// block before it must be allocated (free neighbours are always merged first).
    #[inline(always)]
    fn make_free(&mut self, b: usize, size: usize) {
        self.bin_free(b, size);
        let g = self.granule(b);
        self.map.add_free(g);
    }

    /// `make_free` without the start map: the caller records the block there.
    #[inline(always)]
    fn bin_free(&mut self, b: usize, size: usize) {
        let word = self.tagger.encode(b, size, FREE);
        self.write(b, word);
        // The footer is for the block after this one; the last block has none (and writing it
        // would touch the far end of the heap's top block on every carve).
        if b + size != self.last_slot() {
            self.write(b + size - HEADER, word);
        }
        let i = bin_of(size);
        let head = self.bins.head(i);
        self.write(b + HEADER, head as u64);
        self.write(b + 2 * HEADER, 0);
        if head != 0 {
            self.write(head + 2 * HEADER, b as u64);
        }
        self.bins.set_head(i, b);
        self.binned += 1;
    }

    /// Checks that the free block `b` (of `size` bytes) sits correctly in its list.
    #[inline(always)]
    fn check_links(&mut self, b: usize, size: usize) -> Result<(), Error> {
        let (next, prev) = (self.next_link(b), self.prev_link(b));
        let prev_ok = if prev == 0 {
            self.bins.head(bin_of(size)) == b
        } else {
            self.is_free_block(prev) && self.next_link(prev) == b
        };
        let next_ok = next == 0 || (self.is_free_block(next) && self.prev_link(next) == b);
        if prev_ok && next_ok {
            Ok(())
        } else {
            Err(self.corrupted(b + HEADER, "free-list link was overwritten"))
        }
    }

    /// Takes the free block `b` off its list. Its links must have passed `check_links`.
    #[inline(always)]
    fn unlink(&mut self, b: usize, size: usize) {
        let (next, prev) = (self.next_link(b), self.prev_link(b));
        if prev == 0 {
            self.bins.set_head(bin_of(size), next);
        } else {
            self.write(prev + HEADER, next as u64);
        }
        if next != 0 {
            self.write(next + 2 * HEADER, prev as u64);
        }
        self.binned -= 1;
    }

    /// Validates the free block at `b` found on bin `bin` (header, map, links).
    #[inline(always)]
    fn checked_free(&mut self, b: usize, bin: usize) -> Result<Header, Error> {
        let h = self.listed_free(b, bin)?;
        self.check_links(b, h.size)?;
        Ok(h)
    }

    /// Validates the free block at `b` found on bin `bin`, by the map and its header, without
    /// its links: enough to read its size and follow its `next` link to the next candidate
    /// (which is validated the same way before it is read). The block that is finally taken
    /// off the list gets its links checked too.
    #[inline(always)]
    fn listed_free(&mut self, b: usize, bin: usize) -> Result<Header, Error> {
        if !self.is_free_block(b) {
            return Err(self.corrupted(b, "free-list entry is not a free block"));
        }
        let h = self.header(b)?;
        if !h.is_free() || bin_of(h.size) != bin {
            return Err(self.corrupted(b, "free block header was overwritten"));
        }
        Ok(h)
    }

    // ---------------------------------------------------------------- allocation

    /// Finds a free block of at least `size` bytes (validated, still on its list).
    #[inline(always)]
    fn take_fit(&mut self, size: usize) -> Result<Option<(usize, Header)>, Error> {
        let i = bin_of(size);
        let mut from = i;
        if !bin_is_exact(i) {
            // Blocks in a size-range bin may be too small; look at a few and take the smallest
            // that fits (an exact fit ends the search) before moving up.
            if let Some(found) = self.best_in_bin(i, size)? {
                return Ok(Some(found));
            }
            from = i + 1;
        }
        let Some(j) = self.bins.first_nonempty_from(from) else {
            return Ok(None);
        };
        if self.best_fit && !bin_is_exact(j) {
            return self.best_in_bin(j, size);
        }
        // Every block of a larger bin fits: take the first (looking further costs more in
        // cache misses than it saves in fragmentation; docs/BENCHMARKS.md has the figures).
        let b = self.bins.head(j);
        let h = self.checked_free(b, j)?;
        Ok(Some((b, h)))
    }

    /// Chooses how far `take_fit` looks: the smallest fitting block among the first
    /// [`BEST_FIT_SCAN`] of the request's bin and of the next non-empty one (`true`), or the
    /// smallest among the first [`BIN_SCAN`] of the request's bin, else the head of the next
    /// non-empty bin (`false`, the default).
    pub fn set_best_fit(&mut self, best: bool) {
        self.settle();
        self.best_fit = best;
    }

    /// Turns deferred coalescing on or off. Off, every free merges at once, and the blocks
    /// cached so far are merged now: packing before speed, for a heap near its limit.
    pub fn set_caching(&mut self, on: bool) -> Result<(), Error> {
        self.settle();
        let was_on = self.quick.set_enabled(on);
        if was_on && !on {
            self.flush_quick()
        } else {
            Ok(())
        }
    }

    /// The smallest block of at least `size` bytes among the first [`BIN_SCAN`] of bin `i`
    /// ([`BEST_FIT_SCAN`] in best-fit mode), validated (links included) and still on its list.
    #[inline(always)]
    fn best_in_bin(&mut self, i: usize, size: usize) -> Result<Option<(usize, Header)>, Error> {
        let mut b = self.bins.head(i);
        let mut best: Option<(usize, Header)> = None;
        let scan = if self.best_fit {
            BEST_FIT_SCAN
        } else {
            BIN_SCAN
        };
        for _ in 0..scan {
            if b == 0 {
                break;
            }
            let h = self.listed_free(b, i)?;
            if h.size >= size && best.is_none_or(|(_, bh)| h.size < bh.size) {
                best = Some((b, h));
                if h.size == size {
                    break;
                }
            }
            b = self.next_link(b);
        }
        if let Some((b, h)) = best {
            self.check_links(b, h.size)?;
        }
        Ok(best)
    }

    /// Turns the free block `b` (validated by `take_fit`, still linked) into an allocated block
    /// of `size` bytes, returning the tail to the free lists when it is large enough to be a
    /// block. `after` is the validated header of the block following `b` (needed only when
    /// `b` is taken whole).
    #[inline(always)]
    fn carve(&mut self, b: usize, h: Header, size: usize, after: Option<Header>) -> NonNull<u8> {
        self.unlink(b, h.size);
        let prev_flag = h.flags & PREV_FREE;
        let rest = h.size - size;
        let block = if rest >= MIN_BLOCK {
            self.write_header(b, size, prev_flag);
            // The block after the tail already has PREV_FREE set: `b` was free.
            self.make_free(b + size, rest);
            self.counters.splits += 1;
            size
        } else {
            self.write_header(b, h.size, prev_flag);
            if let Some(ah) = after {
                self.write_header(b + h.size, ah.size, ah.flags & !PREV_FREE);
            }
            h.size
        };
        let g = self.granule(b);
        self.map.set_live(g, true);
        self.clean_from = self.clean_from.max(b + block);
        let s = &mut self.counters;
        s.allocations += 1;
        s.bytes_in_use += block - HEADER;
        s.note_in_use();
        // SAFETY: `b + HEADER` is inside the span, whose base pointer is non-null.
        unsafe { NonNull::new_unchecked(self.base_ptr.with_addr(b + HEADER)) }
    }

    /// Allocates `size` usable bytes aligned to `align` (a power of two, at most
    /// [`MAX_ALIGN`]). `Ok(None)` means no free block fits: the owner may add memory and retry.
    #[inline(always)]
    pub fn alloc(&mut self, size: usize, align: usize) -> Result<Option<NonNull<u8>>, Error> {
        if align <= GRANULE && size <= quick::MAX_SIZE - HEADER {
            let bsize = small_block_size(size);
            self.settle();
            if let Some(b) = self.quick.lend(Quick::list_of(bsize)) {
                // Only the peak is noted now; the rest of the bookkeeping waits until the
                // next operation, which is often the free of this very block (a temporary
                // buffer) and then has nothing to record.
                let now = self.counters.bytes_in_use + bsize - HEADER;
                if now > self.counters.peak_bytes_in_use {
                    self.counters.peak_bytes_in_use = now;
                }
                // SAFETY: `b + HEADER` is inside the span, whose base pointer is non-null.
                return Ok(Some(unsafe {
                    NonNull::new_unchecked(self.base_ptr.with_addr(b + HEADER))
                }));
            }
        }
        self.alloc_slow(size, align)
    }

    /// Marks the cached block `b` of `size` bytes allocated. The quick stacks are out of the
    /// program's reach and a cached block never changes, so there is nothing to validate.
    #[inline(always)]
    fn hand_out_cached(&mut self, b: usize, size: usize) -> NonNull<u8> {
        self.record_cached_allocated(b, size);
        self.counters.note_in_use();
        // SAFETY: `b + HEADER` is inside the span, whose base pointer is non-null.
        unsafe { NonNull::new_unchecked(self.base_ptr.with_addr(b + HEADER)) }
    }

    /// Allocation from the bins, after the quick lists had nothing.
    #[inline(never)]
    fn alloc_slow(&mut self, size: usize, align: usize) -> Result<Option<NonNull<u8>>, Error> {
        self.settle();
        let Some(bsize) = block_size_for(size) else {
            return Err(Error::layout(size, align, "size is larger than any block"));
        };
        if align > GRANULE && bsize <= quick::MAX_SIZE {
            // A cached block that happens to be aligned enough saves a carve and the lead
            // block an aligned carve leaves behind (half of all blocks are 32-aligned).
            if let Some(b) = self.quick.pop_aligned(Quick::list_of(bsize), align) {
                return Ok(Some(self.hand_out_cached(b, bsize)));
            }
        }
        let first = self.fit_and_carve(bsize, align)?;
        if first.is_some() || self.quick.total() == 0 {
            return Ok(first);
        }
        // Nothing fits as the blocks stand: merge the cached ones and look once more.
        self.flush_quick()?;
        self.fit_and_carve(bsize, align)
    }

    /// Finds a free block for a block of `bsize` bytes aligned to `align` and carves it.
    #[inline(always)]
    fn fit_and_carve(&mut self, bsize: usize, align: usize) -> Result<Option<NonNull<u8>>, Error> {
        if align > GRANULE {
            return self.alloc_aligned(bsize, align);
        }
        let Some((b, h)) = self.take_fit(bsize)? else {
            return Ok(None);
        };
        // The block after is only written when the free block is taken whole; reading its
        // header otherwise would cost a cache miss at the far end of the free block.
        let after = if h.size - bsize < MIN_BLOCK {
            self.peek(b + h.size)?
        } else {
            None
        };
        Ok(Some(self.carve(b, h, bsize, after)))
    }

    /// Number of blocks waiting on the quick stacks (the lent one not counted).
    pub fn cached_blocks(&self) -> usize {
        self.quick.total()
    }

    /// Merges every cached block with its neighbours and puts it on its bin.
    ///
    /// A cached block that cannot be merged safely (its header or a neighbour is damaged) is
    /// left untouched, as a hole nobody will use; the first such damage is returned after
    /// every other block has been flushed.
    pub fn flush_quick(&mut self) -> Result<(), Error> {
        self.settle();
        let mut first_damage = None;
        for i in 0..quick::LISTS {
            let size = Quick::size_of(i);
            while let Some(b) = self.quick.pop(i) {
                let checked = self.checked_cached(b, size).and_then(|h| {
                    let prev = if h.prev_free() {
                        Some(self.free_prev(b)?)
                    } else {
                        None
                    };
                    Ok((h, prev, self.peek(b + size)?))
                });
                match checked {
                    Ok((h, prev, next)) => {
                        self.merge_and_bin(b, h, prev, next);
                    }
                    Err(e) => {
                        first_damage.get_or_insert(e);
                    }
                }
            }
        }
        first_damage.map_or(Ok(()), Err)
    }

    /// Validates that `b` is a cached block of `size` bytes.
    fn checked_cached(&mut self, b: usize, size: usize) -> Result<Header, Error> {
        if !self.is_free_block(b) {
            return Err(self.corrupted(b, "quick-list entry is not a cached block"));
        }
        let g = self.granule(b);
        let h = self.header(b)?;
        if h.is_free() || h.size != size || !self.map_confirms(g, size) {
            return Err(self.corrupted(b, "quick-list entry is not a cached block"));
        }
        Ok(h)
    }

    #[cold]
    fn alloc_aligned(&mut self, bsize: usize, align: usize) -> Result<Option<NonNull<u8>>, Error> {
        debug_assert!(align.is_power_of_two() && align <= MAX_ALIGN);
        // Room for the block, the worst misalignment and a free lead block before it.
        let need = bsize + align + MIN_BLOCK;
        let Some((b, h)) = self.take_fit(need)? else {
            return Ok(None);
        };
        let after = self.peek(b + h.size)?;
        let p = b + HEADER;
        if p % align == 0 {
            return Ok(Some(self.carve(b, h, bsize, after)));
        }
        // Cut a free lead block off the front so the payload lands on the alignment. The
        // remainder is put on a list only so that `carve` can take it off again uniformly.
        let aligned = (p + MIN_BLOCK + align - 1) & !(align - 1);
        let lead = aligned - p;
        self.unlink(b, h.size);
        self.make_free(b, lead);
        let b2 = b + lead;
        self.make_free(b2, h.size - lead);
        self.counters.splits += 1;
        let h2 = Header {
            size: h.size - lead,
            flags: FREE | PREV_FREE,
        };
        Ok(Some(self.carve(b2, h2, bsize, after)))
    }

    // ---------------------------------------------------------------- validation of user pointers

    /// Explains why `addr` is not a live payload, by the start map alone.
    #[cold]
    fn reject(&mut self, addr: usize) -> Error {
        self.counters.misuses_caught += 1;
        if !self.contains(addr) || addr < self.base + GRANULE {
            return Error::InvalidPointer {
                addr,
                reason: "it does not point into this allocator",
            };
        }
        if (addr - self.base) % GRANULE != 0 {
            return Error::InvalidPointer {
                addr,
                reason: "it is not aligned like any block this allocator hands out",
            };
        }
        let g = (addr - self.base) / GRANULE;
        match self.map.start_at_or_before(g) {
            Some(s) if self.map.is_live(s) => Error::InvalidPointer {
                addr,
                reason: "it points into the middle of an allocated block",
            },
            Some(_) => Error::DoubleFree { addr },
            None => Error::InvalidPointer {
                addr,
                reason: "it does not point at a block",
            },
        }
    }

    /// Checks that `p` is the payload of a live block and that its header is intact; returns
    /// the block address and header. Nothing is written.
    #[inline(always)]
    pub fn live_block(&mut self, p: NonNull<u8>) -> Result<(usize, Header), Error> {
        self.settle();
        let (addr, g) = self.live_granule(p)?;
        self.live_header(addr, g)
    }

    /// The payload granule of `p` if the start map says a live block starts there (nothing is
    /// read but the map).
    #[inline(always)]
    fn live_granule(&mut self, p: NonNull<u8>) -> Result<(usize, usize), Error> {
        let addr = p.as_ptr() as usize;
        let off = addr.wrapping_sub(self.base);
        // Granule 0 never holds a block (the first payload is at granule 1), so its live bit
        // is never set and needs no test of its own.
        if off >= self.end - self.base || off % GRANULE != 0 || !self.map.is_live(off / GRANULE) {
            return Err(self.reject(addr));
        }
        Ok((addr, off / GRANULE))
    }

    /// The header of the live block whose payload `addr` is at granule `g`, checked against
    /// the map. The map says where the next block starts, which is all the header's size has
    /// to agree with. (Its tag is checked on the merge paths, where its flags matter.)
    #[inline(always)]
    fn live_header(&mut self, addr: usize, g: usize) -> Result<(usize, Header), Error> {
        let b = addr - HEADER;
        let h = block::raw_header(self.read(b));
        if h.is_free() || h.size < MIN_BLOCK || h.size > self.last_slot() - b {
            return Err(self.corrupted(b, "block header was overwritten"));
        }
        if !self.map_confirms(g, h.size) {
            return Err(self.corrupted(b, "block size does not end on a block boundary"));
        }
        Ok((b, h))
    }

    /// Usable bytes of the live block at `p`.
    pub fn usable_size(&mut self, p: NonNull<u8>) -> Result<usize, Error> {
        self.live_block(p).map(|(_, h)| h.size - HEADER)
    }

    /// The free block before `b` (whose header says `PREV_FREE`), validated through its footer.
    #[inline(always)]
    fn free_prev(&mut self, b: usize) -> Result<(usize, Header), Error> {
        let footer = self.read(b - HEADER);
        let size = (footer as usize) & ((1 << 48) - 1) & !(GRANULE - 1);
        let pb = b.wrapping_sub(size);
        let ok = size >= MIN_BLOCK
            && pb > self.base
            && self.is_free_block(pb)
            && self.read(pb) == footer
            && self
                .tagger
                .decode(pb, footer)
                .is_some_and(|h| h.is_free() && h.size == size);
        if !ok {
            return Err(self.corrupted(b - HEADER, "free block footer was overwritten"));
        }
        self.check_links(pb, size)?;
        Ok((pb, Header { size, flags: FREE }))
    }

    /// The block at `n` (the neighbour after some block), validated against the start map,
    /// with its links checked if it is free; `None` at the end of the span.
    #[inline(always)]
    fn peek(&mut self, n: usize) -> Result<Option<Header>, Error> {
        let nh = self.peek_header(n)?;
        if let Some(h) = nh.filter(|h| h.is_free()) {
            self.check_links(n, h.size)?;
        }
        Ok(nh)
    }

    /// As [`peek`](Self::peek), without checking a free block's links: for callers that may
    /// not unlink it, and check the links themselves before they do (reading them costs a
    /// cache miss in each of the two blocks they point at).
    #[inline(always)]
    fn peek_header(&mut self, n: usize) -> Result<Option<Header>, Error> {
        if n >= self.last_slot() {
            return Ok(None);
        }
        let nh = self.header(n)?;
        let g = self.granule(n);
        // A free header needs a free start; an allocated-looking one may be live or cached.
        if !self.map.is_start(g) || (nh.is_free() && !self.map.is_free_start(g)) {
            return Err(self.corrupted(n, "block header disagrees with the start map"));
        }
        Ok(Some(nh))
    }

    // ---------------------------------------------------------------- free

    /// Frees the live block at `p`: small blocks go on their quick stack, others are merged
    /// with their free neighbours and binned.
    #[inline(always)]
    pub fn free(&mut self, p: NonNull<u8>) -> Result<Freed, Error> {
        if p.as_ptr() as usize == self.quick.lent() {
            return self.end_loan();
        }
        self.settle();
        let (addr, g) = self.live_granule(p)?;
        // A small block's extent is the distance to the next start in the map; its header
        // must agree (an overflow from the block before would have changed it).
        let window = self.map.starts_after(g);
        let b = addr - HEADER;
        // No start in the window: a block of more than 64 granules, or the last one. A start
        // right at `g + 1` (bit 0): no block is that short (MIN_BLOCK is two granules), so
        // the map is not what it should be; the slow path reports it.
        if window != 0 && window & 1 == 0 {
            let size = (window.trailing_zeros() as usize + 1) * GRANULE;
            let word = self.read(b);
            if !block::is_allocated_header(word, size) {
                return Err(self.corrupted(b, "block header was overwritten"));
            }
            if self.quick.push(Quick::list_of(size), b) {
                return Ok(self.record_cached_free(g, size));
            }
            return self.free_slow(b, block::raw_header(word));
        }
        let (b, h) = self.live_header(addr, g)?;
        // Blocks past the window's reach (64 granules) but small enough to cache.
        if h.size <= quick::MAX_SIZE && self.quick.push(Quick::list_of(h.size), b) {
            return Ok(self.record_cached_free(g, h.size));
        }
        self.free_slow(b, h)
    }

    /// Records the free of the live block at granule `g` (of `size` bytes) that was just
    /// pushed on its quick stack.
    #[inline(always)]
    fn record_cached_free(&mut self, g: usize, size: usize) -> Freed {
        self.map.set_live(g, false);
        let s = &mut self.counters;
        s.frees += 1;
        s.bytes_in_use -= size - HEADER;
        Freed {
            at_top: false,
            binned: false,
            size,
        }
    }

    /// Frees the lent block by ending the loan. Being lent vouches for the pointer (it is
    /// exactly what the last allocation handed out, not freed since); only the block's header,
    /// which the program could have overwritten meanwhile, is checked.
    #[inline(always)]
    fn end_loan(&mut self) -> Result<Freed, Error> {
        let (b, size) = (self.quick.lent() - HEADER, self.quick.lent_size());
        if !block::is_allocated_header(self.read(b), size) {
            return Err(self.corrupted(b, "block header was overwritten"));
        }
        self.quick.end_loan();
        self.loans_ended += 1;
        Ok(Freed {
            at_top: false,
            binned: false,
            size,
        })
    }

    /// Frees the validated live block `b` by merging it with its free neighbours.
    #[inline(never)]
    fn free_slow(&mut self, b: usize, h: Header) -> Result<Freed, Error> {
        let g = self.granule(b);
        let prev = if h.prev_free() {
            Some(self.free_prev(b)?)
        } else {
            None
        };
        let next = self.peek(b + h.size)?;
        // Everything this free touches is validated; from here on nothing can fail.
        self.map.set_live(g, false);
        let s = &mut self.counters;
        s.frees += 1;
        s.bytes_in_use -= h.size - HEADER;
        Ok(self.merge_and_bin(b, h, prev, next))
    }

    /// Merges the block at `b` (no longer live, validated, with its validated neighbours
    /// `prev` and `next`) with the free ones and puts the result on its bin.
    fn merge_and_bin(
        &mut self,
        b: usize,
        h: Header,
        prev: Option<(usize, Header)>,
        next: Option<Header>,
    ) -> Freed {
        let g = self.granule(b);
        let (mut start, mut size) = (b, h.size);
        // The merged block starts at `b` or at the free block before it, where a start is
        // recorded already: `b`'s start is removed or marked free, and no start is added.
        if let Some((pb, ph)) = prev {
            self.unlink(pb, ph.size);
            self.map.remove(g);
            start = pb;
            size += ph.size;
            self.counters.coalesces += 1;
        } else {
            self.map.set_live(g, false);
        }
        match next {
            Some(nh) if nh.is_free() => {
                let n = b + h.size;
                self.unlink(n, nh.size);
                let gn = self.granule(n);
                self.map.remove(gn);
                self.bury_metadata(n);
                size += nh.size;
                self.counters.coalesces += 1;
                // The block after `n` already has PREV_FREE set.
            }
            Some(nh) => {
                let n = b + h.size;
                self.write_header(n, nh.size, nh.flags | PREV_FREE);
            }
            None => {}
        }
        self.bin_free(start, size);
        Freed {
            at_top: start + size == self.last_slot(),
            binned: true,
            size,
        }
    }

    /// The header and links of a free block at `n` that was just merged into the block
    /// before it are now in the middle of a free block; above `clean_from` they would break
    /// its promise, so they are cleared there.
    #[inline]
    fn bury_metadata(&mut self, n: usize) {
        if n + 3 * HEADER > self.clean_from {
            for w in 0..3 {
                self.write(n + w * HEADER, 0);
            }
        }
    }

    /// Clears what may be dirty of the first `size` bytes of the block just allocated at `p`:
    /// everything below `clean_before` (the mark before this allocation), the first 16 bytes
    /// (free-list links) and the block's last 8 bytes (a footer), which is all a block taken
    /// from clean memory can hold.
    pub fn clear_for_calloc(&mut self, p: NonNull<u8>, size: usize, clean_before: usize) {
        self.settle();
        let addr = p.as_ptr() as usize;
        let usable = block::raw_header(self.read(addr - HEADER)).size - HEADER;
        let prefix = clean_before.saturating_sub(addr).max(2 * HEADER).min(size);
        // SAFETY: `p` is a live block of `usable >= size` bytes that the caller just allocated.
        unsafe { p.as_ptr().write_bytes(0, prefix) };
        let footer = usable - HEADER;
        if footer < size && footer >= prefix {
            // SAFETY: as above; `footer + 8 <= usable`, clipped to `size`.
            unsafe {
                p.as_ptr()
                    .add(footer)
                    .write_bytes(0, (size - footer).min(HEADER))
            };
        }
    }

    /// The current clean mark (see the field).
    #[inline]
    pub fn clean_mark(&self) -> usize {
        self.clean_from
    }

    // ---------------------------------------------------------------- resizing in place

    /// Resizes the live block at `p` without moving it, if it can: shrinking always can
    /// (the tail is freed), growing can when the next block is free and large enough.
    /// Returns whether the block now has at least `new_size` usable bytes.
    pub fn resize_in_place(&mut self, p: NonNull<u8>, new_size: usize) -> Result<bool, Error> {
        Ok(matches!(self.resize(p, new_size)?, Resize::Done))
    }

    /// As [`resize_in_place`](Self::resize_in_place), and when the block cannot grow, says
    /// whether it ends the span (alone or followed by the free last block), so that the owner
    /// can move the span's end instead of the block. One validation serves both questions.
    pub fn resize(&mut self, p: NonNull<u8>, new_size: usize) -> Result<Resize, Error> {
        let (b, h) = self.live_block(p)?;
        let n = b + h.size;
        // A free neighbour's links are checked only once it is certain to be taken.
        let next = self.peek_header(n)?;
        let next_free = next.filter(|nh| nh.is_free());
        let available = h.size + next_free.map_or(0, |nh| nh.size);
        let want = match block_size_for(new_size) {
            Some(want) if want <= available => want,
            _ => {
                return Ok(if b + available == self.last_slot() {
                    Resize::AtTop {
                        reach: available - HEADER,
                    }
                } else {
                    Resize::Blocked
                });
            }
        };
        if want == h.size || (want < h.size && h.size - want < MIN_BLOCK && next_free.is_none()) {
            return Ok(Resize::Done);
        }
        if let Some(nh) = next_free {
            self.check_links(n, nh.size)?;
        }
        let rest = available - want;
        // The block after everything we may take: its PREV_FREE flag changes when the tail
        // left free appears (shrinking next to an allocated block) or disappears (the free
        // neighbour taken whole). Growing into part of a free neighbour leaves it as it is
        // (still after a free block), so it is not read: a cache miss saved.
        let beyond = match next_free {
            Some(_) if rest < MIN_BLOCK => self.peek(b + available)?,
            Some(_) => None,
            None => next,
        };
        // Validated; now write.
        if let Some(nh) = next_free {
            self.unlink(n, nh.size);
            let gn = self.granule(n);
            self.map.remove(gn);
            self.bury_metadata(n);
            self.counters.coalesces += 1;
        }
        let prev_flag = h.flags & PREV_FREE;
        let block = if rest >= MIN_BLOCK {
            self.write_header(b, want, prev_flag);
            self.make_free(b + want, rest);
            if let Some(ah) = beyond {
                self.write_header(b + available, ah.size, ah.flags | PREV_FREE);
            }
            self.counters.splits += 1;
            want
        } else {
            self.write_header(b, available, prev_flag);
            if let Some(ah) = beyond {
                self.write_header(b + available, ah.size, ah.flags & !PREV_FREE);
            }
            available
        };
        self.clean_from = self.clean_from.max(b + block);
        let s = &mut self.counters;
        s.bytes_in_use = s.bytes_in_use + block - h.size;
        s.note_in_use();
        Ok(Resize::Done)
    }

    /// Grows the live block at `p` into the free block before it (and the free block after
    /// it, if any), moving its first `keep` bytes down. The last resort of `realloc` when no
    /// free block elsewhere is large enough: the merged space may be. Returns the new payload,
    /// or `None` if even that is too small (nothing changed).
    pub fn resize_backward(
        &mut self,
        p: NonNull<u8>,
        new_size: usize,
        keep: usize,
    ) -> Result<Option<NonNull<u8>>, Error> {
        let (b, h) = self.live_block(p)?;
        let Some(want) = block_size_for(new_size) else {
            return Ok(None);
        };
        if !h.prev_free() {
            return Ok(None);
        }
        let (pb, ph) = self.free_prev(b)?;
        let n = b + h.size;
        let next_free = self.peek(n)?.filter(|nh| nh.is_free());
        let total = ph.size + h.size + next_free.map_or(0, |nh| nh.size);
        if want > total || keep > h.size - HEADER {
            return Ok(None);
        }
        let beyond = self.peek(pb + total)?;
        // Validated; unlink the neighbours before their memory is overwritten by the move.
        self.unlink(pb, ph.size);
        let g = self.granule(b);
        self.map.remove(g);
        if let Some(nh) = next_free {
            self.unlink(n, nh.size);
            let gn = self.granule(n);
            self.map.remove(gn);
            self.bury_metadata(n);
            self.counters.coalesces += 1;
        }
        self.counters.coalesces += 1;
        // SAFETY: both ranges lie inside the merged block, which is ours now; they may
        // overlap, hence `copy`.
        unsafe {
            core::ptr::copy(
                self.base_ptr.with_addr(b + HEADER),
                self.base_ptr.with_addr(pb + HEADER),
                keep,
            )
        };
        // The block before `pb` is allocated (free blocks never touch).
        let rest = total - want;
        let block = if rest >= MIN_BLOCK {
            self.write_header(pb, want, 0);
            self.make_free(pb + want, rest);
            if let Some(ah) = beyond {
                self.write_header(pb + total, ah.size, ah.flags | PREV_FREE);
            }
            self.counters.splits += 1;
            want
        } else {
            self.write_header(pb, total, 0);
            if let Some(ah) = beyond {
                self.write_header(pb + total, ah.size, ah.flags & !PREV_FREE);
            }
            total
        };
        let gp = self.granule(pb);
        self.map.set_live(gp, true);
        self.clean_from = self.clean_from.max(pb + block);
        let s = &mut self.counters;
        s.bytes_in_use = s.bytes_in_use + block - h.size;
        s.note_in_use();
        // SAFETY: `pb + HEADER` is inside the span, whose base pointer is non-null.
        Ok(Some(unsafe {
            NonNull::new_unchecked(self.base_ptr.with_addr(pb + HEADER))
        }))
    }

    /// Whether the free memory ends up in larger pieces if the live block at `p`, resized to
    /// `new_size` bytes, moves to the free block `take_fit` chooses than if it is resized in
    /// place. Only asked when in place is possible (the block and a free block after it hold
    /// `new_size`); nothing is written.
    ///
    /// Staying keeps the free block before the block (if any) and leaves what the block and
    /// its free successor do not need; moving carves the chosen block and frees the whole
    /// neighbourhood, which merges into one piece. The choice whose free pieces have the larger
    /// sum of squared sizes wins: with the total free fixed, that is the one that keeps memory
    /// in fewer, larger pieces, which is what later large requests need. A block surrounded
    /// by allocated blocks moves when a smaller free block holds it, the rule of best fit with
    /// its own place counted as a candidate; a free block before it tips the balance towards
    /// moving, since leaving frees a piece that merges with it.
    pub fn better_moved(&mut self, p: NonNull<u8>, new_size: usize) -> Result<bool, Error> {
        let (b, h) = self.live_block(p)?;
        let Some(want) = block_size_for(new_size) else {
            return Ok(false);
        };
        let prev = if h.prev_free() {
            Some(self.free_prev(b)?)
        } else {
            None
        };
        let n = b + h.size;
        let next = self
            .peek(n)?
            .filter(|nh| nh.is_free())
            .map_or(0, |nh| nh.size);
        let before = prev.map_or(0, |(_, ph)| ph.size);
        let here = h.size + next;
        if want > here {
            return Ok(false);
        }
        let Some((e, eh)) = self.take_fit(want)? else {
            return Ok(false);
        };
        let sq = |x: usize| (x as u128) * (x as u128);
        // The free pieces each choice leaves, minus those both leave alike.
        let (stay, moved) = if prev.is_some_and(|(pb, _)| pb == e) {
            // Carved from the front of the block before: what it keeps merges with the rest.
            (sq(before) + sq(here - want), sq(before - want + here))
        } else if next != 0 && e == n {
            // Carved from the front of the block after, which staying would have grown into.
            (
                sq(before) + sq(here - want),
                sq(before + h.size) + sq(next - want),
            )
        } else {
            (
                sq(before) + sq(here - want) + sq(eh.size),
                sq(before + here) + sq(eh.size - want),
            )
        };
        Ok(moved > stay)
    }

    // ---------------------------------------------------------------- growing and shrinking the span

    /// The last block, if it is free: its address and size.
    pub fn free_top(&mut self) -> Result<Option<(usize, usize)>, Error> {
        self.settle();
        if self.end - self.base <= GRANULE {
            return Ok(None);
        }
        let g_max = (self.last_slot() - HEADER - self.base) / GRANULE;
        let Some(g) = self.map.start_at_or_before(g_max) else {
            return Ok(None);
        };
        if self.map.is_live(g) {
            return Ok(None);
        }
        let b = self.block_of_granule(g);
        let h = self.header(b)?;
        if !h.is_free() && b + h.size == self.last_slot() {
            return Ok(None); // a cached block: free, but not merged yet
        }
        if !h.is_free() || b + h.size != self.last_slot() {
            return Err(self.corrupted(b, "last block's header disagrees with the start map"));
        }
        Ok(Some((b, h.size)))
    }

    /// Adds `[end, new_end)` to the span as free memory, merged with a free last block.
    ///
    /// `new_end - base` must be a multiple of 16, at most the limit, and `new_end` above `end`.
    pub fn extend(&mut self, new_end: usize) -> Result<(), Error> {
        debug_assert!(new_end > self.end && new_end - self.base <= self.limit);
        debug_assert!((new_end - self.base) % GRANULE == 0);
        let added = new_end - self.end;
        let top = self.free_top()?;
        let (start, size) = match top {
            Some((b, s)) => {
                self.check_links(b, s)?;
                self.unlink(b, s);
                let g = self.granule(b);
                self.map.remove(g);
                // The old footer ends up inside the grown block.
                let footer = b + s - HEADER;
                if footer >= self.clean_from {
                    self.write(footer, 0);
                }
                (b, s + added)
            }
            None => (self.last_slot(), added),
        };
        if size < MIN_BLOCK {
            // Too small to be a block on its own yet: keep the span as it was.
            if let Some((b, s)) = top {
                self.make_free(b, s);
            }
            return Err(Error::layout(
                added,
                GRANULE,
                "span grows by less than one block",
            ));
        }
        self.end = new_end;
        self.make_free(start, size);
        Ok(())
    }

    /// Cuts the free last block so the span ends at `new_end` (or removes it if `new_end` is
    /// where it starts). Returns the bytes cut off. `new_end` must leave either nothing of the
    /// block or at least a minimum block.
    pub fn truncate_top(&mut self, new_end: usize) -> Result<usize, Error> {
        let Some((b, size)) = self.free_top()? else {
            return Ok(0);
        };
        let keep = new_end.saturating_sub(HEADER).saturating_sub(b);
        debug_assert!(new_end <= self.end && new_end >= b + HEADER);
        debug_assert!(keep == 0 || keep >= MIN_BLOCK);
        self.check_links(b, size)?;
        self.unlink(b, size);
        let g = self.granule(b);
        self.map.remove(g);
        let cut = self.end - new_end;
        self.end = new_end;
        // The owner releases the whole pages past `new_end`; the rest of its last page keeps
        // whatever it held, so only memory from the next page boundary on is known clean.
        if self.clean_from > new_end {
            let page = crate::page_size();
            self.clean_from = (new_end + page - 1) & !(page - 1);
        }
        if keep > 0 {
            self.make_free(b, keep);
        }
        Ok(cut)
    }

    // ---------------------------------------------------------------- walk and check

    /// The block at `b`, validated against the start map, and the address of the next one.
    /// `None` at the end of the span or if the block does not validate (the walk stops there).
    pub fn block_at(&mut self, b: usize) -> Option<(BlockInfo, usize)> {
        self.settle();
        self.settled_block_at(b)
    }

    /// [`block_at`](Self::block_at), once the loan is settled.
    fn settled_block_at(&self, b: usize) -> Option<(BlockInfo, usize)> {
        debug_assert_eq!(self.quick.lent(), 0);
        if b < self.base + HEADER || b >= self.last_slot() {
            return None;
        }
        let g = self.granule(b);
        let (start, live) = self.map.get(g);
        let h = self.tagger.decode(b, self.read(b))?;
        if !start || b + h.size > self.last_slot() || (h.is_free() && live) {
            return None;
        }
        let info = BlockInfo {
            addr: b + HEADER,
            offset: b - self.base,
            size: h.size,
            usable: h.size - HEADER,
            state: if live {
                BlockState::Allocated
            } else {
                BlockState::Free
            },
        };
        Some((info, b + h.size))
    }

    /// Address of the first block (where a walk starts).
    pub fn first_block(&self) -> usize {
        self.base + HEADER
    }

    /// Free blocks on bin `i`, in list order: `(address, size)`; stops at damage.
    pub fn bin_entries(&self, i: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        let mut b = self.bins.head(i);
        let mut steps = 0usize;
        core::iter::from_fn(move || {
            if b == 0 || !self.is_free_block(b) || steps > self.binned {
                return None;
            }
            let h = self.tagger.decode(b, self.read(b))?;
            let item = (b, h.size);
            steps += 1;
            b = self.next_link(b);
            Some(item)
        })
    }

    /// Verifies every invariant in the module docs by walking all blocks and all bins.
    pub fn check(&mut self) -> Result<(), Error> {
        self.settle();
        let bad = |addr, what| Err(Error::Corrupted { addr, what });
        let (mut b, last) = (self.first_block(), self.last_slot());
        let (mut blocks, mut live, mut in_use, mut free, mut free_bytes) = (0, 0, 0, 0, 0);
        let (mut cached, mut cached_bytes) = (0, 0);
        let mut prev_free = false;
        while b < last {
            let g = self.granule(b);
            let (start, is_live) = self.map.get(g);
            if !start {
                return bad(b, "a block starts where the start map has none");
            }
            let Some(h) = self.tagger.decode(b, self.read(b)) else {
                return bad(b, "block header was overwritten");
            };
            if b + h.size > last {
                return bad(b, "block runs past the end of the span");
            }
            if self.map.any_start_between(g, g + h.size / GRANULE) {
                return bad(b, "block size does not end on a block boundary");
            }
            if h.prev_free() != prev_free {
                return bad(b, "PREV_FREE flag disagrees with the previous block");
            }
            if h.is_free() && is_live {
                return bad(b, "block state disagrees with the start map");
            }
            if h.is_free() {
                if prev_free {
                    return bad(b, "two free blocks are adjacent");
                }
                if b + h.size != last && self.read(b + h.size - HEADER) != self.read(b) {
                    return bad(
                        b + h.size - HEADER,
                        "free block footer differs from its header",
                    );
                }
                free += 1;
                free_bytes += h.size;
            } else if is_live {
                live += 1;
                in_use += h.size - HEADER;
            } else {
                cached += 1;
                cached_bytes += h.size;
            }
            blocks += 1;
            prev_free = h.is_free();
            b += h.size;
        }
        if b != last {
            return bad(b, "blocks do not tile the span");
        }
        if self.map.counts(self.span() / GRANULE + 1) != (blocks, live) {
            return bad(self.base, "start map has bits for blocks that do not exist");
        }
        if !self.map.summary_agrees(self.span() / GRANULE + 1) {
            return bad(self.base, "start map summary disagrees with its groups");
        }
        let mut listed = 0;
        for i in 0..bins::NUM_BINS {
            if (self.bins.head(i) != 0) != self.bins.marked_nonempty(i) {
                return bad(
                    self.base,
                    "non-empty bin bitmap disagrees with the bin heads",
                );
            }
            let mut prev = 0;
            let mut n = self.bins.head(i);
            while n != 0 {
                if !self.is_free_block(n) || listed > free {
                    return bad(n, "free list points at something that is not a free block");
                }
                let Some(h) = self.tagger.decode(n, self.read(n)) else {
                    return bad(n, "free block header was overwritten");
                };
                if bin_of(h.size) != i || h.size < bin_floor(i) {
                    return bad(n, "free block is on the wrong bin");
                }
                if self.prev_link(n) != prev {
                    return bad(n + 2 * HEADER, "free list back link is wrong");
                }
                listed += 1;
                prev = n;
                n = self.next_link(n);
            }
        }
        if listed != free {
            return bad(self.base, "free blocks missing from the free lists");
        }
        let mut quick_listed = 0;
        for i in 0..quick::LISTS {
            for &n in self.quick.entries(i) {
                let ok = self.is_free_block(n)
                    && self
                        .tagger
                        .decode(n, self.read(n))
                        .is_some_and(|h| !h.is_free() && h.size == Quick::size_of(i));
                if !ok {
                    return bad(n, "quick stack holds something that is not a cached block");
                }
                quick_listed += 1;
            }
        }
        if quick_listed != cached || cached != self.quick.total() {
            return bad(self.base, "cached blocks missing from the quick lists");
        }
        let s = self.stats();
        if (s.live_blocks, s.bytes_in_use, s.free_blocks, s.free_bytes)
            != (live, in_use, free + cached, free_bytes + cached_bytes)
        {
            return bad(self.base, "block counters disagree with the blocks");
        }
        Ok(())
    }

    /// Collects the blocks and free lists for a [`Snapshot`](crate::Snapshot).
    pub fn snapshot(&mut self, title: &'static str, stats: Stats) -> crate::Snapshot {
        self.settle();
        let mut blocks = Vec::new();
        let mut b = self.first_block();
        while let Some((info, next)) = self.settled_block_at(b) {
            blocks.push(info);
            b = next;
        }
        let damaged_at = (b != self.last_slot()).then(|| b - self.base);
        let free_lists = (0..bins::NUM_BINS)
            .filter(|&i| self.bins.head(i) != 0)
            .map(|i| crate::snapshot::FreeList {
                bin: i,
                min_size: bin_floor(i),
                blocks: self
                    .bin_entries(i)
                    .map(|(b, size)| (b - self.base, size))
                    .collect(),
            })
            .collect();
        let quick_lists = (0..quick::LISTS)
            .filter(|&i| !self.quick.entries(i).is_empty())
            .map(|i| crate::snapshot::FreeList {
                bin: i,
                min_size: Quick::size_of(i),
                blocks: self
                    .quick
                    .entries(i)
                    .iter()
                    .rev()
                    .map(|&b| (b - self.base, Quick::size_of(i)))
                    .collect(),
            })
            .collect();
        crate::Snapshot {
            title,
            stats,
            blocks,
            free_lists,
            quick_lists,
            damaged_at,
        }
    }

    /// Usable bytes of the largest free block (what the largest request served now could be).
    pub fn largest_free(&self) -> usize {
        let mut best = 0;
        for i in (0..bins::NUM_BINS).rev() {
            if self.bins.head(i) != 0 {
                for (_, size) in self.bin_entries(i) {
                    best = best.max(size - HEADER);
                }
                break;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests;
