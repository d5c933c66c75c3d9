//! Which addresses an import must never reach, stated from the registries
//! (IANA special-purpose address registries: not globally reachable, plus
//! multicast and reserved), and the IPv4 address every IPv6 form that
//! embeds one carries. Written apart from `imports::guard`, as the oracle
//! it is checked against.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4 ranges that are never a public destination: (network, prefix length).
pub const BLOCKED_V4: &[(u32, u8)] = &[
    (0x0000_0000, 8),  // 0.0.0.0/8 "this network"
    (0x0a00_0000, 8),  // 10.0.0.0/8
    (0x6440_0000, 10), // 100.64.0.0/10 shared (CGNAT)
    (0x7f00_0000, 8),  // 127.0.0.0/8 loopback
    (0xa9fe_0000, 16), // 169.254.0.0/16 link-local, cloud metadata
    (0xac10_0000, 12), // 172.16.0.0/12
    (0xc000_0000, 24), // 192.0.0.0/24 IETF protocol assignments
    (0xc000_0200, 24), // 192.0.2.0/24 documentation
    (0xc0a8_0000, 16), // 192.168.0.0/16
    (0xc612_0000, 15), // 198.18.0.0/15 benchmarking
    (0xc633_6400, 24), // 198.51.100.0/24 documentation
    (0xcb00_7100, 24), // 203.0.113.0/24 documentation
    (0xe000_0000, 4),  // 224.0.0.0/4 multicast
    (0xf000_0000, 4),  // 240.0.0.0/4 reserved, and broadcast
];

/// IPv6 ranges refused whatever they carry: (network, prefix length).
pub const BLOCKED_V6: &[(u128, u8)] = &[
    (0, 128),                                   // ::
    (1, 128),                                   // ::1
    (0xfc00 << 112, 7),                         // fc00::/7 unique local
    (0xfe80 << 112, 10),                        // fe80::/10 link-local
    (0xfec0 << 112, 10),                        // fec0::/10 site-local
    (0xff00 << 112, 8),                         // ff00::/8 multicast
    (0x2001_0db8 << 96, 32),                    // 2001:db8::/32 documentation
    (0x2001_0000 << 96, 32),                    // 2001::/32 Teredo
    ((0x0064_ff9b << 96) | (0x0001 << 80), 48), // 64:ff9b:1::/48 local-use NAT64
];

fn in_prefix(value: u128, bits: u32, network: u128, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = bits - u32::from(prefix);
    (value >> shift) == (network >> shift)
}

/// True when no import may reach `ip`.
pub fn v4_blocked(ip: Ipv4Addr) -> bool {
    let value = u128::from(u32::from(ip));
    BLOCKED_V4
        .iter()
        .any(|&(network, prefix)| in_prefix(value, 32, u128::from(network), prefix))
}

/// The IPv4 address an IPv6 address stands for, in every form that embeds
/// one: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, SIIT
/// `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d` and 6to4 `2002:AABB:CCDD::`.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let value = u128::from(ip);
    let low = Ipv4Addr::from(value as u32);
    let forms: [(u128, u8); 4] = [
        (0xffff << 32, 96),      // mapped
        (0, 96),                 // compatible
        (0xffff << 48, 96),      // SIIT (IPv4-translated)
        (0x0064_ff9b << 96, 96), // NAT64 well-known prefix
    ];
    if forms
        .iter()
        .any(|&(network, prefix)| in_prefix(value, 128, network, prefix))
    {
        return Some(low);
    }
    if in_prefix(value, 128, 0x2002 << 112, 16) {
        return Some(Ipv4Addr::from((value >> 80) as u32));
    }
    None
}

/// True when no import may reach `ip`.
pub fn v6_blocked(ip: Ipv6Addr) -> bool {
    let value = u128::from(ip);
    BLOCKED_V6
        .iter()
        .any(|&(network, prefix)| in_prefix(value, 128, network, prefix))
        || embedded_v4(ip).is_some_and(v4_blocked)
}

/// True when no import may reach `ip`.
pub fn blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_blocked(v4),
        IpAddr::V6(v6) => v6_blocked(v6),
    }
}

/// `network` with its host bits (past `prefix`, of `bits`) from `offset`.
fn inside(network: u128, prefix: u8, bits: u32, offset: u128) -> u128 {
    let host_bits = bits - u32::from(prefix);
    let mask = match host_bits {
        128 => u128::MAX,
        _ => (1u128 << host_bits) - 1,
    };
    network | (offset & mask)
}

/// An address inside the `index`-th blocked IPv4 range (any index: it
/// wraps), at `offset` within it.
pub fn blocked_v4_at(index: usize, offset: u32) -> Ipv4Addr {
    let (network, prefix) = BLOCKED_V4[index % BLOCKED_V4.len()];
    Ipv4Addr::from(inside(u128::from(network), prefix, 32, u128::from(offset)) as u32)
}

/// An address inside the `index`-th blocked IPv6 range (wrapping).
pub fn blocked_v6_at(index: usize, offset: u128) -> Ipv6Addr {
    let (network, prefix) = BLOCKED_V6[index % BLOCKED_V6.len()];
    Ipv6Addr::from(inside(network, prefix, 128, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oracle_says_what_the_registries_say() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "169.254.169.254",
            "100.64.0.1",
            "255.255.255.255",
        ] {
            assert!(blocked(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!blocked(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "::ffff:0:127.0.0.1",
            "64:ff9b::10.0.0.1",
            "2002:a9fe:a9fe::",
            "64:ff9b:1::8.8.8.8",
        ] {
            assert!(blocked(ip.parse().unwrap()), "{ip}");
        }
        assert_eq!(blocked_v4_at(3, 0x0102_0304), Ipv4Addr::new(127, 2, 3, 4));
    }
}
