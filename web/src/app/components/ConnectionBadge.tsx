import { CloseCode } from '@reeltime/client';
import type { ConnectionState } from '@reeltime/client';
import { useConnectionStatus } from '@reeltime/react';
import { secondsUntil } from '../format';
import { useNow } from '../useNow';

/** The badge text for a connection state at time `now`. Exported for tests. */
export function badgeLabel(state: ConnectionState, now: number): string {
  switch (state.status) {
    case 'open':
      return 'Live';
    case 'connecting':
      return 'Connecting…';
    case 'reconnecting': {
      if (state.nextRetryAt === null) return 'Reconnecting…';
      const seconds = secondsUntil(state.nextRetryAt, now);
      return seconds > 0 ? `Reconnecting in ${seconds} s` : 'Reconnecting…';
    }
    case 'offline':
      return 'Offline';
    case 'unauthorized':
      return state.lastCloseCode === CloseCode.POLICY_VIOLATION ? 'Token refused' : 'Signed out';
    case 'closed':
      return 'Signed out';
  }
}

/**
 * Shows whether updates are live, with a countdown while waiting to
 * reconnect and, when live, how long the current token still has (watch it
 * jump back up when the client refreshes it on the open socket).
 */
export function ConnectionBadge() {
  const state = useConnectionStatus();
  const ticking = state.status === 'reconnecting' || (state.status === 'open' && state.tokenExpiresAt !== null);
  const now = useNow(ticking ? 250 : null);
  const lastClose =
    state.lastCloseCode !== null
      ? `Last close: ${state.lastCloseCode}${state.lastCloseReason ? ` (${state.lastCloseReason})` : ''}`
      : (state.lastCloseReason ?? undefined);
  return (
    <div className="connection">
      <span
        className={`badge badge-${state.status}`}
        data-testid="connection-badge"
        data-status={state.status}
        data-connection-id={state.connectionId ?? ''}
        title={lastClose}
        role="status"
        aria-live="polite"
      >
        <span className="badge-dot" aria-hidden="true" />
        {badgeLabel(state, now)}
      </span>
      {state.status === 'open' && state.tokenExpiresAt !== null && (
        <span className="token-life" data-testid="token-life">
          token valid {secondsUntil(state.tokenExpiresAt, now)} s
        </span>
      )}
    </div>
  );
}
