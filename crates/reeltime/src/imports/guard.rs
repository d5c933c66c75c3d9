//! The outbound-fetch guard. An import URL comes from a user, so it must not
//! reach the server's own network: loopback, private ranges, link-local
//! (cloud metadata), CGNAT and the like are refused, for IPv4 and IPv6 and
//! for IPv4 hidden inside IPv6. The check runs on the addresses actually
//! connected to (through the resolver), so DNS rebinding and redirects are
//! covered too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Why a destination was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Blocked(pub String);

/// Which destinations imports may reach.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `REELTIME_IMPORT_ALLOW_PRIVATE`: everything goes (trusted networks, tests).
    pub allow_private: bool,
    /// `REELTIME_IMPORT_ALLOW_HOSTS`: named exceptions (lower case host names or IPs).
    pub allow_hosts: Vec<String>,
    /// `REELTIME_SYNTHETIC_IMPORTS`: accept `synthetic:` URLs (load tests).
    pub allow_synthetic: bool,
    /// The server's own origin, whose `/samples/` may be imported in
    /// development mode.
    pub own_samples: std::sync::OnceLock<url::Origin>,
}

impl Policy {
    fn host_is_excepted(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.allow_hosts.iter().any(|allowed| allowed == host)
    }

    /// Allows imports of `<base_url>/samples/...` and nothing else of this server.
    pub fn allow_own_samples(&self, base_url: &str) {
        if let Ok(url) = Url::parse(base_url) {
            let _ = self.own_samples.set(url.origin());
        }
    }

    /// Checks what can be told from the URL alone: scheme and literal IPs.
    pub fn check_url(&self, url: &Url) -> Result<(), Blocked> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Blocked("only http and https URLs can be imported".into()));
        }
        if self
            .own_samples
            .get()
            .is_some_and(|origin| *origin == url.origin() && url.path().starts_with("/samples/"))
        {
            return Ok(());
        }
        let host = url
            .host()
            .ok_or_else(|| Blocked("the URL has no host".into()))?;
        if self.allow_private || url.host_str().is_some_and(|h| self.host_is_excepted(h)) {
            return Ok(());
        }
        let ip = match host {
            Host::Ipv4(ip) => IpAddr::V4(ip),
            Host::Ipv6(ip) => IpAddr::V6(ip),
            Host::Domain(_) => return Ok(()),
        };
        if is_public(ip) {
            Ok(())
        } else {
            Err(Blocked(format!("{ip} is not a public address")))
        }
    }

    /// Checks resolved addresses of `host`; used at creation and by the resolver.
    pub fn check_resolved(&self, host: &str, addrs: &[SocketAddr]) -> Result<(), Blocked> {
        if self.allow_private || self.host_is_excepted(host) {
            return Ok(());
        }
        match addrs.iter().find(|addr| !is_public(addr.ip())) {
            Some(addr) => Err(Blocked(format!(
                "{host} resolves to {}, which is not a public address",
                addr.ip()
            ))),
            None => Ok(()),
        }
    }
}

/// A resolver that refuses names resolving to non-public addresses, so that
/// what is checked is exactly what is connected to.
pub struct GuardedResolver {
    pub policy: Arc<Policy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let host = name.as_str().to_ascii_lowercase();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            policy.check_resolved(&host, &addrs)?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// True for addresses on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let blocked = ip.is_unspecified()
        || a == 0                                   // 0.0.0.0/8 "this network"
        || ip.is_loopback()                         // 127.0.0.0/8
        || ip.is_private()                          // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local()                       // 169.254/16, cloud metadata
        || (a == 100 && (64..128).contains(&b))     // 100.64/10 CGNAT
        || (a == 192 && b == 0 && c == 0)           // 192.0.0/24 IETF assignments
        || (a == 192 && b == 0 && c == 2)           // documentation
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || (a == 198 && (b == 18 || b == 19))       // benchmarking
        || ip.is_multicast()                        // 224/4
        || a >= 240; // 240/4 reserved and broadcast
    !blocked
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if ip.is_unspecified() || ip.is_loopback() {
        return false;
    }
    // Ranges refused whatever they carry: a unique-local or Teredo address
    // with an ISATAP-looking interface id is still not public.
    let segments = ip.segments();
    let blocked = ip.is_multicast()
        || (segments[0] == 0x64 && segments[1] == 0xff9b && segments[2] == 1) // 64:ff9b:1::/48 local-use NAT64
        || (segments[0] & 0xfe00) == 0xfc00         // fc00::/7 unique local
        || (segments[0] & 0xffc0) == 0xfe80         // fe80::/10 link-local
        || (segments[0] & 0xffc0) == 0xfec0         // fec0::/10 site-local
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || (segments[0] == 0x2001 && segments[1] == 0); // Teredo
    if blocked {
        return false;
    }
    match embedded_v4(ip) {
        Some(v4) => is_public_v4(v4),
        None => true,
    }
}

/// The IPv4 address an IPv6 address stands for, in every form that embeds
/// one: such an address reaches that IPv4 host in the end, so it is judged
/// by it.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |high: u16, low: u16| {
        Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8)
    };
    let zero = |range: std::ops::Range<usize>| s[range].iter().all(|segment| *segment == 0);
    if zero(0..5) && (s[5] == 0xffff || s[5] == 0) {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated)
        return Some(v4(s[6], s[7]));
    }
    if zero(0..4) && s[4] == 0xffff && s[5] == 0 {
        // ::ffff:0:a.b.c.d (SIIT, IPv4-translated)
        return Some(v4(s[6], s[7]));
    }
    if s[0] == 0x64 && s[1] == 0xff9b && zero(2..6) {
        // 64:ff9b::a.b.c.d (NAT64, well-known prefix)
        return Some(v4(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        // 2002:aabb:ccdd::/48 (6to4)
        return Some(v4(s[1], s[2]));
    }
    if (s[4] & 0xfdff) == 0 && s[5] == 0x5efe {
        // <prefix>:0:5efe:a.b.c.d and <prefix>:200:5efe:a.b.c.d (ISATAP)
        return Some(v4(s[6], s[7]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(ip: &str) -> bool {
        is_public(ip.parse().unwrap())
    }

    #[test]
    fn refuses_every_non_public_range() {
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::ffff:0:127.0.0.1",
            "::ffff:0:a00:1",
            "::ffff:0:169.254.169.254",
            "64:ff9b:1::a00:1",
            "2001:470::5efe:10.0.0.1",
            "fe80::200:5efe:127.0.0.1",
            "64:ff9b:1::5efe:8.8.8.8",
            "fd00::5efe:8.8.8.8",
            "2001:0:1::5efe:8.8.8.8",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            // Found by fuzzing (fuzz/regressions/url_guard/): SIIT's
            // IPv4-translated form and the local-use NAT64 prefix
            // (64:ff9b:1::/48, RFC 8215, whatever IPv4 it carries).
            "::ffff:0:0.0.0.0",
            "64:ff9b:1::",
            "64:ff9b:1::8.8.8.8",
            "64:ff9b:1:ffff::1",
            "2002:7f00:1::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
        ] {
            assert!(!public(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn allows_public_addresses() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
            "::ffff:0:8.8.8.8",
            "2001:470::5efe:8.8.8.8",
        ] {
            assert!(public(ip), "{ip} is public");
        }
    }

    #[test]
    fn url_checks() {
        let policy = Policy::default();
        let check = |u: &str| policy.check_url(&Url::parse(u).unwrap());
        assert!(check("https://example.com/a.mp4").is_ok());
        assert!(check("ftp://example.com/a.mp4").is_err());
        assert!(check("file:///etc/passwd").is_err());
        assert!(check("http://127.0.0.1/a").is_err());
        assert!(check("http://[::ffff:7f00:1]/a").is_err());
        assert!(check("http://[::ffff:0:7f00:1]/a").is_err());
        assert!(check("http://[::ffff:0:a9fe:a9fe]/latest/meta-data").is_err());
        assert!(check("http://[64:ff9b:1::a9fe:a9fe]/a").is_err());
        assert!(
            check("http://2130706433/a").is_err(),
            "decimal IPv4 is parsed as an IP"
        );
        let excepted = Policy {
            allow_hosts: vec!["127.0.0.1".into()],
            ..Policy::default()
        };
        assert!(
            excepted
                .check_url(&Url::parse("http://127.0.0.1:9/a").unwrap())
                .is_ok()
        );
        assert!(
            excepted
                .check_url(&Url::parse("http://127.0.0.2:9/a").unwrap())
                .is_err()
        );
    }
}
