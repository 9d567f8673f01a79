//! The engine's cold half: the full integrity check, the walk over every block and the
//! snapshot. Nothing here is on an allocation path; all of it only reads.

use super::addr::{BlockAddr, Granule};
use super::bins::{self, bin_floor, bin_of};
use super::block::{self, HEADER, PREV_WORD};
use super::quick::{self, Quick};
use super::{Engine, Live};
use crate::{BlockInfo, BlockState, Error, Stats};

impl Engine {
    /// Debug builds: whether `live` still names a live block of this engine of its size.
    pub(super) fn still_live(&self, live: Live) -> bool {
        let b = live.block();
        self.contains(b.get())
            && self.map.is_live(self.granule(b))
            && block::is_allocated_header(self.header_word(b), live.size)
    }

    /// The block at walk position `at` (a block address, as a number: the owners' walks mix
    /// engine blocks with their own positions), validated against the start map, and the
    /// position of the next one. `None` at the end of the span or if the block does not
    /// validate (the walk stops there).
    ///
    /// The extent comes from the map; a header that disagrees with it stops the walk, except
    /// a quarantined block's, which is the program's damage and not read.
    pub fn block_at(&self, at: usize) -> Option<(BlockInfo, usize)> {
        let b = BlockAddr::new(at);
        if b < BlockAddr::first_of(self.base)
            || b >= self.last_slot()
            || !BlockAddr::is_aligned(at, self.base)
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
            let h = self.tagger.decode(b, self.header_word(b))?;
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
            addr: b.payload().get(),
            offset: at - self.base,
            size,
            usable: size - HEADER,
            state,
        };
        Some((info, (b + size).get()))
    }

    /// Walk position of the first block (where a walk starts): its block address.
    pub fn first_block(&self) -> usize {
        BlockAddr::first_of(self.base).get()
    }

    /// Free blocks on bin `i`, in list order: `(block, size)`; stops at damage.
    pub fn bin_entries(&self, i: usize) -> impl Iterator<Item = (BlockAddr, usize)> + '_ {
        let mut next = self.bins.head(i);
        let mut steps = 0usize;
        core::iter::from_fn(move || {
            let b = next.filter(|&b| self.is_binned(b) && steps <= self.binned)?;
            let h = self.tagger.decode(b, self.header_word(b))?;
            steps += 1;
            next = self.next_link(b);
            Some((b, h.size))
        })
    }

    /// Verifies every invariant in the module docs by walking all blocks and all bins, then
    /// reports quarantined damage if there is any: an `Err` whose `what` names the quarantine
    /// means everything else is sound.
    pub fn check(&self) -> Result<(), Error> {
        self.check_structure()?;
        self.check_quarantine()
    }

    /// The quarantine report of [`check`](Self::check) alone: `Err` naming the first
    /// quarantined block if damage was ever found and set aside.
    pub fn check_quarantine(&self) -> Result<(), Error> {
        if self.quarantined == 0 {
            return Ok(());
        }
        let mut g = self.granule(BlockAddr::first_of(self.base));
        while !self.map.is_quarantined(g) {
            match self.map.next_start_after(g) {
                Some(n) => g = n,
                None => break,
            }
        }
        Err(Error::Corrupted {
            addr: self.block_of_granule(g).get(),
            what: "damaged free memory was found and is quarantined (never handed out again)",
        })
    }

    /// Every invariant of the module docs, quarantined blocks counted as what they are.
    pub fn check_structure(&self) -> Result<(), Error> {
        let bad = |addr, what| Err(Error::Corrupted { addr, what });
        let last = self.last_slot();
        let granules = Granule::count(self.span()) + 1;
        let counts = self.map.counts(granules);
        if !counts.consistent {
            return bad(
                self.base,
                "start map has a state bit without a start, or two states",
            );
        }
        let mut b = BlockAddr::first_of(self.base);
        if b < last && !self.map.is_start(self.granule(b)) {
            return bad(b.get(), "a block starts where the start map has none");
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
                b = b + size;
                continue;
            }
            let Some(h) = self.tagger.decode(b, self.header_word(b)) else {
                return bad(b.get(), "block header was overwritten");
            };
            if h.size != size {
                return bad(b.get(), "block size does not end on a block boundary");
            }
            if h.is_free() != binned {
                return bad(b.get(), "block state disagrees with the start map");
            }
            if binned {
                if prev_binned {
                    return bad(b.get(), "two free blocks are adjacent");
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
            b = b + size;
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
        if !self.map.summary_agrees(granules) {
            return bad(self.base, "start map summary disagrees with its groups");
        }
        let last_start = self.map.start_at_or_before(Granule::at_offset(self.span()));
        if self.map.last_start() != last_start {
            return bad(self.base, "start map's last start is not the last block's");
        }
        let mut listed = 0;
        for i in 0..bins::NUM_BINS {
            if self.bins.head(i).is_some() != self.bins.marked_nonempty(i) {
                return bad(
                    self.base,
                    "non-empty bin bitmap disagrees with the bin heads",
                );
            }
            let mut prev = None;
            let mut next = self.bins.head(i);
            while let Some(n) = next {
                if !self.is_binned(n) || listed > free {
                    let what = "free list points at something that is not a free block";
                    return bad(n.get(), what);
                }
                // The walk confirmed every binned header against the map.
                let size = block::raw_header(self.header_word(n)).size;
                if bin_of(size) != i || size < bin_floor(i) {
                    return bad(n.get(), "free block is on the wrong bin");
                }
                if self.prev_link(n) != prev {
                    return bad(n.word(PREV_WORD), "free list back link is wrong");
                }
                listed += 1;
                prev = Some(n);
                next = self.next_link(n);
            }
        }
        if listed != free {
            return bad(self.base, "free blocks missing from the free lists");
        }
        let mut quick_listed = 0;
        for i in 0..quick::LISTS {
            for &n in self.quick.entries(i) {
                let ok = n.get() > self.base
                    && n < last
                    && self.map.is_cached(self.granule(n))
                    && block::raw_header(self.header_word(n)).size == Quick::size_of(i);
                if !ok {
                    let what = "quick stack holds something that is not a cached block";
                    return bad(n.get(), what);
                }
                quick_listed += 1;
            }
        }
        if quick_listed != cached || cached != self.quick.total() {
            return bad(self.base, "cached blocks missing from the quick stacks");
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
    pub fn snapshot(&self, title: &'static str, stats: Stats) -> crate::Snapshot {
        let mut blocks = Vec::new();
        let mut b = self.first_block();
        while let Some((info, next)) = self.block_at(b) {
            blocks.push(info);
            b = next;
        }
        let damaged_at = (b != self.last_slot().get()).then(|| b - self.base);
        let free_lists = (0..bins::NUM_BINS)
            .filter(|&i| self.bins.head(i).is_some())
            .map(|i| crate::snapshot::FreeList {
                bin: i,
                min_size: bin_floor(i),
                blocks: self
                    .bin_entries(i)
                    .map(|(b, size)| (b.get() - self.base, size))
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
                    .map(|&b| (b.get() - self.base, Quick::size_of(i)))
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
}
