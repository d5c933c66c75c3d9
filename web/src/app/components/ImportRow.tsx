import { useState } from 'react';
import type { GetToken, Import } from '@reeltime/client';
import { useProgressClient } from '@reeltime/react';
import { ApiError, cancelImport, deleteImport } from '../api';
import {
  describeError,
  displayTitle,
  formatTransfer,
  humanize,
  isFinished,
  percentOf,
  statusLabel,
} from '../format';

/**
 * One import: title, a real progress bar with percent, stage, bytes, queue
 * position, the poster and player once completed, errors in plain words,
 * and Cancel (while running) or Delete (once finished).
 */
export function ImportRow({ item, getToken }: { item: Import; getToken: GetToken }) {
  const client = useProgressClient();
  const [busy, setBusy] = useState(false);
  const [actionError, setActionError] = useState<string | null>(null);
  const finished = isFinished(item.status);
  const percent = percentOf(item);
  const transfer = formatTransfer(item);
  const videoUrl = typeof item.result?.video_url === 'string' ? item.result.video_url : null;
  const posterUrl = typeof item.result?.thumbnail_url === 'string' ? item.result.thumbnail_url : null;
  // The wide media column is for the player; a finished import without one keeps the small placeholder.
  const showPlayer = item.status === 'completed' && videoUrl !== null;
  const showStage = item.stage && item.stage !== item.status && !finished;

  async function runAction(action: () => Promise<void>) {
    setBusy(true);
    setActionError(null);
    try {
      await action();
    } catch (err) {
      setActionError(err instanceof ApiError ? describeError(err) : String(err));
    } finally {
      setBusy(false);
    }
  }

  const onCancel = () =>
    runAction(async () => {
      const updated = await cancelImport(getToken, item.id);
      if (updated !== null) client.mergeImport(updated);
    });
  const onDelete = () =>
    runAction(async () => {
      await deleteImport(getToken, item.id);
      client.forgetImport(item.id);
    });

  return (
    <li
      className={`import import-${item.status}${showPlayer ? ' import-with-player' : ''}`}
      data-testid="import-row"
      data-import-id={item.id}
      data-status={item.status}
    >
      <div className="import-media">
        {showPlayer ? (
          <video controls preload="metadata" poster={posterUrl ?? undefined} src={videoUrl} data-testid="import-video" />
        ) : posterUrl !== null ? (
          <img src={posterUrl} alt="" data-testid="import-poster" />
        ) : (
          <div className="import-placeholder" aria-hidden="true">
            ▶
          </div>
        )}
      </div>
      <div className="import-body">
        <div className="import-head">
          <h3 className="import-title" title={item.source_url ?? item.file_name ?? undefined}>
            {displayTitle(item)}
          </h3>
          <span className={`pill pill-${item.status}`}>{statusLabel(item.status)}</span>
        </div>
        <div className="import-bar">
          <progress
            max={1}
            value={percent === null ? undefined : item.status === 'completed' ? 1 : (item.progress ?? 0)}
            aria-valuemin={0}
            aria-valuemax={100}
            aria-valuenow={percent ?? undefined}
            aria-label={`Progress of ${displayTitle(item)}`}
            data-testid="import-progress"
          />
          <span className="import-percent" data-testid="import-percent">
            {percent === null ? '–' : `${percent}%`}
          </span>
        </div>
        <div className="import-meta">
          {showStage && <span data-testid="import-stage">{humanize(item.stage!)}</span>}
          {item.status === 'queued' && typeof item.queue_position === 'number' && (
            <span data-testid="import-queue">#{item.queue_position} in queue</span>
          )}
          {transfer !== null && <span data-testid="import-bytes">{transfer}</span>}
          {item.attempt > 1 && <span>attempt {item.attempt}</span>}
          {item.source_url ? (
            <a className="import-source" href={item.source_url} target="_blank" rel="noreferrer noopener">
              {item.source_url}
            </a>
          ) : item.source === 'upload' ? (
            <span className="import-source" data-testid="import-upload-source">
              {item.file_name && item.file_name !== displayTitle(item) ? `uploaded from ${item.file_name}` : 'uploaded file'}
            </span>
          ) : null}
        </div>
        {item.error !== null && (
          <p className="import-error" data-testid="import-error">
            {describeError(item.error)}
          </p>
        )}
        {actionError !== null && (
          <p className="import-error" role="alert">
            {actionError}
          </p>
        )}
      </div>
      <div className="import-actions">
        {finished ? (
          <button type="button" className="button button-quiet" disabled={busy} onClick={() => void onDelete()} data-testid="import-delete">
            Delete
          </button>
        ) : (
          <button type="button" className="button" disabled={busy} onClick={() => void onCancel()} data-testid="import-cancel">
            Cancel
          </button>
        )}
      </div>
    </li>
  );
}
