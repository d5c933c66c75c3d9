//! The request log line, without its secrets.

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

/// Logs each request without its secrets: the `token` query parameter and
/// the `sig` of media links are redacted, and headers are never logged.
pub async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let target = redact_target(request.uri().path(), request.uri().query());
    let response = next.run(request).await;
    tracing::info!(
        %method,
        target = %target,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

/// Query parameters whose values are secrets: a token, or a media link's
/// signature (which opens that media for anyone until it expires).
const SECRET_PARAMETERS: [&str; 2] = ["token", "sig"];

/// `path?query` with the value of every secret parameter replaced.
pub fn redact_target(path: &str, query: Option<&str>) -> String {
    let Some(query) = query else {
        return path.to_string();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| {
            let key = pair.split_once('=').map_or(pair, |(key, _)| key);
            let decoded: String = url::form_urlencoded::parse(key.as_bytes())
                .map(|(name, _)| name.into_owned())
                .collect();
            if SECRET_PARAMETERS
                .iter()
                .any(|secret| decoded.eq_ignore_ascii_case(secret))
            {
                format!("{key}=REDACTED")
            } else {
                pair.to_string()
            }
        })
        .collect();
    format!("{path}?{}", redacted.join("&"))
}

#[cfg(test)]
mod tests {
    use super::redact_target;

    #[test]
    fn media_signatures_never_reach_the_log() {
        assert_eq!(
            redact_target("/media/imp/video.mp4", Some("exp=1700000000&sig=abcDEF")),
            "/media/imp/video.mp4?exp=1700000000&sig=REDACTED"
        );
    }

    #[test]
    fn token_never_reaches_the_log() {
        assert_eq!(
            redact_target("/api/ws/progress", Some("token=eyJhbGc.x.y&v=1")),
            "/api/ws/progress?token=REDACTED&v=1"
        );
        assert_eq!(
            redact_target("/a", Some("TOKEN=s3cret")),
            "/a?TOKEN=REDACTED"
        );
        assert_eq!(redact_target("/a", None), "/a");
        assert_eq!(
            redact_target("/a", Some("%74oken=x")),
            "/a?%74oken=REDACTED"
        );
    }
}
