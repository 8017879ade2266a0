/**
 * `pnpm bench` for the whole cluster: the load (200,000 ops, 50 in flight, 100-byte
 * values, half reads) through the balancer to 3 nodes, and the same load directly against one
 * node as the in-run baseline, so the ratio balancer/direct means something on a noisy machine.
 * Runs once per engine. With Debian's redis-server, redis-benchmark and nutcracker installed it
 * also runs the twemproxy + 3 Redis reference (scripts/reference-twemproxy.sh).
 *
 * Env: DSTORE_BENCH_OPS (default 200000), DSTORE_BENCH_CONCURRENCY (50), DSTORE_BENCH_ENGINES (memory,lmdb).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cliPath, startCluster, stopCluster } from './cluster.js';

interface BenchJson {
  readonly throughput: number;
  readonly ops: number;
  readonly latency: { readonly p50Us: number; readonly p99Us: number; readonly p999Us: number };
  readonly errors: Record<string, number>;
}

const ops = process.env.DSTORE_BENCH_OPS ?? '200000';
const concurrency = process.env.DSTORE_BENCH_CONCURRENCY ?? '50';
const engines = (process.env.DSTORE_BENCH_ENGINES ?? 'memory,lmdb').split(',') as ('memory' | 'lmdb')[];

function bench(server: string): BenchJson {
  const args = [
    cliPath('@dstore/client'),
    'bench',
    '--server',
    server,
    '--ops',
    ops,
    '--concurrency',
    concurrency,
  ];
  args.push('--value-size', '100', '--read-ratio', '0.5', '--keyspace', '10000', '--json', '--no-progress');
  const result = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 300_000 });
  if (result.status !== 0) throw new Error(`dstore bench failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as BenchJson;
}

function row(label: string, report: BenchJson): string {
  const errors = Object.values(report.errors).reduce((sum, count) => sum + count, 0);
  const ms = (us: number) => (us / 1000).toFixed(2).padStart(7);
  return `${label.padEnd(34)} ${Math.round(report.throughput).toString().padStart(8)} ${ms(report.latency.p50Us)} ${ms(report.latency.p99Us)} ${ms(report.latency.p999Us)} ${String(errors).padStart(6)}`;
}

console.log(
  `cluster bench: ${ops} ops, ${concurrency} in flight, 100-byte values, 50% reads, 10,000 keys uniform, 1 connection`,
);
console.log(
  `${'setup'.padEnd(34)} ${'ops/s'.padStart(8)} ${'p50 ms'.padStart(7)} ${'p99 ms'.padStart(7)} ${'p999 ms'.padStart(7)} ${'errors'.padStart(6)}`,
);
for (const engine of engines) {
  const root = mkdtempSync(join(tmpdir(), `dstore-bench-${engine}-`));
  try {
    const state = await startCluster({ root, engine });
    const direct = state.nodes[0]!;
    const viaBalancer = bench(`${state.balancer.host}:${state.balancer.port}`);
    const baseline = bench(`${direct.host}:${direct.port}`);
    console.log(row(`${engine}: client -> balancer -> 3 nodes`, viaBalancer));
    console.log(row(`${engine}: client -> 1 node (baseline)`, baseline));
    console.log(
      `${engine}: ratio balancer/direct = ${(viaBalancer.throughput / baseline.throughput).toFixed(2)}`,
    );
  } finally {
    await stopCluster(root);
    rmSync(root, { recursive: true, force: true });
  }
}

const haveReference = ['nutcracker', 'redis-server', 'redis-benchmark'].every(
  (tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0,
);
if (haveReference) {
  const script = join(dirname(fileURLToPath(import.meta.url)), '..', 'scripts', 'reference-twemproxy.sh');
  console.log('\nreference on this machine:');
  spawnSync('bash', [script], { stdio: 'inherit', env: { ...process.env, REQUESTS: ops } });
} else {
  console.log(
    '\n(twemproxy + Redis reference skipped: apt-get install -y redis-server redis-tools nutcracker)',
  );
}
