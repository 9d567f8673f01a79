//! Block layout: the header word and the size arithmetic.
//!
//! ```text
//!   B (≡ 8 mod 16)      P = B + 8 (16-aligned payload)                       B + S
//!   | header: u64 | payload .......................................... | next header
//!   free blocks reuse the first two payload words:
//!   | header      | next: *  | prev: *  | ...                                     |
//! ```
//!
//! Invariants kept here:
//! - A block's size `S` is a multiple of [`GRANULE`] and at least [`MIN_BLOCK`]; it covers its
//!   header, so the usable payload of an allocated block is `S - HEADER`.
//! - A header word is `tag << 48 | S | flags`. `S` has its low four bits clear, so the flags
//!   live there. The 16-bit tag is a keyed hash of the block's address and `S | flags`: data a
//!   program wrote over a header is recognised with probability 1 - 2^-16 from the tag alone,
//!   and the engine's out-of-band start bitmap catches the rest before anything is followed.
//! - Blocks have no footer and headers no flag about the block before: the engine's start map
//!   says where every neighbour starts and whether it is free, so nothing the program can
//!   overwrite decides a merge. A free block's in-band words are its header and two links,
//!   all in its first 24 bytes.

use static_assertions::const_assert;

use super::addr::BlockAddr;
pub(crate) use super::addr::{GRANULE, HEADER};

/// Smallest block: two granules, room for a free block's header and two links (24 bytes)
/// rounded up to whole granules.
pub(crate) const MIN_BLOCK: usize = 32;
/// Word of a free block (counted in [`HEADER`]-sized words from its header) that holds the
/// link to the next block of its bin.
pub(crate) const NEXT_WORD: usize = 1;
/// Word of a free block that holds the link to the previous block of its bin.
pub(crate) const PREV_WORD: usize = 2;
/// Words a free block keeps in band: its header and its two links.
pub(crate) const FREE_WORDS: usize = 3;
/// Largest block size a header can describe (sizes use bits 4..48).
pub(crate) const MAX_BLOCK: usize = (1 << 48) - GRANULE;

const_assert!(MIN_BLOCK % GRANULE == 0);
const_assert!(MIN_BLOCK >= FREE_WORDS * HEADER);
const_assert!(core::mem::size_of::<usize>() == 8);

/// This block is free (on a free list).
pub(crate) const FREE: u64 = 1 << 0;
const FLAG_MASK: u64 = 0xF;
const SIZE_MASK: u64 = ((1 << 48) - 1) & !FLAG_MASK;

/// A decoded header word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// Block size in bytes, header included.
    pub size: usize,
    /// The `FREE` bit.
    pub flags: u64,
}

impl Header {
    #[inline]
    pub fn is_free(self) -> bool {
        self.flags & FREE != 0
    }
}

/// Encodes and checks header words for one engine (the key differs per engine).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tagger {
    key: u64,
}

impl Tagger {
    /// A tagger keyed by `seed`; engines pass their base address, which ASLR randomises.
    pub const fn new(seed: u64) -> Tagger {
        Tagger {
            key: (seed ^ 0x5851_F42D_4C95_7F2D).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    #[inline(always)]
    fn tag(self, b: BlockAddr, body: u64) -> u64 {
        let x = (b.get() as u64 ^ body.rotate_left(17)).wrapping_mul(self.key);
        (x ^ (x >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 48
    }

    /// The header word for the block at `b`.
    #[inline(always)]
    pub fn encode(self, b: BlockAddr, size: usize, flags: u64) -> u64 {
        debug_assert!(size % GRANULE == 0 && size <= MAX_BLOCK);
        debug_assert!(flags & !FLAG_MASK == 0);
        let body = size as u64 | flags;
        self.tag(b, body) << 48 | body
    }

    /// Decodes the header word of the block at `b`, or `None` if its tag does not match or
    /// its size is impossible.
    #[inline(always)]
    pub fn decode(self, b: BlockAddr, word: u64) -> Option<Header> {
        let body = word & (SIZE_MASK | FLAG_MASK);
        let size = (word & SIZE_MASK) as usize;
        if word >> 48 != self.tag(b, body) || size < MIN_BLOCK {
            return None;
        }
        Some(Header {
            size,
            flags: word & FLAG_MASK,
        })
    }
}

/// Reads a header word without checking its tag. Only for callers that confirm the size
/// against the start map before following it.
#[inline(always)]
pub(crate) fn raw_header(word: u64) -> Header {
    Header {
        size: (word & SIZE_MASK) as usize,
        flags: word & FLAG_MASK,
    }
}

/// Whether `word` is the header of an allocated (or cached) block of `size` bytes, by its
/// size and `FREE` flag alone: one comparison where `raw_header` needs two.
#[inline(always)]
pub(crate) fn is_allocated_header(word: u64, size: usize) -> bool {
    (word ^ size as u64) & (SIZE_MASK | FREE) == 0
}

/// The block size that serves a request of `size` bytes, or `None` if it cannot exist.
#[inline(always)]
pub(crate) fn block_size_for(size: usize) -> Option<usize> {
    (size <= MAX_BLOCK - HEADER - GRANULE).then(|| small_block_size(size))
}

/// The block size for a request already known to fit (`size <= MAX_BLOCK - HEADER - GRANULE`),
/// without the overflow check: the fast paths only pass small sizes.
#[inline(always)]
pub(crate) fn small_block_size(size: usize) -> usize {
    ((size + HEADER + GRANULE - 1) & !(GRANULE - 1)).max(MIN_BLOCK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_to_granules_with_room_for_the_header() {
        assert_eq!(block_size_for(0), Some(32));
        assert_eq!(block_size_for(24), Some(32));
        assert_eq!(block_size_for(25), Some(48));
        assert_eq!(block_size_for(1000), Some(1008));
        assert_eq!(block_size_for(1001), Some(1024));
        for n in 0..2000 {
            let s = block_size_for(n).unwrap();
            assert!(s - HEADER >= n && s % GRANULE == 0 && s >= MIN_BLOCK);
            assert!(s - HEADER < n + GRANULE || s == MIN_BLOCK);
        }
        assert_eq!(block_size_for(usize::MAX), None);
        assert_eq!(block_size_for(MAX_BLOCK), None);
    }

    #[test]
    fn headers_round_trip_and_reject_forgeries() {
        let t = Tagger::new(0x7f00_1234_5000);
        let w = t.encode(BlockAddr::new(0x1008), 4096, FREE);
        let h = t.decode(BlockAddr::new(0x1008), w).unwrap();
        assert_eq!(h.size, 4096);
        assert!(h.is_free());
        // The same word at another address, or a changed size, does not decode.
        assert_eq!(t.decode(BlockAddr::new(0x1018), w), None);
        assert_eq!(t.decode(BlockAddr::new(0x1008), w ^ (1 << 12)), None);
        // Plain data imitating a header (no tag) is refused.
        assert_eq!(t.decode(BlockAddr::new(0x1008), 4096 | FREE), None);
        // A different engine's key gives a different tag.
        let other = Tagger::new(0x7f00_9999_0000);
        assert_eq!(other.decode(BlockAddr::new(0x1008), w), None);
    }

    #[test]
    fn few_random_words_pass_as_headers() {
        let t = Tagger::new(42);
        let mut rng = crate::test_rng::Rng::new(1);
        let n = if cfg!(miri) { 1000 } else { 200_000 };
        let passed = (0..n)
            .filter(|_| t.decode(BlockAddr::new(0x2008), rng.next_u64()).is_some())
            .count();
        // Expect n / 65536 on average.
        assert!(
            passed <= 3 + n / 65536 * 3,
            "{passed} of {n} random words passed"
        );
    }
}
