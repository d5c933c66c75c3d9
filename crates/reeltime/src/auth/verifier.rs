//! The token verifier: every claim checked, every failure named.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use reeltime_protocol::Close;
use serde::Deserialize;

use super::revocations::{Revocations, session_subject, user_subject};
use super::{JwksCache, KeySet, VerifyKey};

/// Tokens longer than this are rejected before any parsing; Clerk's are
/// well under 2 KiB.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token was refused. [`AuthError::reason`] is what the client sees
/// in the close frame and what the metrics count; it never holds the token.
/// The texts are the protocol's (`reeltime_protocol::close`), not ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.reason())]
pub enum AuthError {
    Missing,
    Malformed,
    AlgorithmNotAllowed,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    MissingClaim,
    PartyNotAllowed,
    KeysUnavailable,
    /// The token verifies, but its session was signed out or revoked.
    SessionRevoked,
    /// The token verifies, but its user was deleted.
    UserDeleted,
}

impl AuthError {
    /// The close frame a WebSocket refused with this error gets.
    pub fn close(self) -> Close {
        match self {
            AuthError::Missing => Close::AUTH_MISSING_TOKEN,
            AuthError::Malformed => Close::AUTH_MALFORMED_TOKEN,
            AuthError::AlgorithmNotAllowed => Close::AUTH_ALGORITHM_NOT_ALLOWED,
            AuthError::UnknownKey => Close::AUTH_UNKNOWN_KEY,
            AuthError::BadSignature => Close::AUTH_BAD_SIGNATURE,
            AuthError::Expired => Close::AUTH_TOKEN_EXPIRED,
            AuthError::NotYetValid => Close::AUTH_TOKEN_NOT_YET_VALID,
            AuthError::WrongIssuer => Close::AUTH_WRONG_ISSUER,
            AuthError::MissingClaim => Close::AUTH_MISSING_CLAIM,
            AuthError::PartyNotAllowed => Close::AUTH_PARTY_NOT_ALLOWED,
            AuthError::KeysUnavailable => Close::AUTH_KEYS_UNAVAILABLE,
            AuthError::SessionRevoked => Close::SESSION_REVOKED,
            AuthError::UserDeleted => Close::USER_DELETED,
        }
    }

    /// Short, stable text for close frames, HTTP errors and metrics labels.
    pub fn reason(self) -> &'static str {
        self.close().reason
    }
}

/// The claims the server uses from a verified token.
///
/// `sub` and `exp` default when absent: jsonwebtoken deserializes the claims
/// before its required-claim check, so without the defaults a token lacking
/// them would fail as `malformed token` instead of `missing claim`. Their
/// presence is still enforced by `set_required_spec_claims`.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub sub: String,
    #[serde(default)]
    pub exp: i64,
    #[serde(default)]
    pub azp: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// The session the token belongs to (Clerk's `sid`): what a sign-out
    /// on another device revokes.
    #[serde(default)]
    pub sid: Option<String>,
}

/// Where the verifier gets keys: fixed (PEM key, development issuer) or a
/// live JWKS cache.
#[derive(Clone)]
pub enum KeyProvider {
    Static(Arc<KeySet>),
    Jwks(Arc<JwksCache>),
}

impl KeyProvider {
    async fn find(&self, kid: Option<&str>) -> Result<VerifyKey, AuthError> {
        match self {
            KeyProvider::Static(set) => set.find(kid).cloned().ok_or(AuthError::UnknownKey),
            KeyProvider::Jwks(cache) => cache.find(kid).await,
        }
    }
}

/// Verifies tokens against the configured issuer.
pub struct Verifier {
    keys: KeyProvider,
    issuer: String,
    leeway: Duration,
    authorized_parties: HashSet<String>,
    /// Sessions and users refused although their tokens verify.
    revocations: Arc<Revocations>,
    /// Where the time of each verification goes (`None` in unit tests).
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl Verifier {
    pub fn new(
        keys: KeyProvider,
        issuer: String,
        leeway: Duration,
        authorized_parties: &[String],
    ) -> Verifier {
        Verifier {
            keys,
            issuer,
            leeway,
            authorized_parties: authorized_parties.iter().cloned().collect(),
            revocations: Arc::default(),
            metrics: None,
        }
    }

    /// Records each verification's time in `metrics`
    /// (`reeltime_token_verify_seconds`).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Verifier {
        self.metrics = Some(metrics);
        self
    }

    /// Refuses the tokens of what `revocations` lists (Clerk webhooks fill
    /// it); shared with whoever updates it.
    pub fn with_revocations(mut self, revocations: Arc<Revocations>) -> Verifier {
        self.revocations = revocations;
        self
    }

    /// The issuer tokens must name in `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The leeway applied to `exp` and `nbf`, also used for expiry timers.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Checks signature, algorithm, `exp`, `nbf`, `iss`, `sub` and `azp`.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let started = std::time::Instant::now();
        let verified = self.verify_untimed(token).await;
        if let Some(metrics) = &self.metrics {
            (metrics.token_verify_seconds).observe(started.elapsed().as_secs_f64());
        }
        verified
    }

    async fn verify_untimed(&self, token: &str) -> Result<Claims, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        // Read the header ourselves: `alg: none` and unknown algorithms must
        // be refused by name, and `jku`/`x5u`/`jwk` are simply never read.
        let header = read_header(token)?;
        let key = self.keys.find(header.kid.as_deref()).await?;
        let algorithm: Algorithm = header
            .alg
            .parse()
            .map_err(|_| AuthError::AlgorithmNotAllowed)?;
        if algorithm != key.algorithm {
            return Err(AuthError::AlgorithmNotAllowed);
        }

        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);

        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|err| classify(err.kind()))?;
        let claims = data.claims;
        if claims.sub.is_empty() || claims.sub.len() > 255 {
            return Err(AuthError::MissingClaim);
        }
        if !self.authorized_parties.is_empty() {
            let listed = claims
                .azp
                .as_deref()
                .is_some_and(|azp| self.authorized_parties.contains(azp.trim_end_matches('/')));
            if !listed {
                return Err(AuthError::PartyNotAllowed);
            }
        }
        self.still_allowed(&claims)?;
        Ok(claims)
    }

    /// Whether verified `claims` are still let in: their user was not
    /// deleted, their session not revoked. [`Verifier::verify`] checks it;
    /// the gateway checks again once a socket is registered, so a
    /// revocation that arrived in between still reaches it.
    pub fn still_allowed(&self, claims: &Claims) -> Result<(), AuthError> {
        if self.revocations.is_empty() {
            return Ok(());
        }
        if self.revocations.is_revoked(&user_subject(&claims.sub)) {
            return Err(AuthError::UserDeleted);
        }
        if claims
            .sid
            .as_deref()
            .is_some_and(|sid| self.revocations.is_revoked(&session_subject(sid)))
        {
            return Err(AuthError::SessionRevoked);
        }
        Ok(())
    }
}

fn read_header(token: &str) -> Result<Header, AuthError> {
    let encoded = token.split('.').next().ok_or(AuthError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| AuthError::Malformed)?;
    let header: Header = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    if header.alg.eq_ignore_ascii_case("none") || header.alg.starts_with("HS") {
        return Err(AuthError::AlgorithmNotAllowed);
    }
    Ok(header)
}

fn classify(kind: &jsonwebtoken::errors::ErrorKind) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => AuthError::BadSignature,
        K::ExpiredSignature => AuthError::Expired,
        K::ImmatureSignature => AuthError::NotYetValid,
        K::InvalidIssuer => AuthError::WrongIssuer,
        K::MissingRequiredClaim(_) | K::InvalidSubject => AuthError::MissingClaim,
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => {
            AuthError::AlgorithmNotAllowed
        }
        _ => AuthError::Malformed,
    }
}
