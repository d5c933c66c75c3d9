import { expect, test } from 'vitest';
import { runStory, useChromium } from './harness/story';

const chromium = useChromium();

/** Same header and signature, but the payload says someone else: the signature no longer matches. */
function forge(token: string): string {
  const [header, payload, signature] = token.split('.');
  const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString('utf8')) as Record<string, unknown>;
  claims.sub = 'mallory';
  return [header, Buffer.from(JSON.stringify(claims)).toString('base64url'), signature].join('.');
}

/** How long we watch after the banner to show nothing retries. */
const NO_LOOP_WINDOW_MS = 5_000;

test('3. a refused token shows the error and does not retry in a loop', () =>
  runStory('03 refused token', chromium(), async ({ server, profile, tab, note }) => {
    const context = await profile();
    // Every token the page gets is forged (a real token with its subject changed).
    let tokenRequests = 0;
    await context.route('**/dev/token', async (route) => {
      tokenRequests += 1;
      const response = await route.fetch();
      const body = (await response.json()) as { token: string; expires_at: number };
      await route.fulfill({ response, json: { ...body, token: forge(body.token) } });
    });
    const page = await tab(context, 'mallory');
    await page.page.getByTestId('signin-name').fill('alice');
    await page.page.getByTestId('signin-submit').click();

    const banner = page.page.getByTestId('auth-error');
    await banner.waitFor();
    await page.waitForBadge('unauthorized');
    const bannerAt = Date.now();
    note(`banner after ${page.sockets.length} socket(s), ${tokenRequests} token request(s)`);
    await expect(banner.textContent()).resolves.toMatch(/refused your sign-in token/);
    await page.screenshot('1 token refused');

    // The bounded "no loop" window: nothing may happen in it.
    await new Promise((resolve) => setTimeout(resolve, NO_LOOP_WINDOW_MS));
    note(`${Date.now() - bannerAt} ms after the banner: ${page.sockets.length} socket(s)`);
    expect(page.sockets).toHaveLength(2); // the first try and one retry with skipCache
    expect(tokenRequests).toBe(2); // sign-in, then getToken({ skipCache: true }) for the retry
    expect(await page.badgeStatus()).toBe('unauthorized');
    await expect(banner.isVisible()).resolves.toBe(true);

    // Both sockets were refused the way the protocol says: upgrade completed, then 1008.
    const rec = await page.recording();
    expect(rec.closeEvents.map((e) => e.code)).toEqual([1008, 1008]);
    expect(page.sentFrames().map((f) => f.type)).toEqual(['auth', 'auth']);
    expect(page.receivedFrames()).toEqual([]); // never a ready, never an import
    expect(await server.metricSum('reeltime_auth_failures_total')).toBe(2);
    expect(await server.metric('reeltime_open_connections')).toBe(0);
    await page.screenshot('2 still stopped');
  }));
