//! `Region`: address space from the OS with a program break.
//!
//! A Region reserves a span of anonymous memory once and hands it out from the bottom by moving
//! a break, like `sbrk`: `sbrk(+n)` returns the next `n` bytes, `sbrk(-n)` takes the top `n`
//! bytes back and gives the whole pages among them back to the OS. The span never moves, so
//! pointers into it stay valid for the Region's life. A Region knows nothing of blocks; the
//! allocators above it decide what the bytes mean.
//!
//! Invariants kept here:
//! - `0 <= brk <= capacity`, and `capacity` is a whole number of pages.
//! - Every byte at or above `page_ceil(brk)` reads as zero: it is either untouched since the
//!   mapping was made or was released with `MADV_DONTNEED` (anonymous private pages come back
//!   zero-filled). Allocators use this to skip zeroing fresh memory in `calloc`.

use core::ptr::NonNull;

use memmap2::{MmapMut, MmapOptions};

use crate::Error;

/// Reservations at least this large are made with `MAP_NORESERVE`, so reserving 64 GiB of
/// address space commits nothing until pages are touched.
const NORESERVE_FROM: usize = 1 << 20;

/// The size of a page on this machine, read once.
///
/// ```
/// let page = strata_alloc::page_size();
/// assert!(page.is_power_of_two() && page >= 4096);
/// ```
pub fn page_size() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let cached = PAGE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: sysconf has no preconditions; _SC_PAGESIZE is always a valid name.
    let raw = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = if raw > 0 { raw as usize } else { 4096 };
    PAGE.store(page, Ordering::Relaxed);
    page
}

/// An anonymous memory mapping with a program break.
///
/// # Example
///
/// ```
/// use strata_alloc::Region;
///
/// let mut region = Region::reserve(1 << 20)?;        // 1 MiB of address space
/// let first = region.sbrk(4096)?;                    // the first 4 KiB
/// // SAFETY: the 4 KiB below the break belong to us until we move the break back.
/// unsafe { first.as_ptr().write_bytes(0xAB, 4096) };
/// assert_eq!(region.brk(), 4096);
/// let released = region.shrink(4096)?;               // give it back; pages go to the OS
/// assert_eq!(region.brk(), 0);
/// assert_eq!(released, 4096);
/// # Ok::<(), strata_alloc::Error>(())
/// ```
pub struct Region {
    /// Owns the mapping; dropping it unmaps the span. Read only by the drop and by `discard`'s
    /// madvise (bytes go through `base`), so no reference to the mapped bytes is ever created
    /// here. Miri has no madvise, so there only the drop reads it.
    #[cfg_attr(miri, allow(dead_code))]
    map: MmapMut,
    /// First byte of the mapping, captured once so no `&mut [u8]` is formed later.
    base: NonNull<u8>,
    /// Length of the mapping in bytes (a whole number of pages).
    capacity: usize,
    /// Offset of the break: bytes `[0, brk)` are handed out.
    brk: usize,
}

// SAFETY: a Region is a uniquely owned mapping plus integers; moving it to another thread moves
// that ownership. It has no interior mutability, so `&Region` is also shareable.
unsafe impl Send for Region {}
// SAFETY: see above; every mutating method takes `&mut self`.
unsafe impl Sync for Region {}

impl Region {
    /// Reserves `bytes` of address space (rounded up to whole pages), with the break at 0.
    ///
    /// Reservations of 1 MiB or more are made with `MAP_NORESERVE`: they cost address space,
    /// not memory, until touched.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLayout`] for 0 bytes or a size that overflows when rounded to pages;
    /// [`Error::Os`] if the OS refuses the mapping.
    ///
    /// ```
    /// let region = strata_alloc::Region::reserve(10_000)?;
    /// assert_eq!(region.capacity() % strata_alloc::page_size(), 0);
    /// assert!(region.capacity() >= 10_000);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn reserve(bytes: usize) -> Result<Region, Error> {
        let page = page_size();
        if bytes == 0 {
            return Err(Error::layout(0, page, "a region needs at least one byte"));
        }
        let capacity = bytes
            .checked_add(page - 1)
            .map(|b| b & !(page - 1))
            .filter(|&b| b <= isize::MAX as usize)
            .ok_or(Error::layout(
                bytes,
                page,
                "size overflows when rounded to pages",
            ))?;
        let mut options = MmapOptions::new();
        options.len(capacity);
        if capacity >= NORESERVE_FROM && !cfg!(miri) {
            options.no_reserve_swap();
        }
        let mut map = options
            .map_anon()
            .map_err(|e| Error::os("map", capacity, &e))?;
        let base = NonNull::new(map.as_mut_ptr()).ok_or(Error::Os {
            op: "map",
            bytes: capacity,
            code: 0,
        })?;
        Ok(Region {
            map,
            base,
            capacity,
            brk: 0,
        })
    }

    /// First byte of the span.
    ///
    /// ```
    /// let region = strata_alloc::Region::reserve(4096)?;
    /// assert_eq!(region.base().as_ptr() as usize % strata_alloc::page_size(), 0);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    #[inline]
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Bytes reserved (the most the break can reach).
    ///
    /// ```
    /// let region = strata_alloc::Region::reserve(8192)?;
    /// assert_eq!(region.capacity(), 8192);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    #[inline]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Offset of the break from `base()`: bytes `[0, brk)` are handed out.
    ///
    /// ```
    /// let mut region = strata_alloc::Region::reserve(8192)?;
    /// region.sbrk(100)?;
    /// assert_eq!(region.brk(), 100);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    #[inline]
    pub fn brk(&self) -> usize {
        self.brk
    }

    /// Bytes the break can still move up.
    ///
    /// ```
    /// let mut region = strata_alloc::Region::reserve(8192)?;
    /// region.sbrk(192)?;
    /// assert_eq!(region.remaining(), 8000);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    #[inline]
    pub fn remaining(&self) -> usize {
        self.capacity - self.brk
    }

    /// Whether `addr` lies inside the reserved span (handed out or not).
    ///
    /// ```
    /// let region = strata_alloc::Region::reserve(4096)?;
    /// assert!(region.contains(region.base().as_ptr() as usize));
    /// assert!(!region.contains(region.base().as_ptr() as usize + 4096));
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    #[inline]
    pub fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base.as_ptr() as usize) < self.capacity
    }

    /// Moves the break by `delta` bytes and returns the old break, like `sbrk`.
    ///
    /// A positive `delta` hands out `[old, old + delta)`; a negative one takes the top bytes
    /// back (see [`shrink`](Self::shrink)). `sbrk(0)` returns the current break.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`] if the break would pass the capacity or go below 0; nothing moves.
    ///
    /// ```
    /// let mut region = strata_alloc::Region::reserve(4096)?;
    /// let a = region.sbrk(16)?;
    /// let b = region.sbrk(16)?;
    /// assert_eq!(b.as_ptr() as usize - a.as_ptr() as usize, 16);
    /// assert!(region.sbrk(8192).is_err());
    /// assert_eq!(region.brk(), 32);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn sbrk(&mut self, delta: isize) -> Result<NonNull<u8>, Error> {
        let old = self.break_ptr();
        if delta >= 0 {
            self.grow(delta as usize)?;
        } else {
            self.shrink(delta.unsigned_abs())?;
        }
        Ok(old)
    }

    /// Moves the break up by `bytes` and returns the start of the new bytes.
    ///
    /// The new bytes read as zero unless they were handed out before and not released.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`] if fewer than `bytes` remain; the break does not move.
    ///
    /// ```
    /// let mut region = strata_alloc::Region::reserve(4096)?;
    /// let p = region.grow(64)?;
    /// assert_eq!(p, region.base());
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn grow(&mut self, bytes: usize) -> Result<NonNull<u8>, Error> {
        if bytes > self.remaining() {
            return Err(Error::oom(bytes, self.remaining()));
        }
        let old = self.break_ptr();
        self.brk += bytes;
        Ok(old)
    }

    /// Moves the break down by `bytes` and gives the whole pages above the new break back to
    /// the OS. Returns the number of bytes released to the OS.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`] if `bytes` exceeds the break (nothing moves); [`Error::Os`] if the
    /// OS refuses the release (the break has moved; the pages simply stay resident).
    ///
    /// ```
    /// let page = strata_alloc::page_size();
    /// let mut region = strata_alloc::Region::reserve(4 * page)?;
    /// region.grow(3 * page)?;
    /// assert_eq!(region.shrink(2 * page + 10)?, 2 * page); // partial page stays
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn shrink(&mut self, bytes: usize) -> Result<usize, Error> {
        if bytes > self.brk {
            return Err(Error::oom(bytes, self.brk));
        }
        let old = self.brk;
        self.brk -= bytes;
        let page = page_size();
        let from = page_ceil(self.brk, page);
        let to = page_ceil(old, page);
        if to > from {
            // SAFETY: the range lies above the new break: the caller gave these bytes back by
            // moving the break down over them.
            unsafe { self.release(from, to - from) }
        } else {
            Ok(0)
        }
    }

    /// Gives the whole pages inside `[offset, offset + len)` back to the OS (`MADV_DONTNEED`);
    /// they read as zero afterwards. Partial pages at either end are kept. Returns the bytes
    /// released.
    ///
    /// The range may lie below the break: an allocator uses this to drop the pages of a large
    /// free block without moving the break.
    ///
    /// # Safety
    ///
    /// The bytes of the range are overwritten (with zeros) behind the back of whoever holds
    /// them: no reference into the range may be live, and nothing may rely on their contents
    /// afterwards. Bytes above the break are never handed out, so releasing them is always
    /// sound; below the break the caller must have given the bytes up (a freed block).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPointer`] if the range does not lie inside the span (checked here: the
    /// OS call would not); [`Error::Os`] if the OS refuses.
    ///
    /// ```
    /// let page = strata_alloc::page_size();
    /// let mut region = strata_alloc::Region::reserve(4 * page)?;
    /// let p = region.grow(4 * page)?;
    /// // SAFETY: the whole span is ours.
    /// unsafe { p.as_ptr().add(page).write(7) };
    /// // SAFETY: no reference into the second page exists, and its byte is not needed again.
    /// assert_eq!(unsafe { region.release(page, page)? }, page);
    /// // SAFETY: released pages stay mapped and read as zero.
    /// assert_eq!(unsafe { p.as_ptr().add(page).read() }, 0);
    /// // SAFETY: the range is refused before anything is touched.
    /// assert!(unsafe { region.release(3 * page, 2 * page) }.is_err());
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub unsafe fn release(&self, offset: usize, len: usize) -> Result<usize, Error> {
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= self.capacity)
            .ok_or(Error::InvalidPointer {
                addr: (self.base.as_ptr() as usize).wrapping_add(offset),
                reason: "range to release does not lie inside the region",
            })?;
        let page = page_size();
        let from = page_ceil(offset, page);
        let to = end & !(page - 1);
        if to <= from {
            return Ok(0);
        }
        self.discard(from, to - from)?;
        Ok(to - from)
    }

    #[cfg(not(miri))]
    fn discard(&self, offset: usize, len: usize) -> Result<(), Error> {
        // Callers of `release`/`shrink` give up the contents of these bytes.
        // SAFETY: the range lies inside the mapping and is page aligned (checked by the
        // caller), and no Rust reference into the mapping exists to observe the zero pages.
        unsafe {
            self.map
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
        }
        .map_err(|e| Error::os("release", len, &e))
    }

    /// Miri has no `madvise`; zeroing keeps the "released pages read as zero" invariant.
    #[cfg(miri)]
    fn discard(&self, offset: usize, len: usize) -> Result<(), Error> {
        // SAFETY: the range lies inside the mapping (checked by the caller) and its contents
        // were given up by the caller.
        unsafe { self.base.as_ptr().add(offset).write_bytes(0, len) };
        Ok(())
    }

    #[inline]
    fn break_ptr(&self) -> NonNull<u8> {
        // SAFETY: `brk <= capacity`, so the result is inside or one past the end of the mapping,
        // and the mapping's base is non-null.
        unsafe { self.base.add(self.brk) }
    }
}

impl core::fmt::Debug for Region {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Region")
            .field("base", &self.base)
            .field("capacity", &self.capacity)
            .field("brk", &self.brk)
            .finish()
    }
}

#[inline]
pub(crate) fn page_ceil(n: usize, page: usize) -> usize {
    (n + page - 1) & !(page - 1)
}

/// Reserves with `reserve`, first `want` bytes, then, while the OS refuses
/// ([`Error::Os`]), half as much (whole pages), down to `floor`: under an address-space limit
/// an allocator then works within what it could get instead of failing outright. Returns what was reserved and
/// its size; any other error, or a refusal at the floor, is returned as is.
pub(crate) fn reserve_halving<T>(
    want: usize,
    floor: usize,
    mut reserve: impl FnMut(usize) -> Result<T, Error>,
) -> Result<(T, usize), Error> {
    let page = page_size();
    let floor = floor.min(want);
    let mut size = want;
    loop {
        match reserve(size) {
            Ok(got) => return Ok((got, size)),
            Err(Error::Os { .. }) if size > floor => {
                size = ((size / 2) & !(page - 1)).max(floor);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn break_moves_and_bytes_are_usable() {
        let mut r = Region::reserve(3 * 4096).unwrap();
        let cap = r.capacity();
        let p = r.sbrk(100).unwrap();
        assert_eq!(p, r.base());
        // SAFETY: 100 bytes below the break are ours.
        unsafe { p.as_ptr().write_bytes(1, 100) };
        let q = r.sbrk(28).unwrap();
        assert_eq!(q.as_ptr() as usize - p.as_ptr() as usize, 100);
        assert_eq!(
            r.sbrk(0).unwrap().as_ptr() as usize,
            p.as_ptr() as usize + 128
        );
        assert_eq!(r.remaining(), cap - 128);
        assert_eq!(
            r.sbrk(-28).unwrap().as_ptr() as usize,
            p.as_ptr() as usize + 128
        );
        assert_eq!(r.brk(), 100);
        // SAFETY: the first 100 bytes were not released.
        assert_eq!(unsafe { p.as_ptr().add(99).read() }, 1);
    }

    #[test]
    fn out_of_range_moves_are_refused_and_change_nothing() {
        let mut r = Region::reserve(4096).unwrap();
        r.grow(10).unwrap();
        assert!(matches!(
            r.grow(r.capacity()),
            Err(Error::OutOfMemory { .. })
        ));
        assert!(matches!(r.shrink(11), Err(Error::OutOfMemory { .. })));
        assert!(matches!(r.sbrk(isize::MIN), Err(Error::OutOfMemory { .. })));
        assert_eq!(r.brk(), 10);
        // SAFETY: the ranges are refused or empty: nothing is released.
        unsafe {
            assert!(r.release(usize::MAX, 2).is_err());
            assert!(r.release(4096, 1).is_err());
            assert_eq!(r.release(4096, 0).unwrap(), 0);
        }
    }

    #[test]
    fn shrunk_pages_come_back_zeroed() {
        let page = page_size();
        let mut r = Region::reserve(4 * page).unwrap();
        let p = r.grow(4 * page).unwrap();
        // SAFETY: the whole span is below the break.
        unsafe { p.as_ptr().write_bytes(0xEE, 4 * page) };
        assert_eq!(r.shrink(3 * page).unwrap(), 3 * page);
        let q = r.grow(3 * page).unwrap();
        // SAFETY: the bytes are below the break again.
        let s = unsafe { core::slice::from_raw_parts(q.as_ptr(), 3 * page) };
        assert!(s.iter().all(|&b| b == 0));
        // SAFETY: the first page was kept.
        assert_eq!(unsafe { p.as_ptr().read() }, 0xEE);
    }

    #[test]
    fn zero_and_huge_reservations_are_errors() {
        assert!(matches!(
            Region::reserve(0),
            Err(Error::InvalidLayout { .. })
        ));
        assert!(matches!(
            Region::reserve(usize::MAX),
            Err(Error::InvalidLayout { .. })
        ));
    }

    #[cfg(not(miri))]
    #[test]
    fn large_reservations_cost_no_memory() {
        // 64 GiB of address space with MAP_NORESERVE.
        let mut r = Region::reserve(64 << 30).unwrap();
        let p = r.grow(1 << 20).unwrap();
        // SAFETY: the first MiB is ours.
        unsafe { p.as_ptr().write_bytes(3, 1 << 20) };
    }

    #[test]
    fn reservations_are_halved_down_to_the_floor_while_refused() {
        let page = page_size();
        let refuse_above = |limit: usize| {
            move |size: usize| -> Result<usize, Error> {
                if size > limit {
                    Err(Error::Os {
                        op: "map",
                        bytes: size,
                        code: libc::ENOMEM,
                    })
                } else {
                    Ok(size)
                }
            }
        };
        let mut tried = Vec::new();
        let (got, size) = reserve_halving(64 << 20, 1 << 20, |s| {
            tried.push(s);
            refuse_above(5 << 20)(s)
        })
        .unwrap();
        assert_eq!((got, size), (4 << 20, 4 << 20));
        assert_eq!(tried, [64 << 20, 32 << 20, 16 << 20, 8 << 20, 4 << 20]);
        // Odd sizes halve to whole pages; the floor is the last try.
        let mut tried = Vec::new();
        let e = reserve_halving(10 * page + page, 3 * page, |s| {
            tried.push(s);
            refuse_above(0)(s)
        })
        .unwrap_err();
        assert!(matches!(e, Error::Os { .. }));
        assert_eq!(tried, [11 * page, 5 * page, 3 * page]);
        // Any error other than a refusal by the OS is not retried.
        let mut tries = 0;
        let e = reserve_halving(64 << 20, 1 << 20, |_| -> Result<(), Error> {
            tries += 1;
            Err(Error::layout(1, 1, "test"))
        })
        .unwrap_err();
        assert!(matches!(e, Error::InvalidLayout { .. }));
        assert_eq!(tries, 1);
    }
}
