//! A synthetic import source for load tests only (`REELTIME_SYNTHETIC_IMPORTS=1`):
//! `synthetic:?duration_ms=5000&steps=50` makes `steps` progress changes over
//! `duration_ms`, then completes. It goes through the same runner, store,
//! bus and sockets as a real import; only the download is replaced, and it
//! does not wait in the download line (it still counts against the
//! node's download slots when work is claimed).

use std::time::Duration;

use async_trait::async_trait;
use reeltime_protocol::Import;
use serde_json::json;
use url::Url;

use super::{Accepted, Fetched, Output, Resume, Source, SourceError, SourceJob, SourceSpec, kind};
use crate::imports::ImportServiceError;
use crate::imports::runner::PROGRESS_EVERY;

pub const SCHEME: &str = "synthetic";

/// Bytes a synthetic import pretends to download per step.
const BYTES_PER_STEP: u64 = 64 * 1024;

/// What a synthetic URL asks for.
pub struct Plan {
    pub steps: u64,
    /// Time between steps, never under the per-import progress limit.
    pub interval: Duration,
}

impl Plan {
    pub fn parse(url: &Url) -> Result<Plan, String> {
        let mut duration_ms: u64 = 5_000;
        let mut steps: u64 = 50;
        for (key, value) in url.query_pairs() {
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{key} must be a whole number"))
            };
            match key.as_ref() {
                "duration_ms" => duration_ms = number()?,
                "steps" => steps = number()?,
                _ => return Err(format!("unknown synthetic parameter {key}")),
            }
        }
        if !(1..=100_000).contains(&steps) || duration_ms > 86_400_000 {
            return Err("steps must be 1..=100000 and duration_ms at most a day".into());
        }
        let interval = Duration::from_millis(duration_ms / steps).max(PROGRESS_EVERY);
        Ok(Plan { steps, interval })
    }

    fn of(import: &Import) -> Result<Plan, String> {
        Url::parse(import.source_url.as_deref().unwrap_or_default())
            .map_err(|err| err.to_string())
            .and_then(|url| Plan::parse(&url))
    }

    fn total(&self) -> u64 {
        self.steps * BYTES_PER_STEP
    }
}

/// Plays a [`Plan`]: progress only, nothing stored.
pub struct SyntheticSource {
    /// `REELTIME_SYNTHETIC_IMPORTS`: whether new ones are accepted. Stored
    /// ones run either way.
    allowed: bool,
}

impl SyntheticSource {
    pub fn new(allowed: bool) -> SyntheticSource {
        SyntheticSource { allowed }
    }
}

#[async_trait]
impl Source for SyntheticSource {
    fn kind(&self) -> &'static str {
        kind::SYNTHETIC
    }

    async fn accept(&self, spec: &SourceSpec) -> Result<Accepted, ImportServiceError> {
        let url = spec.url()?;
        if !self.allowed {
            return Err(ImportServiceError::UrlNotAllowed(
                "synthetic imports are off (REELTIME_SYNTHETIC_IMPORTS)".into(),
            ));
        }
        Plan::parse(&url).map_err(ImportServiceError::BadRequest)?;
        Ok(Accepted::url(&url, "video".into()))
    }

    fn waits_in_download_line(&self) -> bool {
        false
    }

    fn output(&self) -> Output {
        Output::ProgressOnly
    }

    fn bytes_total(&self, import: &Import) -> Option<u64> {
        Plan::of(import).ok().map(|plan| plan.total())
    }

    /// The plan is in the URL: it plays again on any node.
    fn resume(&self) -> Resume {
        Resume::FromScratch
    }

    /// Step 0 is the runner's start; steps 1..steps are reported, each
    /// one published before the next (a load test counts them), and the
    /// last completes the import.
    async fn fetch(&self, job: SourceJob) -> Result<Fetched, SourceError> {
        let plan =
            Plan::of(&job.import).map_err(|message| SourceError::new("bad_request", message))?;
        let total = plan.total();
        let mut ticker = tokio::time::interval(plan.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        for step in 1..plan.steps {
            ticker.tick().await;
            job.progress.report(step * BYTES_PER_STEP, Some(total));
            job.progress.published().await;
        }
        ticker.tick().await;
        Ok(Fetched::Finished {
            bytes: total,
            result: json!({"size_bytes": total, "synthetic": true}),
        })
    }
}
