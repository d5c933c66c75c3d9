import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { expect, test } from 'vitest';
import { ReeltimeServer } from './harness/server';
import { RESULTS_DIR, WEB_DIR } from './harness/util';

/** Every file of web/dist, as URL paths. */
function distFiles(dir = path.join(WEB_DIR, 'dist'), prefix = ''): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    return statSync(full).isDirectory() ? distFiles(full, `${prefix}/${name}`) : [`${prefix}/${name}`];
  });
}

test('the served page is the current build of web/dist', async () => {
  const server = new ReeltimeServer();
  try {
    await server.start();
    const index = await fetch(`${server.url}/`);
    expect(index.status).toBe(200);
    expect(index.headers.get('content-type')).toMatch(/^text\/html/);
    const served = Buffer.from(await index.arrayBuffer());
    const built = readFileSync(path.join(WEB_DIR, 'dist', 'index.html'));
    expect(served.equals(built), 'GET / must return web/dist/index.html byte for byte (rebuild: cargo build -p reeltime)').toBe(
      true,
    );
    // And every asset the page loads, byte for byte too.
    const files = distFiles();
    expect(files).toContain('/assets/app.js');
    for (const file of files) {
      const response = await fetch(`${server.url}${file}`);
      expect(response.status, file).toBe(200);
      const bytes = Buffer.from(await response.arrayBuffer());
      expect(bytes.equals(readFileSync(path.join(WEB_DIR, 'dist', file))), `${file} differs from web/dist`).toBe(true);
    }
  } finally {
    await server.dispose(path.join(RESULTS_DIR, 'served-page--server.log'));
  }
});
