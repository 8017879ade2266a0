/**
 * A chain member one RING behind or ahead of its predecessor refuses the whole REPLICATE
 * (STALE_EPOCH, REPLICATION_GAP, a learner's wipe): nothing of it was applied there, and the
 * re-send goes through once the member has the ring. Every routine ring change (a node joining,
 * leaving, restarting) makes a few. Found by an audit of rolling restarts: the head answered the
 * parked client writes of such a batch with the indeterminate error at once, although every one
 * of them was then applied by the re-send (128 of 128). The head now keeps them parked until the
 * re-send settles them, within half the replication timeout.
 */
import { HashRing } from '@dstore/hashring';
import { ErrorCode, Op, type RingRequest, toBytes } from '@dstore/protocol';
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

/**
 * node-a heading a key whose chain is node-a then `tail`, with `timeoutMs` per forward; node-a
 * heads the key too in a ring of node-a and `alsoWith` if given.
 */
async function headOf(tail: { id: string; port: number }, timeoutMs: number, alsoWith?: string) {
  const ring = ringOf(1, [{ id: 'node-a', port: 1 }, tail]);
  const heads = (ids: string[], text: string): boolean =>
    HashRing.from(ids.map((id) => ({ id }))).chainOf(text, 2).head === 'node-a';
  let keyText = '';
  for (let i = 0; keyText === ''; i++) {
    const text = `k-${i}`;
    if (heads(['node-a', tail.id], text) && (alsoWith === undefined || heads(['node-a', alsoWith], text)))
      keyText = text;
  }
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
  return { replication, ownership, key: toBytes(keyText) };
}

async function heldTail(id: string): Promise<{ peer: HeldPeer; id: string; port: number }> {
  const peer = new HeldPeer(resources, id);
  return { peer, id, port: await peer.start() };
}

async function whenReceived(peer: HeldPeer, count: number): Promise<void> {
  while (peer.received.filter((request) => request.entries.length > 0).length < count) await sleep(5);
}

describe('a forward refused whole by a member in transition', () => {
  for (const code of [ErrorCode.STALE_EPOCH, ErrorCode.REPLICATION_GAP, ErrorCode.UNAVAILABLE]) {
    it(`keeps its client write parked until the re-send is acknowledged (${code})`, async () => {
      const tail = await heldTail('node-x');
      const { replication, key } = await headOf(tail, 60_000);
      const outcome = written(replication, key);
      await whenReceived(tail.peer, 1);
      tail.peer.failHeld(code);
      // The re-send reaches the member, which now takes it.
      await whenReceived(tail.peer, 2);
      tail.peer.release();
      expect(await outcome).toBe('created');
      expect(replication.counters.entriesResent).toBeGreaterThanOrEqual(1);
    });
  }

  it('lets the parked write follow its entry to the key’s new successor on the next RING', async () => {
    const gone = await heldTail('node-x');
    const next = await heldTail('node-y');
    next.peer.release();
    const { replication, ownership, key } = await headOf(gone, 60_000, next.id);
    const outcome = written(replication, key);
    await whenReceived(gone.peer, 1);
    gone.peer.failHeld(ErrorCode.STALE_EPOCH);
    while (replication.counters.batchesFailed === 0) await sleep(5);
    // node-x left the ring meanwhile (it was ahead): the entry goes to node-y instead.
    ownership.apply(ringOf(2, [{ id: 'node-a', port: 1 }, next]));
    await replication.reconfigure();
    expect(await outcome).toBe('created');
    expect(next.peer.received.some((request) => request.entries.length > 0)).toBe(true);
  });

  it('answers the indeterminate error once the re-send keeps failing past the bound', async () => {
    const tail = await heldTail('node-x');
    // 400 ms per forward: a parked write waits at most 200 ms for its re-send.
    const { replication, key } = await headOf(tail, 400);
    const outcome = written(replication, key);
    await whenReceived(tail.peer, 1);
    tail.peer.failHeld(ErrorCode.STALE_EPOCH);
    // Every re-send is held: never acknowledged.
    expect(await outcome).toMatchObject({ notExecuted: false });
  });

  it('answers a forward refused for another reason at once, indeterminate', async () => {
    const tail = await heldTail('node-x');
    const { replication, key } = await headOf(tail, 60_000);
    const outcome = written(replication, key);
    await whenReceived(tail.peer, 1);
    tail.peer.failHeld(ErrorCode.STORAGE_ERROR);
    expect(await outcome).toMatchObject({ code: ErrorCode.CONNECTION_CLOSED, notExecuted: false });
  });
});

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
