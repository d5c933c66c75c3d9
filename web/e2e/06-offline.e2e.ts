import { expect, test } from 'vitest';
import { TcpProxy } from './harness/proxy';
import { runStory, useChromium } from './harness/story';

const chromium = useChromium();

test('6. the network goes offline and comes back: the page shows offline, then catches up', () =>
  runStory('06 offline and back', chromium(), async ({ server, source, profile, tab, note, defer }) => {
    // The page reaches the server only through this proxy, so the network can really be cut.
    const proxy = new TcpProxy(server.port);
    await proxy.start();
    defer(() => proxy.stop());
    const video = source.add('offline', { size: 3_000_000, durationMs: 3_000, holdAt: 0.4 });

    const page = await tab(await profile(), 'alice', `${proxy.url}/`);
    await page.signIn('alice');
    expect(page.sockets[0]!.url.startsWith(proxy.url.replace('http', 'ws'))).toBe(true);
    const id = await page.startImport(video.url, 'Through a bad network');
    await video.waitForHeld();
    await page.waitForHeldProgress(server, 'alice', id, video);
    await page.screenshot('1 before going offline');

    // Offline: Chromium's network emulation (navigator.onLine = false, `offline` fires) and the wire cut.
    const cdp = await page.page.context().newCDPSession(page.page);
    const network = (offline: boolean) =>
      cdp.send('Network.emulateNetworkConditions', { offline, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    await cdp.send('Network.enable');
    await network(true);
    await page.page.waitForFunction(() => !navigator.onLine); // the page knows before the wire is cut
    proxy.goOffline();
    await page.waitForSocketClosed(0);
    await page.waitForBadge('offline');
    const socketsWhenOffline = page.sockets.length;
    note(`offline with ${socketsWhenOffline} socket(s) so far`);

    // Meanwhile the import finishes on the server; the page cannot know yet.
    video.release();
    await server.waitForImport('alice', id, (i) => i.status === 'completed', 'completed on the server');
    note('completed on the server while the page was offline');
    expect(await page.row(id).getAttribute('data-status')).toBe('downloading');
    expect(await page.badgeStatus()).toBe('offline');
    await expect(page.badge().textContent()).resolves.toMatch(/Offline/);
    await page.screenshot('2 offline, stale');
    // While offline the client made no attempt at all (it waits for `online`).
    expect(page.sockets.length).toBe(socketsWhenOffline);
    expect(proxy.refused).toBe(0);

    // Back online: the `online` event reconnects at once, and the snapshot brings the final state.
    proxy.goOnline();
    const backAt = Date.now();
    await network(false);
    await page.waitForBadge('open');
    const reconnectMs = Date.now() - backAt;
    note(`live again ${reconnectMs} ms after going online`);
    await page.waitForRowStatus(id, 'completed');
    expect(await page.progressOf(id)).toEqual({ valuenow: 100, value: 1, text: '100%' });
    await page.screenshot('3 back online, caught up');
    expect(page.sockets.length).toBe(socketsWhenOffline + 1);
    expect(reconnectMs).toBeLessThan(10_000);
    const statuses = (await page.recording()).badge.map((b) => b.status);
    expect(statuses.slice(statuses.indexOf('offline'))).toEqual(['offline', 'connecting', 'open']);
  }));
