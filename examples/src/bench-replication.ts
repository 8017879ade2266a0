/**
 * `bench:replication`: throughput, latency and server CPU per op with replication factor 1, 2 and
 * 3 in ONE run (issue #14's benchmark). For
 * each engine, round and factor, a cluster (balancer + 3 nodes, this workspace's CLIs; the
 * balancer with `--replication-factor N`) is started, loaded
 * through the balancer with `dstore bench --ops 100000 --concurrency 50 --value-size 100
 * --read-ratio 0.5 --keyspace 10000` after a warm-up load, and stopped; factors interleave within
 * a round, because on a shared machine only figures from the same run compare. CPU: user + system
 * time of every server process (Linux /proc) around the measured load, per completed op.
 *
 * Then (unless DSTORE_BENCH_FAILOVER=0), per engine and round, the failover and catch-up: balancer
 * + 5 nodes, factor 3, one node SIGKILLed (time until every key is served again), then restarted
 * under its id (time until it is `syncing`, then `up` again, and the keys copied to it per second).
 *
 * Run: `pnpm build && pnpm --filter @dstore/examples bench:replication`.
 * Env: DSTORE_BENCH_ROUNDS (3), DSTORE_BENCH_OPS (100000), DSTORE_BENCH_CONCURRENCY (50),
 * DSTORE_BENCH_READ_RATIO (0.5; 0 for writes only), DSTORE_BENCH_NODE_ARGS (more options of every
 * node, space-separated: `--max-memory 16m --eviction allkeys-lru` measures replicated eviction),
 * DSTORE_BENCH_KEYSPACE (10000; 1000000 with a small cap keeps the nodes evicting),
 * DSTORE_BENCH_WARMUP_OPS (300000 for memory, 20000 for lmdb: a memory cluster reaches its steady
 * state only after V8 has optimised it, ~150,000 ops, and a shorter warm-up flatters factor 3, see
 * BENCHMARKS.md "Steady state"; an lmdb write's cost is its commit and fsync, and 300,000 of them
 * would take minutes per factor), DSTORE_BENCH_ENGINES (memory,lmdb), DSTORE_BENCH_FACTORS (1,2,3),
 * DSTORE_BENCH_BASELINE_ROOT (another built checkout: each round measures its CLIs too, right
 * before this workspace's, so an A/B of two builds comes from one run on one machine state; the
 * failover table too), DSTORE_BENCH_LOAD (0: only the failover table), DSTORE_BENCH_RECOVERY_KEYS
 * (30000: keys written before the failover's kill), DSTORE_BENCH_KEEP (1: keep each failover run's
 * folder, with the processes' logs, and print its path), DSTORE_BENCH_FAILOVER_ENGINES (the failover
 * table's engines, default DSTORE_BENCH_ENGINES; `lmdb-empty`: lmdb with the victim's data dir
 * deleted before its restart, a full copy).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, type DstoreClient } from '@dstore/client';
import { HashRing } from '@dstore/hashring';
import { type BenchJson, CLK_TCK, cpuSeconds, errorCount, median, runLoadWithCpu } from './bench-load.js';
import { adminJson, type ClusterProcess, sleep, startCluster, startNode, stopCluster } from './cluster.js';

type Engine = 'memory' | 'lmdb';
/**
 * The failover table's engines: `lmdb-empty` is lmdb with the victim's data dir deleted before it
 * is restarted (the full copy an lmdb member gets without its data, against which copying only
 * the difference is measured).
 */
type FailoverEngine = Engine | 'lmdb-empty';

interface Sample {
  readonly report: BenchJson;
  /** CPU µs per completed op of the balancer and the nodes together. */
  readonly serversUsPerOp: number;
  /** CPU µs per completed op of the nodes alone. */
  readonly nodesUsPerOp: number;
  /** Write syscalls per completed op of the nodes alone (NaN without /proc/<pid>/io). */
  readonly nodesWritesPerOp: number;
  /**
   * Entries per REPLICATE the nodes sent over the cluster's life (preload and warm-up included;
   * STATS `replication.entries_sent / batches_sent`); NaN when none was sent (factor 1).
   */
  readonly entriesPerReplicate: number;
}

const ROUNDS = Number(process.env.DSTORE_BENCH_ROUNDS ?? 3);
const OPS = process.env.DSTORE_BENCH_OPS ?? '100000';
const CONCURRENCY = process.env.DSTORE_BENCH_CONCURRENCY ?? '50';
/** Share of reads of the load (0: writes only, the issue's "CPU per write"). */
const READ_RATIO = Number(process.env.DSTORE_BENCH_READ_RATIO ?? '0.5');
const NODE_ARGS = (process.env.DSTORE_BENCH_NODE_ARGS ?? '').split(' ').filter((arg) => arg !== '');
/** `dstore bench` options after the defaults (a later option wins): the keyspace, without a preload past the default's. */
const KEYSPACE_ARGS =
  process.env.DSTORE_BENCH_KEYSPACE === undefined
    ? []
    : ['--keyspace', process.env.DSTORE_BENCH_KEYSPACE, '--preload', '10000'];
/** Unmeasured ops before each measured load, per engine (see the header for the defaults). */
const WARMUP_OPS: Record<Engine, number> = {
  memory: Number(process.env.DSTORE_BENCH_WARMUP_OPS ?? 300_000),
  lmdb: Number(process.env.DSTORE_BENCH_WARMUP_OPS ?? 20_000),
};
const ENGINES = (process.env.DSTORE_BENCH_ENGINES ?? 'memory,lmdb').split(',') as Engine[];
const FAILOVER_ENGINES = (process.env.DSTORE_BENCH_FAILOVER_ENGINES ?? ENGINES.join(',')).split(
  ',',
) as FailoverEngine[];
const FACTORS = (process.env.DSTORE_BENCH_FACTORS ?? '1,2,3').split(',').map(Number);
/** A built checkout to compare against in the same run (`cliPath`'s distRoot), or undefined. */
const BASELINE_ROOT = process.env.DSTORE_BENCH_BASELINE_ROOT;
/** The builds measured: the baseline's CLIs (when given), then this workspace's. */
const BUILDS: readonly { readonly label: string; readonly distRoot: string | undefined }[] = [
  ...(BASELINE_ROOT === undefined ? [] : [{ label: 'base', distRoot: BASELINE_ROOT }]),
  { label: BASELINE_ROOT === undefined ? '' : 'this', distRoot: undefined },
];
/** Measure the load with each factor (0 to skip: the failover table alone). */
const LOAD = process.env.DSTORE_BENCH_LOAD !== '0';
/** Measure the failover too (0 to skip): SIGKILL of one node of 5, factor 3. */
const FAILOVER = process.env.DSTORE_BENCH_FAILOVER !== '0';
/** Keys written before the kill and then written and read until each succeeds again. */
const FAILOVER_KEYS = 300;
/** A key not served again within this long counts as never (the run is bounded). */
const FAILOVER_GIVE_UP_MS = 60_000;
/**
 * More keys written before the kill (100-byte values), so that the victim's catch-up copies some
 * (DSTORE_BENCH_RECOVERY_KEYS: the larger, the more a copy of only the difference saves).
 */
const RECOVERY_FILLER_KEYS = Number(process.env.DSTORE_BENCH_RECOVERY_KEYS ?? 30_000);
/** Keep each failover run's folder (data, logs) and print its path (DSTORE_BENCH_KEEP=1): profiling. */
const KEEP = process.env.DSTORE_BENCH_KEEP === '1';
/** A restarted member not `up` again within this long: the recovery is reported as not done. */
const RECOVERY_GIVE_UP_MS = 120_000;

async function measure(engine: Engine, factor: number, distRoot: string | undefined): Promise<Sample> {
  const root = mkdtempSync(join(tmpdir(), `dstore-bench-replication-${engine}-${factor}-`));
  try {
    const state = await startCluster({
      root,
      engine,
      replicationFactor: factor,
      nodeArgs: NODE_ARGS,
      ...(distRoot === undefined ? {} : { distRoot }),
    });
    const servers: ClusterProcess[] = [state.balancer, ...state.nodes];
    const { report, cpuUsPerOp, writesPerOp } = runLoadWithCpu(
      `${state.balancer.host}:${state.balancer.port}`,
      servers.map((proc) => proc.pid),
      {
        concurrency: CONCURRENCY,
        ops: OPS,
        warmupOps: WARMUP_OPS[engine],
        readRatio: READ_RATIO,
        extraArgs: KEYSPACE_ARGS,
      },
    );
    const serversUsPerOp = cpuUsPerOp.reduce((sum, us) => sum + us, 0);
    return {
      report,
      serversUsPerOp,
      nodesUsPerOp: serversUsPerOp - (cpuUsPerOp[0] ?? 0),
      nodesWritesPerOp: writesPerOp.slice(1).reduce((sum, writes) => sum + writes, 0),
      entriesPerReplicate: await entriesPerReplicate(state.balancer),
    };
  } finally {
    await stopCluster(root);
    rmSync(root, { recursive: true, force: true });
  }
}

/**
 * Entries per REPLICATE summed over the nodes, from the balancer's STATS (`node.<id>.replication.*`),
 * or NaN when none was sent; a build whose nodes predate the counters gives NaN too.
 */
async function entriesPerReplicate(balancer: ClusterProcess): Promise<number> {
  const client = createClient({ host: balancer.host, port: balancer.port, commandTimeout: 5000 });
  try {
    const stats = await client.stats();
    let entries = 0;
    let batches = 0;
    for (const [name, value] of Object.entries(stats)) {
      if (name.endsWith('.replication.entries_sent')) entries += Number(value);
      else if (name.endsWith('.replication.batches_sent')) batches += Number(value);
    }
    return batches > 0 ? entries / batches : Number.NaN;
  } finally {
    await client.close();
  }
}

/** Time from the kill until `operation` succeeds (attempts 20 ms apart), or undefined after the give-up time. */
async function untilServed(operation: () => Promise<unknown>, killedAt: number): Promise<number | undefined> {
  while (performance.now() - killedAt < FAILOVER_GIVE_UP_MS) {
    try {
      await operation();
      return performance.now() - killedAt;
    } catch {
      await sleep(20);
    }
  }
  return undefined;
}

interface FailoverSample {
  /** Keys whose chain held the victim (on the ring at the kill). */
  readonly affected: number;
  readonly writableMedianMs: number;
  readonly writableMaxMs: number;
  /** The other keys: the slowest until written again (a failure must not hold them back). */
  readonly othersMaxMs: number;
  readonly readableMaxMs: number;
  /** Keys not served again within the give-up time. */
  readonly never: number;
  /** The victim restarted (same id; lmdb on its data dir, memory empty): until `syncing`, ms. */
  readonly syncingAfterMs: number | undefined;
  /** Until `up` again (caught up and promoted), ms from the restart. */
  readonly upAfterMs: number | undefined;
  /** Keys copied to it by its sync. */
  readonly keysCopied: number;
  /** Keys copied per second, from `syncing` to `up`. */
  readonly keysPerSecond: number;
  /**
   * CPU ms (user + system) of the balancer and the nodes from the restart to up: the catch-up's
   * work, which a loaded machine does not change as it changes the wall-clock times.
   */
  readonly cpuMs: number;
}

/** The part of `/ring` the recovery measurement reads. */
interface RingReplication {
  readonly nodes: readonly { readonly id: string; readonly replicaState?: string }[];
  readonly replication?: { readonly syncKeysTotal?: number };
}

/**
 * Issue #14's "time from a SIGKILL to the affected keys being writable again": balancer + 5
 * nodes, factor 3, the balancer's default failure timeout and lease; FAILOVER_KEYS keys written,
 * one node SIGKILLed, then every key written (and read) until it succeeds, attempts 20 ms apart
 * (each bounded by a 1 s command deadline). Keys whose chains did not hold the victim succeed at
 * once; the others once the map's writer marked the victim failed and the survivors re-routed.
 */
/** The victim started again by {@link measureRecovery}: not in the cluster's state file, stopped by the caller. */
let restarted: ClusterProcess | undefined;

/**
 * Issue #14's catch-up: the SIGKILLed member (already marked failed) is started again under its
 * id (lmdb on its data dir, memory empty); the times until the map's writer makes it `syncing` and
 * until it is `up` again, and the keys copied to it (`/ring` `replication.syncKeysTotal`).
 */
async function measureRecovery(
  state: Awaited<ReturnType<typeof startCluster>>,
  victim: ClusterProcess,
  engine: FailoverEngine,
  distRoot: string | undefined,
): Promise<Pick<FailoverSample, 'syncingAfterMs' | 'upAfterMs' | 'keysCopied' | 'keysPerSecond' | 'cpuMs'>> {
  const ring = () => adminJson<RingReplication>(state, '/ring');
  const stateOf = async (): Promise<string | undefined> =>
    (await ring()).nodes.find((node) => node.id === victim.id)?.replicaState;
  const before = (await ring()).replication?.syncKeysTotal ?? 0;
  // CPU of the servers from the restart to up (the catch-up's work, whatever else runs on the
  // machine): the balancer and the survivors, then the restarted node's whole life.
  const survivors = [state.balancer, ...state.nodes.filter((node) => node.id !== victim.id)];
  const cpuOf = (pids: readonly number[]) => pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
  const cpuBefore = cpuOf(survivors.map((server) => server.pid));
  if (engine === 'lmdb-empty' && victim.dataDir !== undefined)
    rmSync(victim.dataDir, { recursive: true, force: true });
  const startedAt = performance.now();
  restarted = await startNode(state, victim.id, {
    engine: engine === 'lmdb-empty' ? 'lmdb' : engine,
    ...(distRoot === undefined ? {} : { distRoot }),
  });
  let syncingAt: number | undefined;
  let upAt: number | undefined;
  while (upAt === undefined && performance.now() - startedAt < RECOVERY_GIVE_UP_MS) {
    const current = await stateOf();
    if (syncingAt === undefined && (current === 'syncing' || current === 'promoting'))
      syncingAt = performance.now();
    if (current === 'up') upAt = performance.now();
    else await sleep(20);
  }
  const cpuMs = (cpuOf([...survivors.map((server) => server.pid), restarted.pid]) - cpuBefore) * 1000;
  const keysCopied = ((await ring()).replication?.syncKeysTotal ?? 0) - before;
  const copying = upAt !== undefined && syncingAt !== undefined ? (upAt - syncingAt) / 1000 : 0;
  return {
    syncingAfterMs: syncingAt === undefined ? undefined : syncingAt - startedAt,
    upAfterMs: upAt === undefined ? undefined : upAt - startedAt,
    keysCopied,
    keysPerSecond: copying > 0 ? keysCopied / copying : 0,
    cpuMs,
  };
}

async function measureFailover(
  engine: FailoverEngine,
  distRoot: string | undefined,
): Promise<FailoverSample> {
  const root = mkdtempSync(join(tmpdir(), `dstore-bench-failover-${engine}-`));
  let client: DstoreClient | undefined;
  let seeder: DstoreClient | undefined;
  try {
    const state = await startCluster({
      root,
      engine: engine === 'lmdb-empty' ? 'lmdb' : engine,
      nodes: 5,
      replicationFactor: 3,
      ...(distRoot === undefined ? {} : { distRoot }),
    });
    client = createClient({ host: state.balancer.host, port: state.balancer.port, commandTimeout: 1000 });
    // The seeding has a longer deadline than the measured commands: on a loaded machine an
    // lmdb MSET of 500 keys can take more than 1 s, and that is not what is measured.
    seeder = createClient({ host: state.balancer.host, port: state.balancer.port, commandTimeout: 30_000 });
    const keys = Array.from({ length: FAILOVER_KEYS }, (_, i) => `failover-${i}`);
    await seeder.mset(keys.map((key): [string, string] => [key, 'before']));
    const value = 'v'.repeat(100);
    for (let start = 0; start < RECOVERY_FILLER_KEYS; start += 500) {
      await seeder.mset(
        Array.from({ length: Math.min(500, RECOVERY_FILLER_KEYS - start) }, (_, i): [string, string] => [
          `filler-${start + i}`,
          value,
        ]),
      );
    }
    const victim = state.nodes[1]!;
    process.kill(victim.pid, 'SIGKILL');
    const killedAt = performance.now();
    const writer = client;
    const [writable, readable] = await Promise.all([
      Promise.all(keys.map((key) => untilServed(() => writer.set(key, 'after'), killedAt))),
      Promise.all(keys.map((key) => untilServed(() => writer.get(key), killedAt))),
    ]);
    const served = writable.filter((ms): ms is number => ms !== undefined);
    // The chains on the cluster's ring (default vnode ring of the members' ids and weights).
    const members = await adminJson<{ nodes: { id: string; weight: number }[] }>(state, '/ring');
    const chains = HashRing.from(members.nodes.map((node) => ({ id: node.id, weight: node.weight })));
    const inVictimChain = keys.map((key) => chains.getN(key, 3).includes(victim.id));
    const affected = served.filter((_, i) => inVictimChain[i]);
    const others = served.filter((_, i) => !inVictimChain[i]);
    const recovery = await measureRecovery(state, victim, engine, distRoot);
    return {
      affected: inVictimChain.filter(Boolean).length,
      writableMedianMs: affected.length > 0 ? median(affected) : 0,
      writableMaxMs: Math.max(0, ...affected),
      othersMaxMs: Math.max(0, ...others),
      readableMaxMs: Math.max(0, ...readable.filter((ms): ms is number => ms !== undefined)),
      never: writable.length - served.length,
      ...recovery,
    };
  } finally {
    if (restarted !== undefined) process.kill(restarted.pid, 'SIGKILL');
    restarted = undefined;
    await client?.disconnect();
    await seeder?.disconnect();
    await stopCluster(root);
    if (KEEP) console.log(`kept ${root}`);
    else rmSync(root, { recursive: true, force: true });
  }
}

const int = (n: number) => Math.round(n).toLocaleString('en-US');
const ms = (us: number) => (us / 1000).toFixed(2);
const cpu = (us: number) => us.toFixed(1);

function row(engine: string, factor: number, rounds: string, samples: readonly Sample[]): string {
  const pick = (f: (s: Sample) => number) => median(samples.map(f));
  const entries = pick((s) => s.entriesPerReplicate);
  const cells = [
    engine,
    String(factor),
    rounds,
    int(pick((s) => s.report.throughput)),
    ms(pick((s) => s.report.latency.p50Us)),
    ms(pick((s) => s.report.latency.p99Us)),
    cpu(pick((s) => s.nodesUsPerOp)),
    cpu(pick((s) => s.serversUsPerOp)),
    pick((s) => s.nodesWritesPerOp).toFixed(2),
    Number.isNaN(entries) ? '-' : entries.toFixed(1),
    String(samples.reduce((sum, s) => sum + errorCount(s.report), 0)),
  ];
  return `| ${cells.join(' | ')} |`;
}

/** The engine column: with a baseline, which build the row measured. */
const named = (engine: FailoverEngine, label: string) => (label === '' ? engine : `${engine} (${label})`);
if (LOAD) {
  console.log(
    `bench:replication: ${OPS} ops (after a warm-up of ${ENGINES.map((engine) => `${WARMUP_OPS[engine]} ops on ${engine}`).join(', ')}), ${CONCURRENCY} in flight, 100-byte values, ` +
      `${Math.round(READ_RATIO * 100)}% reads, ${Number(process.env.DSTORE_BENCH_KEYSPACE ?? 10_000).toLocaleString('en-US')} keys, 3 nodes${NODE_ARGS.length > 0 ? ` (${NODE_ARGS.join(' ')})` : ''}; factors ${FACTORS.join(', ')}; ${ROUNDS} interleaved rounds; CLK_TCK ${CLK_TCK}` +
      `${BASELINE_ROOT === undefined ? '' : `; "base" rows: the CLIs of ${BASELINE_ROOT}`}\n`,
  );
  const HEADER =
    '| engine | factor | round | ops/s | p50 ms | p99 ms | nodes µs/op | servers µs/op | nodes writes/op | entries/REPLICATE | errors |';
  const ALIGN = '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|';
  console.log(HEADER);
  console.log(ALIGN);
  const results = new Map<string, Sample[]>();
  for (const engine of ENGINES) {
    for (let round = 1; round <= ROUNDS; round++) {
      for (const factor of FACTORS) {
        for (const build of BUILDS) {
          const sample = await measure(engine, factor, build.distRoot);
          const name = `${build.label}/${engine}/${factor}`;
          results.set(name, [...(results.get(name) ?? []), sample]);
          console.log(row(named(engine, build.label), factor, String(round), [sample]));
        }
      }
    }
  }
  console.log('\nMedian over rounds, and the nodes’ CPU per op against factor 1:\n');
  console.log(`${HEADER.replace('| round |', '| rounds |')} nodes CPU / factor 1 |`);
  console.log(`${ALIGN}---:|`);
  for (const engine of ENGINES) {
    for (const build of BUILDS) {
      const base = median(results.get(`${build.label}/${engine}/${FACTORS[0]}`)!.map((s) => s.nodesUsPerOp));
      for (const factor of FACTORS) {
        const samples = results.get(`${build.label}/${engine}/${factor}`)!;
        const ratio = median(samples.map((s) => s.nodesUsPerOp)) / base;
        console.log(
          `${row(named(engine, build.label), factor, String(ROUNDS), samples)} x${ratio.toFixed(2)} |`,
        );
      }
    }
  }
}

if (FAILOVER) {
  console.log(
    `\nFailover and catch-up: balancer + 5 nodes, factor 3, default --failure-timeout and --lease; ${FAILOVER_KEYS} keys (+ ${int(RECOVERY_FILLER_KEYS)} of 100 bytes), one node SIGKILLed, then each key written and read until it succeeds; then the node restarted under its id until it is up again:\n`,
  );
  console.log(
    "| engine | round | keys in the victim's chains | writable again: median ms | max ms | other keys writable: max ms | readable again: max ms | never | restart to syncing ms | restart to up ms | keys copied | keys/s | servers CPU restart to up ms |",
  );
  console.log('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const engine of FAILOVER_ENGINES) {
    for (let round = 1; round <= ROUNDS; round++) {
      for (const build of BUILDS) {
        const f = await measureFailover(engine, build.distRoot);
        console.log(
          `| ${named(engine, build.label)} | ${round} | ${f.affected} | ${int(f.writableMedianMs)} | ${int(f.writableMaxMs)} | ${int(f.othersMaxMs)} | ${int(f.readableMaxMs)} | ${f.never} | ${f.syncingAfterMs === undefined ? 'never' : int(f.syncingAfterMs)} | ${f.upAfterMs === undefined ? 'never' : int(f.upAfterMs)} | ${int(f.keysCopied)} | ${int(f.keysPerSecond)} | ${int(f.cpuMs)} |`,
        );
      }
    }
  }
}
