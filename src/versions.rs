//! The `Allocator` traits of the other API versions, written once: allocator-api2 0.4 (feature
//! `allocator-api2-04`) and `core::alloc::Allocator` (feature `nightly`).
//!
//! Each allocator implements allocator-api2 0.2's trait in its own module (the block allocators
//! through the shared logic in `crate::facade`, the Bump and the SlabPool by their own methods).
//! The other traits have the same methods with the same contracts, so each is one macro that
//! forwards every method to the 0.2 impl of the same type, invoked once per allocator type. The
//! forwarding is inlined: the other versions cost nothing over 0.2.
//!
//! `nightly` implements core's trait directly and does not turn on allocator-api2's own
//! `nightly` feature: that feature makes allocator-api2 re-export core's items, which breaks
//! every other crate in the build that implements its stable trait (hashbrown, bumpalo).

/// Forwards the methods of an `Allocator` trait (path `$tr`, error type `$err`) to the
/// allocator-api2 0.2 impl of `&$ty`.
#[allow(unused_macros)]
macro_rules! forward_allocator {
    ($tr:path, $err:path, [$($gen:tt)*] $ty:ty) => {
        // SAFETY: every method forwards to the allocator-api2 0.2 impl for the same type, whose
        // contract is this trait's (the traits mirror the same core API); only the error type
        // is converted.
        unsafe impl<$($gen)*> $tr for &$ty {
            #[inline(always)]
            fn allocate(
                &self,
                layout: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, $err> {
                <&$ty as allocator_api2::alloc::Allocator>::allocate(self, layout).map_err(|_| $err)
            }

            #[inline(always)]
            fn allocate_zeroed(
                &self,
                layout: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, $err> {
                <&$ty as allocator_api2::alloc::Allocator>::allocate_zeroed(self, layout)
                    .map_err(|_| $err)
            }

            #[inline(always)]
            unsafe fn deallocate(&self, ptr: core::ptr::NonNull<u8>, layout: core::alloc::Layout) {
                // SAFETY: the caller keeps this trait's contract, which is 0.2's.
                unsafe { <&$ty as allocator_api2::alloc::Allocator>::deallocate(self, ptr, layout) }
            }

            #[inline(always)]
            unsafe fn grow(
                &self,
                ptr: core::ptr::NonNull<u8>,
                old: core::alloc::Layout,
                new: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, $err> {
                // SAFETY: as in `deallocate`.
                unsafe { <&$ty as allocator_api2::alloc::Allocator>::grow(self, ptr, old, new) }
                    .map_err(|_| $err)
            }

            #[inline(always)]
            unsafe fn grow_zeroed(
                &self,
                ptr: core::ptr::NonNull<u8>,
                old: core::alloc::Layout,
                new: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, $err> {
                // SAFETY: as in `deallocate`.
                unsafe {
                    <&$ty as allocator_api2::alloc::Allocator>::grow_zeroed(self, ptr, old, new)
                }
                .map_err(|_| $err)
            }

            #[inline(always)]
            unsafe fn shrink(
                &self,
                ptr: core::ptr::NonNull<u8>,
                old: core::alloc::Layout,
                new: core::alloc::Layout,
            ) -> Result<core::ptr::NonNull<[u8]>, $err> {
                // SAFETY: as in `deallocate`.
                unsafe { <&$ty as allocator_api2::alloc::Allocator>::shrink(self, ptr, old, new) }
                    .map_err(|_| $err)
            }
        }
    };
}

/// allocator-api2 0.4's `Allocator` for `&$ty` (talc 5 and other crates on 0.4).
#[cfg(feature = "allocator-api2-04")]
macro_rules! impl_allocator_api2_04 {
    ([$($gen:tt)*] $ty:ty) => {
        forward_allocator!(
            allocator_api2_04::alloc::Allocator,
            allocator_api2_04::alloc::AllocError,
            [$($gen)*] $ty
        );
    };
}

/// `core::alloc::Allocator` for `&$ty` (nightly Rust with `feature(allocator_api)`).
#[cfg(feature = "nightly")]
macro_rules! impl_core_allocator {
    ([$($gen:tt)*] $ty:ty) => {
        forward_allocator!(core::alloc::Allocator, core::alloc::AllocError, [$($gen)*] $ty);
    };
}

#[cfg(feature = "allocator-api2-04")]
mod api2_04 {
    use crate::{Arena, Bump, Heap, LockedHeap, SlabPool};

    impl_allocator_api2_04!([] Arena);
    impl_allocator_api2_04!([] Heap);
    impl_allocator_api2_04!([] LockedHeap);
    impl_allocator_api2_04!([] Bump);
    impl_allocator_api2_04!([A: allocator_api2::alloc::Allocator] SlabPool<A>);
}

#[cfg(feature = "nightly")]
mod core_alloc {
    use crate::{Arena, Bump, Heap, LockedHeap, SlabPool};

    impl_core_allocator!([] Arena);
    impl_core_allocator!([] Heap);
    impl_core_allocator!([] LockedHeap);
    impl_core_allocator!([] Bump);
    impl_core_allocator!([A: allocator_api2::alloc::Allocator] SlabPool<A>);
}

#[cfg(all(test, feature = "allocator-api2-04"))]
mod tests {
    use crate::{Arena, Bump, Heap, LockedHeap, SlabPool};
    use allocator_api2_04::vec::Vec;

    fn fill<A: allocator_api2_04::alloc::Allocator>(a: A, n: u32) {
        let mut v = Vec::new_in(a);
        for i in 0..n {
            v.push(i);
        }
        v.shrink_to_fit();
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
    }

    #[test]
    fn every_allocator_serves_allocator_api2_04_collections() {
        fill(&Arena::with_capacity(1 << 20).unwrap(), 10_000);
        fill(&Heap::new().unwrap(), 10_000);
        fill(&LockedHeap::new(Heap::new().unwrap()), 10_000);
        fill(&Bump::new(), 10_000);
        fill(&SlabPool::new(), 200); // slots serve small blocks only
    }
}

#[cfg(all(test, feature = "nightly"))]
mod nightly_tests {
    use crate::{Arena, Bump, Heap, LockedHeap, SlabPool};

    fn fill<A: core::alloc::Allocator>(a: A, n: u32) {
        let mut v = std::vec::Vec::new_in(a);
        v.extend(0..n);
        v.shrink_to_fit();
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
    }

    #[test]
    fn every_allocator_serves_std_collections_beside_hashbrown_and_bumpalo() {
        let arena = Arena::with_capacity(1 << 20).unwrap();
        fill(&arena, 10_000);
        fill(&Heap::new().unwrap(), 10_000);
        fill(&LockedHeap::new(Heap::new().unwrap()), 10_000);
        fill(&Bump::new(), 10_000);
        fill(&SlabPool::new(), 200);
        // The same build uses allocator-api2 0.2's stable trait through hashbrown and bumpalo.
        let mut map = hashbrown::HashMap::new_in(&arena);
        map.insert(1u32, "one");
        let bump = bumpalo::Bump::new();
        let mut v = allocator_api2::vec::Vec::new_in(&bump);
        v.push(map[&1]);
        assert_eq!(v[0], "one");
    }
}
