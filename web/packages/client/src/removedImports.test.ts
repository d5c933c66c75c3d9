import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createHarness, makeImport } from '../test/fakes.js';
import { parseServerMessage } from './messages.js';

/**
 * Deletes on the socket (docs/protocol.md, "Deletes"): `import_removed`
 * drops the row in every tab, a snapshot's `removed` drops it in a tab that
 * was away, and nothing older about a deleted import brings it back.
 */

beforeEach(() => {
  vi.useFakeTimers({ now: new Date('2030-01-01T00:00:00Z') });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('deletes', () => {
  it('import_removed drops the row and notifies; older or equal messages about it are ignored', async () => {
    const h = createHarness();
    h.client.start();
    const ws = await h.connect({}, [
      makeImport({ id: 'a', version: 2, status: 'completed' }),
      makeImport({ id: 'b', version: 1, status: 'completed' }),
    ]);
    const listener = vi.fn();
    h.client.subscribe(listener);
    ws.receive({ type: 'import_removed', id: 'a', version: 3 });
    expect(h.client.getImport('a')).toBeUndefined();
    expect(h.client.getImports().map((i) => i.id)).toEqual(['b']);
    expect(listener).toHaveBeenCalledTimes(1);

    ws.receive({ type: 'import', import: makeImport({ id: 'a', version: 2, status: 'completed' }) });
    ws.receive({ type: 'import', import: makeImport({ id: 'a', version: 3, status: 'completed' }) });
    ws.receive({ type: 'snapshot', imports: [makeImport({ id: 'a', version: 2 })], removed: [] });
    ws.receive({ type: 'import_removed', id: 'a', version: 3 });
    expect(h.client.getImport('a')).toBeUndefined();
    expect(listener).toHaveBeenCalledTimes(1);
  });

  it('a tab that was away drops a row deleted meanwhile, from the snapshot, and keeps the merely absent ones', async () => {
    const h = createHarness();
    h.client.start();
    const ws = await h.connect({}, [
      makeImport({ id: 'deleted', version: 4, status: 'completed' }),
      makeImport({ id: 'old', version: 9, status: 'completed' }),
    ]);
    ws.serverClose(1006);
    await vi.advanceTimersByTimeAsync(250);
    const ws2 = await h.connect({}, []);
    // What the server sends after `ready`: the snapshot, with the delete.
    ws2.receive({ type: 'snapshot', imports: [], removed: [{ id: 'deleted', version: 5 }] });
    expect(h.client.getImports().map((i) => i.id)).toEqual(['old']);
    // A live message from the old socket's era, arriving late, changes nothing.
    ws2.receive({ type: 'import', import: makeImport({ id: 'deleted', version: 4, status: 'completed' }) });
    expect(h.client.getImport('deleted')).toBeUndefined();
  });

  it("this tab's own delete (forgetImport) is not undone by a late message it already showed", async () => {
    const h = createHarness();
    h.client.start();
    const ws = await h.connect({}, [makeImport({ id: 'a', version: 6, status: 'completed' })]);
    h.client.forgetImport('a');
    ws.receive({ type: 'import', import: makeImport({ id: 'a', version: 6, status: 'completed' }) });
    expect(h.client.getImport('a')).toBeUndefined();
    ws.receive({ type: 'import_removed', id: 'a', version: 7 });
    expect(h.client.getImports()).toEqual([]);
  });
});

describe('parsing deletes', () => {
  it('reads import_removed and the snapshot list, dropping malformed entries', () => {
    expect(parseServerMessage(JSON.stringify({ type: 'import_removed', id: 'a', version: 3 }))).toEqual({
      type: 'import_removed',
      id: 'a',
      version: 3,
    });
    expect(parseServerMessage(JSON.stringify({ type: 'import_removed', id: 'a' }))).toBeNull();
    expect(parseServerMessage(JSON.stringify({ type: 'import_removed', id: 7, version: 3 }))).toBeNull();
    expect(
      parseServerMessage(
        JSON.stringify({ type: 'snapshot', imports: [], removed: [{ id: 'a', version: 2 }, { id: 'b' }, 'c'] }),
      ),
    ).toEqual({ type: 'snapshot', imports: [], removed: [{ id: 'a', version: 2 }] });
  });

  it('a snapshot without `removed` (an older server) reads as no deletes', () => {
    expect(parseServerMessage(JSON.stringify({ type: 'snapshot', imports: [] }))).toEqual({
      type: 'snapshot',
      imports: [],
      removed: [],
    });
  });
});
