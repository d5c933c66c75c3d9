/**
 * Everything `ProgressClient` takes from the browser, behind small
 * interfaces. Why: unit tests swap in a fake socket, fake timers and a fake
 * network, so every reconnection rule can be checked exactly and fast.
 */

/** The subset of the browser `WebSocket` the client uses. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A constructor like `window.WebSocket`. */
export type WebSocketFactory = new (url: string) => WebSocketLike;

/** `readyState` value of an open socket (same as `WebSocket.OPEN`). */
export const SOCKET_OPEN = 1;

/** Opaque timer handle. */
export type TimerHandle = unknown;

/** setTimeout/clearTimeout pair. */
export interface Timers {
  setTimeout(callback: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

/** Where `online`/`offline` events come from (normally `window`). */
export interface NetworkEvents {
  addEventListener(type: 'online' | 'offline', listener: () => void): void;
  removeEventListener(type: 'online' | 'offline', listener: () => void): void;
}

/** The resolved environment the client runs in. */
export interface ClientEnvironment {
  /** Opens a socket to `url` (normally `new WebSocket(url)`). */
  createSocket: (url: string) => WebSocketLike;
  timers: Timers;
  /** Epoch ms. */
  now: () => number;
  /** Uniform in [0, 1); used for backoff jitter. */
  random: () => number;
  /** Reads `navigator.onLine`; `true` when unknown. */
  isOnline: () => boolean;
  networkEvents: NetworkEvents | null;
}

/**
 * The browser's own implementations, looked up at call time (not captured
 * at import time) so test tools that replace globals still apply.
 */
export function browserEnvironment(): ClientEnvironment {
  // Typed loosely on purpose: these globals are missing outside browsers.
  const g = globalThis as unknown as {
    WebSocket?: WebSocketFactory;
    navigator?: { onLine?: boolean };
    addEventListener?: NetworkEvents['addEventListener'];
    removeEventListener?: NetworkEvents['removeEventListener'];
  };
  return {
    createSocket: (url) => {
      if (g.WebSocket === undefined) throw new Error('WebSocket is not available here');
      return new g.WebSocket(url);
    },
    timers: {
      setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
      clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
    },
    now: () => Date.now(),
    random: () => Math.random(),
    isOnline: () => g.navigator?.onLine !== false,
    networkEvents:
      typeof g.addEventListener === 'function' && typeof g.removeEventListener === 'function'
        ? {
            addEventListener: (type, listener) => g.addEventListener!(type, listener),
            removeEventListener: (type, listener) => g.removeEventListener!(type, listener),
          }
        : null,
  };
}
