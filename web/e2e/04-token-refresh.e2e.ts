import { expect, test } from 'vitest';
import { runStory, useChromium } from './harness/story';

const chromium = useChromium();

test('4. tokens living 10 s during a 30 s import: the socket is never dropped', () =>
  runStory('04 10 s tokens, 30 s import', chromium(), async ({ server, source, profile, tab, note }) => {
    // Paced, not held: about 30 s from first byte to last.
    const video = source.add('long', { size: 3_000_000, durationMs: 30_000 });
    const page = await tab(await profile(), 'alice');
    await page.signIn('alice', 10);
    const ready = page.receivedFrames().find((f) => f.type === 'ready') as { expires_at: number } | undefined;
    expect(ready).toBeDefined();
    expect(ready!.expires_at - Date.now() / 1000).toBeLessThanOrEqual(10.5); // a 10 s token, really
    note('signed in with 10 s tokens');

    const id = await page.startImport(video.url, 'A long one');
    const started = Date.now();
    await page.waitForPercent(id, 40, 60);
    await page.screenshot('1 half way');
    await page.waitForRowStatus(id, 'completed');
    const importMs = Date.now() - started;
    note(`completed after ${importMs} ms`);
    expect(importMs).toBeGreaterThanOrEqual(25_000); // the import outlived two token lifetimes and more
    await page.screenshot('2 completed');

    // Exactly one socket for the whole import, never closed.
    expect(page.sockets).toHaveLength(1);
    expect(page.sockets[0]!.closedAt).toBeNull();
    const rec = await page.recording();
    expect(rec.closeEvents).toEqual([]);
    // The badge went to "open" once and never left it.
    const statuses = rec.badge.map((b) => b.status);
    const firstOpen = statuses.indexOf('open');
    expect(firstOpen).toBeGreaterThanOrEqual(0);
    expect(statuses.slice(firstOpen)).toEqual(['open']);
    expect(await page.badgeStatus()).toBe('open');

    // The token was refreshed on the open socket, again and again, and accepted each time.
    const authsSent = page.sentFrames().filter((f) => f.type === 'auth').length;
    const authOks = page.receivedFrames().filter((f) => f.type === 'auth_ok');
    note(`auth messages sent: ${authsSent}, auth_ok received: ${authOks.length}`);
    expect(authOks.length).toBeGreaterThanOrEqual(3);
    // The first auth got `ready`, every later one `auth_ok` (the last may still be on its way).
    expect(authOks.length).toBeGreaterThanOrEqual(authsSent - 2);
    expect(authOks.length).toBeLessThanOrEqual(authsSent - 1);
    const lastExpiry = (authOks.at(-1) as { expires_at: number }).expires_at;
    expect(lastExpiry).toBeGreaterThan(ready!.expires_at + 15);
    // And the progress kept flowing on that one socket.
    const values = rec.rows.filter((r) => r.id === id).map((r) => r.valuenow ?? -1);
    expect(values.filter((v) => v > 0 && v < 100).length).toBeGreaterThanOrEqual(10);
    expect((await server.getImport('alice', id)).status).toBe('completed');
  }));
