//! Every textual form of an address that a URL host may take and that the
//! URL parser (WHATWG rules, the `url` crate) turns back into that address:
//! IPv4 parts in decimal, octal or hex, the short forms `a.b.c`, `a.b` and
//! `a` (the last part holds the remaining bytes), a trailing dot, percent
//! escapes, full-width digits and dots (IDNA maps them), and IPv6 with any
//! zero compression, case, leading zeros and a dotted IPv4 tail.

use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;

/// How to write one IPv4 number.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Radix {
    Decimal,
    /// `0` then octal digits, with this many extra leading zeros.
    Octal(u8),
    /// `0x` or `0X` then hex digits, upper or lower case, extra zeros.
    Hex {
        upper_x: bool,
        upper_digits: bool,
        zeros: u8,
    },
}

/// How to write an IPv4 address.
#[derive(Debug, Clone, Arbitrary)]
pub struct V4Form {
    /// 1 to 4 parts (taken modulo 4, plus one).
    pub parts: u8,
    /// Radix of each part, cycled.
    pub radixes: Vec<Radix>,
    pub trailing_dot: bool,
    pub text: TextForm,
}

/// Encodings the URL parser undoes before it reads the host.
#[derive(Debug, Clone, Arbitrary)]
pub struct TextForm {
    /// Percent-escape the characters at these positions (cycled bitmap).
    pub escape: Vec<bool>,
    /// Write digits and dots full-width (U+FF10.., U+FF0E) or the
    /// ideographic full stop (U+3002) for dots.
    pub wide_digits: bool,
    pub wide_dots: Option<bool>,
}

/// How to write an IPv6 address.
#[derive(Debug, Clone, Arbitrary)]
pub struct V6Form {
    /// Which run of zero groups `::` replaces, if any (modulo the runs).
    pub compress: Option<u8>,
    pub upper: bool,
    /// Pad groups with leading zeros to four digits.
    pub pad: bool,
    /// Write the last 32 bits as a dotted IPv4 address.
    pub dotted_tail: bool,
}

/// `ip` written as `form` says: a string the URL parser reads back as `ip`.
pub fn v4(ip: Ipv4Addr, form: &V4Form) -> String {
    let value = u32::from(ip);
    let count = usize::from(form.parts % 4) + 1;
    let octets = ip.octets();
    let mut numbers: Vec<u64> = octets[..count - 1].iter().map(|&o| u64::from(o)).collect();
    let rest_bits = 8 * (4 - (count - 1));
    let rest = if rest_bits == 32 {
        value
    } else {
        value & ((1u32 << rest_bits) - 1)
    };
    numbers.push(u64::from(rest));
    let mut out = String::new();
    for (i, number) in numbers.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        let radix = form
            .radixes
            .get(i % form.radixes.len().max(1))
            .copied()
            .unwrap_or(Radix::Decimal);
        write_number(&mut out, *number, radix);
    }
    if form.trailing_dot {
        out.push('.');
    }
    text(&out, &form.text)
}

fn write_number(out: &mut String, number: u64, radix: Radix) {
    match radix {
        Radix::Decimal => {
            let _ = write!(out, "{number}");
        }
        Radix::Octal(zeros) => {
            out.push('0');
            out.extend(std::iter::repeat_n('0', usize::from(zeros % 8)));
            let _ = write!(out, "{number:o}");
        }
        Radix::Hex {
            upper_x,
            upper_digits,
            zeros,
        } => {
            out.push_str(if upper_x { "0X" } else { "0x" });
            out.extend(std::iter::repeat_n('0', usize::from(zeros % 8)));
            if upper_digits {
                let _ = write!(out, "{number:X}");
            } else {
                let _ = write!(out, "{number:x}");
            }
        }
    }
}

/// `host` with the escapes and wide characters of `form`.
pub fn text(host: &str, form: &TextForm) -> String {
    let mut out = String::new();
    for (i, c) in host.chars().enumerate() {
        let wide = match c {
            '0'..='9' if form.wide_digits => {
                char::from_u32(0xff10 + (c as u32 - '0' as u32)).unwrap_or(c)
            }
            '.' => match form.wide_dots {
                Some(true) => '\u{ff0e}',
                Some(false) => '\u{3002}',
                None => c,
            },
            _ => c,
        };
        let escape = !form.escape.is_empty() && form.escape[i % form.escape.len()];
        if escape {
            let mut buf = [0u8; 4];
            for byte in wide.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{byte:02X}");
            }
        } else {
            out.push(wide);
        }
    }
    out
}

/// `ip` written as `form` says, without brackets.
pub fn v6(ip: Ipv6Addr, form: &V6Form) -> String {
    let segments = ip.segments();
    let groups = if form.dotted_tail { 6 } else { 8 };
    // Runs of zero groups among the hex groups: (start, length).
    let mut runs = Vec::new();
    let mut i = 0;
    while i < groups {
        if segments[i] == 0 {
            let start = i;
            while i < groups && segments[i] == 0 {
                i += 1;
            }
            runs.push((start, i - start));
        } else {
            i += 1;
        }
    }
    let compressed = form
        .compress
        .filter(|_| !runs.is_empty())
        .map(|pick| runs[usize::from(pick) % runs.len()]);
    let group = |segment: u16| -> String {
        let text = if form.pad {
            format!("{segment:04x}")
        } else {
            format!("{segment:x}")
        };
        if form.upper {
            text.to_uppercase()
        } else {
            text
        }
    };
    let mut out = String::new();
    let mut i = 0;
    while i < groups {
        if let Some((start, len)) = compressed
            && i == start
        {
            out.push_str("::");
            i += len;
            continue;
        }
        if i > 0 && !out.ends_with("::") {
            out.push(':');
        }
        out.push_str(&group(segments[i]));
        i += 1;
    }
    if form.dotted_tail {
        if !out.ends_with("::") {
            out.push(':');
        }
        let [_, _, _, _, _, _, a, b] = segments;
        let _ = write!(out, "{}.{}.{}.{}", a >> 8, a & 0xff, b >> 8, b & 0xff);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_read_back_as_the_address() {
        let ip = Ipv4Addr::new(127, 0, 0, 1);
        let form = V4Form {
            parts: 1,
            radixes: vec![Radix::Hex {
                upper_x: false,
                upper_digits: false,
                zeros: 0,
            }],
            trailing_dot: true,
            text: TextForm {
                escape: vec![],
                wide_digits: false,
                wide_dots: None,
            },
        };
        assert_eq!(v4(ip, &form), "0x7f.0x1.");
        let url = url::Url::parse(&format!("http://{}/", v4(ip, &form))).unwrap();
        assert_eq!(url.host(), Some(url::Host::Ipv4(ip)));
        let v6ip: Ipv6Addr = "::ffff:0:7f00:1".parse().unwrap();
        let text = v6(
            v6ip,
            &V6Form {
                compress: Some(0),
                upper: true,
                pad: false,
                dotted_tail: true,
            },
        );
        assert_eq!(text, "::FFFF:0:127.0.0.1");
        let url = url::Url::parse(&format!("http://[{text}]/")).unwrap();
        assert_eq!(url.host(), Some(url::Host::Ipv6(v6ip)));
    }
}
