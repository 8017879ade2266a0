/**
 * `bench:peers` (issue #13): dstore side by side with its peers, in ONE run, on the same machine
 * and the same workload from the same load code (peers-load.ts):
 *
 * - **twemproxy**: nutcracker in front of 3 Redis servers, driven by ioredis;
 * - **redis-cluster**: a 3-master Redis Cluster, driven by ioredis.Cluster;
 * - **dstore**: a balancer + 3 memory nodes (this checkout's CLIs), driven by @dstore/client;
 * - **dstore-direct**: the same cluster, @dstore/client with `routing: 'direct'`, when this client
 *   has it (otherwise the row says "not available");
 * - **dstore RESP port**: the same cluster with `--resp-port`, driven by ioredis with the options
 *   used against twemproxy (issue #15: ioredis against the RESP port next to ioredis through
 *   twemproxy).
 *
 * The workload (the issue's): closed loop, one connection per server, `concurrency` requests in
 * flight per load process, `ops/2` SETs then `ops/2` GETs of 100-byte values over 10,000 keys;
 * every key is written once and a warm-up runs before the measured load (300,000 ops by default:
 * the Node processes reach their steady state only after V8 has optimised the hot paths, which
 * took ~150,000 ops of this workload on the 2-core machine, see BENCHMARKS.md "Steady state"; the
 * C servers need none and get the same). For each system:
 * ops/s, p50/p99/p999 (client side), and CPU µs per op of every server process and of the load
 * process(es) (utime + stime from /proc/<pid>/stat around the measured load, all threads), then
 * the ratios of dstore to each peer. Systems are interleaved per round; medians over rounds.
 *
 * Redis, redis-cli and nutcracker come from Debian: `apt-get install -y redis-server redis-tools
 * nutcracker`. Missing ones are named and their peers skipped.
 *
 *   pnpm build && pnpm --filter @dstore/examples bench:peers
 *   pnpm --filter @dstore/examples bench:peers -- --concurrency 200 --clients 3 --routing balancer
 *
 * Flags (or env): --ops (DSTORE_PEERS_OPS, 200000: half SET, half GET), --concurrency
 * (DSTORE_PEERS_CONCURRENCY, 50), --clients (DSTORE_PEERS_CLIENTS, 1 load process; with more, each
 * runs ops/clients with its own connections and `concurrency` in flight), --rounds
 * (DSTORE_PEERS_ROUNDS, 3), --warmup (DSTORE_PEERS_WARMUP_OPS, 300000 per load process), --systems
 * (DSTORE_PEERS_SYSTEMS, twemproxy,redis-cluster,dstore), --routing (DSTORE_PEERS_ROUTING,
 * balancer,direct,resp: which dstore rows; resp = the RESP port driven by ioredis), --dist-root (DSTORE_PEERS_DIST_ROOT: another built checkout
 * whose dstore CLIs to run), --baseline-root (DSTORE_PEERS_BASELINE_ROOT: one more row, "dstore
 * (baseline build)", with the server CLIs of that built checkout, e.g. the commit before an
 * optimisation; the load is the same @dstore/client; with direct routing also "dstore direct (baseline
 * build)"; then the ratios of this build to the baseline build, with the storage nodes' CPU per
 * request served, the sum of the nodes' CPU per op since each op is served by one node, and their
 * write syscalls per request served, from /proc/<pid>/io). Linux only (/proc).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { CLK_TCK, cpuSeconds, median, scriptArgs, writeSyscalls } from './bench-load.js';
import { startCluster, stopCluster } from './cluster.js';
import { type Driver, directRoutingAvailable, type LoadConfig, type LoadResult } from './peers-load.js';
import {
  freePort,
  missingPeerTools,
  PEER_PACKAGES,
  type PeerProcess,
  type PeerSystem,
  startRedisCluster,
  startTwemproxy,
  stopPeers,
} from './redis-peers.js';

const { values: flags } = parseArgs({
  args: scriptArgs(),
  options: {
    ops: { type: 'string' },
    concurrency: { type: 'string' },
    clients: { type: 'string' },
    rounds: { type: 'string' },
    warmup: { type: 'string' },
    systems: { type: 'string' },
    routing: { type: 'string' },
    'dist-root': { type: 'string' },
    'baseline-root': { type: 'string' },
  },
});
const env = process.env;
const OPS = Number(flags.ops ?? env.DSTORE_PEERS_OPS ?? 200_000);
const CONCURRENCY = Number(flags.concurrency ?? env.DSTORE_PEERS_CONCURRENCY ?? 50);
const CLIENTS = Number(flags.clients ?? env.DSTORE_PEERS_CLIENTS ?? 1);
const ROUNDS = Number(flags.rounds ?? env.DSTORE_PEERS_ROUNDS ?? 3);
const WARMUP = Number(flags.warmup ?? env.DSTORE_PEERS_WARMUP_OPS ?? 300_000);
const SYSTEMS = (flags.systems ?? env.DSTORE_PEERS_SYSTEMS ?? 'twemproxy,redis-cluster,dstore').split(',');
const ROUTING = (flags.routing ?? env.DSTORE_PEERS_ROUTING ?? 'balancer,direct,resp').split(',');
const DIST_ROOT = flags['dist-root'] ?? env.DSTORE_PEERS_DIST_ROOT;
const BASELINE_ROOT = flags['baseline-root'] ?? env.DSTORE_PEERS_BASELINE_ROOT;

/** One row of the comparison: a system, how the load reaches it, and how it is started. */
interface Contender {
  readonly label: string;
  readonly driver: Driver;
  readonly start: (dir: string) => Promise<RunningSystem>;
}

interface RunningSystem {
  readonly processes: { readonly name: string; readonly pid: number }[];
  readonly endpoints: { readonly host: string; readonly port: number }[];
  readonly stop: () => Promise<void>;
}

interface Sample {
  readonly throughput: number;
  readonly p50Us: number;
  readonly p99Us: number;
  readonly p999Us: number;
  readonly errors: number;
  /** CPU µs per op of each server process, in the system's process order. */
  readonly serverUs: number[];
  /** Write syscalls of each server process per op (Linux /proc/<pid>/io), in the same order. */
  readonly serverWrites: number[];
  /** CPU µs per op of the load process(es), all together. */
  readonly loadUs: number;
}

function fromPeer(system: PeerSystem): RunningSystem {
  return {
    processes: system.processes.map((proc: PeerProcess) => ({ name: proc.name, pid: proc.pid })),
    endpoints: system.endpoints,
    stop: () => stopPeers(system.processes),
  };
}

/**
 * A balancer + 3 memory nodes; the load connects to the native port, or with `resp` to the
 * balancer's RESP port (`--resp-port`).
 */
async function startDstore(dir: string, distRoot = DIST_ROOT, resp = false): Promise<RunningSystem> {
  const root = join(dir, 'dstore');
  const respPort = resp ? await freePort() : undefined;
  const state = await startCluster({
    root,
    engine: 'memory',
    nodes: 3,
    // One copy per key, as the Redis setups it is compared with keep.
    replicationFactor: 1,
    ...(distRoot === undefined ? {} : { distRoot }),
    ...(respPort === undefined ? {} : { balancerArgs: ['--resp-port', String(respPort)] }),
  });
  return {
    processes: [state.balancer, ...state.nodes].map((proc) => ({ name: proc.id, pid: proc.pid })),
    endpoints: [{ host: state.balancer.host, port: respPort ?? state.balancer.port }],
    stop: async () => void (await stopCluster(root)),
  };
}

const contenders: Contender[] = [];
const skipped: string[] = [];
const missing = missingPeerTools(['redis-server', 'redis-cli', 'nutcracker']);
if (missing.length > 0)
  console.log(
    `missing: ${missing.join(', ')} (apt-get install -y ${PEER_PACKAGES}); their peers are skipped`,
  );
if (SYSTEMS.includes('twemproxy')) {
  if (missing.some((tool) => tool === 'redis-server' || tool === 'redis-cli' || tool === 'nutcracker'))
    skipped.push('twemproxy + 3 Redis: needs redis-server, redis-cli and nutcracker');
  else
    contenders.push({
      label: 'twemproxy + 3 Redis (ioredis)',
      driver: 'ioredis',
      start: async (dir) => fromPeer(await startTwemproxy(dir)),
    });
}
if (SYSTEMS.includes('redis-cluster')) {
  if (missing.some((tool) => tool === 'redis-server' || tool === 'redis-cli'))
    skipped.push('Redis Cluster: needs redis-server and redis-cli');
  else
    contenders.push({
      label: 'Redis Cluster 3 masters (ioredis.Cluster)',
      driver: 'ioredis-cluster',
      start: async (dir) => fromPeer(await startRedisCluster(dir)),
    });
}
if (SYSTEMS.includes('dstore')) {
  if (ROUTING.includes('balancer'))
    contenders.push({
      label: 'dstore: balancer + 3 memory nodes',
      driver: 'dstore',
      start: (dir) => startDstore(dir),
    });
  if (BASELINE_ROOT !== undefined && ROUTING.includes('balancer'))
    contenders.push({
      label: 'dstore (baseline build): balancer + 3 memory nodes',
      driver: 'dstore',
      start: (dir) => startDstore(join(dir, 'baseline'), BASELINE_ROOT),
    });
  if (ROUTING.includes('direct')) {
    if (directRoutingAvailable())
      contenders.push({
        label: 'dstore direct (routing: direct)',
        driver: 'dstore-direct',
        start: (dir) => startDstore(dir),
      });
    else skipped.push("dstore direct: not available (this @dstore/client has no routing: 'direct')");
    if (BASELINE_ROOT !== undefined && directRoutingAvailable())
      contenders.push({
        label: 'dstore direct (baseline build)',
        driver: 'dstore-direct',
        start: (dir) => startDstore(join(dir, 'baseline'), BASELINE_ROOT),
      });
  }
  if (ROUTING.includes('resp'))
    contenders.push({
      // The same ioredis options and load as against twemproxy: only the server side differs.
      label: 'dstore RESP port: balancer + 3 memory nodes (ioredis)',
      driver: 'ioredis',
      start: (dir) => startDstore(dir, DIST_ROOT, true),
    });
}

/** Starts `CLIENTS` load processes, lets them warm up, runs the measured load, reads the CPU. */
async function measure(contender: Contender, system: RunningSystem): Promise<Sample> {
  const children: { child: ChildProcess; lines: AsyncIterator<string> }[] = [];
  try {
    for (let i = 0; i < CLIENTS; i++) {
      const config: LoadConfig = {
        driver: contender.driver,
        endpoints: system.endpoints,
        sets: Math.floor(OPS / CLIENTS / 2),
        gets: Math.floor(OPS / CLIENTS / 2),
        concurrency: CONCURRENCY,
        valueSize: 100,
        keyspace: 10_000,
        warmupOps: WARMUP,
        seed: 1 + i,
      };
      const child = spawn(
        process.execPath,
        [...process.execArgv, join(import.meta.dirname, 'peers-load.ts'), JSON.stringify(config)],
        { stdio: ['pipe', 'pipe', 'inherit'] },
      );
      children.push({ child, lines: createInterface({ input: child.stdout! })[Symbol.asyncIterator]() });
    }
    const nextLine = async (entry: (typeof children)[number]): Promise<string> => {
      const line = await entry.lines.next();
      if (line.done)
        throw new Error(`load process of ${contender.label} ended early (exit ${entry.child.exitCode})`);
      return line.value;
    };
    for (const entry of children) await nextLine(entry); // {"event":"ready"}
    const pids = system.processes.map((proc) => proc.pid);
    const before = pids.map(cpuSeconds);
    const writesBefore = pids.map(writeSyscalls);
    const start = performance.now();
    for (const entry of children) entry.child.stdin!.write('go\n');
    const results = await Promise.all(
      children.map(async (entry) => JSON.parse(await nextLine(entry)) as LoadResult),
    );
    const wallS = (performance.now() - start) / 1000;
    const after = pids.map(cpuSeconds);
    const writesAfter = pids.map(writeSyscalls);
    const ops = results.reduce((sum, r) => sum + r.ops, 0);
    const perOp = (seconds: number) => (seconds * 1e6) / ops;
    for (const r of results)
      if (r.firstError !== undefined)
        console.log(`  (${contender.label}: ${r.errors} errors, first: ${r.firstError})`);
    return {
      // With several load processes: all their ops over the wall time from "go" to the last one.
      throughput: ops / (CLIENTS === 1 ? results[0]!.durationS : wallS),
      p50Us: median(results.map((r) => r.latency.p50Us)),
      // The worst load process's tail (histograms of separate processes are not merged).
      p99Us: Math.max(...results.map((r) => r.latency.p99Us)),
      p999Us: Math.max(...results.map((r) => r.latency.p999Us)),
      errors: results.reduce((sum, r) => sum + r.errors, 0),
      serverUs: pids.map((_, i) => perOp(after[i]! - before[i]!)),
      serverWrites: pids.map((_, i) => (writesAfter[i]! - writesBefore[i]!) / ops),
      loadUs: perOp(results.reduce((sum, r) => sum + r.cpuS, 0)),
    };
  } finally {
    await Promise.all(
      children.map(
        (entry) =>
          new Promise<void>((resolve) => {
            if (entry.child.exitCode !== null || entry.child.signalCode !== null) return resolve();
            entry.child.once('exit', () => resolve());
            entry.child.stdin!.end();
            setTimeout(() => entry.child.kill('SIGKILL'), 10_000).unref();
          }),
      ),
    );
  }
}

const fixed = (n: number) => n.toFixed(1);
const ms = (us: number) => (us / 1000).toFixed(2);
const sum = (values: readonly number[]) => values.reduce((a, b) => a + b, 0);

console.log(
  `bench:peers: ${OPS} ops per round (${OPS / 2} SET then ${OPS / 2} GET), ${CONCURRENCY} in flight per load ` +
    `process, ${CLIENTS} load process${CLIENTS === 1 ? '' : 'es'}, 100-byte values, 10,000 keys uniform, ` +
    `${ROUNDS} interleaved round${ROUNDS === 1 ? '' : 's'}, ${WARMUP}-op warm-up; CLK_TCK ${CLK_TCK}; ` +
    'dstore with --replication-factor 1 (one copy per key, as the Redis setups)',
);
for (const line of skipped) console.log(`skipped: ${line}`);

const work = mkdtempSync(join(tmpdir(), 'dstore-bench-peers-'));
const samples = new Map<string, Sample[]>();
const processNames = new Map<string, string[]>();
const running: RunningSystem[] = [];
const stopAll = async () => {
  for (const system of running.splice(0)) await system.stop();
};
process.once('SIGINT', () => void stopAll().finally(() => process.exit(130)));
try {
  console.log(
    '\n| round | system | ops/s | p50 ms | p99 ms | p999 ms | errors | CPU µs/op per server process | servers | load | total |',
  );
  console.log('|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|');
  for (let round = 1; round <= ROUNDS; round++) {
    for (const contender of contenders) {
      // A fresh system per round and contender: no state, no warm caches carried over.
      const dir = join(work, `${round}-${contenders.indexOf(contender)}`);
      const system = await contender.start(dir);
      running.push(system);
      try {
        const sample = await measure(contender, system);
        samples.set(contender.label, [...(samples.get(contender.label) ?? []), sample]);
        processNames.set(
          contender.label,
          system.processes.map((proc) => proc.name),
        );
        const perProcess = system.processes
          .map((proc, i) => `${proc.name} ${fixed(sample.serverUs[i]!)}`)
          .join(', ');
        console.log(
          `| ${round} | ${contender.label} | ${Math.round(sample.throughput)} | ${ms(sample.p50Us)} | ${ms(sample.p99Us)} | ` +
            `${ms(sample.p999Us)} | ${sample.errors} | ${perProcess} | ${fixed(sum(sample.serverUs))} | ` +
            `${fixed(sample.loadUs)} | ${fixed(sum(sample.serverUs) + sample.loadUs)} |`,
        );
      } finally {
        await system.stop();
        running.splice(running.indexOf(system), 1);
      }
    }
  }
} finally {
  await stopAll();
  rmSync(work, { recursive: true, force: true });
}

interface Summary {
  readonly label: string;
  readonly throughput: number;
  readonly p99Us: number;
  readonly serversUs: number;
  /** The storage nodes' CPU per op, all together: each op is served by one node, so per request served. */
  readonly nodesUs: number;
  /** The storage nodes' write syscalls per op, all together (per request served). */
  readonly nodeWrites: number;
  readonly loadUs: number;
  readonly totalUs: number;
}

console.log(`\nMedians over ${ROUNDS} round${ROUNDS === 1 ? '' : 's'} (each column its own median):\n`);
console.log(
  '| system | ops/s | p50 ms | p99 ms | p999 ms | errors | CPU µs/op per server process | servers | load | total |',
);
console.log('|---|---:|---:|---:|---:|---:|---|---:|---:|---:|');
const summaries: Summary[] = [];
for (const contender of contenders) {
  const list = samples.get(contender.label) ?? [];
  if (list.length === 0) continue;
  const pick = (f: (s: Sample) => number) => median(list.map(f));
  const names = processNames.get(contender.label) ?? [];
  const perProcess = names.map((name, i) => `${name} ${fixed(pick((s) => s.serverUs[i]!))}`).join(', ');
  const summary: Summary = {
    label: contender.label,
    throughput: pick((s) => s.throughput),
    p99Us: pick((s) => s.p99Us),
    serversUs: pick((s) => sum(s.serverUs)),
    nodesUs: pick((s) => sum(s.serverUs.filter((_, i) => names[i]?.startsWith('node') === true))),
    nodeWrites: pick((s) => sum(s.serverWrites.filter((_, i) => names[i]?.startsWith('node') === true))),
    loadUs: pick((s) => s.loadUs),
    totalUs: pick((s) => sum(s.serverUs) + s.loadUs),
  };
  summaries.push(summary);
  console.log(
    `| ${contender.label} | ${Math.round(summary.throughput)} | ${ms(pick((s) => s.p50Us))} | ${ms(summary.p99Us)} | ` +
      `${ms(pick((s) => s.p999Us))} | ${sum(list.map((s) => s.errors))} | ${perProcess} | ${fixed(summary.serversUs)} | ` +
      `${fixed(summary.loadUs)} | ${fixed(summary.totalUs)} |`,
  );
}
for (const line of skipped) console.log(`| ${line} | | | | | | | | | |`);

const ours = summaries.filter((s) => s.label.startsWith('dstore'));
const peers = summaries.filter((s) => !s.label.startsWith('dstore'));
if (ours.length > 0 && peers.length > 0) {
  console.log('\nRatios (dstore / peer, medians; ops/s higher is better, CPU and p99 lower is better):\n');
  console.log('| dstore | peer | ops/s | p99 | server CPU/op | total CPU/op |');
  console.log('|---|---|---:|---:|---:|---:|');
  for (const our of ours) {
    for (const peer of peers) {
      const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}x`;
      console.log(
        `| ${our.label} | ${peer.label} | ${ratio(our.throughput, peer.throughput)} | ${ratio(our.p99Us, peer.p99Us)} | ` +
          `${ratio(our.serversUs, peer.serversUs)} | ${ratio(our.totalUs, peer.totalUs)} |`,
      );
    }
  }
}

const baselines = ours.filter((s) => s.label.includes('(baseline build)'));
if (baselines.length > 0) {
  console.log('\nThis build / the baseline build (same run, medians; lower CPU is better):\n');
  console.log(
    '| this build | ops/s | p99 | node CPU µs per request served (this / baseline) | nodes | node writes per request (this / baseline) | server CPU/op | total CPU/op |',
  );
  console.log('|---|---:|---:|---|---:|---|---:|---:|');
  for (const baseline of baselines) {
    const label = baseline.label.startsWith('dstore direct')
      ? 'dstore direct (routing: direct)'
      : 'dstore: balancer + 3 memory nodes';
    const our = ours.find((s) => s.label === label);
    if (our === undefined) continue;
    const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}x`;
    console.log(
      `| ${our.label} | ${ratio(our.throughput, baseline.throughput)} | ${ratio(our.p99Us, baseline.p99Us)} | ` +
        `${fixed(our.nodesUs)} / ${fixed(baseline.nodesUs)} | ${ratio(our.nodesUs, baseline.nodesUs)} | ` +
        `${our.nodeWrites.toFixed(2)} / ${baseline.nodeWrites.toFixed(2)} | ` +
        `${ratio(our.serversUs, baseline.serversUs)} | ${ratio(our.totalUs, baseline.totalUs)} |`,
    );
  }
}
