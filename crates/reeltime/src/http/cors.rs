//! CORS for apps on other origins (`REELTIME_ALLOWED_ORIGINS`): tower-http's
//! [`CorsLayer`] answers preflights and marks real responses, with the
//! `Authorization` header allowed (bearer tokens, never cookies, so no
//! credentials mode) and the tus headers exposed. With the setting unset
//! nothing is added: no other origin may read a response.
//!
//! tower-http takes every `OPTIONS` request for a preflight, but tus
//! discovery is a plain `OPTIONS /api/uploads` that the route must answer.
//! So only an `OPTIONS` with `Access-Control-Request-Method` (what makes a
//! preflight, per the Fetch standard) goes to the layer; any other
//! `OPTIONS` goes to the routes and gets the allowed origin and exposed
//! headers added here, as a real request would.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_REQUEST_METHOD,
    AUTHORIZATION, CONTENT_TYPE, ORIGIN, VARY,
};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::cors::{AllowOrigin, CorsLayer, ExposeHeaders};

/// Request headers a tus client sends besides `Authorization`.
const TUS_REQUEST_HEADERS: [&str; 6] = [
    "tus-resumable",
    "upload-length",
    "upload-metadata",
    "upload-offset",
    "upload-defer-length",
    "x-requested-with",
];

/// Response headers a cross-origin tus client must read.
const EXPOSED: [&str; 8] = [
    "location",
    "upload-offset",
    "upload-length",
    "upload-expires",
    "tus-resumable",
    "tus-version",
    "tus-extension",
    "tus-max-size",
];

/// How long a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The CORS policy of the public listener: `None` when no origin is allowed.
#[derive(Clone)]
pub struct Cors {
    layer: Option<CorsLayer>,
    origins: Arc<Vec<HeaderValue>>,
}

impl Cors {
    /// The policy for `origins` (already checked by the config).
    pub fn new(origins: &[String]) -> Cors {
        let origins: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|origin| HeaderValue::from_str(origin).ok())
            .collect();
        if origins.is_empty() {
            return Cors {
                layer: None,
                origins: Arc::new(origins),
            };
        }
        let names = |list: &[&str]| -> Vec<HeaderName> {
            list.iter()
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .collect()
        };
        let mut allowed_headers = vec![AUTHORIZATION, CONTENT_TYPE];
        allowed_headers.extend(names(&TUS_REQUEST_HEADERS));
        let layer = CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.clone()))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PATCH,
                Method::HEAD,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers(allowed_headers)
            .expose_headers(ExposeHeaders::list(names(&EXPOSED)))
            .max_age(PREFLIGHT_MAX_AGE);
        Cors {
            layer: Some(layer),
            origins: Arc::new(origins),
        }
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        self.origins.iter().any(|allowed| allowed == origin)
    }
}

/// The middleware: preflights and real requests through the layer, plain
/// `OPTIONS` (tus discovery) to the routes.
pub async fn cors(State(cors): State<Cors>, request: Request, next: Next) -> Response {
    let Some(layer) = cors.layer.clone() else {
        return next.run(request).await;
    };
    let is_plain_options = request.method() == Method::OPTIONS
        && !request
            .headers()
            .contains_key(ACCESS_CONTROL_REQUEST_METHOD);
    if !is_plain_options {
        return match tower::Layer::layer(&layer, next).oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
    }
    let origin = request.headers().get(ORIGIN).cloned();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.append(VARY, HeaderValue::from_static("origin"));
    if let Some(origin) = origin.filter(|origin| cors.allows(origin)) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if let Ok(exposed) = HeaderValue::from_str(&EXPOSED.join(",")) {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, exposed);
        }
    }
    response.into_response()
}
