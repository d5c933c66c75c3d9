//! `GET /samples/{file}[?kbps=N]`: the embedded sample videos
//! (`media::samples`), at full speed or slowed to about N kilobits per
//! second, so a person can watch an import's progress bar move.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, RawQuery};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use tokio::time::{Interval, MissedTickBehavior};

use super::ApiError;
use crate::media::samples::find;
use crate::media::serve::content_type_for;

/// Where the router mounts [`samples_handler`].
pub const ROUTE: &str = "/samples/{file}";

/// How often a throttled download sends a slice.
const TICK: Duration = Duration::from_millis(100);

/// Slowest and fastest throttles accepted.
const KBPS_RANGE: std::ops::RangeInclusive<u64> = 8..=1_000_000;

/// `GET /samples/{file}[?kbps=N]`: the whole file (no Range), at full speed
/// or at about N kilobits per second. `Content-Length` is always set, so an
/// importer knows the total from the start.
pub async fn samples_handler(
    UrlPath(file): UrlPath<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(sample) = find(&file) else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such sample").into_response();
    };
    let kbps = match kbps(query.as_deref().unwrap_or_default()) {
        Ok(kbps) => kbps,
        Err(message) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message).into_response();
        }
    };
    let body = match kbps {
        None => Body::from(Bytes::from_static(sample.bytes())),
        Some(kbps) => Body::from_stream(throttled(sample.bytes(), kbps)),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    let path = std::path::Path::new(sample.file);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type_for(path)),
    );
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(sample.size_bytes()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The `kbps` parameter: `None` for full speed.
fn kbps(query: &str) -> Result<Option<u64>, String> {
    let value = url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "kbps")
        .map(|(_, value)| value.into_owned());
    let Some(value) = value else {
        return Ok(None);
    };
    match value.trim().parse::<u64>() {
        Ok(kbps) if KBPS_RANGE.contains(&kbps) => Ok(Some(kbps)),
        _ => Err(format!(
            "kbps must be a whole number from {} to {}",
            KBPS_RANGE.start(),
            KBPS_RANGE.end()
        )),
    }
}

/// Bytes per [`TICK`] for a rate in kilobits per second.
fn slice_len(kbps: u64) -> usize {
    let per_second = kbps * 1000 / 8;
    let per_tick = per_second * TICK.as_millis() as u64 / 1000;
    usize::try_from(per_tick.max(1)).unwrap_or(usize::MAX)
}

/// `bytes` in slices, one per tick, starting at once.
fn throttled(
    bytes: &'static [u8],
    kbps: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    let slice = slice_len(kbps);
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    stream::unfold(
        (bytes, ticks),
        move |(rest, mut ticks): (&'static [u8], Interval)| async move {
            if rest.is_empty() {
                return None;
            }
            ticks.tick().await;
            let (now, later) = rest.split_at(slice.min(rest.len()));
            Some((Ok(Bytes::from_static(now)), (later, ticks)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[test]
    fn kbps_parameter() {
        assert_eq!(kbps(""), Ok(None));
        assert_eq!(kbps("kbps=500"), Ok(Some(500)));
        assert_eq!(kbps("x=1&kbps=64"), Ok(Some(64)));
        assert!(kbps("kbps=0").is_err());
        assert!(kbps("kbps=fast").is_err());
        assert_eq!(
            slice_len(800),
            10_000,
            "800 kbit/s = 100 kB/s = 10 kB per 100 ms"
        );
        assert_eq!(slice_len(8), 100);
    }

    #[tokio::test]
    async fn throttling_paces_the_bytes() {
        let data: &'static [u8] = &[1; 25_000];
        let start = tokio::time::Instant::now();
        // 800 kbit/s: 10 kB per tick, so three slices over two ticks.
        let slices: Vec<_> = throttled(data, 800).collect().await;
        assert_eq!(slices.len(), 3);
        let total: usize = slices.iter().flatten().map(Bytes::len).sum();
        assert_eq!(total, 25_000);
        // A loaded machine can only make it slower.
        assert!(start.elapsed() >= TICK * 2, "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn the_handler_serves_a_sample() {
        let response = samples_handler(UrlPath("sample-short.mp4".into()), RawQuery(None)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "video/mp4");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(&body[4..8], b"ftyp");

        let missing = samples_handler(UrlPath("nope.mp4".into()), RawQuery(None)).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let bad = samples_handler(
            UrlPath("sample-short.mp4".into()),
            RawQuery(Some("kbps=-1".into())),
        )
        .await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    }
}
