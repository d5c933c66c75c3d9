/**
 * Reconnection delays: exponential growth with "full jitter"
 * (a uniformly random delay between 0 and the exponential bound).
 *
 * Why: a fixed delay (the old example used 3 s forever) makes every tab of
 * every user hammer a restarting server in lock-step; random spreading and an
 * upper bound let the server recover and keep retries cheap.
 */
export interface BackoffOptions {
  /** Bound of the first delay, in ms. */
  baseMs: number;
  /** No delay ever exceeds this, in ms. */
  capMs: number;
  /** Returns a number in [0, 1); injectable so tests are exact. */
  random: () => number;
}

/** Defaults used by `ProgressClient`: first retry within 0.5 s, never more than 30 s apart. */
export const DEFAULT_BACKOFF = { baseMs: 500, capMs: 30_000 } as const;

/** Upper bound of the delay before retry number `attempt` (0-based). */
export function backoffCeiling(attempt: number, { baseMs, capMs }: Omit<BackoffOptions, 'random'>): number {
  // 2 ** 30 is already far beyond any sensible cap; stop growing there to avoid Infinity.
  const exponential = baseMs * 2 ** Math.min(attempt, 30);
  return Math.min(capMs, exponential);
}

/** Delay in ms before retry number `attempt` (0-based): uniform in [0, ceiling). */
export function backoffDelay(attempt: number, options: BackoffOptions): number {
  return Math.floor(options.random() * backoffCeiling(attempt, options));
}
