//! `BumpBox`: a value in a Bump whose `Drop` runs when the box is dropped.

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
/// ```
/// use std::rc::Rc;
/// let bump = strata_alloc::Bump::new();
/// let shared = Rc::new(());
/// let boxed = bump.alloc_box(Rc::clone(&shared));
/// assert_eq!(Rc::strong_count(&shared), 2);
/// drop(boxed);
/// assert_eq!(Rc::strong_count(&shared), 1);
/// ```
pub struct BumpBox<'a, T> {
    ptr: NonNull<T>,
    /// Borrows the arena like `&'a mut T` does, and owns a T for the drop checker.
    _marker: PhantomData<(&'a mut T, T)>,
}

// SAFETY: a BumpBox is a unique owner of its T (like Box<T>), so it may cross threads when T
// may, and be shared when T may be shared.
unsafe impl<T: Send> Send for BumpBox<'_, T> {}
// SAFETY: see above; `&BumpBox` only gives `&T`.
unsafe impl<T: Sync> Sync for BumpBox<'_, T> {}

impl<'a, T> BumpBox<'a, T> {
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
}

impl<T> Deref for BumpBox<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the box owns an initialised T for as long as it lives.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for BumpBox<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for BumpBox<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the box owns an initialised T that nothing else drops; it is dropped once,
        // here, and the box is gone afterwards.
        unsafe { self.ptr.as_ptr().drop_in_place() }
    }
}

impl<T: fmt::Debug> fmt::Debug for BumpBox<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}
