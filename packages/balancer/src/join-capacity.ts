import { HashRing } from '@dstore/hashring';
import { DstoreError, ErrorCode } from '@dstore/protocol';
import { formatBytes } from '@dstore/protocol/internal';
import { type ClusterMap, ringOptionsOf } from './cluster-map.js';
import type { NodeStorage } from './cluster-node.js';
import type { JoinSpec } from './membership.js';

/**
 * OUT_OF_SPACE for the JOIN of a new member whose storage could not hold its share of the
 * cluster's data (or of a ring member at the larger weight it asks for: what it holds counts as
 * room), or undefined when it could (or when that cannot be told: the node did not say what it
 * can take, the ring is empty, a ring member has not reported its storage yet).
 *
 * Why at JOIN: a member too small for its share fills up while its ranges stream to it, refuses
 * the rest (the migration stalls until an operator gives it room) and every write of those ranges
 * meanwhile (with replication, of every chain it is learning: most of the keyspace), and a ring
 * change queued behind the stalled one waits too. Refused here, nothing moves and nothing is
 * refused but the JOIN, which the node retries. An estimate, not a promise: the share is the
 * next ring's, the data what the ring's members report using (their last HEARTBEAT), and data
 * written during the migration is not counted; a stream that still fills the node stalls as before.
 */
export function joinCapacityRefusal(
  map: ClusterMap,
  spec: JoinSpec,
  storageOf: (id: string) => NodeStorage | undefined,
): DstoreError | undefined {
  const available = spec.availableBytes;
  const members = map.ring.members;
  if (available === undefined || members.length === 0) return undefined;
  let used = 0;
  for (const member of members) {
    const storage = storageOf(member.id);
    if (storage === undefined) return undefined;
    used += storage.usedBytes;
  }
  // A member of the ring (a weight change) can also reuse what it holds now.
  const own = members.find((member) => member.id === spec.id);
  const capacity = available + (own === undefined ? 0 : (storageOf(spec.id)?.usedBytes ?? 0));
  const factor = map.replicationFactor;
  const options = ringOptionsOf(map.ring);
  // Each key is on min(factor, members) of them: the cluster's data once is what they use over that.
  const data = used / Math.min(factor, members.length);
  const others = members.filter((member) => member.id !== spec.id);
  const next = HashRing.from([...others, { id: spec.id, weight: spec.weight }], options);
  const share = next.replicaShares(factor).get(spec.id) ?? 0;
  const expected = data * share;
  if (expected <= capacity) return undefined;
  const at = own === undefined ? '' : ` at weight ${spec.weight}`;
  return new DstoreError(
    ErrorCode.OUT_OF_SPACE,
    `node '${spec.id}' can take ${formatBytes(capacity)} but${at} would hold about ${formatBytes(Math.ceil(expected))} (${(share * 100).toFixed(1)}% of the keyspace${factor > 1 ? ` at replication factor ${factor}` : ''}, of about ${formatBytes(Math.ceil(data))} of data): it would fill up while its keys stream to it and refuse writes; start it with a larger --max-memory (memory engine) or --map-size / more disk (lmdb)${own === undefined ? '' : ', or a smaller --weight'}`,
  );
}
