import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { type BitUnit, bitCount, bitPos, byteRange, getBit } from '../src/internal.js';

interface BitsGolden {
  readonly redis: string;
  readonly cases: [valueHex: string | null, args: string[], answer: string][];
}

const bitsGolden = JSON.parse(
  readFileSync(new URL('./fixtures/bits-redis.json', import.meta.url), 'utf8'),
) as BitsGolden;

/** What dstore answers to one captured command (the arguments after the key, as Redis got them). */
function bitsAnswer(valueHex: string | null, args: string[]): number {
  const value = valueHex === null ? null : Uint8Array.from(Buffer.from(valueHex, 'hex'));
  const bytes = value ?? new Uint8Array(0);
  const [name, ...rest] = args;
  const numbers = rest.map(Number);
  const unit = rest[rest.length - 1]?.toLowerCase() as BitUnit;
  switch (name) {
    case 'GETBIT':
      return getBit(bytes, numbers[0]!);
    case 'BITCOUNT':
      return rest.length === 0
        ? bitCount(bytes)
        : bitCount(bytes, { start: numbers[0]!, end: numbers[1]!, unit: rest.length === 3 ? unit : 'byte' });
    default: {
      const bit = numbers[0] as 0 | 1;
      if (rest.length === 1) return bitPos(value, bit);
      return bitPos(value, bit, {
        start: numbers[1]!,
        end: rest.length >= 3 ? numbers[2] : undefined,
        unit: rest.length === 4 ? unit : 'byte',
      });
    }
  }
}

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

describe('getBit, bitCount, bitPos (GETBIT, BITCOUNT, BITPOS)', () => {
  it(`answer every captured case exactly as Redis ${bitsGolden.redis} did`, () => {
    const wrong = bitsGolden.cases
      .map(([value, args, answer]) => ({ value, args, answer, dstore: String(bitsAnswer(value, args)) }))
      .filter((one) => one.dstore !== one.answer);
    expect(bitsGolden.cases.length).toBeGreaterThan(2000);
    expect(wrong.slice(0, 5)).toEqual([]);
    expect(wrong.length).toBe(0);
  });
});
