import { describe, expect, it } from 'vitest';
import { byteRange } from '../src/internal.js';

describe('byteRange (GETRANGE)', () => {
  // What Redis 7.0 answers to `GETRANGE k start end` with k = "hello" (captured with redis-cli).
  const hello: [number, number, string][] = [
    [0, -10, 'h'],
    [-3, -1, 'llo'],
    [-1, -3, ''],
    [2, 100, 'llo'],
    [10, 20, ''],
    [-100, -100, 'h'],
    [-100, -90, 'h'],
    [3, 1, ''],
    [0, 0, 'h'],
    [-10, 2, 'hel'],
    [0, -1, 'hello'],
  ];
  it.each(hello)('"hello" %i %i is %j, as Redis', (start, end, expected) => {
    expect('hello'.slice(...byteRange(5, start, end))).toBe(expected);
  });

  it('is empty for an empty value, whatever the indexes', () => {
    for (const [start, end] of [
      [0, -1],
      [0, 0],
      [-1, 5],
    ] as const) {
      expect(byteRange(0, start, end)).toEqual([0, 0]);
    }
  });
});
