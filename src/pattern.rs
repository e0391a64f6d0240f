//! Subscription patterns over dot-separated signal types.
//!
//! A signal type is a list of `.`-separated segments, none empty, made of any characters but
//! whitespace and control characters (for example `user.created`,
//! `com.example/orders:created` or `billing.invoice.v2+json`); see [`is_valid_type`].
//! A [`Pattern`] is a list of `.`-separated segments too, where each segment is one of:
//!
//! - a literal, which matches that segment exactly (case-sensitive). It may hold any
//!   character a type segment may, except the glob metacharacters `*`, `?`, `[`, `]`, `{`,
//!   `}` and `\`, which a backslash escapes: `orders\*` matches the type segment `orders*`
//!   ([`escape`] writes a type as the pattern that matches exactly it);
//! - `*`, which matches exactly one segment;
//! - `**`, which matches zero or more segments anywhere in the pattern
//!   (`a.**.e` matches `a.e` and `a.b.c.e`, `audit.**` matches `audit` and
//!   `audit.x.y`, and `**` matches every valid type);
//! - a glob segment such as `create*`, `{created,updated}`, `v[0-9]` or
//!   `user_?`, which matches exactly one segment and is compiled with
//!   [`globset`]. Escapes work there too (`{a\,b,c}` has the branches `a,b` and `c`),
//!   except inside `[...]`. `?` and `[...]` match one byte of the segment's UTF-8 text, so
//!   one ASCII character: classes hold ASCII characters only, and `*` or a literal matches
//!   the others.
//!
//! A `.` cannot be escaped: no type segment contains one.
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
    /// A segment contains whitespace or a control character, which no type segment holds.
    #[error(
        "pattern `{pattern}` has invalid character {character:?} in segment `{segment}`; \
         segments allow any character but whitespace and control characters"
    )]
    InvalidCharacter {
        /// The rejected pattern.
        pattern: String,
        /// The offending segment.
        segment: String,
        /// The first character outside the grammar.
        character: char,
    },
    /// A backslash that does not escape a glob metacharacter (`a\b`, a trailing `\`, `a\.b`)
    /// or stands inside a character class (`[\]]`).
    #[error("pattern `{pattern}` has an invalid escape in segment `{segment}`: {rule}")]
    InvalidEscape {
        /// The rejected pattern.
        pattern: String,
        /// The offending segment.
        segment: String,
        /// The rule it broke.
        rule: &'static str,
    },
    /// A character class (`[...]`) holds a character outside ASCII: classes match one byte.
    #[error(
        "pattern `{pattern}` has {character:?} in a character class in segment `{segment}`; \
         `[...]` matches one byte, so it holds ASCII characters only (use `*` or a literal)"
    )]
    ClassCharacter {
        /// The rejected pattern.
        pattern: String,
        /// The offending segment.
        segment: String,
        /// The character outside ASCII.
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
        // Type segments may hold `/`: no separator in a segment, `*` and `?` match it too.
        let glob = GlobBuilder::new(source)
            .literal_separator(false)
            .backslash_escape(true)
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
///
/// Its `Display` is the segment as pattern text: a literal with its glob metacharacters
/// escaped again (`Literal("orders*")` shows as `orders\*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Segment {
    /// A literal segment that matches exactly this text: the segment as written, with its
    /// escapes resolved (`orders\*` holds `orders*`).
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

    /// The text of a literal (escapes resolved, see [`Segment::Literal`]), or the segment as
    /// written in the pattern (`*`, `**`, the glob source). `to_string()` gives the pattern
    /// text of any segment.
    pub fn as_str(&self) -> &str {
        match self {
            Segment::Literal(lit) => lit,
            Segment::Star => "*",
            Segment::GlobStar => "**",
            Segment::Glob(glob) => glob.as_str(),
        }
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Literal(lit) => f.write_str(&escape(lit)),
            other => f.write_str(other.as_str()),
        }
    }
}

/// A validated subscription pattern such as `user.*`, `audit.**` or
/// `billing.invoice.{created,updated}`.
///
/// Equality and hashing use the pattern text; `Display` and [`Pattern::as_str`] give it back
/// as written, escapes included, and it parses again to the same pattern.
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
/// // Any character but whitespace and control characters; `\` escapes glob metacharacters.
/// let p = Pattern::parse(r"com.example/orders:*.v\*")?;
/// assert!(p.matches("com.example/orders:created.v*"));
/// assert!(!p.matches("com.example/orders:created.v2"));
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

/// Whether `c` may appear in a segment of a signal type: anything but `.` (the separator),
/// whitespace and control characters.
pub(crate) fn is_type_char(c: char) -> bool {
    c != '.' && !c.is_whitespace() && !c.is_control()
}

/// The glob metacharacters, which a backslash escapes in a pattern (`,` only matters inside
/// braces, but may be escaped anywhere).
const fn is_meta(c: char) -> bool {
    matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\' | ',')
}

/// Whether `ty` is a valid signal type: `.`-separated segments, none empty, of any
/// characters but whitespace and control characters.
///
/// This is the structure routing needs; [`Signal`](crate::Signal) also bounds the length
/// ([`MAX_TYPE_LEN`](crate::signal::MAX_TYPE_LEN)) and the number of segments, and says
/// which rule a type breaks ([`validate_type`](crate::signal::validate_type)).
///
/// ```
/// use signal_bus::pattern::is_valid_type;
///
/// assert!(is_valid_type("user.created"));
/// assert!(is_valid_type("com.example/orders:created"));
/// assert!(!is_valid_type("user..created"));
/// assert!(!is_valid_type("user created"));
/// assert!(!is_valid_type(""));
/// ```
pub fn is_valid_type(ty: &str) -> bool {
    type_segment_count(ty).is_some()
}

/// The first rule a text breaks to be a signal type (see [`is_valid_type`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TypeFault {
    /// The empty string.
    Empty,
    /// Segment `position` (from 0) is empty.
    EmptySegment { position: usize },
    /// Segment `position` holds whitespace or a control character.
    Character { character: char, position: usize },
}

/// The number of segments of `ty`, or the first rule it breaks.
pub(crate) fn check_type(ty: &str) -> Result<usize, TypeFault> {
    // Routing checks every type it is given, cached or not: printable ASCII (nearly every
    // real type) takes two branch-light passes; anything else the general one.
    let bytes = ty.as_bytes();
    if !bytes.is_empty() && bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
        let (mut dots, mut prev_dot, mut doubled) = (0usize, true, false);
        for &b in bytes {
            let dot = b == b'.';
            doubled |= dot & prev_dot;
            dots += usize::from(dot);
            prev_dot = dot;
        }
        if !doubled && !prev_dot {
            return Ok(dots + 1);
        }
    }
    check_type_slow(ty)
}

/// [`check_type`] for any text: one pass over the bytes, characters outside ASCII decoded
/// only where they appear, the first broken rule reported.
fn check_type_slow(ty: &str) -> Result<usize, TypeFault> {
    let bytes = ty.as_bytes();
    if bytes.is_empty() {
        return Err(TypeFault::Empty);
    }
    let (mut prev_dot, mut dots, mut i) = (true, 0, 0);
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'.' {
            if prev_dot {
                return Err(TypeFault::EmptySegment { position: dots });
            }
            prev_dot = true;
            dots += 1;
            i += 1;
            continue;
        }
        let c = if b.is_ascii() {
            i += 1;
            char::from(b)
        } else {
            // `i` is a char boundary: every byte before it was ASCII or a whole char.
            let c = ty[i..].chars().next().unwrap_or('\0');
            i += c.len_utf8();
            c
        };
        if !is_type_char(c) {
            return Err(TypeFault::Character {
                character: c,
                position: dots,
            });
        }
        prev_dot = false;
    }
    if prev_dot {
        Err(TypeFault::EmptySegment { position: dots })
    } else {
        Ok(dots + 1)
    }
}

/// The number of segments of `ty`, or `None` if `ty` is not a valid type.
pub(crate) fn type_segment_count(ty: &str) -> Option<usize> {
    check_type(ty).ok()
}

/// `text` with the glob metacharacters `*`, `?`, `[`, `]`, `{`, `}` and `\` escaped, so that
/// as a pattern (or pattern segment) it matches exactly that text. For a valid signal type,
/// the pattern that matches that type and nothing else.
///
/// ```
/// use signal_bus::{pattern::escape, Pattern};
///
/// assert_eq!(escape("user.created"), "user.created");
/// assert_eq!(escape("orders.*.{new}"), r"orders.\*.\{new\}");
/// let exact = Pattern::parse(&escape("orders.*"))?;
/// assert!(exact.matches("orders.*"));
/// assert!(!exact.matches("orders.created"));
/// # Ok::<(), signal_bus::PatternError>(())
/// ```
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    let needs = |c: char| is_meta(c) && c != ',';
    if !text.contains(needs) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs(c) {
            out.push('\\');
        }
        out.push(c);
    }
    std::borrow::Cow::Owned(out)
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
    /// `**`, has `**` inside a segment (`a**`), has whitespace or a control character, has
    /// a backslash that escapes no glob metacharacter or stands inside `[...]`, has a
    /// character outside ASCII inside `[...]`, nests brace groups deeper than
    /// [`MAX_BRACE_DEPTH`], has more than
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
    /// Returns false when `ty` is not a valid type (empty, an empty segment, whitespace or
    /// a control character: see [`is_valid_type`]). This is the reference semantics the
    /// [`Router`](crate::Router) follows.
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
        let mut escaped = false;
        for b in seg.bytes() {
            if std::mem::take(&mut escaped) {
                continue;
            }
            match b {
                b'\\' => escaped = true,
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
    let escape_error = |rule| PatternError::InvalidEscape {
        pattern: pattern.to_owned(),
        segment: seg.to_owned(),
        rule,
    };
    // One pass: the characters and escapes are checked, the literal text is collected with
    // its escapes resolved, and any unescaped metacharacter makes the segment a glob.
    let mut literal = String::with_capacity(seg.len());
    let mut glob = false;
    let mut prev_star = false;
    let mut chars = seg.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() || c.is_control() {
            return Err(PatternError::InvalidCharacter {
                pattern: pattern.to_owned(),
                segment: seg.to_owned(),
                character: c,
            });
        }
        let star = c == '*';
        match c {
            '\\' => match chars.next() {
                Some(next) if is_meta(next) => literal.push(next),
                Some(_) => {
                    return Err(escape_error(
                        "a `\\` escapes only `* ? [ ] { } \\ ,` (a `.` cannot be escaped)",
                    ))
                }
                None => {
                    return Err(escape_error(
                        "a `\\` ends the segment and escapes nothing (a `.` cannot be escaped)",
                    ))
                }
            },
            '*' if prev_star => {
                return Err(PatternError::GlobStarInSegment {
                    pattern: pattern.to_owned(),
                    segment: seg.to_owned(),
                })
            }
            '[' => {
                glob = true;
                check_class(&mut chars).map_err(|fault| match fault {
                    ClassFault::Escape => escape_error(
                        "escapes do not work inside `[...]` (put a `]` first to match it)",
                    ),
                    ClassFault::NotAscii(character) => PatternError::ClassCharacter {
                        pattern: pattern.to_owned(),
                        segment: seg.to_owned(),
                        character,
                    },
                    ClassFault::Character(character) => PatternError::InvalidCharacter {
                        pattern: pattern.to_owned(),
                        segment: seg.to_owned(),
                        character,
                    },
                    ClassFault::GlobStar => PatternError::GlobStarInSegment {
                        pattern: pattern.to_owned(),
                        segment: seg.to_owned(),
                    },
                })?;
            }
            '*' | '?' | ']' | '{' | '}' => glob = true,
            c => literal.push(c),
        }
        prev_star = star;
    }
    if !glob {
        return Ok(Segment::Literal(literal));
    }
    GlobSegment::new(seg)
        .map(Segment::Glob)
        .map_err(|reason| PatternError::InvalidGlob {
            pattern: pattern.to_owned(),
            segment: seg.to_owned(),
            reason,
        })
}

/// What a character class may not hold.
enum ClassFault {
    Escape,
    /// `**` is refused anywhere in a segment, a class included (`[**]`).
    GlobStar,
    NotAscii(char),
    Character(char),
}

/// Checks a character class after its `[`, consuming it up to its closing `]` the way
/// globset reads it: an optional `!` or `^`, a `]` first is a member, `[:name:]` is a
/// POSIX class. An unclosed class is left for globset to report.
fn check_class(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<(), ClassFault> {
    if matches!(chars.peek(), Some('!' | '^')) {
        chars.next();
    }
    let (mut first, mut prev_star) = (true, false);
    while let Some(c) = chars.next() {
        if c == '*' && std::mem::replace(&mut prev_star, true) {
            return Err(ClassFault::GlobStar);
        }
        prev_star = c == '*';
        match c {
            ']' if !first => return Ok(()),
            '\\' => return Err(ClassFault::Escape),
            '[' if chars.peek() == Some(&':') => {
                // `[:alpha:]`: ASCII letters up to `:]`, or a plain `[` for globset.
                let mut look = chars.clone();
                look.next();
                let mut name = 0;
                while look.next_if(char::is_ascii_lowercase).is_some() {
                    name += 1;
                }
                if name > 0 && look.next() == Some(':') && look.next() == Some(']') {
                    *chars = look;
                }
            }
            c if c.is_whitespace() || c.is_control() => return Err(ClassFault::Character(c)),
            c if !c.is_ascii() => return Err(ClassFault::NotAscii(c)),
            _ => {}
        }
        first = false;
    }
    Ok(())
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
        for ty in [
            "a",
            "a.b",
            "user.created",
            "x.y.z.w.v",
            "A-b_9.c",
            "a/b",
            "é",
            "com.example/orders:created",
            "*.>.#.**",
        ] {
            assert!(pat.matches(ty), "{ty}");
        }
        for ty in ["", "a..b", ".a", "a.", "a b", "a\tb", "a\u{0}", "a\u{a0}b"] {
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
            ("a.\tb", '\t'),
            ("a.b\u{7f}", '\u{7f}'),
            ("caf\u{e9}\u{2003}", '\u{2003}'),
            ("a*\n", '\n'),
            ("[a\u{85}]", '\u{85}'),
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
        for ok in [
            "a",
            "a-b.c_d.E9",
            "a*",
            "a/b",
            "é",
            "com.example/orders:created",
            "x+y@z~w.#.$.%.>.*.**.{a,b}.[c].\\",
        ] {
            assert!(is_valid_type(ok), "{ok:?}");
        }
        for bad in [
            "", ".", "a.", ".a", "a..b", "a b", "a\u{0}", "a\r\n", "\u{3000}",
        ] {
            assert!(!is_valid_type(bad), "{bad:?}");
        }
        // The printable-ASCII fast path and the general pass agree.
        for text in [
            "a", "a.b/c.d", ".a", "a.", "a..b", "*.>.#", "a b", "a\u{7f}", "é.a", "~", ".", "",
        ] {
            assert_eq!(check_type(text), check_type_slow(text), "{text:?}");
        }
        assert_eq!(check_type("a.b/c.d"), Ok(3));
        assert_eq!(check_type(""), Err(TypeFault::Empty));
        assert_eq!(
            check_type("a..b"),
            Err(TypeFault::EmptySegment { position: 1 })
        );
        assert_eq!(
            check_type("a."),
            Err(TypeFault::EmptySegment { position: 1 })
        );
        assert_eq!(
            check_type("a.é.b\u{2028}"),
            Err(TypeFault::Character {
                character: '\u{2028}',
                position: 2
            })
        );
    }

    #[test]
    fn literals_hold_any_type_character_and_escapes_resolve() {
        let pat = p("com.example/orders:created");
        assert_eq!(
            pat.segments(),
            [
                Segment::Literal("com".into()),
                Segment::Literal("example/orders:created".into())
            ]
        );
        assert!(pat.matches("com.example/orders:created"));
        assert!(!pat.matches("com.example/orders:updated"));
        for (text, literal) in [
            (r"orders\*", "orders*"),
            (r"\*", "*"),
            (r"\*\*", "**"),
            (r"a\?b", "a?b"),
            (r"\[x\]", "[x]"),
            (r"\{a\,b\}", "{a,b}"),
            (r"back\\slash", r"back\slash"),
            ("a,b", "a,b"),
            ("a!^$#+@~>", "a!^$#+@~>"),
            ("caf\u{e9}", "caf\u{e9}"),
        ] {
            let pat = p(text);
            assert_eq!(pat.segments(), [Segment::Literal(literal.into())], "{text}");
            assert!(pat.matches(literal), "{text} must match {literal}");
            // An escaped literal scores as a literal.
            assert_eq!(pat.specificity(), p("x").specificity(), "{text}");
            // The segment shows as pattern text again, and the pattern as written.
            assert_eq!(
                Pattern::parse(&pat.segments()[0].to_string()).unwrap(),
                p(&escape(literal))
            );
            assert_eq!(pat.to_string(), text);
            assert_eq!(p(pat.as_str()), pat);
        }
        assert!(p(r"orders\*").matches("orders*"));
        assert!(!p(r"orders\*").matches("orders"));
        assert!(!p(r"orders\*").matches("ordersX"));
        assert!(p(r"a.\*").matches("a.*"));
        assert!(!p(r"a.\*").matches("a.b"));
        assert!(p(r"a.\*\*").matches("a.**"));
        assert!(!p(r"a.\*\*").matches("a.b.c"));
    }

    #[test]
    fn globs_see_escapes_and_any_type_character() {
        // An escaped metacharacter is a literal inside a glob segment too.
        let pat = p(r"v\*.*-{a\,b,c}");
        assert!(matches!(pat.segments()[1], Segment::Glob(_)));
        assert!(pat.matches("v*.x-a,b"));
        assert!(pat.matches("v*.-c"));
        assert!(!pat.matches("v*.x-a"));
        assert!(!pat.matches("vv.x-c"));
        assert!(p(r"a\**").matches("a*/b:c"));
        assert!(!p(r"a\**").matches("ab"));
        assert!(p(r"*\?").matches("what?"));
        assert!(!p(r"*\?").matches("what"));
        // `*` and `?` match `/` and the other characters a type segment holds.
        assert!(p("com.example/*").matches("com.example/orders:created"));
        assert!(p("com.*:created").matches("com.example/orders:created"));
        assert!(p("a?b").matches("a/b"));
        assert!(p("caf*").matches("caf\u{e9}"));
        assert!(p("[!a]x").matches("/x"));
        assert!(p("[[:alpha:]]1").matches("q1"));
        // `!` and `^` outside a class are literal characters.
        assert!(p("x!*").matches("x!y"));
        assert!(!p("x!*").matches("xy"));
        for text in [r"a\**", r"*\?", "[[:alpha:]]1", "{x,y}\\,"] {
            let pat = p(text);
            assert_eq!(pat.to_string(), text);
            let shown: Vec<String> = pat.segments().iter().map(|s| s.to_string()).collect();
            assert_eq!(p(&shown.join(".")), pat);
        }
    }

    #[test]
    fn bad_escapes_and_classes_are_refused_with_the_rule() {
        for bad in [r"a\b", r"a\.b", r"a\", r"\", r"x.\ y", r"\é"] {
            let msg = err(bad);
            assert!(
                msg.contains("has an invalid escape in segment"),
                "{bad}: {msg}"
            );
        }
        assert_eq!(
            err(r"a.b\c"),
            "pattern `a.b\\c` has an invalid escape in segment `b\\c`: a `\\` escapes only \
             `* ? [ ] { } \\ ,` (a `.` cannot be escaped)"
        );
        assert_eq!(
            err(r"a\.b"),
            "pattern `a\\.b` has an invalid escape in segment `a\\`: a `\\` ends the segment \
             and escapes nothing (a `.` cannot be escaped)"
        );
        assert!(err(r"[\]]").contains("escapes do not work inside `[...]`"));
        let msg = err("v[é]");
        assert!(
            msg.starts_with("pattern `v[é]` has 'é' in a character class in segment `v[é]`"),
            "{msg}"
        );
        // `**` inside a segment stays refused unless a star is escaped.
        assert!(err(r"a**").contains("`**` must be a whole segment"));
        assert!(err(r"\***").contains("`**` must be a whole segment"));
        assert!(err("[**]").contains("`**` must be a whole segment"));
        assert!(Pattern::parse("[*]").unwrap().matches("*"));
        assert!(Pattern::parse(r"*\**").is_ok());
        // Escaped braces do not count against the brace limits.
        let many = r"\{a\,b\}".repeat(40);
        assert!(Pattern::parse(&many).is_ok(), "{}", err(&many));
    }

    #[test]
    fn escape_makes_exact_patterns() {
        for ty in [
            "a",
            "orders.*",
            "a.**",
            r"x\y.{a,b}",
            "[c].?",
            "com.example/orders:created",
        ] {
            let pat = p(&escape(ty));
            assert!(pat.matches(ty), "{ty}");
            assert!(
                pat.segments()
                    .iter()
                    .all(|s| matches!(s, Segment::Literal(_))),
                "{ty}"
            );
        }
        assert!(!p(&escape("orders.*")).matches("orders.x"));
        assert!(matches!(
            escape("plain.type"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
