import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // One worker process runs the files one after another and keeps the modules they share:
    // a fresh process and imports for each file cost CI (CPU-bound on 2 cores) some 40 s of CPU
    // over the packages. Test files keep no state outside their own module.
    isolate: false,
  },
});
