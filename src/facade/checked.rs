//! The checked API, written once: `alloc`, `alloc_layout`, `calloc`, `realloc`, `free`,
//! `usable_size`, `stats` and `check` for every block allocator, with their docs.
//!
//! An allocator type gives the macro two ways to reach its backend:
//! - `reach(f) -> Result<R, Error>`, which may create the backend first (the global heap sets
//!   itself up on first use) and fails only if that fails;
//! - `reach_existing(f) -> Option<R>`, which never creates it: a pointer handed to a backend
//!   that does not exist yet cannot be one of its blocks.
//!
//! For an allocator that always has its backend both are a plain call, and the `Result` and
//! `Option` fold away when inlined.

/// Writes the checked API for `$ty`, whose doc examples start with `$make` (a statement that
/// binds `a` to an allocator of that type, inside a function returning
/// `Result<(), strata_alloc::Error>`).
macro_rules! checked_api {
    ($ty:ty, $make:literal) => {
        impl $ty {
            /// Allocates `size` bytes, 16-byte aligned, like `malloc`.
            ///
            /// # Errors
            ///
            /// [`Error::OutOfMemory`](crate::Error::OutOfMemory) when the allocator cannot
            /// hold the block (a full arena, a heap at its `max_size`, or the OS refusing
            /// memory); [`Error::InvalidLayout`](crate::Error::InvalidLayout) for 0 bytes or a
            /// size that overflows. A failed request changes nothing.
            ///
            /// ```
            #[doc = $make]
            /// let p = a.alloc(100)?;
            /// assert_eq!(p.as_ptr() as usize % 16, 0);
            /// assert!(a.alloc(0).is_err());
            /// # Ok::<(), strata_alloc::Error>(())
            /// ```
            #[inline]
            pub fn alloc(&self, size: usize) -> Result<core::ptr::NonNull<u8>, $crate::Error> {
                self.reach(|c| $crate::facade::alloc(c, size, 16))?
            }

            /// Allocates for `layout`: any power-of-two alignment up to the backend's
            /// largest (4096 in an arena; a heap gives larger alignments a mapping of their
            /// own, over-mapped by the alignment, with the unused tail given back at once).
            ///
            /// # Errors
            ///
            /// As [`alloc`](Self::alloc), and
            /// [`Error::InvalidLayout`](crate::Error::InvalidLayout) for an alignment the
            /// backend does not serve or a size and alignment that overflow together.
            ///
            /// ```
            /// use core::alloc::Layout;
            #[doc = $make]
            /// let p = a.alloc_layout(Layout::from_size_align(64, 1024).unwrap())?;
            /// assert_eq!(p.as_ptr() as usize % 1024, 0);
            /// # Ok::<(), strata_alloc::Error>(())
            /// ```
            #[inline]
            pub fn alloc_layout(
                &self,
                layout: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<u8>, $crate::Error> {
                self.reach(|c| $crate::facade::alloc(c, layout.size(), layout.align()))?
            }

            /// Allocates `count * size` zeroed bytes, like `calloc`. Memory known to be
            /// fresh (a new mapping, or pages never written) is not written again.
            ///
            /// # Errors
            ///
            /// [`Error::InvalidLayout`](crate::Error::InvalidLayout) if `count * size`
            /// overflows or is 0; otherwise as [`alloc`](Self::alloc).
            ///
            /// ```
            #[doc = $make]
            /// let p = a.calloc(10, 8)?;
            /// // SAFETY: 80 zeroed bytes were just allocated.
            /// let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), 80) };
            /// assert!(bytes.iter().all(|&b| b == 0));
            /// assert!(a.calloc(usize::MAX, 2).is_err());
            /// # Ok::<(), strata_alloc::Error>(())
            /// ```
            #[inline]
            pub fn calloc(
                &self,
                count: usize,
                size: usize,
            ) -> Result<core::ptr::NonNull<u8>, $crate::Error> {
                self.reach(|c| $crate::facade::calloc(c, count, size))?
            }

            /// Resizes the block at `ptr` to `new_size` bytes, keeping its contents up to the
            /// smaller size. In place first: shrinking keeps the pointer, growing takes a free
            /// next block (a heap also moves its break for its top block and remaps a mapped
            /// block); only then allocate, copy, free. A moved block is 16-byte aligned.
            ///
            /// # Errors
            ///
            /// [`Error::InvalidPointer`](crate::Error::InvalidPointer),
            /// [`Error::DoubleFree`](crate::Error::DoubleFree) or
            /// [`Error::Corrupted`](crate::Error::Corrupted) for a bad `ptr`,
            /// [`Error::OutOfMemory`](crate::Error::OutOfMemory) if it must move and nothing
            /// fits, [`Error::InvalidLayout`](crate::Error::InvalidLayout) for 0 bytes. On every
            /// error the old block is untouched and still the caller's.
            ///
            /// # Safety
            ///
            /// On success the old pointer must not be used again unless it was returned.
            ///
            /// ```
            #[doc = $make]
            /// let p = a.alloc(16)?;
            /// // SAFETY: `p` is a live 16-byte block; afterwards only the returned pointer
            /// // is used.
            /// let p = unsafe {
            ///     p.as_ptr().write_bytes(7, 16);
            ///     a.realloc(p, 4000)?
            /// };
            /// // SAFETY: the first 16 bytes were kept.
            /// assert_eq!(unsafe { p.as_ptr().add(15).read() }, 7);
            /// # Ok::<(), strata_alloc::Error>(())
            /// ```
            #[inline]
            pub unsafe fn realloc(
                &self,
                ptr: core::ptr::NonNull<u8>,
                new_size: usize,
            ) -> Result<core::ptr::NonNull<u8>, $crate::Error> {
                self.reach_existing(|c| $crate::facade::realloc(c, ptr, new_size))
                    .unwrap_or_else(|| Err($crate::facade::not_a_block(ptr)))
            }

            /// Frees the block at `ptr`, like `free`: a block of the allocator's own memory is
            /// merged with its free neighbours (a heap trims its top past its trim threshold);
            /// a mapped block is unmapped, or kept mapped as a spare for the next large
            /// request (a heap keeps a bounded amount; `trim` gives them back).
            ///
            /// # Errors
            ///
            /// [`Error::DoubleFree`](crate::Error::DoubleFree) if it was freed already,
            /// [`Error::InvalidPointer`](crate::Error::InvalidPointer) if it is not a block of
            /// this allocator (foreign, interior or misaligned),
            /// [`Error::Corrupted`](crate::Error::Corrupted) if its header was overwritten.
            /// Nothing is written in any of those cases.
            ///
            /// # Safety
            ///
            /// On success the block must not be used again.
            ///
            /// ```
            #[doc = $make]
            /// let p = a.alloc(32)?;
            /// // SAFETY: `p` is live and not used after this.
            /// unsafe { a.free(p)? };
            /// // SAFETY: a second free of the same pointer is misuse, and is reported.
            /// assert!(matches!(
            ///     unsafe { a.free(p) },
            ///     Err(strata_alloc::Error::DoubleFree { .. })
            /// ));
            /// # Ok::<(), strata_alloc::Error>(())
            /// ```
            #[inline]
            pub unsafe fn free(&self, ptr: core::ptr::NonNull<u8>) -> Result<(), $crate::Error> {
                self.reach_existing(|c| $crate::backend::Backend::free(c, ptr))
                    .unwrap_or_else(|| Err($crate::facade::not_a_block(ptr)))
            }

            /// Usable bytes of the live block at `ptr`: at least what was asked for, and all
            /// of it the caller's to use, like `malloc_usable_size`.
            ///
            /// # Errors
            ///
            /// As [`free`](Self::free), for a pointer that is not a live block.
            ///
            /// ```
            #[doc = $make]
            /// let p = a.alloc(20)?;
            /// assert!(a.usable_size(p)? >= 20);
            /// # Ok::<(), strata_alloc::Error>(())
            /// ```
            pub fn usable_size(&self, ptr: core::ptr::NonNull<u8>) -> Result<usize, $crate::Error> {
                self.reach_existing(|c| $crate::backend::Backend::usable_size(c, ptr))
                    .unwrap_or_else(|| Err($crate::facade::not_a_block(ptr)))
            }

            /// The allocator's counters (see [`Stats`](crate::Stats)).
            ///
            /// ```
            #[doc = $make]
            /// let _ = a.alloc(10)?;
            /// let _ = a.alloc(0); // refused
            /// let s = a.stats();
            /// assert_eq!((s.live_blocks, s.failed_requests), (1, 1));
            /// # Ok::<(), strata_alloc::Error>(())
            /// ```
            pub fn stats(&self) -> $crate::Stats {
                self.reach_existing(|c| $crate::backend::Backend::stats(c))
                    .unwrap_or_default()
            }

            /// Walks every block, free list and table and verifies every invariant (see
            /// `docs/ARCHITECTURE.md`).
            ///
            /// # Errors
            ///
            /// [`Error::Corrupted`](crate::Error::Corrupted) naming the first damage found.
            ///
            /// ```
            #[doc = $make]
            /// let _ = a.alloc(10)?;
            /// a.check()?;
            /// # Ok::<(), strata_alloc::Error>(())
            /// ```
            pub fn check(&self) -> Result<(), $crate::Error> {
                self.reach_existing(|c| $crate::backend::Backend::check(c))
                    .unwrap_or(Ok(()))
            }
        }
    };
}

pub(crate) use checked_api;

checked_api!(crate::Arena, "let a = strata_alloc::Arena::new()?;");
checked_api!(crate::Heap, "let a = strata_alloc::Heap::new()?;");
crate::facade::impl_allocator!(crate::Arena);
crate::facade::impl_allocator!(crate::Heap);
