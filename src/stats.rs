//! Counters and the block walk shared by every allocator.
//!
//! One [`Stats`] type serves every allocator; fields that do not apply to an allocator stay 0
//! (an [`Arena`](crate::Arena) never grows its break, a [`Bump`](crate::Bump) never coalesces).

use core::fmt;

/// A snapshot of an allocator's counters, taken by `stats()`.
///
/// Counts (`allocations`, `frees`, ...) accumulate over the allocator's life; byte figures
/// (`bytes_in_use`, `free_bytes`, ...) describe the moment of the snapshot.
///
/// # Example
///
/// ```
/// use strata_alloc::Arena;
///
/// let arena = Arena::new()?;
/// let p = arena.alloc(100)?;
/// let s = arena.stats();
/// assert_eq!(s.allocations, 1);
/// assert_eq!(s.live_blocks, 1);
/// assert!(s.bytes_in_use >= 100);
/// # unsafe { arena.free(p)? };
/// # Ok::<(), strata_alloc::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Successful allocations (including those made by `realloc` when it had to move).
    pub allocations: u64,
    /// Successful frees (including those made by `realloc` when it moved).
    pub frees: u64,
    /// Successful `realloc` calls, moved or not.
    pub reallocations: u64,
    /// `realloc` calls served without moving the block.
    pub reallocations_in_place: u64,
    /// Usable bytes of the live blocks (what callers may write), now.
    pub bytes_in_use: usize,
    /// The highest `bytes_in_use` ever reached.
    pub peak_bytes_in_use: usize,
    /// Blocks currently allocated.
    pub live_blocks: usize,
    /// Free blocks currently on the free lists or the quick lists.
    pub free_blocks: usize,
    /// Bytes in free blocks (headers included), now.
    pub free_bytes: usize,
    /// Bytes the allocator manages for blocks (the arena capacity, the heap's current break,
    /// plus mapped large blocks), now.
    pub managed_bytes: usize,
    /// Times a free block was split to serve a smaller request.
    pub splits: u64,
    /// Times a freed block was merged with a free neighbour.
    pub coalesces: u64,
    /// Requests that failed for lack of memory or an invalid layout.
    pub failed_requests: u64,
    /// Double frees, foreign or interior pointers and corrupted headers caught.
    pub misuses_caught: u64,
    /// Pieces of free memory found damaged (a use after free wrote into them) and set aside
    /// for good: never handed out, never merged, reported by `check()` and the snapshot.
    pub quarantined_blocks: usize,
    /// Bytes of those pieces, headers included (not counted in `free_bytes`).
    pub quarantined_bytes: usize,
    /// Times the break was moved up to get more memory (Heap only).
    pub break_growths: u64,
    /// Times the break was moved down to give memory back (Heap only).
    pub break_shrinks: u64,
    /// Large blocks currently living in their own mapping (Heap only).
    pub mapped_blocks: usize,
    /// Bytes of those mappings (Heap only).
    pub mapped_bytes: usize,
    /// Bytes ever taken from the OS: break growth plus large mappings.
    pub bytes_from_os: u64,
    /// Bytes ever given back to the OS: pages released on shrink or trim, plus unmapped blocks.
    pub bytes_to_os: u64,
    /// The most the heap may hold, break and mapped blocks together: its configured
    /// `max_size`, or less once the OS refused to reserve that much address space and the
    /// heap settled for what it could reserve (Heap only; 0 elsewhere).
    pub max_size: usize,
}

impl Stats {
    /// Fraction of the managed bytes that are live usable bytes, between 0.0 and 1.0.
    ///
    /// ```
    /// # use strata_alloc::Stats;
    /// assert_eq!(Stats::default().utilisation(), 0.0);
    /// ```
    pub fn utilisation(&self) -> f64 {
        if self.managed_bytes == 0 {
            0.0
        } else {
            self.bytes_in_use as f64 / self.managed_bytes as f64
        }
    }

    pub(crate) fn note_in_use(&mut self) {
        if self.bytes_in_use > self.peak_bytes_in_use {
            self.peak_bytes_in_use = self.bytes_in_use;
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "live blocks {:>8}   in use {:>10} B   peak {:>10} B   managed {:>10} B ({:.1}% used)",
            self.live_blocks,
            self.bytes_in_use,
            self.peak_bytes_in_use,
            self.managed_bytes,
            self.utilisation() * 100.0
        )?;
        writeln!(
            f,
            "free blocks {:>8}   free   {:>10} B   allocations {} frees {} reallocs {} ({} in place)",
            self.free_blocks,
            self.free_bytes,
            self.allocations,
            self.frees,
            self.reallocations,
            self.reallocations_in_place
        )?;
        write!(
            f,
            "splits {} coalesces {} failed {} misuses {}",
            self.splits, self.coalesces, self.failed_requests, self.misuses_caught
        )?;
        if self.quarantined_blocks > 0 {
            write!(
                f,
                "   quarantined {} blocks {} B",
                self.quarantined_blocks, self.quarantined_bytes
            )?;
        }
        if self.break_growths + self.break_shrinks + self.bytes_from_os > 0 {
            write!(
                f,
                "\nbreak +{} -{}   mapped {} blocks {} B   from OS {} B   to OS {} B",
                self.break_growths,
                self.break_shrinks,
                self.mapped_blocks,
                self.mapped_bytes,
                self.bytes_from_os,
                self.bytes_to_os
            )?;
        }
        Ok(())
    }
}

/// State of one block in a block walk.
///
/// ```
/// use strata_alloc::{Arena, BlockState};
/// let arena = Arena::new()?;
/// let p = arena.alloc(64)?;
/// let states: Vec<BlockState> = arena.blocks().map(|b| b.state).collect();
/// assert_eq!(states, [BlockState::Allocated, BlockState::Free]);
/// # unsafe { arena.free(p)? };
/// # Ok::<(), strata_alloc::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockState {
    /// Handed out and not yet freed.
    Allocated,
    /// Free: on a free list, or (small blocks) on a quick list waiting to be reused.
    Free,
    /// A large block living in its own mapping (Heap only).
    Mapped,
    /// Free memory found damaged and set aside: never handed out again (see
    /// [`Stats::quarantined_blocks`]).
    Quarantined,
}

/// One block as seen by a block walk (`blocks()`).
///
/// ```
/// use strata_alloc::{Arena, BlockState};
///
/// let arena = Arena::new()?;
/// let p = arena.alloc(40)?;
/// let info = arena.blocks().find(|b| b.state == BlockState::Allocated).unwrap();
/// assert_eq!(info.addr, p.as_ptr() as usize);
/// assert!(info.usable >= 40);
/// # Ok::<(), strata_alloc::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockInfo {
    /// Address of the block's payload (what `alloc` returned, for an allocated block).
    pub addr: usize,
    /// Offset of the block's first byte (its header) from the start of the allocator's memory.
    pub offset: usize,
    /// Bytes the block occupies, header included.
    pub size: usize,
    /// Bytes a caller may use from `addr`.
    pub usable: usize,
    /// Allocated, free, mapped or quarantined.
    pub state: BlockState,
}
