/**
 * A head's write that changes nothing (SET NX of a key that exists, DEL of a missing key, a
 * version conflict, a read-only transaction) answers from the head's state, which holds the
 * head's earlier writes: it may be answered only once they are at the tail. Found by a fault
 * audit with lmdb, whose engine decides a write in a later transaction than the one that
 * admitted it: a forward that failed in between left the earlier write kept for a re-send (not at
 * the tail), and the write that changed nothing was answered at once from it (a DEL answered 0,
 * then a read at the tail returned the value). Here the engine's decision is held at a gate, so
 * the forward fails exactly between admission and decision.
 */
import { HashRing } from '@dstore/hashring';
import { ErrorCode, Op, type RingRequest, toBytes } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type Decision,
  MemoryEngine,
  type StorageEngine,
  type VersionedValue,
} from '../src/engines/index.js';
import { Ownership } from '../src/ownership.js';
import { PeerLinks } from '../src/peer-links.js';
import { ReplicationService } from '../src/replication.js';
import { HeldPeer } from './held-peer.js';
import { Resources, sleep } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.cleanup());

/**
 * The memory engine deciding as lmdb does, in a step that runs later than the call (no
 * `updateNow`), each step waiting for `gate` first.
 */
function laterDeciding(inner: MemoryEngine, gate: () => Promise<void>): StorageEngine {
  return new Proxy(inner, {
    get(target, property) {
      if (property === 'updateNow' || property === 'updateManyNow') return undefined;
      if (property === 'update') {
        return async (...args: Parameters<MemoryEngine['update']>) => {
          await gate();
          return target.update(...args);
        };
      }
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/** A write's outcome as a promise. */
function written<T>(
  replication: ReplicationService,
  key: Uint8Array,
  decide: (current: VersionedValue | undefined) => Decision<T>,
): Promise<T> {
  return new Promise((resolve, reject) =>
    replication.write(key, { writeEpoch: 1, tombstone: false, valueBytes: 16 }, decide, (error, result) =>
      error === undefined ? resolve(result as T) : reject(error),
    ),
  );
}

describe('a head write that changes nothing', () => {
  it('is refused, not answered, when an earlier write of its chain failed to reach the tail', async () => {
    const tail = new HeldPeer(resources, 'node-x');
    const tailPort = await tail.start();
    const ring: RingRequest = {
      op: Op.RING,
      id: 0,
      epoch: 1,
      generation: 1,
      algorithm: 'vnode',
      vnodes: 0,
      replicationFactor: 2,
      nodes: [
        { id: 'node-a', weight: 1, host: '127.0.0.1', port: 1, replicaState: 'up' },
        { id: 'node-x', weight: 1, host: '127.0.0.1', port: tailPort, replicaState: 'up' },
      ],
    };
    const hashRing = HashRing.from(ring.nodes.map(({ id }) => ({ id })));
    let keyText = '';
    for (let i = 0; keyText === ''; i++)
      if (hashRing.chainOf(`k-${i}`, 2).head === 'node-a') keyText = `k-${i}`;
    const key = toBytes(keyText);

    let open = true;
    let opened: (() => void) | undefined;
    const gate = (): Promise<void> =>
      open ? Promise.resolve() : new Promise((resolve) => (opened = resolve));
    const inner = new MemoryEngine();
    const ownership = new Ownership(() => 'node-a');
    ownership.apply(ring);
    const links = new PeerLinks(ownership, { credentials: undefined, requestTimeoutMs: 60_000 });
    const replication = new ReplicationService(laterDeciding(inner, gate), ownership, links, {
      queueBytes: 1 << 20,
      timeoutMs: 60_000,
    });
    resources.defer(async () => {
      replication.close();
      links.close();
      await inner.close();
    });
    await replication.reconfigure();

    // 1. A write in flight: the head applied it, the tail holds its REPLICATE unanswered.
    const put = (current: VersionedValue | undefined): Decision<string> => ({
      mutation: { kind: 'put', value: toBytes('v'), expireAt: 0 },
      result: current === undefined ? 'created' : 'replaced',
    });
    const first = written(replication, key, put).catch((error: unknown) => error);
    while (!tail.received.some((request) => request.entries.length > 0)) await sleep(5);

    // 2. SET NX admitted while nothing failed, its decision held.
    open = false;
    const setIfAbsent = (current: VersionedValue | undefined): Decision<boolean> =>
      current === undefined
        ? { mutation: { kind: 'put', value: toBytes('w'), expireAt: 0 }, result: true }
        : { mutation: { kind: 'none' }, result: false };
    const second = written(replication, key, setIfAbsent).catch((error: unknown) => error);
    while (opened === undefined) await sleep(5);

    // 3. The forward of the first write fails: it is kept for a re-send, not at the tail (its
    // client stays parked until the re-send is acknowledged).
    tail.failHeld(ErrorCode.UNAVAILABLE);
    while (replication.counters.batchesFailed === 0) await sleep(5);

    // 4. The held decision finds the head's value and writes nothing: its answer ("exists") would
    // rest on a write the tail does not have. Refused, not executed, retryable.
    open = true;
    opened();
    const answer = await second;
    expect(answer).toMatchObject({ code: ErrorCode.UNAVAILABLE, notExecuted: true });
    // 5. The re-send goes through: the first write is answered, applied.
    tail.release();
    expect(await first).toBe('created');
  });
});
