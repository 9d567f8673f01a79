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

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use crate::backend::Backend;
use crate::facade as api;
use crate::heap::HeapCore;
use crate::{BlockInfo, Error, Heap, HeapConfig, Region, Snapshot};

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

/// A heap for `#[global_allocator]`: `const`-constructible, set up lazily on the first
/// allocation (without allocating through itself), `null` when memory runs out, an abort
/// with a one-line report on a detected misuse, and safe across `fork()`.
///
/// It has the checked API of the other allocators too (`alloc`, `free`, `realloc`, ...,
/// returning [`Error`]s), which is what the C ABI (`strata-malloc`) is written on.
///
/// **fork.** A child of a multi-threaded program inherits the heap as it was at the fork,
/// including a lock that another thread held at that moment and will never release in the
/// child. Fork handlers (`pthread_atfork`, registered on the first set-up) take every global
/// heap's lock before the fork and release it in both processes afterwards, so the child
/// finds each heap whole and unlocked, as glibc's malloc does for its arenas.
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
    /// The heap once set up; null before. Published once, freed only by `drop`.
    shared: AtomicPtr<Shared>,
    config: HeapConfig,
}

/// A set-up global heap and its lock, in a mapping of its own: the fork handlers reach it
/// through a list, at an address that stays put even if the `GlobalHeap` value is moved.
struct Shared {
    core: SpinLock<HeapCore>,
    /// The next heap on the fork list; read and written only under `FORK_LIST`'s lock.
    next: UnsafeCell<*mut Shared>,
    /// The mapping this value lives in; unmapped after the value has been moved out of it.
    _home: Region,
}

impl Shared {
    /// Moves `core` into a fresh mapping of its own.
    fn map(core: HeapCore) -> Result<NonNull<Shared>, Error> {
        let size = core::mem::size_of::<Shared>();
        let mut home = Region::reserve(size)?;
        let at = home.grow(size)?.cast::<Shared>();
        // SAFETY: `at` is the page-aligned start of a fresh mapping of at least `size` bytes
        // that nothing else refers to; the value written owns that mapping from now on.
        unsafe {
            at.as_ptr().write(Shared {
                core: SpinLock::new(core),
                next: UnsafeCell::new(core::ptr::null_mut()),
                _home: home,
            })
        };
        Ok(at)
    }

    /// Drops the heap and unmaps its home.
    ///
    /// # Safety
    ///
    /// `p` came from [`Shared::map`], is not on the fork list and is not used again.
    unsafe fn unmap(p: NonNull<Shared>) {
        // SAFETY: per the contract, nothing else reads the value; moving it out first means
        // the mapping is unmapped (by `_home`'s drop) only after the last read of it.
        drop(unsafe { p.as_ptr().read() });
    }
}

/// The global heaps set up in this process, for the fork handlers.
struct ForkList {
    head: *mut Shared,
}

// SAFETY: the list only holds pointers to `Shared` values, which are `Sync` (see below); it is
// only read and written under its lock.
unsafe impl Send for ForkList {}

// SAFETY: a `Shared` is reached from several threads only through its lock (`core`) and the
// fork list's lock (`next`); `_home` is touched only by `unmap`, which has it alone.
unsafe impl Sync for Shared {}
// SAFETY: as above; the mappings it owns may be released from any thread.
unsafe impl Send for Shared {}

static FORK_LIST: SpinLock<ForkList> = SpinLock::new(ForkList {
    head: core::ptr::null_mut(),
});

/// Registers the fork handlers, once per process.
fn register_fork_handlers() {
    // Miri has neither pthread_atfork nor fork.
    #[cfg(not(miri))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: the handlers are plain functions that never unwind and live as long as
            // the program. A failure (ENOMEM) leaves the heaps working, only not fork-safe.
            unsafe {
                libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork));
            }
        });
    }
}

/// Runs in the forking thread before `fork()`: takes the list's lock, then every heap's, so
/// that no other thread is inside any heap when the process is copied. Allocating from here
/// on would deadlock; the handlers do not.
#[cfg_attr(miri, allow(dead_code))]
extern "C" fn before_fork() {
    core::mem::forget(FORK_LIST.lock());
    // SAFETY: the list's lock is held (its guard forgotten above); entries stay alive while
    // they are on the list, and `Drop` takes the lock to remove one.
    let mut p = unsafe { (*FORK_LIST.value.get()).head };
    while let Some(shared) = NonNull::new(p) {
        // SAFETY: see above.
        let shared = unsafe { shared.as_ref() };
        core::mem::forget(shared.core.lock());
        // SAFETY: `next` is only touched under the list's lock, which is held.
        p = unsafe { *shared.next.get() };
    }
}

/// Runs in the parent and in the child after `fork()`: releases what `before_fork` took.
/// In the child, the forking thread is the only one left and it holds every lock, so
/// releasing them is sound and leaves each heap as it was, whole.
#[cfg_attr(miri, allow(dead_code))]
extern "C" fn after_fork() {
    // SAFETY: `before_fork` took the list's lock and has not released it.
    let mut p = unsafe { (*FORK_LIST.value.get()).head };
    while let Some(shared) = NonNull::new(p) {
        // SAFETY: entries stay alive while on the list, and the list is locked.
        let shared = unsafe { shared.as_ref() };
        // SAFETY: `next` is only touched under the list's lock.
        p = unsafe { *shared.next.get() };
        // SAFETY: `before_fork` took this lock and forgot its guard.
        unsafe { shared.core.force_unlock() };
    }
    // SAFETY: as above.
    unsafe { FORK_LIST.force_unlock() };
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
            shared: AtomicPtr::new(core::ptr::null_mut()),
            config,
        }
    }

    /// Runs `f` on the heap, setting it up first if needed.
    #[inline(always)]
    fn reach<R>(&self, f: impl FnOnce(&mut HeapCore) -> R) -> Result<R, Error> {
        let mut p = self.shared.load(Ordering::Acquire);
        if p.is_null() {
            p = self.set_up()?;
        }
        // SAFETY: a published `Shared` lives until `self` is dropped, which cannot happen
        // while `&self` is borrowed.
        let shared = unsafe { &*p };
        Ok(f(&mut shared.core.lock()))
    }

    /// Runs `f` on the heap if it has been set up.
    #[inline(always)]
    fn reach_existing<R>(&self, f: impl FnOnce(&mut HeapCore) -> R) -> Option<R> {
        let p = self.shared.load(Ordering::Acquire);
        // SAFETY: as in `with`.
        let shared = unsafe { p.as_ref() }?;
        Some(f(&mut shared.core.lock()))
    }

    /// Builds the heap and publishes it; of two threads racing here, one heap wins and the
    /// other is unmapped. Building only maps memory, so nothing here allocates.
    #[cold]
    #[inline(never)]
    fn set_up(&self) -> Result<*mut Shared, Error> {
        let shared = Shared::map(HeapCore::new(self.config)?)?;
        register_fork_handlers();
        // On the fork list before it is published: a thread that forks while another uses
        // the new heap must find it there.
        {
            let mut list = FORK_LIST.lock();
            // SAFETY: `next` is only touched under the list's lock, which is held.
            unsafe { *shared.as_ref().next.get() = list.head };
            list.head = shared.as_ptr();
        }
        match self.shared.compare_exchange(
            core::ptr::null_mut(),
            shared.as_ptr(),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Ok(shared.as_ptr()),
            Err(winner) => {
                // SAFETY: `shared` was never published; it is taken off the list first.
                unsafe {
                    unlist(shared);
                    Shared::unmap(shared);
                }
                Ok(winner)
            }
        }
    }

    /// Gives the free top of the heap back to the OS; returns the bytes given back.
    ///
    /// ```
    /// static HEAP: strata_alloc::GlobalHeap = strata_alloc::GlobalHeap::new();
    /// assert_eq!(HEAP.trim(), 0);
    /// ```
    pub fn trim(&self) -> usize {
        self.reach_existing(|c| c.trim()).unwrap_or(0)
    }
}

api::checked_api!(GlobalHeap, "let a = strata_alloc::GlobalHeap::new();");

/// Takes `shared` off the fork list.
///
/// # Safety
///
/// `shared` is on the list.
unsafe fn unlist(shared: NonNull<Shared>) {
    let mut list = FORK_LIST.lock();
    let mut link: *mut *mut Shared = &mut list.head;
    // SAFETY: the list's lock is held; every entry on it is alive, and `shared` is on it, so
    // the walk ends there.
    unsafe {
        while *link != shared.as_ptr() {
            link = (**link).next.get();
        }
        *link = *shared.as_ref().next.get();
    }
}

impl Drop for GlobalHeap {
    fn drop(&mut self) {
        if let Some(shared) = NonNull::new(*self.shared.get_mut()) {
            // SAFETY: published by `set_up`, so on the list; `&mut self` means no one else
            // uses it, and it is taken off the list (under the list's lock, so no fork
            // handler holds it) before it is unmapped.
            unsafe {
                unlist(shared);
                Shared::unmap(shared);
            }
        }
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
        self.reach(|c| api::alloc_contained(c, layout.size(), layout.align()))
            .and_then(|r| r)
            .map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.reach(|c| api::allocate_zeroed(c, layout))
            .ok()
            .and_then(Result::ok)
            .map_or(core::ptr::null_mut(), |p| p.cast::<u8>().as_ptr())
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(p) = NonNull::new(ptr) else { return };
        if self
            .reach_existing(|c| api::deallocate(c, p, layout))
            .is_none()
        {
            crate::os::abort::misuse(HeapCore::NAME, &api::not_a_block(p));
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
        self.reach(|c| api::resize(c, p, layout, new, false))
            .ok()
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

    fn small() -> HeapConfig {
        HeapConfig::default()
            .max_size(1 << 20)
            .growth_increment(16 << 10)
            .mmap_threshold(64 << 10)
    }

    /// Serialises the tests that set up global heaps: a heap mapped by one could land at the
    /// address another just unmapped and is asking the fork list about.
    static SET_UP: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn listed(p: *mut Shared) -> bool {
        let list = FORK_LIST.lock();
        let mut q = list.head;
        while !q.is_null() {
            if q == p {
                return true;
            }
            // SAFETY: the list is locked; its entries are alive.
            q = unsafe { *(*q).next.get() };
        }
        false
    }

    #[test]
    fn the_global_heaps_checked_api() {
        let _serial = SET_UP.lock();
        let heap = GlobalHeap::with_config(small());
        let never = NonNull::new(core::ptr::without_provenance_mut::<u8>(0x1000)).unwrap();
        // SAFETY: the heap validates; it has not been set up, so nothing is its block.
        let err = unsafe { heap.free(never) }.unwrap_err();
        assert!(matches!(err, Error::InvalidPointer { .. }), "{err}");
        assert_eq!(heap.stats(), crate::Stats::default());

        let p = heap.alloc(100).unwrap();
        // SAFETY: 100 bytes are ours.
        unsafe { p.as_ptr().write_bytes(0xA5, 100) };
        // SAFETY: live; only the returned pointer is used afterwards.
        let q = unsafe { heap.realloc(p, 5000) }.unwrap();
        // SAFETY: the first 100 bytes were kept.
        assert!(
            unsafe { core::slice::from_raw_parts(q.as_ptr(), 100) }
                .iter()
                .all(|&b| b == 0xA5)
        );
        assert!(heap.usable_size(q).unwrap() >= 5000);
        let z = heap.calloc(50, 20).unwrap();
        // SAFETY: 1000 zeroed bytes.
        assert!(
            unsafe { core::slice::from_raw_parts(z.as_ptr(), 1000) }
                .iter()
                .all(|&b| b == 0)
        );
        assert!(matches!(
            heap.calloc(usize::MAX, 3),
            Err(Error::InvalidLayout { .. })
        ));
        let a = heap
            .alloc_layout(Layout::from_size_align(10, 8192).unwrap())
            .unwrap();
        assert_eq!(a.as_ptr() as usize % 8192, 0);
        assert!(matches!(
            heap.alloc(2 << 20),
            Err(Error::OutOfMemory { .. })
        ));
        heap.check().unwrap();
        // SAFETY: each live, freed once.
        unsafe {
            heap.free(q).unwrap();
            heap.free(z).unwrap();
            heap.free(a).unwrap();
        }
        // SAFETY: the misuse under test; the heap validates.
        assert_eq!(
            unsafe { heap.free(z) },
            Err(Error::DoubleFree {
                addr: z.as_ptr() as usize
            })
        );
        let s = heap.stats();
        assert_eq!((s.live_blocks, s.misuses_caught), (0, 1));
        heap.check().unwrap();
    }

    #[test]
    fn a_moved_global_heap_stays_on_the_fork_list_until_dropped() {
        let _serial = SET_UP.lock();
        let heap = GlobalHeap::with_config(small());
        let p = heap.alloc(10).unwrap();
        let shared = heap.shared.load(Ordering::Acquire);
        assert!(listed(shared));
        let moved = [heap];
        // SAFETY: live, freed once; the heap moved but its block did not.
        unsafe { moved[0].free(p) }.unwrap();
        assert_eq!(moved[0].stats().live_blocks, 0);
        drop(moved);
        assert!(!listed(shared));
    }
}
