/**
 * WebSocket close codes of the Reeltime protocol and what the client does
 * for each one. Kept in one table so the policy is easy to review.
 */

/** Close codes the server (or the browser) may report. */
export const CloseCode = {
  /** Normal closure: what `close()` sends on log-out. */
  NORMAL: 1000,
  /** The server is shutting down. */
  GOING_AWAY: 1001,
  /** We sent a binary frame. */
  UNSUPPORTED_DATA: 1003,
  /** Browser-only: the connection dropped without a close frame (network, refused handshake). */
  ABNORMAL: 1006,
  /** Policy violation: token refused, origin not allowed, too many bad messages. */
  POLICY: 1008,
  /** We sent a message that was too big. */
  TOO_BIG: 1009,
  /** The server hit an internal error. */
  SERVER_ERROR: 1011,
  /** Too many connections, or we read too slowly: try again later. */
  TRY_AGAIN_LATER: 1013,
  /** Our token expired on the open socket: reconnect at once with a fresh one. */
  TOKEN_EXPIRED: 4001,
  /** Sent by this client when it gives up on a silent (dead) socket. */
  CLIENT_DEAD_SOCKET: 4000,
} as const;

/** What to do after a socket closed. */
export type CloseAction =
  /** Reconnect now, forcing a fresh token. */
  | 'reconnect-fresh-token'
  /** The token was refused: retry once with a fresh token, then give up. */
  | 'retry-auth-once'
  /** Wait (exponential backoff with jitter), then reconnect. */
  | 'backoff';

/**
 * Maps a close code received from the server to the client's reaction.
 * The client's own `close()` never gets here (it detaches the socket first),
 * so a 1000 seen here came from the server or a proxy and is retried like any
 * other unexpected drop.
 */
export function actionForClose(code: number): CloseAction {
  switch (code) {
    case CloseCode.TOKEN_EXPIRED:
      return 'reconnect-fresh-token';
    case CloseCode.POLICY:
      return 'retry-auth-once';
    default:
      return 'backoff';
  }
}
