import { useEffect, useState } from 'react';

/**
 * The current time, re-read every `intervalMs` while `intervalMs` is not
 * null. Why: countdowns ("Reconnecting in 4 s") must tick without the
 * client emitting changes every second; the interval stops when unused.
 */
export function useNow(intervalMs: number | null): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (intervalMs === null) return;
    setNow(Date.now());
    const id = setInterval(() => setNow(Date.now()), intervalMs);
    return () => clearInterval(id);
  }, [intervalMs]);
  return now;
}
