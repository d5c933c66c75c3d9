/**
 * The development sign-in kept in localStorage, so a reload stays signed in.
 * Only the name and the chosen token lifetime are stored, never a token.
 */
export interface DevSession {
  name: string;
  ttlSecs: number;
}

const KEY = 'reeltime.session';

/** Token lifetimes offered at sign-in; short ones let you watch in-band refresh. */
export const TTL_CHOICES = [10, 20, 60, 300] as const;
/** Clerk's session tokens live 60 s. */
export const DEFAULT_TTL_SECS = 60;

/** The stored session, or null (also when storage is unavailable or holds junk). */
export function loadSession(storage: Storage | undefined = safeStorage()): DevSession | null {
  try {
    const raw = storage?.getItem(KEY);
    if (!raw) return null;
    const value = JSON.parse(raw) as Partial<DevSession>;
    if (typeof value.name !== 'string' || value.name.trim() === '') return null;
    const ttl = typeof value.ttlSecs === 'number' && value.ttlSecs > 0 ? value.ttlSecs : DEFAULT_TTL_SECS;
    return { name: value.name, ttlSecs: ttl };
  } catch {
    return null;
  }
}

/** Remembers the session. */
export function saveSession(session: DevSession, storage: Storage | undefined = safeStorage()): void {
  try {
    storage?.setItem(KEY, JSON.stringify(session));
  } catch {
    // Private mode or full storage: the session just won't survive a reload.
  }
}

/** Forgets the session (sign-out). */
export function clearSession(storage: Storage | undefined = safeStorage()): void {
  try {
    storage?.removeItem(KEY);
  } catch {
    // Nothing to do.
  }
}

function safeStorage(): Storage | undefined {
  try {
    return globalThis.localStorage;
  } catch {
    return undefined;
  }
}
