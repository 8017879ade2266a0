import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type ChainRange, HashRing, HashRingError, inRange, type ReplicaState } from '../src/index.js';

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

describe('chains of a ring change (the union ring: entering, exiting and dropped members)', () => {
  const change = fc
    .uniqueArray(fc.stringMatching(/^[a-z]{1,6}$/), { minLength: 2, maxLength: 8 })
    .chain((ids) =>
      fc.record({
        ids: fc.constant(ids),
        roles: fc.array(fc.constantFrom('up', 'up', 'failed', 'entering', 'exiting', 'dropped'), {
          minLength: ids.length,
          maxLength: ids.length,
        }),
      }),
    );

  it('serves the previous ring chain and appends the next ring members it lacks as learners (property)', () => {
    fc.assert(
      fc.property(
        change,
        fc.integer({ min: 1, max: 4 }),
        fc.constantFrom<'vnode' | 'ketama'>('vnode', 'ketama'),
        fc.array(fc.string({ minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 20 }),
        ({ ids, roles }, n, algorithm, keys) => {
          const states = new Map(ids.map((id, i) => [id, roles[i] as ReplicaState]));
          const previousIds = ids.filter((id) => states.get(id) !== 'entering');
          const nextIds = ids.filter((id) => !['exiting', 'dropped'].includes(states.get(id)!));
          fc.pre(
            previousIds.length > 0 &&
              nextIds.length > 0 &&
              [...states.values()].some((s) => s === 'entering' || s === 'exiting' || s === 'dropped'),
          );
          const union = ringOf(ids, algorithm);
          const previous = ringOf(previousIds, algorithm);
          const next = ringOf(nextIds, algorithm);
          const ranges = union.chains(n, states);
          for (const key of keys) {
            const chain = union.chainOf(key, n, states);
            const before = previous.getN(key, n);
            const after = next.getN(key, n);
            const serving = before.filter((id) => ['up', 'exiting'].includes(states.get(id)!));
            const learners = after.filter((id) => !before.includes(id) && states.get(id) !== 'failed');
            expect(chain.desired).toEqual(before);
            expect(chain.serving).toEqual(serving);
            expect(chain.path).toEqual([...serving, ...learners]);
            expect(chain.changing).toBe(
              after.some((id) => !before.includes(id)) || before.some((id) => !after.includes(id)),
            );
            const { start: _start, end: _end, ...fromRanges } = rangeAt(ranges, union.position(key));
            expect(fromRanges).toEqual(chain);
          }
        },
      ),
      { numRuns: 80 },
    );
  });
});
