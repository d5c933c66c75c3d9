import { useRef, useState, type DragEvent, type FormEvent } from 'react';
import type { GetToken } from '@reeltime/client';
import { useProgressClient } from '@reeltime/react';
import { useUpload } from '@reeltime/react/upload';
import { ApiError, createImport, type Sample } from '../api';
import { describeError, formatBytes } from '../format';

/**
 * Starts imports: a URL (and optional title), one click on a sample, or
 * files from the person's disk (picker or drag and drop, several at once).
 * The REST answer is merged into the client right away, so the new row
 * appears even before its first WebSocket update. An upload's row comes
 * from the server too: creating the tus upload creates the import, which
 * arrives over the socket; only what fails before that (too large, too many
 * uploads) is shown here.
 */
export function ImportForm({ getToken, samples }: { getToken: GetToken; samples: readonly Sample[] }) {
  const client = useProgressClient();
  const [url, setUrl] = useState('');
  const [title, setTitle] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [dragging, setDragging] = useState(false);
  const fileInput = useRef<HTMLInputElement>(null);
  const { upload, uploads, dismiss } = useUpload();
  // Uploads the server has no row for yet (starting) or never made (refused at creation).
  const pending = uploads.filter((entry) => entry.importId === null);

  function uploadFiles(files: FileList | null) {
    if (files === null) return;
    // The title field names a single file; several files keep their own names.
    const sharedTitle = files.length === 1 ? title.trim() || undefined : undefined;
    for (const file of Array.from(files)) upload(file, { title: sharedTitle });
    if (files.length === 1 && sharedTitle) setTitle('');
  }

  function onDrop(event: DragEvent) {
    event.preventDefault();
    setDragging(false);
    uploadFiles(event.dataTransfer.files);
  }

  async function start(input: { url: string; title?: string }): Promise<boolean> {
    setBusy(true);
    setError(null);
    try {
      client.mergeImport(await createImport(getToken, input));
      return true;
    } catch (err) {
      setError(err instanceof ApiError ? describeError(err) : `Could not start the import: ${String(err)}`);
      return false;
    } finally {
      setBusy(false);
    }
  }

  async function onSubmit(event: FormEvent) {
    event.preventDefault();
    const trimmed = url.trim();
    if (trimmed === '') return;
    if (await start({ url: trimmed, title: title.trim() || undefined })) {
      setUrl('');
      setTitle('');
    }
  }

  return (
    <section
      className={`card${dragging ? ' card-dragging' : ''}`}
      aria-labelledby="new-import"
      onDragOver={(event) => {
        if (!event.dataTransfer.types.includes('Files')) return;
        event.preventDefault();
        event.dataTransfer.dropEffect = 'copy';
        setDragging(true);
      }}
      onDragLeave={(event) => {
        if (!event.currentTarget.contains(event.relatedTarget as Node | null)) setDragging(false);
      }}
      onDrop={onDrop}
      data-testid="new-import"
    >
      <h2 id="new-import">New import</h2>
      <form className="import-form" onSubmit={onSubmit}>
        <label className="field field-grow">
          <span>Video URL</span>
          <input
            type="url"
            required
            placeholder="https://example.com/video.mp4"
            value={url}
            onChange={(e) => setUrl(e.target.value)}
            data-testid="import-url"
          />
        </label>
        <label className="field">
          <span>Title (optional)</span>
          <input
            type="text"
            maxLength={200}
            value={title}
            onChange={(e) => setTitle(e.target.value)}
            data-testid="import-title"
          />
        </label>
        <button type="submit" className="button button-primary" disabled={busy} data-testid="import-submit">
          {busy ? 'Starting…' : 'Import'}
        </button>
      </form>
      <div className="upload-zone" data-testid="upload-zone">
        <span className="muted">Or upload videos from your computer: drop them here, or</span>
        <button type="button" className="button" onClick={() => fileInput.current?.click()} data-testid="upload-pick">
          Choose files…
        </button>
        <input
          ref={fileInput}
          type="file"
          accept="video/*"
          multiple
          hidden
          onChange={(event) => {
            uploadFiles(event.currentTarget.files);
            event.currentTarget.value = '';
          }}
          data-testid="upload-input"
        />
      </div>
      {pending.length > 0 && (
        <ul className="upload-pending" data-testid="upload-pending">
          {pending.map((entry) => (
            <li key={entry.key} data-phase={entry.phase}>
              <span className="upload-name">{entry.fileName}</span>{' '}
              <span className="muted">({formatBytes(entry.bytesTotal)})</span>{' '}
              {entry.error !== null ? (
                <>
                  <span className="form-error" role="alert" data-testid="upload-error">
                    {describeError(entry.error)}
                  </span>{' '}
                  <button type="button" className="button button-quiet" onClick={() => dismiss(entry.key)}>
                    Dismiss
                  </button>
                </>
              ) : entry.phase === 'starting' ? (
                <span className="muted">starting…</span>
              ) : null}
            </li>
          ))}
        </ul>
      )}
      {error !== null && (
        <p className="form-error" role="alert" data-testid="import-form-error">
          {error}
        </p>
      )}
      {samples.length > 0 && (
        <div className="samples">
          <span className="muted">Or try a sample:</span>
          {samples.map((sample) => (
            <button
              key={sample.name}
              type="button"
              className="button button-chip"
              disabled={busy}
              title={sample.url}
              onClick={() => void start({ url: sample.url, title: sample.title })}
              data-testid={`sample-${sample.name}`}
            >
              {sample.title}
            </button>
          ))}
        </div>
      )}
    </section>
  );
}
