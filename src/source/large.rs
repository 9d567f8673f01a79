//! Large blocks: each in its own anonymous mapping, found through an out-of-band table.
//!
//! A large block's payload starts at its mapping's first byte (page aligned, so every
//! alignment up to the page size holds), and nothing about it is stored in the mapping: the
//! table knows its length. A block aligned beyond the page ([`LargeBlocks::alloc_aligned`])
//! is over-mapped by the alignment and its payload starts at the first aligned address in
//! the mapping; the tail past the block is given back at once and the lead before it is
//! never touched (address space, not memory). A pointer handed back is looked up in the table before any byte at it is
//! read, so a foreign pointer or a double free can never make the heap touch memory it does
//! not own.
//!
//! The table is an open-addressing hash table with linear probing, keyed by address, stored in
//! its own mapping (the heap never allocates through another allocator, so it can serve as
//! the global allocator). Deletion shifts later entries back, so there are no tombstones.
//! The table grows with the number of blocks: it has no storage until the first block is
//! mapped, starts at [`MIN_SLOTS`] slots, doubles before it would pass half full and halves
//! once it falls below an eighth full, so a lookup stays O(1) on average and a heap that
//! never maps a block pays nothing for the table. A rejected pointer is classified without a
//! scan unless it falls between the lowest and highest mapped addresses (see `reject`).
//!
//! Invariants kept here:
//! - Every live large block has exactly one entry; `count` is the number of entries.
//! - `slots` is 0 or a power of two of at least [`MIN_SLOTS`], with storage for that many
//!   entries followed by the ring of [`RECENT`] freed addresses, and `2 * count <= slots`.
//! - An entry's `addr` is non-zero and the entry sits in the probe run starting at
//!   `home(addr)`, with no empty slot between.
//! - An entry's `addr` lies in its mapping's first `max(align, page)` bytes, page aligned.
//! - `bytes` is the sum of the entries' mapping lengths (leads included).
//! - Every live block lies in `[low, high)`.

use core::mem::MaybeUninit;
use core::ptr::NonNull;

use memmap2::{MmapMut, MmapOptions, RemapOptions};

use super::spares::Spares;
use crate::{Error, Region};

/// One mapped block.
struct Entry {
    /// Payload address (the mapping's start, or the first aligned address in it for an
    /// aligned block); 0 marks an empty slot.
    addr: usize,
    /// The mapping; initialised exactly when `addr != 0`.
    map: MaybeUninit<MmapMut>,
}

/// Addresses of recently freed large blocks, to tell a double free from a foreign pointer.
/// They are kept in the table's storage, after the slots: only a table that has held a block
/// can have freed one, and an empty heap stays small.
const RECENT: usize = 64;

/// The smallest table once one exists: its storage (slots and recent frees) fits one 4 KiB
/// page.
pub(crate) const MIN_SLOTS: usize = 128;
static_assertions::const_assert!(
    MIN_SLOTS * core::mem::size_of::<Entry>() + RECENT * core::mem::size_of::<usize>() <= 4096
);

/// The table of large blocks.
pub(crate) struct LargeBlocks {
    /// The slot array, `slots` entries; dangling while `slots == 0`.
    table: *mut Entry,
    /// Number of slots: 0 (no storage yet) or a power of two.
    slots: usize,
    /// `64 - log2(slots)`: the shift that takes a hash to a slot index.
    shift: u32,
    count: usize,
    bytes: usize,
    /// How many addresses were ever put in the recent-frees ring (in the storage, after the
    /// slots); the next goes at `recent_at % RECENT`.
    recent_at: usize,
    /// The lowest payload address and the highest mapping end of the blocks mapped since the
    /// table was last empty: a pointer outside them is inside no block.
    low: usize,
    high: usize,
    /// Owns the slot array; `None` until the first block is mapped.
    _storage: Option<Region>,
    /// Freed mappings kept for reuse (outside the table: not live blocks).
    spares: Spares,
}

// SAFETY: the table exclusively owns its storage mapping and the block mappings it lists;
// moving it to another thread moves that ownership.
unsafe impl Send for LargeBlocks {}

impl LargeBlocks {
    /// An empty table; it maps nothing until the first block is added.
    pub const fn new() -> LargeBlocks {
        LargeBlocks {
            table: core::ptr::NonNull::dangling().as_ptr(),
            slots: 0,
            shift: 64,
            count: 0,
            bytes: 0,
            recent_at: 0,
            low: usize::MAX,
            high: 0,
            _storage: None,
            spares: Spares::new(),
        }
    }

    /// Number of live large blocks.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Bytes mapped for live large blocks.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes held in spare mappings (freed blocks kept for reuse, see [`Spares`]).
    pub fn spare_bytes(&self) -> usize {
        self.spares.bytes()
    }

    /// Unmaps every spare mapping; returns the bytes given back.
    pub fn release_spares(&mut self) -> usize {
        self.spares.release()
    }

    /// Slots in the table (0 before the first block): for tests of its growth.
    #[cfg(test)]
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The recent-frees ring: empty before the table has storage.
    fn recent(&self) -> &[usize] {
        if self.slots == 0 {
            return &[];
        }
        // SAFETY: the storage holds `slots` entries and then `RECENT` words (zero until
        // written), 8-aligned since an entry is; nothing else refers to them while `&self`
        // is borrowed.
        unsafe { core::slice::from_raw_parts(self.table.add(self.slots).cast::<usize>(), RECENT) }
    }

    /// The recent-frees ring, to write; `None` before the table has storage.
    fn recent_mut(&mut self) -> Option<&mut [usize; RECENT]> {
        if self.slots == 0 {
            return None;
        }
        // SAFETY: as in `recent`; `&mut self` makes this the only reference.
        Some(unsafe { &mut *self.table.add(self.slots).cast::<[usize; RECENT]>() })
    }

    /// The slot at index `i` modulo the table size. Only called while `slots != 0`.
    #[inline]
    fn slot(&self, i: usize) -> *mut Entry {
        debug_assert!(self.slots != 0);
        // SAFETY: `i & (slots - 1)` indexes inside the storage mapping, which holds `slots`
        // entries (fresh anonymous memory is zero: `addr == 0`, an empty slot).
        unsafe { self.table.add(i & (self.slots - 1)) }
    }

    /// The first slot of `addr`'s probe run (Fibonacci hashing of the page number). Only
    /// called while `slots != 0`, so `shift < 64`.
    #[inline]
    fn home(&self, addr: usize) -> usize {
        ((addr as u64 >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// Usable bytes of a live entry: from its payload to the end of its mapping.
    fn usable(e: &Entry) -> usize {
        // SAFETY: callers pass live entries, whose map is initialised.
        let map = unsafe { e.map.assume_init_ref() };
        map.as_ptr() as usize + map.len() - e.addr
    }

    /// The live entries.
    fn entries(&self) -> impl Iterator<Item = &Entry> + '_ {
        (0..self.slots).filter_map(|i| {
            // SAFETY: `i < slots`, so the slot is in bounds.
            let e = unsafe { &*self.slot(i) };
            (e.addr != 0).then_some(e)
        })
    }

    /// The slot holding `addr`, if it is a live block.
    fn find(&self, addr: usize) -> Option<usize> {
        if self.count == 0 || addr == 0 {
            return None;
        }
        let home = self.home(addr);
        // The table is at most half full, so a probe run ends within `slots` steps; the
        // bound keeps a damaged table from looping.
        (home..home + self.slots)
            .map(|i| {
                // SAFETY: `slot` is in bounds; `addr` is plain data.
                (i, unsafe { (*self.slot(i)).addr })
            })
            .find(|&(_, a)| a == addr || a == 0)
            .and_then(|(i, a)| (a == addr).then_some(i & (self.slots - 1)))
    }

    /// Makes sure one more entry fits at most half full, growing (doubling) the table if not.
    /// Called before a block is mapped, so a refused growth leaves nothing to undo.
    fn make_room(&mut self, size: usize) -> Result<(), Error> {
        if (self.count + 1) * 2 <= self.slots {
            return Ok(());
        }
        let slots = (self.slots * 2).max(MIN_SLOTS);
        self.rebuild(slots).map_err(|_| Error::oom(size, 0))
    }

    /// Moves every entry into a fresh table of `slots` slots (a power of two, at least
    /// [`MIN_SLOTS`], more than twice `count`). On an error the table is unchanged.
    fn rebuild(&mut self, slots: usize) -> Result<(), Error> {
        debug_assert!(slots.is_power_of_two() && slots >= MIN_SLOTS && self.count * 2 <= slots);
        let bytes = slots
            .checked_mul(core::mem::size_of::<Entry>())
            .and_then(|b| b.checked_add(RECENT * core::mem::size_of::<usize>()))
            .ok_or(Error::oom(slots, 0))?;
        let mut storage = Region::reserve(bytes)?;
        let base = storage.grow(storage.capacity())?;
        let spares = core::mem::take(&mut self.spares);
        let old = core::mem::replace(
            self,
            LargeBlocks {
                table: base.as_ptr().cast(),
                slots,
                shift: 64 - slots.trailing_zeros(),
                count: 0,
                bytes: self.bytes,
                recent_at: self.recent_at,
                low: self.low,
                high: self.high,
                _storage: Some(storage),
                spares,
            },
        );
        for i in 0..old.slots {
            // SAFETY: `i < old.slots`; a live entry's mapping is moved out bitwise exactly
            // once, and its slot is marked empty so that `old`'s drop does not unmap it.
            unsafe {
                let e = old.slot(i);
                if (*e).addr != 0 {
                    let addr = (*e).addr;
                    let map = (*e).map.assume_init_read();
                    (*e).addr = 0;
                    self.insert(addr, map);
                }
            }
        }
        if let Some(ring) = self.recent_mut() {
            // A table without storage yet has no ring: the new one stays zero.
            for (to, &from) in ring.iter_mut().zip(old.recent()) {
                *to = from;
            }
        }
        // `old` now lists nothing: dropping it only unmaps the old slot array.
        drop(old);
        Ok(())
    }

    /// Halves the table while it is less than an eighth full (down to [`MIN_SLOTS`]). A
    /// refused mapping only leaves the larger table.
    fn shrink_to_fit(&mut self) {
        if self.slots > MIN_SLOTS && self.count * 8 < self.slots {
            let slots = (self.count * 4).next_power_of_two().max(MIN_SLOTS);
            let _ = self.rebuild(slots);
        }
    }

    /// Maps a new block of at least `size` bytes, or, with `reuse`, takes a spare mapping of
    /// up to twice that if there is one (its bytes are not zero). Returns the block, its
    /// length and whether it was a spare.
    pub fn alloc(&mut self, size: usize, reuse: bool) -> Result<(NonNull<u8>, usize, bool), Error> {
        let len = size
            .checked_add(crate::page_size() - 1)
            .map(|l| l & !(crate::page_size() - 1))
            .ok_or(Error::layout(
                size,
                1,
                "size overflows when rounded to pages",
            ))?;
        self.make_room(size)?;
        let spare = if reuse {
            self.spares.take(len, len.saturating_mul(2))
        } else {
            None
        };
        let reused = spare.is_some();
        let mut map = match spare {
            Some(map) => map,
            None => MmapOptions::new()
                .len(len)
                .map_anon()
                .map_err(|_| Error::oom(size, 0))?,
        };
        let len = map.len();
        let p = NonNull::new(map.as_mut_ptr()).ok_or(Error::oom(size, 0))?;
        self.insert(p.as_ptr() as usize, map);
        self.bytes += len;
        Ok((p, len, reused))
    }

    /// Moves the live block at `addr` into a spare mapping of `size..=2 * size` bytes, if
    /// there is one, copying its first `keep` bytes; the old mapping becomes a spare within
    /// `budget`. Faster than `remap` for a growing buffer: a copy instead of faulting in fresh
    /// pages. Returns the new block, its length and the bytes unmapped.
    pub fn move_to_spare(
        &mut self,
        addr: usize,
        size: usize,
        keep: usize,
        budget: usize,
    ) -> Result<Option<(NonNull<u8>, usize, usize)>, Error> {
        let i = self.find(addr).ok_or_else(|| self.reject(addr))?;
        let page = crate::page_size();
        let Some(len) = size.checked_add(page - 1).map(|l| l & !(page - 1)) else {
            return Ok(None);
        };
        let Some(mut to) = self.spares.take(len, len.saturating_mul(2)) else {
            return Ok(None);
        };
        let from = self.take(i);
        let lead = addr - from.as_ptr() as usize;
        debug_assert!(keep <= from.len() - lead && keep <= to.len());
        let keep = keep.min(from.len() - lead).min(to.len());
        to[..keep].copy_from_slice(&from[lead..lead + keep]);
        let p = NonNull::new(to.as_mut_ptr()).ok_or(Error::oom(size, 0))?;
        let new_len = to.len();
        self.bytes = self.bytes - from.len() + new_len;
        // The slot `take` emptied is still free: re-inserting cannot need a larger table.
        self.insert(p.as_ptr() as usize, to);
        let unmapped = self.retire(addr, from, budget);
        Ok(Some((p, new_len, unmapped)))
    }

    /// Remembers `addr` as freed, and keeps its mapping as a spare within `budget` (a block
    /// with a lead, aligned beyond the page, is unmapped). Returns the bytes unmapped.
    fn retire(&mut self, addr: usize, map: MmapMut, budget: usize) -> usize {
        let at = self.recent_at % RECENT;
        if let Some(ring) = self.recent_mut() {
            ring[at] = addr;
        }
        self.recent_at = self.recent_at.wrapping_add(1);
        if map.as_ptr() as usize == addr {
            self.spares.keep(map, budget)
        } else {
            map.len()
        }
    }

    /// Maps a new block of at least `size` bytes whose payload is aligned to `align` (a power
    /// of two above the page size). Returns it and the bytes mapped.
    ///
    /// The mapping is `align - page` bytes longer than the block, so an aligned address falls
    /// in its lead; the tail past the block is cut off with `mremap` right away, the lead stays
    /// mapped but untouched. (Unmapping the lead is not possible: the mapping is dropped as one
    /// piece.)
    pub fn alloc_aligned(
        &mut self,
        size: usize,
        align: usize,
    ) -> Result<(NonNull<u8>, usize), Error> {
        let page = crate::page_size();
        debug_assert!(align.is_power_of_two() && align > page);
        let too_big = Error::layout(size, align, "size overflows when rounded to pages");
        let len = size
            .checked_add(page - 1)
            .map(|l| l & !(page - 1))
            .ok_or(too_big.clone())?;
        let total = len
            .checked_add(align - page)
            .filter(|&t| t <= isize::MAX as usize)
            .ok_or(too_big)?;
        self.make_room(size)?;
        let mut map = MmapOptions::new()
            .len(total)
            .map_anon()
            .map_err(|_| Error::oom(size, 0))?;
        let start = map.as_mut_ptr() as usize;
        let lead = start.next_multiple_of(align) - start;
        if lead + len < total && !cfg!(miri) {
            // SAFETY: the mapping is anonymous and fresh: nothing points into the tail being
            // cut, and shrinking in place keeps the start.
            let _ = unsafe { map.remap(lead + len, RemapOptions::new().may_move(false)) };
        }
        let mapped = map.len();
        let p = NonNull::new(map.as_mut_ptr().wrapping_add(lead)).ok_or(Error::oom(size, 0))?;
        self.insert(p.as_ptr() as usize, map);
        self.bytes += mapped;
        Ok((p, mapped))
    }

    /// Adds the entry; `make_room` (or a `take` just before) left a free slot, so the table
    /// stays at most half full.
    fn insert(&mut self, addr: usize, map: MmapMut) {
        debug_assert!(self.slots != 0 && (self.count + 1) * 2 <= self.slots);
        self.low = self.low.min(addr);
        self.high = self.high.max(map.as_ptr() as usize + map.len());
        let mut i = self.home(addr);
        // SAFETY (loop and write): slots are in bounds; the table is at most half full, so
        // an empty slot is reached.
        unsafe {
            while (*self.slot(i)).addr != 0 {
                i += 1;
            }
            self.slot(i).write(Entry {
                addr,
                map: MaybeUninit::new(map),
            });
        }
        self.count += 1;
    }

    /// Takes the entry in slot `i` out of the table, shifting later entries of its probe run
    /// back so lookups never cross a hole.
    fn take(&mut self, i: usize) -> MmapMut {
        // SAFETY: slot `i` holds a live entry (found by `find`), so its map is initialised;
        // reading it moves ownership out, and the slot is overwritten below.
        let map = unsafe { (*self.slot(i)).map.assume_init_read() };
        let mask = self.slots - 1;
        let mut hole = i;
        let mut j = i + 1;
        loop {
            // SAFETY: slots are in bounds; entries are moved bitwise, each exactly once.
            unsafe {
                let a = (*self.slot(j)).addr;
                if a == 0 {
                    break;
                }
                let home = self.home(a);
                // Move the entry at `j` into the hole if its home is not in (hole, j].
                let dist_hole = hole.wrapping_sub(home) & mask;
                let dist_j = j.wrapping_sub(home) & mask;
                if dist_hole < dist_j {
                    core::ptr::copy_nonoverlapping(self.slot(j), self.slot(hole), 1);
                    hole = j;
                }
            }
            j += 1;
        }
        // SAFETY: the hole's entry was moved out (or is the taken one); mark it empty.
        unsafe { (*self.slot(hole)).addr = 0 };
        self.count -= 1;
        map
    }

    /// Whether `addr` is the start of a live block of this table.
    pub fn holds(&self, addr: usize) -> bool {
        self.find(addr).is_some()
    }

    /// Length of the live block at `addr`, or why it is not one.
    pub fn len_of(&self, addr: usize) -> Result<usize, Error> {
        match self.find(addr) {
            // SAFETY: a found slot is in bounds and holds a live entry.
            Some(i) => Ok(Self::usable(unsafe { &*self.slot(i) })),
            None => Err(self.reject(addr)),
        }
    }

    /// Whether `addr` lies inside some live large block (for classifying interior pointers).
    /// Outside `[low, high)` no block can hold it, so only a pointer between mapped blocks
    /// costs a scan of the table (on the error path alone).
    fn inside_any(&self, addr: usize) -> bool {
        addr >= self.low
            && addr < self.high
            && self
                .entries()
                .any(|e| addr > e.addr && addr < e.addr + Self::usable(e))
    }

    fn reject(&self, addr: usize) -> Error {
        if addr != 0 && self.recent().contains(&addr) {
            Error::DoubleFree { addr }
        } else if self.inside_any(addr) {
            Error::InvalidPointer {
                addr,
                reason: "it points into the middle of a mapped block",
            }
        } else {
            // The table forgets a mapping once it is unmapped (it remembers the last few), so
            // this may be a double free of a block unmapped long ago.
            Error::InvalidPointer {
                addr,
                reason: "it does not point into this allocator (a mapped block is forgotten \
                         once unmapped, so this may also be a double free of one)",
            }
        }
    }

    /// Frees the live block at `addr`: its mapping is kept as a spare within `budget` bytes
    /// of spares, else unmapped. Returns the block's length and the bytes unmapped.
    pub fn free(&mut self, addr: usize, budget: usize) -> Result<(usize, usize), Error> {
        let i = self.find(addr).ok_or_else(|| self.reject(addr))?;
        let map = self.take(i);
        let len = map.len();
        self.bytes -= len;
        let unmapped = self.retire(addr, map, budget);
        if self.count == 0 {
            (self.low, self.high) = (usize::MAX, 0);
        }
        self.shrink_to_fit();
        Ok((len, unmapped))
    }

    /// Resizes the block at `addr` to at least `size` bytes with `mremap`, moving it if
    /// `may_move`. Returns the new address and the new and old lengths, or `None` if the OS
    /// could not do it (the block is unchanged). Without `may_move` the block keeps its
    /// address and the caller keeps using its own pointer: the one returned is not for access.
    pub fn remap(
        &mut self,
        addr: usize,
        size: usize,
        may_move: bool,
    ) -> Result<Option<(NonNull<u8>, usize, usize)>, Error> {
        let i = self.find(addr).ok_or_else(|| self.reject(addr))?;
        let page = crate::page_size();
        let Some(len) = size.checked_add(page - 1).map(|l| l & !(page - 1)) else {
            return Ok(None);
        };
        let mut map = self.take(i);
        let old = map.len();
        // An aligned block's lead moves with it: the payload keeps its offset in the mapping.
        let lead = addr - map.as_ptr() as usize;
        let Some(len) = len.checked_add(lead) else {
            self.insert(addr, map);
            return Ok(None);
        };
        // SAFETY: the mapping is anonymous (no file to run past); the caller owns the block's
        // contents and switches to the returned address.
        let ok = unsafe { map.remap(len, RemapOptions::new().may_move(may_move)) }.is_ok();
        // Only a caller that switches to the returned pointer gets one made from a fresh
        // mutable borrow of the mapping: making one would invalidate the pointers the caller
        // keeps using after a remap in place or a refused one. For those, the pointer returned
        // is an address (the callers read its value only).
        let p = if ok && may_move {
            map.as_mut_ptr().wrapping_add(lead)
        } else {
            map.as_ptr().cast_mut().wrapping_add(lead)
        };
        // The slot `take` emptied is still free: re-inserting cannot need a larger table.
        self.insert(p as usize, map);
        if !ok {
            return Ok(None);
        }
        let Some(p) = NonNull::new(p) else {
            return Err(Error::Corrupted {
                addr,
                what: "a remapped block is at address 0",
            });
        };
        self.bytes = self.bytes - old + len;
        Ok(Some((p, len, old)))
    }

    /// Every live block as `(address, usable length)`.
    pub fn iter(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.entries().map(|e| (e.addr, Self::usable(e)))
    }

    /// Verifies the table's invariants; O(slots), which the table keeps within eight times
    /// the blocks mapped (nothing at all for a table that never held one).
    pub fn check(&self) -> Result<(), Error> {
        let shape_ok = self.slots == 0
            || (self.slots.is_power_of_two()
                && self.slots >= MIN_SLOTS
                && self.count * 2 <= self.slots
                && self.shift == 64 - self.slots.trailing_zeros());
        if !shape_ok || (self.slots == 0 && (self.count, self.bytes) != (0, 0)) {
            return Err(Error::Corrupted {
                addr: self.table as usize,
                what: "large-block table size disagrees with its entry count",
            });
        }
        let (mut n, mut bytes) = (0, 0);
        for e in self.entries() {
            let addr = e.addr;
            if self.find(addr).is_none() || addr % crate::page_size() != 0 {
                return Err(Error::Corrupted {
                    addr,
                    what: "large-block table entry cannot be found by its address",
                });
            }
            // SAFETY: a live entry's map is initialised.
            let map = unsafe { e.map.assume_init_ref() };
            if addr < self.low || map.as_ptr() as usize + map.len() > self.high {
                return Err(Error::Corrupted {
                    addr,
                    what: "large block lies outside the table's address bounds",
                });
            }
            n += 1;
            bytes += map.len();
        }
        if (n, bytes) != (self.count, self.bytes) {
            return Err(Error::Corrupted {
                addr: self.table as usize,
                what: "large-block table counters disagree with its entries",
            });
        }
        Ok(())
    }
}

impl Default for LargeBlocks {
    fn default() -> Self {
        LargeBlocks::new()
    }
}

impl Drop for LargeBlocks {
    fn drop(&mut self) {
        for i in 0..self.slots {
            // SAFETY: live entries own an initialised mapping, dropped (unmapped) exactly once.
            unsafe {
                if (*self.slot(i)).addr != 0 {
                    (*self.slot(i)).map.assume_init_drop();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_table_maps_nothing_and_rejects_without_storage() {
        let t = LargeBlocks::new();
        assert_eq!((t.slots(), t.count(), t.bytes()), (0, 0, 0));
        assert!(t._storage.is_none());
        let local = 0u64;
        let addr = &local as *const u64 as usize;
        match t.len_of(addr) {
            Err(Error::InvalidPointer { reason, .. }) => {
                assert!(
                    reason.contains("does not point into this allocator"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(t.len_of(0), Err(Error::InvalidPointer { .. })));
        t.check().unwrap();
        assert_eq!(t.iter().count(), 0);
    }

    #[test]
    fn blocks_are_found_freed_and_double_frees_told_apart() {
        let mut t = LargeBlocks::new();
        let mut live = Vec::new();
        for i in 1..=10 {
            let (p, len, _) = t.alloc(i * 5000, false).unwrap();
            assert!(len >= i * 5000);
            // SAFETY: a fresh mapping of `len` bytes.
            unsafe { p.as_ptr().write_bytes(i as u8, len) };
            live.push((p.as_ptr() as usize, len));
        }
        assert_eq!(t.slots(), MIN_SLOTS);
        t.check().unwrap();
        for &(a, len) in &live {
            assert_eq!(t.len_of(a).unwrap(), len);
        }
        let (a, _) = live.remove(3);
        t.free(a, 0).unwrap();
        assert_eq!(t.free(a, 0).unwrap_err(), Error::DoubleFree { addr: a });
        assert!(matches!(
            t.free(live[0].0 + 4096, 0),
            Err(Error::InvalidPointer { .. })
        ));
        t.check().unwrap();
        for &(a, len) in &live {
            assert_eq!(
                t.len_of(a).unwrap(),
                len,
                "lookups survive back-shift deletion"
            );
        }
        for (a, _) in live {
            t.free(a, 0).unwrap();
        }
        assert_eq!((t.count(), t.bytes()), (0, 0));
        t.check().unwrap();
    }

    /// The table doubles as blocks are mapped and halves as they go, and through both every
    /// block is found with its length and contents, while foreign, interior and
    /// double-freed pointers are told apart.
    #[test]
    fn the_table_grows_and_shrinks_with_the_blocks() {
        let page = crate::page_size();
        let n: usize = if cfg!(miri) { 140 } else { 3000 };
        let mut t = LargeBlocks::new();
        let mut live = Vec::new();
        let mut grown = Vec::new();
        for i in 0..n {
            let (p, len, _) = t.alloc(2 * page, false).unwrap();
            assert_eq!(len, 2 * page);
            // SAFETY: a fresh mapping of `len` bytes.
            unsafe {
                p.as_ptr().write(i as u8);
                p.as_ptr().add(len - 1).write(!(i as u8));
            }
            live.push((p, i as u8));
            if grown.last() != Some(&t.slots()) {
                grown.push(t.slots());
            }
            assert!(t.count() * 2 <= t.slots());
        }
        let want_top = (n * 2).next_power_of_two().max(MIN_SLOTS);
        assert_eq!(grown.first(), Some(&MIN_SLOTS));
        assert_eq!(grown.last(), Some(&want_top), "{grown:?}");
        assert!(grown.windows(2).all(|w| w[1] == 2 * w[0]), "{grown:?}");
        t.check().unwrap();
        let local = 0u64;
        let foreign = &local as *const u64 as usize;
        let reason = |e: Error| match e {
            Error::InvalidPointer { reason, .. } => reason,
            other => panic!("{other:?}"),
        };
        assert!(reason(t.len_of(foreign).unwrap_err()).contains("does not point into"));
        let a7 = live[7].0.as_ptr() as usize;
        assert!(reason(t.free(a7 + page, 0).unwrap_err()).contains("middle of a mapped"));
        assert!(reason(t.free(a7 + 16, 0).unwrap_err()).contains("middle of a mapped"));
        // Free all but every 16th block, in an order that mixes probe runs.
        let mut kept = Vec::new();
        for (k, (p, byte)) in live.into_iter().enumerate() {
            if k % 16 == 0 {
                kept.push((p, byte));
                continue;
            }
            let a = p.as_ptr() as usize;
            assert_eq!(t.free(a, 0).unwrap(), (2 * page, 2 * page));
            assert_eq!(t.free(a, 0).unwrap_err(), Error::DoubleFree { addr: a });
            assert!(t.count() * 2 <= t.slots());
        }
        assert!(t.slots() < want_top || want_top == MIN_SLOTS);
        assert!(t.slots() <= (kept.len() * 8).next_power_of_two().max(MIN_SLOTS));
        t.check().unwrap();
        for &(p, byte) in &kept {
            assert_eq!(t.len_of(p.as_ptr() as usize).unwrap(), 2 * page);
            // SAFETY: the block is live, `2 * page` bytes long.
            unsafe {
                assert_eq!(p.as_ptr().read(), byte);
                assert_eq!(p.as_ptr().add(2 * page - 1).read(), !byte);
            }
        }
        for (p, _) in kept {
            t.free(p.as_ptr() as usize, 0).unwrap();
        }
        assert_eq!((t.count(), t.bytes(), t.slots()), (0, 0, MIN_SLOTS));
        assert!(reason(t.len_of(foreign).unwrap_err()).contains("does not point into"));
        t.check().unwrap();
    }

    #[test]
    fn aligned_blocks_start_on_their_alignment_and_are_found_by_it() {
        let mut t = LargeBlocks::new();
        let page = crate::page_size();
        let align = page * 4;
        let (p, mapped) = t.alloc_aligned(5000, align).unwrap();
        let a = p.as_ptr() as usize;
        assert_eq!(a % align, 0);
        let usable = t.len_of(a).unwrap();
        assert!(usable >= 5000 && usable <= mapped, "{usable} of {mapped}");
        // SAFETY: `usable` bytes from `p` are the block's.
        unsafe { p.as_ptr().write_bytes(7, usable) };
        assert_eq!(t.bytes(), mapped);
        assert_eq!(t.iter().collect::<Vec<_>>(), [(a, usable)]);
        t.check().unwrap();
        assert!(matches!(
            t.free(a + page, 0),
            Err(Error::InvalidPointer { .. })
        ));
        assert_eq!(t.free(a, 0).unwrap(), (mapped, mapped));
        assert_eq!(t.free(a, 0).unwrap_err(), Error::DoubleFree { addr: a });
        assert_eq!((t.count(), t.bytes()), (0, 0));
    }

    #[cfg(not(miri))]
    #[test]
    fn remap_keeps_contents() {
        let mut t = LargeBlocks::new();
        let (p, len, _) = t.alloc(8192, false).unwrap();
        // SAFETY: fresh mapping.
        unsafe { p.as_ptr().write_bytes(9, len) };
        let (q, new_len, old) = t
            .remap(p.as_ptr() as usize, 1 << 20, true)
            .unwrap()
            .unwrap();
        assert_eq!((new_len, old), (1 << 20, 8192));
        // SAFETY: the remapped block holds the old bytes.
        assert_eq!(unsafe { q.as_ptr().add(8191).read() }, 9);
        t.check().unwrap();
        t.free(q.as_ptr() as usize, 0).unwrap();
    }
}
