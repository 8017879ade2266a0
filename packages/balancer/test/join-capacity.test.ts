/**
 * The JOIN capacity check's estimate: a new member's share of the next ring (of every key's
 * chain at the map's factor) times the data the ring's members report holding once.
 */
import { ErrorCode } from '@dstore/protocol';
import { describe, expect, it } from 'vitest';
import { type ClusterMap, createClusterMap } from '../src/cluster-map.js';
import type { NodeStorage } from '../src/cluster-node.js';
import { joinCapacityRefusal } from '../src/join-capacity.js';

const MIB = 1024 * 1024;

/** A map whose ring holds `ids` (weight 1), at `factor`. */
function mapOf(ids: readonly string[], factor: number): ClusterMap {
  const map = createClusterMap('vnode', factor);
  return { ...map, ring: { ...map.ring, epoch: 1, members: ids.map((id) => ({ id, weight: 1 })) } };
}

const using = (usedBytes: number): NodeStorage => ({ degraded: '', usedBytes, availableBytes: 0 });
const join = (availableBytes: number | undefined) => ({
  id: 'node-4',
  host: '127.0.0.1',
  port: 7404,
  weight: 1,
  identity: 'x',
  availableBytes,
});

describe('joinCapacityRefusal', () => {
  const three = ['node-1', 'node-2', 'node-3'];

  it('factor 1: refuses a node that cannot take about a quarter of the data a fourth node gets', () => {
    // 30 MiB on three nodes, held once: a fourth node gets about 7.5 MiB.
    const map = mapOf(three, 1);
    const refusal = joinCapacityRefusal(map, join(4 * MIB), () => using(10 * MIB));
    expect(refusal?.code).toBe(ErrorCode.OUT_OF_SPACE);
    expect(refusal?.message).toMatch(
      /node 'node-4' can take 4\.0 MiB but would hold about 7\.\d MiB \(2\d\.\d% of the keyspace, of about 30\.0 MiB of data\)/,
    );
    expect(joinCapacityRefusal(map, join(9 * MIB), () => using(10 * MIB))).toBeUndefined();
  });

  it('factor 3: the data is held three times over, and a fourth node holds about three quarters of it', () => {
    // Each of three nodes holds all 10 MiB: a fourth one holds about 7.5 MiB of it.
    const map = mapOf(three, 3);
    const refusal = joinCapacityRefusal(map, join(4 * MIB), () => using(10 * MIB));
    expect(refusal?.message).toMatch(
      /would hold about 7\.\d MiB \(7\d\.\d% of the keyspace at replication factor 3, of about 10\.0 MiB of data\)/,
    );
    expect(joinCapacityRefusal(map, join(9 * MIB), () => using(10 * MIB))).toBeUndefined();
    // Two members at factor 3: each holds everything, and so would a third.
    const two = mapOf(['node-1', 'node-2'], 3);
    expect(joinCapacityRefusal(two, join(9 * MIB), () => using(10 * MIB))?.message).toMatch(
      /would hold about 10\.0 MiB \(100\.0% of the keyspace/,
    );
  });

  it("a member's raised weight: what it holds counts as room, the message names the weight", () => {
    // Four members of 10 MiB each (40 MiB held once); node-4 at weight 5 would hold 5/8 of it.
    const map = mapOf([...three, 'node-4'], 1);
    const raised = { ...join(10 * MIB), weight: 5 };
    expect(joinCapacityRefusal(map, raised, () => using(10 * MIB))?.message).toMatch(
      /^node 'node-4' can take 20\.0 MiB but at weight 5 would hold about 2\d\.\d MiB .*, or a smaller --weight$/,
    );
    expect(
      joinCapacityRefusal(map, { ...raised, availableBytes: 20 * MIB }, () => using(10 * MIB)),
    ).toBeUndefined();
  });

  it('checks nothing it cannot estimate: no room announced, an empty ring, a member not heard from', () => {
    expect(joinCapacityRefusal(mapOf(three, 1), join(undefined), () => using(10 * MIB))).toBeUndefined();
    expect(joinCapacityRefusal(mapOf([], 1), join(0), () => using(10 * MIB))).toBeUndefined();
    expect(
      joinCapacityRefusal(mapOf(three, 1), join(0), (id) => (id === 'node-2' ? undefined : using(10 * MIB))),
    ).toBeUndefined();
  });
});
