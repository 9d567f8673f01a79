//! One batch: a `BATCH_SIZE` run of equal slots and the bitmap of which are taken.
//!
//! The bitmap lives here, out of band, not in the batch memory: a caller overflowing a slot can
//! damage its neighbours' data but never the pool's knowledge of which slots are taken, and a
//! free is validated without reading the slot.
//!
//! Invariants kept here (checked by [`Batch::verify`]):
//! - Bit `i` of the bitmap (word `i / 64`, bit `i % 64`) is 1 iff slot `i` is handed out.
//!   Bits at or beyond `slots` are always 1, so a search for a zero bit never finds a slot that
//!   does not exist and no bounds test is needed on the fast path.
//! - `used` equals the number of 1 bits below `slots`.
//! - Every word below `hint` is all ones (so the first free slot is at or after word `hint`).
//! - `high` (the high-water mark) is one past the highest slot ever handed out since the batch
//!   was made. Slots are always taken lowest-first, so every slot below `high` has been handed
//!   out at least once: a clear bit below `high` is a slot that was freed (a second free of it is
//!   a double free, with certainty), and a slot at or above `high` was never handed out.

use core::ptr::NonNull;

use super::{BATCH_SIZE, NIL, WORDS};

/// Metadata of one batch; the slots themselves are at `base`.
///
/// `repr(C)` with the counters first and the bitmap last: for the larger slot sizes (up to
/// 256 slots) the whole working set of a batch is its first cache line.
#[derive(Debug)]
#[repr(C)]
pub(super) struct Batch {
    /// First byte of the batch, `BATCH_SIZE`-aligned. Carries the provenance of the source's
    /// allocation; every slot pointer is derived from it.
    pub(super) base: NonNull<u8>,
    /// The block the batch was carved from (`base` itself for Region frames and exactly aligned
    /// blocks); what goes back to an `Allocator` source.
    pub(super) raw: NonNull<u8>,
    /// Index into `SOURCE_LAYOUTS` of the layout `raw` was allocated with.
    pub(super) source: u8,
    /// Size class index (slot size is `(class + 1) * 16`), or `VACANT` for a free table entry.
    pub(super) class: u8,
    // All four counters are `u32`, not `u16`: with mixed widths the compiler widens a `used`
    // load over the `hint` just stored, and the failed store-to-load forwarding stalls every
    // allocation (the profile is in docs/BENCHMARKS.md).
    pub(super) slots: u32,
    pub(super) used: u32,
    pub(super) hint: u32,
    pub(super) high: u32,
    pub(super) in_avail: bool,
    /// Links in the class's list of batches with free slots (`NIL`-terminated).
    pub(super) avail_prev: u32,
    pub(super) avail_next: u32,
    /// Links in the class's list of all its batches, in creation order (`NIL`-terminated). For a
    /// vacant entry, `next` links the table's vacant list instead.
    pub(super) prev: u32,
    pub(super) next: u32,
    pub(super) bits: [u64; WORDS],
}

/// `class` value of a table entry that holds no batch.
pub(super) const VACANT: u8 = u8::MAX;

impl Batch {
    /// A fresh batch of `slots` slots of class `class`, all free.
    pub(super) fn new(base: NonNull<u8>, class: u8, slots: u32) -> Batch {
        let mut bits = [0u64; WORDS];
        let n = slots as usize;
        for (w, word) in bits.iter_mut().enumerate() {
            let first = w * 64;
            if first >= n {
                *word = !0;
            } else if n - first < 64 {
                *word = !0u64 << (n - first);
            }
        }
        Batch {
            base,
            raw: base,
            source: 0,
            bits,
            class,
            slots,
            used: 0,
            hint: 0,
            high: 0,
            in_avail: false,
            avail_prev: NIL,
            avail_next: NIL,
            prev: NIL,
            next: NIL,
        }
    }

    #[inline]
    pub(super) fn is_full(&self) -> bool {
        self.used == self.slots
    }

    /// Takes the lowest free slot and returns its index.
    ///
    /// The batch must not be full (callers only take from batches on the avail list).
    #[inline]
    pub(super) fn take(&mut self) -> usize {
        debug_assert!(!self.is_full());
        let mut w = self.hint as usize;
        // Terminates before WORDS: a non-full batch has a zero bit below `slots`, and every
        // word before `hint` is full.
        // (The `& (WORDS - 1)` masks cannot change an in-range index; they let the compiler drop
        // the bounds checks.)
        while self.bits[w & (WORDS - 1)] == !0 {
            w += 1;
        }
        let w = w & (WORDS - 1);
        let bit = self.bits[w].trailing_ones() as usize;
        self.bits[w] |= 1 << bit;
        self.hint = w as u32;
        self.used += 1;
        let slot = w * 64 + bit;
        if slot as u32 >= self.high {
            self.high = slot as u32 + 1;
        }
        slot
    }

    /// Whether slot `slot` (below `slots`) is handed out.
    #[inline]
    pub(super) fn is_taken(&self, slot: usize) -> bool {
        self.bits[(slot / 64) & (WORDS - 1)] & (1 << (slot % 64)) != 0
    }

    /// Marks a taken slot free.
    #[inline]
    pub(super) fn put(&mut self, slot: usize) {
        debug_assert!(self.is_taken(slot));
        let w = (slot / 64) & (WORDS - 1);
        self.bits[w] &= !(1 << (slot % 64));
        if (w as u32) < self.hint {
            self.hint = w as u32;
        }
        self.used -= 1;
    }

    /// Checks this batch's own invariants (not its list links); `Err` names the broken one.
    pub(super) fn verify(&self, slot_size: usize) -> Result<(), &'static str> {
        if self.base.as_ptr() as usize % BATCH_SIZE != 0 {
            return Err("batch base is not aligned to the batch size");
        }
        if self.slots as usize != BATCH_SIZE / slot_size {
            return Err("batch slot count does not match its size class");
        }
        let n = self.slots as usize;
        let mut used = 0usize;
        for (w, &word) in self.bits.iter().enumerate() {
            let first = w * 64;
            let tail = if first >= n {
                !0
            } else if n - first < 64 {
                !0u64 << (n - first)
            } else {
                0
            };
            if word & tail != tail {
                return Err("bitmap bits past the last slot are not set");
            }
            used += (word & !tail).count_ones() as usize;
            if w < self.hint as usize && word != !0 {
                return Err("bitmap word below the free hint has a free slot");
            }
        }
        if used != self.used as usize {
            return Err("batch used count does not match its bitmap");
        }
        if self.hint as usize >= WORDS {
            return Err("batch free hint is past the bitmap");
        }
        let high = self.high as usize;
        if high > n {
            return Err("batch high-water mark is past the last slot");
        }
        if (high..n).any(|s| self.is_taken(s)) {
            return Err("a slot above the high-water mark is taken");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> NonNull<u8> {
        // Never dereferenced: these tests only exercise the bitmap.
        NonNull::new(core::ptr::without_provenance_mut(BATCH_SIZE)).unwrap()
    }

    #[test]
    fn takes_lowest_first_and_reuses_freed_slots() {
        let mut b = Batch::new(base(), 20, 48); // 48 slots: one partial word
        assert_eq!(b.verify(336), Ok(()));
        for i in 0..48 {
            assert_eq!(b.take(), i);
        }
        assert!(b.is_full());
        b.put(40);
        b.put(3);
        assert_eq!(b.take(), 3);
        assert_eq!(b.take(), 40);
        assert_eq!(b.high, 48);
        assert_eq!(b.verify(336), Ok(()));
    }

    #[test]
    fn hint_moves_forward_and_back_across_words() {
        let mut b = Batch::new(base(), 0, 1024);
        for _ in 0..130 {
            b.take();
        }
        assert_eq!(b.hint, 2);
        b.put(5);
        assert_eq!(b.hint, 0);
        assert_eq!(b.take(), 5);
        assert_eq!(b.take(), 130);
        assert_eq!(b.verify(16), Ok(()));
    }

    #[test]
    fn verify_catches_broken_counts_and_tails() {
        let mut b = Batch::new(base(), 0, 1024);
        b.take();
        b.used = 2;
        assert!(b.verify(16).is_err());
        let mut c = Batch::new(base(), 63, 16);
        c.bits[0] &= !(1 << 20);
        assert_eq!(
            c.verify(1024),
            Err("bitmap bits past the last slot are not set")
        );
    }
}
