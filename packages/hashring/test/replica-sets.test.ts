import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HashRing, HashRingError, inRange, type ReplicaRange } from '../src/index.js';

const u32 = fc.integer({ min: 0, max: 0xffff_ffff });

function ringOf(ids: readonly string[], algorithm: 'vnode' | 'ketama' = 'vnode', vnodes = 16): HashRing {
  return HashRing.from(
    ids.map((id) => ({ id })),
    algorithm === 'vnode' ? { algorithm, vnodes } : { algorithm },
  );
}

/** The replicas of the range holding `position`, by a linear scan. */
function replicasAt(ranges: readonly ReplicaRange[], position: number): readonly string[] | undefined {
  const holding = ranges.filter((range) => inRange(position, range));
  expect(holding.length, `ranges holding ${position}`).toBe(1);
  return holding[0]?.replicas;
}

describe('HashRing.replicaSets', () => {
  it('gives every key the preference list of getN (property)', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.stringMatching(/^[a-z]{1,6}$/), { minLength: 1, maxLength: 7 }),
        fc.integer({ min: 1, max: 5 }),
        fc.constantFrom<'vnode' | 'ketama'>('vnode', 'ketama'),
        fc.array(fc.string({ minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 40 }),
        (ids, n, algorithm, keys) => {
          const ring = ringOf(ids, algorithm);
          const ranges = ring.replicaSets(n);
          for (const key of keys) {
            expect(replicasAt(ranges, ring.position(key))).toEqual(ring.getN(key, n));
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  it('covers the ring with disjoint ranges, merged where neighbours agree', () => {
    const ring = ringOf(['a', 'b', 'c', 'd', 'e'], 'vnode', 64);
    const ranges = ring.replicaSets(3);
    for (let i = 0; i < ranges.length; i++) {
      const range = ranges[i]!;
      const next = ranges[(i + 1) % ranges.length]!;
      expect(next.start, `range ${i} is followed by the next`).toBe(range.end);
      expect(new Set(range.replicas).size).toBe(3);
      if (ranges.length > 1) expect(next.replicas).not.toEqual(range.replicas);
    }
    // Property-style check of the cover on random positions.
    fc.assert(fc.property(u32, (position) => replicasAt(ranges, position) !== undefined));
  });

  it('holds every member once a ring has no more members than n', () => {
    const ring = ringOf(['a', 'b']);
    for (const range of ring.replicaSets(3)) expect([...range.replicas].sort()).toEqual(['a', 'b']);
    expect(ringOf(['solo']).replicaSets(3)).toEqual([
      { start: expect.any(Number), end: expect.any(Number), replicas: ['solo'] },
    ]);
  });

  it('refuses a bad n, an empty ring and rendezvous rings with typed errors', () => {
    expect(() => ringOf(['a']).replicaSets(0)).toThrow(HashRingError);
    expect(() => HashRing.from([]).replicaSets(1)).toThrow(/empty ring/);
    const rendezvous = HashRing.from([{ id: 'a' }], { algorithm: 'rendezvous' });
    expect(() => rendezvous.replicaSets(1)).toThrow(/not range-based/);
  });
});

describe('HashRing.diffReplicaSets', () => {
  it('lists exactly the positions whose replicas change, with both lists (property)', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.stringMatching(/^[a-z]{1,6}$/), { minLength: 2, maxLength: 7 }),
        fc.integer({ min: 1, max: 4 }),
        fc.array(u32, { minLength: 1, maxLength: 60 }),
        (ids, n, positions) => {
          const before = ringOf(ids);
          const after = before.remove(ids[0]!).add({ id: 'joiner' });
          const changes = before.diffReplicaSets(after, n);
          const old = before.replicaSets(n);
          const now = after.replicaSets(n);
          for (const position of positions) {
            const change = changes.find((c) => inRange(position, c));
            const was = replicasAt(old, position);
            const is = replicasAt(now, position);
            if (change === undefined) expect(is).toEqual(was);
            else expect([change.before, change.after]).toEqual([was, is]);
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  it('is empty between a ring and itself, and the same as diff for n = 1 ownership', () => {
    const ring = ringOf(['a', 'b', 'c']);
    expect(ring.diffReplicaSets(ring, 3)).toEqual([]);
    const grown = ring.add({ id: 'd' });
    const owners = ring
      .diff(grown)
      .map((m) => ({ start: m.start, end: m.end, before: [m.from], after: [m.to] }));
    expect(ring.diffReplicaSets(grown, 1)).toEqual(owners);
  });

  it('refuses rings of different algorithms', () => {
    expect(() => ringOf(['a']).diffReplicaSets(ringOf(['a'], 'ketama'), 2)).toThrow(/same algorithm/);
  });
});
