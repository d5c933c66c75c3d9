//! Verification keys as read from a JWKS document or a PEM file.

use std::collections::HashMap;
use std::str::FromStr;

use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// A public key together with the one algorithm it may verify. Pinning the
/// algorithm to the key is what stops `alg` confusion: a token cannot pick
/// HS256 and have an RSA public key used as an HMAC secret.
#[derive(Clone)]
pub struct VerifyKey {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

/// Asymmetric algorithms we accept. HMAC is never accepted: a JWKS or PEM
/// key is public, so HMAC with it would let anyone forge tokens.
const ACCEPTED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Keys by `kid`; `only` is set when there is exactly one key, so that a
/// PEM key (which has no kid) verifies tokens whatever kid they carry.
#[derive(Clone, Default)]
pub struct KeySet {
    by_kid: HashMap<String, VerifyKey>,
    only: Option<VerifyKey>,
}

impl KeySet {
    /// Parses a JWKS document, skipping keys we would never accept
    /// (symmetric, encryption-only, unknown algorithms) rather than failing
    /// the whole set.
    pub fn from_jwks(document: &Value) -> Result<KeySet, String> {
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("JWKS has no \"keys\" array")?;
        let mut set = KeySet::default();
        for jwk in keys {
            if let Some((kid, key)) = parse_jwk(jwk) {
                set.by_kid.insert(kid, key);
            }
        }
        if set.by_kid.is_empty() {
            return Err("JWKS holds no usable signing key".into());
        }
        Ok(set)
    }

    /// One RSA public key in PEM, for every token (Clerk's networkless mode).
    pub fn from_rsa_pem(pem: &str) -> Result<KeySet, String> {
        let key = DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
        Ok(KeySet {
            by_kid: HashMap::new(),
            only: Some(VerifyKey {
                key,
                algorithm: Algorithm::RS256,
            }),
        })
    }

    /// Builds a set from keys already in hand (the development issuer).
    pub fn from_keys(keys: impl IntoIterator<Item = (String, VerifyKey)>) -> KeySet {
        KeySet {
            by_kid: keys.into_iter().collect(),
            only: None,
        }
    }

    /// The key a token's `kid` names. A token without `kid` only matches
    /// when the set has exactly one key.
    pub fn find(&self, kid: Option<&str>) -> Option<&VerifyKey> {
        if let Some(only) = &self.only {
            return Some(only);
        }
        match kid {
            Some(kid) => self.by_kid.get(kid),
            None if self.by_kid.len() == 1 => self.by_kid.values().next(),
            None => None,
        }
    }

    pub fn len(&self) -> usize {
        self.by_kid.len() + usize::from(self.only.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn parse_jwk(jwk: &Value) -> Option<(String, VerifyKey)> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    if field("use").is_some_and(|usage| usage != "sig") {
        return None;
    }
    let kid = field("kid")?.to_string();
    let kty = field("kty")?;
    let algorithm = match field("alg") {
        Some(alg) => Algorithm::from_str(alg).ok()?,
        None => match (kty, field("crv")) {
            ("RSA", _) => Algorithm::RS256,
            ("EC", Some("P-256")) => Algorithm::ES256,
            ("EC", Some("P-384")) => Algorithm::ES384,
            ("OKP", Some("Ed25519")) => Algorithm::EdDSA,
            _ => return None,
        },
    };
    if !ACCEPTED.contains(&algorithm) {
        return None;
    }
    let key = match kty {
        "RSA"
            if matches!(
                algorithm,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) =>
        {
            DecodingKey::from_rsa_components(field("n")?, field("e")?).ok()?
        }
        "EC" if matches!(algorithm, Algorithm::ES256 | Algorithm::ES384) => {
            DecodingKey::from_ec_components(field("x")?, field("y")?).ok()?
        }
        "OKP" if algorithm == Algorithm::EdDSA => {
            DecodingKey::from_ed_components(field("x")?).ok()?
        }
        _ => return None,
    };
    Some((kid, VerifyKey { key, algorithm }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn symmetric_and_encryption_keys_are_skipped() {
        let doc = json!({"keys": [
            {"kid": "h", "kty": "oct", "k": "c2VjcmV0", "alg": "HS256"},
            {"kid": "e", "kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
        ]});
        assert!(KeySet::from_jwks(&doc).is_err());
    }

    #[test]
    fn rsa_keys_default_to_rs256() {
        let doc = json!({"keys": [{"kid": "k", "kty": "RSA", "n": "sXch", "e": "AQAB"}]});
        let set = KeySet::from_jwks(&doc).unwrap();
        assert_eq!(set.find(Some("k")).unwrap().algorithm, Algorithm::RS256);
        assert!(set.find(Some("other")).is_none());
        assert!(set.find(None).is_some(), "one key and no kid: that key");
    }

    #[test]
    fn an_rsa_key_cannot_claim_hmac() {
        let doc =
            json!({"keys": [{"kid": "k", "kty": "RSA", "alg": "HS256", "n": "sXch", "e": "AQAB"}]});
        assert!(KeySet::from_jwks(&doc).is_err());
    }
}
