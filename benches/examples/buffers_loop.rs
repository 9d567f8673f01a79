//! Realloc-heavy buffers on a used heap (issue 18): the heap first serves talc's random
//! actions (max=30000, the live blocks kept), then 64 `Vec<u8>`s, each through the
//! `Allocator` trait, are pushed in random order to 1 MiB, growing as `Vec` grows (capacity
//! doubled on overflow). Each repetition frees the buffers and grows them again on the same
//! heap, so the first repetition and the later ones show a heap that has or has not seen
//! buffers of that size before.
//!
//! `cargo run --release -p strata-benches --example buffers_loop -- <strata|system|mimalloc> <chunk> [reps]`
//!
//! `chunk` is the bytes per push: 1 is `Vec::push` of one byte (the push loop dominates);
//! larger chunks are one memcpy each, so the allocator's share (copies, remaps, page faults)
//! shows. Prints per-repetition times and what the allocator did: grows that moved the
//! block, bytes they copied, page faults.

use std::alloc::{Layout, System};
use std::cell::Cell;
use std::ptr::NonNull;
use std::time::Instant;

use allocator_api2::alloc::{AllocError, Allocator};
use allocator_api2::vec::Vec as ApiVec;
use mimalloc::MiMalloc;
use strata_alloc::Heap;
use strata_benches::Rng;
use strata_benches::contenders::{self, ApiGlobal, BenchAlloc};
use strata_benches::random_actions::{self, State};

/// Random actions run on the heap before the buffers, at talc's large-block setting.
const RA_MAX: usize = 30000;
const RA_STEPS: usize = 200_000;

fn minor_faults() -> i64 {
    // SAFETY: an all-zero `rusage` is a valid value, and getrusage only writes the struct it
    // is given.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_minflt
    }
}

/// What the buffers' grows did, counted by [`Counting`].
#[derive(Default)]
struct Counts {
    grows: Cell<u64>,
    moved: Cell<u64>,
    copied: Cell<u64>,
}

/// An allocator that counts the grows that moved their block and the bytes those kept.
struct Counting<'c, A> {
    inner: A,
    counts: &'c Counts,
}

impl<A: Clone> Clone for Counting<'_, A> {
    fn clone(&self) -> Self {
        Counting {
            inner: self.inner.clone(),
            counts: self.counts,
        }
    }
}

// SAFETY: every call is forwarded to `inner`; the counters only observe.
unsafe impl<A: Allocator> Allocator for Counting<'_, A> {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.inner.allocate(layout)
    }
    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.inner.deallocate(ptr, layout) }
    }
    #[inline]
    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded contract.
        let r = unsafe { self.inner.grow(ptr, old, new) };
        if let Ok(q) = r {
            let c = self.counts;
            c.grows.set(c.grows.get() + 1);
            if q.cast::<u8>() != ptr {
                c.moved.set(c.moved.get() + 1);
                c.copied.set(c.copied.get() + old.size() as u64);
            }
        }
        r
    }
    #[inline]
    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded contract.
        unsafe { self.inner.shrink(ptr, old, new) }
    }
}

/// Any `Allocator` as a [`BenchAlloc`], so the random actions reach each heap through the
/// same trait the buffers do.
struct Api<A>(A);

impl<A: Allocator> BenchAlloc for Api<A> {
    unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        self.0
            .allocate(layout)
            .map_or(core::ptr::null_mut(), |p| p.cast().as_ptr())
    }
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract (a non-null pointer this allocator returned).
        unsafe { self.0.deallocate(NonNull::new_unchecked(ptr), layout) }
    }
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { contenders::api_realloc(&self.0, ptr, layout, new_size) }
    }
}

/// Grows the 64 buffers in random order to 1 MiB, `chunk` bytes per push, `reserve` growing
/// them as `push` does; returns a checksum.
fn grow_buffers<A: Allocator + Clone>(a: A, rng: &mut Rng, chunk: usize) -> usize {
    let data = vec![0xa5u8; chunk];
    strata_benches::grow_buffers!(
        ApiVec::<u8, A>::new_in(a.clone()),
        rng,
        chunk,
        &data,
        reserve
    )
}

/// Random actions on `ra`, then `reps` rounds of the buffers on `api`, the same heap.
fn run<A: Allocator + Clone>(name: &str, api: A, chunk: usize, reps: usize, report: impl Fn()) {
    let mut ra = Api(api.clone());
    let mut st = State::new(RA_MAX);
    random_actions::steps(&mut ra, &mut st, RA_MAX, RA_STEPS);
    let counts = Counts::default();
    let mut rng = Rng::new(64);
    let mut times = Vec::with_capacity(reps);
    let faults = minor_faults();
    for _ in 0..reps {
        let t = Instant::now();
        grow_buffers(
            Counting {
                inner: api.clone(),
                counts: &counts,
            },
            &mut rng,
            chunk,
        );
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let faults = minor_faults() - faults;
    let first = times[0];
    let mut rest = times[1..].to_vec();
    rest.sort_by(f64::total_cmp);
    let later = rest.get(rest.len() / 2).copied().unwrap_or(first);
    let per = |n: u64| n as f64 / reps as f64;
    println!(
        "{name:<9} chunk={chunk:<5} first {first:8.2} ms  later {later:8.2} ms  ({reps} reps; per rep: {:.0} grows, {:.0} moved, {:.1} MiB copied, {:.0} page faults)",
        per(counts.grows.get()),
        per(counts.moved.get()),
        per(counts.copied.get()) / (1 << 20) as f64,
        faults as f64 / reps as f64,
    );
    report();
    st.drain(&mut ra);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let who = args.get(1).map_or("strata", String::as_str);
    let chunk: usize = args.get(2).map_or(256, |s| s.parse().expect("chunk"));
    let reps: usize = args.get(3).map_or(5, |s| s.parse().expect("reps"));
    assert!(chunk >= 1 && reps >= 1);
    match who {
        "strata" => {
            let heap = Heap::new().expect("strata heap");
            run(who, &heap, chunk, reps, || {
                let st = heap.stats();
                println!(
                    "          reallocs {} ({} in place), break growths {}, shrinks {}, {} MiB taken from the OS, {} given back",
                    st.reallocations,
                    st.reallocations_in_place,
                    st.break_growths,
                    st.break_shrinks,
                    st.bytes_from_os >> 20,
                    st.bytes_to_os >> 20
                );
            });
            heap.check().expect("heap consistent after the buffers");
        }
        "system" => run(who, ApiGlobal(&System), chunk, reps, || {}),
        "mimalloc" => run(who, ApiGlobal(&MiMalloc), chunk, reps, || {}),
        _ => panic!("unknown contender {who}"),
    }
}
