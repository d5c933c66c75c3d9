import { describe, expect, it, vi } from 'vitest';
import { ApiError, cancelImport, createImport, deleteImport, fetchConfig } from './api';

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });

describe('api', () => {
  it('reads the config with safe defaults', async () => {
    const config = await fetchConfig(async () => json(200, { dev_issuer: true }));
    expect(config).toEqual({ dev_issuer: true, clerk_publishable_key: null, media_processing: false, samples: [] });
  });

  it('creates an import with a bearer token and the JSON body', async () => {
    const fetchImpl = vi.fn(async (..._args: Parameters<typeof fetch>) => json(201, { id: 'i1', version: 1, status: 'queued' }));
    const created = await createImport(async () => 'tok', { url: 'https://x.test/a.mp4', title: 'A' }, fetchImpl);
    expect(created.id).toBe('i1');
    const [path, init] = fetchImpl.mock.calls[0];
    expect(path).toBe('/api/imports');
    expect(init?.method).toBe('POST');
    expect(new Headers(init?.headers).get('Authorization')).toBe('Bearer tok');
    expect(JSON.parse(String(init?.body))).toEqual({ url: 'https://x.test/a.mp4', title: 'A' });
    await createImport(async () => 'tok', { url: 'https://x.test/b.mp4' }, fetchImpl);
    expect(JSON.parse(String(fetchImpl.mock.calls[1][1]?.body))).toEqual({ url: 'https://x.test/b.mp4' });
  });

  it('turns {"error":{code,message}} into an ApiError', async () => {
    const err = await createImport(async () => 'tok', { url: 'http://10.0.0.1/' }, async () =>
      json(400, { error: { code: 'url_not_allowed', message: 'private address' } }),
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 400, code: 'url_not_allowed', message: 'private address' });
  });

  it('retries a 401 once with a fresh token', async () => {
    const getToken = vi.fn(async (options?: { skipCache?: boolean }) => (options?.skipCache ? 'fresh' : 'stale'));
    const fetchImpl = vi.fn(async (_path: RequestInfo | URL, init?: RequestInit) =>
      new Headers(init?.headers).get('Authorization') === 'Bearer fresh' ? new Response(null, { status: 204 }) : json(401, {}),
    );
    await deleteImport(getToken, 'i1', fetchImpl);
    expect(fetchImpl).toHaveBeenCalledTimes(2);
    expect(fetchImpl.mock.calls[1][0]).toBe('/api/imports/i1');
    expect(getToken).toHaveBeenLastCalledWith({ skipCache: true });
  });

  it('cancel returns the updated import when the server sends one', async () => {
    const updated = await cancelImport(async () => 't', 'i1', async () => json(200, { id: 'i1', version: 5, status: 'cancelled' }));
    expect(updated?.status).toBe('cancelled');
    expect(await cancelImport(async () => 't', 'i1', async () => new Response(null, { status: 204 }))).toBeNull();
  });
});
