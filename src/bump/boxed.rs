//! `BumpBox`: a value in a Bump whose `Drop` runs when the box is dropped; sized or not
//! (`BumpBox<[T]>`, `BumpBox<str>`, `BumpBox<dyn Trait>`).

use core::fmt;
use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

/// An owned value living in a [`Bump`](crate::Bump), made by
/// [`Bump::alloc_box`](crate::Bump::alloc_box).
///
/// Dropping the box runs the value's `Drop`; the bytes return to the arena with the scope, like
/// every other allocation. The box borrows the arena, so the arena cannot be reset, rewound or
/// moved while it lives.
///
/// The value may be unsized: [`Bump::alloc_box_slice_clone`](crate::Bump::alloc_box_slice_clone)
/// and [`alloc_box_str`](crate::Bump::alloc_box_str) make `BumpBox<[T]>` and `BumpBox<str>`, and
/// [`unsize_bump_box!`](crate::unsize_bump_box) turns a `BumpBox<T>` into a `BumpBox<dyn Trait>`
/// (or a `BumpBox<[T; N]>` into a `BumpBox<[T]>`) on stable Rust.
///
/// ```
/// use std::rc::Rc;
/// let bump = strata_alloc::Bump::new();
/// let shared = Rc::new(());
/// let boxed = bump.alloc_box(Rc::clone(&shared));
/// assert_eq!(Rc::strong_count(&shared), 2);
/// drop(boxed);
/// assert_eq!(Rc::strong_count(&shared), 1);
/// ```
pub struct BumpBox<'a, T: ?Sized> {
    ptr: NonNull<T>,
    /// Borrows the arena like `&'a mut T` does, and owns a T for the drop checker.
    _marker: PhantomData<(&'a mut T, T)>,
}

// SAFETY: a BumpBox is a unique owner of its T (like Box<T>), so it may cross threads when T
// may, and be shared when T may be shared.
unsafe impl<T: ?Sized + Send> Send for BumpBox<'_, T> {}
// SAFETY: see above; `&BumpBox` only gives `&T`.
unsafe impl<T: ?Sized + Sync> Sync for BumpBox<'_, T> {}

impl<'a, T: ?Sized> BumpBox<'a, T> {
    /// # Safety
    ///
    /// `ptr` must point to an initialised T in an arena borrowed for `'a`, that nothing else
    /// refers to or will drop.
    pub(crate) unsafe fn from_raw(ptr: NonNull<T>) -> BumpBox<'a, T> {
        BumpBox {
            ptr,
            _marker: PhantomData,
        }
    }

    /// Gives up ownership: the value will never be dropped and stays borrowed for `'a`.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let v: &mut Vec<u8> = strata_alloc::BumpBox::leak(bump.alloc_box(vec![1, 2]));
    /// v.push(3);
    /// assert_eq!(v.len(), 3);
    /// ```
    pub fn leak(this: BumpBox<'a, T>) -> &'a mut T {
        let this = ManuallyDrop::new(this);
        // SAFETY: the value is initialised, owned by the box alone and valid for 'a (the arena
        // cannot free it while borrowed); the box is never used again.
        unsafe { &mut *this.ptr.as_ptr() }
    }

    /// Splits the box for [`unsize_bump_box!`](crate::unsize_bump_box): the pointer, and the
    /// arena's lifetime carried by a marker.
    #[doc(hidden)]
    pub fn __into_raw_parts(this: BumpBox<'a, T>) -> (*mut T, PhantomData<&'a ()>) {
        (ManuallyDrop::new(this).ptr.as_ptr(), PhantomData)
    }

    /// Puts a box back together after [`unsize_bump_box!`](crate::unsize_bump_box) coerced its
    /// pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must come from `__into_raw_parts` (possibly coerced to an unsized pointer to the
    /// same value), with the marker it returned, and be used once.
    #[doc(hidden)]
    pub unsafe fn __from_raw_parts(ptr: *mut T, _lifetime: PhantomData<&'a ()>) -> BumpBox<'a, T> {
        BumpBox {
            // SAFETY: the caller passes the pointer of a live box, which is non-null.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            _marker: PhantomData,
        }
    }
}

/// Turns a [`BumpBox<T>`](crate::BumpBox) into a box of an unsized type `T` coerces to: a
/// `BumpBox<dyn Trait>`, or a `BumpBox<[T]>` from a `BumpBox<[T; N]>`. (Stable Rust has no
/// user-defined unsizing coercions; the macro coerces the raw pointer instead.)
///
/// ```
/// use core::fmt::Debug;
/// use strata_alloc::{Bump, BumpBox, unsize_bump_box};
///
/// let bump = Bump::new();
/// let shown: BumpBox<'_, dyn Debug> = unsize_bump_box!(bump.alloc_box(vec![1, 2]));
/// assert_eq!(format!("{shown:?}"), "[1, 2]");
/// let slice: BumpBox<'_, [u8]> = unsize_bump_box!(bump.alloc_box([1u8, 2, 3]));
/// assert_eq!(slice.len(), 3);
/// ```
#[macro_export]
macro_rules! unsize_bump_box {
    ($boxed:expr) => {{
        let (ptr, lifetime) = $crate::BumpBox::__into_raw_parts($boxed);
        // SAFETY: the pointer and marker come straight from the box, and the pointer is only
        // coerced (same value, added metadata) before the box is rebuilt, once.
        unsafe { $crate::BumpBox::__from_raw_parts(ptr, lifetime) }
    }};
}

impl<'a, T> BumpBox<'a, T> {
    /// Moves the value out of the arena.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let b = bump.alloc_box(String::from("out"));
    /// let s: String = strata_alloc::BumpBox::into_inner(b);
    /// assert_eq!(s, "out");
    /// ```
    pub fn into_inner(this: BumpBox<'a, T>) -> T {
        let this = ManuallyDrop::new(this);
        // SAFETY: the box owns an initialised T and is never used again (ManuallyDrop stops
        // its Drop), so the value is read out exactly once.
        unsafe { this.ptr.as_ptr().read() }
    }
}

impl<T: ?Sized> Deref for BumpBox<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the box owns an initialised T for as long as it lives.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: ?Sized> DerefMut for BumpBox<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: ?Sized> Drop for BumpBox<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the box owns an initialised T that nothing else drops; it is dropped once,
        // here, and the box is gone afterwards.
        unsafe { self.ptr.as_ptr().drop_in_place() }
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for BumpBox<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for BumpBox<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}
