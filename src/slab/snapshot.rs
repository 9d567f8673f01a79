//! `SlabSnapshot`: a printable copy of a pool's lists, batches and bitmaps.
//!
//! The snapshot copies everything it prints when it is taken, so formatting it never reads the
//! pool: a `fmt::Write` that allocates from the very pool being printed stays sound, and the
//! printout shows one consistent moment.

use core::fmt;

use crate::Stats;

/// One batch as copied into a snapshot.
#[derive(Debug, Clone)]
pub(super) struct BatchView {
    pub(super) addr: usize,
    pub(super) slots: usize,
    pub(super) used: usize,
    /// The bitmap words that cover slots (tail words past the last slot are left out).
    pub(super) bits: Vec<u64>,
}

/// One size's batch list as copied into a snapshot.
#[derive(Debug, Clone)]
pub(super) struct ListView {
    pub(super) slot_size: usize,
    pub(super) batches: Vec<BatchView>,
}

/// A copy of a [`SlabPool`](crate::SlabPool)'s structure, taken by
/// [`SlabPool::snapshot`](crate::SlabPool::snapshot): the list of sizes in the order they were
/// first requested, each size's list of batches, and each batch's bitmap. Its `Display` is the
/// classic slab report: one line per list and per batch, then the bitmap 64 slots per row
/// (`#` taken, `.` free), with trailing all-free rows folded into one line.
///
/// ```
/// use strata_alloc::SlabPool;
///
/// let pool = SlabPool::new();
/// let a = pool.alloc(12)?;
/// let b = pool.alloc(28)?;
/// let snap = pool.snapshot();
/// assert_eq!(snap.lists(), 2);
/// assert_eq!(snap.batches(), 2);
/// let text = snap.to_string();
/// assert!(text.contains("16-byte slots"));
/// assert!(text.contains("32-byte slots"));
/// println!("{text}");
/// # // SAFETY: the pointer came from this pool and is freed once.
/// # unsafe { pool.free(a)?; pool.free(b)?; }
/// # Ok::<(), strata_alloc::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SlabSnapshot {
    pub(super) lists: Vec<ListView>,
    pub(super) stats: Stats,
}

impl SlabSnapshot {
    /// Number of size lists (sizes requested at least once since the pool was made or cleared).
    ///
    /// ```
    /// let pool = strata_alloc::SlabPool::new();
    /// assert_eq!(pool.snapshot().lists(), 0);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn lists(&self) -> usize {
        self.lists.len()
    }

    /// Number of batches across all lists.
    ///
    /// ```
    /// let pool = strata_alloc::SlabPool::new();
    /// let p = pool.alloc(100)?;
    /// assert_eq!(pool.snapshot().batches(), 1);
    /// # // SAFETY: the pointer came from this pool and is freed once.
    /// # unsafe { pool.free(p)? };
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn batches(&self) -> usize {
        self.lists.iter().map(|l| l.batches.len()).sum()
    }

    /// The pool's counters at the moment of the snapshot.
    ///
    /// ```
    /// let pool = strata_alloc::SlabPool::new();
    /// let p = pool.alloc(100)?;
    /// assert_eq!(pool.snapshot().stats().live_blocks, 1);
    /// # // SAFETY: the pointer came from this pool and is freed once.
    /// # unsafe { pool.free(p)? };
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn stats(&self) -> Stats {
        self.stats
    }
}

impl fmt::Display for SlabSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "SlabPool: {} size lists, {} batches, {} bytes managed, {} slots in use ({} bytes)",
            self.lists(),
            self.batches(),
            self.stats.managed_bytes,
            self.stats.live_blocks,
            self.stats.bytes_in_use
        )?;
        for list in &self.lists {
            writeln!(
                f,
                "list of {}-byte slots: {} batches",
                list.slot_size,
                list.batches.len()
            )?;
            for (n, b) in list.batches.iter().enumerate() {
                writeln!(
                    f,
                    "  batch {n} at {:#x}: {} slots, {} used, {} free",
                    b.addr,
                    b.slots,
                    b.used,
                    b.slots - b.used
                )?;
                write_bitmap(f, b)?;
            }
        }
        Ok(())
    }
}

/// Rows of 64 slots; rows after the last taken slot are folded into one "all free" line.
fn write_bitmap(f: &mut fmt::Formatter<'_>, b: &BatchView) -> fmt::Result {
    let last_row = b.bits.iter().rposition(|&w| w != 0);
    let shown = last_row.map_or(0, |r| r + 1);
    for (row, &word) in b.bits.iter().enumerate().take(shown) {
        let first = row * 64;
        let n = (b.slots - first).min(64);
        write!(f, "    {first:>4} ")?;
        for bit in 0..n {
            f.write_str(if word & (1 << bit) != 0 { "#" } else { "." })?;
        }
        writeln!(f)?;
    }
    if shown * 64 < b.slots {
        writeln!(f, "    {:>4}..{}: all free", shown * 64, b.slots - 1)?;
    }
    Ok(())
}
