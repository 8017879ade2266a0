import { defineConfig } from 'tsup';

// Private test tooling: consumed only by this repository's tests (ESM), never published.
export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  splitting: false,
});
