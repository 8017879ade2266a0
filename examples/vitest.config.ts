import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // Each file starts a whole cluster of processes: one at a time on a 2-core machine, or the
    // two clusters starve each other's hooks past their timeouts.
    fileParallelism: false,
  },
});
