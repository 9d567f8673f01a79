//! Pool<T> and Handle<T>: model-based randomized tests against a `HashMap<Handle<T>, T>`, plus
//! the contract's edge cases (stale handles, drop counts, disjoint borrows, panics, allocators).

#[path = "../src/test_rng.rs"]
mod test_rng;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::rc::Rc;

use allocator_api2::alloc::{AllocError, Allocator, Global, Layout};
use strata_alloc::{Error, Handle, Pool};
use test_rng::Rng;

/// A value that records its own drop in a shared ledger, so double and missing drops show.
struct Tracked {
    id: u64,
    ledger: Rc<RefCell<Ledger>>,
}

#[derive(Default)]
struct Ledger {
    live: HashSet<u64>,
    dropped: usize,
}

impl Tracked {
    fn new(id: u64, ledger: &Rc<RefCell<Ledger>>) -> Tracked {
        assert!(ledger.borrow_mut().live.insert(id), "id {id} made twice");
        Tracked {
            id,
            ledger: ledger.clone(),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut l = self.ledger.borrow_mut();
        assert!(l.live.remove(&self.id), "value {} dropped twice", self.id);
        l.dropped += 1;
    }
}

/// The whole pool against the model: same values behind the same handles, nothing else.
fn assert_same(pool: &Pool<Tracked>, model: &HashMap<Handle<Tracked>, u64>) {
    pool.check().unwrap();
    assert_eq!(pool.len(), model.len());
    assert_eq!(pool.is_empty(), model.is_empty());
    let seen: HashMap<_, _> = pool.iter().map(|(h, v)| (h, v.id)).collect();
    assert_eq!(&seen, model);
    assert_eq!(pool.iter().len(), model.len());
}

fn run_model(seed: u64, ops: usize) {
    let mut rng = Rng::new(seed);
    let ledger = Rc::new(RefCell::new(Ledger::default()));
    let mut pool: Pool<Tracked> = Pool::new();
    let mut model: HashMap<Handle<Tracked>, u64> = HashMap::new();
    // Every handle ever given out, live or stale, so stale ones keep being probed.
    let mut handles: Vec<Handle<Tracked>> = Vec::new();
    let mut next_id = 0u64;

    for step in 0..ops {
        let pick = |rng: &mut Rng, handles: &[Handle<Tracked>]| {
            (!handles.is_empty()).then(|| handles[rng.range(0, handles.len())])
        };
        match rng.range(0, 100) {
            0..=34 => {
                let h = pool.insert(Tracked::new(next_id, &ledger));
                assert!(
                    !model.contains_key(&h),
                    "step {step}: handle {h:?} reached twice"
                );
                model.insert(h, next_id);
                handles.push(h);
                next_id += 1;
            }
            35..=54 => {
                if let Some(h) = pick(&mut rng, &handles) {
                    let got = pool.remove(h).map(|v| v.id);
                    assert_eq!(got, model.remove(&h), "step {step}: remove {h:?}");
                    assert!(!pool.contains(h));
                }
            }
            55..=69 => {
                if let Some(h) = pick(&mut rng, &handles) {
                    assert_eq!(pool.get(h).map(|v| v.id), model.get(&h).copied());
                    assert_eq!(pool.contains(h), model.contains_key(&h));
                }
            }
            70..=79 => {
                // get_mut: swap in a fresh value, which drops the old one.
                if let Some(h) = pick(&mut rng, &handles) {
                    match (pool.get_mut(h), model.get_mut(&h)) {
                        (Some(slot), Some(id)) => {
                            *slot = Tracked::new(next_id, &ledger);
                            *id = next_id;
                            next_id += 1;
                        }
                        (None, None) => {}
                        (a, b) => {
                            panic!("step {step}: get_mut {h:?}: {:?} vs {b:?}", a.map(|v| v.id))
                        }
                    }
                }
            }
            80..=84 => {
                if handles.len() >= 3 {
                    let hs = [0, 1, 2].map(|_| handles[rng.range(0, handles.len())]);
                    let distinct = hs[0] != hs[1] && hs[1] != hs[2] && hs[0] != hs[2];
                    let all_live = hs.iter().all(|h| model.contains_key(h));
                    match pool.get_disjoint_mut(hs) {
                        Some(refs) => {
                            assert!(distinct && all_live, "step {step}: {hs:?}");
                            for (r, h) in refs.into_iter().zip(hs) {
                                assert_eq!(r.id, model[&h]);
                            }
                        }
                        None => assert!(!(distinct && all_live), "step {step}: {hs:?}"),
                    }
                }
            }
            85..=89 => {
                if let Some(h) = pick(&mut rng, &handles) {
                    assert_eq!(pool.get(h).is_some(), model.contains_key(&h));
                    if let Some(&id) = model.get(&h) {
                        assert_eq!(pool[h].id, id);
                    }
                }
            }
            90..=94 => {
                let modulus = rng.range(2, 5) as u64;
                pool.retain(|h, v| {
                    assert_eq!(model.get(&h), Some(&v.id));
                    v.id % modulus != 0
                });
                model.retain(|_, id| *id % modulus != 0);
            }
            95..=96 => {
                let mut drained: Vec<_> = pool.drain().map(|(h, v)| (h, v.id)).collect();
                let mut expected: Vec<_> = model.drain().collect();
                drained.sort();
                expected.sort();
                assert_eq!(drained, expected);
            }
            97 => {
                pool.clear();
                model.clear();
            }
            _ => {
                for (h, v) in pool.iter_mut() {
                    assert_eq!(model[&h], v.id);
                }
            }
        }
        assert_same(&pool, &model);
        assert_eq!(
            ledger.borrow().live.len(),
            model.len(),
            "step {step}: a value leaked"
        );
        if handles.len() > 4096 {
            // Forget some old handles so picks still hit live ones often.
            handles.drain(..2048);
        }
    }
    let made = next_id as usize;
    drop(pool);
    let l = ledger.borrow();
    assert!(l.live.is_empty());
    assert_eq!(l.dropped, made, "every value dropped exactly once");
}

#[test]
fn model_randomized() {
    for seed in 0..8 {
        run_model(seed, 20_000);
    }
}

#[test]
fn model_plain_values_and_stale_handles_never_match() {
    // Heavy churn on a small pool: slots are reused many times, and every handle ever issued is
    // unique and never reaches a later value.
    let mut rng = Rng::new(99);
    let mut pool: Pool<u64> = Pool::new();
    let mut live: HashMap<Handle<u64>, u64> = HashMap::new();
    let mut dead: Vec<Handle<u64>> = Vec::new();
    let mut issued: HashSet<Handle<u64>> = HashSet::new();
    for i in 0..100_000u64 {
        if live.len() < 16 && rng.chance(2, 3) || live.is_empty() {
            let h = pool.insert(i);
            assert!(issued.insert(h), "handle {h:?} issued twice");
            live.insert(h, i);
        } else {
            let h = *live.keys().nth(rng.range(0, live.len())).unwrap();
            assert_eq!(pool.remove(h), live.remove(&h));
            dead.push(h);
        }
        if i % 97 == 0 {
            for &h in dead.iter().rev().take(64) {
                assert_eq!(pool.get(h), None);
            }
        }
    }
    for &h in &dead {
        assert!(!pool.contains(h));
    }
    pool.check().unwrap();
    assert!(pool.iter().len() <= 16);
}

#[test]
fn stale_after_remove() {
    let mut pool = Pool::new();
    let a = pool.insert("a");
    assert_eq!(pool.remove(a), Some("a"));
    let b = pool.insert("b");
    assert_eq!(a.index(), b.index(), "the slot is reused");
    assert_ne!(a, b);
    assert_eq!(pool.get(a), None);
    assert_eq!(pool.get_mut(a), None);
    assert!(!pool.contains(a));
    assert_eq!(pool.remove(a), None);
    assert_eq!(pool[b], "b");
}

#[test]
fn stale_after_clear() {
    let mut pool = Pool::new();
    let old: Vec<_> = (0..50).map(|i| pool.insert(i)).collect();
    pool.clear();
    assert!(pool.is_empty());
    let new: Vec<_> = (100..150).map(|i| pool.insert(i)).collect();
    let old_indices: BTreeSet<_> = old.iter().map(|h| h.index()).collect();
    let new_indices: BTreeSet<_> = new.iter().map(|h| h.index()).collect();
    assert_eq!(old_indices, new_indices, "clear keeps the slots for reuse");
    for &h in &old {
        assert_eq!(pool.get(h), None);
        assert!(!pool.contains(h));
    }
    for (i, &h) in new.iter().enumerate() {
        assert_eq!(pool[h], 100 + i);
    }
    pool.check().unwrap();
}

#[test]
fn drop_counts() {
    let ledger = Rc::new(RefCell::new(Ledger::default()));
    let mut pool = Pool::with_capacity(4);
    let hs: Vec<_> = (0..20)
        .map(|i| pool.insert(Tracked::new(i, &ledger)))
        .collect();
    let dropped = || ledger.borrow().dropped;

    drop(pool.remove(hs[0]));
    assert_eq!(dropped(), 1);
    assert!(pool.remove(hs[0]).is_none());
    assert_eq!(dropped(), 1);

    pool.retain(|_, v| v.id >= 10);
    assert_eq!(dropped(), 10);

    let first = pool.drain().next().map(|(_, v)| v.id);
    assert_eq!(first, Some(10));
    assert_eq!(dropped(), 20, "dropping the drain drops the rest");

    for i in 100..105 {
        pool.insert(Tracked::new(i, &ledger));
    }
    pool.clear();
    assert_eq!(dropped(), 25);

    for i in 200..203 {
        pool.insert(Tracked::new(i, &ledger));
    }
    let mut it = pool.into_iter();
    assert!(matches!(it.next().map(|(_, v)| v.id), Some(200..=202)));
    assert_eq!(dropped(), 26);
    drop(it);
    assert_eq!(dropped(), 28);
    assert!(ledger.borrow().live.is_empty());
}

#[test]
fn leaked_drain_leaves_values_in_the_pool() {
    let ledger = Rc::new(RefCell::new(Ledger::default()));
    let mut pool = Pool::new();
    let hs: Vec<_> = (0..4)
        .map(|i| pool.insert(Tracked::new(i, &ledger)))
        .collect();
    let mut drain = pool.drain();
    drop(drain.next());
    std::mem::forget(drain);
    pool.check().unwrap();
    assert_eq!(pool.len(), 3);
    assert!(!pool.contains(hs[0]));
    assert_eq!(pool[hs[3]].id, 3);
    drop(pool);
    assert_eq!(ledger.borrow().dropped, 4);
}

#[test]
fn retain_predicate_panic_drops_nothing_twice() {
    let ledger = Rc::new(RefCell::new(Ledger::default()));
    let mut pool = Pool::new();
    for i in 0..10 {
        pool.insert(Tracked::new(i, &ledger));
    }
    let r = catch_unwind(AssertUnwindSafe(|| {
        pool.retain(|_, v| {
            assert!(v.id != 5, "predicate gives up");
            v.id % 2 == 0
        })
    }));
    assert!(r.is_err());
    pool.check().unwrap();
    // 1 and 3 are gone; 5 and after were not reached.
    let left: Vec<_> = pool.iter().map(|(_, v)| v.id).collect();
    assert_eq!(left, [0, 2, 4, 5, 6, 7, 8, 9]);
    drop(pool);
    let l = ledger.borrow();
    assert_eq!(l.dropped, 10);
    assert!(l.live.is_empty());
}

#[test]
fn disjoint_mut_rejects_duplicates_and_stale() {
    let mut pool = Pool::new();
    let hs: Vec<_> = (0..5).map(|i| pool.insert(i * 10)).collect();
    {
        let [a, b, c] = pool.get_disjoint_mut([hs[4], hs[0], hs[2]]).unwrap();
        *a += 1;
        *b += 2;
        *c += 3;
    }
    assert_eq!(pool[hs[4]], 41);
    assert_eq!(pool[hs[0]], 2);
    assert_eq!(pool[hs[2]], 23);
    assert!(pool.get_disjoint_mut([hs[1], hs[1]]).is_none());
    assert!(pool.get_disjoint_mut([hs[1], hs[2], hs[1]]).is_none());
    pool.remove(hs[3]);
    assert!(pool.get_disjoint_mut([hs[1], hs[3]]).is_none());
    // A new value in the same slot is a different handle; the stale one still fails.
    let again = pool.insert(99);
    assert_eq!(again.index(), hs[3].index());
    assert!(pool.get_disjoint_mut([again, hs[3]]).is_none());
    assert!(pool.get_disjoint_mut([again, hs[1]]).is_some());
}

#[test]
#[should_panic(expected = "stale Handle(0v1): its value was removed or the pool was cleared")]
fn index_panics_on_stale_handle() {
    let mut pool = Pool::new();
    let h = pool.insert(1);
    pool.remove(h);
    let _ = pool[h];
}

#[test]
#[should_panic(expected = "stale Handle(1v1)")]
fn index_mut_panics_on_cleared_handle() {
    let mut pool = Pool::new();
    pool.insert(0);
    let h = pool.insert(1);
    pool.clear();
    pool[h] += 1;
}

#[test]
#[should_panic(expected = "is not from this pool")]
fn index_panics_on_foreign_handle() {
    let mut big = Pool::new();
    let h = (0..10).map(|i| big.insert(i)).last().unwrap();
    let small: Pool<i32> = Pool::new();
    let _ = small[h];
}

#[test]
fn zero_sized_values() {
    let mut pool: Pool<()> = Pool::new();
    let hs: Vec<_> = (0..1000).map(|_| pool.insert(())).collect();
    for h in hs.iter().step_by(2) {
        assert_eq!(pool.remove(*h), Some(()));
    }
    assert_eq!(pool.len(), 500);
    assert_eq!(pool.iter().count(), 500);
    assert!(pool.iter().all(|(h, _)| h.index() % 2 == 1));
    let again: Vec<_> = (0..500).map(|_| pool.insert(())).collect();
    assert!(
        again.iter().all(|h| h.index() % 2 == 0),
        "freed slots are reused first"
    );
    assert!(hs.iter().step_by(2).all(|h| !pool.contains(*h)));
    pool.check().unwrap();
}

#[test]
fn handle_traits_for_any_t() {
    // Not Clone, not Eq, not Hash, not Debug, not Send, not Sync.
    struct Opaque(#[allow(dead_code)] Rc<()>);
    let mut pool = Pool::new();
    let a = pool.insert(Opaque(Rc::new(())));
    let b = pool.insert(Opaque(Rc::new(())));
    let a2 = a;
    assert_eq!(a, a2.clone());
    assert!(a < b);
    let set: HashSet<Handle<Opaque>> = [a, b, a2].into_iter().collect();
    assert_eq!(set.len(), 2);
    assert_eq!(format!("{a:?} {b:?}"), "Handle(0v1) Handle(1v1)");
    fn send_sync<T: Send + Sync + Copy + Ord + std::hash::Hash + std::fmt::Debug>(_: T) {}
    send_sync(a);
    assert_eq!(std::mem::size_of::<Handle<Opaque>>(), 8);
    assert_eq!(std::mem::size_of::<Option<Handle<Opaque>>>(), 8);
}

#[test]
fn iterators() {
    let mut pool = Pool::new();
    let hs: Vec<_> = (0..10).map(|i| pool.insert(i)).collect();
    for &h in &hs[..3] {
        pool.remove(h);
    }
    pool.remove(hs[9]);
    let fwd: Vec<_> = pool.iter().map(|(_, v)| *v).collect();
    assert_eq!(fwd, [3, 4, 5, 6, 7, 8]);
    let back: Vec<_> = pool.iter().rev().map(|(_, v)| *v).collect();
    assert_eq!(back, [8, 7, 6, 5, 4, 3]);
    let mut it = pool.iter();
    assert_eq!(it.len(), 6);
    assert_eq!(it.next().map(|(h, _)| h), Some(hs[3]));
    assert_eq!(it.next_back().map(|(h, _)| h), Some(hs[8]));
    assert_eq!(it.len(), 4);
    for (h, v) in &mut pool {
        *v += h.index() as i32;
    }
    assert_eq!(pool[hs[5]], 10);
    let owned: Vec<_> = pool.clone().into_iter().map(|(_, v)| v).collect();
    assert_eq!(owned, [6, 8, 10, 12, 14, 16]);
    assert_eq!(
        format!("{:?}", pool.iter().next().unwrap()),
        "(Handle(3v1), 6)"
    );
}

#[test]
fn clone_answers_to_the_same_handles() {
    let mut pool = Pool::new();
    let hs: Vec<_> = (0..8).map(|i| pool.insert(i.to_string())).collect();
    pool.remove(hs[2]);
    let mut copy = pool.clone();
    copy.check().unwrap();
    for &h in &hs {
        assert_eq!(pool.get(h), copy.get(h));
    }
    // Both reuse the same freed slot with the same generation, independently.
    let a = pool.insert("x".into());
    let b = copy.insert("y".into());
    assert_eq!(a, b);
    assert_eq!((pool[a].as_str(), copy[b].as_str()), ("x", "y"));
}

#[test]
fn capacity_and_reserve() {
    let mut pool: Pool<u64> = Pool::with_capacity(16);
    let cap = pool.capacity();
    assert!(cap >= 16);
    let hs: Vec<_> = (0..16).map(|i| pool.insert(i)).collect();
    assert_eq!(pool.capacity(), cap, "no reallocation within capacity");
    for &h in &hs[..8] {
        pool.remove(h);
    }
    // 8 vacant slots are reusable, so reserving 8 needs no new memory.
    pool.reserve(8);
    assert_eq!(pool.capacity(), cap);
    pool.reserve(100);
    assert!(pool.capacity() >= pool.len() + 100);
    pool.try_reserve(1000).unwrap();
    assert!(pool.capacity() >= pool.len() + 1000);
    match pool.try_reserve(usize::MAX) {
        Err(Error::OutOfMemory { requested, .. }) => assert_eq!(requested, usize::MAX),
        other => panic!("{other:?}"),
    }
    pool.check().unwrap();
    assert_eq!(pool.len(), 8);
}

#[test]
#[should_panic(expected = "Pool::reserve")]
fn reserve_past_the_slot_limit_panics() {
    let mut pool: Pool<u8> = Pool::new();
    pool.reserve(u32::MAX as usize + 1);
}

/// An allocator that refuses once its byte budget is spent.
struct Budget {
    left: Cell<usize>,
}

// SAFETY: every block comes from `Global` and goes back to it unchanged; the budget only decides
// whether to ask.
unsafe impl Allocator for &Budget {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let left = self.left.get();
        if layout.size() > left {
            return Err(AllocError);
        }
        self.left.set(left - layout.size());
        Global.allocate(layout)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: `ptr` was allocated by `Global` with `layout` (see `allocate`).
        unsafe { Global.deallocate(ptr, layout) }
    }
}

#[test]
fn try_insert_hands_the_value_back_when_the_allocator_refuses() {
    let budget = Budget {
        left: Cell::new(usize::MAX),
    };
    let mut pool: Pool<String, &Budget> = Pool::with_capacity_in(4, &budget);
    let cap = pool.capacity();
    assert!(cap >= 4);
    budget.left.set(0);
    let extra: Vec<_> = (4..cap).map(|i| pool.insert(i.to_string())).collect();
    let hs: Vec<_> = (0..4)
        .map(|i| pool.try_insert(i.to_string()).unwrap())
        .collect();
    let err = pool.try_insert(String::from("fifth")).unwrap_err();
    assert!(matches!(err.error(), Error::OutOfMemory { .. }), "{err}");
    assert!(err.to_string().contains("out of memory"));
    assert_eq!(err.into_value(), "fifth");
    assert!(pool.try_reserve(1).is_err());
    // Nothing was lost and the pool still works: a freed slot is reused without allocating.
    pool.check().unwrap();
    assert_eq!(pool.len(), cap);
    assert_eq!(pool[hs[3]], "3");
    assert_eq!(extra.len(), cap - 4);
    pool.remove(hs[1]);
    let h = pool.try_insert(String::from("reused")).unwrap();
    assert_eq!(h.index(), hs[1].index());
    budget.left.set(usize::MAX);
    pool.try_insert(String::from("grown")).unwrap();
    assert_eq!(pool.len(), cap + 1);
}

#[test]
fn works_in_a_bump_arena() {
    let bump = bumpalo::Bump::new();
    let mut pool = Pool::new_in(&bump);
    let mut model = HashMap::new();
    let mut rng = Rng::new(7);
    for i in 0..5000u32 {
        if rng.chance(2, 3) || model.is_empty() {
            model.insert(pool.insert(i), i);
        } else {
            let h = *model.keys().next().unwrap();
            assert_eq!(pool.remove(h), model.remove(&h));
        }
    }
    pool.check().unwrap();
    assert_eq!(pool.len(), model.len());
    for (h, v) in &model {
        assert_eq!(pool[*h], *v);
    }
    assert!(bump.allocated_bytes() > 0);
}

#[test]
fn self_referencing_insert() {
    struct Node {
        me: Handle<Node>,
        next: Option<Handle<Node>>,
    }
    let mut pool = Pool::new();
    let a = pool.insert_with(|me| Node { me, next: None });
    let b = pool.insert_with(|me| Node { me, next: Some(a) });
    assert_eq!(pool[b].me, b);
    assert_eq!(pool[b].next, Some(a));
    assert_eq!(pool[a].me, a);
    let r = catch_unwind(AssertUnwindSafe(|| {
        pool.insert_with(|_| panic!("no value"));
    }));
    assert!(r.is_err());
    pool.check().unwrap();
    assert_eq!(pool.len(), 2);
}

#[test]
fn pools_live_in_the_crates_own_allocators() {
    let arena = strata_alloc::Arena::new().unwrap();
    let heap = strata_alloc::Heap::new().unwrap();
    let mut in_arena: Pool<String, &strata_alloc::Arena> = Pool::new_in(&arena);
    let mut in_heap: Pool<[u64; 4], &strata_alloc::Heap> = Pool::new_in(&heap);
    let mut handles = Vec::new();
    for i in 0..500u64 {
        handles.push((in_arena.insert(i.to_string()), in_heap.insert([i; 4])));
    }
    for (i, &(a, h)) in handles.iter().enumerate() {
        assert_eq!(in_arena[a], i.to_string());
        assert_eq!(in_heap[h], [i as u64; 4]);
    }
    for &(a, h) in handles.iter().step_by(2) {
        assert!(in_arena.remove(a).is_some() && in_heap.remove(h).is_some());
    }
    assert_eq!(in_arena.len(), 250);
    assert!(arena.stats().live_blocks >= 1 && heap.stats().live_blocks >= 1);
    arena.check().unwrap();
    heap.check().unwrap();
    drop(in_arena);
    drop(in_heap);
    assert_eq!(arena.stats().live_blocks, 0);
    assert_eq!(heap.stats().live_blocks, 0);
}
