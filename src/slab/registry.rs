//! The out-of-band registry of live batches: batch frame number -> batch index (and a tag).
//!
//! Every batch is `BATCH_SIZE` bytes aligned to `BATCH_SIZE`, so the frame number of any address
//! inside it is `addr >> BATCH_SHIFT`. `free` masks the pointer to its frame number and asks this
//! table whether the pool owns that frame *before* it looks at anything else, so a foreign
//! pointer is rejected without reading a byte of memory the pool does not own.
//!
//! The table is open addressing with linear probing and backward-shift deletion (no tombstones,
//! so lookups never slow down after many give-backs). It works for batches from any source (a
//! Region or an arbitrary `Allocator`), which a direct index over one span would not.
//!
//! Invariants kept here:
//! - `slots.len()` is a power of two and at least `2 * len` (load factor at most 1/2), so a probe
//!   always meets an empty slot and terminates.
//! - Key 0 marks an empty slot. Frame 0 holds addresses below `BATCH_SIZE`, which no allocator
//!   hands out (the null page region), so no real batch has frame number 0; `insert` refuses it.
//! - Every key appears at most once, and every key sits in the probe run that starts at its home
//!   slot with no empty slot in between.

/// One slot of the table: a frame number (0 = empty), the batch index it maps to, and a tag
/// the pool chooses (the reciprocal of the batch's slot size). The tag rides along in what
/// would be padding so `free` can start its slot arithmetic without waiting for a second load.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Entry {
    key: usize,
    pub(super) batch: u32,
    pub(super) tag: u32,
}

/// Frame number -> batch index, O(1) expected per lookup.
#[derive(Debug, Default)]
pub(super) struct Registry {
    slots: Vec<Entry>,
    len: usize,
}

/// Fibonacci hashing: consecutive frame numbers (batches carved from one span) spread well.
#[inline]
fn home(key: usize, mask: usize) -> usize {
    (key as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(32) as usize
        & mask
}

impl Registry {
    /// Number of registered frames.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The batch registered for frame `key`, if any.
    #[inline]
    pub(super) fn get(&self, key: usize) -> Option<Entry> {
        if self.len == 0 || key == 0 {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = home(key, mask);
        loop {
            // SAFETY: `i <= mask = slots.len() - 1` (a power of two minus one, `len > 0`).
            let e = unsafe { *self.slots.get_unchecked(i) };
            if e.key == key {
                return Some(e);
            }
            if e.key == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Registers `key -> batch`. Returns false (and changes nothing) for key 0 or a key that is
    /// already present: both would mean the batch source handed out memory it should not have.
    pub(super) fn insert(&mut self, key: usize, batch: u32, tag: u32) -> bool {
        if key == 0 || self.get(key).is_some() {
            return false;
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.rehash((self.slots.len() * 2).max(16));
        }
        self.place(Entry { key, batch, tag });
        self.len += 1;
        true
    }

    fn place(&mut self, e: Entry) {
        let mask = self.slots.len() - 1;
        let mut i = home(e.key, mask);
        while self.slots[i].key != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = e;
    }

    fn rehash(&mut self, cap: usize) {
        let old = core::mem::replace(&mut self.slots, vec![Entry::default(); cap]);
        for e in old.into_iter().filter(|e| e.key != 0) {
            self.place(e);
        }
    }

    /// Removes `key`; returns whether it was present.
    pub(super) fn remove(&mut self, key: usize) -> bool {
        if self.len == 0 || key == 0 {
            return false;
        }
        let mask = self.slots.len() - 1;
        let mut i = home(key, mask);
        loop {
            match self.slots[i].key {
                0 => return false,
                k if k == key => break,
                _ => i = (i + 1) & mask,
            }
        }
        // Backward-shift: pull later members of the run into the hole when the hole lies on
        // their probe path, so no run is ever broken by an empty slot.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        while self.slots[j].key != 0 {
            let h = home(self.slots[j].key, mask);
            // `j` may move into `hole` iff its home is not in the cyclic range (hole, j].
            let dist_home = j.wrapping_sub(h) & mask;
            let dist_hole = j.wrapping_sub(hole) & mask;
            if dist_home >= dist_hole {
                self.slots[hole] = self.slots[j];
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.slots[hole] = Entry::default();
        self.len -= 1;
        true
    }

    /// Empties the table and frees its storage.
    pub(super) fn clear(&mut self) {
        *self = Registry::default();
    }

    /// Every registered `(key, batch, tag)`, for the integrity check.
    pub(super) fn entries(&self) -> impl Iterator<Item = (usize, u32, u32)> + '_ {
        self.slots
            .iter()
            .filter(|e| e.key != 0)
            .map(|e| (e.key, e.batch, e.tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;
    use std::collections::HashMap;

    #[test]
    fn matches_a_hashmap_under_random_inserts_and_removes() {
        let mut rng = Rng::new(7);
        let mut reg = Registry::default();
        let mut model: HashMap<usize, u32> = HashMap::new();
        let ops = if cfg!(miri) { 300 } else { 20_000 };
        for n in 0..ops {
            // Small key space so removes hit and runs collide.
            let key = rng.range(0, 200);
            if rng.chance(1, 2) {
                let fresh = key != 0 && !model.contains_key(&key);
                assert_eq!(reg.insert(key, n, n % 64), fresh);
                if fresh {
                    model.insert(key, n);
                }
            } else {
                assert_eq!(reg.remove(key), model.remove(&key).is_some());
            }
            assert_eq!(reg.len(), model.len());
            assert_eq!(reg.get(key).map(|e| e.batch), model.get(&key).copied());
        }
        for (k, v) in &model {
            let e = reg.get(*k).unwrap();
            assert_eq!((e.batch, e.tag), (*v, *v % 64));
        }
        assert_eq!(reg.entries().count(), model.len());
    }

    #[test]
    fn key_zero_is_never_stored() {
        let mut reg = Registry::default();
        assert!(!reg.insert(0, 1, 0));
        assert!(reg.get(0).is_none());
        assert!(reg.insert(5, 1, 0));
        assert!(!reg.insert(5, 2, 0));
        assert_eq!(reg.get(5).map(|e| e.batch), Some(1));
    }
}
