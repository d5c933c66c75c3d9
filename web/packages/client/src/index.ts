/**
 * Framework-free client for Reeltime's live import progress.
 * Import from here; the other files are implementation details.
 */
export { ProgressClient, type ProgressClientOptions } from './ProgressClient.js';
export {
  CloseCode,
  CloseReason,
  CLOSE_CODES,
  actionForClose,
  type CloseAction,
  type CloseCodeRow,
  type CloseSender,
} from './closeCodes.js';
export { backoffCeiling, backoffDelay, DEFAULT_BACKOFF } from './backoff.js';
export { tokenExpiryMs, refreshDelayMs } from './token.js';
export type { NetworkEvents, Timers, WebSocketFactory, WebSocketLike } from './environment.js';
export type * from './types.js';
