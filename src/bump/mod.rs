//! `Bump`: scoped bump arenas for request handling, and the collections that live in them.
//!
//! ```
//! use strata_alloc::{Bump, bump_format};
//!
//! let mut bump = Bump::new();
//! for id in 0..3 {
//!     let len = bump.scope(|b| {
//!         let mut line = strata_alloc::bump::String::new_in(b);
//!         line.push_str("GET /items/");
//!         let reply = bump_format!(in b, "{line}{id} -> 200");
//!         reply.len()
//!     });
//!     assert!(len >= 19);
//!     assert_eq!(bump.allocated_bytes(), 0); // the scope gave everything back
//! }
//! ```
//!
//! # How it works
//!
//! A `Bump` hands memory out by moving a pointer *upward* through chunks and frees nothing until
//! a [`scope`](Bump::scope) ends, a [`Checkpoint`] is rewound to, or the arena is
//! [`reset`](Bump::reset). Bumping upward is what lets the most recent allocation grow and shrink
//! in place: a `Vec` living in the arena extends into the free space right after it instead of
//! being copied, which a downward bumper (bumpalo) cannot do.
//!
//! Chunk sizes double from one page up to [`MAX_CHUNK`]; a request larger than the next chunk
//! size gets a chunk of its own. Chunks of up to `MAX_CHUNK` come from the global allocator, so
//! a fresh `Bump` per request costs about what a `malloc` does; larger ones are anonymous
//! mappings ([`Region`](crate::Region)s), which go straight back to the OS when released.
//!
//! Invariants kept here (checked by `check_invariants` in the unit tests):
//! - `chunks[..in_use]` are in use, oldest first; `chunks[in_use - 1]` is the current chunk;
//!   `chunks[in_use..]` are spares (empty, kept for reuse).
//! - With a current chunk: `start <= ptr <= chunk_end` and `start <= end <= chunk_end`, where
//!   `start`/`chunk_end` are the current chunk's bounds and `end` is pulled below `chunk_end`
//!   only by the allocation limit (below `ptr` too, if the limit was set under the usage).
//!   Without one (`in_use == 0`): `ptr` is dangling and `start == ptr == end == chunk_end`, so
//!   the fast path fails for every non-zero request.
//! - `chunks[i].used` is the number of bytes used in in-use chunk `i < in_use - 1`, and
//!   `done` is their sum, so `allocated_bytes() == done + (ptr - start)`.
//! - `done + (end - start) <= limit`: the fast path, which stops at `end`, can never pass the
//!   allocation limit, so it does not need to look at it.
//! - A position (`in_use`, offset in the current chunk) only moves down through `rewind`,
//!   `reset` and the in-place `deallocate`/`shrink`/`grow` of the last block.
//! - Every time the pointer enters a chunk from an earlier one (or from none), the chunk gets a
//!   new `stamp`; `stamp` mirrors the current chunk's. A checkpoint records the stamp of the
//!   chunk it was taken in, so it is accepted only while that chunk was never left for an
//!   earlier one: otherwise the chunks below it (and the `done` it recorded) may have changed.
//!   Without a current chunk the stamp is 0.

mod allocator;
mod boxed;
mod chunk;
mod collections;
mod slices;

use core::alloc::Layout;
use core::cell::{Cell, UnsafeCell};
use core::fmt;
use core::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, page_size};

pub use boxed::BumpBox;
use chunk::{CHUNK_ALIGN, Chunk};
pub use collections::{String, Vec};

/// Largest size chunks grow to by doubling. Larger requests get a chunk of their own.
///
/// ```
/// use strata_alloc::bump::{Bump, MAX_CHUNK};
/// let bump = Bump::new();
/// for _ in 0..64 { bump.alloc_slice_fill_copy(1 << 20, 0u8); }
/// assert!(bump.chunks().all(|c| c.capacity <= MAX_CHUNK));
/// ```
pub const MAX_CHUNK: usize = 4 << 20;

/// Default bound on the chunk bytes [`Bump::reset`] and [`Bump::rewind`] keep for reuse.
///
/// ```
/// use strata_alloc::bump::{Bump, DEFAULT_RETAINED};
/// let mut bump = Bump::new();
/// bump.alloc_slice_fill_copy(2 * DEFAULT_RETAINED, 0u8);
/// bump.reset();
/// assert!(bump.chunk_capacity() <= DEFAULT_RETAINED);
/// ```
pub const DEFAULT_RETAINED: usize = 4 << 20;

/// Each Bump takes a block of 2^32 epochs and moves to the next one on every reset, so a
/// checkpoint from another `Bump`, or from before a reset, is recognised instead of being
/// applied to memory it does not describe. (After 2^32 resets a Bump runs into the next block;
/// an epoch match is only a consistency check: rewinding stays memory-safe without it.)
static EPOCH: AtomicU64 = AtomicU64::new(1 << 32);

/// Blocks a thread takes from [`EPOCH`] at once, so that threads making a fresh Bump per
/// request do not all write the same cache line.
const EPOCH_BATCH: u64 = 256;

std::thread_local! {
    /// This thread's next epoch block and the end of its batch.
    static THREAD_EPOCHS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

fn first_epoch() -> u64 {
    let shared = || EPOCH.fetch_add(1 << 32, Ordering::Relaxed);
    THREAD_EPOCHS
        .try_with(|batch| {
            let (next, end) = batch.get();
            if next != end {
                batch.set((next.wrapping_add(1 << 32), end));
                return next;
            }
            let first = EPOCH.fetch_add(EPOCH_BATCH << 32, Ordering::Relaxed);
            let end = first.wrapping_add(EPOCH_BATCH << 32);
            batch.set((first.wrapping_add(1 << 32), end));
            first
        })
        // While the thread's locals are being torn down, take a block on its own.
        .unwrap_or_else(|_| shared())
}

/// A bump arena: allocation is a pointer increment, freeing happens a whole scope at a time.
///
/// `alloc` takes `&self`, so many values can be alive at once; [`scope`](Bump::scope),
/// [`rewind`](Bump::rewind) and [`reset`](Bump::reset) take `&mut self`, so the borrow checker
/// guarantees that nothing they free is still referenced. `Bump` is `Send` but not `Sync`.
///
/// `Bump::new()` maps no memory: the first chunk is mapped by the first allocation.
///
/// # Example
///
/// ```
/// use strata_alloc::Bump;
///
/// let mut bump = Bump::new();
/// let greeting = bump.alloc_str("hello");
/// let n = bump.alloc(41u64);
/// *n += 1;
/// assert_eq!((&*greeting, *n), ("hello", 42));
///
/// // Everything allocated inside a scope is freed when it returns.
/// let before = bump.allocated_bytes();
/// let len = bump.scope(|b| b.alloc_slice_copy(&[1u32, 2, 3]).len());
/// assert_eq!(len, 3);
/// assert_eq!(bump.allocated_bytes(), before);
/// ```
pub struct Bump {
    /// The next free byte of the current chunk. Its provenance covers the whole chunk.
    ptr: Cell<NonNull<u8>>,
    /// The fast path may hand out bytes up to this address (the chunk end or the limit).
    end: Cell<usize>,
    /// Address of the current chunk's first byte.
    start: Cell<usize>,
    /// Address one past the current chunk's last byte.
    chunk_end: Cell<usize>,
    /// Bytes used in the in-use chunks before the current one.
    done: Cell<usize>,
    /// Number of chunks in use.
    in_use: Cell<usize>,
    /// The current chunk's stamp (0 without one).
    stamp: Cell<u64>,
    /// The last stamp given out.
    stamps: Cell<u64>,
    /// All chunks: in use first, then spares. Only touched outside the fast path, and never
    /// while user code runs (see `with_chunks`).
    chunks: UnsafeCell<std::vec::Vec<Chunk>>,
    /// Size of the next chunk to map.
    next_size: Cell<usize>,
    /// Most bytes `allocated_bytes()` may reach (`usize::MAX`: no limit).
    limit: Cell<usize>,
    /// Most spare chunk bytes kept by `reset` and `rewind`.
    retained: usize,
    /// Identifies this Bump since its last reset; stamped into every checkpoint.
    epoch: u64,
}

// Values allocated in the arena are only reachable through borrows of the Bump, which end before
// the Bump can move to another thread, and the Bump never touches them again (`alloc` refuses
// types with drop glue; `BumpBox` drops its value while it still borrows the Bump). `Bump` stays
// `!Sync` through its `Cell`s.
// SAFETY: every pointer a Bump holds points into chunks it owns (Regions may move between
// threads), and no value of a `!Send` type is ever used from a second thread (see above).
unsafe impl Send for Bump {}

static_assertions::assert_impl_all!(Bump: Send, Default);
static_assertions::assert_not_impl_any!(Bump: Sync);

/// A position in a [`Bump`] to [`rewind`](Bump::rewind) to later.
///
/// Taking one needs only `&Bump`; rewinding needs `&mut Bump`, so no reference into what a
/// rewind frees can survive it.
///
/// ```
/// let mut bump = strata_alloc::Bump::new();
/// bump.alloc(1u8);
/// let cp = bump.checkpoint();
/// bump.alloc_slice_copy(&[0u8; 100]);
/// bump.rewind(cp);
/// assert_eq!(bump.allocated_bytes(), 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    epoch: u64,
    stamp: u64,
    in_use: usize,
    offset: usize,
    done: usize,
}

/// What [`Bump::chunks`] reports about one chunk.
///
/// ```
/// let bump = strata_alloc::Bump::new();
/// bump.alloc(7u32);
/// let info = bump.chunks().next().unwrap();
/// assert!(info.in_use && info.used >= 4 && info.capacity >= info.used);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChunkInfo {
    /// Address of the chunk's first byte.
    pub addr: usize,
    /// Bytes in the chunk.
    pub capacity: usize,
    /// Bytes handed out from it (alignment padding included); 0 for a spare.
    pub used: usize,
    /// Whether the chunk holds live allocations (false: a spare kept for reuse).
    pub in_use: bool,
    /// Whether the chunk is an anonymous mapping (chunks larger than [`MAX_CHUNK`]) rather
    /// than a block of the global allocator.
    pub mapped: bool,
}

/// Iterator over a Bump's chunks, returned by [`Bump::chunks`].
///
/// ```
/// let bump = strata_alloc::Bump::with_capacity(10_000);
/// let mut chunks = bump.chunks();
/// assert!(chunks.next().is_some());
/// assert!(chunks.next().is_none());
/// ```
pub struct Chunks<'a> {
    bump: &'a Bump,
    index: usize,
}

impl Iterator for Chunks<'_> {
    type Item = ChunkInfo;

    fn next(&mut self) -> Option<ChunkInfo> {
        let bump = self.bump;
        let i = self.index;
        // Read afresh on each step: the caller may allocate (and so add chunks) in between.
        let info = bump.with_chunks(|chunks| {
            let c = chunks.get(i)?;
            let in_use = i < bump.in_use.get();
            let used = if !in_use {
                0
            } else if i + 1 == bump.in_use.get() {
                bump.ptr.get().as_ptr().addr() - bump.start.get()
            } else {
                c.used
            };
            Some(ChunkInfo {
                addr: c.base().as_ptr().addr(),
                capacity: c.capacity(),
                used,
                in_use,
                mapped: c.is_mapped(),
            })
        })?;
        self.index += 1;
        Some(info)
    }
}

impl Default for Bump {
    fn default() -> Bump {
        Bump::new()
    }
}

impl fmt::Debug for Bump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bump")
            .field("allocated_bytes", &self.allocated_bytes())
            .field("chunk_capacity", &self.chunk_capacity())
            .field("chunks_in_use", &self.in_use.get())
            .finish()
    }
}

/// A well-aligned dangling pointer for zero-sized requests: never read, never "freed".
#[inline]
fn dangling(align: usize) -> NonNull<u8> {
    // SAFETY: a Layout's alignment is a power of two, hence non-zero.
    unsafe { NonNull::new_unchecked(ptr::without_provenance_mut(align)) }
}

#[cold]
#[inline(never)]
#[track_caller]
fn alloc_failed(err: Error) -> ! {
    panic!("strata-alloc: Bump allocation failed: {err}")
}

impl Bump {
    /// An empty arena. Maps nothing and cannot fail: the first allocation maps the first chunk.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// assert_eq!(bump.chunk_capacity(), 0);
    /// ```
    pub fn new() -> Bump {
        let empty = NonNull::<u8>::dangling();
        let addr = empty.as_ptr().addr();
        Bump {
            ptr: Cell::new(empty),
            end: Cell::new(addr),
            start: Cell::new(addr),
            chunk_end: Cell::new(addr),
            done: Cell::new(0),
            in_use: Cell::new(0),
            stamp: Cell::new(0),
            stamps: Cell::new(0),
            chunks: UnsafeCell::new(std::vec::Vec::new()),
            next_size: Cell::new(page_size()),
            limit: Cell::new(usize::MAX),
            retained: DEFAULT_RETAINED,
            epoch: first_epoch(),
        }
    }

    /// An arena whose first chunk holds at least `bytes`, allocated now (from the global
    /// allocator up to [`MAX_CHUNK`], mapped from the OS above). `with_capacity(0)` is
    /// [`Bump::new`].
    ///
    /// ```
    /// let bump = strata_alloc::Bump::with_capacity(64 * 1024);
    /// assert!(bump.chunk_capacity() >= 64 * 1024);
    /// bump.alloc_slice_copy(&[0u8; 60_000]);
    /// assert_eq!(bump.chunks().count(), 1); // no second chunk was needed
    /// ```
    ///
    /// # Panics
    ///
    /// If the memory cannot be had, as bumpalo's `with_capacity` does; use
    /// [`try_with_capacity`](Bump::try_with_capacity) to get the error instead.
    #[track_caller]
    pub fn with_capacity(bytes: usize) -> Bump {
        Bump::try_with_capacity(bytes).unwrap_or_else(|e| alloc_failed(e))
    }

    /// Like [`with_capacity`](Bump::with_capacity), but returns an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLayout`] if `bytes` overflows when rounded up; [`Error::OutOfMemory`]
    /// if the global allocator refuses; [`Error::Os`] if the OS refuses a mapping.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::try_with_capacity(10_000)?;
    /// assert!(bump.chunk_capacity() >= 10_000);
    /// assert!(strata_alloc::Bump::try_with_capacity(usize::MAX).is_err());
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn try_with_capacity(bytes: usize) -> Result<Bump, Error> {
        let bump = Bump::new();
        if bytes > 0 {
            let chunk = Chunk::new(bytes)?;
            let cap = chunk.capacity();
            let base = chunk.base();
            bump.with_chunks(|chunks| chunks.push(chunk));
            bump.in_use.set(1);
            bump.restamp_current();
            bump.enter(base, cap, 0);
            bump.next_size
                .set(cap.saturating_mul(2).clamp(page_size(), MAX_CHUNK));
        }
        Ok(bump)
    }

    /// Moves `value` into the arena and returns a mutable reference to it.
    ///
    /// # Drop
    ///
    /// **`alloc` never runs `Drop`.** Memory is reclaimed a scope at a time and nothing walks
    /// the values, so a `String` or `Vec` stored here would leak its heap buffer. To make that
    /// leak impossible to miss, `alloc` *refuses at compile time* any type with drop glue (a
    /// build error from `cargo build`/`cargo test`; being raised at monomorphization, it does
    /// not show in `cargo check`). Use
    /// [`alloc_box`](Bump::alloc_box) when the value must be dropped, or wrap it in
    /// [`ManuallyDrop`](core::mem::ManuallyDrop) to leak it on purpose.
    ///
    /// ```
    /// use std::mem::ManuallyDrop;
    /// let bump = strata_alloc::Bump::new();
    ///
    /// let point = bump.alloc((3i32, 4i32));
    /// point.0 += 1;
    /// assert_eq!(*point, (4, 4));
    ///
    /// // A String must be boxed (dropped when the box goes) or leaked explicitly:
    /// let boxed = bump.alloc_box(String::from("dropped with the box"));
    /// let leaked = bump.alloc(ManuallyDrop::new(String::from("never dropped")));
    /// # drop(boxed); let _ = leaked;
    /// ```
    ///
    /// ```compile_fail
    /// let bump = strata_alloc::Bump::new();
    /// bump.alloc(String::from("would leak")); // error: Bump::alloc never runs Drop
    /// ```
    ///
    /// # Panics
    ///
    /// If the allocation limit is reached or the OS refuses memory (see
    /// [`try_alloc`](Bump::try_alloc)).
    #[inline(always)]
    #[track_caller]
    #[allow(clippy::mut_from_ref)]
    pub fn alloc<T>(&self, value: T) -> &mut T {
        const { assert_no_drop::<T>() };
        let p = self.alloc_layout(Layout::new::<T>()).cast::<T>();
        // SAFETY: `p` is a fresh, aligned block of `size_of::<T>()` bytes that nothing else
        // refers to; it stays valid while `self` is borrowed (freeing needs `&mut self`).
        unsafe {
            p.as_ptr().write(value);
            &mut *p.as_ptr()
        }
    }

    /// Like [`alloc`](Bump::alloc), but returns an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`] past the allocation limit; [`Error::Os`] if the OS refuses a
    /// chunk. The arena is unchanged and stays usable.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// bump.set_allocation_limit(Some(8));
    /// assert_eq!(*bump.try_alloc(1u64)?, 1);
    /// assert!(bump.try_alloc(2u64).is_err());
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub fn try_alloc<T>(&self, value: T) -> Result<&mut T, Error> {
        const { assert_no_drop::<T>() };
        let p = self.try_alloc_layout(Layout::new::<T>())?.cast::<T>();
        // SAFETY: as in `alloc`.
        unsafe {
            p.as_ptr().write(value);
            Ok(&mut *p.as_ptr())
        }
    }

    /// Allocates space first, then calls `f` and writes its result straight into the arena,
    /// which lets the compiler build large values in place. Never runs `Drop` (see
    /// [`alloc`](Bump::alloc)).
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let big = bump.alloc_with(|| [7u8; 4096]);
    /// assert_eq!(big[4095], 7);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`alloc`](Bump::alloc); a panic in `f` leaves the space allocated but unused.
    #[inline(always)]
    #[track_caller]
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_with<T>(&self, f: impl FnOnce() -> T) -> &mut T {
        const { assert_no_drop::<T>() };
        let p = self.alloc_layout(Layout::new::<T>()).cast::<T>();
        // SAFETY: as in `alloc`; `f` may allocate in this arena too, but only beyond `p`.
        unsafe {
            p.as_ptr().write(f());
            &mut *p.as_ptr()
        }
    }

    /// Like [`alloc_with`](Bump::alloc_with), but returns an error instead of panicking;
    /// `f` is not called when the allocation fails.
    ///
    /// # Errors
    ///
    /// As [`try_alloc`](Bump::try_alloc).
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// bump.set_allocation_limit(Some(0));
    /// let mut called = false;
    /// assert!(bump.try_alloc_with(|| { called = true; 5u32 }).is_err());
    /// assert!(!called);
    /// ```
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub fn try_alloc_with<T>(&self, f: impl FnOnce() -> T) -> Result<&mut T, Error> {
        const { assert_no_drop::<T>() };
        let p = self.try_alloc_layout(Layout::new::<T>())?.cast::<T>();
        // SAFETY: as in `alloc`.
        unsafe {
            p.as_ptr().write(f());
            Ok(&mut *p.as_ptr())
        }
    }

    /// Copies `s` into the arena.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let s = bump.alloc_str("request-42");
    /// s.make_ascii_uppercase();
    /// assert_eq!(s, "REQUEST-42");
    /// ```
    ///
    /// # Panics
    ///
    /// As [`alloc`](Bump::alloc).
    #[inline]
    #[track_caller]
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_str(&self, s: &str) -> &mut str {
        let bytes = self.alloc_slice_copy(s.as_bytes());
        // SAFETY: the bytes were copied from a `str`, so they are UTF-8.
        unsafe { core::str::from_utf8_unchecked_mut(bytes) }
    }

    /// Like [`alloc_str`](Bump::alloc_str), but returns an error instead of panicking.
    ///
    /// # Errors
    ///
    /// As [`try_alloc`](Bump::try_alloc).
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// assert_eq!(bump.try_alloc_str("ok")?, "ok");
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub fn try_alloc_str(&self, s: &str) -> Result<&mut str, Error> {
        let bytes = self.try_alloc_slice_copy(s.as_bytes())?;
        // SAFETY: the bytes were copied from a `str`, so they are UTF-8.
        Ok(unsafe { core::str::from_utf8_unchecked_mut(bytes) })
    }

    /// Copies the slice `s` into the arena.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let v = bump.alloc_slice_copy(&[1u16, 2, 3]);
    /// v[0] = 10;
    /// assert_eq!(v, &[10, 2, 3]);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`alloc`](Bump::alloc).
    #[inline]
    #[track_caller]
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_slice_copy<T: Copy>(&self, s: &[T]) -> &mut [T] {
        let p = self.alloc_layout(Layout::for_value(s)).cast::<T>();
        // SAFETY: `p` is a fresh block sized and aligned for `s.len()` values of T, disjoint
        // from `s`; T is Copy, so a bitwise copy is a valid copy.
        unsafe {
            ptr::copy_nonoverlapping(s.as_ptr(), p.as_ptr(), s.len());
            core::slice::from_raw_parts_mut(p.as_ptr(), s.len())
        }
    }

    /// Like [`alloc_slice_copy`](Bump::alloc_slice_copy), but returns an error instead of
    /// panicking.
    ///
    /// # Errors
    ///
    /// As [`try_alloc`](Bump::try_alloc).
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// bump.set_allocation_limit(Some(4));
    /// assert!(bump.try_alloc_slice_copy(&[0u8; 5]).is_err());
    /// assert_eq!(bump.try_alloc_slice_copy(&[9u8; 4])?, &[9; 4]);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub fn try_alloc_slice_copy<T: Copy>(&self, s: &[T]) -> Result<&mut [T], Error> {
        let p = self.try_alloc_layout(Layout::for_value(s))?.cast::<T>();
        // SAFETY: as in `alloc_slice_copy`.
        unsafe {
            ptr::copy_nonoverlapping(s.as_ptr(), p.as_ptr(), s.len());
            Ok(core::slice::from_raw_parts_mut(p.as_ptr(), s.len()))
        }
    }

    /// Allocates a slice of `len` values, the `i`-th being `f(i)`. Never runs `Drop` (see
    /// [`alloc`](Bump::alloc)).
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let squares = bump.alloc_slice_fill_with(5, |i| i * i);
    /// assert_eq!(squares, &[0, 1, 4, 9, 16]);
    /// ```
    ///
    /// # Panics
    ///
    /// If `len` values of T overflow `isize::MAX` bytes, or as [`alloc`](Bump::alloc).
    #[inline]
    #[track_caller]
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_slice_fill_with<T>(&self, len: usize, f: impl FnMut(usize) -> T) -> &mut [T] {
        self.try_alloc_slice_fill_with(len, f)
            .unwrap_or_else(|e| alloc_failed(e))
    }

    /// Like [`alloc_slice_fill_with`](Bump::alloc_slice_fill_with), but returns an error
    /// instead of panicking.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLayout`] if the slice's size overflows; otherwise as
    /// [`try_alloc`](Bump::try_alloc).
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// assert!(bump.try_alloc_slice_fill_with(usize::MAX, |_| 0u64).is_err());
    /// assert_eq!(bump.try_alloc_slice_fill_with(2, |i| i as u8)?, &[0, 1]);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub fn try_alloc_slice_fill_with<T>(
        &self,
        len: usize,
        mut f: impl FnMut(usize) -> T,
    ) -> Result<&mut [T], Error> {
        const { assert_no_drop::<T>() };
        let layout = Layout::array::<T>(len).map_err(|_| {
            Error::layout(
                len.saturating_mul(size_of::<T>()),
                align_of::<T>(),
                "slice length overflows isize::MAX bytes",
            )
        })?;
        let p = self.try_alloc_layout(layout)?.cast::<T>();
        for i in 0..len {
            // SAFETY: `i < len`, inside the fresh block; T has no drop glue, so a panic in `f`
            // part-way leaves nothing that needs dropping.
            unsafe { p.as_ptr().add(i).write(f(i)) };
        }
        // SAFETY: all `len` values were written above.
        Ok(unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), len) })
    }

    /// Allocates an uninitialised block for `layout`.
    ///
    /// ```
    /// use core::alloc::Layout;
    /// let bump = strata_alloc::Bump::new();
    /// let p = bump.alloc_layout(Layout::from_size_align(100, 64).unwrap());
    /// assert_eq!(p.as_ptr() as usize % 64, 0);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`alloc`](Bump::alloc).
    #[inline(always)]
    #[track_caller]
    pub fn alloc_layout(&self, layout: Layout) -> NonNull<u8> {
        match self.bump_fast(layout) {
            Some(p) => p,
            None => self.alloc_slow_or_panic(layout),
        }
    }

    /// Like [`alloc_layout`](Bump::alloc_layout), but returns an error instead of panicking.
    ///
    /// # Errors
    ///
    /// As [`try_alloc`](Bump::try_alloc).
    ///
    /// ```
    /// use core::alloc::Layout;
    /// let bump = strata_alloc::Bump::new();
    /// let p = bump.try_alloc_layout(Layout::new::<u128>())?;
    /// assert_eq!(p.as_ptr() as usize % align_of::<u128>(), 0);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    #[inline(always)]
    pub fn try_alloc_layout(&self, layout: Layout) -> Result<NonNull<u8>, Error> {
        match self.bump_fast(layout) {
            Some(p) => Ok(p),
            None => self.alloc_slow(layout),
        }
    }

    /// Allocates `size` bytes aligned to `align`, checking both first: the checked entry for
    /// sizes and alignments that have not been through [`Layout`] yet.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLayout`] if `align` is not a power of two or `size` overflows
    /// `isize::MAX` when rounded up to `align`; otherwise as [`try_alloc`](Bump::try_alloc).
    ///
    /// ```
    /// use strata_alloc::{Bump, Error};
    /// let bump = Bump::new();
    /// assert!(matches!(bump.try_alloc_raw(8, 3), Err(Error::InvalidLayout { .. })));
    /// assert!(matches!(bump.try_alloc_raw(usize::MAX - 2, 8), Err(Error::InvalidLayout { .. })));
    /// assert_eq!(bump.try_alloc_raw(24, 8)?.as_ptr() as usize % 8, 0);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn try_alloc_raw(&self, size: usize, align: usize) -> Result<NonNull<u8>, Error> {
        if !align.is_power_of_two() {
            return Err(Error::layout(
                size,
                align,
                "alignment is not a power of two",
            ));
        }
        let layout = Layout::from_size_align(size, align)
            .map_err(|_| Error::layout(size, align, "size overflows isize::MAX when aligned"))?;
        self.try_alloc_layout(layout)
    }

    /// Moves `value` into the arena behind a [`BumpBox`], which runs `value`'s `Drop` when the
    /// box is dropped (the bytes themselves come back with the scope, as always).
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let mut names = bump.alloc_box(vec!["a".to_string()]);
    /// names.push("b".to_string());
    /// assert_eq!(names.len(), 2);
    /// drop(names); // the Vec and its Strings are freed here
    /// ```
    ///
    /// # Panics
    ///
    /// As [`alloc`](Bump::alloc).
    #[inline]
    #[track_caller]
    pub fn alloc_box<T>(&self, value: T) -> BumpBox<'_, T> {
        let p = self.alloc_layout(Layout::new::<T>()).cast::<T>();
        // SAFETY: `p` is a fresh block for a T that nothing else refers to.
        unsafe {
            p.as_ptr().write(value);
            BumpBox::from_raw(p)
        }
    }

    /// Runs `f` on this arena and frees everything `f` allocated when it returns.
    ///
    /// Scopes nest. Nothing allocated inside can escape: `f`'s result cannot borrow from the
    /// `&mut Bump` it is given. Values allocated before the scope are untouched, and
    /// `allocated_bytes()` is back to its old value afterwards.
    ///
    /// If `f` panics, what it allocated stays allocated (unreachable, not unsound) until an
    /// enclosing scope ends, a rewind or a reset. Freeing it on unwind too would need a drop
    /// guard, whose landing pad slows every scope (docs/BENCHMARKS.md has the figures); a
    /// panicking request is the rare case.
    ///
    /// ```
    /// let mut bump = strata_alloc::Bump::new();
    /// let before = bump.allocated_bytes();
    /// let total = bump.scope(|b| {
    ///     let words = b.alloc_slice_copy(&["a", "bb", "ccc"]);
    ///     let outer: usize = words.iter().map(|w| w.len()).sum();
    ///     // `words` is not used past this point, so `b` may be borrowed mutably again.
    ///     let inner = b.scope(|b| b.alloc_str("temporary").len());
    ///     outer + inner
    /// });
    /// assert_eq!(total, 15);
    /// assert_eq!(bump.allocated_bytes(), before);
    /// ```
    ///
    /// ```compile_fail
    /// let mut bump = strata_alloc::Bump::new();
    /// let escaped = bump.scope(|b| b.alloc(1u32)); // error: the reference cannot escape
    /// ```
    #[inline]
    pub fn scope<R>(&mut self, f: impl FnOnce(&mut Bump) -> R) -> R {
        let at = self.checkpoint();
        let result = f(self);
        // A stale or passed checkpoint means `f` already freed more than the scope would (a
        // reset, a rewind to an outer checkpoint, or a swapped-in Bump): nothing left to do.
        let _ = self.try_rewind(at);
        result
    }

    /// The current position, to [`rewind`](Bump::rewind) to later. See [`Checkpoint`].
    ///
    /// ```
    /// let mut bump = strata_alloc::Bump::new();
    /// let cp = bump.checkpoint();
    /// bump.alloc(5u64);
    /// bump.rewind(cp);
    /// assert_eq!(bump.allocated_bytes(), 0);
    /// ```
    #[inline]
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            epoch: self.epoch,
            stamp: self.stamp.get(),
            in_use: self.in_use.get(),
            offset: self.ptr.get().as_ptr().addr() - self.start.get(),
            done: self.done.get(),
        }
    }

    /// Frees everything allocated since `checkpoint` was taken. Chunks emptied by the rewind
    /// are kept for reuse, up to the retention bound (see
    /// [`set_retained_capacity`](Bump::set_retained_capacity)).
    ///
    /// ```
    /// let mut bump = strata_alloc::Bump::new();
    /// let keep = bump.alloc_str("kept").as_ptr();
    /// let cp = bump.checkpoint();
    /// for _ in 0..1000 { bump.alloc([0u8; 100]); }
    /// bump.rewind(cp);
    /// assert_eq!(bump.allocated_bytes(), 4);
    /// # let _ = keep;
    /// ```
    ///
    /// # Panics
    ///
    /// If `checkpoint` is not valid here (see [`try_rewind`](Bump::try_rewind)).
    #[inline]
    #[track_caller]
    pub fn rewind(&mut self, checkpoint: Checkpoint) {
        if let Err(e) = self.try_rewind(checkpoint) {
            panic!("strata-alloc: Bump::rewind: {e}")
        }
    }

    /// Like [`rewind`](Bump::rewind), but returns an error for a checkpoint that is not valid.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPointer`] if the checkpoint comes from another `Bump` or from before the
    /// last [`reset`](Bump::reset), or what it marks was freed since: it lies above the current
    /// position, or a rewind (or a shrink of the last block) went back past the start of the
    /// chunk it was taken in, even if the position has passed it again since. Nothing changes.
    ///
    /// Inside one chunk a checkpoint names an offset: if the position went below it and came
    /// back up without leaving the chunk for an earlier one, rewinding frees what lies above
    /// that offset, as a checkpoint taken there now would.
    ///
    /// ```
    /// let mut bump = strata_alloc::Bump::new();
    /// let old = bump.checkpoint();
    /// bump.alloc(1u8);
    /// let newer = bump.checkpoint();
    /// bump.rewind(old);
    /// assert!(bump.try_rewind(newer).is_err()); // it lies above the pointer now
    /// let other = strata_alloc::Bump::new();
    /// assert!(bump.try_rewind(other.checkpoint()).is_err());
    /// bump.reset();
    /// assert!(bump.try_rewind(old).is_err());
    /// ```
    #[inline]
    pub fn try_rewind(&mut self, checkpoint: Checkpoint) -> Result<(), Error> {
        let cp = checkpoint;
        if cp.epoch != self.epoch {
            return Err(Error::InvalidPointer {
                addr: cp.offset,
                reason: "checkpoint is from another Bump or from before a reset",
            });
        }
        let here = self.ptr.get().as_ptr().addr() - self.start.get();
        let in_use = self.in_use.get();
        if (cp.in_use, cp.offset) > (in_use, here) {
            return Err(Error::InvalidPointer {
                addr: cp.offset,
                reason: "checkpoint lies above the bump pointer; what it marks was already freed",
            });
        }
        if cp.in_use == in_use {
            if cp.stamp != self.stamp.get() {
                return Err(stale(cp));
            }
            // The common case (a scope that stayed in one chunk): `done`, `start` and `end`
            // are unchanged, so only the pointer moves.
            let p = self.ptr.get().as_ptr();
            // SAFETY: `cp.offset <= here`, so the result lies in the current chunk, between
            // its start and the current pointer, with the chunk's provenance.
            self.ptr
                .set(unsafe { NonNull::new_unchecked(p.sub(here - cp.offset)) });
            return Ok(());
        }
        self.rewind_chunks(cp)
    }

    /// Rewinds to a checkpoint taken in an earlier chunk than the current one.
    #[inline(never)]
    fn rewind_chunks(&mut self, cp: Checkpoint) -> Result<(), Error> {
        if cp.in_use == 0 {
            self.done.set(0);
            self.make_empty();
        } else {
            // The chunk must be the one the checkpoint was taken in, never re-entered since
            // (so `cp.done` still sums the chunks below it), and left at or above its offset.
            let c = self
                .chunks
                .get_mut()
                .get(cp.in_use - 1)
                .filter(|c| c.stamp == cp.stamp && cp.offset <= c.used)
                .ok_or(stale(cp))?;
            let (base, cap, stamp) = (c.base(), c.capacity(), c.stamp);
            self.done.set(cp.done);
            self.stamp.set(stamp);
            self.enter(base, cap, cp.offset);
        }
        self.in_use.set(cp.in_use);
        let retained = self.retained;
        trim_spares(self.chunks.get_mut(), cp.in_use, retained);
        Ok(())
    }

    /// Frees everything. Keeps the largest chunks for reuse while their total stays within
    /// the retention bound (see [`set_retained_capacity`](Bump::set_retained_capacity)) and
    /// gives the rest back to the OS. Checkpoints taken before are no longer valid.
    ///
    /// ```
    /// let mut bump = strata_alloc::Bump::new();
    /// for _ in 0..1000 { bump.alloc([1u64; 4]); }
    /// let footprint = bump.chunk_capacity();
    /// bump.reset();
    /// assert_eq!(bump.allocated_bytes(), 0);
    /// assert_eq!(bump.chunk_capacity(), footprint); // kept: well under the bound
    /// bump.alloc(1u8); // reuses a kept chunk, maps nothing
    /// assert_eq!(bump.chunk_capacity(), footprint);
    /// ```
    #[inline]
    pub fn reset(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        let (in_use, retained) = (self.in_use.get(), self.retained);
        let (start, capacity) = (self.start.get(), self.chunk_end.get() - self.start.get());
        if in_use == 1 && self.chunks.get_mut().len() == 1 && capacity <= retained {
            // The steady state of a request loop: one chunk, kept. `done` is already 0, so
            // `end` stays right; only the pointer goes back to the chunk's start.
            let ptr = self.ptr.get();
            // SAFETY: the pointer lies in the current chunk, `ptr - start` bytes from its
            // start, and keeps the chunk's provenance.
            self.ptr
                .set(unsafe { ptr.sub(ptr.as_ptr().addr() - start) });
            return;
        }
        self.reset_chunks();
    }

    #[inline(never)]
    fn reset_chunks(&mut self) {
        self.done.set(0);
        let (in_use, retained) = (self.in_use.get(), self.retained);
        let chunks = self.chunks.get_mut();
        // The round just ended needed several chunks; the next one will likely need as much.
        // Serve it from one chunk of their combined size, so it runs without a single slow
        // path and the following resets take the one-chunk shortcut above.
        let spread: usize = chunks[..in_use].iter().map(Chunk::capacity).sum();
        if in_use > 1 && spread <= retained {
            // (A mapped chunk rounds up to pages, which may pass the bound.)
            let merged = Chunk::new(spread).ok().filter(|c| c.capacity() <= retained);
            if let Some(merged) = merged {
                chunks.drain(..in_use);
                chunks.insert(0, merged);
                let next = self.next_size.get().max(spread.saturating_mul(2));
                self.next_size.set(next.min(MAX_CHUNK));
            }
        }
        trim_spares(chunks, 0, retained);
        // trim_spares sorted the kept chunks largest first: start the next round in the
        // largest, so a steady workload stays in one chunk.
        match chunks.first() {
            Some(c) => {
                let (base, cap) = (c.base(), c.capacity());
                self.in_use.set(1);
                self.restamp_current();
                self.enter(base, cap, 0);
            }
            None => {
                self.in_use.set(0);
                self.make_empty();
            }
        }
    }

    /// Bytes handed out and not yet freed by a scope, rewind or reset (alignment padding
    /// included; the unused tail of a chunk left for a new one is not).
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// bump.alloc(1u8);
    /// bump.alloc(2u32); // 3 bytes of padding first
    /// assert_eq!(bump.allocated_bytes(), 8);
    /// ```
    #[inline]
    pub fn allocated_bytes(&self) -> usize {
        self.done.get() + (self.ptr.get().as_ptr().addr() - self.start.get())
    }

    /// Total bytes of all chunks this arena holds, in use and spare: its memory footprint.
    /// (Unlike bumpalo's method of the same name, this is not the room left in one chunk.)
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// assert_eq!(bump.chunk_capacity(), 0);
    /// bump.alloc(0u8);
    /// assert!(bump.chunk_capacity() >= strata_alloc::page_size());
    /// ```
    pub fn chunk_capacity(&self) -> usize {
        self.with_chunks(|chunks| chunks.iter().map(Chunk::capacity).sum())
    }

    /// Lists the chunks, in-use ones first (oldest first), then spares.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// bump.alloc_slice_copy(&[0u8; 10_000]);
    /// bump.alloc_slice_copy(&[0u8; 100_000]); // too large for the next chunk: its own
    /// let used: usize = bump.chunks().map(|c| c.used).sum();
    /// assert_eq!(used, bump.allocated_bytes());
    /// assert!(bump.chunks().count() >= 2);
    /// ```
    pub fn chunks(&self) -> Chunks<'_> {
        Chunks {
            bump: self,
            index: 0,
        }
    }

    /// Caps [`allocated_bytes`](Bump::allocated_bytes) at `limit` (`None`: no cap). Past it,
    /// `try_*` forms and the `Allocator` trait return an error and plain forms panic; the
    /// arena stays usable. A limit below the current usage just stops further allocation.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// bump.set_allocation_limit(Some(100));
    /// assert!(bump.try_alloc([0u8; 64]).is_ok());
    /// assert!(bump.try_alloc([0u8; 64]).is_err());
    /// assert!(bump.try_alloc([0u8; 36]).is_ok());
    /// bump.set_allocation_limit(None);
    /// assert!(bump.try_alloc([0u8; 64]).is_ok());
    /// ```
    pub fn set_allocation_limit(&self, limit: Option<usize>) {
        self.limit.set(limit.unwrap_or(usize::MAX));
        self.update_end();
    }

    /// The limit set by [`set_allocation_limit`](Bump::set_allocation_limit).
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// assert_eq!(bump.allocation_limit(), None);
    /// bump.set_allocation_limit(Some(1 << 20));
    /// assert_eq!(bump.allocation_limit(), Some(1 << 20));
    /// ```
    pub fn allocation_limit(&self) -> Option<usize> {
        Some(self.limit.get()).filter(|&l| l != usize::MAX)
    }

    /// Sets how many bytes of emptied chunks [`reset`](Bump::reset) and
    /// [`rewind`](Bump::rewind) keep for reuse (default [`DEFAULT_RETAINED`]); the largest
    /// chunks that fit are kept, the others are given back to the OS.
    ///
    /// ```
    /// let mut bump = strata_alloc::Bump::new();
    /// bump.alloc_slice_copy(&[0u8; 100_000]);
    /// bump.set_retained_capacity(0);
    /// bump.reset();
    /// assert_eq!(bump.chunk_capacity(), 0);
    /// ```
    pub fn set_retained_capacity(&mut self, bytes: usize) {
        self.retained = bytes;
    }

    // ---- internals -------------------------------------------------------------------------

    /// The fast path: align up, compare, bump. Everything else is in `alloc_slow`.
    ///
    /// The data dependency from one allocation to the next (load the pointer, compute the new
    /// one, store it) is what limits a loop of allocations, so it is kept to an add and an
    /// and: when the size is a multiple of the alignment (every Rust type, every array),
    /// rounding the *end* up to the alignment also aligns the start.
    #[inline(always)]
    fn bump_fast(&self, layout: Layout) -> Option<NonNull<u8>> {
        let ptr = self.ptr.get();
        let addr = ptr.as_ptr().addr();
        let (size, mask) = (layout.size(), layout.align() - 1);
        // `size + mask` cannot overflow: a Layout keeps both below isize::MAX + 1.
        let new_end = if size & mask == 0 {
            add_within_space(addr, size + mask)? & !mask
        } else {
            add_within_space(add_within_space(addr, mask)? & !mask, size)?
        };
        if new_end > self.end.get() {
            return None;
        }
        // `addr <= new_end - size` (rounding up never goes below `addr + size`), and the block
        // start `new_end - size` is aligned in both branches.
        // SAFETY: `addr <= new_end - size <= new_end <= end`: both pointers stay inside the
        // current chunk (or equal `ptr` for a zero-sized request) and keep its provenance.
        unsafe {
            self.ptr.set(ptr.add(new_end - addr));
            Some(ptr.add(new_end - size - addr))
        }
    }

    #[cold]
    #[inline(never)]
    #[track_caller]
    fn alloc_slow_or_panic(&self, layout: Layout) -> NonNull<u8> {
        self.alloc_slow(layout).unwrap_or_else(|e| alloc_failed(e))
    }

    /// Serves what the current chunk cannot: zero-sized requests, the limit, a new chunk.
    /// Changes nothing when it fails.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, layout: Layout) -> Result<NonNull<u8>, Error> {
        let size = layout.size();
        if size == 0 {
            return Ok(dangling(layout.align()));
        }
        let used_here = self.ptr.get().as_ptr().addr() - self.start.get();
        let remaining = self.limit.get().saturating_sub(self.done.get() + used_here);
        // Every chunk starts at least `CHUNK_ALIGN`-aligned, so only larger alignments need
        // slack.
        let slack = layout.align().saturating_sub(CHUNK_ALIGN);
        let needed = size.checked_add(slack).ok_or(Error::layout(
            size,
            layout.align(),
            "size overflows when aligned",
        ))?;
        if needed > remaining {
            return Err(Error::oom(size, remaining));
        }
        let idx = self.in_use.get();
        let next = self.next_size.get();
        let (base, cap) = self.with_chunks(|chunks| -> Result<_, Error> {
            if let Some(j) = (idx..chunks.len()).find(|&j| chunks[j].capacity() >= needed) {
                chunks.swap(idx, j);
            } else {
                // Never map far more than the limit could let us use.
                let size = needed.max(next.min(remaining));
                let chunk = Chunk::new(size)?;
                if chunk.capacity() <= MAX_CHUNK {
                    self.next_size
                        .set((chunk.capacity().max(next) * 2).min(MAX_CHUNK));
                }
                chunks.insert(idx, chunk);
            }
            if idx > 0 {
                chunks[idx - 1].used = used_here;
            }
            Ok((chunks[idx].base(), chunks[idx].capacity()))
        })?;
        self.done.set(self.done.get() + used_here);
        self.in_use.set(idx + 1);
        self.restamp_current();
        self.enter(base, cap, 0);
        // The chunk holds `needed` bytes and the limit leaves `remaining >= needed`.
        self.bump_fast(layout).ok_or(Error::oom(size, remaining))
    }

    /// Gives the current chunk (`chunks[in_use - 1]`), just entered from an earlier one, a new
    /// stamp: checkpoints taken in it before are stale from now on.
    fn restamp_current(&self) {
        let stamp = self.stamps.get() + 1;
        self.stamps.set(stamp);
        self.stamp.set(stamp);
        let idx = self.in_use.get().wrapping_sub(1);
        self.with_chunks(|chunks| {
            if let Some(c) = chunks.get_mut(idx) {
                c.stamp = stamp;
            }
        });
    }

    /// Makes the chunk at `base` (of `cap` bytes) current with the pointer at `offset`.
    /// `done` and `in_use` must already describe the chunks before it.
    fn enter(&self, base: NonNull<u8>, cap: usize, offset: usize) {
        debug_assert!(offset <= cap);
        let start = base.as_ptr().addr();
        self.start.set(start);
        self.chunk_end.set(start + cap);
        // SAFETY: `offset <= cap`: inside the chunk or one past its end.
        self.ptr.set(unsafe { base.add(offset) });
        self.update_end();
    }

    /// Recomputes `end` from the chunk end and the limit. It may fall below `ptr` when the
    /// limit was set under the current usage; the fast path then fails until enough is freed.
    fn update_end(&self) {
        let start = self.start.get();
        let budget = self.limit.get().saturating_sub(self.done.get());
        self.end
            .set(self.chunk_end.get().min(start.saturating_add(budget)));
    }

    fn make_empty(&self) {
        self.stamp.set(0);
        let empty = NonNull::<u8>::dangling();
        let addr = empty.as_ptr().addr();
        self.ptr.set(empty);
        self.start.set(addr);
        self.chunk_end.set(addr);
        self.end.set(addr);
    }

    /// Runs `f` on the chunk list. `f` must be crate code that neither calls user code nor
    /// re-enters `with_chunks`, so the `&mut` it gets is the only reference to the list.
    #[inline]
    fn with_chunks<R>(&self, f: impl FnOnce(&mut std::vec::Vec<Chunk>) -> R) -> R {
        // SAFETY: `Bump` is !Sync, so no other thread can be here; within this thread every
        // access goes through this function with closures that do not re-enter it (see
        // above), so this is the only live reference to the list.
        f(unsafe { &mut *self.chunks.get() })
    }

    /// After a grow moved the last block into a new chunk: if the chunk it left is now empty,
    /// give it back rather than keep a dead copy mapped.
    fn release_emptied_previous(&self) {
        let in_use = self.in_use.get();
        if in_use < 2 {
            return;
        }
        let released = self.with_chunks(|chunks| {
            if chunks[in_use - 2].used == 0 {
                // Checkpoints taken at the start of the emptied chunk now name the start of
                // the current one, the same position: they inherit its stamp.
                let stamp = chunks.remove(in_use - 2).stamp;
                chunks[in_use - 2].stamp = stamp;
                self.stamp.set(stamp);
                true
            } else {
                false
            }
        });
        if released {
            self.in_use.set(in_use - 1);
        }
    }
}

/// `addr + n` for an address inside (or one past) a chunk and `n <= isize::MAX`, or `None` on
/// overflow. On 64-bit targets `Chunk::new` only accepts chunks that end at or below
/// `isize::MAX`, so the sum cannot overflow and the check (one compare and branch on the
/// fast path) is left out; elsewhere it is kept.
#[inline(always)]
fn add_within_space(addr: usize, n: usize) -> Option<usize> {
    if cfg!(target_pointer_width = "64") {
        debug_assert!(addr.checked_add(n).is_some());
        Some(addr + n)
    } else {
        addr.checked_add(n)
    }
}

/// Keeps the spares `chunks[from..]` largest first while their total fits in `retained`,
/// releasing the others. Leaves the kept spares sorted largest first.
fn trim_spares(chunks: &mut std::vec::Vec<Chunk>, from: usize, retained: usize) {
    if chunks.len() <= from {
        return;
    }
    chunks[from..].sort_unstable_by_key(|c| core::cmp::Reverse(c.capacity()));
    let mut index = 0;
    let mut kept = 0usize;
    chunks.retain(|c| {
        let keep = index < from || kept + c.capacity() <= retained;
        if index >= from && keep {
            kept += c.capacity();
        }
        index += 1;
        keep
    });
}

/// The error for a checkpoint whose memory was freed since it was taken.
#[cold]
fn stale(cp: Checkpoint) -> Error {
    Error::InvalidPointer {
        addr: cp.offset,
        reason: "checkpoint is stale: what it marks was freed by an earlier rewind",
    }
}

/// Compile-time refusal of types with drop glue in the methods that never run `Drop`.
const fn assert_no_drop<T>() {
    assert!(
        !core::mem::needs_drop::<T>(),
        "Bump::alloc never runs Drop: use Bump::alloc_box for a value that must be dropped, \
         or wrap it in ManuallyDrop to leak it on purpose"
    );
}

#[cfg(test)]
mod tests;
