//! A token issuer for tests and benchmarks: real RSA keys, a real JWKS
//! served over HTTP, and tokens good or bad in every way a test needs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// One RSA signing key with its kid.
pub struct SigningKey {
    pub kid: String,
    encoding: EncodingKey,
    jwk: Jwk,
    /// The public key as PEM (SubjectPublicKeyInfo), e.g. for CLERK_JWT_KEY.
    pub public_pem: String,
}

impl SigningKey {
    /// A fresh 2048-bit RSA key.
    pub fn generate(kid: &str) -> SigningKey {
        let pair = KeyPair::generate(KeySize::Rsa2048).expect("generate RSA key");
        let private_der = pair.as_der().expect("encode private key");
        let encoding =
            EncodingKey::from_rsa_pem(pem("PRIVATE KEY", private_der.as_ref()).as_bytes())
                .expect("load private key");
        let public_der = aws_lc_rs::signature::KeyPair::public_key(&pair)
            .as_der()
            .expect("encode public key");
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).expect("jwk");
        jwk.common.key_id = Some(kid.to_string());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        SigningKey {
            kid: kid.to_string(),
            encoding,
            jwk,
            public_pem: pem("PUBLIC KEY", public_der.as_ref()),
        }
    }

    /// Signs `claims` with RS256 and this key's kid.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }

    /// Signs with a chosen header kid (to name another key).
    pub fn sign_as(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ascii"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

struct Shared {
    served: Mutex<Vec<Jwk>>,
    fetches: AtomicUsize,
    available: AtomicBool,
}

/// An issuer serving its JWKS at `/.well-known/jwks.json` on loopback.
pub struct TestIssuer {
    pub key: SigningKey,
    /// Signs like `key` but is never published: for bad-signature tokens.
    pub rogue: SigningKey,
    pub issuer: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl TestIssuer {
    /// Starts the JWKS endpoint with one key, `k1`.
    pub async fn start() -> TestIssuer {
        let key = SigningKey::generate("k1");
        let rogue = SigningKey::generate("k1");
        let shared = Arc::new(Shared {
            served: Mutex::new(vec![key.jwk.clone()]),
            fetches: AtomicUsize::new(0),
            available: AtomicBool::new(true),
        });
        let app = Router::new()
            .route("/.well-known/jwks.json", get(jwks))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestIssuer {
            key,
            rogue,
            issuer: format!("http://{addr}"),
            addr,
            shared,
        }
    }

    pub fn jwks_url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    /// How many times the JWKS was fetched.
    pub fn fetches(&self) -> usize {
        self.shared.fetches.load(Ordering::SeqCst)
    }

    /// Makes the endpoint answer 503 (false) or the keys (true).
    pub fn set_available(&self, up: bool) {
        self.shared.available.store(up, Ordering::SeqCst);
    }

    /// Publishes another key (key rotation).
    pub fn publish(&self, key: &SigningKey) {
        self.shared
            .served
            .lock()
            .expect("lock")
            .push(key.jwk.clone());
    }

    /// Environment for a reeltime pointed at this issuer.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("REELTIME_JWKS_URL".into(), self.jwks_url()),
            ("REELTIME_ISSUER".into(), self.issuer.clone()),
        ]
    }

    /// Standard claims for `sub`, valid for `ttl_secs` from now.
    pub fn claims(&self, sub: &str, ttl_secs: i64) -> Value {
        let now = now();
        json!({"sub": sub, "iss": self.issuer, "iat": now, "nbf": now - 1, "exp": now + ttl_secs})
    }

    /// A good token for `sub`.
    pub fn token(&self, sub: &str, ttl_secs: i64) -> String {
        self.key.sign(&self.claims(sub, ttl_secs))
    }

    /// A token with `claims` changed by `edit`.
    pub fn token_with(&self, sub: &str, edit: impl FnOnce(&mut Value)) -> String {
        let mut claims = self.claims(sub, 60);
        edit(&mut claims);
        self.key.sign(&claims)
    }

    /// `alg: none`, no signature.
    pub fn alg_none_token(&self, sub: &str) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        let body = URL_SAFE_NO_PAD.encode(self.claims(sub, 60).to_string());
        format!("{header}.{body}.")
    }

    /// HS256 "signed" with the public key as the HMAC secret: the classic
    /// algorithm-confusion forgery.
    pub fn hs256_with_public_key(&self, sub: &str) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.key.kid.clone());
        let secret = EncodingKey::from_secret(self.key.public_pem.as_bytes());
        jsonwebtoken::encode(&header, &self.claims(sub, 60), &secret).expect("sign")
    }
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    shared.fetches.fetch_add(1, Ordering::SeqCst);
    if !shared.available.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let keys = shared.served.lock().expect("lock").clone();
    axum::Json(JwkSet { keys }).into_response()
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
