//! Quick lists: deferred coalescing for small blocks.
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
//! program cannot redirect them, so handing out a cached block needs no validation at all.
//!
//! An allocation from a stack is first only a *loan*: the block is handed out but stays on
//! top of its stack, and nothing else is recorded. Programs often free a small block before
//! they allocate again (a temporary buffer, a string built and dropped); freeing the lent
//! block then just ends the loan, and the pair has cost a few loads and stores. Any other
//! operation first *settles* the loan: the block is popped for good, and the engine records
//! it as allocated.
//!
//! Invariants kept here:
//! - A cached block has its `starts` bit set and no state bit (neither `live` nor `free` nor
//!   `quarantined`), and a header *without* the `FREE` flag: neighbours treat it as allocated
//!   and never merge with it.
//! - Every cached block is on exactly one stack, the one of its exact size; `counts[i]`
//!   entries of `slots[i]` are in use.
//! - At most one block is lent, and it is the top of stack `lent_list`. While it is, no block
//!   is pushed or popped (the engine settles first; every such method checks it in debug
//!   builds and, in release builds, refuses rather than disturb the stack: `lend`, `pop` and
//!   `pop_aligned` find nothing, `push` reports the stack full), so it stays the top until the
//!   loan ends or is settled. To everyone else a lent block is allocated: it is not counted in
//!   [`Quick::total`], and the engine counts it as live.

use super::block::{GRANULE, HEADER, MIN_BLOCK};

/// The largest block size that is cached. Up to 1 KiB a freed block's extent comes from one
/// window of the start map; above, from its map-confirmed header. 2 KiB rather than 1 KiB: a
/// program's hot sizes do not stop at a power of two (13.9% of the allocations in the recorded
/// CPython trace are 1094-byte requests), and caching them took the trace replay from 177.5 to
/// 158.3 ms (docs/BENCHMARKS.md, session 5).
pub(crate) const MAX_SIZE: usize = 2048;
/// Number of stacks: one per block size up to [`MAX_SIZE`].
pub(crate) const LISTS: usize = (MAX_SIZE - MIN_BLOCK) / GRANULE + 1;
/// Most blocks a stack holds; further frees of that size coalesce at once.
pub(crate) const LIMIT: usize = 16;

/// The stacks of cached blocks.
pub(crate) struct Quick {
    /// Block addresses (headers) of the cached blocks of each size.
    slots: [[usize; LIMIT]; LISTS],
    counts: [u8; LISTS],
    /// How deep `push` fills a stack: [`LIMIT`], or 0 while caching is off.
    depth: u8,
    /// Payload address of the lent block, or 0 (no payload is at address 0).
    lent: usize,
    /// The stack the lent block tops.
    lent_list: usize,
}

impl Quick {
    pub const fn new() -> Quick {
        Quick {
            slots: [[0; LIMIT]; LISTS],
            counts: [0; LISTS],
            depth: LIMIT as u8,
            lent: 0,
            lent_list: 0,
        }
    }

    /// Turns caching on or off; off, every `push` is refused (what is cached stays until
    /// popped or flushed). Returns whether it was on.
    pub fn set_enabled(&mut self, on: bool) -> bool {
        let was = self.depth != 0;
        self.depth = if on { LIMIT as u8 } else { 0 };
        was
    }

    /// Blocks cached over all stacks, the lent one excluded (summed on demand: only slow paths
    /// ask).
    pub fn total(&self) -> usize {
        let stacked: usize = self.counts.iter().map(|&c| c as usize).sum();
        stacked - (self.lent != 0) as usize
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

    /// Lends the most recently cached block of stack `i`, if any: returns its address and
    /// leaves it on the stack until [`end_loan`](Self::end_loan) or
    /// [`settle_loan`](Self::settle_loan). Nothing may be lent already.
    #[inline(always)]
    pub fn lend(&mut self, i: usize) -> Option<usize> {
        debug_assert!(self.lent == 0);
        if self.lent != 0 {
            return None;
        }
        let b = self.top(i)?;
        self.lent = b + HEADER;
        self.lent_list = i;
        Some(b)
    }

    /// Payload address of the lent block, or 0 if none is lent.
    #[inline(always)]
    pub fn lent(&self) -> usize {
        self.lent
    }

    /// Block size of the lent block (meaningful only while one is lent).
    #[inline(always)]
    pub fn lent_size(&self) -> usize {
        Self::size_of(self.lent_list)
    }

    /// Ends the loan: the lent block is simply cached again, as if never handed out.
    #[inline(always)]
    pub fn end_loan(&mut self) {
        self.lent = 0;
    }

    /// Makes the loan final, if there is one: pops the lent block off its stack and returns
    /// its address and size.
    #[inline(always)]
    pub fn settle_loan(&mut self) -> Option<(usize, usize)> {
        if self.lent == 0 {
            return None;
        }
        let (b, i) = (self.lent - HEADER, self.lent_list);
        self.lent = 0;
        // The lent block is still the top: nothing was pushed or popped while it was lent
        // (both assert it). Only the count needs to go down.
        debug_assert_eq!(self.top(i), Some(b));
        let n = self.counts[i];
        debug_assert!(n > 0, "the lent block left its stack");
        self.counts[i] = n.saturating_sub(1);
        Some((b, Self::size_of(i)))
    }

    /// Takes the most recently cached block of stack `i`, if any.
    #[inline(always)]
    pub fn pop(&mut self, i: usize) -> Option<usize> {
        debug_assert!(self.lent == 0);
        if self.lent != 0 {
            return None;
        }
        let b = self.top(i)?;
        self.counts[i] -= 1;
        Some(b)
    }

    /// The most recently cached block of stack `i`, if any, left where it is.
    #[inline(always)]
    fn top(&self, i: usize) -> Option<usize> {
        debug_assert!(i < LISTS);
        let n = *self.counts.get(i)? as usize;
        if n == 0 {
            return None;
        }
        // SAFETY: `i < LISTS` (the `get` above) and `0 < n <= LIMIT` (counts only grow
        // through `push`, which stops at LIMIT).
        Some(unsafe { *self.slots.get_unchecked(i).get_unchecked(n - 1) })
    }

    /// Takes the most recently cached block of stack `i` whose payload (`b + 8`) is aligned to
    /// `align`, if any: an over-aligned request served without carving.
    #[inline]
    pub fn pop_aligned(&mut self, i: usize, align: usize) -> Option<usize> {
        debug_assert!(i < LISTS && self.lent == 0);
        if self.lent != 0 {
            return None;
        }
        let n = *self.counts.get(i)? as usize;
        let stack = self.slots.get_mut(i)?.get_mut(..n)?;
        let at = stack
            .iter()
            .rposition(|&b| (b + super::block::HEADER) & (align - 1) == 0)?;
        // The order within a stack does not matter beyond preferring recent blocks; the top
        // entry takes the hole.
        let b = stack[at];
        stack[at] = stack[n - 1];
        self.counts[i] = (n - 1) as u8;
        Some(b)
    }

    /// Caches block `b` on stack `i`; `false` if the stack is full or caching is off.
    #[inline(always)]
    pub fn push(&mut self, i: usize, b: usize) -> bool {
        debug_assert!(i < LISTS && self.lent == 0);
        let Some(&n) = self.counts.get(i) else {
            return false;
        };
        let n = n as usize;
        if n >= self.depth as usize || self.lent != 0 {
            return false;
        }
        // SAFETY: `i < LISTS` (the `get` above) and `n < depth <= LIMIT` was just checked.
        unsafe { *self.slots.get_unchecked_mut(i).get_unchecked_mut(n) = b };
        self.counts[i] = (n + 1) as u8;
        true
    }

    /// The blocks cached on stack `i`, oldest first (none may be lent).
    pub fn entries(&self, i: usize) -> &[usize] {
        debug_assert!(self.lent == 0);
        let n = self.counts.get(i).map_or(0, |&n| n as usize);
        self.slots.get(i).map_or(&[], |s| &s[..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_are_lifo_and_bounded() {
        let mut q = Quick::new();
        assert_eq!(q.pop(3), None);
        for b in 0..LIMIT {
            assert!(q.push(3, 0x1008 + b * 16));
        }
        assert!(!q.push(3, 0x9008));
        // Payloads are at 0x1010 + 16k, 64-aligned for k = 3, 7, 11, 15. Take k = 15 (the top)
        // away first, so the most recent aligned one (k = 11) sits below the top.
        let top = q.pop(3).unwrap();
        let b = q.pop_aligned(3, 64).unwrap();
        assert_eq!(b, 0x1008 + 11 * 16);
        assert_eq!(q.entries(3).len(), LIMIT - 2);
        assert!(!q.entries(3).contains(&b));
        assert!(
            q.entries(3).contains(&(0x1008 + 14 * 16)),
            "the top took the hole"
        );
        assert_eq!(q.pop_aligned(3, 4096), None);
        assert!(q.push(3, top));
        assert!(q.push(3, b));
        assert_eq!(q.total(), LIMIT);
        assert_eq!(q.pop(3), Some(b), "last in, first out");
        assert_eq!(q.entries(3).len(), LIMIT - 1);
        assert_eq!(Quick::size_of(Quick::list_of(528)), 528);
    }

    #[test]
    fn a_loan_ends_or_settles_and_blocks_the_stacks_meanwhile() {
        let mut q = Quick::new();
        assert_eq!(q.lend(2), None);
        assert!(q.push(2, 0x1008));
        assert!(q.push(2, 0x1048));
        assert_eq!(q.lend(2), Some(0x1048));
        assert_eq!((q.lent(), q.lent_size()), (0x1050, Quick::size_of(2)));
        assert_eq!(q.total(), 1, "the lent block is not counted as cached");
        q.end_loan();
        assert_eq!((q.lent(), q.total()), (0, 2));
        assert_eq!(q.settle_loan(), None);
        assert_eq!(
            q.lend(2),
            Some(0x1048),
            "an ended loan leaves the block on top"
        );
        assert_eq!(q.settle_loan(), Some((0x1048, Quick::size_of(2))));
        assert_eq!((q.lent(), q.total()), (0, 1));
        assert_eq!(q.pop(2), Some(0x1008));
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic)]
    fn pushing_while_a_block_is_lent_is_caught_or_refused() {
        let mut q = Quick::new();
        assert!(q.push(0, 0x1008));
        q.lend(0);
        // Debug builds stop here; release builds refuse and leave the lent block on top.
        assert!(!q.push(0, 0x2008));
        assert_eq!(q.pop(0), None);
        assert_eq!(q.settle_loan(), Some((0x1008, Quick::size_of(0))));
    }
}
