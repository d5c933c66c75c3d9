import { expect, test } from 'vitest';
import { runStory, useChromium } from './harness/story';

const chromium = useChromium();

test('1. sign in, start an import, the progress bar reaches 100% and the row shows completed', () =>
  runStory('01 progress to 100%', chromium(), async ({ server, source, profile, tab, note }) => {
    // 3 MB in about 3 s, held at half way so "mid-import" is an event.
    const video = source.add('first', { size: 3_000_000, durationMs: 3_000, holdAt: 0.5 });
    const page = await tab(await profile(), 'alice');
    await page.page.getByTestId('signin-name').waitFor();
    await page.screenshot('1 sign-in form');
    await page.signIn('alice');
    note('signed in, live');

    const id = await page.startImport(video.url, 'My first import');
    note(`import ${id} started`);
    await video.waitForHeld();
    // The page shows what the server stored for the bytes received before the hold.
    const held = await server.heldProgress('alice', id, video.holdAtByte!);
    const mid = await page.waitForPercent(id, held.percent, held.percent);
    note(`held at ${mid}%`);
    expect(mid).toBeGreaterThan(0);
    await page.waitForRowStatus(id, 'downloading');
    const midBar = await page.progressOf(id);
    expect(midBar).toMatchObject({ valuenow: held.percent, text: `${held.percent}%` });
    expect(midBar.value).toBeCloseTo(held.progress, 6);
    await page.screenshot('2 mid-import');

    video.release();
    await page.waitForRowStatus(id, 'completed');
    await page.waitForPercent(id, 100);
    note('completed');
    expect(await page.progressOf(id)).toEqual({ valuenow: 100, value: 1, text: '100%' });
    await expect(page.row(id).getByTestId('import-cancel').count()).resolves.toBe(0);
    await expect(page.row(id).getByTestId('import-error').count()).resolves.toBe(0);
    await page.screenshot('3 completed');

    // The bar moved live through intermediate values, never backwards.
    const rec = await page.recording();
    const values = rec.rows.filter((r) => r.id === id && r.valuenow !== null).map((r) => r.valuenow!);
    note(`bar values seen: ${values.join(', ')}`);
    expect(values.filter((v) => v > 0 && v < 100).length).toBeGreaterThanOrEqual(3);
    expect([...values].sort((a, b) => a - b)).toEqual(values);
    expect(values.at(-1)).toBe(100);
    // One socket did it all, and the server agrees.
    expect(page.sockets).toHaveLength(1);
    const final = await server.getImport('alice', id);
    expect(final).toMatchObject({ status: 'completed', progress: 1, bytes_done: video.size, attempt: 1 });
  }));
