/**
 * DIGEST and the shared engine pass (replication: a returning member's catch-up). The balancer sends
 * a round's DIGEST chunks at once; the node answers them from one pass over its engine (at most
 * two: a request that arrives while a pass runs joins the next), and each range's digest must be
 * the one computed range by range over its keys. One in-process node per engine, real sockets.
 */
import { HashRing, murmur3Bytes } from '@dstore/hashring';
import {
  type Connection,
  chunkRanges,
  DstoreError,
  ErrorCode,
  type HashRange,
  Op,
  type Response,
  type StatsMap,
  toBytes,
} from '@dstore/protocol';
import { seededRandom } from '@dstore/protocol/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { engineCases, Resources, ringRequest } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.cleanup());

const engines = engineCases(resources);

function ringMessage(epoch: number) {
  return ringRequest(epoch, [{ id: 'node-a', weight: 1 }]);
}

/**
 * `count` disjoint ranges at random positions, in random order, the last one wrapping past 0
 * (start > end), plus the whole ring's complement left uncovered in between.
 */
function randomRanges(next: () => number, count: number): HashRange[] {
  const points = Array.from({ length: count * 2 }, () => Math.floor(next() * 0x1_0000_0000)).sort(
    (a, b) => a - b,
  );
  const ranges: HashRange[] = [];
  for (let i = 1; i + 1 < points.length; i += 2) ranges.push({ start: points[i]!, end: points[i + 1]! });
  ranges.push({ start: points[points.length - 1]!, end: points[0]! });
  for (let i = ranges.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [ranges[i], ranges[j]] = [ranges[j]!, ranges[i]!];
  }
  return ranges;
}

function inRange(range: HashRange, position: number): boolean {
  return range.start < range.end
    ? position > range.start && position <= range.end
    : position > range.start || position <= range.end;
}

function statsOf(response: Response): StatsMap {
  if (response.op !== Op.STATS_RESULT) throw new Error(`expected STATS_RESULT, got op ${response.op}`);
  return response.stats;
}

async function passes(connection: Connection): Promise<number> {
  return Number(statsOf(await connection.request({ op: Op.STATS }))['migration.scan_passes']);
}

describe.each(engines)('DIGEST on $name', ({ options }) => {
  it('answers a burst of chunks from one shared pass, each range equal to its digest computed range by range', async () => {
    const node = await resources.node({ id: 'node-a', ...options() });
    const balancer = await resources.peer(node.address.port);
    const peer = await resources.peer(node.address.port, 'node');
    await balancer.request(ringMessage(1));
    const next = seededRandom(14);
    const keys = Array.from({ length: 3000 }, (_, i) => toBytes(`k-${i}-${Math.floor(next() * 1e9)}`));
    for (let start = 0; start < keys.length; start += 500) {
      const entries = keys.slice(start, start + 500).map((key) => ({ key, value: toBytes('v') }));
      await balancer.request({ op: Op.MSET, entries, epoch: 1 });
    }
    // Deleted keys (tombstones) are no values; keys written at epoch 2 are not below it.
    for (const key of keys.slice(0, 100)) await balancer.request({ op: Op.DEL, key, epoch: 1 });
    await balancer.request(ringMessage(2));
    const later = keys.slice(100, 200).map((key) => ({ key, value: toBytes('later') }));
    await balancer.request({ op: Op.MSET, entries: later, epoch: 2 });
    const ranges = randomRanges(next, 1200);
    const chunks = chunkRanges(ranges);
    expect(chunks.length).toBe(3);

    const before = await passes(balancer);
    const answers = await Promise.all(
      chunks.map((chunk) => balancer.request({ op: Op.DIGEST, below: 2, ranges: chunk })),
    );
    const used = (await passes(balancer)) - before;
    // Sent together: one pass, or two when a chunk arrived while the first ran; never one per chunk.
    expect(used).toBeGreaterThanOrEqual(1);
    expect(used).toBeLessThan(chunks.length);

    const got = answers.flatMap((answer) => {
      if (answer.op !== Op.VALUES) throw new Error(`expected VALUES, got op ${answer.op}`);
      return answer.values;
    });
    expect(got).toHaveLength(ranges.length);
    // The reference: every range on its own, over each key's entry as the node holds it.
    const ring = HashRing.from([{ id: 'node-a' }]);
    const expected = ranges.map(() => [0, 0, 0]);
    let counted = 0;
    // The entries pulled 500 at a time, not one round trip after another (3,000 of them).
    const pulls: Response[] = [];
    for (let start = 0; start < keys.length; start += 500) {
      const batch = keys.slice(start, start + 500).map((key) => peer.request({ op: Op.PULL, key }));
      pulls.push(...(await Promise.all(batch)));
    }
    for (const [k, key] of keys.entries()) {
      const pulled = pulls[k]!;
      if (pulled.op !== Op.ENTRY) throw new Error(`expected ENTRY, got op ${pulled.op}`);
      const entry = pulled.entry;
      if (entry === null || entry.writeEpoch >= 2) continue;
      const position = ring.position(key);
      for (const [i, range] of ranges.entries()) {
        if (!inRange(range, position)) continue;
        const sum = expected[i]!;
        const low = entry.version >>> 0;
        const high = Math.floor(entry.version / 0x1_0000_0000) >>> 0;
        sum[0] = (sum[0]! + 1) >>> 0;
        sum[1] = (sum[1]! + murmur3Bytes(key, key.length, low)) >>> 0;
        sum[2] = (sum[2]! + murmur3Bytes(key, key.length, high ^ 0x9e37_79b9)) >>> 0;
        counted++;
      }
    }
    // About half the ring is covered: the ranges hold keys, and not all of them.
    expect(counted).toBeGreaterThan(600);
    expect(counted).toBeLessThan(2700);
    // Compared plainly, asserted once (two expects a range cost more than the comparisons).
    const wrong: string[] = [];
    for (const [i, value] of got.entries()) {
      if (value === null) {
        wrong.push(`range ${i}: null`);
        continue;
      }
      const view = new DataView(value.buffer, value.byteOffset, 12);
      const digest = [view.getUint32(0), view.getUint32(4), view.getUint32(8)];
      if (digest.some((part, j) => part !== expected[i]![j]))
        wrong.push(`range ${i}: ${digest.join()}, expected ${expected[i]!.join()}`);
    }
    expect(wrong).toEqual([]);
  });

  it('refuses a DIGEST over the batch limit with a typed error', async () => {
    const node = await resources.node({ id: 'node-a', ...options() });
    const balancer = await resources.peer(node.address.port);
    await balancer.request(ringMessage(1));
    const ranges = Array.from({ length: 1001 }, (_, i) => ({ start: i * 10, end: i * 10 + 5 }));
    const refused = await balancer.request({ op: Op.DIGEST, below: 2, ranges }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(refused).toBeInstanceOf(DstoreError);
    expect((refused as DstoreError).code).toBe(ErrorCode.BATCH_TOO_LARGE);
    // The connection still serves.
    const answer = await balancer.request({ op: Op.DIGEST, below: 2, ranges: ranges.slice(0, 500) });
    expect(answer.op === Op.VALUES ? answer.values.length : -1).toBe(500);
  });
});
