import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // One worker process runs the files one after another and keeps the modules they share (the
    // balancer, protocol, client, checker): importing them again for each of ~50 files cost about
    // a second each. Test files keep no state outside their own module (each has its Resources).
    isolate: false,
  },
});
