import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createHarness, flush, makeJwt, nowSecs, readyMessage, type Harness } from '../test/fakes.js';
import {
  TRANSITIONS,
  transitionFor,
  type ConnectionEffect,
  type ConnectionEvent,
  type Transition,
  type TransitionContext,
} from './connectionMachine.js';
import type { ConnectionStatus } from './types.js';

/**
 * Walks every row of the transition table through the real client (fake
 * socket, timers and network): reach the row's status with its facts,
 * make its event happen, and check the new status and the effect.
 */

beforeEach(() => {
  vi.useFakeTimers({ now: new Date('2030-01-01T00:00:00Z') });
});
afterEach(() => {
  vi.useRealTimers();
});

const ALL: readonly ConnectionStatus[] = ['closed', 'connecting', 'open', 'reconnecting', 'offline', 'unauthorized'];

type TokenMode = 'token' | 'null' | 'throw' | 'hold';

/** A client whose token source and network the test steers. */
interface World {
  h: Harness;
  /** The client's token source (the harness's own is not used). */
  getToken: ReturnType<typeof vi.fn<(options?: { skipCache?: boolean }) => Promise<string | null>>>;
  /** What the next `getToken` call does. */
  mode: TokenMode;
  /** `navigator.onLine` as the client reads it (events fire separately). */
  online: boolean;
  /** Answers the oldest held `getToken` call. */
  release(answer: Exclude<TokenMode, 'hold'>): Promise<void>;
}

function world(): World {
  const held: { resolve: (token: string | null) => void; reject: (error: Error) => void }[] = [];
  const w: World = {
    h: undefined as unknown as Harness,
    getToken: undefined as unknown as World['getToken'],
    mode: 'token',
    online: true,
    async release(answer) {
      const call = held.shift();
      if (call === undefined) throw new Error('no getToken call is waiting');
      if (answer === 'throw') call.reject(new Error('token source down'));
      else call.resolve(answer === 'null' ? null : makeJwt({ sub: 'alice', exp: nowSecs() + 60 }));
      await flush();
    },
  };
  const getToken = vi.fn((_options?: { skipCache?: boolean }): Promise<string | null> => {
    switch (w.mode) {
      case 'token':
        return Promise.resolve(makeJwt({ sub: 'alice', exp: nowSecs() + 60 }));
      case 'null':
        return Promise.resolve(null);
      case 'throw':
        return Promise.reject(new Error('token source down'));
      case 'hold':
        return new Promise((resolve, reject) => held.push({ resolve, reject }));
    }
  });
  w.getToken = getToken;
  w.h = createHarness({ getToken, isOnline: () => w.online });
  return w;
}

/** Brings a fresh client to `status` (with `refusedBefore` when asked). While `connecting`, a getToken call is held. */
async function reach(status: ConnectionStatus, refusedBefore: boolean): Promise<World> {
  const w = world();
  const { h } = w;
  switch (status) {
    case 'closed':
      break;
    case 'connecting':
      if (refusedBefore) {
        h.client.start();
        await flush();
        w.mode = 'hold';
        h.socket().serverClose(1008, 'bad signature');
      } else {
        w.mode = 'hold';
        h.client.start();
      }
      break;
    case 'open':
      h.client.start();
      await h.connect();
      break;
    case 'reconnecting':
      h.client.start();
      await flush();
      h.socket().serverClose(1006);
      break;
    case 'offline':
      w.online = false;
      h.client.start();
      break;
    case 'unauthorized':
      h.client.start();
      await flush();
      h.socket().serverClose(1008);
      await flush();
      h.socket().serverClose(1008);
      break;
  }
  await flush();
  expect(h.client.getStatus().status, `reaching ${status}`).toBe(status);
  w.mode = 'token';
  return w;
}

const CLOSE_CODE_OF: Partial<Record<ConnectionEvent, number>> = {
  'token-expired': 4001,
  refused: 1008,
  dropped: 1006,
};

/** Makes `event` happen to a client in `from`. */
async function fire(w: World, from: ConnectionStatus, event: ConnectionEvent): Promise<void> {
  const { h } = w;
  switch (event) {
    case 'start':
      h.client.start();
      break;
    case 'restart':
      h.client.restart();
      break;
    case 'close':
      h.client.close();
      break;
    case 'ready':
      if (from === 'connecting') {
        await w.release('token');
        h.socket().open();
      }
      h.socket().receive(readyMessage());
      break;
    case 'signed-out':
      if (from === 'connecting') {
        await w.release('null');
      } else {
        // The refresh before expiry finds nobody signed in.
        w.mode = 'null';
        await vi.advanceTimersByTimeAsync(50_000);
        w.mode = 'token';
      }
      break;
    case 'attempt-failed':
      await w.release('throw');
      break;
    case 'token-expired':
    case 'refused':
    case 'dropped':
      if (from === 'connecting') await w.release('token');
      h.socket().serverClose(CLOSE_CODE_OF[event]!, 'why');
      break;
    case 'retry-due':
      await vi.advanceTimersByTimeAsync(h.client.getStatus().nextRetryAt! - Date.now());
      break;
    case 'online':
      h.network.goOnline();
      break;
    case 'offline':
      h.network.goOffline();
      break;
  }
  await flush();
}

/** Checks that `effect` happened. */
async function expectEffect(w: World, effect: ConnectionEffect, callsBefore: number): Promise<void> {
  const { h } = w;
  const status = h.client.getStatus();
  switch (effect) {
    case 'connect':
    case 'connect-reset-backoff':
    case 'connect-fresh-token': {
      expect(w.getToken.mock.calls.length).toBeGreaterThan(callsBefore);
      expect(w.getToken.mock.lastCall).toEqual(effect === 'connect-fresh-token' ? [{ skipCache: true }] : []);
      expect(h.socket().readyState).toBe(0); // a new socket waits to open
      expect(h.liveSockets()).toHaveLength(1);
      if (effect === 'connect-reset-backoff') {
        h.socket().serverClose(1006);
        expect(h.client.getStatus().nextRetryAt! - Date.now()).toBe(250); // the first delay again
      }
      return;
    }
    case 'serve': {
      const ws = h.socket();
      expect(status).toMatchObject({ userId: 'alice', connectionId: 'c1' });
      await vi.advanceTimersByTimeAsync(25_000);
      expect(ws.sentOfType('ping').length).toBeGreaterThan(0); // the heartbeat watchdog runs
      return;
    }
    case 'wait-retry':
      expect(status.nextRetryAt).toBeGreaterThan(Date.now());
      expect(vi.getTimerCount()).toBe(1);
      await vi.advanceTimersByTimeAsync(status.nextRetryAt! - Date.now());
      expect(w.getToken.mock.calls.length).toBeGreaterThan(callsBefore);
      expect(h.client.getStatus().status).toBe('connecting');
      return;
    case 'wait-online':
      expect(status.nextRetryAt).toBeNull();
      expect(vi.getTimerCount()).toBe(0);
      expect(h.liveSockets()).toHaveLength(0);
      return;
    case 'probe':
      expect(h.socket().sentOfType('ping')).toHaveLength(1);
      expect(h.socket().live).toBe(true);
      return;
    case 'stop':
      expect(vi.getTimerCount()).toBe(0);
      expect(h.liveSockets()).toHaveLength(0);
      expect(h.network.listenerCount()).toBeGreaterThan(0); // restart() still works
      return;
    case 'shut':
      expect(vi.getTimerCount()).toBe(0);
      expect(h.liveSockets()).toHaveLength(0);
      expect(h.network.listenerCount()).toBe(0);
      return;
  }
}

interface Case {
  row: Transition;
  from: ConnectionStatus;
  context: TransitionContext;
}

/** Every row, once from each of its statuses. */
const CASES: Case[] = TRANSITIONS.flatMap((row) =>
  (row.from === 'any' ? ALL : row.from).map((from) => ({
    row,
    from,
    context: { online: row.when?.online ?? true, refusedBefore: row.when?.refusedBefore ?? false },
  })),
);

describe('the transition table', () => {
  it.each(CASES.map((c) => [`${c.from} --${c.row.on} ${JSON.stringify(c.row.when ?? {})}--> ${c.row.to} (${c.row.then})`, c]))(
    '%s',
    async (_name, { row, from, context }) => {
      // The row is the one the client picks for these facts (no earlier row hides it).
      expect(transitionFor(from, row.on, context)).toBe(row);
      const w = await reach(from, context.refusedBefore);
      w.online = context.online;
      const callsBefore = w.getToken.mock.calls.length;
      await fire(w, from, row.on);
      expect(w.h.client.getStatus().status).toBe(row.to);
      await expectEffect(w, row.then, callsBefore);
    },
  );

  it('walks every row', () => {
    expect(new Set(CASES.map((c) => c.row)).size).toBe(TRANSITIONS.length);
  });

  it.each([
    ['open', 'start'],
    ['open', 'offline'],
    ['connecting', 'online'],
    ['unauthorized', 'online'],
    ['unauthorized', 'start'],
  ] as const)('ignores an event without a row: %s + %s', async (from, event) => {
    expect(transitionFor(from, event, { online: true, refusedBefore: false })).toBeUndefined();
    const w = await reach(from, false);
    const before = w.h.client.getStatus();
    const sockets = w.h.sockets.length;
    await fire(w, from, event);
    expect(w.h.client.getStatus()).toBe(before);
    expect(w.h.sockets).toHaveLength(sockets);
  });
});
