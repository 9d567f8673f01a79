//! The rest of bumpalo's allocation methods: slices from clones, fills and iterators, fallible
//! initialisers, boxed slices and strings, and walking the bytes of the chunks.

use core::alloc::Layout;
use core::mem::MaybeUninit;
use core::ptr::NonNull;

use super::{Bump, BumpBox, alloc_failed, assert_no_drop};
use crate::Error;

impl Bump {
    /// Copies `len` clones of the values of `s` into the arena. Never runs `Drop` (see
    /// [`alloc`](Bump::alloc)); [`alloc_box_slice_clone`](Bump::alloc_box_slice_clone) does.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let names = bump.alloc_slice_clone(&["ada", "grace"]);
    /// assert_eq!(names, &["ada", "grace"]);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`alloc`](Bump::alloc).
    #[track_caller]
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_slice_clone<T: Clone>(&self, s: &[T]) -> &mut [T] {
        self.alloc_slice_fill_with(s.len(), |i| s[i].clone())
    }

    /// Like [`alloc_slice_clone`](Bump::alloc_slice_clone), but returns an error instead of
    /// panicking.
    ///
    /// # Errors
    ///
    /// As [`try_alloc`](Bump::try_alloc).
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// bump.set_allocation_limit(Some(4));
    /// assert!(bump.try_alloc_slice_clone(&[1u32, 2]).is_err());
    /// assert_eq!(bump.try_alloc_slice_clone(&[7u32])?, &[7]);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    #[allow(clippy::mut_from_ref)]
    pub fn try_alloc_slice_clone<T: Clone>(&self, s: &[T]) -> Result<&mut [T], Error> {
        self.try_alloc_slice_fill_with(s.len(), |i| s[i].clone())
    }

    /// A slice of `len` copies of `value`.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// assert_eq!(bump.alloc_slice_fill_copy(3, 9u8), &[9, 9, 9]);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`alloc_slice_fill_with`](Bump::alloc_slice_fill_with).
    #[track_caller]
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_slice_fill_copy<T: Copy>(&self, len: usize, value: T) -> &mut [T] {
        self.alloc_slice_fill_with(len, |_| value)
    }

    /// A slice of `len` clones of `value`. Never runs `Drop` (see [`alloc`](Bump::alloc)).
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// assert_eq!(bump.alloc_slice_fill_clone(2, &"x"), &["x", "x"]);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`alloc_slice_fill_with`](Bump::alloc_slice_fill_with).
    #[track_caller]
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_slice_fill_clone<T: Clone>(&self, len: usize, value: &T) -> &mut [T] {
        self.alloc_slice_fill_with(len, |_| value.clone())
    }

    /// A slice of `len` default values. Never runs `Drop` (see [`alloc`](Bump::alloc)).
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// assert_eq!(bump.alloc_slice_fill_default::<u16>(4), &[0, 0, 0, 0]);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`alloc_slice_fill_with`](Bump::alloc_slice_fill_with).
    #[track_caller]
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_slice_fill_default<T: Default>(&self, len: usize) -> &mut [T] {
        self.alloc_slice_fill_with(len, |_| T::default())
    }

    /// A slice of the values of an iterator that knows its length. Never runs `Drop` (see
    /// [`alloc`](Bump::alloc)).
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let evens = bump.alloc_slice_fill_iter((0..5u32).map(|i| i * 2));
    /// assert_eq!(evens, &[0, 2, 4, 6, 8]);
    /// ```
    ///
    /// # Panics
    ///
    /// If the iterator yields fewer values than its `len()` promised, or as
    /// [`alloc_slice_fill_with`](Bump::alloc_slice_fill_with).
    #[track_caller]
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_slice_fill_iter<T, I>(&self, iter: I) -> &mut [T]
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: ExactSizeIterator,
    {
        self.try_alloc_slice_fill_iter(iter)
            .unwrap_or_else(|e| alloc_failed(e))
    }

    /// Like [`alloc_slice_fill_iter`](Bump::alloc_slice_fill_iter), but returns an error
    /// instead of panicking when the memory cannot be had.
    ///
    /// # Errors
    ///
    /// As [`try_alloc_slice_fill_with`](Bump::try_alloc_slice_fill_with).
    ///
    /// # Panics
    ///
    /// If the iterator yields fewer values than its `len()` promised.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// assert_eq!(bump.try_alloc_slice_fill_iter([1u8, 2])?, &[1, 2]);
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    #[track_caller]
    #[allow(clippy::mut_from_ref)]
    pub fn try_alloc_slice_fill_iter<T, I>(&self, iter: I) -> Result<&mut [T], Error>
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: ExactSizeIterator,
    {
        let mut iter = iter.into_iter();
        self.try_alloc_slice_fill_with(iter.len(), |_| {
            iter.next()
                .expect("the iterator yielded fewer values than its len()")
        })
    }

    /// Runs `f` and moves its `Ok` value into the arena; an `Err` is returned and the space
    /// reserved for the value is given back. Never runs `Drop` (see [`alloc`](Bump::alloc)).
    ///
    /// # Errors
    ///
    /// `f`'s error.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let n = bump.alloc_try_with(|| "42".parse::<u64>())?;
    /// assert_eq!(*n, 42);
    /// let before = bump.allocated_bytes();
    /// assert!(bump.alloc_try_with(|| "x".parse::<u64>()).is_err());
    /// assert_eq!(bump.allocated_bytes(), before); // nothing kept for the failure
    /// # Ok::<(), std::num::ParseIntError>(())
    /// ```
    ///
    /// # Panics
    ///
    /// As [`alloc`](Bump::alloc).
    #[track_caller]
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_try_with<T, E>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<&mut T, E> {
        const { assert_no_drop::<T>() };
        let layout = Layout::new::<T>();
        let p = self.alloc_layout(layout).cast::<T>();
        match f() {
            Ok(value) => {
                // SAFETY: `p` is a fresh block for a T that nothing else refers to; it stays
                // valid while `self` is borrowed (freeing needs `&mut self`).
                unsafe {
                    p.as_ptr().write(value);
                    Ok(&mut *p.as_ptr())
                }
            }
            Err(e) => {
                self.give_back_if_last(p.cast(), layout.size());
                Err(e)
            }
        }
    }

    /// Moves the pointer back over the block at `p` of `size` bytes if it is the last one
    /// (else nothing: the bytes come back with the scope).
    fn give_back_if_last(&self, p: NonNull<u8>, size: usize) {
        if size != 0 && self.is_last(p.as_ptr().addr(), size) {
            // SAFETY: the block is the last one in the current chunk, so its start lies in it;
            // the pointer is derived from our own, which covers the whole chunk.
            self.ptr.set(unsafe { self.ptr.get().sub(size) });
        }
    }

    /// Copies `s` into the arena behind a [`BumpBox<str>`](BumpBox).
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let s: strata_alloc::BumpBox<'_, str> = bump.alloc_box_str("boxed");
    /// assert_eq!(&*s, "boxed");
    /// ```
    ///
    /// # Panics
    ///
    /// As [`alloc`](Bump::alloc).
    #[track_caller]
    pub fn alloc_box_str(&self, s: &str) -> BumpBox<'_, str> {
        let p: *mut str = self.alloc_str(s);
        // SAFETY: `p` is a fresh copy in the arena that nothing else refers to; `str` has no
        // drop glue.
        unsafe { BumpBox::from_raw(NonNull::new_unchecked(p)) }
    }

    /// Clones the values of `s` into the arena behind a [`BumpBox<[T]>`](BumpBox), which drops
    /// them when it is dropped.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let words = bump.alloc_box_slice_clone(&[String::from("a"), String::from("b")]);
    /// assert_eq!(words.len(), 2);
    /// drop(words); // both Strings are freed here
    /// ```
    ///
    /// # Panics
    ///
    /// As [`alloc`](Bump::alloc); a panicking `clone` leaks the clones made before it.
    #[track_caller]
    pub fn alloc_box_slice_clone<T: Clone>(&self, s: &[T]) -> BumpBox<'_, [T]> {
        self.alloc_box_slice_fill_iter(s.iter().cloned())
    }

    /// Moves the values of an iterator that knows its length into the arena behind a
    /// [`BumpBox<[T]>`](BumpBox), which drops them when it is dropped.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let names = bump.alloc_box_slice_fill_iter((1..4).map(|i| format!("n{i}")));
    /// assert_eq!(&*names, ["n1", "n2", "n3"]);
    /// ```
    ///
    /// # Panics
    ///
    /// If the iterator yields fewer values than its `len()` promised (the values yielded are
    /// leaked), or as [`alloc`](Bump::alloc).
    #[track_caller]
    pub fn alloc_box_slice_fill_iter<T, I>(&self, iter: I) -> BumpBox<'_, [T]>
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: ExactSizeIterator,
    {
        let mut iter = iter.into_iter();
        let len = iter.len();
        let layout = Layout::array::<T>(len).unwrap_or_else(|_| {
            alloc_failed(Error::layout(
                len.saturating_mul(size_of::<T>()),
                align_of::<T>(),
                "slice length overflows isize::MAX bytes",
            ))
        });
        let p = self.alloc_layout(layout).cast::<T>();
        for i in 0..len {
            let value = iter
                .next()
                .expect("the iterator yielded fewer values than its len()");
            // SAFETY: `i < len`, inside the fresh block.
            unsafe { p.as_ptr().add(i).write(value) };
        }
        let slice = core::ptr::slice_from_raw_parts_mut(p.as_ptr(), len);
        // SAFETY: all `len` values were written above; the block is fresh and ours alone.
        unsafe { BumpBox::from_raw(NonNull::new_unchecked(slice)) }
    }

    /// The bytes handed out from each chunk in use, oldest chunk first; within a chunk they are
    /// in allocation order (the arena bumps upward). Padding between values is included and
    /// may be uninitialised, hence `MaybeUninit`. Takes `&mut self`, so no value in the arena
    /// is borrowed while its bytes are read (bumpalo's `iter_allocated_chunks`).
    ///
    /// ```
    /// let mut bump = strata_alloc::Bump::new();
    /// bump.alloc_str("abc");
    /// bump.alloc_str("def");
    /// let bytes: Vec<u8> = bump
    ///     .iter_allocated_chunks()
    ///     .flatten()
    ///     // SAFETY: only strings were allocated: no padding, every byte initialised.
    ///     .map(|b| unsafe { b.assume_init() })
    ///     .collect();
    /// assert_eq!(bytes, b"abcdef");
    /// ```
    pub fn iter_allocated_chunks(&mut self) -> impl Iterator<Item = &[MaybeUninit<u8>]> + '_ {
        let this = &*self;
        (0..this.in_use.get()).filter_map(move |i| {
            let (base, used) = this.chunk_bytes(i)?;
            // SAFETY: an in-use chunk's first `used` bytes stay allocated while `self` is
            // borrowed; `&mut self` ended every borrow of the values in them; `MaybeUninit`
            // admits padding; `base` carries the chunk's provenance.
            Some(unsafe { core::slice::from_raw_parts(base.as_ptr().cast(), used) })
        })
    }

    /// The start and used bytes of in-use chunk `i`.
    fn chunk_bytes(&self, i: usize) -> Option<(NonNull<u8>, usize)> {
        let in_use = self.in_use.get();
        self.with_chunks(|chunks| {
            let c = chunks.get(i).filter(|_| i < in_use)?;
            let used = if i + 1 == in_use {
                self.ptr.get().as_ptr().addr() - self.start.get()
            } else {
                c.used
            };
            Some((c.base(), used))
        })
    }
}
