import { describe, expect, it } from 'vitest';
import { describeError, displayTitle, formatBytes, formatTransfer, humanize, percentOf, secondsUntil, statusLabel } from './format';

describe('format', () => {
  it('percent: floors, clamps, null while unknown, 100 once completed', () => {
    expect(percentOf({ status: 'downloading', progress: 0.999 })).toBe(99);
    expect(percentOf({ status: 'downloading', progress: 0.5 })).toBe(50);
    expect(percentOf({ status: 'downloading', progress: 1.2 })).toBe(100);
    expect(percentOf({ status: 'queued', progress: null })).toBeNull();
    expect(percentOf({ status: 'completed', progress: null })).toBe(100);
    expect(percentOf({ status: 'failed', progress: 0.4 })).toBe(40);
  });

  it('bytes in decimal units', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(1_400)).toBe('1.4 kB');
    expect(formatBytes(12_345_678)).toBe('12 MB');
    expect(formatBytes(3_100_000_000)).toBe('3.1 GB');
    expect(formatTransfer({ bytes_done: 5_000_000, bytes_total: 20_000_000 })).toBe('5.0 MB of 20 MB');
    expect(formatTransfer({ bytes_done: 5_000_000, bytes_total: null })).toBe('5.0 MB');
    expect(formatTransfer({ bytes_done: 0, bytes_total: null })).toBeNull();
  });

  it('errors in plain words, falling back to the server message', () => {
    expect(describeError({ code: 'not_a_video', message: 'magic bytes' })).toBe('That is not a video file.');
    expect(describeError({ code: 'too_large', message: '' })).toMatch(/larger/);
    expect(describeError({ code: 'something_new', message: 'Disk quota reached' })).toBe('Disk quota reached');
    expect(describeError({ code: 'something_new', message: '' })).toBe('Something went wrong (something_new).');
    for (const code of ['url_not_allowed', 'unreadable_media', 'interrupted', 'download_failed', 'processing_stalled', 'download_too_slow', 'quota_exceeded', 'too_long', 'too_many_imports', 'rate_limited']) {
      expect(describeError({ code, message: 'x' })).not.toBe('x');
    }
  });

  it('labels and titles', () => {
    expect(statusLabel('downloading')).toBe('Downloading');
    expect(statusLabel('in_review')).toBe('In review');
    expect(humanize('making_thumbnail')).toBe('Making thumbnail');
    expect(displayTitle({ title: 'Big Buck Bunny', source_url: 'https://x.test/a.mp4' })).toBe('Big Buck Bunny');
    expect(displayTitle({ title: null, source_url: 'https://x.test/films/my%20clip.webm?x=1' })).toBe('my clip.webm');
    expect(displayTitle({ title: '', source_url: 'https://x.test/' })).toBe('x.test');
    expect(secondsUntil(10_500, 10_000)).toBe(1);
    expect(secondsUntil(9_000, 10_000)).toBe(0);
  });
});
