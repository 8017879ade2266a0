import { Op } from '@dstore/protocol';
import { describe, expect, it } from 'vitest';
import { decideExpire, decideIncrBy, decideSetBit, decideSetWith, parseInt64 } from '../src/atomic-ops.js';

const text = (value: string): Uint8Array => Buffer.from(value, 'latin1');
const entry = (value: string, expireAt = 0) => ({ value: text(value), writeEpoch: 1, version: 1, expireAt });

describe('atomic operations (the decisions of a read-modify-write)', () => {
  it('reads integers exactly as Redis does (string2ll)', () => {
    const valid: [string, bigint][] = [
      ['0', 0n],
      ['-1', -1n],
      ['123456789012345', 123456789012345n],
      ['9223372036854775807', 9223372036854775807n],
      ['-9223372036854775808', -9223372036854775808n],
    ];
    for (const [input, expected] of valid) expect(parseInt64(text(input))).toBe(expected);
    for (const input of [
      '',
      '-',
      '-0',
      '01',
      '+1',
      ' 1',
      '1 ',
      '1.0',
      '1e3',
      '9223372036854775808',
      '-9223372036854775809',
      'abc',
    ]) {
      expect(parseInt64(text(input)), input).toBeUndefined();
    }
  });

  it('adds within the 64-bit range, keeping the expiry; refuses overflow and non-integers unchanged', () => {
    expect(decideIncrBy(5n, undefined)).toMatchObject({ result: 5n, mutation: { kind: 'put', expireAt: 0 } });
    expect(decideIncrBy(-1n, entry('10', 777))).toMatchObject({
      result: 9n,
      mutation: { kind: 'put', expireAt: 777 },
    });
    expect(decideIncrBy(1n, entry('9223372036854775807'))).toMatchObject({
      mutation: { kind: 'none' },
      result: { code: 'OVERFLOW' },
    });
    expect(decideIncrBy(1n, entry('x'))).toMatchObject({
      mutation: { kind: 'none' },
      result: { code: 'NOT_AN_INTEGER' },
    });
  });

  it('applies EXPIRE conditions as Redis 7 does (no expiry counts as infinite for GT/LT)', () => {
    const now = 1_000_000;
    const expire = (condition: 'nx' | 'xx' | 'gt' | 'lt' | undefined, ms: number) =>
      ({ op: Op.EXPIRE, id: 1, key: text('k'), mode: 'in', ms, condition }) as const;
    expect(decideExpire(expire('gt', 10), entry('v'), now).result).toBe(false);
    expect(decideExpire(expire('lt', 10), entry('v'), now).result).toBe(true);
    expect(decideExpire(expire('gt', 10), entry('v', now + 5), now).result).toBe(true);
    expect(decideExpire(expire('lt', 10), entry('v', now + 5), now).result).toBe(false);
    expect(decideExpire(expire('nx', 10), entry('v', now + 5), now).result).toBe(false);
    expect(decideExpire(expire('xx', 10), entry('v'), now).result).toBe(false);
    expect(decideExpire(expire(undefined, -1), entry('v'), now).mutation).toEqual({ kind: 'delete' });
    expect(decideExpire(expire(undefined, 10), undefined, now).result).toBe(false);
  });

  it('decides SET NX/XX/GET/KEEPTTL and an absolute time already past', () => {
    const now = 5000;
    const set = (extra: object) =>
      ({ op: Op.SET_WITH, id: 1, key: text('k'), value: text('new'), ...extra }) as const;
    expect(decideSetWith(set({ condition: 'nx' }), entry('old'), now)).toMatchObject({
      mutation: { kind: 'none' },
      result: { written: false },
    });
    expect(decideSetWith(set({ condition: 'xx', get: true }), undefined, now).result).toEqual({
      written: false,
      previous: null,
    });
    expect(decideSetWith(set({ expiry: { kind: 'keep' } }), entry('old', 9000), now).mutation).toMatchObject({
      expireAt: 9000,
    });
    expect(decideSetWith(set({ expiry: { kind: 'in', ms: 10 } }), undefined, now).mutation).toMatchObject({
      expireAt: 5010,
    });
    expect(decideSetWith(set({ expiry: { kind: 'at', ms: 4000 } }), entry('old'), now).mutation).toEqual({
      kind: 'delete',
    });
  });

  it('sets a bit (SETBIT): the previous bit, zero padding, the expiry kept; past the limit nothing written', () => {
    // 'a' is 0x61 (0110 0001): bit 1 is set, bit 3 clear; bit 0 is the high bit.
    expect(decideSetBit(1, 0, 100, entry('a', 777))).toMatchObject({
      result: 1,
      mutation: { kind: 'put', value: Uint8Array.from(text('!')), expireAt: 777 },
    });
    expect(decideSetBit(3, 1, 100, entry('a'))).toMatchObject({
      result: 0,
      mutation: { value: Uint8Array.from(text('q')) },
    });
    expect(decideSetBit(17, 0, 100, undefined)).toMatchObject({
      result: 0,
      mutation: { kind: 'put', value: new Uint8Array(3), expireAt: 0 },
    });
    expect(decideSetBit(8 * 100, 1, 100, entry('a'))).toMatchObject({
      mutation: { kind: 'none' },
      result: { code: 'VALUE_TOO_LARGE' },
    });
    expect(decideSetBit(8 * 100 - 1, 1, 100, undefined)).toMatchObject({
      result: 0,
      mutation: { kind: 'put' },
    });
  });
});
