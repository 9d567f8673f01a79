//! Every allocator under comparison behind one interface, [`BenchAlloc`], with the GlobalAlloc
//! contract (`null` on failure; `realloc` keeps the alignment of the old layout).
//!
//! talc, rlsf and linked_list_allocator manage a caller-given span ([`ArenaMem`]) and are driven
//! through their `&mut self` APIs with no lock; the strata [`Heap`] is driven through
//! allocator-api2's `Allocator` for `&Heap` (the path `Vec::new_in(&heap)` takes, and the only
//! one that keeps an over-aligned block's alignment across `realloc`); `System` and mimalloc
//! through `GlobalAlloc`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::{self, NonNull};

use allocator_api2::alloc::{AllocError, Allocator};
use mimalloc::MiMalloc;
use strata_alloc::{Heap, HeapConfig, Region};

/// One allocator, as the benchmark loops drive it.
///
/// # Safety
///
/// The GlobalAlloc contract: `dealloc`/`realloc` get a pointer this allocator returned with
/// the layout it was allocated (or last reallocated) with; sizes are non-zero.
pub trait BenchAlloc {
    /// Allocates `layout`; null on failure.
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8;
    /// Allocates `layout` zeroed; null on failure.
    unsafe fn alloc_zeroed(&mut self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract; a non-null block holds `layout.size()` bytes.
        unsafe {
            let p = self.alloc(layout);
            if !p.is_null() {
                p.write_bytes(0, layout.size());
            }
            p
        }
    }
    /// Frees `ptr`, allocated with `layout`.
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout);
    /// Resizes `ptr` (allocated with `layout`) to `new_size`, same alignment; null on failure
    /// (the old block is then still live).
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8;
}

/// A span of memory for the arena allocators: a fresh anonymous mapping (a strata `Region`,
/// which is only `mmap`), so its pages are untouched and cost nothing until used, unmapped on
/// drop. (`System.alloc_zeroed` with a 4096 alignment would memset the whole span.)
pub struct ArenaMem {
    region: Region,
}

impl ArenaMem {
    /// `bytes` of zeroed memory; with `touch`, every page is written once first (as talc's
    /// benchmark does) so page faults are not part of what is measured.
    pub fn new(bytes: usize, touch: bool) -> ArenaMem {
        let mut region = Region::reserve(bytes).expect("arena mapping");
        let ptr = region.grow(region.capacity()).expect("the whole span");
        if touch {
            for off in (0..region.capacity()).step_by(4096) {
                // SAFETY: in bounds of the mapping, which nothing else uses yet.
                unsafe { ptr.as_ptr().add(off).write_volatile(0) };
            }
        }
        ArenaMem { region }
    }

    /// Start of the span.
    pub fn ptr(&self) -> *mut u8 {
        self.region.base().as_ptr()
    }

    /// Length of the span.
    pub fn len(&self) -> usize {
        self.region.capacity()
    }

    /// Never true (a span has a non-zero size); here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.region.capacity() == 0
    }
}

// ------------------------------------------------------------------------------- strata

/// The strata `Heap`, through `Allocator for &Heap`.
pub struct Strata(pub Heap);

impl Strata {
    /// A heap with the default configuration.
    pub fn new() -> Strata {
        Strata(Heap::new().expect("strata heap"))
    }

    /// A heap with `config`.
    pub fn with_config(config: HeapConfig) -> Strata {
        Strata(Heap::with_config(config).expect("strata heap"))
    }
}

impl Default for Strata {
    fn default() -> Self {
        Strata::new()
    }
}

impl BenchAlloc for Strata {
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        (&self.0)
            .allocate(layout)
            .map_or(ptr::null_mut(), |p| p.cast().as_ptr())
    }
    #[inline]
    unsafe fn alloc_zeroed(&mut self, layout: Layout) -> *mut u8 {
        (&self.0)
            .allocate_zeroed(layout)
            .map_or(ptr::null_mut(), |p| p.cast().as_ptr())
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { (&self.0).deallocate(NonNull::new_unchecked(ptr), layout) }
    }
    #[inline]
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { api_realloc(&&self.0, ptr, layout, new_size) }
    }
}

/// `realloc` through an `Allocator`: `grow` or `shrink`, keeping the alignment; null on
/// failure.
///
/// # Safety
///
/// `ptr` is live in `a` with `layout`; `new_size` is non-zero.
#[inline]
pub unsafe fn api_realloc<A: Allocator>(
    a: &A,
    ptr: *mut u8,
    layout: Layout,
    new_size: usize,
) -> *mut u8 {
    // SAFETY: forwarded contract; the new layout keeps the alignment.
    unsafe {
        let new = Layout::from_size_align_unchecked(new_size, layout.align());
        let p = NonNull::new_unchecked(ptr);
        let r = if new_size >= layout.size() {
            a.grow(p, layout, new)
        } else {
            a.shrink(p, layout, new)
        };
        r.map_or(ptr::null_mut(), |p| p.cast().as_ptr())
    }
}

// --------------------------------------------------------------------------------- talc

/// talc 5.1's core (`talc::base::Talc`, no lock) on an [`ArenaMem`] it claimed whole.
pub struct Talc {
    talc: talc::base::Talc<talc::source::Manual, talc::DefaultBinning>,
    _mem: ArenaMem,
}

impl Talc {
    /// talc claiming all of `mem`.
    pub fn new(mem: ArenaMem) -> Talc {
        let mut talc = talc::base::Talc::new(talc::source::Manual);
        // SAFETY: `mem` is ours, unused by anything else, and outlives `talc` (same struct).
        unsafe { talc.claim(mem.ptr(), mem.len()) }.expect("talc claim");
        Talc { talc, _mem: mem }
    }
}

impl BenchAlloc for Talc {
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        // SAFETY: non-zero size (contract).
        unsafe { self.talc.allocate(layout) }.map_or(ptr::null_mut(), NonNull::as_ptr)
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.talc.deallocate(ptr, layout) }
    }
    #[inline]
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract. Shrinking is in place and infallible; growing is in
        // place when talc can, else allocate, copy and free (what its `Allocator::grow` does).
        unsafe {
            if new_size <= layout.size() {
                self.talc.shrink(ptr, layout, new_size);
                return ptr;
            }
            if self.talc.try_grow_in_place(ptr, layout, new_size) {
                return ptr;
            }
            let new = Layout::from_size_align_unchecked(new_size, layout.align());
            let q = self.alloc(new);
            if !q.is_null() {
                ptr::copy_nonoverlapping(ptr, q, layout.size());
                self.talc.deallocate(ptr, layout);
            }
            q
        }
    }
}

// --------------------------------------------------------------------------------- rlsf

/// rlsf's TLSF: 28 first-level classes (blocks up to 8 GiB) of 32 second-level lists.
type Tlsf = rlsf::Tlsf<'static, u32, u32, 28, 32>;

/// rlsf 0.2 on an [`ArenaMem`], unlocked.
pub struct Rlsf {
    tlsf: Tlsf,
    _mem: ArenaMem,
}

impl Rlsf {
    /// rlsf owning all of `mem`.
    pub fn new(mem: ArenaMem) -> Rlsf {
        let mut tlsf = Tlsf::new();
        let span = NonNull::slice_from_raw_parts(NonNull::new(mem.ptr()).unwrap(), mem.len());
        // SAFETY: `mem` is ours and outlives `tlsf` (same struct, never moved out).
        unsafe { tlsf.insert_free_block_ptr(span) }.expect("rlsf pool");
        Rlsf { tlsf, _mem: mem }
    }
}

impl BenchAlloc for Rlsf {
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        self.tlsf
            .allocate(layout)
            .map_or(ptr::null_mut(), NonNull::as_ptr)
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe {
            self.tlsf
                .deallocate(NonNull::new_unchecked(ptr), layout.align())
        }
    }
    #[inline]
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe {
            self.tlsf
                .reallocate(
                    NonNull::new_unchecked(ptr),
                    Layout::from_size_align_unchecked(new_size, layout.align()),
                )
                .map_or(ptr::null_mut(), NonNull::as_ptr)
        }
    }
}

// ------------------------------------------------------------------ linked_list_allocator

/// linked_list_allocator 0.10 on an [`ArenaMem`], unlocked. It has no realloc: allocate,
/// copy, free (what its `GlobalAlloc` impl does through the default `realloc`).
pub struct LinkedList {
    heap: linked_list_allocator::Heap,
    _mem: ArenaMem,
}

impl LinkedList {
    /// The list allocator owning all of `mem`.
    pub fn new(mem: ArenaMem) -> LinkedList {
        let mut heap = linked_list_allocator::Heap::empty();
        // SAFETY: `mem` is ours and outlives `heap` (same struct).
        unsafe { heap.init(mem.ptr(), mem.len()) };
        LinkedList { heap, _mem: mem }
    }
}

impl BenchAlloc for LinkedList {
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        self.heap
            .allocate_first_fit(layout)
            .map_or(ptr::null_mut(), NonNull::as_ptr)
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.heap.deallocate(NonNull::new_unchecked(ptr), layout) }
    }
    #[inline]
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract; both blocks are live while copying.
        unsafe {
            let new = Layout::from_size_align_unchecked(new_size, layout.align());
            let q = self.alloc(new);
            if !q.is_null() {
                ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            q
        }
    }
}

// ------------------------------------------------------------------ GlobalAlloc contenders

/// Any `GlobalAlloc` (`System` = glibc malloc here, `MiMalloc`).
pub struct Global<G: GlobalAlloc>(pub G);

impl<G: GlobalAlloc> BenchAlloc for Global<G> {
    #[inline]
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { self.0.alloc(layout) }
    }
    #[inline]
    unsafe fn alloc_zeroed(&mut self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { self.0.alloc_zeroed(layout) }
    }
    #[inline]
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.0.dealloc(ptr, layout) }
    }
    #[inline]
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

/// glibc malloc through `std::alloc::System`.
pub fn system() -> Global<System> {
    Global(System)
}

/// mimalloc through its `GlobalAlloc`.
pub fn mimalloc() -> Global<MiMalloc> {
    Global(MiMalloc)
}

/// A `GlobalAlloc` as an allocator-api2 `Allocator`, so `allocator_api2::vec::Vec` can run on
/// `System` and mimalloc with the very same Vec code as on `&Heap`.
pub struct ApiGlobal<'a, G: GlobalAlloc>(pub &'a G);

impl<G: GlobalAlloc> Clone for ApiGlobal<'_, G> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<G: GlobalAlloc> Copy for ApiGlobal<'_, G> {}

// SAFETY: forwards to a GlobalAlloc, whose blocks stay valid until freed, and whose realloc
// keeps contents; zero-sized requests get a dangling aligned pointer and are never freed.
unsafe impl<G: GlobalAlloc> Allocator for ApiGlobal<'_, G> {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            let p = NonNull::new(layout.align() as *mut u8).ok_or(AllocError)?;
            return Ok(NonNull::slice_from_raw_parts(p, 0));
        }
        // SAFETY: non-zero size.
        let p = NonNull::new(unsafe { self.0.alloc(layout) }).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }
    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: allocated by `allocate`/`grow`/`shrink` with `layout`.
            unsafe { self.0.dealloc(ptr.as_ptr(), layout) }
        }
    }
    #[inline]
    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if old.size() == 0 || new.align() != old.align() {
            let q = self.allocate(new)?;
            // SAFETY: distinct live blocks; the old one is freed once copied.
            unsafe {
                ptr::copy_nonoverlapping(ptr.as_ptr(), q.cast().as_ptr(), old.size());
                self.deallocate(ptr, old);
            }
            return Ok(q);
        }
        // SAFETY: `ptr` was allocated with `old`; same alignment.
        let p = NonNull::new(unsafe { self.0.realloc(ptr.as_ptr(), old, new.size()) })
            .ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(p, new.size()))
    }
    #[inline]
    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if new.size() == 0 {
            // SAFETY: as `deallocate`.
            unsafe { self.deallocate(ptr, old) };
            return self.allocate(new);
        }
        // SAFETY: `ptr` was allocated with `old`; the size shrinks, alignment is kept.
        let p = NonNull::new(unsafe { self.0.realloc(ptr.as_ptr(), old, new.size()) })
            .ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(p, new.size()))
    }
}
