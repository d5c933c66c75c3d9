import { describe, expect, it } from 'vitest';
import { backoffCeiling, backoffDelay } from './backoff.js';

const opts = { baseMs: 500, capMs: 30_000 };

describe('backoff', () => {
  it('doubles the ceiling per attempt and caps it at 30 s', () => {
    const ceilings = Array.from({ length: 10 }, (_, i) => backoffCeiling(i, opts));
    expect(ceilings).toEqual([500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000, 30_000]);
    expect(backoffCeiling(10_000, opts)).toBe(30_000);
  });

  it('applies full jitter: uniform between 0 and the ceiling', () => {
    expect(backoffDelay(3, { ...opts, random: () => 0 })).toBe(0);
    expect(backoffDelay(3, { ...opts, random: () => 0.5 })).toBe(2000);
    expect(backoffDelay(3, { ...opts, random: () => 0.999999 })).toBe(3999);
  });

  it('never exceeds the cap whatever the attempt and random value', () => {
    for (let attempt = 0; attempt < 50; attempt++) {
      for (const r of [0, 0.1, 0.5, 0.9, 0.9999999]) {
        const delay = backoffDelay(attempt, { ...opts, random: () => r });
        expect(delay).toBeGreaterThanOrEqual(0);
        expect(delay).toBeLessThan(backoffCeiling(attempt, opts));
        expect(delay).toBeLessThan(30_000);
      }
    }
  });
});
