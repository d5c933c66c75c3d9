import { useState, type FormEvent } from 'react';
import type { GetToken } from '../../client/types';
import { useProgressClient } from '../../react';
import { ApiError, createImport, type Sample } from '../api';
import { describeError } from '../format';

/**
 * Starts imports: a URL (and optional title), or one click on a sample.
 * The REST answer is merged into the client right away, so the new row
 * appears even before its first WebSocket update.
 */
export function ImportForm({ getToken, samples }: { getToken: GetToken; samples: readonly Sample[] }) {
  const client = useProgressClient();
  const [url, setUrl] = useState('');
  const [title, setTitle] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

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
    <section className="card" aria-labelledby="new-import">
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
