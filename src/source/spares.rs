//! Spare mappings: freed large blocks kept mapped, with their pages, for the next large
//! request, so that a program that frees and regrows large buffers does not fault in fresh
//! zero pages each time.
//!
//! The mappings are kept out of band, in a page of their own mapped on the first spare (a
//! heap that never frees a mapped block pays one word-sized `None` for them). Nothing is
//! written into a spare mapping: its bytes are whatever the freed block left, so a spare is
//! never handed to a request that needs zeroed memory.
//!
//! Invariants kept here:
//! - The first `count` records of the storage hold initialised mappings, each page aligned
//!   and owned by nobody else; `count <= SPARES`.
//! - `bytes` is the sum of their lengths.

use core::mem::MaybeUninit;

use memmap2::MmapMut;

use crate::Region;

/// The most mappings kept.
pub(crate) const SPARES: usize = 64;
static_assertions::const_assert!(SPARES * core::mem::size_of::<MmapMut>() <= 4096);

/// The freed mappings kept for reuse.
pub(crate) struct Spares {
    /// Storage for `SPARES` mappings; `None` until the first spare.
    storage: Option<Region>,
    count: usize,
    bytes: usize,
}

impl Spares {
    /// No spares and no storage.
    pub const fn new() -> Spares {
        Spares {
            storage: None,
            count: 0,
            bytes: 0,
        }
    }

    /// Bytes held in spare mappings.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of spare mappings.
    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.count
    }

    /// The records, `SPARES` of them, of which the first `count` are initialised; empty
    /// without storage.
    fn records(&mut self) -> &mut [MaybeUninit<MmapMut>] {
        match &self.storage {
            // SAFETY: the storage is a private mapping of at least `SPARES` records, aligned
            // to the page; `&mut self` makes this the only reference into it.
            Some(r) => unsafe { core::slice::from_raw_parts_mut(r.base().as_ptr().cast(), SPARES) },
            None => &mut [],
        }
    }

    /// Keeps `map` if it fits within `budget` bytes of spares, making room by unmapping
    /// smaller spares; otherwise drops (unmaps) it. Returns the bytes unmapped.
    pub fn keep(&mut self, map: MmapMut, budget: usize) -> usize {
        let len = map.len();
        if len > budget {
            return len;
        }
        if self.storage.is_none() {
            let Ok(mut r) = Region::reserve(SPARES * core::mem::size_of::<MmapMut>()) else {
                return len;
            };
            if r.grow(r.capacity()).is_err() {
                return len;
            }
            self.storage = Some(r);
        }
        let mut unmapped = 0;
        while self.count == SPARES || self.bytes + len > budget {
            match self.smallest() {
                Some((i, l)) if l < len => unmapped += self.evict(i),
                _ => return unmapped + len,
            }
        }
        let i = self.count;
        self.records()[i].write(map);
        self.count += 1;
        self.bytes += len;
        unmapped
    }

    /// The index and length of the smallest spare.
    fn smallest(&mut self) -> Option<(usize, usize)> {
        let n = self.count;
        self.records()[..n]
            .iter()
            .enumerate()
            // SAFETY: the first `count` records are initialised.
            .map(|(i, m)| (i, unsafe { m.assume_init_ref() }.len()))
            .min_by_key(|&(_, l)| l)
    }

    /// Takes the spare at `i` out, moving the last one into its place.
    fn remove(&mut self, i: usize) -> MmapMut {
        debug_assert!(i < self.count);
        let last = self.count - 1;
        let records = self.records();
        // SAFETY: `i` and `last` are below `count`, so initialised; the last record is moved
        // into the hole bitwise and then counted out, so each mapping has one owner.
        let map = unsafe {
            let map = records[i].assume_init_read();
            if i != last {
                let moved = records[last].assume_init_read();
                records[i].write(moved);
            }
            map
        };
        self.count = last;
        self.bytes -= map.len();
        map
    }

    /// Unmaps the spare at `i`; returns its length.
    fn evict(&mut self, i: usize) -> usize {
        let map = self.remove(i);
        map.len()
    }

    /// The smallest spare of `min..=max` bytes, taken out.
    pub fn take(&mut self, min: usize, max: usize) -> Option<MmapMut> {
        let n = self.count;
        let (i, _) = self.records()[..n]
            .iter()
            .enumerate()
            // SAFETY: the first `count` records are initialised.
            .map(|(i, m)| (i, unsafe { m.assume_init_ref() }.len()))
            .filter(|&(_, l)| l >= min && l <= max)
            .min_by_key(|&(_, l)| l)?;
        Some(self.remove(i))
    }

    /// Unmaps every spare; returns the bytes given back.
    pub fn release(&mut self) -> usize {
        let bytes = self.bytes;
        while self.count > 0 {
            self.evict(self.count - 1);
        }
        bytes
    }
}

impl Default for Spares {
    fn default() -> Self {
        Spares::new()
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memmap2::MmapOptions;

    fn map(len: usize) -> MmapMut {
        MmapOptions::new().len(len).map_anon().unwrap()
    }

    #[test]
    fn spares_are_kept_within_the_budget_and_taken_smallest_first() {
        let page = crate::page_size();
        let mut s = Spares::new();
        assert_eq!(s.keep(map(4 * page), 8 * page), 0);
        assert_eq!(s.keep(map(2 * page), 8 * page), 0);
        assert_eq!((s.count(), s.bytes()), (2, 6 * page));
        // Over the budget: the smaller spare makes room for a larger one.
        assert_eq!(s.keep(map(3 * page), 8 * page), 2 * page);
        assert_eq!((s.count(), s.bytes()), (2, 7 * page));
        // A mapping larger than every spare it would evict is dropped itself.
        assert_eq!(s.keep(map(9 * page), 8 * page), 9 * page);
        let mut m = s.take(3 * page, 8 * page).unwrap();
        assert_eq!(m.len(), 3 * page);
        m[0] = 1;
        assert!(s.take(5 * page, 8 * page).is_none());
        assert_eq!(s.take(page, 4 * page).unwrap().len(), 4 * page);
        assert_eq!((s.count(), s.bytes()), (0, 0));
        assert_eq!(s.keep(map(page), 8 * page), 0);
        assert_eq!(s.release(), page);
        assert_eq!((s.count(), s.bytes()), (0, 0));
    }

    #[test]
    fn at_most_spares_mappings_are_kept() {
        let page = crate::page_size();
        let mut s = Spares::new();
        let n = if cfg!(miri) { SPARES + 2 } else { 2 * SPARES };
        let mut unmapped = 0;
        for i in 0..n {
            unmapped += s.keep(map((1 + i % 3) * page), usize::MAX);
        }
        assert_eq!(s.count(), SPARES);
        let kept: usize = (0..n).map(|i| (1 + i % 3) * page).sum::<usize>() - unmapped;
        assert_eq!(s.bytes(), kept);
    }
}
