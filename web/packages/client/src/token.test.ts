import { describe, expect, it } from 'vitest';
import { makeJwt } from '../test/fakes.js';
import { refreshDelayMs, tokenExpiryMs } from './token.js';

describe('tokenExpiryMs', () => {
  it('reads exp (seconds) from the payload as epoch ms', () => {
    expect(tokenExpiryMs(makeJwt({ sub: 'a', exp: 1_900_000_000 }))).toBe(1_900_000_000_000);
  });

  it('handles base64url characters in the payload', () => {
    // A subject full of characters that encode to - and _ in base64url.
    expect(tokenExpiryMs(makeJwt({ sub: '>>>???~~~ÿÿ', exp: 42 }))).toBe(42_000);
  });

  it('returns null for anything that is not a JWT with a numeric exp', () => {
    expect(tokenExpiryMs('opaque-token')).toBeNull();
    expect(tokenExpiryMs('a.b.c')).toBeNull();
    expect(tokenExpiryMs(makeJwt({ sub: 'a' }))).toBeNull();
    expect(tokenExpiryMs(makeJwt({ exp: 'soon' }))).toBeNull();
  });
});

describe('refreshDelayMs', () => {
  const now = 1_000_000;
  it('refreshes a 60 s token 10 s before expiry', () => {
    expect(refreshDelayMs(now + 60_000, now)).toBe(50_000);
  });
  it('refreshes a 20 s token 10 s before expiry', () => {
    expect(refreshDelayMs(now + 20_000, now)).toBe(10_000);
  });
  it('refreshes shorter tokens at half their remaining life', () => {
    expect(refreshDelayMs(now + 10_000, now)).toBe(5_000);
    expect(refreshDelayMs(now + 19_000, now)).toBe(9_500);
  });
  it('never schedules sooner than 1 s, even for an expired token or a skewed clock', () => {
    expect(refreshDelayMs(now + 1_000, now)).toBe(1_000);
    expect(refreshDelayMs(now - 30_000, now)).toBe(1_000);
  });
});
