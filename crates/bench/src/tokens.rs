//! Where the load generator's tokens come from: its own RS256 issuer (a key
//! file shared by every worker process, published as a JWKS by `reeltime-bench
//! issuer`), or the server's development issuer (`POST /dev/token`).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reeltime_protocol::{DevTokenRequest, DevTokenResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// How a worker gets tokens; travels inside the job description.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TokenConfig {
    /// Sign with the key in `key_file`; `issuer` goes in `iss`.
    Key { key_file: String, issuer: String },
    /// Ask the server's development issuer.
    Dev { http_base: String },
}

/// An RS256 key loaded from (or created in) a PKCS#8 PEM file.
pub struct IssuerKey {
    pub kid: String,
    encoding: EncodingKey,
    pub jwk: Jwk,
}

impl IssuerKey {
    /// Loads the key, generating and saving a fresh 2048-bit one when the
    /// file does not exist.
    pub fn load_or_create(path: &Path) -> anyhow::Result<IssuerKey> {
        let pem = match std::fs::read_to_string(path) {
            Ok(pem) => pem,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let pair = KeyPair::generate(KeySize::Rsa2048)
                    .map_err(|err| anyhow::anyhow!("generating an RSA key: {err}"))?;
                let der = pair
                    .as_der()
                    .map_err(|err| anyhow::anyhow!("encoding the RSA key: {err}"))?;
                let pem = pem_of("PRIVATE KEY", der.as_ref());
                if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                std::fs::write(path, &pem)
                    .with_context(|| format!("writing the issuer key to {}", path.display()))?;
                pem
            }
            Err(err) => {
                return Err(err).with_context(|| format!("reading {}", path.display()));
            }
        };
        IssuerKey::from_pem(&pem).with_context(|| format!("loading {}", path.display()))
    }

    pub fn load(path: &Path) -> anyhow::Result<IssuerKey> {
        let pem = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading the issuer key {} (start `reeltime-bench issuer` first)",
                path.display()
            )
        })?;
        IssuerKey::from_pem(&pem).with_context(|| format!("loading {}", path.display()))
    }

    fn from_pem(pem: &str) -> anyhow::Result<IssuerKey> {
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes())?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)?;
        // The kid names this very key, so a regenerated key file can never be
        // mistaken for an older one a server has cached.
        let modulus = match &jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::RSA(rsa) => rsa.n.clone(),
            _ => bail!("not an RSA key"),
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, modulus.as_bytes());
        let kid: String = digest.as_ref()[..6]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        jwk.common.key_id = Some(format!("bench-{kid}"));
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(IssuerKey {
            kid: format!("bench-{kid}"),
            encoding,
            jwk,
        })
    }

    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.jwk.clone()],
        }
    }

    /// A Clerk-like session token for `sub`, valid `ttl_secs` from now.
    /// `nonce` makes tokens minted in the same second differ.
    pub fn sign(
        &self,
        issuer: &str,
        sub: &str,
        ttl_secs: u64,
        nonce: u64,
    ) -> anyhow::Result<String> {
        let now = unix_now();
        let claims = json!({
            "sub": sub,
            "iss": issuer,
            "iat": now,
            "nbf": now - 1,
            "exp": now + ttl_secs as i64,
            "sid": format!("sess_{nonce}"),
        });
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, &claims, &self.encoding)?)
    }
}

fn pem_of(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A worker's token source.
#[derive(Clone)]
pub enum Tokens {
    Key {
        key: Arc<IssuerKey>,
        issuer: String,
    },
    Dev {
        http: reqwest::Client,
        http_base: String,
    },
}

impl Tokens {
    pub fn open(config: &TokenConfig, http: &reqwest::Client) -> anyhow::Result<Tokens> {
        Ok(match config {
            TokenConfig::Key { key_file, issuer } => Tokens::Key {
                key: Arc::new(IssuerKey::load(Path::new(key_file))?),
                issuer: issuer.clone(),
            },
            TokenConfig::Dev { http_base } => Tokens::Dev {
                http: http.clone(),
                http_base: http_base.clone(),
            },
        })
    }

    /// One token for `sub`.
    pub async fn token(&self, sub: &str, ttl_secs: u64, nonce: u64) -> anyhow::Result<String> {
        match self {
            Tokens::Key { key, issuer } => key.sign(issuer, sub, ttl_secs, nonce),
            Tokens::Dev { http, http_base } => {
                let response = http
                    .post(format!("{http_base}/dev/token"))
                    .json(&DevTokenRequest {
                        sub: sub.to_string(),
                        ttl_secs: Some(ttl_secs),
                        email: None,
                    })
                    .send()
                    .await
                    .with_context(|| format!("POST {http_base}/dev/token"))?;
                let status = response.status();
                if !status.is_success() {
                    let body = response.text().await.unwrap_or_default();
                    bail!(
                        "POST {http_base}/dev/token answered {status}: {body} (is the server running its development issuer?)"
                    );
                }
                let body: DevTokenResponse = response
                    .json()
                    .await
                    .context("reading the /dev/token answer")?;
                Ok(body.token)
            }
        }
    }

    /// Tokens for many subjects, `per_sub` each, minted before any timing
    /// starts (RSA signing costs the client about a millisecond each).
    pub async fn mint_all(
        &self,
        subs: &[String],
        ttl_secs: u64,
        per_sub: usize,
    ) -> anyhow::Result<Vec<Vec<String>>> {
        match self {
            Tokens::Key { key, issuer } => {
                let key = Arc::clone(key);
                let issuer = issuer.clone();
                let subs = subs.to_vec();
                tokio::task::spawn_blocking(move || {
                    subs.iter()
                        .enumerate()
                        .map(|(n, sub)| {
                            (0..per_sub)
                                .map(|k| key.sign(&issuer, sub, ttl_secs, (n * per_sub + k) as u64))
                                .collect::<anyhow::Result<Vec<_>>>()
                        })
                        .collect::<anyhow::Result<Vec<_>>>()
                })
                .await
                .context("token minting task")?
            }
            Tokens::Dev { .. } => {
                use futures_util::StreamExt;
                let jobs = subs.iter().map(|sub| async move {
                    let mut tokens = Vec::with_capacity(per_sub);
                    for k in 0..per_sub {
                        tokens.push(self.token(sub, ttl_secs, k as u64).await?);
                    }
                    anyhow::Ok(tokens)
                });
                futures_util::stream::iter(jobs)
                    .buffered(16)
                    .collect::<Vec<_>>()
                    .await
                    .into_iter()
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trips_and_tokens_verify() {
        let dir = std::env::temp_dir().join(format!("reeltime-bench-key-{}", std::process::id()));
        let path = dir.join("issuer.pem");
        let created = IssuerKey::load_or_create(&path).unwrap();
        let loaded = IssuerKey::load(&path).unwrap();
        assert_eq!(created.kid, loaded.kid);
        let token = loaded.sign("http://issuer", "alice", 60, 1).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&created.jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.set_issuer(&["http://issuer"]);
        let data =
            jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).unwrap();
        assert_eq!(data.claims["sub"], "alice");
        assert_eq!(data.header.kid.as_deref(), Some(created.kid.as_str()));
        let _ = std::fs::remove_dir_all(dir);
    }
}
