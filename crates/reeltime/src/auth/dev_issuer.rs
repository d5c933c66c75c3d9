//! The development issuer: lets a newcomer run the product with no Clerk
//! account. It mints RS256 tokens shaped like Clerk's, and its public key
//! goes into the same [`super::Verifier`] production uses.

use std::path::Path;

use anyhow::Context;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;

use super::{KeySet, VerifyKey};

/// Longest lifetime `POST /dev/token` hands out (a day).
pub const MAX_TTL_SECS: u64 = 86_400;

/// Mints development tokens and publishes their key.
pub struct DevIssuer {
    issuer: String,
    kid: String,
    encoding: EncodingKey,
    jwks: JwkSet,
    verify: VerifyKey,
}

#[derive(Serialize)]
struct DevClaims<'a> {
    sub: &'a str,
    iss: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
}

impl DevIssuer {
    /// Loads the key kept in the data dir, or makes one. Keeping it means
    /// tokens a browser holds still verify after a restart.
    pub fn load_or_create(data_dir: &Path, issuer: String) -> anyhow::Result<DevIssuer> {
        let path = data_dir.join("dev-issuer-key.pem");
        let pem = match std::fs::read_to_string(&path) {
            Ok(pem) => pem,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let pem = generate_pem()?;
                crate::private_file::write_private(&path, &pem)
                    .with_context(|| format!("writing {}", path.display()))?;
                pem
            }
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes())
            .with_context(|| format!("{} is not an RSA private key", path.display()))?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)?;
        let (n, e) = match &jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::RSA(rsa) => (rsa.n.clone(), rsa.e.clone()),
            _ => anyhow::bail!("development key is not RSA"),
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, n.as_bytes());
        let kid = format!(
            "dev-{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest.as_ref()[..9])
        );
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let verify = VerifyKey {
            key: DecodingKey::from_rsa_components(&n, &e)?,
            algorithm: Algorithm::RS256,
        };
        Ok(DevIssuer {
            issuer,
            kid,
            encoding,
            jwks: JwkSet { keys: vec![jwk] },
            verify,
        })
    }

    /// Keys for the verifier: the same path as any JWKS issuer.
    pub fn key_set(&self) -> KeySet {
        KeySet::from_keys([(self.kid.clone(), self.verify.clone())])
    }

    /// The public JWKS served at `/dev/jwks.json`.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// Mints a token for `sub` valid `ttl_secs` from now; returns it with its `exp`.
    pub fn mint(
        &self,
        sub: &str,
        ttl_secs: u64,
        email: Option<&str>,
    ) -> anyhow::Result<(String, i64)> {
        let now = chrono::Utc::now().timestamp();
        let ttl = i64::try_from(ttl_secs.min(MAX_TTL_SECS)).unwrap_or(60);
        let claims = DevClaims {
            sub,
            iss: &self.issuer,
            iat: now,
            nbf: now,
            exp: now + ttl,
            email,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)?;
        Ok((token, claims.exp))
    }
}

fn generate_pem() -> anyhow::Result<String> {
    let pair = KeyPair::generate(KeySize::Rsa2048)
        .map_err(|_| anyhow::anyhow!("could not generate an RSA key"))?;
    let der = pair
        .as_der()
        .map_err(|_| anyhow::anyhow!("could not encode the RSA key"))?;
    let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
}
