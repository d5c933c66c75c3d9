//! Who is on the other end: token verification for every key source, the
//! JWKS cache, and the built-in development issuer.
//!
//! Every token, whether from Clerk, another JWKS issuer or the development
//! issuer, goes through the one [`Verifier`], so development exercises the
//! same checks as production. The app's backend has keys of its own
//! ([`server_keys`]), never accepted where a user's token is.

mod dev_issuer;
mod jwks;
mod keys;
pub mod revocations;
pub mod server_keys;
mod verifier;

pub use dev_issuer::{DevIssuer, MAX_TTL_SECS as DEV_MAX_TTL_SECS};
pub use jwks::JwksCache;
pub use keys::{KeySet, VerifyKey};
pub use revocations::Revocations;
pub use server_keys::{SECRET_PREFIX, ServerKeyError, ServerKeys};
pub use verifier::{AuthError, Claims, KeyProvider, Verifier};
