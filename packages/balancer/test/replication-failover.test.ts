/**
 * Replication step 3: leases, failure detection and failover. Five real dstore-node
 * processes, replication factor 3, an in-process balancer, under the checker's workload with
 * SIGKILL and SIGSTOP faults (see docs/design/replication.md, "Step 3 as built").
 *
 * Timeouts: nodes heartbeat every 200 ms, the lease is 1500 ms and the failure timeout 3000 ms.
 * On a loaded 2-core CI machine a node's heartbeat can be late by a few hundred ms (GC, scheduling)
 * without its lease lapsing (five heartbeats per lease), and a healthy node is never silent for
 * 3 s, so only the faulted nodes are marked failed; 3 s keeps the tests short.
 */
import { HistoryRecorder, Nemesis } from '@dstore/checker';
import { DstoreError, ErrorCode, Op, type Response } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { attempt, NODE_CLI, type NodeReady, Resources, sleep, waitFor } from './helpers.js';
import {
  clientsOf,
  type Engine,
  expectLinearizable,
  expectNothingLost,
  FAILOVER_TIMEOUTS,
  keysOf,
  REGISTER_KEYS,
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

const FAILOVER = FAILOVER_TIMEOUTS;
const KEYS = REGISTER_KEYS;
const text = new TextEncoder();

function start(engine: Engine, recorder?: HistoryRecorder): Promise<ReplicatedCluster> {
  nemesis = new Nemesis(recorder);
  return ReplicatedCluster.start({ engine, resources, nemesis, balancer: FAILOVER });
}

/**
 * Runs `write` (an idempotent SET of a fresh key) until it settles without an indeterminate
 * failure: one sent to the balancer just before it saw the node's socket close fails with
 * CONNECTION_CLOSED (may have run), and only then is it sent again. A not-executed refusal
 * (UNAVAILABLE while the node is down) is the client's to absorb: it reaches the test and fails it.
 */
async function rideThrough<T>(write: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      return await write();
    } catch (error) {
      if (error instanceof DstoreError && !error.notExecuted && error.code !== ErrorCode.TIMEOUT) continue;
      throw error;
    }
  }
}

describe.each([
  { engine: 'memory', routing: 'balancer' },
  { engine: 'lmdb', routing: 'direct' },
] as const)('failover, factor 3 on 5 nodes ($engine, $routing)', ({ engine, routing }) => {
  it('SIGKILL of one node under load: marked failed, its chains serve again, nothing acknowledged lost', {
    timeout: 60_000,
  }, async () => {
    const recorder = new HistoryRecorder();
    const cluster = await start(engine, recorder);
    const clients = await clientsOf(cluster, resources, routing);
    const victim = 'node-2';
    // A key where the victim is the middle: its head's forwards to it are in flight when it dies.
    const middleKey = cluster.keyWhere(victim, 1, 'middle');
    const keys = [...KEYS, middleKey];
    // Writers of new keys whose chains have the victim in the middle: their heads' forwards are in
    // flight when it dies, and only the re-send brings them to the new successors.
    const writes = setWorkload(clients[0]!, keysOf(cluster, 'set', 20_000, victim, 1), 8);
    const load = registerLoad(recorder, clients, keys, 6000);
    // A client whose deadline outlasts the failure timeout: the failover is invisible to it.
    const rider = cluster.client(FAILOVER.failureTimeoutMs * 5);
    const riddenKey = cluster.keyWhere(victim, 0, 'ride');
    await rider.set(riddenKey, 'before');
    await sleep(1000);
    await cluster.nodes.get(victim)!.kill();
    const ridden = rideThrough(() => rider.set(riddenKey, 'through'));
    await waitFor(() => cluster.stateOf(victim) === 'failed', `${victim} marked failed`);
    // Refused (UNAVAILABLE, not executed) until the failover, resent by the client, then served.
    expect(await ridden).toBe('OK');
    const stats = await load.done;
    const written = await writes.stop();
    expectLinearizable(recorder);
    expect(stats.ok).toBeGreaterThan(200);
    expect(await rider.getString(riddenKey)).toBe('through');
    // Only the victim failed; its ranges take writes again (at their new heads).
    expect([...cluster.states.values()].filter((state) => state === 'failed')).toEqual(['failed']);
    const writer = clients[1]!;
    await writer.set(middleKey, 'after');
    expect(await writer.getString(middleKey)).toBe('after');
    await cluster.expectOnChain(middleKey, 'after');
    // The survivors of every chain converged (re-sent entries included).
    for (const key of KEYS) await cluster.expectOnChain(key);
    expect(written.acknowledged.size).toBeGreaterThan(50);
    await expectNothingLost(cluster, writer, written);
  });
});

describe('failover, factor 3 on 5 nodes (memory, two at once)', () => {
  it('SIGKILL of two nodes at once: both failed, chains holding both keep one copy and serve', {
    timeout: 60_000,
  }, async () => {
    const recorder = new HistoryRecorder();
    const cluster = await start('memory', recorder);
    const clients = await clientsOf(cluster, resources, 'balancer');
    const [first, second] = ['node-2', 'node-3'];
    // A key whose chain holds both victims: one member survives.
    let both = '';
    for (let i = 0; both === ''; i++) {
      const chain = cluster.chainOf(`both-${i}`);
      if (chain.includes(first) && chain.includes(second)) both = `both-${i}`;
    }
    const keys = [...KEYS, both];
    const writes = setWorkload(clients[0]!, keysOf(cluster, 'set', 20_000), 4);
    const load = registerLoad(recorder, clients, keys, 6000);
    await sleep(1000);
    await Promise.all([cluster.nodes.get(first)!.kill(), cluster.nodes.get(second)!.kill()]);
    await waitFor(
      () => cluster.stateOf(first) === 'failed' && cluster.stateOf(second) === 'failed',
      'both marked failed',
    );
    const stats = await load.done;
    const written = await writes.stop();
    expectLinearizable(recorder);
    expect(stats.ok).toBeGreaterThan(200);
    expect(cluster.chainOf(both)).toHaveLength(1);
    const writer = clients[1]!;
    await writer.set(both, 'one copy');
    expect(await writer.getString(both)).toBe('one copy');
    for (const key of KEYS) await cluster.expectOnChain(key);
    await expectNothingLost(cluster, writer, written);
  });
});

describe('a failure while a ring change waits on the failed member', () => {
  it('a node paused during a join (empty cluster) is marked failed, the survivors get the failover ring and serve its keys', {
    timeout: 60_000,
  }, async () => {
    const cluster = await start('memory');
    const victim = 'node-2';
    // Keys with the victim in their chain, by position: head, middle, tail.
    const keys = [0, 1, 2].flatMap((position) => keysOf(cluster, `join-${position}`, 5, victim, position));
    const epochBefore = cluster.balancer.membership.clusterMap.ring.epoch;
    cluster.nodes.get(victim)!.pause();
    // The cluster holds no keys yet, so the ring may still change: a sixth node joins, and the
    // transition's RING and PURGE wait on the paused member until it is marked failed.
    const sixth = nemesis.process<NodeReady>({
      name: 'node-6',
      script: NODE_CLI,
      args: [
        '--port',
        '0',
        '--id',
        'node-6',
        '--join',
        `127.0.0.1:${cluster.port}`,
        '--heartbeat-interval',
        '200',
        '--log-level',
        'error',
      ],
    });
    cluster.nodes.set('node-6', sixth);
    await sixth.start();
    await waitFor(() => cluster.stateOf(victim) === 'failed', 'the paused member marked failed', 20_000);
    expect(cluster.balancer.membership.clusterMap.ring.epoch).toBeGreaterThan(epochBefore);
    // Every key whose chain held the victim is writable and readable again: the survivors were
    // told of the failover although the transition had not finished.
    const client = cluster.client(8000);
    for (const key of keys) {
      await client.set(key, `after-${key}`);
      expect(await client.getString(key)).toBe(`after-${key}`);
    }
    // And the transition finishes without it.
    await waitFor(
      () => cluster.balancer.membership.clusterMap.transition === null,
      'the join finished',
      20_000,
    );
  });
});

describe('leases: a node that may have been replaced answers nothing', () => {
  it('SIGSTOP past the failure timeout, then SIGCONT: requests on the old map are all refused', {
    timeout: 60_000,
  }, async () => {
    const recorder = new HistoryRecorder();
    const cluster = await start('memory', recorder);
    const clients = await clientsOf(cluster, resources, 'balancer');
    const victim = 'node-4';
    const tailKey = cluster.keyWhere(victim, 2, 'tail');
    const headKey = cluster.keyWhere(victim, 0, 'head');
    await clients[0]!.set(tailKey, 'old');
    await clients[0]!.set(headKey, 'old');
    const oldEpoch = cluster.balancer.membership.topology.epoch;
    // A client connection straight to the victim, holding the OLD map: it will send there.
    const stale = await cluster.direct(victim);
    const load = registerLoad(recorder, clients, KEYS, 6000);
    const node = cluster.nodes.get(victim)!;
    await sleep(500);
    node.pause();
    let resumed = false;
    try {
      await waitFor(() => cluster.stateOf(victim) === 'failed', `${victim} marked failed`);
      // Newer values the victim never saw, written through the new chains.
      await clients[1]!.set(tailKey, 'new');
      await clients[1]!.set(headKey, 'new');
      // Sent while it is paused: it reads them first thing after SIGCONT, with its old map.
      const answers = [
        attempt(stale, { op: Op.GET, key: text.encode(tailKey), epoch: oldEpoch }),
        attempt(stale, {
          op: Op.SET,
          key: text.encode(headKey),
          value: text.encode('stale'),
          epoch: oldEpoch,
        }),
        attempt(stale, { op: Op.GET, key: text.encode(tailKey) }),
      ];
      node.resume();
      resumed = true;
      for (const answer of await Promise.all(answers)) expectRefused(answer);
    } finally {
      if (!resumed) node.resume();
    }
    await load.done;
    expectLinearizable(recorder);
    expect(await clients[2]!.getString(tailKey)).toBe('new');
    expect(await clients[2]!.getString(headKey)).toBe('new');
    // Back and heartbeating, it is no longer left failed: it catches up as a learner (step 4,
    // replication-recovery.test.ts) and, being wiped first, never serves its stale values.
  });

  it('a node cut off from the map writer stops serving once its lease runs out', {
    timeout: 60_000,
  }, async () => {
    const cluster = await start('memory');
    const writer = cluster.client();
    await writer.set('leased', 'v');
    const [head, , tail] = cluster.chainOf('leased') as [string, string, string];
    const epoch = cluster.balancer.membership.topology.epoch;
    const reader = await cluster.direct(tail);
    const key = text.encode('leased');
    expect(await reader.request({ op: Op.GET, key, epoch })).toMatchObject({ op: Op.VALUE });
    // The writer goes away (as if another balancer took over and failed the nodes): no heartbeat
    // answer renews the leases, and past one lease every node refuses, on the map it still has.
    await cluster.balancer.stop();
    await sleep(FAILOVER.leaseMs + 500);
    const read = await attempt(reader, { op: Op.GET, key, epoch });
    expectRefused(read);
    expect((read as DstoreError).code).toBe(ErrorCode.UNAVAILABLE);
    expect((read as DstoreError).message).toContain('lease');
    const write = await attempt(await cluster.direct(head), {
      op: Op.SET,
      key,
      value: text.encode('w'),
      epoch,
    });
    expect((write as DstoreError).code).toBe(ErrorCode.UNAVAILABLE);
  });
});

describe('REPLICATE receivers (a peer connection standing in for a predecessor)', () => {
  it('a re-sent older write never resurrects a replicated delete; gaps and stale epochs are refused', {
    timeout: 60_000,
  }, async () => {
    const cluster = await start('memory');
    const [, , tail] = cluster.chainOf('resent') as [string, string, string];
    const epoch = cluster.balancer.membership.topology.epoch;
    const key = text.encode('resent');
    const put = { key, value: text.encode('old'), writeEpoch: epoch, version: 1_000, expireAt: 0 };
    const del = { key, value: null, writeEpoch: epoch, version: 2_000, expireAt: 0 };
    const first = await cluster.newPeer(tail);
    expect(await first.request({ op: Op.REPLICATE, epoch, batch: 1, entries: [put] })).toMatchObject({
      op: Op.REPLICATED,
    });
    expect(await first.request({ op: Op.REPLICATE, epoch, batch: 2, entries: [del] })).toMatchObject({
      op: Op.REPLICATED,
    });
    // The predecessor re-sends its older put (a failover's re-send restarts at batch 1).
    expect(await first.request({ op: Op.REPLICATE, epoch, batch: 1, entries: [put] })).toMatchObject({
      op: Op.REPLICATED,
    });
    const client = await cluster.direct(tail);
    expect(await client.request({ op: Op.GET, key, epoch })).toMatchObject({ op: Op.VALUE, value: null });
    // A batch after a gap in its stream is refused, typed; nothing of it is applied.
    const gap = await attempt(first, {
      op: Op.REPLICATE,
      epoch,
      batch: 5,
      entries: [{ ...put, version: 3_000 }],
    });
    expect((gap as DstoreError).code).toBe(ErrorCode.REPLICATION_GAP);
    expect(await client.request({ op: Op.GET, key, epoch })).toMatchObject({ op: Op.VALUE, value: null });
    // A predecessor at an older epoch cannot get a write acknowledged.
    const stale = await attempt(await cluster.newPeer(tail), {
      op: Op.REPLICATE,
      epoch: epoch - 1,
      batch: 1,
      entries: [{ ...put, version: 4_000 }],
    });
    expect((stale as DstoreError).code).toBe(ErrorCode.STALE_EPOCH);
    expect(await client.request({ op: Op.GET, key, epoch })).toMatchObject({ op: Op.VALUE, value: null });
  });
});

/** A request to a node that may be stale was refused (never a value, never an OK): an error or MOVED. */
function expectRefused(answer: Response | DstoreError): void {
  if (!(answer instanceof DstoreError)) {
    expect(answer.op, `answered ${JSON.stringify(answer)}`).toBe(Op.MOVED);
    return;
  }
  expect([ErrorCode.UNAVAILABLE, ErrorCode.STALE_EPOCH, ErrorCode.NOT_OWNER]).toContain(answer.code);
}
