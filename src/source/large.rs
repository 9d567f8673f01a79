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
//!
//! Invariants kept here:
//! - Every live large block has exactly one entry; `count` is the number of entries.
//! - An entry's `addr` is non-zero and the entry sits in the probe run starting at
//!   `hash(addr)`, with no empty slot between.
//! - An entry's `addr` lies in its mapping's first `max(align, page)` bytes, page aligned.
//! - `bytes` is the sum of the entries' mapping lengths (leads included).

use core::mem::MaybeUninit;
use core::ptr::NonNull;

use memmap2::{MmapMut, MmapOptions, RemapOptions};

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
const RECENT: usize = 64;

/// The table of large blocks.
pub(crate) struct LargeBlocks {
    slots: *mut Entry,
    mask: usize,
    count: usize,
    bytes: usize,
    recent: [usize; RECENT],
    recent_at: usize,
    _storage: Region,
}

// SAFETY: the table exclusively owns its storage mapping and the block mappings it lists;
// moving it to another thread moves that ownership.
unsafe impl Send for LargeBlocks {}

impl LargeBlocks {
    /// A table for at most `max_blocks` blocks at once.
    pub fn new(max_blocks: usize) -> Result<LargeBlocks, Error> {
        let slots = (max_blocks.max(8) * 2).next_power_of_two().min(1 << 24);
        let mut storage = Region::reserve(slots * core::mem::size_of::<Entry>())?;
        let base = storage.grow(storage.capacity())?;
        Ok(LargeBlocks {
            slots: base.as_ptr().cast(),
            mask: slots - 1,
            count: 0,
            bytes: 0,
            recent: [0; RECENT],
            recent_at: 0,
            _storage: storage,
        })
    }

    /// Number of live large blocks.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Bytes mapped for live large blocks.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    #[inline]
    fn slot(&self, i: usize) -> *mut Entry {
        // SAFETY: `i & mask` indexes inside the storage mapping, which holds `mask + 1` entries
        // (fresh anonymous memory is zero: `addr == 0`, an empty slot).
        unsafe { self.slots.add(i & self.mask) }
    }

    #[inline]
    fn home(&self, addr: usize) -> usize {
        ((addr >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) & self.mask
    }

    /// Usable bytes of a live entry: from its payload to the end of its mapping.
    fn usable(e: &Entry) -> usize {
        // SAFETY: callers pass live entries, whose map is initialised.
        let map = unsafe { e.map.assume_init_ref() };
        map.as_ptr() as usize + map.len() - e.addr
    }

    /// The live entries.
    fn entries(&self) -> impl Iterator<Item = &Entry> + '_ {
        (0..=self.mask).filter_map(|i| {
            // SAFETY: slots are in bounds.
            let e = unsafe { &*self.slot(i) };
            (e.addr != 0).then_some(e)
        })
    }

    /// The slot holding `addr`, if it is a live block.
    fn find(&self, addr: usize) -> Option<usize> {
        let mut i = self.home(addr);
        loop {
            // SAFETY: `slot` is in bounds; `addr` is plain data.
            let a = unsafe { (*self.slot(i)).addr };
            if a == addr {
                return Some(i & self.mask);
            }
            if a == 0 {
                return None;
            }
            i += 1;
        }
    }

    /// Maps a new block of at least `size` bytes. Returns it and the bytes mapped.
    pub fn alloc(&mut self, size: usize) -> Result<(NonNull<u8>, usize), Error> {
        if self.count * 2 >= self.mask {
            return Err(Error::oom(size, 0));
        }
        let len = size
            .checked_add(crate::page_size() - 1)
            .map(|l| l & !(crate::page_size() - 1))
            .ok_or(Error::layout(
                size,
                1,
                "size overflows when rounded to pages",
            ))?;
        let mut map = MmapOptions::new()
            .len(len)
            .map_anon()
            .map_err(|_| Error::oom(size, 0))?;
        let p = NonNull::new(map.as_mut_ptr()).ok_or(Error::oom(size, 0))?;
        self.insert(p.as_ptr() as usize, map);
        self.bytes += len;
        Ok((p, len))
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
        if self.count * 2 >= self.mask {
            return Err(Error::oom(size, 0));
        }
        let too_big = Error::layout(size, align, "size overflows when rounded to pages");
        let len = size
            .checked_add(page - 1)
            .map(|l| l & !(page - 1))
            .ok_or(too_big.clone())?;
        let total = len
            .checked_add(align - page)
            .filter(|&t| t <= isize::MAX as usize)
            .ok_or(too_big)?;
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

    fn insert(&mut self, addr: usize, map: MmapMut) {
        let mut i = self.home(addr);
        // SAFETY (loop and write): slots are in bounds; the table is less than half full, so
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
                let dist_hole = hole.wrapping_sub(home) & self.mask;
                let dist_j = j.wrapping_sub(home) & self.mask;
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

    /// Length of the live block at `addr`, or why it is not one.
    pub fn len_of(&self, addr: usize) -> Result<usize, Error> {
        match self.find(addr) {
            // SAFETY: a found slot is in bounds and holds a live entry.
            Some(i) => Ok(Self::usable(unsafe { &*self.slot(i) })),
            None => Err(self.reject(addr)),
        }
    }

    /// Whether `addr` lies inside some live large block (for classifying interior pointers).
    fn inside_any(&self, addr: usize) -> bool {
        self.entries()
            .any(|e| addr > e.addr && addr < e.addr + Self::usable(e))
    }

    fn reject(&self, addr: usize) -> Error {
        if self.recent.contains(&addr) {
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

    /// Unmaps the live block at `addr`; returns the bytes given back.
    pub fn free(&mut self, addr: usize) -> Result<usize, Error> {
        let i = self.find(addr).ok_or_else(|| self.reject(addr))?;
        let map = self.take(i);
        let len = map.len();
        drop(map);
        self.bytes -= len;
        self.recent[self.recent_at % RECENT] = addr;
        self.recent_at += 1;
        Ok(len)
    }

    /// Resizes the block at `addr` to at least `size` bytes with `mremap`, moving it if
    /// `may_move`. Returns the new address and the new and old lengths, or `None` if the OS
    /// could not do it (the block is unchanged).
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
        let p = NonNull::new(map.as_mut_ptr().wrapping_add(lead))
            .expect("a mapping is never at address 0");
        self.insert(p.as_ptr() as usize, map);
        if !ok {
            return Ok(None);
        }
        self.bytes = self.bytes - old + len;
        Ok(Some((p, len, old)))
    }

    /// Every live block as `(address, usable length)`.
    pub fn iter(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.entries().map(|e| (e.addr, Self::usable(e)))
    }

    /// Verifies the table's invariants.
    pub fn check(&self) -> Result<(), Error> {
        let (mut n, mut bytes) = (0, 0);
        for e in self.entries() {
            let addr = e.addr;
            if self.find(addr).is_none() || addr % crate::page_size() != 0 {
                return Err(Error::Corrupted {
                    addr,
                    what: "large-block table entry cannot be found by its address",
                });
            }
            n += 1;
            // SAFETY: a live entry's map is initialised.
            bytes += unsafe { e.map.assume_init_ref().len() };
        }
        if (n, bytes) != (self.count, self.bytes) {
            return Err(Error::Corrupted {
                addr: self.slots as usize,
                what: "large-block table counters disagree with its entries",
            });
        }
        Ok(())
    }
}

impl Drop for LargeBlocks {
    fn drop(&mut self) {
        for i in 0..=self.mask {
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
    fn blocks_are_found_freed_and_double_frees_told_apart() {
        let mut t = LargeBlocks::new(16).unwrap();
        let mut live = Vec::new();
        for i in 1..=10 {
            let (p, len) = t.alloc(i * 5000).unwrap();
            assert!(len >= i * 5000);
            // SAFETY: a fresh mapping of `len` bytes.
            unsafe { p.as_ptr().write_bytes(i as u8, len) };
            live.push((p.as_ptr() as usize, len));
        }
        t.check().unwrap();
        for &(a, len) in &live {
            assert_eq!(t.len_of(a).unwrap(), len);
        }
        let (a, _) = live.remove(3);
        t.free(a).unwrap();
        assert_eq!(t.free(a).unwrap_err(), Error::DoubleFree { addr: a });
        assert!(matches!(
            t.free(live[0].0 + 4096),
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
            t.free(a).unwrap();
        }
        assert_eq!((t.count(), t.bytes()), (0, 0));
        t.check().unwrap();
    }

    #[test]
    fn aligned_blocks_start_on_their_alignment_and_are_found_by_it() {
        let mut t = LargeBlocks::new(8).unwrap();
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
            t.free(a + page),
            Err(Error::InvalidPointer { .. })
        ));
        assert_eq!(t.free(a).unwrap(), mapped);
        assert_eq!(t.free(a).unwrap_err(), Error::DoubleFree { addr: a });
        assert_eq!((t.count(), t.bytes()), (0, 0));
    }

    #[cfg(not(miri))]
    #[test]
    fn remap_keeps_contents() {
        let mut t = LargeBlocks::new(4).unwrap();
        let (p, len) = t.alloc(8192).unwrap();
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
        t.free(q.as_ptr() as usize).unwrap();
    }
}
