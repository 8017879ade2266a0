/**
 * `bench:versions`: two builds' CPU cost per request, before and after in ONE run, because on a
 * shared machine only figures from the same run compare (issue #10's versions and cluster map,
 * issue #13's CPU per request).
 *
 * Two builds: the baseline from another checkout (DSTORE_BASELINE_ROOT) and the current one (this
 * workspace). For each engine (memory, lmdb) and round, one cluster per build is started
 * (balancer + 3 nodes, from that build's CLIs; the balancer gets `--data-dir` when the build has a
 * cluster map), loaded with `dstore bench --ops 100000 --concurrency 50 --value-size 100
 * --read-ratio 0.5 --keyspace 10000` through the balancer, and stopped: baseline, current,
 * baseline, current, ... Every load uses its own build's `dstore` CLI (protocol version 2 changed
 * the handshake; the GET/SET path is the same). Around the measured load, each server process's
 * CPU time (utime + stime from /proc/<pid>/stat, all its threads) is read, and the load
 * process's (cutime + cstime of this process: the finished `dstore bench`, its start and preload
 * included);
 * CPU µs per op = CPU time / completed ops of the run. The nodes' µs per request served is their
 * sum (each op is served by one node). The measured run includes the CLI's preload (10,000 keys
 * in MSETs) and follows a warm-up load (same command, DSTORE_BENCH_WARMUP_OPS ops) on the same
 * cluster, so JIT warm-up is not counted. Printed: every round, the median per build, the
 * current/baseline ratio per process (median of the per-round ratios), and the ratio of the
 * total server CPU µs per op.
 *
 * Linux only (/proc). Make the baseline once, outside this checkout, then run:
 *
 *   git worktree add /tmp/dstore-baseline <commit>
 *   (cd /tmp/dstore-baseline && pnpm install --frozen-lockfile --offline && pnpm build)
 *   pnpm build
 *   DSTORE_BASELINE_ROOT=/tmp/dstore-baseline pnpm --filter @dstore/examples bench:versions
 *   git worktree remove --force /tmp/dstore-baseline
 *
 * While someone else keeps rebuilding this checkout, pin the current build the same way (a
 * worktree of a commit, built) and point DSTORE_CURRENT_ROOT at it.
 *
 * Env: DSTORE_BASELINE_ROOT (required), DSTORE_CURRENT_ROOT (default: this checkout),
 * DSTORE_BENCH_ROUNDS (3), DSTORE_BENCH_OPS (100000), DSTORE_BENCH_CONCURRENCY (50),
 * DSTORE_BENCH_WARMUP_OPS (20000; 0 = none), DSTORE_BENCH_ENGINES (memory,lmdb).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type BenchJson, CLK_TCK, errorCount, median, runLoadWithCpu } from './bench-load.js';
import { type ClusterProcess, cliPath, startCluster, stopCluster } from './cluster.js';

type Engine = 'memory' | 'lmdb';

interface Build {
  readonly label: 'baseline' | 'current';
  readonly root: string;
  readonly commit: string;
  /** Whether its balancer takes `--data-dir` (has the cluster map). */
  readonly hasMap: boolean;
}

interface Sample {
  readonly report: BenchJson;
  /** CPU µs per completed op of each server process: balancer, node-1, node-2, node-3. */
  readonly cpuUsPerOp: number[];
  readonly totalUsPerOp: number;
  /** CPU µs per completed op of the load process (this build's `dstore bench`). */
  readonly loadCpuUsPerOp: number;
}

const ROUNDS = Number(process.env.DSTORE_BENCH_ROUNDS ?? 3);
const OPS = process.env.DSTORE_BENCH_OPS ?? '100000';
const CONCURRENCY = process.env.DSTORE_BENCH_CONCURRENCY ?? '50';
const WARMUP_OPS = Number(process.env.DSTORE_BENCH_WARMUP_OPS ?? 20_000);
const ENGINES = (process.env.DSTORE_BENCH_ENGINES ?? 'memory,lmdb').split(',') as Engine[];

function build(label: Build['label'], root: string): Build {
  const balancerCli = cliPath('@dstore/balancer', root);
  for (const pkg of ['@dstore/balancer', '@dstore/storage-node', '@dstore/client'] as const) {
    if (!existsSync(cliPath(pkg, root)))
      throw new Error(`${cliPath(pkg, root)} is missing: run pnpm build in ${root}`);
  }
  const help = spawnSync(process.execPath, [balancerCli, '--help'], { encoding: 'utf8' }).stdout ?? '';
  const commit = spawnSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' });
  return {
    label,
    root,
    commit: commit.status === 0 ? commit.stdout.trim() : '?',
    hasMap: help.includes('--data-dir'),
  };
}

async function measure(target: Build, engine: Engine): Promise<Sample> {
  const root = mkdtempSync(join(tmpdir(), `dstore-bench-versions-${target.label}-${engine}-`));
  try {
    // Factor 1 for both builds: the same work per op (a build before replication has only 1).
    const state = await startCluster({
      root,
      engine,
      distRoot: target.root,
      balancerDataDir: target.hasMap,
      replicationFactor: 1,
    });
    const server = `${state.balancer.host}:${state.balancer.port}`;
    const servers: ClusterProcess[] = [state.balancer, ...state.nodes];
    const { report, cpuUsPerOp, loadCpuUsPerOp } = runLoadWithCpu(
      server,
      servers.map((proc) => proc.pid),
      {
        concurrency: CONCURRENCY,
        clientCli: cliPath('@dstore/client', target.root),
        ops: OPS,
        warmupOps: WARMUP_OPS,
      },
    );
    return { report, cpuUsPerOp, loadCpuUsPerOp, totalUsPerOp: cpuUsPerOp.reduce((sum, us) => sum + us, 0) };
  } finally {
    await stopCluster(root);
    rmSync(root, { recursive: true, force: true });
  }
}

const int = (n: number) => Math.round(n).toLocaleString('en-US');
/**
 * The nodes' CPU per request they serve: every client op is served by exactly one node here
 * (GET/SET of one key; the preload's MSETs are split), so the three nodes' µs per op added up.
 */
const nodesUsPerOp = (s: Sample) => (s.cpuUsPerOp[1] ?? 0) + (s.cpuUsPerOp[2] ?? 0) + (s.cpuUsPerOp[3] ?? 0);
const ms = (us: number) => (us / 1000).toFixed(2);
const cpu = (us: number) => us.toFixed(1);

function sampleRow(engine: Engine, target: Build, round: string, samples: readonly Sample[]): string {
  const pick = (f: (s: Sample) => number) => median(samples.map(f));
  const cells = [
    engine,
    target.label,
    round,
    int(pick((s) => s.report.throughput)),
    ms(pick((s) => s.report.latency.p50Us)),
    ms(pick((s) => s.report.latency.p99Us)),
    ...[0, 1, 2, 3].map((i) => cpu(pick((s) => s.cpuUsPerOp[i] ?? 0))),
    cpu(pick(nodesUsPerOp)),
    `**${cpu(pick((s) => s.totalUsPerOp))}**`,
    cpu(pick((s) => s.loadCpuUsPerOp)),
    String(samples.reduce((sum, s) => sum + errorCount(s.report), 0)),
  ];
  return `| ${cells.join(' | ')} |`;
}

const currentRoot = resolve(
  process.env.DSTORE_CURRENT_ROOT ?? join(dirname(fileURLToPath(import.meta.url)), '..', '..'),
);
const baselineRoot = process.env.DSTORE_BASELINE_ROOT;
if (!baselineRoot) {
  console.error(
    'set DSTORE_BASELINE_ROOT to a built checkout of the baseline, e.g.\n' +
      '  git worktree add /tmp/dstore-baseline <commit>\n' +
      '  (cd /tmp/dstore-baseline && pnpm install --frozen-lockfile --offline && pnpm build)\n' +
      '  DSTORE_BASELINE_ROOT=/tmp/dstore-baseline pnpm --filter @dstore/examples bench:versions',
  );
  process.exit(2);
}
const builds = [build('baseline', resolve(baselineRoot)), build('current', currentRoot)];

console.log(
  `bench:versions: ${OPS} ops (after a ${WARMUP_OPS}-op warm-up), ${CONCURRENCY} in flight, 100-byte values, ` +
    `50% reads, 10,000 keys, --replication-factor 1; ${ROUNDS} interleaved rounds; CLK_TCK ${CLK_TCK}`,
);
for (const b of builds)
  console.log(
    `  ${b.label}: ${b.root} (${b.commit}${b.hasMap ? ', balancer --data-dir' : ', no cluster map'})`,
  );
console.log(
  '\nCPU columns: µs of CPU (user + system) per completed op, per process and for the 4 servers together.\n',
);
const HEADER =
  '| engine | build | round | ops/s | p50 ms | p99 ms | balancer µs/op | node-1 | node-2 | node-3 | nodes µs per request served | servers µs/op | load process µs/op | errors |';
const ALIGN = '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|';
console.log(HEADER);
console.log(ALIGN);

const results = new Map<string, Sample[]>();
const key = (engine: Engine, target: Build) => `${engine}/${target.label}`;
for (const engine of ENGINES) {
  for (let round = 1; round <= ROUNDS; round++) {
    for (const target of builds) {
      const sample = await measure(target, engine);
      results.set(key(engine, target), [...(results.get(key(engine, target)) ?? []), sample]);
      console.log(sampleRow(engine, target, String(round), [sample]));
    }
  }
}

console.log('\nMedian over rounds (each column its own median):\n');
console.log(HEADER.replace('| round |', '| rounds |'));
console.log(ALIGN);
for (const engine of ENGINES) {
  for (const target of builds)
    console.log(sampleRow(engine, target, `${ROUNDS}`, results.get(key(engine, target))!));
}

console.log('\nCurrent/baseline per process (median of the per-round ratios; CPU: lower is better):\n');
console.log(
  '| engine | ops/s | p99 | balancer CPU/op | nodes CPU per request | servers CPU/op | load process CPU/op |',
);
console.log('|---|---:|---:|---:|---:|---:|---:|');
for (const engine of ENGINES) {
  const [base, cur] = builds.map((b) => results.get(key(engine, b))!) as [Sample[], Sample[]];
  const ratio = (f: (s: Sample) => number) => `x${median(cur.map((c, i) => f(c) / f(base[i]!))).toFixed(2)}`;
  console.log(
    `| ${engine} | ${ratio((s) => s.report.throughput)} | ${ratio((s) => s.report.latency.p99Us)} | ` +
      `${ratio((s) => s.cpuUsPerOp[0] ?? 0)} | ${ratio(nodesUsPerOp)} | ${ratio((s) => s.totalUsPerOp)} | ` +
      `${ratio((s) => s.loadCpuUsPerOp)} |`,
  );
}

console.log('\nTotal server CPU µs per op, current/baseline:\n');
for (const engine of ENGINES) {
  const [base, cur] = builds.map((b) => results.get(key(engine, b))!.map((s) => s.totalUsPerOp)) as [
    number[],
    number[],
  ];
  const pairs = cur.map((c, i) => c / base[i]!);
  const spread = (values: number[]) => `${cpu(Math.min(...values))}-${cpu(Math.max(...values))}`;
  console.log(
    `${engine}: ${(median(cur) / median(base)).toFixed(3)} (median ${cpu(median(cur))} / ${cpu(median(base))} µs/op; ` +
      `current ${spread(cur)}, baseline ${spread(base)}; per-round ratios ${pairs.map((r) => r.toFixed(3)).join(', ')})`,
  );
}
