/**
 * Replication step 4: learners. A member marked `failed` that comes back (restarted
 * empty, restarted with its lmdb data dir, or SIGCONTed with stale data and an old epoch) is made
 * `syncing` by the map's writer, wipes what it held, receives every new write at the end of its
 * chains' write paths while the serving tails copy their ranges to it, is `promoting` while every
 * node drains its writes in flight, and serves again (`up`). Five real dstore-node processes,
 * replication factor 3, an in-process balancer, the checker's workload throughout (see
 * docs/design/replication.md, "Step 4 as built").
 *
 * Timeouts as in replication-failover.test.ts: node heartbeats every 200 ms, lease 1.5 s, failure
 * timeout 3 s.
 */
import { HistoryRecorder, Nemesis } from '@dstore/checker';
import type { DstoreClient } from '@dstore/client';
import type { ReplicaState } from '@dstore/hashring';
import { Op } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { replicationView } from '../src/admin-server.js';
import type { SyncProgress } from '../src/resync.js';
import { Resources, sleep, waitFor } from './helpers.js';
import {
  clientsOf,
  type Engine,
  expectLinearizable,
  expectNothingLost,
  FACTOR,
  FAILOVER_TIMEOUTS,
  REGISTER_KEYS as KEYS,
  keysOf,
  metric,
  ReplicatedCluster,
  registerLoad,
  setWorkload,
} from './replicated-cluster.js';

const resources = new Resources();
let nemesis = new Nemesis();
afterEach(async () => {
  await nemesis.cleanup();
  await resources.releaseAll();
});

const VICTIM = 'node-2';

/**
 * Counters incremented by `workers` at once, keys whose chain has the victim at `position` (its
 * place once it serves again): counts the increments acknowledged and tried. An increment lost
 * at the victim's promotion (a new head reading a stale count) leaves a counter below its
 * acknowledged increments.
 */
function incrWorkload(
  client: DstoreClient,
  keys: readonly string[],
  workers: number,
): { stop: () => Promise<{ acknowledged: Map<string, number>; attempted: Map<string, number> }> } {
  const acknowledged = new Map<string, number>();
  const attempted = new Map<string, number>();
  let stopped = false;
  const worker = async (n: number): Promise<void> => {
    for (let i = n; !stopped; i++) {
      const key = keys[i % keys.length]!;
      attempted.set(key, (attempted.get(key) ?? 0) + 1);
      try {
        await client.incr(key);
        acknowledged.set(key, (acknowledged.get(key) ?? 0) + 1);
      } catch {
        // Outcome unknown (or not executed): only the bounds are checked.
        await sleep(5);
      }
    }
  };
  const running = Promise.all(Array.from({ length: workers }, (_, n) => worker(n)));
  return {
    async stop() {
      stopped = true;
      await running;
      return { acknowledged, attempted };
    },
  };
}

/** Waits until the victim went through syncing and promoting to up, recording the states seen. */
async function waitUntilUp(cluster: ReplicatedCluster, seen: Set<ReplicaState>): Promise<void> {
  await waitFor(
    () => {
      const state = cluster.stateOf(VICTIM);
      if (state !== undefined) seen.add(state);
      return state === 'up' && seen.has('syncing');
    },
    `${VICTIM} syncing, then up again`,
    40_000,
  );
}

/**
 * Polls the victim's state in the background (a promotion can be short): every state it had, and
 * the last sync progress `/ring` would show (its `sync` is the resync's snapshot, read here
 * directly: building the whole replication view every 5 ms took the in-process balancer's event
 * loop most of the time, every write through it some 50 ms).
 */
function watchStates(cluster: ReplicatedCluster): {
  seen: Set<ReplicaState>;
  sync: () => SyncProgress | null;
  stop: () => void;
} {
  const seen = new Set<ReplicaState>();
  let sync: SyncProgress | null = null;
  const timer = setInterval(() => {
    const state = cluster.stateOf(VICTIM);
    if (state !== undefined) seen.add(state);
    sync = cluster.balancer.membership.resync.snapshot() ?? sync;
  }, 5);
  resources.add(() => clearInterval(timer));
  return { seen, sync: () => sync, stop: () => clearInterval(timer) };
}

/**
 * The end state: every member up, no under-replicated range, every chain's members hold the same
 * entries for `keys` (value and version, or none on all; {@link expectNothingLost} checked the
 * set workload's `others`), and each member holds exactly the live keys whose chain includes it
 * (no deleted key came back anywhere, nothing is missing).
 */
async function expectHealed(
  cluster: ReplicatedCluster,
  reader: DstoreClient,
  keys: readonly string[],
  others: readonly string[],
): Promise<void> {
  expect([...cluster.states.values()].every((state) => state === 'up')).toBe(true);
  expect(cluster.balancer.membership.chains.some((chain) => chain.underReplicated)).toBe(false);
  for (const key of new Set(keys)) {
    expect(cluster.chainOf(key)).toHaveLength(FACTOR);
    await cluster.expectOnChain(key);
  }
  const unique = [...new Set([...keys, ...others])];
  const live = new Set<string>();
  for (let i = 0; i < unique.length; i += 200) {
    const part = unique.slice(i, i + 200);
    const values = await reader.mget(part);
    part.forEach((key, j) => {
      if (values[j] !== null && values[j] !== undefined) live.add(key);
    });
  }
  for (const id of cluster.nodes.keys()) {
    const expected = [...live].filter((key) => cluster.chainOf(key).includes(id)).length;
    const answer = await (await cluster.peer(id)).request({ op: Op.DBSIZE });
    expect(answer.op).toBe(Op.COUNT);
    expect(answer.op === Op.COUNT ? answer.count : -1, `keys held by ${id}`).toBe(expected);
  }
}

/** What a {@link returnScenario} leaves for the test's own checks. */
interface Returned {
  readonly cluster: ReplicatedCluster;
  readonly reader: DstoreClient;
  /** The keys seeded before the fault: `seeded` of each chain position of the victim. */
  readonly keys: readonly string[];
  readonly sync: SyncProgress | null;
}

/**
 * The common run: 5 nodes with `engine`, keys of every chain position of the victim seeded, the
 * checker's workload (`routing`) and a paced set workload of new keys throughout (plus `extra`
 * load started and stopped with them), `fault` (it fails the victim and brings it back), then
 * until the victim went failed, syncing, promoting and up and a little beyond. Checks the history
 * is linearizable, nothing acknowledged was lost and the cluster healed ({@link expectHealed}
 * over the seeded keys, the register keys and `extraKeys`).
 */
async function returnScenario(options: {
  engine: Engine;
  routing: 'balancer' | 'direct';
  prefix: string;
  seeded: number;
  /** Fails the victim and brings it back. */
  fault: (cluster: ReplicatedCluster, seeder: DstoreClient, keys: readonly string[]) => Promise<void>;
  /** More load, on `keys` (checked like the register keys at the end). */
  extra?: (
    cluster: ReplicatedCluster,
    clients: readonly DstoreClient[],
  ) => { readonly keys: readonly string[]; stop: () => Promise<void> };
}): Promise<Returned> {
  const recorder = new HistoryRecorder();
  nemesis = new Nemesis(recorder);
  const cluster = await ReplicatedCluster.start({
    engine: options.engine,
    resources,
    nemesis,
    balancer: FAILOVER_TIMEOUTS,
  });
  const states = watchStates(cluster);
  const keys = [0, 1, 2].flatMap((position) =>
    keysOf(cluster, `${options.prefix}-${position}`, options.seeded, VICTIM, position),
  );
  const seeder = cluster.client(8000);
  for (const key of keys) await seeder.set(key, `old-${key}`);
  const clients = await clientsOf(cluster, resources, options.routing);
  // Paced: every key it tries is compared on its 3 members at the end.
  const writes = setWorkload(clients[0]!, keysOf(cluster, 'set', 5000), 2, 5);
  const load = registerLoad(recorder, clients, KEYS, 60_000, 60_000);
  const extra = options.extra?.(cluster, clients);
  await sleep(500);
  await options.fault(cluster, seeder, keys);
  await waitUntilUp(cluster, states.seen);
  // The load goes on a little with the victim serving again (longer on a loaded machine: the
  // history must hold enough answered operations).
  await sleep(500);
  const stats = await load.stopOnceOk(250);
  const written = await writes.stop();
  await extra?.stop();
  states.stop();
  expect([...states.seen]).toEqual(expect.arrayContaining(['failed', 'syncing', 'promoting', 'up']));
  expectLinearizable(recorder);
  expect(stats.ok).toBeGreaterThan(200);
  const reader = clients[1]!;
  await expectNothingLost(cluster, reader, written);
  await expectHealed(cluster, reader, [...keys, ...KEYS, ...(extra?.keys ?? [])], written.attempted);
  return { cluster, reader, keys, sync: states.sync() };
}

/** The victim's copy of each key: `expected(i)` for the i-th, null for none. */
async function expectOnVictim(
  cluster: ReplicatedCluster,
  keys: readonly string[],
  expected: (key: string, i: number) => string | null,
): Promise<void> {
  for (const [i, key] of keys.entries()) {
    expect((await cluster.copyAt(VICTIM, key)).value, `${key} on ${VICTIM}`).toBe(expected(key, i));
  }
}

describe('a failed member returns and serves again (factor 3 on 5 nodes)', () => {
  it('memory: SIGKILL under load, restart empty: syncing, promoting, up; every chain identical', {
    timeout: 90_000,
  }, async () => {
    let counters: string[] = [];
    let counted: { acknowledged: Map<string, number>; attempted: Map<string, number> } | undefined;
    const { cluster, reader, keys, sync } = await returnScenario({
      engine: 'memory',
      routing: 'balancer',
      prefix: 'before',
      seeded: 100,
      fault: async (started) => {
        const victim = started.nodes.get(VICTIM)!;
        await victim.kill();
        await waitFor(() => started.stateOf(VICTIM) === 'failed', `${VICTIM} marked failed`);
        await victim.start();
      },
      // Counters the victim heads once up: an increment lost at its promotion shows as a count
      // below the acknowledged increments.
      extra: (started, clients) => {
        counters = keysOf(started, 'counter', 3, VICTIM, 0);
        const increments = incrWorkload(clients[3]!, counters, 6);
        return {
          keys: counters,
          stop: async () => {
            counted = await increments.stop();
          },
        };
      },
    });
    for (const key of counters) {
      const value = Number(await reader.getString(key));
      expect(value, `${key}: no acknowledged increment lost`).toBeGreaterThanOrEqual(
        counted!.acknowledged.get(key) ?? 0,
      );
      expect(value, `${key}: no increment applied twice`).toBeLessThanOrEqual(
        counted!.attempted.get(key) ?? 0,
      );
    }
    // The returned member holds the copies of the keys written before it died.
    await expectOnVictim(cluster, keys.slice(0, 20), (key) => `old-${key}`);
    // Visible: /ring showed the sync's progress, the metrics count the copies and no learner is left.
    expect(sync).toMatchObject({ node: VICTIM });
    expect(sync!.rangesTotal).toBeGreaterThan(0);
    const adminPort = cluster.balancer.address.adminPort;
    expect(await metric(adminPort, 'dstore_balancer_sync_keys_total')).toBeGreaterThanOrEqual(keys.length);
    // The copies counted in bytes too (at least the keys and values found on the victim above),
    // the same figure in /ring and the metrics, and the sync's progress in bytes.
    const bytes = await metric(adminPort, 'dstore_balancer_sync_bytes_total');
    const copiedBytes = keys.slice(0, 20).reduce((sum, key) => sum + key.length + `old-${key}`.length, 0);
    expect(bytes).toBeGreaterThanOrEqual(copiedBytes);
    expect(replicationView(cluster.balancer.membership).syncBytesTotal).toBe(bytes);
    expect(sync!.bytesStreamed).toBeGreaterThan(0);
    expect(await metric(adminPort, 'dstore_balancer_syncing_members')).toBe(0);
  });

  it('lmdb: SIGKILL, keys overwritten and deleted while down, restart with the data dir: no deleted key comes back', {
    timeout: 90_000,
  }, async () => {
    const { cluster, keys } = await returnScenario({
      engine: 'lmdb',
      routing: 'direct',
      prefix: 'kept',
      seeded: 30,
      fault: async (started, seeder, seeded) => {
        const victim = started.nodes.get(VICTIM)!;
        await victim.kill();
        await waitFor(() => started.stateOf(VICTIM) === 'failed', `${VICTIM} marked failed`);
        // While it is down: a third of its keys overwritten, a third deleted (its data dir keeps them).
        for (const [i, key] of seeded.entries()) {
          if (i % 3 === 0) await seeder.set(key, `new-${key}`);
          else if (i % 3 === 1) expect(await seeder.del(key)).toBe(true);
        }
        await victim.start();
      },
    });
    await expectOnVictim(cluster, keys, (key, i) =>
      i % 3 === 0 ? `new-${key}` : i % 3 === 1 ? null : `old-${key}`,
    );
  });

  it('memory: SIGKILL and restart at once, before it is found silent: the new incarnation is failed, then catches up', {
    timeout: 90_000,
  }, async () => {
    const { cluster, keys } = await returnScenario({
      engine: 'memory',
      routing: 'balancer',
      prefix: 'quick',
      seeded: 30,
      fault: async (started) => {
        const victim = started.nodes.get(VICTIM)!;
        await victim.kill();
        // Back with an empty engine while the map still has it up: it must not serve.
        await victim.start();
      },
    });
    await expectOnVictim(cluster, keys, (key) => `old-${key}`);
  });

  it('SIGSTOP past the failure timeout, then SIGCONT: it returns with stale data and an old epoch, syncs and serves', {
    timeout: 90_000,
  }, async () => {
    const { cluster, keys } = await returnScenario({
      engine: 'memory',
      routing: 'balancer',
      prefix: 'stale',
      seeded: 30,
      fault: async (started, seeder, seeded) => {
        const victim = started.nodes.get(VICTIM)!;
        victim.pause();
        try {
          await waitFor(() => started.stateOf(VICTIM) === 'failed', `${VICTIM} marked failed`);
          for (const [i, key] of seeded.entries()) if (i % 2 === 0) expect(await seeder.del(key)).toBe(true);
        } finally {
          victim.resume();
        }
      },
    });
    await expectOnVictim(cluster, keys, (key, i) => (i % 2 === 0 ? null : `old-${key}`));
  });

  it('lmdb, only the difference: restarted with its data after a failover, it is copied only the ranges written meanwhile', {
    timeout: 90_000,
  }, async () => {
    nemesis = new Nemesis(new HistoryRecorder());
    const cluster = await ReplicatedCluster.start({
      engine: 'lmdb',
      resources,
      nemesis,
      balancer: FAILOVER_TIMEOUTS,
    });
    const states = watchStates(cluster);
    const keys = [0, 1, 2].flatMap((position) => keysOf(cluster, `same-${position}`, 20, VICTIM, position));
    const seeder = cluster.client(8000);
    for (const key of keys) await seeder.set(key, `old-${key}`);
    const adminPort = cluster.balancer.address.adminPort;
    const copiedBefore = await metric(adminPort, 'dstore_balancer_sync_keys_total');
    const victim = cluster.nodes.get(VICTIM)!;
    await victim.kill();
    await waitFor(() => cluster.stateOf(VICTIM) === 'failed', `${VICTIM} marked failed`);
    // While it is down, one key overwritten and one deleted: only their ranges differ.
    const [overwritten, deleted] = [keys[0]!, keys[25]!];
    await seeder.set(overwritten, `new-${overwritten}`);
    expect(await seeder.del(deleted)).toBe(true);
    await victim.start();
    await waitUntilUp(cluster, states.seen);
    states.stop();
    const sync = states.sync();
    expect(sync).toMatchObject({ node: VICTIM });
    // Every range of its chains compared; all but the (at most two) written ones left as they were.
    expect(sync!.rangesTotal).toBeGreaterThan(10);
    expect(sync!.rangesUnchanged).toBeGreaterThanOrEqual(sync!.rangesTotal - 2);
    expect(sync!.rangesUnchanged).toBeLessThan(sync!.rangesTotal);
    const copied = (await metric(adminPort, 'dstore_balancer_sync_keys_total')) - copiedBefore;
    expect(copied).toBeGreaterThanOrEqual(1);
    // Only the keys of the differing ranges were copied, far fewer than it holds.
    expect(copied).toBeLessThan(keys.length / 2);
    await expectOnVictim(cluster, keys, (key) =>
      key === overwritten ? `new-${key}` : key === deleted ? null : `old-${key}`,
    );
    for (const key of keys.slice(0, 10)) await cluster.expectOnChain(key);
  });
});
