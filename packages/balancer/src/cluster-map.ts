import { randomBytes } from 'node:crypto';
import { HashRing, type ReplicaState, type RingOptions } from '@dstore/hashring';
import { DstoreError, ErrorCode } from '@dstore/protocol';
import type { BalancerHashAlgorithm } from './config.js';

/**
 * Where a member stands. `joining`: known, not yet in the ring (waits for the next transition).
 * `up`: in the ring. `leaving`: being moved out of the ring (keeps serving its ranges until they
 * moved). `removed`: out for good; its identity is refused from then on.
 */
export type MemberState = 'joining' | 'up' | 'leaving' | 'removed';

/** One member of the cluster map: a storage node with a persistent identity. */
export interface MapMember {
  /** The node id (names the node in the ring; chosen by the operator). */
  readonly id: string;
  /**
   * The node's incarnation, created by the node: kept in its data dir by an lmdb node, new at
   * every start of a memory node (its data is gone, and the map must know). '' for a static node
   * listed as bare `host:port`, which cannot prove an identity.
   */
  readonly identity: string;
  readonly host: string;
  readonly port: number;
  readonly weight: number;
  readonly state: MemberState;
  /** Map epoch at which the member entered its state. */
  readonly sinceEpoch: number;
  /**
   * Who asked a `leaving` member to go. `node`: its own graceful LEAVE (it hands off its keys,
   * purges them and exits): once out of the ring it is forgotten, and may join again later as a
   * new member. `operator`: a remove: once out it stays `removed` and its identity is refused.
   */
  readonly leftBy?: 'node' | 'operator' | undefined;
  /**
   * The member's replication state (see docs/design/replication.md): `up` serves in its chains,
   * `syncing` and `promoting` (learners: at the end of write paths) and `failed` are in desired
   * chains only, `dead` in none. The map's writer sets `failed` (failover) and `syncing`,
   * `promoting`, `up` (a failed member's return); a stored map without it loads as `up`.
   */
  readonly replicaState: ReplicaState;
}

/** One member of a ring: what placement depends on. */
export interface MapRingMember {
  readonly id: string;
  readonly weight: number;
  /**
   * Only in a union ring (see {@link unionOf}, never stored): the member's weight on the previous
   * ring when its ring change changes it (`weight` is the next ring's).
   */
  readonly previousWeight?: number | undefined;
}

/** The ring the cluster routes on, and the epoch at which it was set. */
export interface MapRing {
  readonly algorithm: BalancerHashAlgorithm;
  /** Virtual nodes per unit weight; 0 = the algorithm's default. */
  readonly vnodes: number;
  /** Map epoch at which this ring was set: the epoch RING messages carry. */
  readonly epoch: number;
  /** Ring members, sorted by id (placement does not depend on order; comparison does). */
  readonly members: readonly MapRingMember[];
  /**
   * The hash tag keys are placed by (`RingOptions.hashTag` of `@dstore/hashring`, e.g. `{}`), set
   * when the map is created and fixed for its life; absent (maps written before hash tags, or
   * created without one): every key placed by all of it.
   */
  readonly hashTag?: string | undefined;
}

/** The `@dstore/hashring` options a cluster map's ring is built with. */
export function ringOptionsOf(ring: MapRing): RingOptions {
  return {
    algorithm: ring.algorithm,
    ...(ring.vnodes > 0 ? { vnodes: ring.vnodes } : {}),
    ...(ring.hashTag === undefined ? {} : { hashTag: ring.hashTag }),
  };
}

/**
 * Why `tag` cannot be a map's hash tag, or undefined when it can: the ring that will use it
 * checks it (`RingOptions.hashTag`), for a configured tag and a stored map alike.
 */
export function hashTagProblem(tag: unknown): string | undefined {
  try {
    HashRing.from([], { hashTag: tag as string });
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

/** How a new map places keys: the ring algorithm and the hash tag (none when undefined). */
export interface MapPlacement {
  readonly algorithm: BalancerHashAlgorithm;
  readonly hashTag?: string | undefined;
}

/**
 * A ring change in progress: moving the keys of the ranges that change owner (factor 1), or of
 * the chains that change (a factor above 1: replication step 5, see docs/design/replication.md).
 */
export interface MapTransition {
  /**
   * `stream`: keys are being copied to their new owners (with replication: to the learners of the
   * changing chains, every party routing on the previous ring's chains); `switch` (replication
   * only): the changing chains are frozen (their heads refuse writes) until every node drained;
   * `install` (replication only): the new ring is being installed, the chains that changed still
   * frozen, until every node has it (so no node serves a changed range from its previous chain
   * once a write of it is acknowledged on the next one); `purge`: the new ring serves, old copies
   * are being deleted.
   */
  readonly phase: 'stream' | 'switch' | 'install' | 'purge';
  /** The ring before the change (the new one is {@link ClusterMap.ring}). */
  readonly from: MapRing;
  /** What caused it (joins, leaves, weight changes), for operators. */
  readonly reason: string;
  /** ISO time the transition started. */
  readonly startedAt: string;
  /** Streams (`from>to` node pairs) whose keys have all moved. */
  readonly done: readonly string[];
  /** Keys moved so far (counted by completed streams). */
  readonly keysMoved: number;
}

/**
 * The authoritative cluster map. Immutable: every change builds a new map with a higher epoch
 * and is stored by compare-and-set on the previous epoch, by the map's single writer.
 */
export interface ClusterMap {
  /** Format version of this document. */
  readonly format: 1;
  /** Random id of the cluster, fixed when the map is created. */
  readonly cluster: string;
  /**
   * Fixed at creation, sent in every RING: a node compares ring epochs only within a generation,
   * so a node that outlived a cluster (or an in-memory map) learns the new one from scratch.
   */
  readonly generation: number;
  /** Raised by every change. */
  readonly epoch: number;
  /**
   * Copies of each key the cluster keeps (the length of every desired chain), fixed when the map
   * is created; a stored map without it loads as 1.
   */
  readonly replicationFactor: number;
  readonly ring: MapRing;
  /** Every member, including removed ones (their identities stay refused). */
  readonly members: readonly MapMember[];
  /** The ring change in progress, if any. */
  readonly transition: MapTransition | null;
  /** ISO time of the last change. */
  readonly updatedAt: string;
}

/** At most this many removed members are remembered (oldest forgotten first). */
export const MAX_REMOVED_MEMBERS = 1024;

/** Highest replication factor a map may hold (a chain is walked per write: keep it short). */
export const MAX_REPLICATION_FACTOR = 7;

/**
 * The factor of a map created without one (issue #14: "3 once there are 3 or more nodes"). A
 * new map usually starts with no nodes (they JOIN later), so the factor cannot wait for the third
 * one: it is 3 from the start, and a key's chain has min(3, ring members not dead) members (1 or 2
 * copies with 1 or 2 nodes, 3 from the third on), which `HashRing.chains` already gives.
 */
export const DEFAULT_REPLICATION_FACTOR = 3;

/** The hash tag of a map created without one: Redis Cluster's (`{user:7}:name` placed by `user:7`). */
export const DEFAULT_HASH_TAG = '{}';

/** Creates the first map of a new cluster (epoch 0, empty ring). */
export function createClusterMap(
  placement: BalancerHashAlgorithm | MapPlacement,
  replicationFactor = 1,
  now = new Date(),
): ClusterMap {
  const { algorithm, hashTag } = typeof placement === 'string' ? { algorithm: placement } : placement;
  return {
    format: 1,
    cluster: randomBytes(8).toString('hex'),
    // 48 random bits: a safe integer, and as unlikely to repeat as the balancer start time was.
    generation: randomBytes(6).readUIntBE(0, 6),
    epoch: 0,
    replicationFactor,
    ring: { algorithm, vnodes: 0, epoch: 0, members: [], ...(hashTag ? { hashTag } : {}) },
    members: [],
    transition: null,
    updatedAt: now.toISOString(),
  };
}

/** The members that belong in the ring as the map stands: joining and up ones, sorted by id. */
export function desiredRingMembers(map: ClusterMap): MapRingMember[] {
  return map.members
    .filter((member) => member.state === 'joining' || member.state === 'up')
    .map((member) => ({ id: member.id, weight: member.weight }))
    .sort(byMemberId);
}

/** The order of a ring's member list: by id (what {@link sameRingMembers} compares). */
export function byMemberId(a: { readonly id: string }, b: { readonly id: string }): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** Whether two ring member lists place keys identically (both sorted by id). */
export function sameRingMembers(a: readonly MapRingMember[], b: readonly MapRingMember[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    if (a[i]!.id !== b[i]!.id || a[i]!.weight !== b[i]!.weight) return false;
  }
  return true;
}

/** The member with this id that is not removed. */
export function activeMember(map: ClusterMap, id: string): MapMember | undefined {
  return map.members.find((member) => member.id === id && member.state !== 'removed');
}

/** Whether this identity was removed from the cluster (refused from then on). */
export function isRemovedIdentity(map: ClusterMap, identity: string): boolean {
  return identity !== '' && map.members.some((m) => m.state === 'removed' && m.identity === identity);
}

/**
 * The next map: `change` applied, epoch raised, time stamped, removed members beyond
 * {@link MAX_REMOVED_MEMBERS} forgotten. Never mutates `map`.
 */
export function nextMap(
  map: ClusterMap,
  change: Partial<Pick<ClusterMap, 'ring' | 'members' | 'transition'>>,
  now = new Date(),
): ClusterMap {
  let members = change.members ?? map.members;
  const removed = members.filter((member) => member.state === 'removed');
  if (removed.length > MAX_REMOVED_MEMBERS) {
    const forget = new Set(removed.slice(0, removed.length - MAX_REMOVED_MEMBERS));
    members = members.filter((member) => !forget.has(member));
  }
  return {
    ...map,
    ...change,
    members,
    epoch: map.epoch + 1,
    updatedAt: now.toISOString(),
  };
}

/** Replaces (by id, among non-removed members) or appends a member. */
export function withMember(members: readonly MapMember[], member: MapMember): MapMember[] {
  const index = members.findIndex((m) => m.id === member.id && m.state !== 'removed');
  if (index < 0) return [...members, member];
  const copy = [...members];
  copy[index] = member;
  return copy;
}

/** The text a map is stored as (JSON, one document). */
export function serializeClusterMap(map: ClusterMap): string {
  return `${JSON.stringify(map, null, 2)}\n`;
}

function corrupt(where: string, message: string): DstoreError {
  return new DstoreError(ErrorCode.MAP_CORRUPT, `cluster map ${where}: ${message}`);
}

type Check = (value: unknown, path: string) => void;

function expect(where: string): {
  string: Check;
  int: Check;
  positive: Check;
  object: (value: unknown, path: string) => Record<string, unknown>;
  array: (value: unknown, path: string) => unknown[];
} {
  return {
    string: (value, path) => {
      if (typeof value !== 'string') throw corrupt(where, `${path} must be a string`);
    },
    int: (value, path) => {
      if (!Number.isSafeInteger(value) || (value as number) < 0)
        throw corrupt(where, `${path} must be a non-negative integer`);
    },
    positive: (value, path) => {
      if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0)
        throw corrupt(where, `${path} must be a positive number`);
    },
    object: (value, path) => {
      if (value === null || typeof value !== 'object' || Array.isArray(value))
        throw corrupt(where, `${path} must be an object`);
      return value as Record<string, unknown>;
    },
    array: (value, path) => {
      if (!Array.isArray(value)) throw corrupt(where, `${path} must be an array`);
      return value;
    },
  };
}

const STATES: ReadonlySet<string> = new Set(['joining', 'up', 'leaving', 'removed']);
const REPLICA_STATES: ReadonlySet<string> = new Set<ReplicaState>([
  'up',
  'syncing',
  'promoting',
  'failed',
  'dead',
]);

/**
 * Members' replication states by id (removed members have none): what chains are derived from.
 * A member declared `dead` counts as `failed` until its ring change runs (it serves nothing and
 * its chains keep their members: the next member clockwise serves only once it holds the keys).
 */
export function replicaStatesOf(map: ClusterMap): Map<string, ReplicaState> {
  const states = new Map<string, ReplicaState>();
  for (const member of map.members) {
    if (member.state === 'removed') continue;
    states.set(member.id, member.replicaState === 'dead' ? 'failed' : member.replicaState);
  }
  return states;
}

/**
 * The ring a replicated ring change routes on (replication step 5) while it streams and switches:
 * the union of the previous ring (`transition.from`) and the next one (`ring`), and the states
 * that mark it (see `ReplicaState` in `@dstore/hashring`): a member of the next ring only is
 * `entering` (left out while it is `failed`: it holds nothing, and its chains' serving members
 * hold everything), one of the previous ring only `exiting` while `up`, else `dropped` (never a
 * source). A member of both rings whose weight changes has its next weight and its previous one
 * (`previousWeight`: the points only one weight gives belong to that ring alone, see
 * `RingNodeInput.previousWeight` in `@dstore/hashring`). Undefined when the map routes on its own
 * ring (no transition, factor 1, or `purge`).
 */
export function unionOf(
  map: ClusterMap,
): { readonly members: MapRingMember[]; readonly states: Map<string, ReplicaState> } | undefined {
  const transition = map.transition;
  if (
    map.replicationFactor <= 1 ||
    transition === null ||
    transition.phase === 'install' ||
    transition.phase === 'purge'
  )
    return undefined;
  const states = replicaStatesOf(map);
  const previous = new Set(transition.from.members.map((member) => member.id));
  const next = new Map(map.ring.members.map((member) => [member.id, member.weight]));
  const members: MapRingMember[] = [];
  for (const member of transition.from.members) {
    const weight = next.get(member.id);
    if (weight !== undefined) {
      members.push(
        weight === member.weight ? member : { id: member.id, weight, previousWeight: member.weight },
      );
      continue;
    }
    members.push(member);
    states.set(member.id, states.get(member.id) === 'up' ? 'exiting' : 'dropped');
  }
  for (const member of map.ring.members) {
    if (previous.has(member.id)) continue;
    // A failed entering member stays `failed` in the states (so announces stop waiting for it),
    // out of the ring: every chain routes as if it had not joined yet.
    if (states.get(member.id) === 'failed') continue;
    members.push(member);
    states.set(member.id, 'entering');
  }
  members.sort(byMemberId);
  return { members, states };
}

function checkRing(value: unknown, path: string, where: string): void {
  const e = expect(where);
  const ring = e.object(value, path);
  if (ring.algorithm !== 'vnode' && ring.algorithm !== 'ketama')
    throw corrupt(where, `${path}.algorithm must be vnode or ketama`);
  e.int(ring.vnodes, `${path}.vnodes`);
  e.int(ring.epoch, `${path}.epoch`);
  const tagProblem = ring.hashTag === undefined ? undefined : hashTagProblem(ring.hashTag);
  if (tagProblem !== undefined) throw corrupt(where, `${path}.hashTag: ${tagProblem}`);
  e.array(ring.members, `${path}.members`).forEach((member, index) => {
    const m = e.object(member, `${path}.members[${index}]`);
    e.string(m.id, `${path}.members[${index}].id`);
    e.positive(m.weight, `${path}.members[${index}].weight`);
  });
}

/**
 * Parses and checks a stored map; `where` names the store in errors. Throws MAP_CORRUPT on
 * anything that is not a complete map of a known format: a balancer must never route on a guess.
 */
export function parseClusterMap(text: string, where: string): ClusterMap {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw corrupt(where, `not JSON (${(error as Error).message})`);
  }
  const e = expect(where);
  const map = e.object(parsed, 'the document');
  if (map.format !== 1) throw corrupt(where, `format ${String(map.format)} is not one this balancer reads`);
  e.string(map.cluster, 'cluster');
  e.int(map.generation, 'generation');
  e.int(map.epoch, 'epoch');
  e.string(map.updatedAt, 'updatedAt');
  // Absent in maps written before replication: one copy, as they were.
  const factor = map.replicationFactor ?? 1;
  if (!Number.isSafeInteger(factor) || (factor as number) < 1 || (factor as number) > MAX_REPLICATION_FACTOR)
    throw corrupt(where, `replicationFactor must be an integer from 1 to ${MAX_REPLICATION_FACTOR}`);
  checkRing(map.ring, 'ring', where);
  const members = e.array(map.members, 'members').map((member, index) => {
    const m = e.object(member, `members[${index}]`);
    for (const field of ['id', 'identity', 'host']) e.string(m[field], `members[${index}].${field}`);
    e.int(m.port, `members[${index}].port`);
    e.positive(m.weight, `members[${index}].weight`);
    e.int(m.sinceEpoch, `members[${index}].sinceEpoch`);
    if (!STATES.has(m.state as string)) throw corrupt(where, `members[${index}].state is not a state`);
    if (m.leftBy !== undefined && m.leftBy !== 'node' && m.leftBy !== 'operator')
      throw corrupt(where, `members[${index}].leftBy must be node or operator`);
    if (m.replicaState === undefined) return { ...m, replicaState: 'up' };
    if (!REPLICA_STATES.has(m.replicaState as string))
      throw corrupt(where, `members[${index}].replicaState must be up, syncing, promoting, failed or dead`);
    return m;
  });
  if (map.transition !== null) {
    const t = e.object(map.transition, 'transition');
    const replicatedPhase = t.phase === 'switch' || t.phase === 'install';
    if (t.phase !== 'stream' && t.phase !== 'purge' && (!replicatedPhase || factor === 1))
      throw corrupt(where, 'transition.phase is not a phase');
    checkRing(t.from, 'transition.from', where);
    e.string(t.reason, 'transition.reason');
    e.string(t.startedAt, 'transition.startedAt');
    e.int(t.keysMoved, 'transition.keysMoved');
    for (const [index, stream] of e.array(t.done, 'transition.done').entries()) {
      e.string(stream, `transition.done[${index}]`);
    }
  }
  return { ...map, replicationFactor: factor, members } as unknown as ClusterMap;
}
