//! The engine's cold half: the full integrity check, the walk over every block and the
//! snapshot. Nothing here is on an allocation path; all of it only reads.

use super::bins::{self, bin_floor, bin_of};
use super::block::{self, GRANULE, HEADER};
use super::quick::{self, Quick};
use super::{Engine, Live};
use crate::{BlockInfo, BlockState, Error, Stats};

impl Engine {
    /// Debug builds: whether `live` still names a live block of this engine of its size.
    pub(super) fn still_live(&self, live: Live) -> bool {
        let b = live.block();
        self.contains(b)
            && self.map.is_live(self.granule(b))
            && block::is_allocated_header(self.read(b), live.size)
    }

    /// The block at `b`, validated against the start map, and the address of the next one.
    /// `None` at the end of the span or if the block does not validate (the walk stops there).
    ///
    /// The extent comes from the map; a header that disagrees with it stops the walk, except
    /// a quarantined block's, which is the program's damage and not read.
    pub fn block_at(&self, b: usize) -> Option<(BlockInfo, usize)> {
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
    pub fn check_structure(&self) -> Result<(), Error> {
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
}
