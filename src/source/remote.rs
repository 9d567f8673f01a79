//! Frees from other threads: a hierarchical bitmap of granules handed back to a heap's owner.
//!
//! A thread that frees a block of a heap it does not own may not touch the heap's blocks or
//! records (the owner changes them without atomics), and may not write through the pointer,
//! which nobody has validated yet. It only sets the pointer's granule bit here, in memory the
//! allocator owns, with one atomic `fetch_or`. The owner drains the bitmap on its own slow
//! paths and frees each granule through the ordinary, fully validated free.
//!
//! The bitmap has levels: bit `i` of level 0 stands for granule `i`; bit `j` of level `k + 1`
//! says that word `j` of level `k` may be non-zero. The top level is one word. Pushing sets the
//! leaf bit and walks up only while it finds an empty word, so most pushes are one `fetch_or`;
//! draining swaps words to zero from the top down and visits only the words marked.
//!
//! Invariants kept here:
//! - A non-zero word at level `k` has its bit set at level `k + 1`, or the owner has swapped
//!   that bit away and will swap the word itself before the drain ends (the owner swaps a parent
//!   before its children; a push that finds its word empty sets the parent after it).
//! - A granule's bit is set from the push that records it until the drain that takes it, so a
//!   second push of the same granule in between finds it set: the double free is reported at
//!   once, without involving the owner.
//! - The top word becomes non-zero only through a push that saw it zero, and that push alone
//!   reports it, so the owner is told once per batch.

#[cfg(not(loom))]
use core::sync::atomic::{AtomicU64, Ordering};
#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};

/// Most levels a bitmap has: enough for 2^36 granules (a 1 TiB span).
const MAX_LEVELS: usize = 6;

/// What a push found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Recorded; the owner already knows there is work.
    Queued,
    /// Recorded, and the bitmap was empty: the caller must tell the owner.
    First,
    /// The granule was already waiting: a second free of the same block.
    AlreadyPending,
}

/// Words each level needs for `granules` bits: level sizes from the leaves up to one word.
pub(crate) fn level_words(granules: usize) -> ([usize; MAX_LEVELS], usize) {
    let mut words = [0; MAX_LEVELS];
    let mut n = granules.max(1);
    let mut depth = 0;
    loop {
        let w = n.div_ceil(64);
        words[depth] = w;
        depth += 1;
        if w == 1 || depth == MAX_LEVELS {
            return (words, depth);
        }
        n = w;
    }
}

/// Bytes of memory a bitmap over `granules` granules needs.
pub(crate) fn bitmap_bytes(granules: usize) -> usize {
    let (words, depth) = level_words(granules);
    words[..depth].iter().sum::<usize>() * 8
}

/// The bitmap over one span's granules. See the module docs.
pub(crate) struct RemoteFrees {
    levels: [*const AtomicU64; MAX_LEVELS],
    words: [usize; MAX_LEVELS],
    depth: usize,
}

// SAFETY: every access to the words is atomic; the memory is owned by the span, which outlives
// every thread that can reach it.
unsafe impl Send for RemoteFrees {}
// SAFETY: as above.
unsafe impl Sync for RemoteFrees {}

impl RemoteFrees {
    /// A bitmap over `granules` granules in the memory at `mem`.
    ///
    /// # Safety
    ///
    /// `mem` points to [`bitmap_bytes`]`(granules)` zeroed bytes, 8-aligned, that stay valid
    /// for as long as the bitmap is used and are accessed only through it.
    pub(crate) unsafe fn new(mem: *mut u8, granules: usize) -> RemoteFrees {
        let (words, depth) = level_words(granules);
        let mut levels = [core::ptr::null(); MAX_LEVELS];
        let mut at = mem.cast::<AtomicU64>();
        for k in 0..depth {
            levels[k] = at;
            // SAFETY: the levels are laid out back to back inside the `bitmap_bytes` given.
            at = unsafe { at.add(words[k]) };
        }
        RemoteFrees {
            levels,
            words,
            depth,
        }
    }

    #[inline(always)]
    fn word(&self, level: usize, i: usize) -> &AtomicU64 {
        debug_assert!(level < self.depth && i < self.words[level]);
        // SAFETY: callers pass `i < words[level]` (the granule index is checked by `push`, and
        // parent indices are derived from it); the memory is valid (contract of `new`).
        unsafe { &*self.levels[level].add(i) }
    }

    /// Records that granule `g` was freed by a thread other than the owner. A granule past
    /// the span is refused as already pending would be: it is no block of this span.
    #[inline]
    pub(crate) fn push(&self, g: usize) -> Pushed {
        if g / 64 >= self.words[0] {
            return Pushed::AlreadyPending;
        }
        let mut i = g;
        for level in 0..self.depth {
            let bit = 1u64 << (i % 64);
            let old = self.word(level, i / 64).fetch_or(bit, Ordering::AcqRel);
            if level == 0 && old & bit != 0 {
                return Pushed::AlreadyPending;
            }
            if old != 0 {
                return Pushed::Queued;
            }
            i /= 64;
        }
        Pushed::First
    }

    /// Whether granule `g` waits to be drained (a hint as `is_empty` is: a push may be under
    /// way). A granule past the span waits for nothing.
    #[inline(always)]
    pub(crate) fn holds(&self, g: usize) -> bool {
        g / 64 < self.words[0]
            && self.word(0, g / 64).load(Ordering::Acquire) & (1u64 << (g % 64)) != 0
    }

    /// Whether anything waits to be drained (a hint: a push may be under way).
    #[inline(always)]
    pub(crate) fn is_empty(&self) -> bool {
        self.word(self.depth - 1, 0).load(Ordering::Acquire) == 0
    }

    /// Takes every granule pushed so far and hands each to `f` (on the owner's thread).
    pub(crate) fn drain(&self, mut f: impl FnMut(usize)) {
        self.drain_word(self.depth - 1, 0, &mut f);
    }

    fn drain_word(&self, level: usize, i: usize, f: &mut impl FnMut(usize)) {
        let mut bits = self.word(level, i).swap(0, Ordering::AcqRel);
        while bits != 0 {
            let child = i * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if level == 0 {
                f(child);
            } else {
                self.drain_word(level - 1, child, f);
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn bitmap(granules: usize) -> (Vec<u64>, RemoteFrees) {
        let mut mem = vec![0u64; bitmap_bytes(granules) / 8];
        // SAFETY: zeroed, aligned, as large as asked, and outlives the bitmap in the tuple
        // (the Vec's buffer does not move when the Vec is moved).
        let r = unsafe { RemoteFrees::new(mem.as_mut_ptr().cast(), granules) };
        (mem, r)
    }

    #[test]
    fn levels_shrink_to_one_word() {
        assert_eq!(level_words(1), ([1, 0, 0, 0, 0, 0], 1));
        assert_eq!(level_words(64 * 64 * 64).1, 3);
        assert_eq!(level_words(64 * 64 * 64 + 1).1, 4);
        let (w, d) = level_words(1 << 26);
        assert_eq!(&w[..d], &[1 << 20, 1 << 14, 1 << 8, 4, 1]);
    }

    #[test]
    fn every_push_is_drained_once_and_a_second_push_is_refused() {
        let granules = if cfg!(miri) { 5000 } else { 300_000 };
        let (_mem, r) = bitmap(granules);
        assert!(r.is_empty());
        let picks: Vec<usize> = (0..granules).step_by(37).collect();
        assert_eq!(r.push(picks[0]), Pushed::First);
        for &g in &picks[1..] {
            assert_eq!(r.push(g), Pushed::Queued);
        }
        assert_eq!(r.push(picks[3]), Pushed::AlreadyPending);
        assert_eq!(r.push(granules + 64), Pushed::AlreadyPending);
        assert!(!r.is_empty());
        let mut got = Vec::new();
        r.drain(|g| got.push(g));
        assert_eq!(got, picks);
        assert!(r.is_empty());
        assert_eq!(r.push(picks[3]), Pushed::First);
    }

    #[test]
    fn concurrent_pushes_are_all_drained() {
        let granules = 1 << 16;
        let (_mem, r) = bitmap(granules);
        let per = if cfg!(miri) { 50 } else { 20_000 };
        let mut drained = vec![0u8; granules];
        std::thread::scope(|s| {
            for t in 0..2usize {
                let r = &r;
                s.spawn(move || {
                    for k in 0..per {
                        let g = (k * 2 + t) * 3 % granules;
                        assert_ne!(r.push(g), Pushed::AlreadyPending, "{g}");
                    }
                });
            }
            for _ in 0..100 {
                r.drain(|g| drained[g] += 1);
            }
        });
        r.drain(|g| drained[g] += 1);
        for k in 0..per {
            for t in 0..2 {
                assert_eq!(drained[(k * 2 + t) * 3 % granules], 1);
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    struct Shared {
        _mem: Vec<AtomicU64>,
        r: RemoteFrees,
    }

    fn shared(granules: usize) -> Arc<Shared> {
        // loom's atomics carry model state, so they are built, not cast from zeroed bytes.
        let mut mem: Vec<AtomicU64> = (0..bitmap_bytes(granules) / 8)
            .map(|_| AtomicU64::new(0))
            .collect();
        // SAFETY: zero-valued atomics, aligned and as many as the bitmap needs; kept alive
        // beside the bitmap.
        let r = unsafe { RemoteFrees::new(mem.as_mut_ptr().cast(), granules) };
        Arc::new(Shared { _mem: mem, r })
    }

    /// Two pushers on granules in different leaf words (so both may walk up) while the owner
    /// drains: every granule comes out exactly once, and the owner was told at least once.
    #[test]
    fn pushes_racing_a_drain_are_each_drained_once() {
        loom::model(|| {
            let s = shared(64 * 64 * 2);
            let pushers: Vec<_> = [5usize, 64 * 64 + 9]
                .into_iter()
                .map(|g| {
                    let s = s.clone();
                    loom::thread::spawn(move || s.r.push(g))
                })
                .collect();
            let mut seen = Vec::new();
            s.r.drain(|g| seen.push(g));
            let told: Vec<Pushed> = pushers.into_iter().map(|h| h.join().unwrap()).collect();
            s.r.drain(|g| seen.push(g));
            seen.sort();
            assert_eq!(seen, vec![5, 64 * 64 + 9]);
            assert!(told.contains(&Pushed::First));
            assert!(!told.contains(&Pushed::AlreadyPending));
        });
    }

    /// The owner's fast free asks `holds` only once it sees the flag a first push raises
    /// after it: having seen the flag, it must see the bit, or it would free a block that
    /// waits (and the drain would free it a second time).
    #[test]
    fn a_raised_flag_shows_the_pushed_granule() {
        loom::model(|| {
            let s = shared(128);
            let pending = Arc::new(loom::sync::atomic::AtomicBool::new(false));
            let pusher = {
                let (s, pending) = (s.clone(), pending.clone());
                loom::thread::spawn(move || {
                    if s.r.push(70) == Pushed::First {
                        pending.store(true, Ordering::Release);
                    }
                })
            };
            if pending.load(Ordering::Acquire) {
                assert!(s.r.holds(70));
            }
            pusher.join().unwrap();
            assert!(pending.load(Ordering::Acquire) && s.r.holds(70) && !s.r.holds(71));
        });
    }

    /// The same granule pushed by two threads: exactly one is refused, unless the owner
    /// drained between them, in which case both are drained (two frees, two drains).
    #[test]
    fn a_granule_pushed_twice_is_refused_or_drained_twice() {
        loom::model(|| {
            let s = shared(128);
            let a = {
                let s = s.clone();
                loom::thread::spawn(move || s.r.push(70))
            };
            let b = {
                let s = s.clone();
                loom::thread::spawn(move || s.r.push(70))
            };
            let mut drained = 0;
            s.r.drain(|_| drained += 1);
            let (ra, rb) = (a.join().unwrap(), b.join().unwrap());
            s.r.drain(|_| drained += 1);
            let refused = [ra, rb]
                .iter()
                .filter(|&&x| x == Pushed::AlreadyPending)
                .count();
            assert_eq!(refused + drained, 2);
        });
    }
}
