//! `HeapConfig`: how large a heap may grow and how it talks to the OS.

/// Settings for a [`Heap`](crate::Heap), built from [`Default`] with builder methods.
///
/// ```
/// use strata_alloc::{Heap, HeapConfig};
///
/// let config = HeapConfig::default()
///     .max_size(256 << 20)          // at most 256 MiB, break and mapped blocks together
///     .growth_increment(1 << 20)    // move the break 1 MiB at a time
///     .mmap_threshold(512 << 10);   // blocks of 512 KiB and more get their own mapping
/// let heap = Heap::with_config(config)?;
/// assert!(heap.alloc(1 << 20).is_ok());
/// # Ok::<(), strata_alloc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapConfig {
    pub(crate) max_size: usize,
    pub(crate) growth_increment: usize,
    pub(crate) mmap_threshold: usize,
    pub(crate) trim_threshold: usize,
    /// `None`: on when `max_size` is at least [`HeapConfig::PAGES_FROM`].
    pub(crate) small_pages: Option<bool>,
}

impl HeapConfig {
    /// The defaults: at most 64 GiB (address space reserved on the first allocation), 64 KiB
    /// growth steps, a 128 KiB mmap threshold and a 256 KiB trim threshold.
    ///
    /// ```
    /// use strata_alloc::{Heap, HeapConfig};
    /// let heap = Heap::with_config(HeapConfig::DEFAULT.max_size(1 << 20))?;
    /// assert!(heap.alloc(2 << 20).is_err()); // past the 1 MiB bound
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub const DEFAULT: HeapConfig = HeapConfig {
        max_size: 64 << 30,
        growth_increment: 64 << 10,
        mmap_threshold: 128 << 10,
        trim_threshold: 256 << 10,
        small_pages: None,
    };

    /// The smallest `max_size` at which small requests are served from size-class pages unless
    /// [`small_pages`](Self::small_pages) says otherwise: a heap bounded below it packs its
    /// memory more tightly without them.
    pub const PAGES_FROM: usize = 1 << 30;

    /// The most memory the heap may hold at once, break and mapped blocks together (rounded
    /// up to whole pages). Requests beyond it fail with `OutOfMemory`.
    ///
    /// The heap reserves this much address space for its break (not memory: the pages are
    /// committed as they are touched) when its first block below `mmap_threshold` is
    /// allocated, not when it is made. If the OS refuses that much (an address-space limit
    /// such as `ulimit -v`), the heap retries with half as much, down to 16 MiB, and works
    /// within what it got; [`Stats::max_size`](crate::Stats::max_size) then reports the lower
    /// ceiling.
    ///
    /// ```
    /// let heap = strata_alloc::Heap::with_config(
    ///     strata_alloc::HeapConfig::default().max_size(1 << 20),
    /// )?;
    /// assert!(heap.alloc(2 << 20).is_err());
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn max_size(mut self, bytes: usize) -> Self {
        self.max_size = bytes;
        self
    }

    /// How far the break moves when no free block fits (rounded up to whole pages; a larger
    /// request moves it as far as it needs).
    ///
    /// ```
    /// let c = strata_alloc::HeapConfig::default().growth_increment(1 << 20);
    /// assert!(strata_alloc::Heap::with_config(c).is_ok());
    /// ```
    pub fn growth_increment(mut self, bytes: usize) -> Self {
        self.growth_increment = bytes;
        self
    }

    /// Requests of at least this many bytes get their own mapping and go back to the OS when
    /// freed.
    ///
    /// ```
    /// let c = strata_alloc::HeapConfig::default().mmap_threshold(1 << 20);
    /// let heap = strata_alloc::Heap::with_config(c)?;
    /// let _p = heap.alloc(512 << 10)?;
    /// assert_eq!(heap.stats().mapped_blocks, 0);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn mmap_threshold(mut self, bytes: usize) -> Self {
        self.mmap_threshold = bytes;
        self
    }

    /// When the free memory at the top of the heap passes this many bytes (or a quarter of the
    /// bytes in use, if that is more), the break moves back and the pages go back to the OS,
    /// keeping one growth increment (or an eighth of the bytes in use) for what comes next.
    ///
    /// ```
    /// let c = strata_alloc::HeapConfig::default().trim_threshold(1 << 20);
    /// assert!(strata_alloc::Heap::with_config(c).is_ok());
    /// ```
    pub fn trim_threshold(mut self, bytes: usize) -> Self {
        self.trim_threshold = bytes;
        self
    }
}

impl HeapConfig {
    /// Whether requests of up to 8 KiB are served from 64 KiB pages of equal slots, one size
    /// class per page: faster where small blocks are freed in bursts and reused later, at the
    /// cost of up to an eighth of a request in rounding and of partly used pages. On by default
    /// for heaps of at least [`PAGES_FROM`](Self::PAGES_FROM) bytes; off, every request is
    /// served by the block engine.
    ///
    /// ```
    /// use strata_alloc::{Heap, HeapConfig};
    /// let heap = Heap::with_config(HeapConfig::default().max_size(1 << 20).small_pages(true))?;
    /// // A size asked for often is served from a page: the slot of its size class.
    /// let ps = (0..100).map(|_| heap.alloc(24)).collect::<Result<Vec<_>, _>>()?;
    /// assert_eq!(heap.usable_size(ps[99])?, 32);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn small_pages(mut self, on: bool) -> Self {
        self.small_pages = Some(on);
        self
    }

    /// Whether this configuration serves small requests from pages.
    pub(crate) fn pages_on(&self) -> bool {
        self.small_pages
            .unwrap_or(self.max_size >= HeapConfig::PAGES_FROM)
    }
}

impl Default for HeapConfig {
    fn default() -> Self {
        HeapConfig::DEFAULT
    }
}
