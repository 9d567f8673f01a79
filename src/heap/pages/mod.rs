//! The small-object path of a heap: requests up to [`SMALL_MAX`] bytes served from pages of
//! equal slots, one size class per page.
//!
//! Each class has a *current* page that allocations take their slots from (the lowest free
//! slot, found with one bitmap word and a trailing-zero count), and a list of other pages with
//! free slots to take over when it fills. A full page is on no list; the first free into it
//! puts it back. A page whose last slot is freed goes back to its owner, which returns the
//! memory to the engine (unless it is the class's only page with room). The owner supplies
//! pages (carved from its span) and finds the page of a pointer by address arithmetic; this
//! module keeps the per-class state and the counters.
//!
//! Invariants kept here:
//! - `current[c]` is a page of class `c` or the [`EXHAUSTED`] record (all zero: its one word
//!   reads as full, so the fast path falls through to the slow path and never writes to it).
//!   The current page is not on the list.
//! - The list of class `c` holds exactly the pages of class `c`, other than the current one,
//!   that have a free slot. A page's `place` says which of the three it is: current, listed,
//!   or neither (full).
//! - The tables are [`TABLE`] long, a power of two, so that a class index is masked, not
//!   checked; the entries past [`CLASSES`] stay EXHAUSTED and empty.
//! - `in_use` is the sum of the slot sizes of the allocated slots; `allocations - frees` is
//!   their number.

pub(crate) mod class;
mod objects;
pub(crate) mod page;
mod table;

use core::ptr::NonNull;

pub(crate) use class::{CLASSES, SMALL_MAX, TABLE, class_for, class_of};
pub(crate) use objects::{SlotFree, SmallObjects};
pub(crate) use page::{NotASlot, PAGE, Page, Place};

/// The current page of a class that has none: all zero, so it looks full.
struct Exhausted(Page);

// SAFETY: the record is never written (the fast path only reads it, and every path that
// writes a current page first checks that it is not this one), so sharing it is sound.
unsafe impl Sync for Exhausted {}

// SAFETY: all-zero bytes are a valid `Page` (integers, `false`, null pointers).
static EXHAUSTED: Exhausted = Exhausted(unsafe { core::mem::zeroed() });

#[inline(always)]
fn exhausted() -> *mut Page {
    (&raw const EXHAUSTED.0).cast_mut()
}

/// What freeing a slot left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotFreed {
    /// Nothing for the owner to do.
    Done,
    /// The page is now empty and not needed: the owner should take it back
    /// ([`SmallPages::retire`]) and return its memory.
    PageEmpty(NonNull<Page>),
    /// The class's current page is now empty. It stays unless the owner retires it
    /// ([`SmallPages::retire_current`]), as a heap that is mostly free does.
    CurrentEmpty(NonNull<Page>),
}

/// The per-class state of the small-object path. See the module docs.
pub(crate) struct SmallPages {
    current: [*mut Page; TABLE],
    lists: [*mut Page; TABLE],
    /// Bytes of allocated slots (slot sizes, not request sizes).
    in_use: usize,
    allocations: u64,
    frees: u64,
    /// Pages in use by this path.
    pages: usize,
}

// SAFETY: a SmallPages points only into page tables its owning heap owns exclusively; moving
// it to another thread moves that ownership with the heap.
unsafe impl Send for SmallPages {}

impl SmallPages {
    pub(crate) fn new() -> SmallPages {
        SmallPages {
            current: [exhausted(); TABLE],
            lists: [core::ptr::null_mut(); TABLE],
            in_use: 0,
            allocations: 0,
            frees: 0,
            pages: 0,
        }
    }

    /// Allocates a slot of class `c` from its current page: the fast path. `None` when the
    /// current page is full; the owner then calls [`refill`](Self::refill).
    #[inline(always)]
    pub(crate) fn alloc(&mut self, c: usize) -> Option<NonNull<u8>> {
        let p = self.current[c & (TABLE - 1)];
        // SAFETY: `p` is a live page record or EXHAUSTED (invariant 1). EXHAUSTED's summary is
        // zero, and it is only read through the raw pointer: no reference to it is made, and
        // `take` (which writes) is reached for live records alone.
        unsafe {
            if (*p).nonzero == 0 {
                return None;
            }
            let i = (*p).take()?;
            let size = (*p).size as usize;
            self.note_alloc(size);
            Some(NonNull::new_unchecked((*p).start.add(i * size)))
        }
    }

    #[inline(always)]
    fn note_alloc(&mut self, size: usize) {
        self.allocations += 1;
        self.in_use += size;
    }

    /// The slow path of [`alloc`](Self::alloc): the current page's next free word, else the
    /// next listed page of the class. `None` when the class has no free slot at all; the owner
    /// then supplies a page with [`install`](Self::install).
    #[cold]
    pub(crate) fn refill(&mut self, c: usize) -> Option<NonNull<u8>> {
        let c = c & (TABLE - 1);
        loop {
            let p = self.current[c];
            if p != exhausted() {
                // SAFETY: a current page other than EXHAUSTED is a live record of this heap.
                let page = unsafe { &mut *p };
                if let Some(i) = page.take() {
                    let size = page.slot_size();
                    self.note_alloc(size);
                    // SAFETY: the slot lies inside the page, whose start is not null.
                    return Some(unsafe { NonNull::new_unchecked(page.slot_ptr(i)) });
                }
                // Full: it floats until a free into it lists it.
                page.set_place(Place::Floating);
            }
            let next = self.lists[c];
            if next.is_null() {
                self.current[c] = exhausted();
                return None;
            }
            // SAFETY: listed pages are live records of this heap.
            unsafe {
                self.unlist(next);
                (*next).set_place(Place::Current);
            }
            self.current[c] = next;
        }
    }

    /// Makes the fresh record `p` (a page of class `c` whose memory the owner just carved)
    /// the class's current page. The old current page is full (refill found no slot).
    ///
    /// # Safety
    ///
    /// `p` is a record in a page table of this heap's, not in use by any class, for memory of
    /// [`PAGE`] bytes at `start` that only this path will hand out from now on.
    pub(crate) unsafe fn install(&mut self, p: NonNull<Page>, start: *mut u8, c: usize) {
        let c = c & (TABLE - 1);
        // SAFETY: forwarded from the contract: the record is ours and unused.
        let page = unsafe { &mut *p.as_ptr() };
        page.init(start, c);
        let old = self.current[c];
        if old != exhausted() {
            // SAFETY: a current page other than EXHAUSTED is a live record of this heap.
            unsafe { (*old).set_place(Place::Floating) };
        }
        page.set_place(Place::Current);
        self.current[c] = p.as_ptr();
        self.pages += 1;
    }

    /// Frees the slot at `addr` of page `p`, which the owner found for `addr` by address
    /// arithmetic. Validates first: nothing changes unless `addr` is an allocated slot.
    ///
    /// # Safety
    ///
    /// `p` is a live page record of this heap (`is_page()`), and `addr` lies in its page.
    #[inline(always)]
    pub(crate) unsafe fn free(
        &mut self,
        p: NonNull<Page>,
        addr: usize,
    ) -> Result<SlotFreed, NotASlot> {
        // SAFETY: forwarded from the contract.
        let page = unsafe { &mut *p.as_ptr() };
        let slot = page.allocated_slot(addr)?;
        self.release(page, slot);
        // A listed page, or the current one, stays where it is until it empties.
        if page.used != 0 && page.place != Place::Floating as u8 {
            return Ok(SlotFreed::Done);
        }
        Ok(self.free_slow(p))
    }

    /// The common case of [`free`](Self::free): frees the slot at `addr` of page `p` and
    /// returns `true` when it is an allocated slot and the free moves no page (the page is
    /// current or listed and keeps another slot in use). `false` changes nothing: the owner
    /// then calls `free`, which judges `addr` in full and reports what is wrong.
    ///
    /// # Safety
    ///
    /// As [`free`](Self::free).
    #[inline(always)]
    pub(crate) unsafe fn free_cached(
        &mut self,
        p: NonNull<Page>,
        addr: usize,
        keeps_empty: impl FnOnce() -> bool,
    ) -> bool {
        // SAFETY: forwarded from the contract.
        let page = unsafe { &mut *p.as_ptr() };
        let stays = page.stays_after_a_free() || (self.stays_empty(page) && keeps_empty());
        if !stays {
            return false;
        }
        let Ok(slot) = page.allocated_slot(addr) else {
            return false;
        };
        self.release(page, slot);
        true
    }

    /// Whether `page`, with one slot in use, is its class's current page or only listed page:
    /// a page that stays where it is when that slot is freed, if the owner keeps empty pages.
    /// Not when it is the heap's last slot: the owner may give everything back then.
    #[inline(always)]
    fn stays_empty(&self, page: &Page) -> bool {
        page.used == 1
            && self.allocations - self.frees > 1
            && (page.place() == Place::Current || self.only_listed(page))
    }

    /// Frees `slot` of `page` and counts it.
    #[inline(always)]
    fn release(&mut self, page: &mut Page, slot: page::Slot) {
        page.release(slot);
        self.frees += 1;
        self.in_use -= page.slot_size();
    }

    /// See [`SmallObjects::resize_cached`]; validates as [`free`](Self::free) does before
    /// anything is written.
    ///
    /// # Safety
    ///
    /// `p` is a live page record of this heap holding `q`.
    #[inline(always)]
    pub(crate) unsafe fn resize_cached(
        &mut self,
        p: NonNull<Page>,
        q: NonNull<u8>,
        keep: usize,
        new_size: usize,
        small_max: usize,
    ) -> Option<(NonNull<u8>, bool)> {
        // SAFETY: forwarded from the contract.
        let page = unsafe { &mut *p.as_ptr() };
        let slot = page.allocated_slot(q.as_ptr() as usize).ok()?;
        let size = page.slot_size();
        if new_size <= size {
            return Some((q, true));
        }
        if new_size > small_max || !page.stays_after_a_free() {
            return None;
        }
        // A larger class: another page, so `page`'s state is as checked above.
        let to = self.alloc(class_of(new_size))?;
        // SAFETY: two distinct slots, `to` of at least `new_size > size >= keep` bytes and the
        // caller's `keep` bytes readable at `q`.
        unsafe { core::ptr::copy_nonoverlapping(q.as_ptr(), to.as_ptr(), keep.min(size)) };
        self.release(page, slot);
        Some((to, false))
    }

    /// A free left its page empty, or freed the first slot of a full page.
    #[cold]
    fn free_slow(&mut self, p: NonNull<Page>) -> SlotFreed {
        // SAFETY: `p` is a live record (the caller's contract).
        let page = unsafe { &mut *p.as_ptr() };
        if page.place() == Place::Current {
            // The current page stays, empty or not, unless the owner says otherwise: the next
            // allocations take from it.
            return if page.used == 0 {
                SlotFreed::CurrentEmpty(p)
            } else {
                SlotFreed::Done
            };
        }
        if page.used == 0 {
            return SlotFreed::PageEmpty(p);
        }
        if page.place() == Place::Floating {
            // SAFETY: a live record that is not current and not listed (it was full).
            unsafe { self.list(p.as_ptr()) };
        }
        SlotFreed::Done
    }

    /// Takes the empty page `p` out of this path and turns its record back into "not a page";
    /// returns the page's memory, for its owner to give back.
    ///
    /// # Safety
    ///
    /// `p` is a live, empty page record of this heap that is not current.
    pub(crate) unsafe fn retire(&mut self, p: NonNull<Page>) -> *mut u8 {
        self.pages -= 1;
        // SAFETY: forwarded from the contract.
        unsafe {
            if p.as_ref().place() == Place::Listed {
                self.unlist(p.as_ptr());
            }
            let start = p.as_ref().start;
            (*p.as_ptr()).clear();
            start
        }
    }

    /// Takes the empty current page `p` out of this path (its class has no current page
    /// until the next allocation refills it); returns the page's memory.
    ///
    /// # Safety
    ///
    /// `p` is a live, empty page record of this heap that is its class's current page.
    pub(crate) unsafe fn retire_current(&mut self, p: NonNull<Page>) -> *mut u8 {
        // SAFETY: forwarded from the contract.
        let c = unsafe { p.as_ref() }.class();
        debug_assert!(self.current[c] == p.as_ptr());
        self.current[c] = exhausted();
        // SAFETY: forwarded.
        unsafe { (*p.as_ptr()).set_place(Place::Floating) };
        // SAFETY: forwarded; not current any more, and a current page is on no list.
        unsafe { self.retire(p) }
    }

    /// Offers every class's current page that is empty to `give`, with the page's memory;
    /// each page `give` took back (answering `true`) leaves this path (for `trim`).
    pub(crate) fn retire_empty_current(&mut self, mut give: impl FnMut(*mut u8) -> bool) {
        for c in 0..CLASSES {
            let p = self.current[c];
            // SAFETY: a current page other than EXHAUSTED is a live record of this heap.
            if p != exhausted() && unsafe { (*p).used == 0 } && give(unsafe { (*p).start }) {
                self.current[c] = exhausted();
                // SAFETY: as above; it is not current any more and not listed (invariant 1),
                // and a record in a table is not null.
                unsafe {
                    (*p).set_place(Place::Floating);
                    self.retire(NonNull::new_unchecked(p));
                }
            }
        }
    }

    /// As [`retire_empty_current`](Self::retire_empty_current), for the listed pages.
    pub(crate) fn retire_empty_listed(&mut self, mut give: impl FnMut(*mut u8) -> bool) {
        for c in 0..CLASSES {
            let mut p = self.lists[c];
            while !p.is_null() {
                // SAFETY: listed pages are live records of this heap; the next one is read
                // before this one is retired (which unlinks it).
                let (next, empty, start) = unsafe { ((*p).next, (*p).used == 0, (*p).start) };
                if empty && give(start) {
                    // SAFETY: a live, empty, listed (so not current) record, not null.
                    unsafe { self.retire(NonNull::new_unchecked(p)) };
                }
                p = next;
            }
        }
    }

    /// Whether `p` is the current page of class `c`.
    pub(crate) fn is_current(&self, p: NonNull<Page>, c: usize) -> bool {
        self.current[c & (TABLE - 1)] == p.as_ptr()
    }

    /// Whether `page`, a record of this heap, is the only page on its class's list.
    pub(crate) fn only_listed(&self, page: &Page) -> bool {
        page.place() == Place::Listed
            && core::ptr::eq(self.lists[page.class() & (TABLE - 1)], page)
            && page.next.is_null()
    }

    /// # Safety
    /// `p` is a live record of this heap, on no list.
    unsafe fn list(&mut self, p: *mut Page) {
        // SAFETY: forwarded; the list head, if any, is a live record.
        unsafe {
            let c = (*p).class();
            let head = self.lists[c];
            (*p).next = head;
            (*p).prev = core::ptr::null_mut();
            if !head.is_null() {
                (*head).prev = p;
            }
            (*p).set_place(Place::Listed);
            self.lists[c] = p;
        }
    }

    /// # Safety
    /// `p` is a live record of this heap, on its class's list.
    unsafe fn unlist(&mut self, p: *mut Page) {
        // SAFETY: forwarded; its neighbours are live records on the same list.
        unsafe {
            let c = (*p).class();
            let (next, prev) = ((*p).next, (*p).prev);
            if prev.is_null() {
                self.lists[c] = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            (*p).set_place(Place::Floating);
            (*p).next = core::ptr::null_mut();
            (*p).prev = core::ptr::null_mut();
        }
    }

    /// Bytes of allocated slots.
    pub(crate) fn in_use(&self) -> usize {
        self.in_use
    }

    /// Slots allocated and freed over the heap's life.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.allocations, self.frees)
    }

    /// Pages in use by this path.
    pub(crate) fn pages(&self) -> usize {
        self.pages
    }

    /// Checks this path's invariants, given every page record of the heap that is a page
    /// (`records`): each is consistent, the lists and current pages are exactly as the module
    /// docs say, and the counters agree with the bitmaps.
    pub(crate) fn check<'a>(
        &self,
        records: impl Iterator<Item = &'a Page>,
    ) -> Result<(), (usize, &'static str)> {
        let (mut pages, mut in_use, mut live, mut listed_pages) = (0usize, 0usize, 0u64, 0usize);
        for page in records {
            page.check().map_err(|e| (page.start(), e))?;
            let c = page.class();
            let current = core::ptr::eq(self.current[c], page);
            let full = page.used() == page.capacity();
            let listed = page.place() == Place::Listed;
            let wrong = match (current, page.place()) {
                (true, Place::Listed) => Some("current page is also listed"),
                (true, Place::Floating) => Some("current page says it is not current"),
                (false, Place::Current) => Some("page says it is current and is not"),
                (false, Place::Listed) if full => Some("full page is listed"),
                (false, Place::Floating) if !full => Some("page with free slots is on no list"),
                _ => None,
            };
            if let Some(e) = wrong {
                return Err((page.start(), e));
            }
            listed_pages += usize::from(listed);
            pages += 1;
            in_use += page.used() * page.slot_size();
            live += page.used() as u64;
        }
        let mut on_lists = 0;
        for c in 0..CLASSES {
            let mut p = self.lists[c];
            let mut prev: *mut Page = core::ptr::null_mut();
            while !p.is_null() && on_lists <= listed_pages {
                // SAFETY: listed pages are live records of this heap; the walk is bounded by
                // the number of listed records, so a cycle cannot trap it.
                let page = unsafe { &*p };
                if page.class() != c || page.place() != Place::Listed || page.prev != prev {
                    return Err((page.start(), "class list is inconsistent"));
                }
                on_lists += 1;
                prev = p;
                p = page.next;
            }
        }
        let unused =
            (CLASSES..TABLE).any(|c| self.current[c] != exhausted() || !self.lists[c].is_null());
        if on_lists != listed_pages || pages != self.pages || unused {
            return Err((0, "class lists disagree with the page records"));
        }
        if in_use != self.in_use || live != self.allocations - self.frees {
            return Err((0, "small-object counters disagree with the pages"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
