/**
 * Replication step 4 (experimental): learners. A member marked `failed` that comes back (restarted
 * empty, restarted with its lmdb data dir, or SIGCONTed with stale data and an old epoch) is made
 * `syncing` by the map's writer, wipes what it held, receives every new write at the end of its
 * chains' write paths while the serving tails copy their ranges to it, is `promoting` while every
 * node drains its writes in flight, and serves again (`up`). Five real dstore-node processes,
 * replication factor 3, an in-process balancer, the checker's workload throughout (see
 * docs/design/replication.md, "Step 4 as built").
 *
 * Timeouts as in replication-failover.test.ts: node heartbeats every 200 ms, lease 1 s, failure
 * timeout 3 s.
 */
import { HistoryRecorder, Nemesis, type RunningWorkload } from '@dstore/checker';
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
  keysOf,
  metric,
  ReplicatedCluster,
  registerLoad,
  type SetOutcome,
  setWorkload,
} from './replicated-cluster.js';

const resources = new Resources();
let nemesis = new Nemesis();
afterEach(async () => {
  await nemesis.cleanup();
  await resources.releaseAll();
});

const FAILOVER = { heartbeatTimeoutMs: 1000, leaseMs: 1000, failureTimeoutMs: 3000 } as const;
const KEYS = Array.from({ length: 12 }, (_, i) => `lin-${i}`);
const VICTIM = 'node-2';

function start(engine: Engine, recorder: HistoryRecorder): Promise<ReplicatedCluster> {
  nemesis = new Nemesis(recorder);
  return ReplicatedCluster.start({ engine, resources, nemesis, balancer: FAILOVER });
}

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
 * the last sync progress `/ring` would show.
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
    sync = replicationView(cluster.balancer.membership).sync ?? sync;
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

/** The checker's workload and a set workload of new keys: running until stopped. */
async function startLoad(
  cluster: ReplicatedCluster,
  recorder: HistoryRecorder,
  routing: 'balancer' | 'direct',
): Promise<{
  clients: DstoreClient[];
  load: RunningWorkload;
  writes: { stop: () => Promise<SetOutcome> };
}> {
  const clients = await clientsOf(cluster, resources, routing);
  // Paced: every key it tries is compared on its 3 members at the end.
  const writes = setWorkload(clients[0]!, keysOf(cluster, 'set', 5000), 2, 5);
  const load = registerLoad(recorder, clients, KEYS, 60_000, 60_000);
  return { clients, load, writes };
}

describe('a failed member returns and serves again (factor 3 on 5 nodes)', () => {
  it('memory: SIGKILL under load, restart empty: syncing, promoting, up; every chain identical', {
    timeout: 90_000,
  }, async () => {
    const recorder = new HistoryRecorder();
    const cluster = await start('memory', recorder);
    const states = watchStates(cluster);
    // Keys of every chain position of the victim, written before it dies: copied to it on return.
    const before = [0, 1, 2].flatMap((position) =>
      keysOf(cluster, `before-${position}`, 100, VICTIM, position),
    );
    const seeder = cluster.client(8000);
    for (const key of before) await seeder.set(key, `v-${key}`);
    const counters = keysOf(cluster, 'counter', 3, VICTIM, 0);
    const { clients, load, writes } = await startLoad(cluster, recorder, 'balancer');
    const increments = incrWorkload(clients[3]!, counters, 6);
    await sleep(500);
    const victim = cluster.nodes.get(VICTIM)!;
    await victim.kill();
    await waitFor(() => cluster.stateOf(VICTIM) === 'failed', `${VICTIM} marked failed`);
    await victim.start();
    await waitUntilUp(cluster, states.seen);
    // The load goes on a little with the victim serving again.
    await sleep(500);
    const stats = await load.stop();
    const written = await writes.stop();
    const counted = await increments.stop();
    states.stop();
    expect([...states.seen]).toEqual(expect.arrayContaining(['failed', 'syncing', 'promoting', 'up']));
    expectLinearizable(recorder);
    expect(stats.ok).toBeGreaterThan(200);
    const reader = clients[1]!;
    await expectNothingLost(cluster, reader, written);
    for (const key of counters) {
      const value = Number(await reader.getString(key));
      expect(value, `${key}: no acknowledged increment lost`).toBeGreaterThanOrEqual(
        counted.acknowledged.get(key) ?? 0,
      );
      expect(value, `${key}: no increment applied twice`).toBeLessThanOrEqual(
        counted.attempted.get(key) ?? 0,
      );
    }
    await expectHealed(cluster, reader, [...before, ...KEYS, ...counters], written.attempted);
    // The returned member holds the copies of the keys written before it died.
    for (const key of before.slice(0, 20)) expect((await cluster.copyAt(VICTIM, key)).value).toBe(`v-${key}`);
    // Visible: /ring showed the sync's progress, the metrics count the copies and no learner is left.
    expect(states.sync()).toMatchObject({ node: VICTIM });
    expect(states.sync()!.rangesTotal).toBeGreaterThan(0);
    const adminPort = cluster.balancer.address.adminPort;
    expect(await metric(adminPort, 'dstore_balancer_sync_keys_total')).toBeGreaterThanOrEqual(before.length);
    expect(await metric(adminPort, 'dstore_balancer_syncing_members')).toBe(0);
  });

  it('lmdb: SIGKILL, keys overwritten and deleted while down, restart with the data dir: no deleted key comes back', {
    timeout: 90_000,
  }, async () => {
    const recorder = new HistoryRecorder();
    const cluster = await start('lmdb', recorder);
    const states = watchStates(cluster);
    const keys = [0, 1, 2].flatMap((position) => keysOf(cluster, `kept-${position}`, 30, VICTIM, position));
    const seeder = cluster.client(8000);
    for (const key of keys) await seeder.set(key, `old-${key}`);
    const { clients, load, writes } = await startLoad(cluster, recorder, 'direct');
    await sleep(500);
    const victim = cluster.nodes.get(VICTIM)!;
    await victim.kill();
    await waitFor(() => cluster.stateOf(VICTIM) === 'failed', `${VICTIM} marked failed`);
    // While it is down: a third of its keys overwritten, a third deleted (its data dir still has them).
    const overwritten = keys.filter((_, i) => i % 3 === 0);
    const deleted = keys.filter((_, i) => i % 3 === 1);
    for (const key of overwritten) await seeder.set(key, `new-${key}`);
    for (const key of deleted) expect(await seeder.del(key)).toBe(true);
    await victim.start();
    await waitUntilUp(cluster, states.seen);
    await sleep(500);
    const stats = await load.stop();
    const written = await writes.stop();
    states.stop();
    expect([...states.seen]).toEqual(expect.arrayContaining(['failed', 'syncing', 'promoting', 'up']));
    expectLinearizable(recorder);
    expect(stats.ok).toBeGreaterThan(200);
    const reader = clients[1]!;
    await expectNothingLost(cluster, reader, written);
    for (const key of deleted) {
      expect((await cluster.copyAt(VICTIM, key)).value, `${key} deleted while ${VICTIM} was down`).toBeNull();
    }
    for (const key of overwritten) expect((await cluster.copyAt(VICTIM, key)).value).toBe(`new-${key}`);
    await expectHealed(cluster, reader, [...keys, ...KEYS], written.attempted);
  });

  it('SIGSTOP past the failure timeout, then SIGCONT: it returns with stale data and an old epoch, syncs and serves', {
    timeout: 90_000,
  }, async () => {
    const recorder = new HistoryRecorder();
    const cluster = await start('memory', recorder);
    const states = watchStates(cluster);
    const keys = [0, 1, 2].flatMap((position) => keysOf(cluster, `stale-${position}`, 30, VICTIM, position));
    const seeder = cluster.client(8000);
    for (const key of keys) await seeder.set(key, `old-${key}`);
    const { clients, load, writes } = await startLoad(cluster, recorder, 'balancer');
    await sleep(500);
    const victim = cluster.nodes.get(VICTIM)!;
    victim.pause();
    try {
      await waitFor(() => cluster.stateOf(VICTIM) === 'failed', `${VICTIM} marked failed`);
      const deleted = keys.filter((_, i) => i % 2 === 0);
      for (const key of deleted) expect(await seeder.del(key)).toBe(true);
    } finally {
      victim.resume();
    }
    await waitUntilUp(cluster, states.seen);
    await sleep(500);
    const stats = await load.stop();
    const written = await writes.stop();
    states.stop();
    expect([...states.seen]).toEqual(expect.arrayContaining(['failed', 'syncing', 'promoting', 'up']));
    expectLinearizable(recorder);
    expect(stats.ok).toBeGreaterThan(200);
    const reader = clients[1]!;
    await expectNothingLost(cluster, reader, written);
    for (const [i, key] of keys.entries()) {
      const copy = await cluster.copyAt(VICTIM, key);
      expect(copy.value === null ? null : copy.value, key).toBe(i % 2 === 0 ? null : `old-${key}`);
    }
    await expectHealed(cluster, reader, [...keys, ...KEYS], written.attempted);
  });
});
