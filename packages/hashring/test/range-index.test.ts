import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { inRange, RangeIndex } from '../src/index.js';

/** Disjoint ranges from sorted distinct cut points: each (cut[i], cut[i+1]], the last one wrapping. */
function disjointRanges(cuts: number[], keep: boolean[]): { start: number; end: number }[] {
  const sorted = [...new Set(cuts)].sort((a, b) => a - b);
  const ranges: { start: number; end: number }[] = [];
  for (let i = 0; i < sorted.length; i++) {
    if (!keep[i % keep.length]) continue;
    ranges.push({ start: sorted[i]!, end: sorted[(i + 1) % sorted.length]! });
  }
  return sorted.length < 2 ? [] : ranges;
}

describe('RangeIndex', () => {
  it('agrees with a linear scan, including wrapping ranges', () => {
    const ranges = [
      { start: 4_000_000_000, end: 10 },
      { start: 100, end: 200 },
      { start: 500, end: 501 },
    ];
    const index = new RangeIndex(ranges);
    for (const position of [0, 5, 10, 11, 100, 101, 200, 201, 500, 501, 502, 4_000_000_000, 4_000_000_001]) {
      expect(index.has(position), `position ${position}`).toBe(
        ranges.some((range) => inRange(position, range)),
      );
    }
  });

  it('returns the value of the range holding a position (property)', () => {
    const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
    fc.assert(
      fc.property(
        fc.array(u32, { minLength: 2, maxLength: 40 }),
        fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }),
        fc.array(u32, { maxLength: 50 }),
        (cuts, keep, positions) => {
          const ranges = disjointRanges(cuts, keep);
          const index = new RangeIndex(ranges, (range) => `${range.start}-${range.end}`);
          for (const position of [...positions, ...cuts, ...cuts.map((cut) => (cut + 1) >>> 0)]) {
            const holder = ranges.find((range) => inRange(position, range));
            expect(index.valueAt(position)).toBe(
              holder === undefined ? undefined : `${holder.start}-${holder.end}`,
            );
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('RangeIndex.distinctValues', () => {
  it('lists each value once, wrapping ranges included', () => {
    const index = new RangeIndex(
      [
        { start: 4_000_000_000, end: 10 },
        { start: 100, end: 200 },
        { start: 500, end: 501 },
      ],
      (range) => (range.start === 100 ? 'b' : 'a'),
    );
    expect(index.distinctValues().sort()).toEqual(['a', 'b']);
    expect(new RangeIndex([]).distinctValues()).toEqual([]);
  });
});
