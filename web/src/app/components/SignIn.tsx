import { useState, type FormEvent } from 'react';
import { DEFAULT_TTL_SECS, TTL_CHOICES, type DevSession } from '../session';

/**
 * Development sign-in: any name gets tokens from the server's built-in
 * issuer. The token lifetime is selectable so short tokens can be used to
 * watch the socket refresh them without reconnecting.
 */
export function SignIn({ onSignIn }: { onSignIn: (session: DevSession) => Promise<void> }) {
  const [name, setName] = useState('');
  const [ttlSecs, setTtlSecs] = useState<number>(DEFAULT_TTL_SECS);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  async function onSubmit(event: FormEvent) {
    event.preventDefault();
    const trimmed = name.trim();
    if (trimmed === '') return;
    setBusy(true);
    setError(null);
    try {
      await onSignIn({ name: trimmed, ttlSecs });
    } catch (err) {
      setError(`Could not sign in: ${err instanceof Error ? err.message : String(err)}`);
      setBusy(false);
    }
  }

  return (
    <main className="center">
      <form className="card signin" onSubmit={onSubmit}>
        <h1 className="brand">Reeltime</h1>
        <p className="muted">Import videos and watch their progress live.</p>
        <label className="field">
          <span>Your name</span>
          <input
            type="text"
            required
            autoFocus
            maxLength={64}
            autoComplete="username"
            value={name}
            onChange={(e) => setName(e.target.value)}
            data-testid="signin-name"
          />
        </label>
        <label className="field">
          <span>Token lifetime</span>
          <select value={ttlSecs} onChange={(e) => setTtlSecs(Number(e.target.value))} data-testid="signin-ttl">
            {TTL_CHOICES.map((secs) => (
              <option key={secs} value={secs}>
                {secs} s{secs === DEFAULT_TTL_SECS ? ' (like Clerk)' : secs < 30 ? ' (watch refresh)' : ''}
              </option>
            ))}
          </select>
        </label>
        <button type="submit" className="button button-primary" disabled={busy} data-testid="signin-submit">
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
        {error !== null && (
          <p className="form-error" role="alert">
            {error}
          </p>
        )}
        <p className="hint">
          Development sign-in: this server mints its own tokens for any name. Real deployments use Clerk.
        </p>
      </form>
    </main>
  );
}
