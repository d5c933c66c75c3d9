/**
 * Test doubles for ProgressClient: a scriptable WebSocket, a switchable
 * network and a JWT maker. Tests drive the "server" side by hand.
 */
import { vi } from 'vitest';
import { ProgressClient, type ProgressClientOptions } from '../src/index.js';
import type { WebSocketLike } from '../src/index.js';
import type { Import } from '../src/types.js';

/** A WebSocket whose server side is played by the test. */
export class FakeSocket implements WebSocketLike {
  readyState = 0;
  onopen: WebSocketLike['onopen'] = null;
  onmessage: WebSocketLike['onmessage'] = null;
  onclose: WebSocketLike['onclose'] = null;
  onerror: WebSocketLike['onerror'] = null;
  /** Frames the client sent, parsed. */
  readonly sent: unknown[] = [];
  /** Set when the client called close(). */
  closedWith: { code?: number; reason?: string } | null = null;

  constructor(readonly url: string) {}

  /** Answer `{"type":"ping"}` with a pong, like a live server. Turn off to play a dead one. */
  autoPong = true;

  send(data: string): void {
    if (this.readyState !== 1) throw new Error('not open');
    const message = JSON.parse(data) as { type?: string };
    this.sent.push(message);
    if (message.type === 'ping' && this.autoPong) {
      queueMicrotask(() => {
        if (this.readyState === 1) this.receive({ type: 'pong' });
      });
    }
  }

  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    this.readyState = 3;
  }

  /** True until either side closed it. */
  get live(): boolean {
    return this.readyState !== 3;
  }

  // --- server side ---
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  receive(message: unknown): void {
    this.onmessage?.({ data: JSON.stringify(message) });
  }

  receiveRaw(data: unknown): void {
    this.onmessage?.({ data });
  }

  serverClose(code: number, reason = ''): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  /** Messages of one type the client sent. */
  sentOfType(type: string): Record<string, unknown>[] {
    return this.sent.filter(
      (m): m is Record<string, unknown> => typeof m === 'object' && m !== null && (m as { type?: unknown }).type === type,
    );
  }
}

/** `online`/`offline` events plus a `navigator.onLine` flag. */
export class FakeNetwork {
  online = true;
  private readonly listeners = new Map<string, Set<() => void>>();

  addEventListener(type: string, listener: () => void): void {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type)!.add(listener);
  }

  removeEventListener(type: string, listener: () => void): void {
    this.listeners.get(type)?.delete(listener);
  }

  listenerCount(): number {
    let n = 0;
    for (const set of this.listeners.values()) n += set.size;
    return n;
  }

  goOffline(): void {
    this.online = false;
    for (const l of [...(this.listeners.get('offline') ?? [])]) l();
  }

  goOnline(): void {
    this.online = true;
    for (const l of [...(this.listeners.get('online') ?? [])]) l();
  }
}

function base64url(text: string): string {
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** An unsigned JWT with the given claims (the client never verifies signatures). */
export function makeJwt(claims: Record<string, unknown>): string {
  return `${base64url(JSON.stringify({ alg: 'RS256', typ: 'JWT' }))}.${base64url(JSON.stringify(claims))}.c2ln`;
}

/** Current fake time in unix seconds. */
export function nowSecs(): number {
  return Math.floor(Date.now() / 1000);
}

/** An import object with sensible defaults. */
export function makeImport(overrides: Partial<Import> & { id: string; version: number }): Import {
  return {
    status: 'downloading',
    stage: null,
    progress: 0.5,
    bytes_done: 50,
    bytes_total: 100,
    attempt: 1,
    source: 'url',
    source_url: 'https://example.com/a.mp4',
    file_name: null,
    metadata: null,
    title: 'A',
    error: null,
    result: null,
    queue_position: null,
    created_at: '2030-01-01T00:00:00.000Z',
    updated_at: '2030-01-01T00:00:00.000Z',
    ...overrides,
  };
}

/** Lets pending promise callbacks (getToken) run without moving the clock. */
export async function flush(): Promise<void> {
  await vi.advanceTimersByTimeAsync(0);
}

/** A FakeSocket constructor that remembers every socket it made. */
export function recordSockets(): { sockets: FakeSocket[]; RecordingSocket: typeof FakeSocket } {
  const sockets: FakeSocket[] = [];
  class RecordingSocket extends FakeSocket {
    constructor(url: string) {
      super(url);
      sockets.push(this);
    }
  }
  return { sockets, RecordingSocket };
}

/** A ready message with defaults. */
export function readyMessage(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    type: 'ready',
    user_id: 'alice',
    connection_id: 'c1',
    expires_at: nowSecs() + 60,
    heartbeat_ms: 25_000,
    protocol: 1,
    ...overrides,
  };
}

export interface Harness {
  client: ProgressClient;
  sockets: FakeSocket[];
  network: FakeNetwork;
  getToken: ReturnType<typeof vi.fn<(options?: { skipCache?: boolean }) => Promise<string | null>>>;
  /** The newest socket. */
  socket(): FakeSocket;
  /** Sockets nobody closed yet. */
  liveSockets(): FakeSocket[];
  /** Flushes, opens the newest socket and answers ready (+ optional snapshot). */
  connect(ready?: Record<string, unknown>, imports?: Import[]): Promise<FakeSocket>;
}

/**
 * A client wired to fakes. Call `vi.useFakeTimers()` first: the client uses
 * the global timers and Date, which Vitest then controls.
 */
export function createHarness(options: Partial<ProgressClientOptions> = {}): Harness {
  const { sockets, RecordingSocket } = recordSockets();
  const network = new FakeNetwork();
  const getToken = vi.fn(async (_options?: { skipCache?: boolean }): Promise<string | null> =>
    makeJwt({ sub: 'alice', exp: nowSecs() + 60 }),
  );
  const client = new ProgressClient({
    url: 'ws://reeltime.test/api/ws/progress',
    getToken,
    WebSocket: RecordingSocket,
    random: () => 0.5,
    isOnline: () => network.online,
    networkEvents: network,
    ...options,
  });
  const harness: Harness = {
    client,
    sockets,
    network,
    getToken,
    socket: () => {
      const last = sockets.at(-1);
      if (last === undefined) throw new Error('no socket was opened');
      return last;
    },
    liveSockets: () => sockets.filter((s) => s.live),
    connect: async (ready = {}, imports = []) => {
      await flush();
      const ws = harness.socket();
      ws.open();
      ws.receive({
        type: 'ready',
        user_id: 'alice',
        connection_id: `c${sockets.length}`,
        expires_at: nowSecs() + 60,
        heartbeat_ms: 25_000,
        protocol: 1,
        ...ready,
      });
      ws.receive({ type: 'snapshot', imports });
      return ws;
    },
  };
  return harness;
}
