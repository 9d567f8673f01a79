//! Size classes of the small-object path.
//!
//! Sizes up to [`SMALL_MAX`] are served from pages of equal slots. The classes step by 16 bytes
//! up to 128, then by an eighth of the power of two below them (16 up to 256, 32 up to 512, ...,
//! 1024 up to 8192), so a slot wastes at most 15 bytes or an eighth of the request, whichever
//! is larger. A slot's index within its page is found by a multiplication with a
//! precomputed inverse, never a division.

use static_assertions::const_assert;

/// Largest request served from a page.
pub(crate) const SMALL_MAX: usize = 8192;
/// Number of size classes.
pub(crate) const CLASSES: usize = 56;

/// Length of the per-class tables: a power of two, so a class index is masked, not checked.
pub(crate) const TABLE: usize = CLASSES.next_power_of_two();
/// Slot size of each class (entries past `CLASSES` repeat the last class).
const SIZES: [u32; TABLE] = build_sizes();
/// Class of each request size, indexed by `(size + 15) / 16`; a power of two long so that the
/// index can be masked instead of checked (entries past `SMALL_MAX / 16` are never asked for).
const LOOKUP: [u8; LOOKUP_LEN] = build_lookup();
const LOOKUP_LEN: usize = (SMALL_MAX / 16 + 1).next_power_of_two();
/// `ceil(2^32 / size)` of each class: for an offset `o < 2^16` into a page,
/// `(o * inv) >> 32 == o / size`.
const INVERSE: [u32; TABLE] = build_inverse();

const fn build_sizes() -> [u32; TABLE] {
    let mut s = [SMALL_MAX as u32; TABLE];
    let mut i = 0;
    while i < 8 {
        s[i] = 16 * (i as u32 + 1);
        i += 1;
    }
    let mut base = 128u32;
    while i < CLASSES {
        let step = base / 8;
        let mut k = 1;
        while k <= 8 {
            s[i] = base + k * step;
            i += 1;
            k += 1;
        }
        base *= 2;
    }
    s
}

const fn build_lookup() -> [u8; LOOKUP_LEN] {
    let mut t = [(CLASSES - 1) as u8; LOOKUP_LEN];
    let mut g = 0;
    let mut c = 0;
    while g <= SMALL_MAX / 16 {
        while (SIZES[c] as usize) < g * 16 {
            c += 1;
        }
        t[g] = c as u8;
        g += 1;
    }
    t
}

const fn build_inverse() -> [u32; TABLE] {
    let mut v = [0u32; TABLE];
    let mut i = 0;
    while i < TABLE {
        v[i] = (1u64 << 32).div_ceil(SIZES[i] as u64) as u32;
        i += 1;
    }
    v
}

const_assert!(SIZES[CLASSES - 1] as usize == SMALL_MAX);
const_assert!(SIZES[0] == 16);

/// The class serving `size` bytes (`size <= SMALL_MAX`).
#[inline(always)]
pub(crate) fn class_of(size: usize) -> usize {
    debug_assert!(size <= SMALL_MAX);
    LOOKUP[((size + 15) >> 4) & (LOOKUP_LEN - 1)] as usize
}

/// Slot size of class `c`.
#[inline(always)]
pub(crate) fn slot_size(c: usize) -> usize {
    SIZES[c & (TABLE - 1)] as usize
}

/// The inverse of class `c`'s slot size (see [`INVERSE`]).
#[inline(always)]
pub(crate) fn inverse(c: usize) -> u32 {
    INVERSE[c & (TABLE - 1)]
}

/// The smallest class of at least `size` bytes whose slots are all aligned to `align` (pages
/// start on a 64 KiB boundary, so that is a class whose size is a multiple of `align`), if
/// there is one.
#[inline]
pub(crate) fn class_for(size: usize, align: usize) -> Option<usize> {
    if size > SMALL_MAX {
        return None;
    }
    if align <= 16 {
        return Some(class_of(size));
    }
    (class_of(size)..CLASSES).find(|&c| slot_size(c) % align == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_gets_the_smallest_class_that_holds_it() {
        for size in 0..=SMALL_MAX {
            let c = class_of(size);
            assert!(slot_size(c) >= size, "{size}");
            assert!(c == 0 || slot_size(c - 1) < size, "{size}");
        }
    }

    #[test]
    fn classes_grow_and_waste_at_most_an_eighth() {
        for c in 1..CLASSES {
            assert!(slot_size(c) > slot_size(c - 1));
            assert_eq!(slot_size(c) % 16, 0);
            let smallest = slot_size(c - 1) + 1;
            assert!(slot_size(c) - smallest <= 15.max(smallest / 8), "{c}");
        }
    }

    #[test]
    fn the_inverse_divides_every_offset_in_a_page() {
        for c in 0..CLASSES {
            let size = slot_size(c);
            for off in (0..1 << 16).step_by(if cfg!(miri) { 997 } else { 1 }) {
                let q = ((off as u64 * u64::from(inverse(c))) >> 32) as usize;
                assert_eq!(q, off / size, "class {c} offset {off}");
            }
        }
    }

    #[test]
    fn aligned_classes_are_multiples_of_the_alignment() {
        for align in [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192] {
            for size in [1, 17, 100, 500, 1000, 2000, 2048, 5000, 8192] {
                let c = class_for(size, align).unwrap();
                assert!(slot_size(c) >= size && slot_size(c) % align == 0);
            }
        }
        assert_eq!(class_for(SMALL_MAX + 1, 16), None);
        assert_eq!(class_for(16, 16384), None);
        // 4 KiB slots start on 4 KiB boundaries: pages start on 64 KiB ones.
        assert_eq!(slot_size(class_for(16, 4096).unwrap()), 4096);
    }
}
