//! The owner gate: one thread (the owner) enters a heap with two plain stores and a load; any
//! other thread (an intruder) excludes it through a heavier protocol it pays for alone.
//!
//! State: `busy`, stored only by the owner; `intruding`, stored only by the intruder that
//! holds `lock`; `owner`, changed only under `lock`.
//!
//! - Owner entry: store `busy = true`; an owner-side barrier; load `intruding` (Acquire). If it
//!   is set, store `busy = false` (Release), wait until it clears, and start again.
//!   Owner exit: store `busy = false` (Release).
//! - Intrusion: take `lock`; store `intruding = true`; an intruder-side barrier; wait until
//!   `busy` reads false (Acquire). Release: store `intruding = false` (Release), drop `lock`.
//!
//! **Why it excludes.** The two sides are a Dekker pair: each stores its own flag, then loads
//! the other's, with a barrier between that orders the store before the load as the other
//! side sees them. Then the owner's load sees `intruding`, or the intruder's load sees `busy`
//! (or both): they cannot both pass. An owner that passes has its accesses after the Acquire
//! load, so they cannot start before it; they end before its Release exit store, which the
//! intruder's Acquire wait reads before it touches the heap. An owner that sees `intruding`
//! withdraws its `busy` (Release) before it waits, so the intruder is not left waiting on it;
//! it then re-enters only after reading `intruding == false` (Acquire), which the intruder
//! stored (Release) after its last access. The Acquire on the owner's load of `intruding` is
//! what orders the intruder's writes before the owner's next reads; on x86 it is a plain load.
//!
//! **The barriers.** With `Barrier::Asymmetric` the owner's barrier is only a compiler fence,
//! and the intruder's is `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which makes every
//! running thread of the process execute a full memory barrier before it returns (a thread
//! not running passes one when it is switched out): the owner's store and load are then
//! ordered by whichever full barrier falls between them, or the owner's whole entry comes
//! after the intruder's store and sees it. This is the asymmetric Dekker scheme of user-space
//! RCU. With `Barrier::Symmetric` (membarrier refused, Miri, loom) both sides use
//! `fence(SeqCst)`, the textbook Dekker pair under the C++ model.
//!
//! **No barrier for an absent owner.** An intruder that finds `owner` 0 (an orphan) or itself
//! (the owner thread, which is not inside the heap when it intrudes on it: nothing here
//! re-enters) skips the barrier and the wait: `owner` changes only under `lock`, and the
//! owner that left last stored `busy = false` before it gave the heap up under the same lock.

// loom has no compiler fence; the asymmetric barrier that uses it is never chosen under loom.
#[cfg(loom)]
use core::sync::atomic::compiler_fence;
#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};

#[cfg(not(loom))]
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering, compiler_fence, fence};

/// The calling thread, as gates name owners: never 0 for a live thread.
pub(crate) fn this_thread() -> usize {
    // SAFETY: pthread_self has no preconditions.
    (unsafe { libc::pthread_self() }) as usize
}

/// Which barriers the gate's two sides use (see the module docs); fixed when a gate's set of
/// owners is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Barrier {
    /// A compiler fence for the owner, `membarrier` for an intruder.
    Asymmetric,
    /// `fence(SeqCst)` on both sides.
    Symmetric,
}

impl Barrier {
    /// `Asymmetric` if this process could register for expedited membarriers, else
    /// `Symmetric`. Registration is once per process and survives `fork`.
    pub(crate) fn for_process() -> Barrier {
        #[cfg(not(any(miri, loom)))]
        {
            use std::sync::OnceLock;
            static CHOICE: OnceLock<Barrier> = OnceLock::new();
            *CHOICE.get_or_init(|| {
                // SAFETY: membarrier takes plain integers and touches no memory of ours.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_membarrier,
                        MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                        0,
                        0,
                    )
                };
                if r == 0 {
                    Barrier::Asymmetric
                } else {
                    Barrier::Symmetric
                }
            })
        }
        #[cfg(any(miri, loom))]
        Barrier::Symmetric
    }

    /// The owner's side, between its store of `busy` and its load of `intruding`.
    #[inline(always)]
    fn owner_side(self) {
        match self {
            Barrier::Asymmetric => compiler_fence(Ordering::SeqCst),
            Barrier::Symmetric => fence(Ordering::SeqCst),
        }
    }

    /// The intruder's side, between its store of `intruding` and its loads of `busy`.
    pub(crate) fn intruder_side(self) {
        match self {
            Barrier::Asymmetric => {
                #[cfg(not(any(miri, loom)))]
                // SAFETY: as in `for_process`. The process registered (that is how this
                // variant was chosen), so the command is not refused; a debug build checks it.
                unsafe {
                    let r =
                        libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
                    debug_assert_eq!(r, 0, "membarrier refused after registration");
                }
                // The syscall is opaque to the language's memory model: this fence is what
                // orders the intruder's own store of `intruding` before its loads of `busy`
                // there; the membarrier supplies the owner's half.
                fence(Ordering::SeqCst);
            }
            Barrier::Symmetric => fence(Ordering::SeqCst),
        }
    }
}

#[cfg(not(any(miri, loom)))]
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
#[cfg(not(any(miri, loom)))]
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

/// A heap's gate. See the module docs.
pub(crate) struct Gate {
    busy: AtomicBool,
    intruding: AtomicBool,
    lock: AtomicBool,
    /// The owning thread (`pthread_self`), 0 for none. Changed only under `lock`.
    owner: AtomicUsize,
}

/// An intruder's hold on a gate; released on drop.
pub(crate) struct Intrusion<'a> {
    gate: &'a Gate,
}

/// Waits a little, then gives the core away.
#[inline(always)]
fn wait(spins: &mut u32) {
    if *spins < 64 {
        *spins += 1;
        #[cfg(loom)]
        loom::thread::yield_now();
        #[cfg(not(loom))]
        core::hint::spin_loop();
    } else {
        #[cfg(loom)]
        loom::thread::yield_now();
        #[cfg(not(loom))]
        std::thread::yield_now();
    }
}

impl Gate {
    /// A gate owned by `owner` (0: none).
    pub(crate) fn new(owner: usize) -> Gate {
        Gate {
            busy: AtomicBool::new(false),
            intruding: AtomicBool::new(false),
            lock: AtomicBool::new(false),
            owner: AtomicUsize::new(owner),
        }
    }

    /// The owner, as last set (exact under an intrusion, a hint otherwise).
    #[inline(always)]
    pub(crate) fn owner(&self) -> usize {
        self.owner.load(Ordering::Relaxed)
    }

    /// Enters as the owner. Only the owning thread calls this, and not again before `leave`.
    #[inline(always)]
    pub(crate) fn enter(&self, barrier: Barrier) {
        self.busy.store(true, Ordering::Relaxed);
        barrier.owner_side();
        if self.intruding.load(Ordering::Acquire) {
            self.enter_contended(barrier);
        }
    }

    /// As `enter`, but gives up instead of waiting out an intrusion: `false` when an intruder
    /// is in or coming, with the gate left as it was. For fast paths that have a full path to
    /// fall back on, so that they hold no call.
    #[inline(always)]
    pub(crate) fn try_enter(&self, barrier: Barrier) -> bool {
        self.busy.store(true, Ordering::Relaxed);
        barrier.owner_side();
        if self.intruding.load(Ordering::Acquire) {
            // The step `enter_contended` takes before it waits.
            self.busy.store(false, Ordering::Release);
            return false;
        }
        true
    }

    #[cold]
    #[inline(never)]
    fn enter_contended(&self, barrier: Barrier) {
        loop {
            self.busy.store(false, Ordering::Release);
            let mut spins = 0;
            while self.intruding.load(Ordering::Acquire) {
                wait(&mut spins);
            }
            self.busy.store(true, Ordering::Relaxed);
            barrier.owner_side();
            if !self.intruding.load(Ordering::Acquire) {
                return;
            }
        }
    }

    /// Leaves after `enter`.
    #[inline(always)]
    pub(crate) fn leave(&self) {
        self.busy.store(false, Ordering::Release);
    }

    /// Takes the intruders' lock and marks the intrusion, without the barrier yet: `wait_out`
    /// finishes it (several gates can share one barrier, as the fork handler does).
    pub(crate) fn begin_intrusion(&self) -> Intrusion<'_> {
        let mut spins = 0;
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            wait(&mut spins);
        }
        self.intruding.store(true, Ordering::Relaxed);
        Intrusion { gate: self }
    }

    /// As [`Intrusion::wait_out`], for an intrusion whose guard was forgotten (fork).
    pub(crate) fn wait_out(&self) {
        let mut spins = 0;
        while self.busy.load(Ordering::Acquire) {
            wait(&mut spins);
        }
    }

    /// As [`Intrusion::set_owner`], for an intrusion whose guard was forgotten (fork).
    ///
    /// # Safety
    ///
    /// This thread holds the gate's intrusion.
    #[cfg_attr(any(miri, loom), allow(dead_code))]
    pub(crate) unsafe fn set_owner_held(&self, owner: usize) {
        self.owner.store(owner, Ordering::Relaxed);
    }

    /// Whether an intruder must wait for the owner: a live owner other than `me`.
    fn owned_by_other(&self, me: usize) -> bool {
        let o = self.owner.load(Ordering::Relaxed);
        o != 0 && o != me
    }

    /// Excludes the owner: the intruder's barrier (if an owner may be inside), then waits it
    /// out. `me` is the calling thread.
    pub(crate) fn intrude(&self, barrier: Barrier, me: usize) -> Intrusion<'_> {
        let held = self.begin_intrusion();
        if self.owned_by_other(me) {
            barrier.intruder_side();
            held.wait_out();
        }
        held
    }
}

impl Intrusion<'_> {
    /// Waits until the owner is outside. The intruder's barrier must have been issued since
    /// `begin_intrusion`.
    pub(crate) fn wait_out(&self) {
        self.gate.wait_out();
    }

    /// Gives the heap to `owner` (0: none); only an intruder may.
    pub(crate) fn set_owner(&self, owner: usize) {
        self.gate.owner.store(owner, Ordering::Relaxed);
    }

    /// Ends the intrusion without a guard (the fork handlers, whose guards were forgotten).
    ///
    /// # Safety
    ///
    /// `gate`'s intrusion was begun by this thread and its guard forgotten.
    #[cfg_attr(any(miri, loom), allow(dead_code))]
    pub(crate) unsafe fn force_end(gate: &Gate) {
        gate.intruding.store(false, Ordering::Release);
        gate.lock.store(false, Ordering::Release);
    }
}

impl Drop for Intrusion<'_> {
    fn drop(&mut self) {
        self.gate.intruding.store(false, Ordering::Release);
        self.gate.lock.store(false, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use core::cell::UnsafeCell;

    struct Counted {
        gate: Gate,
        n: UnsafeCell<u64>,
    }
    // SAFETY: `n` is touched only inside the gate, which the test checks excludes.
    unsafe impl Sync for Counted {}

    fn exclude(barrier: Barrier) {
        let owner = this_thread();
        let c = Counted {
            gate: Gate::new(owner),
            n: UnsafeCell::new(0),
        };
        let per = if cfg!(miri) { 100 } else { 100_000 };
        let c = &c;
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(move || {
                    let me = this_thread();
                    for _ in 0..per / 10 {
                        let _g = c.gate.intrude(barrier, me);
                        // SAFETY: inside the gate. A plain read-modify-write: a lost update
                        // would show in the total.
                        unsafe { *c.n.get() += 1 };
                    }
                });
            }
            for _ in 0..per {
                c.gate.enter(barrier);
                // SAFETY: as above.
                unsafe { *c.n.get() += 1 };
                c.gate.leave();
            }
        });
        // SAFETY: every thread joined.
        assert_eq!(unsafe { *c.n.get() }, per + 2 * (per / 10));
    }

    #[test]
    fn the_gate_excludes_with_symmetric_fences() {
        exclude(Barrier::Symmetric);
    }

    #[test]
    fn the_gate_excludes_with_membarrier() {
        let b = Barrier::for_process();
        if !cfg!(miri) {
            assert_eq!(
                b,
                Barrier::Asymmetric,
                "membarrier is available on Linux 4.14+"
            );
        }
        exclude(b);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;

    struct Counted {
        gate: Gate,
        n: UnsafeCell<u64>,
    }
    // SAFETY: `n` is a loom cell: loom reports any access the gate fails to exclude.
    unsafe impl Sync for Counted {}
    // SAFETY: as above.
    unsafe impl Send for Counted {}

    fn bump(c: &Counted) {
        c.n.with_mut(|n| {
            // SAFETY: loom checks the access is exclusive.
            unsafe { *n += 1 }
        });
    }

    /// One owner entering twice (by `enter_as_owner`) against an intruder: loom's cell reports
    /// any overlap, and every increment is counted. Preemptions are bounded so the model stays
    /// small.
    fn owner_twice_against_an_intruder(enter_as_owner: fn(&Gate)) {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(1);
        model.max_branches = 100_000;
        model.check(move || {
            let c = Arc::new(Counted {
                gate: Gate::new(1),
                n: UnsafeCell::new(0),
            });
            let intruder = {
                let c = c.clone();
                loom::thread::spawn(move || {
                    let _g = c.gate.intrude(Barrier::Symmetric, 10);
                    bump(&c);
                })
            };
            for _ in 0..2 {
                enter_as_owner(&c.gate);
                bump(&c);
                c.gate.leave();
            }
            intruder.join().unwrap();
            let n = c.n.with(|n| {
                // SAFETY: every thread joined.
                unsafe { *n }
            });
            assert_eq!(n, 3);
        });
    }

    #[test]
    fn the_gate_excludes_the_owner_and_an_intruder() {
        owner_twice_against_an_intruder(|g| g.enter(Barrier::Symmetric));
    }

    /// The owner's fast path (`try_enter`, falling back on `enter`): the same exclusion,
    /// whichever way the owner got in.
    #[test]
    fn an_owner_that_gives_up_on_an_intrusion_is_excluded_too() {
        owner_twice_against_an_intruder(|g| {
            if !g.try_enter(Barrier::Symmetric) {
                g.enter(Barrier::Symmetric);
            }
        });
    }
}
