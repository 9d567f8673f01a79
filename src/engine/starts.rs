//! Out-of-band block starts: which granules begin a block, and which of those are allocated.
//!
//! This map is what makes misuse detection certain. It lives outside the blocks, where no
//! buffer overflow or dangling write of the program can reach it, so:
//! - a pointer is a live block's payload if and only if its `live` bit is set (a double free,
//!   a foreign or an interior pointer can never pass);
//! - a header's size is only followed once the map confirms a block starts where it points.
//!
//! Granule `g` stands for the payload address `base + g * GRANULE`. Bits are kept in pairs of
//! words (`starts`, `live`) per 64 granules so that one cache line answers both questions.
//!
//! Invariants kept here:
//! - `live[g]` implies `starts[g]`.
//! - `starts[g]` is set exactly for the payload granules of the blocks that exist now; all other
//!   bits, including those past the end of the managed span, are clear.

/// Bits for one group of 64 granules.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Group {
    starts: u64,
    live: u64,
}

static_assertions::assert_eq_size!(Group, [u64; 2]);

/// Bytes of map needed to cover `granules` granules. Two spare groups at the end let the
/// window check in `spans_exactly` read one group past any block without a bounds branch.
pub(crate) const fn map_bytes(granules: usize) -> usize {
    (granules.div_ceil(64) + 2) * core::mem::size_of::<Group>()
}

/// The start/live bitmap over a span of granules, stored in memory the owner provides.
pub(crate) struct StartMap {
    groups: *mut Group,
    granules: usize,
}

impl StartMap {
    /// A map over `granules` granules stored at `groups`.
    ///
    /// # Safety
    ///
    /// `groups` must point to `map_bytes(granules)` bytes of zeroed memory, aligned for `u64`,
    /// that nothing else accesses while the map exists.
    pub unsafe fn new(groups: *mut u8, granules: usize) -> StartMap {
        StartMap {
            groups: groups.cast(),
            granules,
        }
    }

    #[inline(always)]
    fn group(&self, g: usize) -> &Group {
        debug_assert!(g < self.granules);
        // SAFETY: `g < granules`, so `g / 64` indexes inside the allocation promised to `new`,
        // and only `&self`/`&mut self` methods of this map touch it.
        unsafe { &*self.groups.add(g / 64) }
    }

    #[inline(always)]
    fn group_mut(&mut self, g: usize) -> &mut Group {
        debug_assert!(g < self.granules);
        // SAFETY: as in `group`, and `&mut self` makes the access exclusive.
        unsafe { &mut *self.groups.add(g / 64) }
    }

    /// `(starts, live)` bits of granule `g`.
    #[inline(always)]
    pub fn get(&self, g: usize) -> (bool, bool) {
        let grp = self.group(g);
        let bit = 1u64 << (g % 64);
        (grp.starts & bit != 0, grp.live & bit != 0)
    }

    /// Whether a block starts at `g` (free or allocated).
    #[inline(always)]
    pub fn is_start(&self, g: usize) -> bool {
        self.get(g).0
    }

    /// Whether an allocated block starts at `g`.
    #[inline(always)]
    pub fn is_live(&self, g: usize) -> bool {
        self.get(g).1
    }

    /// Whether a free block starts at `g`.
    #[inline(always)]
    pub fn is_free_start(&self, g: usize) -> bool {
        let (s, l) = self.get(g);
        s && !l
    }

    /// Records a new free block at `g`.
    #[inline(always)]
    pub fn add_free(&mut self, g: usize) {
        let bit = 1u64 << (g % 64);
        let grp = self.group_mut(g);
        grp.starts |= bit;
        grp.live &= !bit;
    }

    /// Forgets the block at `g` (merged into its neighbour, or cut off the span).
    #[inline(always)]
    pub fn remove(&mut self, g: usize) {
        let bit = 1u64 << (g % 64);
        let grp = self.group_mut(g);
        grp.starts &= !bit;
        grp.live &= !bit;
    }

    /// Marks the block at `g` allocated (`true`) or free (`false`).
    #[inline(always)]
    pub fn set_live(&mut self, g: usize, live: bool) {
        let bit = 1u64 << (g % 64);
        let grp = self.group_mut(g);
        debug_assert!(grp.starts & bit != 0);
        if live {
            grp.live |= bit;
        } else {
            grp.live &= !bit;
        }
    }

    /// The `starts` word of group `i`; the spare groups past the end read as 0.
    #[inline(always)]
    fn starts_word(&self, i: usize) -> u64 {
        debug_assert!(i < self.granules.div_ceil(64) + 2);
        // SAFETY: `map_bytes` provides two groups past the last one covering a granule, and
        // callers never ask beyond them (`i <= granules / 64 + 1`).
        unsafe { (*self.groups.add(i)).starts }
    }

    /// The 64 `starts` bits after `g` (bits `g + 1 ..= g + 64`), bit 0 first.
    #[inline(always)]
    pub fn starts_after(&self, g: usize) -> u64 {
        let lo = g + 1;
        let i = lo / 64;
        // One funnel shift over the two words, no branch on the shift being zero.
        let pair = u128::from(self.starts_word(i + 1)) << 64 | u128::from(self.starts_word(i));
        (pair >> (lo % 64)) as u64
    }

    /// Whether the block at `g` is exactly `k` granules long by the map: no block starts
    /// inside it, and one starts right after it unless it is the last block (`at_end`).
    /// Blocks of up to 64 granules (1 KiB) are checked with one 128-bit window, no loop.
    #[inline(always)]
    pub fn spans_exactly(&self, g: usize, k: usize, at_end: bool) -> bool {
        debug_assert!(k >= 1);
        if k <= 64 {
            let window = self.starts_after(g);
            let mask = u64::MAX >> (64 - k);
            let want = if at_end { 0 } else { 1u64 << (k - 1) };
            window & mask == want
        } else {
            !self.any_start_between(g, g + k) && (at_end || self.is_start(g + k))
        }
    }

    /// Whether any block starts strictly between `lo` and `hi` (`lo < hi <= granules`).
    /// Only the words covering that range are read, so the cost follows the block's size,
    /// never the size of the map.
    #[inline]
    pub fn any_start_between(&self, lo: usize, hi: usize) -> bool {
        let first = lo + 1;
        if first >= hi {
            return false;
        }
        let last = hi - 1;
        let (mut i, end) = (first / 64, last / 64);
        let mut word = self.starts_word(i) & (u64::MAX << (first % 64));
        while i < end {
            if word != 0 {
                return true;
            }
            i += 1;
            word = self.starts_word(i);
        }
        word & (u64::MAX >> (63 - last % 64)) != 0
    }

    /// The first block start after `g`, if any (a reference for the bounded searches' tests).
    #[cfg(test)]
    pub fn next_start_after(&self, g: usize) -> Option<usize> {
        let mut i = g + 1;
        if i >= self.granules {
            return None;
        }
        let mut word = self.group(i).starts & (!0u64 << (i % 64));
        loop {
            if word != 0 {
                let found = (i & !63) + word.trailing_zeros() as usize;
                return (found < self.granules).then_some(found);
            }
            i = (i & !63) + 64;
            if i >= self.granules {
                return None;
            }
            word = self.group(i).starts;
        }
    }

    /// The last block start at or before `g`, if any.
    pub fn start_at_or_before(&self, g: usize) -> Option<usize> {
        let mut i = g.min(self.granules.checked_sub(1)?);
        let mut word = self.group(i).starts & (!0u64 >> (63 - i % 64));
        loop {
            if word != 0 {
                return Some((i & !63) + 63 - word.leading_zeros() as usize);
            }
            if i < 64 {
                return None;
            }
            i = (i & !63) - 1;
            word = self.group(i).starts;
        }
    }

    /// `(starts, live)` counts over the first `granules` granules and the spare groups after
    /// them, for integrity checks. Everything past `granules` must be clear, so the caller
    /// passes the extent in use and the map's unused tail is not read.
    pub fn counts(&self, granules: usize) -> (usize, usize) {
        let groups =
            (granules.min(self.granules).div_ceil(64) + 1).min(self.granules.div_ceil(64) + 2);
        (0..groups).fold((0, 0), |(s, l), i| {
            // SAFETY: `i` is below the map's groups plus its two spare ones.
            let grp = unsafe { &*self.groups.add(i) };
            (
                s + grp.starts.count_ones() as usize,
                l + grp.live.count_ones() as usize,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_map(granules: usize, f: impl FnOnce(&mut StartMap)) {
        let mut words = vec![0u64; map_bytes(granules) / 8];
        // SAFETY: `words` is zeroed, u64-aligned, large enough and outlives the map.
        let mut map = unsafe { StartMap::new(words.as_mut_ptr().cast(), granules) };
        f(&mut map);
    }

    #[test]
    fn searches_find_the_neighbouring_starts() {
        with_map(300, |m| {
            for g in [1, 5, 63, 64, 200, 299] {
                m.add_free(g);
            }
            m.set_live(64, true);
            assert_eq!(m.get(64), (true, true));
            assert!(m.is_free_start(63) && !m.is_free_start(64));
            assert_eq!(m.next_start_after(0), Some(1));
            assert_eq!(m.next_start_after(5), Some(63));
            assert_eq!(m.next_start_after(64), Some(200));
            assert_eq!(m.next_start_after(200), Some(299));
            assert_eq!(m.next_start_after(299), None);
            assert_eq!(m.start_at_or_before(0), None);
            assert_eq!(m.start_at_or_before(4), Some(1));
            assert_eq!(m.start_at_or_before(64), Some(64));
            assert_eq!(m.start_at_or_before(199), Some(64));
            assert_eq!(m.start_at_or_before(1000), Some(299));
            assert!(m.any_start_between(5, 64));
            assert!(!m.any_start_between(64, 200));
            assert_eq!(m.counts(300), (6, 1));
            m.remove(64);
            assert_eq!(m.counts(300), (5, 0));
            assert_eq!(m.start_at_or_before(199), Some(63));
        });
    }

    #[test]
    fn exact_spans_agree_with_a_plain_scan() {
        let mut rng = crate::test_rng::Rng::new(9);
        with_map(300, |m| {
            let mut model = [false; 300];
            for _ in 0..if cfg!(miri) { 100 } else { 5000 } {
                let g = rng.range(0, 300);
                if model[g] {
                    m.remove(g);
                } else {
                    m.add_free(g);
                }
                model[g] = !model[g];
                let g = rng.range(0, 299);
                let k = rng.range(1, (300 - g).min(90));
                let at_end = g + k >= 300 || rng.chance(1, 4);
                let inside_clear = (g + 1..g + k).all(|i| !model[i]);
                let ends = if at_end {
                    g + k >= 300 || !model[g + k]
                } else {
                    model[g + k]
                };
                assert_eq!(
                    m.spans_exactly(g, k, at_end),
                    inside_clear && ends,
                    "g {g} k {k} end {at_end}"
                );
            }
        });
    }

    #[test]
    fn searches_agree_with_a_plain_scan() {
        let mut rng = crate::test_rng::Rng::new(7);
        with_map(1000, |m| {
            let mut model = [false; 1000];
            for _ in 0..if cfg!(miri) { 50 } else { 3000 } {
                let g = rng.range(0, 1000);
                if model[g] {
                    m.remove(g);
                } else {
                    m.add_free(g);
                }
                model[g] = !model[g];
                let q = rng.range(0, 1000);
                let next = (q + 1..1000).find(|&i| model[i]);
                let prev = (0..=q).rev().find(|&i| model[i]);
                assert_eq!(m.next_start_after(q), next);
                assert_eq!(m.start_at_or_before(q), prev);
                let hi = rng.range(q + 1, 1001);
                let any = (q + 1..hi).any(|i| model[i]);
                assert_eq!(m.any_start_between(q, hi), any, "between {q} and {hi}");
            }
        });
    }
}
