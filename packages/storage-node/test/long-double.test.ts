import { readFileSync } from 'node:fs';
import { DstoreError, ErrorCode } from '@dstore/protocol';
import { describe, expect, it } from 'vitest';
import { decideIncrByFloat } from '../src/atomic-ops.js';

interface Golden {
  readonly redis: string;
  readonly cases: [value: string | null, increment: string, answer: string][];
}

const golden = JSON.parse(
  readFileSync(new URL('./fixtures/incrbyfloat-redis.json', import.meta.url), 'utf8'),
) as Golden;
const text = (value: string): Uint8Array => Buffer.from(value, 'latin1');

/** What dstore answers for one case, written as Redis writes it (an error as `-ERR <message>`). */
function dstoreAnswer(value: string | null, increment: string): string {
  const current = value === null ? undefined : { value: text(value), writeEpoch: 1, version: 1, expireAt: 0 };
  const { result } = decideIncrByFloat(text(increment), current);
  return result instanceof DstoreError ? `-ERR ${result.message}` : Buffer.from(result).toString('latin1');
}

describe('INCRBYFLOAT arithmetic (x87 long double, as Redis)', () => {
  it(`answers every captured case exactly as Redis ${golden.redis} did`, () => {
    const wrong = golden.cases
      .map(([value, increment, answer]) => ({
        value,
        increment,
        answer,
        dstore: dstoreAnswer(value, increment),
      }))
      .filter((one) => one.dstore !== one.answer);
    expect(golden.cases.length).toBeGreaterThan(2000);
    expect(wrong.slice(0, 5)).toEqual([]);
    expect(wrong.length).toBe(0);
  });

  it('keeps the expiry, and writes nothing when it refuses', () => {
    const entry = (value: string, expireAt = 0) => ({
      value: text(value),
      writeEpoch: 1,
      version: 1,
      expireAt,
    });
    expect(decideIncrByFloat(text('1.5'), entry('10', 777))).toMatchObject({
      mutation: { kind: 'put', value: text('11.5'), expireAt: 777 },
    });
    expect(decideIncrByFloat(text('2'), undefined)).toMatchObject({ mutation: { kind: 'put', expireAt: 0 } });
    expect(decideIncrByFloat(text('x'), entry('10'))).toMatchObject({
      mutation: { kind: 'none' },
      result: { code: ErrorCode.NOT_A_FLOAT },
    });
    expect(decideIncrByFloat(text('1'), entry('1e4932'))).toMatchObject({ mutation: { kind: 'put' } });
    expect(decideIncrByFloat(text('1e4932'), entry('1e4932'))).toMatchObject({
      mutation: { kind: 'none' },
      result: { code: ErrorCode.OVERFLOW },
    });
  });
});
