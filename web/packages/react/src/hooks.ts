import { useCallback, useContext, useSyncExternalStore } from 'react';
import type { ProgressClient } from '@reeltime/client';
import type { ConnectionState, Import } from '@reeltime/client';
import { ProgressClientContext } from './context.js';

/**
 * The client of the nearest `<WebSocketProvider>`, for imperative calls
 * (`close()` on sign-out, `restart()` after signing in again,
 * `mergeImport()` with a REST answer). Throws outside a provider, because
 * that is always a wiring mistake.
 */
export function useProgressClient(): ProgressClient {
  const client = useContext(ProgressClientContext);
  if (client === null) throw new Error('useProgressClient must be used inside <WebSocketProvider>');
  return client;
}

/** All of the user's known imports, newest first; re-renders on any change to them. */
export function useImports(): readonly Import[] {
  const client = useProgressClient();
  return useSyncExternalStore(client.subscribe, client.getImports, client.getImports);
}

/** One import by id (undefined until known); re-renders when it changes. */
export function useImport(id: string): Import | undefined {
  const client = useProgressClient();
  const read = useCallback(() => client.getImport(id), [client, id]);
  return useSyncExternalStore(client.subscribe, read, read);
}

/** The connection state: status, last close code and reason, next retry time. */
export function useConnectionStatus(): ConnectionState {
  const client = useProgressClient();
  return useSyncExternalStore(client.subscribe, client.getStatus, client.getStatus);
}
