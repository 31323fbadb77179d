//! Who sent a webhook: the socket's peer address, or, when the peer is one of our own
//! trusted proxies, the address the proxies appended to `X-Forwarded-For`.
//!
//! The header is read from the right: each trusted proxy appends the address it saw, so
//! the rightmost address that is not a trusted proxy is the one a proxy of ours vouches
//! for. Everything left of it was written by the client and proves nothing, so the
//! leftmost address is never used.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The source rules: Bootpay's range, and our proxies.
#[derive(Debug, Clone)]
pub struct SourceRules {
    pub allowed: Vec<IpNet>,
    pub trusted_proxies: Vec<IpNet>,
}

/// Why a request is not taken as Bootpay's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The sender is outside the allowed ranges.
    NotAllowed,
    /// A trusted proxy sent it without a usable `X-Forwarded-For`.
    NoForwardedFor,
}

impl SourceRules {
    /// The sender of a request that came from `peer`, if it may send webhooks.
    ///
    /// # Errors
    /// A [`Refusal`] saying why not.
    pub fn sender(&self, peer: IpAddr, headers: &HeaderMap) -> Result<IpAddr, Refusal> {
        let peer = canonical(peer);
        let sender = if contains(&self.trusted_proxies, peer) {
            self.forwarded_sender(headers)?
        } else {
            peer
        };
        if contains(&self.allowed, sender) {
            Ok(sender)
        } else {
            Err(Refusal::NotAllowed)
        }
    }

    fn forwarded_sender(&self, headers: &HeaderMap) -> Result<IpAddr, Refusal> {
        // Several headers are one list, in order.
        let mut hops = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let text = value.to_str().map_err(|_| Refusal::NoForwardedFor)?;
            hops.extend(text.split(',').map(str::trim));
        }
        for hop in hops.iter().rev() {
            let address = parse_hop(hop).ok_or(Refusal::NoForwardedFor)?;
            if !contains(&self.trusted_proxies, address) {
                return Ok(address);
            }
        }
        Err(Refusal::NoForwardedFor)
    }
}

/// An `X-Forwarded-For` entry: an address, an IPv6 address in brackets, either with a
/// port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(address) = hop.parse::<IpAddr>() {
        return Some(canonical(address));
    }
    if let Ok(socket) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical(socket.ip()));
    }
    hop.strip_prefix('[')?
        .strip_suffix(']')?
        .parse()
        .ok()
        .map(canonical)
}

/// An IPv4 address a dual-stack socket reports as `::ffff:a.b.c.d` is that IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn contains(nets: &[IpNet], address: IpAddr) -> bool {
    nets.iter().any(|net| net.contains(&address))
}

/// Parses a comma-separated list of CIDRs (a bare address is a /32 or /128).
///
/// # Errors
/// The entry that is not one.
pub fn parse_cidrs(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .map(|net| net.trunc())
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{entry:?} is not a CIDR range or an IP address"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn rules(allowed: &str, proxies: &str) -> SourceRules {
        SourceRules {
            allowed: parse_cidrs(allowed).unwrap(),
            trusted_proxies: parse_cidrs(proxies).unwrap(),
        }
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_peer_decides_when_it_is_not_a_trusted_proxy() {
        let r = rules("223.130.82.0/24", "");
        assert_eq!(
            r.sender(ip("223.130.82.4"), &HeaderMap::new()),
            Ok(ip("223.130.82.4"))
        );
        assert_eq!(
            r.sender(ip("::ffff:223.130.82.131"), &HeaderMap::new()),
            Ok(ip("223.130.82.131")),
            "an IPv4-mapped peer is its IPv4 address"
        );
        assert_eq!(
            r.sender(ip("10.0.0.9"), &HeaderMap::new()),
            Err(Refusal::NotAllowed)
        );
        // A header from an untrusted peer changes nothing.
        let spoofed = forwarded(&["223.130.82.4"]);
        assert_eq!(r.sender(ip("10.0.0.9"), &spoofed), Err(Refusal::NotAllowed));
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_sender() {
        let r = rules("223.130.82.0/24", "10.0.0.0/8");
        let proxy = ip("10.0.0.5");
        assert_eq!(
            r.sender(proxy, &forwarded(&["223.130.82.4"])),
            Ok(ip("223.130.82.4"))
        );
        // The client wrote the leftmost entry: never trusted.
        assert_eq!(
            r.sender(proxy, &forwarded(&["223.130.82.4, 198.51.100.7"])),
            Err(Refusal::NotAllowed)
        );
        // Two of our proxies in a row: skip them.
        assert_eq!(
            r.sender(
                proxy,
                &forwarded(&["198.51.100.7", "223.130.82.130, 10.1.2.3"])
            ),
            Ok(ip("223.130.82.130"))
        );
        assert_eq!(
            r.sender(proxy, &forwarded(&["[2001:db8::1]:443"])),
            Err(Refusal::NotAllowed)
        );
        assert_eq!(
            r.sender(proxy, &HeaderMap::new()),
            Err(Refusal::NoForwardedFor)
        );
        assert_eq!(
            r.sender(proxy, &forwarded(&["not-an-address"])),
            Err(Refusal::NoForwardedFor)
        );
        assert_eq!(
            r.sender(proxy, &forwarded(&["10.0.0.6"])),
            Err(Refusal::NoForwardedFor),
            "only proxies: nobody vouches for a sender"
        );
    }

    #[test]
    fn cidr_lists_accept_ranges_and_bare_addresses() {
        let nets = parse_cidrs("223.130.82.0/24, 127.0.0.1,::1,10.1.2.3/8").unwrap();
        assert_eq!(nets.len(), 4);
        assert_eq!(nets[3].to_string(), "10.0.0.0/8");
        assert!(parse_cidrs("223.130.82.0/33").is_err());
        assert!(parse_cidrs("bootpay").is_err());
        assert!(parse_cidrs("").unwrap().is_empty());
    }
}
