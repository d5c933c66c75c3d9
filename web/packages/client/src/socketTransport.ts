import { CloseReason } from './closeCodes.js';
import { type ClientEnvironment, SOCKET_OPEN, type WebSocketLike } from './environment.js';
import { PING_MESSAGE } from './messages.js';
import { TimerSlot } from './timerSlot.js';

/** What the transport reports about its one socket. */
export interface TransportEvents {
  /** A frame arrived (raw; parsing is the caller's). */
  message(data: unknown): void;
  /** The socket closed, with the code and reason the browser reported. */
  closed(code: number, reason: string): void;
  /** The socket stayed silent too long; the caller replaces it. */
  dead(reason: string): void;
}

/** Liveness timings of {@link SocketTransport}. */
export interface TransportTiming {
  /** Give up on a socket that is not `ready` within this. */
  connectTimeoutMs: number;
  /** After the browser came back online, an open socket must answer a ping within this. */
  probeTimeoutMs: number;
}

/**
 * One WebSocket at a time: opening it, proving it alive, closing it.
 *
 * Why it is separate from the connection logic: whether a socket is alive
 * (connect timeout, heartbeat watchdog, the probe after `online`) and the
 * rule that a replaced socket's late events are never delivered are about
 * the socket alone; what to do next (retry, refresh, give up) is
 * `ProgressClient`'s, through the table in `connectionMachine.ts`.
 */
export class SocketTransport {
  private socket: WebSocketLike | null = null;
  private socketGeneration = 0;
  /** True once the caller said `ready` arrived: then every frame re-arms the watchdog. */
  private serving = false;
  private heartbeatMs = 0;
  private readonly connectTimer: TimerSlot;
  private readonly watchdogTimer: TimerSlot;

  constructor(
    private readonly env: ClientEnvironment,
    private readonly timing: TransportTiming,
    private readonly events: TransportEvents,
  ) {
    this.connectTimer = new TimerSlot(env.timers);
    this.watchdogTimer = new TimerSlot(env.timers);
  }

  /** True while a socket is held (open or still opening). */
  get isActive(): boolean {
    return this.socket !== null;
  }

  /** Changes whenever a socket is opened or let go: an async step compares it to tell its socket is gone. */
  get generation(): number {
    return this.socketGeneration;
  }

  /** True when the held socket can send. */
  get isOpen(): boolean {
    return this.socket !== null && this.socket.readyState === SOCKET_OPEN;
  }

  /**
   * Opens a socket to `url` (replacing none: close the old one first) and
   * sends `firstMessage` once it is open. Throws if the socket cannot be made.
   */
  open(url: string, firstMessage: string | null): void {
    const ws = this.env.createSocket(url);
    this.socket = ws;
    this.socketGeneration += 1;
    this.serving = false;
    ws.onopen = () => {
      if (ws === this.socket && firstMessage !== null) safeSend(ws, firstMessage);
    };
    ws.onmessage = (event) => {
      if (ws !== this.socket) return;
      // Anything at all proves the socket alive.
      if (this.serving) this.armWatchdog();
      this.events.message(event.data);
    };
    ws.onclose = (event) => {
      if (ws === this.socket) this.events.closed(event.code, event.reason);
    };
    ws.onerror = () => {
      // A close event always follows an error; it carries the useful code.
    };
    this.connectTimer.set(this.timing.connectTimeoutMs, () => this.events.dead(CloseReason.NO_ANSWER));
  }

  /** `ready` arrived: stop the connect timeout, start the heartbeat watchdog. */
  serve(heartbeatMs: number): void {
    this.connectTimer.clear();
    this.serving = true;
    this.heartbeatMs = heartbeatMs;
    this.armWatchdog();
  }

  /** Sends without throwing: a socket that cannot send is handled by its close event or the watchdog. */
  send(data: string): void {
    if (this.socket !== null) safeSend(this.socket, data);
  }

  /** The network came back: make the open socket prove it is alive, quickly. */
  probe(): void {
    if (this.socket === null) return;
    this.watchdogTimer.set(this.timing.probeTimeoutMs, () =>
      this.events.dead(CloseReason.NO_ANSWER_AFTER_ONLINE),
    );
    safeSend(this.socket, PING_MESSAGE);
  }

  /**
   * Forgets the socket and its timers. With a `code`, also closes it
   * (handlers are detached first, so its own close event is never delivered).
   */
  close(code: number | null, reason: string): void {
    const ws = this.socket;
    this.socket = null;
    this.socketGeneration += 1;
    this.serving = false;
    this.connectTimer.clear();
    this.watchdogTimer.clear();
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

  /** After one silent heartbeat send a ping; after two, give the socket up. */
  private armWatchdog(): void {
    this.watchdogTimer.set(this.heartbeatMs, () => {
      // Arm the deadline before sending, so an answer always re-arms after it.
      this.watchdogTimer.set(this.heartbeatMs, () => this.events.dead(CloseReason.SILENT));
      this.send(PING_MESSAGE);
    });
  }
}

function safeSend(ws: WebSocketLike, data: string): void {
  try {
    ws.send(data);
  } catch {
    // The close event or the watchdog takes care of it.
  }
}
