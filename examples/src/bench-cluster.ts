/**
 * `pnpm bench` for the whole cluster: the load (200,000 ops, 50 in flight, 100-byte
 * values, half reads) through the balancer to 3 nodes, and the same load directly against one
 * node (alone in its own cluster, so it owns every key) as the in-run baseline, so the ratio balancer/direct means something on a noisy machine.
 * Runs once per engine. With Debian's redis-server, redis-benchmark and nutcracker installed it
 * also runs the twemproxy + 3 Redis reference with redis-benchmark (redis-peers.ts starts it;
 * bench:peers compares with Node clients on every system).
 *
 * Env: DSTORE_BENCH_OPS (default 200000), DSTORE_BENCH_CONCURRENCY (50), DSTORE_BENCH_ENGINES (memory,lmdb).
 *
 * `--routing balancer` (default): the above. `--routing direct`: the same load with `dstore bench
 * --routing direct` (the client sends each request straight to the key's node) against the
 * 3-node cluster, with each process's CPU µs per op. `--routing both`: balancer and direct on one
 * cluster in one run, with the ratio.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BenchJson, type CpuSample, errorCount, runLoad, runLoadWithCpu } from './bench-load.js';
import { type ClusterProcess, type ClusterState, startCluster, stopCluster } from './cluster.js';
import { missingPeerTools, PEER_PACKAGES, startTwemproxy, stopPeers } from './redis-peers.js';

const ops = process.env.DSTORE_BENCH_OPS ?? '200000';
const concurrency = process.env.DSTORE_BENCH_CONCURRENCY ?? '50';
const engines = (process.env.DSTORE_BENCH_ENGINES ?? 'memory,lmdb').split(',') as ('memory' | 'lmdb')[];

const bench = (server: string): BenchJson => runLoad(server, { ops, concurrency });

type RoutingFlag = 'balancer' | 'direct' | 'both';
const routingAt = process.argv.indexOf('--routing');
const routingFlag = (routingAt < 0 ? 'balancer' : process.argv[routingAt + 1]) as RoutingFlag;
if (!['balancer', 'direct', 'both'].includes(routingFlag)) {
  console.error(`--routing must be balancer, direct or both, got ${String(routingFlag)}`);
  process.exit(2);
}

function row(label: string, report: BenchJson): string {
  const errors = errorCount(report);
  const ms = (us: number) => (us / 1000).toFixed(2).padStart(7);
  return `${label.padEnd(34)} ${Math.round(report.throughput).toString().padStart(8)} ${ms(report.latency.p50Us)} ${ms(report.latency.p99Us)} ${ms(report.latency.p999Us)} ${String(errors).padStart(6)}`;
}

console.log(
  `cluster bench: ${ops} ops, ${concurrency} in flight, 100-byte values, 50% reads, 10,000 keys uniform, 1 connection; ` +
    'dstore with --replication-factor 1 (one copy per key, as the Redis it is compared with)',
);
console.log(
  `${'setup'.padEnd(34)} ${'ops/s'.padStart(8)} ${'p50 ms'.padStart(7)} ${'p99 ms'.padStart(7)} ${'p999 ms'.padStart(7)} ${'errors'.padStart(6)}`,
);
/** Starts a cluster of `nodes` nodes, runs the load against the server `target` picks, stops it. */
async function benchCluster(
  engine: 'memory' | 'lmdb',
  nodes: number,
  target: (state: ClusterState) => ClusterProcess,
): Promise<BenchJson> {
  const root = mkdtempSync(join(tmpdir(), `dstore-bench-${engine}-`));
  try {
    const state = await startCluster({ root, engine, nodes, replicationFactor: 1 });
    const server = target(state);
    return bench(`${server.host}:${server.port}`);
  } finally {
    await stopCluster(root);
    rmSync(root, { recursive: true, force: true });
  }
}

/** One routing mode against a running cluster, with the CPU of every process around the measured load. */
function benchRouting(state: ClusterState, routing: 'balancer' | 'direct'): CpuSample {
  const server = `${state.balancer.host}:${state.balancer.port}`;
  const pids = [state.balancer.pid, ...state.nodes.map((node) => node.pid)];
  return runLoadWithCpu(server, pids, {
    ops,
    concurrency,
    warmupOps: 20_000,
    extraArgs: ['--routing', routing],
  });
}

function cpuRow(label: string, sample: CpuSample): string {
  const [balancer = 0, ...nodes] = sample.cpuUsPerOp;
  const nodesTotal = nodes.reduce((sum, us) => sum + us, 0);
  const total = balancer + nodesTotal + sample.loadCpuUsPerOp;
  return `${row(label, sample.report)}   cpu µs/op: balancer ${balancer.toFixed(1)}, nodes ${nodesTotal.toFixed(1)} (${nodes.map((us) => us.toFixed(1)).join(' / ')}), load ${sample.loadCpuUsPerOp.toFixed(1)}, total ${total.toFixed(1)}`;
}

if (routingFlag !== 'balancer') {
  for (const engine of engines) {
    const root = mkdtempSync(join(tmpdir(), `dstore-bench-${engine}-`));
    try {
      const state = await startCluster({ root, engine, nodes: 3, replicationFactor: 1 });
      const modes = routingFlag === 'both' ? (['balancer', 'direct'] as const) : (['direct'] as const);
      const samples = new Map<string, CpuSample>();
      for (const mode of modes) {
        const sample = benchRouting(state, mode);
        samples.set(mode, sample);
        console.log(
          cpuRow(
            `${engine}: ${mode === 'direct' ? 'client -> 3 nodes (direct)' : 'client -> balancer -> 3 nodes'}`,
            sample,
          ),
        );
      }
      const viaBalancer = samples.get('balancer');
      const direct = samples.get('direct');
      if (viaBalancer !== undefined && direct !== undefined) {
        console.log(
          `${engine}: ratio direct/balancer = ${(direct.report.throughput / viaBalancer.report.throughput).toFixed(2)}`,
        );
      }
    } finally {
      await stopCluster(root);
      rmSync(root, { recursive: true, force: true });
    }
  }
  process.exit(0);
}

for (const engine of engines) {
  const viaBalancer = await benchCluster(engine, 3, (state) => state.balancer);
  // The direct baseline is a node that owns every key: a cluster node refuses (NOT_OWNER) the
  // keys the ring gives to the others, so it is the only node of its own cluster.
  const baseline = await benchCluster(engine, 1, (state) => state.nodes[0]!);
  console.log(row(`${engine}: client -> balancer -> 3 nodes`, viaBalancer));
  console.log(row(`${engine}: client -> 1 node (baseline)`, baseline));
  console.log(
    `${engine}: ratio balancer/direct = ${(viaBalancer.throughput / baseline.throughput).toFixed(2)}`,
  );
}

const missing = missingPeerTools(['redis-server', 'redis-cli', 'redis-benchmark', 'nutcracker']);
if (missing.length === 0) {
  // The C client redis-benchmark (-c 1 -P 50: one connection, 50 in flight) against twemproxy in
  // front of 3 Redis servers, and against one Redis without the proxy.
  const dir = mkdtempSync(join(tmpdir(), 'dstore-bench-twemproxy-'));
  const twemproxy = await startTwemproxy(dir);
  try {
    const redisBenchmark = (port: number) =>
      spawnSync(
        'redis-benchmark',
        [
          '-h',
          '127.0.0.1',
          '-p',
          String(port),
          '-c',
          '1',
          '-P',
          '50',
          '-d',
          '100',
          '-n',
          ops,
          '-r',
          '10000',
        ].concat(['-t', 'set,get', '-q']),
        { encoding: 'utf8' },
      )
        .stdout.split(/[\r\n]/)
        .filter((line) => line.includes('requests per second'))
        .join('\n');
    console.log(
      `\nreference on this machine: redis-benchmark -c 1 -P 50 -d 100 -n ${ops} -r 10000 -t set,get`,
    );
    console.log(`twemproxy + 3 redis:\n${redisBenchmark(twemproxy.endpoints[0]!.port)}`);
    console.log(`one redis, no proxy:\n${redisBenchmark(twemproxy.processes[1]!.port)}`);
  } finally {
    await stopPeers(twemproxy.processes);
    rmSync(dir, { recursive: true, force: true });
  }
} else {
  console.log(
    `\n(twemproxy + Redis reference skipped: ${missing.join(', ')} missing; apt-get install -y ${PEER_PACKAGES})`,
  );
}
