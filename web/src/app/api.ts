import type { GetToken, Import } from '@reeltime/client';

/**
 * The few REST calls the page makes. Errors from the server arrive as
 * `{"error":{"code","message"}}`; they become an {@link ApiError} so the
 * page can show the message (or a friendlier sentence for a known code).
 */

/** A sample video the server offers for one-click imports. */
export interface Sample {
  name: string;
  title: string;
  url: string;
}

/** `GET /api/config`: what this server supports. */
export interface AppConfig {
  dev_issuer: boolean;
  clerk_publishable_key: string | null;
  media_processing: boolean;
  samples: Sample[];
}

/** A failed request, with the server's error code when it sent one. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Turns a non-2xx response into an ApiError, reading the JSON error body when there is one. */
async function errorFrom(response: Response): Promise<ApiError> {
  let code = `http_${response.status}`;
  let message = `The server answered ${response.status} ${response.statusText}`.trim();
  try {
    const body: unknown = await response.json();
    const error = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
    if (typeof error?.code === 'string') code = error.code;
    if (typeof error?.message === 'string' && error.message !== '') message = error.message;
  } catch {
    // Not JSON: keep the status line.
  }
  return new ApiError(response.status, code, message);
}

/** Loads the server's configuration; the page needs it before anything else. */
export async function fetchConfig(fetchImpl: typeof fetch = fetch): Promise<AppConfig> {
  const response = await fetchImpl('/api/config', { headers: { Accept: 'application/json' } });
  if (!response.ok) throw await errorFrom(response);
  const config = (await response.json()) as Partial<AppConfig>;
  return {
    dev_issuer: config.dev_issuer === true,
    clerk_publishable_key: config.clerk_publishable_key ?? null,
    media_processing: config.media_processing === true,
    samples: Array.isArray(config.samples) ? config.samples : [],
  };
}

/**
 * A request with `Authorization: Bearer <token>`. A 401 is retried once
 * with a fresh token (the cached one may just have expired), like the socket does.
 */
async function authorized(
  getToken: GetToken,
  path: string,
  init: RequestInit,
  fetchImpl: typeof fetch,
): Promise<Response> {
  for (const skipCache of [false, true]) {
    const token = skipCache ? await getToken({ skipCache: true }) : await getToken();
    if (token === null) throw new ApiError(401, 'signed_out', 'You are signed out.');
    const headers = new Headers(init.headers);
    headers.set('Authorization', `Bearer ${token}`);
    headers.set('Accept', 'application/json');
    const response = await fetchImpl(path, { ...init, headers });
    if (response.status !== 401 || skipCache) {
      if (!response.ok) throw await errorFrom(response);
      return response;
    }
  }
  throw new Error('unreachable');
}

/** Starts an import; answers the new import (status `queued`). */
export async function createImport(
  getToken: GetToken,
  input: { url: string; title?: string },
  fetchImpl: typeof fetch = fetch,
): Promise<Import> {
  // `title` is optional: leave it out rather than send an empty string.
  const body = JSON.stringify(input.title ? { url: input.url, title: input.title } : { url: input.url });
  const response = await authorized(
    getToken,
    '/api/imports',
    { method: 'POST', body, headers: { 'Content-Type': 'application/json' } },
    fetchImpl,
  );
  return (await response.json()) as Import;
}

/** Asks the server to cancel an unfinished import; answers the import when the server returns it. */
export async function cancelImport(
  getToken: GetToken,
  id: string,
  fetchImpl: typeof fetch = fetch,
): Promise<Import | null> {
  const response = await authorized(getToken, `/api/imports/${encodeURIComponent(id)}/cancel`, { method: 'POST' }, fetchImpl);
  return readOptionalImport(response);
}

/** Deletes a finished import. */
export async function deleteImport(getToken: GetToken, id: string, fetchImpl: typeof fetch = fetch): Promise<void> {
  await authorized(getToken, `/api/imports/${encodeURIComponent(id)}`, { method: 'DELETE' }, fetchImpl);
}

async function readOptionalImport(response: Response): Promise<Import | null> {
  try {
    const body = (await response.json()) as Partial<Import> | null;
    return body && typeof body.id === 'string' && typeof body.version === 'number' ? (body as Import) : null;
  } catch {
    return null;
  }
}
