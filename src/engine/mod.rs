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
//! 1. Blocks tile `[base + 8, end - 8)` exactly; each header decodes (its tag matches), except
//!    a quarantined block's, which nothing reads.
//! 2. The start map has a `starts` bit at each block's payload granule and nowhere else, and
//!    one state per start: `live` (allocated), `free` (binned), `quarantined`, or none
//!    (cached or lent). A header's `FREE` flag is set exactly for binned blocks. Its summary
//!    marks exactly the groups of 64 granules that hold a start ([`starts`]).
//! 3. No two binned free blocks are adjacent (freeing coalesces with both neighbours). Small
//!    freed blocks may instead wait, uncoalesced, on a quick list ([`quick`]); they count as
//!    free for misuse detection and as allocated for their neighbours.
//! 4. Only the map says whether a neighbour is free: free blocks have no footer and headers
//!    no flag for the block before, so nothing the program can overwrite decides a merge.
//! 5. Every binned block is on the list of its bin exactly once (see [`bins`]); a bin's head
//!    is always a binned block of that bin by the map.
//! 6. The counters in `stats` (live blocks, bytes in use, free blocks, free bytes, quarantined
//!    blocks and bytes) agree with the walk.
//! 7. At most one block is *lent* ([`quick`]): handed out by the latest allocation but still
//!    on its quick stack. It is allocated in every way but two: its `live` bit is still clear
//!    and the counters leave it out. Freeing it next ends the loan with nothing else to undo;
//!    any other operation first settles it ([`Engine::settle`]), so only `alloc` and `free`
//!    ever meet a lent block.
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

pub(crate) mod bins;
pub(crate) mod block;
pub(crate) mod quick;
pub(crate) mod starts;

use core::ptr::NonNull;

use crate::{BlockInfo, BlockState, Error, Stats};
use bins::{Bins, bin_floor, bin_is_exact, bin_of};
use block::{FREE, GRANULE, HEADER, Header, MIN_BLOCK, Tagger, block_size_for, small_block_size};
use quick::Quick;
use starts::StartMap;

pub(crate) use block::block_size_for as block_size;

// The free fast path (`Engine::free`) relies on blocks spanning at least two granules.
static_assertions::const_assert_eq!(MIN_BLOCK / GRANULE, 2);
pub(crate) use starts::{groups_bytes, map_bytes};

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
            quarantined: 0,
            quarantined_bytes: 0,
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
        self.map.mark_live(g);
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

    fn corrupted(&mut self, addr: usize, what: &'static str) -> Error {
        self.counters.misuses_caught += 1;
        Error::Corrupted { addr, what }
    }

    /// The extent of the block whose payload granule is `g`, by the start map alone: the
    /// distance to the next start, or to the end of the span for the last block.
    fn extent(&self, g: usize) -> usize {
        match self.map.next_start_after(g) {
            Some(n) => (n - g) * GRANULE,
            None => self.last_slot() - self.block_of_granule(g),
        }
    }

    /// The size in the header of the binned block `b` if the header decodes as a free block
    /// whose size the start map confirms; `None` if it is damaged.
    #[inline(always)]
    fn binned_size(&self, b: usize) -> Option<usize> {
        let h = self.tagger.decode(b, self.read(b))?;
        let ok = h.is_free()
            && h.size <= self.last_slot() - b
            && self.map_confirms(self.granule(b), h.size);
        ok.then_some(h.size)
    }

    #[inline(always)]
    fn write_allocated_header(&mut self, b: usize, size: usize) {
        let word = self.tagger.encode(b, size, 0);
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

    /// Whether `b` is the address of a binned free block, by the start map alone.
    #[inline(always)]
    fn is_binned(&self, b: usize) -> bool {
        b > self.base
            && b < self.last_slot()
            && (b + HEADER - self.base) % GRANULE == 0
            && self.map.is_binned(self.granule(b))
    }

    /// Writes a free block's header, puts it on its bin and in the start map. No allocated
    /// block may start at `b` (it is new, or a free block cut shorter), and the blocks on
    /// either side must not be binned (free neighbours are always merged first).
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
        self.push_on_bin(b, size);
    }

    /// Links the free block `b` of `size` bytes in at the head of its bin.
    #[inline(always)]
    fn push_on_bin(&mut self, b: usize, size: usize) {
        let i = bin_of(size);
        // A head is always a binned block of this bin (invariant 5), so this writes only into
        // free memory.
        let head = self.bins.head(i);
        self.write(b + HEADER, head as u64);
        self.write(b + 2 * HEADER, 0);
        if head != 0 {
            self.write(head + 2 * HEADER, b as u64);
        }
        self.bins.set_head(i, b);
        self.binned += 1;
    }

    /// Checks that the binned block `b` (of `size` bytes, confirmed by the map) sits correctly
    /// in its list, so that unlinking it writes only into binned blocks and keeps every head a
    /// block of its own bin. The link rule:
    /// - `prev` is 0 exactly when `b` is its bin's head; otherwise it names a binned block
    ///   (not `b`) whose `next` is `b`;
    /// - `next` is 0, or names a binned block (not `b`) whose `prev` is `b` and which belongs
    ///   to the same bin by the map (it may become the head).
    ///
    /// A link into a live, cached, lent or quarantined block never passes: the map has no
    /// `free` bit there.
    #[inline(always)]
    fn check_links(&mut self, b: usize, size: usize) -> Result<(), Error> {
        let i = bin_of(size);
        let (next, prev) = (self.next_link(b), self.prev_link(b));
        let is_head = self.bins.head(i) == b;
        let prev_ok = if prev == 0 {
            is_head
        } else {
            !is_head && prev != b && self.is_binned(prev) && self.next_link(prev) == b
        };
        let next_ok = next == 0
            || (next != b
                && self.is_binned(next)
                && self.prev_link(next) == b
                && self.of_bin(next, i));
        if prev_ok && next_ok {
            Ok(())
        } else {
            Err(self.damaged(i, b, b + HEADER, "free-list link was overwritten"))
        }
    }

    /// Whether the binned block `n` belongs on bin `i` by the start map (its header's size is
    /// the one the map confirms).
    #[inline(always)]
    fn of_bin(&self, n: usize, i: usize) -> bool {
        let size = block::raw_header(self.read(n)).size;
        size >= MIN_BLOCK
            && size <= self.last_slot() - n
            && bin_of(size) == i
            && self.map_confirms(self.granule(n), size)
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

    /// Validates the free block at `b` found on bin `bin` as one to take: map, header, size
    /// confirmed by the map, links.
    #[inline(always)]
    fn checked_free(&mut self, b: usize, bin: usize) -> Result<Header, Error> {
        let h = self.listed_free(b, bin)?;
        self.confirm_size(b, h.size, bin)?;
        self.check_links(b, h.size)?;
        Ok(h)
    }

    /// Confirms by the map that the listed block `b` is `size` bytes long.
    #[inline(always)]
    fn confirm_size(&mut self, b: usize, size: usize, bin: usize) -> Result<(), Error> {
        if self.map_confirms(self.granule(b), size) {
            Ok(())
        } else {
            Err(self.damaged(bin, b, b, "free block size disagrees with the start map"))
        }
    }

    /// Validates the binned block at `b` found on bin `bin` by its header, without its size
    /// or links: enough to compare its size with a request and follow its `next` link to the
    /// next candidate (which is validated the same way before it is read). The block that is
    /// finally taken off the list gets its size confirmed and its links checked too.
    #[inline(always)]
    fn listed_free(&mut self, b: usize, bin: usize) -> Result<Header, Error> {
        debug_assert!(self.is_binned(b), "a candidate is always a binned block");
        match self.tagger.decode(b, self.read(b)) {
            Some(h) if h.is_free() && bin_of(h.size) == bin && h.size <= self.last_slot() - b => {
                Ok(h)
            }
            _ => Err(self.damaged(bin, b, b, "free block header was overwritten")),
        }
    }

    /// The block `next` links to from the binned block `from` on bin `bin`, checked to be
    /// binned before anything in it is read.
    #[inline(always)]
    fn follow(&mut self, from: usize, bin: usize) -> Result<usize, Error> {
        let n = self.next_link(from);
        if n == 0 || self.is_binned(n) {
            Ok(n)
        } else {
            Err(self.damaged(bin, from, from + HEADER, "free-list link was overwritten"))
        }
    }

    // ---------------------------------------------------------------- containment

    /// Reports damage found at `addr` while working on the binned block `b` of bin `bin`,
    /// after containing it: `b` (if it is still binned) is quarantined and `bin` rebuilt from
    /// the map, so no later request meets the damage again.
    #[cold]
    #[inline(never)]
    fn damaged(&mut self, bin: usize, b: usize, addr: usize, what: &'static str) -> Error {
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
    fn damaged_block(&mut self, b: usize, addr: usize, what: &'static str) -> Error {
        let bin = bin_of(self.extent(self.granule(b)));
        self.damaged(bin, b, addr, what)
    }

    /// Quarantines the front of the binned block `b` (`size` bytes by the map), where every
    /// word the engine keeps in a free block lies (header and links): a block of `MIN_BLOCK`
    /// bytes, or all of it if the rest could not be a block. The rest becomes a fresh free
    /// block, linked now unless its bin is `dirty` (about to be rebuilt).
    #[cold]
    fn quarantine_piece(&mut self, b: usize, size: usize, dirty: &mut Dirty) {
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
            self.map.add_free(g + piece / GRANULE);
            let word = self.tagger.encode(rest, size - piece, FREE);
            self.write(rest, word);
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
                self.bins.set_head(i, 0);
            }
        }
        let mut binned = 0;
        let mut g = self.granule(self.first_block());
        let last = self.last_slot();
        while self.block_of_granule(g) < last {
            if self.map.is_binned(g) {
                let b = self.block_of_granule(g);
                let size = self.extent(g);
                let i = bin_of(size);
                if dirty.has(i) {
                    match self.tagger.decode(b, self.read(b)) {
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
            b = self.follow(b, i)?;
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
    fn carve(&mut self, b: usize, h: Header, size: usize) -> NonNull<u8> {
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
                // The stack is out of band, but the header is the program's: a dangling write
                // into it would make the block unfreeable for its next owner.
                if !block::is_allocated_header(self.read(b), bsize) {
                    return Err(self.damaged_lent());
                }
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

    /// Marks the cached block `b` of `size` bytes, just popped, allocated. The quick stacks
    /// are out of the program's reach; only the header, which a dangling write could have
    /// changed, is checked.
    #[inline(always)]
    fn hand_out_cached(&mut self, b: usize, size: usize) -> Result<NonNull<u8>, Error> {
        if !block::is_allocated_header(self.read(b), size) {
            self.quarantine_cached(b, size);
            return Err(self.corrupted(b, "block header was overwritten"));
        }
        self.record_cached_allocated(b, size);
        self.counters.note_in_use();
        // SAFETY: `b + HEADER` is inside the span, whose base pointer is non-null.
        Ok(unsafe { NonNull::new_unchecked(self.base_ptr.with_addr(b + HEADER)) })
    }

    /// The block just lent has a damaged header: it leaves its stack and is quarantined.
    #[cold]
    #[inline(never)]
    fn damaged_lent(&mut self) -> Error {
        match self.quick.settle_loan() {
            Some((b, size)) => {
                self.quarantine_cached(b, size);
                self.corrupted(b, "block header was overwritten")
            }
            None => self.corrupted(self.base, "block header was overwritten"),
        }
    }

    /// Quarantines the cached block `b` of `size` bytes, off its stack already: its header is
    /// damaged, and the stack and the map (both out of band) still say what it is.
    #[cold]
    fn quarantine_cached(&mut self, b: usize, size: usize) {
        self.map.mark_quarantined(self.granule(b));
        self.quarantined += 1;
        self.quarantined_bytes += size;
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
        self.settle();
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

    /// Number of blocks waiting on the quick stacks (the lent one not counted).
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
        self.settle();
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
    fn merge_cached(&mut self, b: usize, size: usize) -> Result<(), Error> {
        let g = self.granule(b);
        debug_assert!(self.map.is_cached(g) && self.map_confirms(g, size));
        if !block::is_allocated_header(self.read(b), size) {
            self.quarantine_cached(b, size);
            return Err(self.corrupted(b, "block header was overwritten"));
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
        let Some((b, h)) = self.take_fit(need)? else {
            return Ok(None);
        };
        let p = b + HEADER;
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

    /// The binned block right before block `b`, if there is one, found by the start map (no
    /// footer is read): its address and size, its header confirmed and its links checked.
    #[inline(always)]
    fn free_before(&mut self, b: usize) -> Result<Option<(usize, usize)>, Error> {
        // Granule 0 never holds a start, so the first block (granule 1) finds none.
        let Some(gp) = self.map.start_at_or_before(self.granule(b) - 1) else {
            return Ok(None);
        };
        if !self.map.is_binned(gp) {
            return Ok(None);
        }
        let pb = self.block_of_granule(gp);
        // No start lies between `gp` and `b`'s granule, so the map says the block is `b - pb`
        // bytes long; its header must say the same.
        let size = b - pb;
        match self.tagger.decode(pb, self.read(pb)) {
            Some(h) if h.is_free() && h.size == size => {}
            _ => return Err(self.damaged_block(pb, pb, "free block header was overwritten")),
        }
        self.check_links(pb, size)?;
        Ok(Some((pb, size)))
    }

    /// The size of the binned block at `n` (the neighbour after some block), its header
    /// confirmed by the map and its links checked; `None` if `n` is not a binned block or is
    /// the end of the span.
    #[inline(always)]
    fn free_after(&mut self, n: usize) -> Result<Option<usize>, Error> {
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
    fn binned_after(&mut self, n: usize) -> Result<Option<usize>, Error> {
        if n >= self.last_slot() || !self.map.is_binned(self.granule(n)) {
            return Ok(None);
        }
        match self.binned_size(n) {
            Some(size) => Ok(Some(size)),
            None => Err(self.damaged_block(n, n, "free block header was overwritten")),
        }
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
        let prev = self.free_before(b)?;
        let next = self.free_after(b + h.size)?;
        // Everything this free touches is validated; from here on nothing can fail.
        let s = &mut self.counters;
        s.frees += 1;
        s.bytes_in_use -= h.size - HEADER;
        Ok(self.merge_and_bin(b, h.size, prev, next))
    }

    /// Merges the block at `b` of `size` bytes (live or cached until now, validated) with its
    /// validated binned neighbours `prev` (address and size) and `next` (size), and puts the
    /// result on its bin.
    fn merge_and_bin(
        &mut self,
        b: usize,
        size: usize,
        prev: Option<(usize, usize)>,
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
    fn bury_metadata(&mut self, n: usize) {
        if n + 3 * HEADER > self.clean_from {
            for w in 0..3 {
                self.write(n + w * HEADER, 0);
            }
        }
    }

    /// Clears what may be dirty of the first `size` bytes of the block just allocated at `p`:
    /// everything below `clean_before` (the mark before this allocation) and the first 16
    /// bytes (free-list links), which is all a block taken from clean memory can hold. Nothing
    /// about the block is read: its header may be the program's damage already.
    pub fn clear_for_calloc(&mut self, p: NonNull<u8>, size: usize, clean_before: usize) {
        let addr = p.as_ptr() as usize;
        let prefix = clean_before.saturating_sub(addr).max(2 * HEADER).min(size);
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
        let next_free = self.binned_after(n)?;
        let available = h.size + next_free.unwrap_or(0);
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
        let Some((pb, psize)) = self.free_before(b)? else {
            return Ok(None);
        };
        let n = b + h.size;
        let next_free = self.free_after(n)?;
        let total = psize + h.size + next_free.unwrap_or(0);
        if want > total || keep > h.size - HEADER {
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
                self.base_ptr.with_addr(b + HEADER),
                self.base_ptr.with_addr(pb + HEADER),
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
        let prev = self.free_before(b)?;
        let n = b + h.size;
        let next = self.free_after(n)?.unwrap_or(0);
        let before = prev.map_or(0, |(_, psize)| psize);
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
        // Live, cached (free, but not merged yet) or quarantined: nothing to trim or grow into.
        if !self.map.is_binned(g) {
            return Ok(None);
        }
        let b = self.block_of_granule(g);
        let size = self.last_slot() - b;
        match self.tagger.decode(b, self.read(b)) {
            Some(h) if h.is_free() && h.size == size => Ok(Some((b, size))),
            _ => Err(self.damaged_block(b, b, "last block's header disagrees with the start map")),
        }
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
        } else {
            // The removed block's header and links stay in memory the span can grow over
            // again (its end slot and the page it ends on): above `clean_from` they would
            // break that mark's promise.
            self.bury_metadata(b);
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

    /// [`block_at`](Self::block_at), once the loan is settled. The extent comes from the map;
    /// a header that disagrees with it stops the walk, except a quarantined block's, which is
    /// the program's damage and not read.
    fn settled_block_at(&self, b: usize) -> Option<(BlockInfo, usize)> {
        debug_assert_eq!(self.quick.lent(), 0);
        if b < self.base + HEADER
            || b >= self.last_slot()
            || (b + HEADER - self.base) % GRANULE != 0
        {
            return None;
        }
        let g = self.granule(b);
        if !self.map.is_start(g) {
            return None;
        }
        let size = self.extent(g);
        let state = if self.map.is_quarantined(g) {
            BlockState::Quarantined
        } else {
            let h = self.tagger.decode(b, self.read(b))?;
            if h.size != size || h.is_free() != self.map.is_binned(g) {
                return None;
            }
            if self.map.is_live(g) {
                BlockState::Allocated
            } else {
                BlockState::Free
            }
        };
        let info = BlockInfo {
            addr: b + HEADER,
            offset: b - self.base,
            size,
            usable: size - HEADER,
            state,
        };
        Some((info, b + size))
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
            if b == 0 || !self.is_binned(b) || steps > self.binned {
                return None;
            }
            let h = self.tagger.decode(b, self.read(b))?;
            let item = (b, h.size);
            steps += 1;
            b = self.next_link(b);
            Some(item)
        })
    }

    /// Verifies every invariant in the module docs by walking all blocks and all bins, then
    /// reports quarantined damage if there is any: an `Err` whose `what` names the quarantine
    /// means everything else is sound.
    pub fn check(&mut self) -> Result<(), Error> {
        self.check_structure()?;
        self.check_quarantine()
    }

    /// The quarantine report of [`check`](Self::check) alone: `Err` naming the first
    /// quarantined block if damage was ever found and set aside.
    pub fn check_quarantine(&self) -> Result<(), Error> {
        if self.quarantined == 0 {
            return Ok(());
        }
        let mut g = self.granule(self.first_block());
        while !self.map.is_quarantined(g) {
            match self.map.next_start_after(g) {
                Some(n) => g = n,
                None => break,
            }
        }
        Err(Error::Corrupted {
            addr: self.block_of_granule(g),
            what: "damaged free memory was found and is quarantined (never handed out again)",
        })
    }

    /// Every invariant of the module docs, quarantined blocks counted as what they are.
    pub fn check_structure(&mut self) -> Result<(), Error> {
        self.settle();
        let bad = |addr, what| Err(Error::Corrupted { addr, what });
        let last = self.last_slot();
        let counts = self.map.counts(self.span() / GRANULE + 1);
        if !counts.consistent {
            return bad(
                self.base,
                "start map has a state bit without a start, or two states",
            );
        }
        let mut b = self.first_block();
        if b < last && !self.map.is_start(self.granule(b)) {
            return bad(b, "a block starts where the start map has none");
        }
        let (mut blocks, mut live, mut in_use, mut free, mut free_bytes) = (0, 0, 0, 0, 0);
        let (mut cached, mut cached_bytes, mut quarantined, mut quarantined_bytes) = (0, 0, 0, 0);
        let mut prev_binned = false;
        // The map gives every extent, so the walk tiles the span by construction; each header
        // must agree with it.
        while b < last {
            let g = self.granule(b);
            let size = self.extent(g);
            let (is_live, binned) = (self.map.is_live(g), self.map.is_binned(g));
            blocks += 1;
            if self.map.is_quarantined(g) {
                quarantined += 1;
                quarantined_bytes += size;
                prev_binned = false;
                b += size;
                continue;
            }
            let Some(h) = self.tagger.decode(b, self.read(b)) else {
                return bad(b, "block header was overwritten");
            };
            if h.size != size {
                return bad(b, "block size does not end on a block boundary");
            }
            if h.is_free() != binned {
                return bad(b, "block state disagrees with the start map");
            }
            if binned {
                if prev_binned {
                    return bad(b, "two free blocks are adjacent");
                }
                free += 1;
                free_bytes += size;
            } else if is_live {
                live += 1;
                in_use += size - HEADER;
            } else {
                cached += 1;
                cached_bytes += size;
            }
            prev_binned = binned;
            b += size;
        }
        if (
            counts.starts,
            counts.live,
            counts.binned,
            counts.quarantined,
        ) != (blocks, live, free, quarantined)
        {
            return bad(self.base, "start map has bits for blocks that do not exist");
        }
        if !self.map.summary_agrees(self.span() / GRANULE + 1) {
            return bad(self.base, "start map summary disagrees with its groups");
        }
        let last_start = self.map.start_at_or_before(self.span() / GRANULE);
        if self.map.last_start() != last_start {
            return bad(self.base, "start map's last start is not the last block's");
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
                if !self.is_binned(n) || listed > free {
                    return bad(n, "free list points at something that is not a free block");
                }
                // The walk confirmed every binned header against the map.
                let size = block::raw_header(self.read(n)).size;
                if bin_of(size) != i || size < bin_floor(i) {
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
                let ok = n > self.base
                    && n < last
                    && self.map.is_cached(self.granule(n))
                    && block::raw_header(self.read(n)).size == Quick::size_of(i);
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
            || (self.binned, self.quarantined, self.quarantined_bytes)
                != (free, quarantined, quarantined_bytes)
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
