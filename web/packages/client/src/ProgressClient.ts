import { backoffDelay, DEFAULT_BACKOFF } from './backoff.js';
import { actionForClose, CloseCode, CloseReason } from './closeCodes.js';
import {
  transitionFor,
  type ConnectionEffect,
  type ConnectionEvent,
  type Transition,
} from './connectionMachine.js';
import {
  browserEnvironment,
  type ClientEnvironment,
  type NetworkEvents,
  type Timers,
  type WebSocketFactory,
} from './environment.js';
import { ImportStore } from './importStore.js';
import { authMessage, parseServerMessage } from './messages.js';
import { SocketTransport } from './socketTransport.js';
import { TimerSlot } from './timerSlot.js';
import { refreshDelayMs, tokenExpiryMs } from './token.js';
import type { ConnectionState, GetToken, Import, ReadyMessage } from './types.js';

/** Options of {@link ProgressClient}. Only `url` and `getToken` are required. */
export interface ProgressClientOptions {
  /** Absolute ws:// or wss:// URL of `/api/ws/progress`. */
  url: string;
  /** Token source with Clerk's signature; `null` means signed out. */
  getToken: GetToken;
  /**
   * Send the token as `?token=` instead of in a first `{"type":"auth"}`
   * message. Off by default: URLs end up in logs and browser history.
   */
  tokenInQuery?: boolean;

  /** Test seams; the browser's own objects by default. */
  WebSocket?: WebSocketFactory;
  timers?: Timers;
  now?: () => number;
  random?: () => number;
  isOnline?: () => boolean;
  networkEvents?: NetworkEvents | null;

  /** Bound of the first reconnection delay (default 500 ms). */
  backoffBaseMs?: number;
  /** Largest reconnection delay (default 30 s). */
  backoffCapMs?: number;
  /** A connection open this long resets the backoff (default 10 s). */
  healthyAfterMs?: number;
  /** Give up on an attempt that got no `ready` within this time (default 15 s). */
  connectTimeoutMs?: number;
  /** Heartbeat used when `ready` does not carry `heartbeat_ms` (default 25 s). */
  defaultHeartbeatMs?: number;
  /** After the browser comes back online, an open socket must answer a ping within this (default 5 s). */
  probeTimeoutMs?: number;
  /** Wait before retrying a refresh whose `getToken` failed (default 5 s). */
  refreshRetryMs?: number;
}

type Listener = () => void;

const INITIAL_STATE: ConnectionState = {
  status: 'closed',
  lastCloseCode: null,
  lastCloseReason: null,
  nextRetryAt: null,
  userId: null,
  connectionId: null,
  tokenExpiresAt: null,
};


/**
 * Live import progress over `/api/ws/progress`, framework-free.
 *
 * Why it exists: a WebSocket that merely "reconnects on close" loses updates,
 * hammers the server and gives up on tokens that only needed a refresh. This
 * client owns one socket at a time and:
 * - authenticates with a first message (or `?token=`), and refreshes the
 *   token on the open socket before it expires, so refresh causes no blip;
 * - reacts to each close code as the protocol says (see `closeCodes.ts`):
 *   4001 → reconnect now with a fresh token; 1008 → one retry with a fresh
 *   token, then `unauthorized`; anything else → exponential backoff with full
 *   jitter, reset once a connection stayed healthy;
 * - waits while the browser is offline and reconnects as soon as it is online;
 * - pings a silent socket and replaces it when nothing comes back;
 * - keeps every import by id and only ever moves to newer versions, so the
 *   view converges to the server's state after any reconnect.
 *
 * It is put together from three parts: `SocketTransport` (the socket:
 * opening, liveness, closing), the transition table in
 * `connectionMachine.ts` (the only place the status changes) and the effects
 * here (tokens, backoff, imports).
 *
 * Subscribe with {@link subscribe}; read with {@link getStatus},
 * {@link getImports}, {@link getImport}. Snapshots are immutable and keep
 * their identity until something changes (fit for `useSyncExternalStore`).
 */
export class ProgressClient {
  private readonly url: string;
  private readonly getToken: GetToken;
  private readonly tokenInQuery: boolean;
  private readonly env: ClientEnvironment;
  private readonly tuning: Required<
    Pick<
      ProgressClientOptions,
      | 'backoffBaseMs'
      | 'backoffCapMs'
      | 'healthyAfterMs'
      | 'connectTimeoutMs'
      | 'defaultHeartbeatMs'
      | 'probeTimeoutMs'
      | 'refreshRetryMs'
    >
  >;

  private readonly store = new ImportStore();
  private readonly listeners = new Set<Listener>();
  private state: ConnectionState = INITIAL_STATE;
  private readonly transport: SocketTransport;

  /** The token the current socket was (re)authenticated with. */
  private socketToken: string | null = null;
  /** Bumped by every attempt and by close(): an async step holding an older number gives up. */
  private attemptSeq = 0;
  /** Bumped by every transition: effects of a transition a listener already moved past are skipped. */
  private transitionSeq = 0;
  /** Failed attempts since the last healthy connection; drives the backoff. */
  private failures = 0;
  /** The delay `wait-retry` chose, armed once the status says `reconnecting`. */
  private retryDelayMs = 0;
  /** 1008 closes since the last `ready`; the second one stops the client. */
  private policyRejections = 0;
  private heartbeatMs: number;
  /** Whose imports the store holds; a different user on `ready` clears it. */
  private storeOwner: string | null = null;
  private networkListening = false;

  private readonly retryTimer: TimerSlot;
  private readonly refreshTimer: TimerSlot;
  private readonly healthyTimer: TimerSlot;

  constructor(options: ProgressClientOptions) {
    this.url = options.url;
    this.getToken = options.getToken;
    this.tokenInQuery = options.tokenInQuery ?? false;
    const browser = browserEnvironment();
    const SocketImpl = options.WebSocket;
    this.env = {
      createSocket: SocketImpl ? (url) => new SocketImpl(url) : browser.createSocket,
      timers: options.timers ?? browser.timers,
      now: options.now ?? browser.now,
      random: options.random ?? browser.random,
      isOnline: options.isOnline ?? browser.isOnline,
      networkEvents: options.networkEvents !== undefined ? options.networkEvents : browser.networkEvents,
    };
    this.tuning = {
      backoffBaseMs: options.backoffBaseMs ?? DEFAULT_BACKOFF.baseMs,
      backoffCapMs: options.backoffCapMs ?? DEFAULT_BACKOFF.capMs,
      healthyAfterMs: options.healthyAfterMs ?? 10_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 15_000,
      defaultHeartbeatMs: options.defaultHeartbeatMs ?? 25_000,
      probeTimeoutMs: options.probeTimeoutMs ?? 5_000,
      refreshRetryMs: options.refreshRetryMs ?? 5_000,
    };
    this.heartbeatMs = this.tuning.defaultHeartbeatMs;
    const timers = this.env.timers;
    this.retryTimer = new TimerSlot(timers);
    this.refreshTimer = new TimerSlot(timers);
    this.healthyTimer = new TimerSlot(timers);
    this.transport = new SocketTransport(this.env, this.tuning, {
      message: (data) => this.handleMessage(data),
      closed: (code, reason) => this.handleClose(code, reason),
      dead: (reason) => this.replaceDeadSocket(reason),
    });
  }

  // ---------------------------------------------------------------- reading

  /** Registers a listener called after any change of status or imports; returns the unsubscribe function. */
  subscribe = (listener: Listener): (() => void) => {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  };

  /** The connection state; the same object until it changes. */
  getStatus = (): ConnectionState => this.state;

  /** All known imports, newest first; the same array until it changes. */
  getImports = (): readonly Import[] => this.store.list();

  /** One import by id, or undefined. */
  getImport = (id: string): Import | undefined => this.store.get(id);

  // ------------------------------------------------------------ lifecycle

  /** Starts connecting. Does nothing if already running. Safe to call again after close(). */
  start(): void {
    this.dispatch('start', () => {
      this.failures = 0;
      this.policyRejections = 0;
      this.listenToNetwork(true);
    });
  }

  /**
   * Stops for good (log-out): closes the socket with 1000, cancels every
   * timer and pending attempt, stops listening to the network. Imports keep
   * running on the server. Idempotent.
   */
  close(): void {
    this.dispatch('close');
  }

  /**
   * Starts over with a fresh token, e.g. after the person signed in again
   * following `unauthorized`. Clears the 1008 and backoff counters.
   */
  restart(): void {
    this.dispatch('restart', () => {
      this.teardown(CloseReason.RESTART);
      this.failures = 0;
      this.policyRejections = 0;
      this.listenToNetwork(true);
    });
  }

  /**
   * Merges an import received outside the socket (e.g. the REST answer to
   * `POST /api/imports`) under the same version rule, so it shows at once.
   */
  mergeImport(item: Import): void {
    if (this.store.apply(item)) this.notify();
  }

  /** Removes an import from the view after the person deleted it on the server. */
  forgetImport(id: string): void {
    if (this.store.remove(id)) this.notify();
  }

  // ------------------------------------------------------------ transitions

  /**
   * Takes the table's row for `event`, if any: runs `prepare` (bookkeeping
   * of the event, and what the new state records about it), the effect's
   * cancelling part, moves to the row's status with one notification, then
   * starts the effect's new work (an attempt, a timer).
   */
  private dispatch(event: ConnectionEvent, prepare?: () => Partial<ConnectionState> | void): void {
    const row = transitionFor(this.state.status, event, {
      online: this.env.isOnline(),
      refusedBefore: this.policyRejections > 0,
    });
    if (row === undefined) return;
    const patch = { ...prepare?.(), ...this.enter(row.then) };
    const seq = ++this.transitionSeq;
    this.setState({ status: row.to, nextRetryAt: null, ...patch });
    if (seq === this.transitionSeq) this.after(row);
  }

  /** The part of an effect that comes before the new status: what it cancels, and what the state records. */
  private enter(effect: ConnectionEffect): Partial<ConnectionState> {
    switch (effect) {
      case 'connect':
      case 'connect-fresh-token':
      case 'connect-reset-backoff':
        this.retryTimer.clear();
        if (this.transport.isActive) this.dropSocket(CloseCode.NORMAL, CloseReason.REPLACED);
        if (effect === 'connect-reset-backoff') this.failures = 0;
        this.attemptSeq += 1;
        return {};
      case 'wait-retry':
        this.retryDelayMs = backoffDelay(this.failures, {
          baseMs: this.tuning.backoffBaseMs,
          capMs: this.tuning.backoffCapMs,
          random: this.env.random,
        });
        this.failures += 1;
        return { nextRetryAt: this.env.now() + this.retryDelayMs };
      case 'wait-online':
        this.retryTimer.clear();
        return {};
      case 'stop':
        this.teardown(CloseReason.SIGNED_OUT);
        return { connectionId: null };
      case 'shut': {
        const hadSocket = this.teardown(CloseReason.CLIENT_CLOSED);
        this.listenToNetwork(false);
        return {
          connectionId: null,
          ...(hadSocket ? { lastCloseCode: CloseCode.NORMAL, lastCloseReason: CloseReason.CLIENT_CLOSED } : {}),
        };
      }
      case 'serve':
      case 'probe':
        return {};
    }
  }

  /** The part of an effect that starts new work, once the status says so. */
  private after(row: Transition): void {
    switch (row.then) {
      case 'connect':
      case 'connect-reset-backoff':
        void this.attempt(this.attemptSeq, false);
        return;
      case 'connect-fresh-token':
        void this.attempt(this.attemptSeq, true);
        return;
      case 'wait-retry':
        this.retryTimer.set(this.retryDelayMs, () => this.dispatch('retry-due'));
        return;
      case 'serve':
        this.healthyTimer.set(this.tuning.healthyAfterMs, () => {
          this.failures = 0;
        });
        this.scheduleRefresh(this.state.tokenExpiresAt);
        this.transport.serve(this.heartbeatMs);
        return;
      case 'probe':
        this.transport.probe();
        return;
      case 'wait-online':
      case 'stop':
      case 'shut':
        return;
    }
  }

  // ----------------------------------------------------------- connecting

  /** One connection attempt: get a token, open the socket; `ready` or a close ends it. */
  private async attempt(attempt: number, freshToken: boolean): Promise<void> {
    let token: string | null;
    try {
      token = freshToken ? await this.getToken({ skipCache: true }) : await this.getToken();
    } catch (error) {
      if (attempt !== this.attemptSeq) return;
      this.dispatch('attempt-failed', () => ({
        lastCloseCode: null,
        lastCloseReason: `could not get a token: ${describe(error)}`,
      }));
      return;
    }
    if (attempt !== this.attemptSeq) return; // closed or restarted meanwhile
    if (token === null) {
      this.dispatch('signed-out', signedOut);
      return;
    }
    this.openSocket(token);
  }

  private openSocket(token: string): void {
    const url = this.tokenInQuery ? withTokenParam(this.url, token) : this.url;
    try {
      this.transport.open(url, this.tokenInQuery ? null : authMessage(token));
    } catch (error) {
      this.dispatch('attempt-failed', () => ({
        lastCloseCode: null,
        lastCloseReason: `could not open a socket: ${describe(error)}`,
      }));
      return;
    }
    this.socketToken = token;
  }

  // ------------------------------------------------------------- messages

  private handleMessage(data: unknown): void {
    const message = parseServerMessage(data);
    if (message === null) return;
    switch (message.type) {
      case 'ready':
        this.handleReady(message);
        return;
      case 'snapshot':
        if (this.store.applySnapshot(message.imports, message.removed)) this.notify();
        return;
      case 'import':
        if (this.store.apply(message.import)) this.notify();
        return;
      case 'import_removed':
        if (this.store.applyRemoved(message)) this.notify();
        return;
      case 'auth_ok': {
        const expiresAt = this.expiryMs(message.expires_at, this.socketToken);
        this.setState({ tokenExpiresAt: expiresAt });
        this.scheduleRefresh(expiresAt);
        return;
      }
      case 'pong':
      case 'error':
        // `error` reports a bad message of ours; the socket stays open.
        return;
    }
  }

  private handleReady(message: ReadyMessage): void {
    this.dispatch('ready', () => {
      this.policyRejections = 0;
      if (this.storeOwner !== null && this.storeOwner !== message.user_id) this.store.clear();
      this.storeOwner = message.user_id;
      this.heartbeatMs =
        typeof message.heartbeat_ms === 'number' && message.heartbeat_ms > 0
          ? message.heartbeat_ms
          : this.tuning.defaultHeartbeatMs;
      return {
        userId: message.user_id,
        connectionId: typeof message.connection_id === 'string' ? message.connection_id : null,
        tokenExpiresAt: this.expiryMs(message.expires_at, this.socketToken),
      };
    });
  }

  // ---------------------------------------------------------- token refresh

  /** Expiry in epoch ms: the server's `expires_at` if given, else the token's `exp`. */
  private expiryMs(expiresAtSecs: number | null | undefined, token: string | null): number | null {
    if (typeof expiresAtSecs === 'number' && Number.isFinite(expiresAtSecs)) return expiresAtSecs * 1000;
    return token === null ? null : tokenExpiryMs(token);
  }

  private scheduleRefresh(expiresAtMs: number | null): void {
    this.refreshTimer.clear();
    // Unknown expiry: the server will close with 4001 and we reconnect with a fresh token.
    if (expiresAtMs === null) return;
    const delay = refreshDelayMs(expiresAtMs, this.env.now());
    this.refreshTimer.set(delay, () => void this.refreshToken());
  }

  /** Sends a fresh token on the open socket; the server answers `auth_ok`. */
  private async refreshToken(): Promise<void> {
    if (!this.transport.isActive) return;
    const socket = this.transport.generation;
    let token: string | null;
    try {
      token = await this.getToken({ skipCache: true });
    } catch {
      if (socket === this.transport.generation) {
        this.refreshTimer.set(this.tuning.refreshRetryMs, () => void this.refreshToken());
      }
      return;
    }
    if (socket !== this.transport.generation) return; // replaced or closed meanwhile
    if (token === null) {
      this.dispatch('signed-out', signedOut);
      return;
    }
    if (!this.transport.isOpen) return;
    this.socketToken = token;
    this.transport.send(authMessage(token));
  }

  // --------------------------------------------------------------- closing

  private handleClose(code: number, reason: string): void {
    this.dropSocket(null, '');
    const closed = { lastCloseCode: code, lastCloseReason: reason || null, connectionId: null };
    switch (actionForClose(code)) {
      case 'reconnect-fresh-token':
        this.dispatch('token-expired', () => closed);
        return;
      case 'retry-auth-once':
        this.dispatch('refused', () => {
          this.policyRejections = 1;
          return closed;
        });
        return;
      case 'backoff':
        this.dispatch('dropped', () => closed);
        return;
    }
  }

  /** The transport gave up on a silent socket: close it (4000) and go on like any drop. */
  private replaceDeadSocket(reason: string): void {
    this.dropSocket(CloseCode.CLIENT_DEAD_SOCKET, reason);
    this.dispatch('dropped', () => ({
      lastCloseCode: CloseCode.CLIENT_DEAD_SOCKET,
      lastCloseReason: reason,
      connectionId: null,
    }));
  }

  /** Cancels every timer and pending attempt and closes the socket. Returns true if there was one. */
  private teardown(reason: string): boolean {
    this.attemptSeq += 1;
    this.retryTimer.clear();
    const hadSocket = this.transport.isActive;
    this.dropSocket(CloseCode.NORMAL, reason);
    return hadSocket;
  }

  /** Forgets the current socket and the timers that belong to it; with a `code`, also closes it. */
  private dropSocket(code: number | null, reason: string): void {
    this.socketToken = null;
    this.refreshTimer.clear();
    this.healthyTimer.clear();
    this.transport.close(code, reason);
  }

  // --------------------------------------------------------------- network

  private readonly handleOnline = (): void => this.dispatch('online');

  private readonly handleOffline = (): void => this.dispatch('offline');

  private listenToNetwork(on: boolean): void {
    const events = this.env.networkEvents;
    if (events === null || on === this.networkListening) return;
    this.networkListening = on;
    if (on) {
      events.addEventListener('online', this.handleOnline);
      events.addEventListener('offline', this.handleOffline);
    } else {
      events.removeEventListener('online', this.handleOnline);
      events.removeEventListener('offline', this.handleOffline);
    }
  }

  // ---------------------------------------------------------------- state

  private setState(patch: Partial<ConnectionState>): void {
    const next = { ...this.state, ...patch };
    const keys = Object.keys(next) as (keyof ConnectionState)[];
    if (keys.every((key) => next[key] === this.state[key])) return;
    this.state = next;
    this.notify();
  }

  private notify(): void {
    for (const listener of [...this.listeners]) listener();
  }
}

/** What the state records when the token source says nobody is signed in. */
function signedOut(): Partial<ConnectionState> {
  return { lastCloseCode: null, lastCloseReason: CloseReason.SIGNED_OUT };
}

/** Appends `token` as a query parameter (only when `tokenInQuery` is set). */
function withTokenParam(url: string, token: string): string {
  return `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
