/**
 * Entries a member forwards must reach their key's successor on the ring of the epoch they go out
 * on. Two ways they did not, found with a rolling-restart probe (every node restarted gracefully
 * in turn under 40 writers) instrumented to check every append against the key's chain:
 *
 * - a stream carries the writes of several heads, whose version clocks give the first version of a
 *   millisecond alike; adjacent entries of two writes with the same `(writeEpoch, version)` were
 *   taken for one write of several keys and re-routed on a new epoch by the first one's chain, so
 *   the other went to a member that was not its successor;
 * - lmdb applies a write in a later transaction than the tick that admitted it, and appended its
 *   entry to the link chosen then, even when a RING had re-routed the links in between: the entry
 *   went out on the new epoch along the old path.
 *
 * A member that is further down the key's new path takes such an entry and acknowledges it, and
 * the members between never get it (an acknowledged write missing on a replica).
 */
import { HashRing } from '@dstore/hashring';
import { Op, type ReplicatedEntry, type ReplicateRequest, type RingRequest, toBytes } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { type Decision, LmdbEngine, MemoryEngine } from '../src/engines/index.js';
import { HeldPeer } from './held-peer.js';
import { Resources, waitFor } from './helpers.js';
import { type Member, replicationAt, ringOf } from './replication-harness.js';

const resources = new Resources();
afterEach(() => resources.cleanup());

/** The write path of a key on `ring`. The ring is built once: once per key cost ~1 s of CPU. */
function pathsOn(ring: RingRequest): (key: string) => readonly string[] {
  const hashRing = HashRing.from(ring.nodes.map(({ id }) => ({ id })));
  return (key) => hashRing.chainOf(key, ring.replicationFactor ?? 1).path;
}

/** The first key `k-<i>` whose write paths on `before` and `after` pass `wanted`. */
function keyWhere(
  before: RingRequest,
  after: RingRequest,
  wanted: (pathBefore: readonly string[], pathAfter: readonly string[]) => boolean,
): string {
  const [pathBefore, pathAfter] = [pathsOn(before), pathsOn(after)];
  for (let i = 0; i < 100_000; i++) {
    const key = `k-${i}`;
    if (wanted(pathBefore(key), pathAfter(key))) return key;
  }
  throw new Error('no such key');
}

/** Stand-ins for the members `ids`, answering every REPLICATE at once except those in `holding`. */
async function standIns(
  ids: readonly string[],
  holding: readonly string[] = [],
): Promise<Map<string, { peer: HeldPeer; port: number }>> {
  const peers = new Map<string, { peer: HeldPeer; port: number }>();
  for (const id of ids) {
    const peer = new HeldPeer(resources, id);
    const port = await peer.start();
    if (!holding.includes(id)) peer.release();
    peers.set(id, { peer, port });
  }
  return peers;
}

/** The keys (as text) of every entry `peer` received. */
function keysReceived(peer: HeldPeer): string[] {
  return peer.received.flatMap((request) =>
    request.entries.map((entry) => new TextDecoder().decode(entry.key)),
  );
}

function entry(key: string, version: number): ReplicatedEntry {
  return { key: toBytes(key), value: toBytes('v'), writeEpoch: 1, version, expireAt: 0 };
}

describe('entries re-routed on a new epoch', () => {
  it('two writes sharing a version on one stream go each to its own successor', async () => {
    // 'c' holds the forward unanswered until the new ring takes the entries off that link.
    const peers = await standIns(['a', 'c', 'd', 'e'], ['c']);
    const member = (id: string): Member => ({ id, port: id === 'b' ? 1 : peers.get(id)!.port });
    const before = ringOf(1, ['a', 'b', 'c', 'd', 'e'].map(member), 3);
    const after = ringOf(2, ['a', 'b', 'd', 'e'].map(member), 3);
    // Both keys reach this node ('b') second on one stream towards 'c'; on the next ring 'b' is
    // still second, followed by 'd' for one key and by 'e' for the other.
    const throughBToC = (path: readonly string[]) => path[1] === 'b' && path[2] === 'c';
    const first = keyWhere(before, after, (p, q) => throughBToC(p) && q[1] === 'b' && q[2] === 'd');
    const second = keyWhere(before, after, (p, q) => throughBToC(p) && q[1] === 'b' && q[2] === 'e');
    const { ownership, replication } = await replicationAt(
      resources,
      'b',
      before,
      new MemoryEngine(),
      10_000,
    );
    const request: ReplicateRequest = {
      op: Op.REPLICATE,
      id: 1,
      epoch: 1,
      batch: 1,
      // Two heads' writes, each stamped with the first version of the same millisecond.
      entries: [entry(first, 4096), entry(second, 4096)],
    };
    let refused: unknown;
    replication.replicate(request, {}, (error) => {
      refused = error;
    });
    await waitFor(() => keysReceived(peers.get('c')!.peer).length === 2, 5000, 'the forward to c');
    ownership.apply(after);
    await replication.reconfigure();
    await waitFor(
      () => keysReceived(peers.get('d')!.peer).length + keysReceived(peers.get('e')!.peer).length >= 2,
      5000,
      'the re-routed forwards',
    );
    expect(keysReceived(peers.get('d')!.peer)).toEqual([first]);
    expect(keysReceived(peers.get('e')!.peer)).toEqual([second]);
    expect(refused).toBeUndefined();
  });

  it('an lmdb write applied after a RING re-routed the links goes to its successor on that ring', async () => {
    const peers = await standIns(['c', 'd']);
    const member = (id: string): Member => ({ id, port: id === 'a' ? 1 : peers.get(id)!.port });
    const before = ringOf(1, ['a', 'c', 'd'].map(member), 2);
    const after = ringOf(2, ['a', 'd'].map(member), 2);
    const key = keyWhere(
      before,
      after,
      (p, q) => p[0] === 'a' && p[1] === 'c' && q[0] === 'a' && q[1] === 'd',
    );
    const engine = await LmdbEngine.open({ dataDir: resources.tempDir() });
    const { ownership, replication } = await replicationAt(resources, 'a', before, engine, 10_000);
    const put = (): Decision<string> => ({
      mutation: { kind: 'put', value: toBytes('v'), expireAt: 0 },
      result: 'stored',
    });
    const outcome = new Promise<unknown>((resolve) =>
      replication.write(
        toBytes(key),
        { writeEpoch: 1, tombstone: false, valueBytes: 1 },
        put,
        (error, result) => resolve(error ?? result),
      ),
    );
    // The RING arrives before lmdb runs the write's transaction (it runs after this tick).
    ownership.apply(after);
    await replication.reconfigure();
    expect(await outcome).toBe('stored');
    expect(keysReceived(peers.get('d')!.peer)).toEqual([key]);
    expect(keysReceived(peers.get('c')!.peer)).toEqual([]);
  });

  it("a REPLICATE whose entries are of two of its sender's streams is refused whole, nothing applied", async () => {
    const peers = await standIns(['a', 'c', 'd', 'e']);
    const member = (id: string): Member => ({ id, port: id === 'b' ? 1 : peers.get(id)!.port });
    const ring = ringOf(1, ['a', 'b', 'c', 'd', 'e'].map(member), 3);
    const towards = (next: string) => (path: readonly string[]) => path[1] === 'b' && path[2] === next;
    const toC = keyWhere(ring, ring, towards('c'));
    const toD = keyWhere(ring, ring, towards('d'));
    const engine = new MemoryEngine();
    const { replication } = await replicationAt(resources, 'b', ring, engine, 10_000);
    const refused = await new Promise<unknown>((resolve) =>
      replication.replicate(
        { op: Op.REPLICATE, id: 1, epoch: 1, batch: 1, entries: [entry(toC, 4096), entry(toD, 4097)] },
        {},
        (error) => resolve(error),
      ),
    );
    expect(refused).toMatchObject({ code: 'NOT_OWNER' });
    expect(await engine.get(toBytes(toC))).toBeUndefined();
    expect(await engine.get(toBytes(toD))).toBeUndefined();
    expect(keysReceived(peers.get('c')!.peer)).toEqual([]);
    expect(keysReceived(peers.get('d')!.peer)).toEqual([]);
  });
});
