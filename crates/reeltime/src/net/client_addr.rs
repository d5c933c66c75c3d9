//! Who the client is, for per-address limits. The peer address, unless the
//! peer is a proxy we were told to trust (`REELTIME_TRUSTED_PROXIES`): then
//! the right-most address in `X-Forwarded-For` that is not itself a trusted
//! proxy. Anyone can write `X-Forwarded-For`, so an untrusted peer's header
//! is never read, and entries left of the first untrusted one are the
//! client's own claims and are skipped.

use std::net::{IpAddr, Ipv6Addr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// A `REELTIME_TRUSTED_PROXIES` entry that is neither an IP nor a CIDR.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR like 10.0.0.0/8")]
pub struct BadProxy(String);

impl TrustedProxies {
    /// Parses IPs (`10.0.0.5`, `::1`) and CIDRs (`10.0.0.0/8`).
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, BadProxy> {
        let nets = entries
            .iter()
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| BadProxy(entry.clone()))
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { nets })
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client behind a request that arrived from `peer`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        // Several headers count as one list, in order (RFC 9110, 5.3).
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect();
        for hop in hops.iter().rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip.to_canonical();
                    if !self.trusts(client) {
                        break;
                    }
                }
                // Garbage written by whoever is left of the last good
                // hop: that hop is the client we know.
                Err(_) => break,
            }
        }
        client
    }
}

/// The key per-address limits count by: the address for IPv4, its /64 for
/// IPv6 (one subscriber usually holds a whole /64, so counting single IPv6
/// addresses would limit nothing).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            IpAddr::V6(Ipv6Addr::new(
                segments[0],
                segments[1],
                segments[2],
                segments[3],
                0,
                0,
                0,
                0,
            ))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append("x-forwarded-for", value.parse().unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip(ip("203.0.113.9"), &headers(&["198.51.100.1"])),
            ip("203.0.113.9")
        );
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into()]).unwrap();
        assert_eq!(
            proxies.client_ip(ip("203.0.113.9"), &headers(&["198.51.100.1"])),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_right_most_untrusted_hop() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into(), "192.0.2.7".into()]).unwrap();
        // The client forged the first entry; the two proxies appended the rest.
        let forwarded = headers(&["1.1.1.1, 198.51.100.4", "192.0.2.7"]);
        assert_eq!(
            proxies.client_ip(ip("10.1.2.3"), &forwarded),
            ip("198.51.100.4")
        );
        assert_eq!(
            proxies.client_ip(ip("::ffff:10.1.2.3"), &headers(&["198.51.100.4"])),
            ip("198.51.100.4"),
            "a mapped IPv4 peer is that IPv4 address"
        );
        assert_eq!(
            proxies.client_ip(ip("10.1.2.3"), &headers(&["junk, 10.9.9.9"])),
            ip("10.9.9.9"),
            "garbage stops the walk at the last hop we can read"
        );
        assert_eq!(
            proxies.client_ip(ip("10.1.2.3"), &HeaderMap::new()),
            ip("10.1.2.3"),
            "no header: the proxy is the client"
        );
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["proxy.example".into()]).is_err());
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        assert_eq!(
            limit_key(ip("2001:db8:1:2:aaaa::1")),
            limit_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            limit_key(ip("2001:db8:1:2::1")),
            limit_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(limit_key(ip("127.0.0.2")), ip("127.0.0.2"));
    }
}
