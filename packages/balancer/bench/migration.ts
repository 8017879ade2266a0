/**
 * Migration benchmark (not a test): a balancer (child process) in front of 3 storage nodes
 * (memory engine) holding BENCH_MIG_KEYS keys of BENCH_MIG_VALUE_BYTES bytes. Measures client
 * latency (50% GET / 50% SET, BENCH_MIG_CONCURRENCY requests in flight) in steady state, then while
 * a 4th node joins and about 1/4 of the keys migrate to it; reports the migration rate (keys/s,
 * MB/s of keys+values) from the balancer's /ring and the p99 ratio during/steady.
 *
 *   pnpm build && pnpm --filter @dstore/balancer exec tsx bench/migration.ts
 */
import { Connection, connectSocket, handshake, LatencyHistogram, Op, toBytes } from '@dstore/protocol';
import { BALANCER_CLI, killAll, NODE_CLI, type Ready, startProcess } from './processes.js';

const KEYS = Number(process.env.BENCH_MIG_KEYS ?? 200_000);
const VALUE_BYTES = Number(process.env.BENCH_MIG_VALUE_BYTES ?? 100);
const CONCURRENCY = Number(process.env.BENCH_MIG_CONCURRENCY ?? 50);
const STEADY_SECONDS = Number(process.env.BENCH_MIG_STEADY_SECONDS ?? 3);
/** `--migration-rate` of the nodes (keys/s per stream; 0 = unbounded); default: the node's own. */
const RATE = process.env.BENCH_MIG_RATE;

interface MigrationState {
  readonly epoch: number;
  readonly migration: { active: boolean; epoch: number; keysMoved: number; keysPerSecond: number };
  readonly nodes: readonly { id: string }[];
}

function start(script: string, args: string[]): Promise<Ready> {
  return startProcess(script, args).ready;
}

const startNode = (id: string, join: number) =>
  start(NODE_CLI, [
    '--port',
    '0',
    '--id',
    id,
    '--engine',
    'memory',
    '--log-level',
    'warn',
    '--join',
    `127.0.0.1:${join}`,
    ...(RATE === undefined ? [] : ['--migration-rate', RATE]),
  ]);

async function ring(adminPort: number): Promise<MigrationState> {
  return (await (await fetch(`http://127.0.0.1:${adminPort}/ring`)).json()) as MigrationState;
}

const keyOf = (index: number) => toBytes(`bench-key-${index}`);

/** Runs the mixed workload until `stop()` says so; returns the latency histogram. */
async function workload(
  client: Connection,
  value: Uint8Array,
  stop: () => boolean,
): Promise<LatencyHistogram> {
  const histogram = new LatencyHistogram();
  const worker = async () => {
    while (!stop()) {
      const key = keyOf(Math.floor(Math.random() * KEYS));
      const started = performance.now();
      await (Math.random() < 0.5
        ? client.request({ op: Op.GET, key })
        : client.request({ op: Op.SET, key, value }));
      histogram.recordSince(started);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return histogram;
}

async function main(): Promise<void> {
  const balancer = await start(BALANCER_CLI, ['--port', '0', '--admin-port', '0', '--log-level', 'warn']);
  const adminPort = balancer.adminPort!;
  for (const id of ['node-1', 'node-2', 'node-3']) await startNode(id, balancer.port);
  while ((await ring(adminPort)).nodes.length < 3) await new Promise((done) => setTimeout(done, 50));
  const client = new Connection(await connectSocket({ host: '127.0.0.1', port: balancer.port }));
  await handshake(client, 'client');
  const value = new Uint8Array(VALUE_BYTES).fill(120);
  for (let start = 0; start < KEYS; start += 500) {
    const entries = Array.from({ length: Math.min(500, KEYS - start) }, (_, i) => ({
      key: keyOf(start + i),
      value,
    }));
    await client.request({ op: Op.MSET, entries });
  }
  const steadyUntil = performance.now() + STEADY_SECONDS * 1000;
  const steady = await workload(client, value, () => performance.now() > steadyUntil);

  const before = await ring(adminPort);
  await startNode('node-4', balancer.port);
  let done = false;
  const during = workload(client, value, () => done);
  let state = await ring(adminPort);
  while (!(state.epoch > before.epoch && state.migration.epoch > before.epoch && !state.migration.active)) {
    await new Promise((resolveWait) => setTimeout(resolveWait, 20));
    state = await ring(adminPort);
  }
  done = true;
  const migrating = await during;
  const keyBytes = `bench-key-${KEYS / 2}`.length;
  const migration = state.migration;
  const seconds = migration.keysPerSecond > 0 ? migration.keysMoved / migration.keysPerSecond : 0;
  const mbPerSecond = seconds > 0 ? (migration.keysMoved * (keyBytes + VALUE_BYTES)) / seconds / 1e6 : 0;
  const steadySummary = steady.summary();
  const duringSummary = migrating.summary();
  console.log(
    JSON.stringify(
      {
        keys: KEYS,
        valueBytes: VALUE_BYTES,
        concurrency: CONCURRENCY,
        migrationRate: RATE ?? 'default (5000 keys/s per stream)',
        keysMoved: migration.keysMoved,
        migrationSeconds: Math.round(seconds * 100) / 100,
        keysPerSecond: migration.keysPerSecond,
        mbPerSecond: Math.round(mbPerSecond * 100) / 100,
        steady: { ops: steadySummary.count, p50Us: steadySummary.p50Us, p99Us: steadySummary.p99Us },
        duringMigration: { ops: duringSummary.count, p50Us: duringSummary.p50Us, p99Us: duringSummary.p99Us },
        p99Ratio: Math.round((duringSummary.p99Us / steadySummary.p99Us) * 100) / 100,
      },
      null,
      2,
    ),
  );
  client.destroy();
}

main()
  .catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  })
  .finally(() => {
    killAll();
  });
