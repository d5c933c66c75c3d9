//! Token handling, header first: the server's `Verifier` on tokens built
//! from fuzzer-chosen parts. Properties: never a panic; a token the key did
//! not sign is always refused, whatever its header and claims say (`alg:
//! none`, HMAC, unknown kid, `jku`/`jwk` headers...); and a genuinely signed
//! one is accepted exactly when every rule holds (EdDSA as pinned to the
//! key, a known kid, `iss`, non-empty `sub` of at most 255 bytes, `exp` and
//! `nbf` within the leeway, a listed `azp`).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use reeltime_fuzz::tokens::{self, ISSUER, KID, LEEWAY_SECS, PARTY};
use serde_json::{Map, Value, json};

#[derive(Debug, Arbitrary)]
enum Input {
    /// Any string as the token.
    Raw(String),
    /// Any bytes as header and claims, signed by the key or not.
    Bytes {
        header: Vec<u8>,
        claims: Vec<u8>,
        signature: Signature,
    },
    /// Well-formed JSON with chosen fields, signed by the key or not.
    Fields {
        header: Header,
        claims: Claims,
        signature: Signature,
    },
}

#[derive(Debug, Arbitrary)]
enum Signature {
    Genuine,
    Forged(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Alg {
    EdDsa,
    None,
    Hs256,
    Rs256,
    Es256,
    Other(String),
    Missing,
}

#[derive(Debug, Arbitrary)]
struct Header {
    alg: Alg,
    kid: Option<Choice>,
    /// Headers the verifier must never act on.
    jku: Option<String>,
    jwk: bool,
    typ: Option<String>,
}

#[derive(Debug, Arbitrary)]
enum Choice {
    Right,
    Other(String),
}

impl Choice {
    /// The text of this choice, `right` being the value the verifier wants.
    fn text<'a>(&'a self, right: &'a str) -> &'a str {
        match self {
            Choice::Right => right,
            Choice::Other(other) => other,
        }
    }
}

/// Sets `key` when there is a value.
fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(key.into(), value);
    }
}

#[derive(Debug, Arbitrary)]
struct Claims {
    sub: Option<String>,
    iss: Option<Choice>,
    /// Seconds from now.
    exp: Option<i32>,
    nbf: Option<i32>,
    azp: Option<Azp>,
    email: Option<String>,
}

#[derive(Debug, Arbitrary)]
enum Azp {
    Listed,
    ListedWithSlash,
    Other(String),
}

fn header_json(header: &Header) -> Value {
    let mut map = Map::new();
    let alg = match &header.alg {
        Alg::EdDsa => Some("EdDSA".to_string()),
        Alg::None => Some("none".to_string()),
        Alg::Hs256 => Some("HS256".to_string()),
        Alg::Rs256 => Some("RS256".to_string()),
        Alg::Es256 => Some("ES256".to_string()),
        Alg::Other(alg) => Some(alg.clone()),
        Alg::Missing => None,
    };
    if let Some(alg) = alg {
        map.insert("alg".into(), json!(alg));
    }
    put(
        &mut map,
        "kid",
        header.kid.as_ref().map(|kid| json!(kid.text(KID))),
    );
    if let Some(jku) = &header.jku {
        map.insert("jku".into(), json!(jku));
    }
    if header.jwk {
        map.insert("jwk".into(), json!({"kty": "oct", "k": "c2VjcmV0"}));
    }
    if let Some(typ) = &header.typ {
        map.insert("typ".into(), json!(typ));
    }
    Value::Object(map)
}

fn claims_json(claims: &Claims, now: i64) -> Value {
    let mut map = Map::new();
    if let Some(sub) = &claims.sub {
        map.insert("sub".into(), json!(sub));
    }
    put(
        &mut map,
        "iss",
        claims.iss.as_ref().map(|iss| json!(iss.text(ISSUER))),
    );
    if let Some(exp) = claims.exp {
        map.insert("exp".into(), json!(now + i64::from(exp)));
    }
    if let Some(nbf) = claims.nbf {
        map.insert("nbf".into(), json!(now + i64::from(nbf)));
    }
    match &claims.azp {
        Some(Azp::Listed) => {
            map.insert("azp".into(), json!(PARTY));
        }
        Some(Azp::ListedWithSlash) => {
            map.insert("azp".into(), json!(format!("{PARTY}/")));
        }
        Some(Azp::Other(azp)) => {
            map.insert("azp".into(), json!(azp));
        }
        None => {}
    }
    if let Some(email) = &claims.email {
        map.insert("email".into(), json!(email));
    }
    Value::Object(map)
}

/// Whether the rules accept these fields; `None` when a time is too close
/// to a limit to tell (the clock moves while the token is checked). A time
/// before 1970 is malformed: JWT times are unsigned (found by this target,
/// kept in fuzz/regressions/jwt/).
fn expected(header: &Header, claims: &Claims, now: i64) -> Option<bool> {
    let before_1970 = |offset: Option<i32>| offset.is_some_and(|at| now + i64::from(at) < 0);
    if before_1970(claims.exp) || before_1970(claims.nbf) {
        return Some(false);
    }
    let leeway = LEEWAY_SECS as i64;
    let near = |offset: i32, limit: i64| (i64::from(offset) - limit).abs() <= 2;
    if claims.exp.is_some_and(|exp| near(exp, -leeway))
        || claims.nbf.is_some_and(|nbf| near(nbf, leeway))
    {
        return None;
    }
    let kid_ok = header.kid.as_ref().is_none_or(|kid| kid.text(KID) == KID);
    let iss_ok = claims
        .iss
        .as_ref()
        .is_some_and(|iss| iss.text(ISSUER) == ISSUER);
    let azp_ok = match &claims.azp {
        Some(Azp::Listed | Azp::ListedWithSlash) => true,
        Some(Azp::Other(azp)) => azp.trim_end_matches('/') == PARTY,
        None => false,
    };
    Some(
        matches!(header.alg, Alg::EdDsa)
            || matches!(&header.alg, Alg::Other(alg) if alg == "EdDSA"),
    )
    .map(|alg_ok| {
        alg_ok
            && kid_ok
            && iss_ok
            && azp_ok
            && claims
                .sub
                .as_ref()
                .is_some_and(|sub| !sub.is_empty() && sub.len() <= 255)
            && claims.exp.is_some_and(|exp| i64::from(exp) > -leeway)
            && claims.nbf.is_none_or(|nbf| i64::from(nbf) <= leeway)
    })
}

fn token(header: &[u8], claims: &[u8], signature: &Signature) -> String {
    match signature {
        Signature::Genuine => tokens::sign(header, claims),
        Signature::Forged(bytes) => tokens::forge(header, claims, bytes),
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw(token) => {
            assert!(
                tokens::verify(&token).is_err(),
                "an unsigned token passed: {token:?}"
            );
        }
        Input::Bytes {
            header,
            claims,
            signature,
        } => {
            let token = token(&header, &claims, &signature);
            let result = tokens::verify(&token);
            if matches!(signature, Signature::Forged(_)) {
                assert!(result.is_err(), "a forged token passed: {token:?}");
            } else if let Ok(verified) = result {
                // Signed: whatever JSON it is, only a valid one passes.
                let header: Value =
                    serde_json::from_slice(&header).expect("accepted header is JSON");
                assert_eq!(header["alg"], "EdDSA", "{header}");
                let claims: Value =
                    serde_json::from_slice(&claims).expect("accepted claims are JSON");
                assert_eq!(claims["iss"], ISSUER, "{claims}");
                assert_eq!(claims["sub"], verified.sub.as_str(), "{claims}");
                assert!(!verified.sub.is_empty() && verified.sub.len() <= 255);
                assert!(verified.exp + LEEWAY_SECS as i64 >= tokens::now() - 2);
            }
        }
        Input::Fields {
            header,
            claims,
            signature,
        } => {
            let now = tokens::now();
            let header_bytes = serde_json::to_vec(&header_json(&header)).expect("json");
            let claims_bytes = serde_json::to_vec(&claims_json(&claims, now)).expect("json");
            let token = token(&header_bytes, &claims_bytes, &signature);
            let result = tokens::verify(&token);
            match signature {
                Signature::Forged(_) => {
                    assert!(result.is_err(), "a forged token passed: {token:?}")
                }
                Signature::Genuine => {
                    if let Some(expected) = expected(&header, &claims, now) {
                        assert_eq!(
                            result.is_ok(),
                            expected,
                            "{header:?} {claims:?}: verifier said {result:?}"
                        );
                    }
                }
            }
        }
    }
});
