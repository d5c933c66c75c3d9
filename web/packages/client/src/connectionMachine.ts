import type { ConnectionStatus } from './types.js';

/**
 * The connection's states and every way between them, as one table.
 *
 * Why a table: the rules (when to retry, when to wait for the network, when
 * to give up on a refused token) used to be spread over a dozen methods that
 * each set the status; a table can be read in one go, and
 * `connectionMachine.test.ts` walks every row through the real client.
 *
 * `ProgressClient` turns what happens (a close code, a timer, a browser
 * event) into one {@link ConnectionEvent}, picks the row with
 * {@link transitionFor}, moves to its `to` status and runs its `then`
 * effect. An event no row matches changes nothing. The status only ever
 * changes this way.
 */

/** What can happen to a connection. */
export type ConnectionEvent =
  /** `start()`. */
  | 'start'
  /** `restart()`: start over with a fresh token. */
  | 'restart'
  /** `close()`: log-out. */
  | 'close'
  /** The server's `ready`: authenticated. */
  | 'ready'
  /** The token source returned null (at connect or at a refresh). */
  | 'signed-out'
  /** The attempt failed before a socket: the token source threw, or no socket could be made. */
  | 'attempt-failed'
  /** The socket closed with a code whose action is `reconnect-fresh-token` (4001). */
  | 'token-expired'
  /** The socket closed with a code whose action is `retry-auth-once` (1008). */
  | 'refused'
  /** The socket closed with a `backoff` code, or was given up as dead (4000). */
  | 'dropped'
  /** The backoff delay is over. */
  | 'retry-due'
  /** The browser fired `online`. */
  | 'online'
  /** The browser fired `offline`. */
  | 'offline';

/** What the client does on entering the row's status. */
export type ConnectionEffect =
  /** Get the cached token, open a socket, wait for `ready`. */
  | 'connect'
  /** The same with `getToken({ skipCache: true })`. */
  | 'connect-fresh-token'
  /** `connect` with the backoff reset (the network just came back). */
  | 'connect-reset-backoff'
  /** Start serving: heartbeat watchdog, token refresh, healthy timer. */
  | 'serve'
  /** Arm a backoff delay (`nextRetryAt`) ending in `retry-due`. */
  | 'wait-retry'
  /** Cancel any pending retry; the `online` event resumes. */
  | 'wait-online'
  /** Make the open socket answer a ping quickly, or replace it. */
  | 'probe'
  /** Close the socket and cancel everything; no more attempts. */
  | 'stop'
  /** `stop`, and also stop listening to the network (log-out). */
  | 'shut';

/** Facts a row may depend on, read when the event happens. */
export interface TransitionContext {
  /** The browser says it has a network (`navigator.onLine`). */
  online: boolean;
  /** A 1008 was already answered by a retry since the last `ready`. */
  refusedBefore: boolean;
}

/** One row: in one of `from`, on `on`, when `when` holds, go `to` and do `then`. */
export interface Transition {
  from: readonly ConnectionStatus[] | 'any';
  on: ConnectionEvent;
  /** Every given fact must match; an absent one does not matter. */
  when?: Partial<TransitionContext>;
  to: ConnectionStatus;
  then: ConnectionEffect;
}

const SOCKET: readonly ConnectionStatus[] = ['connecting', 'open'];

/** Every transition of the connection status. Rows are tried in order. */
export const TRANSITIONS: readonly Transition[] = [
  // Starting and stopping.
  { from: ['closed'], on: 'start', when: { online: true }, to: 'connecting', then: 'connect' },
  { from: ['closed'], on: 'start', when: { online: false }, to: 'offline', then: 'wait-online' },
  { from: 'any', on: 'restart', when: { online: true }, to: 'connecting', then: 'connect-fresh-token' },
  { from: 'any', on: 'restart', when: { online: false }, to: 'offline', then: 'wait-online' },
  { from: 'any', on: 'close', to: 'closed', then: 'shut' },

  // An attempt and its socket.
  { from: SOCKET, on: 'ready', to: 'open', then: 'serve' },
  { from: SOCKET, on: 'signed-out', to: 'unauthorized', then: 'stop' },
  { from: ['connecting'], on: 'attempt-failed', when: { online: true }, to: 'reconnecting', then: 'wait-retry' },
  { from: ['connecting'], on: 'attempt-failed', when: { online: false }, to: 'offline', then: 'wait-online' },
  { from: SOCKET, on: 'token-expired', when: { online: true }, to: 'connecting', then: 'connect-fresh-token' },
  { from: SOCKET, on: 'token-expired', when: { online: false }, to: 'offline', then: 'wait-online' },
  // A `ready` clears the refusal, so only an attempt can be refused twice.
  { from: ['connecting'], on: 'refused', when: { refusedBefore: true }, to: 'unauthorized', then: 'stop' },
  { from: SOCKET, on: 'refused', when: { online: true }, to: 'connecting', then: 'connect-fresh-token' },
  { from: SOCKET, on: 'refused', when: { online: false }, to: 'offline', then: 'wait-online' },
  { from: SOCKET, on: 'dropped', when: { online: true }, to: 'reconnecting', then: 'wait-retry' },
  { from: SOCKET, on: 'dropped', when: { online: false }, to: 'offline', then: 'wait-online' },

  // Waiting.
  { from: ['reconnecting'], on: 'retry-due', when: { online: true }, to: 'connecting', then: 'connect' },
  { from: ['reconnecting'], on: 'retry-due', when: { online: false }, to: 'offline', then: 'wait-online' },
  { from: ['offline', 'reconnecting'], on: 'online', when: { online: true }, to: 'connecting', then: 'connect-reset-backoff' },
  { from: ['offline', 'reconnecting'], on: 'online', when: { online: false }, to: 'offline', then: 'wait-online' },
  { from: ['reconnecting'], on: 'offline', to: 'offline', then: 'wait-online' },
  // A blip of the network may not have killed an open socket: test it.
  { from: ['open'], on: 'online', to: 'open', then: 'probe' },
];

/** The first row for `event` in `status` whose facts hold, or undefined (ignore the event). */
export function transitionFor(
  status: ConnectionStatus,
  event: ConnectionEvent,
  context: TransitionContext,
): Transition | undefined {
  return TRANSITIONS.find(
    (row) =>
      row.on === event &&
      (row.from === 'any' || row.from.includes(status)) &&
      Object.entries(row.when ?? {}).every(([fact, value]) => context[fact as keyof TransitionContext] === value),
  );
}
