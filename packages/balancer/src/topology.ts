import type { HashRing, RangeIndex } from '@dstore/hashring';

/**
 * What the router needs to place one request, as one immutable snapshot: the ring requests are
 * routed on and its epoch (the fence they carry), whether a newer ring is being announced, and
 * during a transition's streams the old owner of each moving range (fall-back reads and deletes).
 * The membership (the cluster map's single writer) publishes a new snapshot whenever any of these
 * changes; the router reads one snapshot per request, so the ring, the epoch and the fall-back
 * index it uses always belong together.
 */
export class Topology {
  constructor(
    /** The ring requests are routed on. */
    readonly ring: HashRing,
    /** Epoch of {@link ring}: the fence every forwarded data request carries. */
    readonly epoch: number,
    /** The map's latest ring (differs from {@link ring} while it is announced). */
    readonly latest: HashRing,
    /** Old owner per moving range while keys stream; undefined otherwise. */
    readonly moves: RangeIndex<string> | undefined,
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
   * The old owner of `key` while its range moves to `owner` (reads fall back to it, deletes go to
   * it too); undefined when the key's range is not moving. One hash and a binary search.
   */
  fallbackOf(key: Uint8Array, owner: string): string | undefined {
    if (this.moves === undefined) return undefined;
    const from = this.moves.valueAt(this.ring.position(key));
    return from === owner ? undefined : from;
  }
}
