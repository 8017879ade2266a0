import {
  DstoreError,
  ErrorCode,
  type KeysResponse,
  keyVisible,
  Op,
  type ScanRequest,
  type UserGrant,
  type WithoutId,
} from '@dstore/protocol';
import type { Membership } from './membership.js';
import type { Topology } from './topology.js';

/**
 * Where a cluster-wide SCAN iteration is: the routed ring it began on (its epoch, kept modulo
 * 2^15, and whether keys were streaming), the node being scanned (an index into
 * {@link scanMembers}) and that node's own cursor.
 */
export interface ClusterCursor {
  readonly epochLow: number;
  readonly moving: boolean;
  readonly node: number;
  readonly nodeCursor: number;
}

const EPOCH_SPAN = 2 ** 15;
const NODE_SPAN = 2 ** 7;
const NODE_CURSOR_SPAN = 2 ** 30;

/** Most members a SCAN iteration can walk (the cursor keeps the member's index in 7 bits). */
export const MAX_SCAN_MEMBERS = NODE_SPAN;

/**
 * The cursor as one integer below 2^53 (15 bits of epoch, 1 moving bit, 7 bits of member index,
 * 30 bits of node cursor): Redis clients treat cursors as numbers (node-redis 4 parses them with
 * `Number`), so they must survive a round trip through a double.
 */
export function encodeClusterCursor(cursor: ClusterCursor): number {
  const head = (cursor.epochLow * 2 + (cursor.moving ? 1 : 0)) * NODE_SPAN + cursor.node;
  return head * NODE_CURSOR_SPAN + cursor.nodeCursor;
}

/** The inverse of {@link encodeClusterCursor}; undefined for a value no encoding produces. */
export function decodeClusterCursor(value: number): ClusterCursor | undefined {
  if (!Number.isSafeInteger(value) || value < 0) return undefined;
  const nodeCursor = value % NODE_CURSOR_SPAN;
  const head = Math.floor(value / NODE_CURSOR_SPAN);
  const node = head % NODE_SPAN;
  const flagged = Math.floor(head / NODE_SPAN);
  return { epochLow: Math.floor(flagged / 2), moving: flagged % 2 === 1, node, nodeCursor };
}

/**
 * The nodes an iteration on `topology` walks, sorted by id: the members of the routed ring and,
 * while keys stream, the old owners of the moving ranges (a leaving node still holds its keys).
 * The list is fixed for one ring epoch and one streaming phase, which is what a cursor names.
 */
export function scanMembers(topology: Topology): string[] {
  const ids = new Set(topology.ring.nodes().map((node) => node.id));
  for (const id of topology.moves?.distinctValues() ?? []) ids.add(id);
  return [...ids].sort();
}

function startOf(topology: Topology): ClusterCursor {
  return {
    epochLow: topology.epoch % EPOCH_SPAN,
    moving: topology.moves !== undefined,
    node: 0,
    nodeCursor: 0,
  };
}

/**
 * The cursor to continue from: the client's, or the start of a new iteration when the client's
 * belongs to another ring epoch or streaming phase (keys may have moved under it: starting again
 * returns duplicates, never misses a key).
 */
function resume(value: number, topology: Topology, members: number): ClusterCursor {
  const cursor = value === 0 ? undefined : decodeClusterCursor(value);
  const start = startOf(topology);
  if (cursor === undefined) return start;
  if (cursor.epochLow !== start.epochLow || cursor.moving !== start.moving || cursor.node >= members)
    return start;
  return cursor;
}

/** A refusal after which the iteration can go on: a node's cursor expired, or a fence refused it. */
function restartable(error: unknown): error is DstoreError {
  return (
    error instanceof DstoreError &&
    (error.code === ErrorCode.CURSOR_EXPIRED || error.code === ErrorCode.STALE_EPOCH)
  );
}

/**
 * SCAN across the cluster (docs/design/scan.md): the members are walked one after the other with
 * each node's own cursor, and each page asks one node. A key present for the whole iteration is
 * never missed: within one ring epoch and streaming phase keys only move from an old owner that
 * keeps (and returns) its copy until PURGE to a new owner, nodes refuse a cursor of another epoch,
 * and a node that purged the ranges it streamed refuses a cursor that counted on them; every such
 * refusal starts the iteration again (duplicates are allowed, as in Redis).
 */
export class ClusterScan {
  constructor(private readonly membership: Membership) {}

  /** One page for a client: its keys (only those `grant` may see, when limited) and the next cursor. */
  async page(request: ScanRequest, grant: UserGrant | undefined): Promise<WithoutId<KeysResponse>> {
    let topology = this.membership.topology;
    let members = scanMembers(topology);
    let cursor = resume(request.cursor, topology, members.length);
    for (let attempt = 0; ; attempt++) {
      if (members.length === 0) return { op: Op.KEYS, cursor: 0, keys: [] };
      if (members.length > MAX_SCAN_MEMBERS) {
        throw new DstoreError(ErrorCode.INVALID_ARGUMENT, `SCAN walks at most ${MAX_SCAN_MEMBERS} nodes`);
      }
      try {
        return await this.pageOf(members, cursor, topology, request, grant);
      } catch (error) {
        if (attempt > 0 || !restartable(error)) throw error;
        if (error.code === ErrorCode.CURSOR_EXPIRED) {
          // The node forgot its iteration (an lmdb node restarted): that node from its start.
          cursor = { ...cursor, nodeCursor: 0 };
          continue;
        }
        await this.membership.catchUp(error);
        topology = this.membership.topology;
        members = scanMembers(topology);
        cursor = startOf(topology);
      }
    }
  }

  private async pageOf(
    members: readonly string[],
    cursor: ClusterCursor,
    topology: Topology,
    request: ScanRequest,
    grant: UserGrant | undefined,
  ): Promise<WithoutId<KeysResponse>> {
    const id = members[cursor.node]!;
    const node = this.membership.node(id);
    if (node === undefined || !node.up) {
      throw new DstoreError(
        ErrorCode.UNAVAILABLE,
        `node ${id} is down: SCAN cannot go past it (retry this cursor)`,
      );
    }
    const response = await node.forward({
      op: Op.SCAN,
      cursor: cursor.nodeCursor,
      count: request.count,
      match: request.match,
      epoch: topology.epoch,
      moving: cursor.moving ? true : undefined,
    });
    if (response.op !== Op.KEYS)
      throw new DstoreError(ErrorCode.INTERNAL, `node answered SCAN with op ${response.op}`);
    const visible =
      grant === undefined ? response.keys : response.keys.filter((key) => keyVisible(grant, key));
    const keys = cursor.moving ? await this.withoutDeletedMovingKeys(id, visible, topology) : visible;
    if (response.cursor !== 0) {
      return { op: Op.KEYS, cursor: encodeClusterCursor({ ...cursor, nodeCursor: response.cursor }), keys };
    }
    const next = cursor.node + 1;
    return {
      op: Op.KEYS,
      cursor: next >= members.length ? 0 : encodeClusterCursor({ ...cursor, node: next, nodeCursor: 0 }),
      keys,
    };
  }

  /**
   * The keys an old owner (`id`) listed from ranges moving away from it, less those deleted on
   * their new owner since the move began: a DEL, GETDEL or an expiry there leaves a tombstone that
   * shadows this old copy until PURGE, and an iteration must not list a key deleted before it
   * began. Each such key is asked of its new owner (a GET, whose answer says `deleted` for a
   * tombstone); a key it cannot answer for is kept (a ghost is better than a gap).
   */
  private async withoutDeletedMovingKeys(
    id: string,
    keys: readonly Uint8Array[],
    topology: Topology,
  ): Promise<Uint8Array[]> {
    const verdicts = await Promise.all(
      keys.map(async (key) => {
        const ownerId = topology.ownerOf(key);
        if (ownerId === undefined || ownerId === id || topology.fallbackOf(key, ownerId) !== id) return true;
        const owner = this.membership.node(ownerId);
        if (owner === undefined || !owner.up) return true;
        try {
          // A GET, not EXISTS: EXISTS would bring the old copy in (PULL) for every key listed.
          const answer = await owner.forward({ op: Op.GET, key, epoch: topology.epoch });
          return !(answer.op === Op.VALUE && answer.value === null && answer.deleted === true);
        } catch {
          return true;
        }
      }),
    );
    return keys.filter((_, index) => verdicts[index]);
  }
}

/**
 * Sends `op` (DBSIZE or FLUSH) to every member of the routed ring concurrently and sums their
 * COUNT answers. All are awaited; when some failed, the first failure is thrown, as it is when
 * none of them executed (a DBSIZE only reads). A FLUSH that some nodes executed and others did
 * not is neither done nor "not executed": its error then says so and is indeterminate (sending
 * it again is safe, a flush is idempotent).
 */
async function sumOverMembers(
  membership: Membership,
  op: typeof Op.DBSIZE | typeof Op.FLUSH,
): Promise<number> {
  const name = op === Op.DBSIZE ? 'DBSIZE' : 'FLUSHALL';
  const results = await Promise.allSettled(
    membership.topology.ring.nodes().map(async ({ id }) => {
      const node = membership.node(id);
      if (node === undefined || !node.up) throw new DstoreError(ErrorCode.UNAVAILABLE, `node ${id} is down`);
      const response = await node.forward({ op });
      if (response.op !== Op.COUNT)
        throw new DstoreError(ErrorCode.INTERNAL, `node answered ${name} with op ${response.op}`);
      return response.count;
    }),
  );
  let sum = 0;
  let failure: PromiseRejectedResult | undefined;
  let executed = 0;
  for (const result of results) {
    if (result.status === 'fulfilled') {
      sum += result.value;
      executed++;
    } else failure ??= result;
  }
  if (failure === undefined) return sum;
  const reason: unknown = failure.reason;
  if (op === Op.FLUSH && executed > 0 && reason instanceof DstoreError) {
    throw new DstoreError(
      reason.code,
      `FLUSHALL executed on ${executed} of ${results.length} nodes (${sum} keys deleted), not on the others: ${reason.message}`,
      { cause: reason, notExecuted: false },
    );
  }
  throw reason;
}

/**
 * Copies of each key on a settled ring: min(factor, ring members not `dead`), the length of every
 * desired chain (1 with factor 1). A sum of the members' key counts counts each key that often.
 */
function copiesPerKey(membership: Membership): number {
  const map = membership.clusterMap;
  const dead = new Set(
    map.members.filter((member) => member.replicaState === 'dead').map((member) => member.id),
  );
  const members = membership.topology.ring.nodes().filter((node) => !dead.has(node.id)).length;
  return Math.max(1, Math.min(map.replicationFactor, members));
}

/**
 * DBSIZE of the cluster: the sum of the key counts of the routed ring's members (one DBSIZE each,
 * concurrently), divided by the copies each key has with replication ({@link copiesPerKey}).
 * Exact on a settled ring whose members are all `up`; while keys stream a moving key may be
 * counted on both of its owners or, for an instant, on neither (as documented for Redis Cluster's
 * per-node DBSIZE), and a learner's partial copy counts for a fraction of its keys.
 */
export async function clusterDbSize(membership: Membership): Promise<number> {
  const copies = copiesPerKey(membership);
  return Math.round((await sumOverMembers(membership, Op.DBSIZE)) / copies);
}

/**
 * FLUSHALL of the cluster: every member of the routed ring deletes all its keys (one FLUSH each,
 * concurrently); resolves to the keys deleted (each counted once). Refused (BUSY: not executed, retryable) while a
 * migration runs or a ring change waits for one, so that no key of a moving range survives or
 * comes back from a migration stream; each node refuses it too while ranges move to or from it,
 * which covers a ring change that starts while the flush is on its way.
 */
export function clusterFlush(membership: Membership): Promise<number> {
  const migrator = membership.migrator;
  if (migrator.snapshot().active || migrator.queuedChanges > 0) {
    return Promise.reject(
      new DstoreError(
        ErrorCode.BUSY,
        'a migration is in progress: FLUSHALL is refused until it ends (retry later)',
      ),
    );
  }
  // Keys deleted, each counted once (every copy of a key is one of the entries the nodes deleted).
  const copies = copiesPerKey(membership);
  return sumOverMembers(membership, Op.FLUSH).then((deleted) => Math.round(deleted / copies));
}
