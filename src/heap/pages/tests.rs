//! The small-object path against a model: a stand-in owner with a few page cells, random
//! allocations and frees of every class, and a full check after each step.

use std::alloc::{Layout, alloc_zeroed, dealloc};

use super::page::{NotASlot, PAGE_SHIFT};
use super::*;
use crate::test_rng::Rng;

/// A stand-in for the heap: `cells` page-aligned cells and their records.
struct Owner {
    mem: *mut u8,
    cells: usize,
    /// The records, reached only through this pointer (as a heap reaches its page table), so
    /// that the raw pointers the path keeps stay valid.
    records: *mut Page,
    free_cells: Vec<usize>,
    pages: SmallPages,
}

impl Owner {
    fn new(cells: usize) -> Owner {
        let layout = Layout::from_size_align(cells * PAGE, PAGE).unwrap();
        // SAFETY: non-zero size.
        let mem = unsafe { alloc_zeroed(layout) };
        assert!(!mem.is_null());
        Owner {
            mem,
            cells,
            records: Box::into_raw(
                (0..cells)
                    // SAFETY: all-zero records mean "not a page".
                    .map(|_| unsafe { core::mem::zeroed::<Page>() })
                    .collect::<Box<[Page]>>(),
            )
            .cast(),
            free_cells: (0..cells).rev().collect(),
            pages: SmallPages::new(),
        }
    }

    fn alloc(&mut self, size: usize) -> Option<NonNull<u8>> {
        let c = class_of(size);
        if let Some(p) = self.pages.alloc(c).or_else(|| self.pages.refill(c)) {
            return Some(p);
        }
        let cell = self.free_cells.pop()?;
        // SAFETY: `cell < cells`; the record is unused and the cell's memory is ours to hand out.
        unsafe {
            self.pages
                .install(self.record(cell), self.mem.add(cell * PAGE), c)
        };
        self.pages.alloc(c)
    }

    fn free(&mut self, p: *mut u8) -> Result<(), NotASlot> {
        let off = p as usize - self.mem as usize;
        let cell = off >> PAGE_SHIFT;
        assert!(cell < self.cells);
        let rec = self.record(cell);
        // SAFETY: in bounds.
        assert!(unsafe { rec.as_ref() }.is_page());
        // SAFETY: a live record whose page holds `p`.
        match unsafe { self.pages.free(rec, p as usize) }? {
            SlotFreed::Done | SlotFreed::CurrentEmpty(_) => {}
            SlotFreed::PageEmpty(r) => {
                // SAFETY: empty, not current (that is when PageEmpty is returned).
                let start = unsafe { self.pages.retire(r) };
                self.free_cells
                    .push((start as usize - self.mem as usize) >> PAGE_SHIFT);
            }
        }
        Ok(())
    }

    fn record(&self, cell: usize) -> NonNull<Page> {
        assert!(cell < self.cells);
        // SAFETY: in bounds of the records allocation.
        unsafe { NonNull::new_unchecked(self.records.add(cell)) }
    }

    fn check(&self) {
        // SAFETY: in bounds; the references live only during the check, which writes nothing.
        let records = (0..self.cells).map(|c| unsafe { &*self.records.add(c) });
        self.pages.check(records.filter(|r| r.is_page())).unwrap();
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.cells * PAGE, PAGE).unwrap();
        // SAFETY: allocated in `new` with this layout; the records came from a boxed slice of
        // `cells` records.
        unsafe {
            dealloc(self.mem, layout);
            drop(Box::from_raw(core::ptr::slice_from_raw_parts_mut(
                self.records,
                self.cells,
            )));
        }
    }
}

#[test]
fn random_allocations_never_overlap_and_keep_their_contents() {
    let steps = if cfg!(miri) { 120 } else { 40_000 };
    let mut rng = Rng::new(11);
    let mut o = Owner::new(8);
    let mut live: Vec<(*mut u8, usize, u8)> = Vec::new();
    for step in 0..steps {
        if live.is_empty() || rng.chance(11, 20) {
            let size = if rng.chance(1, 8) {
                rng.range(1, SMALL_MAX + 1)
            } else {
                rng.range(1, 129)
            };
            let Some(p) = o.alloc(size) else {
                assert!(
                    o.free_cells.is_empty(),
                    "allocation failed with free cells left"
                );
                continue;
            };
            let p = p.as_ptr();
            let fill = rng.byte();
            // SAFETY: a fresh slot of at least `size` bytes.
            unsafe { p.write_bytes(fill, size) };
            for &(q, qs, _) in &live {
                let (a, b) = (p as usize, q as usize);
                assert!(a + size <= b || b + qs <= a, "step {step}: slots overlap");
            }
            live.push((p, size, fill));
        } else {
            let (p, size, fill) = live.swap_remove(rng.range(0, live.len()));
            // SAFETY: still live, `size` bytes.
            let bytes = unsafe { core::slice::from_raw_parts(p, size) };
            assert!(
                bytes.iter().all(|&b| b == fill),
                "step {step}: contents changed"
            );
            o.free(p).unwrap();
        }
        if step % 97 == 0 || cfg!(miri) {
            o.check();
        }
    }
    for (p, _, _) in live.drain(..) {
        o.free(p).unwrap();
    }
    o.check();
    assert_eq!(o.pages.in_use(), 0);
    let (a, f) = o.pages.counts();
    assert_eq!(a, f);
}

#[test]
fn misuse_is_named_and_changes_nothing() {
    let mut o = Owner::new(2);
    let p = o.alloc(48).unwrap().as_ptr();
    let q = o.alloc(48).unwrap().as_ptr();
    // SAFETY: inside the live slot at `q`.
    assert_eq!(o.free(unsafe { q.add(16) }), Err(NotASlot::InsideAllocated));
    o.free(p).unwrap();
    assert_eq!(o.free(p), Err(NotASlot::Free));
    // SAFETY: inside the freed slot at `p`.
    assert_eq!(o.free(unsafe { p.add(16) }), Err(NotASlot::InsideFree));
    o.check();
    o.free(q).unwrap();
    o.check();
}

#[test]
fn an_emptied_page_goes_back_unless_it_is_current() {
    let mut o = Owner::new(4);
    // Fill one page of 2 KiB slots, then one more slot on a second page.
    let cap = page::SLOT_BYTES / 2048;
    let first: Vec<*mut u8> = (0..cap).map(|_| o.alloc(2048).unwrap().as_ptr()).collect();
    let extra = o.alloc(2048).unwrap().as_ptr();
    assert_eq!(o.pages.pages(), 2);
    for p in first {
        o.free(p).unwrap();
    }
    // The first page (not current any more) went back; the current one stays when emptied.
    assert_eq!(o.pages.pages(), 1);
    o.free(extra).unwrap();
    assert_eq!(o.pages.pages(), 1);
    let mut given = 0;
    o.pages.retire_empty_current(|_| {
        given += 1;
        true
    });
    assert_eq!((given, o.pages.pages()), (1, 0));
    o.check();
}

#[test]
fn check_finds_a_page_record_that_disagrees() {
    let config = crate::HeapConfig::default()
        .max_size(2 << 20)
        .small_pages(true);
    let heap = crate::Heap::with_config(config).unwrap();
    let ps: Vec<_> = (0..20).map(|_| heap.alloc(64).unwrap()).collect();
    heap.check().unwrap();
    let addr = ps[19].as_ptr() as usize;
    let record = heap.with(|c| c.page_of(addr)).unwrap();
    // SAFETY: the record is the heap's, and no operation runs while it is changed; it is
    // put back before the heap is used again.
    unsafe { (*record.as_ptr()).used += 1 };
    assert!(matches!(heap.check(), Err(crate::Error::Corrupted { .. })));
    // SAFETY: as above.
    unsafe { (*record.as_ptr()).used -= 1 };
    heap.check().unwrap();
    // SAFETY: as above; a read.
    let word = unsafe { (*record.as_ptr()).free[0] };
    // SAFETY: as above: an allocated slot marked free in the bitmap, still counted as used.
    unsafe { (*record.as_ptr()).free[0] = word | 1 };
    assert!(matches!(heap.check(), Err(crate::Error::Corrupted { .. })));
    // SAFETY: as above.
    unsafe { (*record.as_ptr()).free[0] = word };
    heap.check().unwrap();
}
