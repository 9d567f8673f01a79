//! Sharing a heap between threads: `LockedHeap`, and `GlobalHeap` for `#[global_allocator]`
//! (and for the C ABI), with the fork handlers that keep a global heap usable in the child
//! of a multi-threaded program.
//!
//! Both put the heap behind a [`SpinLock`]: taking it is one atomic compare-exchange and
//! releasing it one plain store, where `std::sync::Mutex` needs an atomic swap to release as
//! well. Measured on an alloc+free pair, that halves the cost of the lock (docs/BENCHMARKS.md
//! has the figures). A waiter spins briefly, then yields its time slice, so a preempted holder
//! is not starved of the core. The lock is the only thing these types add: the algorithm is the
//! heap's, the memory the heap's regions.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::facade as api;
use crate::heap::HeapCore;
use crate::{BlockInfo, Error, Heap, Snapshot};

mod current;
mod error_slot;
mod gate;
mod global;

pub use global::GlobalHeap;

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

    /// Releases the lock without a guard.
    ///
    /// # Safety
    ///
    /// The caller's thread took the lock and forgot the guard (the fork handlers).
    #[cfg_attr(miri, allow(dead_code))]
    unsafe fn force_unlock(&self) {
        self.locked.store(false, Ordering::Release);
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

    /// The core under the lock, for the checked API.
    #[inline(always)]
    fn reach<R>(&self, f: impl FnOnce(&mut HeapCore) -> R) -> Result<R, Error> {
        Ok(self.with(f))
    }

    /// As `reach`: a locked heap always has its core.
    #[inline(always)]
    fn reach_existing<R>(&self, f: impl FnOnce(&mut HeapCore) -> R) -> Option<R> {
        Some(self.with(f))
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

api::checked_api!(
    LockedHeap,
    "let a = strata_alloc::LockedHeap::new(strata_alloc::Heap::new()?);"
);
api::impl_allocator!(LockedHeap);

impl core::fmt::Debug for LockedHeap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LockedHeap").finish_non_exhaustive()
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
