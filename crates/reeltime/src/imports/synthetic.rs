//! A synthetic import source for load tests only (`REELTIME_SYNTHETIC_IMPORTS=1`):
//! `synthetic:?duration_ms=5000&steps=50` makes `steps` progress changes over
//! `duration_ms`, then completes. It goes through the same runner, store,
//! bus and sockets as a real import; only the download is replaced.

use std::time::Duration;

use reeltime_protocol::ImportStatus;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::runner::PROGRESS_EVERY;
use super::{Imports, ImportsError};
use crate::store::OwnedImport;

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
}

/// Runs the plan: downloading, `steps` progress commits, completed.
pub async fn run(
    imports: &Imports,
    mut owned: OwnedImport,
    stop: &CancellationToken,
) -> Result<(), ImportsError> {
    let plan = Url::parse(&owned.import.source_url)
        .map_err(|err| err.to_string())
        .and_then(|url| Plan::parse(&url));
    let plan = match plan {
        Ok(plan) => plan,
        Err(message) => {
            let expected = owned.import.version;
            super::fail(&mut owned.import, "bad_request", message);
            imports.commit(&mut owned, expected).await?;
            return Ok(());
        }
    };
    let total = plan.steps * BYTES_PER_STEP;
    owned.import.status = ImportStatus::Downloading;
    owned.import.stage = Some("downloading".into());
    owned.import.bytes_total = Some(total);
    let mut ticker = tokio::time::interval(plan.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for step in 0..=plan.steps {
        if step > 0 {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = ticker.tick() => {}
            }
        } else {
            ticker.tick().await;
        }
        let expected = owned.import.version;
        let import = &mut owned.import;
        import.bytes_done = step * BYTES_PER_STEP;
        import.progress = Some(step as f64 / plan.steps as f64);
        if step == plan.steps {
            import.status = ImportStatus::Completed;
            import.stage = None;
            import.result = Some(json!({"size_bytes": total, "synthetic": true}));
        }
        if !imports.commit(&mut owned, expected).await? {
            return Ok(()); // cancelled
        }
    }
    Ok(())
}
