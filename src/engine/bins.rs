//! Segregated free lists ("bins") and the bitmap of non-empty bins.
//!
//! Sizes up to 1 KiB have one bin per granule (exact fit); above that every power of two is
//! cut into eight bins. Finding a bin that can serve a request is then a bit search over six
//! words, not a walk over lists.
//!
//! Invariants kept here:
//! - A free block of size `S` is on the list of `bin_of(S)`, exactly once.
//! - Bit `i` of `nonempty` is set if and only if bin `i` has a head.
//! - Every block in a bin above `bin_of(S)` is larger than `S` (bins are ordered by size), which
//!   is what lets `find` take any block from the next non-empty bin without looking at it.

use super::addr::BlockAddr;
use super::block::{GRANULE, MIN_BLOCK};

/// Sizes up to this many bytes have an exact-fit bin each.
pub(crate) const EXACT_LIMIT: usize = 1024;
const EXACT_BINS: usize = (EXACT_LIMIT - MIN_BLOCK) / GRANULE + 1;
const SUB_BITS: u32 = 3;
const FIRST_LOG: u32 = EXACT_LIMIT.trailing_zeros();
/// Number of bins: the exact ones, then eight per power of two up to 2^48.
pub(crate) const NUM_BINS: usize = EXACT_BINS + ((48 - FIRST_LOG as usize) << SUB_BITS);
const WORDS: usize = NUM_BINS.div_ceil(64);

static_assertions::const_assert!(EXACT_LIMIT.is_power_of_two());
static_assertions::const_assert_eq!(EXACT_BINS, 63);

/// The bin a free block of `size` bytes belongs on.
///
/// Total: a size no block can have (below [`MIN_BLOCK`], or past the largest bin, as a
/// damaged header may claim) still names a bin, the first or the last, so that no caller
/// indexes out of bounds; callers compare such a size with the map before they act on it.
#[inline(always)]
pub(crate) fn bin_of(size: usize) -> usize {
    debug_assert!(size >= MIN_BLOCK && size % GRANULE == 0);
    if size <= EXACT_LIMIT {
        (size / GRANULE).saturating_sub(MIN_BLOCK / GRANULE)
    } else {
        let log = usize::BITS - 1 - size.leading_zeros();
        let sub = (size >> (log - SUB_BITS)) & ((1 << SUB_BITS) - 1);
        (EXACT_BINS + (((log - FIRST_LOG) as usize) << SUB_BITS) + sub).min(NUM_BINS - 1)
    }
}

/// The smallest block size that belongs on bin `i`.
#[inline]
pub(crate) fn bin_floor(i: usize) -> usize {
    if i < EXACT_BINS {
        (i + MIN_BLOCK / GRANULE) * GRANULE
    } else {
        let j = i - EXACT_BINS;
        let log = FIRST_LOG as usize + (j >> SUB_BITS);
        let sub = j & ((1 << SUB_BITS) - 1);
        // EXACT_LIMIT itself has an exact bin, so the first range bin starts one granule up.
        ((1 << log) + (sub << (log - SUB_BITS as usize))).max(EXACT_LIMIT + GRANULE)
    }
}

/// Whether every block on bin `i` can serve a request for a block of `size` bytes.
#[inline(always)]
pub(crate) fn bin_is_exact(i: usize) -> bool {
    i < EXACT_BINS
}

/// The heads of the free lists and which are non-empty.
pub(crate) struct Bins {
    /// The first free block of each bin, stored as a free-list link is (0 for an empty bin).
    heads: [u64; NUM_BINS],
    nonempty: [u64; WORDS],
}

impl Bins {
    pub const fn new() -> Bins {
        Bins {
            heads: [0; NUM_BINS],
            nonempty: [0; WORDS],
        }
    }

    #[inline(always)]
    pub fn head(&self, i: usize) -> Option<BlockAddr> {
        BlockAddr::from_link(self.heads[i])
    }

    /// Sets the head of bin `i`, keeping the non-empty bit in step.
    #[inline(always)]
    pub fn set_head(&mut self, i: usize, head: Option<BlockAddr>) {
        self.heads[i] = BlockAddr::to_link(head);
        let bit = 1u64 << (i % 64);
        if head.is_none() {
            self.nonempty[i / 64] &= !bit;
        } else {
            self.nonempty[i / 64] |= bit;
        }
    }

    /// The first non-empty bin at or after `i`.
    #[inline(always)]
    pub fn first_nonempty_from(&self, i: usize) -> Option<usize> {
        let mut w = i / 64;
        if w >= WORDS {
            return None;
        }
        let mut word = self.nonempty[w] & (!0u64 << (i % 64));
        loop {
            if word != 0 {
                return Some(w * 64 + word.trailing_zeros() as usize);
            }
            w += 1;
            if w == WORDS {
                return None;
            }
            word = self.nonempty[w];
        }
    }

    /// Whether the non-empty bit of bin `i` is set (for integrity checks).
    pub fn marked_nonempty(&self, i: usize) -> bool {
        self.nonempty[i / 64] & (1 << (i % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_ordered_and_floors_are_consistent() {
        let mut prev = 0;
        let mut size = MIN_BLOCK;
        while size < 1 << 30 {
            let i = bin_of(size);
            assert!(i >= prev, "bins must not decrease with size");
            assert!(i < NUM_BINS);
            assert!(bin_floor(i) <= size, "floor of bin {i} above {size}");
            if i + 1 < NUM_BINS {
                assert!(
                    bin_floor(i + 1) > size,
                    "size {size} should be below bin {}",
                    i + 1
                );
            }
            prev = i;
            size += if size < 8192 {
                GRANULE
            } else {
                (size / 64) & !(GRANULE - 1)
            };
        }
        assert_eq!(bin_of(MIN_BLOCK), 0);
        assert_eq!(bin_of(EXACT_LIMIT), 62);
        assert_eq!(bin_of(EXACT_LIMIT + GRANULE), 63);
        assert!(bin_of((1 << 48) - GRANULE) < NUM_BINS);
        for i in 0..NUM_BINS {
            assert_eq!(bin_of(bin_floor(i)), i);
        }
    }

    #[test]
    fn nonempty_search_follows_the_heads() {
        let mut b = Bins::new();
        assert_eq!(b.first_nonempty_from(0), None);
        b.set_head(5, Some(BlockAddr::new(0x108)));
        b.set_head(200, Some(BlockAddr::new(0x208)));
        assert_eq!(b.first_nonempty_from(0), Some(5));
        assert_eq!(b.first_nonempty_from(6), Some(200));
        assert_eq!(b.first_nonempty_from(NUM_BINS - 1), None);
        b.set_head(5, None);
        assert_eq!(b.first_nonempty_from(0), Some(200));
        assert!(!b.marked_nonempty(5) && b.marked_nonempty(200));
    }
}
