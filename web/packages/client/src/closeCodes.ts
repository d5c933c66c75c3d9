/**
 * WebSocket close codes of the Reeltime protocol, their reasons and what the
 * client does after each one.
 *
 * The protocol crate (`crates/protocol/src/close.rs`) is the one definition;
 * this is the same table, typed for TypeScript. `closeCodes.test.ts` compares
 * it with `crates/protocol/close-codes.json`, which the protocol crate's own
 * test keeps equal to its table, so a code or reason changed on one side
 * fails a test until the other side follows. Same names, same values.
 */

/** Who puts a code on the wire (`browser`: nobody, the browser reports it). */
export type CloseSender = 'server' | 'client' | 'browser';

/** What to do after a socket closed. */
export type CloseAction =
  /** Reconnect now, forcing a fresh token. */
  | 'reconnect-fresh-token'
  /** The token was refused: retry once with a fresh token, then give up. */
  | 'retry-auth-once'
  /** Wait (exponential backoff with jitter), then reconnect. */
  | 'backoff';

/** One row of {@link CLOSE_CODES}; field names as in the exported JSON. */
export interface CloseCodeRow {
  code: number;
  name: string;
  sent_by: CloseSender;
  action: CloseAction;
  reasons: readonly { name: string; text: string }[];
}

/** Every close code of the progress socket, in the protocol crate's order. */
export const CLOSE_CODES = [
  {
    code: 1000,
    name: 'NORMAL',
    sent_by: 'client',
    action: 'backoff',
    reasons: [
      { name: 'CLIENT_CLOSED', text: 'client closed' },
      { name: 'REPLACED', text: 'replaced' },
      { name: 'RESTART', text: 'restart' },
      { name: 'SIGNED_OUT', text: 'signed out' },
    ],
  },
  {
    code: 1001,
    name: 'GOING_AWAY',
    sent_by: 'server',
    action: 'backoff',
    reasons: [{ name: 'SHUTTING_DOWN', text: 'server shutting down' }],
  },
  {
    code: 1002,
    name: 'PROTOCOL_ERROR',
    sent_by: 'server',
    action: 'backoff',
    reasons: [{ name: 'PROTOCOL_ERROR', text: 'protocol error' }],
  },
  {
    code: 1003,
    name: 'UNSUPPORTED_DATA',
    sent_by: 'server',
    action: 'backoff',
    reasons: [{ name: 'BINARY_MESSAGE', text: 'binary messages not supported' }],
  },
  { code: 1006, name: 'ABNORMAL', sent_by: 'browser', action: 'backoff', reasons: [] },
  {
    code: 1007,
    name: 'INVALID_PAYLOAD',
    sent_by: 'server',
    action: 'backoff',
    reasons: [{ name: 'INVALID_UTF8', text: 'invalid utf-8' }],
  },
  {
    code: 1008,
    name: 'POLICY_VIOLATION',
    sent_by: 'server',
    action: 'retry-auth-once',
    reasons: [
      { name: 'AUTH_MISSING_TOKEN', text: 'missing token' },
      { name: 'AUTH_MALFORMED_TOKEN', text: 'malformed token' },
      { name: 'AUTH_ALGORITHM_NOT_ALLOWED', text: 'algorithm not allowed' },
      { name: 'AUTH_UNKNOWN_KEY', text: 'unknown key' },
      { name: 'AUTH_BAD_SIGNATURE', text: 'bad signature' },
      { name: 'AUTH_TOKEN_EXPIRED', text: 'token expired' },
      { name: 'AUTH_TOKEN_NOT_YET_VALID', text: 'token not yet valid' },
      { name: 'AUTH_WRONG_ISSUER', text: 'wrong issuer' },
      { name: 'AUTH_MISSING_CLAIM', text: 'missing claim' },
      { name: 'AUTH_PARTY_NOT_ALLOWED', text: 'azp not allowed' },
      { name: 'AUTH_KEYS_UNAVAILABLE', text: 'keys unavailable' },
      { name: 'AUTH_TIMEOUT', text: 'auth timeout' },
      { name: 'AUTH_DUPLICATE_TOKEN', text: 'duplicate token' },
      { name: 'ORIGIN_NOT_ALLOWED', text: 'origin not allowed' },
      { name: 'USER_CHANGED', text: 'user changed' },
      { name: 'TOO_MANY_BAD_MESSAGES', text: 'too many bad messages' },
      { name: 'SESSION_REVOKED', text: 'session revoked' },
      { name: 'USER_DELETED', text: 'user deleted' },
    ],
  },
  {
    code: 1009,
    name: 'MESSAGE_TOO_BIG',
    sent_by: 'server',
    action: 'backoff',
    reasons: [{ name: 'MESSAGE_TOO_BIG', text: 'message too big' }],
  },
  {
    code: 1011,
    name: 'INTERNAL_ERROR',
    sent_by: 'server',
    action: 'backoff',
    reasons: [{ name: 'SERVER_ERROR', text: 'server error' }],
  },
  {
    code: 1013,
    name: 'TRY_AGAIN_LATER',
    sent_by: 'server',
    action: 'backoff',
    reasons: [
      { name: 'TOO_MANY_CONNECTIONS', text: 'too many connections' },
      { name: 'TOO_MANY_WAITING', text: 'too many sockets waiting for a token' },
      {
        name: 'TOO_MANY_WAITING_FROM_ADDRESS',
        text: 'too many sockets waiting for a token from this address',
      },
      { name: 'CLIENT_TOO_SLOW', text: 'client too slow' },
      { name: 'SERVER_BUSY', text: 'server busy' },
    ],
  },
  {
    code: 4000,
    name: 'CLIENT_DEAD_SOCKET',
    sent_by: 'client',
    action: 'backoff',
    reasons: [
      { name: 'NO_ANSWER', text: 'no answer from the server' },
      { name: 'SILENT', text: 'no message within two heartbeats' },
      { name: 'NO_ANSWER_AFTER_ONLINE', text: 'no answer after the network came back' },
    ],
  },
  {
    code: 4001,
    name: 'TOKEN_EXPIRED',
    sent_by: 'server',
    action: 'reconnect-fresh-token',
    reasons: [{ name: 'TOKEN_EXPIRED', text: 'token expired' }],
  },
] as const satisfies readonly CloseCodeRow[];

type Row = (typeof CLOSE_CODES)[number];
type ReasonOf<R> = R extends { reasons: readonly (infer X)[] } ? X : never;
type AnyReason = ReasonOf<Row> & { name: string; text: string };

/** Each code by its protocol name, e.g. `CloseCode.POLICY_VIOLATION === 1008`. */
export const CloseCode = Object.fromEntries(CLOSE_CODES.map((row) => [row.name, row.code])) as {
  readonly [R in Row as R['name']]: R['code'];
};

/** Each reason text by its protocol name, e.g. `CloseReason.CLIENT_CLOSED === 'client closed'`. */
export const CloseReason = Object.fromEntries(
  CLOSE_CODES.flatMap((row) => row.reasons.map((reason: AnyReason) => [reason.name, reason.text])),
) as { readonly [X in AnyReason as X['name']]: X['text'] };

/**
 * Maps a close code received from the server to the client's reaction, as
 * the table says; a code the protocol does not define is backed off.
 * The client's own `close()` never gets here (it detaches the socket first),
 * so a 1000 seen here came from the server or a proxy and is retried like any
 * other unexpected drop.
 */
export function actionForClose(code: number): CloseAction {
  const row: CloseCodeRow | undefined = CLOSE_CODES.find((candidate) => candidate.code === code);
  return row?.action ?? 'backoff';
}
