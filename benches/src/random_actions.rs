//! talc's "random actions" loop, shared by the criterion bench (`heap/random_actions`) and the
//! stand-alone profiling example (`examples/ra_loop.rs`), so both drive the same requests.
//!
//! Each step picks 0..=6: 0-2 allocate, 3-5 free a random live block (allocate instead while
//! fewer than [`MIN_LIVE`] are live), 6 realloc a random live block to `uniform[1, 3*max)`;
//! sizes `uniform[4, uniform[16, max))`, alignment `8 << (tz(random u16) / 2)`.

use std::alloc::Layout;

use crate::contenders::BenchAlloc;
use crate::{Rng, talc_align, talc_size};

/// Below this many live blocks a free step allocates instead.
pub const MIN_LIVE: usize = 300;

/// The loop's state: the live blocks with their layouts, the PRNG and the failed requests.
pub struct State {
    /// Live blocks and the layouts they were (re)allocated with.
    pub live: Vec<(*mut u8, Layout)>,
    /// The request stream.
    pub rng: Rng,
    /// Requests that returned null.
    pub failures: usize,
    /// Reallocations, and those that moved the block (so the allocator copied it).
    pub reallocs: u64,
    /// Reallocations that moved the block.
    pub moved: u64,
    /// Bytes the moves had to keep (`min(old, new)` each): what the allocators copied.
    pub copied: u64,
}

impl State {
    /// A fresh state whose request stream depends only on `max` (the same for every contender).
    pub fn new(max: usize) -> State {
        State {
            live: Vec::with_capacity(100_000),
            rng: Rng::new(0x5eed + max as u64),
            failures: 0,
            reallocs: 0,
            moved: 0,
            copied: 0,
        }
    }

    /// Frees every live block.
    pub fn drain<A: BenchAlloc>(&mut self, a: &mut A) {
        for (p, l) in self.live.drain(..) {
            // SAFETY: live, freed once.
            unsafe { a.dealloc(p, l) };
        }
    }
}

/// Runs `steps` random actions with sizes below `max` on `a`.
#[inline(always)]
pub fn steps<A: BenchAlloc>(a: &mut A, st: &mut State, max: usize, steps: usize) {
    for _ in 0..steps {
        let action = st.rng.range(0, 7);
        if action == 6 {
            if !st.live.is_empty() {
                let i = st.rng.range(0, st.live.len());
                let new_size = st.rng.range(1, 3 * max);
                let (p, l) = st.live[i];
                // SAFETY: a live block with its layout; non-zero new size.
                let q = unsafe { a.realloc(p, l, new_size) };
                st.reallocs += 1;
                if q.is_null() {
                    st.failures += 1;
                } else {
                    if q != p {
                        st.moved += 1;
                        st.copied += l.size().min(new_size) as u64;
                    }
                    // SAFETY: same alignment as before, a valid layout.
                    let nl = unsafe { Layout::from_size_align_unchecked(new_size, l.align()) };
                    st.live[i] = (q, nl);
                }
            }
        } else if action < 3 || st.live.len() < MIN_LIVE {
            let size = talc_size(&mut st.rng, max);
            let align = talc_align(&mut st.rng);
            // SAFETY: power-of-two alignment up to 2048, size < max: a valid layout.
            let l = unsafe { Layout::from_size_align_unchecked(size, align) };
            // SAFETY: non-zero size.
            let p = unsafe { a.alloc(l) };
            if p.is_null() {
                st.failures += 1;
            } else {
                st.live.push((p, l));
            }
        } else {
            let i = st.rng.range(0, st.live.len());
            let (p, l) = st.live.swap_remove(i);
            // SAFETY: a live block with its layout, removed from the live set.
            unsafe { a.dealloc(p, l) };
        }
    }
}
