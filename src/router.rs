//! Routing signal types to the routes whose [`Pattern`] matches.
//!
//! A [`Router`] holds routes (a pattern, a priority and a value) in a segment
//! trie: literal children in a hash map, and `*`, `**` and glob children
//! apart. [`Router::route`] walks the trie once per signal type and caches the
//! ordered result; the cache is invalidated by a generation counter that every
//! [`Router::add`] and [`Router::remove`] bumps.
//!
//! # Cost of an uncached lookup
//!
//! The walk enters each trie node at most once, carrying the set of type
//! positions the node is reached at (a bit set: one 128-bit word for types of up
//! to 127 segments). A `**` node is reached at every position from its parent's
//! first one on, so chains of `**` cannot blow up combinatorially. For a type of
//! `m` segments a lookup makes at most `nodes` visits, each a few bit operations,
//! one lookup among the literal children per distinct segment at the node's
//! positions (one in a `**`-free walk) and one match per glob child and distinct
//! segment; each matching route is emitted once, and the `k` matches are ordered
//! by a comparison sort (few) or a radix sort on their precomputed keys (many).
//! Subtrees that cannot reach a route with the segments left are cut (each node
//! keeps the fewest and most segments its routes still need), so a `**` followed
//! by a fixed tail only tries the positions that tail can match.
//! The [`Bus`](crate::Bus) bounds `m` (`BusBuilder::max_type_segments`, 32 by
//! default); a standalone `Router` routes types of any length.
//!
//! Results are ordered most specific first ([`Pattern::specificity`]), then by
//! priority (higher first), then by registration order (earlier first). Each
//! matching route appears exactly once.

use std::fmt;
use std::sync::{Arc, RwLock};

use crate::pattern::GlobSegment;
use foldhash::{HashMap, HashMapExt};

use crate::pattern::{type_segment_count, Pattern, PatternError, Segment};

/// The lowest priority accepted by [`Router::add`].
pub const MIN_PRIORITY: i32 = -100;
/// The highest priority accepted by [`Router::add`].
pub const MAX_PRIORITY: i32 = 100;
/// The default number of signal types kept in the routing cache.
pub const DEFAULT_CACHE_CAPACITY: usize = 4096;

/// Why a route was refused by [`Router::add`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The pattern is invalid.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// The priority is outside `-100..=100`.
    #[error("priority {value} is out of range -100..=100")]
    Priority {
        /// The rejected priority.
        value: i32,
    },
}

/// Identifies a route in a [`Router`].
///
/// Ids are never reused within a router: a removed id does not alias a route
/// added later. Ids order by registration (earlier first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId {
    seq: u64,
    slot: u32,
}

impl RouteId {
    /// The registration sequence number of the route (0 for the first route
    /// added to the router).
    pub fn sequence(self) -> u64 {
        self.seq
    }
}

/// A route hit: the precomputed ordering key and the slot of the route.
#[derive(Debug, Clone, Copy)]
struct Hit {
    key: SortKey,
    slot: u32,
}

/// Reverse(specificity) and Reverse(priority) packed in `rank`, then the registration
/// sequence: a smaller key comes first. Two words, not a `u128`, so a [`Hit`] is 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct SortKey {
    rank: u64,
    seq: u64,
}

impl Hit {
    fn id(self) -> RouteId {
        RouteId {
            seq: self.key.seq,
            slot: self.slot,
        }
    }
}

/// From this many hits on, [`sort_hits`] uses a radix sort.
const RADIX_SORT_MIN: usize = 128;

/// Sorts hits by key (stable). Few hits: a comparison sort. Many (a type matching thousands
/// of routes): a least significant digit first radix sort over the key bytes that differ among
/// the hits, usually 3-5 passes of counting and scattering, where a comparison sort makes
/// `log2(k)` rounds of comparing two-word keys and moving 24-byte hits.
fn sort_hits(hits: &mut Vec<Hit>) {
    if hits.len() < RADIX_SORT_MIN {
        hits.sort_unstable_by_key(|h| h.key);
        return;
    }
    let first = hits[0].key;
    let (mut seq_diff, mut rank_diff) = (0u64, 0u64);
    for h in hits.iter() {
        seq_diff |= h.key.seq ^ first.seq;
        rank_diff |= h.key.rank ^ first.rank;
    }
    let mut buf = vec![
        Hit {
            key: first,
            slot: 0
        };
        hits.len()
    ];
    // Least significant first: the eight bytes of `seq`, then those of `rank`.
    for digit in 0..16u32 {
        let (diff, shift) = if digit < 8 {
            (seq_diff, digit * 8)
        } else {
            (rank_diff, (digit - 8) * 8)
        };
        if (diff >> shift) & 0xff == 0 {
            continue;
        }
        let byte = |h: &Hit| {
            let word = if digit < 8 { h.key.seq } else { h.key.rank };
            ((word >> shift) & 0xff) as usize
        };
        let mut starts = [0usize; 256];
        for h in hits.iter() {
            starts[byte(h)] += 1;
        }
        let mut sum = 0;
        for start in starts.iter_mut() {
            let count = *start;
            *start = sum;
            sum += count;
        }
        for h in hits.iter() {
            let b = byte(h);
            buf[starts[b]] = *h;
            starts[b] += 1;
        }
        std::mem::swap(hits, &mut buf);
    }
}

fn sort_key(specificity: i64, priority: i32, seq: u64) -> SortKey {
    let spec = specificity.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
    // Order-preserving map of i32 to u32, then reversed (higher spec first).
    let spec_rank = u32::MAX - ((spec as u32) ^ 0x8000_0000);
    let prio_rank = (MAX_PRIORITY - priority) as u8; // 0..=200, higher priority first
    SortKey {
        rank: (u64::from(spec_rank) << 8) | u64::from(prio_rank),
        seq,
    }
}

#[derive(Debug)]
struct GlobChild {
    /// The glob (its source text and compiled matcher, shared with the pattern's segment).
    glob: GlobSegment,
    node: Node,
}

/// `max_rest` of a subtree whose routes can be reached through a `**`: no upper bound.
/// Bounds fit in 16 bits since a pattern has at most
/// [`MAX_PATTERN_SEGMENTS`](crate::pattern::MAX_PATTERN_SEGMENTS) (128) segments.
const UNBOUNDED: u16 = u16::MAX;

/// The first (up to) four bytes of a literal segment, zero padded. Literal segments are
/// non-empty and have no zero byte, so two segments of the same length are equal exactly when
/// their tags are equal and their bytes after the fourth are.
#[inline]
fn literal_tag(seg: &str) -> u32 {
    let bytes = seg.as_bytes();
    match bytes.first_chunk::<4>() {
        Some(first) => u32::from_le_bytes(*first),
        // Byte by byte: a variable-length `copy_from_slice` compiles to a call to `memcpy`.
        None => bytes
            .iter()
            .enumerate()
            .fold(0, |tag, (i, &b)| tag | u32::from(b) << (8 * i)),
    }
}

/// Up to this many literal children live in a vector searched in order; more go to a map.
const FEW_LITERALS: usize = 8;

/// The literal children of a node. Most nodes have one child or none (the tail of a literal
/// pattern), so a short vector of exactly the children's size comes first: a hash map with
/// one entry would allocate room for several nodes.
#[derive(Debug)]
enum Literals {
    Few(Vec<(Box<str>, Node)>),
    Many(Box<HashMap<Box<str>, Node>>),
}

impl Default for Literals {
    fn default() -> Self {
        Literals::Few(Vec::new())
    }
}

impl Literals {
    /// The child for `seg`. The short vector is searched on the length and [`literal_tag`]
    /// kept beside each key, so a miss (or a match of a segment of at most four bytes) does
    /// not read the keys' own allocations.
    #[inline]
    fn get(&self, seg: &str) -> Option<&Node> {
        match self {
            Literals::Few(v) => {
                let tag = literal_tag(seg);
                v.iter()
                    .find(|(k, n)| {
                        n.tag == tag
                            && k.len() == seg.len()
                            && (seg.len() <= 4 || k.as_bytes()[4..] == seg.as_bytes()[4..])
                    })
                    .map(|(_, n)| n)
            }
            Literals::Many(m) => m.get(seg),
        }
    }

    fn get_mut(&mut self, seg: &str) -> Option<&mut Node> {
        match self {
            Literals::Few(v) => v.iter_mut().find(|(k, _)| **k == *seg).map(|(_, n)| n),
            Literals::Many(m) => m.get_mut(seg),
        }
    }

    fn get_or_insert(&mut self, seg: &str) -> &mut Node {
        if let Literals::Few(v) = self {
            if v.len() >= FEW_LITERALS && !v.iter().any(|(k, _)| **k == *seg) {
                let map: HashMap<Box<str>, Node> = std::mem::take(v).into_iter().collect();
                *self = Literals::Many(Box::new(map));
            }
        }
        match self {
            Literals::Few(v) => {
                let i = match v.iter().position(|(k, _)| **k == *seg) {
                    Some(i) => i,
                    None => {
                        v.reserve_exact(1);
                        v.push((seg.into(), Node::literal(seg)));
                        v.len() - 1
                    }
                };
                &mut v[i].1
            }
            Literals::Many(m) => m.entry(seg.into()).or_insert_with(|| Node::literal(seg)),
        }
    }

    fn remove(&mut self, seg: &str) {
        match self {
            Literals::Few(v) => {
                v.retain(|(k, _)| **k != *seg);
                v.shrink_to_fit();
            }
            Literals::Many(m) => {
                m.remove(seg);
                if m.len() <= FEW_LITERALS / 2 {
                    *self = Literals::Few(std::mem::take(&mut **m).into_iter().collect());
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Literals::Few(v) => v.is_empty(),
            Literals::Many(m) => m.is_empty(),
        }
    }

    fn nodes(&self) -> Box<dyn Iterator<Item = &Node> + '_> {
        match self {
            Literals::Few(v) => Box::new(v.iter().map(|(_, n)| n)),
            Literals::Many(m) => Box::new(m.values()),
        }
    }
}

/// The children of a node that are not literals: `*`, `**` and glob segments. Kept apart
/// (and allocated only when present) since most nodes have none.
#[derive(Debug, Default)]
struct Wild {
    star: Option<Node>,
    globstar: Option<Node>,
    globs: Vec<GlobChild>,
}

impl Wild {
    fn is_empty(&self) -> bool {
        self.star.is_none() && self.globstar.is_none() && self.globs.is_empty()
    }
}

#[derive(Debug)]
struct Node {
    literals: Literals,
    wild: Option<Box<Wild>>,
    /// The routes ending here, with exactly their own capacity (most nodes hold one or none).
    routes: Vec<Hit>,
    /// A lower bound on the number of type segments still to consume from this node to reach
    /// a route of its subtree (`u16::MAX` for a node without routes below it).
    min_rest: u16,
    /// An upper bound on that number ([`UNBOUNDED`] when a `**` leads to a route).
    ///
    /// Both bounds are exact after adds; a remove leaves them as they were, which keeps them
    /// valid bounds (only looser), so pruning on them never drops a match.
    max_rest: u16,
    /// For a node reached by a literal segment: that segment's [`literal_tag`] (0 otherwise).
    /// Fits beside the bounds, so the node stays 64 bytes.
    tag: u32,
}

impl Default for Node {
    fn default() -> Self {
        Node {
            literals: Literals::default(),
            wild: None,
            routes: Vec::new(),
            min_rest: u16::MAX,
            max_rest: 0,
            tag: 0,
        }
    }
}

impl Node {
    fn literal(seg: &str) -> Node {
        Node {
            tag: literal_tag(seg),
            ..Node::default()
        }
    }

    /// Adds `hit` at the end of `segs` below this node and widens the bounds on the way back.
    fn insert(&mut self, segs: &[Segment], hit: Hit) {
        let Some((first, rest)) = segs.split_first() else {
            self.routes.reserve_exact(1);
            self.routes.push(hit);
            self.min_rest = 0;
            return;
        };
        let child = self.child_mut(first);
        child.insert(rest, hit);
        let (cmin, cmax) = (child.min_rest, child.max_rest);
        let (min, max) = match first {
            // `**` consumes zero or more segments.
            Segment::GlobStar => (cmin, UNBOUNDED),
            _ => (cmin.saturating_add(1), cmax.saturating_add(1)),
        };
        self.min_rest = self.min_rest.min(min);
        self.max_rest = self.max_rest.max(max);
    }

    fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.literals.is_empty() && self.wild.is_none()
    }

    fn wild_mut(&mut self) -> &mut Wild {
        self.wild.get_or_insert_with(Box::default)
    }

    fn child_mut(&mut self, seg: &Segment) -> &mut Node {
        match seg {
            Segment::Literal(lit) => self.literals.get_or_insert(lit),
            Segment::Star => self.wild_mut().star.get_or_insert_with(Node::default),
            Segment::GlobStar => self.wild_mut().globstar.get_or_insert_with(Node::default),
            Segment::Glob(glob) => {
                let globs = &mut self.wild_mut().globs;
                let idx = match globs.iter().position(|g| g.glob == *glob) {
                    Some(idx) => idx,
                    None => {
                        globs.push(GlobChild {
                            glob: glob.clone(),
                            node: Node::default(),
                        });
                        globs.len() - 1
                    }
                };
                &mut globs[idx].node
            }
        }
    }

    /// Removes the route `slot` stored at the end of `segs`; prunes nodes
    /// left empty. Returns whether the route was found.
    fn remove(&mut self, segs: &[Segment], slot: u32) -> bool {
        let Some((first, rest)) = segs.split_first() else {
            let before = self.routes.len();
            self.routes.retain(|h| h.slot != slot);
            self.routes.shrink_to_fit();
            return self.routes.len() != before;
        };
        if let Segment::Literal(lit) = first {
            let Some(child) = self.literals.get_mut(lit) else {
                return false;
            };
            let found = child.remove(rest, slot);
            if child.is_empty() {
                self.literals.remove(lit);
            }
            return found;
        }
        let Some(wild) = self.wild.as_deref_mut() else {
            return false;
        };
        let found = match first {
            Segment::Star => remove_child(&mut wild.star, rest, slot),
            Segment::GlobStar => remove_child(&mut wild.globstar, rest, slot),
            Segment::Glob(glob) => match wild.globs.iter().position(|g| g.glob == *glob) {
                None => false,
                Some(idx) => {
                    let found = wild.globs[idx].node.remove(rest, slot);
                    if wild.globs[idx].node.is_empty() {
                        wild.globs.remove(idx);
                    }
                    found
                }
            },
            Segment::Literal(_) => unreachable!("handled above"),
        };
        if wild.is_empty() {
            self.wild = None;
        }
        found
    }
}

fn remove_child(child: &mut Option<Node>, rest: &[Segment], slot: u32) -> bool {
    let Some(node) = child.as_mut() else {
        return false;
    };
    let found = node.remove(rest, slot);
    if node.is_empty() {
        *child = None;
    }
    found
}

/// A set of type positions `0..=m` (position `q`: the segments from `q` on are still to be
/// matched; `m`: the whole type consumed).
trait Positions: Clone {
    /// The positions `lo..hi` (`hi <= m + 1`) of a type of `m` segments.
    fn range(m: usize, lo: usize, hi: usize) -> Self;
    fn is_empty(&self) -> bool;
    /// Whether the set holds exactly one position.
    fn is_single(&self) -> bool;
    fn contains(&self, q: usize) -> bool;
    fn first(&self) -> Option<usize>;
    fn insert(&mut self, q: usize);
    fn remove(&mut self, q: usize);
    fn intersect(&mut self, other: &Self);
    fn union(&mut self, other: &Self);
    fn subtract(&mut self, other: &Self);
    /// `{q + 1 | q in self}`; the set must not hold `m`.
    fn next(&self) -> Self;
}

/// Positions of a type of at most 127 segments: one 128-bit word.
impl Positions for u128 {
    #[inline]
    fn range(_m: usize, lo: usize, hi: usize) -> Self {
        if hi <= lo {
            return 0;
        }
        let ones = u128::MAX >> (128 - (hi - lo));
        ones << lo
    }
    #[inline]
    fn is_empty(&self) -> bool {
        *self == 0
    }
    #[inline]
    fn is_single(&self) -> bool {
        self.is_power_of_two()
    }
    #[inline]
    fn contains(&self, q: usize) -> bool {
        (*self >> q) & 1 == 1
    }
    #[inline]
    fn first(&self) -> Option<usize> {
        (*self != 0).then(|| self.trailing_zeros() as usize)
    }
    #[inline]
    fn insert(&mut self, q: usize) {
        *self |= 1 << q;
    }
    #[inline]
    fn remove(&mut self, q: usize) {
        *self &= !(1 << q);
    }
    #[inline]
    fn intersect(&mut self, other: &Self) {
        *self &= *other;
    }
    #[inline]
    fn union(&mut self, other: &Self) {
        *self |= *other;
    }
    #[inline]
    fn subtract(&mut self, other: &Self) {
        *self &= !*other;
    }
    #[inline]
    fn next(&self) -> Self {
        *self << 1
    }
}

/// Positions of a longer type (a standalone [`Router`] routes types of any length).
#[derive(Clone)]
struct LongPositions(Vec<u64>);

impl Positions for LongPositions {
    fn range(m: usize, lo: usize, hi: usize) -> Self {
        let mut words = vec![0u64; (m + 1).div_ceil(64)];
        for q in lo..hi {
            words[q / 64] |= 1 << (q % 64);
        }
        LongPositions(words)
    }
    fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
    fn is_single(&self) -> bool {
        self.0.iter().map(|w| w.count_ones()).sum::<u32>() == 1
    }
    fn contains(&self, q: usize) -> bool {
        (self.0[q / 64] >> (q % 64)) & 1 == 1
    }
    fn first(&self) -> Option<usize> {
        let i = self.0.iter().position(|w| *w != 0)?;
        Some(i * 64 + self.0[i].trailing_zeros() as usize)
    }
    fn insert(&mut self, q: usize) {
        self.0[q / 64] |= 1 << (q % 64);
    }
    fn remove(&mut self, q: usize) {
        self.0[q / 64] &= !(1 << (q % 64));
    }
    fn intersect(&mut self, other: &Self) {
        self.0.iter_mut().zip(&other.0).for_each(|(a, b)| *a &= b);
    }
    fn union(&mut self, other: &Self) {
        self.0.iter_mut().zip(&other.0).for_each(|(a, b)| *a |= b);
    }
    fn subtract(&mut self, other: &Self) {
        self.0.iter_mut().zip(&other.0).for_each(|(a, b)| *a &= !b);
    }
    fn next(&self) -> Self {
        let mut carry = 0;
        let words = self
            .0
            .iter()
            .map(|w| {
                let shifted = (w << 1) | carry;
                carry = w >> 63;
                shifted
            })
            .collect();
        LongPositions(words)
    }
}

/// State of one trie walk.
///
/// The walk enters each trie node at most once, with the set of type positions it is reached
/// at: a node other than a `**` node is reached only from its parent (at the parent's
/// positions, each one segment on, where that segment matches), and a `**` node at every
/// position from its parent's first one to the end. A visit looks the segment up among the
/// literal children once per distinct segment at its positions, matches each glob child once
/// per distinct segment, and emits the node's routes when the set holds the end of the type.
/// So a walk makes at most `nodes` visits, and each route is emitted at most once. Subtrees that
/// cannot reach a route with the segments left (`min_rest`, `max_rest`) are cut before they
/// are entered, which keeps a `**` followed by a fixed tail to the positions that tail can
/// match.
struct Walk<'a, 't, P> {
    parts: &'a [&'t str],
    /// For each position, the positions holding the same segment (computed on first need:
    /// only sets of several positions, reached through a `**`, need it).
    same: Vec<P>,
    hits: Vec<Hit>,
    /// Number of nodes entered.
    visits: usize,
}

impl<P: Positions> Walk<'_, '_, P> {
    /// Enters `node` at the single position `pos`: the walk from the root until a `**` makes
    /// a set of several positions. The same steps as [`Walk::visit`] on a one-position set,
    /// without the set operations (the common, `**`-free path).
    fn visit_one(&mut self, node: &Node, pos: usize) {
        let m = self.parts.len();
        let rest = m - pos;
        if rest < usize::from(node.min_rest)
            || (node.max_rest != UNBOUNDED && rest > usize::from(node.max_rest))
        {
            return;
        }
        self.visits += 1;
        if pos == m {
            // Most nodes hold one route: a push, not a call to copy a slice.
            if let [hit] = node.routes[..] {
                self.hits.push(hit);
            } else {
                self.hits.extend_from_slice(&node.routes);
            }
        } else {
            let seg = self.parts[pos];
            if let Some(child) = node.literals.get(seg) {
                self.visit_one(child, pos + 1);
            }
            if let Some(wild) = &node.wild {
                if let Some(star) = &wild.star {
                    self.visit_one(star, pos + 1);
                }
                for glob in &wild.globs {
                    if glob.glob.is_match(seg) {
                        self.visit_one(&glob.node, pos + 1);
                    }
                }
            }
        }
        if let Some(gs) = node.wild.as_ref().and_then(|w| w.globstar.as_ref()) {
            self.visit(gs, P::range(m, pos, m + 1));
        }
    }

    fn visit(&mut self, node: &Node, mut at: P) {
        let m = self.parts.len();
        let min_rest = usize::from(node.min_rest);
        if min_rest > m {
            return;
        }
        let lo = if node.max_rest == UNBOUNDED {
            0
        } else {
            m.saturating_sub(usize::from(node.max_rest))
        };
        at.intersect(&P::range(m, lo, m - min_rest + 1));
        let Some(first) = at.first() else {
            return;
        };
        self.visits += 1;
        let mut left = at;
        if left.contains(m) {
            // Most nodes hold one route: a push, not a call to copy a slice.
            if let [hit] = node.routes[..] {
                self.hits.push(hit);
            } else {
                self.hits.extend_from_slice(&node.routes);
            }
            left.remove(m);
        }
        if !left.is_empty() {
            if !node.literals.is_empty() {
                let mut rest = left.clone();
                while let Some(q) = rest.first() {
                    let group = self.group(q, &left);
                    rest.subtract(&group);
                    let seg = self.parts[q];
                    if let Some(child) = node.literals.get(seg) {
                        self.visit(child, group.next());
                    }
                }
            }
            if let Some(wild) = &node.wild {
                if let Some(star) = &wild.star {
                    self.visit(star, left.next());
                }
                for glob in &wild.globs {
                    let mut matched = P::range(m, 0, 0);
                    let mut rest = left.clone();
                    while let Some(q) = rest.first() {
                        let group = self.group(q, &left);
                        rest.subtract(&group);
                        if glob.glob.is_match(self.parts[q]) {
                            matched.union(&group);
                        }
                    }
                    if !matched.is_empty() {
                        self.visit(&glob.node, matched.next());
                    }
                }
            }
        }
        if let Some(gs) = node.wild.as_ref().and_then(|w| w.globstar.as_ref()) {
            // `**` consumes zero or more segments: from the first position on, every one.
            self.visit(gs, P::range(m, first, m + 1));
        }
    }

    /// The positions of `left` holding the same segment as position `q` (in `left`).
    fn group(&mut self, q: usize, left: &P) -> P {
        let m = self.parts.len();
        if left.is_single() {
            return left.clone();
        }
        if self.same.is_empty() {
            let mut by_segment: HashMap<&str, P> = HashMap::with_capacity(m);
            for (p, seg) in self.parts.iter().enumerate() {
                by_segment
                    .entry(seg)
                    .or_insert_with(|| P::range(m, 0, 0))
                    .insert(p);
            }
            self.same = self
                .parts
                .iter()
                .map(|seg| by_segment[seg].clone())
                .collect();
        }
        let mut group = self.same[q].clone();
        group.intersect(left);
        group
    }
}

struct Entry<T> {
    seq: u64,
    pattern: Pattern,
    priority: i32,
    value: T,
}

struct CacheEntry {
    generation: u64,
    ids: Arc<[RouteId]>,
}

/// Routes signal types to values registered under [`Pattern`]s.
///
/// Results are ordered most specific first ([`Pattern::specificity`]), then
/// by priority (`-100..=100`, higher first), then by registration order
/// (earlier first); each matching route appears once. Lookups are cached per
/// signal type (4096 types by default, see [`Router::with_cache_capacity`]);
/// adding or removing a route invalidates the cache.
///
/// An uncached lookup enters each trie node at most once, plus ordering the
/// matches (see the [module documentation](self)). Patterns have their own cap
/// ([`MAX_PATTERN_SEGMENTS`](crate::pattern::MAX_PATTERN_SEGMENTS), 128), which
/// bounds the trie depth; the router does not refuse patterns longer than the
/// types a bus accepts (they simply never match).
///
/// `Router<T>` is `Send + Sync` when `T` is: lookups take `&self`.
///
/// # Examples
///
/// ```
/// use signal_bus::Router;
///
/// let mut router = Router::new();
/// router.add("user.**", 0, "all user events")?;
/// router.add("user.created", 0, "created")?;
/// router.add("user.*", 10, "one level")?;
/// let audit = router.add("**", 0, "audit")?;
///
/// assert_eq!(
///     router.route("user.created"),
///     [&"created", &"one level", &"all user events", &"audit"]
/// );
/// assert_eq!(router.route("billing.paid"), [&"audit"]);
///
/// router.remove(audit);
/// assert!(router.route("billing.paid").is_empty());
/// # Ok::<(), signal_bus::RouteError>(())
/// ```
pub struct Router<T> {
    root: Node,
    slots: Vec<Option<Entry<T>>>,
    free: Vec<u32>,
    len: usize,
    next_seq: u64,
    generation: u64,
    cache_capacity: usize,
    cache: RwLock<HashMap<Box<str>, CacheEntry>>,
    empty: Arc<[RouteId]>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: fmt::Debug> fmt::Debug for Router<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Routes<'a, T>(&'a Router<T>);
        impl<T: fmt::Debug> fmt::Debug for Routes<'_, T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut list = f.debug_list();
                for (slot, entry) in self.0.slots.iter().enumerate() {
                    if let Some(e) = entry {
                        list.entry(&format_args!(
                            "{:?} {} priority {} => {:?}",
                            RouteId {
                                seq: e.seq,
                                slot: slot as u32
                            },
                            e.pattern,
                            e.priority,
                            e.value
                        ));
                    }
                }
                list.finish()
            }
        }
        f.debug_struct("Router")
            .field("len", &self.len)
            .field("generation", &self.generation)
            .field("cache_capacity", &self.cache_capacity)
            .field("routes", &Routes(self))
            .finish()
    }
}

impl<T> Router<T> {
    /// An empty router with the default cache capacity (4096 signal types).
    pub fn new() -> Self {
        Self::with_cache_capacity(DEFAULT_CACHE_CAPACITY)
    }

    /// An empty router whose cache keeps at most `capacity` signal types.
    ///
    /// A capacity of 0 disables the cache: every [`Router::route`] walks the
    /// trie. When the cache is full, stale entries are dropped, and if it is
    /// still full it is cleared.
    pub fn with_cache_capacity(capacity: usize) -> Self {
        Self {
            root: Node::default(),
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            next_seq: 0,
            generation: 0,
            cache_capacity: capacity,
            cache: RwLock::new(HashMap::new()),
            empty: Arc::from([]),
        }
    }

    /// Parses `pattern` and adds a route with `priority` and `value`.
    ///
    /// # Errors
    ///
    /// [`RouteError::Pattern`] when the pattern is invalid (see
    /// [`Pattern::parse`]), [`RouteError::Priority`] when `priority` is
    /// outside `-100..=100`.
    pub fn add(&mut self, pattern: &str, priority: i32, value: T) -> Result<RouteId, RouteError> {
        check_priority(priority)?;
        self.add_pattern(Pattern::parse(pattern)?, priority, value)
    }

    /// Adds a route for an already parsed pattern.
    ///
    /// # Errors
    ///
    /// [`RouteError::Priority`] when `priority` is outside `-100..=100`.
    pub fn add_pattern(
        &mut self,
        pattern: Pattern,
        priority: i32,
        value: T,
    ) -> Result<RouteId, RouteError> {
        check_priority(priority)?;
        let seq = self.next_seq;
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => u32::try_from(self.slots.len()).expect("more than u32::MAX routes"),
        };
        let key = sort_key(pattern.specificity(), priority, seq);
        self.root.insert(pattern.segments(), Hit { key, slot });
        let entry = Entry {
            seq,
            pattern,
            priority,
            value,
        };
        if slot as usize == self.slots.len() {
            self.slots.push(Some(entry));
        } else {
            self.slots[slot as usize] = Some(entry);
        }
        self.next_seq += 1;
        self.len += 1;
        self.generation += 1;
        Ok(RouteId { seq, slot })
    }

    /// Removes a route and returns its value, or `None` if `id` is unknown or
    /// was already removed. Trie nodes left empty are pruned.
    pub fn remove(&mut self, id: RouteId) -> Option<T> {
        let entry = self.slots.get_mut(id.slot as usize)?;
        if entry.as_ref()?.seq != id.seq {
            return None;
        }
        let entry = entry.take()?;
        let found = self.root.remove(entry.pattern.segments(), id.slot);
        debug_assert!(found, "route {id:?} missing from the trie");
        self.free.push(id.slot);
        self.len -= 1;
        self.generation += 1;
        Some(entry.value)
    }

    fn entry(&self, id: RouteId) -> Option<&Entry<T>> {
        self.slots
            .get(id.slot as usize)?
            .as_ref()
            .filter(|e| e.seq == id.seq)
    }

    /// The value of a route.
    pub fn get(&self, id: RouteId) -> Option<&T> {
        self.entry(id).map(|e| &e.value)
    }

    /// The value of a route, mutably.
    pub fn get_mut(&mut self, id: RouteId) -> Option<&mut T> {
        self.slots
            .get_mut(id.slot as usize)?
            .as_mut()
            .filter(|e| e.seq == id.seq)
            .map(|e| &mut e.value)
    }

    /// The pattern of a route.
    pub fn pattern(&self, id: RouteId) -> Option<&Pattern> {
        self.entry(id).map(|e| &e.pattern)
    }

    /// The priority of a route.
    pub fn priority(&self, id: RouteId) -> Option<i32> {
        self.entry(id).map(|e| e.priority)
    }

    /// The values of the routes matching `ty`, in routing order.
    ///
    /// Uses the cache (see [`Router::route_ids`]). An invalid type matches
    /// nothing.
    pub fn route(&self, ty: &str) -> Vec<&T> {
        let ids = self.route_ids(ty);
        ids.iter().filter_map(|&id| self.get(id)).collect()
    }

    /// The ids of the routes matching `ty`, in routing order, from the cache
    /// when it holds an entry of the current generation.
    ///
    /// An invalid type matches nothing (and is not cached).
    pub fn route_ids(&self, ty: &str) -> Arc<[RouteId]> {
        let Some(count) = type_segment_count(ty) else {
            return self.empty.clone();
        };
        if self.cache_capacity == 0 {
            return self.compute_ids(ty, count);
        }
        {
            let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = cache.get(ty) {
                if entry.generation == self.generation {
                    return entry.ids.clone();
                }
            }
        }
        let ids = self.compute_ids(ty, count);
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= self.cache_capacity && !cache.contains_key(ty) {
            let generation = self.generation;
            cache.retain(|_, e| e.generation == generation);
            if cache.len() >= self.cache_capacity {
                cache.clear();
            }
        }
        cache.insert(
            ty.into(),
            CacheEntry {
                generation: self.generation,
                ids: ids.clone(),
            },
        );
        ids
    }

    fn compute_ids(&self, ty: &str, count: usize) -> Arc<[RouteId]> {
        let hits = self.walk(ty, count);
        if hits.is_empty() {
            self.empty.clone()
        } else {
            hits.iter().map(|h| h.id()).collect()
        }
    }

    /// The values of the routes matching `ty`, in routing order, by walking
    /// the trie without the cache. An invalid type matches nothing.
    pub fn route_uncached(&self, ty: &str) -> Vec<&T> {
        let Some(count) = type_segment_count(ty) else {
            return Vec::new();
        };
        self.walk(ty, count)
            .into_iter()
            .filter_map(|h| self.slots[h.slot as usize].as_ref().map(|e| &e.value))
            .collect()
    }

    /// Sorted hits for a valid type of `count` segments.
    fn walk(&self, ty: &str, count: usize) -> Vec<Hit> {
        self.walk_counted(ty, count).0
    }

    /// Sorted hits for a valid type of `count` segments, and the number of trie nodes
    /// entered.
    fn walk_counted(&self, ty: &str, count: usize) -> (Vec<Hit>, usize) {
        const INLINE: usize = 16;
        let mut inline = [""; INLINE];
        let heap: Vec<&str>;
        let parts: &[&str] = if count <= INLINE {
            for (slot, part) in inline.iter_mut().zip(ty.split('.')) {
                *slot = part;
            }
            &inline[..count]
        } else {
            heap = ty.split('.').collect();
            &heap
        };
        let (hits, visits) = if count < 128 {
            Self::walk_from::<u128>(&self.root, parts)
        } else {
            Self::walk_from::<LongPositions>(&self.root, parts)
        };
        let mut hits = hits;
        if hits.len() > 1 {
            sort_hits(&mut hits);
            // Each route lives in one trie node and each node is entered at most once, so
            // duplicates are not expected; keep the guarantee anyway.
            hits.dedup_by_key(|h| h.key);
        }
        (hits, visits)
    }

    /// Unsorted hits and the number of nodes entered, walking from `root` at position 0.
    fn walk_from<P: Positions>(root: &Node, parts: &[&str]) -> (Vec<Hit>, usize) {
        let mut walk = Walk::<P> {
            parts,
            same: Vec::new(),
            hits: Vec::new(),
            visits: 0,
        };
        walk.visit_one(root, 0);
        (walk.hits, walk.visits)
    }

    /// The number of trie nodes an uncached walk for `ty` enters (0 for an invalid type).
    /// At most `trie_nodes()`. For tests and benchmarks; not part of the stable API.
    #[doc(hidden)]
    pub fn uncached_visits(&self, ty: &str) -> usize {
        type_segment_count(ty).map_or(0, |count| self.walk_counted(ty, count).1)
    }

    /// The number of trie nodes, the root included. For tests and benchmarks; not part of
    /// the stable API.
    #[doc(hidden)]
    pub fn trie_nodes(&self) -> usize {
        fn count(node: &Node) -> usize {
            let wild = node.wild.as_deref().map_or(0, |w| {
                w.star.as_ref().map_or(0, count)
                    + w.globstar.as_ref().map_or(0, count)
                    + w.globs.iter().map(|g| count(&g.node)).sum::<usize>()
            });
            1 + node.literals.nodes().map(count).sum::<usize>() + wild
        }
        count(&self.root)
    }

    /// The number of routes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the router has no routes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A counter bumped by every [`Router::add`] and [`Router::remove`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The maximum number of signal types kept in the cache (0: disabled).
    pub fn cache_capacity(&self) -> usize {
        self.cache_capacity
    }

    /// All routes with their ids, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (RouteId, &T)> {
        self.slots.iter().enumerate().filter_map(|(slot, e)| {
            e.as_ref().map(|e| {
                (
                    RouteId {
                        seq: e.seq,
                        slot: slot as u32,
                    },
                    &e.value,
                )
            })
        })
    }
}

fn check_priority(priority: i32) -> Result<(), RouteError> {
    if (MIN_PRIORITY..=MAX_PRIORITY).contains(&priority) {
        Ok(())
    } else {
        Err(RouteError::Priority { value: priority })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(r: &Router<&'static str>, ty: &str) -> Vec<&'static str> {
        let cached: Vec<&str> = r.route(ty).into_iter().copied().collect();
        let uncached: Vec<&str> = r.route_uncached(ty).into_iter().copied().collect();
        assert_eq!(cached, uncached, "cached vs uncached for {ty}");
        cached
    }

    #[test]
    fn router_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Router<String>>();
        check::<RouteId>();
        check::<RouteError>();
    }

    #[test]
    fn basic_matching() {
        let mut r = Router::new();
        r.add("a.**.e", 0, "a**e").unwrap();
        r.add("audit.**", 0, "audit").unwrap();
        r.add("user.*", 0, "user*").unwrap();
        r.add("user.create*", 0, "create*").unwrap();
        r.add("user.{created,updated}", 0, "cu").unwrap();
        r.add("api.v[0-9]", 0, "v").unwrap();
        assert_eq!(routed(&r, "a.e"), ["a**e"]);
        assert_eq!(routed(&r, "a.b.c.e"), ["a**e"]);
        assert!(routed(&r, "a.b").is_empty());
        assert_eq!(routed(&r, "audit"), ["audit"]);
        assert_eq!(routed(&r, "audit.x.y"), ["audit"]);
        assert_eq!(routed(&r, "user.created"), ["user*", "create*", "cu"]);
        assert_eq!(routed(&r, "user.updated"), ["user*", "cu"]);
        assert!(routed(&r, "user.a.b").is_empty());
        assert_eq!(routed(&r, "api.v7"), ["v"]);
        assert!(routed(&r, "api.v77").is_empty());
    }

    #[test]
    fn globstar_matches_everything_once() {
        let mut r = Router::new();
        r.add("**", 0, "all").unwrap();
        r.add("**.a.**", 0, "has-a").unwrap();
        for ty in ["a", "a.a.a", "b.c", "a.b.a.b.a"] {
            let got = routed(&r, ty);
            assert_eq!(got.iter().filter(|v| **v == "all").count(), 1, "{ty}");
            assert!(got.iter().filter(|v| **v == "has-a").count() <= 1, "{ty}");
        }
        assert_eq!(routed(&r, "a.a.a"), ["has-a", "all"]);
        assert_eq!(routed(&r, "b.c"), ["all"]);
    }

    #[test]
    fn invalid_types_match_nothing() {
        let mut r = Router::new();
        r.add("**", 0, "all").unwrap();
        for ty in ["", "a..b", ".a", "a.", "a b", "a\tb", "a\u{0}"] {
            assert!(r.route(ty).is_empty(), "{ty:?}");
            assert!(r.route_uncached(ty).is_empty(), "{ty:?}");
            assert!(r.route_ids(ty).is_empty(), "{ty:?}");
        }
    }

    #[test]
    fn ordering_specificity_then_priority_then_registration() {
        let mut r = Router::new();
        r.add("**", 100, "globstar").unwrap();
        r.add("user.*", 0, "star-first").unwrap();
        r.add("user.created", -5, "literal").unwrap();
        r.add("user.*", 0, "star-second").unwrap();
        r.add("user.*", 7, "star-prio").unwrap();
        r.add("user.**", 0, "user-globstar").unwrap();
        assert_eq!(
            routed(&r, "user.created"),
            [
                "literal",
                "star-prio",
                "star-first",
                "star-second",
                "user-globstar",
                "globstar"
            ]
        );
    }

    #[test]
    fn priority_range() {
        let mut r = Router::new();
        let err = r.add("a", 150, "x").unwrap_err();
        assert_eq!(err, RouteError::Priority { value: 150 });
        assert_eq!(err.to_string(), "priority 150 is out of range -100..=100");
        assert_eq!(
            r.add("a", -101, "x").unwrap_err().to_string(),
            "priority -101 is out of range -100..=100"
        );
        assert!(r.add("a", 100, "x").is_ok());
        assert!(r.add("a", -100, "x").is_ok());
        let err = r.add("a..b", 0, "x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "pattern `a..b` has an empty segment at position 1"
        );
        assert!(matches!(err, RouteError::Pattern(_)));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn remove_then_route_and_prune() {
        let mut r = Router::new();
        let a = r.add("a.b.c", 0, "abc").unwrap();
        let s = r.add("a.*.c", 0, "a*c").unwrap();
        let g = r.add("a.**", 0, "a**").unwrap();
        let x = r.add("a.{b,x}.c", 0, "glob").unwrap();
        assert_eq!(routed(&r, "a.b.c"), ["abc", "a*c", "glob", "a**"]);
        assert_eq!(r.remove(s), Some("a*c"));
        assert_eq!(r.remove(s), None);
        assert_eq!(routed(&r, "a.b.c"), ["abc", "glob", "a**"]);
        assert_eq!(r.remove(a), Some("abc"));
        assert_eq!(r.remove(x), Some("glob"));
        assert_eq!(routed(&r, "a.b.c"), ["a**"]);
        assert_eq!(r.remove(g), Some("a**"));
        assert!(routed(&r, "a.b.c").is_empty());
        assert!(r.is_empty());
        assert!(r.root.is_empty(), "trie not pruned: {:?}", r.root);
    }

    #[test]
    fn route_ids_are_not_reused() {
        let mut r = Router::new();
        let a = r.add("a", 0, "first").unwrap();
        r.remove(a);
        let b = r.add("a", 0, "second").unwrap();
        assert_ne!(a, b);
        assert!(b > a);
        assert_eq!(r.get(a), None);
        assert_eq!(r.pattern(a), None);
        assert_eq!(r.remove(a), None);
        assert_eq!(r.get(b), Some(&"second"));
        assert_eq!(r.pattern(b).map(Pattern::as_str), Some("a"));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn get_mut_and_iter() {
        let mut r = Router::new();
        let a = r.add("a", 0, 1).unwrap();
        let b = r.add("b", 3, 2).unwrap();
        *r.get_mut(a).unwrap() = 10;
        assert_eq!(r.route("a"), [&10]);
        assert_eq!(r.priority(b), Some(3));
        let mut all: Vec<_> = r.iter().collect();
        all.sort();
        assert_eq!(all, [(a, &10), (b, &2)]);
        let dbg = format!("{r:?}");
        assert!(dbg.contains("priority 3 => 2"), "{dbg}");
    }

    #[test]
    fn cache_is_invalidated_by_add_and_remove() {
        let mut r = Router::new();
        r.add("user.*", 0, "star").unwrap();
        assert_eq!(r.route("user.created"), [&"star"]);
        let gen = r.generation();
        let lit = r.add("user.created", 0, "literal").unwrap();
        assert!(r.generation() > gen);
        assert_eq!(r.route("user.created"), [&"literal", &"star"]);
        r.remove(lit);
        assert_eq!(r.route("user.created"), [&"star"]);
        let ids = r.route_ids("user.created");
        assert!(Arc::ptr_eq(&ids, &r.route_ids("user.created")));
    }

    #[test]
    fn cache_is_bounded() {
        let mut r = Router::with_cache_capacity(8);
        r.add("**", 0, "all").unwrap();
        for i in 0..100 {
            assert_eq!(r.route(&format!("t{i}")), [&"all"]);
            assert!(r.cache.read().unwrap().len() <= 8);
        }
        let r0: Router<&str> = Router::with_cache_capacity(0);
        assert!(r0.route("a").is_empty());
        assert!(r0.cache.read().unwrap().is_empty());
    }

    #[test]
    fn concurrent_lookups_share_the_cache() {
        let mut r = Router::with_cache_capacity(16);
        r.add("svc.*.created", 0, 1).unwrap();
        r.add("svc.**", 0, 2).unwrap();
        let r = &r;
        std::thread::scope(|s| {
            for t in 0..4 {
                s.spawn(move || {
                    for i in 0..500 {
                        let ty = format!("svc.e{}.created", (i * 7 + t) % 40);
                        assert_eq!(r.route(&ty), [&1, &2]);
                    }
                });
            }
        });
        assert!(r.cache.read().unwrap().len() <= 16);
    }

    #[test]
    fn pathological_globstars_stay_fast() {
        let mut r = Router::new();
        r.add("**.a.**.a.**.a", 0, "three").unwrap();
        r.add("**.a.**.a.**.a.**.b", 0, "never").unwrap();
        r.add("**.a.**.a.**.a.**.a.**.a.**.a", 0, "six").unwrap();
        let ty = vec!["a"; 50].join(".");
        let start = std::time::Instant::now();
        assert_eq!(r.route_uncached(&ty), [&"six", &"three"]);
        assert!(start.elapsed() < std::time::Duration::from_millis(200));
    }

    #[test]
    fn long_types_are_routed() {
        let mut r = Router::new();
        r.add("s0.**.s19", 0, "ends").unwrap();
        r.add("s0.*.s2.**", 0, "prefix").unwrap();
        r.add("**", 0, "all").unwrap();
        let ty: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
        let ty = ty.join(".");
        assert_eq!(routed(&r, &ty), ["prefix", "ends", "all"]);
        assert_eq!(routed(&r, &format!("{ty}.x")), ["prefix", "all"]);
    }

    #[test]
    fn literal_children_move_between_vector_and_map_without_losing_routes() {
        fn hits(r: &Router<usize>, ty: &str) -> Vec<usize> {
            r.route(ty).into_iter().copied().collect()
        }
        let mut r = Router::with_cache_capacity(0);
        let ids: Vec<_> = (0..40)
            .map(|i| r.add(&format!("svc.e{i}.created"), 0, i).unwrap())
            .collect();
        r.add("svc.*.created", 0, 100).unwrap();
        let nodes = r.trie_nodes();
        for i in 0..40 {
            assert_eq!(hits(&r, &format!("svc.e{i}.created")), [i, 100]);
        }
        // Remove from both ends, crossing the map -> vector threshold.
        for (n, id) in ids.iter().enumerate().filter(|(n, _)| n % 3 != 0) {
            assert_eq!(r.remove(*id), Some(n));
        }
        for i in 0..40 {
            let want: Vec<usize> = if i % 3 == 0 { vec![i, 100] } else { vec![100] };
            assert_eq!(hits(&r, &format!("svc.e{i}.created")), want);
        }
        for (n, id) in ids.iter().enumerate().filter(|(n, _)| n % 3 == 0) {
            assert_eq!(r.remove(*id), Some(n));
        }
        assert_eq!(hits(&r, "svc.e0.created"), [100]);
        assert!(r.trie_nodes() < nodes);
        assert_eq!(r.trie_nodes(), 4, "root, svc, *, created");
    }

    #[test]
    fn node_stays_64_bytes() {
        assert_eq!(std::mem::size_of::<Node>(), 64);
    }

    #[test]
    fn literal_tags_find_exactly_the_equal_segment() {
        let mut lits = Literals::default();
        for seg in ["a", "ab", "abcd", "abcde", "abcdf", "b", "x-_9", "abce"] {
            lits.get_or_insert(seg).min_rest = seg.len() as u16;
        }
        for seg in ["a", "ab", "abcd", "abcde", "abcdf", "b", "x-_9", "abce"] {
            let got = lits.get(seg).map(|n| n.min_rest);
            assert_eq!(got, Some(seg.len() as u16), "{seg}");
        }
        for seg in ["abc", "abcdg", "abcdef", "c", "A", "x-_"] {
            assert!(lits.get(seg).is_none(), "{seg}");
        }
    }

    #[test]
    fn radix_sort_of_hits_matches_a_comparison_sort() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for n in [RADIX_SORT_MIN - 1, RADIX_SORT_MIN, 1_000, 20_000] {
            // Keys differing in every byte (wide sequence numbers), in few bytes (the usual
            // case), and with duplicates; slots tell equal keys apart to check stability.
            for spread in [u64::MAX, 0xFFFF, 0x3] {
                let mut hits: Vec<Hit> = (0..n)
                    .map(|i| {
                        let r = next();
                        Hit {
                            key: sort_key(
                                (r % 41) as i64 * 1000 - 20_000,
                                (r >> 8) as i32 % 201 - 100,
                                next() & spread,
                            ),
                            slot: i as u32,
                        }
                    })
                    .collect();
                let mut want = hits.clone();
                want.sort_by_key(|h| h.key);
                sort_hits(&mut hits);
                let got: Vec<(SortKey, u32)> = hits.iter().map(|h| (h.key, h.slot)).collect();
                let want: Vec<(SortKey, u32)> = want.iter().map(|h| (h.key, h.slot)).collect();
                if n >= RADIX_SORT_MIN {
                    assert_eq!(got, want, "n {n}, spread {spread:#x}");
                } else {
                    let keys = |v: &[(SortKey, u32)]| v.iter().map(|h| h.0).collect::<Vec<_>>();
                    assert_eq!(keys(&got), keys(&want), "n {n}, spread {spread:#x}");
                }
            }
        }
    }

    #[test]
    fn sort_key_orders() {
        assert!(sort_key(10, 0, 5) < sort_key(9, 100, 0));
        assert!(sort_key(-10, 0, 5) > sort_key(9, -100, 0));
        assert!(sort_key(10, 5, 5) < sort_key(10, 4, 0));
        assert!(sort_key(10, -100, 1) < sort_key(10, -100, 2));
        assert_eq!(
            Hit {
                key: sort_key(3, 4, 77),
                slot: 2
            }
            .id()
            .seq,
            77
        );
    }
}
