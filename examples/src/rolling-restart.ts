/**
 * `rolling-restart`: writes under a rolling restart, and what became of every write.
 *
 * Starts a balancer and `--nodes` storage nodes (replication factor 3) with the local cluster of
 * cluster.ts, then `--writers` workers on 2 clients (through the balancer, or `--routing direct`)
 * write unique keys while `--restarts` nodes are restarted gracefully in turn: SIGTERM, wait until
 * it exited, start it again under its id, wait until the cluster is whole again (every node up and
 * caught up, no ring change, no range under-replicated). Then the writers stop and it checks:
 * every acknowledged write reads back its value; every write of unknown outcome (failed, not
 * refused as not executed) is read back (applied or absent); each node's copy of those keys and of
 * a sample of the acknowledged ones (every 10th) is read straight from the nodes (PULL): a key is
 * held by 0 or 3 nodes (acknowledged: 3, with its value), all with the same value and version.
 *
 *   pnpm build && pnpm --filter @dstore/examples rolling-restart -- --engine memory --routing direct --nodes 4
 *   pnpm --filter @dstore/examples rolling-restart -- --engine lmdb --restarts 2 --time-limit 180
 *
 * Prints the writes done, the errors by code (`[NE]` not executed, `[?]` outcome unknown), the
 * writes of unknown outcome found applied or absent, the count of writes slower than 900 ms (and
 * the first 10), the acknowledged writes missing and the keys whose copies differ (first 5 of
 * each). Exit code 1 when an acknowledged write is missing, copies differ or the run fails
 * (cluster not whole again, time limit); every process it started is stopped in every case, and
 * the processes' logs are kept on a failure (folder printed).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, type DstoreClient } from '@dstore/client';
import { Connection, connectSocket, DstoreError, ErrorCode, handshake, Op } from '@dstore/protocol';
import { scriptFlags } from './bench-load.js';
import {
  adminJson,
  type ClusterState,
  restartNode,
  sleep,
  startCluster,
  stopCluster,
  waitForRing,
} from './cluster.js';

type Engine = 'memory' | 'lmdb';
type Routing = 'balancer' | 'direct';

const OPTIONS = {
  engine: { type: 'string' },
  routing: { type: 'string' },
  nodes: { type: 'string' },
  restarts: { type: 'string' },
  writers: { type: 'string' },
  'time-limit': { type: 'string' },
  help: { type: 'boolean' },
} as const;

const USAGE =
  'usage: rolling-restart [--engine memory|lmdb] [--routing balancer|direct] [--nodes 4 (>= 3)] [--restarts <nodes> (1..nodes)] [--writers 40] [--time-limit 300 (seconds)]';

const flags = scriptFlags(OPTIONS, USAGE);

const ENGINE = (flags.engine ?? 'memory') as Engine;
const ROUTING = (flags.routing ?? 'balancer') as Routing;
const NODES = Number(flags.nodes ?? 4);
const RESTARTS = Number(flags.restarts ?? NODES);
const WRITERS = Number(flags.writers ?? 40);
const TIME_LIMIT_MS = Number(flags['time-limit'] ?? 300) * 1000;
if (
  !['memory', 'lmdb'].includes(ENGINE) ||
  !['balancer', 'direct'].includes(ROUTING) ||
  !(Number.isInteger(NODES) && NODES >= 3) ||
  !(Number.isInteger(RESTARTS) && RESTARTS >= 1 && RESTARTS <= NODES) ||
  !(Number.isInteger(WRITERS) && WRITERS >= 1) ||
  !(TIME_LIMIT_MS >= 30_000)
) {
  console.error(USAGE);
  process.exit(2);
}

/** Copies of every key (the balancer's default for a new map, given explicitly). */
const FACTOR = 3;
const CLIENTS = 2;
/** A write slower than this is listed. */
const SLOW_MS = 900;
/** Every n-th acknowledged write has its copies compared (all of them are read back). */
const COPY_SAMPLE_EVERY = 10;
/** Each writer's pause after each write. */
const WRITER_PAUSE_MS = 5;
/** Load before the first restart and after each return, so every restart hits a running load. */
const LOAD_GAP_MS = 1000;
/** Past the time limit by this much, a stuck run is stopped from outside its steps. */
const WATCHDOG_GRACE_MS = 60_000;

const text = new TextEncoder();
const started = Date.now();
const sinceStart = (): string => `+${((Date.now() - started) / 1000).toFixed(1)}s`;
const remainingMs = (): number => started + TIME_LIMIT_MS - Date.now();

/** The part of the balancer's `/ring` document that says whether the cluster is whole. */
interface RingDocument {
  readonly nodes: readonly { readonly id: string; readonly status: string; readonly replicaState?: string }[];
  readonly migration?: { readonly active: boolean; readonly stalled: unknown };
  readonly replication?: { readonly underReplicatedRanges: number };
}

/**
 * Waits until every node is up in the ring with no ring change running ({@link waitForRing}),
 * and caught up in its chains with no range under-replicated (what `dstore status` calls healthy).
 */
async function waitUntilWhole(state: ClusterState): Promise<void> {
  const timeoutMs = Math.max(1000, remainingMs());
  const deadline = Date.now() + timeoutMs;
  await waitForRing(state, timeoutMs);
  let last = '';
  while (Date.now() < deadline) {
    try {
      const ring = await adminJson<RingDocument>(state, '/ring');
      last = JSON.stringify({ nodes: ring.nodes, replication: ring.replication, migration: ring.migration });
      if (
        ring.nodes.length === state.nodes.length &&
        ring.nodes.every((node) => node.status === 'up' && (node.replicaState ?? 'up') === 'up') &&
        (ring.replication?.underReplicatedRanges ?? 0) === 0 &&
        ring.migration?.active !== true &&
        (ring.migration?.stalled ?? null) === null
      )
        return;
    } catch (error) {
      last = (error as Error).message;
    }
    await sleep(100);
  }
  throw new Error(`the cluster was not whole again within the time limit; last /ring: ${last}`);
}

/** What the writers saw. */
interface WriteRecord {
  writes: number;
  readonly acknowledged: string[];
  /** Errors by code, `[NE]` refused as not executed, `[?]` outcome unknown. */
  readonly errorsByCode: Map<string, number>;
  /** Writes of unknown outcome: key, and the error's message. */
  readonly indeterminate: Map<string, string>;
  readonly slow: string[];
}

const valueWritten = (key: string): string => `v-${key}`;

/** Starts the writers; `stop()` ends them after their current write. */
function startWriters(clients: readonly DstoreClient[]): { record: WriteRecord; stop: () => Promise<void> } {
  const record: WriteRecord = {
    writes: 0,
    acknowledged: [],
    errorsByCode: new Map(),
    indeterminate: new Map(),
    slow: [],
  };
  let stopping = false;
  const writers = Array.from({ length: WRITERS }, async (_, writer) => {
    const client = clients[writer % clients.length]!;
    for (let sequence = 0; !stopping; sequence++) {
      const key = `rolling-${writer}-${sequence}`;
      const writeStarted = Date.now();
      record.writes++;
      try {
        await client.set(key, valueWritten(key));
        record.acknowledged.push(key);
      } catch (error) {
        const notExecuted = error instanceof DstoreError && error.notExecuted;
        const code = `${error instanceof DstoreError ? error.code : (error as Error).name}${notExecuted ? '[NE]' : '[?]'}`;
        record.errorsByCode.set(code, (record.errorsByCode.get(code) ?? 0) + 1);
        if (!notExecuted) record.indeterminate.set(key, (error as Error).message);
      }
      const tookMs = Date.now() - writeStarted;
      if (tookMs > SLOW_MS)
        record.slow.push(
          `${key} started +${((writeStarted - started) / 1000).toFixed(1)}s took ${tookMs} ms`,
        );
      await sleep(WRITER_PAUSE_MS);
    }
  });
  return {
    record,
    stop: async () => {
      stopping = true;
      await Promise.all(writers);
    },
  };
}

/** One node's copy of a key: its value (null when it has none) and version, or why it could not tell. */
type Copy =
  | { readonly value: string | null; readonly version: number }
  | 'not owner'
  | { readonly error: string };

/** Peer (role node) connections to the nodes, for PULL: a node's own copy of a key. */
class Replicas {
  private readonly peers = new Map<string, Connection>();

  constructor(private readonly state: ClusterState) {}

  private async peer(id: string): Promise<Connection> {
    const existing = this.peers.get(id);
    if (existing?.isOpen === true) return existing;
    const node = this.state.nodes.find((candidate) => candidate.id === id)!;
    const connection = new Connection(await connectSocket({ host: node.host, port: node.port }), {
      requestTimeoutMs: 5000,
    });
    this.peers.set(id, connection);
    await handshake(connection, 'node', {});
    return connection;
  }

  async copyAt(id: string, key: string): Promise<Copy> {
    try {
      const answer = await (await this.peer(id)).request({ op: Op.PULL, key: text.encode(key) });
      if (answer.op !== Op.ENTRY) return { error: `PULL answered op ${answer.op}` };
      return answer.entry === null
        ? { value: null, version: 0 }
        : { value: new TextDecoder().decode(answer.entry.value), version: answer.entry.version };
    } catch (error) {
      if (error instanceof DstoreError && error.code === ErrorCode.NOT_OWNER) return 'not owner';
      return { error: (error as Error).message };
    }
  }

  /**
   * Keys whose copies are wrong, each with every node's copy: held by other than 0 or
   * {@link FACTOR} nodes (with `expected`: other than FACTOR), copies that differ in value or
   * version, a value other than `expected`, or a node that could not tell.
   */
  async differing(keys: readonly string[], expected?: (key: string) => string): Promise<string[]> {
    const wrong: string[] = [];
    for (const key of keys) {
      const copies = await Promise.all(
        this.state.nodes.map(async (node) => [node.id, await this.copyAt(node.id, key)] as const),
      );
      const held = copies.flatMap(([, copy]) =>
        typeof copy === 'object' && 'value' in copy && copy.value !== null ? [copy] : [],
      );
      const failed = copies.some(([, copy]) => typeof copy === 'object' && 'error' in copy);
      const distinct = new Set(held.map((copy) => `${copy.value}@${copy.version}`));
      const countRight =
        expected === undefined ? held.length === 0 || held.length === FACTOR : held.length === FACTOR;
      const valueRight = expected === undefined || held.every((copy) => copy.value === expected(key));
      if (failed || !countRight || distinct.size > 1 || !valueRight) {
        const described = copies.map(([id, copy]) =>
          copy === 'not owner'
            ? `${id}: not owner`
            : 'error' in copy
              ? `${id}: ${copy.error}`
              : `${id}=${copy.value ?? 'null'}@${copy.version}`,
        );
        wrong.push(`${key}: ${described.join(' ')}`);
      }
    }
    return wrong;
  }

  close(): void {
    for (const connection of this.peers.values()) connection.destroy();
  }
}

/** Acknowledged keys that do not read back their value (read with MGET, 500 at a time). */
async function missingAcknowledged(client: DstoreClient, keys: readonly string[]): Promise<string[]> {
  const missing: string[] = [];
  for (let start = 0; start < keys.length; start += 500) {
    const batch = keys.slice(start, start + 500);
    const values = await client.mget(batch);
    batch.forEach((key, index) => {
      const value = values[index];
      const read = value === null || value === undefined ? null : new TextDecoder().decode(value);
      if (read !== valueWritten(key)) missing.push(`${key} reads ${JSON.stringify(read)}`);
    });
  }
  return missing;
}

async function main(root: string): Promise<number> {
  console.log(
    `rolling-restart: ${NODES} ${ENGINE} nodes, factor ${FACTOR}, ${WRITERS} writers on ${CLIENTS} clients (${ROUTING}), ${RESTARTS} graceful restarts, time limit ${TIME_LIMIT_MS / 1000} s, folder ${root}`,
  );
  const state = await startCluster({
    root,
    nodes: NODES,
    engine: ENGINE,
    replicationFactor: FACTOR,
    readyTimeoutMs: 30_000,
  });
  await waitUntilWhole(state);
  const endpoint = { host: state.balancer.host, port: state.balancer.port };
  const clients = Array.from({ length: CLIENTS }, () =>
    createClient({ ...endpoint, ...(ROUTING === 'direct' ? { routing: 'direct' as const } : {}) }),
  );
  const writers = startWriters(clients);
  try {
    await sleep(LOAD_GAP_MS);
    for (const node of state.nodes.slice(0, RESTARTS)) {
      if (remainingMs() <= 0) throw new Error('time limit reached before every restart was done');
      const restartStarted = Date.now();
      console.log(`${sinceStart()} SIGTERM ${node.id}`);
      await restartNode(state, node.id, { engine: ENGINE, readyTimeoutMs: 30_000 });
      const backMs = Date.now() - restartStarted;
      await waitUntilWhole(state);
      console.log(
        `${sinceStart()} ${node.id} back after ${backMs} ms, cluster whole after ${Date.now() - restartStarted} ms`,
      );
      await sleep(LOAD_GAP_MS);
    }
  } finally {
    await writers.stop();
    await Promise.all(clients.map((client) => client.disconnect()));
  }
  const { record } = writers;

  const reader = createClient(endpoint);
  const replicas = new Replicas(state);
  try {
    const missing = await missingAcknowledged(reader, record.acknowledged);
    let applied = 0;
    for (const key of record.indeterminate.keys()) if ((await reader.getString(key)) !== null) applied++;
    const indeterminateDiffering = await replicas.differing([...record.indeterminate.keys()]);
    const sample = record.acknowledged.filter((_, index) => index % COPY_SAMPLE_EVERY === 0);
    const sampleDiffering = await replicas.differing(sample, valueWritten);

    const errors = Object.fromEntries(record.errorsByCode);
    console.log(
      `${ENGINE} ${ROUTING}: writes ${record.writes}, acknowledged ${record.acknowledged.length}, errors ${JSON.stringify(errors)}`,
    );
    console.log(
      `indeterminate ${record.indeterminate.size}: applied ${applied}, absent ${record.indeterminate.size - applied}; copies differing ${indeterminateDiffering.length}`,
    );
    for (const wrong of indeterminateDiffering.slice(0, 5)) console.log(`  copies differ: ${wrong}`);
    console.log(`slow (> ${SLOW_MS} ms): ${record.slow.length}`);
    for (const slow of record.slow.slice(0, 10)) console.log(`  ${slow}`);
    console.log(`acknowledged missing: ${missing.length} of ${record.acknowledged.length}`);
    for (const lost of missing.slice(0, 5)) console.log(`  missing: ${lost}`);
    console.log(`acknowledged sample ${sample.length}: copies differing ${sampleDiffering.length}`);
    for (const wrong of sampleDiffering.slice(0, 5)) console.log(`  copies differ: ${wrong}`);
    const passed =
      missing.length === 0 && indeterminateDiffering.length === 0 && sampleDiffering.length === 0;
    console.log(passed ? 'rolling-restart passed' : 'rolling-restart FAILED');
    return passed ? 0 : 1;
  } finally {
    replicas.close();
    await reader.disconnect();
  }
}

const root = mkdtempSync(join(tmpdir(), 'dstore-rolling-'));
// A step stuck past every timeout: stop the processes from here, keep the logs.
const watchdog = setTimeout(() => {
  console.error(`rolling-restart: stuck past the time limit; stopping the cluster (logs in ${root})`);
  void stopCluster(root).finally(() => process.exit(1));
}, TIME_LIMIT_MS + WATCHDOG_GRACE_MS);
watchdog.unref();
let exitCode = 1;
try {
  exitCode = await main(root);
} catch (error) {
  console.error(`rolling-restart FAILED: ${(error as Error).stack ?? String(error)}`);
} finally {
  await stopCluster(root);
  clearTimeout(watchdog);
  if (exitCode === 0) rmSync(root, { recursive: true, force: true });
  else console.error(`process logs kept in ${join(root, 'logs')}`);
}
process.exitCode = exitCode;
