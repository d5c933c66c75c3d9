import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Browser, BrowserContext } from 'playwright-core';
import { afterAll, beforeAll } from 'vitest';
import { launchChromium, newProfile, Tab } from './browser';
import { ReeltimeServer } from './server';
import { VideoSource } from './source';
import { ensureResultsDir, slug } from './util';

/** One Chromium for the whole file; each test gets fresh profiles from it. */
export function useChromium(): () => Browser {
  let browser: Browser | null = null;
  beforeAll(async () => {
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
  });
  return () => {
    if (browser === null) throw new Error('Chromium is not running');
    return browser;
  };
}

/** What one test of the story works with. */
export interface Story {
  readonly name: string;
  readonly server: ReeltimeServer;
  readonly source: VideoSource;
  /** A fresh browser profile (its own storage: another person, or the same one signed in anew). */
  profile(): Promise<BrowserContext>;
  /** A new tab of `context` on `url` (the server's page by default). */
  tab(context: BrowserContext, label: string, url?: string): Promise<Tab>;
  /** Notes that end up in the test's log file and in the console. */
  note(message: string): void;
  /** Registers cleanup to run after the test, before the server stops. */
  defer(cleanup: () => Promise<void> | void): void;
}

/**
 * Runs one line of the story against a real `reeltime` (its own data dir,
 * port and source server) in fresh Chromium profiles. Whatever happens, it
 * keeps the server log and each tab's console in `test-results/`, plus a
 * screenshot of every tab when the test failed.
 */
export async function runStory(
  name: string,
  browser: Browser,
  body: (story: Story) => Promise<void>,
): Promise<void> {
  ensureResultsDir();
  const started = Date.now();
  const server = new ReeltimeServer();
  const source = new VideoSource();
  const contexts: BrowserContext[] = [];
  const tabs: Tab[] = [];
  const notes: string[] = [];
  const cleanups: (() => Promise<void> | void)[] = [];
  const story: Story = {
    name,
    server,
    source,
    async profile() {
      const context = await newProfile(browser);
      contexts.push(context);
      return context;
    },
    async tab(context, label, url) {
      const tab = await Tab.open(context, url ?? `${server.url}/`, label, name);
      tabs.push(tab);
      return tab;
    },
    note(message) {
      const line = `+${((Date.now() - started) / 1000).toFixed(1)}s ${message}`;
      notes.push(line);
      if (process.env.E2E_VERBOSE) console.log(`[${name}] ${line}`);
    },
    defer(cleanup) {
      cleanups.push(cleanup);
    },
  };

  let failure: unknown = null;
  try {
    await source.start();
    await server.start();
    story.note(`server at ${server.url}, data dir ${server.dataDir}`);
    await body(story);
    for (const tab of tabs) {
      if (tab.pageErrors.length > 0) throw new Error(`${tab.label} had page errors:\n${tab.pageErrors.join('\n')}`);
    }
  } catch (error) {
    failure = error;
    for (const tab of tabs) {
      try {
        await tab.screenshot('failure');
      } catch {
        // The page may be gone.
      }
    }
  } finally {
    const base = path.join(ensureResultsDir(), slug(name));
    for (const tab of tabs) {
      let recording = '';
      try {
        recording = JSON.stringify(await tab.recording(), null, 1);
      } catch {
        recording = '(page gone)';
      }
      const sockets = tab.sockets.map(
        (s, i) =>
          `socket ${i}: ${s.url} opened +${((s.openedAt - started) / 1000).toFixed(1)}s` +
          ` closed ${s.closedAt === null ? 'never' : `+${((s.closedAt - started) / 1000).toFixed(1)}s`}` +
          ` sent ${s.sent.length} received ${s.received.length}\n  sent: ${s.sent.map(redact).join('\n        ')}\n  received (last 20): ${s.received.slice(-20).join('\n            ')}`,
      );
      writeFileSync(
        `${base}--${slug(tab.label)}.log`,
        [
          `console:`,
          ...tab.consoleLines,
          `page errors:`,
          ...tab.pageErrors,
          `sockets:`,
          ...sockets,
          `recording:`,
          recording,
        ].join('\n'),
      );
    }
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch {
        // Best effort.
      }
    }
    for (const context of contexts) await context.close().catch(() => undefined);
    await source.stop().catch(() => undefined);
    story.note(`done in ${((Date.now() - started) / 1000).toFixed(1)} s${failure ? ' (FAILED)' : ''}`);
    writeFileSync(`${base}--notes.log`, `${notes.join('\n')}\n`);
    await server.dispose(`${base}--server.log`);
  }
  if (failure !== null) {
    if (failure instanceof Error) {
      // CI keeps only what the test prints: the story's timeline and the
      // end of the server's log go in the message, the rest stays in files.
      failure.message +=
        `\n(server log, console, sockets and screenshots: test-results/${slug(name)}--*)` +
        `\nnotes:\n${notes.join('\n')}` +
        `\nlast ${SERVER_LOG_LINES_ON_FAILURE} lines of the server log:\n${server.log.slice(-SERVER_LOG_LINES_ON_FAILURE).join('\n')}`;
    }
    throw failure;
  }
}

/** How much of the server's log a failure prints. */
const SERVER_LOG_LINES_ON_FAILURE = 80;

/** Tokens never go to files. */
function redact(frame: string): string {
  return frame.replace(/"token":"[^"]*"/g, '"token":"<redacted>"');
}
