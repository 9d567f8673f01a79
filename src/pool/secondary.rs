//! [`SecondaryMap`]: more data for the values of a [`Pool`](super::Pool), keyed by the same
//! handles (slotmap's `SecondaryMap`).
//!
//! A secondary map is a vector indexed by a handle's slot index, each entry remembering the
//! generation of the handle it was inserted under. A handle reaches an entry only while the
//! generations match, so once the pool reuses a slot (a new generation), the old entry is
//! unreachable, and inserting under the new handle replaces it. Generations only grow, so an
//! entry is never overwritten through a stale handle.

use core::fmt;
use core::iter::FusedIterator;
use core::num::NonZeroU32;
use core::ops::{Index, IndexMut};

use allocator_api2::alloc::{Allocator, Global};
use allocator_api2::vec::Vec;

use super::Handle;

/// One entry: the value and the generation of the handle it was inserted under.
struct Entry<V> {
    generation: NonZeroU32,
    value: V,
}

/// A map from the handles of a [`Pool<T>`](super::Pool) to values of another type `V`, stored
/// by slot index: O(1) `insert`, `get` and `remove`, and no hashing.
///
/// Use it to attach data to some of a pool's values without widening `T`: positions and
/// velocities of entities, say, in two maps keyed by the same handles. A handle whose value
/// was removed from the pool, and the slot reused, no longer reaches its entry here either.
///
/// ```
/// use strata_alloc::{Pool, SecondaryMap};
///
/// let mut names = Pool::new();
/// let mut ages = SecondaryMap::new();
/// let ada = names.insert("ada");
/// let bob = names.insert("bob");
/// ages.insert(ada, 36);
/// assert_eq!(ages.get(ada), Some(&36));
/// assert_eq!(ages.get(bob), None);
///
/// names.remove(ada);
/// let eve = names.insert("eve"); // reuses ada's slot, with a new generation
/// assert_eq!(eve.index(), ada.index());
/// assert_eq!(ages.get(eve), None); // ada's entry is not eve's
/// assert_eq!(ages.insert(eve, 29), None); // replaces the dead entry
/// assert_eq!(ages.get(ada), None);
/// ```
pub struct SecondaryMap<T, V, A: Allocator = Global> {
    entries: Vec<Option<Entry<V>>, A>,
    /// Entries present.
    len: usize,
    _handles: core::marker::PhantomData<fn() -> T>,
}

impl<T, V> SecondaryMap<T, V> {
    /// An empty map in the global allocator; allocates nothing until the first insert.
    ///
    /// ```
    /// let map: strata_alloc::SecondaryMap<u8, u32> = strata_alloc::SecondaryMap::new();
    /// assert!(map.is_empty());
    /// ```
    pub fn new() -> SecondaryMap<T, V> {
        SecondaryMap::new_in(Global)
    }
}

impl<T, V> Default for SecondaryMap<T, V> {
    fn default() -> Self {
        SecondaryMap::new()
    }
}

impl<T, V, A: Allocator> SecondaryMap<T, V, A> {
    /// An empty map storing its entries through `alloc`.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let mut pool = strata_alloc::Pool::new();
    /// let mut map = strata_alloc::SecondaryMap::new_in(&bump);
    /// let h = pool.insert('a');
    /// map.insert(h, 1u8);
    /// assert_eq!(map[h], 1);
    /// ```
    pub fn new_in(alloc: A) -> SecondaryMap<T, V, A> {
        SecondaryMap {
            entries: Vec::new_in(alloc),
            len: 0,
            _handles: core::marker::PhantomData,
        }
    }

    /// Entries in the map.
    ///
    /// ```
    /// let mut pool = strata_alloc::Pool::new();
    /// let mut map = strata_alloc::SecondaryMap::new();
    /// map.insert(pool.insert(()), "x");
    /// assert_eq!(map.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map has no entry.
    ///
    /// ```
    /// let map: strata_alloc::SecondaryMap<(), ()> = Default::default();
    /// assert!(map.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `value` for `handle`, returning the value stored for the same handle before.
    ///
    /// An entry left by an older handle of the same slot (a value the pool has since removed)
    /// is replaced and dropped, and `None` is returned. A `handle` older than the entry present
    /// is stale: nothing is stored, `value` is dropped and `None` is returned.
    ///
    /// ```
    /// let mut pool = strata_alloc::Pool::new();
    /// let mut map = strata_alloc::SecondaryMap::new();
    /// let h = pool.insert(());
    /// assert_eq!(map.insert(h, 1), None);
    /// assert_eq!(map.insert(h, 2), Some(1));
    /// ```
    pub fn insert(&mut self, handle: Handle<T>, value: V) -> Option<V> {
        let index = handle.index as usize;
        if index >= self.entries.len() {
            self.entries.resize_with(index + 1, || None);
        }
        let slot = self.entries.get_mut(index)?;
        match slot {
            Some(entry) if entry.generation == handle.generation => {
                Some(core::mem::replace(&mut entry.value, value))
            }
            Some(entry) if entry.generation > handle.generation => None,
            _ => {
                if slot.is_none() {
                    self.len += 1;
                }
                *slot = Some(Entry {
                    generation: handle.generation,
                    value,
                });
                None
            }
        }
    }

    /// The value stored for `handle`, if any.
    ///
    /// ```
    /// let mut pool = strata_alloc::Pool::new();
    /// let mut map = strata_alloc::SecondaryMap::new();
    /// let h = pool.insert(());
    /// map.insert(h, "here");
    /// assert_eq!(map.get(h), Some(&"here"));
    /// ```
    #[inline]
    pub fn get(&self, handle: Handle<T>) -> Option<&V> {
        match self.entries.get(handle.index as usize) {
            Some(Some(entry)) if entry.generation == handle.generation => Some(&entry.value),
            _ => None,
        }
    }

    /// The value stored for `handle`, mutably, if any.
    ///
    /// ```
    /// let mut pool = strata_alloc::Pool::new();
    /// let mut map = strata_alloc::SecondaryMap::new();
    /// let h = pool.insert(());
    /// map.insert(h, 1);
    /// *map.get_mut(h).unwrap() += 1;
    /// assert_eq!(map[h], 2);
    /// ```
    #[inline]
    pub fn get_mut(&mut self, handle: Handle<T>) -> Option<&mut V> {
        match self.entries.get_mut(handle.index as usize) {
            Some(Some(entry)) if entry.generation == handle.generation => Some(&mut entry.value),
            _ => None,
        }
    }

    /// Whether a value is stored for `handle`.
    ///
    /// ```
    /// let mut pool = strata_alloc::Pool::new();
    /// let mut map = strata_alloc::SecondaryMap::new();
    /// let h = pool.insert(());
    /// assert!(!map.contains_key(h));
    /// map.insert(h, ());
    /// assert!(map.contains_key(h));
    /// ```
    pub fn contains_key(&self, handle: Handle<T>) -> bool {
        self.get(handle).is_some()
    }

    /// Takes out the value stored for `handle`.
    ///
    /// ```
    /// let mut pool = strata_alloc::Pool::new();
    /// let mut map = strata_alloc::SecondaryMap::new();
    /// let h = pool.insert(());
    /// map.insert(h, 5);
    /// assert_eq!(map.remove(h), Some(5));
    /// assert_eq!(map.remove(h), None);
    /// ```
    pub fn remove(&mut self, handle: Handle<T>) -> Option<V> {
        let slot = self.entries.get_mut(handle.index as usize)?;
        match slot {
            Some(entry) if entry.generation == handle.generation => {
                self.len -= 1;
                slot.take().map(|e| e.value)
            }
            _ => None,
        }
    }

    /// The value for `handle`, inserting `f()` first if there is none (a stale `handle` is
    /// refused with `None`, as in [`insert`](SecondaryMap::insert)).
    ///
    /// ```
    /// let mut pool = strata_alloc::Pool::new();
    /// let mut hits = strata_alloc::SecondaryMap::new();
    /// let h = pool.insert(());
    /// for _ in 0..3 {
    ///     *hits.get_or_insert_with(h, || 0).unwrap() += 1;
    /// }
    /// assert_eq!(hits[h], 3);
    /// ```
    pub fn get_or_insert_with(
        &mut self,
        handle: Handle<T>,
        f: impl FnOnce() -> V,
    ) -> Option<&mut V> {
        if !self.contains_key(handle) {
            self.insert(handle, f());
        }
        self.get_mut(handle)
    }

    /// Keeps only the entries for which `keep` returns true.
    ///
    /// ```
    /// let mut pool = strata_alloc::Pool::new();
    /// let mut map = strata_alloc::SecondaryMap::new();
    /// for i in 0..6 { map.insert(pool.insert(()), i); }
    /// map.retain(|_, v| *v % 2 == 0);
    /// assert_eq!(map.len(), 3);
    /// ```
    pub fn retain(&mut self, mut keep: impl FnMut(Handle<T>, &mut V) -> bool) {
        for (index, slot) in self.entries.iter_mut().enumerate() {
            if let Some(entry) = slot {
                let handle = Handle::new(index as u32, entry.generation.get());
                if !keep(handle, &mut entry.value) {
                    *slot = None;
                    self.len -= 1;
                }
            }
        }
    }

    /// Removes every entry, keeping the memory.
    ///
    /// ```
    /// let mut pool = strata_alloc::Pool::new();
    /// let mut map = strata_alloc::SecondaryMap::new();
    /// map.insert(pool.insert(()), 1);
    /// map.clear();
    /// assert!(map.is_empty());
    /// ```
    pub fn clear(&mut self) {
        self.entries.clear();
        self.len = 0;
    }

    /// The entries with their handles, in slot order.
    ///
    /// ```
    /// let mut pool = strata_alloc::Pool::new();
    /// let mut map = strata_alloc::SecondaryMap::new();
    /// let a = pool.insert(());
    /// map.insert(a, 'a');
    /// assert_eq!(map.iter().collect::<Vec<_>>(), [(a, &'a')]);
    /// ```
    pub fn iter(&self) -> Iter<'_, T, V> {
        Iter {
            entries: self.entries.iter().enumerate(),
            left: self.len,
            _handles: core::marker::PhantomData,
        }
    }

    /// The entries, mutably, with their handles, in slot order.
    ///
    /// ```
    /// let mut pool = strata_alloc::Pool::new();
    /// let mut map = strata_alloc::SecondaryMap::new();
    /// let a = pool.insert(());
    /// map.insert(a, 1);
    /// map.iter_mut().for_each(|(_, v)| *v *= 10);
    /// assert_eq!(map[a], 10);
    /// ```
    pub fn iter_mut(&mut self) -> IterMut<'_, T, V> {
        IterMut {
            entries: self.entries.iter_mut().enumerate(),
            left: self.len,
            _handles: core::marker::PhantomData,
        }
    }

    /// The handles that have an entry, in slot order.
    ///
    /// ```
    /// let mut pool = strata_alloc::Pool::new();
    /// let mut map = strata_alloc::SecondaryMap::new();
    /// let a = pool.insert(());
    /// map.insert(a, ());
    /// assert_eq!(map.keys().collect::<Vec<_>>(), [a]);
    /// ```
    pub fn keys(&self) -> impl ExactSizeIterator<Item = Handle<T>> + '_ {
        self.iter().map(|(h, _)| h)
    }

    /// The stored values, in slot order.
    ///
    /// ```
    /// let mut pool = strata_alloc::Pool::new();
    /// let mut map = strata_alloc::SecondaryMap::new();
    /// map.insert(pool.insert(()), 3);
    /// map.insert(pool.insert(()), 4);
    /// assert_eq!(map.values().sum::<i32>(), 7);
    /// ```
    pub fn values(&self) -> impl ExactSizeIterator<Item = &V> + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// The stored values, mutably, in slot order.
    ///
    /// ```
    /// let mut pool = strata_alloc::Pool::new();
    /// let mut map = strata_alloc::SecondaryMap::new();
    /// let h = pool.insert(());
    /// map.insert(h, 3);
    /// map.values_mut().for_each(|v| *v += 1);
    /// assert_eq!(map[h], 4);
    /// ```
    pub fn values_mut(&mut self) -> impl ExactSizeIterator<Item = &mut V> + '_ {
        self.iter_mut().map(|(_, v)| v)
    }
}

impl<T, V, A: Allocator> Index<Handle<T>> for SecondaryMap<T, V, A> {
    type Output = V;

    /// # Panics
    ///
    /// If no value is stored for `handle`.
    #[track_caller]
    fn index(&self, handle: Handle<T>) -> &V {
        match self.get(handle) {
            Some(v) => v,
            None => panic!("SecondaryMap: no value for {handle:?}"),
        }
    }
}

impl<T, V, A: Allocator> IndexMut<Handle<T>> for SecondaryMap<T, V, A> {
    /// # Panics
    ///
    /// If no value is stored for `handle`.
    #[track_caller]
    fn index_mut(&mut self, handle: Handle<T>) -> &mut V {
        match self.get_mut(handle) {
            Some(v) => v,
            None => panic!("SecondaryMap: no value for {handle:?}"),
        }
    }
}

impl<T, V: fmt::Debug, A: Allocator> fmt::Debug for SecondaryMap<T, V, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<T, V: Clone, A: Allocator + Clone> Clone for SecondaryMap<T, V, A> {
    fn clone(&self) -> Self {
        let mut entries =
            Vec::with_capacity_in(self.entries.len(), self.entries.allocator().clone());
        entries.extend(self.entries.iter().map(|slot| {
            slot.as_ref().map(|e| Entry {
                generation: e.generation,
                value: e.value.clone(),
            })
        }));
        SecondaryMap {
            entries,
            len: self.len,
            _handles: core::marker::PhantomData,
        }
    }
}

impl<T, V, A: Allocator> Extend<(Handle<T>, V)> for SecondaryMap<T, V, A> {
    fn extend<I: IntoIterator<Item = (Handle<T>, V)>>(&mut self, iter: I) {
        for (h, v) in iter {
            self.insert(h, v);
        }
    }
}

impl<T, V> FromIterator<(Handle<T>, V)> for SecondaryMap<T, V> {
    fn from_iter<I: IntoIterator<Item = (Handle<T>, V)>>(iter: I) -> Self {
        let mut map = SecondaryMap::new();
        map.extend(iter);
        map
    }
}

impl<'a, T, V, A: Allocator> IntoIterator for &'a SecondaryMap<T, V, A> {
    type Item = (Handle<T>, &'a V);
    type IntoIter = Iter<'a, T, V>;

    fn into_iter(self) -> Iter<'a, T, V> {
        self.iter()
    }
}

/// Iterator over `(Handle<T>, &V)`, from [`SecondaryMap::iter`].
///
/// ```
/// let mut pool = strata_alloc::Pool::new();
/// let mut map = strata_alloc::SecondaryMap::new();
/// map.insert(pool.insert(()), 1);
/// assert_eq!(map.iter().len(), 1);
/// ```
pub struct Iter<'a, T, V> {
    entries: core::iter::Enumerate<core::slice::Iter<'a, Option<Entry<V>>>>,
    left: usize,
    _handles: core::marker::PhantomData<fn() -> T>,
}

impl<'a, T, V> Iterator for Iter<'a, T, V> {
    type Item = (Handle<T>, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        for (index, slot) in &mut self.entries {
            if let Some(e) = slot {
                self.left -= 1;
                return Some((Handle::new(index as u32, e.generation.get()), &e.value));
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<T, V> ExactSizeIterator for Iter<'_, T, V> {}
impl<T, V> FusedIterator for Iter<'_, T, V> {}

/// Iterator over `(Handle<T>, &mut V)`, from [`SecondaryMap::iter_mut`].
///
/// ```
/// let mut pool = strata_alloc::Pool::new();
/// let mut map = strata_alloc::SecondaryMap::new();
/// map.insert(pool.insert(()), 1);
/// assert_eq!(map.iter_mut().len(), 1);
/// ```
pub struct IterMut<'a, T, V> {
    entries: core::iter::Enumerate<core::slice::IterMut<'a, Option<Entry<V>>>>,
    left: usize,
    _handles: core::marker::PhantomData<fn() -> T>,
}

impl<'a, T, V> Iterator for IterMut<'a, T, V> {
    type Item = (Handle<T>, &'a mut V);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        for (index, slot) in &mut self.entries {
            if let Some(e) = slot {
                self.left -= 1;
                return Some((Handle::new(index as u32, e.generation.get()), &mut e.value));
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<T, V> ExactSizeIterator for IterMut<'_, T, V> {}
impl<T, V> FusedIterator for IterMut<'_, T, V> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pool;
    use crate::test_rng::Rng;
    use std::collections::HashMap;

    /// Random pool traffic with a secondary map beside it, against a HashMap model: an entry is
    /// reachable exactly while its handle is the one it was inserted under.
    #[test]
    fn secondary_map_follows_the_pool_like_a_model() {
        let mut rng = Rng::new(3);
        let mut pool: Pool<u32> = Pool::new();
        let mut map: SecondaryMap<u32, u64> = SecondaryMap::new();
        let mut model: HashMap<Handle<u32>, u64> = HashMap::new();
        let mut seen: std::vec::Vec<Handle<u32>> = std::vec::Vec::new();
        for op in 0..if cfg!(miri) { 300 } else { 20_000 } {
            match rng.range(0, 6) {
                0 | 1 => seen.push(pool.insert(op)),
                2 if !seen.is_empty() => {
                    let h = seen[rng.range(0, seen.len())];
                    pool.remove(h);
                }
                3 if !seen.is_empty() => {
                    let h = seen[rng.range(0, seen.len())];
                    let v = rng.next_u64();
                    // Only live or newest handles store; an older handle than the entry is
                    // refused.
                    let newer_present = model
                        .keys()
                        .any(|k| k.index() == h.index() && k.generation() > h.generation());
                    let expected = if newer_present {
                        None
                    } else {
                        model.retain(|k, _| k.index() != h.index() || *k == h);
                        model.insert(h, v)
                    };
                    assert_eq!(map.insert(h, v), expected);
                }
                4 if !seen.is_empty() => {
                    let h = seen[rng.range(0, seen.len())];
                    assert_eq!(map.remove(h), model.remove(&h));
                }
                _ if !seen.is_empty() => {
                    let h = seen[rng.range(0, seen.len())];
                    assert_eq!(map.get(h), model.get(&h));
                }
                _ => {}
            }
            assert_eq!(map.len(), model.len());
        }
        let mut got: std::vec::Vec<_> = map.iter().map(|(h, &v)| (h, v)).collect();
        let mut want: std::vec::Vec<_> = model.into_iter().collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(map.keys().count(), map.values().count());
    }
}
