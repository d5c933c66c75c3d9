/**
 * Reading the expiry out of a JWT without verifying it.
 *
 * Why: the client must refresh the token on the open socket before it
 * expires. The server tells us `expires_at`, but when it does not (or before
 * it has answered), the token's own `exp` claim is the next best source.
 * Nothing here is a security check: the server verifies every token.
 */

/** Decodes base64url (no padding) to a string, or returns null. */
function decodeBase64Url(segment: string): string | null {
  try {
    const base64 = segment.replace(/-/g, '+').replace(/_/g, '/');
    const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
    const binary = atob(padded);
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    return new TextDecoder().decode(bytes);
  } catch {
    return null;
  }
}

/** The token's `exp` claim in epoch ms, or null if the token is not a readable JWT. */
export function tokenExpiryMs(token: string): number | null {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  const json = decodeBase64Url(parts[1]);
  if (json === null) return null;
  try {
    const payload: unknown = JSON.parse(json);
    if (typeof payload === 'object' && payload !== null && 'exp' in payload) {
      const exp = (payload as { exp: unknown }).exp;
      if (typeof exp === 'number' && Number.isFinite(exp)) return exp * 1000;
    }
  } catch {
    // Not JSON: fall through.
  }
  return null;
}

/** Tokens living at least this long are refreshed `REFRESH_LEAD_MS` before expiry. */
export const SHORT_TOKEN_MS = 20_000;
/** How early a normal token is refreshed. */
export const REFRESH_LEAD_MS = 10_000;
/** Never schedule a refresh sooner than this (guards against clock skew storms). */
export const MIN_REFRESH_DELAY_MS = 1_000;

/**
 * How long to wait before refreshing a token that expires at `expiresAtMs`.
 *
 * About 10 s early for normal tokens (Clerk's live 60 s); tokens with less
 * than 20 s left are refreshed at half their remaining life, so even a 10 s
 * development token is renewed in time. Never below one second, so a skewed
 * clock cannot cause a refresh storm.
 */
export function refreshDelayMs(expiresAtMs: number, nowMs: number): number {
  const remaining = expiresAtMs - nowMs;
  const delay = remaining < SHORT_TOKEN_MS ? remaining / 2 : remaining - REFRESH_LEAD_MS;
  return Math.max(MIN_REFRESH_DELAY_MS, Math.floor(delay));
}
