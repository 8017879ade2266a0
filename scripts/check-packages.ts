/**
 * Checks the five packages as a user gets them: the tarballs `pnpm pack` makes, not the workspace.
 *
 * 1. `pnpm pack` every library package into a temporary directory.
 * 2. publint and `@arethetypeswrong/cli` (strict profile: node10, node16 CJS and ESM, bundler) on
 *    each tarball.
 * 3. Every relative link of each packed README points to a packed file.
 * 4. A consumer project per resolution mode (node10, node16 CJS, node16 ESM, bundler) imports every
 *    package (and `@dstore/protocol/testing`) from the unpacked tarballs and must compile with
 *    `tsc --strict` and `skipLibCheck: false`, so our own `.d.ts`/`.d.cts` files are checked too.
 * 5. The CJS and ESM consumers run under node: require and import work, and `instanceof DstoreError`
 *    holds across the two builds.
 *
 * Third-party dependencies are not installed from the registry: the consumer's node_modules links
 * them to the workspace's copies, so the check runs offline and in seconds.
 *
 * Run: `pnpm check:packages` (part of `pnpm test`). Exits 1 with every problem listed.
 */
import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const packages = ['hashring', 'protocol', 'storage-node', 'balancer', 'client'] as const;
const bin = (name: string): string => join(root, 'node_modules', '.bin', name);
const problems: string[] = [];

/** Runs a command; a non-zero exit is recorded as a problem (with its output), not thrown. */
function run(what: string, file: string, args: string[], cwd: string): string | undefined {
  try {
    return execFileSync(file, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    problems.push(`${what}\n${e.stdout ?? ''}${e.stderr ?? ''}`.trimEnd() || `${what}: ${e.message}`);
    return undefined;
  }
}

const work = mkdtempSync(join(tmpdir(), 'dstore-packages-'));
const modules = join(work, 'node_modules');
const tarballs = join(work, 'tarballs');
mkdirSync(join(modules, '@dstore'), { recursive: true });
mkdirSync(tarballs);

function linkModule(name: string, target: string): void {
  const at = join(modules, name);
  if (existsSync(at)) return;
  mkdirSync(dirname(at), { recursive: true });
  symlinkSync(target, at, 'dir');
}

/** A relative link in a README shown on npm must point into the tarball, or it is dead there. */
function checkReadmeLinks(name: string, dir: string): void {
  const readme = readFileSync(join(dir, 'README.md'), 'utf8');
  for (const match of readme.matchAll(/\]\(([^)\s]+)\)/g)) {
    const target = match[1]!;
    if (/^[a-z]+:/i.test(target) || target.startsWith('#')) continue;
    const path = target.split('#')[0]!;
    if (!existsSync(join(dir, path)))
      problems.push(`@dstore/${name}: README links to ${target}, not in the tarball`);
  }
}

/** The code every consumer compiles: each package's main entry point, used through its types. */
const consumerSource = `import { createRing, HashRing } from '@dstore/hashring';
import { classifyError, DstoreError, ErrorCode } from '@dstore/protocol';
import { seededRandom } from '@dstore/protocol/testing';
import { createStorageNode, type StorageNodeOptions } from '@dstore/storage-node';
import { createBalancer, type BalancerOptions } from '@dstore/balancer';
import { createClient, type ClientOptions, type DstoreClient } from '@dstore/client';

const ring: HashRing = createRing([{ id: 'a', weight: 1 }]);
const node: StorageNodeOptions = { port: 0 };
const balancer: BalancerOptions = { port: 0 };
const options: ClientOptions = { port: 7379, lazyConnect: true };
export function use(client: DstoreClient, err: unknown): string {
  const random: () => number = seededRandom(1);
  if (err instanceof DstoreError && err.code === ErrorCode.UNAVAILABLE) return String(classifyError(err).notExecuted);
  return [ring.size, node.port, balancer.port, options.port, random(), typeof client.get, typeof createClient,
    typeof createStorageNode, typeof createBalancer].join();
}
`;

/** Loads every package at run time and checks the error class across the two builds. */
const runtimeCheck = (load: (name: string) => string): string => `
const protocolCjs = require('@dstore/protocol');
${load('protocolEsm')}
for (const name of ['hashring', 'protocol', 'storage-node', 'balancer', 'client']) require('@dstore/' + name);
const fromEsm = new protocolEsm.DstoreError(protocolEsm.ErrorCode.UNAVAILABLE, 'x');
const fromCjs = new protocolCjs.DstoreError(protocolCjs.ErrorCode.UNAVAILABLE, 'x');
if (!(fromEsm instanceof protocolCjs.DstoreError) || !(fromCjs instanceof protocolEsm.DstoreError)) {
  throw new Error('instanceof DstoreError does not hold across the ESM and CJS builds');
}
if (!(require('@dstore/client').DstoreError === protocolCjs.DstoreError)) throw new Error('client re-export differs');
console.log('ok');
`;

function checkConsumers(): void {
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  const common = {
    strict: true,
    esModuleInterop: true,
    noEmit: true,
    skipLibCheck: false,
    types: ['node'],
    target: 'ES2022',
  };
  const consumers: Record<string, { type: 'module' | 'commonjs'; options: Record<string, unknown> }> = {
    node10: { type: 'commonjs', options: { module: 'commonjs', moduleResolution: 'node10' } },
    'node16-cjs': { type: 'commonjs', options: { module: 'node16', moduleResolution: 'node16' } },
    'node16-esm': { type: 'module', options: { module: 'node16', moduleResolution: 'node16' } },
    bundler: { type: 'module', options: { module: 'esnext', moduleResolution: 'bundler' } },
  };
  for (const [mode, { type, options }] of Object.entries(consumers)) {
    const dir = join(work, `consumer-${mode}`);
    mkdirSync(dir);
    writeFileSync(
      join(dir, 'package.json'),
      JSON.stringify({ name: `consumer-${mode}`, private: true, type }),
    );
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { ...common, ...options }, files: ['index.ts'] }),
    );
    writeFileSync(join(dir, 'index.ts'), consumerSource);
    run(`consumer ${mode}: tsc`, process.execPath, [tsc, '-p', '.'], dir);
  }
  // Runtime: a CommonJS program (require, then import() of the ESM build) and an ES module
  // (import, then createRequire for the CJS build).
  const cjs = join(work, 'consumer-node16-cjs', 'run.cjs');
  writeFileSync(
    cjs,
    `(async () => {${runtimeCheck((n) => `const ${n} = await import('@dstore/protocol');`)}})().catch((e) => { console.error(e); process.exit(1); });`,
  );
  const esm = join(work, 'consumer-node16-esm', 'run.mjs');
  writeFileSync(
    esm,
    `import { createRequire } from 'node:module';\nconst require = createRequire(import.meta.url);\n${runtimeCheck((n) => `const ${n} = await import('@dstore/protocol');`)}`,
  );
  for (const file of [cjs, esm]) {
    const out = run(
      `consumer run ${file.endsWith('.cjs') ? 'CJS' : 'ESM'}`,
      process.execPath,
      [file],
      dirname(file),
    );
    if (out !== undefined && out.trim() !== 'ok')
      problems.push(`consumer run ${file}: unexpected output ${out}`);
  }
}

try {
  for (const name of packages) {
    const pkgDir = join(root, 'packages', name);
    const before = new Set(readdirSync(tarballs));
    run(`pnpm pack @dstore/${name}`, 'pnpm', ['pack', '--pack-destination', tarballs], pkgDir);
    const tarball = readdirSync(tarballs).find((f) => !before.has(f));
    if (tarball === undefined) continue;
    const tgz = join(tarballs, tarball);

    run(`publint @dstore/${name}`, bin('publint'), ['run', tgz, '--strict'], root);
    run(
      `attw @dstore/${name}`,
      bin('attw'),
      [tgz, '--profile', 'strict', '--no-definitely-typed', '--format', 'ascii'],
      root,
    );

    // Unpack into the consumers' shared node_modules, where node and tsc resolve it as installed.
    const dest = join(modules, '@dstore', name);
    mkdirSync(dest);
    execFileSync('tar', ['xzf', tgz, '-C', dest, '--strip-components=1']);
    checkReadmeLinks(name, dest);

    // Third-party dependencies: link the workspace's copies (their own deps resolve from there).
    const manifest = JSON.parse(readFileSync(join(dest, 'package.json'), 'utf8')) as {
      dependencies?: Record<string, string>;
    };
    for (const dep of Object.keys(manifest.dependencies ?? {})) {
      if (dep.startsWith('@dstore/')) continue;
      linkModule(dep, realpathSync(join(pkgDir, 'node_modules', dep)));
    }
  }
  linkModule('@types/node', realpathSync(join(root, 'node_modules', '@types', 'node')));
  checkConsumers();
} finally {
  rmSync(work, { recursive: true, force: true });
}

if (problems.length > 0) {
  console.error(`check-packages: ${problems.length} problem(s)\n\n${problems.join('\n\n')}`);
  process.exit(1);
}
console.log(
  `check-packages: ${packages.length} tarballs pass publint and attw; consumers compile under node10, node16 (CJS, ESM) and bundler, and run under node (CJS, ESM)`,
);
