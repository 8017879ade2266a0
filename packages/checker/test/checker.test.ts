/**
 * The checker on hand-made histories, each small enough to verify by hand. Histories are written
 * with the recorder itself (a counting clock): the order of the calls is the real-time order.
 */
import { describe, expect, it } from 'vitest';
import {
  checkHistory,
  formatCheckResult,
  HistoryRecorder,
  MalformedHistoryError,
  parseHistory,
} from '../src/index.js';

/** A recorder whose clock counts events, so times in explanations are small and exact. */
function recorder(): HistoryRecorder {
  let now = 0;
  return new HistoryRecorder({ clock: () => now++ });
}

const verdictOf = (history: HistoryRecorder) => checkHistory(history.events).verdict;

describe('sequential histories', () => {
  it('a read sees the last write; an absent key reads null', () => {
    const h = recorder();
    h.invoke(0, 'read', 'k').ok(null);
    h.invoke(0, 'write', 'k', 'a').ok();
    h.invoke(1, 'read', 'k').ok('a');
    h.invoke(1, 'write', 'k', 'b').ok();
    h.invoke(0, 'read', 'k').ok('b');
    expect(verdictOf(h)).toBe('ok');
  });

  it('a value never written is illegal', () => {
    const h = recorder();
    h.invoke(0, 'write', 'k', 'a').ok();
    h.invoke(1, 'read', 'k').ok('zzz');
    expect(verdictOf(h)).toBe('illegal');
  });

  it('a read before any write that sees a value is illegal', () => {
    const h = recorder();
    h.invoke(1, 'read', 'k').ok('a');
    h.invoke(0, 'write', 'k', 'a').ok();
    expect(verdictOf(h)).toBe('illegal');
  });

  it('a stale read (an older value after a newer write completed) is illegal', () => {
    const h = recorder();
    h.invoke(0, 'write', 'k', 'a').ok();
    h.invoke(0, 'write', 'k', 'b').ok();
    h.invoke(1, 'read', 'k').ok('a');
    expect(verdictOf(h)).toBe('illegal');
  });

  it('keys are independent registers', () => {
    const h = recorder();
    h.invoke(0, 'write', 'x', 'a').ok();
    h.invoke(0, 'write', 'y', 'b').ok();
    h.invoke(1, 'read', 'x').ok('a');
    h.invoke(1, 'read', 'y').ok('b');
    const result = checkHistory(h.events);
    expect(result.verdict).toBe('ok');
    expect(result.keys.map((key) => key.key).sort()).toEqual(['x', 'y']);
    h.invoke(1, 'read', 'y').ok('a');
    expect(checkHistory(h.events).illegal.map((key) => key.key)).toEqual(['y']);
  });
});

describe('deletes', () => {
  it('a read after a delete sees null; the delete reports what it removed', () => {
    const h = recorder();
    h.invoke(0, 'delete', 'k').ok(false);
    h.invoke(0, 'write', 'k', 'a').ok();
    h.invoke(0, 'delete', 'k').ok(true);
    h.invoke(1, 'read', 'k').ok(null);
    expect(verdictOf(h)).toBe('ok');
  });

  it('a value read after its delete completed is a resurrection: illegal', () => {
    const h = recorder();
    h.invoke(0, 'write', 'k', 'a').ok();
    h.invoke(0, 'delete', 'k').ok(true);
    h.invoke(1, 'read', 'k').ok('a');
    expect(verdictOf(h)).toBe('illegal');
  });

  it('a delete that removed nothing although a value was there is illegal', () => {
    const h = recorder();
    h.invoke(0, 'write', 'k', 'a').ok();
    h.invoke(0, 'delete', 'k').ok(false);
    expect(verdictOf(h)).toBe('illegal');
  });
});

describe('concurrent operations', () => {
  it('a read concurrent with a write may see the old or the new value', () => {
    for (const seen of [null, 'a']) {
      const h = recorder();
      const write = h.invoke(0, 'write', 'k', 'a');
      h.invoke(1, 'read', 'k').ok(seen);
      write.ok();
      expect(verdictOf(h)).toBe('ok');
    }
  });

  it('two concurrent writes take effect in one order, the same for every later reader', () => {
    const ordered = recorder();
    const a = ordered.invoke(0, 'write', 'k', 'a');
    const b = ordered.invoke(1, 'write', 'k', 'b');
    a.ok();
    b.ok();
    ordered.invoke(2, 'read', 'k').ok('a');
    ordered.invoke(3, 'read', 'k').ok('a');
    expect(verdictOf(ordered)).toBe('ok');

    const flipping = recorder();
    const a2 = flipping.invoke(0, 'write', 'k', 'a');
    const b2 = flipping.invoke(1, 'write', 'k', 'b');
    a2.ok();
    b2.ok();
    flipping.invoke(2, 'read', 'k').ok('a');
    flipping.invoke(3, 'read', 'k').ok('b');
    flipping.invoke(2, 'read', 'k').ok('a');
    expect(verdictOf(flipping)).toBe('illegal');
  });

  it('overlapping reads may see the two values only in the order of the writes', () => {
    // write a completes; write b runs; reader 1 sees b while b runs, then reader 2 (after reader 1
    // returned) sees a: b already took effect, so a is stale.
    const h = recorder();
    h.invoke(0, 'write', 'k', 'a').ok();
    const b = h.invoke(0, 'write', 'k', 'b');
    h.invoke(1, 'read', 'k').ok('b');
    h.invoke(2, 'read', 'k').ok('a');
    b.ok();
    expect(verdictOf(h)).toBe('illegal');
  });
});

describe('outcome unknown (info) and failed operations', () => {
  it('an info write may take effect after the history moves on', () => {
    const h = recorder();
    h.invoke(0, 'write', 'k', 'a').ok();
    h.invoke(1, 'write', 'k', 'b').info('TIMEOUT');
    h.invoke(2, 'read', 'k').ok('a');
    h.invoke(2, 'read', 'k').ok('b');
    expect(verdictOf(h)).toBe('ok');
  });

  it('an info write may never take effect', () => {
    const h = recorder();
    h.invoke(0, 'write', 'k', 'a').ok();
    h.invoke(1, 'write', 'k', 'b').info('CONNECTION_CLOSED');
    h.invoke(2, 'read', 'k').ok('a');
    h.invoke(2, 'read', 'k').ok('a');
    expect(verdictOf(h)).toBe('ok');
  });

  it('an info write takes effect once: its value cannot come back after being overwritten', () => {
    const h = recorder();
    h.invoke(0, 'write', 'k', 'a').ok();
    h.invoke(1, 'write', 'k', 'b').info('TIMEOUT');
    h.invoke(2, 'read', 'k').ok('b');
    h.invoke(0, 'write', 'k', 'c').ok();
    h.invoke(2, 'read', 'k').ok('b');
    expect(verdictOf(h)).toBe('illegal');
  });

  it('an info write cannot take effect before it was invoked', () => {
    const h = recorder();
    h.invoke(0, 'write', 'k', 'a').ok();
    h.invoke(2, 'read', 'k').ok('b');
    h.invoke(1, 'write', 'k', 'b').info('TIMEOUT');
    expect(verdictOf(h)).toBe('illegal');
  });

  it('an invocation never completed (the history ended) is an info', () => {
    const h = recorder();
    h.invoke(1, 'write', 'k', 'b');
    h.invoke(2, 'read', 'k').ok('b');
    expect(verdictOf(h)).toBe('ok');
  });

  it('a failed write certainly did not happen: reading its value is illegal', () => {
    const h = recorder();
    h.invoke(0, 'write', 'k', 'a').ok();
    h.invoke(1, 'write', 'k', 'b').fail('UNAVAILABLE');
    h.invoke(2, 'read', 'k').ok('a');
    expect(verdictOf(h)).toBe('ok');
    h.invoke(2, 'read', 'k').ok('b');
    expect(verdictOf(h)).toBe('illegal');
  });

  it('an info delete may or may not have removed the value', () => {
    const h = recorder();
    h.invoke(0, 'write', 'k', 'a').ok();
    h.invoke(1, 'delete', 'k').info('TIMEOUT');
    h.invoke(2, 'read', 'k').ok('a');
    h.invoke(2, 'read', 'k').ok(null);
    expect(verdictOf(h)).toBe('ok');
    h.invoke(2, 'read', 'k').ok('a');
    expect(verdictOf(h)).toBe('illegal');
  });

  it('an info read constrains nothing', () => {
    const h = recorder();
    h.invoke(0, 'write', 'k', 'a').ok();
    h.invoke(1, 'read', 'k').info('TIMEOUT');
    expect(checkHistory(h.events).operations).toBe(1);
  });
});

describe('cas (for the atomic operations to come)', () => {
  it('an applied cas replaces the expected value', () => {
    const h = recorder();
    h.invoke(0, 'write', 'k', 'a').ok();
    h.invoke(1, 'cas', 'k', ['a', 'b']).ok();
    h.invoke(2, 'read', 'k').ok('b');
    expect(verdictOf(h)).toBe('ok');
  });

  it('a cas cannot apply when the value was something else', () => {
    const h = recorder();
    h.invoke(0, 'write', 'k', 'x').ok();
    h.invoke(1, 'cas', 'k', ['a', 'b']).ok();
    expect(verdictOf(h)).toBe('illegal');
  });
});

describe('append', () => {
  it('appends build the value in a linearizable order; each answers the length after it', () => {
    const h = recorder();
    h.invoke(0, 'append', 'k', 'a;').ok(2);
    // Concurrent appends: either order is legal, the lengths and the read say which one won.
    const first = h.invoke(1, 'append', 'k', 'bb;');
    const second = h.invoke(2, 'append', 'k', 'c;');
    second.ok(4);
    first.ok(7);
    h.invoke(3, 'read', 'k').ok('a;c;bb;');
    expect(verdictOf(h)).toBe('ok');
  });

  it('an acknowledged append missing from a later read is illegal (a lost write)', () => {
    const h = recorder();
    h.invoke(0, 'append', 'k', 'a;').ok(2);
    h.invoke(1, 'append', 'k', 'b;').ok(4);
    h.invoke(2, 'read', 'k').ok('a;');
    expect(verdictOf(h)).toBe('illegal');
  });

  it('an append applied twice is illegal; one of unknown outcome may be there once or not at all', () => {
    const twice = recorder();
    twice.invoke(0, 'append', 'k', 'a;').ok(2);
    twice.invoke(1, 'read', 'k').ok('a;a;');
    expect(verdictOf(twice)).toBe('illegal');
    const unknown = recorder();
    unknown.invoke(0, 'append', 'k', 'a;').info('TIMEOUT');
    unknown.invoke(1, 'read', 'k').ok('a;');
    unknown.invoke(1, 'append', 'k', 'b;').ok(4);
    expect(verdictOf(unknown)).toBe('ok');
    const absent = recorder();
    absent.invoke(0, 'append', 'k', 'a;').info('TIMEOUT');
    absent.invoke(1, 'append', 'k', 'b;').ok(2);
    absent.invoke(1, 'read', 'k').ok('b;');
    expect(verdictOf(absent)).toBe('ok');
  });

  it('a wrong length is illegal; a delete empties the value appends start from', () => {
    const wrong = recorder();
    wrong.invoke(0, 'append', 'k', 'a;').ok(3);
    expect(verdictOf(wrong)).toBe('illegal');
    const deleted = recorder();
    deleted.invoke(0, 'write', 'k', 'xyz').ok();
    deleted.invoke(0, 'delete', 'k').ok(true);
    deleted.invoke(0, 'append', 'k', 'a;').ok(2);
    expect(verdictOf(deleted)).toBe('ok');
  });
});

describe('reports, budget and malformed histories', () => {
  it('explains a failure: the key, the longest linearizable prefix and the operations that cannot come next', () => {
    const h = recorder();
    h.invoke(0, 'write', 'k', 'a').ok();
    h.invoke(0, 'write', 'k', 'b').ok();
    h.invoke(1, 'read', 'k').ok('a');
    const result = checkHistory(h.events);
    const text = formatCheckResult(result);
    expect(text).toContain('verdict: illegal');
    expect(text).toContain('key "k": not linearizable (3 operations)');
    expect(text).toContain('Longest linearizable prefix: 2 operations, leaving the state "b"');
    expect(text).toMatch(/None of these can come next[^\n]*\n {2}#4 process 1: read -> "a"/);
  });

  it('names the faults injected last before the operation that could not be placed (the phase)', () => {
    const h = recorder();
    h.nemesis('join', 'node-4');
    h.invoke(0, 'write', 'k', 'a').ok();
    h.nemesis('kill', 'node-2');
    h.invoke(1, 'read', 'k').ok(null);
    h.nemesis('restart', 'node-2');
    const [illegal] = checkHistory(h.events).illegal;
    expect(illegal!.blockedAt).toBe(4);
    expect(illegal!.explanation).toMatch(
      /\nLast faults injected before it: join node-4 @0\.0, kill node-2 @3\.0$/,
    );
  });

  it('a search that runs out of budget is unknown, never a pass', () => {
    // Many concurrent writes of unknown outcome and reads that fit no order: the search must
    // explore many orders before it can conclude anything.
    const h = recorder();
    for (let p = 0; p < 14; p++) h.invoke(p, 'write', 'k', `v${p}`).info('TIMEOUT');
    for (let i = 0; i < 14; i++) h.invoke(100, 'read', 'k').ok(`v${(i * 5) % 14}`);
    h.invoke(100, 'read', 'k').ok('v0');
    const result = checkHistory(h.events, { maxStepsPerKey: 1000 });
    expect(result.verdict).toBe('unknown');
    expect(result.unknown[0]!.explanation).toContain('1000 steps');
  });

  it('round-trips through JSONL', () => {
    const h = recorder();
    h.invoke(0, 'write', 'k', 'a').ok();
    h.invoke(1, 'read', 'k').ok('a');
    h.nemesis('kill', 'node-2');
    h.invoke(1, 'delete', 'k').ok(true);
    expect(parseHistory(h.toJsonl())).toEqual(h.events);
    expect(checkHistory(parseHistory(h.toJsonl())).verdict).toBe('ok');
  });

  it('refuses a completion without an invocation and a second invocation of an open process', () => {
    const orphan = [{ index: 0, type: 'ok' as const, process: 0, f: 'read', key: 'k', value: null, time: 0 }];
    expect(() => checkHistory(orphan)).toThrow(MalformedHistoryError);
    const h = recorder();
    h.invoke(0, 'write', 'k', 'a');
    h.invoke(0, 'write', 'k', 'b');
    expect(() => checkHistory(h.events)).toThrow(MalformedHistoryError);
  });
});

describe('appendRead (a transaction: APPEND then GET in one atomic step)', () => {
  it('reads the value with its own append, after every append linearized before it', () => {
    const h = recorder();
    h.invoke(0, 'append', 'k', 'a;').ok(2);
    // Concurrent with an append: the transaction's read says which came first.
    const append = h.invoke(1, 'append', 'k', 'c;');
    const transaction = h.invoke(2, 'appendRead', 'k', 't;');
    transaction.ok('a;c;t;');
    append.ok(4);
    h.invoke(3, 'read', 'k').ok('a;c;t;');
    expect(verdictOf(h)).toBe('ok');
  });

  it("is illegal when its read misses its own append, or shows another's taken between the two", () => {
    const missing = recorder();
    missing.invoke(0, 'append', 'k', 'a;').ok(2);
    missing.invoke(1, 'appendRead', 'k', 't;').ok('a;');
    expect(verdictOf(missing)).toBe('illegal');
    // `c;` after `t;` in the transaction's own read: another append ran between its two steps.
    const split = recorder();
    split.invoke(0, 'append', 'k', 'a;').ok(2);
    const append = split.invoke(1, 'append', 'k', 'c;');
    const transaction = split.invoke(2, 'appendRead', 'k', 't;');
    append.ok(6);
    transaction.ok('a;t;c;');
    expect(verdictOf(split)).toBe('illegal');
    // The same values read afterwards with the transaction's answer matching them is legal.
    const whole = recorder();
    whole.invoke(0, 'append', 'k', 'a;').ok(2);
    const later = whole.invoke(1, 'append', 'k', 'c;');
    whole.invoke(2, 'appendRead', 'k', 't;').ok('a;t;');
    later.ok(6);
    whole.invoke(3, 'read', 'k').ok('a;t;c;');
    expect(verdictOf(whole)).toBe('ok');
  });

  it('one of unknown outcome may be there once or not at all, never twice', () => {
    const once = recorder();
    once.invoke(0, 'appendRead', 'k', 't;').info('TIMEOUT');
    once.invoke(1, 'read', 'k').ok('t;');
    expect(verdictOf(once)).toBe('ok');
    const never = recorder();
    never.invoke(0, 'appendRead', 'k', 't;').info('TIMEOUT');
    never.invoke(1, 'appendRead', 'k', 'u;').ok('u;');
    expect(verdictOf(never)).toBe('ok');
    const twice = recorder();
    twice.invoke(0, 'appendRead', 'k', 't;').ok('t;');
    twice.invoke(1, 'read', 'k').ok('t;t;');
    expect(verdictOf(twice)).toBe('illegal');
  });
});
