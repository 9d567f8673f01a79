//! `SlabPool`: a size-class memory manager (slots in batches, bitmaps), with certain misuse
//! detection.
//!
//! Requests up to [`SlabPool::MAX_SIZE`] bytes are rounded up to a multiple of 16 (the size
//! class). Each size class owns a list of *batches*: a batch is `BATCH_SIZE` (16 KiB) of equal
//! slots plus a bitmap of which slots are taken. The classes themselves form a list in the order
//! they were first requested; the first request of a size creates its list, and a list whose
//! batches are all full gets a new batch.
//!
//! # Why it is built this way
//!
//! - **Fast path.** `size -> class` is one shift; each class keeps a list of its batches that
//!   have a free slot, and allocation takes the lowest free slot of the head batch with
//!   `trailing_ones` on one bitmap word, starting from a per-batch hint word.
//! - **Certain misuse detection.** Batches are `BATCH_SIZE`-aligned, so `addr >> BATCH_SHIFT`
//!   names the batch a pointer would belong to. That frame number is looked up in an
//!   out-of-band hash table of the pool's batches (O(1)) *before* anything else: a foreign
//!   pointer is rejected without reading memory the pool does not own. Bitmaps live out of band
//!   too, so no slot contents (and no magic number) are ever trusted, and nothing is written
//!   before the pointer has been validated. Slots are taken lowest-first, so a batch's high-water
//!   mark tells a slot that was handed out and freed (double free) from one never handed out.
//! - **Sources.** Batches come from one lazily reserved [`Region`] (the default, via
//!   [`SlabPool::new`]) or from any `allocator_api2` [`Allocator`] (via [`SlabPool::new_in`]);
//!   an allocator that cannot align to `BATCH_SIZE` gets asked for a larger block instead, and
//!   the aligned batch is carved out of it.
//! - **Give-back.** Each class keeps at most one empty batch in reserve; a second batch that
//!   becomes empty is given back at once (its pages released to the OS for a Region, deallocated
//!   for an allocator), so an alloc/free pair on a batch boundary never thrashes. A reserve is
//!   only a cache: when the source is out of memory, the other classes' reserves are given back
//!   and the source asked again, so a pool with a limit that was emptied serves every class.
//!
//! # Invariants kept here (checked by [`SlabPool::check`])
//!
//! - Every live batch is registered under its frame number and nothing else is registered.
//! - A class's "all" list holds exactly its live batches, in creation order; its "avail" list
//!   holds exactly those with a free slot; `Class::empty` counts its batches with no slot taken
//!   and is at most `EMPTY_RESERVE` after every public call.
//! - The counters (`live_blocks`, `free_blocks`, `bytes_in_use`, `free_bytes`,
//!   `managed_bytes`) equal the sums over the live batches.
//! - Vacant table entries are on the vacant list and on no class list.
//! - Batch-level invariants are in `batch.rs`, registry invariants in `registry.rs`.

mod batch;
mod registry;
mod snapshot;

use core::cell::UnsafeCell;
use core::fmt;
use core::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator, Global, Layout};
use static_assertions::const_assert;

pub use snapshot::SlabSnapshot;

use crate::os::region::reserve_halving;
use crate::{Error, Region, Stats};
use batch::{Batch, VACANT};
use registry::Registry;
use snapshot::{BatchView, ListView};

const BATCH_SHIFT: u32 = 14;
/// Bytes in one batch; batches are aligned to this.
const BATCH_SIZE: usize = 1 << BATCH_SHIFT;
/// Slot sizes are multiples of this, and every slot is aligned to it.
const STEP: usize = 16;
const STEP_SHIFT: u32 = 4;
/// The largest slot.
const MAX_SLOT: usize = 1024;
const CLASSES: usize = MAX_SLOT / STEP;
/// Bitmap words per batch: enough for the smallest slot size.
const WORDS: usize = BATCH_SIZE / STEP / 64;
/// End of an index list.
const NIL: u32 = u32::MAX;
/// Empty batches each class keeps instead of giving them back.
const EMPTY_RESERVE: u32 = 1;
/// Address space the default pool reserves (lazily, with `MAP_NORESERVE`): it costs nothing
/// until batches are touched. Miri materialises mappings, so it gets a small one.
const DEFAULT_RESERVE: usize = if cfg!(miri) { 2 << 20 } else { 4 << 30 };
/// The smallest reservation a refused one is retried down to (or the limit, if smaller).
const RESERVE_FLOOR: usize = 16 << 20;

const_assert!(STEP == 1 << STEP_SHIFT);
const_assert!(CLASSES <= VACANT as usize);
// The reciprocals travel in the registry's `u32` tag.
const_assert!((1u64 << 32) / (STEP as u64) < u32::MAX as u64);
const_assert!(BATCH_SIZE % MAX_SLOT == 0);
// Batch metadata is kept small enough that a lookup touches few cache lines.
const_assert!(core::mem::size_of::<Batch>() <= 192);

const fn layout(size: usize, align: usize) -> Layout {
    match Layout::from_size_align(size, align) {
        Ok(l) => l,
        Err(_) => panic!("invalid source layout"),
    }
}

/// What a batch is asked for from an `Allocator` source, best first: a block that is exactly
/// one aligned batch; else, for sources with a smaller alignment limit (the crate's Heap and
/// Arena stop at 4096, some at 16), a larger block with an aligned batch carved out of it,
/// wasting up to `BATCH_SIZE - align` bytes. `Batch::source` records which one a batch used.
const SOURCE_LAYOUTS: [Layout; 3] = [
    layout(BATCH_SIZE, BATCH_SIZE),
    layout(2 * BATCH_SIZE - 4096, 4096),
    layout(2 * BATCH_SIZE - STEP, STEP),
];

/// `slot = (offset * RECIP[class]) >> 32` is exact for every offset that is a multiple of the
/// slot size and below `BATCH_SIZE`: with `r = 2^32 / size + e`, `0 < e <= 1`, the error term
/// `offset * e / size * size` stays below `2^32`. It replaces a division on the free path.
const RECIP: [u64; CLASSES] = {
    let mut r = [0u64; CLASSES];
    let mut c = 0;
    while c < CLASSES {
        r[c] = (1u64 << 32) / ((c as u64 + 1) * STEP as u64) + 1;
        c += 1;
    }
    r
};

#[inline]
const fn slot_size(class: usize) -> usize {
    (class + 1) << STEP_SHIFT
}

/// The class serving `size` bytes aligned to `align` (a power of two), or why none does.
#[inline]
fn class_for(size: usize, align: usize) -> Result<usize, &'static str> {
    if size > MAX_SLOT {
        return Err("larger than the largest slot (1024 bytes)");
    }
    if align > MAX_SLOT {
        return Err("alignment larger than the largest slot (1024 bytes)");
    }
    // Slots of a multiple of `align` are all aligned to it, since batches are BATCH_SIZE-aligned.
    let align = align.max(STEP);
    let rounded = (size.max(1) + align - 1) & !(align - 1);
    Ok((rounded - 1) >> STEP_SHIFT)
}

/// Per-class list heads.
#[derive(Clone, Copy, Debug)]
struct Class {
    /// Head of the list of batches with a free slot; allocation takes from here.
    avail: u32,
    /// First and last of all the class's batches, in creation order.
    first: u32,
    last: u32,
    batches: u32,
    /// Batches of this class with no slot taken.
    empty: u32,
    /// Whether the size was ever requested (it then has a place in the list of lists).
    listed: bool,
}

const NO_CLASS: Class = Class {
    avail: NIL,
    first: NIL,
    last: NIL,
    batches: 0,
    empty: 0,
    listed: false,
};

/// Batch frames carved from one Region reserved on first use.
#[derive(Debug)]
struct Frames {
    region: Option<Region>,
    /// Bytes of batches the region may hold.
    limit: usize,
    /// Offsets of frames given back (pages released) and ready for reuse.
    free: Vec<usize>,
}

impl Frames {
    fn take(&mut self) -> Result<NonNull<u8>, Error> {
        let region = match &mut self.region {
            Some(region) => region,
            None => {
                // Reserved on first use, so `new()` can stay infallible and an unused pool
                // costs no mapping. The padding puts the first frame on a batch boundary.
                // Under an address-space limit the pool settles for a smaller reservation
                // (and limit) rather than failing every request.
                let floor = self.limit.min(RESERVE_FLOOR) + BATCH_SIZE;
                let (mut region, got) =
                    reserve_halving(self.limit + BATCH_SIZE, floor, Region::reserve)?;
                self.limit = got - BATCH_SIZE;
                let base = region.base().as_ptr().addr();
                region.grow(base.wrapping_neg() & (BATCH_SIZE - 1))?;
                self.region.insert(region)
            }
        };
        if let Some(off) = self.free.pop() {
            // SAFETY: `off` was a frame handed out below the break, which never moves down.
            return Ok(unsafe { region.base().add(off) });
        }
        let pad = region.base().as_ptr().addr().wrapping_neg() & (BATCH_SIZE - 1);
        if region.brk() - pad + BATCH_SIZE > self.limit {
            return Err(Error::oom(BATCH_SIZE, 0));
        }
        region.grow(BATCH_SIZE)
    }

    /// Takes a frame back; returns the bytes whose pages went back to the OS.
    fn give(&mut self, base: NonNull<u8>) -> usize {
        let Some(region) = self.region.as_ref() else {
            return 0;
        };
        let off = base.as_ptr().addr() - region.base().as_ptr().addr();
        self.free.push(off);
        // A refused release only leaves the pages resident; the frame is reusable either way.
        // SAFETY: both callers give back a frame with no live slot: a retired batch (empty,
        // off every list) or a frame just taken and never used. Nothing reads its bytes before
        // the frame is handed out again.
        unsafe { region.release(off, BATCH_SIZE) }.unwrap_or(0)
    }
}

/// Everything behind the pool's `UnsafeCell`.
struct Inner {
    classes: [Class; CLASSES],
    /// Class indices in the order their size was first requested: the list of lists.
    order: Vec<u8>,
    batches: Vec<Batch>,
    /// Head of the vacant entries of `batches`, linked through `Batch::next`.
    vacant: u32,
    registry: Registry,
    /// `Some` when batches come from a Region.
    frames: Option<Frames>,
    /// Counters kept as they go. The hot paths touch only `allocations`, `frees` and
    /// `bytes_in_use`/`peak_bytes_in_use`; `live_blocks`, `free_blocks` and `free_bytes` are
    /// derived in `Inner::stats` from those and the totals below.
    stats: Stats,
    /// Slots in all live batches, and their bytes.
    slots_total: usize,
    slot_bytes_total: usize,
    /// Slots still taken when `clear` forgot them (they are neither live nor freed).
    forgotten: u64,
}

/// A size-class slab allocator: slots of 16 to 1024 bytes in batches tracked by bitmaps.
///
/// Every slot is 16-byte aligned. Requests with a larger alignment (up to 1024) are served
/// from a class whose slot size is a multiple of it. Larger requests are an `Err`: put a
/// general-purpose allocator behind it for those.
///
/// Double frees, foreign pointers and pointers into the middle of a slot are detected with
/// certainty from the batch table and bitmaps, before anything is written, and the pool stays
/// usable afterwards. `&SlabPool` implements allocator-api2's [`Allocator`], so collections can
/// live in it.
///
/// The pool uses interior mutability: every method takes `&self`. It is `Send` but not `Sync`.
///
/// `A` is the allocator batches come from when the pool is made with [`SlabPool::new_in`];
/// [`SlabPool::new`] takes them from a [`Region`] instead (and `A` stays the unused `Global`).
///
/// # Example
///
/// ```
/// use strata_alloc::{Error, SlabPool};
///
/// let pool = SlabPool::new();
/// let p = pool.alloc(12)?;                 // a 16-byte slot
/// assert_eq!(pool.usable_size(p)?, 16);
/// // SAFETY: `p` came from this pool and is not used after this.
/// unsafe { pool.free(p)? };
/// // SAFETY: a second free is the misuse being shown; the pool validates it.
/// assert!(matches!(unsafe { pool.free(p) }, Err(Error::DoubleFree { .. })));
/// pool.check()?;
/// # Ok::<(), Error>(())
/// ```
pub struct SlabPool<A: Allocator = Global> {
    inner: UnsafeCell<Inner>,
    /// Where batches come from; `None` when they come from `Inner::frames`. Kept outside the
    /// cell so that calls into it happen with no borrow of `Inner` live.
    source: Option<A>,
}

// SAFETY: a SlabPool owns its batches (a Region, or blocks of `A`) and its metadata outright;
// moving it to another thread moves that ownership, and `A: Send` lets the source go too. It is
// not Sync (UnsafeCell), so the interior mutability is never reached from two threads.
unsafe impl<A: Allocator + Send> Send for SlabPool<A> {}

impl SlabPool {
    /// The largest request served, in bytes (and the largest alignment).
    ///
    /// ```
    /// use strata_alloc::SlabPool;
    /// let pool = SlabPool::new();
    /// assert!(pool.alloc(SlabPool::MAX_SIZE).is_ok());
    /// assert!(pool.alloc(SlabPool::MAX_SIZE + 1).is_err());
    /// ```
    pub const MAX_SIZE: usize = MAX_SLOT;

    /// Bytes in one batch. Batches are aligned to this.
    ///
    /// ```
    /// assert!(strata_alloc::SlabPool::BATCH_SIZE.is_power_of_two());
    /// ```
    pub const BATCH_SIZE: usize = BATCH_SIZE;

    /// An empty pool taking its batches from a Region it reserves on first use (4 GiB of address
    /// space with `MAP_NORESERVE`; memory is only committed as batches are touched).
    ///
    /// ```
    /// let pool = strata_alloc::SlabPool::new();
    /// assert_eq!(pool.stats().managed_bytes, 0);
    /// let p = pool.alloc(100)?;
    /// assert_eq!(pool.stats().managed_bytes, strata_alloc::SlabPool::BATCH_SIZE);
    /// # // SAFETY: the pointer came from this pool and is freed once.
    /// # unsafe { pool.free(p)? };
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn new() -> SlabPool {
        SlabPool::with_capacity(DEFAULT_RESERVE)
    }

    /// Like [`new`](Self::new), but the Region holds at most `bytes` of batches (rounded up to
    /// whole batches, at least one). Allocation past that is [`Error::OutOfMemory`].
    ///
    /// ```
    /// use strata_alloc::{Error, SlabPool};
    ///
    /// let pool = SlabPool::with_capacity(SlabPool::BATCH_SIZE);  // one batch
    /// let big = pool.alloc(1024)?;                              // class 1024: 16 slots
    /// assert!(matches!(pool.alloc(16), Err(Error::OutOfMemory { .. }))); // needs a 2nd batch
    /// # // SAFETY: the pointer came from this pool and is freed once.
    /// # unsafe { pool.free(big)? };
    /// # Ok::<(), Error>(())
    /// ```
    pub fn with_capacity(bytes: usize) -> SlabPool {
        let limit = bytes
            .max(1)
            .checked_next_multiple_of(BATCH_SIZE)
            .unwrap_or(usize::MAX & !(BATCH_SIZE - 1))
            .min(isize::MAX as usize / 2);
        SlabPool::build(
            Some(Frames {
                region: None,
                limit,
                free: Vec::new(),
            }),
            None,
        )
    }
}

impl Default for SlabPool {
    fn default() -> SlabPool {
        SlabPool::new()
    }
}

impl<A: Allocator> SlabPool<A> {
    /// An empty pool taking its batches from `alloc`: `BATCH_SIZE` blocks aligned to
    /// `BATCH_SIZE`, or, from allocators that refuse that alignment (the crate's Heap and Arena
    /// stop at 4096), a block of up to twice that with an aligned batch carved out of it. They go
    /// back to `alloc` when given back, on [`clear`](Self::clear) and when the pool drops.
    ///
    /// ```
    /// use allocator_api2::alloc::Global;
    /// use strata_alloc::SlabPool;
    ///
    /// let pool = SlabPool::new_in(Global);
    /// let p = pool.alloc(48)?;
    /// assert_eq!(pool.usable_size(p)?, 48);
    /// # // SAFETY: the pointer came from this pool and is freed once.
    /// # unsafe { pool.free(p)? };
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn new_in(alloc: A) -> SlabPool<A> {
        SlabPool::build(None, Some(alloc))
    }

    fn build(frames: Option<Frames>, source: Option<A>) -> SlabPool<A> {
        SlabPool {
            inner: UnsafeCell::new(Inner {
                classes: [NO_CLASS; CLASSES],
                order: Vec::new(),
                batches: Vec::new(),
                vacant: NIL,
                registry: Registry::default(),
                frames,
                stats: Stats::default(),
                slots_total: 0,
                slot_bytes_total: 0,
                forgotten: 0,
            }),
            source,
        }
    }

    /// The pool's metadata.
    ///
    /// # Safety
    ///
    /// No other reference obtained from this function may be live while the returned one is
    /// used. Callers take it once per public call and do not call user code or another public
    /// method while using it; the pool is `!Sync`, so no other thread can reach the cell.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    unsafe fn inner(&self) -> &mut Inner {
        // SAFETY: exclusivity is the caller's contract (see above).
        unsafe { &mut *self.inner.get() }
    }

    /// Allocates a slot of at least `size` bytes, 16-byte aligned (like `malloc`). A request of
    /// 0 bytes gets a 16-byte slot, which must be freed like any other.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLayout`] for more than [`SlabPool::MAX_SIZE`] bytes;
    /// [`Error::OutOfMemory`] / [`Error::Os`] if no batch could be had. Nothing changes.
    ///
    /// ```
    /// let pool = strata_alloc::SlabPool::new();
    /// let p = pool.alloc(28)?;
    /// assert_eq!(p.as_ptr() as usize % 16, 0);
    /// assert_eq!(pool.usable_size(p)?, 32);
    /// assert!(pool.alloc(4096).is_err());
    /// # // SAFETY: the pointer came from this pool and is freed once.
    /// # unsafe { pool.free(p)? };
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    #[inline]
    pub fn alloc(&self, size: usize) -> Result<NonNull<u8>, Error> {
        let class = size.wrapping_sub(1) >> STEP_SHIFT;
        if class < CLASSES {
            // SAFETY: the only borrow of Inner in this call; `take` calls no user code.
            if let Some(p) = unsafe { self.inner() }.take(class) {
                return Ok(p);
            }
        }
        self.alloc_slow(size, STEP).map(|(p, _)| p)
    }

    /// Allocates a slot for `layout`: the smallest slot size that holds `layout.size()` and is a
    /// multiple of `layout.align()`, so the slot is aligned to it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLayout`] when the size or alignment exceeds [`SlabPool::MAX_SIZE`] (or the
    /// size rounded up to the alignment does); [`Error::OutOfMemory`] / [`Error::Os`] if no batch
    /// could be had.
    ///
    /// ```
    /// use std::alloc::Layout;
    ///
    /// let pool = strata_alloc::SlabPool::new();
    /// let p = pool.alloc_layout(Layout::from_size_align(40, 64).unwrap())?;
    /// assert_eq!(p.as_ptr() as usize % 64, 0);
    /// assert_eq!(pool.usable_size(p)?, 64);
    /// assert!(pool.alloc_layout(Layout::from_size_align(8, 4096).unwrap()).is_err());
    /// # // SAFETY: the pointer came from this pool and is freed once.
    /// # unsafe { pool.free(p)? };
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    #[inline]
    pub fn alloc_layout(&self, layout: Layout) -> Result<NonNull<u8>, Error> {
        if layout.align() <= STEP {
            self.alloc(layout.size().max(1))
        } else {
            self.alloc_slow(layout.size(), layout.align())
                .map(|(p, _)| p)
        }
    }

    /// Validates the request, then takes a slot, making a new batch if the class has no free
    /// slot. Returns the slot and its size.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, size: usize, align: usize) -> Result<(NonNull<u8>, usize), Error> {
        let class = match class_for(size, align) {
            Ok(c) => c,
            Err(reason) => {
                // SAFETY: the only borrow of Inner in this call.
                unsafe { self.inner() }.stats.failed_requests += 1;
                return Err(Error::InvalidLayout {
                    size,
                    align,
                    reason,
                });
            }
        };
        // SAFETY: the only live borrow of Inner; it ends before `new_batch` takes its own.
        if let Some(p) = unsafe { self.inner() }.take(class) {
            return Ok((p, slot_size(class)));
        }
        self.new_batch(class, size)?;
        // SAFETY: the borrows taken inside `new_batch` have ended.
        let inner = unsafe { self.inner() };
        match inner.take(class) {
            Some(p) => Ok((p, slot_size(class))),
            None => Err(Error::Corrupted {
                addr: 0,
                what: "a new batch had no free slot",
            }),
        }
    }

    /// Gets a batch from the source and puts it at the head of `class`'s lists.
    #[cold]
    #[inline(never)]
    fn new_batch(&self, class: usize, size: usize) -> Result<(), Error> {
        // Out of memory, the empty batches other classes keep in reserve are given back and
        // the source asked once more: an emptied pool serves every class again.
        let (base, raw, source) = match self.take_frame()? {
            Some(found) => found,
            None if self.give_back_reserves(class) => match self.take_frame()? {
                Some(found) => found,
                None => return Err(self.fail(Error::oom(size, 0))),
            },
            None => return Err(self.fail(Error::oom(size, 0))),
        };
        // SAFETY: the only live borrow of Inner.
        let inner = unsafe { self.inner() };
        if inner.install(class, base, raw, source) {
            return Ok(());
        }
        // The source handed out a frame the pool already has: give it straight back.
        let err = Error::Corrupted {
            addr: base.as_ptr().addr(),
            what: "the batch source handed out memory the pool already holds",
        };
        match &self.source {
            // SAFETY: `raw` came from `a.allocate(SOURCE_LAYOUTS[source])` just above and is
            // not in use.
            Some(a) => unsafe { a.deallocate(raw, SOURCE_LAYOUTS[source as usize]) },
            None => {
                let _ = inner.frames.as_mut().map(|f| f.give(base));
            }
        }
        Err(self.fail(err))
    }

    /// A batch frame from the source: the batch, the block it was carved from and the index of
    /// the block's layout; `None` if the source is out of memory.
    fn take_frame(&self) -> Result<Option<Frame>, Error> {
        if let Some(a) = &self.source {
            // No borrow of Inner is live while the source runs, so a source that calls back
            // into this pool cannot alias it.
            return Ok(carve(a));
        }
        // SAFETY: the only live borrow of Inner; Region calls no user code.
        let inner = unsafe { self.inner() };
        let Some(frames) = inner.frames.as_mut() else {
            return Err(self.fail(Error::Corrupted {
                addr: 0,
                what: "a pool with no source allocator has no Region",
            }));
        };
        match frames.take() {
            Ok(p) => {
                inner.stats.bytes_from_os += BATCH_SIZE as u64;
                Ok(Some((p, p, 0)))
            }
            Err(Error::OutOfMemory { .. }) => Ok(None),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Gives back the empty batches that classes other than `class` keep in reserve (to the
    /// Region's free frames, or to the source allocator). Returns whether there was any.
    #[cold]
    fn give_back_reserves(&self, class: usize) -> bool {
        // SAFETY: the only live borrow of Inner; it ends before the source runs.
        let (retired, blocks) = unsafe { self.inner() }.retire_reserves(class);
        if let Some(a) = &self.source {
            for (raw, layout) in blocks {
                // SAFETY: `raw` was allocated by `a` with `layout`; its batch was empty and has
                // been unlinked and unregistered, so nothing of it is handed out again.
                unsafe { a.deallocate(raw, layout) };
            }
        }
        retired > 0
    }

    /// Counts a failed request and passes its error on.
    fn fail(&self, err: Error) -> Error {
        // SAFETY: the only live borrow of Inner at every call site.
        unsafe { self.inner() }.stats.failed_requests += 1;
        err
    }

    /// Frees a slot. The pointer is validated from the batch table and bitmaps before anything
    /// is written; on an error nothing changes and the pool stays usable.
    ///
    /// # Errors
    ///
    /// [`Error::DoubleFree`] if the slot was handed out and already freed (and its batch is still
    /// held: a slot in a batch that was given back is no longer the pool's, see below);
    /// [`Error::InvalidPointer`] if `ptr` is not in any batch of this pool, points inside a slot
    /// rather than at its start, or names a slot never handed out.
    ///
    /// # Safety
    ///
    /// If `ptr` is a slot this pool handed out and still has taken, nothing may use it after
    /// this call: it must not be owned by a live collection or `Box` (one made through the
    /// `Allocator` impl, say), since the slot will be handed out again. Pointers that are not
    /// taken slots of this pool (freed, foreign, interior) are safe to pass: they are rejected.
    ///
    /// ```
    /// use strata_alloc::{Error, SlabPool};
    ///
    /// let pool = SlabPool::new();
    /// let p = pool.alloc(64)?;
    /// // SAFETY: 8 bytes into a 64-byte slot is in bounds.
    /// let inner = unsafe { p.add(8) };
    /// // SAFETY: an interior pointer is rejected without effect.
    /// let err = unsafe { pool.free(inner) };
    /// assert!(matches!(err, Err(Error::InvalidPointer { .. })));
    /// // SAFETY: `p` is ours and unused from here on.
    /// unsafe { pool.free(p)? };
    /// assert_eq!(pool.stats().live_blocks, 0);
    /// # Ok::<(), Error>(())
    /// ```
    #[inline]
    pub unsafe fn free(&self, ptr: NonNull<u8>) -> Result<(), Error> {
        // SAFETY: the only borrow of Inner in this call; it is not used after the source runs.
        let inner = unsafe { self.inner() };
        let addr = ptr.as_ptr().addr();
        let (b, slot) = match inner.locate(addr) {
            Ok(found) => found,
            Err(e) => return Err(inner.misuse(e)),
        };
        if !inner.batch(b).is_taken(slot) {
            return Err(inner.misuse(Error::DoubleFree { addr }));
        }
        if let Some((raw, layout)) = inner.release(b, slot) {
            if let Some(a) = &self.source {
                // SAFETY: `raw` was allocated by `a` with `layout`; its batch was unlinked and
                // unregistered by `release`, so no slot of it is handed out again, and all of
                // its slots were free.
                unsafe { a.deallocate(raw, layout) };
            }
        }
        Ok(())
    }

    /// The usable size of a taken slot (its slot size: at least what was asked).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPointer`] if `ptr` is not the start of a slot of this pool that is
    /// currently taken.
    ///
    /// ```
    /// let pool = strata_alloc::SlabPool::new();
    /// let p = pool.alloc(1000)?;
    /// assert_eq!(pool.usable_size(p)?, 1008);
    /// # // SAFETY: the pointer came from this pool and is freed once.
    /// # unsafe { pool.free(p)? };
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn usable_size(&self, ptr: NonNull<u8>) -> Result<usize, Error> {
        // SAFETY: the only borrow of Inner in this call.
        let inner = unsafe { self.inner() };
        let addr = ptr.as_ptr().addr();
        let (b, slot) = inner.locate(addr).map_err(|e| inner.misuse(e))?;
        let batch = &inner.batches[b as usize];
        if !batch.is_taken(slot) {
            return Err(inner.misuse(Error::InvalidPointer {
                addr,
                reason: "the slot is not allocated (it was freed)",
            }));
        }
        Ok(slot_size(batch.class as usize))
    }

    /// The pool's counters. `bytes_in_use` counts whole slots; `free_blocks` / `free_bytes` are
    /// the free slots of the batches held; `managed_bytes` is the batches' bytes.
    ///
    /// ```
    /// let pool = strata_alloc::SlabPool::new();
    /// let p = pool.alloc(20)?;
    /// let s = pool.stats();
    /// assert_eq!((s.allocations, s.live_blocks, s.bytes_in_use), (1, 1, 32));
    /// assert_eq!(s.free_blocks, strata_alloc::SlabPool::BATCH_SIZE / 32 - 1);
    /// # // SAFETY: the pointer came from this pool and is freed once.
    /// # unsafe { pool.free(p)? };
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn stats(&self) -> Stats {
        // SAFETY: the only borrow of Inner in this call.
        unsafe { self.inner() }.stats()
    }

    /// Verifies every invariant: each batch's bitmap, count, hint and high-water mark, the list
    /// links of every class, the batch table, and the counters.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] naming the first broken invariant.
    ///
    /// ```
    /// let pool = strata_alloc::SlabPool::new();
    /// let p = pool.alloc(300)?;
    /// pool.check()?;
    /// # // SAFETY: the pointer came from this pool and is freed once.
    /// # unsafe { pool.free(p)? };
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn check(&self) -> Result<(), Error> {
        // SAFETY: the only borrow of Inner in this call.
        unsafe { self.inner() }.check()
    }

    /// A printable copy of the lists, batches and bitmaps.
    ///
    /// ```
    /// let pool = strata_alloc::SlabPool::new();
    /// let p = pool.alloc(7)?;
    /// print!("{}", pool.snapshot());
    /// # // SAFETY: the pointer came from this pool and is freed once.
    /// # unsafe { pool.free(p)? };
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn snapshot(&self) -> SlabSnapshot {
        // SAFETY: the only borrow of Inner in this call.
        unsafe { self.inner() }.snapshot()
    }

    /// Gives every batch back (to the OS or to the source allocator) and forgets all slots.
    /// Cumulative counters (allocations, frees, misuses...) are kept; the slots still taken are
    /// not counted as frees.
    ///
    /// ```
    /// let mut pool = strata_alloc::SlabPool::new();
    /// pool.alloc(16)?;
    /// pool.alloc(512)?;
    /// pool.clear();
    /// assert_eq!(pool.stats().live_blocks, 0);
    /// assert_eq!(pool.stats().managed_bytes, 0);
    /// assert_eq!(pool.snapshot().lists(), 0);
    /// pool.alloc(16)?;                         // usable again
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn clear(&mut self) {
        self.give_back_all();
        let inner = self.inner.get_mut();
        inner.classes = [NO_CLASS; CLASSES];
        inner.order.clear();
        inner.batches.clear();
        inner.vacant = NIL;
        inner.registry.clear();
        inner.forgotten += inner.stats().live_blocks as u64;
        inner.slots_total = 0;
        inner.slot_bytes_total = 0;
        inner.stats.bytes_in_use = 0;
        inner.stats.managed_bytes = 0;
    }

    fn give_back_all(&mut self) {
        let inner = self.inner.get_mut();
        match &self.source {
            Some(a) => {
                for batch in inner.batches.iter().filter(|b| b.class != VACANT) {
                    // SAFETY: every live batch's block was allocated by `a` with the layout its
                    // `source` names, and the caller (clear / drop) forgets them right after.
                    unsafe { a.deallocate(batch.raw, SOURCE_LAYOUTS[batch.source as usize]) };
                }
            }
            None => {
                if let Some(frames) = inner.frames.as_mut() {
                    if frames.region.take().is_some() {
                        inner.stats.bytes_to_os += inner.stats.managed_bytes as u64;
                    }
                    frames.free.clear();
                }
            }
        }
    }

    fn note_realloc(&self, in_place: bool) {
        // SAFETY: the only borrow of Inner at every call site.
        let s = &mut unsafe { self.inner() }.stats;
        s.reallocations += 1;
        s.reallocations_in_place += in_place as u64;
    }
}

impl<A: Allocator> Drop for SlabPool<A> {
    fn drop(&mut self) {
        self.give_back_all();
    }
}

impl<A: Allocator> fmt::Debug for SlabPool<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = self.stats();
        f.debug_struct("SlabPool")
            .field("live_blocks", &stats.live_blocks)
            .field("bytes_in_use", &stats.bytes_in_use)
            .field("managed_bytes", &stats.managed_bytes)
            .finish()
    }
}

impl Inner {
    /// The batch at index `b`, a live entry named by the registry or a class list.
    #[inline(always)]
    fn batch(&self, b: u32) -> &Batch {
        debug_assert!((b as usize) < self.batches.len());
        // SAFETY: indices held in the registry and the class lists are always below
        // `batches.len()`: entries are only appended or reused, and `batches` is only truncated
        // by `clear`, which empties the registry and the lists with it.
        unsafe { self.batches.get_unchecked(b as usize) }
    }

    /// The batch at index `b`, as [`batch`](Self::batch), mutably.
    #[inline(always)]
    fn batch_mut(&mut self, b: u32) -> &mut Batch {
        debug_assert!((b as usize) < self.batches.len());
        // SAFETY: as in `batch`.
        unsafe { self.batches.get_unchecked_mut(b as usize) }
    }

    /// Takes a slot of `class` from the head of its avail list, if it has one.
    #[inline(always)]
    fn take(&mut self, class: usize) -> Option<NonNull<u8>> {
        let b = self.classes[class].avail;
        if b == NIL {
            return None;
        }
        let size = slot_size(class);
        let batch = self.batch_mut(b);
        let slot = batch.take();
        // SAFETY: `slot < slots = BATCH_SIZE / size`, so the slot lies inside the batch.
        let p = unsafe { batch.base.add(slot * size) };
        let (used, full) = (batch.used, batch.is_full());
        if used == 1 {
            self.classes[class].empty -= 1;
        }
        if full {
            self.pop_full(class, b);
        }
        let s = &mut self.stats;
        s.allocations += 1;
        s.bytes_in_use += size;
        s.note_in_use();
        Some(p)
    }

    /// The batch and slot `addr` names, validated against the table and the batch bounds; reads
    /// no memory outside the pool's metadata.
    #[inline]
    fn locate(&self, addr: usize) -> Result<(u32, usize), Error> {
        let Some(entry) = self.registry.get(addr >> BATCH_SHIFT) else {
            return Err(Error::InvalidPointer {
                addr,
                reason: "not inside any batch of this pool",
            });
        };
        let b = entry.batch;
        let off = addr & (BATCH_SIZE - 1);
        // The reciprocal comes with the registry entry, so this multiply overlaps the load of
        // the batch metadata instead of waiting for it.
        let slot = ((off as u64 * entry.tag as u64) >> 32) as usize;
        let batch = self.batch(b);
        let class = batch.class as usize;
        // One test on the hot path: `high <= slots`, so a slot below `high` is also below
        // `slots`. Which rule failed is worked out off the hot path.
        if slot * slot_size(class) != off || slot >= batch.high as usize {
            return Err(reject(addr, off, slot, class, batch));
        }
        Ok((b, slot))
    }

    #[cold]
    fn misuse(&mut self, err: Error) -> Error {
        self.stats.misuses_caught += 1;
        err
    }

    /// Frees a taken slot. Returns the batch's base if the batch was retired and its memory
    /// must go back to the source allocator (Region frames are handled here).
    #[inline]
    fn release(&mut self, b: u32, slot: usize) -> Option<(NonNull<u8>, Layout)> {
        let batch = self.batch_mut(b);
        let class = batch.class as usize;
        let size = slot_size(class);
        let was_full = batch.is_full();
        batch.put(slot);
        let now_empty = batch.used == 0;
        self.stats.frees += 1;
        self.stats.bytes_in_use -= size;
        if was_full {
            self.push_avail(class, b);
        }
        if now_empty {
            if self.classes[class].empty >= EMPTY_RESERVE {
                return self.retire(b);
            }
            self.classes[class].empty += 1;
        }
        None
    }

    /// Takes the head batch `b`, just filled, off its class's avail list.
    #[cold]
    fn pop_full(&mut self, class: usize, b: u32) {
        self.unlink_avail(class, b);
    }

    fn push_avail(&mut self, class: usize, b: u32) {
        let head = self.classes[class].avail;
        let batch = &mut self.batches[b as usize];
        batch.in_avail = true;
        batch.avail_prev = NIL;
        batch.avail_next = head;
        if head != NIL {
            self.batches[head as usize].avail_prev = b;
        }
        self.classes[class].avail = b;
    }

    fn unlink_avail(&mut self, class: usize, b: u32) {
        let batch = &mut self.batches[b as usize];
        let (prev, next) = (batch.avail_prev, batch.avail_next);
        batch.in_avail = false;
        batch.avail_prev = NIL;
        batch.avail_next = NIL;
        if prev == NIL {
            self.classes[class].avail = next;
        } else {
            self.batches[prev as usize].avail_next = next;
        }
        if next != NIL {
            self.batches[next as usize].avail_prev = prev;
        }
    }

    /// Registers a new batch at `base` (inside the source block `raw` of layout
    /// `SOURCE_LAYOUTS[source]`) for `class`, at the end of the class's list and the head of its
    /// avail list. False (and nothing changed) if the frame is already registered.
    #[cold]
    fn install(&mut self, class: usize, base: NonNull<u8>, raw: NonNull<u8>, source: u8) -> bool {
        let size = slot_size(class);
        let slots = BATCH_SIZE / size;
        let b = if self.vacant != NIL {
            self.vacant
        } else {
            self.batches.len() as u32
        };
        if !self
            .registry
            .insert(base.as_ptr().addr() >> BATCH_SHIFT, b, RECIP[class] as u32)
        {
            return false;
        }
        let mut batch = Batch::new(base, class as u8, slots as u32);
        batch.raw = raw;
        batch.source = source;
        let c = &mut self.classes[class];
        batch.prev = c.last;
        if c.last == NIL {
            c.first = b;
        }
        c.last = b;
        c.batches += 1;
        c.empty += 1;
        if !c.listed {
            c.listed = true;
            self.order.push(class as u8);
        }
        if b == self.vacant {
            self.vacant = self.batches[b as usize].next;
            self.batches[b as usize] = batch;
        } else {
            self.batches.push(batch);
        }
        let prev = self.batches[b as usize].prev;
        if prev != NIL {
            self.batches[prev as usize].next = b;
        }
        self.push_avail(class, b);
        self.stats.managed_bytes += BATCH_SIZE;
        self.slots_total += slots;
        self.slot_bytes_total += slots * size;
        true
    }

    /// Retires every empty batch of the classes other than `class` (each class keeps one in
    /// reserve). Returns how many, and the source blocks that must go back to the source
    /// allocator (none for Region frames, which are given back here).
    #[cold]
    fn retire_reserves(&mut self, class: usize) -> (usize, Vec<(NonNull<u8>, Layout)>) {
        let (mut retired, mut blocks) = (0, Vec::new());
        for b in 0..self.batches.len() as u32 {
            let batch = &self.batches[b as usize];
            let c = batch.class as usize;
            if batch.class == VACANT || c == class || batch.used != 0 {
                continue;
            }
            self.classes[c].empty -= 1;
            retired += 1;
            blocks.extend(self.retire(b));
        }
        (retired, blocks)
    }

    /// Unlinks an empty batch, unregisters it and makes its entry vacant. Returns its source
    /// block if it must go back to the source allocator; Region frames are given back here.
    #[cold]
    fn retire(&mut self, b: u32) -> Option<(NonNull<u8>, Layout)> {
        let batch = &self.batches[b as usize];
        debug_assert_eq!(batch.used, 0);
        let class = batch.class as usize;
        let (prev, next, base, slots) = (batch.prev, batch.next, batch.base, batch.slots as usize);
        let (raw, layout) = (batch.raw, SOURCE_LAYOUTS[batch.source as usize]);
        if batch.in_avail {
            self.unlink_avail(class, b);
        }
        let c = &mut self.classes[class];
        if prev == NIL {
            c.first = next;
        } else {
            self.batches[prev as usize].next = next;
        }
        let c = &mut self.classes[class];
        if next == NIL {
            c.last = prev;
        } else {
            self.batches[next as usize].prev = prev;
        }
        let c = &mut self.classes[class];
        c.batches -= 1;
        self.registry.remove(base.as_ptr().addr() >> BATCH_SHIFT);
        let batch = &mut self.batches[b as usize];
        batch.class = VACANT;
        batch.prev = NIL;
        batch.next = self.vacant;
        self.vacant = b;
        self.stats.managed_bytes -= BATCH_SIZE;
        self.slots_total -= slots;
        self.slot_bytes_total -= slots * slot_size(class);
        match self.frames.as_mut() {
            Some(frames) => {
                self.stats.bytes_to_os += frames.give(base) as u64;
                None
            }
            None => Some((raw, layout)),
        }
    }

    fn check(&self) -> Result<(), Error> {
        let corrupt = |addr: usize, what: &'static str| Err(Error::Corrupted { addr, what });
        let n = self.batches.len();
        let live = self.batches.iter().filter(|b| b.class != VACANT).count();
        if self.registry.len() != live {
            return corrupt(0, "batch table size differs from the number of batches");
        }
        for (key, b, tag) in self.registry.entries() {
            match self.batches.get(b as usize) {
                Some(batch)
                    if (batch.class as usize) < CLASSES
                        && RECIP[batch.class as usize] == tag as u64
                        && batch.base.as_ptr().addr() >> BATCH_SHIFT == key => {}
                _ => return corrupt(key << BATCH_SHIFT, "batch table entry names no such batch"),
            }
        }
        let (mut used, mut free, mut in_use, mut free_bytes) = (0usize, 0usize, 0usize, 0usize);
        for batch in self.batches.iter().filter(|b| b.class != VACANT) {
            let addr = batch.base.as_ptr().addr();
            if batch.class as usize >= CLASSES {
                return corrupt(addr, "batch has an invalid size class");
            }
            let size = slot_size(batch.class as usize);
            batch.verify(size).or_else(|what| corrupt(addr, what))?;
            if batch.in_avail == batch.is_full() {
                return corrupt(
                    addr,
                    "avail list membership does not match the batch being full",
                );
            }
            used += batch.used as usize;
            free += (batch.slots - batch.used) as usize;
            in_use += batch.used as usize * size;
            free_bytes += (batch.slots - batch.used) as usize * size;
        }
        let mut listed = 0usize;
        for (class, c) in self.classes.iter().enumerate() {
            if c.listed != self.order.contains(&(class as u8)) {
                return corrupt(0, "class list membership is inconsistent");
            }
            if c.batches > 0 && !c.listed {
                return corrupt(0, "a class with batches is missing from the list of lists");
            }
            // All list: forward walk, bounded so a cycle cannot hang the check.
            let (mut count, mut empty, mut prev, mut b) = (0u32, 0u32, NIL, c.first);
            while b != NIL {
                let Some(batch) = self.batches.get(b as usize) else {
                    return corrupt(0, "batch list link points past the table");
                };
                let addr = batch.base.as_ptr().addr();
                if batch.class as usize != class || batch.prev != prev || count as usize >= n {
                    return corrupt(addr, "batch list links are inconsistent");
                }
                count += 1;
                empty += (batch.used == 0) as u32;
                prev = b;
                b = batch.next;
            }
            if prev != c.last || count != c.batches || empty != c.empty {
                return corrupt(0, "class list head, tail or counts are inconsistent");
            }
            if c.empty > EMPTY_RESERVE {
                return corrupt(0, "a class keeps more empty batches than its reserve");
            }
            let (mut avail, mut prev, mut b) = (0u32, NIL, c.avail);
            while b != NIL {
                let Some(batch) = self.batches.get(b as usize) else {
                    return corrupt(0, "avail list link points past the table");
                };
                let addr = batch.base.as_ptr().addr();
                if batch.class as usize != class
                    || !batch.in_avail
                    || batch.avail_prev != prev
                    || avail as usize >= n
                {
                    return corrupt(addr, "avail list links are inconsistent");
                }
                avail += 1;
                prev = b;
                b = batch.avail_next;
            }
            let want = self
                .batches
                .iter()
                .filter(|x| x.class as usize == class && x.in_avail)
                .count();
            if avail as usize != want {
                return corrupt(0, "a batch with free slots is missing from its avail list");
            }
            listed += count as usize;
        }
        if listed != live {
            return corrupt(0, "a batch is on no class list");
        }
        let mut vacant = 0usize;
        let mut b = self.vacant;
        while b != NIL {
            match self.batches.get(b as usize) {
                Some(batch) if batch.class == VACANT && vacant < n => b = batch.next,
                _ => return corrupt(0, "vacant list is inconsistent"),
            }
            vacant += 1;
        }
        if vacant + live != n {
            return corrupt(0, "a vacant batch entry is not on the vacant list");
        }
        let s = self.stats();
        if s.live_blocks != used
            || s.free_blocks != free
            || s.bytes_in_use != in_use
            || s.free_bytes != free_bytes
            || s.managed_bytes != live * BATCH_SIZE
            || s.peak_bytes_in_use < s.bytes_in_use
        {
            return corrupt(0, "counters differ from the sums over the batches");
        }
        Ok(())
    }

    fn snapshot(&self) -> SlabSnapshot {
        let lists = self
            .order
            .iter()
            .map(|&class| {
                let c = &self.classes[class as usize];
                let mut batches = Vec::with_capacity(c.batches as usize);
                let mut b = c.first;
                while b != NIL && batches.len() < c.batches as usize {
                    let batch = &self.batches[b as usize];
                    let slots = batch.slots as usize;
                    batches.push(BatchView {
                        addr: batch.base.as_ptr().addr(),
                        slots,
                        used: batch.used as usize,
                        bits: batch.bits[..slots.div_ceil(64)].to_vec(),
                    });
                    b = batch.next;
                }
                ListView {
                    slot_size: slot_size(class as usize),
                    batches,
                }
            })
            .collect();
        SlabSnapshot {
            lists,
            stats: self.stats(),
        }
    }

    /// The counters, with the derived ones filled in.
    fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.live_blocks = (s.allocations - s.frees - self.forgotten) as usize;
        s.free_blocks = self.slots_total.wrapping_sub(s.live_blocks);
        s.free_bytes = self.slot_bytes_total.wrapping_sub(s.bytes_in_use);
        s
    }
}

/// A batch frame from a source: the batch, the block it was carved from, and the index in
/// `SOURCE_LAYOUTS` of that block's layout.
type Frame = (NonNull<u8>, NonNull<u8>, u8);

/// Gets a block from `a` that holds a `BATCH_SIZE`-aligned batch, trying `SOURCE_LAYOUTS` in
/// order. Returns the batch, the block and the index of its layout.
#[cold]
fn carve<A: Allocator>(a: &A) -> Option<Frame> {
    for (i, layout) in SOURCE_LAYOUTS.iter().enumerate() {
        let Ok(block) = a.allocate(*layout) else {
            continue;
        };
        let raw = block.cast::<u8>();
        let pad = raw.as_ptr().addr().wrapping_neg() & (BATCH_SIZE - 1);
        if pad + BATCH_SIZE <= layout.size() {
            // SAFETY: `pad + BATCH_SIZE <= layout.size()`, so the batch lies inside the block.
            return Some((unsafe { raw.add(pad) }, raw, i as u8));
        }
        // Only a source that ignored the alignment gets here; hand its block back.
        // SAFETY: `raw` was allocated by `a` with `layout` just above and is unused.
        unsafe { a.deallocate(raw, *layout) };
    }
    None
}

/// Why `addr` (offset `off` in `batch`, slot index estimate `slot`) is not a slot start that
/// was ever handed out.
#[cold]
#[inline(never)]
fn reject(addr: usize, off: usize, slot: usize, class: usize, batch: &Batch) -> Error {
    let reason = if slot * slot_size(class) != off {
        "points inside a slot, not at its start"
    } else if slot >= batch.slots as usize {
        "points past the last slot of its batch"
    } else {
        "the slot was never handed out"
    };
    Error::InvalidPointer { addr, reason }
}

/// An aligned, non-null pointer with no provenance: what zero-sized requests get.
#[inline]
fn dangling(align: usize) -> NonNull<u8> {
    // SAFETY: a Layout's alignment is a non-zero power of two, so the address is not null.
    unsafe { NonNull::new_unchecked(core::ptr::without_provenance_mut(align)) }
}

// Why this impl is sound: every block handed out is a slot of at least the requested size and a
// multiple of the requested alignment (so aligned), owned by the caller until deallocated; slots
// never overlap (one bit each). Batches live until the pool is cleared (`&mut`, so no
// `&SlabPool` allocator is alive then) or dropped. Zero-sized requests get a dangling pointer
// that never reaches `free`. Misuse in `deallocate` aborts before anything is written.
// SAFETY: the Allocator contract holds for the reasons above.
unsafe impl<A: Allocator> Allocator for &SlabPool<A> {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(NonNull::slice_from_raw_parts(dangling(layout.align()), 0));
        }
        if layout.align() <= STEP {
            let class = (layout.size() - 1) >> STEP_SHIFT;
            if class < CLASSES {
                // SAFETY: the only borrow of Inner in this call; `take` calls no user code.
                if let Some(p) = unsafe { self.inner() }.take(class) {
                    return Ok(NonNull::slice_from_raw_parts(p, slot_size(class)));
                }
            }
        }
        let (p, len) = self.alloc_slow(layout.size(), layout.align())?;
        Ok(NonNull::slice_from_raw_parts(p, len))
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        // SAFETY: the caller gives up `ptr` (Allocator::deallocate contract); bad pointers are
        // rejected by `free` without effect.
        if let Err(err) = unsafe { self.free(ptr) } {
            crate::os::abort::misuse("SlabPool", &err);
        }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded contract; `false` = no zeroing.
        unsafe { self.regrow(ptr, old_layout, new_layout, false) }
    }

    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded contract; `true` = zero the bytes past the old size.
        unsafe { self.regrow(ptr, old_layout, new_layout, true) }
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if new_layout.size() == 0 {
            // SAFETY: the caller hands `ptr` over (Allocator::shrink contract).
            unsafe { self.deallocate(ptr, old_layout) };
            return Ok(NonNull::slice_from_raw_parts(
                dangling(new_layout.align()),
                0,
            ));
        }
        let usable = self.usable_or_abort(ptr, old_layout);
        let aligned = ptr.as_ptr().addr() % new_layout.align() == 0;
        let want = class_for(new_layout.size(), new_layout.align()).map(slot_size);
        if aligned && want == Ok(usable) {
            self.note_realloc(true);
            return Ok(NonNull::slice_from_raw_parts(ptr, usable));
        }
        // A smaller class frees memory; if none can be had, the old slot still fits when aligned.
        match self.allocate(new_layout) {
            Ok(q) => {
                // SAFETY: both blocks are live, distinct slots; the new size fits both.
                unsafe { moved(self, ptr, q, new_layout.size()) };
                Ok(q)
            }
            Err(_) if aligned => {
                self.note_realloc(true);
                Ok(NonNull::slice_from_raw_parts(ptr, usable))
            }
            Err(e) => Err(e),
        }
    }
}

impl<A: Allocator> SlabPool<A> {
    /// The slot size of `ptr`, which the caller says is a live block of `layout`; aborts if not.
    fn usable_or_abort(&self, ptr: NonNull<u8>, layout: Layout) -> usize {
        match self.usable_size(ptr) {
            Ok(n) if n >= layout.size() => n,
            Ok(_) => crate::os::abort::misuse(
                "SlabPool",
                &Error::InvalidPointer {
                    addr: ptr.as_ptr().addr(),
                    reason: "the layout is larger than the block",
                },
            ),
            Err(err) => crate::os::abort::misuse("SlabPool", &err),
        }
    }

    /// `grow` and `grow_zeroed`: in place while the new layout fits the slot, else move.
    ///
    /// # Safety
    ///
    /// The `Allocator::grow` contract: `ptr` is a live block of `old` from this pool, and
    /// `new.size() >= old.size()`.
    unsafe fn regrow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
        zero: bool,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if old.size() == 0 {
            return if zero {
                Allocator::allocate_zeroed(&self, new)
            } else {
                Allocator::allocate(&self, new)
            };
        }
        let usable = self.usable_or_abort(ptr, old);
        if new.size() <= usable && ptr.as_ptr().addr() % new.align() == 0 {
            if zero {
                // SAFETY: `[old.size(), usable)` lies inside the caller's slot.
                unsafe { ptr.add(old.size()).write_bytes(0, usable - old.size()) };
            }
            self.note_realloc(true);
            return Ok(NonNull::slice_from_raw_parts(ptr, usable));
        }
        let q = Allocator::allocate(&self, new)?;
        if zero {
            // SAFETY: `q` is a fresh block of `q.len()` bytes; `old.size() <= new.size() <= len`.
            unsafe {
                q.cast::<u8>()
                    .add(old.size())
                    .write_bytes(0, q.len() - old.size())
            };
        }
        // SAFETY: `ptr` (old, live) and `q` (new) are distinct slots; `old.size()` fits both.
        unsafe { moved(self, ptr, q, old.size()) };
        Ok(q)
    }
}

/// Copies `n` bytes from the old block to the new one, frees the old one and counts a moving
/// realloc.
///
/// # Safety
///
/// `old` is a live slot of `pool` the caller gives up; `new` is a distinct live block of at
/// least `n` bytes, and `old` holds at least `n` bytes.
unsafe fn moved<A: Allocator>(pool: &SlabPool<A>, old: NonNull<u8>, new: NonNull<[u8]>, n: usize) {
    // SAFETY: both ranges are valid for `n` bytes (caller) and do not overlap (distinct slots).
    unsafe { core::ptr::copy_nonoverlapping(old.as_ptr(), new.cast::<u8>().as_ptr(), n) };
    // SAFETY: `old` was validated by the caller and is given up; `free` re-validates it anyway.
    if let Err(err) = unsafe { pool.free(old) } {
        crate::os::abort::misuse("SlabPool", &err);
    }
    pool.note_realloc(false);
}

#[cfg(test)]
mod tests;
