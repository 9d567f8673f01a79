//! `GlobalHeap`: one heap per thread, for `#[global_allocator]` and the C ABI.
//!
//! A global heap is a registry of heaps, one per thread that allocates through it. A thread
//! finds its own heap through a thread-local cache (a const-initialised `Cell` of plain data,
//! which needs no allocation and no destructor), so two threads allocating at once touch
//! different heaps and different cache lines.
//!
//! **The owner's path.** Each heap sits behind a [`Gate`](super::gate): its owner enters with
//! two plain stores and a load (no atomic read-modify-write, no lock), and any other thread
//! that must work on the heap itself (stats, check, trim, fork, resizing another thread's
//! block, a mapped block freed on another thread, an orphan) intrudes, paying for a process
//! wide barrier alone. The gate's module docs give the argument that the two exclude.
//!
//! **Frees from other threads.** A thread that frees a block in another heap's break does not
//! enter it: it sets the block's granule bit in that heap's [`RemoteFrees`] bitmap (one
//! `fetch_or`; nothing is written through the pointer), and the first such bit of a batch
//! raises the heap's `pending` flag. The owner loads the flag (a plain load) on every entry
//! to its full path (an allocation its current page cannot serve, a free its fast path
//! declines), which drains the batch and frees each granule through the ordinary, fully
//! validated free: a pointer that is not a live block start is reported there as misuse (an
//! abort with the one-line report, as every misuse of a global heap is). The fast paths do
//! not drain: a block that waits is still allocated, so no allocation can be handed it, and
//! the owner's fast free declines a block whose granule bit is set, so that its full path
//! drains first and reports the second free. A second free of a granule still waiting, on
//! another thread, is refused at once as a double free, and counted in the heap's
//! `misuses`. An orphan has no owner to drain it: a free into an orphan is done
//! under an intrusion (which needs no barrier for an orphan), and whoever intrudes on a heap
//! drains it first, so `stats()` and `check()` count every remote free made before them.
//!
//! Invariants kept here:
//! - A heap's published reservation (`Remote::base`, `len`, `frees`) is written once, under
//!   the gate, before the first pointer into it is returned (the owner publishes on its way
//!   out of the call that reserved), and never changes until the global heap is dropped: a
//!   heap reserves its break once and keeps it for its life, so a granule pushed is always
//!   drained as the very address that was freed.
//! - `pending` is raised after the push that made the bitmap non-empty, and swapped down
//!   before a drain, so no batch is left without a raised flag. A push that raises it for a
//!   heap being given up (thread exit) is a Dekker pair with the exit: each side stores
//!   (`pending`; `owner = 0`), issues `fence(SeqCst)`, and loads the other's store, so either
//!   the pusher sees the orphan and drains it, or the exit's drain sees the push.
//! - The span table entry for each 64 MiB chunk a reservation covers names that heap (written
//!   when it publishes). Two reservations can share a chunk at their ends; an entry whose heap
//!   does not contain the address sends the lookup to a scan of the published reservations
//!   (atomics only), so the answer is always certain.
//!
//! Finding the owner of a pointer: the thread's own heap first; then the span table, which is
//! exact for break reservations; then, for mapped blocks and foreign pointers, the owner hint
//! (a table indexed by the address's 64 MiB chunk, filled when a walk finds an owner) and a
//! walk of the registry, asking each heap under an intrusion whether it starts a mapped block
//! there (a stale or shared hint costs a walk, never a wrong answer). A pointer no heap
//! answers for is judged by the thread's own heap, which reports it as foreign.
//!
//! Thread exit: a pthread key's destructor gives up the thread's heaps: each is drained and
//! trimmed (its free memory goes back to the OS) and becomes an orphan, whose live blocks stay
//! freeable from any thread. The next thread that needs a heap adopts an orphan before it
//! creates one, so the number of heaps is bounded by the most threads that were ever alive at
//! once. An intrusion (a free among them) that leaves an orphan holding no block trims it, so
//! an emptied orphan holds no break; so does every [`ORPHAN_TRIM_EVERY`]th intrusion.
//!
//! Locks, always taken in this order: the fork list, a registry, a heap's intruder lock. The
//! registry's lock guards only ownership changes and new heaps; walking the registry takes no
//! lock, because heaps are pushed at the front with a release store and never removed until
//! the global heap is dropped. A heap's owner changes only under its intruder lock as well.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, fence};

use super::SpinLock;
use super::current;
use super::error_slot::ErrorSlot;
use super::gate::{Barrier, Gate, Intrusion, this_thread};
use crate::backend::Backend;
use crate::engine::block::GRANULE;
use crate::facade as api;
use crate::heap::HeapCore;
use crate::source::remote::{Pushed, RemoteFrees, bitmap_bytes};
use crate::{Error, HeapConfig, Region, Stats};

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

/// A value on cache lines of its own, so that what one side writes often does not share a
/// line with what the other side reads.
#[repr(align(128))]
struct Line<T>(T);

/// What other threads read to free into a heap's break without entering it.
struct Remote {
    /// First byte of the heap's break reservation; null until published (Release, after
    /// `len` and `frees` are written; never changed after).
    base: AtomicPtr<u8>,
    /// Bytes of the reservation.
    len: AtomicUsize,
    /// The granules freed by other threads, waiting for a drain; written once, before `base`.
    frees: UnsafeCell<MaybeUninit<RemoteFrees>>,
    /// The bitmap's mapping; touched only inside the gate, and when the node is dropped.
    bitmap: UnsafeCell<Option<Region>>,
    /// Mapping the bitmap was refused: frees from other threads take the intruder's path.
    refused: UnsafeCell<bool>,
    /// Intrusions on the heap as an orphan since it was last trimmed; touched only inside
    /// the gate.
    since_trim: UnsafeCell<u32>,
}

/// An orphan is trimmed in full when an intrusion leaves it holding no block, and on every
/// this many intrusions (each free into it is one) otherwise: a full trim walks every page
/// list, too much for each of a burst of frees at exit.
const ORPHAN_TRIM_EVERY: u32 = 64;

/// What other threads write to tell a heap's owner about their frees: on a line apart from
/// `Remote`, which the owner's fast free reads and nobody writes once it is published.
struct Signals {
    /// Raised by the push that found the bitmap empty; swapped down by the drain.
    pending: AtomicBool,
    /// Double frees refused at the push, for `stats()`.
    misuses: AtomicU64,
}

/// A heap on a registry, in a mapping of its own.
pub(crate) struct Node {
    gate: Line<Gate>,
    /// The heap; touched only inside `gate` (as its owner or as an intruder).
    core: UnsafeCell<HeapCore>,
    remote: Line<Remote>,
    signals: Line<Signals>,
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
    /// The gates' barriers, chosen at set-up.
    barrier: Barrier,
    /// The newest heap; the others follow through `Node::next`.
    heaps: AtomicPtr<Node>,
    /// Taken to change a heap's owner or to push a heap.
    registry: SpinLock<()>,
    /// The next global heap on the fork list; read and written only under its lock.
    next: UnsafeCell<*mut Shared>,
    /// Owner hints for mapped blocks: entry `addr >> HINT_SHIFT` names the heap last found
    /// to own an address in that chunk (null: none yet), in `_hint_table`'s zeroed mapping.
    hints: *const AtomicPtr<Node>,
    /// The span table: entry `addr >> HINT_SHIFT` names a heap whose break reservation
    /// covers (part of) that chunk, in `_span_table`'s zeroed mapping.
    spans: *const AtomicPtr<Node>,
    _hint_table: Region,
    _span_table: Region,
    _home: Region,
}

/// Address bits one table entry covers: 64 MiB chunks (fewer, larger ones under Miri, which
/// materialises the tables).
const HINT_SHIFT: usize = if cfg!(miri) { 38 } else { 26 };
/// Entries in a table: the 47-bit user address space in chunks.
const HINTS: usize = 1 << (47 - HINT_SHIFT);

// SAFETY: the heap is reached only inside the gate; `remote` is atomics, values written once
// before `base` publishes them, or gate-guarded; `signals` is atomics; `next` is fixed before
// sharing; `_home` is touched only by the one thread that drops the global heap.
unsafe impl Sync for Node {}
// SAFETY: a Shared is reached from several threads only through atomics (the tables among
// them), its locks, and `next` under the fork list's lock; the regions as Node's `_home`.
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

/// A zeroed table of `HINTS` atomic pointers.
fn map_table() -> Result<(Region, *const AtomicPtr<Node>), Error> {
    let bytes = HINTS * core::mem::size_of::<AtomicPtr<Node>>();
    let mut table = Region::reserve(bytes)?;
    let at = table.grow(bytes)?.cast::<AtomicPtr<Node>>().as_ptr();
    Ok((table, at))
}

/// Frees `p` on the heap that owns it, which then gives back its memory if it is left empty.
#[inline(always)]
fn free_on(core: &mut HeapCore, p: NonNull<u8>) -> Result<(), Error> {
    let r = Backend::free(core, p);
    core.trim_if_empty();
    r
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

impl Node {
    fn new(core: HeapCore, owner: usize, next: *mut Node, home: Region) -> Node {
        Node {
            gate: Line(Gate::new(owner)),
            core: UnsafeCell::new(core),
            remote: Line(Remote {
                base: AtomicPtr::new(core::ptr::null_mut()),
                len: AtomicUsize::new(0),
                frees: UnsafeCell::new(MaybeUninit::uninit()),
                bitmap: UnsafeCell::new(None),
                refused: UnsafeCell::new(false),
                since_trim: UnsafeCell::new(0),
            }),
            signals: Line(Signals {
                pending: AtomicBool::new(false),
                misuses: AtomicU64::new(0),
            }),
            next,
            _home: home,
        }
    }

    /// The heap.
    ///
    /// # Safety
    ///
    /// The caller is inside the gate (as its owner or an intruder), and holds no other
    /// reference from this function.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    unsafe fn core(&self) -> &mut HeapCore {
        // SAFETY: the gate excludes every other thread; the caller holds no other reference.
        unsafe { &mut *self.core.get() }
    }

    /// Runs `f` on the heap as its owner: the calling thread owns this node.
    #[inline(always)]
    fn as_owner<R>(&self, shared: &Shared, f: impl FnOnce(&mut HeapCore) -> R) -> R {
        self.gate.0.enter(shared.barrier);
        // SAFETY: inside the gate as its owner; the reference ends before `leave`.
        let core = unsafe { self.core() };
        if self.signals.0.pending.load(Ordering::Relaxed) {
            self.drain(core);
        }
        let r = f(core);
        if self.remote.0.base.load(Ordering::Relaxed).is_null() {
            self.publish(shared, core);
        }
        self.gate.0.leave();
        r
    }

    /// `f` on the heap as its owner, for the fast paths: `None` without calling `f` when an
    /// intruder is in, which the full path waits out. Remote frees wait for the full path
    /// to drain them (the owner's next slow path): an allocation cannot be handed a block
    /// that waits (it is still allocated), and a free checks [`may_wait`](Self::may_wait).
    /// Draining on every entry would drain a batch of one block per allocation whenever
    /// another thread frees as fast as this one allocates, each drain a round of cache
    /// misses on lines the other thread has just written.
    #[inline(always)]
    fn as_owner_quick<R>(
        &self,
        shared: &Shared,
        f: impl FnOnce(&mut HeapCore) -> Option<R>,
    ) -> Option<R> {
        if !self.gate.0.try_enter(shared.barrier) {
            return None;
        }
        // SAFETY: inside the gate as its owner; the reference ends before `leave`.
        let r = f(unsafe { self.core() });
        self.gate.0.leave();
        r
    }

    /// Whether `addr` may wait in this heap's remote frees: freed by another thread and not
    /// drained yet. The owner's fast free declines such a block, so the full path drains it
    /// first and reports the second free. Only a raised `pending` sends it to the bitmap: a
    /// drain leaves every bit still set covered by a raised flag, but for a push whose flag
    /// is still on its way, which races the owner's free of the same block and is judged at
    /// the next drain instead.
    #[inline(always)]
    fn may_wait(&self, addr: usize) -> bool {
        self.signals.0.pending.load(Ordering::Acquire) && self.waits(addr)
    }

    /// Whether `addr` waits in this heap's remote frees. Reads only what is written once, at
    /// publication, and the bitmap word.
    #[inline(never)]
    #[cold]
    fn waits(&self, addr: usize) -> bool {
        let remote = &self.remote.0;
        let base = remote.base.load(Ordering::Acquire);
        let off = addr.wrapping_sub(base as usize);
        if base.is_null() || off >= remote.len.load(Ordering::Relaxed) {
            return false;
        }
        // SAFETY: `base` is published, so `frees` is written (and never changes after).
        let frees = unsafe { (*remote.frees.get()).assume_init_ref() };
        frees.holds(off / GRANULE)
    }

    /// Runs `f` on the heap from outside: drained first; an orphan is trimmed now and then after.
    fn intruding<R>(&self, shared: &Shared, f: impl FnOnce(&mut HeapCore) -> R) -> R {
        let _in = self.gate.0.intrude(shared.barrier, this_thread());
        // SAFETY: inside the gate as an intruder; the reference ends before `_in` drops.
        let core = unsafe { self.core() };
        self.drain(core);
        let r = f(core);
        if self.remote.0.base.load(Ordering::Relaxed).is_null() {
            self.publish(shared, core);
        }
        if self.gate.0.owner() == 0 {
            // SAFETY: inside the gate, which is what guards the count.
            let since = unsafe { &mut *self.remote.0.since_trim.get() };
            *since += 1;
            if *since >= ORPHAN_TRIM_EVERY || core.holds_no_block() {
                *since = 0;
                core.trim();
            }
        }
        r
    }

    /// Gives the heap up (thread exit): drained, trimmed, an orphan. The caller owns it and
    /// holds the registry's lock.
    fn give_up(&self) {
        let held = self.gate.0.begin_intrusion();
        held.set_owner(0);
        // The exit's half of the Dekker pair with a pusher (see the module docs).
        fence(Ordering::SeqCst);
        // SAFETY: inside the gate: the owner is this thread, which is not inside the heap.
        let core = unsafe { self.core() };
        self.drain(core);
        core.trim();
        drop(held);
    }

    /// Frees every granule other threads pushed, through the ordinary free.
    #[cold]
    #[inline(never)]
    fn drain(&self, core: &mut HeapCore) {
        if !self.signals.0.pending.swap(false, Ordering::Acquire) {
            return;
        }
        let base = self.remote.0.base.load(Ordering::Relaxed);
        // SAFETY: `pending` is raised only after a push, which needs the published `frees`.
        let frees = unsafe { (*self.remote.0.frees.get()).assume_init_ref() };
        frees.drain(|g| {
            // SAFETY: `push` takes only granules inside the reservation that `base` starts.
            let p = unsafe { NonNull::new_unchecked(base.add(g * GRANULE)) };
            if let Err(e) = Backend::free(core, p) {
                if e.is_misuse() {
                    crate::os::abort::misuse(HeapCore::NAME, &e);
                }
            }
        });
        core.trim_if_empty();
    }

    /// Publishes the heap's reservation, once it has one, with a bitmap for it.
    #[cold]
    #[inline(never)]
    fn publish(&self, shared: &Shared, core: &HeapCore) {
        let Some((base, len)) = core.reservation() else {
            return;
        };
        // SAFETY: inside the gate, which is what guards `refused` and `bitmap`.
        let refused = unsafe { &mut *self.remote.0.refused.get() };
        if *refused {
            return;
        }
        let granules = len / GRANULE;
        let Ok(region) = Region::reserve(bitmap_bytes(granules)) else {
            *refused = true;
            return;
        };
        // SAFETY: a fresh zeroed, page-aligned mapping of `bitmap_bytes(granules)` bytes, kept
        // in this node until it is dropped and accessed only through the bitmap. `frees` is
        // written before `base` publishes it, and only read after.
        unsafe {
            (*self.remote.0.frees.get()).write(RemoteFrees::new(region.base().as_ptr(), granules));
            *self.remote.0.bitmap.get() = Some(region);
        }
        self.remote.0.len.store(len, Ordering::Relaxed);
        self.remote.0.base.store(base.as_ptr(), Ordering::Release);
        let first = base.as_ptr() as usize >> HINT_SHIFT;
        let last = (base.as_ptr() as usize + (len - 1)) >> HINT_SHIFT;
        for i in first..=last.min(HINTS - 1) {
            // SAFETY: `i < HINTS`, inside the zeroed table, reached only through atomics.
            let entry = unsafe { &*shared.spans.add(i) };
            entry.store(core::ptr::from_ref(self).cast_mut(), Ordering::Release);
        }
    }

    /// `addr`'s offset in this heap's published reservation, if it lies there.
    #[inline(always)]
    fn offset(&self, addr: usize) -> Option<usize> {
        let base = self.remote.0.base.load(Ordering::Acquire);
        let off = addr.wrapping_sub(base as usize);
        (!base.is_null() && off < self.remote.0.len.load(Ordering::Relaxed)).then_some(off)
    }

    /// Frees `p`, at `off` in this heap's reservation, from a thread that does not own the
    /// heap: pushed for the owner to validate (see the module docs).
    fn free_remote(&self, shared: &Shared, p: NonNull<u8>, off: usize) -> Result<(), Error> {
        if off % GRANULE != 0 || self.gate.0.owner() == 0 {
            // No block starts off a granule: the heap itself reports it. An orphan has no
            // owner to drain it, and an intrusion on it needs no barrier.
            return self.intruding(shared, |c| free_on(c, p));
        }
        // SAFETY: `offset` found the reservation published, so `frees` is written.
        let frees = unsafe { (*self.remote.0.frees.get()).assume_init_ref() };
        match frees.push(off / GRANULE) {
            Pushed::Queued => Ok(()),
            Pushed::First => {
                self.signals.0.pending.store(true, Ordering::Release);
                // The pusher's half of the Dekker pair with `give_up`.
                fence(Ordering::SeqCst);
                if self.gate.0.owner() == 0 {
                    self.intruding(shared, |_| ());
                }
                Ok(())
            }
            Pushed::AlreadyPending => {
                self.signals.0.misuses.fetch_add(1, Ordering::Relaxed);
                Err(Error::DoubleFree {
                    addr: p.as_ptr() as usize,
                })
            }
        }
    }

    /// The heap's counters, with the double frees refused at the push.
    fn stats(&self, core: &HeapCore) -> Stats {
        let mut s = core.stats();
        s.misuses_caught += self.signals.0.misuses.load(Ordering::Relaxed);
        s
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
                match n.gate.0.owner() {
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
                    // An orphan's gate: no owner is inside, so no barrier is needed.
                    n.gate.0.begin_intrusion().set_owner(me);
                    n
                }
                None => {
                    let core = HeapCore::new(self.config)?;
                    let next = self.heaps.load(Ordering::Relaxed);
                    let n = map_home(|home| Node::new(core, me, next, home))?;
                    self.heaps.store(n.as_ptr(), Ordering::Release);
                    // SAFETY: just published; it lives as long as `self`.
                    unsafe { &*n.as_ptr() }
                }
            }
        };
        // During thread teardown a std thread-local cache may be gone; every call then comes
        // here, which is slower but finds the same heap.
        current::set((self.id, node));
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

    /// The calling thread's cached heap on this registry, if any.
    #[inline(always)]
    fn cached(&self) -> Option<&Node> {
        let (id, n) = current::get();
        // SAFETY: the cache names a node of this registry (the ids are unique), alive while
        // `self` is.
        (id == self.id).then(|| unsafe { &*n })
    }

    /// Entry `addr >> HINT_SHIFT` of `table`, if the table covers it.
    #[inline(always)]
    fn entry(table: *const AtomicPtr<Node>, addr: usize) -> Option<&'static AtomicPtr<Node>> {
        let i = addr >> HINT_SHIFT;
        // SAFETY: `i < HINTS`, inside the table's zeroed mapping, which lives as long as the
        // registry (the caller's borrow of it bounds every use) and is reached only through
        // atomics.
        (i < HINTS).then(|| unsafe { &*table.add(i) })
    }

    /// The heap whose published break reservation holds `addr`, and the offset there.
    #[inline(always)]
    fn span_owner(&self, addr: usize) -> Option<(&Node, usize)> {
        let entry = Self::entry(self.spans, addr)?;
        // SAFETY: an entry is null or a published node of this registry (see `publish`),
        // alive while `self` is.
        if let Some(n) = unsafe { entry.load(Ordering::Acquire).as_ref() } {
            if let Some(off) = n.offset(addr) {
                return Some((n, off));
            }
        }
        self.span_scan(addr)
    }

    /// As `span_owner`, over every heap: for a chunk two reservations share, or none covers.
    #[cold]
    #[inline(never)]
    fn span_scan(&self, addr: usize) -> Option<(&Node, usize)> {
        self.heaps()
            .find_map(|n| n.offset(addr).map(|off| (n, off)))
    }

    /// Runs `f` on the heap that owns `p`, or, if none does, on the calling thread's heap
    /// (or any), whose validation then reports `p` as foreign; a block in another thread's
    /// break goes to `in_span` instead. `None`: there is no heap yet.
    #[inline(always)]
    fn route<R, F: FnOnce(&mut HeapCore) -> R>(
        &self,
        p: NonNull<u8>,
        f: F,
        in_span: impl FnOnce(&Node, usize, F) -> R,
    ) -> Option<R> {
        let addr = p.as_ptr() as usize;
        let mine = self.cached();
        let mut f = Some(f);
        if let Some(n) = mine {
            let done = n.as_owner(self, |c| {
                if c.owns(addr) {
                    f.take().map(|f| f(c))
                } else {
                    None
                }
            });
            if done.is_some() {
                return done;
            }
        }
        let f = f?;
        match self.span_owner(addr) {
            Some((n, off)) => Some(in_span(n, off, f)),
            None => self.walk(addr, mine, f),
        }
    }

    /// `f` on the heap that owns `p` (another thread's, entered by intrusion).
    fn with_owner<R>(&self, p: NonNull<u8>, f: impl FnOnce(&mut HeapCore) -> R) -> Option<R> {
        self.route(p, f, |n, _, f| n.intruding(self, f))
    }

    /// Frees `p` on whichever heap owns it: `Some(Some(()))` if it was freed, `Some(None)`
    /// with the error in `err`.
    #[inline(always)]
    fn free(&self, p: NonNull<u8>, err: &ErrorSlot) -> Option<Option<()>> {
        self.route(
            p,
            |c| err.keep(free_on(c, p)),
            |n, off, _| err.keep(n.free_remote(self, p, off)),
        )
    }

    /// For an address in no published reservation (a mapped block, or foreign): the heap the
    /// owner hint names, then every heap, each asked under an intrusion; else `mine`.
    #[cold]
    #[inline(never)]
    fn walk<R>(
        &self,
        addr: usize,
        mine: Option<&Node>,
        f: impl FnOnce(&mut HeapCore) -> R,
    ) -> Option<R> {
        let mut f = Some(f);
        let mut try_on = |n: &Node| {
            n.intruding(self, |c| {
                if c.owns(addr) {
                    f.take().map(|f| f(c))
                } else {
                    None
                }
            })
        };
        let hint = Self::entry(self.hints, addr);
        // SAFETY: a hint is null or a node of this registry (stored below), alive while `self`
        // is; the acquire load pairs with the release store, after which the node was
        // published to the storing thread.
        let hinted = hint.and_then(|h| unsafe { h.load(Ordering::Acquire).as_ref() });
        let skip = |n: &Node| mine.is_some_and(|m| core::ptr::eq(m, n));
        if let Some(n) = hinted.filter(|&n| !skip(n)) {
            if let Some(r) = try_on(n) {
                return Some(r);
            }
        }
        for n in self.heaps() {
            if skip(n) || hinted.is_some_and(|h| core::ptr::eq(h, n)) {
                continue;
            }
            if let Some(r) = try_on(n) {
                if let Some(h) = hint {
                    h.store(core::ptr::from_ref(n).cast_mut(), Ordering::Release);
                }
                return Some(r);
            }
        }
        let f = f.take()?;
        match mine {
            Some(n) => Some(n.as_owner(self, f)),
            None => Some(self.heaps().next()?.intruding(self, f)),
        }
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

/// Runs as a thread exits: its heaps on every global heap are given up (see the module
/// docs). The cache is cleared first, so an allocation after this (a later destructor) joins
/// again rather than using a heap another thread may adopt.
extern "C" fn thread_exit(_: *mut libc::c_void) {
    current::clear();
    let me = this_thread();
    let _list = FORK_LIST.lock();
    // SAFETY: the fork list's lock is held.
    unsafe {
        each_global(|shared| {
            let _registry = shared.registry.lock();
            for n in shared.heaps() {
                if n.gate.0.owner() == me {
                    n.give_up();
                }
            }
        });
    }
}

/// Runs in the forking thread before `fork()`: takes the fork list's lock and every
/// registry's, then intrudes on every heap (all marked, one barrier, then each owner waited
/// out), so that no other thread is inside any heap when the process is copied. The handlers
/// do not allocate.
#[cfg_attr(miri, allow(dead_code))]
extern "C" fn before_fork() {
    core::mem::forget(FORK_LIST.lock());
    // SAFETY: the list's lock is held (its guard forgotten above).
    unsafe {
        each_global(|shared| {
            core::mem::forget(shared.registry.lock());
            for n in shared.heaps() {
                core::mem::forget(n.gate.0.begin_intrusion());
            }
        });
    }
    // The process's barrier also issues `fence(SeqCst)`, which is what symmetric gates need.
    Barrier::for_process().intruder_side();
    // SAFETY: as above.
    unsafe {
        each_global(|shared| {
            for n in shared.heaps() {
                n.gate.0.wait_out();
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
            // SAFETY: `before_fork` holds this gate's intrusion, its guard forgotten.
            unsafe {
                if child && n.gate.0.owner() != me {
                    n.gate.0.set_owner_held(0);
                }
                Intrusion::force_end(&n.gate.0);
            }
        }
        // SAFETY: as above, for the registry's lock.
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
/// the heap that owns it, validated there. A block freed on a thread that does not own it is
/// validated when the owner next allocates or frees: a second free while the first waits is
/// an error at once, and a double free or interior pointer found then aborts with the one-line
/// report. When a thread exits its heap is kept for the next new thread, after giving its free
/// memory back to the OS; its live blocks stay valid.
///
/// It has the checked API of the other allocators too (`alloc`, `free`, `realloc`, ...,
/// returning [`Error`]s), which is what the C ABI (`strata-malloc`) is written on.
/// [`stats`](GlobalHeap::stats), [`check`](GlobalHeap::check) and
/// [`trim`](GlobalHeap::trim) cover every thread's heap, each entered in turn with its owner
/// held out, after the frees other threads made into it are drained, so the counts include
/// them (the totals are a sum over heaps, not one instant; `peak_bytes_in_use` is the sum of
/// the heaps' peaks).
///
/// **fork.** A child of a multi-threaded program inherits every lock as it was at the fork.
/// Fork handlers (`pthread_atfork`, registered on the first set-up) take every global heap's
/// locks and hold every thread's heap's owner out before the fork and release them in both processes afterwards, so the child finds
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
    /// Symmetric gates even where membarrier works (tests of both kinds).
    symmetric: bool,
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
            symmetric: false,
        }
    }

    /// This global heap with `fence(SeqCst)` on both sides of its gates.
    #[cfg(test)]
    const fn symmetric(mut self) -> GlobalHeap {
        self.symmetric = true;
        self
    }

    /// The registry, if set up.
    #[inline(always)]
    fn existing(&self) -> Option<&Shared> {
        // SAFETY: a published `Shared` lives until `self` is dropped, which cannot happen
        // while `&self` is borrowed.
        unsafe { self.shared.load(Ordering::Acquire).as_ref() }
    }

    /// The calling thread's heap, if it has one here already: the fast paths' way in.
    #[inline(always)]
    fn mine_existing(&self) -> Option<(&Shared, &Node)> {
        let shared = self.existing()?;
        Some((shared, shared.cached()?))
    }

    /// The common case of an allocation (a slot of the caller's current page for its size):
    /// no error to carry and nothing to set up; `None` with nothing changed otherwise.
    #[inline(always)]
    fn alloc_quick(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        if size == 0 {
            return None;
        }
        let (shared, node) = self.mine_existing()?;
        node.as_owner_quick(shared, |c| c.alloc_fast(size, align))
    }

    /// The common case of a free (an allocated slot of the caller's own heap, whose page
    /// stays where it is): `true` when `p` is freed; `false` with nothing changed, and the
    /// full path then judges `p`.
    #[inline(always)]
    fn free_quick(&self, p: NonNull<u8>) -> bool {
        self.mine_existing().is_some_and(|(shared, node)| {
            node.as_owner_quick(shared, |c| {
                (!node.may_wait(p.as_ptr() as usize) && c.free_fast(p)).then_some(())
            })
            .is_some()
        })
    }

    /// The calling thread's heap, setting up the registry and the heap first if needed.
    #[inline(always)]
    fn mine(&self) -> Result<(&Shared, &Node), Error> {
        let shared = match self.existing() {
            Some(s) => s,
            None => self.set_up()?,
        };
        {
            let (id, node) = current::get();
            if id == shared.id {
                // SAFETY: the cache names a node of this registry (the ids are unique), which
                // lives as long as the registry.
                return Ok((shared, unsafe { &*node }));
            }
        }
        Ok((shared, shared.join()?))
    }

    /// Runs `f` on the calling thread's heap, as its owner.
    #[inline(always)]
    fn reach<R>(&self, f: impl FnOnce(&mut HeapCore) -> R) -> Result<R, Error> {
        let (shared, node) = self.mine()?;
        Ok(node.as_owner(shared, f))
    }

    /// Builds the registry and publishes it; of two threads racing here, one wins and the
    /// other's is unmapped. Building only maps memory, so nothing here allocates.
    #[cold]
    #[inline(never)]
    fn set_up(&self) -> Result<&Shared, Error> {
        HeapCore::new(self.config)?;
        register_handlers();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (hint_table, hints) = map_table()?;
        let (span_table, spans) = map_table()?;
        let barrier = if self.symmetric {
            Barrier::Symmetric
        } else {
            Barrier::for_process()
        };
        let shared = map_home(|home| Shared {
            id,
            config: self.config,
            barrier,
            heaps: AtomicPtr::new(core::ptr::null_mut()),
            registry: SpinLock::new(()),
            next: UnsafeCell::new(core::ptr::null_mut()),
            hints,
            spans,
            _hint_table: hint_table,
            _span_table: span_table,
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
            s.heaps()
                .map(|n| n.intruding(s, HeapCore::trim))
                .sum::<usize>()
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
    #[inline(always)]
    pub fn alloc(&self, size: usize) -> Result<NonNull<u8>, Error> {
        match self.alloc_quick(size, 16) {
            Some(p) => Ok(p),
            None => self.alloc_in_full(size),
        }
    }

    /// `alloc` past its fast path.
    #[inline(never)]
    fn alloc_in_full(&self, size: usize) -> Result<NonNull<u8>, Error> {
        let err = ErrorSlot::new();
        let p = self.reach(|c| err.keep(api::alloc(c, size, 16)))?;
        err.result(p, || Error::oom(size, 0))
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
        let err = ErrorSlot::new();
        let p = self.reach(|c| err.keep(api::alloc(c, layout.size(), layout.align())))?;
        err.result(p, || Error::oom(layout.size(), 0))
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
        let err = ErrorSlot::new();
        let p = self.reach(|c| err.keep(api::calloc(c, count, size)))?;
        err.result(p, || Error::oom(count.saturating_mul(size), 0))
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
        let err = ErrorSlot::new();
        let p = self
            .existing()
            .and_then(|s| s.with_owner(ptr, |c| err.keep(api::realloc(c, ptr, new_size))))
            .flatten();
        err.result(p, || api::not_a_block(ptr))
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
    #[inline(always)]
    pub unsafe fn free(&self, ptr: NonNull<u8>) -> Result<(), Error> {
        if self.free_quick(ptr) {
            return Ok(());
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.free_in_full(ptr) }
    }

    /// `free` past its fast path.
    ///
    /// # Safety
    ///
    /// As [`free`](Self::free).
    #[inline(never)]
    unsafe fn free_in_full(&self, ptr: NonNull<u8>) -> Result<(), Error> {
        let err = ErrorSlot::new();
        let done = self.existing().and_then(|s| s.free(ptr, &err)).flatten();
        err.result(done, || api::not_a_block(ptr))
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
                add_all(&mut total, &n.intruding(s, |c| n.stats(c)));
            }
        }
        total
    }

    /// Verifies every invariant of every thread's heap, each drained and entered in turn.
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
                n.intruding(s, Backend::check)?;
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

impl GlobalHeap {
    /// `GlobalAlloc::alloc` past its fast path.
    #[inline(never)]
    fn global_alloc_in_full(&self, layout: Layout) -> *mut u8 {
        // The error is dropped: the trait's answer to a failed request is null.
        let err = ErrorSlot::new();
        self.reach(|c| err.keep(api::alloc_contained(c, layout.size(), layout.align())))
            .ok()
            .flatten()
            .map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }

    /// `GlobalAlloc::dealloc` past its fast path: a pointer that is not a live block aborts.
    #[inline(never)]
    fn global_dealloc_in_full(&self, p: NonNull<u8>, layout: Layout) {
        let err = ErrorSlot::new();
        let done = self.existing().and_then(|s| {
            s.route(
                p,
                |c| {
                    // `free_quick` has just declined `p` on the caller's own heap.
                    api::deallocate_in_full(c, p, layout);
                    c.trim_if_empty();
                    Some(())
                },
                |n, off, _| err.keep(n.free_remote(s, p, off)),
            )
        });
        match err.result(done.flatten(), || api::not_a_block(p)) {
            Ok(()) => {}
            Err(e) if !e.is_misuse() => {}
            Err(e) => crate::os::abort::misuse(HeapCore::NAME, &e),
        }
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
        match self.alloc_quick(layout.size(), layout.align()) {
            Some(p) => p.as_ptr(),
            None => self.global_alloc_in_full(layout),
        }
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
        if !self.free_quick(p) {
            self.global_dealloc_in_full(p, layout);
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
