//! The server's token verifier, as the gateway and the REST API use it,
//! with an Ed25519 key made at start (Ed25519: the fastest to sign and
//! verify, so the fuzzer spends its time in the parsing, not in RSA).

use std::sync::OnceLock;
use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use reeltime::auth::{AuthError, Claims, KeyProvider, KeySet, Verifier, VerifyKey};

/// `iss` the verifier wants.
pub const ISSUER: &str = "https://issuer.example";
/// The one `azp` the verifier accepts (with or without a trailing `/`).
pub const PARTY: &str = "https://app.example";
/// The only key's id.
pub const KID: &str = "fuzz-key";
/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 5;

struct Harness {
    runtime: tokio::runtime::Runtime,
    verifier: Verifier,
    key: Ed25519KeyPair,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let key = Ed25519KeyPair::generate().expect("generate an Ed25519 key");
        let verify = VerifyKey {
            key: DecodingKey::from_ed_der(key.public_key().as_ref()),
            algorithm: Algorithm::EdDSA,
        };
        let keys = KeySet::from_keys([(KID.to_string(), verify)]);
        let verifier = Verifier::new(
            KeyProvider::Static(std::sync::Arc::new(keys)),
            ISSUER.to_string(),
            Duration::from_secs(LEEWAY_SECS),
            &[PARTY.to_string()],
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime");
        Harness {
            runtime,
            verifier,
            key,
        }
    })
}

/// Runs the server's verifier on `token`.
pub fn verify(token: &str) -> Result<Claims, AuthError> {
    let harness = harness();
    harness.runtime.block_on(harness.verifier.verify(token))
}

/// `header.claims.signature` with a genuine Ed25519 signature over
/// whatever bytes the header and claims are.
pub fn sign(header: &[u8], claims: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = harness().key.sign(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    )
}

/// The same token shape with a signature the key never made.
pub fn forge(header: &[u8], claims: &[u8], signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or_default()
}
