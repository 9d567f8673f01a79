//! The block engine: boundary-tagged blocks over one contiguous span, segregated free lists,
//! splitting, coalescing, in-place resizing and a full integrity check.
//!
//! It is written once and configured twice: the [`Arena`](crate::Arena) runs it over one fixed
//! span, the [`Heap`](crate::Heap) over a span whose end follows a program break
//! ([`Engine::grow_span`], [`Engine::shrink_span`]). The engine never allocates, never maps
//! memory and never calls the OS; its owner hands it the span and the memory for its start
//! map (the memory-source layer maps both). The integrity check and the walk are in the cold
//! module [`check`].
//!
//! The span `[base, end)` is tiled by blocks from `base + 8` to `end - 8`, so every payload is
//! 16-byte aligned and `end - 8` is where the header of a block appended by `grow_span` goes. An
//! empty span has `end == base + 16`.
//!
//! Invariants (checked in full by [`Engine::check`]):
//! 1. Blocks tile `[base + 8, end - 8)` exactly; each header decodes (its tag matches), except
//!    a quarantined block's, which nothing reads.
//! 2. The start map has a `starts` bit at each block's payload granule and nowhere else, and
//!    one state per start: `live` (allocated), `free` (binned), `quarantined`, or none
//!    (cached). A header's `FREE` flag is set exactly for binned blocks. Its summary
//!    marks exactly the groups of 64 granules that hold a start ([`starts`]).
//! 3. No two binned free blocks are adjacent (freeing coalesces with both neighbours). Small
//!    freed blocks may instead wait, uncoalesced, on a quick stack ([`quick`]); they count as
//!    free for misuse detection and as allocated for their neighbours.
//! 4. Only the map says whether a neighbour is free: free blocks have no footer and headers
//!    no flag for the block before, so nothing the program can overwrite decides a merge.
//! 5. Every binned block is on the list of its bin exactly once (see [`bins`]); a bin's head
//!    is always a binned block of that bin by the map.
//! 6. The counters in `stats` (live blocks, bytes in use, free blocks, free bytes, quarantined
//!    blocks and bytes) agree with the walk.
//!
//! Misuse and damage are reported, never followed: a pointer handed back is judged by the start
//! map alone before its header is read; a free block's size is used only once the map confirms
//! it, and a free-list link is followed only to a block the map says is binned (the link rule
//! in `check_links`). Each operation validates everything it will touch first and writes only
//! after all checks passed. Damage found in free memory is *contained*
//! (`Engine::quarantine_binned`): the damaged words are set aside for good as a quarantined
//! block, the rest of the free block and the rest of its bin are rebuilt from the map, and the
//! operation that found it returns [`Error::Corrupted`]; every later request is served as if
//! the quarantined piece were allocated.

pub(crate) mod addr;
pub(crate) mod bins;
pub(crate) mod block;
mod check;
pub(crate) mod quick;
pub(crate) mod starts;

use core::ptr::NonNull;

use crate::{Error, Stats};
use addr::{BlockAddr, Granule, PayloadAddr};
use bins::{Bins, bin_is_exact, bin_of};
use block::{
    FREE, FREE_WORDS, GRANULE, HEADER, Header, MIN_BLOCK, NEXT_WORD, PREV_WORD, Tagger,
    block_size_for, small_block_size,
};
use quick::Quick;
use starts::StartMap;

pub(crate) use block::block_size_for as block_size;

// The free fast path (`Engine::free`) relies on blocks spanning at least two granules.
static_assertions::const_assert_eq!(MIN_BLOCK / GRANULE, 2);
pub(crate) use starts::{groups_bytes, map_bytes};

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
    /// `reach` usable bytes without growing the span, and any size after `grow_span`.
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
    /// Whether the block was merged and binned (not cached on a quick stack).
    pub binned: bool,
    /// Size of the free block after merging.
    pub size: usize,
}

/// A live block, as [`Engine::live`] judged it: the pointer handed back is the payload of an
/// allocated block of this engine, and the block's header agrees with the start map on its
/// size. Only `Engine::live` makes one (the fields are private to the engine).
///
/// The contract: a `Live` stands for its block, on the engine that made it, until that block
/// is freed or resized: by [`Engine::free_live`], by [`Engine::resize_live`] returning
/// [`Resize::Done`], by [`Engine::resize_backward_live`] returning `Some`, or by the
/// pointer-taking forms of those. Nothing else changes a live block (allocations carve free
/// blocks, frees merge only with free neighbours, flushes, span changes and containment touch
/// only free memory), so a token survives every other call, allocations included: a
/// reallocation judges the pointer once, tries in place, allocates elsewhere, copies and frees
/// on the same token. Until then it may be handed to the `_live` methods (the three above and
/// [`Engine::moving_packs_better_live`]) and read ([`Live::usable`], [`Live::ptr`]) as often as
/// needed: none of them judges the pointer again. The methods that take one are `unsafe`
/// because a stale token (or one of another engine) would make them write through a block
/// that is no longer what the check found; debug builds assert that it still is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Live {
    /// The payload, with the provenance of the engine's span (the owner copies through it).
    ptr: NonNull<u8>,
    /// The block's size, as confirmed by the start map.
    size: usize,
}

impl Live {
    /// The payload pointer the check was asked about.
    #[inline(always)]
    pub fn ptr(self) -> NonNull<u8> {
        self.ptr
    }

    /// Usable bytes of the block (its size less the header).
    #[inline(always)]
    pub fn usable(self) -> usize {
        self.size - HEADER
    }

    /// The block's payload address.
    #[inline(always)]
    fn payload(self) -> PayloadAddr {
        PayloadAddr::of(self.ptr)
    }

    /// The block's address.
    #[inline(always)]
    fn block(self) -> BlockAddr {
        self.payload().block()
    }
}

/// A set of bins, for rebuilding the lists that damage touched.
#[derive(Clone, Copy, Default)]
struct Dirty([u64; bins::NUM_BINS.div_ceil(64)]);

impl Dirty {
    fn add(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn has(&self, i: usize) -> bool {
        self.0[i / 64] >> (i % 64) & 1 != 0
    }
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
    /// Quarantined blocks and their bytes: damaged free memory set aside for good.
    quarantined: usize,
    quarantined_bytes: usize,
    /// Whether `take_fit` looks further for the smallest fitting block.
    best_fit: bool,
    /// Every byte at or above this address is zero, except the headers and links of free
    /// blocks (the 8 bytes before and the first 16 payload bytes a block would have), which
    /// `calloc` always clears. Memory fresh from the OS starts out zero; this mark rises as blocks are
    /// handed out, so `calloc` only writes what may be dirty.
    clean_from: usize,
    /// Counters kept on the hot paths: allocations, frees, bytes in use and its peak, splits,
    /// coalesces, misuses (and the owner's: failed requests, reallocations). The block and
    /// byte counts that follow from these are derived in [`Engine::stats`].
    pub counters: Stats,
}

impl Engine {
    /// An engine over an empty span at `base`; `grow_span` adds memory to it.
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
            quarantined: 0,
            quarantined_bytes: 0,
            best_fit: false,
            clean_from: addr,
            counters: Stats::default(),
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
        s.live_blocks = (s.allocations - s.frees) as usize;
        s.free_blocks = self.binned + self.quick.total();
        s.quarantined_blocks = self.quarantined;
        s.quarantined_bytes = self.quarantined_bytes;
        s.free_bytes = self.span()
            - GRANULE
            - s.bytes_in_use
            - HEADER * s.live_blocks
            - self.quarantined_bytes;
        s.managed_bytes = self.span();
        s
    }

    /// Bytes handed out and not freed (usable bytes of live blocks).
    #[inline(always)]
    pub fn bytes_in_use(&self) -> usize {
        self.counters.bytes_in_use
    }

    /// Marks the cached block `b` of `size` bytes, just taken off its stack, live and counts
    /// it (all but the peak).
    #[inline(always)]
    fn record_cached_allocated(&mut self, b: BlockAddr, size: usize) {
        let g = self.granule(b);
        self.map.mark_cached_live(g);
        let s = &mut self.counters;
        s.allocations += 1;
        s.bytes_in_use += size - HEADER;
    }

    /// First address of the span.
    #[inline]
    pub fn base(&self) -> usize {
        self.base
    }

    /// Whether `addr` lies in the span's current extent (any kind of address, as a number).
    #[inline]
    pub fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base) < self.end - self.base
    }

    // ---------------------------------------------------------------- raw words

    #[inline(always)]
    fn ptr(&self, addr: usize) -> *mut u64 {
        debug_assert!(addr >= self.base && addr + HEADER <= self.base + self.limit);
        self.base_ptr.with_addr(addr).cast()
    }

    /// The word at `addr` (a block's header or link word).
    #[inline(always)]
    fn read(&self, addr: usize) -> u64 {
        // SAFETY: every caller passes an 8-aligned address inside the span (a header or link
        // word of a block the start map vouches for), which is engine-owned memory.
        unsafe { self.ptr(addr).read() }
    }

    #[inline(always)]
    fn write(&mut self, addr: usize, word: u64) {
        // SAFETY: as in `read`; `&mut self` makes the engine the only writer.
        unsafe { self.ptr(addr).write(word) }
    }

    /// The header word of the block at `b`, undecoded.
    #[inline(always)]
    fn header_word(&self, b: BlockAddr) -> u64 {
        self.read(b.get())
    }

    /// The payload pointer of the block at `b`, with the span's provenance.
    #[inline(always)]
    fn payload_ptr(&self, b: BlockAddr) -> NonNull<u8> {
        // SAFETY: a block's payload is inside the span, whose base pointer is non-null.
        unsafe { NonNull::new_unchecked(self.base_ptr.with_addr(b.payload().get())) }
    }

    /// The granule the block at `b` is recorded at.
    #[inline(always)]
    fn granule(&self, b: BlockAddr) -> Granule {
        b.granule(self.base)
    }

    /// The block recorded at granule `g`.
    #[inline(always)]
    fn block_of_granule(&self, g: Granule) -> BlockAddr {
        g.block(self.base)
    }

    /// Where a block appended by `grow_span` would start: one past the last block.
    #[inline(always)]
    fn last_slot(&self) -> BlockAddr {
        BlockAddr::slot_at_end(self.end)
    }

    /// Whether the start map confirms that the block whose payload granule is `g` is exactly
    /// `size` bytes long: the next block starts right after it (or the span ends there) and
    /// no block starts inside it.
    #[inline(always)]
    fn map_confirms(&self, g: Granule, size: usize) -> bool {
        let k = Granule::count(size);
        if self.block_of_granule(g + k) == self.last_slot() {
            // No start after `g` means none inside the block: O(1) for the heap's top block,
            // which may span gigabytes.
            return self.map.last_start() == Some(g);
        }
        // Up to 64 KiB the range itself is read (at most four words); beyond, the block's end
        // must be the next start, found in a few words however large the block is.
        if k <= 64 * 64 {
            return self.map.spans_exactly(g, k, false);
        }
        self.map.next_start_after(g) == Some(g + k)
    }

    #[cold]
    #[inline(never)]
    fn corrupted(&mut self, addr: usize, what: &'static str) -> Error {
        self.counters.misuses_caught += 1;
        Error::Corrupted { addr, what }
    }

    /// The extent of the block recorded at granule `g`, by the start map alone: the distance
    /// to the next start, or to the end of the span for the last block.
    fn extent(&self, g: Granule) -> usize {
        match self.map.next_start_after(g) {
            Some(n) => Granule::bytes(n - g),
            None => self.last_slot() - self.block_of_granule(g),
        }
    }

    /// The size in the header of the binned block `b` if the header decodes as a free block
    /// whose size the start map confirms; `None` if it is damaged.
    #[inline(always)]
    fn binned_size(&self, b: BlockAddr) -> Option<usize> {
        let h = self.tagger.decode(b, self.header_word(b))?;
        let ok = h.is_free()
            && h.size <= self.last_slot() - b
            && self.map_confirms(self.granule(b), h.size);
        ok.then_some(h.size)
    }

    #[inline(always)]
    fn write_allocated_header(&mut self, b: BlockAddr, size: usize) {
        let word = self.tagger.encode(b, size, 0);
        self.write(b.get(), word);
    }

    // ---------------------------------------------------------------- free lists

    #[inline(always)]
    fn next_link(&self, b: BlockAddr) -> Option<BlockAddr> {
        BlockAddr::from_link(self.read(b.word(NEXT_WORD)))
    }

    #[inline(always)]
    fn prev_link(&self, b: BlockAddr) -> Option<BlockAddr> {
        BlockAddr::from_link(self.read(b.word(PREV_WORD)))
    }

    #[inline(always)]
    fn set_next_link(&mut self, b: BlockAddr, next: Option<BlockAddr>) {
        self.write(b.word(NEXT_WORD), BlockAddr::to_link(next));
    }

    #[inline(always)]
    fn set_prev_link(&mut self, b: BlockAddr, prev: Option<BlockAddr>) {
        self.write(b.word(PREV_WORD), BlockAddr::to_link(prev));
    }

    /// Whether `b`, read from a link, is the address of a binned free block, by the start map
    /// alone.
    #[inline(always)]
    fn is_binned(&self, b: BlockAddr) -> bool {
        b.get() > self.base
            && b < self.last_slot()
            && BlockAddr::is_aligned(b.get(), self.base)
            && self.map.is_binned(self.granule(b))
    }

    /// Writes a free block's header, puts it on its bin and in the start map. No allocated
    /// block may start at `b` (it is new, or a free block cut shorter), and the blocks on
    /// either side must not be binned (free neighbours are always merged first).
    #[inline(always)]
    fn make_free(&mut self, b: BlockAddr, size: usize) {
        self.bin_free(b, size);
        let g = self.granule(b);
        self.map.add_free(g);
    }

    /// `make_free` without the start map: the caller records the block there.
    #[inline(always)]
    fn bin_free(&mut self, b: BlockAddr, size: usize) {
        let word = self.tagger.encode(b, size, FREE);
        self.write(b.get(), word);
        self.push_on_bin(b, size);
    }

    /// Links the free block `b` of `size` bytes in at the head of its bin.
    #[inline(always)]
    fn push_on_bin(&mut self, b: BlockAddr, size: usize) {
        let i = bin_of(size);
        // A head is always a binned block of this bin (invariant 5), so this writes only into
        // free memory.
        let head = self.bins.head(i);
        self.set_next_link(b, head);
        self.set_prev_link(b, None);
        if let Some(head) = head {
            self.set_prev_link(head, Some(b));
        }
        self.bins.set_head(i, Some(b));
        self.binned += 1;
    }

    /// Checks that the binned block `b` (of `size` bytes, confirmed by the map) sits correctly
    /// in its list, so that unlinking it writes only into binned blocks and keeps every head a
    /// block of its own bin. The link rule:
    /// - `prev` is none exactly when `b` is its bin's head; otherwise it names a binned block
    ///   (not `b`) whose `next` is `b`;
    /// - `next` is none, or names a binned block (not `b`) whose `prev` is `b` and which
    ///   belongs to the same bin by the map (it may become the head).
    ///
    /// A link into a live, cached or quarantined block never passes: the map has no
    /// `free` bit there.
    #[inline(always)]
    fn check_links(&mut self, b: BlockAddr, size: usize) -> Result<(), Error> {
        let i = bin_of(size);
        let (next, prev) = (self.next_link(b), self.prev_link(b));
        let is_head = self.bins.head(i) == Some(b);
        let prev_ok = match prev {
            None => is_head,
            Some(prev) => {
                !is_head && prev != b && self.is_binned(prev) && self.next_link(prev) == Some(b)
            }
        };
        // A `match`, not `is_none_or`: a closure here is left out of line on the merge path.
        let next_ok = match next {
            None => true,
            Some(next) => {
                next != b
                    && self.is_binned(next)
                    && self.prev_link(next) == Some(b)
                    && self.of_bin(next, i)
            }
        };
        if prev_ok && next_ok {
            Ok(())
        } else {
            Err(self.damaged(i, b, b.word(NEXT_WORD), "free-list link was overwritten"))
        }
    }

    /// Whether the binned block `n` belongs on bin `i` by the start map (its header's size is
    /// the one the map confirms).
    #[inline(always)]
    fn of_bin(&self, n: BlockAddr, i: usize) -> bool {
        let size = block::raw_header(self.header_word(n)).size;
        size >= MIN_BLOCK
            && size <= self.last_slot() - n
            && bin_of(size) == i
            && self.map_confirms(self.granule(n), size)
    }

    /// Takes the free block `b` off its list. Its links must have passed `check_links`.
    #[inline(always)]
    fn unlink(&mut self, b: BlockAddr, size: usize) {
        let (next, prev) = (self.next_link(b), self.prev_link(b));
        match prev {
            None => self.bins.set_head(bin_of(size), next),
            Some(prev) => self.set_next_link(prev, next),
        }
        if let Some(next) = next {
            self.set_prev_link(next, prev);
        }
        self.binned -= 1;
    }

    /// Validates the free block at `b` found on bin `bin` as one to take: map, header, size
    /// confirmed by the map, links.
    #[inline(always)]
    fn checked_free(&mut self, b: BlockAddr, bin: usize) -> Result<Header, Error> {
        let h = self.listed_free(b, bin)?;
        self.confirm_size(b, h.size, bin)?;
        self.check_links(b, h.size)?;
        Ok(h)
    }

    /// Confirms by the map that the listed block `b` is `size` bytes long.
    #[inline(always)]
    fn confirm_size(&mut self, b: BlockAddr, size: usize, bin: usize) -> Result<(), Error> {
        if self.map_confirms(self.granule(b), size) {
            Ok(())
        } else {
            Err(self.damaged(
                bin,
                b,
                b.get(),
                "free block size disagrees with the start map",
            ))
        }
    }

    /// Validates the binned block at `b` found on bin `bin` by its header, without its size
    /// or links: enough to compare its size with a request and follow its `next` link to the
    /// next candidate (which is validated the same way before it is read). The block that is
    /// finally taken off the list gets its size confirmed and its links checked too.
    #[inline(always)]
    fn listed_free(&mut self, b: BlockAddr, bin: usize) -> Result<Header, Error> {
        debug_assert!(self.is_binned(b), "a candidate is always a binned block");
        match self.tagger.decode(b, self.header_word(b)) {
            Some(h) if h.is_free() && bin_of(h.size) == bin && h.size <= self.last_slot() - b => {
                Ok(h)
            }
            _ => Err(self.damaged(bin, b, b.get(), "free block header was overwritten")),
        }
    }

    /// The block `next` links to from the binned block `from` on bin `bin`, checked to be
    /// binned before anything in it is read.
    #[inline(always)]
    fn follow(&mut self, from: BlockAddr, bin: usize) -> Result<Option<BlockAddr>, Error> {
        let n = self.next_link(from);
        if n.is_none_or(|n| self.is_binned(n)) {
            Ok(n)
        } else {
            let link = from.word(NEXT_WORD);
            Err(self.damaged(bin, from, link, "free-list link was overwritten"))
        }
    }

    // ---------------------------------------------------------------- containment

    /// Reports damage found at `addr` while working on the binned block `b` of bin `bin`,
    /// after containing it: `b` (if it is still binned) is quarantined and `bin` rebuilt from
    /// the map, so no later request meets the damage again.
    #[cold]
    #[inline(never)]
    fn damaged(&mut self, bin: usize, b: BlockAddr, addr: usize, what: &'static str) -> Error {
        let mut dirty = Dirty::default();
        dirty.add(bin);
        if self.is_binned(b) {
            let g = self.granule(b);
            let size = self.extent(g);
            dirty.add(bin_of(size));
            self.quarantine_piece(b, size, &mut dirty);
        }
        self.rebuild_bins(&dirty);
        self.corrupted(addr, what)
    }

    /// Damage found in the binned block `b` outside of any list walk (a neighbour, the top
    /// block): contained as by `damaged`, in the bin the map puts it in.
    #[cold]
    #[inline(never)]
    fn damaged_block(&mut self, b: BlockAddr, what: &'static str) -> Error {
        let bin = bin_of(self.extent(self.granule(b)));
        self.damaged(bin, b, b.get(), what)
    }

    /// Quarantines the front of the binned block `b` (`size` bytes by the map), where every
    /// word the engine keeps in a free block lies (header and links): a block of `MIN_BLOCK`
    /// bytes, or all of it if the rest could not be a block. The rest becomes a fresh free
    /// block, linked now unless its bin is `dirty` (about to be rebuilt).
    #[cold]
    fn quarantine_piece(&mut self, b: BlockAddr, size: usize, dirty: &mut Dirty) {
        let g = self.granule(b);
        let piece = if size >= 2 * MIN_BLOCK {
            MIN_BLOCK
        } else {
            size
        };
        self.map.mark_quarantined(g);
        self.quarantined += 1;
        self.quarantined_bytes += piece;
        if piece < size {
            let rest = b + piece;
            self.map.add_free(g + Granule::count(piece));
            let word = self.tagger.encode(rest, size - piece, FREE);
            self.write(rest.get(), word);
            if !dirty.has(bin_of(size - piece)) {
                self.push_on_bin(rest, size - piece);
            }
        }
    }

    /// Rebuilds the lists of the `dirty` bins from the start map: every binned block of those
    /// bins whose header agrees with the map is linked in afresh; one whose header does not is
    /// quarantined. The walk also recounts the binned blocks.
    #[cold]
    #[inline(never)]
    fn rebuild_bins(&mut self, dirty: &Dirty) {
        let mut dirty = *dirty;
        for i in 0..bins::NUM_BINS {
            if dirty.has(i) {
                self.bins.set_head(i, None);
            }
        }
        let mut binned = 0;
        let mut g = self.granule(BlockAddr::first_of(self.base));
        let last = self.last_slot();
        while self.block_of_granule(g) < last {
            if self.map.is_binned(g) {
                let b = self.block_of_granule(g);
                let size = self.extent(g);
                let i = bin_of(size);
                if dirty.has(i) {
                    match self.tagger.decode(b, self.header_word(b)) {
                        Some(h) if h.is_free() && h.size == size => {
                            self.push_on_bin(b, size);
                            binned += 1;
                        }
                        _ => {
                            self.counters.misuses_caught += 1;
                            // The rest, if any, is the next start: visited next, and linked
                            // there if its bin is being rebuilt.
                            self.quarantine_piece(b, size, &mut dirty);
                        }
                    }
                } else {
                    binned += 1;
                }
            }
            match self.map.next_start_after(g) {
                Some(n) => g = n,
                None => break,
            }
        }
        self.binned = binned;
    }
    // ---------------------------------------------------------------- allocation

    /// Finds a free block of at least `size` bytes (validated, still on its list).
    #[inline(always)]
    fn take_fit(&mut self, size: usize) -> Result<Option<(BlockAddr, Header)>, Error> {
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
        let Some(b) = self.bins.head(j) else {
            debug_assert!(false, "a bin marked non-empty has a head");
            return Ok(None);
        };
        let h = self.checked_free(b, j)?;
        Ok(Some((b, h)))
    }

    /// Chooses how far `take_fit` looks: the smallest fitting block among the first
    /// [`BEST_FIT_SCAN`] of the request's bin and of the next non-empty one (`true`), or the
    /// smallest among the first [`BIN_SCAN`] of the request's bin, else the head of the next
    /// non-empty bin (`false`, the default).
    pub fn set_best_fit(&mut self, best: bool) {
        self.best_fit = best;
    }

    /// Turns deferred coalescing on or off. Off, every free merges at once, and the blocks
    /// cached so far are merged now: packing before speed, for a heap near its limit.
    pub fn set_caching(&mut self, on: bool) -> Result<(), Error> {
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
    fn best_in_bin(&mut self, i: usize, size: usize) -> Result<Option<(BlockAddr, Header)>, Error> {
        let mut next = self.bins.head(i);
        let mut best: Option<(BlockAddr, Header)> = None;
        let scan = if self.best_fit {
            BEST_FIT_SCAN
        } else {
            BIN_SCAN
        };
        for _ in 0..scan {
            let Some(b) = next else {
                break;
            };
            let h = self.listed_free(b, i)?;
            if h.size >= size && best.is_none_or(|(_, bh)| h.size < bh.size) {
                best = Some((b, h));
                if h.size == size {
                    break;
                }
            }
            next = self.follow(b, i)?;
        }
        if let Some((b, h)) = best {
            self.confirm_size(b, h.size, i)?;
            self.check_links(b, h.size)?;
        }
        Ok(best)
    }

    /// Turns the free block `b` (validated by `take_fit`, still linked) into an allocated block
    /// of `size` bytes, returning the tail to the free lists when it is large enough to be a
    /// block. Nothing outside `b` is written: no neighbour keeps a flag about it.
    #[inline(always)]
    fn carve(&mut self, b: BlockAddr, h: Header, size: usize) -> NonNull<u8> {
        self.unlink(b, h.size);
        let rest = h.size - size;
        let block = if rest >= MIN_BLOCK {
            self.write_allocated_header(b, size);
            self.make_free(b + size, rest);
            self.counters.splits += 1;
            size
        } else {
            self.write_allocated_header(b, h.size);
            h.size
        };
        let g = self.granule(b);
        self.map.mark_live(g);
        self.clean_from = self.clean_from.max((b + block).get());
        let s = &mut self.counters;
        s.allocations += 1;
        s.bytes_in_use += block - HEADER;
        s.note_in_use();
        self.payload_ptr(b)
    }

    /// Allocates `size` usable bytes aligned to `align` (a power of two, at most
    /// [`MAX_ALIGN`]). `Ok(None)` means no free block fits: the owner may add memory and retry.
    #[inline(always)]
    pub fn alloc(&mut self, size: usize, align: usize) -> Result<Option<NonNull<u8>>, Error> {
        match self.alloc_cached(size, align) {
            Some(p) => Ok(Some(p)),
            None => self.alloc_missed(size, align),
        }
    }

    /// The hot path of `alloc`: the top of the request's quick stack, if it has one and its
    /// header is what the stack says. Anything else, a damaged header included, is left to
    /// `alloc_missed`, which takes the same block again and reports the damage; this path has
    /// no error to carry, which keeps it short.
    #[inline(always)]
    pub fn alloc_cached(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        if align > GRANULE || size > quick::MAX_SIZE - HEADER {
            return None;
        }
        let bsize = small_block_size(size);
        let i = Quick::list_of(bsize);
        let b = self.quick.top(i)?;
        if !block::is_allocated_header(self.header_word(b), bsize) {
            return None;
        }
        self.quick.drop_top(i);
        self.record_cached_allocated(b, bsize);
        self.counters.note_in_use();
        Some(self.payload_ptr(b))
    }

    /// Marks the cached block `b` of `size` bytes, just popped, allocated. The quick stacks
    /// are out of the program's reach; only the header, which a dangling write could have
    /// changed, is checked.
    #[inline(always)]
    fn hand_out_cached(&mut self, b: BlockAddr, size: usize) -> Result<NonNull<u8>, Error> {
        if !block::is_allocated_header(self.header_word(b), size) {
            self.quarantine_cached(b, size);
            return Err(self.corrupted(b.get(), "block header was overwritten"));
        }
        self.record_cached_allocated(b, size);
        self.counters.note_in_use();
        Ok(self.payload_ptr(b))
    }

    /// Serves a block of `bsize` bytes from the smallest larger cached block, when its own
    /// stack and its exact bin are empty: the front is handed out and the rest stays cached,
    /// on the stack of its size. Memory that circulates among the cached sizes is not carved
    /// from merged free blocks, which stay whole for the requests only they can serve, and
    /// the flush that comes when they run out comes later. A rest too small to be a block
    /// goes with the request. `Ok(None)` when no larger block is cached, or the rest's stack is
    /// full (nothing changed then).
    ///
    /// Only the taken block's header is read, as for any cached block handed out; both
    /// pieces are cached blocks by the map (a start and no state bit), so nothing else is
    /// touched.
    #[inline(always)]
    fn take_larger_cached(&mut self, bsize: usize) -> Result<Option<NonNull<u8>>, Error> {
        let Some(j) = self.quick.first_nonempty_above(Quick::list_of(bsize)) else {
            return Ok(None);
        };
        let big = Quick::size_of(j);
        let rest = big - bsize;
        if rest >= MIN_BLOCK && !self.quick.has_room(Quick::list_of(rest)) {
            return Ok(None);
        }
        let Some(b) = self.quick.pop(j) else {
            return Ok(None);
        };
        if rest < MIN_BLOCK {
            return self.hand_out_cached(b, big).map(Some);
        }
        if !block::is_allocated_header(self.header_word(b), big) {
            self.quarantine_cached(b, big);
            return Err(self.corrupted(b.get(), "block header was overwritten"));
        }
        // Validated; now write. The rest's header lies inside the block just taken.
        let n = b + bsize;
        self.write_allocated_header(b, bsize);
        self.write_allocated_header(n, rest);
        let gn = self.granule(n);
        self.map.add_cached(gn);
        let pushed = self.quick.push(Quick::list_of(rest), n);
        debug_assert!(pushed, "the rest's stack had room");
        self.counters.splits += 1;
        self.record_cached_allocated(b, bsize);
        self.counters.note_in_use();
        Ok(Some(self.payload_ptr(b)))
    }

    /// Quarantines the cached block `b` of `size` bytes, off its stack already: its header is
    /// damaged, and the stack and the map (both out of band) still say what it is.
    #[cold]
    fn quarantine_cached(&mut self, b: BlockAddr, size: usize) {
        self.map.mark_quarantined(self.granule(b));
        self.quarantined += 1;
        self.quarantined_bytes += size;
    }

    /// Allocation after the hot path found nothing: what the quick stacks still offer (a
    /// damaged top to report, a larger cached block to split), then the bins. The stacks'
    /// part comes first and is small, so that the common miss does not pay for the frame of
    /// the bin search.
    ///
    /// An owner that calls [`alloc_cached`](Self::alloc_cached) itself calls this after its
    /// `None`: together they are `alloc`. (It is correct after any call.)
    #[inline(never)]
    pub fn alloc_missed(
        &mut self,
        size: usize,
        align: usize,
    ) -> Result<Option<NonNull<u8>>, Error> {
        if align <= GRANULE && size <= quick::MAX_SIZE - HEADER {
            let bsize = small_block_size(size);
            // The hot path leaves a cached block whose header is damaged on its stack: taken
            // here, it is quarantined and the damage reported.
            if let Some(b) = self.quick.pop(Quick::list_of(bsize)) {
                return self.hand_out_cached(b, bsize).map(Some);
            }
            if self.bins.head(bin_of(bsize)).is_none() {
                if let Some(p) = self.take_larger_cached(bsize)? {
                    return Ok(Some(p));
                }
            }
        }
        self.alloc_from_bins(size, align)
    }

    /// Allocation from the bins (an over-aligned request first tries a cached block that
    /// happens to be aligned enough); the cached blocks are merged and the bins tried again
    /// before the engine gives up.
    #[inline(never)]
    fn alloc_from_bins(&mut self, size: usize, align: usize) -> Result<Option<NonNull<u8>>, Error> {
        let Some(bsize) = block_size_for(size) else {
            return Err(Error::layout(size, align, "size is larger than any block"));
        };
        if align > GRANULE && bsize <= quick::MAX_SIZE {
            // A cached block that happens to be aligned enough saves a carve and the lead
            // block an aligned carve leaves behind (half of all blocks are 32-aligned).
            if let Some(b) = self.quick.pop_aligned(Quick::list_of(bsize), align) {
                return self.hand_out_cached(b, bsize).map(Some);
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
        Ok(Some(self.carve(b, h, bsize)))
    }

    /// Allocates `size` usable bytes aligned to `align`, a power of two that may exceed
    /// [`MAX_ALIGN`]: the heap carves its small-object pages, 64 KiB blocks on 64 KiB
    /// boundaries, this way. The lead block the alignment cuts off stays free for other
    /// requests. `Ok(None)` means no free block fits, after merging the cached ones.
    pub fn alloc_over_aligned(
        &mut self,
        size: usize,
        align: usize,
    ) -> Result<Option<NonNull<u8>>, Error> {
        let Some(bsize) = block_size_for(size) else {
            return Err(Error::layout(size, align, "size is larger than any block"));
        };
        let first = self.alloc_aligned(bsize, align)?;
        if first.is_some() || self.quick.total() == 0 {
            return Ok(first);
        }
        self.flush_quick()?;
        self.alloc_aligned(bsize, align)
    }

    /// Number of blocks waiting on the quick stacks.
    pub fn cached_blocks(&self) -> usize {
        self.quick.total()
    }

    /// Merges every cached block with its neighbours and puts it on its bin.
    ///
    /// A cached block whose header was overwritten is quarantined whole (the stacks and the
    /// map, both out of band, still say what it is); damage found in a neighbour is contained
    /// and the merge tried again. The first damage is returned after every other block has
    /// been flushed.
    pub fn flush_quick(&mut self) -> Result<(), Error> {
        let mut first_damage = None;
        for i in 0..quick::LISTS {
            let size = Quick::size_of(i);
            while let Some(b) = self.quick.pop(i) {
                if let Err(e) = self.merge_cached(b, size) {
                    first_damage.get_or_insert(e);
                }
            }
        }
        first_damage.map_or(Ok(()), Err)
    }

    /// Merges the cached block `b` of `size` bytes, just popped off its stack, and bins it.
    fn merge_cached(&mut self, b: BlockAddr, size: usize) -> Result<(), Error> {
        let g = self.granule(b);
        debug_assert!(self.map.is_cached(g) && self.map_confirms(g, size));
        if !block::is_allocated_header(self.header_word(b), size) {
            self.quarantine_cached(b, size);
            return Err(self.corrupted(b.get(), "block header was overwritten"));
        }
        let mut first_damage = None;
        // Each failure quarantines a damaged neighbour; there are only two of them, and the
        // rest of a damaged one left free is rebuilt fresh, so the third try finds them sound.
        for _ in 0..3 {
            let neighbours = self
                .free_before(b)
                .and_then(|prev| Ok((prev, self.free_after(b + size)?)));
            match neighbours {
                Ok((prev, next)) => {
                    self.merge_and_bin(b, size, prev, next);
                    return first_damage.map_or(Ok(()), Err);
                }
                Err(e) => {
                    first_damage.get_or_insert(e);
                }
            }
        }
        // Not reached with the engine's own containment; should it be, the block stays out
        // of use rather than merge with damage.
        self.quarantine_cached(b, size);
        first_damage.map_or(Ok(()), Err)
    }

    #[cold]
    fn alloc_aligned(&mut self, bsize: usize, align: usize) -> Result<Option<NonNull<u8>>, Error> {
        debug_assert!(align.is_power_of_two());
        // Room for the block, the worst misalignment and a free lead block before it.
        let need = bsize + align + MIN_BLOCK;
        // A block already placed so that the aligned block fits in it (such as one an aligned
        // block left when freed) is smaller than `need`: looking only for `need` would leave
        // every such hole unused and grow the span instead.
        let found = match self.aligned_fit(bsize, align, need)? {
            Some(f) => Some(f),
            None => self.take_fit(need)?,
        };
        let Some((b, h)) = found else {
            return Ok(None);
        };
        let p = b.payload().get();
        if p % align == 0 {
            return Ok(Some(self.carve(b, h, bsize)));
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
            flags: FREE,
        };
        Ok(Some(self.carve(b2, h2, bsize)))
    }

    /// A free block (validated, still on its list) in which a block of `bsize` bytes fits with
    /// its payload on `align`, from the bins of sizes below `need` (those `take_fit(need)`
    /// never looks at); a few blocks of each.
    #[cold]
    fn aligned_fit(
        &mut self,
        bsize: usize,
        align: usize,
        need: usize,
    ) -> Result<Option<(BlockAddr, Header)>, Error> {
        let last = bin_of(need);
        let mut from = bin_of(bsize);
        while let Some(i) = self.bins.first_nonempty_from(from) {
            if i > last {
                break;
            }
            let mut next = self.bins.head(i);
            for _ in 0..BIN_SCAN {
                let Some(b) = next else {
                    break;
                };
                let h = self.listed_free(b, i)?;
                let p = b.payload().get();
                let lead = if p % align == 0 {
                    0
                } else {
                    ((p + MIN_BLOCK + align - 1) & !(align - 1)) - p
                };
                // A tail too small to be a block would be carved into the block, which
                // must be exactly `bsize`.
                let rest = h.size.checked_sub(lead + bsize);
                if rest.is_some_and(|r| r == 0 || r >= MIN_BLOCK) {
                    self.confirm_size(b, h.size, i)?;
                    self.check_links(b, h.size)?;
                    return Ok(Some((b, h)));
                }
                next = self.follow(b, i)?;
            }
            from = i + 1;
        }
        Ok(None)
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
        let g = Granule::at_offset(addr - self.base);
        match self.map.start_at_or_before(g) {
            Some(s) if self.map.is_live(s) => Error::InvalidPointer {
                addr,
                reason: "it points into the middle of an allocated block",
            },
            // A free (cached, binned or quarantined) block starts exactly here: it was handed
            // out and freed. (The start of a block merged away since cannot be told from any
            // other address inside free memory.)
            Some(s) if s == g => Error::DoubleFree { addr },
            Some(_) => Error::InvalidPointer {
                addr,
                reason: "it points into free memory, not at the start of a block",
            },
            None => Error::InvalidPointer {
                addr,
                reason: "it does not point at a block",
            },
        }
    }

    /// Judges the pointer `p` handed back: `Ok` with the block it names if it is the payload
    /// of a live block whose header agrees with the start map; otherwise the error that says
    /// why not (a double free, a foreign, interior or misaligned pointer, a damaged header).
    /// Nothing is written but the misuse counter. This is the one check of an operation: what
    /// it established travels in the [`Live`] token to the `_live` methods.
    #[inline(always)]
    pub fn live(&mut self, p: NonNull<u8>) -> Result<Live, Error> {
        let (payload, g) = self.live_granule(p)?;
        // A small block's header must agree with its extent in the map (an overflow from the
        // block before would have changed it).
        if let Some(size) = self.small_extent(g) {
            let b = payload.block();
            if !block::is_allocated_header(self.header_word(b), size) {
                return Err(self.corrupted(b.get(), "block header was overwritten"));
            }
            return Ok(Live { ptr: p, size });
        }
        self.live_general(p, payload, g)
    }

    /// `live` for a block whose extent the window of the map does not show (larger than
    /// 64 granules, or the last one): its header's size, confirmed by the map. Out of line,
    /// so that the hot path of `free` keeps to a few registers.
    #[inline(never)]
    fn live_general(
        &mut self,
        p: NonNull<u8>,
        payload: PayloadAddr,
        g: Granule,
    ) -> Result<Live, Error> {
        let h = self.live_header(payload.block(), g)?;
        Ok(Live {
            ptr: p,
            size: h.size,
        })
    }

    /// `p` as a payload address, and its granule, if the start map says a live block is
    /// recorded there (nothing is read but the map).
    #[inline(always)]
    fn live_granule(&mut self, p: NonNull<u8>) -> Result<(PayloadAddr, Granule), Error> {
        let addr = p.as_ptr() as usize;
        match self.live_granule_of(p) {
            Some(g) => Ok((PayloadAddr::new(addr), g)),
            None => Err(self.reject(addr)),
        }
    }

    /// The granule of `p` if the start map records a live block there (nothing is read but
    /// the map).
    #[inline(always)]
    fn live_granule_of(&self, p: NonNull<u8>) -> Option<Granule> {
        let off = (p.as_ptr() as usize).wrapping_sub(self.base);
        let g = Granule::at_offset(off);
        // Granule 0 never holds a block (the first payload is at granule 1), so its live bit
        // is never set and needs no test of its own.
        (off < self.end - self.base && off % GRANULE == 0 && self.map.is_live(g)).then_some(g)
    }

    /// The size of the block at granule `g` as the map's window after it shows it: the
    /// distance to the next start. `None` when the window holds no start (a block of more
    /// than 64 granules, or the last one) or a start right at `g + 1` (bit 0): no block is
    /// that short (MIN_BLOCK is two granules), so the map is not what it should be, and the
    /// general check reports it.
    #[inline(always)]
    fn small_extent(&self, g: Granule) -> Option<usize> {
        let window = self.map.starts_after(g);
        (window != 0 && window & 1 == 0)
            .then(|| Granule::bytes(window.trailing_zeros() as usize + 1))
    }

    /// The header of the live block `b` recorded at granule `g`, checked against the map. The
    /// map says where the next block starts, which is all the header's size has to agree
    /// with. (Its tag is checked on the merge paths, where its flags matter.)
    #[inline(always)]
    fn live_header(&mut self, b: BlockAddr, g: Granule) -> Result<Header, Error> {
        let h = block::raw_header(self.header_word(b));
        if h.is_free() || h.size < MIN_BLOCK || h.size > self.last_slot() - b {
            return Err(self.corrupted(b.get(), "block header was overwritten"));
        }
        if !self.map_confirms(g, h.size) {
            return Err(self.corrupted(b.get(), "block size does not end on a block boundary"));
        }
        Ok(h)
    }

    /// Usable bytes of the live block at `p` ([`live`](Self::live) and [`Live::usable`]).
    pub fn usable_size(&mut self, p: NonNull<u8>) -> Result<usize, Error> {
        self.live(p).map(Live::usable)
    }

    /// The binned block right before block `b`, if there is one, found by the start map (no
    /// footer is read): its address and size, its header confirmed and its links checked.
    #[inline(always)]
    fn free_before(&mut self, b: BlockAddr) -> Result<Option<(BlockAddr, usize)>, Error> {
        // Granule 0 never holds a start, so the first block (granule 1) finds none.
        let Some(gp) = self
            .granule(b)
            .before()
            .and_then(|g| self.map.start_at_or_before(g))
        else {
            return Ok(None);
        };
        if !self.map.is_binned(gp) {
            return Ok(None);
        }
        let pb = self.block_of_granule(gp);
        // No start lies between `gp` and `b`'s granule, so the map says the block is `b - pb`
        // bytes long; its header must say the same.
        let size = b - pb;
        match self.tagger.decode(pb, self.header_word(pb)) {
            Some(h) if h.is_free() && h.size == size => {}
            _ => return Err(self.damaged_block(pb, "free block header was overwritten")),
        }
        self.check_links(pb, size)?;
        Ok(Some((pb, size)))
    }

    /// The size of the binned block at `n` (the neighbour after some block), its header
    /// confirmed by the map and its links checked; `None` if `n` is not a binned block or is
    /// the end of the span.
    #[inline(always)]
    fn free_after(&mut self, n: BlockAddr) -> Result<Option<usize>, Error> {
        let size = self.binned_after(n)?;
        if let Some(size) = size {
            self.check_links(n, size)?;
        }
        Ok(size)
    }

    /// As [`free_after`](Self::free_after), without checking the links: for callers that may
    /// not unlink it, and check the links themselves before they do (reading them costs a
    /// cache miss in each of the two blocks they point at). Only a binned neighbour's header is
    /// read: whatever else follows is none of the caller's business.
    #[inline(always)]
    fn binned_after(&mut self, n: BlockAddr) -> Result<Option<usize>, Error> {
        if n >= self.last_slot() || !self.map.is_binned(self.granule(n)) {
            return Ok(None);
        }
        match self.binned_size(n) {
            Some(size) => Ok(Some(size)),
            None => Err(self.damaged_block(n, "free block header was overwritten")),
        }
    }

    // ---------------------------------------------------------------- free

    /// Frees the live block at `p`: small blocks go on their quick stack, others are merged
    /// with their free neighbours and binned ([`live`](Self::live) and
    /// [`free_live`](Self::free_live)).
    #[inline(always)]
    pub fn free(&mut self, p: NonNull<u8>) -> Result<Freed, Error> {
        let live = self.live(p)?;
        // SAFETY: `live` was just made by this engine, and nothing changed since.
        unsafe { self.free_live(live) }
    }

    /// The hot path of `free`, for owners that can take a miss: frees the block at `p` onto
    /// its quick stack and returns `true` when `p` is a live small block whose header agrees
    /// with the map (the checks of [`live`](Self::live)'s window path) and its stack has room.
    /// `false` changes nothing, not even the misuse counter: the owner then calls
    /// [`free`](Self::free), which judges `p` in full and reports what is wrong. Having no
    /// error to carry, it needs no stack frame.
    #[inline(always)]
    pub fn free_cached(&mut self, p: NonNull<u8>) -> bool {
        let Some(g) = self.live_granule_of(p) else {
            return false;
        };
        let Some(size) = self.small_extent(g) else {
            return false;
        };
        let b = PayloadAddr::of(p).block();
        if !block::is_allocated_header(self.header_word(b), size)
            || !self.quick.push(Quick::list_of(size), b)
        {
            return false;
        }
        self.record_cached_free(g, size);
        true
    }

    /// Frees the block `live` names, judged already: a small one goes on its quick stack,
    /// any other is merged with its free neighbours (validated first) and binned.
    ///
    /// # Safety
    ///
    /// `live` was made by [`live`](Self::live) on this engine, and its block was not freed
    /// or resized since (the contract of [`Live`]).
    #[inline(always)]
    pub unsafe fn free_live(&mut self, live: Live) -> Result<Freed, Error> {
        debug_assert!(self.still_live(live), "a stale Live token");
        let (b, size) = (live.block(), live.size);
        // A block above `quick::MAX_SIZE` names no stack, and `push` refuses it.
        if self.quick.push(Quick::list_of(size), b) {
            return Ok(self.record_cached_free(self.granule(b), size));
        }
        self.free_slow(b, size)
    }

    /// Records the free of the live block at granule `g` (of `size` bytes) that was just
    /// pushed on its quick stack.
    #[inline(always)]
    fn record_cached_free(&mut self, g: Granule, size: usize) -> Freed {
        self.map.mark_cached(g);
        let s = &mut self.counters;
        s.frees += 1;
        s.bytes_in_use -= size - HEADER;
        Freed {
            at_top: false,
            binned: false,
            size,
        }
    }

    /// Frees the validated live block `b` of `size` bytes by merging it with its free
    /// neighbours.
    #[inline(never)]
    fn free_slow(&mut self, b: BlockAddr, size: usize) -> Result<Freed, Error> {
        let prev = self.free_before(b)?;
        let next = self.free_after(b + size)?;
        // Everything this free touches is validated; from here on nothing can fail.
        let s = &mut self.counters;
        s.frees += 1;
        s.bytes_in_use -= size - HEADER;
        Ok(self.merge_and_bin(b, size, prev, next))
    }

    /// Merges the block at `b` of `size` bytes (live or cached until now, validated) with its
    /// validated binned neighbours `prev` (address and size) and `next` (size), and puts the
    /// result on its bin.
    fn merge_and_bin(
        &mut self,
        b: BlockAddr,
        size: usize,
        prev: Option<(BlockAddr, usize)>,
        next: Option<usize>,
    ) -> Freed {
        let g = self.granule(b);
        let (mut start, mut total) = (b, size);
        // The merged block starts at `b` or at the free block before it, where a start is
        // recorded already: `b`'s start is removed or marked binned, and no start is added.
        if let Some((pb, psize)) = prev {
            self.unlink(pb, psize);
            self.map.remove(g);
            start = pb;
            total += psize;
            self.counters.coalesces += 1;
        } else {
            self.map.mark_binned(g);
        }
        if let Some(nsize) = next {
            let n = b + size;
            self.unlink(n, nsize);
            let gn = self.granule(n);
            self.map.remove(gn);
            self.bury_metadata(n);
            total += nsize;
            self.counters.coalesces += 1;
        }
        self.bin_free(start, total);
        Freed {
            at_top: start + total == self.last_slot(),
            binned: true,
            size: total,
        }
    }

    /// The header and links of a free block at `n` that was just merged into the block
    /// before it are now in the middle of a free block; above `clean_from` they would break
    /// its promise, so they are cleared there.
    #[inline]
    fn bury_metadata(&mut self, n: BlockAddr) {
        if n.word(FREE_WORDS) > self.clean_from {
            for w in 0..FREE_WORDS {
                self.write(n.word(w), 0);
            }
        }
    }

    /// Clears what may be dirty of the first `size` bytes of the block just allocated at `p`:
    /// everything below `clean_before` (the mark before this allocation) and the first 16
    /// bytes (free-list links), which is all a block taken from clean memory can hold. Nothing
    /// about the block is read: its header may be the program's damage already.
    pub fn clear_for_calloc(&mut self, p: NonNull<u8>, size: usize, clean_before: usize) {
        let addr = p.as_ptr() as usize;
        let links = (FREE_WORDS - 1) * HEADER;
        let prefix = clean_before.saturating_sub(addr).max(links).min(size);
        // SAFETY: `p` is a live block of at least `size` bytes that the caller just allocated.
        unsafe { p.as_ptr().write_bytes(0, prefix) };
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
    #[cfg(test)] // the owners judge once: `live`, then the `_live` form
    pub fn resize_in_place(&mut self, p: NonNull<u8>, new_size: usize) -> Result<bool, Error> {
        Ok(matches!(self.resize(p, new_size)?, Resize::Done))
    }

    /// As [`resize_in_place`](Self::resize_in_place), and when the block cannot grow, says
    /// whether it ends the span (alone or followed by the free last block), so that the owner
    /// can move the span's end instead of the block ([`live`](Self::live) and
    /// [`resize_live`](Self::resize_live)).
    #[cfg(test)] // the owners judge once: `live`, then the `_live` form
    pub fn resize(&mut self, p: NonNull<u8>, new_size: usize) -> Result<Resize, Error> {
        let live = self.live(p)?;
        // SAFETY: `live` was just made by this engine, and nothing changed since.
        unsafe { self.resize_live(live, new_size) }
    }

    /// Resizes the block `live` names, judged already, without moving it: shrinking always
    /// can (the tail is freed), growing can when the next block is free and large enough.
    /// [`Resize::Done`] means it now has at least `new_size` usable bytes (and the token is
    /// spent: the block's size changed); otherwise nothing changed and the token stays valid.
    ///
    /// # Safety
    ///
    /// As for [`free_live`](Self::free_live).
    pub unsafe fn resize_live(&mut self, live: Live, new_size: usize) -> Result<Resize, Error> {
        debug_assert!(self.still_live(live), "a stale Live token");
        let (b, size) = (live.block(), live.size);
        let n = b + size;
        // A free neighbour's links are checked only once it is certain to be taken.
        let next_free = self.binned_after(n)?;
        let available = size + next_free.unwrap_or(0);
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
        if want == size || (want < size && size - want < MIN_BLOCK && next_free.is_none()) {
            return Ok(Resize::Done);
        }
        if let Some(nsize) = next_free {
            self.check_links(n, nsize)?;
        }
        let rest = available - want;
        // Validated; now write. Nothing after `b + available` is touched: no neighbour keeps a
        // flag about the blocks before it.
        if let Some(nsize) = next_free {
            self.unlink(n, nsize);
            let gn = self.granule(n);
            self.map.remove(gn);
            self.bury_metadata(n);
            self.counters.coalesces += 1;
        }
        let block = if rest >= MIN_BLOCK {
            self.write_allocated_header(b, want);
            self.make_free(b + want, rest);
            self.counters.splits += 1;
            want
        } else {
            self.write_allocated_header(b, available);
            available
        };
        self.clean_from = self.clean_from.max((b + block).get());
        let s = &mut self.counters;
        s.bytes_in_use = s.bytes_in_use + block - size;
        s.note_in_use();
        Ok(Resize::Done)
    }

    /// Grows the block `live` names into the free block before it (and the free block after
    /// it, if any), moving its first `keep` bytes down. The last resort of `realloc` when no
    /// free block elsewhere is large enough: the merged space may be. Returns the new payload,
    /// or `None` if even that is too small (nothing changed).
    ///
    /// # Safety
    ///
    /// As for [`free_live`](Self::free_live).
    pub unsafe fn resize_backward_live(
        &mut self,
        live: Live,
        new_size: usize,
        keep: usize,
    ) -> Result<Option<NonNull<u8>>, Error> {
        debug_assert!(self.still_live(live), "a stale Live token");
        let (b, size) = (live.block(), live.size);
        let Some(want) = block_size_for(new_size) else {
            return Ok(None);
        };
        let Some((pb, psize)) = self.free_before(b)? else {
            return Ok(None);
        };
        let n = b + size;
        let next_free = self.free_after(n)?;
        let total = psize + size + next_free.unwrap_or(0);
        if want > total || keep > size - HEADER {
            return Ok(None);
        }
        // Validated; unlink the neighbours before their memory is overwritten by the move.
        self.unlink(pb, psize);
        let g = self.granule(b);
        self.map.remove(g);
        if let Some(nsize) = next_free {
            self.unlink(n, nsize);
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
                self.payload_ptr(b).as_ptr(),
                self.payload_ptr(pb).as_ptr(),
                keep,
            )
        };
        let rest = total - want;
        let block = if rest >= MIN_BLOCK {
            self.write_allocated_header(pb, want);
            self.make_free(pb + want, rest);
            self.counters.splits += 1;
            want
        } else {
            self.write_allocated_header(pb, total);
            total
        };
        let gp = self.granule(pb);
        self.map.mark_live(gp);
        self.clean_from = self.clean_from.max((pb + block).get());
        let s = &mut self.counters;
        s.bytes_in_use = s.bytes_in_use + block - size;
        s.note_in_use();
        Ok(Some(self.payload_ptr(pb)))
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
    #[cfg(test)] // the owners judge once: `live`, then the `_live` form
    pub fn moving_packs_better(&mut self, p: NonNull<u8>, new_size: usize) -> Result<bool, Error> {
        let live = self.live(p)?;
        // SAFETY: `live` was just made by this engine, and nothing changed since.
        unsafe { self.moving_packs_better_live(live, new_size) }
    }

    /// [`moving_packs_better`](Self::moving_packs_better) for a block judged already. Nothing is written
    /// but containment of damage found in a free neighbour, so `live` stays valid.
    ///
    /// # Safety
    ///
    /// As for [`free_live`](Self::free_live).
    pub unsafe fn moving_packs_better_live(
        &mut self,
        live: Live,
        new_size: usize,
    ) -> Result<bool, Error> {
        debug_assert!(self.still_live(live), "a stale Live token");
        let (b, size) = (live.block(), live.size);
        let Some(want) = block_size_for(new_size) else {
            return Ok(false);
        };
        let prev = self.free_before(b)?;
        let n = b + size;
        let next = self.free_after(n)?.unwrap_or(0);
        let before = prev.map_or(0, |(_, psize)| psize);
        let here = size + next;
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
                sq(before + size) + sq(next - want),
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
    pub fn free_top(&mut self) -> Result<Option<(BlockAddr, usize)>, Error> {
        if self.end - self.base <= GRANULE {
            return Ok(None);
        }
        // The granule before the last slot's is the last one a block can be recorded at.
        let Some(g) = self
            .granule(self.last_slot())
            .before()
            .and_then(|g| self.map.start_at_or_before(g))
        else {
            return Ok(None);
        };
        // Live, cached (free, but not merged yet) or quarantined: nothing to trim or grow into.
        if !self.map.is_binned(g) {
            return Ok(None);
        }
        let b = self.block_of_granule(g);
        let size = self.last_slot() - b;
        match self.tagger.decode(b, self.header_word(b)) {
            Some(h) if h.is_free() && h.size == size => Ok(Some((b, size))),
            _ => Err(self.damaged_block(b, "last block's header disagrees with the start map")),
        }
    }

    /// Adds `[end, new_end)` to the span as free memory, merged with a free last block.
    ///
    /// `new_end - base` must be a multiple of 16, at most the limit, and `new_end` above `end`.
    pub fn grow_span(&mut self, new_end: usize) -> Result<(), Error> {
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
    /// block or at least a minimum block. `page` (a power of two) is the unit in which the
    /// owner gives the memory past `new_end` back, so that it reads as zero from the first
    /// multiple of `page` on.
    pub fn shrink_span(&mut self, new_end: usize, page: usize) -> Result<usize, Error> {
        let Some((b, size)) = self.free_top()? else {
            return Ok(0);
        };
        let keep = BlockAddr::slot_at_end(new_end) - b;
        debug_assert!(new_end <= self.end && new_end >= b.span_end());
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
            debug_assert!(page.is_power_of_two());
            self.clean_from = new_end.next_multiple_of(page);
        }
        if keep > 0 {
            self.make_free(b, keep);
        } else {
            // The removed block's header and links stay in memory the span can grow over
            // again (its end slot and the page it ends on): above `clean_from` they would
            // break that mark's promise.
            self.bury_metadata(b);
        }
        Ok(cut)
    }

    /// Usable bytes of the largest free block (what the largest request served now could be).
    pub fn largest_free(&self) -> usize {
        let mut best = 0;
        for i in (0..bins::NUM_BINS).rev() {
            if self.bins.head(i).is_some() {
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
