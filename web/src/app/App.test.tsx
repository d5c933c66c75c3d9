// @vitest-environment happy-dom
/**
 * The page against a fake server: fetch is stubbed, WebSocket is the fake
 * socket. Checks the flows and the data-testid contract the end-to-end tests rely on.
 */
import { act } from 'react';
import { createRoot, type Root } from 'react-dom/client';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { flush, makeImport, makeJwt, nowSecs, readyMessage, recordSockets, type FakeSocket } from '../../packages/client/test/fakes.js';
import { App } from './App';

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

interface Call {
  method: string;
  path: string;
  auth: string | null;
  body: unknown;
}

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });

let container: HTMLElement;
let root: Root;
let sockets: FakeSocket[];
let calls: Call[];
let config: Record<string, unknown>;
let routes: Record<string, (call: Call) => Response>;

beforeEach(() => {
  vi.useFakeTimers({ now: new Date('2030-01-01T00:00:00Z') });
  localStorage.clear();
  const recorder = recordSockets();
  sockets = recorder.sockets;
  vi.stubGlobal('WebSocket', recorder.RecordingSocket);
  calls = [];
  config = {
    dev_issuer: true,
    clerk_publishable_key: null,
    media_processing: true,
    samples: [{ name: 'bunny', title: 'Big Buck Bunny', url: 'http://127.0.0.1:8080/samples/bunny.mp4' }],
  };
  let minted = 0;
  routes = {
    'GET /api/config': () => json(200, config),
    'POST /dev/token': (call) => {
      minted += 1;
      const { sub, ttl_secs } = call.body as { sub: string; ttl_secs: number };
      return json(200, { token: makeJwt({ sub, exp: nowSecs() + ttl_secs, n: minted }), expires_at: nowSecs() + ttl_secs });
    },
  };
  vi.stubGlobal('fetch', async (input: RequestInfo | URL, init?: RequestInit) => {
    const call: Call = {
      method: init?.method ?? 'GET',
      path: String(input),
      auth: new Headers(init?.headers).get('Authorization'),
      body: init?.body ? JSON.parse(String(init.body)) : null,
    };
    calls.push(call);
    const route = routes[`${call.method} ${call.path}`];
    return route ? route(call) : json(404, { error: { code: 'not_found', message: 'no route' } });
  });
  container = document.createElement('div');
  document.body.appendChild(container);
  root = createRoot(container);
});

afterEach(() => {
  act(() => root.unmount());
  container.remove();
  vi.unstubAllGlobals();
  vi.useRealTimers();
});

const $ = (testId: string) => container.querySelector<HTMLElement>(`[data-testid="${testId}"]`);
const $$ = (testId: string) => [...container.querySelectorAll<HTMLElement>(`[data-testid="${testId}"]`)];

async function settle() {
  await act(flush);
  await act(flush);
}

async function mount() {
  await act(async () => root.render(<App />));
  await settle();
}

function type(el: HTMLElement | null, value: string) {
  if (!(el instanceof HTMLInputElement || el instanceof HTMLSelectElement)) throw new Error('not a field');
  const proto = el instanceof HTMLInputElement ? HTMLInputElement.prototype : HTMLSelectElement.prototype;
  Object.getOwnPropertyDescriptor(proto, 'value')!.set!.call(el, value);
  el.dispatchEvent(new Event(el instanceof HTMLSelectElement ? 'change' : 'input', { bubbles: true }));
}

async function click(el: HTMLElement | null) {
  if (el === null) throw new Error('nothing to click');
  await act(async () => el.click());
  await settle();
}

async function signIn(name = 'alice', ttl = '60') {
  await mount();
  act(() => {
    type($('signin-name'), name);
    type($('signin-ttl'), ttl);
  });
  await click($('signin-submit'));
}

function live(): FakeSocket {
  const open = sockets.filter((s) => s.live);
  expect(open).toHaveLength(1);
  return open[0];
}

function serverReady(ws: FakeSocket, imports = [] as ReturnType<typeof makeImport>[]) {
  act(() => {
    ws.open();
    ws.receive(readyMessage());
    ws.receive({ type: 'snapshot', imports });
  });
}

describe('the page', () => {
  it('signs in with the development issuer and goes live', async () => {
    await signIn('alice', '10');
    expect(calls.find((c) => c.path === '/dev/token')?.body).toEqual({ sub: 'alice', ttl_secs: 10 });
    expect(JSON.parse(localStorage.getItem('reeltime.session')!)).toEqual({ name: 'alice', ttlSecs: 10 });
    expect($('connection-badge')?.dataset.status).toBe('connecting');
    const ws = live();
    expect(ws.url).toBe(`ws://${location.host}/api/ws/progress`);
    serverReady(ws);
    expect(ws.sentOfType('auth')).toHaveLength(1);
    expect($('connection-badge')?.dataset.status).toBe('open');
    expect($('connection-badge')?.textContent).toBe('Live');
    expect($('imports-empty')).not.toBeNull();
  });

  it('shows each import with a real progress bar, bytes, stage, queue and results', async () => {
    await signIn();
    serverReady(live(), [
      makeImport({ id: 'q', version: 1, status: 'queued', progress: null, bytes_done: 0, bytes_total: null, queue_position: 2, created_at: '2030-01-01T00:00:04.000Z' }),
      makeImport({ id: 'd', version: 3, status: 'downloading', stage: 'downloading', progress: 0.425, bytes_done: 4_250_000, bytes_total: 10_000_000, created_at: '2030-01-01T00:00:03.000Z' }),
      makeImport({ id: 'c', version: 9, status: 'completed', progress: 1, result: { video_url: '/media/c.mp4', thumbnail_url: '/media/c.jpg' }, created_at: '2030-01-01T00:00:02.000Z' }),
      makeImport({ id: 'f', version: 4, status: 'failed', error: { code: 'not_a_video', message: 'bad magic' }, created_at: '2030-01-01T00:00:01.000Z' }),
    ]);
    const rows = $$('import-row');
    expect(rows.map((r) => [r.dataset.importId, r.dataset.status])).toEqual([
      ['q', 'queued'],
      ['d', 'downloading'],
      ['c', 'completed'],
      ['f', 'failed'],
    ]);
    const [queued, downloading, completed, failed] = rows;
    const bar = (row: HTMLElement) => row.querySelector<HTMLProgressElement>('[data-testid="import-progress"]')!;
    const text = (row: HTMLElement, id: string) => row.querySelector(`[data-testid="${id}"]`)?.textContent ?? null;

    expect(bar(queued).tagName).toBe('PROGRESS');
    expect(bar(queued).hasAttribute('value')).toBe(false); // indeterminate
    expect(text(queued, 'import-queue')).toBe('#2 in queue');
    expect(text(queued, 'import-cancel')).toBe('Cancel');

    expect(bar(downloading).getAttribute('value')).toBe('0.425');
    expect(bar(downloading).getAttribute('aria-valuenow')).toBe('42');
    expect(text(downloading, 'import-percent')).toBe('42%');
    expect(text(downloading, 'import-bytes')).toBe('4.3 MB of 10 MB');

    expect(text(completed, 'import-percent')).toBe('100%');
    expect(bar(completed).getAttribute('aria-valuenow')).toBe('100');
    const video = completed.querySelector('video')!;
    expect(video.getAttribute('src')).toBe('/media/c.mp4');
    expect(video.getAttribute('poster')).toBe('/media/c.jpg');
    expect(video.hasAttribute('controls')).toBe(true);
    expect(text(completed, 'import-delete')).toBe('Delete');
    expect(text(completed, 'import-cancel')).toBeNull();

    expect(text(failed, 'import-error')).toBe('That is not a video file.');

    act(() => live().receive({ type: 'import', import: makeImport({ id: 'd', version: 4, progress: 0.9, created_at: '2030-01-01T00:00:03.000Z' }) }));
    expect(text($$('import-row')[1], 'import-percent')).toBe('90%');
  });

  it('shows upload rows: the file name as title, the stored bytes, no source link, Cancel', async () => {
    await signIn();
    serverReady(live(), [
      makeImport({
        id: 'u',
        version: 2,
        status: 'uploading',
        source: 'upload',
        source_url: null,
        file_name: 'holiday.mp4',
        title: null,
        progress: 0.3,
        bytes_done: 3_000_000,
        bytes_total: 10_000_000,
        created_at: '2030-01-01T00:00:02.000Z',
      }),
      makeImport({ id: 'l', version: 1, created_at: '2030-01-01T00:00:01.000Z' }),
    ]);
    const [upload, link] = $$('import-row');
    const text = (row: HTMLElement, id: string) => row.querySelector(`[data-testid="${id}"]`)?.textContent ?? null;
    expect(upload.dataset.status).toBe('uploading');
    expect(upload.querySelector('.import-title')?.textContent).toBe('holiday.mp4');
    expect(upload.querySelector('.pill')?.textContent).toBe('Uploading');
    expect(upload.querySelector('a.import-source')).toBeNull();
    expect(text(upload, 'import-upload-source')).toBe('uploaded file');
    expect(upload.querySelector('[data-testid="import-progress"]')?.getAttribute('value')).toBe('0.3');
    expect(text(upload, 'import-bytes')).toBe('3.0 MB of 10 MB');
    expect(text(upload, 'import-cancel')).toBe('Cancel');
    // A URL import keeps its link.
    expect(link.querySelector('a.import-source')?.getAttribute('href')).toBe('https://example.com/a.mp4');

    // The server's stored offset moves the bar; a typed title wins over the file name.
    act(() =>
      live().receive({
        type: 'import',
        import: makeImport({ id: 'u', version: 3, status: 'uploading', source: 'upload', source_url: null, file_name: 'holiday.mp4', title: 'Summer', progress: 0.8, created_at: '2030-01-01T00:00:02.000Z' }),
      }),
    );
    expect($$('import-row')[0].querySelector('.import-title')?.textContent).toBe('Summer');
    expect($$('import-row')[0].querySelector('[data-testid="import-upload-source"]')?.textContent).toBe('uploaded from holiday.mp4');
    expect($$('import-row')[0].querySelector('[data-testid="import-percent"]')?.textContent).toBe('80%');
  });

  it('offers a picker for several video files and takes files dropped on the New import card', async () => {
    await signIn();
    serverReady(live());
    const input = $('upload-input') as HTMLInputElement;
    expect(input.type).toBe('file');
    expect(input.multiple).toBe(true);
    expect(input.accept).toBe('video/*');
    expect($('upload-pick')?.textContent).toBe('Choose files…');
    const card = $('new-import')!;
    const dragOver = new Event('dragover', { bubbles: true, cancelable: true });
    Object.defineProperty(dragOver, 'dataTransfer', { value: { types: ['Files'], dropEffect: 'none' } });
    await act(async () => card.dispatchEvent(dragOver));
    expect(dragOver.defaultPrevented).toBe(true); // without it the browser would open the file instead
    expect(card.className).toContain('card-dragging');
  });

  it('starts imports from the form and from a sample, with a bearer token', async () => {
    await signIn();
    serverReady(live());
    routes['POST /api/imports'] = (call) =>
      json(201, makeImport({ id: `n${calls.length}`, version: 1, status: 'queued', title: (call.body as { title?: string }).title ?? null, source_url: (call.body as { url: string }).url }));
    act(() => {
      type($('import-url'), 'https://videos.test/clip.mp4');
      type($('import-title'), 'My clip');
    });
    await click($('import-submit'));
    const post = calls.find((c) => c.path === '/api/imports')!;
    expect(post.auth).toMatch(/^Bearer ey/);
    expect(post.body).toEqual({ url: 'https://videos.test/clip.mp4', title: 'My clip' });
    expect($$('import-row')).toHaveLength(1);
    expect(($('import-url') as HTMLInputElement).value).toBe('');

    await click($('sample-bunny'));
    expect(calls.filter((c) => c.path === '/api/imports').at(-1)?.body).toEqual({
      url: 'http://127.0.0.1:8080/samples/bunny.mp4',
      title: 'Big Buck Bunny',
    });
  });

  it('shows the server error message when an import is refused', async () => {
    await signIn();
    serverReady(live());
    routes['POST /api/imports'] = () => json(400, { error: { code: 'weird', message: 'The URL is on fire' } });
    act(() => type($('import-url'), 'https://videos.test/x.mp4'));
    await click($('import-submit'));
    expect($('import-form-error')?.textContent).toBe('The URL is on fire');
  });

  it('cancels and deletes', async () => {
    await signIn();
    const ws = live();
    serverReady(ws, [
      makeImport({ id: 'run', version: 1, status: 'downloading', created_at: '2030-01-01T00:00:02.000Z' }),
      makeImport({ id: 'done', version: 1, status: 'completed' }),
    ]);
    routes['POST /api/imports/run/cancel'] = () => json(200, makeImport({ id: 'run', version: 2, status: 'cancelled', created_at: '2030-01-01T00:00:02.000Z' }));
    routes['DELETE /api/imports/done'] = () => new Response(null, { status: 204 });
    await click($$('import-row')[0].querySelector('[data-testid="import-cancel"]'));
    expect($$('import-row')[0].dataset.status).toBe('cancelled');
    await click($$('import-row')[1].querySelector('[data-testid="import-delete"]'));
    expect($$('import-row').map((r) => r.dataset.importId)).toEqual(['run']);
  });

  it('counts down while reconnecting', async () => {
    await signIn();
    const ws = live();
    serverReady(ws);
    act(() => ws.serverClose(1006));
    expect($('connection-badge')?.dataset.status).toBe('reconnecting');
    expect($('connection-badge')?.textContent).toMatch(/^Reconnecting in \d+ s$|^Reconnecting…$/);
  });

  it('a refused token shows the error banner and stops after one retry', async () => {
    await signIn();
    act(() => live().serverClose(1008, 'bad signature'));
    await settle();
    act(() => live().serverClose(1008, 'bad signature'));
    await settle();
    await act(() => vi.advanceTimersByTimeAsync(120_000));
    expect(sockets).toHaveLength(2);
    expect($('connection-badge')?.dataset.status).toBe('unauthorized');
    expect($('auth-error')?.textContent).toMatch(/refused your sign-in token/);
    expect($('auth-error')?.textContent).toMatch(/bad signature/);
  });

  it('signing out closes the socket with 1000 and forgets the session; signing in shows current state', async () => {
    await signIn('alice');
    const ws = live();
    serverReady(ws, [makeImport({ id: 'a', version: 1, status: 'downloading' })]);
    await click($('signout'));
    expect(ws.closedWith?.code).toBe(1000);
    expect(sockets.filter((s) => s.live)).toHaveLength(0);
    expect(localStorage.getItem('reeltime.session')).toBeNull();
    expect($('signin-name')).not.toBeNull();
    expect(vi.getTimerCount()).toBe(0);

    act(() => type($('signin-name'), 'alice'));
    await click($('signin-submit'));
    serverReady(live(), [makeImport({ id: 'a', version: 5, status: 'completed' })]);
    expect($$('import-row').map((r) => r.dataset.status)).toEqual(['completed']);
  });

  it('stays signed in across a reload', async () => {
    localStorage.setItem('reeltime.session', JSON.stringify({ name: 'bob', ttlSecs: 20 }));
    await mount();
    expect($('user-name')?.textContent).toBe('bob');
    expect(calls.find((c) => c.path === '/dev/token')?.body).toEqual({ sub: 'bob', ttl_secs: 20 });
    expect(sockets).toHaveLength(1);
  });

  it('explains itself when the development issuer is off', async () => {
    config.dev_issuer = false;
    await mount();
    expect($('needs-dev-issuer')?.textContent).toMatch(/development issuer/);
    expect($('signin-name')).toBeNull();
  });
});
