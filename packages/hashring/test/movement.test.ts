import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HashRing, inRange, type RingAlgorithm } from '../src/index.js';
import { findMove, randomKeys } from './helpers.js';

const tenNodes = Array.from({ length: 10 }, (_, i) => ({ id: `node-${i}` }));
const sample = randomKeys(100_000, 11);

/**
 * Every key: moved iff its position is in a diff range, with matching from/to. Plain comparisons
 * and one assertion at the end: a vitest `expect` per key cost most of this file's time.
 */
function checkDiffExact(before: HashRing, after: HashRing, keys: readonly string[]): number {
  const moves = before.diff(after);
  const mismatches: string[] = [];
  let moved = 0;
  for (const key of keys) {
    const from = before.get(key);
    const to = after.get(key);
    const position = before.position(key);
    const move = findMove(moves, position);
    if (from === to) {
      if (move !== undefined)
        mismatches.push(
          `${key} (position ${position}) stays on ${from} but is in move ${JSON.stringify(move)}`,
        );
    } else {
      moved++;
      if (move === undefined)
        mismatches.push(`${key} (position ${position}) moves ${from} -> ${to} but is in no move`);
      else if (move.from !== from || move.to !== to)
        mismatches.push(
          `${key} (position ${position}) moves ${from} -> ${to} but is in move ${JSON.stringify(move)}`,
        );
    }
  }
  expect(mismatches).toEqual([]);
  return moved;
}

describe('inRange', () => {
  it('is (start, end], wrapping when start >= end', () => {
    expect(inRange(5, { start: 5, end: 10 })).toBe(false);
    expect(inRange(10, { start: 5, end: 10 })).toBe(true);
    expect(inRange(0xffffffff, { start: 10, end: 5 })).toBe(true);
    expect(inRange(0, { start: 10, end: 5 })).toBe(true);
    expect(inRange(7, { start: 10, end: 5 })).toBe(false);
    expect(inRange(123, { start: 9, end: 9 })).toBe(true);
  });
});

for (const algorithm of ['vnode', 'ketama'] as RingAlgorithm[]) {
  describe(`${algorithm}: minimal movement`, () => {
    const ring = HashRing.from(tenNodes, { algorithm });

    it('adding an 11th node moves keys only to it, ~1/11 of them, exactly as diff predicts', () => {
      const bigger = ring.add({ id: 'node-10' });
      for (const move of ring.diff(bigger)) expect(move.to).toBe('node-10');
      const moved = checkDiffExact(ring, bigger, sample);
      const fraction = moved / sample.length;
      expect(Math.abs(fraction - 1 / 11) / (1 / 11)).toBeLessThan(0.2);
    });

    it("removing a node moves only that node's keys, exactly as diff predicts", () => {
      const smaller = ring.remove('node-3');
      for (const move of ring.diff(smaller)) expect(move.from).toBe('node-3');
      const moved = checkDiffExact(ring, smaller, sample);
      const owned = sample.filter((k) => ring.get(k) === 'node-3').length;
      expect(moved).toBe(owned);
    });

    it('diff shares equal the change in shares()', () => {
      const bigger = ring.add({ id: 'node-10' });
      const span = (m: { start: number; end: number }) =>
        (m.end > m.start ? m.end - m.start : m.end - m.start + 2 ** 32) / 2 ** 32;
      const total = ring.diff(bigger).reduce((s, m) => s + span(m), 0);
      expect(total).toBeCloseTo(bigger.shares().get('node-10')!, 10);
    });
  });
}

describe('diff (property): arbitrary membership changes', () => {
  it('predicts exactly which keys move, for weight changes too', () => {
    const keys = randomKeys(2_000, 13);
    const ids = fc.uniqueArray(fc.constantFrom(...'abcdefghij'), { minLength: 1, maxLength: 10 });
    fc.assert(
      fc.property(ids, ids, fc.constantFrom<RingAlgorithm>('vnode', 'ketama'), (xs, ys, algorithm) => {
        const a = HashRing.from(
          xs.map((id) => ({ id })),
          { algorithm, vnodes: 16 },
        );
        const b = HashRing.from(
          ys.map((id, i) => ({ id, weight: 1 + (i % 3) })),
          { algorithm, vnodes: 16 },
        );
        checkDiffExact(a, b, keys);
      }),
      { numRuns: 80 },
    );
  });

  it('a one-node ring replaced by another is one full-circle range', () => {
    const moves = HashRing.from([{ id: 'a' }]).diff(HashRing.from([{ id: 'b' }]));
    expect(moves).toHaveLength(1);
    expect(moves[0]!.start).toBe(moves[0]!.end);
  });
});

describe('rendezvous: minimal movement', () => {
  it('adding a node moves keys only to it (~1/11)', () => {
    const ring = HashRing.from(tenNodes, { algorithm: 'rendezvous' });
    const bigger = ring.add({ id: 'node-10' });
    let moved = 0;
    const strays: string[] = [];
    for (const key of sample) {
      const from = ring.get(key);
      const to = bigger.get(key);
      if (to !== from) {
        moved++;
        if (to !== 'node-10') strays.push(`${key}: ${from} -> ${to}`);
      }
    }
    expect(strays).toEqual([]);
    expect(Math.abs(moved / sample.length - 1 / 11) / (1 / 11)).toBeLessThan(0.2);
  });
});
