//! The egress guard: webhooks refuse private, loopback, link-local and unspecified
//! addresses, checked on literal IPs at subscribe and on every DNS answer at connect time
//! (so a name cannot be re-pointed at an internal address between check and use).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The category of an address webhooks refuse, or `None` for a public address.
pub(crate) fn refused_category(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_category(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_category(v4);
            }
            let seg = v6.segments();
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_loopback() {
                Some("loopback")
            } else if seg[0] & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if seg[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if seg[0..6] == [0, 0, 0, 0, 0, 0] {
                // IPv4-compatible (deprecated) addresses embed an IPv4 address.
                v4_category(Ipv4Addr::from(
                    (u32::from(seg[6]) << 16) | u32::from(seg[7]),
                ))
            } else {
                None
            }
        }
    }
}

fn v4_category(v4: Ipv4Addr) -> Option<&'static str> {
    let o = v4.octets();
    if v4.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if v4.is_loopback() {
        Some("loopback")
    } else if v4.is_private() {
        Some("private")
    } else if v4.is_link_local() {
        Some("link-local")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("shared (carrier-grade NAT)")
    } else if v4.is_broadcast() || v4.is_multicast() || o[0] >= 240 {
        Some("broadcast, multicast or reserved")
    } else {
        None
    }
}

/// A host whose every address is refused.
#[derive(Debug)]
pub(crate) struct EgressRefused {
    pub(crate) host: String,
    pub(crate) ip: IpAddr,
    pub(crate) category: &'static str,
}

impl fmt::Display for EgressRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host `{}` resolves to {}, a {} address; webhooks refuse these unless \
             allow_private_networks(true)",
            self.host, self.ip, self.category
        )
    }
}

impl std::error::Error for EgressRefused {}

/// Resolves with the system resolver, then drops refused addresses.
#[derive(Debug, Default)]
pub(crate) struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = allowed_addrs(&host, &resolved)?;
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// The resolved addresses that are allowed, or why none is.
pub(crate) fn allowed_addrs(
    host: &str,
    resolved: &[SocketAddr],
) -> Result<Vec<SocketAddr>, EgressRefused> {
    let allowed: Vec<SocketAddr> = resolved
        .iter()
        .filter(|a| refused_category(a.ip()).is_none())
        .copied()
        .collect();
    if allowed.is_empty() {
        let ip = resolved
            .first()
            .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), SocketAddr::ip);
        return Err(EgressRefused {
            host: host.to_owned(),
            ip,
            category: refused_category(ip).unwrap_or("unresolvable"),
        });
    }
    Ok(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(s: &str) -> Option<&'static str> {
        refused_category(s.parse().unwrap())
    }

    #[test]
    fn refused_ranges() {
        for (ip, expected) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("255.255.255.255", "broadcast, multicast or reserved"),
            ("224.0.0.1", "broadcast, multicast or reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::10.0.0.1", "private"),
            ("ff02::1", "multicast"),
        ] {
            assert_eq!(cat(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(cat(ip), None, "{ip}");
        }
    }

    #[test]
    fn resolved_private_addresses_are_dropped() {
        let a: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let b: SocketAddr = "93.184.216.34:0".parse().unwrap();
        assert_eq!(allowed_addrs("x", &[a, b]).unwrap(), vec![b]);
        let e = allowed_addrs("localhost", &[a]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "host `localhost` resolves to 127.0.0.1, a loopback address; webhooks refuse \
             these unless allow_private_networks(true)"
        );
    }
}
