import { EventEmitter } from 'node:events';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** `web/`, whatever the working directory. */
export const WEB_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Screenshots and logs of every run (gitignored). */
export const RESULTS_DIR = path.join(WEB_DIR, 'test-results');

/** The bound of every single wait: generous, the machine may be loaded. */
export const WAIT_MS = 60_000;

export function ensureResultsDir(): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  return RESULTS_DIR;
}

/** A file name made from a test name. */
export function slug(text: string): string {
  return text
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '')
    .slice(0, 80);
}

/**
 * Resolves once `condition()` is truthy, re-checking it on every `event` of
 * `emitter`: waiting on what happens, never on the clock. Rejects after
 * `timeoutMs` with `what` in the message.
 */
export function waitForEvent<T>(
  emitter: EventEmitter,
  event: string,
  condition: () => T | undefined | null | false,
  what: string,
  timeoutMs = WAIT_MS,
): Promise<T> {
  const now = condition();
  if (now) return Promise.resolve(now);
  return new Promise<T>((resolve, reject) => {
    const onEvent = () => {
      let value: T | undefined | null | false;
      try {
        value = condition();
      } catch (error) {
        cleanup();
        reject(error as Error);
        return;
      }
      if (value) {
        cleanup();
        resolve(value);
      }
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
    }, timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      emitter.off(event, onEvent);
    };
    emitter.on(event, onEvent);
  });
}

/**
 * Polls `probe` until `accept` holds (for state only reachable by asking,
 * like the server's REST API). Bounded by `timeoutMs`.
 */
export async function poll<T>(
  probe: () => Promise<T>,
  accept: (value: T) => boolean,
  what: string,
  { timeoutMs = WAIT_MS, intervalMs = 200 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  let lastError: unknown;
  for (;;) {
    try {
      last = await probe();
      if (accept(last)) return last;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      const seen = lastError !== undefined ? `; last error: ${String(lastError)}` : `; last value: ${JSON.stringify(last)}`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${seen}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** A promise with its resolve function, for gates opened by the test. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}
