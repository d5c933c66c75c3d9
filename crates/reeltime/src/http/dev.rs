//! The development issuer's endpoints, served only when no key source is
//! configured: `POST /dev/token` mints a token as Clerk would, and
//! `GET /dev/jwks.json` publishes the keys that check it. Both answer only
//! requests to a loopback host.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::JwkSet;
use reeltime_protocol::{DevTokenRequest, DevTokenResponse};

use super::ApiError;
use crate::auth::DevIssuer;

/// `POST /dev/token`: a development token, as Clerk would mint one.
pub async fn dev_token(
    State(dev): State<Arc<DevIssuer>>,
    body: Bytes,
) -> Result<Json<DevTokenResponse>, ApiError> {
    let request: DevTokenRequest = serde_json::from_slice(&body).map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected JSON like {{\"sub\":\"alice\",\"ttl_secs\":60}}: {err}"),
        )
    })?;
    let sub = request.sub.trim();
    if sub.is_empty() || sub.len() > 128 || sub.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "sub must be 1 to 128 printable characters",
        ));
    }
    let ttl = request.ttl_secs.unwrap_or(60);
    if !(1..=crate::auth::DEV_MAX_TTL_SECS).contains(&ttl) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "ttl_secs must be between 1 and {}",
                crate::auth::DEV_MAX_TTL_SECS
            ),
        ));
    }
    let (token, expires_at) = dev
        .mint(sub, ttl, request.email.as_deref())
        .map_err(ApiError::internal)?;
    Ok(Json(DevTokenResponse { token, expires_at }))
}

/// `GET /dev/jwks.json`: the development issuer's public keys.
pub async fn dev_jwks(State(dev): State<Arc<DevIssuer>>) -> Json<JwkSet> {
    Json(dev.jwks().clone())
}

/// The development issuer mints tokens for anyone who asks, so it answers
/// only pages loaded from a loopback name: a DNS-rebinding page on
/// `evil.example` that resolves to 127.0.0.1 sends its own `Host` and is
/// refused.
pub async fn loopback_host_only(request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| {
            request
                .uri()
                .authority()
                .map(|authority| authority.as_str())
        });
    if host.is_some_and(is_loopback_host) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the development issuer answers only requests to a loopback host (localhost, 127.0.0.1, [::1])",
        )
        .into_response()
    }
}

/// `localhost`, `*.localhost`, `127.x.y.z` or `[::1]`, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "localhost",
            "localhost:8080",
            "app.localhost:3000",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.1.2.3:1",
            "[::1]:8080",
            "[::1]",
            "LOCALHOST.",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "[::ffff:7f00:1]:80x",
            "",
            "0.0.0.0:8080",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
