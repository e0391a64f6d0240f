//! Routing benchmarks: trie walk (uncached and cached) against a `GlobSet`
//! baseline, the cost of `add` on a large router, and the adversarial sets
//! (100k `**`-rich patterns, 100k literal ones, long types) beside the benign one.
//!
//! Run with `cargo bench --bench routing`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use signal_bus::Router;

const SIZES: &[usize] = &[10, 1_000, 10_000, 100_000];
const PROBES: usize = 1_000;

/// A realistic pattern mix: ~70% literal 3-4 segment types, ~20% with `*` in
/// one position, ~10% ending in `.**`, and about 1% glob segments.
fn pattern(i: usize) -> String {
    let svc = i % 50;
    if i % 100 == 42 {
        return format!("svc{svc}.entity{i}.{{created,updated}}");
    }
    if i % 100 == 43 {
        return format!("svc{svc}.entity{i}.v[0-9].changed");
    }
    match i % 10 {
        0..=3 => format!("svc{svc}.entity{i}.created"),
        4..=6 => format!("svc{svc}.entity{i}.v2.updated"),
        7 => match i % 3 {
            0 => format!("*.entity{i}.created"),
            1 => format!("svc{svc}.*.deleted{i}"),
            _ => format!("svc{svc}.entity{i}.*"),
        },
        8 => format!("svc{svc}.entity{i}.v2.*"),
        _ => format!("svc{svc}.entity{i}.**"),
    }
}

/// A type matched by `pattern(i)`.
fn matching_type(i: usize) -> String {
    pattern(i)
        .split('.')
        .map(|seg| match seg {
            "*" => "x".to_owned(),
            "**" => "x.y".to_owned(),
            "{created,updated}" => "updated".to_owned(),
            "v[0-9]" => "v3".to_owned(),
            lit => lit.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Probe types: about half are built to match a route, the rest are near
/// misses (known service and entity, unknown event) or unknown services.
fn probes(n: usize) -> Vec<String> {
    (0..PROBES)
        .map(|j| {
            let e = (j * 7919) % n;
            let svc = e % 50;
            match j % 4 {
                0 | 1 => matching_type(e),
                2 => format!("svc{svc}.entity{e}.archived"),
                _ => format!("unknown{j}.thing.happened"),
            }
        })
        .collect()
}

fn router(n: usize) -> Router<usize> {
    let mut r = Router::new();
    for i in 0..n {
        r.add(&pattern(i), (i % 7) as i32 - 3, i)
            .expect("valid pattern");
    }
    r
}

fn globset(n: usize) -> Result<GlobSet, globset::Error> {
    let mut b = GlobSetBuilder::new();
    for i in 0..n {
        let glob = pattern(i).replace('.', "/");
        b.add(GlobBuilder::new(&glob).literal_separator(true).build()?);
    }
    b.build()
}

fn bench_route(c: &mut Criterion) {
    let routers: Vec<(usize, Router<usize>, Vec<String>)> =
        SIZES.iter().map(|&n| (n, router(n), probes(n))).collect();

    let mut hits = 0usize;
    for (n, r, probes) in &routers {
        let matched = probes.iter().filter(|p| !r.route(p).is_empty()).count();
        hits += matched;
        println!(
            "routes {n}: {matched}/{} probes match at least one route",
            probes.len()
        );
    }
    black_box(hits);

    let mut group = c.benchmark_group("route/trie_uncached");
    group.throughput(Throughput::Elements(PROBES as u64));
    for (n, r, probes) in &routers {
        group.bench_with_input(BenchmarkId::from_parameter(n), probes, |b, probes| {
            b.iter(|| {
                let mut total = 0;
                for p in probes {
                    total += r.route_uncached(black_box(p)).len();
                }
                total
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("route/cached");
    group.throughput(Throughput::Elements(PROBES as u64));
    for (n, r, probes) in &routers {
        for p in probes {
            r.route(p); // warm the cache
        }
        group.bench_with_input(BenchmarkId::from_parameter(n), probes, |b, probes| {
            b.iter(|| {
                let mut total = 0;
                for p in probes {
                    total += r.route(black_box(p)).len();
                }
                total
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("route/globset_baseline");
    group.throughput(Throughput::Elements(PROBES as u64));
    for (n, r, probes) in &routers {
        let started = std::time::Instant::now();
        let set = match globset(*n) {
            Ok(set) => set,
            Err(e) => {
                println!(
                    "globset_baseline/{n}: GlobSet build failed after {:?}: {e}",
                    started.elapsed()
                );
                continue;
            }
        };
        println!(
            "globset_baseline/{n}: GlobSet built in {:?}",
            started.elapsed()
        );
        let slashed: Vec<String> = probes.iter().map(|p| p.replace('.', "/")).collect();
        // Sanity: the baseline finds as many matching probes as the router,
        // give or take the `a/**` zero-segment difference.
        let gs_matched = slashed.iter().filter(|p| set.is_match(p)).count();
        let trie_matched = probes.iter().filter(|p| !r.route(p).is_empty()).count();
        println!("globset_baseline/{n}: {gs_matched} probes match (trie: {trie_matched})");
        group.bench_with_input(BenchmarkId::from_parameter(n), probes, |b, probes| {
            let mut out = Vec::new();
            b.iter(|| {
                let mut total = 0;
                for p in probes {
                    // The conversion is part of the per-event cost.
                    let path = black_box(p).replace('.', "/");
                    set.matches_into(&path, &mut out);
                    total += out.len();
                }
                total
            })
        });
    }
    group.finish();
}

fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// `**`-rich patterns over a 4-letter alphabet, 4-8 segments (`a.**.b.*.**.c` and the
/// like, as in the issue); the same generator as `tests/router_limits.rs`.
fn adversarial_patterns(n: usize) -> Vec<String> {
    let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|_| {
            let len = 4 + (next() % 5) as usize;
            let mut segs: Vec<&str> = Vec::new();
            while segs.len() < len {
                let s = ["**", "**", "**", "*", "a", "b", "c", "d"][(next() % 8) as usize];
                if !(s == "**" && segs.last() == Some(&"**")) {
                    segs.push(s);
                }
            }
            segs.join(".")
        })
        .collect()
}

/// Adversarial probe types of `m` segments: the alphabet in turn (matches the most routes),
/// all `a`, random letters, and a type of unknown segments.
fn adversarial_types(m: usize) -> Vec<(&'static str, String)> {
    let mut next = xorshift(0xD1B5_4A32_D192_ED03 ^ m as u64);
    let abcd = ["a", "b", "c", "d"];
    let cycle: Vec<&str> = (0..m).map(|j| abcd[j % 4]).collect();
    let random: Vec<&str> = (0..m).map(|_| abcd[(next() % 4) as usize]).collect();
    vec![
        ("abcd", cycle.join(".")),
        ("all_a", vec!["a"; m].join(".")),
        ("random", random.join(".")),
        ("unknown", vec!["zz"; m].join(".")),
    ]
}

fn bench_adversarial(c: &mut Criterion) {
    const N: usize = 100_000;
    let mut rich = Router::with_cache_capacity(0);
    for (i, p) in adversarial_patterns(N).iter().enumerate() {
        rich.add(p, 0, i).expect("valid pattern");
    }
    let mut literal = Router::with_cache_capacity(0);
    for i in 0..N {
        literal
            .add(&format!("svc{}.entity{i}.created", i % 50), 0, i)
            .expect("valid pattern");
    }
    println!(
        "adversarial: {N} `**`-rich routes, {} trie nodes; {N} literal routes, {} trie nodes",
        rich.trie_nodes(),
        literal.trie_nodes()
    );

    let mut group = c.benchmark_group("route/globstar_rich_uncached");
    group.throughput(Throughput::Elements(1));
    for m in [8usize, 32, 64] {
        for (name, ty) in adversarial_types(m) {
            println!(
                "globstar_rich m={m} {name}: {} matches, {} nodes entered (of {})",
                rich.route_uncached(&ty).len(),
                rich.uncached_visits(&ty),
                rich.trie_nodes()
            );
            group.bench_with_input(BenchmarkId::new(name, m), &ty, |b, ty| {
                b.iter(|| rich.route_uncached(black_box(ty)).len())
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("route/literal_uncached");
    group.throughput(Throughput::Elements(1));
    for m in [3usize, 32, 64] {
        let types = [
            ("near", {
                let mut segs = vec!["svc7".to_owned(), "entity7".to_owned()];
                segs.resize(m.max(3), "created".to_owned());
                segs.join(".")
            }),
            ("unknown", vec!["zz"; m].join(".")),
        ];
        for (name, ty) in types {
            println!(
                "literal m={m} {name}: {} matches, {} visits",
                literal.route_uncached(&ty).len(),
                literal.uncached_visits(&ty)
            );
            group.bench_with_input(BenchmarkId::new(name, m), &ty, |b, ty| {
                b.iter(|| literal.route_uncached(black_box(ty)).len())
            });
        }
    }
    group.finish();
}

fn bench_subscribe(c: &mut Criterion) {
    const N: usize = 100_000;
    let mut r = router(N);
    let fresh: Vec<String> = (N..N + 1_000).map(pattern).collect();
    let mut group = c.benchmark_group("subscribe/add");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::from_parameter(N), |b| {
        let mut k = 0usize;
        b.iter(|| {
            let p = &fresh[k % fresh.len()];
            k += 1;
            let id = r.add(black_box(p), 0, k).expect("valid pattern");
            // Keep the router at N routes.
            r.remove(id)
        })
    });
    group.finish();

    // The whole bus path: validate the target, parse, add to the trie, invalidate the cache.
    let bus = signal_bus::Bus::builder().build().expect("valid bus");
    for i in 0..N {
        bus.subscribe(&pattern(i), signal_bus::adapter::Noop)
            .expect("valid pattern");
    }
    let mut group = c.benchmark_group("subscribe/bus");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::from_parameter(N), |b| {
        let mut k = 0usize;
        b.iter(|| {
            let p = &fresh[k % fresh.len()];
            k += 1;
            let id = bus
                .subscribe(black_box(p), signal_bus::adapter::Noop)
                .expect("valid pattern");
            bus.unsubscribe(id).expect("subscribed")
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_route, bench_adversarial, bench_subscribe
}
criterion_main!(benches);
