/**
 * The sorted point array shared by the `vnode` and `ketama` algorithms.
 *
 * Points live in a `Uint32Array` with a parallel owner-index array instead of
 * an array of objects: lookups touch two dense arrays, and a point costs
 * 6 bytes (8 with more than 65,536 nodes) rather than ~40.
 */

import { HashRingError } from './errors.js';

/** Owner index per point; narrow when possible to halve memory. */
export type OwnerArray = Uint16Array | Uint32Array;

const MAX_POINTS = 1 << 27;

/** Sorted ring points; entries with equal values are ordered by owner index. */
export interface Continuum {
  /** Point values, ascending. */
  readonly points: Uint32Array;
  /** Owner (index into the id-sorted node list) of each point. */
  readonly owners: OwnerArray;
  /**
   * `index[b]` = first point index whose value >= `b << shift`. Narrows each
   * binary search to a bucket of ~2-4 points: one cache miss instead of ~20
   * hard-to-predict branches over a large array.
   */
  readonly index: Uint32Array;
  /** Bucket of a position is `position >>> shift`. */
  readonly shift: number;
  /**
   * The ring each point belongs to on the union ring of a ring change that changes a member's
   * weight ({@link PointSide}, parallel to {@link points}); undefined when every point is on both.
   */
  readonly sides?: Uint8Array | undefined;
}

/**
 * Which ring of a ring change a union ring point belongs to: a member whose weight changes has
 * the points both weights give, and the points only the larger one gives (see `vnode.ts`).
 */
export const PointSide = {
  /** On the previous and the next ring. */
  BOTH: 0,
  /** On the previous ring only (the member's weight shrinks). */
  PREVIOUS: 1,
  /** On the next ring only (the member's weight grows). */
  NEXT: 2,
} as const;

/** A {@link PointSide} value. */
export type PointSide = (typeof PointSide)[keyof typeof PointSide];

/**
 * Builds the bucket index for sorted `points`: ~4 points per bucket, capped
 * at 2^18 buckets (1 MiB) because past that the index itself stops fitting
 * in cache and measured lookups got no faster.
 */
export function buildIndex(points: Uint32Array): { index: Uint32Array; shift: number } {
  const bits = Math.max(0, Math.min(18, Math.ceil(Math.log2(points.length + 1)) - 2));
  const shift = 32 - bits;
  const buckets = 2 ** bits;
  const index = new Uint32Array(buckets + 1);
  let i = 0;
  for (let b = 0; b <= buckets; b++) {
    const floor = b * 2 ** shift;
    while (i < points.length && points[i]! < floor) i++;
    index[b] = i;
  }
  return { index, shift };
}

const RADIX_BITS = 11;
const RADIX = 1 << RADIX_BITS;

/**
 * One stable counting-sort pass on the digit at `shift`. Stability is what
 * keeps equal points ordered by owner (they are pushed in owner order).
 */
function radixPass(
  srcP: Uint32Array,
  srcO: Uint32Array,
  dstP: Uint32Array,
  dstO: Uint32Array,
  shift: number,
): void {
  const counts = new Uint32Array(RADIX + 1);
  const mask = RADIX - 1;
  for (let i = 0; i < srcP.length; i++) {
    const d = ((srcP[i]! >>> shift) & mask) + 1;
    counts[d] = counts[d]! + 1;
  }
  for (let d = 1; d <= RADIX; d++) counts[d] = counts[d]! + counts[d - 1]!;
  for (let i = 0; i < srcP.length; i++) {
    const d = (srcP[i]! >>> shift) & mask;
    const slot = counts[d]!;
    counts[d] = slot + 1;
    dstP[slot] = srcP[i]!;
    dstO[slot] = srcO[i]!;
  }
}

/** Collects (point, owner) pairs, then sorts them with an LSD radix sort. */
export class ContinuumBuilder {
  private readonly points: Uint32Array;
  private readonly owners: Uint32Array;
  private count = 0;

  /**
   * @param capacity - exact number of points that will be added
   * @param sided - points carry a {@link PointSide} (kept in the owner's low 2 bits while sorting,
   *   so the sort moves one array less and equal points stay ordered by owner)
   */
  constructor(
    capacity: number,
    private readonly sided = false,
  ) {
    if (capacity > MAX_POINTS) {
      throw new HashRingError('INVALID_ARGUMENT', `ring would have ${capacity} points (max ${MAX_POINTS})`);
    }
    this.points = new Uint32Array(capacity);
    this.owners = new Uint32Array(capacity);
  }

  /**
   * Adds one point owned by node `owner` (index into the id-sorted list).
   * Callers push in ascending owner order so ties end up ordered by node id.
   */
  push(point: number, owner: number, side: PointSide = PointSide.BOTH): void {
    this.points[this.count] = point;
    // At most 2^27 points, so at most 2^27 owners: owner * 4 + side fits 32 bits.
    this.owners[this.count++] = this.sided ? owner * 4 + side : owner;
  }

  /**
   * Sorts by point (ties by owner index, i.e. node id: deterministic on every
   * machine) and narrows the owner array. Radix sort is used because rings
   * reach millions of points and comparison sorts dominated build time.
   */
  build(nodeCount: number): Continuum {
    const n = this.count;
    let p: Uint32Array = this.points.subarray(0, n);
    let o: Uint32Array = this.owners.subarray(0, n);
    let tp: Uint32Array = new Uint32Array(n);
    let to: Uint32Array = new Uint32Array(n);
    for (let shift = 0; shift < 32; shift += RADIX_BITS) {
      radixPass(p, o, tp, to, shift);
      [p, tp] = [tp, p];
      [o, to] = [to, o];
    }
    const points = p.slice();
    let sides: Uint8Array | undefined;
    if (this.sided) {
      sides = new Uint8Array(n);
      for (let i = 0; i < n; i++) {
        sides[i] = o[i]! & 3;
        o[i] = o[i]! >>> 2;
      }
    }
    const owners = nodeCount <= 0x10000 ? Uint16Array.from(o) : o.slice();
    return { points, owners, ...buildIndex(points), ...(sides === undefined ? {} : { sides }) };
  }
}

/**
 * Index of the first point >= `position`, wrapping to 0 past the end: the
 * ketama lookup rule, so a key belongs to the range (previous point, point].
 */
export function locate(c: Continuum, position: number): number {
  // `>>>` by 32 is a no-op in JS, so a 1-bucket index needs a special case.
  const b = c.shift === 32 ? 0 : position >>> c.shift;
  let lo = c.index[b]!;
  let hi = c.index[b + 1]!;
  const points = c.points;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (points[mid]! < position) lo = mid + 1;
    else hi = mid;
  }
  return lo === points.length ? 0 : lo;
}

/**
 * Fraction of the keyspace owned by each node index. A point owns the arc
 * from the previous distinct point (exclusive) to itself (inclusive); of equal
 * points only the first (lowest id) owns anything, matching `locate`.
 */
export function continuumShares(c: Continuum, nodeCount: number): Float64Array {
  const shares = new Float64Array(nodeCount);
  const { points, owners } = c;
  const n = points.length;
  if (n === 0) return shares;
  let prev = points[n - 1]!;
  for (let i = 0; i < n; i++) {
    const p = points[i]!;
    if (i > 0 && p === prev) continue;
    // Arc length modulo 2^32; a single distinct point owns the whole circle.
    const arc = p > prev ? p - prev : p - prev + 2 ** 32;
    const owner = owners[i]!;
    shares[owner] = shares[owner]! + arc / 2 ** 32;
    prev = p;
  }
  return shares;
}

/**
 * Walks the ring clockwise from a point collecting distinct owner indices in the order they are
 * met (the replication preference list). One walker serves many walks: its `seen` marks carry the
 * walk's stamp instead of being cleared, and its result buffer is reused, so a walk allocates
 * nothing (`HashRing.chains` walks from every point of the ring). Not reentrant: a `skip`
 * callback must not walk the same walker.
 */
export class DistinctWalker {
  readonly #c: Continuum;
  readonly #nodeCount: number;
  /** `seen[owner] === stamp`: met by the current walk. */
  readonly #seen: Uint32Array;
  #stamp = 0;
  #picked: Uint32Array;

  /** A walker over `c`, whose owners are indices below `nodeCount`. */
  constructor(c: Continuum, nodeCount: number) {
    this.#c = c;
    this.#nodeCount = nodeCount;
    this.#seen = new Uint32Array(nodeCount);
    this.#picked = new Uint32Array(Math.min(nodeCount, 8));
  }

  /**
   * The owner indices the last {@link walk} found (the first `count` entries, `count` being what
   * it returned). Overwritten by the next walk.
   */
  get picked(): Uint32Array {
    return this.#picked;
  }

  /**
   * Walks from point index `from`, collecting up to `want` (at most the node count) distinct
   * owner indices into {@link picked}; returns how many. Owners that `skip` marks (a function
   * returning true, or a mask with 1 at the owner's index) are passed over (members that must not
   * hold replicas: dead ones), so the walk takes the next; `skip` is asked once per distinct owner
   * met. A mask is for many walks with the same skips (`HashRing.chains`): no call per owner, and
   * no new function per `chains()` call for the optimised walk to deoptimise on. Points whose side (see {@link PointSide}) is
   * `exclude` are not there for this walk (the other ring's points of a member whose weight
   * changes): passed over without counting their owner as met.
   */
  walk(
    from: number,
    want: number,
    skip?: ((owner: number) => boolean) | Uint8Array,
    exclude?: PointSide,
  ): number {
    const mask = skip instanceof Uint8Array ? skip : undefined;
    const skips = typeof skip === 'function' ? skip : undefined;
    const { owners } = this.#c;
    const sides = exclude === undefined ? undefined : this.#c.sides;
    const total = owners.length;
    const nodeCount = this.#nodeCount;
    const seen = this.#seen;
    let stamp = this.#stamp + 1;
    if (stamp > 0xffff_ffff) {
      seen.fill(0);
      stamp = 1;
    }
    this.#stamp = stamp;
    if (this.#picked.length < want) this.#picked = new Uint32Array(want);
    const picked = this.#picked;
    let found = 0;
    // The walk ends once every owner was met: with most owners skipped (a ring change's union ring
    // while several members enter), fewer than `want` qualify, and walking on would go round the
    // whole continuum from every point (quadratic in points for `chains`).
    let met = 0;
    for (let i = from, steps = 0; steps < total && found < want && met < nodeCount; steps++) {
      if (sides === undefined || sides[i] !== exclude) {
        const owner = owners[i]!;
        if (seen[owner] !== stamp) {
          seen[owner] = stamp;
          met++;
          if (mask === undefined ? skips === undefined || !skips(owner) : mask[owner] !== 1) {
            picked[found++] = owner;
          }
        }
      }
      i = i + 1 === total ? 0 : i + 1;
    }
    return found;
  }
}
