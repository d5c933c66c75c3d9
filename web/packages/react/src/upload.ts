/**
 * `useUpload()`: resumable uploads (tus 1.0, with `tus-js-client`) of files
 * from the person's disk into Reeltime imports.
 *
 * A separate entry (`@reeltime/react/upload`) so that apps that only show
 * progress never load tus-js-client, and `@reeltime/client` stays free of
 * dependencies.
 *
 * Why it works the way it does:
 * - creating the upload creates the import on the server, which arrives over
 *   the socket like any other: the row and its bar come from the server
 *   (bytes stored, not bytes sent), so every tab shows the same thing;
 * - every tus request carries a fresh `Authorization: Bearer` token from the
 *   provider's `getToken` (Clerk caches a token until shortly before it
 *   expires), so an upload outlives many 60 s tokens; a 401 is retried once
 *   with `skipCache`;
 * - tus-js-client remembers the upload URL by file fingerprint (name, type,
 *   size, modification time) in localStorage: picking the same file again
 *   after a reload or a crash resumes from the offset the server has;
 * - when the import ends on the server while bytes are still being sent
 *   (cancelled in another tab, refused as not a video, expired), the
 *   upload here stops at once instead of failing on the next PATCH.
 */
import { useCallback, useContext, useEffect, useRef, useState } from 'react';
import { Upload, type DetailedError, type HttpRequest, type UploadOptions } from 'tus-js-client';
import type { GetToken, Import } from '@reeltime/client';
import { ProgressClientContext, ProviderSettingsContext } from './context.js';

/**
 * Bytes per PATCH request. 8 MiB: large enough that per-request costs
 * (a token, a round trip, the server's fsync/part write) stay under a few
 * percent even on a fast link, small enough that a dropped connection
 * re-sends at most a few seconds of a slow one, and above S3's 5 MiB
 * minimum part size so each PATCH is one multipart part on scaled-out
 * servers. The server accepts PATCH bodies of tens of MiB.
 */
export const DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024;

/** Waits between retries of a failed request (network errors, 5xx, 409, 423), as tus-js-client takes them. */
export const DEFAULT_RETRY_DELAYS: readonly number[] = [0, 1000, 3000, 5000, 10000];

/** Where one upload is, as seen from this tab. */
export type UploadPhase = 'starting' | 'uploading' | 'done' | 'failed' | 'cancelled';

/** One upload started by this hook; the import itself (and its bar) arrives over the socket. */
export interface UploadState {
  /** Local key, unique within the page. */
  key: number;
  fileName: string;
  /** The import the upload created, once the server answered the creation. */
  importId: string | null;
  phase: UploadPhase;
  /** Bytes this tab has sent (the server's stored count is the import's `bytes_done`). */
  bytesSent: number;
  bytesTotal: number;
  /** Why it failed: the server's error code and sentence when it sent one. */
  error: { status: number | null; code: string; message: string } | null;
}

/** What `upload()` returns. */
export interface UploadHandle {
  readonly key: number;
  /** Resolves with the import id once the server created the upload (and so the import). */
  readonly importId: Promise<string>;
  /** Resolves when the server has stored the last byte; rejects with the failure. */
  readonly done: Promise<void>;
  /** Stops sending and ends the import on the server (tus termination: it becomes `cancelled`). */
  cancel(): Promise<void>;
}

/** Options of {@link useUpload}; all optional. */
export interface UseUploadOptions {
  /** The tus creation URL; defaults to `/api/uploads` on the provider's server. */
  endpoint?: string;
  /** Bytes per PATCH; {@link DEFAULT_CHUNK_SIZE} by default. */
  chunkSize?: number;
  /** See {@link DEFAULT_RETRY_DELAYS}. */
  retryDelays?: readonly number[];
}

/** What {@link useUpload} returns. */
export interface UseUploadResult {
  /** Starts (or resumes, for a file uploaded before) one upload. */
  upload(file: File, options?: { title?: string }): UploadHandle;
  /** This tab's uploads, oldest first. */
  uploads: readonly UploadState[];
  /** Forgets a finished entry (e.g. after showing its error). */
  dismiss(key: number): void;
}

/** Final statuses of an import: its upload has nothing more to send. */
const FINAL: ReadonlySet<Import['status']> = new Set(['completed', 'failed', 'cancelled']);

/**
 * The tus creation URL for a progress socket URL:
 * `wss://host/api/ws/progress` becomes `https://host/api/uploads`.
 */
export function uploadEndpoint(socketUrl: string, base?: string): string {
  const url = new URL(socketUrl, base ?? (typeof location === 'undefined' ? undefined : location.href));
  if (url.protocol === 'wss:') url.protocol = 'https:';
  if (url.protocol === 'ws:') url.protocol = 'http:';
  const prefix = url.pathname.endsWith('/api/ws/progress') ? url.pathname.slice(0, -'/api/ws/progress'.length) : '';
  url.pathname = `${prefix}/api/uploads`;
  url.search = '';
  url.hash = '';
  return url.toString();
}

/** The import id of an upload URL: its last path segment (the server makes them equal). */
export function importIdOfUploadUrl(uploadUrl: string): string {
  const path = new URL(uploadUrl, 'http://x').pathname.replace(/\/+$/, '');
  return decodeURIComponent(path.slice(path.lastIndexOf('/') + 1));
}

/** The server's `{"error":{"code","message"}}` out of a failed tus request, or a generic sentence. */
export function describeUploadError(error: Error): NonNullable<UploadState['error']> {
  const response = (error as DetailedError).originalResponse ?? null;
  const status = response ? response.getStatus() : null;
  if (response) {
    try {
      const body = JSON.parse(response.getBody()) as { error?: { code?: unknown; message?: unknown } };
      if (typeof body.error?.code === 'string' && typeof body.error.message === 'string') {
        return { status, code: body.error.code, message: body.error.message };
      }
    } catch {
      // Not the API's JSON: fall through.
    }
    return { status, code: `http_${status}`, message: `The server answered ${status}.` };
  }
  return { status: null, code: 'network', message: 'The upload could not reach the server.' };
}

/** The status of a failed tus request, or null for a network error. */
function statusOf(error: Error): number | null {
  const response = (error as DetailedError).originalResponse ?? null;
  return response ? response.getStatus() : null;
}

interface Running {
  upload: Upload;
  importId: string | null;
  settle: (phase: UploadPhase, error?: UploadState['error']) => void;
}

/**
 * Resumable uploads into imports, inside a `<WebSocketProvider>` (its
 * `getToken` authenticates every request). `upload(file, { title })` starts
 * one and returns at once; the import row appears over the socket as soon
 * as the server has created it.
 */
export function useUpload(options: UseUploadOptions = {}): UseUploadResult {
  const settings = useContext(ProviderSettingsContext);
  const client = useContext(ProgressClientContext);
  if (settings === null || client === null) throw new Error('useUpload must be used inside <WebSocketProvider>');
  const [uploads, setUploads] = useState<readonly UploadState[]>([]);
  const running = useRef(new Map<number, Running>());
  const nextKey = useRef(1);
  const optionsRef = useRef(options);
  optionsRef.current = options;
  const getToken: GetToken = settings.getToken;
  const socketUrl = settings.url;

  const patch = useCallback((key: number, change: Partial<UploadState>) => {
    setUploads((list) => list.map((entry) => (entry.key === key ? { ...entry, ...change } : entry)));
  }, []);

  // An import that ended on the server (cancelled anywhere, refused, expired)
  // has nothing more to receive: stop sending, keep the server's verdict.
  useEffect(
    () =>
      client.subscribe(() => {
        for (const entry of running.current.values()) {
          if (entry.importId === null) continue;
          const status = client.getImport(entry.importId)?.status;
          if (status !== undefined && FINAL.has(status) && status !== 'completed') {
            entry.settle(status === 'cancelled' ? 'cancelled' : 'failed');
          }
        }
      }),
    [client],
  );

  // Leaving the page (or unmounting) stops sending but keeps the upload on
  // the server, so picking the file again resumes it.
  useEffect(() => {
    const map = running.current;
    return () => {
      for (const entry of map.values()) void entry.upload.abort(false);
      map.clear();
    };
  }, []);

  const upload = useCallback(
    (file: File, uploadOptions: { title?: string } = {}): UploadHandle => {
      const key = nextKey.current++;
      const current = optionsRef.current;
      const endpoint = current.endpoint ?? uploadEndpoint(socketUrl);
      const metadata: Record<string, string> = { filename: file.name, filetype: file.type || 'application/octet-stream' };
      const title = uploadOptions.title?.trim();
      if (title) metadata.title = title;
      setUploads((list) => [
        ...list,
        { key, fileName: file.name, importId: null, phase: 'starting', bytesSent: 0, bytesTotal: file.size, error: null },
      ]);

      let resolveId!: (id: string) => void;
      let rejectId!: (error: Error) => void;
      const importId = new Promise<string>((resolve, reject) => {
        resolveId = resolve;
        rejectId = reject;
      });
      let resolveDone!: () => void;
      let rejectDone!: (error: Error) => void;
      const done = new Promise<void>((resolve, reject) => {
        resolveDone = resolve;
        rejectDone = reject;
      });
      // Callers that only watch the socket need not handle these.
      importId.catch(() => undefined);
      done.catch(() => undefined);

      let skipCache = false;
      let refreshedAfter401 = false;
      // cancel() before the server answered the creation: terminate it as soon as it exists.
      let terminateOnCreation = false;
      const tusOptions: UploadOptions = {
        endpoint,
        chunkSize: current.chunkSize ?? DEFAULT_CHUNK_SIZE,
        retryDelays: [...(current.retryDelays ?? DEFAULT_RETRY_DELAYS)],
        metadata,
        removeFingerprintOnSuccess: true,
        async onBeforeRequest(request: HttpRequest) {
          const token = skipCache ? await getToken({ skipCache: true }) : await getToken();
          skipCache = false;
          if (token === null) throw new Error('signed out');
          request.setHeader('Authorization', `Bearer ${token}`);
        },
        onShouldRetry(error) {
          const status = statusOf(error);
          if (status === 401 && !refreshedAfter401) {
            refreshedAfter401 = skipCache = true;
            return true;
          }
          if (status !== null && status >= 400 && status < 500 && status !== 409 && status !== 423) return false;
          return true;
        },
        onUploadUrlAvailable() {
          if (tus.url === null) return;
          if (terminateOnCreation) {
            void tus.abort(true).catch(() => undefined);
            return;
          }
          const id = importIdOfUploadUrl(tus.url);
          const entry = running.current.get(key);
          if (entry) entry.importId = id;
          patch(key, { importId: id, phase: 'uploading' });
          resolveId(id);
        },
        onProgress(bytesSent, bytesTotal) {
          patch(key, { bytesSent, bytesTotal });
        },
        onSuccess() {
          running.current.get(key)?.settle('done');
        },
        onError(error) {
          const described = describeUploadError(error);
          // A 404 after the server ended the import is the end we already know about.
          running.current.get(key)?.settle('failed', described);
        },
      };
      const tus = new Upload(file, tusOptions);

      const settle = (phase: UploadPhase, error: UploadState['error'] = null) => {
        if (!running.current.delete(key)) return;
        if (phase !== 'done') void tus.abort(false);
        patch(key, { phase, error });
        if (phase === 'done') {
          resolveDone();
        } else {
          const failure = new Error(error?.message ?? `upload ${phase}`);
          rejectId(failure);
          rejectDone(failure);
        }
      };
      running.current.set(key, { upload: tus, importId: null, settle });

      // Resume the newest earlier upload of the same file, if the browser remembers one.
      void tus
        .findPreviousUploads()
        .then((previous) => {
          const newest = [...previous].sort((a, b) => b.creationTime.localeCompare(a.creationTime))[0];
          if (newest) tus.resumeFromPreviousUpload(newest);
        })
        .catch(() => undefined)
        .finally(() => {
          if (running.current.has(key)) tus.start();
        });

      return {
        key,
        importId,
        done,
        async cancel() {
          const entry = running.current.get(key);
          if (!entry) return;
          running.current.delete(key);
          patch(key, { phase: 'cancelled' });
          rejectId(new Error('upload cancelled'));
          rejectDone(new Error('upload cancelled'));
          if (tus.url === null) {
            // Still creating: let the creation finish, then terminate what it made.
            terminateOnCreation = true;
            return;
          }
          // Termination (DELETE) ends the import as cancelled and frees the space.
          await tus.abort(true).catch(() => undefined);
        },
      };
    },
    [getToken, socketUrl, patch],
  );

  const dismiss = useCallback((key: number) => {
    setUploads((list) => list.filter((entry) => entry.key !== key || running.current.has(key)));
  }, []);

  return { upload, uploads, dismiss };
}
