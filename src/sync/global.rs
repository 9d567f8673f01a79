//! `GlobalHeap`: one heap per thread, for `#[global_allocator]` and the C ABI.
//!
//! A global heap is a registry of heaps, one per thread that allocates through it. A thread
//! finds its own heap through a thread-local cache (a const-initialised `Cell` of plain data,
//! which needs no allocation and no destructor), so two threads allocating at once touch
//! different heaps and different cache lines. Each heap sits behind its own spin lock: its
//! owner takes it uncontended (one compare-exchange, one store), and a thread that frees or
//! resizes a block of another heap takes that heap's lock and frees the block there through
//! the ordinary, fully validated free. A double free from two threads, or a foreign pointer on
//! any thread, is therefore judged exactly as on a single heap.
//!
//! Finding the owner of a pointer: the thread's own heap first; then the heap an owner hint
//! names (a table indexed by the address's 64 MiB chunk, filled when a walk finds an owner);
//! then every heap in the registry. Each is asked, under its lock, whether the address lies in
//! its reservation or starts one of its mapped blocks (reservations and mappings never
//! overlap, so at most one says yes): a stale or shared hint costs a walk, never a wrong
//! answer. A pointer no heap answers for is judged by the thread's own heap, which reports it
//! as foreign.
//!
//! Thread exit: a pthread key's destructor gives up the thread's heaps. An empty one is
//! replaced by a fresh, empty heap (which holds no memory), its counters kept; one with live
//! blocks is trimmed and stays freeable from any thread. Either way it is an orphan, and the
//! next thread that needs a heap adopts an orphan before it creates one, so the number of heaps
//! is bounded by the most threads that were ever alive at once. An orphan whose last block is
//! freed (from any thread) gives its memory back at once.
//!
//! Locks, always taken in this order: the fork list, a registry, a heap. The registry's lock
//! guards only ownership changes and new heaps; walking the registry takes no lock, because
//! heaps are pushed at the front with a release store and never removed until the global
//! heap is dropped.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::{Cell, UnsafeCell};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use super::SpinLock;
use crate::backend::Backend;
use crate::facade as api;
use crate::heap::HeapCore;
use crate::{Error, HeapConfig, Region, Stats};

/// One thread's heap, and the counters of the heaps it replaced when they were left empty.
struct Slot {
    core: HeapCore,
    retired: Stats,
}

impl Slot {
    /// Settles an orphan: an empty heap (no live block, nothing set aside as damaged) is
    /// replaced by a fresh one, which drops its mappings; a heap with live blocks gives back
    /// what it can.
    fn settle(&mut self, config: HeapConfig) {
        let s = self.core.stats();
        if s.live_blocks == 0 && s.quarantined_blocks == 0 {
            if let Ok(fresh) = HeapCore::new(config) {
                let old = core::mem::replace(&mut self.core, fresh);
                add_history(&mut self.retired, &old.stats());
            }
        } else {
            self.core.trim();
        }
    }

    /// What this heap counts now, and has counted over its replaced heaps.
    fn stats(&self) -> Stats {
        let mut s = self.core.stats();
        add_history(&mut s, &self.retired);
        s
    }
}

/// Adds the event counters of `o` (not what it holds now) to `t`.
fn add_history(t: &mut Stats, o: &Stats) {
    t.allocations += o.allocations;
    t.frees += o.frees;
    t.reallocations += o.reallocations;
    t.reallocations_in_place += o.reallocations_in_place;
    t.splits += o.splits;
    t.coalesces += o.coalesces;
    t.failed_requests += o.failed_requests;
    t.misuses_caught += o.misuses_caught;
    t.break_growths += o.break_growths;
    t.break_shrinks += o.break_shrinks;
    t.bytes_from_os += o.bytes_from_os;
    t.bytes_to_os += o.bytes_to_os;
    t.peak_bytes_in_use = t.peak_bytes_in_use.max(o.peak_bytes_in_use);
}

/// Adds everything of `o` to `t`: counters and what it holds now. The peak becomes the sum of
/// the heaps' peaks (a bound on the process's peak); `max_size` is one heap's.
fn add_all(t: &mut Stats, o: &Stats) {
    let peak = t.peak_bytes_in_use + o.peak_bytes_in_use;
    add_history(t, o);
    t.peak_bytes_in_use = peak;
    t.bytes_in_use += o.bytes_in_use;
    t.live_blocks += o.live_blocks;
    t.free_blocks += o.free_blocks;
    t.free_bytes += o.free_bytes;
    t.managed_bytes += o.managed_bytes;
    t.quarantined_blocks += o.quarantined_blocks;
    t.quarantined_bytes += o.quarantined_bytes;
    t.mapped_blocks += o.mapped_blocks;
    t.mapped_bytes += o.mapped_bytes;
    t.max_size = t.max_size.max(o.max_size);
}

/// A heap on a registry, in a mapping of its own.
struct Node {
    slot: SpinLock<Slot>,
    /// The owning thread (`pthread_self`), 0 for an orphan. Changed under the registry's lock;
    /// read without it only as a hint (an orphan's last free settles it, under `slot`).
    owner: AtomicUsize,
    /// The next heap on the registry; fixed before this one is published.
    next: *mut Node,
    _home: Region,
}

/// A set-up global heap: its registry, in a mapping of its own, so that the fork handlers and
/// the thread-exit destructor reach it at an address that stays put.
struct Shared {
    /// Unique in the process, so that a thread's cache never matches a heap dropped since.
    id: u64,
    config: HeapConfig,
    /// The newest heap; the others follow through `Node::next`.
    heaps: AtomicPtr<Node>,
    /// Taken to change a heap's owner or to push a heap.
    registry: SpinLock<()>,
    /// The next global heap on the fork list; read and written only under its lock.
    next: UnsafeCell<*mut Shared>,
    /// Owner hints: entry `addr >> HINT_SHIFT` names the heap last found to own an address
    /// in that chunk (null: none yet), in `_hint_table`'s zeroed mapping.
    hints: *const AtomicPtr<Node>,
    _hint_table: Region,
    _home: Region,
}

/// Address bits one owner hint covers: 64 MiB chunks (fewer, larger ones under Miri, which
/// materialises the table).
const HINT_SHIFT: usize = if cfg!(miri) { 38 } else { 26 };
/// Hints in a table: the 47-bit user address space in chunks.
const HINTS: usize = 1 << (47 - HINT_SHIFT);

// SAFETY: a Node's heap is reached only through its lock; `owner` is atomic; `next` is fixed
// before the node is shared; `_home` is touched only when the node is unmapped, by the one
// thread that drops the global heap.
unsafe impl Sync for Node {}
// SAFETY: a Shared is reached from several threads only through atomics (the hints among
// them), its locks, and `next` under the fork list's lock; `_home` and `_hint_table` as
// Node's `_home`.
unsafe impl Sync for Shared {}

/// Moves `make(home)` into a fresh mapping `home` of its own.
fn map_home<T>(make: impl FnOnce(Region) -> T) -> Result<NonNull<T>, Error> {
    let size = core::mem::size_of::<T>();
    let mut home = Region::reserve(size)?;
    let at = home.grow(size)?.cast::<T>();
    // SAFETY: `at` is the page-aligned start of a fresh mapping of at least `size` bytes that
    // nothing else refers to; the value written owns that mapping from now on.
    unsafe { at.as_ptr().write(make(home)) };
    Ok(at)
}

/// Drops a value made by [`map_home`] and unmaps its home.
///
/// # Safety
///
/// `p` came from `map_home`, is reachable by no other thread and is not used again.
unsafe fn unmap_home<T>(p: NonNull<T>) {
    // SAFETY: per the contract, nothing else reads the value; moving it out first means the
    // mapping is unmapped (by the value's `Region` dropping) only after the last read of it.
    drop(unsafe { p.as_ptr().read() });
}

/// The calling thread, as the registries name owners: never 0 for a live thread.
fn this_thread() -> usize {
    // SAFETY: pthread_self has no preconditions.
    (unsafe { libc::pthread_self() }) as usize
}

std::thread_local! {
    /// The global heap (by id) this thread allocated through last, and its heap there.
    static CURRENT: Cell<(u64, *const Node)> = const { Cell::new((0, core::ptr::null())) };
}

/// The id of the next global heap set up (0 is no heap).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The pthread key whose destructor gives up an exiting thread's heaps; `usize::MAX` until it
/// is created (or if it could not be).
static EXIT_KEY: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The global heaps set up in this process, for the fork handlers and thread exit.
struct ForkList {
    head: *mut Shared,
}

// SAFETY: the list only holds pointers to `Shared` values, which are `Sync`; it is only read
// and written under its lock.
unsafe impl Send for ForkList {}

static FORK_LIST: SpinLock<ForkList> = SpinLock::new(ForkList {
    head: core::ptr::null_mut(),
});

/// Walks the fork list.
///
/// # Safety
///
/// The caller holds the fork list's lock (or its forgotten guard).
unsafe fn each_global(mut f: impl FnMut(&Shared)) {
    // SAFETY: the list is locked; entries stay alive while they are on it.
    let mut p = unsafe { (*FORK_LIST.value.get()).head };
    while let Some(shared) = NonNull::new(p) {
        // SAFETY: see above.
        let shared = unsafe { shared.as_ref() };
        f(shared);
        // SAFETY: `next` is only touched under the list's lock, which is held.
        p = unsafe { *shared.next.get() };
    }
}

impl Shared {
    /// Every heap on the registry, newest first.
    fn heaps(&self) -> impl Iterator<Item = &Node> + '_ {
        let mut at = self.heaps.load(Ordering::Acquire);
        core::iter::from_fn(move || {
            // SAFETY: published nodes live until the global heap is dropped, which cannot
            // happen while `&self` is borrowed; `next` is fixed before publication, and the
            // acquire load of the head makes every older node visible.
            let node = unsafe { at.as_ref() }?;
            at = node.next;
            Some(node)
        })
    }

    /// The calling thread's heap on this registry: one it owns already, else an orphan, else
    /// a new one. Remembered in the thread's cache.
    #[cold]
    #[inline(never)]
    fn join(&self) -> Result<&Node, Error> {
        let me = this_thread();
        let node = {
            let _registry = self.registry.lock();
            let mut orphan = None;
            let mut mine = None;
            for n in self.heaps() {
                match n.owner.load(Ordering::Relaxed) {
                    o if o == me => {
                        mine = Some(n);
                        break;
                    }
                    0 if orphan.is_none() => orphan = Some(n),
                    _ => {}
                }
            }
            match mine.or(orphan) {
                Some(n) => {
                    n.owner.store(me, Ordering::Relaxed);
                    n
                }
                None => {
                    let core = HeapCore::new(self.config)?;
                    let next = self.heaps.load(Ordering::Relaxed);
                    let n = map_home(|home| Node {
                        slot: SpinLock::new(Slot {
                            core,
                            retired: Stats::default(),
                        }),
                        owner: AtomicUsize::new(me),
                        next,
                        _home: home,
                    })?;
                    self.heaps.store(n.as_ptr(), Ordering::Release);
                    // SAFETY: just published; it lives as long as `self`.
                    unsafe { &*n.as_ptr() }
                }
            }
        };
        // During thread teardown the cache may be gone; every call then comes here, which
        // is slower but finds the same heap.
        let _ = CURRENT.try_with(|c| c.set((self.id, node)));
        let key = EXIT_KEY.load(Ordering::Acquire);
        if key != usize::MAX {
            // SAFETY: the key was created; any non-null value arms its destructor for this
            // thread (glibc keeps the first keys' values in the thread itself, unallocated).
            unsafe {
                libc::pthread_setspecific(
                    key as libc::pthread_key_t,
                    core::ptr::dangling::<libc::c_void>(),
                )
            };
        }
        Ok(node)
    }

    /// The owner hint for `addr`'s chunk, if the table covers it. A hint only says where to
    /// look first: the heap it names is asked, under its lock, whether it owns the address.
    #[inline(always)]
    fn hint(&self, addr: usize) -> Option<&AtomicPtr<Node>> {
        let i = addr >> HINT_SHIFT;
        // SAFETY: `i < HINTS`, inside the table's zeroed mapping, which lives as long as
        // `self` and is reached only through atomics.
        (i < HINTS).then(|| unsafe { &*self.hints.add(i) })
    }

    /// Runs `f` on `n`'s heap, which owns the pointer `f` is about: an orphan that `f` left
    /// empty is settled.
    #[inline(always)]
    fn finish<R>(&self, n: &Node, slot: &mut Slot, f: impl FnOnce(&mut HeapCore) -> R) -> R {
        let r = f(&mut slot.core);
        if n.owner.load(Ordering::Relaxed) == 0 {
            slot.settle(self.config);
        }
        r
    }

    /// Runs `f` on the heap that owns `p`, or, if none does, on the calling thread's heap
    /// (or any), whose validation then reports `p` as foreign. `None`: there is no heap yet.
    fn with_owner<R>(&self, p: NonNull<u8>, f: impl FnOnce(&mut HeapCore) -> R) -> Option<R> {
        let addr = p.as_ptr() as usize;
        let mine = CURRENT
            .try_with(Cell::get)
            .ok()
            .filter(|&(id, _)| id == self.id)
            // SAFETY: the cache names a node of this registry (the ids match), alive while
            // `self` is.
            .map(|(_, n)| unsafe { &*n });
        if let Some(n) = mine {
            let mut slot = n.slot.lock();
            if slot.core.owns(addr) {
                return Some(f(&mut slot.core));
            }
        }
        let hint = self.hint(addr);
        // SAFETY: a hint is null or a node of this registry (stored below), alive while `self`
        // is; the acquire load pairs with the release store, after which the node was
        // published to the storing thread.
        let hinted = hint.and_then(|h| unsafe { h.load(Ordering::Acquire).as_ref() });
        if let Some(n) = hinted.filter(|&n| !mine.is_some_and(|m| core::ptr::eq(m, n))) {
            let mut slot = n.slot.lock();
            if slot.core.owns(addr) {
                return Some(self.finish(n, &mut slot, f));
            }
        }
        for n in self.heaps() {
            if mine.is_some_and(|m| core::ptr::eq(m, n)) {
                continue;
            }
            let mut slot = n.slot.lock();
            if slot.core.owns(addr) {
                if let Some(h) = hint {
                    h.store(core::ptr::from_ref(n).cast_mut(), Ordering::Release);
                }
                return Some(self.finish(n, &mut slot, f));
            }
        }
        let judge = mine.or_else(|| self.heaps().next())?;
        Some(f(&mut judge.slot.lock().core))
    }
}

/// Registers the fork handlers and creates the thread-exit key, once per process.
fn register_handlers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid out-pointer; the destructor is a plain function that never
        // unwinds. A failure leaves exiting threads' heaps owned (usable, not reused).
        if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } == 0 {
            EXIT_KEY.store(key as usize, Ordering::Release);
        }
        // Miri has neither pthread_atfork nor fork.
        #[cfg(not(miri))]
        // SAFETY: the handlers are plain functions that never unwind and live as long as the
        // program. A failure (ENOMEM) leaves the heaps working, only not fork-safe.
        unsafe {
            libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork_child));
        }
    });
}

/// Runs as a thread exits: its heaps on every global heap become orphans, settled (see the
/// module docs). The cache is cleared first, so an allocation after this (a later destructor)
/// joins again rather than using a heap another thread may adopt.
extern "C" fn thread_exit(_: *mut libc::c_void) {
    let _ = CURRENT.try_with(|c| c.set((0, core::ptr::null())));
    let me = this_thread();
    let _list = FORK_LIST.lock();
    // SAFETY: the fork list's lock is held.
    unsafe {
        each_global(|shared| {
            let _registry = shared.registry.lock();
            for n in shared.heaps() {
                if n.owner.load(Ordering::Relaxed) == me {
                    n.owner.store(0, Ordering::Relaxed);
                    n.slot.lock().settle(shared.config);
                }
            }
        });
    }
}

/// Runs in the forking thread before `fork()`: takes the fork list's lock, then every
/// registry's and every heap's, so that no other thread is inside any heap when the process
/// is copied. The handlers do not allocate.
#[cfg_attr(miri, allow(dead_code))]
extern "C" fn before_fork() {
    core::mem::forget(FORK_LIST.lock());
    // SAFETY: the list's lock is held (its guard forgotten above).
    unsafe {
        each_global(|shared| {
            core::mem::forget(shared.registry.lock());
            for n in shared.heaps() {
                core::mem::forget(n.slot.lock());
            }
        });
    }
}

/// Releases what `before_fork` took.
///
/// # Safety
///
/// `before_fork` ran in this thread and nothing released its locks since.
#[cfg_attr(miri, allow(dead_code))]
unsafe fn release_fork_locks(child: bool) {
    let me = this_thread();
    let release = |shared: &Shared| {
        for n in shared.heaps() {
            // Only the forking thread lives on in the child: the others' heaps are orphans.
            if child && n.owner.load(Ordering::Relaxed) != me {
                n.owner.store(0, Ordering::Relaxed);
            }
            // SAFETY: `before_fork` took this lock and forgot its guard.
            unsafe { n.slot.force_unlock() };
        }
        // SAFETY: as above.
        unsafe { shared.registry.force_unlock() };
    };
    // SAFETY: `before_fork` holds the list's lock, and released nothing since.
    unsafe {
        each_global(release);
        FORK_LIST.force_unlock();
    }
}

/// Runs in the parent after `fork()`.
#[cfg_attr(miri, allow(dead_code))]
extern "C" fn after_fork() {
    // SAFETY: `before_fork` ran in this thread just before.
    unsafe { release_fork_locks(false) };
}

/// Runs in the child after `fork()`: the forking thread is the only one left and holds every
/// lock, so releasing them leaves each heap as it was, whole.
#[cfg_attr(miri, allow(dead_code))]
extern "C" fn after_fork_child() {
    // SAFETY: `before_fork` ran in this thread (in the parent, copied) just before.
    unsafe { release_fork_locks(true) };
}

/// A heap for `#[global_allocator]`: `const`-constructible, set up lazily on the first
/// allocation (without allocating through itself), `null` when memory runs out, an abort
/// with a one-line report on a detected misuse, and safe across `fork()`.
///
/// **Threads.** Each thread that allocates gets a heap of its own, so threads do not contend
/// on their own allocations. A block may be freed or resized on any thread: it goes back to
/// the heap that owns it, validated there. When a thread exits its heap is kept for the next
/// new thread, after giving its free memory back to the OS; its live blocks stay valid.
///
/// It has the checked API of the other allocators too (`alloc`, `free`, `realloc`, ...,
/// returning [`Error`]s), which is what the C ABI (`strata-malloc`) is written on.
/// [`stats`](GlobalHeap::stats), [`check`](GlobalHeap::check) and
/// [`trim`](GlobalHeap::trim) cover every thread's heap, each taken under its lock in turn
/// (the totals are a sum over heaps, not one instant; `peak_bytes_in_use` is the sum of the
/// heaps' peaks).
///
/// **fork.** A child of a multi-threaded program inherits every lock as it was at the fork.
/// Fork handlers (`pthread_atfork`, registered on the first set-up) take every global heap's
/// locks before the fork and release them in both processes afterwards, so the child finds
/// each heap whole and unlocked, as glibc's malloc does for its arenas; in the child, the
/// heaps of the threads that did not survive the fork become orphans for new threads.
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
    /// The registry once set up; null before. Published once, freed only by `drop`.
    shared: AtomicPtr<Shared>,
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

    /// A global heap whose thread heaps each have the given settings.
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

    /// The registry, if set up.
    #[inline(always)]
    fn existing(&self) -> Option<&Shared> {
        // SAFETY: a published `Shared` lives until `self` is dropped, which cannot happen
        // while `&self` is borrowed.
        unsafe { self.shared.load(Ordering::Acquire).as_ref() }
    }

    /// The calling thread's heap, setting up the registry and the heap first if needed.
    #[inline(always)]
    fn mine(&self) -> Result<&Node, Error> {
        let shared = match self.existing() {
            Some(s) => s,
            None => self.set_up()?,
        };
        if let Ok((id, node)) = CURRENT.try_with(Cell::get) {
            if id == shared.id {
                // SAFETY: the cache names a node of this registry (the ids are unique), which
                // lives as long as the registry.
                return Ok(unsafe { &*node });
            }
        }
        shared.join()
    }

    /// Runs `f` on the calling thread's heap, under its lock.
    #[inline(always)]
    fn reach<R>(&self, f: impl FnOnce(&mut HeapCore) -> R) -> Result<R, Error> {
        let node = self.mine()?;
        Ok(f(&mut node.slot.lock().core))
    }

    /// Builds the registry and publishes it; of two threads racing here, one wins and the
    /// other's is unmapped. Building only maps memory, so nothing here allocates.
    #[cold]
    #[inline(never)]
    fn set_up(&self) -> Result<&Shared, Error> {
        HeapCore::new(self.config)?;
        register_handlers();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let bytes = HINTS * core::mem::size_of::<AtomicPtr<Node>>();
        let mut hint_table = Region::reserve(bytes)?;
        let hints = hint_table.grow(bytes)?.cast::<AtomicPtr<Node>>().as_ptr();
        let shared = map_home(|home| Shared {
            id,
            config: self.config,
            heaps: AtomicPtr::new(core::ptr::null_mut()),
            registry: SpinLock::new(()),
            next: UnsafeCell::new(core::ptr::null_mut()),
            hints,
            _hint_table: hint_table,
            _home: home,
        })?;
        // On the fork list before it is published: a thread that forks while another uses
        // the new heap must find it there.
        {
            let mut list = FORK_LIST.lock();
            // SAFETY: `next` is only touched under the list's lock, which is held.
            unsafe { *shared.as_ref().next.get() = list.head };
            list.head = shared.as_ptr();
        }
        let won = match self.shared.compare_exchange(
            core::ptr::null_mut(),
            shared.as_ptr(),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => shared.as_ptr(),
            Err(winner) => {
                // SAFETY: `shared` was never published and has no heaps; it is taken off the
                // list first.
                unsafe {
                    unlist(shared);
                    unmap_home(shared);
                }
                winner
            }
        };
        // SAFETY: published; it lives until `self` is dropped.
        Ok(unsafe { &*won })
    }

    /// Gives the free memory of every thread's heap back to the OS; returns the bytes given
    /// back.
    ///
    /// ```
    /// static HEAP: strata_alloc::GlobalHeap = strata_alloc::GlobalHeap::new();
    /// assert_eq!(HEAP.trim(), 0);
    /// ```
    pub fn trim(&self) -> usize {
        self.existing().map_or(0, |s| {
            s.heaps().map(|n| n.slot.lock().core.trim()).sum::<usize>()
        })
    }

    /// Heaps on the registry: one per thread that ever allocated at the same time as the
    /// others (exited threads' heaps are reused).
    ///
    /// ```
    /// static HEAP: strata_alloc::GlobalHeap = strata_alloc::GlobalHeap::new();
    /// let p = HEAP.alloc(10)?;
    /// assert_eq!(HEAP.heaps(), 1);
    /// # unsafe { HEAP.free(p)? };
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn heaps(&self) -> usize {
        self.existing().map_or(0, |s| s.heaps().count())
    }

    /// Allocates `size` bytes, 16-byte aligned, from the calling thread's heap.
    ///
    /// # Errors
    ///
    /// As [`Heap::alloc`](crate::Heap::alloc).
    ///
    /// ```
    /// let a = strata_alloc::GlobalHeap::new();
    /// let p = a.alloc(100)?;
    /// assert_eq!(p.as_ptr() as usize % 16, 0);
    /// assert!(a.alloc(0).is_err());
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    #[inline]
    pub fn alloc(&self, size: usize) -> Result<NonNull<u8>, Error> {
        self.reach(|c| api::alloc(c, size, 16))?
    }

    /// Allocates for `layout` from the calling thread's heap.
    ///
    /// # Errors
    ///
    /// As [`Heap::alloc_layout`](crate::Heap::alloc_layout).
    ///
    /// ```
    /// use core::alloc::Layout;
    /// let a = strata_alloc::GlobalHeap::new();
    /// let p = a.alloc_layout(Layout::from_size_align(64, 1024).unwrap())?;
    /// assert_eq!(p.as_ptr() as usize % 1024, 0);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    #[inline]
    pub fn alloc_layout(&self, layout: Layout) -> Result<NonNull<u8>, Error> {
        self.reach(|c| api::alloc(c, layout.size(), layout.align()))?
    }

    /// Allocates `count * size` zeroed bytes from the calling thread's heap, like `calloc`.
    ///
    /// # Errors
    ///
    /// As [`Heap::calloc`](crate::Heap::calloc).
    ///
    /// ```
    /// let a = strata_alloc::GlobalHeap::new();
    /// let p = a.calloc(10, 8)?;
    /// // SAFETY: 80 zeroed bytes were just allocated.
    /// assert!(unsafe { core::slice::from_raw_parts(p.as_ptr(), 80) }.iter().all(|&b| b == 0));
    /// assert!(a.calloc(usize::MAX, 2).is_err());
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    #[inline]
    pub fn calloc(&self, count: usize, size: usize) -> Result<NonNull<u8>, Error> {
        self.reach(|c| api::calloc(c, count, size))?
    }

    /// Resizes the block at `ptr`, on whichever thread's heap owns it (a moved block stays in
    /// that heap), keeping its contents up to the smaller size.
    ///
    /// # Errors
    ///
    /// As [`Heap::realloc`](crate::Heap::realloc); on every error the old block is untouched.
    ///
    /// # Safety
    ///
    /// On success the old pointer must not be used again unless it was returned.
    ///
    /// ```
    /// let a = strata_alloc::GlobalHeap::new();
    /// let p = a.alloc(16)?;
    /// // SAFETY: `p` is a live 16-byte block; afterwards only the returned pointer is used.
    /// let p = unsafe {
    ///     p.as_ptr().write_bytes(7, 16);
    ///     a.realloc(p, 4000)?
    /// };
    /// // SAFETY: the first 16 bytes were kept.
    /// assert_eq!(unsafe { p.as_ptr().add(15).read() }, 7);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    #[inline]
    pub unsafe fn realloc(&self, ptr: NonNull<u8>, new_size: usize) -> Result<NonNull<u8>, Error> {
        self.existing()
            .and_then(|s| s.with_owner(ptr, |c| api::realloc(c, ptr, new_size)))
            .unwrap_or_else(|| Err(api::not_a_block(ptr)))
    }

    /// Frees the block at `ptr`, on whichever thread's heap owns it, validated there.
    ///
    /// # Errors
    ///
    /// As [`Heap::free`](crate::Heap::free): a double free (from any thread), a foreign,
    /// interior or damaged pointer is reported and nothing is written.
    ///
    /// # Safety
    ///
    /// On success the block must not be used again.
    ///
    /// ```
    /// let a = strata_alloc::GlobalHeap::new();
    /// let p = a.alloc(32)?;
    /// // SAFETY: `p` is live and not used after this.
    /// unsafe { a.free(p)? };
    /// // SAFETY: a second free of the same pointer is misuse, and is reported.
    /// assert!(matches!(unsafe { a.free(p) }, Err(strata_alloc::Error::DoubleFree { .. })));
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    #[inline]
    pub unsafe fn free(&self, ptr: NonNull<u8>) -> Result<(), Error> {
        self.existing()
            .and_then(|s| {
                s.with_owner(ptr, |c| {
                    let r = Backend::free(c, ptr);
                    c.trim_if_empty();
                    r
                })
            })
            .unwrap_or_else(|| Err(api::not_a_block(ptr)))
    }

    /// Usable bytes of the live block at `ptr`, like `malloc_usable_size`.
    ///
    /// # Errors
    ///
    /// As [`free`](Self::free), for a pointer that is not a live block.
    ///
    /// ```
    /// let a = strata_alloc::GlobalHeap::new();
    /// let p = a.alloc(20)?;
    /// assert!(a.usable_size(p)? >= 20);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn usable_size(&self, ptr: NonNull<u8>) -> Result<usize, Error> {
        self.existing()
            .and_then(|s| s.with_owner(ptr, |c| Backend::usable_size(c, ptr)))
            .unwrap_or_else(|| Err(api::not_a_block(ptr)))
    }

    /// The counters summed over every thread's heap (see the type's docs).
    ///
    /// ```
    /// let a = strata_alloc::GlobalHeap::new();
    /// let _ = a.alloc(10)?;
    /// let _ = a.alloc(0); // refused
    /// let s = a.stats();
    /// assert_eq!((s.live_blocks, s.failed_requests), (1, 1));
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn stats(&self) -> Stats {
        let mut total = Stats::default();
        if let Some(s) = self.existing() {
            for n in s.heaps() {
                add_all(&mut total, &n.slot.lock().stats());
            }
        }
        total
    }

    /// Verifies every invariant of every thread's heap, each under its lock.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] naming the first damage found.
    ///
    /// ```
    /// let a = strata_alloc::GlobalHeap::new();
    /// let _ = a.alloc(10)?;
    /// a.check()?;
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn check(&self) -> Result<(), Error> {
        if let Some(s) = self.existing() {
            for n in s.heaps() {
                Backend::check(&mut n.slot.lock().core)?;
            }
        }
        Ok(())
    }
}

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
            // A thread's cache may still name it, but by an id no live heap has. It is taken
            // off the list (under the list's lock) before its heaps and itself are unmapped.
            // SAFETY: published by `set_up`, so on the list; `&mut self`: no one else uses it.
            unsafe {
                unlist(shared);
                let mut at = shared.as_ref().heaps.load(Ordering::Acquire);
                while let Some(n) = NonNull::new(at) {
                    at = n.as_ref().next;
                    unmap_home(n);
                }
                unmap_home(shared);
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
// no heap handed out aborts before anything is written; the heaps never allocate through the
// global allocator, so there is no re-entry.
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
            .existing()
            .and_then(|s| {
                s.with_owner(p, |c| {
                    api::deallocate(c, p, layout);
                    c.trim_if_empty();
                })
            })
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
        match self
            .existing()
            .and_then(|s| s.with_owner(p, |c| api::resize(c, p, layout, new, false)))
        {
            Some(r) => r.map_or(core::ptr::null_mut(), |q| q.cast::<u8>().as_ptr()),
            None => crate::os::abort::misuse(HeapCore::NAME, &api::not_a_block(p)),
        }
    }
}

#[cfg(test)]
mod tests;
