import { describe, expect, it, vi } from 'vitest';
import { createDevTokenSource } from './devTokens';

function issuer(now: () => number) {
  let n = 0;
  return vi.fn(async (_url: RequestInfo | URL, init?: RequestInit) => {
    n += 1;
    const body = JSON.parse(String(init?.body)) as { sub: string; ttl_secs: number };
    return new Response(
      JSON.stringify({ token: `${body.sub}-${n}`, expires_at: Math.floor(now() / 1000) + body.ttl_secs }),
      { status: 200, headers: { 'Content-Type': 'application/json' } },
    );
  });
}

describe('createDevTokenSource', () => {
  it('posts {sub, ttl_secs} to /dev/token and caches until 5 s before expiry', async () => {
    let now = 1_000_000_000_000;
    const fetchImpl = issuer(() => now);
    const source = createDevTokenSource({ name: 'alice', ttlSecs: 20, fetchImpl, now: () => now });
    expect(await source.getToken()).toBe('alice-1');
    expect(fetchImpl).toHaveBeenCalledWith('/dev/token', expect.objectContaining({ method: 'POST' }));
    expect(JSON.parse(String(fetchImpl.mock.calls[0][1]?.body))).toEqual({ sub: 'alice', ttl_secs: 20 });
    now += 14_000;
    expect(await source.getToken()).toBe('alice-1');
    now += 2_000; // 4 s left: too close
    expect(await source.getToken()).toBe('alice-2');
  });

  it('skipCache always mints a new token', async () => {
    const now = 1_000_000_000_000;
    const source = createDevTokenSource({ name: 'bob', ttlSecs: 60, fetchImpl: issuer(() => now), now: () => now });
    expect(await source.getToken()).toBe('bob-1');
    expect(await source.getToken({ skipCache: true })).toBe('bob-2');
    expect(await source.getToken()).toBe('bob-2');
  });

  it('shares one request between concurrent callers', async () => {
    const now = 1_000_000_000_000;
    const fetchImpl = issuer(() => now);
    const source = createDevTokenSource({ name: 'carol', ttlSecs: 60, fetchImpl, now: () => now });
    const [a, b] = await Promise.all([source.getToken(), source.getToken()]);
    expect(a).toBe(b);
    expect(fetchImpl).toHaveBeenCalledTimes(1);
  });

  it('throws when the issuer fails, so the client backs off', async () => {
    const source = createDevTokenSource({
      name: 'dave',
      ttlSecs: 60,
      fetchImpl: async () => new Response('nope', { status: 404 }),
    });
    await expect(source.getToken()).rejects.toThrow(/404/);
  });
});
