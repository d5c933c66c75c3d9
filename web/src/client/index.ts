/**
 * Framework-free client for Reeltime's live import progress.
 * Import from here; the other files are implementation details.
 */
export { ProgressClient, type ProgressClientOptions } from './ProgressClient';
export {
  CloseCode,
  CloseReason,
  CLOSE_CODES,
  actionForClose,
  type CloseAction,
  type CloseCodeRow,
  type CloseSender,
} from './closeCodes';
export { backoffCeiling, backoffDelay, DEFAULT_BACKOFF } from './backoff';
export { tokenExpiryMs, refreshDelayMs } from './token';
export type { NetworkEvents, Timers, WebSocketFactory, WebSocketLike } from './environment';
export type * from './types';
