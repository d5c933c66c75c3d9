import { createContext } from 'react';
import type { ProgressClient } from '../client';

/** The client of the nearest `<WebSocketProvider>`; null outside one. */
export const ProgressClientContext = createContext<ProgressClient | null>(null);
