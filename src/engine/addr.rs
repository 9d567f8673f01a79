//! The engine's three kinds of address, and the one place that converts between them.
//!
//! ```text
//!   base        base + 16 = payload of granule 1
//!   |  g0      |  g1      |  g2      |  g3      |
//!   |     | hdr| payload ...         | hdr| payload ...
//!         ^ BlockAddr   ^ PayloadAddr = BlockAddr + HEADER, Granule 1
//! ```
//!
//! - A [`BlockAddr`] is where a block starts: its header word. Sizes, neighbours, free-list
//!   links and the quick stacks are all in block addresses; the next block is `b + size`.
//! - A [`PayloadAddr`] is what a caller holds: the first usable byte, [`HEADER`] bytes past the
//!   block's address, and a multiple of [`GRANULE`] from the span's base.
//! - A [`Granule`] is the start map's unit: the index of a [`GRANULE`]-byte cell of the span,
//!   counted from its base. A block is recorded at the granule of its payload, so granule 0
//!   never holds one (the first block's header sits at its end).
//!
//! Mixing them up is an off-by-eight or a factor of sixteen, which bare `usize`s do not catch;
//! these types are `#[repr(transparent)]` wrappers, so they cost nothing at run time. The
//! header size and the granule shift appear here and nowhere else in the engine's address
//! arithmetic.

use core::ops::{Add, Sub};
use core::ptr::NonNull;

/// Allocation granule: every block size, and every payload's offset from the span's base, is a
/// multiple of it.
pub(crate) const GRANULE: usize = 16;
/// `log2(GRANULE)`: a span offset shifted right by it is a granule index.
pub(crate) const GRANULE_SHIFT: u32 = GRANULE.trailing_zeros();
/// Bytes of header in front of every payload.
pub(crate) const HEADER: usize = 8;

static_assertions::const_assert!(GRANULE.is_power_of_two());
static_assertions::const_assert_eq!(HEADER, core::mem::size_of::<u64>());
static_assertions::const_assert_eq!(HEADER + HEADER, GRANULE);

/// Rounds `bytes` down to whole granules: a length the span can grow or be cut by.
#[inline(always)]
pub(crate) const fn granule_floor(bytes: usize) -> usize {
    bytes & !(GRANULE - 1)
}

/// Where a block starts: the address of its header word (`≡ HEADER mod GRANULE` from the
/// span's base).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct BlockAddr(usize);

/// What a caller holds: the first usable byte of a block, [`HEADER`] bytes past its
/// [`BlockAddr`].
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PayloadAddr(usize);

/// The index of a granule of the span, counted from its base: the start map's unit. A block
/// is recorded at the granule of its payload.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Granule(usize);

impl BlockAddr {
    /// The block whose header is at `addr`.
    #[inline(always)]
    pub const fn new(addr: usize) -> BlockAddr {
        BlockAddr(addr)
    }

    /// The address as a number (for errors, walks and the engine's raw word access).
    #[inline(always)]
    pub const fn get(self) -> usize {
        self.0
    }

    /// The first block of a span at `base`: its payload is the span's first granule boundary
    /// after the base.
    #[inline(always)]
    pub const fn first_of(base: usize) -> BlockAddr {
        BlockAddr(base + HEADER)
    }

    /// Where the header of a block appended at a span's `end` goes: the last header slot of
    /// a span ending there.
    #[inline(always)]
    pub const fn slot_at_end(end: usize) -> BlockAddr {
        BlockAddr(end - HEADER)
    }

    /// The end of a span whose last header slot is this address ([`slot_at_end`]'s inverse).
    ///
    /// [`slot_at_end`]: Self::slot_at_end
    #[inline(always)]
    pub const fn span_end(self) -> usize {
        self.0 + HEADER
    }

    /// Whether `addr` could be a block address of a span at `base` (it lies a header before a
    /// granule boundary).
    #[inline(always)]
    pub const fn is_aligned(addr: usize, base: usize) -> bool {
        (addr + HEADER - base) % GRANULE == 0
    }

    /// The block's payload.
    #[inline(always)]
    pub const fn payload(self) -> PayloadAddr {
        PayloadAddr(self.0 + HEADER)
    }

    /// The granule the block is recorded at in the start map of a span at `base`.
    #[inline(always)]
    pub const fn granule(self, base: usize) -> Granule {
        Granule((self.0 + HEADER - base) >> GRANULE_SHIFT)
    }

    /// The address of the block's `i`-th word (0 is the header; a free block's links follow).
    #[inline(always)]
    pub const fn word(self, i: usize) -> usize {
        self.0 + i * HEADER
    }

    /// A free-list link as stored in a free block: the address of the block it names, or 0
    /// for none.
    #[inline(always)]
    pub const fn to_link(link: Option<BlockAddr>) -> u64 {
        match link {
            Some(b) => b.0 as u64,
            None => 0,
        }
    }

    /// The block a stored free-list link names ([`to_link`](Self::to_link)'s inverse).
    #[inline(always)]
    pub const fn from_link(word: u64) -> Option<BlockAddr> {
        if word == 0 {
            None
        } else {
            Some(BlockAddr(word as usize))
        }
    }
}

/// The block `bytes` further on: `b + size` is the block after `b`.
impl Add<usize> for BlockAddr {
    type Output = BlockAddr;
    #[inline(always)]
    fn add(self, bytes: usize) -> BlockAddr {
        BlockAddr(self.0 + bytes)
    }
}

/// The bytes from one block to a later one.
impl Sub for BlockAddr {
    type Output = usize;
    #[inline(always)]
    fn sub(self, earlier: BlockAddr) -> usize {
        self.0 - earlier.0
    }
}

impl PayloadAddr {
    /// The payload at `addr`.
    #[inline(always)]
    pub const fn new(addr: usize) -> PayloadAddr {
        PayloadAddr(addr)
    }

    /// The payload `p` points at.
    #[inline(always)]
    pub fn of(p: NonNull<u8>) -> PayloadAddr {
        PayloadAddr(p.as_ptr() as usize)
    }

    /// The address as a number.
    #[inline(always)]
    pub const fn get(self) -> usize {
        self.0
    }

    /// The block this is the payload of.
    #[inline(always)]
    pub const fn block(self) -> BlockAddr {
        BlockAddr(self.0 - HEADER)
    }
}

impl Granule {
    /// Granule number `index` of the span.
    #[inline(always)]
    pub const fn new(index: usize) -> Granule {
        Granule(index)
    }

    /// The granule's number: its bit in the start map.
    #[inline(always)]
    pub const fn index(self) -> usize {
        self.0
    }

    /// The granule holding the span offset `offset` (a payload's offset from the base, for
    /// a payload).
    #[inline(always)]
    pub const fn at_offset(offset: usize) -> Granule {
        Granule(offset >> GRANULE_SHIFT)
    }

    /// The granules `bytes` cover (`bytes` a multiple of [`GRANULE`]).
    #[inline(always)]
    pub const fn count(bytes: usize) -> usize {
        bytes >> GRANULE_SHIFT
    }

    /// The bytes `granules` granules cover.
    #[inline(always)]
    pub const fn bytes(granules: usize) -> usize {
        granules << GRANULE_SHIFT
    }

    /// The block recorded at this granule in the start map of a span at `base`.
    #[inline(always)]
    pub const fn block(self, base: usize) -> BlockAddr {
        BlockAddr(base + (self.0 << GRANULE_SHIFT) - HEADER)
    }

    /// The granule before this one, if any.
    #[inline(always)]
    pub const fn before(self) -> Option<Granule> {
        match self.0.checked_sub(1) {
            Some(i) => Some(Granule(i)),
            None => None,
        }
    }
}

/// The granule `granules` further on.
impl Add<usize> for Granule {
    type Output = Granule;
    #[inline(always)]
    fn add(self, granules: usize) -> Granule {
        Granule(self.0 + granules)
    }
}

/// The granules from one granule to a later one.
impl Sub for Granule {
    type Output = usize;
    #[inline(always)]
    fn sub(self, earlier: Granule) -> usize {
        self.0 - earlier.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_addresses_convert_into_each_other() {
        let base = 0x10_0000;
        let b = BlockAddr::first_of(base);
        assert_eq!(b.get(), base + 8);
        assert_eq!(b.payload().get(), base + 16);
        assert_eq!(b.payload().block(), b);
        assert_eq!(b.granule(base), Granule::new(1));
        assert_eq!(Granule::new(1).block(base), b);
        let later = b + 48;
        assert_eq!(later - b, 48);
        assert_eq!(later.granule(base) - b.granule(base), 3);
        assert_eq!(later.granule(base).block(base), later);
        assert!(BlockAddr::is_aligned(later.get(), base));
        assert!(!BlockAddr::is_aligned(later.payload().get(), base));
        assert_eq!(BlockAddr::slot_at_end(base + 64).span_end(), base + 64);
        assert_eq!(
            Granule::at_offset(b.payload().get() - base),
            Granule::new(1)
        );
        assert_eq!((Granule::count(64), Granule::bytes(4)), (4, 64));
        assert_eq!(Granule::new(0).before(), None);
        assert_eq!(Granule::new(5).before(), Some(Granule::new(4)));
        assert_eq!(granule_floor(47), 32);
    }

    #[test]
    fn links_round_trip_and_zero_is_none() {
        let b = BlockAddr::new(0x1008);
        assert_eq!(BlockAddr::from_link(BlockAddr::to_link(Some(b))), Some(b));
        assert_eq!(BlockAddr::to_link(None), 0);
        assert_eq!(BlockAddr::from_link(0), None);
    }
}
