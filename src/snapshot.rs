//! A printable map of an allocator: every block with its offset, size and state, then the
//! free lists.
//!
//! A `Snapshot` owns what it shows: it is collected in one go and printed later, so printing
//! never holds a borrow of the allocator while a formatter (which may allocate) runs.

use core::fmt;

use crate::{BlockInfo, BlockState, Stats};

/// One non-empty free list in a [`Snapshot`].
///
/// ```
/// use strata_alloc::Arena;
/// let arena = Arena::new()?;
/// let snap = arena.snapshot();
/// let list = &snap.free_lists[0]; // a fresh arena: one free block, the whole span
/// assert_eq!(list.blocks.len(), 1);
/// let (offset, size) = list.blocks[0];
/// assert!(offset < 64 && size >= list.min_size);
/// # Ok::<(), strata_alloc::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeList {
    /// Index of the bin.
    pub bin: usize,
    /// Smallest block size that belongs on the bin.
    pub min_size: usize,
    /// The free blocks on it, in list order, as `(offset, size)`.
    pub blocks: Vec<(usize, usize)>,
}

/// A printable map of an allocator, taken by `snapshot()`.
///
/// ```
/// use strata_alloc::Arena;
///
/// let arena = Arena::new()?;
/// let a = arena.alloc(2000)?;
/// let _b = arena.alloc(3000)?;
/// // SAFETY: `a` came from this arena and is freed once.
/// unsafe { arena.free(a)? };
/// let snap = arena.snapshot();
/// assert_eq!(snap.blocks.len(), 3); // a freed hole, b, and the rest
/// println!("{snap}");
/// # Ok::<(), strata_alloc::Error>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Snapshot {
    /// What was mapped ("Arena", "Heap").
    pub title: &'static str,
    /// The counters at the time of the snapshot.
    pub stats: Stats,
    /// Every block in address order (mapped large blocks last).
    pub blocks: Vec<BlockInfo>,
    /// The non-empty free lists.
    pub free_lists: Vec<FreeList>,
    /// The non-empty quick lists: small freed blocks of one exact size each, waiting to be
    /// reused before they are merged with their neighbours.
    pub quick_lists: Vec<FreeList>,
    /// Set if the walk stopped early at a damaged block (its offset).
    pub damaged_at: Option<usize>,
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "== {} ==", self.title)?;
        writeln!(f, "{}", self.stats)?;
        writeln!(f, "{:>12} {:>10} {:>10}  state", "offset", "size", "usable")?;
        for b in &self.blocks {
            let state = match b.state {
                BlockState::Allocated => "allocated",
                BlockState::Free => "free",
                BlockState::Mapped => "mapped",
                BlockState::Quarantined => "quarantined",
            };
            writeln!(
                f,
                "{:>12} {:>10} {:>10}  {state}",
                b.offset, b.size, b.usable
            )?;
        }
        if let Some(at) = self.damaged_at {
            writeln!(f, "  (walk stopped at offset {at}: damaged block)")?;
        }
        writeln!(f, "free lists:")?;
        if self.free_lists.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for list in &self.free_lists {
            write!(f, "  bin {:>3} (>= {:>6} B):", list.bin, list.min_size)?;
            for (offset, size) in &list.blocks {
                write!(f, " {offset}+{size}")?;
            }
            writeln!(f)?;
        }
        if !self.quick_lists.is_empty() {
            writeln!(f, "quick lists (freed, not yet merged):")?;
        }
        for list in &self.quick_lists {
            write!(f, "  {:>6} B:", list.min_size)?;
            for (offset, _) in &list.blocks {
                write!(f, " {offset}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
