//! Sharing a heap between threads: `LockedHeap`, and `GlobalHeap` for `#[global_allocator]`.
//!
//! Both put the heap behind a [`SpinLock`]: taking it is one atomic compare-exchange and
//! releasing it one plain store, where `std::sync::Mutex` needs an atomic swap to release as
//! well. Measured on an alloc+free pair, that halves the cost of the lock (docs/BENCHMARKS.md
//! has the figures). A waiter spins briefly, then yields its time slice, so a preempted holder
//! is not starved of the core. The lock is the only thing these types add: the algorithm is the
//! heap's, the memory the heap's regions.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::api::{self, Backend};
use crate::heap::HeapCore;
use crate::{BlockInfo, Error, Heap, HeapConfig, Snapshot, Stats};

/// A test-and-test-and-set lock that yields after a short spin.
struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `value` to one thread at a time (acquire/release on
// `locked`), so sharing the lock shares `T` only as a `Send` type moved between threads.
unsafe impl<T: Send> Sync for SpinLock<T> {}

struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> SpinLock<T> {
    const fn new(value: T) -> SpinLock<T> {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    #[inline(always)]
    fn lock(&self) -> SpinGuard<'_, T> {
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        SpinGuard { lock: self }
    }

    #[cold]
    fn lock_contended(&self) {
        let mut spins = 0u32;
        loop {
            // Wait with plain loads until the lock looks free, then try again.
            while self.locked.load(Ordering::Relaxed) {
                if spins < 64 {
                    spins += 1;
                    core::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this thread holds the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while this thread holds the lock, and `&mut self`
        // makes this the only reference through it.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

fn lock<T>(m: &SpinLock<T>) -> SpinGuard<'_, T> {
    m.lock()
}

/// A [`Heap`] behind a lock: `Sync`, with the same checked API and `Allocator` for
/// `&LockedHeap`.
///
/// # Example
///
/// ```
/// use strata_alloc::{Heap, LockedHeap};
///
/// let heap = LockedHeap::new(Heap::new()?);
/// std::thread::scope(|s| {
///     for t in 0..2 {
///         let heap = &heap;
///         s.spawn(move || {
///             let mut v = allocator_api2::vec::Vec::new_in(heap);
///             v.extend(0..1000 * (t + 1));
///         });
///     }
/// });
/// assert_eq!(heap.stats().live_blocks, 0);
/// heap.check()?;
/// # Ok::<(), strata_alloc::Error>(())
/// ```
pub struct LockedHeap {
    core: SpinLock<HeapCore>,
}

impl LockedHeap {
    /// Puts `heap` behind a lock.
    ///
    /// ```
    /// let heap = strata_alloc::LockedHeap::new(strata_alloc::Heap::new()?);
    /// assert!(heap.alloc(10).is_ok());
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn new(heap: Heap) -> LockedHeap {
        LockedHeap {
            core: SpinLock::new(heap.into_core()),
        }
    }

    #[inline(always)]
    fn with<R>(&self, f: impl FnOnce(&mut HeapCore) -> R) -> R {
        f(&mut lock(&self.core))
    }

    /// As [`Heap::alloc`].
    ///
    /// # Errors
    ///
    /// As [`Heap::alloc`].
    ///
    /// ```
    /// let heap = strata_alloc::LockedHeap::new(strata_alloc::Heap::new()?);
    /// assert_eq!(heap.alloc(24)?.as_ptr() as usize % 16, 0);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn alloc(&self, size: usize) -> Result<NonNull<u8>, Error> {
        self.with(|c| api::alloc(c, size, 16))
    }

    /// As [`Heap::alloc_layout`].
    ///
    /// # Errors
    ///
    /// As [`Heap::alloc_layout`].
    ///
    /// ```
    /// use core::alloc::Layout;
    /// let heap = strata_alloc::LockedHeap::new(strata_alloc::Heap::new()?);
    /// let p = heap.alloc_layout(Layout::from_size_align(8, 256).unwrap())?;
    /// assert_eq!(p.as_ptr() as usize % 256, 0);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn alloc_layout(&self, layout: Layout) -> Result<NonNull<u8>, Error> {
        self.with(|c| api::alloc(c, layout.size(), layout.align()))
    }

    /// As [`Heap::calloc`].
    ///
    /// # Errors
    ///
    /// As [`Heap::calloc`].
    ///
    /// ```
    /// let heap = strata_alloc::LockedHeap::new(strata_alloc::Heap::new()?);
    /// assert!(heap.calloc(usize::MAX, 2).is_err());
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn calloc(&self, count: usize, size: usize) -> Result<NonNull<u8>, Error> {
        self.with(|c| api::calloc(c, count, size))
    }

    /// As [`Heap::realloc`].
    ///
    /// # Errors
    ///
    /// As [`Heap::realloc`].
    ///
    /// # Safety
    ///
    /// As [`Heap::realloc`].
    ///
    /// ```
    /// let heap = strata_alloc::LockedHeap::new(strata_alloc::Heap::new()?);
    /// let p = heap.alloc(10)?;
    /// // SAFETY: live; only the returned pointer is used afterwards.
    /// let p = unsafe { heap.realloc(p, 1000)? };
    /// assert!(heap.usable_size(p)? >= 1000);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub unsafe fn realloc(&self, ptr: NonNull<u8>, new_size: usize) -> Result<NonNull<u8>, Error> {
        self.with(|c| api::realloc(c, ptr, new_size))
    }

    /// As [`Heap::free`].
    ///
    /// # Errors
    ///
    /// As [`Heap::free`].
    ///
    /// # Safety
    ///
    /// As [`Heap::free`].
    ///
    /// ```
    /// let heap = strata_alloc::LockedHeap::new(strata_alloc::Heap::new()?);
    /// let p = heap.alloc(10)?;
    /// // SAFETY: live, freed once.
    /// unsafe { heap.free(p)? };
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub unsafe fn free(&self, ptr: NonNull<u8>) -> Result<(), Error> {
        self.with(|c| c.free(ptr))
    }

    /// As [`Heap::usable_size`].
    ///
    /// # Errors
    ///
    /// As [`Heap::usable_size`].
    ///
    /// ```
    /// let heap = strata_alloc::LockedHeap::new(strata_alloc::Heap::new()?);
    /// let p = heap.alloc(10)?;
    /// assert!(heap.usable_size(p)? >= 10);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn usable_size(&self, ptr: NonNull<u8>) -> Result<usize, Error> {
        self.with(|c| c.usable_size(ptr))
    }

    /// As [`Heap::trim`].
    ///
    /// ```
    /// let heap = strata_alloc::LockedHeap::new(strata_alloc::Heap::new()?);
    /// assert_eq!(heap.trim(), 0);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn trim(&self) -> usize {
        self.with(|c| c.trim())
    }

    /// As [`Heap::stats`].
    ///
    /// ```
    /// let heap = strata_alloc::LockedHeap::new(strata_alloc::Heap::new()?);
    /// assert_eq!(heap.stats().allocations, 0);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn stats(&self) -> Stats {
        self.with(|c| c.stats())
    }

    /// As [`Heap::check`].
    ///
    /// # Errors
    ///
    /// As [`Heap::check`].
    ///
    /// ```
    /// strata_alloc::LockedHeap::new(strata_alloc::Heap::new()?).check()?;
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn check(&self) -> Result<(), Error> {
        self.with(|c| c.check())
    }

    /// Every block, collected under the lock (heap blocks in address order, then mapped).
    ///
    /// ```
    /// let heap = strata_alloc::LockedHeap::new(strata_alloc::Heap::new()?);
    /// let _p = heap.alloc(10)?;
    /// assert_eq!(heap.blocks().len(), 2);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn blocks(&self) -> Vec<BlockInfo> {
        self.with(|c| {
            let mut out = Vec::new();
            let mut b = c.first_block();
            while let Some((info, next)) = c.block_at(b) {
                out.push(info);
                b = next;
            }
            out.extend(c.mapped_blocks());
            out
        })
    }

    /// As [`Heap::snapshot`].
    ///
    /// ```
    /// let heap = strata_alloc::LockedHeap::new(strata_alloc::Heap::new()?);
    /// println!("{}", heap.snapshot());
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn snapshot(&self) -> Snapshot {
        self.with(|c| c.snapshot("LockedHeap"))
    }
}

api::impl_allocator!(LockedHeap);

impl core::fmt::Debug for LockedHeap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LockedHeap").finish_non_exhaustive()
    }
}

/// A heap for `#[global_allocator]`: `const`-constructible, set up lazily on the first
/// allocation (without allocating through itself), `null` when memory runs out, and an abort
/// with a one-line report on a detected misuse.
///
/// ```no_run
/// use strata_alloc::GlobalHeap;
///
/// #[global_allocator]
/// static HEAP: GlobalHeap = GlobalHeap::new();
///
/// fn main() {
///     let v: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
///     assert_eq!(v[999], "999");
///     println!("{}", HEAP.stats());
/// }
/// ```
pub struct GlobalHeap {
    core: SpinLock<Option<HeapCore>>,
    config: HeapConfig,
}

impl GlobalHeap {
    /// A global heap with the default [`HeapConfig`].
    ///
    /// ```
    /// static HEAP: strata_alloc::GlobalHeap = strata_alloc::GlobalHeap::new();
    /// assert_eq!(HEAP.stats().allocations, 0);
    /// ```
    pub const fn new() -> GlobalHeap {
        GlobalHeap::with_config(HeapConfig::DEFAULT)
    }

    /// A global heap with the given settings.
    ///
    /// ```
    /// use strata_alloc::{GlobalHeap, HeapConfig};
    /// static HEAP: GlobalHeap = GlobalHeap::with_config(HeapConfig::DEFAULT);
    /// # let _ = &HEAP;
    /// ```
    pub const fn with_config(config: HeapConfig) -> GlobalHeap {
        GlobalHeap {
            core: SpinLock::new(None),
            config,
        }
    }

    /// Runs `f` on the heap, setting it up first if needed; `None` if it cannot be set up.
    #[inline(always)]
    fn with<R>(&self, f: impl FnOnce(&mut HeapCore) -> R) -> Option<R> {
        let mut guard = lock(&self.core);
        if guard.is_none() {
            // Reserving the regions maps memory directly; nothing here allocates.
            *guard = Some(HeapCore::new(self.config).ok()?);
        }
        guard.as_mut().map(f)
    }

    /// The heap's counters (all zero before the first allocation).
    ///
    /// ```
    /// static HEAP: strata_alloc::GlobalHeap = strata_alloc::GlobalHeap::new();
    /// assert_eq!(HEAP.stats().live_blocks, 0);
    /// ```
    pub fn stats(&self) -> Stats {
        lock(&self.core)
            .as_ref()
            .map(HeapCore::stats)
            .unwrap_or_default()
    }

    /// Verifies every invariant of the heap.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] naming the first damage found.
    ///
    /// ```
    /// static HEAP: strata_alloc::GlobalHeap = strata_alloc::GlobalHeap::new();
    /// assert!(HEAP.check().is_ok());
    /// ```
    pub fn check(&self) -> Result<(), Error> {
        lock(&self.core).as_mut().map_or(Ok(()), HeapCore::check)
    }

    /// Gives the free top of the heap back to the OS; returns the bytes given back.
    ///
    /// ```
    /// static HEAP: strata_alloc::GlobalHeap = strata_alloc::GlobalHeap::new();
    /// assert_eq!(HEAP.trim(), 0);
    /// ```
    pub fn trim(&self) -> usize {
        lock(&self.core).as_mut().map_or(0, HeapCore::trim)
    }
}

impl Default for GlobalHeap {
    fn default() -> Self {
        GlobalHeap::new()
    }
}

impl core::fmt::Debug for GlobalHeap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GlobalHeap").finish_non_exhaustive()
    }
}

// Blocks stay valid until `dealloc`; `realloc` keeps contents up to the smaller size; a pointer
// the heap did not hand out aborts before anything is written; the heap never allocates through
// the global allocator, so there is no re-entry.
// SAFETY: `alloc` returns null or a block of at least `layout.size()` bytes aligned to
// `layout.align()`, valid until `dealloc` (see above).
unsafe impl GlobalAlloc for GlobalHeap {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.with(|c| api::alloc_contained(c, layout.size(), layout.align()))
            .and_then(Result::ok)
            .map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.with(|c| api::allocate_zeroed(c, layout))
            .and_then(Result::ok)
            .map_or(core::ptr::null_mut(), |p| p.cast::<u8>().as_ptr())
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(p) = NonNull::new(ptr) else { return };
        let freed = self.with(|c| api::deallocate(c, p, layout));
        if freed.is_none() {
            crate::abort::misuse(
                HeapCore::NAME,
                &Error::InvalidPointer {
                    addr: ptr as usize,
                    reason: "freed before the global heap was set up",
                },
            );
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(p) = NonNull::new(ptr) else {
            return core::ptr::null_mut();
        };
        let Ok(new) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        self.with(|c| api::resize(c, p, layout, new, false))
            .and_then(Result::ok)
            .map_or(core::ptr::null_mut(), |q| q.cast::<u8>().as_ptr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spin_lock_excludes() {
        let counter = SpinLock::new(0u64);
        let per_thread = if cfg!(miri) { 200 } else { 200_000 };
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..per_thread {
                        // A plain read-modify-write: lost updates would show in the total.
                        let mut g = counter.lock();
                        let v = *g;
                        *g = v + 1;
                    }
                });
            }
        });
        assert_eq!(*counter.lock(), 2 * per_thread);
    }
}
