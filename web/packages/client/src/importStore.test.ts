import { describe, expect, it } from 'vitest';
import { makeImport } from '../test/fakes.js';
import { ImportStore } from './importStore.js';

describe('ImportStore', () => {
  it('keeps only strictly newer versions', () => {
    const store = new ImportStore();
    expect(store.apply(makeImport({ id: 'a', version: 2, progress: 0.2 }))).toBe(true);
    expect(store.apply(makeImport({ id: 'a', version: 1, progress: 0.1 }))).toBe(false);
    expect(store.apply(makeImport({ id: 'a', version: 2, progress: 0.9 }))).toBe(false);
    expect(store.get('a')?.progress).toBe(0.2);
    expect(store.apply(makeImport({ id: 'a', version: 3, progress: 0.3 }))).toBe(true);
    expect(store.get('a')?.progress).toBe(0.3);
  });

  it('applies a snapshot without regressing newer local state and keeps absent imports', () => {
    const store = new ImportStore();
    store.apply(makeImport({ id: 'a', version: 5, status: 'completed' }));
    store.apply(makeImport({ id: 'old', version: 9, status: 'completed' }));
    const changed = store.applySnapshot([
      makeImport({ id: 'a', version: 4, status: 'downloading' }),
      makeImport({ id: 'b', version: 1, status: 'queued' }),
    ]);
    expect(changed).toBe(true);
    expect(store.get('a')?.status).toBe('completed');
    expect(store.get('b')?.status).toBe('queued');
    expect(store.get('old')).toBeDefined();
  });

  it('lists newest first and keeps the same array until something changes', () => {
    const store = new ImportStore();
    store.apply(makeImport({ id: 'x', version: 1, created_at: '2030-01-01T00:00:01.000Z' }));
    store.apply(makeImport({ id: 'y', version: 1, created_at: '2030-01-01T00:00:03.000Z' }));
    store.apply(makeImport({ id: 'z', version: 1, created_at: '2030-01-01T00:00:02.000Z' }));
    const first = store.list();
    expect(first.map((i) => i.id)).toEqual(['y', 'z', 'x']);
    expect(store.list()).toBe(first);
    store.apply(makeImport({ id: 'x', version: 1 })); // not newer: no change
    expect(store.list()).toBe(first);
    store.remove('y');
    expect(store.list()).not.toBe(first);
    expect(store.list().map((i) => i.id)).toEqual(['z', 'x']);
  });

  it('a delete drops the row and keeps its version, so nothing older brings it back', () => {
    const store = new ImportStore();
    store.apply(makeImport({ id: 'a', version: 4, status: 'completed' }));
    expect(store.applyRemoved({ id: 'a', version: 5 })).toBe(true);
    expect(store.get('a')).toBeUndefined();
    expect(store.apply(makeImport({ id: 'a', version: 4 }))).toBe(false);
    expect(store.apply(makeImport({ id: 'a', version: 5 }))).toBe(false);
    expect(store.applySnapshot([makeImport({ id: 'a', version: 3 })])).toBe(false);
    expect(store.applyRemoved({ id: 'a', version: 5 })).toBe(false);
    expect(store.list()).toEqual([]);
  });

  it('a delete of an unknown import changes nothing but still blocks its older versions', () => {
    const store = new ImportStore();
    expect(store.applyRemoved({ id: 'x', version: 3 })).toBe(false);
    expect(store.apply(makeImport({ id: 'x', version: 2 }))).toBe(false);
    expect(store.get('x')).toBeUndefined();
  });

  it("a delete older than the row it names is stale and ignored", () => {
    const store = new ImportStore();
    store.apply(makeImport({ id: 'a', version: 9 }));
    expect(store.applyRemoved({ id: 'a', version: 9 })).toBe(false);
    expect(store.get('a')?.version).toBe(9);
  });

  it('a snapshot tells deleted (in removed) from merely absent (kept)', () => {
    const store = new ImportStore();
    store.apply(makeImport({ id: 'gone', version: 2, status: 'completed' }));
    store.apply(makeImport({ id: 'old', version: 7, status: 'completed' }));
    const changed = store.applySnapshot([makeImport({ id: 'new', version: 1 })], [{ id: 'gone', version: 3 }]);
    expect(changed).toBe(true);
    expect(store.list().map((i) => i.id).sort()).toEqual(['new', 'old']);
  });

  it('clear forgets the deletes too (another user)', () => {
    const store = new ImportStore();
    store.applyRemoved({ id: 'a', version: 5 });
    store.clear();
    expect(store.apply(makeImport({ id: 'a', version: 1 }))).toBe(true);
  });
});
