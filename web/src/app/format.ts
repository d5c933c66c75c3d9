import type { Import, ImportError, ImportStatus } from '@reeltime/client';

/**
 * Turning import data into words and numbers a person reads at a glance.
 * Pure functions, unit-tested.
 */

/** Final statuses: nothing will change any more. */
export function isFinished(status: ImportStatus): boolean {
  return status === 'completed' || status === 'failed' || status === 'cancelled';
}

/** Whole percent 0..100, or null while the size is unknown. A completed import is always 100. */
export function percentOf(item: Pick<Import, 'status' | 'progress'>): number | null {
  if (item.status === 'completed') return 100;
  if (typeof item.progress !== 'number' || !Number.isFinite(item.progress)) return null;
  // Floor, so 100% is only shown once the import is really done.
  return Math.min(100, Math.max(0, Math.floor(item.progress * 100)));
}

/** Byte counts in decimal units: 532 B, 1.4 kB, 12 MB, 3.1 GB. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '?';
  if (bytes < 1000) return `${Math.round(bytes)} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = -1;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  const text = value < 10 ? value.toFixed(1) : Math.round(value).toString();
  return `${text} ${units[unit]}`;
}

/** "12 MB of 40 MB", "12 MB" while the total is unknown, or null when there is nothing to say. */
export function formatTransfer(item: Pick<Import, 'bytes_done' | 'bytes_total'>): string | null {
  const done = item.bytes_done ?? 0;
  const total = item.bytes_total;
  if (typeof total === 'number') return `${formatBytes(done)} of ${formatBytes(total)}`;
  return done > 0 ? formatBytes(done) : null;
}

const STATUS_LABELS: Record<ImportStatus, string> = {
  uploading: 'Uploading',
  queued: 'Queued',
  downloading: 'Downloading',
  processing: 'Processing',
  completed: 'Completed',
  failed: 'Failed',
  cancelled: 'Cancelled',
};

/** Label of a status; unknown future statuses are shown as sent. */
export function statusLabel(status: string): string {
  return STATUS_LABELS[status as ImportStatus] ?? humanize(status);
}

/** `making_thumbnail` → "Making thumbnail". */
export function humanize(text: string): string {
  const spaced = text.replace(/[_-]+/g, ' ').trim();
  return spaced.charAt(0).toUpperCase() + spaced.slice(1);
}

const ERROR_SENTENCES: Record<string, string> = {
  url_not_allowed:
    'This address cannot be imported: only public http:// or https:// addresses are allowed.',
  too_large: 'The file is larger than this server accepts.',
  not_a_video: 'That is not a video file.',
  upload_expired: 'The upload was left unfinished for too long and was given up. Pick the file again to start over.',
  storage_error: 'The server could not store the file. Try again later.',
  too_many_uploads: 'You have too many unfinished uploads. Wait for some to finish, or cancel some.',
  network: 'The upload could not reach the server.',
  unreadable_media: 'The file looks like a video but could not be read. It may be damaged or in an unsupported format.',
  interrupted: 'The import was interrupted several times (the server restarted) and was given up.',
  download_failed: 'The download failed: the other site could not be reached or stopped sending data.',
  download_too_slow: 'The other site sent the file too slowly, and the download was given up.',
  quota_exceeded: 'This video does not fit in your storage. Delete some imports to make room.',
  too_long: 'The video is longer than this server accepts.',
  too_many_imports: 'You have too many imports in progress. Wait for some to finish, or cancel some.',
  processing_stalled: 'Processing stopped making progress and was given up.',
  cancelled: 'The import was cancelled.',
  invalid_url: 'That does not look like a web address. It should start with http:// or https://.',
  invalid_request: 'The request was not valid.',
  not_found: 'This import no longer exists.',
  already_finished: 'This import has already finished.',
  conflict: 'This import has already finished.',
  unauthorized: 'Your sign-in has expired. Sign in again.',
  signed_out: 'You are signed out.',
  rate_limited: 'Too many requests. Wait a moment and try again.',
};

/** A sentence for an import or API error code, falling back to the server's own message. */
export function describeError(error: Pick<ImportError, 'code' | 'message'>): string {
  const sentence = ERROR_SENTENCES[error.code];
  if (sentence !== undefined) return sentence;
  if (error.message) return error.message;
  return `Something went wrong (${error.code}).`;
}

/**
 * A readable name: the title, else the uploaded file's name, else the file
 * name in the URL, else the host.
 */
export function displayTitle(item: Pick<Import, 'title' | 'source_url'> & Partial<Pick<Import, 'file_name'>>): string {
  if (item.title && item.title.trim() !== '') return item.title;
  if (item.file_name && item.file_name.trim() !== '') return item.file_name;
  if (!item.source_url) return 'Untitled import';
  try {
    const url = new URL(item.source_url);
    const last = url.pathname.split('/').filter(Boolean).pop();
    return last ? decodeURIComponent(last) : url.host;
  } catch {
    return item.source_url;
  }
}

/** Seconds left until `atMs`, rounded up, never negative. */
export function secondsUntil(atMs: number, nowMs: number): number {
  return Math.max(0, Math.ceil((atMs - nowMs) / 1000));
}
