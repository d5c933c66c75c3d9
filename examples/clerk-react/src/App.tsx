import { SignedIn, SignedOut, SignInButton, UserButton, useAuth } from '@clerk/clerk-react';
import type { GetToken, Import } from '@reeltime/client';
import { useConnectionStatus, useImports, useProgressClient, WebSocketProvider } from '@reeltime/react';
import { useUpload } from '@reeltime/react/upload';
import { useState, type FormEvent } from 'react';

/** The Reeltime server: this app's own origin (Vite's proxy in dev) unless VITE_REELTIME_URL says otherwise. */
const server = import.meta.env.VITE_REELTIME_URL ?? window.location.origin;
const socketUrl = `${server.replace(/^http/, 'ws')}/api/ws/progress`;

export function App() {
  return (
    <main style={{ maxWidth: 720, margin: '2rem auto', fontFamily: 'system-ui, sans-serif' }}>
      <header style={{ display: 'flex', justifyContent: 'space-between' }}>
        <h1>My videos</h1>
        <SignedOut>
          <SignInButton />
        </SignedOut>
        <SignedIn>
          <UserButton />
        </SignedIn>
      </header>
      {/* Signing out unmounts the provider: the socket closes with 1000, imports go on on the server. */}
      <SignedIn>
        <LiveImports />
      </SignedIn>
    </main>
  );
}

/** Clerk's getToken goes straight into the provider: it is called for every socket and refresh. */
function LiveImports() {
  const { getToken } = useAuth();
  return (
    <WebSocketProvider url={socketUrl} getToken={getToken}>
      <Status />
      <ImportForm getToken={getToken} />
      <UploadPicker />
      <ImportList />
    </WebSocketProvider>
  );
}

function Status() {
  const { status, lastCloseReason } = useConnectionStatus();
  return (
    <p>
      Live updates: <strong>{status}</strong>
      {status === 'unauthorized' && lastCloseReason ? ` (${lastCloseReason})` : null}
    </p>
  );
}

/** Starts a URL import over REST; the REST answer is merged so the row shows before the first socket update. */
function ImportForm({ getToken }: { getToken: GetToken }) {
  const client = useProgressClient();
  const [url, setUrl] = useState('');
  const [error, setError] = useState<string | null>(null);

  async function onSubmit(event: FormEvent) {
    event.preventDefault();
    setError(null);
    const response = await fetch(`${server}/api/imports`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${await getToken()}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ url }),
    });
    if (!response.ok) {
      const body = (await response.json().catch(() => null)) as { error?: { message?: string } } | null;
      return setError(body?.error?.message ?? `The server answered ${response.status}`);
    }
    client.mergeImport((await response.json()) as Import);
    setUrl('');
  }

  return (
    <form onSubmit={onSubmit}>
      <input type="url" required placeholder="https://example.com/video.mp4" value={url} onChange={(e) => setUrl(e.target.value)} />
      <button type="submit">Import</button>
      {error && <p role="alert">{error}</p>}
    </form>
  );
}

/** Uploads from disk (tus, resumable): the import row appears over the socket as soon as the upload exists. */
function UploadPicker() {
  const { upload, uploads } = useUpload();
  const refused = uploads.filter((entry) => entry.error !== null && entry.importId === null);
  return (
    <p>
      Or upload:{' '}
      <input
        type="file"
        accept="video/*"
        multiple
        onChange={(event) => {
          for (const file of Array.from(event.currentTarget.files ?? [])) upload(file);
          event.currentTarget.value = '';
        }}
      />
      {refused.map((entry) => (
        <span key={entry.key} role="alert">
          {' '}
          {entry.fileName}: {entry.error?.message}
        </span>
      ))}
    </p>
  );
}

/** The live list, newest first: every tab of the user sees the same rows and bars. */
function ImportList() {
  const imports = useImports();
  return (
    <ul>
      {imports.map((item) => (
        <li key={item.id}>
          {item.title ?? item.file_name ?? item.source_url} ({item.source}): {item.status}{' '}
          <progress max={1} value={item.progress ?? undefined} /> {item.error?.message}
          {item.status === 'completed' && typeof item.result?.video_url === 'string' && (
            <video controls width={320} src={item.result.video_url} />
          )}
        </li>
      ))}
    </ul>
  );
}
