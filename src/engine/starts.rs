//! Out-of-band block starts and block states: which granules begin a block, and what that
//! block is.
//!
//! This map is what makes misuse detection certain. It lives outside the blocks, where no
//! buffer overflow or dangling write of the program can reach it, so:
//! - a pointer is a live block's payload if and only if its `live` bit is set (a double free,
//!   a foreign or an interior pointer can never pass);
//! - a header's size is only followed once the map confirms a block starts where it points and
//!   nowhere in between;
//! - a free-list link is only followed to a block whose `free` bit says it is on a bin, so a
//!   forged link can never reach a live, cached or quarantined block.
//!
//! Granule `g` (a [`Granule`]) stands for the payload address `base + g * GRANULE`: a block is
//! recorded at its payload's granule (see [`super::addr`]). Each start has exactly one
//! state: *live* (`live` bit), *binned* free (`free` bit), *quarantined* (`quarantined` bit:
//! damaged memory set aside for good), or *cached* (none of the three: on a quick stack).
//! Bits are kept in groups of four words (`starts`, `live`, `free`, `quarantined`) per
//! 64 granules, 32 bytes, so that one cache line answers every question about a block.
//!
//! A summary level above the groups has one bit per group, and a top level one bit per summary
//! word, so that checking that a large block has no start inside it reads a few words instead
//! of one per KiB of the block; the map also keeps its last start, which confirms the top block
//! of a span in O(1).
//!
//! Invariants kept here:
//! - `live[g]`, `free[g]` and `quarantined[g]` each imply `starts[g]`, and at most one of them
//!   is set.
//! - `starts[g]` is set exactly for the payload granules of the blocks that exist now; all other
//!   bits, including those past the end of the managed span, are clear.
//! - Summary bit `i` is set exactly when group `i`'s `starts` word is non-zero, for every group
//!   the map holds (the spare ones included: they stay zero, so their bits stay clear). Only
//!   `add_free` and `remove` change `starts`, and each updates the summary with it.
//! - Top bit `w` is set exactly when summary word `w` is non-zero; `last` is the highest start
//!   (0 if there is none).

use super::addr::Granule;

/// Bits for one group of 64 granules.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Group {
    starts: u64,
    live: u64,
    free: u64,
    quarantined: u64,
}

static_assertions::assert_eq_size!(Group, [u64; 4]);

/// Groups a map over `granules` granules holds. Two spare groups at the end let the window
/// check in `spans_exactly` read one group past any block without a bounds branch.
const fn group_count(granules: usize) -> usize {
    granules.div_ceil(64) + 2
}

/// Bytes at the start of a map whose groups cover the first `granules` granules (and the
/// spare groups after them): what must stay resident for a span of that many granules. The
/// rest of the groups read as zero and may be given back to the OS.
pub(crate) const fn groups_bytes(granules: usize) -> usize {
    group_count(granules) * core::mem::size_of::<Group>()
}

/// Bytes of map needed to cover `granules` granules: the groups, then the summary words (one
/// bit per group, so 1/256 of the groups' size), then the top words (one bit per summary word).
pub(crate) const fn map_bytes(granules: usize) -> usize {
    let groups = group_count(granules);
    let summary = groups.div_ceil(64);
    groups * core::mem::size_of::<Group>()
        + (summary + summary.div_ceil(64)) * core::mem::size_of::<u64>()
}

/// The start and state bitmaps over a span of granules, stored in memory the owner provides.
pub(crate) struct StartMap {
    groups: *mut Group,
    /// One bit per group, set iff that group's `starts` word is non-zero (see the module
    /// docs); stored right after the groups.
    summary: *mut u64,
    /// One bit per summary word, set iff that word is non-zero; stored right after the
    /// summary. With it the next start after any granule is a few words away, however far.
    top: *mut u64,
    granules: usize,
    /// The highest granule with a start, 0 if none (granule 0 never holds one): what confirms
    /// in O(1) that a block reaching the end of the span has no start inside it, however
    /// large it is (the heap's top block).
    last: usize,
}

/// What [`StartMap::counts`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MapCounts {
    pub starts: usize,
    pub live: usize,
    pub binned: usize,
    pub quarantined: usize,
    /// Every state bit is on a start, and no start has two states.
    pub consistent: bool,
}

/// Whether any bit in `first..=last` of the bit array whose words `word` reads is set.
/// Reads only the words covering that range.
#[inline(always)]
fn any_bit_in(word: impl Fn(usize) -> u64, first: usize, last: usize) -> bool {
    debug_assert!(first <= last);
    let (mut i, end) = (first / 64, last / 64);
    let mut w = word(i) & (u64::MAX << (first % 64));
    while i < end {
        if w != 0 {
            return true;
        }
        i += 1;
        w = word(i);
    }
    w & (u64::MAX >> (63 - last % 64)) != 0
}

impl StartMap {
    /// A map over `granules` granules stored at `groups`.
    ///
    /// # Safety
    ///
    /// `groups` must point to `map_bytes(granules)` bytes of zeroed memory, aligned for `u64`
    /// (a page start in practice, so that each group sits in one cache line), that nothing
    /// else accesses while the map exists.
    pub unsafe fn new(groups: *mut u8, granules: usize) -> StartMap {
        let groups: *mut Group = groups.cast();
        // SAFETY: as for the summary below: the top words follow the summary words inside the
        // `map_bytes(granules)` bytes promised by the caller.
        let top = unsafe {
            groups
                .add(group_count(granules))
                .cast::<u64>()
                .add(group_count(granules).div_ceil(64))
        };
        StartMap {
            groups,
            top,
            // SAFETY: the summary words start right after the groups, inside the
            // `map_bytes(granules)` bytes promised by the caller; `Group` is four `u64`s, so the
            // address stays aligned for `u64`.
            summary: unsafe { groups.add(group_count(granules)) }.cast(),
            granules,
            last: 0,
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
    pub fn get(&self, g: Granule) -> (bool, bool) {
        let g = g.index();
        let grp = self.group(g);
        let bit = 1u64 << (g % 64);
        (grp.starts & bit != 0, grp.live & bit != 0)
    }

    /// Whether a block starts at `g` (free or allocated).
    #[inline(always)]
    pub fn is_start(&self, g: Granule) -> bool {
        self.get(g).0
    }

    /// Whether an allocated block starts at `g`.
    #[inline(always)]
    pub fn is_live(&self, g: Granule) -> bool {
        self.get(g).1
    }

    /// Whether a binned free block starts at `g` (one on a free list).
    #[inline(always)]
    pub fn is_binned(&self, g: Granule) -> bool {
        let g = g.index();
        self.group(g).free & (1u64 << (g % 64)) != 0
    }

    /// Whether a cached (quick-stack) block starts at `g`.
    #[inline(always)]
    pub fn is_cached(&self, g: Granule) -> bool {
        let g = g.index();
        let grp = self.group(g);
        (grp.starts & !(grp.live | grp.free | grp.quarantined)) >> (g % 64) & 1 != 0
    }

    /// Whether a quarantined block starts at `g`.
    #[inline(always)]
    pub fn is_quarantined(&self, g: Granule) -> bool {
        let g = g.index();
        self.group(g).quarantined & (1u64 << (g % 64)) != 0
    }

    /// Summary word `w` (groups `64 * w ..`).
    #[inline(always)]
    fn summary_word(&self, w: usize) -> u64 {
        debug_assert!(w < group_count(self.granules).div_ceil(64));
        // SAFETY: `map_bytes` provides a summary word for every 64 groups the map holds, and
        // callers only ask for words of groups below `group_count(granules)`.
        unsafe { *self.summary.add(w) }
    }

    /// Summary word `w`, for updating it.
    #[inline(always)]
    fn summary_word_mut(&mut self, w: usize) -> &mut u64 {
        debug_assert!(w < group_count(self.granules).div_ceil(64));
        // SAFETY: as in `summary_word`, and `&mut self` makes the access exclusive.
        unsafe { &mut *self.summary.add(w) }
    }

    /// Top word `t` (summary words `64 * t ..`).
    #[inline(always)]
    fn top_word(&self, t: usize) -> u64 {
        debug_assert!(t < group_count(self.granules).div_ceil(64).div_ceil(64));
        // SAFETY: `map_bytes` provides a top word for every 64 summary words.
        unsafe { *self.top.add(t) }
    }

    /// Top word `t`, for updating it.
    #[inline(always)]
    fn top_word_mut(&mut self, t: usize) -> &mut u64 {
        debug_assert!(t < group_count(self.granules).div_ceil(64).div_ceil(64));
        // SAFETY: as in `top_word`, and `&mut self` makes the access exclusive.
        unsafe { &mut *self.top.add(t) }
    }

    /// Records a new binned free block at `g`, where no live block starts: either no block
    /// starts there yet, or a free one is cut shorter.
    #[inline(always)]
    pub fn add_free(&mut self, g: Granule) {
        let g = g.index();
        let bit = 1u64 << (g % 64);
        let grp = self.group_mut(g);
        debug_assert!(grp.live & bit == 0, "add_free over an allocated block");
        let was = grp.starts;
        grp.starts = was | bit;
        grp.free |= bit;
        grp.quarantined &= !bit;
        self.note_start(g, was);
    }

    /// Records a new cached block at `g`, inside a cached block cut shorter (no block starts
    /// there): a start with no state bit.
    #[inline(always)]
    pub fn add_cached(&mut self, g: Granule) {
        let g = g.index();
        let bit = 1u64 << (g % 64);
        let grp = self.group_mut(g);
        debug_assert!(grp.starts & bit == 0, "add_cached over a block start");
        let was = grp.starts;
        grp.starts = was | bit;
        self.note_start(g, was);
    }

    /// Keeps the summary and the last start in step with a start just added at `g`, whose
    /// group's `starts` word was `was` before.
    #[inline(always)]
    fn note_start(&mut self, g: usize, was: u64) {
        // Only a group's first start sets its summary bit; blocks freed or merged where a
        // start already was (most calls) leave the summary alone.
        if was == 0 {
            let i = g / 64;
            let w = i / 64;
            let sum = self.summary_word_mut(w);
            let was_empty = *sum == 0;
            *sum |= 1u64 << (i % 64);
            if was_empty {
                *self.top_word_mut(w / 64) |= 1u64 << (w % 64);
            }
        }
        self.last = self.last.max(g);
    }

    /// The highest granule with a start, if any.
    #[inline(always)]
    pub fn last_start(&self) -> Option<Granule> {
        (self.last != 0).then_some(Granule::new(self.last))
    }

    /// Forgets the block at `g` (merged into its neighbour, or cut off the span).
    #[inline(always)]
    pub fn remove(&mut self, g: Granule) {
        let g = g.index();
        let bit = 1u64 << (g % 64);
        let grp = self.group_mut(g);
        grp.starts &= !bit;
        grp.live &= !bit;
        grp.free &= !bit;
        grp.quarantined &= !bit;
        if grp.starts == 0 {
            // That was the group's last start: its summary bit must go with it (and the top
            // bit, if that was the summary word's last).
            let i = g / 64;
            let w = i / 64;
            let sum = self.summary_word_mut(w);
            *sum &= !(1u64 << (i % 64));
            if *sum == 0 {
                *self.top_word_mut(w / 64) &= !(1u64 << (w % 64));
            }
        }
        if g == self.last {
            // Usually the start before is close (a top block merged into the one before it).
            self.last = g
                .checked_sub(1)
                .and_then(|h| self.start_at_or_before(Granule::new(h)))
                .map_or(0, Granule::index);
        }
    }

    /// Marks the block at `g`, binned or cached until now, allocated.
    #[inline(always)]
    pub fn mark_live(&mut self, g: Granule) {
        let g = g.index();
        let bit = 1u64 << (g % 64);
        let grp = self.group_mut(g);
        debug_assert!(grp.starts & bit != 0 && grp.quarantined & bit == 0);
        grp.live |= bit;
        grp.free &= !bit;
    }

    /// Marks the cached block at `g` allocated: a cached block has no state bit, so only
    /// `live` changes. (The hot path of `alloc`.)
    #[inline(always)]
    pub fn mark_cached_live(&mut self, g: Granule) {
        let g = g.index();
        let bit = 1u64 << (g % 64);
        let grp = self.group_mut(g);
        debug_assert!(grp.starts & bit != 0 && (grp.live | grp.free | grp.quarantined) & bit == 0);
        grp.live |= bit;
    }

    /// Marks the block at `g`, live until now, cached: free for misuse detection, allocated
    /// to its neighbours. (The hot path of `free`: one bit changes.)
    #[inline(always)]
    pub fn mark_cached(&mut self, g: Granule) {
        let g = g.index();
        let bit = 1u64 << (g % 64);
        let grp = self.group_mut(g);
        debug_assert!(grp.live & bit != 0 && (grp.free | grp.quarantined) & bit == 0);
        grp.live &= !bit;
    }

    /// Marks the block at `g`, live or cached until now, binned free.
    #[inline(always)]
    pub fn mark_binned(&mut self, g: Granule) {
        let g = g.index();
        let bit = 1u64 << (g % 64);
        let grp = self.group_mut(g);
        debug_assert!(grp.starts & bit != 0 && grp.quarantined & bit == 0);
        grp.live &= !bit;
        grp.free |= bit;
    }

    /// Marks the block at `g`, binned or cached until now, quarantined.
    pub fn mark_quarantined(&mut self, g: Granule) {
        let g = g.index();
        let bit = 1u64 << (g % 64);
        let grp = self.group_mut(g);
        debug_assert!(grp.starts & bit != 0 && grp.live & bit == 0);
        grp.free &= !bit;
        grp.quarantined |= bit;
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
    pub fn starts_after(&self, g: Granule) -> u64 {
        let g = g.index();
        let lo = g + 1;
        let (i, shift) = (lo / 64, (lo % 64) as u32);
        // Both words are always read (the spare groups make `i + 1` valid even for the last
        // granule), so the window is one double shift with no branch on the alignment.
        let pair = (self.starts_word(i + 1) as u128) << 64 | self.starts_word(i) as u128;
        (pair >> shift) as u64
    }

    /// Whether the block at `g` is exactly `k` granules long by the map: no block starts
    /// inside it, and one starts right after it unless it is the last block (`at_end`).
    /// Blocks of up to 64 granules (1 KiB) are checked with one 128-bit window, no loop.
    #[inline(always)]
    pub fn spans_exactly(&self, g: Granule, k: usize, at_end: bool) -> bool {
        let g = g.index();
        debug_assert!(k >= 1);
        if k <= 64 {
            let window = self.starts_after(Granule::new(g));
            let mask = u64::MAX >> (64 - k);
            let want = if at_end { 0 } else { 1u64 << (k - 1) };
            window & mask == want
        } else {
            let (g, end) = (Granule::new(g), Granule::new(g + k));
            !self.any_start_between(g, end) && (at_end || self.is_start(end))
        }
    }

    /// Whether any block starts strictly between `lo` and `hi` (`lo < hi <= granules`).
    /// The partial groups at either end are read directly and the whole groups between them
    /// through the summary, so a block of up to 64 KiB costs at most four words, and larger
    /// ones one more summary word per 64 KiB; never anything outside the range.
    #[inline]
    pub fn any_start_between(&self, lo: Granule, hi: Granule) -> bool {
        let (lo, hi) = (lo.index(), hi.index());
        let first = lo + 1;
        if first >= hi {
            return false;
        }
        let last = hi - 1;
        let (i, end) = (first / 64, last / 64);
        let head = self.starts_word(i) & (u64::MAX << (first % 64));
        let tail_mask = u64::MAX >> (63 - last % 64);
        if i == end {
            return head & tail_mask != 0;
        }
        if head != 0 || self.starts_word(end) & tail_mask != 0 {
            return true;
        }
        // Groups `i + 1 .. end` lie wholly inside the range: any start in them shows as a
        // summary bit.
        i + 1 < end && any_bit_in(|w| self.summary_word(w), i + 1, end - 1)
    }

    /// The first block start after `g`, if any: the rest of `g`'s group, else the first group
    /// with a start found through the summary and the top words, so a few words are read
    /// however far away it is.
    pub fn next_start_after(&self, g: Granule) -> Option<Granule> {
        let g = g.index();
        let lo = g + 1;
        if lo >= self.granules {
            return None;
        }
        let i = lo / 64;
        let word = self.starts_word(i) & (u64::MAX << (lo % 64));
        let found = if word != 0 {
            i * 64 + word.trailing_zeros() as usize
        } else {
            let j = self.next_group_from(i + 1)?;
            j * 64 + self.starts_word(j).trailing_zeros() as usize
        };
        (found < self.granules).then_some(Granule::new(found))
    }

    /// The first group at or after `first` that holds a start.
    fn next_group_from(&self, first: usize) -> Option<usize> {
        let words = group_count(self.granules).div_ceil(64);
        let w = first / 64;
        if w >= words {
            return None;
        }
        let sum = self.summary_word(w) & (u64::MAX << (first % 64));
        if sum != 0 {
            return Some(w * 64 + sum.trailing_zeros() as usize);
        }
        // The first non-empty summary word after `w`: the lowest top bit above bit `w`.
        let (next, tops) = (w + 1, words.div_ceil(64));
        let mut t = next / 64;
        if t >= tops {
            return None;
        }
        let mut top = self.top_word(t) & (u64::MAX << (next % 64));
        while top == 0 {
            t += 1;
            if t >= tops {
                return None;
            }
            top = self.top_word(t);
        }
        let w = t * 64 + top.trailing_zeros() as usize;
        // The top invariant guarantees the word is non-zero.
        Some(w * 64 + self.summary_word(w).trailing_zeros() as usize)
    }

    /// The last block start at or before `g`, if any. Groups before `g`'s are found through
    /// the summary, one word per 64 KiB of span searched.
    pub fn start_at_or_before(&self, g: Granule) -> Option<Granule> {
        let g = g.index();
        let g = g.min(self.granules.checked_sub(1)?);
        let top = |i: usize, word: u64| i * 64 + 63 - word.leading_zeros() as usize;
        let i = g / 64;
        let word = self.group(g).starts & (u64::MAX >> (63 - g % 64));
        if word != 0 {
            return Some(Granule::new(top(i, word)));
        }
        // The last group before `i` with a start: the highest summary bit below bit `i`.
        let mut w = i / 64;
        let mut sum = self.summary_word(w) & ((1u64 << (i % 64)) - 1);
        while sum == 0 {
            if w == 0 {
                return None;
            }
            w -= 1;
            sum = self.summary_word(w);
        }
        let j = top(w, sum);
        let word = self.starts_word(j);
        // The summary invariant guarantees a start in group `j`; without one, `top` would
        // name a granule of the group before.
        debug_assert!(word != 0, "summary bit {j} set for an empty group");
        Some(Granule::new(top(j, word)))
    }

    /// Groups `counts` and `summary_agrees` look at for an extent of `granules` in use: those
    /// covering it and one spare group after them.
    fn groups_in_use(&self, granules: usize) -> usize {
        (granules.min(self.granules).div_ceil(64) + 1).min(group_count(self.granules))
    }

    /// Counts over the first `granules` granules and the spare groups after them, for
    /// integrity checks: starts, live, binned and quarantined bits, and whether every state bit
    /// sits on a start and no start has two states. Everything past `granules` must be clear,
    /// so the caller passes the extent in use and the map's unused tail is not read.
    pub fn counts(&self, granules: usize) -> MapCounts {
        let mut c = MapCounts {
            consistent: true,
            ..MapCounts::default()
        };
        for i in 0..self.groups_in_use(granules) {
            // SAFETY: `i` is below `group_count(self.granules)`, the groups the map holds.
            let grp = unsafe { &*self.groups.add(i) };
            let states = grp.live | grp.free | grp.quarantined;
            let two =
                (grp.live & grp.free) | (grp.live & grp.quarantined) | (grp.free & grp.quarantined);
            c.consistent &= states & !grp.starts == 0 && two == 0;
            c.starts += grp.starts.count_ones() as usize;
            c.live += grp.live.count_ones() as usize;
            c.binned += grp.free.count_ones() as usize;
            c.quarantined += grp.quarantined.count_ones() as usize;
        }
        c
    }

    /// Whether the summary bits agree with the groups (see the module docs) over the groups
    /// `counts` looks at, and are clear past them in the last summary word read. Like `counts`,
    /// it leaves the map's unused tail unread: invariant 2 of the engine keeps it empty.
    pub fn summary_agrees(&self, granules: usize) -> bool {
        let groups = self.groups_in_use(granules);
        let marked = |i: usize| self.summary_word(i / 64) >> (i % 64) & 1 != 0;
        let last = groups - 1;
        let beyond = self.summary_word(last / 64) & !(u64::MAX >> (63 - last % 64));
        let words = last / 64 + 1;
        let topped = |w: usize| self.top_word(w / 64) >> (w % 64) & 1 != 0;
        let last_word = words - 1;
        let top_beyond = self.top_word(last_word / 64) & !(u64::MAX >> (63 - last_word % 64));
        beyond == 0
            && top_beyond == 0
            && (0..groups).all(|i| marked(i) == (self.starts_word(i) != 0))
            && (0..words).all(|w| topped(w) == (self.summary_word(w) != 0))
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
                m.add_free(Granule::new(g));
            }
            m.mark_live(Granule::new(64));
            assert_eq!(m.get(Granule::new(64)), (true, true));
            assert!(
                m.is_binned(Granule::new(63))
                    && !m.is_binned(Granule::new(64))
                    && m.is_live(Granule::new(64))
            );
            m.mark_live(Granule::new(5));
            m.mark_cached(Granule::new(5));
            assert!(
                m.is_cached(Granule::new(5))
                    && !m.is_binned(Granule::new(5))
                    && !m.is_live(Granule::new(5))
                    && !m.is_cached(Granule::new(63))
            );
            m.mark_binned(Granule::new(5));
            assert!(m.is_binned(Granule::new(5)) && !m.is_cached(Granule::new(5)));
            m.mark_quarantined(Granule::new(5));
            assert!(
                m.is_quarantined(Granule::new(5))
                    && !m.is_binned(Granule::new(5))
                    && !m.is_cached(Granule::new(5))
            );
            m.add_free(Granule::new(5));
            assert!(m.is_binned(Granule::new(5)) && !m.is_quarantined(Granule::new(5)));
            assert_eq!(
                m.next_start_after(Granule::new(0)).map(Granule::index),
                Some(1)
            );
            assert_eq!(
                m.next_start_after(Granule::new(5)).map(Granule::index),
                Some(63)
            );
            assert_eq!(
                m.next_start_after(Granule::new(64)).map(Granule::index),
                Some(200)
            );
            assert_eq!(
                m.next_start_after(Granule::new(200)).map(Granule::index),
                Some(299)
            );
            assert_eq!(
                m.next_start_after(Granule::new(299)).map(Granule::index),
                None
            );
            assert_eq!(
                m.start_at_or_before(Granule::new(0)).map(Granule::index),
                None
            );
            assert_eq!(
                m.start_at_or_before(Granule::new(4)).map(Granule::index),
                Some(1)
            );
            assert_eq!(
                m.start_at_or_before(Granule::new(64)).map(Granule::index),
                Some(64)
            );
            assert_eq!(
                m.start_at_or_before(Granule::new(199)).map(Granule::index),
                Some(64)
            );
            assert_eq!(
                m.start_at_or_before(Granule::new(1000)).map(Granule::index),
                Some(299)
            );
            assert!(m.any_start_between(Granule::new(5), Granule::new(64)));
            assert!(!m.any_start_between(Granule::new(64), Granule::new(200)));
            let c = m.counts(300);
            assert_eq!((c.starts, c.live, c.binned, c.consistent), (6, 1, 5, true));
            m.remove(Granule::new(64));
            let c = m.counts(300);
            assert_eq!((c.starts, c.live, c.binned), (5, 0, 5));
            assert_eq!(
                m.start_at_or_before(Granule::new(199)).map(Granule::index),
                Some(63)
            );
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
                    m.remove(Granule::new(g));
                } else {
                    m.add_free(Granule::new(g));
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
                    m.spans_exactly(Granule::new(g), k, at_end),
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
                    m.remove(Granule::new(g));
                } else {
                    m.add_free(Granule::new(g));
                }
                model[g] = !model[g];
                let q = rng.range(0, 1000);
                let next = (q + 1..1000).find(|&i| model[i]);
                let prev = (0..=q).rev().find(|&i| model[i]);
                assert_eq!(
                    m.next_start_after(Granule::new(q)).map(Granule::index),
                    next
                );
                assert_eq!(
                    m.start_at_or_before(Granule::new(q)).map(Granule::index),
                    prev
                );
                let hi = rng.range(q + 1, 1001);
                let any = (q + 1..hi).any(|i| model[i]);
                assert_eq!(
                    m.any_start_between(Granule::new(q), Granule::new(hi)),
                    any,
                    "between {q} and {hi}"
                );
                assert!(m.summary_agrees(1000));
            }
        });
    }

    /// Granules of the map the summary tests use: a bit over three summary words of groups,
    /// so long searches cross summary words and end in a partial one.
    const LONG: usize = 64 * 64 * 3 + 64 * 5 + 17;

    /// A granule to toggle or query, often at a group's first or last granule, where the
    /// partial words of a range meet the summary.
    fn pick(rng: &mut crate::test_rng::Rng, below: usize) -> usize {
        let g = rng.range(0, below);
        match rng.range(0, 4) {
            0 => g & !63,
            1 => (g | 63).min(below - 1),
            _ => g,
        }
    }

    #[test]
    fn long_searches_agree_with_a_plain_scan() {
        let mut rng = crate::test_rng::Rng::new(11);
        with_map(LONG, |m| {
            let mut model = vec![false; LONG];
            let mut set: Vec<usize> = Vec::new();
            for step in 0..if cfg!(miri) { 60 } else { 6000 } {
                // Few starts over many groups, so most groups are empty, most removals take a
                // group's last start, and long ranges often hold no start at all. The target
                // count drifts so that both sparse and busier maps are seen.
                let target = [2, 12, 60][step / 500 % 3];
                if set.len() > target || (!set.is_empty() && rng.chance(1, 3)) {
                    let g = set.swap_remove(rng.range(0, set.len()));
                    m.remove(Granule::new(g));
                    model[g] = false;
                } else {
                    let g = pick(&mut rng, LONG);
                    if !model[g] {
                        m.add_free(Granule::new(g));
                        model[g] = true;
                        set.push(g);
                    }
                }
                assert!(m.summary_agrees(LONG), "step {step}");

                let q = pick(&mut rng, LONG);
                // The model's answers come from the few starts in `set`, not a scan of the map,
                // so that Miri can afford them.
                let prev = set.iter().copied().filter(|&g| g <= q).max();
                assert_eq!(
                    m.start_at_or_before(Granule::new(q)).map(Granule::index),
                    prev,
                    "at or before {q}"
                );
                let next = set.iter().copied().filter(|&g| g > q).min();
                assert_eq!(
                    m.next_start_after(Granule::new(q)).map(Granule::index),
                    next,
                    "after {q}"
                );
                // Ranges ending anywhere, and ranges ending exactly at a group boundary.
                let mut hi = rng.range(q + 1, LONG + 1);
                if rng.chance(1, 3) && hi & !63 > q {
                    hi &= !63;
                }
                let any = set.iter().any(|&g| q < g && g < hi);
                assert_eq!(
                    m.any_start_between(Granule::new(q), Granule::new(hi)),
                    any,
                    "between {q} and {hi}"
                );
                // Blocks of every length, up to the whole map, judged as the engine judges
                // them when freeing or reallocating.
                if q + 1 < LONG {
                    let k = rng.range(1, LONG - q);
                    let at_end = q + k == LONG || rng.chance(1, 4);
                    let inside_clear = !set.iter().any(|&g| q < g && g < q + k);
                    let ends = if q + k == LONG {
                        at_end
                    } else if at_end {
                        !model[q + k]
                    } else {
                        model[q + k]
                    };
                    assert_eq!(
                        m.spans_exactly(Granule::new(q), k, at_end),
                        inside_clear && ends,
                        "g {q} k {k} end {at_end}"
                    );
                }
            }
        });
    }

    #[test]
    fn the_last_start_of_a_group_clears_its_summary_bit() {
        with_map(LONG, |m| {
            let far = 64 * 64 * 2 + 64 * 3; // first granule of a group in the third summary word
            m.add_free(Granule::new(far + 5));
            m.add_free(Granule::new(far + 63));
            m.add_free(Granule::new(0));
            assert!(m.any_start_between(Granule::new(0), Granule::new(far + 64)));
            assert_eq!(
                m.start_at_or_before(Granule::new(LONG - 1))
                    .map(Granule::index),
                Some(far + 63)
            );
            m.remove(Granule::new(far + 63));
            // The group still holds a start: its bit must stay.
            assert!(m.summary_agrees(LONG));
            assert!(m.any_start_between(Granule::new(64), Granule::new(LONG)));
            assert_eq!(
                m.start_at_or_before(Granule::new(LONG - 1))
                    .map(Granule::index),
                Some(far + 5)
            );
            m.mark_live(Granule::new(far + 5));
            m.remove(Granule::new(far + 5));
            assert!(m.summary_agrees(LONG));
            assert!(!m.any_start_between(Granule::new(0), Granule::new(LONG)));
            assert!(m.spans_exactly(Granule::new(0), LONG, true));
            assert_eq!(
                m.start_at_or_before(Granule::new(LONG - 1))
                    .map(Granule::index),
                Some(0)
            );
            m.remove(Granule::new(0));
            assert_eq!(
                m.start_at_or_before(Granule::new(LONG - 1))
                    .map(Granule::index),
                None
            );
            assert_eq!((m.counts(LONG).starts, m.counts(LONG).live), (0, 0));
        });
    }

    #[test]
    fn a_summary_that_disagrees_is_caught() {
        with_map(LONG, |m| {
            m.add_free(Granule::new(64 * 70 + 3));
            assert!(m.summary_agrees(LONG));
            // A summary bit for an empty group, and a group whose bit is missing.
            *m.summary_word_mut(0) |= 1 << 9;
            assert!(!m.summary_agrees(LONG));
            *m.summary_word_mut(0) &= !(1 << 9);
            *m.summary_word_mut(1) &= !(1 << 6);
            assert!(!m.summary_agrees(LONG));
            *m.summary_word_mut(1) |= 1 << 6;
            // A bit past the groups in use, in the last summary word read.
            *m.summary_word_mut(0) |= 1 << 63;
            assert!(!m.summary_agrees(64 * 20));
        });
    }
}
