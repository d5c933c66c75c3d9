//! The media stages, shared by every source that produces a file: wait
//! for a processing slot, probe, poster, and the web-ready copy when
//! needed, then the stored result.

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::files::{find_source, media_result, remove_file, result_files};
use super::job::{Outcome, map_unit};
use super::{DOWNLOAD_SHARE, Runner, TRANSCODE_FROM, stage};
use crate::imports::ImportServiceError;
use crate::media;
use crate::store::OwnedImport;

impl Runner {
    pub(super) async fn process(
        &self,
        owned: OwnedImport,
        stop: &CancellationToken,
    ) -> Result<(), ImportServiceError> {
        let Some(media) = &self.media else {
            return Ok(());
        };
        let dir = self.imports.dir_of(&owned.import.id);
        let Some(source) = find_source(&dir).await else {
            let outcome: Outcome<()> =
                Outcome::Failed("storage_error", "the downloaded file is missing".into());
            return self.finish_stage(owned, &dir, outcome).await;
        };
        let Some((mut owned, _slot)) = self.wait_in_line(&self.processing, owned, stop).await?
        else {
            return Ok(());
        };

        if !self
            .set_stage(&mut owned, stage::PROBING, DOWNLOAD_SHARE)
            .await?
        {
            return Ok(());
        }
        let probe = match media::probe(&media.tools, &source).await {
            Ok(probe) => probe,
            Err(err) => {
                return self
                    .finish_stage(owned, &dir, Outcome::<()>::from(err))
                    .await;
            }
        };
        if probe.duration_secs > self.max_duration.as_secs_f64() {
            let outcome: Outcome<()> = Outcome::Failed(
                "too_long",
                format!(
                    "the video is {:.0} s long; at most {} s are accepted",
                    probe.duration_secs,
                    self.max_duration.as_secs()
                ),
            );
            return self.finish_stage(owned, &dir, outcome).await;
        }

        if !self
            .set_stage(&mut owned, stage::POSTER, DOWNLOAD_SHARE + 0.02)
            .await?
        {
            return Ok(());
        }
        let poster = dir.join("poster.jpg");
        if let Err(err) = media::poster(
            &media.tools,
            &source,
            &poster,
            &probe,
            stop,
            media.stall_timeout,
        )
        .await
        {
            return self
                .finish_stage(owned, &dir, Outcome::<()>::from(err))
                .await;
        }

        let transcoded = media::needs_transcode(media.mode, &probe);
        let video = if transcoded {
            if !self
                .set_stage(&mut owned, stage::TRANSCODING, TRANSCODE_FROM)
                .await?
            {
                return Ok(());
            }
            let output = dir.join("video.mp4");
            let (progress_tx, progress_rx) = watch::channel(0.0_f64);
            let work = media::transcode(
                &media.tools,
                &source,
                &output,
                &probe,
                &progress_tx,
                stop,
                media.stall_timeout,
            );
            let outcome = self
                .track(
                    &mut owned,
                    stop,
                    work,
                    progress_rx,
                    |import, fraction| {
                        import.progress = Some(
                            TRANSCODE_FROM
                                + (1.0 - TRANSCODE_FROM) * fraction.clamp(0.0, 1.0) * 0.999,
                        );
                    },
                    |_| {},
                )
                .await?;
            match outcome {
                Outcome::Done(Ok(())) => {
                    remove_file(&source).await;
                    output
                }
                Outcome::Done(Err(err)) => {
                    return self
                        .finish_stage(owned, &dir, Outcome::<()>::from(err))
                        .await;
                }
                other => return self.finish_stage(owned, &dir, map_unit(other)).await,
            }
        } else {
            source
        };
        // Describe what is served: after a transcode, that is the new file.
        let served = if transcoded {
            match media::probe(&media.tools, &video).await {
                Ok(probe) => probe,
                Err(err) => {
                    return self
                        .finish_stage(owned, &dir, Outcome::<()>::from(err))
                        .await;
                }
            }
        } else {
            probe
        };
        let result = media_result(&served, &video, transcoded);
        // Checked before the upload too: no bytes are stored for nothing.
        if let Some(outcome) = self.over_quota(&owned.user_id, &result).await? {
            return self.finish_stage(owned, &dir, outcome).await;
        }
        // Put the files where they are served from before anyone gets a link.
        let storage = self.imports.storage();
        let files = result_files(&result);
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        if let Err(err) =
            media::storage::publish_import(storage.as_ref(), &owned.import.id, &dir, &files).await
        {
            let _ = storage.delete_import(&owned.import.id).await;
            let outcome: Outcome<()> =
                Outcome::Failed("storage_error", format!("could not store the video: {err}"));
            return self.finish_stage(owned, &dir, outcome).await;
        }
        self.complete(owned, &dir, result).await
    }
}
