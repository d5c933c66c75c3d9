import type { TimerHandle, Timers } from './environment.js';

/**
 * A named place for at most one pending timeout.
 *
 * Why: the client juggles several timers (retry, heartbeat, refresh...).
 * Giving each its own slot makes "set replaces the previous one" and
 * "clear everything on close()" impossible to get wrong, so no timer is
 * ever left behind.
 */
export class TimerSlot {
  private handle: TimerHandle | undefined;

  constructor(private readonly timers: Timers) {}

  /** Runs `callback` after `ms`, cancelling whatever this slot held before. */
  set(ms: number, callback: () => void): void {
    this.clear();
    const handle = this.timers.setTimeout(() => {
      if (this.handle === handle) this.handle = undefined;
      callback();
    }, Math.max(0, ms));
    this.handle = handle;
  }

  /** Cancels the pending timeout, if any. */
  clear(): void {
    if (this.handle !== undefined) {
      this.timers.clearTimeout(this.handle);
      this.handle = undefined;
    }
  }

  /** True while a timeout is pending. */
  get pending(): boolean {
    return this.handle !== undefined;
  }
}
