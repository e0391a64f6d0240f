//! The egress guard: webhooks refuse the special-purpose addresses of the IANA IPv4 and IPv6
//! registries (private, loopback, link-local, shared, documentation, benchmarking, reserved,
//! multicast, ...) and IPv6 forms that embed or tunnel to an IPv4 address, checked on literal
//! IPs at subscribe and on every DNS answer at connect time (so a name cannot be re-pointed
//! at an internal address between check and use).
//!
//! [`SPECIAL_RANGES`] is the one table of refused ranges; each entry names its registry
//! entry and RFC, and says how IPv6 forms embedding an IPv4 address are judged:
//!
//! - **checked through**: IPv4-mapped (`::ffff:a.b.c.d`) and the NAT64 well-known prefix
//!   (`64:ff9b::a.b.c.d`) are what a dual-stack socket or a DNS64/NAT64 network uses to reach
//!   an IPv4 host, so they are refused exactly when the embedded IPv4 address is (RFC 6052
//!   forbids non-global IPv4 under the well-known prefix anyway);
//! - **refused whole**: 6to4 (`2002:AABB:CCDD::/48`), Teredo (`2001::/32`, client address =
//!   last 32 bits XOR `0xffffffff`), the local-use NAT64 prefix (`64:ff9b:1::/48`),
//!   IPv4-translated (`::ffff:0:a.b.c.d`) and IPv4-compatible (`::a.b.c.d`) addresses are
//!   refused whatever IPv4 address they embed: they are deprecated, obsolete or tunnelled
//!   through relays and translators that the guard cannot see (the router at a 6to4 or
//!   Teredo endpoint decapsulates into its own network; a local-use NAT64 prefix translates
//!   into the operator's network with an operator-chosen layout). The embedded address is
//!   still decoded and named in the error.
//!
//! **Proxies**: the guarded client ignores the proxy environment variables (`HTTP_PROXY`,
//! `HTTPS_PROXY`, `ALL_PROXY` and their lowercase forms). Through a proxy, the proxy resolves
//! the destination name and the guard's resolver never runs, so a name pointing at an
//! internal address would be reached by the proxy on the webhook's behalf. A webhook with
//! `allow_private_networks(true)` has no guard and keeps the environment's proxies.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::LazyLock,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// How the addresses of a special-purpose range are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// Every address in the range is refused.
    Refuse,
    /// Every address in the range is refused; the IPv4 address it embeds is decoded and named.
    RefuseEmbedding(Embedding),
    /// Refused exactly when the embedded IPv4 address is refused by the IPv4 rules.
    CheckEmbedded(Embedding),
}

/// Where an IPv6 form carries an IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Embedding {
    /// The last 32 bits (IPv4-mapped, IPv4-translated, IPv4-compatible, NAT64 /96).
    Last32,
    /// Bits 16 to 47 (6to4, `2002:AABB:CCDD::/48`).
    SixToFour,
    /// The last 32 bits, inverted (the Teredo client's public address).
    Teredo,
}

impl Embedding {
    fn decode(self, v6: u128) -> Ipv4Addr {
        // Truncations keep exactly the 32 bits wanted.
        #[allow(clippy::cast_possible_truncation)]
        let bits = match self {
            Embedding::Last32 => v6 as u32,
            Embedding::SixToFour => (v6 >> 80) as u32,
            Embedding::Teredo => !(v6 as u32),
        };
        Ipv4Addr::from(bits)
    }
}

/// One entry of the IANA special-purpose address registries (or of the IPv4/IPv6 address
/// space registries for multicast, site-local and the old IPv4 forms).
#[derive(Debug)]
pub(crate) struct SpecialRange {
    /// The range in CIDR notation.
    pub(crate) cidr: &'static str,
    /// The registry's name for it.
    pub(crate) name: &'static str,
    /// The defining RFC.
    pub(crate) rfc: &'static str,
    /// The kind of address, as in "a {kind} address".
    pub(crate) kind: &'static str,
    /// Why a webhook must not go there.
    pub(crate) why: &'static str,
    pub(crate) rule: Rule,
}

const fn refuse(
    cidr: &'static str,
    name: &'static str,
    rfc: &'static str,
    kind: &'static str,
    why: &'static str,
) -> SpecialRange {
    SpecialRange {
        cidr,
        name,
        rfc,
        kind,
        why,
        rule: Rule::Refuse,
    }
}

const INTERNAL: &str = "internal networks";
const NOT_ROUTED: &str = "never routed on the internet";

/// The refused ranges. The most specific matching entry applies (Teredo within the IETF
/// protocol assignments, `::1` within the IPv4-compatible block, ...).
#[rustfmt::skip]
pub(crate) static SPECIAL_RANGES: &[SpecialRange] = &[
    // IPv4 (RFC 6890 registry, plus multicast and the reserved class E).
    refuse("0.0.0.0/8", "This network", "RFC 791", "unspecified", "means this host or this network"),
    refuse("0.0.0.0/32", "This host on this network", "RFC 1122", "unspecified", "means this host"),
    refuse("10.0.0.0/8", "Private-Use", "RFC 1918", "private", INTERNAL),
    refuse("100.64.0.0/10", "Shared Address Space", "RFC 6598", "shared (carrier-grade NAT)", INTERNAL),
    refuse("127.0.0.0/8", "Loopback", "RFC 1122", "loopback", "reaches the sending host itself"),
    refuse("169.254.0.0/16", "Link Local", "RFC 3927", "link-local", "reaches the local link, cloud metadata endpoints included"),
    refuse("172.16.0.0/12", "Private-Use", "RFC 1918", "private", INTERNAL),
    refuse("192.0.0.0/24", "IETF Protocol Assignments", "RFC 6890", "IETF protocol assignment", "reserved for protocol functions (DS-Lite, NAT64 discovery, anycast services)"),
    refuse("192.0.2.0/24", "Documentation (TEST-NET-1)", "RFC 5737", "documentation", NOT_ROUTED),
    refuse("192.31.196.0/24", "AS112-v4", "RFC 7535", "AS112 anycast", "serves DNS sink queries, no webhook receiver"),
    refuse("192.52.193.0/24", "AMT", "RFC 7450", "AMT relay anycast", "serves multicast tunnelling, no webhook receiver"),
    refuse("192.88.99.0/24", "Deprecated (6to4 Relay Anycast)", "RFC 7526", "6to4 relay anycast", "deprecated relay anycast"),
    refuse("192.168.0.0/16", "Private-Use", "RFC 1918", "private", INTERNAL),
    refuse("192.175.48.0/24", "Direct Delegation AS112 Service", "RFC 7534", "AS112 anycast", "serves DNS sink queries, no webhook receiver"),
    refuse("198.18.0.0/15", "Benchmarking", "RFC 2544", "benchmarking", "reserved for benchmarking labs, never routed on the internet"),
    refuse("198.51.100.0/24", "Documentation (TEST-NET-2)", "RFC 5737", "documentation", NOT_ROUTED),
    refuse("203.0.113.0/24", "Documentation (TEST-NET-3)", "RFC 5737", "documentation", NOT_ROUTED),
    refuse("224.0.0.0/4", "Multicast", "RFC 5771", "multicast", "not a single host"),
    refuse("240.0.0.0/4", "Reserved", "RFC 1112", "reserved", NOT_ROUTED),
    refuse("255.255.255.255/32", "Limited Broadcast", "RFC 919", "limited broadcast", "reaches every host on the local network"),
    // IPv6 (RFC 6890 registry, plus multicast, site-local and the old IPv4 forms).
    refuse("::/128", "Unspecified Address", "RFC 4291", "unspecified", "means this host"),
    refuse("::1/128", "Loopback Address", "RFC 4291", "loopback", "reaches the sending host itself"),
    SpecialRange {
        cidr: "::/96",
        name: "IPv4-compatible Address (deprecated)",
        rfc: "RFC 4291",
        kind: "deprecated IPv4-compatible",
        why: "deprecated form, refused whatever IPv4 address it embeds",
        rule: Rule::RefuseEmbedding(Embedding::Last32),
    },
    SpecialRange {
        cidr: "::ffff:0:0/96",
        name: "IPv4-mapped Address",
        rfc: "RFC 4291",
        kind: "IPv4-mapped",
        why: "reaches the embedded IPv4 address",
        rule: Rule::CheckEmbedded(Embedding::Last32),
    },
    SpecialRange {
        cidr: "::ffff:0:0:0/96",
        name: "IPv4-translated Address",
        rfc: "RFC 2765",
        kind: "obsolete IPv4-translated",
        why: "obsolete SIIT form, refused whatever IPv4 address it embeds",
        rule: Rule::RefuseEmbedding(Embedding::Last32),
    },
    SpecialRange {
        cidr: "64:ff9b::/96",
        name: "IPv4-IPv6 Translat. (NAT64 well-known prefix)",
        rfc: "RFC 6052",
        kind: "NAT64",
        why: "a NAT64 translator reaches the embedded IPv4 address",
        rule: Rule::CheckEmbedded(Embedding::Last32),
    },
    SpecialRange {
        cidr: "64:ff9b:1::/48",
        name: "IPv4-IPv6 Translat. (local-use NAT64 prefix)",
        rfc: "RFC 8215",
        kind: "local-use NAT64",
        why: "translated into the operator's own network with an operator-chosen layout, \
              refused whatever IPv4 address it embeds",
        rule: Rule::RefuseEmbedding(Embedding::Last32),
    },
    refuse("100::/64", "Discard-Only Address Block", "RFC 6666", "discard-only", "traffic is dropped by design"),
    refuse("2001::/23", "IETF Protocol Assignments", "RFC 2928", "IETF protocol assignment", "reserved for protocol functions (anycast services, benchmarking, ORCHID)"),
    SpecialRange {
        cidr: "2001::/32",
        name: "TEREDO",
        rfc: "RFC 4380",
        kind: "Teredo",
        why: "tunnelled through relays to the embedded IPv4 client behind its NAT, \
              refused whatever IPv4 address it embeds",
        rule: Rule::RefuseEmbedding(Embedding::Teredo),
    },
    refuse("2001:db8::/32", "Documentation", "RFC 3849", "documentation", NOT_ROUTED),
    SpecialRange {
        cidr: "2002::/16",
        name: "6to4",
        rfc: "RFC 3056",
        kind: "6to4",
        why: "tunnelled through unmanaged relays to the router at the embedded IPv4 address, \
              which forwards into its own network; refused whatever IPv4 address it embeds",
        rule: Rule::RefuseEmbedding(Embedding::SixToFour),
    },
    refuse("3fff::/20", "Documentation", "RFC 9637", "documentation", NOT_ROUTED),
    refuse("5f00::/16", "Segment Routing (SRv6) SIDs", "RFC 9602", "segment-routing (SRv6 SID)", "routing-domain internal"),
    refuse("fc00::/7", "Unique-Local", "RFC 4193", "private (unique local)", INTERNAL),
    refuse("fe80::/10", "Link-Local Unicast", "RFC 4291", "link-local", "reaches the local link"),
    refuse("fec0::/10", "Site-Local (deprecated)", "RFC 3879", "deprecated site-local", INTERNAL),
    refuse("ff00::/8", "Multicast", "RFC 4291", "multicast", "not a single host"),
];

/// A parsed range: the network as bits, with the bit width of its family.
#[derive(Debug, Clone, Copy)]
struct Net {
    v6: bool,
    bits: u128,
    len: u8,
}

fn parse_cidr(cidr: &str) -> Net {
    let (addr, len) = cidr
        .split_once('/')
        .unwrap_or_else(|| panic!("`{cidr}` has no prefix length"));
    let len: u8 = len
        .parse()
        .unwrap_or_else(|_| panic!("`{cidr}`: bad prefix length"));
    match addr
        .parse::<IpAddr>()
        .unwrap_or_else(|_| panic!("`{cidr}`: bad address"))
    {
        IpAddr::V4(a) => {
            assert!(len <= 32, "`{cidr}`: prefix too long");
            Net {
                v6: false,
                bits: u128::from(u32::from(a)),
                len,
            }
        }
        IpAddr::V6(a) => {
            assert!(len <= 128, "`{cidr}`: prefix too long");
            Net {
                v6: true,
                bits: u128::from(a),
                len,
            }
        }
    }
}

impl Net {
    fn width(self) -> u32 {
        if self.v6 {
            128
        } else {
            32
        }
    }

    fn contains(self, v6: bool, bits: u128) -> bool {
        if self.v6 != v6 {
            return false;
        }
        let host_bits = self.width() - u32::from(self.len);
        let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
        let mask = if self.v6 {
            mask
        } else {
            mask & u128::from(u32::MAX)
        };
        bits & mask == self.bits & mask
    }
}

static PARSED: LazyLock<Vec<Net>> =
    LazyLock::new(|| SPECIAL_RANGES.iter().map(|r| parse_cidr(r.cidr)).collect());

fn family_bits(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

/// The most specific special-purpose range holding `ip`, if any.
pub(crate) fn special_range(ip: IpAddr) -> Option<&'static SpecialRange> {
    let (v6, bits) = family_bits(ip);
    PARSED
        .iter()
        .zip(SPECIAL_RANGES)
        .filter(|(net, _)| net.contains(v6, bits))
        .max_by_key(|(net, _)| net.len)
        .map(|(_, range)| range)
}

/// An IPv4 address carried inside an IPv6 one, and the range refusing it, if any.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Embedded {
    pub(crate) ip: Ipv4Addr,
    pub(crate) range: Option<&'static SpecialRange>,
}

/// Why an address is refused: the address, its range, and for IPv6 forms the IPv4 address
/// they embed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refusal {
    pub(crate) ip: IpAddr,
    pub(crate) range: &'static SpecialRange,
    pub(crate) embedded: Option<Embedded>,
}

impl Refusal {
    /// The kind of address, as in "a {kind} address": for a form checked through, the kind of
    /// the embedded IPv4 address (`::ffff:127.0.0.1` is a loopback address).
    #[cfg(test)]
    pub(crate) fn kind(&self) -> &'static str {
        match (self.range.rule, self.embedded) {
            (
                Rule::CheckEmbedded(_),
                Some(Embedded {
                    range: Some(inner), ..
                }),
            ) => inner.kind,
            _ => self.range.kind,
        }
    }
}

fn article(word: &str) -> &'static str {
    // "an IETF", "an IPv4-mapped", "an unspecified"; "a 6to4", "a loopback".
    match word.as_bytes().first() {
        Some(b'a' | b'e' | b'i' | b'o' | b'u' | b'A' | b'E' | b'I' | b'O' | b'U') => "an",
        _ => "a",
    }
}

fn describe(f: &mut fmt::Formatter<'_>, range: &SpecialRange) -> fmt::Result {
    write!(
        f,
        "{} {} address ({} {}, {}: {})",
        article(range.kind),
        range.kind,
        range.cidr,
        range.name,
        range.rfc,
        range.why
    )
}

/// "a loopback address (127.0.0.0/8 Loopback, RFC 1122: reaches the sending host itself)",
/// with the embedded IPv4 address of IPv6 forms.
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.range.rule, self.embedded) {
            (
                Rule::CheckEmbedded(_),
                Some(Embedded {
                    ip,
                    range: Some(inner),
                }),
            ) => {
                describe(f, self.range)?;
                write!(f, " embedding {ip}, ")?;
                describe(f, inner)
            }
            (_, Some(Embedded { ip, range })) => {
                describe(f, self.range)?;
                write!(f, "; it embeds {ip}")?;
                match range {
                    Some(inner) => write!(f, ", {} {} address", article(inner.kind), inner.kind),
                    None => Ok(()),
                }
            }
            (_, None) => describe(f, self.range),
        }
    }
}

/// Checks one address against the special-purpose ranges.
///
/// # Errors
/// The [`Refusal`] when the address (or the IPv4 address it embeds) is refused.
pub(crate) fn check(ip: IpAddr) -> Result<(), Refusal> {
    let Some(range) = special_range(ip) else {
        return Ok(());
    };
    let embedding = match range.rule {
        Rule::Refuse => None,
        Rule::RefuseEmbedding(e) | Rule::CheckEmbedded(e) => Some(e),
    };
    let embedded = match (ip, embedding) {
        (IpAddr::V6(v6), Some(e)) => {
            let v4 = e.decode(u128::from(v6));
            Some(Embedded {
                ip: v4,
                range: special_range(IpAddr::V4(v4)),
            })
        }
        _ => None,
    };
    if let (Rule::CheckEmbedded(_), Some(Embedded { range: None, .. })) = (range.rule, embedded) {
        // A public IPv4 address reached through a mapped or NAT64 form.
        return Ok(());
    }
    Err(Refusal {
        ip,
        range,
        embedded,
    })
}

/// The category of an address webhooks refuse (as in "a {category} address"), or `None` for
/// an address they accept.
#[cfg(test)]
pub(crate) fn refused_category(ip: IpAddr) -> Option<&'static str> {
    check(ip).err().map(|r| r.kind())
}

/// A host whose every address is refused.
#[derive(Debug)]
pub(crate) struct EgressRefused {
    pub(crate) host: String,
    /// The first refused address.
    pub(crate) refusal: Refusal,
    /// How many other addresses were refused with it.
    pub(crate) others: usize,
}

impl fmt::Display for EgressRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host `{}` resolves to {}, {}",
            self.host, self.refusal.ip, self.refusal
        )?;
        match self.others {
            0 => {}
            1 => f.write_str(" (and 1 other refused address)")?,
            n => write!(f, " (and {n} other refused addresses)")?,
        }
        f.write_str("; webhooks refuse these unless allow_private_networks(true)")
    }
}

impl std::error::Error for EgressRefused {}

/// Resolves with the system resolver, then drops refused addresses. The client using it
/// must not use a proxy (see the module docs), or this never runs for the destination.
#[derive(Debug, Default)]
pub(crate) struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if resolved.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("host `{host}` resolves to no address"),
                )
                .into());
            }
            let allowed = allowed_addrs(&host, &resolved)?;
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// The resolved addresses that are allowed, or why none is (an empty answer stays empty).
pub(crate) fn allowed_addrs(
    host: &str,
    resolved: &[SocketAddr],
) -> Result<Vec<SocketAddr>, EgressRefused> {
    let mut allowed = Vec::with_capacity(resolved.len());
    let mut refused = Vec::new();
    for addr in resolved {
        match check(addr.ip()) {
            Ok(()) => allowed.push(*addr),
            Err(r) => refused.push(r),
        }
    }
    match refused.first() {
        Some(first) if allowed.is_empty() => Err(EgressRefused {
            host: host.to_owned(),
            refusal: *first,
            others: refused.len() - 1,
        }),
        _ => Ok(allowed),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    fn range_of(s: &str) -> Option<&'static str> {
        check(s.parse().unwrap()).err().map(|r| r.range.cidr)
    }

    fn cat(s: &str) -> Option<&'static str> {
        refused_category(s.parse().unwrap())
    }

    #[test]
    fn the_table_parses_and_has_no_duplicates() {
        for (i, r) in SPECIAL_RANGES.iter().enumerate() {
            let net = parse_cidr(r.cidr);
            // The network address has no host bits.
            let host_bits = net.width() - u32::from(net.len);
            if host_bits < 128 {
                assert_eq!(net.bits & ((1u128 << host_bits) - 1), 0, "{}", r.cidr);
            }
            assert!(r.rfc.starts_with("RFC "), "{}", r.cidr);
            assert!(!r.name.is_empty() && !r.kind.is_empty() && !r.why.is_empty());
            for other in &SPECIAL_RANGES[i + 1..] {
                assert_ne!(r.cidr, other.cidr, "duplicate entry");
            }
        }
    }

    /// Every range: its first and last address are refused by it; the addresses just below
    /// and just above are not (they pass, or belong to another, named range).
    #[test]
    fn every_range_bounds_and_neighbours() {
        for (net, r) in PARSED.iter().zip(SPECIAL_RANGES) {
            let host_bits = net.width() - u32::from(net.len);
            let size_minus_one = if host_bits == 128 {
                u128::MAX
            } else {
                (1u128 << host_bits) - 1
            };
            let to_ip = |bits: u128| -> IpAddr {
                if net.v6 {
                    IpAddr::V6(Ipv6Addr::from(bits))
                } else {
                    IpAddr::V4(Ipv4Addr::from(u32::try_from(bits).unwrap()))
                }
            };
            let first = net.bits;
            let last = net.bits + size_minus_one;
            for bits in [first, last] {
                let ip = to_ip(bits);
                let got = special_range(ip).map(|s| s.cidr);
                // Nested entries (::1 in ::/96, Teredo in 2001::/23) own their addresses.
                let owner = got.unwrap_or_else(|| panic!("{ip} in {} not matched", r.cidr));
                let owner_net = parse_cidr(owner);
                assert!(owner_net.len >= net.len, "{ip}: {owner} beats {}", r.cidr);
            }
            let max = if net.v6 {
                u128::MAX
            } else {
                u128::from(u32::MAX)
            };
            let below = first.checked_sub(1);
            let above = if last < max { Some(last + 1) } else { None };
            for bits in [below, above].into_iter().flatten() {
                let ip = to_ip(bits);
                assert!(!net.contains(net.v6, bits), "{ip} is outside {}", r.cidr);
                // Whatever owns the neighbour (nothing, or an adjacent or enclosing range),
                // it is not this range.
                assert_ne!(
                    special_range(ip).map(|s| s.cidr),
                    Some(r.cidr),
                    "{ip} just outside {}",
                    r.cidr
                );
            }
        }
    }

    /// The table, by hand: addresses inside each range, and neighbours just outside.
    #[test]
    fn special_ranges_table_driven() {
        #[rustfmt::skip]
        let cases: &[(&str, Option<&str>)] = &[
            // 0.0.0.0/8
            ("0.0.0.0", Some("0.0.0.0/32")), ("0.1.2.3", Some("0.0.0.0/8")),
            ("0.255.255.255", Some("0.0.0.0/8")), ("1.0.0.0", None),
            // 10/8
            ("10.0.0.0", Some("10.0.0.0/8")), ("10.255.255.255", Some("10.0.0.0/8")),
            ("9.255.255.255", None), ("11.0.0.0", None),
            // 100.64/10
            ("100.64.0.1", Some("100.64.0.0/10")), ("100.127.255.255", Some("100.64.0.0/10")),
            ("100.63.255.255", None), ("100.128.0.0", None),
            // 127/8
            ("127.0.0.1", Some("127.0.0.0/8")), ("127.255.0.9", Some("127.0.0.0/8")),
            ("126.255.255.255", None), ("128.0.0.0", None),
            // 169.254/16
            ("169.254.169.254", Some("169.254.0.0/16")), ("169.253.255.255", None), ("169.255.0.0", None),
            // 172.16/12
            ("172.16.0.1", Some("172.16.0.0/12")), ("172.31.255.255", Some("172.16.0.0/12")),
            ("172.15.255.255", None), ("172.32.0.0", None),
            // 192.0.0.0/24
            ("192.0.0.0", Some("192.0.0.0/24")), ("192.0.0.170", Some("192.0.0.0/24")),
            ("192.0.0.255", Some("192.0.0.0/24")), ("191.255.255.255", None), ("192.0.1.0", None),
            // 192.0.2.0/24
            ("192.0.2.1", Some("192.0.2.0/24")), ("192.0.1.255", None), ("192.0.3.0", None),
            // 192.31.196.0/24
            ("192.31.196.1", Some("192.31.196.0/24")), ("192.31.195.255", None), ("192.31.197.0", None),
            // 192.52.193.0/24
            ("192.52.193.1", Some("192.52.193.0/24")), ("192.52.192.255", None), ("192.52.194.0", None),
            // 192.88.99.0/24
            ("192.88.99.1", Some("192.88.99.0/24")), ("192.88.98.255", None), ("192.88.100.0", None),
            // 192.168/16
            ("192.168.1.1", Some("192.168.0.0/16")), ("192.167.255.255", None), ("192.169.0.0", None),
            // 192.175.48.0/24
            ("192.175.48.6", Some("192.175.48.0/24")), ("192.175.47.255", None), ("192.175.49.0", None),
            // 198.18/15
            ("198.18.0.0", Some("198.18.0.0/15")), ("198.19.255.255", Some("198.18.0.0/15")),
            ("198.17.255.255", None), ("198.20.0.0", None),
            // 198.51.100/24
            ("198.51.100.7", Some("198.51.100.0/24")), ("198.51.99.255", None), ("198.51.101.0", None),
            // 203.0.113/24
            ("203.0.113.9", Some("203.0.113.0/24")), ("203.0.112.255", None), ("203.0.114.0", None),
            // 224/4
            ("224.0.0.1", Some("224.0.0.0/4")), ("239.255.255.255", Some("224.0.0.0/4")),
            ("223.255.255.255", None),
            // 240/4 and 255.255.255.255
            ("240.0.0.0", Some("240.0.0.0/4")), ("255.255.255.254", Some("240.0.0.0/4")),
            ("255.255.255.255", Some("255.255.255.255/32")),
            // ::/128, ::1/128, ::/96 (IPv4-compatible, refused whole)
            ("::", Some("::/128")), ("::1", Some("::1/128")), ("::2", Some("::/96")),
            ("::10.0.0.1", Some("::/96")), ("::8.8.8.8", Some("::/96")),
            ("::1:0:0", None),
            // ::ffff:0:0/96 (IPv4-mapped, checked through)
            ("::ffff:127.0.0.1", Some("::ffff:0:0/96")), ("::ffff:10.0.0.1", Some("::ffff:0:0/96")),
            ("::ffff:198.18.0.1", Some("::ffff:0:0/96")), ("::ffff:8.8.8.8", None),
            ("::fffe:ffff:ffff", None), ("::1:0:0:0", None),
            // ::ffff:0:0:0/96 (IPv4-translated, refused whole)
            ("::ffff:0:7f00:1", Some("::ffff:0:0:0/96")), ("::ffff:0:808:808", Some("::ffff:0:0:0/96")),
            ("::fffe:ffff:ffff:ffff", None), ("::ffff:1:0:0", None),
            // 64:ff9b::/96 (NAT64, checked through)
            ("64:ff9b::7f00:1", Some("64:ff9b::/96")), ("64:ff9b::10.1.2.3", Some("64:ff9b::/96")),
            ("64:ff9b::192.0.2.1", Some("64:ff9b::/96")), ("64:ff9b::808:808", None),
            ("64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff", None), ("64:ff9b::1:0:0", None),
            // 64:ff9b:1::/48 (local-use NAT64, refused whole)
            ("64:ff9b:1::a00:1", Some("64:ff9b:1::/48")), ("64:ff9b:1::808:808", Some("64:ff9b:1::/48")),
            ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", Some("64:ff9b:1::/48")),
            ("64:ff9b:0:ffff:ffff:ffff:ffff:ffff", None), ("64:ff9b:2::", None),
            // 100::/64
            ("100::1", Some("100::/64")), ("100::ffff:ffff:ffff:ffff", Some("100::/64")),
            ("ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None), ("100:0:0:1::", None),
            // 2001::/23 and Teredo 2001::/32
            ("2001:1::1", Some("2001::/23")), ("2001:2::1", Some("2001::/23")),
            ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", Some("2001::/23")),
            ("2001::1", Some("2001::/32")), ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Some("2001::/32")),
            ("2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None), ("2001:200::", None),
            // 2001:db8::/32
            ("2001:db8::1", Some("2001:db8::/32")), ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("2001:db9::", None),
            // 2002::/16 (6to4, refused whole)
            ("2002:a00:1::1", Some("2002::/16")), ("2002:808:808::1", Some("2002::/16")),
            ("2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None), ("2003::", None),
            // 3fff::/20
            ("3fff::1", Some("3fff::/20")), ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", Some("3fff::/20")),
            ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None), ("3fff:1000::", None),
            // 5f00::/16
            ("5f00::1", Some("5f00::/16")), ("5eff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None), ("5f01::", None),
            // fc00::/7
            ("fc00::1", Some("fc00::/7")), ("fd12:3456::1", Some("fc00::/7")),
            ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None), ("fe00::", None),
            // fe80::/10 and fec0::/10
            ("fe80::1", Some("fe80::/10")), ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("fe80::/10")),
            ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("fec0::1", Some("fec0::/10")), ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("fec0::/10")),
            // ff00::/8
            ("ff02::1", Some("ff00::/8")), ("ff00::", Some("ff00::/8")),
            // public addresses
            ("1.1.1.1", None), ("93.184.216.34", None), ("2606:4700:4700::1111", None),
            ("2a00:1450:4001:81c::200e", None),
        ];
        for (ip, expected) in cases {
            assert_eq!(range_of(ip), *expected, "{ip}");
        }
    }

    #[test]
    fn categories() {
        for (ip, expected) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("255.255.255.255", "limited broadcast"),
            ("224.0.0.1", "multicast"),
            ("198.18.0.1", "benchmarking"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("::10.0.0.1", "deprecated IPv4-compatible"),
            ("2002:7f00:1::", "6to4"),
            ("2001::1", "Teredo"),
            ("fec0::1", "deprecated site-local"),
            ("ff02::1", "multicast"),
        ] {
            assert_eq!(cat(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn embedded_ipv4_is_decoded() {
        let embedded = |s: &str| check(s.parse().unwrap()).unwrap_err().embedded.unwrap().ip;
        assert_eq!(embedded("2002:c0a8:101::1"), Ipv4Addr::new(192, 168, 1, 1));
        assert_eq!(embedded("2002:808:808:1::1"), Ipv4Addr::new(8, 8, 8, 8));
        // RFC 4380's example: client 192.0.2.45, obfuscated as 3fff:fdd2.
        assert_eq!(
            embedded("2001:0:4136:e378:8000:63bf:3fff:fdd2"),
            Ipv4Addr::new(192, 0, 2, 45)
        );
        assert_eq!(embedded("2001::7f00:1"), Ipv4Addr::new(128, 255, 255, 254));
        assert_eq!(embedded("64:ff9b::a00:1"), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(embedded("64:ff9b:1::a00:1"), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(embedded("::ffff:0:a00:1"), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(embedded("::ffff:a00:1"), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(embedded("::a00:1"), Ipv4Addr::new(10, 0, 0, 1));
    }

    #[test]
    fn messages_name_the_address_the_range_and_why() {
        let msg = |s: &str| check(s.parse().unwrap()).unwrap_err().to_string();
        assert_eq!(
            msg("198.18.0.1"),
            "a benchmarking address (198.18.0.0/15 Benchmarking, RFC 2544: reserved for \
             benchmarking labs, never routed on the internet)"
        );
        assert_eq!(
            msg("64:ff9b::a00:1"),
            "a NAT64 address (64:ff9b::/96 IPv4-IPv6 Translat. (NAT64 well-known prefix), \
             RFC 6052: a NAT64 translator reaches the embedded IPv4 address) embedding \
             10.0.0.1, a private address (10.0.0.0/8 Private-Use, RFC 1918: internal networks)"
        );
        let m = msg("2002:7f00:1::1");
        assert!(
            m.starts_with("a 6to4 address (2002::/16 6to4, RFC 3056: "),
            "{m}"
        );
        assert!(
            m.ends_with("; it embeds 127.0.0.1, a loopback address"),
            "{m}"
        );
        assert!(msg("2002:808:808::1").ends_with("; it embeds 8.8.8.8"));
        assert!(msg("::a00:1").starts_with("a deprecated IPv4-compatible address (::/96 "));
        assert!(msg("::ffff:0:7f00:1").starts_with("an obsolete IPv4-translated address"));
        assert!(msg("::").starts_with("an unspecified address (::/128 "));
    }

    #[test]
    fn resolved_refused_addresses_are_dropped() {
        let a: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let b: SocketAddr = "93.184.216.34:0".parse().unwrap();
        let c: SocketAddr = "[64:ff9b::c612:1]:0".parse().unwrap();
        assert_eq!(allowed_addrs("x", &[a, b, c]).unwrap(), vec![b]);
        assert_eq!(allowed_addrs("x", &[]).unwrap(), vec![]);
        let e = allowed_addrs("localhost", &[a]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "host `localhost` resolves to 127.0.0.1, a loopback address (127.0.0.0/8 Loopback, \
             RFC 1122: reaches the sending host itself); webhooks refuse these unless \
             allow_private_networks(true)"
        );
        let e = allowed_addrs("h", &[c, a]).unwrap_err().to_string();
        assert!(
            e.starts_with("host `h` resolves to 64:ff9b::c612:1, a NAT64 address"),
            "{e}"
        );
        assert!(
            e.contains("embedding 198.18.0.1, a benchmarking address"),
            "{e}"
        );
        assert!(e.contains("(and 1 other refused address)"), "{e}");
    }

    #[tokio::test]
    async fn the_resolver_refuses_localhost() {
        let name: Name = "localhost".parse().unwrap();
        let Err(e) = GuardedResolver.resolve(name).await else {
            panic!("localhost must be refused");
        };
        let refused = e.downcast_ref::<EgressRefused>().expect("an EgressRefused");
        assert!(matches!(refused.refusal.kind(), "loopback"), "{refused}");
    }
}
