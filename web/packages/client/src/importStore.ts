import type { Import, RemovedImport } from './types.js';

/**
 * The client's view of the user's imports, keyed by id.
 *
 * Why: messages for one import can arrive twice or out of order across a
 * reconnect (a live update, then an older snapshot, or the REST response of
 * the create call after its first WebSocket update). Keeping the highest
 * `version` per import and dropping anything not newer makes the view
 * converge to the server's state whatever the order.
 *
 * A delete is the import's last version: the row goes, and the version of
 * the delete is kept (a tombstone) so that an older message about the same
 * id arriving later, on another socket or in an older snapshot, cannot
 * bring the row back.
 */
export class ImportStore {
  private readonly byId = new Map<string, Import>();
  /** Version of the delete of each import known to be deleted. */
  private readonly removed = new Map<string, number>();
  /** Cached sorted list; rebuilt lazily after a change so React sees a stable array. */
  private sorted: readonly Import[] | null = [];

  /** Applies one import; returns true when it was newer and changed the view. */
  apply(update: Import): boolean {
    const gone = this.removed.get(update.id);
    if (gone !== undefined && update.version <= gone) return false;
    const known = this.byId.get(update.id);
    if (known !== undefined && update.version <= known.version) return false;
    this.byId.set(update.id, update);
    this.sorted = null;
    return true;
  }

  /**
   * Applies a delete: drops the row unless the local import is newer than
   * the delete (it cannot be, as the delete is the import's last change),
   * and remembers the delete's version. Returns true when a row went.
   */
  applyRemoved(removal: RemovedImport): boolean {
    const known = this.byId.get(removal.id);
    if (known !== undefined && known.version >= removal.version) return false;
    this.remember(removal.id, removal.version);
    if (known === undefined) return false;
    this.byId.delete(removal.id);
    this.sorted = null;
    return true;
  }

  /**
   * Applies a snapshot: each import in it replaces the local one unless the
   * local one is newer, and each delete in `removed` drops its row.
   * Imports merely missing from the snapshot are kept (the server only
   * sends unfinished and recent ones; a deleted one is in `removed`).
   * Returns true if anything changed.
   */
  applySnapshot(imports: readonly Import[], removed: readonly RemovedImport[] = []): boolean {
    let changed = false;
    for (const item of imports) {
      if (this.apply(item)) changed = true;
    }
    for (const removal of removed) {
      if (this.applyRemoved(removal)) changed = true;
    }
    return changed;
  }

  /**
   * Drops one import (after this tab's own delete request succeeded, before
   * the server's `import_removed` arrives). Returns true if it was known.
   */
  remove(id: string): boolean {
    const known = this.byId.get(id);
    if (known === undefined) return false;
    // Nothing at or below the version we showed may bring it back.
    this.remember(id, known.version);
    this.byId.delete(id);
    this.sorted = null;
    return true;
  }

  private remember(id: string, version: number): void {
    const gone = this.removed.get(id);
    if (gone === undefined || version > gone) this.removed.set(id, version);
  }

  /** Forgets everything (another user signed in). Returns true if anything was known. */
  clear(): boolean {
    this.removed.clear();
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
