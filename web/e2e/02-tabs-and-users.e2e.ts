import { expect, test } from 'vitest';
import { runStory, useChromium } from './harness/story';

const chromium = useChromium();

test("2. two tabs of alice both update to completed; deleting in one removes the row from the other; bob's tab never sees her import", () =>
  runStory('02 two tabs, two users', chromium(), async ({ server, source, profile, tab, note }) => {
    const video = source.add('shared', { size: 3_000_000, durationMs: 3_000, holdAt: 0.4 });

    // Alice: two tabs of one browser profile, each with its own socket.
    const aliceProfile = await profile();
    const tab1 = await tab(aliceProfile, 'alice tab 1');
    await tab1.signIn('alice');
    const tab2 = await tab(aliceProfile, 'alice tab 2'); // same storage: already signed in
    await tab2.waitForBadge('open');
    // Bob: another profile, live the whole time.
    const bob = await tab(await profile(), 'bob');
    await bob.signIn('bob');
    note('alice (2 tabs) and bob are live');

    const id = await tab1.startImport(video.url, "Alice's holiday");
    await video.waitForHeld();
    // The other tab learns of it only through its own socket.
    await tab2.row(id).waitFor();
    const held = await server.heldProgress('alice', id, video.holdAtByte!);
    for (const t of [tab1, tab2]) expect(await t.waitForPercent(id, held.percent, held.percent)).toBeGreaterThan(0);
    note(`both alice tabs show ${held.percent}%`);
    await tab1.screenshot('1 mid-import');
    await tab2.screenshot('1 mid-import');
    await bob.screenshot('1 mid-import');

    video.release();
    for (const t of [tab1, tab2]) {
      await t.waitForRowStatus(id, 'completed');
      expect(await t.progressOf(id)).toEqual({ valuenow: 100, value: 1, text: '100%' });
    }
    note('both alice tabs show completed');
    await tab1.screenshot('2 completed');
    await tab2.screenshot('2 completed');
    await bob.screenshot('2 end');

    // Each alice tab followed the import live on its own socket.
    for (const t of [tab1, tab2]) {
      expect(t.sockets).toHaveLength(1);
      const seen = (await t.recording()).rows.filter((r) => r.id === id).map((r) => r.valuenow ?? -1);
      expect(seen.filter((v) => v > 0 && v < 100).length, `${t.label} saw live progress`).toBeGreaterThanOrEqual(2);
      expect(seen.at(-1)).toBe(100);
    }
    // Two distinct connections for alice.
    const connectionIds = await Promise.all([tab1, tab2].map((t) => t.badge().getAttribute('data-connection-id')));
    expect(new Set(connectionIds).size).toBe(2);

    // Delete in tab 1: the row leaves tab 2 too, told on its own socket, without a reload or a reconnect.
    const completed = await server.getImport('alice', id);
    await tab1.row(id).getByTestId('import-delete').click();
    await tab1.row(id).waitFor({ state: 'detached' });
    await tab2.row(id).waitFor({ state: 'detached' });
    note('deleted in tab 1; the row left tab 2');
    await tab1.screenshot('3 deleted');
    await tab2.screenshot('3 deleted');
    for (const t of [tab1, tab2]) {
      expect(t.sockets, `${t.label} kept its one socket`).toHaveLength(1);
      expect(t.receivedFrames().filter((f) => f.type === 'import_removed')).toEqual([
        { type: 'import_removed', id, version: completed.version + 1 },
      ]);
      await expect(t.row(id).count()).resolves.toBe(0);
    }
    const gone = await fetch(`${server.url}/api/imports/${id}`, {
      headers: { Authorization: `Bearer ${await server.token('alice')}` },
    });
    expect(gone.status).toBe(404);

    // Bob, live from before the import started to after it ended, saw nothing of it: no row ever rendered,
    // and not one frame from the server mentioned it.
    expect(await bob.badgeStatus()).toBe('open');
    expect(bob.sockets).toHaveLength(1);
    const bobRec = await bob.recording();
    expect(bobRec.maxRows).toBe(0);
    expect(bobRec.importIds).toEqual([]);
    await expect(bob.page.getByTestId('imports-empty').isVisible()).resolves.toBe(true);
    const bobFrames = bob.sockets.flatMap((s) => s.received);
    expect(bobFrames.length).toBeGreaterThanOrEqual(2); // ready + snapshot at least
    expect(bobFrames.filter((f) => f.includes(id) || f.includes(video.url))).toEqual([]);
    expect(bob.receivedFrames().filter((f) => f.type === 'import')).toEqual([]);
    const snapshot = bob.receivedFrames().find((f) => f.type === 'snapshot');
    expect(snapshot).toMatchObject({ imports: [] });
    // And the server refuses him her import over REST too (404, not 403).
    const response = await fetch(`${server.url}/api/imports/${id}`, {
      headers: { Authorization: `Bearer ${await server.token('bob')}` },
    });
    expect(response.status).toBe(404);
  }));
