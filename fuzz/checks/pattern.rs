//! Patterns: `Pattern::parse` of any text and `Pattern::matches` of any type never panic, a
//! parsed pattern's segments shown as text (literals re-escaped) parse to the same segments,
//! and a `Router` of a few parsed patterns returns, cached and uncached, exactly the routes
//! whose pattern `matches` (the reference semantics), in the documented order (specificity, then
//! priority, both descending, then registration).

use signal_bus::{Pattern, Router};

use super::MAX_INPUT;

/// At most this many lines are patterns; every other line is a type.
const MAX_PATTERNS: usize = 4;

/// Input: UTF-8 text, one item a line. The first line's first byte, if it is a digit `n`,
/// says the first `n` (at most 4) lines after it are patterns; otherwise the first line is
/// the one pattern. Every other line is a signal type to match.
pub fn check(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or("");
    let (patterns, types): (Vec<&str>, Vec<&str>) = match first.as_bytes().first() {
        Some(d @ b'0'..=b'9') if first.len() == 1 => {
            let n = usize::from(d - b'0').min(MAX_PATTERNS);
            let all: Vec<&str> = lines.collect();
            let n = n.min(all.len());
            (all[..n].to_vec(), all[n..].to_vec())
        }
        _ => (vec![first], lines.collect()),
    };

    let mut router = Router::with_cache_capacity(8);
    let mut routes = Vec::new();
    for (i, text) in patterns.iter().enumerate() {
        let Ok(pattern) = Pattern::parse(text) else {
            continue;
        };
        assert_eq!(pattern.as_str(), *text);
        let again = Pattern::parse(pattern.as_str()).expect("a parsed pattern parses again");
        assert_eq!(again.segments(), pattern.segments());
        // Each segment shows as pattern text (a literal re-escaped): joined, they parse to
        // the same segments and score.
        let shown: Vec<String> = pattern.segments().iter().map(|s| s.to_string()).collect();
        let rebuilt = Pattern::parse(&shown.join(".")).expect("shown segments parse");
        assert_eq!(rebuilt.segments(), pattern.segments());
        assert_eq!(rebuilt.specificity(), pattern.specificity());
        // Priorities -1, 0, 1, ... so ties on specificity are ordered by priority too.
        let priority = i as i32 - 1;
        let id = router
            .add_pattern(pattern.clone(), priority, i)
            .expect("a valid priority");
        assert_eq!(
            router.pattern(id).map(Pattern::as_str),
            Some(pattern.as_str())
        );
        routes.push((i, pattern, priority));
    }

    for ty in types.iter().copied().chain(patterns.iter().copied()) {
        let mut expected: Vec<&(usize, Pattern, i32)> =
            routes.iter().filter(|(_, p, _)| p.matches(ty)).collect();
        expected.sort_by_key(|(i, p, priority)| {
            (
                std::cmp::Reverse(p.specificity()),
                std::cmp::Reverse(*priority),
                *i,
            )
        });
        let expected: Vec<usize> = expected.into_iter().map(|(i, ..)| *i).collect();
        let uncached: Vec<usize> = router.route_uncached(ty).into_iter().copied().collect();
        assert_eq!(
            uncached, expected,
            "route_uncached({ty:?}) among {patterns:?}"
        );
        for _ in 0..2 {
            let cached: Vec<usize> = router.route(ty).into_iter().copied().collect();
            assert_eq!(cached, expected, "route({ty:?}) among {patterns:?}");
        }
    }
}
