import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/** Files in name order: the served-page check first, then the story line by line. */
class ByName extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    return [...files].sort((a, b) => a.moduleId.localeCompare(b.moduleId));
  }
}

/**
 * End-to-end tests (`npm run e2e`): real Chromium against the real
 * `reeltime` binary (`REELTIME_BIN`, default ../target/debug/reeltime).
 * One file at a time (one browser at a time on a small machine), generous
 * timeouts; each test bounds its own waits (60 s each). Screenshots and
 * logs go to test-results/.
 */
export default defineConfig({
  test: {
    include: ['e2e/**/*.e2e.ts'],
    environment: 'node',
    fileParallelism: false,
    maxWorkers: 1,
    testTimeout: 300_000,
    hookTimeout: 120_000,
    globalSetup: ['e2e/globalSetup.ts'],
    reporters: ['verbose'],
    sequence: { sequencer: ByName },
  },
});
