/**
 * One ReplicationService in process, with chain members stood in for by {@link HeldPeer}s: the
 * rings, the service and the writes the replication tests share.
 */
import { HashRing } from '@dstore/hashring';
import { Op, type RingRequest, toBytes } from '@dstore/protocol';
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
import { type Resources, sleep } from './helpers.js';

/** A ring member as a RING names it: its id and where it listens. */
export interface Member {
  readonly id: string;
  readonly port: number;
}

/** A write of the value `v`: `created` or `replaced`. */
export const put = (current: VersionedValue | undefined): Decision<string> => ({
  mutation: { kind: 'put', value: toBytes('v'), expireAt: 0 },
  result: current === undefined ? 'created' : 'replaced',
});

/** A write's outcome at the head: its result, or the error it failed with. */
export function written(replication: ReplicationService, key: Uint8Array): Promise<unknown> {
  return new Promise((resolve) =>
    replication.write(key, { writeEpoch: 1, tombstone: false, valueBytes: 16 }, put, (error, result) =>
      resolve(error ?? result),
    ),
  );
}

/** The RING of `members` at `epoch` (every member up), replication factor `factor`. */
export function ringOf(epoch: number, members: readonly Member[], factor = 2): RingRequest {
  return {
    op: Op.RING,
    id: 0,
    epoch,
    generation: 1,
    algorithm: 'vnode',
    vnodes: 0,
    replicationFactor: factor,
    nodes: members.map(({ id, port }) => ({ id, weight: 1, host: '127.0.0.1', port, replicaState: 'up' })),
  };
}

/** The service of node `self` on `ring` (closed with the test's resources). */
export async function replicationAt(
  resources: Resources,
  self: string,
  ring: RingRequest,
  engine: StorageEngine,
  timeoutMs: number,
): Promise<{ replication: ReplicationService; ownership: Ownership }> {
  const ownership = new Ownership(() => self);
  ownership.apply(ring);
  const links = new PeerLinks(ownership, { credentials: undefined, requestTimeoutMs: timeoutMs });
  const replication = new ReplicationService(engine, ownership, links, { queueBytes: 1 << 20, timeoutMs });
  resources.defer(async () => {
    replication.close();
    links.close();
    await engine.close();
  });
  await replication.reconfigure();
  return { replication, ownership };
}

/**
 * node-a (memory) heading a key whose chain is node-a then `tail`, with `timeoutMs` per forward;
 * node-a heads the key too in a ring of node-a and `alsoWith` if given.
 */
export async function headOf(resources: Resources, tail: Member, timeoutMs: number, alsoWith?: string) {
  const heads = (ids: string[], text: string): boolean =>
    HashRing.from(ids.map((id) => ({ id }))).chainOf(text, 2).head === 'node-a';
  let keyText = '';
  for (let i = 0; keyText === ''; i++) {
    const text = `k-${i}`;
    if (heads(['node-a', tail.id], text) && (alsoWith === undefined || heads(['node-a', alsoWith], text)))
      keyText = text;
  }
  const ring = ringOf(1, [{ id: 'node-a', port: 1 }, tail]);
  const started = await replicationAt(resources, 'node-a', ring, new MemoryEngine(), timeoutMs);
  return { ...started, key: toBytes(keyText) };
}

/** A stand-in for member `id` that holds every REPLICATE until released. */
export async function heldTail(
  resources: Resources,
  id: string,
): Promise<{ peer: HeldPeer; id: string; port: number }> {
  const peer = new HeldPeer(resources, id);
  return { peer, id, port: await peer.start() };
}

/** Resolves once `peer` received `count` REPLICATEs with entries. */
export async function whenReceived(peer: HeldPeer, count: number): Promise<void> {
  while (peer.received.filter((request) => request.entries.length > 0).length < count) await sleep(5);
}
