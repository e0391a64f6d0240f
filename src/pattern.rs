//! Subscription patterns over dot-separated signal types.
//!
//! A signal type is a list of dot-separated segments, each made of
//! `[A-Za-z0-9_-]+` (for example `user.created` or `billing.invoice.v2`).
//! A [`Pattern`] is a list of dot-separated segments too, where each segment
//! is one of:
//!
//! - a literal `[A-Za-z0-9_-]+`, which matches that segment exactly
//!   (case-sensitive);
//! - `*`, which matches exactly one segment;
//! - `**`, which matches zero or more segments anywhere in the pattern
//!   (`a.**.e` matches `a.e` and `a.b.c.e`, `audit.**` matches `audit` and
//!   `audit.x.y`, and `**` matches every valid type);
//! - a glob segment such as `create*`, `{created,updated}`, `v[0-9]` or
//!   `user_?`, which matches exactly one segment and is compiled with
//!   [`globset`].
//!
//! [`Pattern::matches`] is the reference semantics: the
//! [`Router`](crate::Router) returns exactly the routes whose pattern matches.

use std::fmt;
use std::str::FromStr;

use globset::{GlobBuilder, GlobMatcher};

/// The longest pattern accepted by [`Pattern::parse`], in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;

/// The largest number of segments accepted by [`Pattern::parse`].
pub const MAX_PATTERN_SEGMENTS: usize = 128;

/// The deepest nesting of brace groups accepted in a pattern (`{a,{b,c}}` nests 2 deep).
///
/// Checked on the text before the glob library sees it, so the limit holds whatever that
/// library does with deep nesting. Braces count wherever they appear, inside `[...]` too.
pub const MAX_BRACE_DEPTH: usize = 4;

/// The largest number of alternatives accepted in the brace groups of one pattern: each
/// group counts its branches (`{a,b}` 2, `{a,{b,c}}` 2 + 2 = 4), summed over the pattern.
///
/// Checked before the glob library compiles anything, like [`MAX_BRACE_DEPTH`].
pub const MAX_ALTERNATIVES: usize = 64;

/// Why a pattern was rejected by [`Pattern::parse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// The pattern is the empty string.
    #[error("pattern is empty")]
    Empty,
    /// The pattern is longer than [`MAX_PATTERN_LEN`] bytes.
    #[error("pattern is {len} bytes long, more than the limit of {max} bytes")]
    TooLong {
        /// Length of the rejected pattern in bytes.
        len: usize,
        /// The limit ([`MAX_PATTERN_LEN`]).
        max: usize,
    },
    /// The pattern has more than [`MAX_PATTERN_SEGMENTS`] segments.
    #[error("pattern has {count} segments, more than the limit of {max} segments")]
    TooManySegments {
        /// Number of segments in the rejected pattern.
        count: usize,
        /// The limit ([`MAX_PATTERN_SEGMENTS`]).
        max: usize,
    },
    /// A segment is empty (`a..b`, or a leading or trailing `.`).
    #[error("pattern `{pattern}` has an empty segment at position {position}")]
    EmptySegment {
        /// The rejected pattern.
        pattern: String,
        /// Zero-based index of the empty segment.
        position: usize,
    },
    /// Two `**` segments follow each other (`a.**.**`).
    #[error("pattern `{pattern}` has `**` next to `**` at position {position}; use a single `**`")]
    AdjacentGlobStar {
        /// The rejected pattern.
        pattern: String,
        /// Zero-based index of the second `**`.
        position: usize,
    },
    /// `**` appears inside a segment instead of being a whole segment (`a**`).
    #[error(
        "pattern `{pattern}` has `**` inside segment `{segment}`; `**` must be a whole segment"
    )]
    GlobStarInSegment {
        /// The rejected pattern.
        pattern: String,
        /// The offending segment.
        segment: String,
    },
    /// A segment contains a character outside the grammar.
    #[error(
        "pattern `{pattern}` has invalid character {character:?} in segment `{segment}`; \
         segments allow `A-Z a-z 0-9 _ -` and the glob characters `* ? [ ] {{ }} ,` \
         (`!` and `^` only inside brackets)"
    )]
    InvalidCharacter {
        /// The rejected pattern.
        pattern: String,
        /// The offending segment.
        segment: String,
        /// The first character outside the grammar.
        character: char,
    },
    /// Brace groups nest deeper than [`MAX_BRACE_DEPTH`].
    #[error(
        "pattern `{pattern}` nests brace groups {depth} deep in segment `{segment}`, \
         more than the limit of {max}"
    )]
    BraceDepth {
        /// The rejected pattern.
        pattern: String,
        /// The offending segment.
        segment: String,
        /// The deepest nesting reached (counting stops just past the limit).
        depth: usize,
        /// The limit ([`MAX_BRACE_DEPTH`]).
        max: usize,
    },
    /// The brace groups of the pattern have more than [`MAX_ALTERNATIVES`] alternatives.
    #[error(
        "pattern `{pattern}` has {count} brace alternatives, more than the limit of {max} \
         (each `{{...}}` group counts its comma-separated branches)"
    )]
    TooManyAlternatives {
        /// The rejected pattern.
        pattern: String,
        /// Number of alternatives counted.
        count: usize,
        /// The limit ([`MAX_ALTERNATIVES`]).
        max: usize,
    },
    /// A glob segment was refused by `globset`.
    #[error("pattern `{pattern}` has invalid glob segment `{segment}`: {reason}")]
    InvalidGlob {
        /// The rejected pattern.
        pattern: String,
        /// The offending segment.
        segment: String,
        /// The reason given by `globset`.
        reason: String,
    },
}

/// A compiled glob segment, such as `create*` or `{created,updated}`.
///
/// It matches exactly one segment of a signal type. Equality and hashing use
/// the glob source text.
///
/// Cloning shares the compiled matcher (one allocation, reference counted).
#[derive(Clone)]
pub struct GlobSegment(std::sync::Arc<GlobInner>);

struct GlobInner {
    source: Box<str>,
    matcher: GlobMatcher,
}

impl GlobSegment {
    fn new(source: &str) -> Result<Self, String> {
        let glob = GlobBuilder::new(source)
            .literal_separator(true)
            .build()
            .map_err(|e| e.kind().to_string())?;
        Ok(Self(std::sync::Arc::new(GlobInner {
            source: source.into(),
            matcher: glob.compile_matcher(),
        })))
    }

    /// The glob source text, for example `{created,updated}`.
    pub fn as_str(&self) -> &str {
        &self.0.source
    }

    /// Whether the glob matches one segment of a signal type.
    pub fn is_match(&self, segment: &str) -> bool {
        self.0.matcher.is_match(segment)
    }
}

impl fmt::Debug for GlobSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("GlobSegment").field(&self.0.source).finish()
    }
}

impl PartialEq for GlobSegment {
    fn eq(&self, other: &Self) -> bool {
        self.0.source == other.0.source
    }
}

impl Eq for GlobSegment {}

impl std::hash::Hash for GlobSegment {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.source.hash(state);
    }
}

/// One segment of a [`Pattern`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A literal segment (`[A-Za-z0-9_-]+`) that matches exactly that text.
    Literal(String),
    /// `*`: matches exactly one segment.
    Star,
    /// `**`: matches zero or more segments.
    GlobStar,
    /// A glob segment (`create*`, `{created,updated}`, `v[0-9]`) that matches
    /// exactly one segment.
    Glob(GlobSegment),
}

impl Segment {
    /// Whether this segment consumes exactly one type segment and accepts
    /// `segment`. Always false for [`Segment::GlobStar`].
    pub fn matches_one(&self, segment: &str) -> bool {
        match self {
            Segment::Literal(lit) => lit == segment,
            Segment::Star => true,
            Segment::GlobStar => false,
            Segment::Glob(glob) => glob.is_match(segment),
        }
    }

    /// The segment as written in the pattern.
    pub fn as_str(&self) -> &str {
        match self {
            Segment::Literal(lit) => lit,
            Segment::Star => "*",
            Segment::GlobStar => "**",
            Segment::Glob(glob) => glob.as_str(),
        }
    }
}

/// A validated subscription pattern such as `user.*`, `audit.**` or
/// `billing.invoice.{created,updated}`.
///
/// Equality and hashing use the pattern text.
///
/// # Examples
///
/// ```
/// use signal_bus::Pattern;
///
/// let p = Pattern::parse("user.**.{created,updated}")?;
/// assert!(p.matches("user.created"));
/// assert!(p.matches("user.profile.photo.updated"));
/// assert!(!p.matches("user.deleted"));
///
/// assert!(Pattern::parse("user..created").is_err());
/// # Ok::<(), signal_bus::PatternError>(())
/// ```
#[derive(Clone)]
pub struct Pattern {
    source: Box<str>,
    segments: Box<[Segment]>,
    specificity: i64,
}

const fn is_literal_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Whether `ty` is a valid signal type: non-empty dot-separated segments,
/// each made of `[A-Za-z0-9_-]+`.
///
/// ```
/// use signal_bus::pattern::is_valid_type;
///
/// assert!(is_valid_type("user.created"));
/// assert!(!is_valid_type("user..created"));
/// assert!(!is_valid_type(""));
/// ```
pub fn is_valid_type(ty: &str) -> bool {
    type_segment_count(ty).is_some()
}

/// The number of segments of `ty`, or `None` if `ty` is not a valid type.
pub(crate) fn type_segment_count(ty: &str) -> Option<usize> {
    let mut prev_dot = true;
    let mut dots = 0;
    for &b in ty.as_bytes() {
        if b == b'.' {
            if prev_dot {
                return None;
            }
            prev_dot = true;
            dots += 1;
        } else if is_literal_byte(b) {
            prev_dot = false;
        } else {
            return None;
        }
    }
    if prev_dot {
        None
    } else {
        Some(dots + 1)
    }
}

fn is_glob_byte(b: u8) -> bool {
    matches!(
        b,
        b'*' | b'?' | b'[' | b']' | b'{' | b'}' | b',' | b'!' | b'^'
    )
}

/// Specificity score of a list of segments.
fn score(segments: &[Segment]) -> i64 {
    let n = segments.len() as i64;
    let mut total = n * 2000;
    for (i, seg) in segments.iter().enumerate() {
        let i = i as i64;
        total += match seg {
            Segment::Literal(_) => 3000 * (n - i),
            Segment::Star | Segment::Glob(_) => -(1000 - 100 * i),
            Segment::GlobStar => -(2000 - 200 * i),
        };
    }
    total
}

impl Pattern {
    /// Parses and validates a pattern.
    ///
    /// # Errors
    ///
    /// Returns a [`PatternError`] when the pattern is empty, longer than
    /// [`MAX_PATTERN_LEN`] bytes or [`MAX_PATTERN_SEGMENTS`] segments, has an
    /// empty segment (`a..b`, leading or trailing `.`), has `**` next to
    /// `**`, has `**` inside a segment (`a**`), has a character outside the
    /// grammar, nests brace groups deeper than [`MAX_BRACE_DEPTH`], has more than
    /// [`MAX_ALTERNATIVES`] brace alternatives, or has a glob segment that `globset` refuses
    /// (`[a`). The brace limits are checked before any glob is compiled.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(PatternError::TooLong {
                len: pattern.len(),
                max: MAX_PATTERN_LEN,
            });
        }
        let count = pattern.split('.').count();
        if count > MAX_PATTERN_SEGMENTS {
            return Err(PatternError::TooManySegments {
                count,
                max: MAX_PATTERN_SEGMENTS,
            });
        }
        check_braces(pattern)?;
        let mut segments = Vec::with_capacity(count);
        for (position, seg) in pattern.split('.').enumerate() {
            let parsed = parse_segment(pattern, seg, position)?;
            if parsed == Segment::GlobStar && segments.last() == Some(&Segment::GlobStar) {
                return Err(PatternError::AdjacentGlobStar {
                    pattern: pattern.to_owned(),
                    position,
                });
            }
            segments.push(parsed);
        }
        let specificity = score(&segments);
        Ok(Self {
            source: pattern.into(),
            segments: segments.into_boxed_slice(),
            specificity,
        })
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The parsed segments, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The specificity score used to order matching routes (higher first).
    ///
    /// For a pattern of `n` segments with index `i` from 0, the score is
    /// `n*2000`, plus `3000*(n-i)` for each literal segment, minus
    /// `1000-100*i` for each `*` or glob segment, minus `2000-200*i` for each
    /// `**`.
    ///
    /// ```
    /// use signal_bus::Pattern;
    ///
    /// assert_eq!(Pattern::parse("user.created")?.specificity(), 13000);
    /// assert_eq!(Pattern::parse("user.*")?.specificity(), 9100);
    /// assert!(Pattern::parse("user.created")?.specificity() > Pattern::parse("**")?.specificity());
    /// # Ok::<(), signal_bus::PatternError>(())
    /// ```
    pub fn specificity(&self) -> i64 {
        self.specificity
    }

    /// Whether the pattern matches the signal type `ty`.
    ///
    /// Returns false when `ty` is not a valid type (empty, empty segments, or
    /// characters outside `[A-Za-z0-9_-.]`). This is the reference semantics
    /// the [`Router`](crate::Router) follows.
    pub fn matches(&self, ty: &str) -> bool {
        if !is_valid_type(ty) {
            return false;
        }
        let parts: Vec<&str> = ty.split('.').collect();
        // reach[j]: the pattern prefix seen so far can consume exactly the
        // first j type segments. One pass per pattern segment: O(n*m).
        let m = parts.len();
        let mut reach = vec![false; m + 1];
        let mut next = vec![false; m + 1];
        reach[0] = true;
        for seg in self.segments.iter() {
            next.fill(false);
            match seg {
                Segment::GlobStar => {
                    let mut any = false;
                    for j in 0..=m {
                        any |= reach[j];
                        next[j] = any;
                    }
                }
                _ => {
                    for j in 0..m {
                        if reach[j] && seg.matches_one(parts[j]) {
                            next[j + 1] = true;
                        }
                    }
                }
            }
            std::mem::swap(&mut reach, &mut next);
            if !reach.contains(&true) {
                return false;
            }
        }
        reach[m]
    }
}

/// Brace nesting and alternatives, counted on the text before any glob compilation.
fn check_braces(pattern: &str) -> Result<(), PatternError> {
    let mut alternatives = 0usize;
    for seg in pattern.split('.') {
        let mut depth = 0usize;
        for b in seg.bytes() {
            match b {
                b'{' => {
                    depth += 1;
                    alternatives += 1;
                    if depth > MAX_BRACE_DEPTH {
                        return Err(PatternError::BraceDepth {
                            pattern: pattern.to_owned(),
                            segment: seg.to_owned(),
                            depth,
                            max: MAX_BRACE_DEPTH,
                        });
                    }
                }
                b'}' => depth = depth.saturating_sub(1),
                b',' if depth > 0 => alternatives += 1,
                _ => {}
            }
        }
    }
    // A group of n branches is one `{` and n - 1 commas: n alternatives.
    if alternatives > MAX_ALTERNATIVES {
        return Err(PatternError::TooManyAlternatives {
            pattern: pattern.to_owned(),
            count: alternatives,
            max: MAX_ALTERNATIVES,
        });
    }
    Ok(())
}

fn parse_segment(pattern: &str, seg: &str, position: usize) -> Result<Segment, PatternError> {
    if seg.is_empty() {
        return Err(PatternError::EmptySegment {
            pattern: pattern.to_owned(),
            position,
        });
    }
    match seg {
        "*" => return Ok(Segment::Star),
        "**" => return Ok(Segment::GlobStar),
        _ => {}
    }
    let bytes = seg.as_bytes();
    if bytes.iter().all(|&b| is_literal_byte(b)) {
        return Ok(Segment::Literal(seg.to_owned()));
    }
    let mut in_class = false;
    for ch in seg.chars() {
        let ok = match ch {
            '[' => {
                in_class = true;
                true
            }
            ']' => {
                in_class = false;
                true
            }
            '!' | '^' => in_class,
            c if c.is_ascii() => is_literal_byte(c as u8) || is_glob_byte(c as u8),
            _ => false,
        };
        if !ok {
            return Err(PatternError::InvalidCharacter {
                pattern: pattern.to_owned(),
                segment: seg.to_owned(),
                character: ch,
            });
        }
    }
    if seg.contains("**") {
        return Err(PatternError::GlobStarInSegment {
            pattern: pattern.to_owned(),
            segment: seg.to_owned(),
        });
    }
    GlobSegment::new(seg)
        .map(Segment::Glob)
        .map_err(|reason| PatternError::InvalidGlob {
            pattern: pattern.to_owned(),
            segment: seg.to_owned(),
            reason,
        })
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pattern").field(&self.source).finish()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for Pattern {
    type Error = PatternError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl std::hash::Hash for Pattern {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.source.hash(state);
    }
}

impl serde::Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl<'de> serde::Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Pattern;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a signal pattern such as `user.*` or `audit.**`")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Pattern, E> {
                Pattern::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl AsRef<str> for Pattern {
    fn as_ref(&self) -> &str {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        Pattern::parse(s).expect_err(s).to_string()
    }

    #[test]
    fn globstar_in_the_middle() {
        let pat = p("a.**.e");
        assert!(pat.matches("a.e"));
        assert!(pat.matches("a.b.e"));
        assert!(pat.matches("a.b.c.e"));
        assert!(!pat.matches("a.b"));
        assert!(!pat.matches("a"));
        assert!(!pat.matches("b.e"));
        assert!(!pat.matches("a.e.f"));
    }

    #[test]
    fn globstar_at_the_end_matches_zero_segments() {
        let pat = p("audit.**");
        assert!(pat.matches("audit"));
        assert!(pat.matches("audit.x"));
        assert!(pat.matches("audit.x.y"));
        assert!(!pat.matches("auditx"));
        assert!(!pat.matches("other.audit"));
    }

    #[test]
    fn globstar_alone_matches_every_valid_type() {
        let pat = p("**");
        for ty in ["a", "a.b", "user.created", "x.y.z.w.v", "A-b_9.c"] {
            assert!(pat.matches(ty), "{ty}");
        }
        for ty in ["", "a..b", ".a", "a.", "a b", "a/b", "é"] {
            assert!(!pat.matches(ty), "{ty:?}");
        }
    }

    #[test]
    fn star_matches_exactly_one_segment() {
        let pat = p("user.*");
        assert!(pat.matches("user.created"));
        assert!(!pat.matches("user"));
        assert!(!pat.matches("user.a.b"));
        assert!(p("*.created").matches("user.created"));
        assert!(!p("*.created").matches("created"));
    }

    #[test]
    fn literals_are_case_sensitive() {
        assert!(p("user.created").matches("user.created"));
        assert!(!p("user.created").matches("User.created"));
        assert!(!p("user.created").matches("user.created.x"));
    }

    #[test]
    fn glob_segments() {
        let pat = p("user.create*");
        assert!(pat.matches("user.create"));
        assert!(pat.matches("user.created"));
        assert!(!pat.matches("user.deleted"));
        assert!(!pat.matches("user.created.x"));

        let pat = p("user.{created,updated}");
        assert!(pat.matches("user.created"));
        assert!(pat.matches("user.updated"));
        assert!(!pat.matches("user.deleted"));

        let pat = p("api.v[0-9].call");
        assert!(pat.matches("api.v1.call"));
        assert!(!pat.matches("api.v10.call"));
        assert!(!pat.matches("api.vx.call"));

        let pat = p("user_?");
        assert!(pat.matches("user_1"));
        assert!(!pat.matches("user_12"));

        let pat = p("v[!0-9]");
        assert!(pat.matches("vx"));
        assert!(!pat.matches("v1"));
        assert!(matches!(pat.segments()[0], Segment::Glob(_)));
    }

    #[test]
    fn segments_are_exposed() {
        let pat = p("a.*.**.b*");
        assert_eq!(pat.segments().len(), 4);
        assert_eq!(pat.segments()[0], Segment::Literal("a".into()));
        assert_eq!(pat.segments()[1], Segment::Star);
        assert_eq!(pat.segments()[2], Segment::GlobStar);
        assert_eq!(pat.segments()[3].as_str(), "b*");
    }

    #[test]
    fn pathological_globstars_stay_fast() {
        let pat = p("**.a.**.a.**.a.**.b");
        let ty = vec!["a"; 60].join(".");
        let start = std::time::Instant::now();
        assert!(!pat.matches(&ty));
        assert!(p("**.a.**.a.**.a").matches(&ty));
        assert!(start.elapsed() < std::time::Duration::from_millis(100));
    }

    #[test]
    fn rejections_name_the_pattern_and_rule() {
        assert_eq!(err(""), "pattern is empty");
        assert_eq!(
            err("a..b"),
            "pattern `a..b` has an empty segment at position 1"
        );
        assert_eq!(err(".a"), "pattern `.a` has an empty segment at position 0");
        assert_eq!(err("a."), "pattern `a.` has an empty segment at position 1");
        assert_eq!(
            err("a.**.**"),
            "pattern `a.**.**` has `**` next to `**` at position 2; use a single `**`"
        );
        for bad in ["a**", "**b", "a**b", "***"] {
            assert_eq!(
                err(bad),
                format!(
                    "pattern `{bad}` has `**` inside segment `{bad}`; `**` must be a whole segment"
                )
            );
        }
        for (bad, ch) in [
            ("a b", ' '),
            ("a/b", '/'),
            ("a.$b", '$'),
            ("caf\u{e9}", '\u{e9}'),
            ("a!", '!'),
            ("a\\b", '\\'),
        ] {
            let msg = err(bad);
            assert!(
                msg.starts_with(&format!("pattern `{bad}` has invalid character {ch:?}")),
                "{msg}"
            );
        }
        let msg = err("a.[bc");
        assert!(
            msg.starts_with("pattern `a.[bc` has invalid glob segment `[bc`: "),
            "{msg}"
        );
        assert!(msg.contains("unclosed character class"), "{msg}");
        let msg = err("a.{b,c");
        assert!(msg.contains("invalid glob segment `{b,c`"), "{msg}");
        assert!(msg.contains("unclosed alternate group"), "{msg}");
    }

    #[test]
    fn limits() {
        let long = "a".repeat(MAX_PATTERN_LEN + 1);
        assert_eq!(
            err(&long),
            "pattern is 1025 bytes long, more than the limit of 1024 bytes"
        );
        let ok = "a".repeat(MAX_PATTERN_LEN);
        assert!(Pattern::parse(&ok).is_ok());

        let many = vec!["a"; MAX_PATTERN_SEGMENTS + 1].join(".");
        assert_eq!(
            err(&many),
            "pattern has 129 segments, more than the limit of 128 segments"
        );
        let ok = vec!["a"; MAX_PATTERN_SEGMENTS].join(".");
        assert!(Pattern::parse(&ok).is_ok());
    }

    #[test]
    fn specificity_by_hand() {
        // n=2: 4000 + 3000*2 + 3000*1
        assert_eq!(p("user.created").specificity(), 13000);
        // n=2: 4000 + 6000 - (1000 - 100)
        assert_eq!(p("user.*").specificity(), 9100);
        // n=1: 2000 - 2000
        assert_eq!(p("**").specificity(), 0);
        // n=2: 4000 + 6000 - (2000 - 200)
        assert_eq!(p("audit.**").specificity(), 8200);
        // n=3: 6000 + 9000 - (2000 - 200) + 3000
        assert_eq!(p("a.**.e").specificity(), 16200);
        // glob scores as star
        assert_eq!(
            p("user.{created,updated}").specificity(),
            p("user.*").specificity()
        );
        assert!(p("user.created").specificity() > p("user.*").specificity());
        assert!(p("user.*").specificity() > p("user.**").specificity());
    }

    #[test]
    fn display_fromstr_eq() {
        let a: Pattern = "a.*.{b,c}".parse().unwrap();
        assert_eq!(a.to_string(), "a.*.{b,c}");
        assert_eq!(a.as_str(), "a.*.{b,c}");
        assert_eq!(a, p("a.*.{b,c}"));
        assert_ne!(a, p("a.*.{c,b}"));
        assert_eq!(format!("{a:?}"), "Pattern(\"a.*.{b,c}\")");
    }

    #[test]
    fn serde_as_a_string() {
        let pat: Pattern = serde_json::from_str("\"user.*\"").unwrap();
        assert_eq!(pat, p("user.*"));
        assert_eq!(serde_json::to_string(&pat).unwrap(), "\"user.*\"");
        let e = serde_json::from_str::<Pattern>("\"a..b\"").unwrap_err();
        assert!(e.to_string().contains("empty segment at position 1"), "{e}");
    }

    #[test]
    fn valid_types() {
        assert!(is_valid_type("a"));
        assert!(is_valid_type("a-b.c_d.E9"));
        for bad in ["", ".", "a.", ".a", "a..b", "a b", "a*", "a/b", "é"] {
            assert!(!is_valid_type(bad), "{bad:?}");
        }
    }
}
