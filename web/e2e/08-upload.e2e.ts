import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Request } from 'playwright-core';
import { expect, test } from 'vitest';
import { TcpProxy } from './harness/proxy';
import { runStory, useChromium } from './harness/story';

const chromium = useChromium();

/** About 20 MB of real H.264/AAC video (moving test pattern with noise, so it does not compress away). */
const VIDEO_BYTES = 20_000_000;
const CHUNK = 8 * 1024 * 1024;

/** Makes the video once per machine with ffmpeg (`-fs` stops at the size and finalizes the file). */
function makeVideo(): string {
  const file = path.join(os.tmpdir(), 'reeltime-e2e-upload-20mb.mp4');
  if (existsSync(file) && statSync(file).size > VIDEO_BYTES * 0.95) return file;
  execFileSync(
    'ffmpeg',
    [
      '-hide_banner', '-loglevel', 'error', '-y',
      '-f', 'lavfi', '-i', 'testsrc2=size=1280x720:rate=25,noise=alls=30:allf=t',
      '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
      '-t', '60', '-c:v', 'libx264', '-preset', 'ultrafast', '-b:v', '12M', '-pix_fmt', 'yuv420p',
      '-c:a', 'aac', '-b:a', '128k', '-movflags', '+faststart', '-fs', String(VIDEO_BYTES),
      `${file}.tmp.mp4`,
    ],
    { stdio: 'inherit', timeout: 240_000 },
  );
  execFileSync('mv', [`${file}.tmp.mp4`, file]);
  return file;
}

test('8. upload a 20 MB video over a slow uplink: a second tab follows the bar; a reload mid-way resumes where the server was; the video plays', () =>
  runStory('08 upload and resume', chromium(), async ({ server, profile, tab, note, defer }) => {
    const file = makeVideo();
    const size = statSync(file).size;
    note(`video: ${size} bytes`);

    // The uploading tab reaches the server through a proxy that counts what the browser sends.
    const proxy = new TcpProxy(server.port);
    await proxy.start();
    defer(() => proxy.stop());
    const uploader = await tab(await profile(), 'alice uploads', `${proxy.url}/`);
    await uploader.signIn('alice');
    const watcher = await tab(await profile(), 'alice watches');
    await watcher.signIn('alice');

    // A slow uplink (CDP network emulation): about 1.5 MB/s, so 20 MB take ~13 s.
    const cdp = await uploader.page.context().newCDPSession(uploader.page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false,
      latency: 20,
      downloadThroughput: -1,
      uploadThroughput: 1_500_000,
    });

    // Every tus PATCH the uploading tab makes, with its offset.
    const patches: { offset: number; afterReload: boolean }[] = [];
    let reloaded = false;
    uploader.page.on('request', (request: Request) => {
      if (request.method() !== 'PATCH' || !new URL(request.url()).pathname.startsWith('/api/uploads/')) return;
      patches.push({ offset: Number(request.headers()['upload-offset']), afterReload: reloaded });
    });

    const startedAt = Date.now();
    await uploader.page.getByTestId('upload-input').setInputFiles(file);
    // The row comes from the server over the socket, in both tabs, at once.
    const row = watcher.page.locator('[data-testid="import-row"][data-status="uploading"]');
    await row.waitFor();
    const id = (await row.getAttribute('data-import-id'))!;
    await uploader.row(id).waitFor();
    note(`upload ${id} created; its row is in both tabs`);
    expect(await watcher.row(id).locator('.import-title').textContent()).toBe(path.basename(file));
    await expect(watcher.row(id).locator('a.import-source').count()).resolves.toBe(0);

    // Mid-way (the first chunk stored, the second in flight): reload the uploading tab.
    const before = await server.waitForImport('alice', id, (i) => i.bytes_done > CHUNK + 1_000_000, 'past its first chunk');
    await watcher.waitForPercent(id, 1, 99);
    await watcher.screenshot('1 the other tab follows the upload');
    reloaded = true;
    await uploader.page.reload();
    note(`reloaded at ${before.bytes_done} bytes stored on the server (${((Date.now() - startedAt) / 1000).toFixed(1)} s)`);
    expect(before.bytes_done).toBeLessThan(size);
    await uploader.waitForBadge('open'); // still signed in
    await uploader.waitForRowStatus(id, 'uploading');
    await uploader.screenshot('2 after the reload, waiting for the file');

    // The person picks the same file again: tus-js-client finds the upload by fingerprint and resumes.
    await uploader.page.getByTestId('upload-input').setInputFiles(file);
    await watcher.waitForRowStatus(id, 'completed');
    await uploader.waitForRowStatus(id, 'completed');
    note(`completed after ${((Date.now() - startedAt) / 1000).toFixed(1)} s`);

    // Resumed where the server was: the first PATCH after the reload starts at or past what the
    // server had stored before it, and no new upload was created.
    const resumed = patches.filter((p) => p.afterReload);
    note(`PATCH offsets: before ${patches.filter((p) => !p.afterReload).map((p) => p.offset).join(', ')}; after ${resumed.map((p) => p.offset).join(', ')}`);
    expect(resumed.length).toBeGreaterThan(0);
    expect(resumed[0].offset).toBeGreaterThanOrEqual(before.bytes_done);
    // Counted on the way to the server: the file crossed the wire once (plus requests and frames),
    // not once and a half as a restart from zero (or from the first chunk) would make it.
    note(`bytes sent to the server through the proxy: ${proxy.bytesUp} for a ${size}-byte file`);
    expect(proxy.bytesUp).toBeGreaterThanOrEqual(size);
    expect(proxy.bytesUp).toBeLessThan(size + 512 * 1024);

    // The other tab saw the bar move through many values while the bytes arrived, never backwards
    // within the upload.
    const values = (await watcher.recording()).rows
      .filter((r) => r.id === id && r.status === 'uploading' && r.valuenow !== null)
      .map((r) => r.valuenow!);
    note(`bar values in the other tab while uploading: ${values.join(', ')}`);
    expect(new Set(values.filter((v) => v > 0 && v < 100)).size).toBeGreaterThanOrEqual(3);
    expect([...values].sort((a, b) => a - b)).toEqual(values);

    const final = await server.getImport('alice', id);
    expect(final).toMatchObject({ status: 'completed', source: 'upload', source_url: null, file_name: path.basename(file) });
    expect(final.bytes_done).toBe(size);

    // The finished video plays.
    const video = watcher.row(id).getByTestId('import-video');
    await video.waitFor();
    await video.evaluate(async (el) => {
      const player = el as HTMLVideoElement;
      player.muted = true;
      await player.play();
    });
    await watcher.page.waitForFunction(
      (selector) => {
        const player = document.querySelector(selector) as HTMLVideoElement | null;
        return player !== null && player.currentTime > 0.5 && player.error === null;
      },
      `[data-import-id="${id}"] [data-testid="import-video"]`,
    );
    await watcher.screenshot('3 completed, playing');
  }));

test('8b. several files at once become rows at once; Cancel on an upload row stops the sending tab and frees the upload', () =>
  runStory('08b upload several and cancel', chromium(), async ({ server, profile, tab, note, defer }) => {
    const big = makeVideo();
    const small = path.join(path.dirname(new URL(import.meta.url).pathname), 'fixtures', 'clip.mp4');
    const proxy = new TcpProxy(server.port);
    await proxy.start();
    defer(() => proxy.stop());
    const uploader = await tab(await profile(), 'alice uploads', `${proxy.url}/`);
    await uploader.signIn('alice');
    const watcher = await tab(await profile(), 'alice watches');
    await watcher.signIn('alice');
    const cdp = await uploader.page.context().newCDPSession(uploader.page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 20, downloadThroughput: -1, uploadThroughput: 1_000_000 });
    let patchesAfterCancel = 0;
    let cancelled = false;
    uploader.page.on('request', (request: Request) => {
      if (cancelled && request.method() === 'PATCH') patchesAfterCancel += 1;
    });

    // Both files in one pick: two rows, in the other tab too.
    await uploader.page.getByTestId('upload-input').setInputFiles([big, small]);
    const rows = watcher.page.locator('[data-testid="import-row"]');
    await watcher.page.waitForFunction(() => document.querySelectorAll('[data-testid="import-row"]').length === 2);
    const titles = await rows.locator('.import-title').allTextContents();
    expect(titles.sort()).toEqual([path.basename(big), path.basename(small)].sort());
    const bigId = (await watcher.page.locator('[data-testid="import-row"]', { hasText: path.basename(big) }).getAttribute('data-import-id'))!;
    const smallId = (await watcher.page.locator('[data-testid="import-row"]', { hasText: path.basename(small) }).getAttribute('data-import-id'))!;
    note(`two uploads: ${bigId} (big), ${smallId} (small)`);

    // The small one finishes; the big one is cancelled from its row in the uploading tab mid-way.
    await watcher.waitForRowStatus(smallId, 'completed');
    await server.waitForImport('alice', bigId, (i) => i.bytes_done > 2_000_000, 'under way');
    await uploader.screenshot('1 two uploads, one done');
    await uploader.row(bigId).getByTestId('import-cancel').click();
    await uploader.waitForRowStatus(bigId, 'cancelled');
    // From the moment the page knows, it must not start another PATCH.
    cancelled = true;
    await watcher.waitForRowStatus(bigId, 'cancelled');
    const bytesAtCancel = proxy.bytesUp;
    note(`cancelled with ${bytesAtCancel} bytes sent through the proxy`);
    await uploader.screenshot('2 cancelled');

    // The sending tab stopped: the server answers 404 for the upload, and the tab sends no more bodies.
    const head = await fetch(`${server.url}/api/uploads/${bigId}`, {
      method: 'HEAD',
      headers: { 'Tus-Resumable': '1.0.0', Authorization: `Bearer ${await server.token('alice')}` },
    });
    expect(head.status).toBe(404);
    // "Sends nothing more" needs a window to look at: 1 s is a sixth of a chunk at this uplink's
    // rate, and the next PATCH would start at once after the one that was aborted.
    await uploader.page.evaluate(() => new Promise((resolve) => setTimeout(resolve, 1_000)));
    expect(patchesAfterCancel).toBe(0);
    expect(proxy.bytesUp - bytesAtCancel).toBeLessThan(64 * 1024);
    expect(await server.getImport('alice', bigId)).toMatchObject({ status: 'cancelled', source: 'upload' });
  }));
