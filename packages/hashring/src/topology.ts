import type { RangeIndex } from './range-index.js';
import type { ReplicaStates } from './replica-sets.js';
import { HashRing } from './ring.js';
import type { RingAlgorithm, RingNodeInput } from './types.js';

/**
 * A ring as a cluster announces it: the placement algorithm by name, the virtual nodes per unit
 * weight (0 = the algorithm's default) and the members (during a replicated weight change, with
 * their previous weights: `RingNodeInput.previousWeight`). dstore's RING and MAP messages carry
 * exactly this, so every party that receives one builds the identical ring with {@link ringOfSpec}.
 */
export interface RingSpec {
  readonly algorithm: string;
  readonly vnodes: number;
  readonly nodes: readonly RingNodeInput[];
  /** The hash tag keys are placed by (`RingOptions.hashTag`); absent or empty: whole keys. */
  readonly hashTag?: string | undefined;
}

/**
 * The ring a {@link RingSpec} describes. Placement is deterministic, so the storage nodes, the
 * balancer and direct-routing clients that build it from the same spec agree on every key's owner.
 * Throws a `HashRingError` for an unknown algorithm or an invalid member.
 */
export function ringOfSpec(spec: RingSpec): HashRing {
  return HashRing.from(spec.nodes, {
    algorithm: spec.algorithm as RingAlgorithm,
    ...(spec.vnodes > 0 ? { vnodes: spec.vnodes } : {}),
    ...(spec.hashTag ? { hashTag: spec.hashTag } : {}),
  });
}

/** What a {@link Topology} routes replicated chains by: the map's factor and members' states. */
export interface TopologyReplication {
  readonly factor: number;
  /** Members' replication states (absent: `up`). */
  readonly states?: ReplicaStates | undefined;
}

/**
 * Where keys are, as one immutable snapshot: the ring requests are routed on and its epoch (the
 * fence they carry), the latest ring (differs while a newer one is being announced), and while
 * keys stream the old owner of each moving range (fall-back reads and deletes). Whoever routes
 * (dstore's balancer; a client that routes directly builds one from the cluster map it is sent)
 * reads one snapshot per request, so the ring, the epoch and the fall-back index it uses always
 * belong together; the owner of the snapshot publishes a new one whenever any of them changes.
 */
export class Topology {
  constructor(
    /** The ring requests are routed on. */
    readonly ring: HashRing,
    /** Epoch of {@link ring}: the fence every routed data request carries. */
    readonly epoch: number,
    /** The latest ring (differs from {@link ring} while it is announced). */
    readonly latest: HashRing = ring,
    /** Old owner per moving range while keys stream; undefined otherwise. */
    readonly moves: RangeIndex<string> | undefined = undefined,
    /** The map's replication factor and members' states; undefined (or factor 1): no replication. */
    readonly replication: TopologyReplication | undefined = undefined,
  ) {}

  /** A newer ring is being announced: nodes may refuse with NOT_OWNER or STALE_EPOCH until it settles. */
  get announcing(): boolean {
    return this.ring !== this.latest;
  }

  /** Keys are streaming or a ring is announced: requests take the slow path (copies, fall-backs, one retry). */
  get changing(): boolean {
    return this.moves !== undefined || this.ring !== this.latest;
  }

  /** The id of the node that owns `key` on the routed ring; undefined when the ring is empty. */
  ownerOf(key: Uint8Array): string | undefined {
    return this.ring.size === 0 ? undefined : this.ring.get(key);
  }

  /**
   * The node a request for `key` goes to: its owner with replication factor 1; above it the head
   * of the key's serving chain for a write and its tail for a read (see `HashRing.chainOf`).
   * Undefined when the ring is empty or no member of the chain serves.
   */
  targetOf(key: Uint8Array, write: boolean): string | undefined {
    const replication = this.replication;
    if (replication === undefined || replication.factor <= 1) return this.ownerOf(key);
    if (this.ring.size === 0) return undefined;
    const chain = this.ring.chainOf(key, replication.factor, replication.states);
    return write ? chain.head : chain.tail;
  }

  /**
   * The old owner of `key` while its range moves to `owner` (reads fall back to it, deletes go to
   * it too); undefined when the key's range is not moving. One hash and a binary search.
   */
  fallbackOf(key: Uint8Array, owner: string): string | undefined {
    if (this.moves === undefined) return undefined;
    const from = this.moves.valueAt(this.ring.position(key));
    return from === owner ? undefined : from;
  }
}
