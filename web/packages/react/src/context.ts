import { createContext } from 'react';
import type { GetToken, ProgressClient } from '@reeltime/client';

/** The client of the nearest `<WebSocketProvider>`; null outside one. */
export const ProgressClientContext = createContext<ProgressClient | null>(null);

/**
 * What the nearest `<WebSocketProvider>` was given, for hooks that make
 * their own HTTP requests (`useUpload`): the socket URL (the server's
 * address) and a stable token function that always calls the latest
 * `getToken` prop. Null outside a provider.
 */
export interface ProviderSettings {
  url: string;
  getToken: GetToken;
}

/** See {@link ProviderSettings}. */
export const ProviderSettingsContext = createContext<ProviderSettings | null>(null);
