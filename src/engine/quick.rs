//! Quick stacks: deferred coalescing for small blocks.
//!
//! Most programs free a small block and soon ask for one of the same size again. Merging the
//! block with its neighbours on free and splitting it off again on the next allocation is
//! wasted work, so a freed block of up to [`MAX_SIZE`] bytes first goes on a short stack of its
//! exact size and is handed out again from there. Its `live` bit is cleared at once, so a
//! double free or a use of the stale pointer is detected exactly as for any free block; only
//! the merging is postponed. When a request finds nothing else, the stacks are flushed (their
//! blocks merged and binned properly) before the engine gives up or the heap grows.
//!
//! The stacks live here, inside the engine, not in the freed blocks: a dangling write by the
//! program cannot redirect them, so handing out a cached block needs no search and no list
//! check; only its header, which the program can reach, is compared with the stack's size.
//!
//! Invariants kept here:
//! - A cached block has its `starts` bit set and no state bit (neither `live` nor `free` nor
//!   `quarantined`), and a header *without* the `FREE` flag: neighbours treat it as allocated
//!   and never merge with it.
//! - Every cached block is on exactly one stack, the one of its exact size; `counts[i]`
//!   entries of `slots[i]` are in use.

use super::addr::BlockAddr;
use super::block::{GRANULE, MIN_BLOCK};

/// The largest block size that is cached. Up to 1 KiB a freed block's extent comes from one
/// window of the start map; above, from its map-confirmed header. The limit is 2 KiB rather
/// than 1 KiB because a program's hot sizes do not stop at a power of two (the recorded trace's
/// figures are in docs/BENCHMARKS.md).
pub(crate) const MAX_SIZE: usize = 2048;
/// Number of stacks: one per block size up to [`MAX_SIZE`].
pub(crate) const LISTS: usize = (MAX_SIZE - MIN_BLOCK) / GRANULE + 1;
/// Most blocks a stack holds; further frees of that size coalesce at once.
pub(crate) const LIMIT: usize = 16;
/// `counts` rounded up to whole 8-byte words.
const COUNT_BYTES: usize = LISTS.next_multiple_of(8);

/// The stacks of cached blocks.
pub(crate) struct Quick {
    /// The cached blocks of each size.
    slots: [[BlockAddr; LIMIT]; LISTS],
    /// Entries in use per stack, padded to whole words (the padding stays 0) so that
    /// `first_nonempty_above` reads eight counts at a time.
    counts: [u8; COUNT_BYTES],
    /// How deep `push` fills a stack: [`LIMIT`], or 0 while caching is off.
    depth: u8,
}

impl Quick {
    pub const fn new() -> Quick {
        Quick {
            slots: [[BlockAddr::new(0); LIMIT]; LISTS],
            counts: [0; COUNT_BYTES],
            depth: LIMIT as u8,
        }
    }

    /// Turns caching on or off; off, every `push` is refused (what is cached stays until
    /// popped or flushed). Returns whether it was on.
    pub fn set_enabled(&mut self, on: bool) -> bool {
        let was = self.depth != 0;
        self.depth = if on { LIMIT as u8 } else { 0 };
        was
    }

    /// Blocks cached over all stacks (summed on demand: only slow paths ask).
    pub fn total(&self) -> usize {
        self.counts.iter().map(|&c| c as usize).sum()
    }

    /// The stack a block of `size` bytes goes on (`size <= MAX_SIZE`).
    #[inline(always)]
    pub fn list_of(size: usize) -> usize {
        size / GRANULE - MIN_BLOCK / GRANULE
    }

    /// The block size of stack `i`.
    #[inline(always)]
    pub fn size_of(i: usize) -> usize {
        (i + MIN_BLOCK / GRANULE) * GRANULE
    }

    /// The first non-empty stack above stack `i`: the smallest cached blocks larger than
    /// `size_of(i)`. Only a request that found its own stack empty asks, so the search reads
    /// the counts eight at a time rather than costing push and pop a bitmap to keep.
    #[inline]
    pub fn first_nonempty_above(&self, i: usize) -> Option<usize> {
        let from = i + 1;
        let mut w = from / 8;
        // The counts of stacks `i` and below in the first word are masked off.
        let mut mask = !0u64 << ((from % 8) * 8);
        while let Some(chunk) = self.counts.get(w * 8..w * 8 + 8) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            let word = u64::from_le_bytes(bytes) & mask;
            if word != 0 {
                return Some(w * 8 + word.trailing_zeros() as usize / 8);
            }
            mask = !0;
            w += 1;
        }
        None
    }

    /// Whether stack `i` has room for one more block (and caching is on).
    #[inline(always)]
    pub fn has_room(&self, i: usize) -> bool {
        i < LISTS && self.counts[i] < self.depth
    }

    /// Takes the most recently cached block of stack `i`, if any.
    #[inline(always)]
    pub fn pop(&mut self, i: usize) -> Option<BlockAddr> {
        debug_assert!(i < LISTS);
        let count = self.counts.get_mut(i).filter(|_| i < LISTS)?;
        let n = *count as usize;
        if n == 0 {
            return None;
        }
        *count -= 1;
        // SAFETY: `i < LISTS` (the `get_mut` above) and `0 < n <= LIMIT` (counts only grow
        // through `push`, which stops at LIMIT).
        Some(unsafe { *self.slots.get_unchecked(i).get_unchecked(n - 1) })
    }

    /// The most recently cached block of stack `i`, if any, left on the stack: the hot path
    /// of `alloc` looks at its header before it takes it ([`drop_top`](Self::drop_top)).
    #[inline(always)]
    pub fn top(&self, i: usize) -> Option<BlockAddr> {
        let n = *self.counts.get(i).filter(|_| i < LISTS)? as usize;
        let at = n.checked_sub(1)?;
        // SAFETY: `i < LISTS` was just checked and `at < n <= LIMIT` (counts only grow through
        // `push`, which stops at LIMIT).
        Some(unsafe { *self.slots.get_unchecked(i).get_unchecked(at) })
    }

    /// Removes the top of stack `i`, which [`top`](Self::top) just returned.
    #[inline(always)]
    pub fn drop_top(&mut self, i: usize) {
        debug_assert!(i < LISTS && self.counts[i] > 0);
        if let Some(n) = self.counts.get_mut(i) {
            *n = n.saturating_sub(1);
        }
    }

    /// Takes the most recently cached block of stack `i` whose payload is aligned to `align`,
    /// if any: an over-aligned request served without carving.
    #[inline]
    pub fn pop_aligned(&mut self, i: usize, align: usize) -> Option<BlockAddr> {
        debug_assert!(i < LISTS);
        let n = *self.counts.get(i)? as usize;
        let stack = self.slots.get_mut(i)?.get_mut(..n)?;
        let at = stack
            .iter()
            .rposition(|&b| b.payload().get() & (align - 1) == 0)?;
        // The order within a stack does not matter beyond preferring recent blocks; the top
        // entry takes the hole.
        let b = stack[at];
        stack[at] = stack[n - 1];
        self.counts[i] = (n - 1) as u8;
        Some(b)
    }

    /// Caches block `b` on stack `i`; `false` if the stack is full, caching is off, or `i` names no
    /// stack (a block larger than [`MAX_SIZE`]).
    #[inline(always)]
    pub fn push(&mut self, i: usize, b: BlockAddr) -> bool {
        let Some(&n) = self.counts.get(i).filter(|_| i < LISTS) else {
            return false;
        };
        let n = n as usize;
        if n >= self.depth as usize {
            return false;
        }
        // SAFETY: `i < LISTS` (the `get` above) and `n < depth <= LIMIT` was just checked.
        unsafe { *self.slots.get_unchecked_mut(i).get_unchecked_mut(n) = b };
        self.counts[i] = (n + 1) as u8;
        true
    }

    /// The blocks cached on stack `i`, oldest first.
    pub fn entries(&self, i: usize) -> &[BlockAddr] {
        let n = self.counts.get(i).map_or(0, |&n| n as usize);
        self.slots.get(i).map_or(&[], |s| &s[..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(addr: usize) -> BlockAddr {
        BlockAddr::new(addr)
    }

    #[test]
    fn stacks_are_lifo_and_bounded() {
        let mut q = Quick::new();
        assert_eq!(q.pop(3), None);
        for k in 0..LIMIT {
            assert!(q.push(3, b(0x1008 + k * 16)));
        }
        assert!(!q.push(3, b(0x9008)));
        assert!(!q.push(LISTS, b(0x9008)), "no stack past the last");
        assert!(!q.push(Quick::list_of(1 << 40), b(0x9008)));
        // Payloads are at 0x1010 + 16k, 64-aligned for k = 3, 7, 11, 15. Take k = 15 (the top)
        // away first, so the most recent aligned one (k = 11) sits below the top.
        assert_eq!(q.top(3), Some(b(0x1008 + 15 * 16)));
        let top = q.pop(3).unwrap();
        assert_eq!(
            q.top(3),
            Some(b(0x1008 + 14 * 16)),
            "the top stays until taken"
        );
        let aligned = q.pop_aligned(3, 64).unwrap();
        assert_eq!(aligned, b(0x1008 + 11 * 16));
        assert_eq!(q.entries(3).len(), LIMIT - 2);
        assert!(!q.entries(3).contains(&aligned));
        assert!(
            q.entries(3).contains(&b(0x1008 + 14 * 16)),
            "the top took the hole"
        );
        assert_eq!(q.pop_aligned(3, 4096), None);
        assert!(q.push(3, top));
        assert!(q.push(3, aligned));
        assert_eq!(q.total(), LIMIT);
        assert_eq!(q.pop(3), Some(aligned), "last in, first out");
        assert_eq!(q.entries(3).len(), LIMIT - 1);
        assert_eq!(Quick::size_of(Quick::list_of(528)), 528);
    }

    #[test]
    fn the_search_above_finds_the_smallest_larger_stack() {
        let mut q = Quick::new();
        for i in 0..LISTS {
            assert_eq!(q.first_nonempty_above(i), None);
        }
        // Every pair of stacks, across word boundaries and at the last stack, against a scan.
        let mut rng = crate::test_rng::Rng::new(7);
        for _ in 0..if cfg!(miri) { 20 } else { 200 } {
            let a = rng.range(0, LISTS);
            let c = rng.range(0, LISTS);
            assert!(q.push(a, b(0x1008)));
            assert!(q.push(c, b(0x2008)));
            // The scan runs from the top down, so it costs one look per stack.
            let mut want = None;
            for i in (0..LISTS).rev() {
                assert_eq!(q.first_nonempty_above(i), want, "{a} {c} from {i}");
                if !q.entries(i).is_empty() {
                    want = Some(i);
                }
            }
            assert!(q.pop(a).is_some() && q.pop(c).is_some());
            assert!(q.has_room(a));
        }
        for _ in 0..LIMIT {
            assert!(q.push(LISTS - 1, b(0x1008)));
        }
        assert!(!q.has_room(LISTS - 1) && q.has_room(0));
        assert_eq!(q.first_nonempty_above(LISTS - 2), Some(LISTS - 1));
        assert_eq!(q.first_nonempty_above(LISTS - 1), None);
        assert!(!q.has_room(LISTS), "no stack past the last");
    }
}
