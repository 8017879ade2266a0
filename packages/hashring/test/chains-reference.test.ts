import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type Chain,
  type ChainRange,
  HashRing,
  murmur3String,
  type ReplicaState,
  vnodePointCount,
} from '../src/index.js';

/**
 * `HashRing.chains` against the obvious reference: rebuild the vnode continuum from its
 * definition (member `id` at weight `w` has points murmur3(id, seed i) for i < round(w * vnodes);
 * on a union ring the points only one weight gives belong to that ring alone), walk from every
 * distinct point to the first n distinct members that qualify, derive each chain from its
 * definition, then merge equal neighbours (across the wrap too). Slow and simple on purpose: the
 * optimised walk (reused walker, interned lists, runs merged before ranges are built) must give
 * exactly the same ranges.
 */

type Side = 'both' | 'previous' | 'next';

interface Point {
  readonly value: number;
  readonly id: string;
  readonly side: Side;
}

interface Member {
  readonly id: string;
  readonly weight: number;
  readonly previousWeight?: number;
}

function continuumOf(members: readonly Member[], vnodes: number): Point[] {
  const points: Point[] = [];
  for (const { id, weight, previousWeight } of members) {
    const next = vnodePointCount(weight, vnodes);
    const previous = vnodePointCount(previousWeight ?? weight, vnodes);
    for (let i = 0; i < Math.max(next, previous); i++) {
      const side: Side = i < Math.min(next, previous) ? 'both' : next > previous ? 'next' : 'previous';
      points.push({ value: murmur3String(id, i), id, side });
    }
  }
  // Ties by id (code-unit order), as the ring orders owners.
  return points.sort((a, b) => a.value - b.value || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** The first n distinct members from point `from` that `skip` lets through, passing over points of side `exclude`. */
function walk(
  points: readonly Point[],
  from: number,
  n: number,
  skip: (id: string) => boolean,
  exclude: Side | undefined,
): string[] {
  const met = new Set<string>();
  const picked: string[] = [];
  for (let step = 0; step < points.length && picked.length < n; step++) {
    const point = points[(from + step) % points.length]!;
    if (point.side === exclude || met.has(point.id)) continue;
    met.add(point.id);
    if (!skip(point.id)) picked.push(point.id);
  }
  return picked;
}

/** A chain by its definition (see `Chain` and `ReplicaState`); `next` only during a ring change. */
function chainOf(
  desired: string[],
  n: number,
  states: ReadonlyMap<string, ReplicaState> | undefined,
  next: string[] | undefined,
): Chain {
  const state = (id: string) => states?.get(id) ?? 'up';
  const serving = desired.filter((id) => ['up', 'exiting'].includes(state(id)));
  const learners =
    serving.length < desired.length
      ? desired.filter((id) => ['syncing', 'promoting', 'entering'].includes(state(id)))
      : [];
  const added = (next ?? []).filter((id) => !desired.includes(id) && !learners.includes(id));
  learners.push(...added.filter((id) => state(id) !== 'failed'));
  return {
    desired,
    serving,
    path: [...serving, ...learners],
    head: serving[0],
    tail: serving.at(-1),
    underReplicated: n > 1 && serving.length < desired.length,
    // Another list, or the same members in another order (a weight change can reorder a chain).
    changing:
      next !== undefined && (next.length !== desired.length || next.some((id, i) => desired[i] !== id)),
  };
}

function referenceChains(
  members: readonly Member[],
  vnodes: number,
  n: number,
  states: ReadonlyMap<string, ReplicaState> | undefined,
): ChainRange[] {
  const points = continuumOf(members, vnodes);
  const state = (id: string) => states?.get(id);
  const ringChange =
    members.some(
      (m) => vnodePointCount(m.weight, vnodes) !== vnodePointCount(m.previousWeight ?? m.weight, vnodes),
    ) || [...(states?.values() ?? [])].some((s) => ['entering', 'exiting', 'dropped'].includes(s));
  // Each range with the lists its chain derives from: neighbours merge when both lists are
  // equal (two list pairs may give equal chains, for example a previous [a, b] and a next [b, a]).
  const ranges: { range: ChainRange; lists: string }[] = [];
  let start = points.at(-1)!.value;
  for (let i = 0; i < points.length; i++) {
    const end = points[i]!.value;
    // Of equal points only the first owns anything.
    if (i > 0 && end === points[i - 1]!.value) continue;
    const desired = ringChange
      ? walk(points, i, n, (id) => ['dead', 'entering'].includes(state(id) ?? 'up'), 'next')
      : walk(points, i, n, (id) => state(id) === 'dead', undefined);
    const next = ringChange
      ? walk(points, i, n, (id) => ['dead', 'exiting', 'dropped'].includes(state(id) ?? 'up'), 'previous')
      : undefined;
    const chain = chainOf(desired, n, ringChange ? (states ?? new Map()) : states, next);
    ranges.push({ range: { start, end, ...chain }, lists: JSON.stringify([desired, next]) });
    start = end;
  }
  const merged: typeof ranges = [];
  for (const entry of ranges) {
    const last = merged.at(-1);
    if (last !== undefined && last.lists === entry.lists) {
      merged[merged.length - 1] = { ...entry, range: { ...entry.range, start: last.range.start } };
    } else merged.push(entry);
  }
  if (merged.length > 1 && merged[0]!.lists === merged.at(-1)!.lists) {
    merged[0] = { ...merged[0]!, range: { ...merged[0]!.range, start: merged.pop()!.range.start } };
  }
  return merged.map((entry) => entry.range);
}

const ROLES: readonly ReplicaState[] = [
  'up',
  'up',
  'up',
  'syncing',
  'promoting',
  'failed',
  'dead',
  'entering',
  'exiting',
  'dropped',
];
const WEIGHTS = [1, 1, 0.5, 1.5, 2, 3] as const;

const cluster = fc
  .uniqueArray(fc.stringMatching(/^[a-z]{1,5}$/), { minLength: 1, maxLength: 9 })
  .chain((ids) =>
    fc.record({
      ids: fc.constant(ids),
      weights: fc.array(fc.constantFrom(...WEIGHTS), { minLength: ids.length, maxLength: ids.length }),
      // A previous weight for some members (a weight change on the union ring).
      previousWeights: fc.array(fc.option(fc.constantFrom(...WEIGHTS), { nil: undefined }), {
        minLength: ids.length,
        maxLength: ids.length,
      }),
      roles: fc.option(
        fc.array(fc.constantFrom(...ROLES), { minLength: ids.length, maxLength: ids.length }),
        { nil: undefined },
      ),
      // Few points per member: many members own single points, walks go far round the ring.
      vnodes: fc.constantFrom(1, 2, 4, 16),
      // Up to 6 of up to 9 members: lists both below and above the dense interning table.
      n: fc.integer({ min: 1, max: 6 }),
    }),
  );

describe('HashRing.chains against a reference walk from every point', () => {
  it('gives the reference ranges and chains exactly, plain and union rings (property)', () => {
    fc.assert(
      fc.property(cluster, ({ ids, weights, previousWeights, roles, vnodes, n }) => {
        const members: Member[] = ids.map((id, i) => {
          const previousWeight = previousWeights[i];
          return {
            id,
            weight: weights[i]!,
            ...(previousWeight === undefined ? {} : { previousWeight }),
          };
        });
        const states =
          roles === undefined
            ? undefined
            : new Map<string, ReplicaState>(ids.map((id, i) => [id, roles[i]!]));
        const ring = HashRing.from(members, { vnodes });
        expect(ring.chains(n, states)).toEqual(referenceChains(members, vnodes, n, states));
      }),
      { numRuns: 400 },
    );
  });

  it('gives the reference on rings of 60 members at 64 points each (lists past the dense table)', () => {
    const members: Member[] = Array.from({ length: 60 }, (_, i) => ({
      id: `m${i}`,
      weight: 1 + (i % 3),
      ...(i % 7 === 0 ? { previousWeight: 2 } : {}),
    }));
    const states = new Map<string, ReplicaState>([
      ['m3', 'entering'],
      ['m8', 'dead'],
      ['m11', 'exiting'],
      ['m20', 'syncing'],
      ['m21', 'failed'],
    ]);
    for (const n of [1, 3, 4]) {
      const ring = HashRing.from(members, { vnodes: 64 });
      expect(ring.chains(n, states)).toEqual(referenceChains(members, 64, n, states));
      const plain = HashRing.from(
        members.map(({ id, weight }) => ({ id, weight })),
        { vnodes: 64 },
      );
      const dead = new Map<string, ReplicaState>([['m8', 'dead']]);
      expect(plain.chains(n, dead)).toEqual(
        referenceChains(
          members.map(({ id, weight }) => ({ id, weight })),
          64,
          n,
          dead,
        ),
      );
    }
  });
});
