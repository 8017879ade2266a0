import { defineConfig } from 'tsup';

export default defineConfig([
  {
    entry: ['src/index.ts', 'src/cli.ts'],
    format: ['esm', 'cjs'],
    // @internal members (the Balancer's membership and metrics, for this repository's tests) stay
    // out of the published types: they are not part of the public API.
    dts: { compilerOptions: { stripInternal: true } },
    sourcemap: true,
    // dist/dashboard is the second build's.
    clean: ['!dashboard/**'],
    target: 'node20',
    splitting: false,
    // The CommonJS build finds the dashboard's files next to itself through import.meta.url.
    shims: true,
  },
  {
    // The admin dashboard: one script (uPlot bundled in, nothing fetched from elsewhere) and one
    // stylesheet, served by the admin server from dist/dashboard.
    entry: { dashboard: 'dashboard/main.ts' },
    format: ['iife'],
    platform: 'browser',
    target: ['chrome120', 'firefox120'],
    outDir: 'dist/dashboard',
    noExternal: [/.*/],
    minify: true,
    sourcemap: false,
    dts: false,
    clean: true,
    tsconfig: 'dashboard/tsconfig.json',
  },
]);
