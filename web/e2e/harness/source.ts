import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { deferred, waitForEvent, WEB_DIR } from './util';

/** A real 2 s H.264 MP4 (starts `00 00 00 20 ftypisom`), padded to any size with an MP4 `free` box. */
const CLIP = readFileSync(path.join(WEB_DIR, 'e2e', 'fixtures', 'clip.mp4'));
const MP4_MAGIC = Buffer.from('000000206674797069736f6d', 'hex'); // "....ftypisom"

/**
 * A body of exactly `size` bytes that starts like an MP4. From the clip's
 * size up it is a valid MP4 (the clip, then a `free` box of filler), so it
 * passes a content sniff and also a real ffprobe; below that it is the
 * magic bytes followed by filler.
 */
export function mp4Body(size: number): Buffer {
  if (size >= CLIP.length + 8) {
    const filler = Buffer.alloc(size - CLIP.length);
    filler.writeUInt32BE(filler.length, 0);
    filler.write('free', 4, 'latin1');
    return Buffer.concat([CLIP, filler]);
  }
  const body = Buffer.alloc(Math.max(size, MP4_MAGIC.length));
  MP4_MAGIC.copy(body);
  return body;
}

export interface VideoSpec {
  /** Bytes in the body. */
  size: number;
  /** How long one full transfer takes when nothing holds it (default 2 s). */
  durationMs?: number;
  /**
   * A fraction of the body (0..1) where every stream stops until
   * {@link Video.release} is called: "mid-import" becomes an event the test
   * waits for, not a guess about timing.
   */
  holdAt?: number;
}

/** One video URL of the source, with what happened to its streams. */
export class Video extends EventEmitter {
  readonly body: Buffer;
  readonly durationMs: number;
  readonly holdAtByte: number | null;
  /** Requests received (the server's attempts). */
  requests = 0;
  /** Streams currently stopped at the hold point. */
  heldNow = 0;
  /** Streams that reached the hold point, ever. */
  heldTotal = 0;
  /** Streams sent to the end. */
  completed = 0;
  /** Streams the other side closed before the end. */
  aborted = 0;
  private gate = deferred();
  private released = false;

  constructor(
    readonly url: string,
    spec: VideoSpec,
  ) {
    super();
    this.body = mp4Body(spec.size);
    this.durationMs = spec.durationMs ?? 2_000;
    this.holdAtByte = spec.holdAt === undefined ? null : Math.floor(this.body.length * spec.holdAt);
  }

  get size(): number {
    return this.body.length;
  }

  /** Lets held streams (and every later one) run to the end. */
  release(): void {
    this.released = true;
    this.gate.resolve();
  }

  /** Resolves when `n` requests have arrived. */
  waitForRequests(n: number): Promise<true> {
    return waitForEvent(this, 'change', () => this.requests >= n, `${n} request(s) for ${this.url}`);
  }

  /** Resolves when `n` streams (in total) have reached the hold point. */
  waitForHeld(n = 1): Promise<true> {
    return waitForEvent(this, 'change', () => this.heldTotal >= n, `${n} stream(s) of ${this.url} to reach the hold point`);
  }

  /** Resolves when `n` streams were closed early by the server. */
  waitForAborted(n = 1): Promise<true> {
    return waitForEvent(this, 'change', () => this.aborted >= n, `${n} stream(s) of ${this.url} to be dropped`);
  }

  /** Resolves when `n` streams were sent to the end. */
  waitForCompleted(n = 1): Promise<true> {
    return waitForEvent(this, 'change', () => this.completed >= n, `${n} stream(s) of ${this.url} to finish`);
  }

  /** @internal */
  async serve(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    this.requests += 1;
    this.emit('change');
    response.writeHead(200, {
      'Content-Type': 'video/mp4',
      'Content-Length': String(this.body.length),
      Connection: 'close',
    });
    let closed = false;
    const whenClosed = deferred();
    response.on('close', () => {
      closed = true;
      whenClosed.resolve();
    });
    const ticks = Math.max(1, Math.round(this.durationMs / 100));
    const chunk = Math.max(1, Math.ceil(this.body.length / ticks));
    const pause = this.durationMs / ticks;
    let sent = 0;
    while (sent < this.body.length && !closed) {
      if (this.holdAtByte !== null && !this.released && sent >= this.holdAtByte) {
        this.heldNow += 1;
        this.heldTotal += 1;
        this.emit('change');
        await Promise.race([this.gate.promise, whenClosed.promise]);
        this.heldNow -= 1;
        this.emit('change');
        continue;
      }
      let end = Math.min(this.body.length, sent + chunk);
      if (this.holdAtByte !== null && !this.released && sent < this.holdAtByte) end = Math.min(end, this.holdAtByte);
      const ok = response.write(this.body.subarray(sent, end));
      sent = end;
      if (!ok) await Promise.race([new Promise((resolve) => response.once('drain', resolve)), whenClosed.promise]);
      if (sent < this.body.length) await new Promise((resolve) => setTimeout(resolve, pause));
    }
    if (closed) {
      this.aborted += 1;
      this.emit('change');
      return;
    }
    response.end(() => {
      this.completed += 1;
      this.emit('change');
    });
    void request;
  }
}

/**
 * A small HTTP server that plays the other site an import downloads from:
 * videos of a chosen size, sent at a chosen pace, optionally held at a
 * point until the test releases them.
 */
export class VideoSource {
  private readonly server = http.createServer((request, response) => {
    const video = this.videos.get(new URL(request.url ?? '/', 'http://x').pathname);
    if (video === undefined) {
      response.writeHead(404).end('no such video');
      return;
    }
    void video.serve(request, response);
  });
  private readonly videos = new Map<string, Video>();
  private base = '';

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.base = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Adds `/videos/<name>.mp4`. */
  add(name: string, spec: VideoSpec): Video {
    const pathname = `/videos/${name}.mp4`;
    const video = new Video(`${this.base}${pathname}`, spec);
    this.videos.set(pathname, video);
    return video;
  }

  async stop(): Promise<void> {
    for (const video of this.videos.values()) video.release();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
