// @vitest-environment happy-dom
/**
 * useUpload with the real tus-js-client (its browser build: XMLHttpRequest,
 * Blob slices, localStorage fingerprints) over real HTTP to a small tus 1.0
 * server on a loopback port. That server is a stand-in with just enough of
 * the protocol to record what the client sends (tokens, metadata, offsets,
 * bytes); the real server's tus endpoint is covered by its own Rust tests
 * and by the Chromium end-to-end test.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { act, type ReactNode } from 'react';
import { createRoot, type Root } from 'react-dom/client';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FakeNetwork, makeImport, makeJwt, nowSecs, readyMessage, recordSockets, type FakeSocket } from '../../client/test/fakes.js';
import {
  DEFAULT_CHUNK_SIZE,
  importIdOfUploadUrl,
  uploadEndpoint,
  useUpload,
  type UploadHandle,
  type UseUploadResult,
} from './upload.js';
import { WebSocketProvider } from './WebSocketProvider.js';

// Real network I/O updates state outside act(): the tests wait for the result instead.
(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = false;

interface Seen {
  method: string;
  path: string;
  auth: string | null;
  offset: number | null;
  bytes: number;
}

interface StoredUpload {
  length: number;
  data: Buffer;
  metadata: Record<string, string>;
  deleted: boolean;
}

/** A minimal tus 1.0 server (creation, core, termination) with CORS, recording every request. */
class TusServer {
  readonly seen: Seen[] = [];
  readonly uploads = new Map<string, StoredUpload>();
  /** Answer the next creation with this status and API error body. */
  refuseCreation: { status: number; code: string; message: string } | null = null;
  /** Answer the next PATCH with 401 (an expired token). */
  expireNextPatch = false;
  /** PATCHes at or past `holdFrom` wait for this before answering (to act while an upload is in flight). */
  gate: Promise<void> | null = null;
  holdFrom = 0;
  /** Creations wait for this before answering. */
  creationGate: Promise<void> | null = null;
  private server!: Server;
  private nextId = 1;
  base = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.base = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    const path = new URL(req.url ?? '/', this.base).pathname;
    const offsetHeader = req.headers['upload-offset'];
    this.seen.push({
      method: req.method ?? '',
      path,
      auth: req.headers.authorization ?? null,
      offset: typeof offsetHeader === 'string' ? Number(offsetHeader) : null,
      bytes: body.length,
    });
    res.setHeader('Access-Control-Allow-Origin', '*');
    res.setHeader('Access-Control-Expose-Headers', 'Location, Upload-Offset, Upload-Length, Tus-Resumable');
    if (req.method === 'OPTIONS') {
      res.setHeader('Access-Control-Allow-Methods', 'POST, HEAD, PATCH, DELETE');
      res.setHeader('Access-Control-Allow-Headers', 'Authorization, Content-Type, Tus-Resumable, Upload-Length, Upload-Metadata, Upload-Offset');
      res.writeHead(204).end();
      return;
    }
    res.setHeader('Tus-Resumable', '1.0.0');
    if (req.method === 'POST' && path === '/api/uploads') {
      if (this.creationGate) await this.creationGate;
      if (this.refuseCreation) {
        const { status, code, message } = this.refuseCreation;
        this.refuseCreation = null;
        res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify({ error: { code, message } }));
        return;
      }
      const id = `imp-${this.nextId++}`;
      const metadata: Record<string, string> = {};
      for (const pair of String(req.headers['upload-metadata'] ?? '').split(',')) {
        const [key, value] = pair.trim().split(' ');
        if (key) metadata[key] = value ? Buffer.from(value, 'base64').toString('utf8') : '';
      }
      this.uploads.set(id, { length: Number(req.headers['upload-length']), data: Buffer.alloc(0), metadata, deleted: false });
      res.writeHead(201, { Location: `/api/uploads/${id}` }).end();
      return;
    }
    const upload = this.uploads.get(path.replace('/api/uploads/', ''));
    if (!upload || upload.deleted) {
      res.writeHead(404).end();
      return;
    }
    if (req.method === 'HEAD') {
      res.writeHead(200, { 'Upload-Offset': String(upload.data.length), 'Upload-Length': String(upload.length), 'Cache-Control': 'no-store' }).end();
    } else if (req.method === 'PATCH') {
      if (this.gate && Number(offsetHeader) >= this.holdFrom) await this.gate;
      if (this.expireNextPatch) {
        this.expireNextPatch = false;
        res.writeHead(401, { 'Content-Type': 'application/json' }).end(JSON.stringify({ error: { code: 'unauthorized', message: 'token expired' } }));
        return;
      }
      if (Number(offsetHeader) !== upload.data.length) {
        res.writeHead(409).end();
        return;
      }
      upload.data = Buffer.concat([upload.data, body]);
      res.writeHead(204, { 'Upload-Offset': String(upload.data.length) }).end();
    } else if (req.method === 'DELETE') {
      upload.deleted = true;
      res.writeHead(204).end();
    } else {
      res.writeHead(405).end();
    }
  }
}

let server: TusServer;
let container: HTMLElement;
let root: Root;
let sockets: FakeSocket[];
let tokens: number;
let getToken: ReturnType<typeof vi.fn<(options?: { skipCache?: boolean }) => Promise<string | null>>>;
let hook: UseUploadResult;

beforeEach(async () => {
  server = new TusServer();
  await server.start();
  localStorage.clear();
  tokens = 0;
  // Every call is a new token, so the test can tell which request used which.
  getToken = vi.fn(async () => {
    tokens += 1;
    return makeJwt({ sub: 'alice', exp: nowSecs() + 60, n: tokens });
  });
  container = document.createElement('div');
  document.body.appendChild(container);
  root = createRoot(container);
});

afterEach(async () => {
  act(() => root.unmount());
  container.remove();
  await server.stop();
});

function Probe({ chunkSize }: { chunkSize: number }) {
  hook = useUpload({ endpoint: `${server.base}/api/uploads`, chunkSize, retryDelays: [0, 10] });
  return (
    <ul>
      {hook.uploads.map((entry) => (
        <li key={entry.key} data-phase={entry.phase} />
      ))}
    </ul>
  );
}

async function mount(chunkSize: number): Promise<void> {
  const recorder = recordSockets();
  sockets = recorder.sockets;
  const clientOptions = { WebSocket: recorder.RecordingSocket, networkEvents: new FakeNetwork(), isOnline: () => true };
  const tree: ReactNode = (
    <WebSocketProvider url="ws://reeltime.test/api/ws/progress" getToken={getToken} clientOptions={clientOptions}>
      <Probe chunkSize={chunkSize} />
    </WebSocketProvider>
  );
  await act(async () => root.render(tree));
}

/** The socket of the provider, opened and ready. */
async function socketReady(): Promise<FakeSocket> {
  await vi.waitFor(() => expect(sockets.length).toBeGreaterThan(0));
  const ws = sockets[0];
  act(() => {
    ws.open();
    ws.receive(readyMessage());
    ws.receive({ type: 'snapshot', imports: [] });
  });
  return ws;
}

function video(size: number, name = 'holiday.mp4'): File {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 1) bytes[i] = (i * 31 + 7) % 256;
  return new File([bytes], name, { type: 'video/mp4', lastModified: 1_700_000_000_000 });
}

function start(file: File, options?: { title?: string }): UploadHandle {
  let handle!: UploadHandle;
  act(() => {
    handle = hook.upload(file, options);
  });
  return handle;
}

const phase = () => hook.uploads.map((entry) => entry.phase);

describe('useUpload', () => {
  it('derives the endpoint from the socket URL and the import id from the upload URL', () => {
    expect(uploadEndpoint('wss://reeltime.example.com/api/ws/progress')).toBe('https://reeltime.example.com/api/uploads');
    expect(uploadEndpoint('ws://127.0.0.1:8080/prefix/api/ws/progress?token=x')).toBe('http://127.0.0.1:8080/prefix/api/uploads');
    expect(uploadEndpoint('/api/ws/progress', 'https://app.example.com/page')).toBe('https://app.example.com/api/uploads');
    expect(importIdOfUploadUrl('https://h/api/uploads/0190a1b2-aaaa')).toBe('0190a1b2-aaaa');
    expect(DEFAULT_CHUNK_SIZE).toBe(8 * 1024 * 1024);
  });

  it('sends the file in chunks, each request with a fresh bearer token, and reports the import id', async () => {
    await mount(16 * 1024);
    await socketReady();
    const file = video(40 * 1024);
    const handle = start(file, { title: '  Summer  ' });
    await expect(handle.importId).resolves.toBe('imp-1');
    await handle.done;
    await vi.waitFor(() => expect(phase()).toEqual(['done']));

    const stored = server.uploads.get('imp-1')!;
    expect(stored.metadata).toEqual({ filename: 'holiday.mp4', filetype: 'video/mp4', title: 'Summer' });
    expect(stored.data.equals(Buffer.from(await file.arrayBuffer()))).toBe(true);
    const tus = server.seen.filter((s) => s.method !== 'OPTIONS');
    expect(tus.map((s) => [s.method, s.offset, s.bytes])).toEqual([
      ['POST', null, 0],
      ['PATCH', 0, 16 * 1024],
      ['PATCH', 16 * 1024, 16 * 1024],
      ['PATCH', 32 * 1024, 8 * 1024],
    ]);
    // Each request asked getToken anew (the socket took one more).
    const auths = tus.map((s) => s.auth);
    expect(auths.every((auth) => auth?.startsWith('Bearer '))).toBe(true);
    expect(new Set(auths).size).toBe(tus.length);
    expect(hook.uploads[0].importId).toBe('imp-1');
  });

  it("shows the server's refusal at creation, without retrying it", async () => {
    server.refuseCreation = { status: 413, code: 'too_large', message: 'The file is larger than 10 MB.' };
    await mount(16 * 1024);
    const handle = start(video(1024));
    await expect(handle.done).rejects.toThrow('The file is larger than 10 MB.');
    await vi.waitFor(() => expect(phase()).toEqual(['failed']));
    expect(hook.uploads[0]).toMatchObject({ importId: null, error: { status: 413, code: 'too_large' } });
    expect(server.seen.filter((s) => s.method === 'POST')).toHaveLength(1);
    act(() => hook.dismiss(hook.uploads[0].key));
    expect(hook.uploads).toEqual([]);
  });

  it('retries a 401 once with a token fetched with skipCache', async () => {
    await mount(16 * 1024);
    server.expireNextPatch = true;
    const handle = start(video(20 * 1024));
    await handle.done;
    expect(getToken.mock.calls.some(([options]) => options?.skipCache === true)).toBe(true);
    const patches = server.seen.filter((s) => s.method === 'PATCH');
    expect(patches.map((p) => p.offset)).toEqual([0, 0, 16 * 1024]);
    expect(server.uploads.get('imp-1')!.data.length).toBe(20 * 1024);
  });

  it('stops sending when the socket says the import was cancelled elsewhere', async () => {
    await mount(16 * 1024);
    const ws = await socketReady();
    let release!: () => void;
    server.gate = new Promise<void>((resolve) => (release = resolve));
    const handle = start(video(64 * 1024));
    const id = await handle.importId;
    await vi.waitFor(() => expect(server.seen.some((s) => s.method === 'PATCH')).toBe(true));
    act(() => ws.receive({ type: 'import', import: makeImport({ id, version: 5, status: 'cancelled', source: 'upload', source_url: null }) }));
    await expect(handle.done).rejects.toThrow();
    await vi.waitFor(() => expect(phase()).toEqual(['cancelled']));
    server.gate = null;
    release();
    // No request after the one in flight when the cancel arrived.
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(server.seen.filter((s) => s.method === 'PATCH')).toHaveLength(1);
  });

  it('cancel() terminates the upload on the server (tus DELETE)', async () => {
    await mount(16 * 1024);
    let release!: () => void;
    server.gate = new Promise<void>((resolve) => (release = resolve));
    const handle = start(video(64 * 1024));
    await handle.importId;
    await vi.waitFor(() => expect(server.seen.some((s) => s.method === 'PATCH')).toBe(true));
    const cancelled = act(() => handle.cancel());
    server.gate = null;
    release();
    await cancelled;
    await vi.waitFor(() => expect(server.uploads.get('imp-1')!.deleted).toBe(true));
    expect(server.seen.find((s) => s.method === 'DELETE')?.auth).toMatch(/^Bearer /);
    await vi.waitFor(() => expect(phase()).toEqual(['cancelled']));
  });

  it('cancel() while the creation is in flight terminates the upload once it exists', async () => {
    await mount(16 * 1024);
    let release!: () => void;
    server.creationGate = new Promise<void>((resolve) => (release = resolve));
    const handle = start(video(32 * 1024));
    await vi.waitFor(() => expect(server.seen.some((s) => s.method === 'POST')).toBe(true));
    await handle.cancel();
    await vi.waitFor(() => expect(phase()).toEqual(['cancelled']));
    server.creationGate = null;
    release();
    await vi.waitFor(() => expect(server.uploads.get('imp-1')?.deleted).toBe(true));
    expect(server.seen.filter((s) => s.method === 'PATCH')).toHaveLength(0);
    await expect(handle.importId).rejects.toThrow('upload cancelled');
  });

  it('picking the same file again resumes from the offset the server has, sending no byte twice', async () => {
    await mount(16 * 1024);
    const file = video(48 * 1024);
    let release!: () => void;
    // The first chunk goes through; the second is held in flight.
    server.holdFrom = 16 * 1024;
    server.gate = new Promise<void>((resolve) => (release = resolve));
    const first = start(file);
    await first.importId;
    await vi.waitFor(() => expect(server.seen.filter((s) => s.method === 'PATCH')).toHaveLength(2));
    // A reload: the page goes away mid-upload (unmount stops sending, keeps the upload).
    act(() => root.unmount());
    server.gate = null;
    release();
    // The held chunk had fully arrived: the server stores it although the page is gone.
    await vi.waitFor(() => expect(server.uploads.get('imp-1')!.data.length).toBe(32 * 1024));
    const storedBefore = server.uploads.get('imp-1')!.data.length;

    root = createRoot(container);
    await mount(16 * 1024);
    const again = start(file);
    await expect(again.importId).resolves.toBe('imp-1');
    await again.done;
    const afterReload = server.seen.slice(server.seen.findIndex((s) => s.method === 'HEAD'));
    expect(afterReload[0]).toMatchObject({ method: 'HEAD', path: '/api/uploads/imp-1' });
    expect(afterReload.filter((s) => s.method === 'POST')).toHaveLength(0);
    const resentFrom = afterReload.find((s) => s.method === 'PATCH')!.offset;
    expect(resentFrom).toBe(storedBefore);
    expect(server.uploads.get('imp-1')!.data.equals(Buffer.from(await file.arrayBuffer()))).toBe(true);
    // Finished: the fingerprint is forgotten.
    expect(Object.keys(localStorage).filter((key) => key.startsWith('tus::'))).toEqual([]);
  });
});
