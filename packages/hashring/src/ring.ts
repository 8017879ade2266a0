/**
 * The immutable `HashRing` snapshot: every mutation returns a new ring so a
 * balancer can swap one reference atomically while lookups keep running.
 */

import { type Continuum, continuumShares, DistinctWalker, locate, PointSide } from './continuum.js';
import { diffContinua, rangeShare } from './diff.js';
import { HashRingError } from './errors.js';
import { hashedPart } from './hash-tag.js';
import { buildKetamaContinuum } from './ketama.js';
import { md5Hash32 } from './md5.js';
import { buildRendezvous, type RendezvousTable, rendezvousOwner, rendezvousTop } from './rendezvous.js';
import {
  type Chain,
  type ChainRange,
  chainOfDesired,
  chainRangesOf,
  diffReplicaRanges,
  isRingChange,
  NO_STATES,
  type ReplicaRange,
  type ReplicaSetChange,
  type ReplicaStates,
  replicaRangesOf,
  skippedOn,
  type WalkedRing,
} from './replica-sets.js';
import type { RangeMove, RingAlgorithm, RingNode, RingNodeInput, RingOptions } from './types.js';
import {
  checkCount,
  normalizeNode,
  normalizeNodes,
  type ResolvedOptions,
  resolveOptions,
} from './validate.js';
import { buildVnodeContinuum, murmurPosition } from './vnode.js';

const EMPTY: Continuum = {
  points: new Uint32Array(0),
  owners: new Uint16Array(0),
  index: new Uint32Array(2),
  shift: 32,
};

function checkKey(key: unknown): void {
  if (typeof key !== 'string' && !(key instanceof Uint8Array)) {
    throw new HashRingError('INVALID_ARGUMENT', 'key must be a string or Uint8Array');
  }
}

/** An immutable consistent-hash ring. Build with {@link HashRing.from} or {@link createRing}. */
export class HashRing {
  /** Number of nodes. */
  readonly size: number;
  /** Placement algorithm of this ring. */
  readonly algorithm: RingAlgorithm;
  /** Virtual nodes per unit weight (meaningful for `vnode` only). */
  readonly vnodes: number;
  /** The hash tag keys are placed by (see {@link RingOptions.hashTag}), or `undefined`: whole keys. */
  readonly hashTag: string | undefined;

  readonly #nodes: readonly RingNode[];
  readonly #ids: readonly string[];
  readonly #index: ReadonlyMap<string, number>;
  readonly #continuum: Continuum;
  readonly #rendezvous: RendezvousTable | undefined;
  /**
   * The walker of per-key lookups ({@link getN}, {@link chainAtPosition}), created by the first:
   * a lookup then allocates no walk state. Lookups are synchronous, so one walker serves them all.
   */
  #walker: DistinctWalker | undefined;

  private constructor(nodes: RingNode[], options: ResolvedOptions) {
    this.algorithm = options.algorithm;
    this.vnodes = options.vnodes;
    this.hashTag = options.hashTag;
    this.size = nodes.length;
    this.#nodes = Object.freeze(nodes);
    this.#ids = Object.freeze(nodes.map((n) => n.id));
    this.#index = new Map(nodes.map((n, i) => [n.id, i]));
    this.#continuum = HashRing.#buildContinuum(nodes, options);
    this.#rendezvous = options.algorithm === 'rendezvous' ? buildRendezvous(nodes) : undefined;
    Object.freeze(this);
  }

  static #buildContinuum(nodes: RingNode[], options: ResolvedOptions): Continuum {
    if (nodes.length === 0) return EMPTY;
    // Only the vnode algorithm gives a member the same points at both weights (a prefix of one
    // sequence); ketama's counts depend on every member's weight, rendezvous has no points.
    if (options.algorithm !== 'vnode' && nodes.some((node) => node.previousWeight !== undefined)) {
      throw new HashRingError(
        'UNSUPPORTED_OPERATION',
        `a ${options.algorithm} ring cannot change a member's weight in a union ring (vnode only)`,
      );
    }
    if (options.algorithm === 'vnode') return buildVnodeContinuum(nodes, options.vnodes);
    if (options.algorithm === 'ketama') return buildKetamaContinuum(nodes);
    return EMPTY;
  }

  /**
   * Builds a ring. The result depends only on the set of nodes (ids and
   * weights) and the options, never on iteration order. Nodes with a `previousWeight` make the
   * union ring of a ring change that changes their weights (see {@link chainOf}).
   *
   * @throws HashRingError `INVALID_NODE_ID`, `DUPLICATE_NODE`, `INVALID_WEIGHT`, `INVALID_ARGUMENT`,
   *   `UNSUPPORTED_OPERATION` for a `previousWeight` outside the `vnode` algorithm
   */
  static from(nodes: Iterable<RingNodeInput>, options?: RingOptions): HashRing {
    return new HashRing(normalizeNodes(nodes), resolveOptions(options));
  }

  /** Nodes sorted by id (code-unit order). Returns a fresh array. */
  nodes(): RingNode[] {
    return this.#nodes.slice();
  }

  /** Whether a node with this id is a member. */
  has(id: string): boolean {
    return this.#index.has(id);
  }

  /** The node with this id, or `undefined`. */
  node(id: string): RingNode | undefined {
    const i = this.#index.get(id);
    return i === undefined ? undefined : this.#nodes[i];
  }

  /**
   * A new ring with `node` added; this ring is unchanged.
   *
   * @throws HashRingError `DUPLICATE_NODE` if the id exists, or the validation codes of {@link HashRing.from}
   */
  add(node: RingNodeInput): HashRing {
    const normalized = normalizeNode(node);
    if (this.has(normalized.id)) {
      throw new HashRingError('DUPLICATE_NODE', `node "${normalized.id}" is already in the ring`);
    }
    return new HashRing(normalizeNodes([...this.#nodes, normalized]), this.#options());
  }

  /**
   * A new ring without node `id`; this ring is unchanged.
   *
   * @throws HashRingError `UNKNOWN_NODE` if absent
   */
  remove(id: string): HashRing {
    if (!this.has(id)) throw new HashRingError('UNKNOWN_NODE', `node "${String(id)}" is not in the ring`);
    return new HashRing(
      this.#nodes.filter((n) => n.id !== id),
      this.#options(),
    );
  }

  /**
   * Whether this is the union ring of a ring change that changes a member's point count (a member
   * with a `previousWeight` whose points differ): its chains are then always those of a ring
   * change (see {@link chainOf}), whatever the states.
   */
  get changesWeights(): boolean {
    return this.#continuum.sides !== undefined;
  }

  /** A new ring with the same nodes and algorithm but different options. */
  withOptions(options: RingOptions): HashRing {
    return new HashRing(this.#nodes.slice(), resolveOptions({ ...this.#options(), ...options }));
  }

  /** Diffs compare positions: both rings must place keys the same way. */
  #checkComparable(next: HashRing): void {
    if (!(next instanceof HashRing) || next.algorithm !== this.algorithm || next.hashTag !== this.hashTag) {
      throw new HashRingError(
        'INCOMPATIBLE_RINGS',
        'diff needs two rings with the same algorithm and hash tag',
      );
    }
  }

  #options(): ResolvedOptions {
    return {
      algorithm: this.algorithm,
      vnodes: this.vnodes,
      ...(this.hashTag === undefined ? {} : { hashTag: this.hashTag }),
    };
  }

  /**
   * The key's unsigned 32-bit position: MD5-based for `ketama`
   * (first 4 digest bytes, little-endian), MurmurHash3_x86_32 seed 0 otherwise.
   * Strings hash as their UTF-8 bytes. With a {@link hashTag}, only the key's tagged part is
   * hashed, so keys with the same tag have the same position.
   */
  position(key: string | Uint8Array): number {
    checkKey(key);
    const hashed = this.hashTag === undefined ? key : hashedPart(key, this.hashTag);
    return this.algorithm === 'ketama' ? md5Hash32(hashed) : murmurPosition(hashed);
  }

  /**
   * Owner node id of `key`.
   *
   * @throws HashRingError `EMPTY_RING`, `INVALID_ARGUMENT` for a non-string/bytes key
   */
  get(key: string | Uint8Array): string {
    return this.getByPosition(this.position(key));
  }

  /**
   * Owner of a position as returned by {@link HashRing.position}: the first
   * point at or after it, wrapping (rendezvous: the highest score).
   *
   * @throws HashRingError `EMPTY_RING`
   */
  getByPosition(position: number): string {
    if (this.size === 0) throw new HashRingError('EMPTY_RING', 'cannot look up a key on an empty ring');
    if (this.#rendezvous) return this.#ids[rendezvousOwner(this.#rendezvous, position)]!;
    const c = this.#continuum;
    return this.#ids[c.owners[locate(c, position)]!]!;
  }

  /**
   * The index (0 .. {@link pointCount} - 1) of the continuum point that owns `position` (as returned
   * by {@link HashRing.position}), or -1 for `rendezvous` and an empty ring. Positions with the same
   * point index have the same owner and the same chains ({@link chainAtPosition} walks from that
   * point), so a caller can cache per point what it derives from them.
   */
  pointIndex(position: number): number {
    if (this.#rendezvous || this.size === 0) return -1;
    return locate(this.#continuum, position);
  }

  /**
   * Preference list: `n` distinct node ids for `key`, the owner first, then
   * the next distinct owners clockwise (rendezvous: by descending score).
   * Returns every node when `n > size`.
   *
   * @throws HashRingError `EMPTY_RING`, `INVALID_ARGUMENT` when `n` is not an integer >= 1
   */
  getN(key: string | Uint8Array, n: number): string[] {
    checkCount(n);
    const position = this.position(key);
    if (this.size === 0) throw new HashRingError('EMPTY_RING', 'cannot look up a key on an empty ring');
    return this.#walk(position, n, undefined);
  }

  /**
   * Every hash range with its `n` replicas: the owner, then the next distinct members clockwise
   * (the same lists as {@link getN} for the keys of the range). Ranges are disjoint, cover the
   * ring, are sorted by `end` (a wrapping range first) and neighbours with the same replicas are
   * merged. Fewer than `n` replicas when the ring has fewer members. Ranges with the same
   * replicas share one (read-only) array.
   *
   * @throws HashRingError `INVALID_ARGUMENT` when `n` is not an integer >= 1,
   *   `UNSUPPORTED_OPERATION` for `rendezvous`, `EMPTY_RING` for an empty ring
   */
  replicaSets(n: number): ReplicaRange[] {
    checkCount(n);
    this.#assertRanged('replica sets');
    return replicaRangesOf(this.#continuum, this.#ids, n);
  }

  /**
   * Hash ranges whose `n` replicas (in order: the owner first) differ between this ring and
   * `next`, with both lists; sorted by `end`, neighbours with the same change merged. What a
   * replicating cluster must copy (members in `after` only) and may drop (in `before` only).
   *
   * @throws HashRingError as {@link diff}, and `INVALID_ARGUMENT` for a bad `n`
   */
  diffReplicaSets(next: HashRing, n: number): ReplicaSetChange[] {
    checkCount(n);
    this.#checkComparable(next);
    this.#assertRanged('replica set diffs');
    next.#assertRanged('replica set diffs');
    return diffReplicaRanges(this.replicaSets(n), next.replicaSets(n));
  }

  /**
   * The replica chain of `key` with replication factor `n` (see {@link Chain}): the desired chain
   * is {@link getN}'s list with `dead` members skipped (the next distinct members clockwise take
   * their place), the serving chain its `up` members. With `n = 1` and every member up, head and
   * tail are {@link get}'s owner. Every party that builds the same ring from the same map (the
   * balancer, nodes, direct clients) derives the same chains. On the union ring of a ring change
   * (`entering`, `exiting` or `dropped` members, see `ReplicaState`, or members with a
   * `previousWeight`: {@link changesWeights}) the desired chain is the previous ring's and the
   * members of the next ring's chain that are not in it are learners. The previous ring's walk
   * passes over `entering` members and the points only a member's next weight gives; the next
   * ring's over `exiting` and `dropped` members and the points only a previous weight gives.
   * The ring's other lookups ({@link get}, {@link getN}, {@link replicaSets}, {@link shares},
   * {@link diff}) see every point of a union ring.
   *
   * @param states - replication state by member id; absent ids (or no map) are `up`
   * @throws HashRingError `EMPTY_RING`, `INVALID_ARGUMENT` for a bad key or `n`
   */
  chainOf(key: string | Uint8Array, n: number, states?: ReplicaStates): Chain {
    checkCount(n);
    return this.chainAtPosition(this.position(key), n, states);
  }

  /**
   * {@link chainOf} for a position as returned by {@link position}.
   *
   * @throws HashRingError `EMPTY_RING`, `INVALID_ARGUMENT` for a bad `n`
   */
  chainAtPosition(position: number, n: number, states?: ReplicaStates): Chain {
    checkCount(n);
    if (this.size === 0) throw new HashRingError('EMPTY_RING', 'cannot look up a key on an empty ring');
    if (this.changesWeights || isRingChange(states)) {
      const previous = this.#walk(position, n, this.#skipping(states, 'previous'), PointSide.NEXT);
      const next = this.#walk(position, n, this.#skipping(states, 'next'), PointSide.PREVIOUS);
      return chainOfDesired(previous, n, states ?? NO_STATES, next);
    }
    return chainOfDesired(this.#walk(position, n, this.#skipping(states, 'ring')), n, states);
  }

  /**
   * The first `n` distinct members from `position` for which `skip` is not true, in ring order,
   * passing over the points on side `exclude`.
   */
  #walk(
    position: number,
    n: number,
    skip: ((owner: number) => boolean) | undefined,
    exclude?: PointSide,
  ): string[] {
    const ids = this.#ids;
    if (this.#rendezvous) {
      // Every member by descending score, then the first n that are not skipped.
      const ranked =
        skip === undefined
          ? rendezvousTop(this.#rendezvous, position, n)
          : rendezvousTop(this.#rendezvous, position, this.size).filter((i) => !skip(i));
      return ranked.slice(0, n).map((i) => ids[i]!);
    }
    const c = this.#continuum;
    this.#walker ??= new DistinctWalker(c, this.size);
    const count = this.#walker.walk(locate(c, position), Math.min(n, this.size), skip, exclude);
    const picked = this.#walker.picked;
    const result = new Array<string>(count);
    for (let k = 0; k < count; k++) result[k] = ids[picked[k]!]!;
    return result;
  }

  /**
   * The members a walk on `ring` skips (see `skippedOn`: dead ones, and during a ring change the
   * members outside the previous or the next ring); undefined without states.
   */
  #skipping(states: ReplicaStates | undefined, ring: WalkedRing): ((owner: number) => boolean) | undefined {
    if (states === undefined || states.size === 0) return undefined;
    const ids = this.#ids;
    return (owner) => skippedOn(states.get(ids[owner]!), ring);
  }

  /**
   * Every hash range with its chain for replication factor `n` (see {@link chainOf}): disjoint,
   * covering the ring, sorted by `end` (a wrapping range first), neighbours with the same desired
   * chain merged (during a ring change: the same previous and next ring's chains). The ranges and
   * desired chains are {@link replicaSets}' with `dead` members skipped. Ranges with the same
   * chain share its (read-only) arrays.
   *
   * Cost: one walk per ring point (two on a union ring) of a few steps, with no allocation but
   * one object per returned range: ~2 ms for 5 members at the default 4,096 points each and
   * `n = 3` (see BENCHMARKS.md).
   *
   * @throws HashRingError `INVALID_ARGUMENT` for a bad `n`, `UNSUPPORTED_OPERATION` for
   *   `rendezvous`, `EMPTY_RING` for an empty ring
   */
  chains(n: number, states?: ReplicaStates): ChainRange[] {
    checkCount(n);
    this.#assertRanged('chains');
    return chainRangesOf(this.#continuum, this.#ids, n, states, this.changesWeights || isRingChange(states));
  }

  #assertRanged(what: string): void {
    if (this.#rendezvous) {
      throw new HashRingError('UNSUPPORTED_OPERATION', `rendezvous rings are not range-based: no ${what}`);
    }
    if (this.size === 0) throw new HashRingError('EMPTY_RING', `an empty ring has no ${what}`);
  }

  /**
   * Fraction of the 2^32 keyspace each node owns; sums to 1 (empty map for an
   * empty ring). Exact for ring algorithms; for `rendezvous` it is the
   * expected share, weight / total weight.
   */
  shares(): Map<string, number> {
    const result = new Map<string, number>();
    if (this.#rendezvous) {
      const total = this.#nodes.reduce((s, n) => s + n.weight, 0);
      for (const n of this.#nodes) result.set(n.id, n.weight / total);
      return result;
    }
    const shares = continuumShares(this.#continuum, this.size);
    this.#ids.forEach((id, i) => {
      result.set(id, shares[i]!);
    });
    return result;
  }

  /**
   * Fraction of the keyspace each node holds a copy of with replication factor `n`: the summed
   * share of the ranges whose chain ({@link chains}, no member failed) includes it. With `n = 1`
   * these are {@link shares}; they sum to `min(n, size)`.
   *
   * @throws HashRingError as {@link chains}
   */
  replicaShares(n: number): Map<string, number> {
    const result = new Map<string, number>();
    for (const range of this.chains(n)) {
      const share = rangeShare(range);
      for (const id of range.desired) result.set(id, (result.get(id) ?? 0) + share);
    }
    return result;
  }

  /** Number of points on the continuum (0 for `rendezvous`). */
  get pointCount(): number {
    return this.#continuum.points.length;
  }

  /**
   * Bytes held by the lookup structures (points, owners, bucket index; or
   * rendezvous seeds and weights), excluding the node list itself.
   */
  get byteLength(): number {
    const c = this.#continuum;
    const table = this.#rendezvous;
    const tableBytes = table ? table.seeds.byteLength + table.weights.byteLength : 0;
    return c.points.byteLength + c.owners.byteLength + c.index.byteLength + tableBytes;
  }

  /**
   * Hash ranges whose owner changes from this ring to `next`. A key moves iff
   * `position(key)` is in one of the ranges (see {@link inRange}), from
   * `from` to `to`. Ranges are disjoint and sorted by `end`.
   *
   * @throws HashRingError `INCOMPATIBLE_RINGS` if the algorithms or hash tags differ,
   *   `UNSUPPORTED_OPERATION` for `rendezvous`, `EMPTY_RING` if either ring is empty
   */
  diff(next: HashRing): RangeMove[] {
    this.#checkComparable(next);
    if (this.#rendezvous) {
      throw new HashRingError(
        'UNSUPPORTED_OPERATION',
        'rendezvous ownership is not range-based; diff keys instead',
      );
    }
    if (this.size === 0 || next.size === 0) {
      throw new HashRingError('EMPTY_RING', 'cannot diff against an empty ring');
    }
    return diffContinua(this.#continuum, this.#ids, next.#continuum, next.#ids);
  }
}

/** Same as {@link HashRing.from}. */
export function createRing(nodes: Iterable<RingNodeInput>, options?: RingOptions): HashRing {
  return HashRing.from(nodes, options);
}
