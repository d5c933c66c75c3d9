import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Import } from '@reeltime/client';
import { poll, waitForEvent, WAIT_MS, WEB_DIR } from './util';

/** The server binary: `REELTIME_BIN`, else `../target/debug/reeltime` relative to `web/`. */
export function reeltimeBin(): string {
  return path.resolve(WEB_DIR, process.env.REELTIME_BIN ?? '../target/debug/reeltime');
}

/** How one run of the process ended. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** From the signal to the exit. */
  stopMs: number;
}

/**
 * The real `reeltime` server, as a child process: development issuer on
 * (no key-source variables), private import sources allowed, a temporary
 * data dir. `restart()` keeps the data dir and the port, like an operator
 * restarting the service.
 */
export class ReeltimeServer extends EventEmitter {
  readonly dataDir: string;
  /** Every stderr/stdout line of every run, prefixed with the run number. */
  readonly log: string[] = [];
  private child: ChildProcess | null = null;
  private runs = 0;
  private listenPort = 0;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  private addressSeen: string | null = null;

  constructor() {
    super();
    this.dataDir = mkdtempSync(path.join(os.tmpdir(), 'reeltime-e2e-'));
  }

  /** `http://127.0.0.1:<port>` of the running server. */
  get url(): string {
    if (this.addressSeen === null) throw new Error('the server is not running');
    return this.addressSeen;
  }

  get port(): number {
    return this.listenPort;
  }

  get running(): boolean {
    return this.child !== null && this.exitInfo === null;
  }

  /** Starts the process and resolves once it logged `listening on http://…`. */
  async start(): Promise<void> {
    if (this.running) throw new Error('already running');
    const bin = reeltimeBin();
    if (!existsSync(bin)) {
      throw new Error(`no server binary at ${bin}: run 'cargo build -p reeltime' or set REELTIME_BIN`);
    }
    const env: NodeJS.ProcessEnv = {};
    for (const [key, value] of Object.entries(process.env)) {
      // No key source and no stray settings: the development issuer must be on.
      if (key.startsWith('REELTIME_') || key.startsWith('CLERK_')) continue;
      env[key] = value;
    }
    Object.assign(env, {
      REELTIME_LISTEN: `127.0.0.1:${this.listenPort}`,
      REELTIME_DATA_DIR: this.dataDir,
      REELTIME_IMPORT_ALLOW_PRIVATE: '1',
      NO_COLOR: '1',
    });
    const run = ++this.runs;
    this.exitInfo = null;
    this.addressSeen = null;
    const child = spawn(bin, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    let buffered = '';
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      let newline: number;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline).replace(/\x1b\[[0-9;]*m/g, '');
        buffered = buffered.slice(newline + 1);
        this.log.push(`[run ${run}] ${line}`);
        const match = /listening on (http:\/\/[0-9.]+:(\d+))/.exec(line);
        if (match && this.addressSeen === null && child === this.child) {
          this.addressSeen = match[1]!;
          this.listenPort = Number(match[2]);
        }
        this.emit('change');
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('exit', (code, signal) => {
      if (child !== this.child) return;
      this.exitInfo = { code, signal };
      this.log.push(`[run ${run}] exited code=${code} signal=${signal}`);
      this.emit('change');
    });
    await waitForEvent(
      this,
      'change',
      () => {
        if (this.exitInfo !== null) {
          throw new Error(`the server exited at start (${JSON.stringify(this.exitInfo)}):\n${this.log.join('\n')}`);
        }
        return this.addressSeen;
      },
      'the server to listen',
    );
  }

  /** SIGTERM (or `signal`), then waits for the process to exit. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<Exit> {
    const child = this.child;
    if (child === null || this.exitInfo !== null) {
      return { code: this.exitInfo?.code ?? null, signal: this.exitInfo?.signal ?? null, stopMs: 0 };
    }
    const started = Date.now();
    child.kill(signal);
    try {
      await waitForEvent(this, 'change', () => this.exitInfo !== null, `the server to exit after ${signal}`);
    } catch (error) {
      child.kill('SIGKILL');
      throw error;
    }
    return { ...this.exitInfo!, stopMs: Date.now() - started };
  }

  /** Stops (SIGTERM, waits for the exit) and starts again: same data dir, same port. */
  async restart(): Promise<Exit> {
    const exit = await this.stop();
    await this.start();
    return exit;
  }

  /** Stops the server, keeps its log in `logFile`, removes the data dir. */
  async dispose(logFile?: string): Promise<void> {
    try {
      if (this.running) await this.stop();
    } finally {
      if (logFile) writeFileSync(logFile, `${this.log.join('\n')}\n`);
      rmSync(this.dataDir, { recursive: true, force: true });
    }
  }

  // ------------------------------------------------------------- REST

  /** A token from the development issuer, as the page gets them. */
  async token(sub: string, ttlSecs = 60): Promise<string> {
    const response = await fetch(`${this.url}/dev/token`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ sub, ttl_secs: ttlSecs }),
    });
    if (!response.ok) throw new Error(`/dev/token answered ${response.status}`);
    return ((await response.json()) as { token: string }).token;
  }

  /** `GET /api/imports/{id}` as `sub`. */
  async getImport(sub: string, id: string): Promise<Import> {
    const response = await fetch(`${this.url}/api/imports/${encodeURIComponent(id)}`, {
      headers: { Authorization: `Bearer ${await this.token(sub)}` },
    });
    if (!response.ok) throw new Error(`GET /api/imports/${id} answered ${response.status}`);
    return (await response.json()) as Import;
  }

  /** Polls the REST API until the import satisfies `accept` (state only reachable by asking). */
  waitForImport(sub: string, id: string, accept: (item: Import) => boolean, what: string): Promise<Import> {
    return poll(() => this.getImport(sub, id), accept, `import ${id} ${what}`, { timeoutMs: WAIT_MS });
  }

  /**
   * Waits until the server has stored the progress of `bytes` received
   * bytes (a held source stream), and answers the bar percent the page must
   * then show: computed from the server's own `progress`, so the test holds
   * whether or not media processing shares the bar with the download.
   */
  async heldProgress(sub: string, id: string, bytes: number, attempt = 1): Promise<{ progress: number; percent: number }> {
    const item = await this.waitForImport(
      sub,
      id,
      (i) => i.attempt === attempt && i.bytes_done >= bytes && i.progress !== null,
      `to store ${bytes} bytes (attempt ${attempt})`,
    );
    return { progress: item.progress!, percent: Math.floor(item.progress! * 100) };
  }

  /** One value of `GET /metrics` (first sample whose line starts with `name`). */
  async metric(name: string): Promise<number> {
    const text = await (await fetch(`${this.url}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
    return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
  }

  /** Sum of every sample of a metric (e.g. auth failures over all reasons). */
  async metricSum(name: string): Promise<number> {
    const text = await (await fetch(`${this.url}/metrics`)).text();
    return text
      .split('\n')
      .filter((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`))
      .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  }
}
