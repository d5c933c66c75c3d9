//! The outbound URL guard: no textual form of a non-public address gets
//! through `Policy::check_url`. Two kinds of input: a blocked address
//! (chosen inside a blocked range, or carried by an IPv6 form that embeds
//! a blocked IPv4) written in any form the URL parser reads back as it;
//! and free text, where any IP host the guard lets through must be public
//! by the independent oracle (`reeltime_fuzz::addresses`).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use reeltime::imports::guard::{Policy, is_public};
use reeltime_fuzz::addresses::{self, blocked_v4_at, blocked_v6_at};
use reeltime_fuzz::render::{self, TextForm, V4Form, V6Form};
use url::{Host, Url};

#[derive(Debug, Arbitrary)]
enum Input {
    /// A blocked IPv4 address in some IPv4 spelling.
    V4 {
        range: u8,
        offset: u32,
        form: V4Form,
    },
    /// A blocked IPv6 address in some IPv6 spelling.
    V6 {
        range: u8,
        offset: u128,
        form: V6Form,
        text: TextForm,
    },
    /// A blocked IPv4 address inside an IPv6 form that embeds it.
    Embedded {
        range: u8,
        offset: u32,
        embedding: Embedding,
        form: V6Form,
        text: TextForm,
    },
    /// Anything after `http://` (or a whole URL when `whole`).
    Free { text: String, whole: bool },
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Embedding {
    Mapped,
    Compatible,
    Siit,
    Nat64,
    SixToFour { tail: u64 },
}

fn embed(v4: Ipv4Addr, embedding: Embedding) -> Ipv6Addr {
    let low = u128::from(u32::from(v4));
    Ipv6Addr::from(match embedding {
        Embedding::Mapped => (0xffff << 32) | low,
        Embedding::Compatible => low,
        Embedding::Siit => (0xffff << 48) | low,
        Embedding::Nat64 => (0x0064_ff9b << 96) | low,
        Embedding::SixToFour { tail } => {
            (0x2002 << 112) | (low << 80) | u128::from(tail & 0xffff_ffff_ffff)
        }
    })
}

fn policy() -> Policy {
    Policy::default()
}

/// `host` in a URL with a path, sometimes with userinfo and a port.
fn url_text(host: &str, variant: u32) -> String {
    let userinfo = if variant & 1 == 1 { "user:pass@" } else { "" };
    let port = if variant & 2 == 2 { ":8080" } else { "" };
    let scheme = if variant & 4 == 4 { "HTTPS" } else { "http" };
    format!("{scheme}://{userinfo}{host}{port}/video.mp4")
}

/// A blocked address written as `text` must not pass.
fn must_refuse(ip: IpAddr, text: &str, variant: u32) {
    assert!(
        addresses::blocked(ip),
        "the generator made a public address: {ip}"
    );
    assert!(
        !is_public(ip),
        "is_public({ip}) is true for a blocked address"
    );
    let raw = url_text(text, variant);
    let Ok(url) = Url::parse(&raw) else {
        return; // not a URL: refused at creation as a bad request
    };
    if policy().check_url(&url).is_ok() {
        match url.host() {
            Some(Host::Domain(name)) => must_not_resolve_to_blocked(name, &raw),
            host => panic!("{raw:?} (host {host:?}, meant {ip}) passed the guard"),
        }
    }
}

/// A host the URL parser left as a name goes through the resolver guard:
/// when the system resolver reads it as a number, that must be refused.
/// Only names made of number characters are tried (nothing goes to DNS).
fn must_not_resolve_to_blocked(name: &str, raw: &str) {
    let numeric = name
        .chars()
        .all(|c| c.is_ascii_hexdigit() || matches!(c, 'x' | 'X' | '.' | ':'));
    if !numeric {
        return;
    }
    if let Ok(addrs) = (name, 80).to_socket_addrs() {
        let addrs: Vec<_> = addrs.collect();
        assert!(
            policy().check_resolved(name, &addrs).is_err()
                || addrs.iter().all(|a| !addresses::blocked(a.ip())),
            "{raw:?} resolves to {addrs:?} and passed both guards"
        );
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::V4 {
            range,
            offset,
            form,
        } => {
            let ip = blocked_v4_at(usize::from(range), offset);
            must_refuse(IpAddr::V4(ip), &render::v4(ip, &form), offset);
        }
        Input::V6 {
            range,
            offset,
            form,
            text,
        } => {
            let ip = blocked_v6_at(usize::from(range), offset);
            let host = format!("[{}]", render::text(&render::v6(ip, &form), &text));
            must_refuse(IpAddr::V6(ip), &host, offset as u32);
        }
        Input::Embedded {
            range,
            offset,
            embedding,
            form,
            text,
        } => {
            let ip = embed(blocked_v4_at(usize::from(range), offset), embedding);
            let host = format!("[{}]", render::text(&render::v6(ip, &form), &text));
            must_refuse(IpAddr::V6(ip), &host, offset);
        }
        Input::Free { text, whole } => {
            let raw = if whole {
                text
            } else {
                format!("http://{text}")
            };
            let Ok(url) = Url::parse(&raw) else { return };
            let ip = match url.host() {
                Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
                Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
                _ => return,
            };
            if policy().check_url(&url).is_ok() {
                assert!(
                    !addresses::blocked(ip),
                    "{raw:?} reaches {ip}, which is not public"
                );
            }
        }
    }
});
