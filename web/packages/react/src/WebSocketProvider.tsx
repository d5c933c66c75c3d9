import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, type ReactNode } from 'react';
import { ProgressClient, type GetToken, type ProgressClientOptions } from '@reeltime/client';
import { ProgressClientContext, ProviderSettingsContext, type ProviderSettings } from './context.js';

/** Props of {@link WebSocketProvider}. */
export interface WebSocketProviderProps {
  /** ws:// or wss:// URL of `/api/ws/progress`. Changing it reconnects. */
  url: string;
  /**
   * Token source, e.g. Clerk's `useAuth().getToken`, passed as is. A new
   * function identity on each render does not reconnect: the latest one is
   * used at the next token request.
   */
  getToken: GetToken;
  /** Send the token as `?token=` instead of a first message. Changing it reconnects. */
  tokenInQuery?: boolean;
  /** Extra client options (test seams, tuning); read once per client. */
  clientOptions?: Omit<ProgressClientOptions, 'url' | 'getToken' | 'tokenInQuery'>;
  children?: ReactNode;
}

/**
 * Owns one {@link ProgressClient} for the subtree and shares it through
 * context; read it with `useImports`, `useImport`, `useConnectionStatus`.
 *
 * Why it looks like this (the example it replaces leaked sockets):
 * - the client is created without side effects and only started in an
 *   effect whose cleanup calls `close()`, so React strict mode's
 *   mount/unmount/mount and a real unmount leave no socket or timer behind;
 * - `getToken` is read through a ref, so Clerk handing us a new function
 *   does not tear the connection down.
 */
export function WebSocketProvider({
  url,
  getToken,
  tokenInQuery = false,
  clientOptions,
  children,
}: WebSocketProviderProps) {
  const getTokenRef = useRef(getToken);
  useLayoutEffect(() => {
    getTokenRef.current = getToken;
  }, [getToken]);

  // One stable function for the provider's lifetime: it reads the ref, so
  // hooks that make their own requests (useUpload) always get a fresh token
  // from the latest `getToken` without re-rendering on its identity.
  const stableGetToken = useCallback<GetToken>((tokenOptions) => getTokenRef.current(tokenOptions), []);
  const settings = useMemo<ProviderSettings>(() => ({ url, getToken: stableGetToken }), [url, stableGetToken]);

  const optionsRef = useRef(clientOptions);
  // A new URL or token mode means a new client, hence a new connection.
  // Construction has no side effects, so a discarded instance costs nothing.
  const client = useMemo(
    () =>
      new ProgressClient({
        ...optionsRef.current,
        url,
        tokenInQuery,
        getToken: stableGetToken,
      }),
    [url, tokenInQuery, stableGetToken],
  );

  useEffect(() => {
    client.start();
    return () => client.close();
  }, [client]);

  return (
    <ProviderSettingsContext.Provider value={settings}>
      <ProgressClientContext.Provider value={client}>{children}</ProgressClientContext.Provider>
    </ProviderSettingsContext.Provider>
  );
}
