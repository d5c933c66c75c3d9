import { CloseCode } from '@reeltime/client';
import { useConnectionStatus, useProgressClient } from '@reeltime/react';

/**
 * A clear message when the client stopped because the server refused our
 * token (1008 twice) or we are signed out. The client deliberately stops
 * retrying then, so the person gets a choice instead of a silent loop.
 */
export function AuthErrorBanner({ onSignOut }: { onSignOut: () => void }) {
  const state = useConnectionStatus();
  const client = useProgressClient();
  if (state.status !== 'unauthorized') return null;
  const refused = state.lastCloseCode === CloseCode.POLICY_VIOLATION;
  return (
    <div className="banner banner-error" role="alert" data-testid="auth-error">
      <div>
        <strong>{refused ? 'The server refused your sign-in token.' : 'You are signed out.'}</strong>{' '}
        {refused
          ? `Live updates are stopped${state.lastCloseReason ? ` (reason: ${state.lastCloseReason})` : ''}. Try again, or sign in again.`
          : 'Sign in again to see live progress.'}
      </div>
      <div className="banner-actions">
        <button type="button" className="button" onClick={() => client.restart()}>
          Try again
        </button>
        <button type="button" className="button button-quiet" onClick={onSignOut}>
          Sign out
        </button>
      </div>
    </div>
  );
}
