import type { Import } from './types';

/**
 * The client's view of the user's imports, keyed by id.
 *
 * Why: messages for one import can arrive twice or out of order across a
 * reconnect (a live update, then an older snapshot, or the REST response of
 * the create call after its first WebSocket update). Keeping the highest
 * `version` per import and dropping anything not newer makes the view
 * converge to the server's state whatever the order.
 */
export class ImportStore {
  private readonly byId = new Map<string, Import>();
  /** Cached sorted list; rebuilt lazily after a change so React sees a stable array. */
  private sorted: readonly Import[] | null = [];

  /** Applies one import; returns true when it was newer and changed the view. */
  apply(update: Import): boolean {
    const known = this.byId.get(update.id);
    if (known !== undefined && update.version <= known.version) return false;
    this.byId.set(update.id, update);
    this.sorted = null;
    return true;
  }

  /**
   * Applies a snapshot: each import in it replaces the local one unless the
   * local one is newer. Imports missing from the snapshot are kept (the
   * server only sends unfinished and recent ones). Returns true if anything changed.
   */
  applySnapshot(imports: readonly Import[]): boolean {
    let changed = false;
    for (const item of imports) {
      if (this.apply(item)) changed = true;
    }
    return changed;
  }

  /** Drops one import (after the user deleted it). Returns true if it was known. */
  remove(id: string): boolean {
    const removed = this.byId.delete(id);
    if (removed) this.sorted = null;
    return removed;
  }

  /** Forgets everything (another user signed in). Returns true if anything was known. */
  clear(): boolean {
    if (this.byId.size === 0) return false;
    this.byId.clear();
    this.sorted = null;
    return true;
  }

  /** One import by id. */
  get(id: string): Import | undefined {
    return this.byId.get(id);
  }

  /** All imports, newest first; the same array instance until something changes. */
  list(): readonly Import[] {
    if (this.sorted === null) {
      this.sorted = [...this.byId.values()].sort(newestFirst);
    }
    return this.sorted;
  }
}

/** Orders by `created_at` descending, then by id so the order is total and stable. */
function newestFirst(a: Import, b: Import): number {
  const byTime = (Date.parse(b.created_at) || 0) - (Date.parse(a.created_at) || 0);
  if (byTime !== 0) return byTime;
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}
