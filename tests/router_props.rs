//! Property tests: the router returns exactly the routes whose pattern
//! matches (`Pattern::matches` is the reference), in the documented order.
//!
//! Types hold the characters real producers use (`/`, `:`, `+`, `@`, `~`, `#`, non-ASCII)
//! and the glob metacharacters; patterns name such segments as escaped literals.

use proptest::prelude::*;
use signal_bus::{pattern::escape, Pattern, RouteId, Router};

/// Wildcards and glob segments, escapes inside globs included.
const PATTERN_SEGMENTS: &[&str] = &[
    "*",
    "**",
    "{a,b}",
    "[ab]",
    "a*",
    "a/*",
    "*:b",
    r"{a\,b,\*,a/b}",
    "[!a]",
    "?",
    r"\**",
    "\u{e9}*",
    r"*\?",
];
/// Type segments; each is also a pattern segment, escaped ([`escape`]) into a literal.
const TYPE_SEGMENTS: &[&str] = &[
    "a", "b", "c", "ab", "a/b", "a:b", "*", "**", "a*", "{a}", "+@~", "#", ">", "\u{e9}", "a,b",
    "\\", "?", "[a]", "%", "!^$",
];

/// A valid pattern: 1..6 segments, adjacent `**` collapsed into one.
fn pattern() -> impl Strategy<Value = String> {
    let segments: Vec<String> = PATTERN_SEGMENTS
        .iter()
        .map(|s| s.to_string())
        .chain(TYPE_SEGMENTS.iter().map(|s| escape(s).into_owned()))
        .collect();
    prop::collection::vec(prop::sample::select(segments), 1..6).prop_map(|segs| {
        let mut out: Vec<String> = Vec::with_capacity(segs.len());
        for seg in segs {
            if seg == "**" && out.last().map(String::as_str) == Some("**") {
                continue;
            }
            out.push(seg);
        }
        out.join(".")
    })
}

fn signal_type() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TYPE_SEGMENTS), 1..7).prop_map(|s| s.join("."))
}

fn routes() -> impl Strategy<Value = Vec<(String, i32)>> {
    prop::collection::vec((pattern(), -3i32..=3), 0..24)
}

struct Model {
    /// (registration index, pattern, priority, still present)
    routes: Vec<(usize, Pattern, i32, bool)>,
}

impl Model {
    /// Registration indices of the matching routes, in routing order.
    fn expected(&self, ty: &str) -> Vec<usize> {
        let mut hits: Vec<&(usize, Pattern, i32, bool)> = self
            .routes
            .iter()
            .filter(|(_, p, _, live)| *live && p.matches(ty))
            .collect();
        hits.sort_by_key(|(i, p, prio, _)| {
            (
                std::cmp::Reverse(p.specificity()),
                std::cmp::Reverse(*prio),
                *i,
            )
        });
        hits.into_iter().map(|(i, ..)| *i).collect()
    }
}

fn build(routes: &[(String, i32)], cache: usize) -> (Router<usize>, Vec<RouteId>, Model) {
    let mut router = Router::with_cache_capacity(cache);
    let mut ids = Vec::new();
    let mut model = Model { routes: Vec::new() };
    for (i, (p, prio)) in routes.iter().enumerate() {
        ids.push(router.add(p, *prio, i).expect("generated pattern is valid"));
        model
            .routes
            .push((i, Pattern::parse(p).unwrap(), *prio, true));
    }
    (router, ids, model)
}

fn check(router: &Router<usize>, model: &Model, ty: &str) -> Result<(), TestCaseError> {
    let expected = model.expected(ty);
    let cached: Vec<usize> = router.route(ty).into_iter().copied().collect();
    let uncached: Vec<usize> = router.route_uncached(ty).into_iter().copied().collect();
    let by_id: Vec<usize> = router
        .route_ids(ty)
        .iter()
        .map(|id| *router.get(*id).expect("routed id exists"))
        .collect();
    prop_assert_eq!(&uncached, &expected, "uncached, type {}", ty);
    prop_assert_eq!(&cached, &expected, "cached, type {}", ty);
    prop_assert_eq!(&by_id, &expected, "route_ids, type {}", ty);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn router_equals_brute_force(
        routes in routes(),
        types in prop::collection::vec(signal_type(), 1..12),
    ) {
        let (router, _, model) = build(&routes, 4096);
        for ty in &types {
            check(&router, &model, ty)?;
            // A second lookup is served from the cache.
            check(&router, &model, ty)?;
        }
        let (small, _, model) = build(&routes, 2);
        for ty in &types {
            check(&small, &model, ty)?;
        }
    }

    #[test]
    fn router_equals_brute_force_with_removes(
        routes in routes(),
        removes in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
        extra in prop::collection::vec((pattern(), -3i32..=3), 0..6),
        types in prop::collection::vec(signal_type(), 1..10),
    ) {
        let (mut router, mut ids, mut model) = build(&routes, 4096);
        // Warm the cache so stale entries would show up.
        for ty in &types {
            check(&router, &model, ty)?;
        }
        if !ids.is_empty() {
            for idx in &removes {
                let i = idx.index(ids.len());
                let removed = router.remove(ids[i]);
                if model.routes[i].3 {
                    prop_assert_eq!(removed, Some(i));
                    model.routes[i].3 = false;
                } else {
                    prop_assert_eq!(removed, None);
                }
                for ty in &types {
                    check(&router, &model, ty)?;
                }
            }
        }
        for (p, prio) in &extra {
            let i = model.routes.len();
            let id = router.add(p, *prio, i).unwrap();
            prop_assert!(!ids.contains(&id), "route id reused");
            ids.push(id);
            model.routes.push((i, Pattern::parse(p).unwrap(), *prio, true));
            for ty in &types {
                check(&router, &model, ty)?;
            }
        }
        let live = model.routes.iter().filter(|r| r.3).count();
        prop_assert_eq!(router.len(), live);
        for (i, id) in ids.iter().enumerate() {
            prop_assert_eq!(router.get(*id).is_some(), model.routes[i].3);
        }
        // Removing everything leaves an empty router that matches nothing.
        for id in &ids {
            router.remove(*id);
        }
        prop_assert!(router.is_empty());
        for ty in &types {
            prop_assert!(router.route(ty).is_empty());
        }
    }

    #[test]
    fn pattern_display_roundtrips(p in pattern()) {
        let parsed = Pattern::parse(&p).unwrap();
        let text = parsed.to_string();
        prop_assert_eq!(&text, &p);
        let again = Pattern::parse(&text).unwrap();
        prop_assert_eq!(&again, &parsed);
        prop_assert_eq!(again.specificity(), parsed.specificity());
        prop_assert_eq!(again.segments(), parsed.segments());
        let via_fromstr: Pattern = p.parse().unwrap();
        prop_assert_eq!(&via_fromstr, &parsed);
        // Each segment shows as pattern text (a literal re-escaped): joined, they parse to
        // the same segments.
        let shown: Vec<String> = parsed.segments().iter().map(|s| s.to_string()).collect();
        let rebuilt = Pattern::parse(&shown.join(".")).unwrap();
        prop_assert_eq!(rebuilt.segments(), parsed.segments());
        prop_assert_eq!(rebuilt.specificity(), parsed.specificity());
    }

    #[test]
    fn escaped_types_match_exactly_themselves(ty in signal_type(), other in signal_type()) {
        let exact = Pattern::parse(&escape(&ty)).unwrap();
        prop_assert!(exact.matches(&ty));
        prop_assert_eq!(exact.matches(&other), other == ty);
        let mut router = Router::new();
        router.add_pattern(exact, 0, ()).unwrap();
        prop_assert_eq!(router.route(&other).len(), usize::from(other == ty));
    }

    #[test]
    fn globstar_alone_matches_every_type(ty in signal_type()) {
        prop_assert!(Pattern::parse("**").unwrap().matches(&ty));
    }
}
