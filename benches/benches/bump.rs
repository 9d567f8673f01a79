//! Bump against bumpalo and bump-scope, in the same run.
//!
//! `cargo bench -p strata-benches --bench bump -- --warm-up-time 1 --measurement-time 3`
//!
//! Every group runs the same work on the three arenas. Most reuse one arena across iterations
//! (reset or scope end between them), as a server would reuse one per worker;
//! `bump/requests_100k_fresh` makes a fresh arena for every request instead, the other common
//! way to write a request handler.

// Every arena is handed to collections as `&Bump`, like for like, even where bump-scope's
// `Bump` would also serve by value.
#![allow(clippy::needless_borrows_for_generic_args)]

use std::hint::black_box;

use allocator_api2::vec::Vec as AVec;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

type Scope = bump_scope::Bump;

const N: usize = 10_000;

#[derive(Clone, Copy)]
#[allow(dead_code)]
struct Big {
    bytes: [u8; 100],
}

fn alloc_10k(c: &mut Criterion) {
    let mut g = c.benchmark_group("bump/alloc_10k");
    g.throughput(Throughput::Elements(N as u64));

    macro_rules! case {
        ($name:literal, $ty:ty, $make:expr) => {{
            let make = $make;
            let mut ours = strata_alloc::Bump::new();
            g.bench_function(BenchmarkId::new("strata", $name), |b| {
                b.iter(|| {
                    ours.reset();
                    for i in 0..N {
                        black_box(ours.alloc::<$ty>(make(i)));
                    }
                })
            });
            let mut theirs = bumpalo::Bump::new();
            g.bench_function(BenchmarkId::new("bumpalo", $name), |b| {
                b.iter(|| {
                    theirs.reset();
                    for i in 0..N {
                        black_box(theirs.alloc::<$ty>(make(i)));
                    }
                })
            });
            let mut scope = Scope::new();
            g.bench_function(BenchmarkId::new("bump-scope", $name), |b| {
                b.iter(|| {
                    scope.reset();
                    for i in 0..N {
                        black_box(scope.alloc::<$ty>(make(i)).into_mut());
                    }
                })
            });
        }};
    }
    case!("u8", u8, |i: usize| i as u8);
    case!("u64", u64, |i: usize| i as u64);
    case!("struct100", Big, |i: usize| Big {
        bytes: [i as u8; 100]
    });
    g.finish();
}

const MIB: usize = 1 << 20;

fn push_mib<A: allocator_api2::alloc::Allocator>(a: A) -> usize {
    let mut v = AVec::new_in(a);
    for i in 0..MIB {
        v.push(i as u8);
    }
    black_box(&v);
    v.len()
}

fn vec_push_1mib(c: &mut Criterion) {
    let mut g = c.benchmark_group("bump/vec_push_1mib");
    g.throughput(Throughput::Bytes(MIB as u64));

    // Footprint after one Vec of 1 MiB in a fresh arena (printed once: criterion has no
    // column for it).
    {
        let ours = strata_alloc::Bump::new();
        push_mib(&ours);
        let theirs = bumpalo::Bump::new();
        push_mib(&theirs);
        let scope = Scope::new();
        push_mib(&scope);
        let (o, t, s) = (
            ours.chunk_capacity(),
            theirs.allocated_bytes(),
            scope.stats().size(),
        );
        eprintln!(
            "footprint after a 1 MiB Vec<u8>: strata {o} B, bumpalo {t} B, bump-scope {s} B; \
             strata/bumpalo = {:.2}, strata/bump-scope = {:.2}",
            o as f64 / t as f64,
            o as f64 / s as f64
        );
    }

    // Fresh arena each time: includes mapping the chunks.
    g.bench_function("strata/fresh", |b| {
        b.iter(|| push_mib(&strata_alloc::Bump::new()))
    });
    g.bench_function("bumpalo/fresh", |b| {
        b.iter(|| push_mib(&bumpalo::Bump::new()))
    });
    g.bench_function("bump-scope/fresh", |b| b.iter(|| push_mib(&Scope::new())));

    // Reused arena, reset between iterations.
    let mut ours = strata_alloc::Bump::new();
    g.bench_function("strata/reused", |b| {
        b.iter(|| {
            ours.reset();
            push_mib(&ours)
        })
    });
    let mut theirs = bumpalo::Bump::new();
    g.bench_function("bumpalo/reused", |b| {
        b.iter(|| {
            theirs.reset();
            push_mib(&theirs)
        })
    });
    let mut scope = Scope::new();
    g.bench_function("bump-scope/reused", |b| {
        b.iter(|| {
            scope.reset();
            push_mib(&scope)
        })
    });
    g.finish();
}

const RESERVE_N: usize = 10_000;

fn reserve_exact_loop<A: allocator_api2::alloc::Allocator>(a: A) -> usize {
    let mut v = AVec::new_in(a);
    for i in 0..RESERVE_N {
        v.reserve_exact(1);
        v.push(i as u64);
    }
    black_box(&v);
    v.len()
}

fn reserve_exact_1(c: &mut Criterion) {
    let mut g = c.benchmark_group("bump/reserve_exact_1");
    g.throughput(Throughput::Elements(RESERVE_N as u64));
    let mut ours = strata_alloc::Bump::new();
    g.bench_function("strata", |b| {
        b.iter(|| {
            ours.reset();
            reserve_exact_loop(&ours)
        })
    });
    let mut theirs = bumpalo::Bump::new();
    g.bench_function("bumpalo", |b| {
        b.iter(|| {
            theirs.reset();
            reserve_exact_loop(&theirs)
        })
    });
    let mut scope = Scope::new();
    g.bench_function("bump-scope", |b| {
        b.iter(|| {
            scope.reset();
            reserve_exact_loop(&scope)
        })
    });
    g.finish();
}

const REQUESTS: usize = 10_000;
const PER_REQUEST: usize = 200;

#[derive(Clone, Copy)]
#[allow(dead_code)]
struct Header {
    name: u32,
    len: u32,
    value: u64,
}

/// One request's worth of small allocations. Written as a macro so the same text runs on every
/// arena (bump-scope returns `BumpBox`es, which deref like the others' `&mut`).
macro_rules! request {
    ($b:expr, $req:expr) => {{
        let mut sum = 0usize;
        for i in 0..PER_REQUEST {
            match i % 4 {
                0 => sum += *$b.alloc(($req + i) as u64) as usize,
                1 => {
                    black_box(&*$b.alloc(Header {
                        name: i as u32,
                        len: 3,
                        value: $req as u64,
                    }));
                }
                2 => sum += $b.alloc_str("content-length").len(),
                _ => sum += *$b.alloc(i as u32) as usize,
            }
        }
        black_box(sum)
    }};
}

fn requests_10k(c: &mut Criterion) {
    let mut g = c.benchmark_group("bump/requests_10k");
    g.throughput(Throughput::Elements(REQUESTS as u64));
    let mut ours = strata_alloc::Bump::new();
    g.bench_function("strata/scope", |b| {
        b.iter(|| {
            for r in 0..REQUESTS {
                ours.scope(|bump| request!(bump, r));
            }
        })
    });
    g.bench_function("strata/reset", |b| {
        b.iter(|| {
            for r in 0..REQUESTS {
                request!(ours, r);
                ours.reset();
            }
        })
    });
    let mut theirs = bumpalo::Bump::new();
    g.bench_function("bumpalo/reset", |b| {
        b.iter(|| {
            for r in 0..REQUESTS {
                request!(theirs, r);
                theirs.reset();
            }
        })
    });
    let mut scope = Scope::new();
    g.bench_function("bump-scope/scoped", |b| {
        b.iter(|| {
            for r in 0..REQUESTS {
                scope.scoped(|bump| request!(bump, r));
            }
        })
    });
    g.bench_function("bump-scope/reset", |b| {
        b.iter(|| {
            for r in 0..REQUESTS {
                request!(scope, r);
                scope.reset();
            }
        })
    });
    g.finish();
}

const FRESH_REQUESTS: usize = 100_000;

/// 100k requests of 200 small allocations each, every request in an arena of its own, made and
/// dropped with the request.
fn requests_100k_fresh(c: &mut Criterion) {
    let mut g = c.benchmark_group("bump/requests_100k_fresh");
    g.throughput(Throughput::Elements(FRESH_REQUESTS as u64));
    g.bench_function("strata", |b| b.iter(fresh_strata));
    g.bench_function("bumpalo", |b| b.iter(fresh_bumpalo));
    g.bench_function("bump-scope", |b| b.iter(fresh_scope));
    g.finish();
}

fn fresh_strata() {
    for r in 0..FRESH_REQUESTS {
        let bump = strata_alloc::Bump::new();
        request!(bump, r);
    }
}

fn fresh_bumpalo() {
    for r in 0..FRESH_REQUESTS {
        let bump = bumpalo::Bump::new();
        request!(bump, r);
    }
}

fn fresh_scope() {
    for r in 0..FRESH_REQUESTS {
        let bump = Scope::new();
        request!(bump, r);
    }
}

/// Ratios that survive a busy machine: the three arenas run interleaved, round after round,
/// and each keeps its fastest round (interference only ever adds time). Printed once before
/// the criterion groups; `BUMP_RATIO_ROUNDS=0` skips it.
fn interleaved_ratios(_: &mut Criterion) {
    use std::time::Instant;
    let rounds: usize = std::env::var("BUMP_RATIO_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    if rounds == 0 {
        return;
    }
    fn min_of(rounds: usize, fs: &mut [&mut dyn FnMut()]) -> Vec<f64> {
        let mut best = vec![f64::INFINITY; fs.len()];
        for _ in 0..rounds {
            for (i, f) in fs.iter_mut().enumerate() {
                let t = Instant::now();
                f();
                best[i] = best[i].min(t.elapsed().as_secs_f64());
            }
        }
        best
    }
    let report = |name: &str, t: &[f64]| {
        eprintln!(
            "ratio {name:<28} strata {:>9.1} us | strata/bumpalo {:>6.3} | strata/bump-scope {:>6.3}",
            t[0] * 1e6,
            t[0] / t[1],
            t[0] / t[2]
        );
    };
    macro_rules! alloc_case {
        ($name:literal, $ty:ty, $make:expr) => {{
            let make = $make;
            let mut a = strata_alloc::Bump::new();
            let mut b = bumpalo::Bump::new();
            let mut c = Scope::new();
            let t = min_of(
                rounds,
                &mut [
                    &mut || {
                        a.reset();
                        for i in 0..N {
                            black_box(a.alloc::<$ty>(make(i)));
                        }
                    },
                    &mut || {
                        b.reset();
                        for i in 0..N {
                            black_box(b.alloc::<$ty>(make(i)));
                        }
                    },
                    &mut || {
                        c.reset();
                        for i in 0..N {
                            black_box(c.alloc::<$ty>(make(i)).into_mut());
                        }
                    },
                ],
            );
            report($name, &t);
        }};
    }
    alloc_case!("alloc_10k/u8", u8, |i: usize| i as u8);
    alloc_case!("alloc_10k/u64", u64, |i: usize| i as u64);
    alloc_case!("alloc_10k/struct100", Big, |i: usize| Big {
        bytes: [i as u8; 100]
    });

    let (mut a, mut b, mut c) = (
        strata_alloc::Bump::new(),
        bumpalo::Bump::new(),
        Scope::new(),
    );
    let t = min_of(
        rounds / 2 + 1,
        &mut [
            &mut || {
                a.reset();
                push_mib(&a);
            },
            &mut || {
                b.reset();
                push_mib(&b);
            },
            &mut || {
                c.reset();
                push_mib(&c);
            },
        ],
    );
    report("vec_push_1mib/reused", &t);
    let t = min_of(
        rounds / 4 + 1,
        &mut [
            &mut || {
                push_mib(&strata_alloc::Bump::new());
            },
            &mut || {
                push_mib(&bumpalo::Bump::new());
            },
            &mut || {
                push_mib(&Scope::new());
            },
        ],
    );
    report("vec_push_1mib/fresh", &t);
    let t = min_of(
        rounds / 2 + 1,
        &mut [
            &mut || {
                a.reset();
                reserve_exact_loop(&a);
            },
            &mut || {
                b.reset();
                reserve_exact_loop(&b);
            },
            &mut || {
                c.reset();
                reserve_exact_loop(&c);
            },
        ],
    );
    report("reserve_exact_1", &t);
    let t = min_of(
        rounds,
        &mut [
            &mut || {
                for r in 0..REQUESTS {
                    a.scope(|bump| request!(bump, r));
                }
            },
            &mut || {
                for r in 0..REQUESTS {
                    request!(b, r);
                    b.reset();
                }
            },
            &mut || {
                for r in 0..REQUESTS {
                    c.scoped(|bump| request!(bump, r));
                }
            },
        ],
    );
    report("requests_10k (scope)", &t);
    let t = min_of(
        rounds,
        &mut [
            &mut || {
                for r in 0..REQUESTS {
                    request!(a, r);
                    a.reset();
                }
            },
            &mut || {
                for r in 0..REQUESTS {
                    request!(b, r);
                    b.reset();
                }
            },
            &mut || {
                for r in 0..REQUESTS {
                    request!(c, r);
                    c.reset();
                }
            },
        ],
    );
    report("requests_10k (reset)", &t);
    let t = min_of(
        rounds / 4 + 1,
        &mut [&mut fresh_strata, &mut fresh_bumpalo, &mut fresh_scope],
    );
    report("requests_100k_fresh", &t);
}

criterion_group!(
    benches,
    interleaved_ratios,
    alloc_10k,
    vec_push_1mib,
    reserve_exact_1,
    requests_10k,
    requests_100k_fresh
);
criterion_main!(benches);
