import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type ChainRange,
  HashRing,
  HashRingError,
  inRange,
  type ReplicaState,
  rangeShare,
  unionRingReproduces,
} from '../src/index.js';

const STATES: readonly ReplicaState[] = ['up', 'syncing', 'promoting', 'failed', 'dead'];

function ringOf(ids: readonly string[], algorithm: 'vnode' | 'ketama' | 'rendezvous', vnodes = 16): HashRing {
  return HashRing.from(
    ids.map((id) => ({ id })),
    algorithm === 'vnode' ? { algorithm, vnodes } : { algorithm },
  );
}

/** The chain range holding `position`, by a linear scan. */
function rangeAt(ranges: readonly ChainRange[], position: number): ChainRange {
  const holding = ranges.filter((range) => inRange(position, range));
  expect(holding.length, `ranges holding ${position}`).toBe(1);
  return holding[0]!;
}

/**
 * The chain by its definition, from getN alone: the whole preference list, dead members
 * dropped, the first n kept; serving = the up ones.
 */
function expected(ring: HashRing, key: string, n: number, states: ReadonlyMap<string, ReplicaState>) {
  const desired = ring
    .getN(key, ring.size)
    .filter((id) => states.get(id) !== 'dead')
    .slice(0, n);
  const serving = desired.filter((id) => (states.get(id) ?? 'up') === 'up');
  const learners = desired.filter((id) => states.get(id) === 'syncing' || states.get(id) === 'promoting');
  return {
    desired,
    serving,
    path: [...serving, ...learners],
    head: serving[0],
    tail: serving[serving.length - 1],
    // Under-replicated: fewer serve than min(n, ring members not dead), by the definition.
    underReplicated:
      n > 1 &&
      serving.length < Math.min(n, ring.nodes().filter((node) => states.get(node.id) !== 'dead').length),
    changing: false,
  };
}

const cluster = fc
  .uniqueArray(fc.stringMatching(/^[a-z]{1,6}$/), { minLength: 1, maxLength: 7 })
  .chain((ids) =>
    fc.record({
      ids: fc.constant(ids),
      states: fc.array(fc.constantFrom(...STATES), { minLength: ids.length, maxLength: ids.length }),
    }),
  );

describe('HashRing.chainOf', () => {
  it('is the preference list without dead members, serving the up ones (property)', () => {
    fc.assert(
      fc.property(
        cluster,
        fc.integer({ min: 1, max: 5 }),
        fc.constantFrom<'vnode' | 'ketama' | 'rendezvous'>('vnode', 'ketama', 'rendezvous'),
        fc.array(fc.string({ minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 30 }),
        ({ ids, states }, n, algorithm, keys) => {
          const ring = ringOf(ids, algorithm);
          const byId = new Map(ids.map((id, i) => [id, states[i]!]));
          for (const key of keys) {
            expect(ring.chainOf(key, n, byId)).toEqual(expected(ring, key, n, byId));
            expect(ring.chainAtPosition(ring.position(key), n, byId)).toEqual(expected(ring, key, n, byId));
          }
        },
      ),
      { numRuns: 80 },
    );
  });

  it('is getN when every member is up, and the owner alone for n = 1', () => {
    const ring = ringOf(['a', 'b', 'c', 'd'], 'vnode');
    for (const key of ['k1', 'user:42', 'x', '']) {
      expect(ring.chainOf(key, 3).desired).toEqual(ring.getN(key, 3));
      expect(ring.chainOf(key, 3).serving).toEqual(ring.getN(key, 3));
      const single = ring.chainOf(key, 1, new Map([['a', 'up']]));
      expect(single).toEqual({
        desired: [ring.get(key)],
        serving: [ring.get(key)],
        path: [ring.get(key)],
        head: ring.get(key),
        tail: ring.get(key),
        underReplicated: false,
        changing: false,
      });
    }
  });

  it('takes the next member clockwise past a dead one, and leaves a failed one out of serving', () => {
    const ring = ringOf(['a', 'b', 'c', 'd', 'e'], 'vnode');
    const key = 'some-key';
    const [first, second, third, fourth] = ring.getN(key, 4);
    const dead = ring.chainOf(key, 3, new Map([[second!, 'dead']]));
    expect(dead.desired).toEqual([first, third, fourth]);
    expect(dead.underReplicated).toBe(false);
    const failed = ring.chainOf(key, 3, new Map([[first!, 'failed']]));
    expect(failed.desired).toEqual([first, second, third]);
    expect(failed.serving).toEqual([second, third]);
    expect(failed.head).toBe(second);
    expect(failed.tail).toBe(third);
    expect(failed.underReplicated).toBe(true);
    expect(failed.path).toEqual([second, third]);
  });

  it('is not under-replicated on a ring shorter than n while every member serves, and is when one does not', () => {
    const pair = ringOf(['a', 'b'], 'vnode');
    for (const range of pair.chains(3)) {
      expect(range.desired).toHaveLength(2);
      expect(range.underReplicated).toBe(false);
    }
    expect(ringOf(['a'], 'vnode').chainOf('k', 3).underReplicated).toBe(false);
    const [first, second] = pair.getN('k', 2);
    const failed = pair.chainOf('k', 3, new Map([[first!, 'failed']]));
    expect(failed.serving).toEqual([second]);
    expect(failed.underReplicated).toBe(true);
    // A dead member shortens the ring: 3 members, one dead, 2 copies are all there can be.
    const trio = ringOf(['a', 'b', 'c'], 'vnode');
    const dead = new Map<string, ReplicaState>([['c', 'dead']]);
    expect(trio.chains(3, dead).every((range) => range.desired.length === 2 && !range.underReplicated)).toBe(
      true,
    );
    // A member joining a 2-member ring (a ring change) is a learner: the 2 serving copies are the
    // previous ring's full chain, not under-replicated while the third is copied.
    const joining = trio.chainOf('k', 3, new Map<string, ReplicaState>([['c', 'entering']]));
    expect(joining.serving).toHaveLength(2);
    expect(joining.underReplicated).toBe(false);
  });

  it('appends learners (syncing, promoting) to the write path after the serving members, in ring order', () => {
    const ring = ringOf(['a', 'b', 'c', 'd', 'e'], 'vnode');
    const key = 'learner-key';
    const [first, second, third] = ring.getN(key, 3);
    const chain = ring.chainOf(
      key,
      3,
      new Map<string, ReplicaState>([
        [first!, 'syncing'],
        [second!, 'promoting'],
      ]),
    );
    expect(chain.serving).toEqual([third]);
    expect(chain.path).toEqual([third, first, second]);
    expect(chain.head).toBe(third);
    expect(chain.tail).toBe(third);
    expect(chain.underReplicated).toBe(true);
    const failedLearner = ring.chainOf(key, 3, new Map<string, ReplicaState>([[first!, 'failed']]));
    expect(failedLearner.path).toEqual([second, third]);
  });

  it('refuses a bad factor and an empty ring with typed errors', () => {
    const ring = ringOf(['a'], 'vnode');
    expect(() => ring.chainOf('k', 0)).toThrow(HashRingError);
    expect(() => ringOf([], 'vnode').chainOf('k', 1)).toThrow(
      expect.objectContaining({ code: 'EMPTY_RING' }),
    );
    expect(() => ringOf(['a'], 'rendezvous').chains(1)).toThrow(
      expect.objectContaining({ code: 'UNSUPPORTED_OPERATION' }),
    );
  });
});

describe('HashRing.chains', () => {
  it('gives every key the chain of chainOf; without states the ranges of replicaSets (property)', () => {
    fc.assert(
      fc.property(
        cluster,
        fc.integer({ min: 1, max: 5 }),
        fc.constantFrom<'vnode' | 'ketama'>('vnode', 'ketama'),
        fc.array(fc.string({ minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 30 }),
        ({ ids, states }, n, algorithm, keys) => {
          const ring = ringOf(ids, algorithm);
          const byId = new Map(ids.map((id, i) => [id, states[i]!]));
          const ranges = ring.chains(n, byId);
          for (const key of keys) {
            const { start: _start, end: _end, ...chain } = rangeAt(ranges, ring.position(key));
            expect(chain).toEqual(expected(ring, key, n, byId));
          }
          const plain = ring.chains(n).map((r) => ({ start: r.start, end: r.end, replicas: r.desired }));
          expect(plain).toEqual(ring.replicaSets(n));
        },
      ),
      { numRuns: 60 },
    );
  });

  it('merges neighbours: one range per distinct chain run, never two neighbours with one chain', () => {
    const ring = ringOf(['a', 'b', 'c', 'd', 'e'], 'vnode', 64);
    const ranges = ring.chains(3, new Map([['c', 'dead']]));
    for (let i = 1; i < ranges.length; i++) {
      expect(ranges[i]!.desired).not.toEqual(ranges[i - 1]!.desired);
      expect(ranges[i]!.start).toBe(ranges[i - 1]!.end);
    }
    for (const range of ranges) expect(range.desired).not.toContain('c');
  });
});

describe('chains of a ring change (the union ring: entering, exiting and dropped members, weight changes)', () => {
  const WEIGHTS = [1, 1, 0.5, 1.5, 2, 3] as const;
  const change = fc
    .uniqueArray(fc.stringMatching(/^[a-z]{1,6}$/), { minLength: 2, maxLength: 8 })
    .chain((ids) =>
      fc.record({
        ids: fc.constant(ids),
        roles: fc.array(fc.constantFrom('up', 'up', 'up', 'failed', 'entering', 'exiting', 'dropped'), {
          minLength: ids.length,
          maxLength: ids.length,
        }),
        // Each member's weight on the previous and on the next ring (vnode only: ketama keeps 1).
        previousWeights: fc.array(fc.constantFrom(...WEIGHTS), {
          minLength: ids.length,
          maxLength: ids.length,
        }),
        nextWeights: fc.array(fc.constantFrom(...WEIGHTS), { minLength: ids.length, maxLength: ids.length }),
      }),
    );

  it('serves the previous ring chain and appends the next ring members it lacks as learners (property)', () => {
    fc.assert(
      fc.property(
        change,
        fc.integer({ min: 1, max: 4 }),
        fc.constantFrom<'vnode' | 'ketama'>('vnode', 'ketama'),
        fc.array(fc.string({ minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 20 }),
        ({ ids, roles, previousWeights, nextWeights }, n, algorithm, keys) => {
          const states = new Map(ids.map((id, i) => [id, roles[i] as ReplicaState]));
          const previousIds = ids.filter((id) => states.get(id) !== 'entering');
          const nextIds = ids.filter((id) => !['exiting', 'dropped'].includes(states.get(id)!));
          const weighted = algorithm === 'vnode';
          const previousWeight = (id: string) => (weighted ? previousWeights[ids.indexOf(id)]! : 1);
          const nextWeight = (id: string) => (weighted ? nextWeights[ids.indexOf(id)]! : 1);
          const changesWeight = (id: string) =>
            previousIds.includes(id) && nextIds.includes(id) && previousWeight(id) !== nextWeight(id);
          const membersChange = [...states.values()].some(
            (s) => s === 'entering' || s === 'exiting' || s === 'dropped',
          );
          fc.pre(previousIds.length > 0 && nextIds.length > 0 && (membersChange || ids.some(changesWeight)));
          // The union ring: each member at its next weight (previous only: its previous one), with
          // its previous weight when it changes.
          const union = HashRing.from(
            ids.map((id) =>
              nextIds.includes(id)
                ? {
                    id,
                    weight: nextWeight(id),
                    ...(changesWeight(id) ? { previousWeight: previousWeight(id) } : {}),
                  }
                : { id, weight: previousWeight(id) },
            ),
            weighted ? { algorithm, vnodes: 16 } : { algorithm },
          );
          expect(union.changesWeights).toBe(ids.some(changesWeight));
          const ringOfWeights = (members: readonly string[], weight: (id: string) => number) =>
            HashRing.from(
              members.map((id) => ({ id, weight: weight(id) })),
              weighted ? { algorithm, vnodes: 16 } : { algorithm },
            );
          const previous = ringOfWeights(previousIds, previousWeight);
          const next = ringOfWeights(nextIds, nextWeight);
          // Only weights change (every member up): the ring alone marks the change, with no states.
          const routed = [...states.values()].every((s) => s === 'up') ? undefined : states;
          const ranges = union.chains(n, routed);
          for (const key of keys) {
            const chain = union.chainOf(key, n, routed);
            const before = previous.getN(key, n);
            const after = next.getN(key, n);
            const serving = before.filter((id) => ['up', 'exiting'].includes(states.get(id)!));
            const learners = after.filter((id) => !before.includes(id) && states.get(id) !== 'failed');
            expect(chain.desired).toEqual(before);
            expect(chain.serving).toEqual(serving);
            expect(chain.path).toEqual([...serving, ...learners]);
            // Reordered counts: a weight change can put the same members in another order.
            expect(chain.changing).toBe(
              after.length !== before.length || after.some((id, i) => before[i] !== id),
            );
            const { start: _start, end: _end, ...fromRanges } = rangeAt(ranges, union.position(key));
            expect(fromRanges).toEqual(chain);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('is a weight change: grown members learn the ranges they gain, shrunk ones serve until the switch', () => {
    const previous = HashRing.from(
      [
        { id: 'a', weight: 1 },
        { id: 'b', weight: 2 },
        { id: 'c', weight: 1 },
        { id: 'd', weight: 1 },
      ],
      { vnodes: 64 },
    );
    const union = HashRing.from(
      [
        { id: 'a', weight: 2, previousWeight: 1 },
        { id: 'b', weight: 1, previousWeight: 2 },
        { id: 'c', weight: 1 },
        { id: 'd', weight: 1 },
      ],
      { vnodes: 64 },
    );
    const next = HashRing.from(
      [
        { id: 'a', weight: 2 },
        { id: 'b', weight: 1 },
        { id: 'c', weight: 1 },
        { id: 'd', weight: 1 },
      ],
      { vnodes: 64 },
    );
    expect(union.pointCount).toBe(previous.pointCount + 64);
    const chains = union.chains(3);
    const changing = chains.filter((chain) => chain.changing);
    expect(changing.length).toBeGreaterThan(0);
    expect(changing.some((chain) => chain.path.at(-1) === 'a' && !chain.desired.includes('a'))).toBe(true);
    expect(changing.some((chain) => chain.desired.includes('b') && chain.path.length === 4)).toBe(true);
    // Keys whose chain keeps its members in another order (a's new points come before the others'):
    // changing too, so the switch drains them before the next order serves.
    const reordered = Array.from({ length: 2000 }, (_, i) => `key-${i}`).filter((key) => {
      const before = previous.getN(key, 3);
      const after = next.getN(key, 3);
      return after.every((id) => before.includes(id)) && after.some((id, i) => before[i] !== id);
    });
    expect(reordered.length).toBeGreaterThan(0);
    for (const key of reordered) {
      const chain = union.chainOf(key, 3);
      expect(chain.changing, key).toBe(true);
      expect(chain.path).toEqual(previous.getN(key, 3));
    }
    for (const key of ['k1', 'user:42', 'x', 'y', 'z']) {
      expect(union.chainOf(key, 3).desired).toEqual(previous.getN(key, 3));
      const path = union.chainOf(key, 3).path;
      for (const id of next.getN(key, 3)) expect(path).toContain(id);
    }
  });

  it('refuses a previous weight on a ketama or rendezvous ring, and an invalid one', () => {
    for (const algorithm of ['ketama', 'rendezvous'] as const) {
      expect(() => HashRing.from([{ id: 'a', weight: 2, previousWeight: 1 }], { algorithm })).toThrow(
        expect.objectContaining({ code: 'UNSUPPORTED_OPERATION' }),
      );
    }
    expect(() => HashRing.from([{ id: 'a', weight: 2, previousWeight: 0 }])).toThrow(
      expect.objectContaining({ code: 'INVALID_WEIGHT' }),
    );
    // Equal to the weight: no weight change.
    const same = HashRing.from([{ id: 'a', weight: 2, previousWeight: 2 }]);
    expect(same.node('a')).toEqual({ id: 'a', weight: 2 });
    expect(same.changesWeights).toBe(false);
  });
});

describe('unionRingReproduces', () => {
  const members = (count: number, weight = 1) =>
    Array.from({ length: count }, (_, i) => ({ id: `n${String(i).padStart(3, '0')}`, weight }));

  it('is true for vnode, and for ketama only while every member keeps its point count', () => {
    expect(unionRingReproduces('vnode', members(3), [...members(3, 2), { id: 'x', weight: 5 }])).toBe(true);
    // Equal weights, 3 -> 4 members: 160 points each throughout.
    expect(unionRingReproduces('ketama', members(3), members(4))).toBe(true);
    expect(unionRingReproduces('ketama', members(4), members(3))).toBe(true);
    // A weight change, or a join with another weight: every member's count moves.
    expect(unionRingReproduces('ketama', members(3), members(3, 2))).toBe(false);
    expect(unionRingReproduces('ketama', members(3), [...members(3), { id: 'x', weight: 2 }])).toBe(false);
    // 24 -> 25 equal members: twemproxy's float32 arithmetic gives 156 points each at 25.
    expect(unionRingReproduces('ketama', members(24), members(25))).toBe(false);
    // 24 -> 26: 160 points at both, but if one of the two entering members fails the union ring
    // routed meanwhile has 25 members.
    expect(unionRingReproduces('ketama', members(24), members(26))).toBe(false);
    expect(unionRingReproduces('rendezvous', members(3), members(4))).toBe(true);
    expect(unionRingReproduces('rendezvous', members(3), members(3, 2))).toBe(false);
  });

  it('matches the union ring property: ketama chains equal both rings when it says so', () => {
    const previous = members(3);
    const next = [...members(3), { id: 'x', weight: 1 }];
    expect(unionRingReproduces('ketama', previous, next)).toBe(true);
    const union = HashRing.from(next, { algorithm: 'ketama' });
    const states = new Map<string, ReplicaState>([['x', 'entering']]);
    const before = HashRing.from(previous, { algorithm: 'ketama' });
    for (const key of ['a', 'b', 'c', 'd', 'e']) {
      expect(union.chainOf(key, 2, states).desired).toEqual(before.getN(key, 2));
    }
  });
});

describe('HashRing.replicaShares', () => {
  it('is shares() at factor 1 and sums to min(n, size)', () => {
    for (const algorithm of ['vnode', 'ketama'] as const) {
      const ring = ringOf(['a', 'b', 'c', 'd', 'e'], algorithm);
      const one = ring.replicaShares(1);
      for (const [id, share] of ring.shares()) expect(one.get(id)).toBeCloseTo(share, 9);
      for (const n of [1, 2, 3, 5, 7]) {
        const total = [...ring.replicaShares(n).values()].reduce((sum, share) => sum + share, 0);
        expect(total).toBeCloseTo(Math.min(n, ring.size), 9);
      }
    }
  });

  it("is the fraction of keys whose preference list's first n members include the node", () => {
    const ring = ringOf(['a', 'b', 'c', 'd', 'e', 'f'], 'vnode', 64);
    const keys = Array.from({ length: 20_000 }, (_, i) => `key:${i}`);
    for (const n of [2, 3]) {
      const shares = ring.replicaShares(n);
      for (const id of ring.nodes().map((node) => node.id)) {
        const holding = keys.filter((key) => ring.getN(key, n).includes(id)).length;
        // 20,000 keys: the sampled fraction is within ~0.01 of the exact one (3 sigma at 0.5).
        expect(Math.abs(holding / keys.length - shares.get(id)!)).toBeLessThan(0.02);
      }
    }
  });

  it('rangeShare is a range length over 2^32, wrapping, the whole ring for start === end', () => {
    expect(rangeShare({ start: 0, end: 2 ** 31 })).toBe(0.5);
    expect(rangeShare({ start: 2 ** 32 - 2 ** 30, end: 2 ** 30 })).toBe(0.5);
    expect(rangeShare({ start: 7, end: 7 })).toBe(1);
  });
});
