import { existsSync, rmSync } from 'node:fs';
import { CHROMIUM } from './harness/browser';
import { reeltimeBin } from './harness/server';
import { ensureResultsDir, RESULTS_DIR } from './harness/util';

/** Fails fast, with the fix in the message, when a prerequisite is missing. */
export default function setup(): void {
  const bin = reeltimeBin();
  if (!existsSync(bin)) {
    throw new Error(`no reeltime binary at ${bin}: run 'cargo build -p reeltime' (or set REELTIME_BIN)`);
  }
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: run 'apt-get install -y chromium' (or set CHROMIUM_PATH)`);
  }
  // Fresh artifacts for every run.
  rmSync(RESULTS_DIR, { recursive: true, force: true });
  ensureResultsDir();
}
