//! One small-object page's out-of-band record: its class, which slots are free, how many are
//! used, and its place on its class's list.
//!
//! A page is an engine block of exactly [`PAGE`] bytes whose payload starts on a [`PAGE`]
//! boundary, cut into equal slots. Its record lives in the span's page table, a separate
//! mapping that no write into a slot can reach, and nothing about a slot is ever stored in the
//! slot: a dangling write into a freed slot changes nothing the page relies on, and a pointer
//! handed back is judged by address arithmetic and this record alone.
//!
//! Invariants kept here:
//! - Bit `b` of `free` stands for slot `b ^ mask`, and is set exactly when that slot exists
//!   (`b ^ mask < cap`) and is free: a bit whose slot does not exist stays clear, so a scan
//!   never hands out a slot that does not exist.
//! - `used == cap - popcount(free)`.
//! - Bit `w` of `nonzero` is set exactly when `free[w]` is not zero: the lowest free bit is
//!   in word `nonzero.trailing_zeros()`, found without a scan.
//! - `mask < WORDS * 64`, set from the page's address: each page hands out its slots (lowest
//!   bit first) in an order of its own, starting at slot `mask`'s neighbourhood rather than at
//!   its first byte. Every page starts on a [`PAGE`] boundary, so without the mask the busy
//!   slots of every page would fall into the same cache sets. An exclusive or, unlike a
//!   rotation, costs one instruction each way and needs no wrap at `cap`.
//! - `place` says where the page is: its class's current page, on its class's list, or on
//!   neither (a full page, reached only through its slots).

use crate::engine::block::HEADER;

/// log2 of [`PAGE`].
pub(crate) const PAGE_SHIFT: usize = 16;
/// Bytes of one page, and the alignment of its first slot.
pub(crate) const PAGE: usize = 1 << PAGE_SHIFT;
/// Bytes of a page that hold slots: the last [`HEADER`] bytes are the header of the engine
/// block after the page.
pub(crate) const SLOT_BYTES: usize = PAGE - HEADER;
/// Words of the free bitmap: enough for the smallest slots.
pub(crate) const WORDS: usize = (SLOT_BYTES / 16).div_ceil(64);

static_assertions::const_assert!(WORDS.is_power_of_two() && WORDS <= 64);

/// A page's record. All zero (the state of an untouched page-table entry) means "this cell is
/// not a small-object page".
#[repr(C, align(64))]
pub(crate) struct Page {
    /// Bit `b` stands for slot `b ^ mask` (see the module docs); `< WORDS * 64`.
    pub(super) mask: u16,
    /// Slots handed out and not freed.
    pub(super) used: u16,
    /// Slots in the page.
    pub(super) cap: u16,
    /// Class + 1; 0 when the cell is not a small-object page.
    pub(super) tag: u8,
    /// Where the page is: [`Place`] as a byte.
    pub(super) place: u8,
    /// Slot size in bytes.
    pub(super) size: u32,
    /// `ceil(2^32 / size)`, to divide offsets by `size`.
    pub(super) inv: u32,
    /// One bit per word of `free`, set when the word has a free slot.
    pub(super) nonzero: u64,
    /// Slot 0 (the page's first byte), with the provenance of the span it was carved from.
    pub(super) start: *mut u8,
    /// Neighbours on the class list (null at the ends).
    pub(super) next: *mut Page,
    pub(super) prev: *mut Page,
    /// One bit per slot, set when the slot is free.
    pub(super) free: [u64; WORDS],
}

/// Where a page is, kept in its record so that a free decides by the record alone whether the
/// page must move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Place {
    /// Full, on no list; the first free into it lists it.
    Floating = 0,
    /// Its class's current page.
    Current = 1,
    /// On its class's list of pages with free slots.
    Listed = 2,
}

/// An allocated slot, as [`Page::allocated_slot`] found it: where its bit is, so that freeing
/// it need not find that again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The slot's index in the page.
    pub(crate) idx: usize,
    word: usize,
    bit: u64,
}

/// Why an address is not a slot a caller may hand back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotASlot {
    /// The address is the start of a free slot.
    Free,
    /// The address lies inside an allocated slot, not at its start.
    InsideAllocated,
    /// The address lies inside a free slot, or past the last slot.
    InsideFree,
}

impl Page {
    /// Whether this record describes a small-object page.
    #[inline(always)]
    pub(crate) fn is_page(&self) -> bool {
        self.tag != 0
    }

    /// The page's class.
    #[inline(always)]
    pub(crate) fn class(&self) -> usize {
        usize::from(self.tag.wrapping_sub(1))
    }

    /// Slot size in bytes.
    #[inline(always)]
    pub(crate) fn slot_size(&self) -> usize {
        self.size as usize
    }

    /// Slots handed out and not freed.
    #[inline(always)]
    pub(crate) fn used(&self) -> usize {
        usize::from(self.used)
    }

    /// Slots in the page.
    #[inline(always)]
    pub(crate) fn capacity(&self) -> usize {
        usize::from(self.cap)
    }

    /// Address of the page's first slot.
    #[inline(always)]
    pub(crate) fn start(&self) -> usize {
        self.start as usize
    }

    /// Makes this record describe a fresh page of class `class` starting at `start`, every slot
    /// free.
    pub(super) fn init(&mut self, start: *mut u8, class: usize) {
        let size = super::class::slot_size(class);
        let cap = SLOT_BYTES / size;
        self.mask = scramble(start as usize) as u16;
        self.used = 0;
        self.cap = cap as u16;
        self.tag = class as u8 + 1;
        self.place = Place::Floating as u8;
        self.size = size as u32;
        self.inv = super::class::inverse(class);
        self.start = start;
        self.next = core::ptr::null_mut();
        self.prev = core::ptr::null_mut();
        self.nonzero = 0;
        for w in 0..WORDS {
            let word = self.existing(w);
            self.free[w] = word;
            self.nonzero |= u64::from(word != 0) << w;
        }
    }

    /// The bits of word `w` whose slots exist (`(64 * w + j) ^ mask < cap`).
    fn existing(&self, w: usize) -> u64 {
        let cap = usize::from(self.cap);
        let mask = usize::from(self.mask);
        // Word `w` holds the slots of word `w ^ (mask >> 6)`, its bits permuted by the low part.
        let first = (w ^ (mask >> 6)) * 64;
        if first + 64 <= cap {
            u64::MAX
        } else if first >= cap {
            0
        } else {
            (0..64)
                .filter(|&j| first + (j ^ (mask & 63)) < cap)
                .fold(0, |bits, j| bits | 1 << j)
        }
    }

    /// Turns this record back into "not a page".
    pub(super) fn clear(&mut self) {
        self.tag = 0;
        self.start = core::ptr::null_mut();
        self.used = 0;
        self.place = Place::Floating as u8;
        self.next = core::ptr::null_mut();
        self.prev = core::ptr::null_mut();
    }

    /// Where the page is.
    #[inline(always)]
    pub(crate) fn place(&self) -> Place {
        match self.place {
            1 => Place::Current,
            2 => Place::Listed,
            _ => Place::Floating,
        }
    }

    /// Whether freeing one of its slots leaves the page where it is: current or listed, with
    /// another slot still in use (the free path's common case, which moves no page).
    #[inline(always)]
    pub(super) fn stays_after_a_free(&self) -> bool {
        self.used > 1 && self.place != Place::Floating as u8
    }

    #[inline(always)]
    pub(super) fn set_place(&mut self, place: Place) {
        self.place = place as u8;
    }

    /// Takes the free slot of the lowest bit and returns its index; `None` when the page is
    /// full.
    #[inline(always)]
    pub(super) fn take(&mut self) -> Option<usize> {
        let nz = self.nonzero;
        if nz == 0 {
            return None;
        }
        let w = nz.trailing_zeros() as usize & (WORDS - 1);
        let bits = self.free[w];
        let rest = bits & bits.wrapping_sub(1);
        self.free[w] = rest;
        // Without a branch: whether this took a word's last free slot is close to a coin
        // toss when frees and allocations alternate, and a branch on it mispredicts.
        self.nonzero = nz & !(u64::from(rest == 0) << w);
        self.used += 1;
        Some((w * 64 + bits.trailing_zeros() as usize) ^ usize::from(self.mask))
    }

    /// The bit of slot `idx` (`< cap`): its word and mask.
    #[inline(always)]
    fn bit_of(&self, idx: usize) -> (usize, u64) {
        let b = idx ^ usize::from(self.mask);
        ((b / 64) & (WORDS - 1), 1 << (b % 64))
    }

    /// The slot at `addr`, which lies in this page's cell, if `addr` is the start of an
    /// allocated slot.
    #[inline(always)]
    pub(crate) fn allocated_slot(&self, addr: usize) -> Result<Slot, NotASlot> {
        let rel = addr.wrapping_sub(self.start());
        debug_assert!(rel < PAGE);
        let idx = ((rel as u64 * u64::from(self.inv)) >> 32) as usize;
        let exact = idx * self.size as usize == rel;
        if exact && idx < usize::from(self.cap) {
            let (word, bit) = self.bit_of(idx);
            if self.free[word] & bit == 0 {
                return Ok(Slot { idx, word, bit });
            }
        }
        Err(self.explain(idx, exact))
    }

    #[cold]
    fn explain(&self, idx: usize, exact: bool) -> NotASlot {
        if idx >= usize::from(self.cap) || self.is_free(idx) {
            if exact && idx < usize::from(self.cap) {
                NotASlot::Free
            } else {
                NotASlot::InsideFree
            }
        } else {
            NotASlot::InsideAllocated
        }
    }

    /// Whether slot `idx` (`< cap`) is free.
    #[inline(always)]
    pub(crate) fn is_free(&self, idx: usize) -> bool {
        let (word, bit) = self.bit_of(idx);
        self.free[word] & bit != 0
    }

    /// Frees the allocated slot `slot` (as [`allocated_slot`](Self::allocated_slot) found it).
    #[inline(always)]
    pub(super) fn release(&mut self, slot: Slot) {
        self.free[slot.word] |= slot.bit;
        self.nonzero |= 1 << slot.word;
        self.used -= 1;
    }

    /// Address of slot `idx`.
    #[inline(always)]
    pub(crate) fn slot_addr(&self, idx: usize) -> usize {
        self.start() + idx * self.size as usize
    }

    /// Pointer to slot `idx` (`< cap`), derived from the page's start.
    #[inline(always)]
    pub(crate) fn slot_ptr(&self, idx: usize) -> *mut u8 {
        self.start.wrapping_add(idx * self.size as usize)
    }

    /// Checks the invariants in the module docs.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        let cap = usize::from(self.cap);
        if !self.is_page() || self.class() >= super::class::CLASSES {
            return Err("page record has no valid class");
        }
        if self.slot_size() != super::class::slot_size(self.class())
            || cap != SLOT_BYTES / self.slot_size()
            || usize::from(self.mask) >= WORDS * 64
            || self.place > Place::Listed as u8
        {
            return Err("page record disagrees with its class");
        }
        let mut free = 0;
        for (w, &word) in self.free.iter().enumerate() {
            if word & !self.existing(w) != 0 {
                return Err("page bitmap marks slots that do not exist");
            }
            if (self.nonzero >> w & 1 != 0) != (word != 0) {
                return Err("page word summary disagrees with its bitmap");
            }
            free += word.count_ones() as usize;
        }
        if cap - free != usize::from(self.used) {
            return Err("page counters disagree with its bitmap");
        }
        Ok(())
    }
}

/// The mask of a page at `start`: a hash of the page's number, so that neighbouring pages
/// hand out their slots from unrelated cache sets.
fn scramble(start: usize) -> usize {
    let h = ((start >> PAGE_SHIFT) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 52) as usize & (WORDS * 64 - 1)
}

#[cfg(test)]
mod tests {
    use super::super::class::{CLASSES, slot_size};
    use super::*;

    fn page_at(cell: usize, class: usize) -> Box<Page> {
        // SAFETY: every field of `Page` is valid when zeroed (integers, null pointers).
        let mut p: Box<Page> = Box::new(unsafe { core::mem::zeroed() });
        p.init(core::ptr::without_provenance_mut(cell << PAGE_SHIFT), class);
        p
    }

    fn page(class: usize) -> Box<Page> {
        page_at(16, class)
    }

    fn free_slot(p: &mut Page, i: usize) {
        let slot = p.allocated_slot(p.slot_addr(i)).unwrap();
        assert_eq!(slot.idx, i);
        p.release(slot);
    }

    #[test]
    fn a_fresh_page_hands_out_every_slot_once_then_is_full() {
        for class in [0, 1, 7, 20, CLASSES - 1] {
            let mut p = page(class);
            p.check().unwrap();
            let mut seen = vec![false; p.capacity()];
            while let Some(i) = p.take() {
                assert!(!seen[i], "slot {i} handed out twice");
                seen[i] = true;
                assert!(p.slot_addr(i) + slot_size(class) <= p.start() + SLOT_BYTES);
            }
            assert!(seen.iter().all(|&s| s));
            assert_eq!(p.used(), p.capacity());
            p.check().unwrap();
            assert_eq!(p.take(), None);
        }
    }

    #[test]
    fn pointers_are_judged_by_the_record_alone() {
        let mut p = page(3); // 64-byte slots
        let a = p.take().unwrap();
        let b = p.take().unwrap();
        let (pa, pb) = (p.slot_addr(a), p.slot_addr(b));
        assert_eq!(p.allocated_slot(pa).map(|s| s.idx), Ok(a));
        assert_eq!(p.allocated_slot(pb + 8), Err(NotASlot::InsideAllocated));
        free_slot(&mut p, a);
        assert_eq!(p.allocated_slot(pa), Err(NotASlot::Free));
        assert_eq!(p.allocated_slot(pa + 16), Err(NotASlot::InsideFree));
        let last = p.start() + p.capacity() * 64;
        assert_eq!(p.allocated_slot(last), Err(NotASlot::InsideFree));
        p.check().unwrap();
    }

    #[test]
    fn freed_slots_come_back_lowest_first_in_the_pages_order() {
        let mut p = page(0);
        let all: Vec<usize> = core::iter::from_fn(|| p.take()).collect();
        for &i in all.iter().rev().step_by(7) {
            free_slot(&mut p, i);
        }
        p.check().unwrap();
        // The page's order is its bits' order: slot `i` is bit `i ^ mask`.
        let mask = usize::from(p.mask);
        let order = |i: &&usize| **i ^ mask;
        let lowest = *all.iter().rev().step_by(7).min_by_key(order).unwrap();
        assert_eq!(p.take(), Some(lowest));
        p.check().unwrap();
    }

    #[test]
    fn pages_start_handing_out_in_different_cache_sets() {
        // The first slot of a fresh page, for 64 neighbouring pages of each class: where it
        // falls in a 4 KiB way of the cache.
        for class in [0, 3, 10, 20] {
            let mut sets: Vec<usize> = (0..64)
                .map(|cell| {
                    let mut p = page_at(100 + cell, class);
                    let i = p.take().unwrap();
                    p.check().unwrap();
                    p.slot_addr(i) % 4096 / 64
                })
                .collect();
            sets.sort_unstable();
            sets.dedup();
            assert!(sets.len() >= 16, "class {class}: {} sets", sets.len());
        }
    }

    #[test]
    fn check_finds_a_damaged_record() {
        let mut p = page(5);
        p.take();
        p.used = 7;
        assert!(p.check().is_err());
        // The 16-byte class's last slot would end past the page: its bit stands for nothing.
        let mut p = page(0);
        let b = p.capacity() ^ usize::from(p.mask);
        assert_eq!(p.free[b / 64] & 1 << (b % 64), 0);
        p.free[b / 64] |= 1 << (b % 64);
        assert!(p.check().is_err());
    }
}
