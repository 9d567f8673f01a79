//! Pool<T> against slotmap's SlotMap and thunderdome's Arena: insert, get, remove and iterate
//! N = 10k `u64` values, each peer measured in the same run.
//!
//! `CARGO_TARGET_DIR=/work/target-bench cargo bench -p strata-benches --bench pool --
//!  --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use slotmap::{DefaultKey, SlotMap};
use strata_alloc::{Handle, Pool};

const N: usize = 10_000;

/// A fixed-seed Fisher-Yates shuffle, so every peer sees the same access order.
fn shuffle<K>(keys: &mut [K]) {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..keys.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        keys.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

fn filled_pool() -> (Pool<u64>, Vec<Handle<u64>>) {
    let mut p = Pool::new();
    let mut hs: Vec<_> = (0..N as u64).map(|i| p.insert(i)).collect();
    shuffle(&mut hs);
    (p, hs)
}

fn filled_slotmap() -> (SlotMap<DefaultKey, u64>, Vec<DefaultKey>) {
    let mut m = SlotMap::new();
    let mut ks: Vec<_> = (0..N as u64).map(|i| m.insert(i)).collect();
    shuffle(&mut ks);
    (m, ks)
}

fn filled_arena() -> (thunderdome::Arena<u64>, Vec<thunderdome::Index>) {
    let mut a = thunderdome::Arena::new();
    let mut ks: Vec<_> = (0..N as u64).map(|i| a.insert(i)).collect();
    shuffle(&mut ks);
    (a, ks)
}

fn insert(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool/insert_10k");
    g.bench_function("Pool", |b| {
        b.iter(|| {
            let mut p = Pool::new();
            for i in 0..N as u64 {
                black_box(p.insert(i));
            }
            p
        })
    });
    g.bench_function("SlotMap", |b| {
        b.iter(|| {
            let mut m = SlotMap::new();
            for i in 0..N as u64 {
                black_box(m.insert(i));
            }
            m
        })
    });
    g.bench_function("thunderdome", |b| {
        b.iter(|| {
            let mut a = thunderdome::Arena::new();
            for i in 0..N as u64 {
                black_box(a.insert(i));
            }
            a
        })
    });
    g.finish();

    // Refilling slots freed by removals: the free-list path.
    let mut g = c.benchmark_group("pool/reinsert_10k");
    g.bench_function("Pool", |b| {
        b.iter_batched_ref(
            || {
                let (mut p, hs) = filled_pool();
                hs.into_iter().for_each(|h| {
                    p.remove(h);
                });
                p
            },
            |p| {
                (0..N as u64).for_each(|i| {
                    black_box(p.insert(i));
                })
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("SlotMap", |b| {
        b.iter_batched_ref(
            || {
                let (mut m, ks) = filled_slotmap();
                ks.into_iter().for_each(|k| {
                    m.remove(k);
                });
                m
            },
            |m| {
                (0..N as u64).for_each(|i| {
                    black_box(m.insert(i));
                })
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("thunderdome", |b| {
        b.iter_batched_ref(
            || {
                let (mut a, ks) = filled_arena();
                ks.into_iter().for_each(|k| {
                    a.remove(k);
                });
                a
            },
            |a| {
                (0..N as u64).for_each(|i| {
                    black_box(a.insert(i));
                })
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn get(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool/get_10k_random");
    let (p, hs) = filled_pool();
    g.bench_function("Pool", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for &h in &hs {
                if let Some(v) = p.get(black_box(h)) {
                    sum = sum.wrapping_add(*v);
                }
            }
            sum
        })
    });
    let (m, ks) = filled_slotmap();
    g.bench_function("SlotMap", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for &k in &ks {
                if let Some(v) = m.get(black_box(k)) {
                    sum = sum.wrapping_add(*v);
                }
            }
            sum
        })
    });
    let (a, ks) = filled_arena();
    g.bench_function("thunderdome", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for &k in &ks {
                if let Some(v) = a.get(black_box(k)) {
                    sum = sum.wrapping_add(*v);
                }
            }
            sum
        })
    });
    g.finish();
}

fn remove(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool/remove_10k_random");
    g.bench_function("Pool", |b| {
        b.iter_batched_ref(
            filled_pool,
            |(p, hs)| {
                hs.iter().for_each(|&h| {
                    black_box(p.remove(h));
                })
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("SlotMap", |b| {
        b.iter_batched_ref(
            filled_slotmap,
            |(m, ks)| {
                ks.iter().for_each(|&k| {
                    black_box(m.remove(k));
                })
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("thunderdome", |b| {
        b.iter_batched_ref(
            filled_arena,
            |(a, ks)| {
                ks.iter().for_each(|&k| {
                    black_box(a.remove(k));
                })
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn iterate(c: &mut Criterion) {
    // Full, then with a random half removed (free slots to skip).
    for (name, removed) in [
        ("pool/iterate_10k_full", 0),
        ("pool/iterate_10k_half", N / 2),
    ] {
        let mut g = c.benchmark_group(name);
        // The handles are shuffled, so the first `removed` of them are a random subset.
        let (mut p, hs) = filled_pool();
        hs[..removed].iter().for_each(|&h| {
            p.remove(h);
        });
        let (mut m, ks) = filled_slotmap();
        ks[..removed].iter().for_each(|&k| {
            m.remove(k);
        });
        let (mut a, ks) = filled_arena();
        ks[..removed].iter().for_each(|&k| {
            a.remove(k);
        });
        assert!(p.len() == m.len() && m.len() == a.len());
        g.bench_function("Pool", |b| {
            b.iter(|| {
                black_box(&p)
                    .iter()
                    .fold(0u64, |s, (_, v)| s.wrapping_add(*v))
            })
        });
        g.bench_function("SlotMap", |b| {
            b.iter(|| {
                black_box(&m)
                    .iter()
                    .fold(0u64, |s, (_, v)| s.wrapping_add(*v))
            })
        });
        g.bench_function("thunderdome", |b| {
            b.iter(|| {
                black_box(&a)
                    .iter()
                    .fold(0u64, |s, (_, v)| s.wrapping_add(*v))
            })
        });
        g.finish();
    }
}

criterion_group!(benches, insert, get, remove, iterate);
criterion_main!(benches);
