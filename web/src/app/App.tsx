import { useCallback, useEffect, useMemo, useState } from 'react';
import { WebSocketProvider } from '@reeltime/react';
import { fetchConfig, type AppConfig } from './api';
import { Dashboard } from './components/Dashboard';
import { SignIn } from './components/SignIn';
import { createDevTokenSource, type DevTokenSource } from './devTokens';
import { clearSession, loadSession, saveSession, type DevSession } from './session';

/** Same origin as the page: ws:// for http, wss:// for https. */
export function progressSocketUrl(location: Pick<Location, 'protocol' | 'host'> = window.location): string {
  return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/api/ws/progress`;
}

type ConfigState = { kind: 'loading' } | { kind: 'error'; message: string } | { kind: 'ready'; config: AppConfig };

/**
 * The page: loads `/api/config`, signs in with the development issuer,
 * then mounts `<WebSocketProvider>` around the dashboard, exactly as a
 * Clerk app would with `useAuth().getToken`.
 */
export function App() {
  const [configState, setConfigState] = useState<ConfigState>({ kind: 'loading' });
  const [session, setSession] = useState<DevSession | null>(() => loadSession());
  const [tokens, setTokens] = useState<DevTokenSource | null>(() =>
    session === null ? null : createDevTokenSource({ name: session.name, ttlSecs: session.ttlSecs }),
  );

  const loadConfig = useCallback(() => {
    setConfigState({ kind: 'loading' });
    fetchConfig()
      .then((config) => setConfigState({ kind: 'ready', config }))
      .catch((err: unknown) =>
        setConfigState({ kind: 'error', message: err instanceof Error ? err.message : String(err) }),
      );
  }, []);
  useEffect(loadConfig, [loadConfig]);

  const signIn = useCallback(async (next: DevSession) => {
    const source = createDevTokenSource({ name: next.name, ttlSecs: next.ttlSecs });
    await source.getToken(); // fail here, on the form, if the issuer is unreachable
    saveSession(next);
    setTokens(source);
    setSession(next);
  }, []);

  const signOut = useCallback(() => {
    tokens?.clear();
    clearSession();
    setTokens(null);
    setSession(null);
  }, [tokens]);

  const wsUrl = useMemo(() => progressSocketUrl(), []);

  if (configState.kind === 'loading') {
    return (
      <main className="center">
        <p className="muted">Loading…</p>
      </main>
    );
  }
  if (configState.kind === 'error') {
    return (
      <main className="center">
        <div className="card">
          <h1 className="brand">Reeltime</h1>
          <p className="form-error" role="alert">
            Could not reach the server: {configState.message}
          </p>
          <button type="button" className="button" onClick={loadConfig}>
            Retry
          </button>
        </div>
      </main>
    );
  }
  const { config } = configState;
  if (!config.dev_issuer) {
    return (
      <main className="center">
        <div className="card" data-testid="needs-dev-issuer">
          <h1 className="brand">Reeltime</h1>
          <p>
            This page signs you in with the server&apos;s development issuer, which is off because the server is
            configured for Clerk.
          </p>
          <p className="muted">
            Clerk apps mount the provider themselves:{' '}
            <code>{'<WebSocketProvider getToken={useAuth().getToken} url="wss://…/api/ws/progress">'}</code>. See{' '}
            <code>web/README.md</code>.
          </p>
        </div>
      </main>
    );
  }
  if (session === null || tokens === null) return <SignIn onSignIn={signIn} />;
  return (
    <WebSocketProvider key={session.name} url={wsUrl} getToken={tokens.getToken}>
      <Dashboard userName={session.name} getToken={tokens.getToken} config={config} onSignOut={signOut} />
    </WebSocketProvider>
  );
}
