import { ErrorCode, Op, type TransactStep } from '@dstore/protocol';
import { describe, expect, it } from 'vitest';
import { answerWithinFrame, decideTransaction, transactionValueBytes } from '../src/transaction.js';

const text = (value: string): Buffer => Buffer.from(value, 'latin1');
const KEY = text('k');
const NOW = 1_000_000;
const VERSION = 77;
const entry = (value: string, expireAt = 0, version = 5) => ({
  value: text(value),
  writeEpoch: 1,
  version,
  expireAt,
});
/** The decision with every byte array as a Buffer (engines make both kinds; equality should not care). */
const decide = (
  steps: TransactStep[],
  current?: ReturnType<typeof entry>,
  ifVersion?: number,
): { mutation: unknown; result: unknown[] | null } =>
  asBuffers(decideTransaction({ steps, ifVersion }, current, NOW, VERSION, 1024)) as {
    mutation: unknown;
    result: unknown[] | null;
  };

function asBuffers(value: unknown): unknown {
  if (value instanceof Uint8Array) return Buffer.from(value);
  if (Array.isArray(value)) return value.map(asBuffers);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([name, field]) => [name, asBuffers(field)]));
  }
  return value;
}

describe('transactions (the decision of a TRANSACT)', () => {
  it('runs each step on what the previous ones left and writes the net effect once', () => {
    const { mutation, result } = decide([
      { op: Op.INCRBY, key: KEY, delta: 5n },
      { op: Op.EXPIRE, key: KEY, mode: 'in', ms: 60_000 },
      { op: Op.TTL, key: KEY },
      { op: Op.INCRBY, key: KEY, delta: 1n },
      { op: Op.GET_VERSIONED, key: KEY },
    ]);
    expect(result).toEqual([
      { op: Op.INTEGER, id: 0, value: 5n },
      { op: Op.COUNT, id: 0, count: 1 },
      { op: Op.INTEGER, id: 0, value: 60_000n },
      { op: Op.INTEGER, id: 0, value: 6n },
      { op: Op.VERSIONED, id: 0, value: text('6'), version: VERSION },
    ]);
    expect(mutation).toEqual({ kind: 'put', value: text('6'), expireAt: NOW + 60_000 });
  });

  it('answers a refused step with its error and still runs the others, as Redis', () => {
    const { mutation, result } = decide(
      [
        { op: Op.INCRBY, key: KEY, delta: 1n },
        { op: Op.SETRANGE, key: KEY, value: text('!'), offset: undefined },
      ],
      entry('abc'),
    );
    expect(result?.[0]).toMatchObject({ op: Op.ERROR, code: ErrorCode.NOT_AN_INTEGER });
    expect(result?.[1]).toEqual({ op: Op.INTEGER, id: 0, value: 4n });
    expect(mutation).toEqual({ kind: 'put', value: text('abc!'), expireAt: 0 });
  });

  it('runs nothing when the watched version changed (WATCH), and runs at the version it names', () => {
    const steps: TransactStep[] = [{ op: Op.SET_WITH, key: KEY, value: text('new') }];
    expect(decide(steps, entry('old', 0, 5), 4)).toEqual({ mutation: { kind: 'none' }, result: null });
    expect(decide(steps, undefined, 5)).toEqual({ mutation: { kind: 'none' }, result: null });
    expect(decide(steps, entry('old', 0, 5), 5).mutation).toEqual({
      kind: 'put',
      value: text('new'),
      expireAt: 0,
    });
    // 0 stands for "does not exist".
    expect(decide(steps, undefined, 0).result).toEqual([{ op: Op.COUNT, id: 0, count: 1 }]);
    expect(decide(steps, entry('old'), 0).result).toBeNull();
  });

  it('writes nothing for a key created and deleted within it, and deletes a key it ends without', () => {
    const createDelete: TransactStep[] = [
      { op: Op.SET_WITH, key: KEY, value: text('v') },
      { op: Op.DEL_VERSIONED, key: KEY },
    ];
    const created = decide(createDelete);
    expect(created.mutation).toEqual({ kind: 'none' });
    expect(created.result).toEqual([
      { op: Op.COUNT, id: 0, count: 1 },
      { op: Op.VERSION, id: 0, written: true, version: VERSION },
    ]);
    expect(decide(createDelete, entry('old')).mutation).toEqual({ kind: 'delete' });
  });

  it('keeps the value and changes only the expiry when no step made a new value', () => {
    const { mutation, result } = decide(
      [
        { op: Op.GET_VERSIONED, key: KEY },
        { op: Op.EXPIRE, key: KEY, mode: 'at', ms: NOW + 5 },
        { op: Op.PEXPIRETIME, key: KEY },
      ],
      entry('v'),
    );
    expect(mutation).toEqual({ kind: 'expire', expireAt: NOW + 5 });
    expect(result?.[0]).toEqual({ op: Op.VERSIONED, id: 0, value: text('v'), version: 5 });
    expect(result?.[2]).toEqual({ op: Op.INTEGER, id: 0, value: BigInt(NOW + 5) });
  });

  it('sees a delete made within it (GETDEL then INCR starts from 0; TTL answers -2 in between)', () => {
    const { mutation, result } = decide(
      [
        { op: Op.GETDEL, key: KEY },
        { op: Op.TTL, key: KEY },
        { op: Op.INCRBY, key: KEY, delta: 1n },
      ],
      entry('41', NOW + 1000),
    );
    expect(result).toEqual([
      { op: Op.VALUE, id: 0, value: text('41') },
      { op: Op.INTEGER, id: 0, value: -2n },
      { op: Op.INTEGER, id: 0, value: 1n },
    ]);
    // A new value without the old expiry: the GETDEL removed it.
    expect(mutation).toEqual({ kind: 'put', value: text('1'), expireAt: 0 });
  });

  it('answers a read-only transaction and writes nothing', () => {
    const { mutation, result } = decide(
      [
        { op: Op.GET_VERSIONED, key: KEY },
        { op: Op.TTL, key: KEY },
      ],
      undefined,
    );
    expect(mutation).toEqual({ kind: 'none' });
    expect(result).toEqual([
      { op: Op.VERSIONED, id: 0, value: null, version: 0 },
      { op: Op.INTEGER, id: 0, value: -2n },
    ]);
  });

  it('counts the largest value it may store for the room check, none for reads and expiry changes', () => {
    expect(transactionValueBytes([{ op: Op.TTL, key: KEY }], 10)).toBeUndefined();
    expect(transactionValueBytes([{ op: Op.EXPIRE, key: KEY, mode: 'persist', ms: 0 }], 10)).toBeUndefined();
    const appends: TransactStep[] = [
      { op: Op.SETRANGE, key: KEY, value: text('12345'), offset: undefined },
      { op: Op.SETRANGE, key: KEY, value: text('123'), offset: undefined },
    ];
    expect(transactionValueBytes(appends, 10)).toBe(18);
    expect(transactionValueBytes([{ op: Op.SET_WITH, key: KEY, value: text('abc') }], 100)).toBe(100);
    expect(transactionValueBytes([{ op: Op.SETBIT, key: KEY, offset: 80, bit: 1 }], 0)).toBe(11);
  });
});

describe('a transaction answer within one frame', () => {
  it('keeps answers that fit, and past the frame limit returns each value as FRAME_TOO_LARGE', () => {
    const big = { op: Op.VALUE, id: 0, value: new Uint8Array(600) } as const;
    const count = { op: Op.INTEGER, id: 0, value: 3n } as const;
    expect(answerWithinFrame([big, count], 1000)).toEqual([big, count]);
    const answers = answerWithinFrame([big, count, big], 1000);
    expect(answers[0]).toMatchObject({ op: Op.ERROR, code: ErrorCode.FRAME_TOO_LARGE });
    expect(answers[1]).toEqual(count);
    expect(answers[2]).toMatchObject({ op: Op.ERROR, code: ErrorCode.FRAME_TOO_LARGE });
  });
});
