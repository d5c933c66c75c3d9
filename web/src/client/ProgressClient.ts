import { backoffDelay, DEFAULT_BACKOFF } from './backoff';
import { actionForClose, CloseCode } from './closeCodes';
import {
  browserEnvironment,
  SOCKET_OPEN,
  type ClientEnvironment,
  type NetworkEvents,
  type Timers,
  type WebSocketFactory,
  type WebSocketLike,
} from './environment';
import { ImportStore } from './importStore';
import { authMessage, parseServerMessage, PING_MESSAGE } from './messages';
import { TimerSlot } from './timerSlot';
import { refreshDelayMs, tokenExpiryMs } from './token';
import type { ConnectionState, GetToken, Import, ReadyMessage } from './types';

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

  /** True between start() and close(). */
  private running = false;
  /** The one current socket; events of any other socket are ignored. */
  private socket: WebSocketLike | null = null;
  /** The token the current socket was (re)authenticated with. */
  private socketToken: string | null = null;
  /** Bumped by every attempt and by close(): an async step holding an older number gives up. */
  private attemptSeq = 0;
  /** Failed attempts since the last healthy connection; drives the backoff. */
  private failures = 0;
  /** 1008 closes since the last `ready`; the second one stops the client. */
  private policyRejections = 0;
  private heartbeatMs: number;
  /** Whose imports the store holds; a different user on `ready` clears it. */
  private storeOwner: string | null = null;
  private networkListening = false;

  private readonly retryTimer: TimerSlot;
  private readonly connectTimer: TimerSlot;
  private readonly watchdogTimer: TimerSlot;
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
    this.connectTimer = new TimerSlot(timers);
    this.watchdogTimer = new TimerSlot(timers);
    this.refreshTimer = new TimerSlot(timers);
    this.healthyTimer = new TimerSlot(timers);
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
    if (this.running) return;
    this.running = true;
    this.failures = 0;
    this.policyRejections = 0;
    this.listenToNetwork(true);
    void this.connect(false);
  }

  /**
   * Stops for good (log-out): closes the socket with 1000, cancels every
   * timer and pending attempt, stops listening to the network. Imports keep
   * running on the server. Idempotent.
   */
  close(): void {
    const hadSocket = this.teardown('client closed');
    this.running = false;
    this.listenToNetwork(false);
    this.setState({
      status: 'closed',
      nextRetryAt: null,
      connectionId: null,
      ...(hadSocket ? { lastCloseCode: CloseCode.NORMAL, lastCloseReason: 'client closed' } : {}),
    });
  }

  /**
   * Starts over with a fresh token, e.g. after the person signed in again
   * following `unauthorized`. Clears the 1008 and backoff counters.
   */
  restart(): void {
    this.teardown('restart');
    this.running = true;
    this.failures = 0;
    this.policyRejections = 0;
    this.listenToNetwork(true);
    void this.connect(true);
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

  // ----------------------------------------------------------- connecting

  /** One connection attempt: get a token, open the socket, wait for `ready`. */
  private async connect(freshToken: boolean): Promise<void> {
    this.retryTimer.clear();
    if (this.socket !== null) this.dropSocket(CloseCode.NORMAL, 'replaced');
    if (!this.env.isOnline()) {
      this.setState({ status: 'offline', nextRetryAt: null });
      return;
    }
    const attempt = ++this.attemptSeq;
    this.setState({ status: 'connecting', nextRetryAt: null });

    let token: string | null;
    try {
      token = freshToken ? await this.getToken({ skipCache: true }) : await this.getToken();
    } catch (error) {
      if (attempt !== this.attemptSeq) return;
      this.setState({ lastCloseCode: null, lastCloseReason: `could not get a token: ${describe(error)}` });
      this.scheduleRetry();
      return;
    }
    if (attempt !== this.attemptSeq) return; // closed or restarted meanwhile
    if (token === null) {
      this.stopUnauthorized(null, 'signed out');
      return;
    }
    this.openSocket(token);
  }

  private openSocket(token: string): void {
    const url = this.tokenInQuery ? withTokenParam(this.url, token) : this.url;
    let ws: WebSocketLike;
    try {
      ws = this.env.createSocket(url);
    } catch (error) {
      this.setState({ lastCloseCode: null, lastCloseReason: `could not open a socket: ${describe(error)}` });
      this.scheduleRetry();
      return;
    }
    this.socket = ws;
    this.socketToken = token;
    ws.onopen = () => {
      if (ws === this.socket && !this.tokenInQuery) safeSend(ws, authMessage(token));
    };
    ws.onmessage = (event) => {
      if (ws === this.socket) this.handleMessage(event.data);
    };
    ws.onclose = (event) => {
      if (ws === this.socket) this.handleClose(event.code, event.reason);
    };
    ws.onerror = () => {
      // A close event always follows an error; it carries the useful code.
    };
    this.connectTimer.set(this.tuning.connectTimeoutMs, () =>
      this.replaceDeadSocket('no answer from the server'),
    );
  }

  // ------------------------------------------------------------- messages

  private handleMessage(data: unknown): void {
    // Anything at all proves the socket alive.
    if (this.state.status === 'open') this.armWatchdog();
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
    this.connectTimer.clear();
    this.policyRejections = 0;
    if (this.storeOwner !== null && this.storeOwner !== message.user_id) this.store.clear();
    this.storeOwner = message.user_id;
    this.heartbeatMs =
      typeof message.heartbeat_ms === 'number' && message.heartbeat_ms > 0
        ? message.heartbeat_ms
        : this.tuning.defaultHeartbeatMs;
    const expiresAt = this.expiryMs(message.expires_at, this.socketToken);
    this.setState({
      status: 'open',
      nextRetryAt: null,
      userId: message.user_id,
      connectionId: typeof message.connection_id === 'string' ? message.connection_id : null,
      tokenExpiresAt: expiresAt,
    });
    this.healthyTimer.set(this.tuning.healthyAfterMs, () => {
      this.failures = 0;
    });
    this.scheduleRefresh(expiresAt);
    this.armWatchdog();
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
    const ws = this.socket;
    if (ws === null) return;
    let token: string | null;
    try {
      token = await this.getToken({ skipCache: true });
    } catch {
      if (ws === this.socket) this.refreshTimer.set(this.tuning.refreshRetryMs, () => void this.refreshToken());
      return;
    }
    if (ws !== this.socket) return; // replaced or closed meanwhile
    if (token === null) {
      this.stopUnauthorized(null, 'signed out');
      return;
    }
    if (ws.readyState !== SOCKET_OPEN) return;
    this.socketToken = token;
    safeSend(ws, authMessage(token));
  }

  // ------------------------------------------------------------- liveness

  /** After one silent heartbeat send a ping; after two, give the socket up. */
  private armWatchdog(): void {
    this.watchdogTimer.set(this.heartbeatMs, () => {
      // Arm the deadline before sending, so an answer always re-arms after it.
      this.watchdogTimer.set(this.heartbeatMs, () =>
        this.replaceDeadSocket('no message within two heartbeats'),
      );
      if (this.socket !== null) safeSend(this.socket, PING_MESSAGE);
    });
  }

  /** The network came back: make the open socket prove it is alive, quickly. */
  private probe(): void {
    if (this.socket === null) return;
    this.watchdogTimer.set(this.tuning.probeTimeoutMs, () =>
      this.replaceDeadSocket('no answer after the network came back'),
    );
    safeSend(this.socket, PING_MESSAGE);
  }

  private replaceDeadSocket(reason: string): void {
    this.dropSocket(CloseCode.CLIENT_DEAD_SOCKET, reason);
    this.setState({ lastCloseCode: CloseCode.CLIENT_DEAD_SOCKET, lastCloseReason: reason, connectionId: null });
    this.scheduleRetry();
  }

  // --------------------------------------------------------------- closing

  private handleClose(code: number, reason: string): void {
    this.dropSocket(null, '');
    this.setState({ lastCloseCode: code, lastCloseReason: reason || null, connectionId: null });
    switch (actionForClose(code)) {
      case 'reconnect-fresh-token':
        void this.connect(true);
        return;
      case 'retry-auth-once':
        if (this.policyRejections === 0) {
          this.policyRejections = 1;
          void this.connect(true);
        } else {
          this.stopUnauthorized(code, reason || null);
        }
        return;
      case 'backoff':
        this.scheduleRetry();
        return;
    }
  }

  /** Waits a backoff delay, then tries again; waits for `online` instead while offline. */
  private scheduleRetry(): void {
    if (!this.env.isOnline()) {
      this.setState({ status: 'offline', nextRetryAt: null });
      return;
    }
    const delay = backoffDelay(this.failures, {
      baseMs: this.tuning.backoffBaseMs,
      capMs: this.tuning.backoffCapMs,
      random: this.env.random,
    });
    this.failures += 1;
    this.setState({ status: 'reconnecting', nextRetryAt: this.env.now() + delay });
    this.retryTimer.set(delay, () => void this.connect(false));
  }

  /** Stops without further attempts: signed out, or the token was refused twice. */
  private stopUnauthorized(code: number | null, reason: string | null): void {
    this.teardown('signed out');
    this.setState({
      status: 'unauthorized',
      nextRetryAt: null,
      connectionId: null,
      lastCloseCode: code,
      lastCloseReason: reason,
    });
  }

  /** Cancels every timer and pending attempt and closes the socket. Returns true if there was one. */
  private teardown(reason: string): boolean {
    this.attemptSeq += 1;
    this.retryTimer.clear();
    const hadSocket = this.socket !== null;
    this.dropSocket(CloseCode.NORMAL, reason);
    return hadSocket;
  }

  /**
   * Forgets the current socket and its timers. With a `code`, also closes it
   * (handlers are detached first, so its own close event is never handled).
   */
  private dropSocket(code: number | null, reason: string): void {
    const ws = this.socket;
    this.socket = null;
    this.socketToken = null;
    this.connectTimer.clear();
    this.watchdogTimer.clear();
    this.refreshTimer.clear();
    this.healthyTimer.clear();
    if (ws === null) return;
    ws.onopen = null;
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = null;
    if (code !== null) {
      try {
        ws.close(code, reason);
      } catch {
        // Already closed: nothing to do.
      }
    }
  }

  // --------------------------------------------------------------- network

  private readonly handleOnline = (): void => {
    if (!this.running) return;
    if (this.state.status === 'offline' || this.state.status === 'reconnecting') {
      this.failures = 0;
      void this.connect(false);
    } else if (this.state.status === 'open') {
      this.probe();
    }
  };

  private readonly handleOffline = (): void => {
    if (this.running && this.state.status === 'reconnecting') {
      this.retryTimer.clear();
      this.setState({ status: 'offline', nextRetryAt: null });
    }
  };

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

/** Appends `token` as a query parameter (only when `tokenInQuery` is set). */
function withTokenParam(url: string, token: string): string {
  return `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`;
}

/** Sends without throwing: a socket that cannot send is handled by its close event. */
function safeSend(ws: WebSocketLike, data: string): void {
  try {
    ws.send(data);
  } catch {
    // The close event or the watchdog takes care of it.
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
