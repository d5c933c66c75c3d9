/**
 * Shapes of the data the Reeltime server sends over `/api/ws/progress` and
 * the REST API (see `docs/protocol.md` in the repository root). They are
 * declared once here so the client, the React bindings and the page agree.
 */

/**
 * Lifecycle of one import on the server. The last three are final.
 * `uploading`: an upload whose bytes are still arriving (not final).
 */
export type ImportStatus =
  | 'uploading'
  | 'queued'
  | 'downloading'
  | 'processing'
  | 'completed'
  | 'failed'
  | 'cancelled';

/** Why an import failed, in machine (`code`) and human (`message`) form. */
export interface ImportError {
  code: string;
  message: string;
}

/**
 * What a finished import produced. The server may add fields over time, so
 * everything is optional and unknown keys are kept.
 */
export interface ImportResult {
  video_url?: string;
  thumbnail_url?: string;
  [key: string]: unknown;
}

/** Where an import's bytes come from. */
export type ImportSource = 'url' | 'upload' | 'external';

/** One import, identical in REST responses and WebSocket messages. */
export interface Import {
  id: string;
  status: ImportStatus;
  /** Finer-grained step (e.g. `downloading`, `transcoding`), when the server reports one. */
  stage?: string | null;
  /** 0..1, or null while the total is unknown. */
  progress: number | null;
  bytes_done: number;
  bytes_total: number | null;
  /** Strictly increasing per import: the only safe way to order updates. */
  version: number;
  attempt: number;
  /**
   * Where the bytes come from: `url` (downloaded by the server), `upload`
   * (sent by the browser over tus), `external` (run by the app's own workers).
   */
  source: ImportSource;
  /** The URL a `url` import downloads; null for other sources. */
  source_url: string | null;
  /** The uploaded file's name as the browser gave it (`upload` imports), else null. */
  file_name: string | null;
  title: string | null;
  /** The app's own JSON object given at creation, or null. */
  metadata: Record<string, unknown> | null;
  error: ImportError | null;
  result: ImportResult | null;
  /** Position in the server's queue while `queued`, when known. */
  queue_position?: number | null;
  created_at: string;
  updated_at: string;
}

/** First message after a successful authentication. */
export interface ReadyMessage {
  type: 'ready';
  user_id: string;
  connection_id: string;
  /** Unix seconds at which the current token expires. */
  expires_at?: number | null;
  heartbeat_ms?: number | null;
  protocol?: number;
}

/**
 * A deleted import: its id and the version of the delete (higher than any
 * the import had). Anything about that id not newer than this is stale.
 */
export interface RemovedImport {
  id: string;
  version: number;
}

/**
 * The user's current imports, sent once after every `ready`, and the recent
 * deletes: an import absent from `imports` may just be old, one in
 * `removed` is gone.
 */
export interface SnapshotMessage {
  type: 'snapshot';
  imports: Import[];
  /** Absent from servers older than deletes on the socket: treat as empty. */
  removed: RemovedImport[];
}

/** One change to one import. */
export interface ImportMessage {
  type: 'import';
  import: Import;
}

/** One import was deleted (in this tab or any other): drop the row. */
export interface ImportRemovedMessage {
  type: 'import_removed';
  id: string;
  version: number;
}

/** Answer to an in-band `{"type":"auth"}` refresh. */
export interface AuthOkMessage {
  type: 'auth_ok';
  expires_at?: number | null;
}

/** Answer to our `{"type":"ping"}`. */
export interface PongMessage {
  type: 'pong';
}

/** A complaint about something we sent; the socket stays open. */
export interface ErrorMessage {
  type: 'error';
  code: string;
  message: string;
}

/** Every message the server may send. */
export type ServerMessage =
  | ReadyMessage
  | SnapshotMessage
  | ImportMessage
  | ImportRemovedMessage
  | AuthOkMessage
  | PongMessage
  | ErrorMessage;

/**
 * Connection status as shown to people:
 * - `connecting`: an attempt is under way (getting a token, opening, authenticating);
 * - `open`: authenticated, updates flow;
 * - `reconnecting`: waiting for the next attempt (see `nextRetryAt`);
 * - `offline`: the browser says there is no network; we wait for `online`;
 * - `unauthorized`: signed out, or the server refused our token twice; no more attempts;
 * - `closed`: stopped on purpose (`close()`), or not started yet.
 */
export type ConnectionStatus =
  | 'connecting'
  | 'open'
  | 'reconnecting'
  | 'offline'
  | 'unauthorized'
  | 'closed';

/** Everything a UI needs to describe the connection. Replaced (never mutated) on change. */
export interface ConnectionState {
  status: ConnectionStatus;
  /** Close code of the last socket that ended (or the client's own 4000 for a dead socket). */
  lastCloseCode: number | null;
  lastCloseReason: string | null;
  /** Epoch ms of the next attempt while `reconnecting`, else null. */
  nextRetryAt: number | null;
  /** From `ready`: who the server says we are. */
  userId: string | null;
  /** From `ready`: changes only when the socket is replaced. */
  connectionId: string | null;
  /** Epoch ms at which the current token expires, when known. */
  tokenExpiresAt: number | null;
}

/** Clerk's `useAuth().getToken` signature: any token source with it plugs in. */
export type GetToken = (options?: { skipCache?: boolean }) => Promise<string | null>;
