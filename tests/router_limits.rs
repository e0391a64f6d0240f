//! Limits of the router and of patterns: the uncached walk against a naive reference matcher
//! on random patterns and types (long ones included), its visit count bounded by
//! `nodes x (segments + 1)` on adversarial `**`-rich sets, brace limits that refuse a pattern
//! before the glob library compiles it, and the bus's `max_type_segments`.
//!
//! No timing here: the work is counted (`Router::uncached_visits`), never timed.

use proptest::prelude::*;
use signal_bus::pattern::{MAX_ALTERNATIVES, MAX_BRACE_DEPTH, MAX_PATTERN_LEN};
use signal_bus::{Bus, BusError, Pattern, PatternError, Router, Signal};

const PATTERN_SEGMENTS: &[&str] = &["a", "b", "c", "*", "**", "**", "{a,b}", "[ab]", "a*"];
const TYPE_SEGMENTS: &[&str] = &["a", "b", "c", "ab"];

/// A valid pattern: 1..10 segments, `**`-rich, adjacent `**` collapsed into one.
fn pattern() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PATTERN_SEGMENTS), 1..10).prop_map(|segs| {
        let mut out: Vec<&str> = Vec::with_capacity(segs.len());
        for seg in segs {
            if seg == "**" && out.last() == Some(&"**") {
                continue;
            }
            out.push(seg);
        }
        out.join(".")
    })
}

/// Types up to 40 segments, beyond the 16 the walk keeps inline.
fn signal_type() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TYPE_SEGMENTS), 1..40).prop_map(|s| s.join("."))
}

/// Registration indices of the routes whose pattern matches `ty`, in routing order, by
/// trying every pattern with `Pattern::matches`.
fn naive(routes: &[(Pattern, i32, bool)], ty: &str) -> Vec<usize> {
    let mut hits: Vec<usize> = (0..routes.len())
        .filter(|&i| routes[i].2 && routes[i].0.matches(ty))
        .collect();
    hits.sort_by_key(|&i| {
        (
            std::cmp::Reverse(routes[i].0.specificity()),
            std::cmp::Reverse(routes[i].1),
            i,
        )
    });
    hits
}

fn segments(ty: &str) -> usize {
    ty.split('.').count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn walk_equals_naive_matcher_and_stays_bounded(
        patterns in prop::collection::vec((pattern(), -3i32..=3), 0..40),
        removes in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        types in prop::collection::vec(signal_type(), 1..12),
    ) {
        let mut router = Router::with_cache_capacity(0);
        let mut model = Vec::new();
        let mut ids = Vec::new();
        for (i, (p, prio)) in patterns.iter().enumerate() {
            ids.push(router.add(p, *prio, i).expect("generated pattern is valid"));
            model.push((Pattern::parse(p).unwrap(), *prio, true));
        }
        let check = |router: &Router<usize>, model: &[(Pattern, i32, bool)]| {
            for ty in &types {
                let got: Vec<usize> = router.route_uncached(ty).into_iter().copied().collect();
                prop_assert_eq!(&got, &naive(model, ty), "type {}", ty);
                let bound = router.trie_nodes() * (segments(ty) + 1);
                let visits = router.uncached_visits(ty);
                prop_assert!(visits <= bound, "{} visits > bound {} for {}", visits, bound, ty);
            }
            Ok(())
        };
        check(&router, &model)?;
        // Removes leave the pruning bounds loose, never wrong.
        if !ids.is_empty() {
            for idx in &removes {
                let i = idx.index(ids.len());
                router.remove(ids[i]);
                model[i].2 = false;
            }
            check(&router, &model)?;
        }
    }
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

/// `**`-rich patterns over a 4-letter alphabet (`a.**.b.*.**.c` and the like), as in the
/// issue; the same generator as `benches/routing.rs`.
fn adversarial(n: usize) -> Vec<String> {
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

#[test]
fn adversarial_walk_is_bounded_by_nodes_times_segments() {
    let mut router = Router::with_cache_capacity(0);
    for (i, p) in adversarial(5_000).iter().enumerate() {
        router.add(p, 0, i).unwrap();
    }
    let nodes = router.trie_nodes();
    for m in [1usize, 16, 32, 64, 500, 2_000] {
        for alphabet in [&["a"][..], &["a", "b", "c", "d"][..]] {
            let ty: Vec<&str> = (0..m).map(|j| alphabet[j % alphabet.len()]).collect();
            let ty = ty.join(".");
            let visits = router.uncached_visits(&ty);
            assert!(
                visits <= nodes * (m + 1),
                "{m} segments: {visits} visits > {nodes} nodes x {}",
                m + 1
            );
        }
    }
}

#[test]
fn the_walk_enters_each_trie_node_at_most_once() {
    // The walk carries the set of type positions a node is reached at, so a node is entered
    // once however many positions (through `**`) lead to it; types longer than 127 segments
    // take the multi-word position sets.
    let mut router = Router::with_cache_capacity(0);
    let patterns = adversarial(5_000);
    for (i, p) in patterns.iter().enumerate() {
        router.add(p, 0, i).unwrap();
    }
    let nodes = router.trie_nodes();
    let parsed: Vec<Pattern> = patterns
        .iter()
        .map(|p| Pattern::parse(p).unwrap())
        .collect();
    for m in [1usize, 8, 32, 127, 128, 200, 2_000] {
        for alphabet in [&["a"][..], &["a", "b", "c", "d"][..], &["d", "c", "a"][..]] {
            let ty: Vec<&str> = (0..m).map(|j| alphabet[j % alphabet.len()]).collect();
            let ty = ty.join(".");
            let visits = router.uncached_visits(&ty);
            assert!(
                visits <= nodes,
                "{m} segments: {visits} visits > {nodes} nodes"
            );
            let mut got: Vec<usize> = router.route_uncached(&ty).into_iter().copied().collect();
            let want = parsed.iter().filter(|p| p.matches(&ty)).count();
            assert_eq!(got.len(), want, "{m} segments over {alphabet:?}");
            got.sort_unstable();
            got.dedup();
            assert_eq!(got.len(), want, "a route emitted twice for {m} segments");
        }
    }
}

#[test]
fn globstar_chains_do_not_blow_up() {
    // Without merging the positions a node is reached at, `**.a.**.a...` over `a.a.a...` explores
    // every way of splitting the type: exponential in the number of `**`.
    let mut router = Router::with_cache_capacity(0);
    let chain = ["**.a"; 12].join(".");
    router.add(&chain, 0, "chain").unwrap();
    router.add(&format!("{chain}.**.b"), 0, "never").unwrap();
    let ty = vec!["a"; 200].join(".");
    assert_eq!(router.route_uncached(&ty), [&"chain"]);
    let bound = router.trie_nodes() * 201;
    let visits = router.uncached_visits(&ty);
    assert!(visits <= bound, "{visits} > {bound}");
}

#[test]
fn literal_routers_visit_at_most_one_path() {
    let mut router = Router::with_cache_capacity(0);
    for i in 0..2_000 {
        router
            .add(&format!("svc{}.entity{i}.created", i % 50), 0, i)
            .unwrap();
    }
    let long = vec!["svc1"; 32].join(".");
    // Root, then the `svc1` child: the walk stops where the literals stop matching.
    assert!(router.uncached_visits(&long) <= 3);
    assert!(router.route_uncached(&long).is_empty());
}

fn nested_braces(depth: usize) -> String {
    format!("{}a{}", "{".repeat(depth), "}".repeat(depth))
}

#[test]
fn deeply_nested_braces_are_errors_not_panics() {
    // The pattern that panicked inside globset 0.4.21: 300 nested groups, 601 bytes.
    let p = nested_braces(300);
    assert_eq!(p.len(), 601);
    let err = Pattern::parse(&p).unwrap_err();
    assert!(
        matches!(err, PatternError::BraceDepth { depth, max, .. } if depth == MAX_BRACE_DEPTH + 1 && max == MAX_BRACE_DEPTH),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&format!(
            "nests brace groups 5 deep in segment `{p}`, more than the limit of 4"
        )),
        "{err}"
    );
    // The same through every entry point that parses a pattern.
    let mut router = Router::new();
    assert!(router.add(&p, 0, ()).is_err());
    let bus = Bus::builder().build().unwrap();
    assert!(matches!(
        bus.subscribe(&p, signal_bus::adapter::Noop),
        Err(BusError::Pattern(PatternError::BraceDepth { .. }))
    ));

    // 10,000 deep: refused (by length first), no panic.
    let deep = nested_braces(10_000);
    assert!(matches!(
        Pattern::parse(&deep),
        Err(PatternError::TooLong { .. })
    ));
    // As deep as the length limit allows, with brace nesting being the only fault.
    let deepest = nested_braces((MAX_PATTERN_LEN - 1) / 2);
    assert!(matches!(
        Pattern::parse(&deepest),
        Err(PatternError::BraceDepth { .. })
    ));
    // Unbalanced variants.
    for p in [
        "{".repeat(600),
        format!("{}a", "{".repeat(500)),
        "}".repeat(600),
    ] {
        let _ = Pattern::parse(&p); // an error or a pattern, never a panic
    }
    assert!(Pattern::parse(&"{".repeat(600)).is_err());

    // At the limit: accepted and matching.
    let ok = Pattern::parse("x.{a,{b,{c,{d,e}}}}").unwrap();
    assert!(ok.matches("x.e") && ok.matches("x.a") && !ok.matches("x.f"));
}

#[test]
fn alternatives_are_limited() {
    let alts: Vec<String> = (0..MAX_ALTERNATIVES).map(|i| format!("e{i}")).collect();
    let ok = format!("a.{{{}}}", alts.join(","));
    assert!(Pattern::parse(&ok).is_ok(), "{ok}");
    let too_many = format!("a.{{{},x}}", alts.join(","));
    let err = Pattern::parse(&too_many).unwrap_err();
    assert_eq!(
        err,
        PatternError::TooManyAlternatives {
            pattern: too_many.clone(),
            count: MAX_ALTERNATIVES + 1,
            max: MAX_ALTERNATIVES
        }
    );
    assert!(err
        .to_string()
        .contains("has 65 brace alternatives, more than the limit of 64"));
    // Counted across segments of one pattern.
    let half: Vec<String> = (0..33).map(|i| format!("e{i}")).collect();
    let split = format!("{{{h}}}.{{{h}}}", h = half.join(","));
    assert!(matches!(
        Pattern::parse(&split),
        Err(PatternError::TooManyAlternatives { count: 66, .. })
    ));
}

#[test]
fn bus_max_type_segments_is_validated() {
    let err = Bus::builder().max_type_segments(0).build().unwrap_err();
    assert!(err.to_string().contains("max_type_segments"), "{err}");
    assert!(
        err.to_string().contains("must be between 1 and 128"),
        "{err}"
    );
    let err = Bus::builder().max_type_segments(129).build().unwrap_err();
    assert!(err.to_string().contains("`129`"), "{err}");
    assert!(Bus::builder().max_type_segments(1).build().is_ok());
    assert!(Bus::builder().max_type_segments(128).build().is_ok());
}

#[tokio::test]
async fn publish_refuses_types_longer_than_the_limit() {
    let bus = Bus::builder().max_type_segments(4).build().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    bus.subscribe("**", signal_bus::adapter::Channel::new(tx))
        .unwrap();

    let ok = Signal::builder("a.b.c.d", "/test").build().unwrap();
    assert!(bus.publish(ok).await.unwrap().is_ok());
    assert_eq!(rx.recv().await.unwrap().ty(), "a.b.c.d");

    let long = Signal::builder("a.b.c.d.e", "/test").build().unwrap();
    let err = bus.publish(long).await.unwrap_err();
    assert!(matches!(
        err,
        BusError::TypeTooLong {
            segments: 5,
            max: 4,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "signal type `a.b.c.d.e` has 5 segments, more than the limit of 4 this bus routes \
         (BusBuilder::max_type_segments)"
    );
    assert!(rx.try_recv().is_err(), "a refused signal is not delivered");
}

#[tokio::test]
async fn default_limit_accepts_the_default_and_refuses_one_more() {
    let limit = signal_bus::signal::DEFAULT_MAX_TYPE_SEGMENTS;
    let bus = Bus::builder().build().unwrap();
    bus.subscribe("**", signal_bus::adapter::Noop).unwrap();
    let at = vec!["s"; limit].join(".");
    let signal = Signal::builder(at.as_str(), "/test").build().unwrap();
    assert!(bus.publish(signal).await.unwrap().is_ok());
    let over = vec!["s"; limit + 1].join(".");
    let signal = Signal::builder(over.as_str(), "/test").build().unwrap();
    assert!(matches!(
        bus.publish(signal).await,
        Err(BusError::TypeTooLong { segments, max, .. }) if segments == limit + 1 && max == limit
    ));
}

#[test]
fn signals_refuse_types_beyond_the_hard_cap() {
    use signal_bus::signal::MAX_TYPE_SEGMENTS;
    let at = vec!["s"; MAX_TYPE_SEGMENTS].join(".");
    assert!(Signal::builder(at.as_str(), "/test").build().is_ok());
    // 200 segments (399 bytes) fit the type length limit but not the segment cap; the
    // same from JSON.
    let over = vec!["s"; 200].join(".");
    let err = Signal::builder(over.as_str(), "/test").build().unwrap_err();
    assert!(
        err.to_string()
            .contains("has 200 segments, more than the limit of 128"),
        "{err}"
    );
    // 2,000 segments are 3,999 bytes: over the length limit first.
    let err = Signal::builder(vec!["s"; 2_000].join("."), "/test")
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("is 3999 bytes long, more than the limit of 1024"),
        "{err}"
    );
    let json = format!(r#"{{"specversion":"1.0","id":"1","source":"/t","type":"{over}"}}"#);
    let err = Signal::from_json_slice(json.as_bytes()).unwrap_err();
    assert!(
        err.to_string().contains("more than the limit of 128"),
        "{err}"
    );
    assert!(serde_json::from_str::<Signal>(&json).is_err());
}
