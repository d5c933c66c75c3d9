import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createHarness, flush, makeImport, makeJwt, nowSecs } from '../test/fakes.js';

beforeEach(() => {
  vi.useFakeTimers({ now: new Date('2030-01-01T00:00:00Z') });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('authentication', () => {
  it('sends the token in a first message by default, never in the URL', async () => {
    const h = createHarness();
    h.client.start();
    expect(h.client.getStatus().status).toBe('connecting');
    await flush();
    const ws = h.socket();
    expect(ws.url).toBe('ws://reeltime.test/api/ws/progress');
    ws.open();
    const token = await h.getToken.mock.results[0].value;
    expect(ws.sent).toEqual([{ type: 'auth', token }]);
  });

  it('puts the token in ?token= when asked, and sends no auth message', async () => {
    const h = createHarness({ tokenInQuery: true, getToken: async () => 'tok/en+1' });
    h.client.start();
    await flush();
    const ws = h.socket();
    expect(ws.url).toBe('ws://reeltime.test/api/ws/progress?token=tok%2Fen%2B1');
    ws.open();
    expect(ws.sent).toEqual([]);
  });

  it('goes open on ready and exposes who we are', async () => {
    const h = createHarness();
    h.client.start();
    const expires = nowSecs() + 60;
    await h.connect({ user_id: 'alice', connection_id: 'conn-1', expires_at: expires });
    expect(h.client.getStatus()).toMatchObject({
      status: 'open',
      userId: 'alice',
      connectionId: 'conn-1',
      tokenExpiresAt: expires * 1000,
      nextRetryAt: null,
    });
  });

  it('getToken returning null means signed out: unauthorized, no socket, no timer', async () => {
    const h = createHarness({ getToken: async () => null });
    h.client.start();
    await flush();
    expect(h.sockets).toHaveLength(0);
    expect(h.client.getStatus()).toMatchObject({ status: 'unauthorized', lastCloseReason: 'signed out' });
    expect(vi.getTimerCount()).toBe(0);
  });

  it('a getToken that throws is retried with backoff', async () => {
    let calls = 0;
    const h = createHarness({
      getToken: async () => {
        calls += 1;
        if (calls === 1) throw new Error('clerk unreachable');
        return makeJwt({ sub: 'alice', exp: nowSecs() + 60 });
      },
    });
    h.client.start();
    await flush();
    expect(h.client.getStatus().status).toBe('reconnecting');
    expect(h.client.getStatus().lastCloseReason).toContain('clerk unreachable');
    expect(h.sockets).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(250); // random 0.5 × 500 ms
    expect(h.sockets).toHaveLength(1);
  });

  it('gives up on an attempt that never gets ready and tries again', async () => {
    const h = createHarness();
    h.client.start();
    await flush();
    const first = h.socket();
    first.open(); // the server never answers
    await vi.advanceTimersByTimeAsync(15_000);
    expect(first.closedWith?.code).toBe(4000);
    expect(h.client.getStatus().status).toBe('reconnecting');
    await vi.advanceTimersByTimeAsync(250);
    expect(h.sockets).toHaveLength(2);
  });
});

describe('close codes', () => {
  it.each([1000, 1001, 1003, 1006, 1009, 1011, 1013, 4999])(
    '%i from the server: reconnect after a backoff delay, cached token',
    async (code) => {
      const h = createHarness();
      h.client.start();
      const ws = await h.connect();
      h.getToken.mockClear();
      ws.serverClose(code, 'bye');
      const status = h.client.getStatus();
      expect(status).toMatchObject({ status: 'reconnecting', lastCloseCode: code, lastCloseReason: 'bye' });
      expect(status.nextRetryAt).toBe(Date.now() + 250);
      await vi.advanceTimersByTimeAsync(249);
      expect(h.sockets).toHaveLength(1);
      await vi.advanceTimersByTimeAsync(1);
      expect(h.sockets).toHaveLength(2);
      expect(h.getToken).toHaveBeenCalledWith();
    },
  );

  it('4001: reconnects at once with a fresh token', async () => {
    const h = createHarness();
    h.client.start();
    const ws = await h.connect();
    h.getToken.mockClear();
    ws.serverClose(4001, 'token expired');
    expect(h.client.getStatus()).toMatchObject({ status: 'connecting', lastCloseCode: 4001 });
    await flush();
    expect(h.getToken).toHaveBeenCalledWith({ skipCache: true });
    expect(h.sockets).toHaveLength(2);
  });

  it('1008: retries once with a fresh token, then stops as unauthorized (no loop)', async () => {
    const h = createHarness();
    h.client.start();
    await flush();
    h.socket().open();
    h.getToken.mockClear();
    h.socket().serverClose(1008, 'token expired');
    await flush();
    expect(h.getToken).toHaveBeenCalledTimes(1);
    expect(h.getToken).toHaveBeenCalledWith({ skipCache: true });
    expect(h.sockets).toHaveLength(2);

    h.socket().open();
    h.socket().serverClose(1008, 'bad signature');
    expect(h.client.getStatus()).toMatchObject({
      status: 'unauthorized',
      lastCloseCode: 1008,
      lastCloseReason: 'bad signature',
      nextRetryAt: null,
    });
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    expect(h.sockets).toHaveLength(2);
    expect(h.getToken).toHaveBeenCalledTimes(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('1008 twice in a row counts across other failures in between', async () => {
    const h = createHarness();
    h.client.start();
    await flush();
    h.socket().serverClose(1008, 'origin not allowed');
    await flush();
    h.socket().serverClose(1006);
    await vi.advanceTimersByTimeAsync(250);
    expect(h.sockets).toHaveLength(3);
    h.socket().serverClose(1008, 'origin not allowed');
    expect(h.client.getStatus().status).toBe('unauthorized');
  });

  it('a successful ready resets the 1008 allowance', async () => {
    const h = createHarness();
    h.client.start();
    await flush();
    h.socket().serverClose(1008, 'token expired');
    const ws = await h.connect();
    ws.serverClose(1008, 'token expired');
    await flush();
    expect(h.client.getStatus().status).toBe('connecting');
    expect(h.sockets).toHaveLength(3);
  });

  it('restart() after unauthorized connects again with a fresh token', async () => {
    const h = createHarness();
    h.client.start();
    await flush();
    h.socket().serverClose(1008);
    await flush();
    h.socket().serverClose(1008);
    expect(h.client.getStatus().status).toBe('unauthorized');
    h.getToken.mockClear();
    h.client.restart();
    await flush();
    expect(h.getToken).toHaveBeenCalledWith({ skipCache: true });
    expect(h.sockets).toHaveLength(3);
    await h.connect();
    expect(h.client.getStatus().status).toBe('open');
  });
});

describe('backoff', () => {
  it('grows exponentially with jitter and stays under 30 s', async () => {
    const h = createHarness({ random: () => 0.999 });
    h.client.start();
    await flush();
    const delays: number[] = [];
    for (let i = 0; i < 9; i++) {
      h.socket().serverClose(1006);
      const { nextRetryAt } = h.client.getStatus();
      delays.push(nextRetryAt! - Date.now());
      await vi.advanceTimersByTimeAsync(nextRetryAt! - Date.now());
    }
    expect(delays).toEqual([499, 999, 1998, 3996, 7992, 15_984, 29_970, 29_970, 29_970]);
  });

  it('uses the injected random for jitter', async () => {
    const values = [0.1, 0.9];
    const h = createHarness({ random: () => values.shift() ?? 0 });
    h.client.start();
    await flush();
    h.socket().serverClose(1006);
    expect(h.client.getStatus().nextRetryAt! - Date.now()).toBe(50); // 0.1 × 500
    await vi.advanceTimersByTimeAsync(50);
    h.socket().serverClose(1006);
    expect(h.client.getStatus().nextRetryAt! - Date.now()).toBe(900); // 0.9 × 1000
  });

  it('resets after a connection stayed healthy for 10 s, not before', async () => {
    const h = createHarness({ random: () => 0.999 });
    h.client.start();
    await flush();
    for (let i = 0; i < 4; i++) {
      h.socket().serverClose(1006);
      await vi.advanceTimersByTimeAsync(h.client.getStatus().nextRetryAt! - Date.now());
    }
    // Four failures: the next ceiling is 8 s. A short-lived connection keeps it.
    let ws = await h.connect();
    await vi.advanceTimersByTimeAsync(9_000);
    ws.serverClose(1006);
    expect(h.client.getStatus().nextRetryAt! - Date.now()).toBe(7992);
    await vi.advanceTimersByTimeAsync(7992);
    // This one stays up 10 s: back to the 500 ms ceiling.
    ws = await h.connect();
    await vi.advanceTimersByTimeAsync(10_000);
    ws.serverClose(1001);
    expect(h.client.getStatus().nextRetryAt! - Date.now()).toBe(499);
  });
});

describe('network', () => {
  it('does not try while offline and connects at once when online', async () => {
    const h = createHarness();
    h.network.online = false;
    h.client.start();
    await flush();
    expect(h.client.getStatus().status).toBe('offline');
    expect(h.sockets).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(120_000);
    expect(h.sockets).toHaveLength(0);
    expect(vi.getTimerCount()).toBe(0);
    h.network.goOnline();
    await flush();
    expect(h.sockets).toHaveLength(1);
  });

  it('a drop while offline waits for online instead of backing off', async () => {
    const h = createHarness();
    h.client.start();
    const ws = await h.connect();
    h.network.online = false;
    ws.serverClose(1006);
    expect(h.client.getStatus()).toMatchObject({ status: 'offline', nextRetryAt: null });
    expect(vi.getTimerCount()).toBe(0);
    h.network.goOnline();
    await flush();
    expect(h.sockets).toHaveLength(2);
    expect(h.client.getStatus().status).toBe('connecting');
  });

  it('an offline event cancels a pending retry; online retries at once with a reset backoff', async () => {
    const h = createHarness({ random: () => 0.999 });
    h.client.start();
    await flush();
    for (let i = 0; i < 5; i++) {
      h.socket().serverClose(1006);
      await vi.advanceTimersByTimeAsync(h.client.getStatus().nextRetryAt! - Date.now());
    }
    h.socket().serverClose(1006);
    expect(h.client.getStatus().status).toBe('reconnecting');
    h.network.goOffline();
    expect(h.client.getStatus().status).toBe('offline');
    expect(vi.getTimerCount()).toBe(0);
    h.network.goOnline();
    await flush();
    expect(h.sockets).toHaveLength(7);
    h.socket().serverClose(1006);
    expect(h.client.getStatus().nextRetryAt! - Date.now()).toBe(499);
  });

  it('online while open probes the socket and replaces it if it stays silent', async () => {
    const h = createHarness();
    h.client.start();
    const ws = await h.connect();
    ws.autoPong = false;
    h.network.goOffline();
    expect(h.client.getStatus().status).toBe('open'); // a blip may not kill the socket
    h.network.goOnline();
    expect(ws.sentOfType('ping')).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(ws.closedWith?.code).toBe(4000);
    expect(h.client.getStatus().status).toBe('reconnecting');
  });

  it('a probe answered with pong keeps the socket', async () => {
    const h = createHarness();
    h.client.start();
    const ws = await h.connect();
    h.network.goOnline();
    ws.receive({ type: 'pong' });
    await vi.advanceTimersByTimeAsync(20_000);
    expect(ws.live).toBe(true);
    expect(h.client.getStatus().status).toBe('open');
  });
});

describe('dead socket detection', () => {
  it('pings after one silent heartbeat and replaces the socket after two', async () => {
    const h = createHarness();
    h.client.start();
    const ws = await h.connect({ heartbeat_ms: 1_000 });
    ws.autoPong = false;
    await vi.advanceTimersByTimeAsync(999);
    expect(ws.sentOfType('ping')).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(ws.sentOfType('ping')).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(ws.closedWith?.code).toBe(4000);
    expect(h.client.getStatus()).toMatchObject({ status: 'reconnecting', lastCloseCode: 4000 });
    await vi.advanceTimersByTimeAsync(250);
    expect(h.sockets).toHaveLength(2);
    expect(h.liveSockets()).toHaveLength(1);
  });

  it('any message (here a pong) keeps the socket alive', async () => {
    const h = createHarness();
    h.client.start();
    const ws = await h.connect({ heartbeat_ms: 1_000 });
    ws.autoPong = false;
    for (let i = 0; i < 10; i++) {
      await vi.advanceTimersByTimeAsync(1_000);
      expect(ws.sentOfType('ping')).toHaveLength(i + 1);
      ws.receive({ type: 'pong' });
    }
    expect(ws.live).toBe(true);
    expect(h.sockets).toHaveLength(1);
  });

  it('events from a replaced socket are ignored', async () => {
    const h = createHarness();
    h.client.start();
    const old = await h.connect({ heartbeat_ms: 1_000 });
    old.autoPong = false;
    await vi.advanceTimersByTimeAsync(2_000);
    await vi.advanceTimersByTimeAsync(250);
    await h.connect();
    old.receive({ type: 'import', import: makeImport({ id: 'ghost', version: 1 }) });
    old.serverClose(1006);
    expect(h.client.getImport('ghost')).toBeUndefined();
    expect(h.client.getStatus().status).toBe('open');
  });
});

describe('token refresh on the open socket', () => {
  it('refreshes 10 s before expires_at from ready, on the same socket', async () => {
    const h = createHarness();
    h.client.start();
    const ws = await h.connect({ expires_at: nowSecs() + 60 });
    h.getToken.mockClear();
    await vi.advanceTimersByTimeAsync(49_999);
    expect(h.getToken).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(h.getToken).toHaveBeenCalledWith({ skipCache: true });
    const fresh = await h.getToken.mock.results[0].value;
    expect(ws.sentOfType('auth').at(-1)).toEqual({ type: 'auth', token: fresh });
    expect(h.sockets).toHaveLength(1);
  });

  it('reschedules from auth_ok, again and again without dropping the socket', async () => {
    const h = createHarness();
    h.client.start();
    const ws = await h.connect({ expires_at: nowSecs() + 60 });
    for (let round = 1; round <= 5; round++) {
      await vi.advanceTimersByTimeAsync(50_000);
      expect(ws.sentOfType('auth')).toHaveLength(1 + round);
      ws.receive({ type: 'auth_ok', expires_at: nowSecs() + 60 });
      expect(h.client.getStatus().tokenExpiresAt).toBe((nowSecs() + 60) * 1000);
    }
    expect(h.sockets).toHaveLength(1);
    expect(ws.live).toBe(true);
    expect(h.client.getStatus().connectionId).toBe('c1');
  });

  it('falls back to the token exp when ready has no expires_at', async () => {
    const h = createHarness({ getToken: vi.fn(async () => makeJwt({ sub: 'alice', exp: nowSecs() + 30 })) });
    h.client.start();
    const ws = await h.connect({ expires_at: null });
    expect(h.client.getStatus().tokenExpiresAt).toBe((nowSecs() + 30) * 1000);
    await vi.advanceTimersByTimeAsync(19_999);
    expect(ws.sentOfType('auth')).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(ws.sentOfType('auth')).toHaveLength(2);
  });

  it('uses the new token exp when auth_ok has no expires_at', async () => {
    const h = createHarness({ getToken: vi.fn(async () => makeJwt({ sub: 'alice', exp: nowSecs() + 60 })) });
    h.client.start();
    const ws = await h.connect({ expires_at: null });
    await vi.advanceTimersByTimeAsync(50_000);
    ws.receive({ type: 'auth_ok' });
    expect(h.client.getStatus().tokenExpiresAt).toBe((nowSecs() + 60) * 1000);
    await vi.advanceTimersByTimeAsync(50_000);
    expect(ws.sentOfType('auth')).toHaveLength(3);
  });

  it('refreshes a 10 s token at half its life', async () => {
    const h = createHarness();
    h.client.start();
    const ws = await h.connect({ expires_at: nowSecs() + 10 });
    await vi.advanceTimersByTimeAsync(4_999);
    expect(ws.sentOfType('auth')).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(ws.sentOfType('auth')).toHaveLength(2);
    ws.receive({ type: 'auth_ok', expires_at: nowSecs() + 10 });
    await vi.advanceTimersByTimeAsync(5_000);
    expect(ws.sentOfType('auth')).toHaveLength(3);
  });

  it('retries a refresh whose getToken failed', async () => {
    let fail = false;
    const h = createHarness({
      getToken: async () => {
        if (fail) throw new Error('network');
        return makeJwt({ sub: 'alice', exp: nowSecs() + 60 });
      },
    });
    h.client.start();
    const ws = await h.connect();
    fail = true;
    await vi.advanceTimersByTimeAsync(50_000);
    expect(ws.sentOfType('auth')).toHaveLength(1);
    fail = false;
    await vi.advanceTimersByTimeAsync(5_000);
    expect(ws.sentOfType('auth')).toHaveLength(2);
  });

  it('a refresh finding the user signed out closes the socket and stops', async () => {
    let signedIn = true;
    const h = createHarness({
      getToken: async () => (signedIn ? makeJwt({ sub: 'alice', exp: nowSecs() + 60 }) : null),
    });
    h.client.start();
    const ws = await h.connect();
    signedIn = false;
    await vi.advanceTimersByTimeAsync(50_000);
    expect(ws.closedWith?.code).toBe(1000);
    expect(h.client.getStatus().status).toBe('unauthorized');
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe('imports', () => {
  it('applies snapshot and live updates, ignoring versions that are not newer', async () => {
    const h = createHarness();
    h.client.start();
    const ws = await h.connect({}, [makeImport({ id: 'a', version: 3, progress: 0.3 })]);
    expect(h.client.getImport('a')?.progress).toBe(0.3);
    ws.receive({ type: 'import', import: makeImport({ id: 'a', version: 2, progress: 0.2 }) });
    ws.receive({ type: 'import', import: makeImport({ id: 'a', version: 3, progress: 0.9 }) });
    expect(h.client.getImport('a')?.progress).toBe(0.3);
    ws.receive({ type: 'import', import: makeImport({ id: 'a', version: 4, progress: 0.4 }) });
    expect(h.client.getImport('a')?.progress).toBe(0.4);
  });

  it('converges after a reconnect: the new snapshot wins over stale state, newer local state is kept', async () => {
    const h = createHarness();
    h.client.start();
    const ws = await h.connect({}, [
      makeImport({ id: 'a', version: 1, status: 'downloading', progress: 0.1 }),
      makeImport({ id: 'b', version: 7, status: 'processing' }),
    ]);
    ws.receive({ type: 'import', import: makeImport({ id: 'b', version: 8, status: 'completed', progress: 1 }) });
    ws.serverClose(1006);
    await vi.advanceTimersByTimeAsync(250);
    // Meanwhile the server finished `a`; its snapshot still reports an older `b`.
    const ws2 = await h.connect({}, [
      makeImport({ id: 'a', version: 9, status: 'completed', progress: 1 }),
      makeImport({ id: 'b', version: 7, status: 'processing' }),
    ]);
    expect(h.client.getImport('a')).toMatchObject({ status: 'completed', version: 9 });
    expect(h.client.getImport('b')).toMatchObject({ status: 'completed', version: 8 });
    ws2.receive({ type: 'import', import: makeImport({ id: 'a', version: 8, status: 'downloading' }) });
    expect(h.client.getImport('a')?.status).toBe('completed');
  });

  it('drops malformed frames without harm', async () => {
    const h = createHarness();
    h.client.start();
    const ws = await h.connect();
    ws.receiveRaw('not json');
    ws.receiveRaw(new ArrayBuffer(4));
    ws.receive({ type: 'import', import: { id: 'x' } });
    ws.receive({ type: 'something-new' });
    ws.receive({ type: 'error', code: 'bad_message', message: 'nope' });
    expect(h.client.getImports()).toEqual([]);
    expect(h.client.getStatus().status).toBe('open');
  });

  it('clears the imports when another user signs in on the same client', async () => {
    const h = createHarness();
    h.client.start();
    await h.connect({ user_id: 'alice' }, [makeImport({ id: 'a', version: 1 })]);
    h.client.close();
    h.client.start();
    await h.connect({ user_id: 'bob' }, [makeImport({ id: 'b', version: 1 })]);
    expect(h.client.getImports().map((i) => i.id)).toEqual(['b']);
  });

  it('mergeImport and forgetImport follow the same rules and notify', async () => {
    const h = createHarness();
    const listener = vi.fn();
    h.client.subscribe(listener);
    h.client.mergeImport(makeImport({ id: 'a', version: 2 }));
    h.client.mergeImport(makeImport({ id: 'a', version: 1 }));
    expect(listener).toHaveBeenCalledTimes(1);
    h.client.forgetImport('a');
    expect(h.client.getImports()).toEqual([]);
    expect(listener).toHaveBeenCalledTimes(2);
  });

  it('keeps snapshot identities stable between changes (for useSyncExternalStore)', async () => {
    const h = createHarness();
    h.client.start();
    const ws = await h.connect({}, [makeImport({ id: 'a', version: 1 })]);
    const list = h.client.getImports();
    const status = h.client.getStatus();
    ws.receive({ type: 'pong' });
    expect(h.client.getImports()).toBe(list);
    expect(h.client.getStatus()).toBe(status);
  });
});

describe('log-out with close()', () => {
  it('closes with 1000, leaves no timer, listener or socket, and never reconnects', async () => {
    const h = createHarness();
    h.client.start();
    const ws = await h.connect();
    expect(vi.getTimerCount()).toBeGreaterThan(0);
    h.client.close();
    expect(ws.closedWith).toEqual({ code: 1000, reason: 'client closed' });
    expect(h.client.getStatus()).toMatchObject({ status: 'closed', lastCloseCode: 1000, nextRetryAt: null });
    expect(vi.getTimerCount()).toBe(0);
    expect(h.network.listenerCount()).toBe(0);
    // The browser's own close event for our socket arrives later: ignored.
    ws.serverClose(1000);
    h.network.goOnline();
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    expect(h.sockets).toHaveLength(1);
    expect(h.liveSockets()).toHaveLength(0);
  });

  it('close() while waiting for a token opens no socket', async () => {
    let resolve!: (token: string) => void;
    const h = createHarness({ getToken: () => new Promise((r) => (resolve = r)) });
    h.client.start();
    h.client.close();
    resolve('late-token');
    await flush();
    expect(h.sockets).toHaveLength(0);
    expect(h.client.getStatus().status).toBe('closed');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('close() while waiting to reconnect cancels the retry', async () => {
    const h = createHarness();
    h.client.start();
    const ws = await h.connect();
    ws.serverClose(1006);
    expect(vi.getTimerCount()).toBe(1);
    h.client.close();
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(h.sockets).toHaveLength(1);
  });

  it('close() during an in-flight refresh sends nothing afterwards', async () => {
    let resolve!: (token: string) => void;
    let calls = 0;
    const h = createHarness({
      getToken: (options) => {
        calls += 1;
        if (calls === 1) return Promise.resolve(makeJwt({ sub: 'alice', exp: nowSecs() + 60 }));
        expect(options).toEqual({ skipCache: true });
        return new Promise((r) => (resolve = r));
      },
    });
    h.client.start();
    const ws = await h.connect();
    await vi.advanceTimersByTimeAsync(50_000);
    h.client.close();
    resolve('late');
    await flush();
    expect(ws.sentOfType('auth')).toHaveLength(1);
    expect(vi.getTimerCount()).toBe(0);
  });
});
