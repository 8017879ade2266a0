/**
 * Replication step 5: ring changes with replication factor 3 and dead members.
 * Real dstore-node processes, an in-process balancer, the checker's workload and a paced set
 * workload throughout (see docs/design/replication.md, "Step 5 as built"):
 *
 * - a node joins under load, then a member is removed gracefully under load: every party routes
 *   on the previous ring's chains while the learners (the next ring's new chain members) receive
 *   every write and a copy of their ranges; the switch freezes and drains the changing chains,
 *   the next ring serves, and the members that left a chain purge it;
 * - a member SIGKILLed, marked failed, then declared dead (`POST /nodes/<id>/remove?dead`, what
 *   `dstore node remove --dead` sends): never asked anything, its ranges copied from their
 *   serving tails to the next members clockwise: N copies again.
 *
 * Each: the history is linearizable, every acknowledged write reads back and sits on every
 * member of its chain, every chain's members hold the same value and version, and each member
 * holds exactly the live keys of its chains (DBSIZE: nothing deleted came back, the members that
 * left purged). Timeouts as in replication-failover.test.ts.
 *
 * DSTORE_DIAG=1: the loaded runs record every map change in the history (see traceMap) and write
 * those events to the temporary directory; the nodes log at info (their stderr is written next to
 * the history file when the checker fails). Read a failure with the checker's `explain-key`.
 */
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HistoryRecorder, Nemesis } from '@dstore/checker';
import type { DstoreClient } from '@dstore/client';
import { HashRing } from '@dstore/hashring';
import { DstoreError, Op, PeerLink } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { Resources, refusal, sleep, startBalancer, startFakeNode, waitFor } from './helpers.js';
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
  type SetOutcome,
  setWorkload,
} from './replicated-cluster.js';

const ADMIN_TOKEN = 'ring-change-admin-token';
const resources = new Resources();
let nemesis = new Nemesis();
afterEach(async () => {
  await nemesis.cleanup();
  await resources.releaseAll();
});

/**
 * `run` again while it fails not executed (a retryable refusal: a node whose lease a loaded
 * machine let run out, a chain frozen by a switch), at most 50 times; with `idempotent` (an MSET
 * of fixed values, a DEL whose answer is not checked) also after an outcome-unknown failure.
 */
async function untilExecuted<T>(run: () => Promise<T>, idempotent = false): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await run();
    } catch (error) {
      const retry =
        error instanceof DstoreError && (error.notExecuted === true || (idempotent && error.retryable));
      if (!retry || attempt >= 50) throw error;
      await sleep(100);
    }
  }
}

/** Records the transition phase of every map the balancer writes (a switch can be short). */
function watchPhases(cluster: ReplicatedCluster): Set<string> {
  const seen = new Set<string>();
  const membership = cluster.balancer.membership;
  const record = (): void => {
    const phase = membership.clusterMap.transition?.phase;
    if (phase !== undefined) seen.add(phase);
  };
  membership.on('change', record);
  resources.add(() => membership.off('change', record));
  return seen;
}

/**
 * Records the reasons of the ring changes the balancer writes, and whether it routed on a union
 * ring that changes weights (a member with a previous weight), polled as the switch can be short.
 */
function watchWeightChange(cluster: ReplicatedCluster): { reasons: Set<string>; unionRouted: boolean } {
  const seen = { reasons: new Set<string>(), unionRouted: false };
  const membership = cluster.balancer.membership;
  const timer = setInterval(() => {
    const reason = membership.clusterMap.transition?.reason;
    if (reason !== undefined) seen.reasons.add(reason);
    if (membership.topology.ring.changesWeights) seen.unionRouted = true;
  }, 2);
  resources.add(() => clearInterval(timer));
  return seen;
}

/**
 * Diagnostics (DSTORE_DIAG=1): records every change of the balancer's map epoch, phase or routed
 * epoch as a nemesis event of the history (same clock as the operations), with the register keys'
 * chains on the routed topology: which node a balancer-routed op went to.
 */
function traceMap(cluster: ReplicatedCluster, recorder: HistoryRecorder): void {
  if (process.env.DSTORE_DIAG !== '1') return;
  const membership = cluster.balancer.membership;
  let last = '';
  const timer = setInterval(() => {
    const map = membership.clusterMap;
    const topology = membership.topology;
    const signature = `${map.epoch}/${map.transition?.phase ?? '-'}/${topology.epoch}`;
    if (signature === last) return;
    last = signature;
    const states = topology.replication?.states;
    const chains = Object.fromEntries(
      KEYS.map((key) => {
        const chain = topology.ring.chainOf(key, FACTOR, states);
        return [key, `${chain.serving.join(',')}|${chain.path.join(',')}`];
      }),
    );
    recorder.nemesis('map', {
      signature,
      epoch: map.epoch,
      phase: map.transition?.phase ?? null,
      routed: topology.epoch,
      states: Object.fromEntries([...(states ?? new Map())].map(([id, state]) => [id, String(state)])),
      chains,
      wall: Date.now(),
    });
  }, 1);
  resources.add(() => {
    clearInterval(timer);
    const maps = recorder.events.filter((event) => event.process === 'nemesis');
    writeFileSync(join(tmpdir(), `dstore-maps-${process.pid}-${Date.now()}.json`), JSON.stringify(maps));
  });
}

/** Waits until the map has no ring change in progress and `done` holds. */
async function settled(cluster: ReplicatedCluster, what: string, done: () => boolean): Promise<void> {
  await waitFor(() => cluster.balancer.membership.clusterMap.transition === null && done(), what, 30_000);
}

/**
 * The end state: every member of the ring up, no range under-replicated, every key's chain of
 * FACTOR members holding one value and version (but `checked`, compared already), and each
 * running member (`holders`) holding exactly the live keys whose chain includes it.
 */
async function expectHealed(
  cluster: ReplicatedCluster,
  reader: DstoreClient,
  keys: readonly string[],
  holders: readonly string[],
  checked: ReadonlySet<string>,
): Promise<void> {
  const map = cluster.balancer.membership.clusterMap;
  for (const member of map.ring.members) expect(cluster.stateOf(member.id), member.id).toBe('up');
  expect(cluster.balancer.membership.chains.some((chain) => chain.underReplicated)).toBe(false);
  const unique = [...new Set(keys)];
  const live = new Set<string>();
  for (let i = 0; i < unique.length; i += 200) {
    const part = unique.slice(i, i + 200);
    const values = await reader.mget(part);
    part.forEach((key, j) => {
      if (values[j] !== null && values[j] !== undefined) live.add(key);
    });
  }
  // The set workload's keys were compared on their chains by expectNothingLost already.
  const compared = [...live].filter((key) => !checked.has(key));
  for (let i = 0; i < compared.length; i += 50) {
    await Promise.all(
      compared.slice(i, i + 50).map((key) => {
        expect(cluster.chainOf(key)).toHaveLength(FACTOR);
        return cluster.expectOnChain(key);
      }),
    );
  }
  for (const id of holders) {
    const expected = [...live].filter((key) => cluster.chainOf(key).includes(id)).length;
    const answer = await (await cluster.peer(id)).request({ op: Op.DBSIZE });
    expect(answer.op === Op.COUNT ? answer.count : -1, `keys held by ${id}`).toBe(expected);
  }
}

/** A cluster of `nodes` with seeded keys and both workloads running; `options` for its balancer. */
async function loaded(
  engine: Engine,
  nodes: readonly string[],
  routing: 'balancer' | 'direct',
  options: { readonly deadAfterMs?: number } = {},
) {
  const recorder = new HistoryRecorder();
  nemesis = new Nemesis(recorder);
  const cluster = await ReplicatedCluster.start({
    engine,
    resources,
    nemesis,
    nodes,
    // Paced copies: writes made while a range is copied must reach its learner through the write
    // path (a copy's scan does not see a key written after it began).
    nodeArgs: ['--migration-rate', '500'],
    balancer: { ...FAILOVER_TIMEOUTS, adminToken: ADMIN_TOKEN, ...options },
  });
  traceMap(cluster, recorder);
  // The joins that formed the cluster are ring changes too: let the last one finish.
  await settled(cluster, 'the cluster formed', () => true);
  const seeded = keysOf(cluster, 'seed', 300);
  const seeder = cluster.client(8000);
  for (let i = 0; i < seeded.length; i += 100) {
    const part = Object.fromEntries(seeded.slice(i, i + 100).map((key) => [key, `old-${key}`]));
    await untilExecuted(() => seeder.mset(part), true);
  }
  const clients = await clientsOf(cluster, resources, routing);
  const writes = setWorkload(clients[0]!, keysOf(cluster, 'set', 5000), 2, 5);
  const load = registerLoad(recorder, clients, KEYS, 60_000, 60_000);
  await sleep(300);
  return {
    cluster,
    seeder,
    seeded,
    /**
     * Stops the load and checks the history, the set workload and the healed cluster; `others`:
     * keys the case wrote itself, live ones compared on their chains too.
     */
    async finish(
      holders: readonly string[],
      deleted: readonly string[],
      others: readonly string[] = [],
    ): Promise<SetOutcome> {
      await sleep(300);
      const stats = await load.stopOnceOk(250);
      const written = await writes.stop();
      expectLinearizable(recorder, cluster);
      expect(stats.ok).toBeGreaterThan(200);
      const reader = clients[1]!;
      await expectNothingLost(cluster, reader, written);
      for (const key of deleted) expect(await reader.getString(key), `${key} stays deleted`).toBeNull();
      await expectHealed(
        cluster,
        reader,
        [...seeded, ...KEYS, ...written.attempted, ...others],
        holders,
        new Set(written.attempted),
      );
      return written;
    },
  };
}

describe('ring changes a union ring cannot route', () => {
  it('ketama: a join with another weight is refused with INVALID_ARGUMENT, nothing written', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: FACTOR, hash: 'ketama' });
    const join = async (id: string, weight: number) => {
      const node = await startFakeNode(resources, id);
      const link = new PeerLink({ host: '127.0.0.1', port: balancer.address.port, role: 'node' });
      resources.add(() => link.close());
      link.start();
      await waitFor(() => link.isReady, `${id} link ready`);
      return link.request({ op: Op.JOIN, nodeId: id, host: '127.0.0.1', port: node.port, weight });
    };
    // The first member: no previous ring, nothing to route.
    await join('node-1', 1);
    const epoch = balancer.membership.clusterMap.epoch;
    // twemproxy's counts: node-1 has 160 points alone, 104 beside a member of weight 2.
    const refused = await refusal(join('node-2', 2));
    expect(refused.code).toBe('INVALID_ARGUMENT');
    expect(refused.message).toContain('+node-2');
    expect(balancer.membership.clusterMap.epoch).toBe(epoch);
    expect(balancer.membership.clusterMap.members.map((member) => member.id)).toEqual(['node-1']);
  });

  it('ketama: a new incarnation with another weight is failed at its old weight, the weight change refused', {
    timeout: 30_000,
  }, async () => {
    const balancer = await startBalancer(resources, {
      replicationFactor: FACTOR,
      hash: 'ketama',
      // Fake nodes do not heartbeat: none is found silent meanwhile, and a stopped one is not live.
      failureTimeoutMs: 60_000,
      heartbeatTimeoutMs: 300,
    });
    const membership = balancer.membership;
    const fakes = new Map<string, Awaited<ReturnType<typeof startFakeNode>>>();
    const join = async (id: string, weight: number, identity: string) => {
      const fake = fakes.get(id) ?? (await startFakeNode(resources, id));
      fakes.set(id, fake);
      const link = new PeerLink({ host: '127.0.0.1', port: balancer.address.port, role: 'node' });
      resources.add(() => link.close());
      link.start();
      await waitFor(() => link.isReady, `${id} link ready`);
      return link.request({ op: Op.JOIN, nodeId: id, host: '127.0.0.1', port: fake.port, weight, identity });
    };
    // Equal weights: 160 points each throughout, every join routable.
    for (const id of ['node-1', 'node-2', 'node-3']) {
      await join(id, 1, `${id}-a`);
      await waitFor(() => membership.clusterMap.transition === null, `${id} joined`);
    }
    // node-1 restarted empty (a memory node) with another weight: it must be failed (it lost its
    // copies) in the same write, and keeps weight 1 (ketama cannot route the weight change).
    const first = fakes.get('node-1')!;
    await first.stop();
    await waitFor(() => membership.node('node-1')?.link.isReady === false, 'node-1 link down');
    await sleep(400);
    await first.restart();
    // The balancer's link reaches the new process at the same address before its JOIN: that link
    // proves nothing about the old one (it was refused as live while the link stayed up).
    await waitFor(() => membership.node('node-1')?.link.isReady === true, 'node-1 link up again');
    await join('node-1', 2, 'node-1-b');
    const member = membership.clusterMap.members.find((m) => m.id === 'node-1')!;
    expect(member.identity).toBe('node-1-b');
    expect(member.replicaState).toBe('failed');
    expect(member.weight).toBe(1);
    expect(membership.clusterMap.transition).toBeNull();
  });
});

describe('ring changes with replication factor 3', () => {
  it('memory: a node joins under load, weights change, a member is removed gracefully, a joining node fails and returns', {
    timeout: 90_000,
  }, async () => {
    const { cluster, seeder, seeded, finish } = await loaded(
      'memory',
      ['node-1', 'node-2', 'node-3', 'node-4'],
      'balancer',
    );
    const membership = cluster.balancer.membership;
    const phases = watchPhases(cluster);
    // Deleted before the changes: they must not come back through a copy or a purge.
    const deleted = seeded.filter((_, i) => i % 10 === 0);
    for (const key of deleted) expect(await untilExecuted(() => seeder.del(key))).toBe(true);

    await cluster.startNode('node-5', 'memory', nemesis);
    // Weight changes (what a node that JOINs again with another --weight asks), sent while node-5's
    // change runs: they wait in the map and start as one ring change when it ends, routed on a
    // union ring whose members carry their previous weights (node-1 grows and learns the ranges
    // it gains, node-3 shrinks and serves its ranges until the switch, then purges them).
    const weighted = watchWeightChange(cluster);
    await waitFor(
      () => membership.clusterMap.ring.members.some((member) => member.id === 'node-5'),
      'node-5 entering',
    );
    // Writes, 4 at a time, of keys whose chain keeps its members in another order (a member's new
    // points come before another's): in flight while the change switches and installs, they must
    // be on every member of the next chain once acknowledged (the switch drains such chains).
    const weights = new Map([
      ['node-1', 2],
      ['node-3', 0.5],
    ]);
    const ringAt = (weight: (id: string) => number) =>
      HashRing.from(cluster.ring.nodes().map((node) => ({ id: node.id, weight: weight(node.id) })));
    const previousRing = ringAt(() => 1);
    const nextRing = ringAt((id) => weights.get(id) ?? 1);
    const reordered = keysOf(cluster, 'reordered', 40_000).filter((key) => {
      const before = previousRing.getN(key, FACTOR);
      const after = nextRing.getN(key, FACTOR);
      return after.every((id) => before.includes(id)) && after.some((id, i) => before[i] !== id);
    });
    const reorderedWrites = setWorkload(cluster.client(8000), reordered, 4, 5);
    for (const [id, weight] of weights) {
      // A link speaks for one node.
      const link = new PeerLink({ host: '127.0.0.1', port: cluster.port, role: 'node' });
      resources.add(() => link.close());
      link.start();
      await waitFor(() => link.isReady, 'control link ready');
      const node = membership.node(id)!;
      await link.request({ op: Op.JOIN, nodeId: id, host: node.host, port: node.port, weight });
    }
    await settled(cluster, 'node-5 joined and the weights changed', () => {
      const members = membership.clusterMap.ring.members;
      const weightOf = (id: string) => members.find((member) => member.id === id)?.weight;
      return weightOf('node-5') === 1 && weightOf('node-1') === 2 && weightOf('node-3') === 0.5;
    });
    const reorderedOutcome = await reorderedWrites.stop();
    expect(reorderedOutcome.acknowledged.size).toBeGreaterThan(0);
    await expectNothingLost(cluster, seeder, reorderedOutcome);
    // One change when both waited for node-5's (the usual case), else one each.
    const reasons = [...weighted.reasons].join('; ');
    expect(reasons).toContain('node-1 weight 1->2');
    expect(reasons).toContain('node-3 weight 1->0.5');
    expect(weighted.unionRouted, 'routed on a union ring with previous weights').toBe(true);
    expect(cluster.ring.nodes().filter((node) => node.weight !== 1)).toEqual([
      { id: 'node-1', weight: 2 },
      { id: 'node-3', weight: 0.5 },
    ]);
    // The ring before the weight change (every member at weight 1): node-1 holds copies of the
    // ranges it gained; the ranges node-3 lost are on every member of their new chains (what it
    // purged is counted at the end: DBSIZE).
    const before = HashRing.from(cluster.ring.nodes().map((node) => ({ id: node.id, weight: 1 })));
    const kept = seeded.filter((_, i) => i % 10 !== 0);
    const gained = kept.filter(
      (key) => cluster.chainOf(key).includes('node-1') && !before.getN(key, FACTOR).includes('node-1'),
    );
    const lost = kept.filter(
      (key) => !cluster.chainOf(key).includes('node-3') && before.getN(key, FACTOR).includes('node-3'),
    );
    expect(gained.length).toBeGreaterThan(0);
    expect(lost.length).toBeGreaterThan(0);
    for (const key of gained.slice(0, 30))
      expect((await cluster.copyAt('node-1', key)).value, `${key} on node-1`).toBe(`old-${key}`);
    for (const key of lost.slice(0, 30)) await cluster.expectOnChain(key, `old-${key}`);
    // The new member holds copies of its ranges' keys written before it joined.
    const onNew = seeded.filter((key, i) => i % 10 !== 0 && cluster.chainOf(key).includes('node-5'));
    expect(onNew.length).toBeGreaterThan(0);
    for (const key of onNew.slice(0, 30))
      expect((await cluster.copyAt('node-5', key)).value).toBe(`old-${key}`);
    expect([...phases]).toEqual(['stream', 'switch', 'install', 'purge']);
    expect(
      await metric(cluster.balancer.address.adminPort, 'dstore_balancer_sync_keys_total'),
    ).toBeGreaterThan(0);
    expect(
      await metric(cluster.balancer.address.adminPort, 'dstore_balancer_sync_bytes_total'),
    ).toBeGreaterThan(0);

    const removed = membership.leave('node-2', 'operator');
    await settled(cluster, 'node-2 removed', () =>
      membership.clusterMap.members.every((m) => m.id !== 'node-2' || m.state === 'removed'),
    );
    expect(await removed).toBe(true);

    // A member that fails while it enters (paused past the failure timeout): it leaves the union
    // ring (nothing waits for it), and once back it re-enters with a wipe and is copied again.
    await cluster.startNode('node-6', 'memory', nemesis);
    const sixth = cluster.nodes.get('node-6')!;
    await waitFor(
      () => membership.clusterMap.ring.members.some((member) => member.id === 'node-6'),
      'node-6 entering',
    );
    // Keys written through its write path while it learns (acknowledged only once it has them),
    // deleted while it is away: they must not come back on it (it wipes when it re-enters).
    await waitFor(
      () => membership.topology.replication?.states?.get('node-6') === 'entering',
      'routing on the union ring with node-6 entering',
    );
    const union = membership.topology;
    const fresh = keysOf(cluster, 'fresh', 400).filter((key) =>
      union.ring.chainOf(key, FACTOR, union.replication!.states).path.includes('node-6'),
    );
    await untilExecuted(() => seeder.mset(Object.fromEntries(fresh.map((key) => [key, 'fresh']))), true);
    sixth.pause();
    try {
      await waitFor(() => cluster.stateOf('node-6') === 'failed', 'node-6 marked failed', 20_000);
      for (const key of fresh) await untilExecuted(() => seeder.del(key), true);
    } finally {
      sixth.resume();
    }
    await settled(cluster, 'node-6 joined after it failed', () => cluster.stateOf('node-6') === 'up');
    await finish(
      ['node-1', 'node-2', 'node-3', 'node-4', 'node-5', 'node-6'],
      [...deleted, ...fresh],
      reorderedOutcome.attempted,
    );
  });

  it('memory: an entering member that failed and returns while the changing chains switch is copied before it serves', {
    timeout: 90_000,
  }, async () => {
    nemesis = new Nemesis();
    // A failure timeout with room for holding a member through the switch (see below).
    const cluster = await ReplicatedCluster.start({
      engine: 'memory',
      resources,
      nemesis,
      nodes: ['node-1', 'node-2', 'node-3', 'node-4'],
      balancer: { heartbeatTimeoutMs: 1000, leaseMs: 2000, failureTimeoutMs: 5000, adminToken: ADMIN_TOKEN },
    });
    await settled(cluster, 'the cluster formed', () => true);
    const seeded = keysOf(cluster, 'seed', 300);
    const seeder = cluster.client(8000);
    await untilExecuted(
      () => seeder.mset(Object.fromEntries(seeded.map((key) => [key, `old-${key}`]))),
      true,
    );
    const membership = cluster.balancer.membership;
    const fifth = 'node-5';
    const held = cluster.nodes.get('node-1')!;
    // Synchronous with the map writes (before any RING of them is sent): node-5 is paused as it
    // enters (it answers nothing, is marked failed and leaves the union ring: no learner is left,
    // the copies are done), and node-1, a member of both rings, is paused the moment the switch is
    // written, so the switch waits for its answer while node-5 comes back.
    let entered = false;
    let switching = false;
    const onChange = (): void => {
      const map = membership.clusterMap;
      if (!entered && map.transition?.phase === 'stream' && map.ring.members.some((m) => m.id === fifth)) {
        entered = true;
        cluster.nodes.get(fifth)!.pause();
      }
      if (entered && !switching && map.transition?.phase === 'switch') {
        switching = true;
        held.pause();
      }
    };
    membership.on('change', onChange);
    resources.add(() => {
      membership.off('change', onChange);
      held.resume();
      cluster.nodes.get(fifth)?.resume();
    });
    await cluster.startNode(fifth, 'memory', nemesis);
    await waitFor(() => switching, 'node-5 failed while entering, the switch written', 30_000);
    expect(cluster.stateOf(fifth)).toBe('failed');
    // node-5 heartbeats again while the switch waits for node-1: give the writer a failure-check
    // tick (at most 1 s here) to let it back in, if it does, then let the switch finish.
    const link = membership.node(fifth)!;
    const silentSince = link.lastHeartbeatAt;
    cluster.nodes.get(fifth)!.resume();
    await waitFor(() => link.lastHeartbeatAt > silentSince, 'node-5 heard again');
    await waitFor(() => cluster.stateOf(fifth) === 'up', 'node-5 back in its ring change', 1500).catch(
      () => undefined,
    );
    // The window this test is about: node-5 heard while the switch still waits for node-1.
    expect(membership.clusterMap.transition?.phase).toBe('switch');
    expect(cluster.stateOf('node-1')).toBe('up');
    held.resume();
    await settled(cluster, 'node-5 joined', () => cluster.stateOf(fifth) === 'up');
    // Serving now, node-5 holds every key of its chains, and reads of the keys it is the tail of
    // (through the balancer) return them: it was copied before it served.
    const onFifth = seeded.filter((key) => cluster.chainOf(key).includes(fifth));
    const tailed = onFifth.filter((key) => cluster.chainOf(key).at(-1) === fifth);
    expect(tailed.length).toBeGreaterThan(0);
    for (const key of tailed)
      expect(await seeder.getString(key), `${key} read through the balancer`).toBe(`old-${key}`);
    for (const key of onFifth) expect((await cluster.copyAt(fifth, key)).value, key).toBe(`old-${key}`);
  });

  it('lmdb, direct routing: a member SIGKILLed, then removed as dead: N copies again from the survivors', {
    timeout: 90_000,
  }, async () => {
    const { cluster, seeded, finish } = await loaded(
      'lmdb',
      ['node-1', 'node-2', 'node-3', 'node-4', 'node-5'],
      'direct',
    );
    const membership = cluster.balancer.membership;
    const adminPort = cluster.balancer.address.adminPort;
    const victim = 'node-3';
    const held = seeded.filter((key) => cluster.chainOf(key).includes(victim));
    await cluster.nodes.get(victim)!.kill();
    await waitFor(() => cluster.stateOf(victim) === 'failed', `${victim} marked failed`, 20_000);
    expect(await metric(adminPort, 'dstore_balancer_under_replicated_ranges')).toBeGreaterThan(0);
    // An up member cannot be declared dead: it may still serve.
    const post = { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } };
    const refused = await fetch(`http://127.0.0.1:${adminPort}/nodes/node-1/remove?dead`, post);
    expect(refused.status).toBe(400);
    const accepted = await fetch(`http://127.0.0.1:${adminPort}/nodes/${victim}/remove?dead`, post);
    expect(accepted.status).toBe(202);
    await settled(cluster, `${victim} removed as dead`, () =>
      membership.clusterMap.members.every((m) => m.id !== victim || m.state === 'removed'),
    );
    expect(membership.clusterMap.members.find((m) => m.id === victim)?.replicaState).toBe('dead');
    // Its keys have N copies again, on the survivors only.
    for (const key of held.slice(0, 30)) {
      expect(cluster.chainOf(key)).not.toContain(victim);
      await cluster.expectOnChain(key, `old-${key}`);
    }
    expect(await metric(adminPort, 'dstore_balancer_under_replicated_ranges')).toBe(0);
    await finish(['node-1', 'node-2', 'node-4', 'node-5'], []);
  });

  it('memory, --dead-after: a member SIGKILLed is declared dead on its own once failed that long: N copies again', {
    timeout: 90_000,
  }, async () => {
    const { cluster, seeded, finish } = await loaded(
      'memory',
      ['node-1', 'node-2', 'node-3', 'node-4', 'node-5'],
      'balancer',
      { deadAfterMs: 2000 },
    );
    const membership = cluster.balancer.membership;
    const adminPort = cluster.balancer.address.adminPort;
    // A member that fails and comes back is not declared dead while it waits to catch up (its sync
    // waits for the ring change running meanwhile, longer than --dead-after: paced copies), only
    // one that stays silent that long.
    const returning = cluster.nodes.get('node-5')!;
    returning.pause();
    try {
      await waitFor(() => cluster.stateOf('node-5') === 'failed', 'node-5 marked failed', 20_000);
      await cluster.startNode('node-6', 'memory', nemesis);
      await waitFor(
        () => membership.clusterMap.transition?.phase === 'stream',
        'node-6 joining (streaming)',
        20_000,
      );
    } finally {
      returning.resume();
    }
    const states = new Set<string>();
    await waitFor(
      () => {
        states.add(cluster.stateOf('node-5') ?? 'removed');
        return cluster.stateOf('node-5') === 'up';
      },
      'node-5 up again',
      60_000,
    );
    expect(states.has('syncing')).toBe(true);
    expect(states.has('dead') || states.has('removed')).toBe(false);
    const victim = 'node-4';
    const held = seeded.filter((key) => cluster.chainOf(key).includes(victim));
    await cluster.nodes.get(victim)!.kill();
    // Failed after the failure timeout, dead and removed after --dead-after more, with no operator.
    await settled(cluster, `${victim} removed as dead`, () =>
      membership.clusterMap.members.every((m) => m.id !== victim || m.state === 'removed'),
    );
    const removed = membership.clusterMap.members.find((m) => m.id === victim);
    expect(removed?.replicaState).toBe('dead');
    expect(removed?.leftBy).toBe('operator');
    for (const key of held.slice(0, 30)) {
      expect(cluster.chainOf(key)).not.toContain(victim);
      await cluster.expectOnChain(key, `old-${key}`);
    }
    expect(await metric(adminPort, 'dstore_balancer_under_replicated_ranges')).toBe(0);
    expect(await metric(adminPort, 'dstore_balancer_dead_members')).toBe(0);
    await finish(['node-1', 'node-2', 'node-3', 'node-5', 'node-6'], []);
  });
});
