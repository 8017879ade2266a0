/**
 * Replication step 4 on the node side: a learner at the end of a write path, and the drain before
 * it is promoted. Two in-process nodes (the serving members) and a stand-in learner: a peer server
 * that holds its answers to REPLICATE, so a write stays in flight for as long as the test wants.
 * Also the switch of a weight change that keeps a chain's members in another order (step 5).
 */
import { HashRing } from '@dstore/hashring';
import { type Connection, DstoreError, ErrorCode, Op, type RingMember, toBytes } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeBalancer } from './fake-balancer.js';
import { HeldPeer } from './held-peer.js';
import { answerOf, Resources, ringRequest, sleep } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.cleanup());

const IDS = ['node-a', 'node-b', 'node-m'] as const;
const LEARNER = 'node-m';

/**
 * The RING of `epoch` over {@link IDS} (factor 3, vnode), each member at `portOf(id)`, the learner
 * in `learnerState` and the others up; `switching` marks a ring change's switch.
 */
function learnerRing(
  epoch: number,
  portOf: (id: string) => number,
  learnerState: 'syncing' | 'promoting' | 'entering',
  switching = false,
) {
  return ringRequest(
    epoch,
    IDS.map(
      (id): RingMember => ({
        id,
        weight: 1,
        host: '127.0.0.1',
        port: portOf(id),
        replicaState: id === LEARNER ? learnerState : 'up',
      }),
    ),
    { replicationFactor: 3, ...(switching ? { switching } : {}) },
  );
}

/**
 * Two nodes (`engine`) holding leases from a fake balancer and the learner stand-in; a key whose
 * desired chain is [learner, head, tail] (the learner heads it once up); `ringOf` builds the RING
 * of an epoch with the learner `syncing` or `promoting`, and `control` holds a balancer-role
 * connection to each node, which already applied the `syncing` ring of epoch 10.
 */
async function learnerCluster(engine: 'memory' | 'lmdb', first: 'syncing' | 'entering' = 'syncing') {
  const balancer = new FakeBalancer(resources);
  balancer.lease = 60_000;
  const balancerPort = await balancer.start();
  const ports = new Map<string, number>();
  for (const id of ['node-a', 'node-b']) {
    const node = await resources.node({
      id,
      join: `127.0.0.1:${balancerPort}`,
      heartbeatIntervalMs: 100,
      ...(engine === 'lmdb' ? { engine, dataDir: resources.tempDir() } : { engine }),
    });
    ports.set(id, node.address.port);
  }
  const learner = new HeldPeer(resources, LEARNER);
  ports.set(LEARNER, await learner.start());
  // Both nodes hold a lease (heartbeat answers) before they are asked to serve.
  while (balancer.count(Op.HEARTBEAT) < 4) await sleep(20);
  const ring = HashRing.from(
    IDS.map((id) => ({ id })),
    { algorithm: 'vnode' },
  );
  // A key whose desired chain starts with the learner: once up it is the key's head.
  let key = '';
  for (let i = 0; key === ''; i++) if (ring.chainOf(`k-${i}`, 3).desired[0] === LEARNER) key = `k-${i}`;
  const [, head, tail] = ring.chainOf(key, 3).desired as [string, string, string];
  const ringOf = (epoch: number, learnerState: 'syncing' | 'promoting' | 'entering', switching = false) =>
    learnerRing(epoch, (id) => ports.get(id)!, learnerState, switching);
  const control = new Map<string, Connection>();
  for (const id of [head, tail]) {
    const connection = await resources.peer(ports.get(id)!);
    control.set(id, connection);
    expect(await connection.request(ringOf(10, first))).toMatchObject({ op: Op.OK });
  }
  return { learner, key, head, tail, ringOf, control };
}

/**
 * Sends `ring` (a promoting or switching RING at epoch 11) to the chain's head and tail while
 * `write` waits on the held learner: the head refuses a new write of the chain at once (not
 * executed), and neither node answers the RING before the learner lets `write` through.
 */
async function expectFrozenUntilDrained(
  cluster: {
    head: string;
    tail: string;
    control: Map<string, Connection>;
    learner: { release(): void };
    key: string;
    write: Promise<unknown>;
  },
  ring: Parameters<Connection['request']>[0],
): Promise<void> {
  const { head, tail, control, learner, key, write } = cluster;
  const events: string[] = [];
  const rings = [head, tail].map((id) =>
    control
      .get(id)!
      .request(ring)
      .then(() => events.push(`ring ${id}`)),
  );
  // On the same connection, after the RING: a new write of the chain is refused, not executed.
  const refused = await answerOf(
    control.get(head)!.request({ op: Op.SET, key: toBytes(key), value: toBytes('refused'), epoch: 11 }),
  );
  expect(refused).toBeInstanceOf(DstoreError);
  expect((refused as DstoreError).code).toBe(ErrorCode.BUSY);
  expect((refused as DstoreError).notExecuted).toBe(true);
  // Give the nodes every chance to answer early (they must not), then let the write through.
  await sleep(300);
  events.push('released');
  learner.release();
  expect(await write).toMatchObject({ op: Op.OK });
  await Promise.all(rings);
  expect(events[0]).toBe('released');
  expect(events).toHaveLength(3);
}

describe('a learner at the end of the write path (factor 3)', () => {
  it('receives every write after the serving tail; promoting it makes heads refuse its chains and every node answer RING only once drained', async () => {
    const { learner, key, head, tail, ringOf, control } = await learnerCluster('memory');

    // A write at the head travels head -> tail -> learner, and waits for the learner's answer.
    const headControl = control.get(head)!;
    const write = answerOf(
      headControl.request({ op: Op.SET, key: toBytes(key), value: toBytes('in flight'), epoch: 10 }),
    );
    while (
      !learner.received.some((request) =>
        request.entries.some((e) => new TextDecoder().decode(e.key) === key),
      )
    )
      await sleep(10);
    const forwarded = learner.received.find((request) => request.entries.length > 0)!;
    expect(forwarded.epoch).toBe(10);
    expect(new TextDecoder().decode(forwarded.entries[0]!.value!)).toBe('in flight');

    // The learner is promoted: each node answers the RING only once its writes are acknowledged.
    await expectFrozenUntilDrained({ head, tail, control, learner, key, write }, ringOf(11, 'promoting'));
    // Nothing of the refused write reached the learner.
    const values = learner.received.flatMap((request) =>
      request.entries.map((entry) => (entry.value === null ? null : new TextDecoder().decode(entry.value))),
    );
    expect(values).not.toContain('refused');
    expect(values).toContain('in flight');
  });

  it('the drain also waits for a write admitted before the RING whose engine update had not run yet (lmdb)', async () => {
    const { learner, key, head, tail, ringOf, control } = await learnerCluster('lmdb');
    // The tail first (nothing in flight there): the head's forward then goes out on the new epoch.
    expect(await control.get(tail)!.request(ringOf(11, 'promoting'))).toMatchObject({ op: Op.OK });
    const headControl = control.get(head)!;
    // Pipelined on one connection: the head admits the SET, and lmdb decides it in a later write
    // transaction, so its entry is on no forward stream yet when the RING arrives.
    const events: string[] = [];
    const write = answerOf(
      headControl.request({ op: Op.SET, key: toBytes(key), value: toBytes('admitted'), epoch: 10 }),
    ).then((answer) => {
      events.push('write');
      return answer;
    });
    const ring = headControl.request(ringOf(11, 'promoting')).then(() => events.push('ring'));
    await sleep(300);
    events.push('released');
    learner.release();
    expect(await write).toMatchObject({ op: Op.OK });
    await ring;
    expect(events).toEqual(['released', 'write', 'ring']);
  });

  it('a ring change (replication step 5): an entering learner gets every write; the switch freezes its chains and every node answers once drained', async () => {
    // The learner is `entering` (in the next ring only): the key's previous chain is [head, tail]
    // and the learner is appended to its write path; the switching RING freezes the chain.
    const { learner, key, head, tail, ringOf, control } = await learnerCluster('memory', 'entering');
    const headControl = control.get(head)!;
    const write = answerOf(
      headControl.request({ op: Op.SET, key: toBytes(key), value: toBytes('in flight'), epoch: 10 }),
    );
    while (!learner.received.some((request) => request.entries.length > 0)) await sleep(10);
    await expectFrozenUntilDrained(
      { head, tail, control, learner, key, write },
      ringOf(11, 'entering', true),
    );
  });
});

describe('a weight change that reorders a chain (factor 3)', () => {
  it('freezes the chain at the switch: a write admitted meanwhile could be acknowledged by its next tail alone', async () => {
    const balancer = new FakeBalancer(resources);
    balancer.lease = 60_000;
    const balancerPort = await balancer.start();
    const ports = new Map<string, number>();
    for (const id of ['node-a', 'node-b']) {
      const node = await resources.node({ id, join: `127.0.0.1:${balancerPort}`, heartbeatIntervalMs: 100 });
      ports.set(id, node.address.port);
    }
    // The stand-in holds its answers: a write forwarded to it stays unacknowledged.
    const held = new HeldPeer(resources, LEARNER);
    ports.set(LEARNER, await held.start());
    while (balancer.count(Op.HEARTBEAT) < 4) await sleep(20);
    // node-a shrinks to weight 0.5: a key whose chain node-a heads before (node-a, node-m, node-b)
    // and ends after (its point before the key is gone): the same members in another order.
    const weights = (shrunk: number) => IDS.map((id) => ({ id, weight: id === 'node-a' ? shrunk : 1 }));
    const before = HashRing.from(weights(1));
    const after = HashRing.from(weights(0.5));
    let key = '';
    for (let i = 0; key === ''; i++) {
      const [previous, next] = [before.getN(`k-${i}`, 3), after.getN(`k-${i}`, 3)];
      if (previous.join() === 'node-a,node-m,node-b' && next.at(-1) === 'node-a') key = `k-${i}`;
    }
    const ringOf = (epoch: number, ring: 'previous' | 'union' | 'next', flag?: 'switching' | 'holding') =>
      ringRequest(
        epoch,
        IDS.map(
          (id): RingMember => ({
            id,
            weight: id === 'node-a' && ring !== 'previous' ? 0.5 : 1,
            ...(id === 'node-a' && ring === 'union' ? { previousWeight: 1 } : {}),
            host: '127.0.0.1',
            port: ports.get(id)!,
            replicaState: 'up',
          }),
        ),
        { replicationFactor: 3, ...(flag === undefined ? {} : { [flag]: true }) },
      );
    const control = new Map<string, Connection>();
    for (const id of ['node-a', 'node-b']) control.set(id, await resources.peer(ports.get(id)!));
    const sendAll = async (ring: ReturnType<typeof ringOf>) => {
      for (const connection of control.values())
        expect(await connection.request(ring)).toMatchObject({ op: Op.OK });
    };
    await sendAll(ringOf(10, 'previous'));
    // The switch of the weight change, routed on the union ring (nothing in flight: answered at once).
    await sendAll(ringOf(11, 'union', 'switching'));
    const head = control.get('node-a')!;
    const write = answerOf(head.request({ op: Op.SET, key: toBytes(key), value: toBytes('v'), epoch: 11 }));
    // The next ring: node-a is the key's tail there. Had node-a admitted the write (forwarded to the
    // stand-in, unanswered), it would re-route it now and, with no successor, acknowledge it.
    await sendAll(ringOf(12, 'next', 'holding'));
    held.release();
    const answer = await write;
    expect(answer, 'a write of a reordered chain during the switch').toBeInstanceOf(DstoreError);
    expect((answer as DstoreError).code).toBe(ErrorCode.BUSY);
    expect((answer as DstoreError).notExecuted).toBe(true);
    expect(held.received.some((request) => request.entries.length > 0)).toBe(false);
  });
});

describe('a learner and evictions (replication step 4 with an eviction policy)', () => {
  it('keeps a tombstone for an eviction, so a copy of the key read from the tail before it cannot store it again', async () => {
    const balancer = new FakeBalancer(resources);
    balancer.lease = 60_000;
    const balancerPort = await balancer.start();
    const node = await resources.node({
      id: LEARNER,
      join: `127.0.0.1:${balancerPort}`,
      heartbeatIntervalMs: 100,
      engine: 'memory',
    });
    const ring = HashRing.from(
      IDS.map((id) => ({ id })),
      { algorithm: 'vnode' },
    );
    let key = '';
    for (let i = 0; key === ''; i++) if (ring.chainOf(`k-${i}`, 3).desired.includes(LEARNER)) key = `k-${i}`;
    const peer = await resources.peer(node.address.port);
    // The serving members are never reached: the learner ends the write path.
    const ringAt10 = learnerRing(10, (id) => (id === LEARNER ? node.address.port : 9), 'syncing');
    expect(await peer.request(ringAt10)).toMatchObject({ op: Op.OK });
    const member = await resources.peer(node.address.port, 'node');
    // The head evicted the key: an expired copy comes down the write path, at a new version.
    const eviction = {
      key: toBytes(key),
      value: new Uint8Array(0),
      writeEpoch: 10,
      version: 2_000,
      expireAt: 1,
    };
    expect(
      await member.request({ op: Op.REPLICATE, epoch: 10, batch: 1, entries: [eviction] }),
    ).toMatchObject({
      op: Op.REPLICATED,
    });
    // The tail's copy of the key, read before the eviction reached the tail, arrives after it.
    const copy = {
      key: toBytes(key),
      value: toBytes('read before the eviction'),
      writeEpoch: 9,
      version: 1_000,
    };
    expect(await member.request({ op: Op.MIGRATE_PUT, epoch: 10, entries: [copy] })).toMatchObject({
      op: Op.COUNT,
      count: 0,
    });
    expect(await member.request({ op: Op.PULL, key: toBytes(key) })).toMatchObject({
      op: Op.ENTRY,
      entry: null,
    });
  });
});
