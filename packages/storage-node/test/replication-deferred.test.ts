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
import { ErrorCode, Op, type ReplicateRequest, toBytes } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryEngine } from '../src/engines/index.js';
import { Resources, sleep } from './helpers.js';
import { headOf, heldTail, replicationAt, ringOf, whenReceived, written } from './replication-harness.js';

const resources = new Resources();
afterEach(() => resources.cleanup());

describe('a forward refused whole by a member in transition', () => {
  for (const code of [ErrorCode.STALE_EPOCH, ErrorCode.REPLICATION_GAP, ErrorCode.UNAVAILABLE]) {
    it(`keeps its client write parked until the re-send is acknowledged (${code})`, async () => {
      const tail = await heldTail(resources, 'node-x');
      const { replication, key } = await headOf(resources, tail, 60_000);
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
    const gone = await heldTail(resources, 'node-x');
    const next = await heldTail(resources, 'node-y');
    next.peer.release();
    const { replication, ownership, key } = await headOf(resources, gone, 60_000, next.id);
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
    const tail = await heldTail(resources, 'node-x');
    // 400 ms per forward: a parked write waits at most 200 ms for its re-send.
    const { replication, key } = await headOf(resources, tail, 400);
    const outcome = written(replication, key);
    await whenReceived(tail.peer, 1);
    tail.peer.failHeld(ErrorCode.STALE_EPOCH);
    // Every re-send is held: never acknowledged.
    expect(await outcome).toMatchObject({ notExecuted: false });
  });

  it('answers a forward refused for another reason at once, indeterminate', async () => {
    const tail = await heldTail(resources, 'node-x');
    const { replication, key } = await headOf(resources, tail, 60_000);
    const outcome = written(replication, key);
    await whenReceived(tail.peer, 1);
    tail.peer.failHeld(ErrorCode.STORAGE_ERROR);
    expect(await outcome).toMatchObject({ code: ErrorCode.CONNECTION_CLOSED, notExecuted: false });
  });

  it('settles each forward whose entries are re-sent together: a write relayed twice joins one re-send', async () => {
    // node-b is the middle of a chain node-a, node-b, node-c; node-c (a stand-in) refuses the two
    // forwards that carry the same write (its predecessor's forward and its re-send), then takes
    // the re-send of both copies, one unit (same version). Before, the unit credited only the
    // first forward, and the second was answered indeterminate once the bound passed (~1 s of a
    // rolling restart's writes, 2 to 126 per run, and the indeterminate ones).
    const tail = await heldTail(resources, 'node-c');
    const ring = ringOf(1, [{ id: 'node-a', port: 1 }, { id: 'node-b', port: 1 }, tail], 3);
    const hashRing = HashRing.from(['node-a', 'node-b', 'node-c'].map((id) => ({ id })));
    let keyText = '';
    for (let i = 0; keyText === ''; i++) {
      if (hashRing.chainOf(`k-${i}`, 3).path.join() === 'node-a,node-b,node-c') keyText = `k-${i}`;
    }
    // 4 s per forward: a forward left waiting gets its answer when the 2 s bound passes.
    const { replication } = await replicationAt(resources, 'node-b', ring, new MemoryEngine(), 4000);
    const stream = {};
    const forward = (batch: number): Promise<unknown> =>
      new Promise((resolve) => {
        const request: ReplicateRequest = {
          op: Op.REPLICATE,
          id: batch,
          epoch: 1,
          batch,
          entries: [
            { key: toBytes(keyText), value: toBytes('v'), writeEpoch: 1, version: 4096, expireAt: 0 },
          ],
        };
        replication.replicate(request, stream, (error) => resolve(error));
      });
    const first = forward(1);
    await whenReceived(tail.peer, 1);
    const second = forward(2);
    await whenReceived(tail.peer, 2);
    tail.peer.failHeld(ErrorCode.STALE_EPOCH);
    await whenReceived(tail.peer, 3);
    tail.peer.release();
    expect(await first).toBeUndefined();
    expect(await second).toBeUndefined();
  });
});
