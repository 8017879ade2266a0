/**
 * Every replication stream of a node towards one peer shares one connection. A stream that found
 * it full (its output past `maxOutputBytes`, or its requests in flight at the connection's bound)
 * failed its batch: the chain was blocked and its clients answered indeterminate. Found by a
 * pressure audit (one RESP client pipelining large values made other clients' writes fail). Such
 * a stream now holds its batches, in order, until there is room.
 */
import { HashRing } from '@dstore/hashring';
import { Op, type RingRequest, toBytes } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { type Decision, MemoryEngine, type VersionedValue } from '../src/engines/index.js';
import { Ownership } from '../src/ownership.js';
import { PeerLinks } from '../src/peer-links.js';
import { ReplicationService } from '../src/replication.js';
import { HeldPeer } from './held-peer.js';
import { Resources, sleep } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.cleanup());

const put = (current: VersionedValue | undefined): Decision<string> => ({
  mutation: { kind: 'put', value: toBytes('v'), expireAt: 0 },
  result: current === undefined ? 'created' : 'replaced',
});

/** A write's outcome: its result, or the error it failed with. */
function written(replication: ReplicationService, key: Uint8Array): Promise<unknown> {
  return new Promise((resolve) =>
    replication.write(key, { writeEpoch: 1, tombstone: false, valueBytes: 16 }, put, (error, result) =>
      resolve(error ?? result),
    ),
  );
}

function ringOf(epoch: number, members: { id: string; port: number }[]): RingRequest {
  return {
    op: Op.RING,
    id: 0,
    epoch,
    generation: epoch,
    algorithm: 'vnode',
    vnodes: 0,
    replicationFactor: 2,
    nodes: members.map(({ id, port }) => ({ id, weight: 1, host: '127.0.0.1', port, replicaState: 'up' })),
  };
}

/** node-a heading a key whose chain is node-a then `tail`, with `timeoutMs` per forward. */
async function headOf(tail: { id: string; port: number }, timeoutMs: number) {
  const ring = ringOf(1, [{ id: 'node-a', port: 1 }, tail]);
  const hashRing = HashRing.from(ring.nodes.map(({ id }) => ({ id })));
  let keyText = '';
  for (let i = 0; keyText === ''; i++)
    if (hashRing.chainOf(`k-${i}`, 2).head === 'node-a') keyText = `k-${i}`;
  const engine = new MemoryEngine();
  const ownership = new Ownership(() => 'node-a');
  ownership.apply(ring);
  const links = new PeerLinks(ownership, { credentials: undefined, requestTimeoutMs: timeoutMs });
  const replication = new ReplicationService(engine, ownership, links, { queueBytes: 1 << 20, timeoutMs });
  resources.defer(async () => {
    replication.close();
    links.close();
    await engine.close();
  });
  await replication.reconfigure();
  return { replication, key: toBytes(keyText) };
}

async function heldTail(id: string): Promise<{ peer: HeldPeer; id: string; port: number }> {
  const peer = new HeldPeer(resources, id);
  return { peer, id, port: await peer.start() };
}

async function whenReceived(peer: HeldPeer, count: number): Promise<void> {
  while (peer.received.filter((request) => request.entries.length > 0).length < count) await sleep(5);
}

describe('a forward stream whose connection to its successor is full', () => {
  it('waits for room, in order, instead of failing its writes (more batches than a connection may have in flight)', async () => {
    const tail = await heldTail('node-x');
    const { replication, key } = await headOf(tail, 60_000);
    // One batch per tick, all held unanswered: past the connection's 1,024 requests in flight.
    const outcomes: Promise<unknown>[] = [];
    for (let i = 0; i < 1100; i++) {
      outcomes.push(written(replication, key));
      await new Promise((resolve) => setImmediate(resolve));
    }
    await whenReceived(tail.peer, 1024);
    tail.peer.release();
    const answers = await Promise.all(outcomes);
    expect(answers.filter((answer) => typeof answer !== 'string')).toEqual([]);
    expect(replication.counters.batchesFailed).toBe(0);
  });
});
