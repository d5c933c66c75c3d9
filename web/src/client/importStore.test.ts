import { describe, expect, it } from 'vitest';
import { makeImport } from '../test/fakes';
import { ImportStore } from './importStore';

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
});
