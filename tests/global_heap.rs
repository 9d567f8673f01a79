//! A test binary whose global allocator is a `GlobalHeap`: every std collection, thread and
//! the test harness itself allocate through it.

#[path = "../src/test_rng.rs"]
mod test_rng;

use std::collections::{BTreeMap, HashMap};

use strata_alloc::GlobalHeap;

#[global_allocator]
static HEAP: GlobalHeap = GlobalHeap::new();

#[test]
fn std_collections_and_threads_run_on_the_global_heap() {
    let before = HEAP.stats().allocations;
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = test_rng::Rng::new(t);
                let mut map: HashMap<String, Vec<u8>> = HashMap::new();
                let mut tree = BTreeMap::new();
                for i in 0..50_000usize {
                    let key = format!("key-{t}-{}", rng.range(0, 5000));
                    let entry = map.entry(key.clone()).or_default();
                    entry.extend(std::iter::repeat_n(i as u8, rng.range(0, 64)));
                    if rng.chance(1, 3) {
                        map.remove(&key);
                    }
                    tree.insert(i, key);
                    if i % 3 == 0 {
                        tree.remove(&(i / 2));
                    }
                }
                let total: usize = map.values().map(Vec::len).sum();
                (map.len(), tree.len(), total)
            })
        })
        .collect();
    for h in handles {
        let (keys, nodes, _) = h.join().unwrap();
        assert!(keys > 0 && nodes > 0);
    }
    let big: Vec<u64> = (0..2_000_000).collect();
    assert_eq!(big.iter().sum::<u64>(), 1_999_999 * 2_000_000 / 2);
    drop(big);
    let s = HEAP.stats();
    assert!(s.allocations > before + 100_000, "{s}");
    assert!(s.mapped_blocks < 10);
    HEAP.check().unwrap();
}

#[test]
fn a_huge_request_fails_cleanly() {
    let mut v: Vec<u8> = Vec::new();
    assert!(
        v.try_reserve(1 << 40).is_err(),
        "beyond max_size: null, not a crash"
    );
    v.extend_from_slice(b"still works");
    assert_eq!(&v, b"still works");
}
