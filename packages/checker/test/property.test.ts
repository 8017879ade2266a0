/**
 * Property tests: histories made from a random sequential execution (the truth), each operation
 * given a random interval around its linearization point, must pass; the same history with one
 * read changed to a value that could not be current during its interval must fail.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkHistory, type HistoryEvent, type JsonValue } from '../src/index.js';

type Outcome = 'ok' | 'info' | 'lost' | 'fail';

interface Planned {
  readonly key: string;
  readonly f: 'read' | 'write' | 'delete';
  /** How far before and after its linearization point the operation is invoked and completes. */
  readonly lead: number;
  readonly lag: number;
  /** ok; info (applied, outcome unseen); lost (info, never applied); fail (never applied, said so). */
  readonly outcome: Outcome;
}

interface Executed extends Planned {
  readonly id: number;
  readonly call: number;
  readonly ret: number;
  readonly value: string | undefined;
  readonly result: JsonValue | undefined;
  process: number;
}

const planned: fc.Arbitrary<Planned> = fc.record({
  key: fc.constantFrom('a', 'b'),
  f: fc.constantFrom('read', 'read', 'write', 'write', 'delete'),
  lead: fc.integer({ min: 0, max: 40 }),
  lag: fc.integer({ min: 0, max: 40 }),
  outcome: fc.constantFrom('ok', 'ok', 'ok', 'ok', 'ok', 'info', 'lost', 'fail'),
});

/**
 * Runs the plan sequentially (operation i takes effect at time 10i) on a map of registers. Times
 * are made distinct by tiny per-operation offsets, so the event order is unambiguous.
 */
function execute(plan: readonly Planned[]): Executed[] {
  const state = new Map<string, string | null>();
  return plan.map((step, id) => {
    const applied = step.outcome === 'ok' || step.outcome === 'info';
    const current = state.get(step.key) ?? null;
    let value: string | undefined;
    let result: JsonValue | undefined;
    if (step.f === 'write') {
      value = `v${id}`;
      if (applied) state.set(step.key, value);
    } else if (step.f === 'delete') {
      result = current !== null;
      if (applied) state.set(step.key, null);
    } else result = current;
    const call = 10 * id - step.lead - 0.1 - id * 1e-4;
    const ret = 10 * id + step.lag + 0.1 + id * 1e-4;
    return { ...step, id, call, ret, value, result, process: -1 };
  });
}

/** Gives each operation a process that is idle during its interval; after an info, a process is retired. */
function assignProcesses(operations: Executed[]): void {
  const busyUntil: number[] = [];
  for (const operation of [...operations].sort((x, y) => x.call - y.call)) {
    let process = busyUntil.findIndex((until) => until < operation.call);
    if (process < 0) process = busyUntil.push(0) - 1;
    operation.process = process;
    const retired = operation.outcome === 'info' || operation.outcome === 'lost';
    busyUntil[process] = retired ? Number.POSITIVE_INFINITY : operation.ret;
  }
}

function toHistory(operations: readonly Executed[]): HistoryEvent[] {
  const timed: { time: number; event: Omit<HistoryEvent, 'index'> }[] = [];
  for (const operation of operations) {
    const { key, f, process } = operation;
    const base = { process, f, key };
    timed.push({
      time: operation.call,
      event: {
        ...base,
        type: 'invoke',
        time: operation.call,
        ...(f === 'write' ? { value: operation.value! } : {}),
      },
    });
    const type = operation.outcome === 'lost' ? 'info' : operation.outcome;
    const completion: Omit<HistoryEvent, 'index'> =
      type === 'ok' && f !== 'write'
        ? { ...base, type, time: operation.ret, value: operation.result! }
        : { ...base, type, time: operation.ret };
    timed.push({ time: operation.ret, event: completion });
  }
  return timed.sort((x, y) => x.time - y.time).map(({ event }, index) => ({ ...event, index }));
}

/**
 * A read whose value can be replaced by one that was current at no point of its interval in any
 * linearization, and that value: a write A and a write or delete B of the same key, both completed
 * (ok), A completed before B was invoked and B before the read was invoked. Every linearization
 * puts A, then B, then the read; values are unique, so A's value cannot be current any more.
 * Without such a pair, a value never written at all.
 */
function staleReplacement(operations: readonly Executed[]): { read: Executed; value: string } | undefined {
  const reads = operations.filter((op) => op.f === 'read' && op.outcome === 'ok');
  for (const read of reads) {
    const before = operations.filter(
      (op) => op.key === read.key && op.outcome === 'ok' && op.ret < read.call,
    );
    for (const a of before) {
      if (a.f !== 'write') continue;
      if (before.some((b) => b !== a && b.f !== 'read' && b.call > a.ret)) return { read, value: a.value! };
    }
  }
  const read = reads[0];
  return read === undefined ? undefined : { read, value: 'never-written' };
}

describe('property: generated histories', () => {
  it('every history consistent with a sequential execution passes', () => {
    fc.assert(
      fc.property(fc.array(planned, { minLength: 1, maxLength: 40 }), (plan) => {
        const operations = execute(plan);
        assignProcesses(operations);
        const result = checkHistory(toHistory(operations));
        expect(result.verdict, JSON.stringify(result.illegal[0]?.explanation)).toBe('ok');
      }),
      { numRuns: 300 },
    );
  });

  it('the same history with one read changed to a value never current during it fails', () => {
    fc.assert(
      fc.property(fc.array(planned, { minLength: 2, maxLength: 40 }), fc.boolean(), (plan, preferStale) => {
        const operations = execute(plan);
        assignProcesses(operations);
        const replacement = staleReplacement(operations);
        fc.pre(replacement !== undefined);
        const { read, value } = replacement!;
        const mutated = operations.map((op) =>
          op === read ? { ...op, result: preferStale ? value : 'never-written' } : op,
        );
        const result = checkHistory(toHistory(mutated));
        expect(result.verdict).toBe('illegal');
        expect(result.illegal.map((key) => key.key)).toEqual([read.key]);
      }),
      { numRuns: 300 },
    );
  });

  it('generates stale (not only never-written) replacements often enough to matter', () => {
    // Guards the previous property against testing only the easy case.
    const samples = fc.sample(fc.array(planned, { minLength: 20, maxLength: 40 }), { numRuns: 100, seed: 7 });
    const stale = samples.filter((plan) => {
      const operations = execute(plan);
      return staleReplacement(operations)?.value.startsWith('v') === true;
    });
    expect(stale.length).toBeGreaterThan(30);
  });
});
