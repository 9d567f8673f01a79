//! `Arena`: the block engine over one fixed region (64 KiB by default).
//!
//! The arena maps its memory once and never grows: when no free block fits, the request fails
//! with [`Error::OutOfMemory`] and everything else stays as it was. Its start map lives in a
//! second, separate mapping, out of reach of overflows from the blocks.

use core::cell::UnsafeCell;
use core::ptr::NonNull;

use crate::backend::{Backend, check_layout};
use crate::engine::{Engine, Resize};
use crate::{BlockInfo, Error, Region, Snapshot, Stats};

/// A fixed-size arena with `alloc`, `free` and `realloc`, split and coalesce, and certain
/// detection of double frees, foreign and interior pointers.
///
/// All methods take `&self`, so collections can live in the arena while it is used; the arena
/// is `Send` but not `Sync` (use a [`LockedHeap`](crate::LockedHeap) to share a heap between
/// threads).
///
/// Freed small blocks are kept for the next request of their size, so a temporary block
/// (allocated, used and freed) is handed out again without a search or a merge
/// (docs/ARCHITECTURE.md, quick stacks).
///
/// ```
/// let arena = strata_alloc::Arena::new()?;
/// let kept = arena.alloc(64)?;
/// let mut seen = Vec::new();
/// for _ in 0..3 {
///     let scratch = arena.alloc(200)?;
///     seen.push(scratch);
///     // SAFETY: `scratch` is live and not used after this.
///     unsafe { arena.free(scratch)? };
/// }
/// assert!(seen.iter().all(|&p| p == seen[0]), "the same block every time");
/// let s = arena.stats();
/// assert_eq!((s.allocations, s.frees, s.live_blocks), (4, 3, 1));
/// # let _ = kept;
/// # Ok::<(), strata_alloc::Error>(())
/// ```
///
/// # Example
///
/// ```
/// use allocator_api2::vec::Vec;
/// use strata_alloc::Arena;
///
/// let arena = Arena::new()?;
/// let mut v = Vec::new_in(&arena);
/// v.extend_from_slice(b"hello");
/// assert_eq!(arena.stats().live_blocks, 1);
/// drop(v);
/// assert_eq!(arena.stats().live_blocks, 0);
/// arena.check()?;
/// # Ok::<(), strata_alloc::Error>(())
/// ```
pub struct Arena {
    core: UnsafeCell<ArenaCore>,
}

pub(crate) struct ArenaCore {
    engine: Engine,
    capacity: usize,
    // The engine points into these; they are dropped (unmapped) after it.
    _blocks: Region,
    _map: Region,
}

// SAFETY: the arena uniquely owns its mappings and the engine's raw pointers point only into
// them, so moving the whole arena to another thread moves that ownership with it.
unsafe impl Send for Arena {}

impl Arena {
    /// Capacity of [`Arena::new`]: 64 KiB.
    ///
    /// ```
    /// use strata_alloc::Arena;
    /// assert_eq!(Arena::new()?.capacity(), Arena::DEFAULT_CAPACITY);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub const DEFAULT_CAPACITY: usize = 64 * 1024;

    /// An arena of [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY) bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if the OS refuses the mapping.
    ///
    /// ```
    /// let arena = strata_alloc::Arena::new()?;
    /// assert_eq!(arena.capacity(), 64 * 1024);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn new() -> Result<Arena, Error> {
        Arena::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// An arena of `bytes` bytes, rounded up to whole pages.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLayout`] for 0 or an overflowing size; [`Error::Os`] if the OS refuses.
    ///
    /// ```
    /// let arena = strata_alloc::Arena::with_capacity(1 << 20)?;
    /// assert_eq!(arena.capacity(), 1 << 20);
    /// assert!(arena.alloc(900_000).is_ok());
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn with_capacity(bytes: usize) -> Result<Arena, Error> {
        let blocks = Region::reserve(bytes)?;
        let capacity = blocks.capacity();
        let (map, map_ptr) = crate::source::map::reserve_map(capacity)?;
        // Both mappings live in the same ArenaCore as the engine and are dropped after it.
        // SAFETY: `blocks` is a fresh page-aligned mapping of `capacity` bytes only this engine
        // touches; `map` is fresh, zeroed and sized for it by `reserve_map`.
        let mut engine = unsafe { Engine::new(blocks.base(), capacity, map_ptr) };
        engine.grow_span(blocks.base().as_ptr() as usize + capacity)?;
        // A fixed arena never grows: packing decides how much it holds, and its lists are
        // short and in cache, so it always looks further for the smallest fitting block.
        engine.set_best_fit(true);
        Ok(Arena {
            core: UnsafeCell::new(ArenaCore {
                engine,
                capacity,
                _blocks: blocks,
                _map: map,
            }),
        })
    }

    /// The core, for the façade's checked API (`crate::facade::checked_api`).
    #[inline(always)]
    pub(crate) fn reach<R>(&self, f: impl FnOnce(&mut ArenaCore) -> R) -> Result<R, Error> {
        Ok(self.with(f))
    }

    /// As `reach`: an arena always has its core.
    #[inline(always)]
    pub(crate) fn reach_existing<R>(&self, f: impl FnOnce(&mut ArenaCore) -> R) -> Option<R> {
        Some(self.with(f))
    }

    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut ArenaCore) -> R) -> R {
        // SAFETY: `Arena` is not `Sync`, so only this thread can be here, and `f` is always
        // crate code that does not call back into the arena, so this `&mut` is the only
        // reference to the core while it lives.
        f(unsafe { &mut *self.core.get() })
    }

    /// Bytes of block space (the mapping's size).
    ///
    /// ```
    /// assert_eq!(strata_alloc::Arena::with_capacity(10_000)?.capacity() % 4096, 0);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.with(|c| c.capacity)
    }

    /// Every block in address order, allocated and free. The walk validates each block as
    /// it goes and stops at damage; if the arena changes during the walk, the walk continues
    /// from where it was only if that is still a block.
    ///
    /// ```
    /// use strata_alloc::{Arena, BlockState};
    /// let arena = Arena::new()?;
    /// let _a = arena.alloc(10)?;
    /// let states: Vec<_> = arena.blocks().map(|b| b.state).collect();
    /// assert_eq!(states, [BlockState::Allocated, BlockState::Free]);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn blocks(&self) -> impl Iterator<Item = BlockInfo> + '_ {
        let mut next = self.with(|c| c.engine.first_block());
        core::iter::from_fn(move || {
            let (info, after) = self.with(|c| c.engine.block_at(next))?;
            next = after;
            Some(info)
        })
    }

    /// The live blocks: what would leak if the arena were dropped now.
    ///
    /// ```
    /// let arena = strata_alloc::Arena::new()?;
    /// let p = arena.alloc(10)?;
    /// assert_eq!(arena.leaks().next().unwrap().addr, p.as_ptr() as usize);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn leaks(&self) -> impl Iterator<Item = BlockInfo> + '_ {
        self.blocks()
            .filter(|b| b.state == crate::BlockState::Allocated)
    }

    /// A printable map of the arena: every block's offset, size and state, and the free lists.
    ///
    /// ```
    /// let arena = strata_alloc::Arena::new()?;
    /// let _p = arena.alloc(10)?;
    /// let text = arena.snapshot().to_string();
    /// assert!(text.contains("allocated") && text.contains("free lists"));
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn snapshot(&self) -> Snapshot {
        self.with(|c| {
            let stats = c.stats();
            c.engine.snapshot("Arena", stats)
        })
    }
}

impl ArenaCore {
    /// An engine allocation's outcome as the backend's: no free block fits is out of memory.
    #[inline(always)]
    fn found(
        &self,
        r: Result<Option<NonNull<u8>>, Error>,
        size: usize,
    ) -> Result<NonNull<u8>, Error> {
        match r? {
            Some(p) => Ok(p),
            None => Err(Error::oom(size, self.engine.largest_free())),
        }
    }

    fn stats(&self) -> Stats {
        let mut s = self.engine.stats();
        s.managed_bytes = self.capacity;
        s
    }
}

impl Backend for ArenaCore {
    const NAME: &'static str = "Arena";

    #[inline(always)]
    fn alloc(&mut self, size: usize, align: usize) -> Result<NonNull<u8>, Error> {
        let r = self.engine.alloc(size, align);
        self.found(r, size)
    }

    fn alloc_zeroed(&mut self, size: usize, align: usize) -> Result<NonNull<u8>, Error> {
        let clean = self.engine.clean_mark();
        let p = self.alloc(size, align)?;
        self.engine.clear_for_calloc(p, size, clean);
        Ok(p)
    }

    #[inline(always)]
    fn free(&mut self, p: NonNull<u8>) -> Result<(), Error> {
        self.engine.free(p).map(|_| ())
    }

    const FAST_PATHS: bool = true;

    #[inline(always)]
    fn alloc_fast(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        self.engine.alloc_cached(size, align)
    }

    #[inline(always)]
    fn alloc_missed(&mut self, size: usize, align: usize) -> Result<NonNull<u8>, Error> {
        let r = self.engine.alloc_missed(size, align);
        self.found(r, size)
    }

    #[inline(always)]
    fn free_fast(&mut self, p: NonNull<u8>) -> bool {
        self.engine.free_cached(p)
    }

    fn usable_size(&mut self, p: NonNull<u8>) -> Result<usize, Error> {
        self.engine.usable_size(p)
    }

    fn reshape(
        &mut self,
        p: NonNull<u8>,
        new_size: usize,
        align: usize,
    ) -> Result<(NonNull<u8>, bool), Error> {
        // Judged once: what the check established travels on as `live`.
        let live = self.engine.live(p)?;
        check_layout(new_size, align, Self::MAX_ALIGN)?;
        let old = live.usable();
        if (p.as_ptr() as usize) % align == 0 {
            // SAFETY: `live` was made by this engine just now and its block has not changed.
            if let Resize::Done = unsafe { self.engine.resize_live(live, new_size) }? {
                return Ok((p, true));
            }
        }
        match self.alloc(new_size, align) {
            Ok(q) => {
                // SAFETY: both blocks are live and distinct; `old` bytes are readable at `p`
                // and the smaller size fits at `q`.
                unsafe {
                    core::ptr::copy_nonoverlapping(p.as_ptr(), q.as_ptr(), old.min(new_size))
                };
                // SAFETY: a resize that did not finish and an allocation elsewhere leave a
                // live block as it was, so `live` still describes it.
                unsafe { self.engine.free_live(live) }?;
                Ok((q, false))
            }
            // Nothing free elsewhere is large enough; the block's own free neighbours merged
            // with it may be.
            Err(e @ Error::OutOfMemory { .. }) if align <= 16 => {
                // SAFETY: as for `free_live` above.
                let moved = unsafe {
                    self.engine
                        .resize_backward_live(live, new_size, old.min(new_size))
                }?;
                moved.map(|q| (q, false)).ok_or(e)
            }
            Err(e) => Err(e),
        }
    }

    fn stats_mut(&mut self) -> &mut Stats {
        &mut self.engine.counters
    }

    fn stats(&self) -> Stats {
        ArenaCore::stats(self)
    }

    fn check(&mut self) -> Result<(), Error> {
        self.engine.check()
    }
}

impl core::fmt::Debug for Arena {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let s = self.stats();
        f.debug_struct("Arena")
            .field("capacity", &self.capacity())
            .field("live_blocks", &s.live_blocks)
            .field("bytes_in_use", &s.bytes_in_use)
            .finish()
    }
}
