import { expect, test } from 'vitest';
import { runStory, useChromium } from './harness/story';
import { poll } from './harness/util';

const chromium = useChromium();

test('7. sign out mid-import, the import continues; sign in again and see it completed', () =>
  runStory('07 sign out and back', chromium(), async ({ server, source, profile, tab, note }) => {
    const video = source.add('signout', { size: 3_000_000, durationMs: 3_000, holdAt: 0.5 });
    const page = await tab(await profile(), 'alice');
    await page.signIn('alice');
    const id = await page.startImport(video.url, 'Finishes without me');
    await video.waitForHeld();
    await page.waitForHeldProgress(server, 'alice', id, video);
    await page.screenshot('1 mid-import');

    await page.page.getByTestId('signout').click();
    await page.page.getByTestId('signin-name').waitFor();
    await page.waitForSockets(1);
    await page.waitForSocketClosed(0);
    await page.page.waitForFunction(() => (window as unknown as { __e2e: { closeEvents: unknown[] } }).__e2e.closeEvents.length > 0);
    // The page closed its socket itself, with 1000, and the server answered in kind.
    const rec = await page.recording();
    expect(rec.closeCalls).toMatchObject([{ index: 0, code: 1000 }]);
    expect(rec.closeEvents).toMatchObject([{ index: 0, code: 1000, wasClean: true }]);
    await poll(() => server.metric('reeltime_open_connections'), (n) => n === 0, 'the server to drop the connection');
    note('signed out; socket closed with 1000');
    await page.screenshot('2 signed out');

    // The import did not stop: it is still running, and finishes with nobody watching.
    expect((await server.getImport('alice', id)).status).toBe('downloading');
    video.release();
    await server.waitForImport('alice', id, (i) => i.status === 'completed', 'completed while signed out');
    note('completed on the server while signed out');
    expect(page.sockets).toHaveLength(1); // nothing reconnected while signed out

    await page.signIn('alice');
    await page.waitForRowStatus(id, 'completed');
    expect(await page.progressOf(id)).toEqual({ valuenow: 100, value: 1, text: '100%' });
    expect(page.sockets).toHaveLength(2);
    await page.screenshot('3 signed in again');
  }));
