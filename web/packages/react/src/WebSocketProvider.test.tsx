// @vitest-environment happy-dom
import { act, StrictMode, type ReactNode } from 'react';
import { createRoot, type Root } from 'react-dom/client';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FakeNetwork, flush, makeImport, makeJwt, nowSecs, readyMessage, recordSockets } from '../../client/test/fakes.js';
import { useConnectionStatus, useImport, useImports } from './hooks.js';
import { WebSocketProvider } from './WebSocketProvider.js';

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

const URL_A = 'ws://reeltime.test/api/ws/progress';

let container: HTMLElement;
let root: Root;

beforeEach(() => {
  vi.useFakeTimers({ now: new Date('2030-01-01T00:00:00Z') });
  container = document.createElement('div');
  document.body.appendChild(container);
  root = createRoot(container);
});

afterEach(() => {
  act(() => root.unmount());
  container.remove();
  vi.useRealTimers();
});

function Status() {
  const { status, userId } = useConnectionStatus();
  return <p data-testid="status">{`${status}:${userId ?? '-'}`}</p>;
}

function List() {
  const imports = useImports();
  return (
    <ul>
      {imports.map((item) => (
        <li key={item.id} data-testid="row">{`${item.id}=${Math.round((item.progress ?? 0) * 100)}`}</li>
      ))}
    </ul>
  );
}

function One({ id }: { id: string }) {
  const item = useImport(id);
  return <p data-testid="one">{item ? item.status : 'unknown'}</p>;
}

function setup() {
  const { sockets, RecordingSocket } = recordSockets();
  const network = new FakeNetwork();
  const clientOptions = { WebSocket: RecordingSocket, networkEvents: network, isOnline: () => true, random: () => 0.5 };
  const getToken = vi.fn(async () => makeJwt({ sub: 'alice', exp: nowSecs() + 60 }));
  const live = () => sockets.filter((s) => s.live);
  return { sockets, network, clientOptions, getToken, live };
}

async function render(node: ReactNode) {
  await act(async () => {
    root.render(node);
  });
  await act(flush);
}

const text = (testId: string) =>
  [...container.querySelectorAll(`[data-testid="${testId}"]`)].map((el) => el.textContent);

describe('WebSocketProvider and hooks', () => {
  it('render the status and every import update', async () => {
    const t = setup();
    await render(
      <WebSocketProvider url={URL_A} getToken={t.getToken} clientOptions={t.clientOptions}>
        <Status />
        <List />
        <One id="b" />
      </WebSocketProvider>,
    );
    expect(text('status')).toEqual(['connecting:-']);
    const ws = t.sockets[0];
    act(() => {
      ws.open();
      ws.receive(readyMessage());
      ws.receive({
        type: 'snapshot',
        imports: [
          makeImport({ id: 'a', version: 1, progress: 0.1, created_at: '2030-01-01T00:00:01.000Z' }),
          makeImport({ id: 'b', version: 1, progress: 0.2, created_at: '2030-01-01T00:00:02.000Z' }),
        ],
      });
    });
    expect(text('status')).toEqual(['open:alice']);
    expect(text('row')).toEqual(['b=20', 'a=10']);
    expect(text('one')).toEqual(['downloading']);
    act(() => {
      const b = { id: 'b', created_at: '2030-01-01T00:00:02.000Z' };
      ws.receive({ type: 'import', import: makeImport({ ...b, version: 2, status: 'completed', progress: 1 }) });
      ws.receive({ type: 'import', import: makeImport({ id: 'a', version: 1, progress: 0.9 }) }); // stale
    });
    expect(text('row')).toEqual(['b=100', 'a=10']);
    expect(text('one')).toEqual(['completed']);
  });

  it('strict mode double mount leaves exactly one live socket, and none after unmount', async () => {
    const t = setup();
    await render(
      <StrictMode>
        <WebSocketProvider url={URL_A} getToken={t.getToken} clientOptions={t.clientOptions}>
          <Status />
        </WebSocketProvider>
      </StrictMode>,
    );
    expect(t.live()).toHaveLength(1);
    act(() => {
      t.live()[0].open();
      t.live()[0].receive(readyMessage());
    });
    expect(text('status')).toEqual(['open:alice']);
    expect(t.network.listenerCount()).toBe(2);

    act(() => root.unmount());
    expect(t.live()).toHaveLength(0);
    expect(t.sockets.every((s) => s.closedWith?.code === 1000)).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
    expect(t.network.listenerCount()).toBe(0);
    root = createRoot(container); // for afterEach
  });

  it('a new getToken identity does not reconnect, and the latest one is used', async () => {
    const t = setup();
    const tree = (getToken: typeof t.getToken) => (
      <WebSocketProvider url={URL_A} getToken={getToken} clientOptions={t.clientOptions}>
        <Status />
      </WebSocketProvider>
    );
    await render(tree(t.getToken));
    const ws = t.sockets[0];
    act(() => {
      ws.open();
      ws.receive(readyMessage({ expires_at: nowSecs() + 60 }));
    });
    const second = vi.fn(async () => 'token-from-second-function');
    for (let i = 0; i < 3; i++) await render(tree(vi.fn(async () => 'unused')));
    await render(tree(second));
    expect(t.sockets).toHaveLength(1);
    expect(ws.live).toBe(true);
    await act(() => vi.advanceTimersByTimeAsync(50_000));
    expect(second).toHaveBeenCalledWith({ skipCache: true });
    expect(ws.sentOfType('auth').at(-1)).toEqual({ type: 'auth', token: 'token-from-second-function' });
  });

  it('a new url replaces the connection', async () => {
    const t = setup();
    const tree = (url: string) => (
      <WebSocketProvider url={url} getToken={t.getToken} clientOptions={t.clientOptions}>
        <Status />
      </WebSocketProvider>
    );
    await render(tree(URL_A));
    await render(tree('ws://other.test/api/ws/progress'));
    expect(t.sockets).toHaveLength(2);
    expect(t.sockets[0].closedWith?.code).toBe(1000);
    expect(t.live().map((s) => s.url)).toEqual(['ws://other.test/api/ws/progress']);
  });

  it('hooks outside a provider fail loudly', () => {
    const spy = vi.spyOn(console, 'error').mockImplementation(() => {});
    expect(() => act(() => root.render(<Status />))).toThrow(/inside <WebSocketProvider>/);
    spy.mockRestore();
  });
});
