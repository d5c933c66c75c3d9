import type { Import, RemovedImport, ServerMessage } from './types.js';

/**
 * Turning raw WebSocket frames into typed messages, defensively.
 *
 * Why: a malformed or unknown frame (a newer server, a proxy error page)
 * must never crash the client or corrupt its state; such frames are dropped.
 */

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** True when `value` has the fields the client relies on to order and show an import. */
export function isImport(value: unknown): value is Import {
  return (
    isObject(value) &&
    typeof value.id === 'string' &&
    typeof value.version === 'number' &&
    typeof value.status === 'string'
  );
}

/** True when `value` names a deleted import and the version of its delete. */
export function isRemovedImport(value: unknown): value is RemovedImport {
  return isObject(value) && typeof value.id === 'string' && typeof value.version === 'number';
}

/** Parses one text frame; returns null for anything that is not a known, well-formed message. */
export function parseServerMessage(data: unknown): ServerMessage | null {
  if (typeof data !== 'string') return null;
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch {
    return null;
  }
  if (!isObject(value) || typeof value.type !== 'string') return null;
  switch (value.type) {
    case 'ready':
      return typeof value.user_id === 'string' ? (value as unknown as ServerMessage) : null;
    case 'snapshot':
      return Array.isArray(value.imports)
        ? {
            type: 'snapshot',
            imports: value.imports.filter(isImport),
            removed: Array.isArray(value.removed) ? value.removed.filter(isRemovedImport) : [],
          }
        : null;
    case 'import':
      return isImport(value.import) ? { type: 'import', import: value.import } : null;
    case 'import_removed':
      return isRemovedImport(value) ? { type: 'import_removed', id: value.id, version: value.version } : null;
    case 'auth_ok':
    case 'pong':
    case 'error':
      return value as unknown as ServerMessage;
    default:
      return null;
  }
}

/** The first (or refresh) message carrying a token. */
export function authMessage(token: string): string {
  return JSON.stringify({ type: 'auth', token });
}

/** Our application-level ping; the server answers `{"type":"pong"}`. */
export const PING_MESSAGE = JSON.stringify({ type: 'ping' });
