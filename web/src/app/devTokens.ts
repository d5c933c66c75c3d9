import type { GetToken } from '@reeltime/client';

/** Tokens are reused until they have less than this left. */
const REUSE_MARGIN_MS = 5_000;

/** A token source bound to one signed-in development user. */
export interface DevTokenSource {
  /** Clerk-compatible: cached unless `skipCache` or about to expire. */
  getToken: GetToken;
  /** Forgets the cached token (sign-out). */
  clear(): void;
}

/**
 * Tokens from the server's development issuer (`POST /dev/token`), shaped
 * like Clerk's `getToken` so the page uses the provider exactly as a Clerk
 * app would. Concurrent cached requests share one fetch.
 */
export function createDevTokenSource(options: {
  name: string;
  ttlSecs: number;
  fetchImpl?: typeof fetch;
  now?: () => number;
}): DevTokenSource {
  const fetchImpl = options.fetchImpl ?? ((input, init) => fetch(input, init));
  const now = options.now ?? Date.now;
  let cached: { token: string; expiresAtMs: number } | null = null;
  let inFlight: Promise<string> | null = null;

  async function mint(): Promise<string> {
    const response = await fetchImpl('/dev/token', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ sub: options.name, ttl_secs: options.ttlSecs }),
    });
    if (!response.ok) throw new Error(`The development issuer answered ${response.status}`);
    const body = (await response.json()) as { token?: unknown; expires_at?: unknown };
    if (typeof body.token !== 'string') throw new Error('The development issuer sent no token');
    const expiresAtMs =
      typeof body.expires_at === 'number' ? body.expires_at * 1000 : now() + options.ttlSecs * 1000;
    cached = { token: body.token, expiresAtMs };
    return body.token;
  }

  const getToken: GetToken = async (tokenOptions) => {
    if (!tokenOptions?.skipCache && cached !== null && cached.expiresAtMs - now() > REUSE_MARGIN_MS) {
      return cached.token;
    }
    if (!tokenOptions?.skipCache && inFlight !== null) return inFlight;
    const request = mint();
    inFlight = request;
    try {
      return await request;
    } finally {
      if (inFlight === request) inFlight = null;
    }
  };

  return {
    getToken,
    clear() {
      cached = null;
      inFlight = null;
    },
  };
}
