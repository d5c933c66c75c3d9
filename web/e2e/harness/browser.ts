import { EventEmitter } from 'node:events';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Locator, type Page } from 'playwright-core';
import type { ReeltimeServer } from './server';
import type { Video } from './source';
import { ensureResultsDir, slug, waitForEvent, WAIT_MS, WEB_DIR } from './util';

/** Debian's Chromium, or `CHROMIUM_PATH`. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    timeout: WAIT_MS,
  });
}

/** A fresh, isolated profile (cookies, storage) with the recorder installed. */
export async function newProfile(browser: Browser): Promise<BrowserContext> {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  context.setDefaultTimeout(WAIT_MS);
  await context.addInitScript({ path: path.join(WEB_DIR, 'e2e', 'harness', 'recorder.js') });
  return context;
}

/** What one WebSocket of a tab did, seen from the browser (CDP). */
export interface SocketLog {
  url: string;
  openedAt: number;
  closedAt: number | null;
  sent: string[];
  received: string[];
}

/** What the in-page recorder saw (see recorder.js). */
export interface Recording {
  badge: { t: number; status: string | null; text: string | null }[];
  rows: { t: number; id: string; status: string; valuenow: number | null; value: number | null }[];
  maxRows: number;
  importIds: string[];
  sockets: number;
  closeCalls: { index: number; code?: number; reason?: string; t: number }[];
  closeEvents: { index: number; code: number; reason: string; wasClean: boolean; t: number }[];
}

/** A parsed JSON frame, or null. */
export function parseFrame(text: string): { type?: string; [key: string]: unknown } | null {
  try {
    return JSON.parse(text) as { type?: string };
  } catch {
    return null;
  }
}

/**
 * One browser tab of the page, with everything the tests count: every
 * WebSocket it opened (from `page.on('websocket')`), its frames, page errors.
 */
export class Tab extends EventEmitter {
  readonly sockets: SocketLog[] = [];
  readonly pageErrors: string[] = [];
  readonly consoleLines: string[] = [];
  readonly screenshots: string[] = [];

  private constructor(
    readonly page: Page,
    readonly label: string,
    private readonly testName: string,
  ) {
    super();
    page.on('websocket', (ws) => {
      const log: SocketLog = { url: ws.url(), openedAt: Date.now(), closedAt: null, sent: [], received: [] };
      this.sockets.push(log);
      ws.on('framesent', (frame) => {
        log.sent.push(String(frame.payload));
        this.emit('change');
      });
      ws.on('framereceived', (frame) => {
        log.received.push(String(frame.payload));
        this.emit('change');
      });
      ws.on('close', () => {
        log.closedAt = Date.now();
        this.emit('change');
      });
      this.emit('change');
    });
    page.on('pageerror', (error) => this.pageErrors.push(String(error)));
    page.on('console', (message) => this.consoleLines.push(`[${message.type()}] ${message.text()}`));
  }

  /** Opens a new tab of `context` on `url`. */
  static async open(context: BrowserContext, url: string, label: string, testName: string): Promise<Tab> {
    const page = await context.newPage();
    const tab = new Tab(page, label, testName);
    await page.goto(url);
    return tab;
  }

  // --------------------------------------------------------------- sockets

  /** Resolves once this tab has opened `n` WebSockets in all. */
  waitForSockets(n: number): Promise<true> {
    return waitForEvent(this, 'change', () => this.sockets.length >= n, `${this.label} to open ${n} WebSocket(s)`);
  }

  /** Resolves once the tab's socket number `index` (0-based) has closed. */
  waitForSocketClosed(index: number): Promise<true> {
    return waitForEvent(
      this,
      'change',
      () => this.sockets[index] !== undefined && this.sockets[index].closedAt !== null,
      `${this.label}'s socket #${index} to close`,
    );
  }

  /** Every JSON frame the server sent this tab, over all its sockets. */
  receivedFrames(): { type?: string; [key: string]: unknown }[] {
    return this.sockets.flatMap((s) => s.received.map(parseFrame)).filter((f) => f !== null);
  }

  /** Every JSON frame this tab sent. */
  sentFrames(): { type?: string; [key: string]: unknown }[] {
    return this.sockets.flatMap((s) => s.sent.map(parseFrame)).filter((f) => f !== null);
  }

  // -------------------------------------------------------------- the page

  badge(): Locator {
    return this.page.getByTestId('connection-badge');
  }

  async waitForBadge(status: string): Promise<void> {
    await this.page.waitForSelector(`[data-testid="connection-badge"][data-status="${status}"]`);
  }

  async badgeStatus(): Promise<string | null> {
    return this.badge().getAttribute('data-status');
  }

  /** Signs in with the development form and waits until updates are live. */
  async signIn(name: string, ttlSecs?: number): Promise<void> {
    await this.page.getByTestId('signin-name').fill(name);
    if (ttlSecs !== undefined) await this.page.getByTestId('signin-ttl').selectOption(String(ttlSecs));
    await this.page.getByTestId('signin-submit').click();
    await this.waitForBadge('open');
  }

  /** Starts an import from the form; resolves with the new import's id once its row shows. */
  async startImport(url: string, title: string): Promise<string> {
    await this.page.getByTestId('import-url').fill(url);
    await this.page.getByTestId('import-title').fill(title);
    const [response] = await Promise.all([
      this.page.waitForResponse(
        (r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/api/imports',
      ),
      this.page.getByTestId('import-submit').click(),
    ]);
    if (response.status() !== 201) throw new Error(`POST /api/imports answered ${response.status()}: ${await response.text()}`);
    const { id } = (await response.json()) as { id: string };
    await this.row(id).waitFor();
    return id;
  }

  row(id: string): Locator {
    return this.page.locator(`[data-testid="import-row"][data-import-id="${id}"]`);
  }

  async waitForRowStatus(id: string, status: string): Promise<void> {
    await this.page.waitForSelector(`[data-testid="import-row"][data-import-id="${id}"][data-status="${status}"]`);
  }

  /** Waits until the row's progress bar `aria-valuenow` satisfies `min <= v <= max`. */
  async waitForPercent(id: string, min: number, max = 100): Promise<number> {
    const handle = await this.page.waitForFunction(
      ({ id, min, max }) => {
        const bar = document.querySelector(`[data-testid="import-row"][data-import-id="${id}"] [data-testid="import-progress"]`);
        const now = bar?.getAttribute('aria-valuenow');
        if (now === null || now === undefined) return false;
        const value = Number(now);
        return value >= min && value <= max ? value : false;
      },
      { id, min, max },
      { polling: 100 },
    );
    return (await handle.jsonValue()) as number;
  }

  /**
   * Waits until the bar shows what the server stored while `video` is held
   * (see {@link ReeltimeServer.heldProgress}); answers that percent.
   */
  async waitForHeldProgress(server: ReeltimeServer, user: string, id: string, video: Video, attempt = 1): Promise<number> {
    const held = await server.heldProgress(user, id, video.holdAtByte!, attempt);
    return this.waitForPercent(id, held.percent, held.percent);
  }

  /** The progress bar of a row: aria-valuenow, the <progress> value, and the percent text. */
  async progressOf(id: string): Promise<{ valuenow: number | null; value: number | null; text: string }> {
    const bar = this.row(id).getByTestId('import-progress');
    const valuenow = await bar.getAttribute('aria-valuenow');
    const value = await bar.evaluate((el) => (el.hasAttribute('value') ? (el as HTMLProgressElement).value : null));
    const text = (await this.row(id).getByTestId('import-percent').textContent()) ?? '';
    return { valuenow: valuenow === null ? null : Number(valuenow), value, text: text.trim() };
  }

  /** What the in-page recorder saw so far. */
  recording(): Promise<Recording> {
    return this.page.evaluate(() => (window as unknown as { __e2e: Recording }).__e2e);
  }

  /** Saves a full-page PNG under web/test-results/ and returns its path. */
  async screenshot(step: string): Promise<string> {
    const file = path.join(ensureResultsDir(), `${slug(this.testName)}--${slug(this.label)}--${slug(step)}.png`);
    await this.page.screenshot({ path: file, fullPage: true });
    this.screenshots.push(file);
    return file;
  }
}
