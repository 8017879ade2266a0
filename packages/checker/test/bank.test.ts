/**
 * The bank checker on hand-made recordings: a consistent run passes, and each kind of violation is
 * found — and named by its own kind, so that each test fails if its check is removed (the tests
 * compare the exact list of kinds reported). Then the workload against in-process stores whose
 * behaviour is known: an atomic one (with refusals and timeouts) passes; one that applies a
 * transfer's steps one at a time, or that refuses as "not executed" what it executed, does not.
 */
import { DstoreError, ErrorCode } from '@dstore/protocol';
import { seededRandom } from '@dstore/protocol/testing';
import { describe, expect, it } from 'vitest';
import {
  type BankCheckResult,
  type BankFinal,
  type BankRead,
  type BankRecording,
  type BankSnapshot,
  type BankStore,
  type BankTransaction,
  type BankTransfer,
  bankKeys,
  checkBank,
  formatBankResult,
  readBankFinal,
  setupBank,
  startBank,
  summarizeBank,
} from '../src/index.js';

// Three accounts of 100: a total of 300.
const keys = bankKeys('{t}', 3);

const transfer = (
  id: string,
  from: number,
  to: number,
  amount: number,
  outcome: BankTransfer['outcome'] = 'ok',
): BankTransfer => ({ id, from, to, amount, phase: 'test', outcome });

const logOf = (ids: readonly string[]): string | null =>
  ids.length === 0 ? null : ids.map((id) => `${id},`).join('');
const state = (balances: readonly (number | null)[], ids: readonly string[]): BankSnapshot => ({
  balances,
  log: logOf(ids),
});
const read = (
  balances: readonly (number | null)[],
  ids: readonly string[],
  by: BankRead['by'] = 'mget',
): BankRead => ({
  by,
  phase: 'test',
  ...state(balances, ids),
});
const final = (balances: readonly (number | null)[], ids: readonly string[]): BankFinal => ({
  transaction: state(balances, ids),
  mget: state(balances, ids),
});

/**
 * a: 0 -> 1, 10, acknowledged. b: 1 -> 2, 5, unknown, never applied. c: 2 -> 0, 7, unknown,
 * applied. d: 0 -> 2, 3, refused as not executed.
 */
const TRANSFERS = [
  transfer('a', 0, 1, 10),
  transfer('b', 1, 2, 5, 'info'),
  transfer('c', 2, 0, 7, 'info'),
  transfer('d', 0, 2, 3, 'fail'),
];
/** The states whole transfers leave: nothing, a, a then c. */
const START = [100, 100, 100];
const AFTER_A = [90, 110, 100];
const AFTER_AC = [97, 110, 93];

function recording(parts: Partial<BankRecording> = {}): BankRecording {
  return {
    keys,
    initial: 100,
    seed: 1,
    transfers: TRANSFERS,
    reads: [read(START, []), read(AFTER_A, ['a'], 'transaction'), read(AFTER_AC, ['a', 'c'])],
    failedReads: 0,
    anomalies: [],
    timeline: [],
    ...parts,
  };
}

const kinds = (result: BankCheckResult): string[] => result.violations.map((violation) => violation.kind);

describe('checkBank on hand-made recordings', () => {
  it('passes a consistent run: reads of whole transfers, unknown ones either way, the final state the log', () => {
    const result = checkBank(recording(), final(AFTER_AC, ['a', 'c']));
    expect(result.violations).toEqual([]);
    expect(result.valid).toBe(true);
    expect(result.transfers).toEqual({ ok: 1, fail: 1, info: 2, pending: 0 });
    expect(result.inFinalLog).toBe(2);
    expect(result.reads).toBe(3);
    expect(formatBankResult(result)).toMatch(/^bank: consistent; transfers 1 ok, 1 not executed, 2 unknown/);
  });

  it('passes a run without reads or transfers', () => {
    const result = checkBank(recording({ transfers: [], reads: [] }), final(START, []));
    expect(result.valid).toBe(true);
  });

  it('finds a read whose total is wrong (half a transfer seen)', () => {
    // a's decrby without its incrby.
    const result = checkBank(
      recording({ reads: [read([90, 100, 100], ['a'])] }),
      final(AFTER_AC, ['a', 'c']),
    );
    expect(kinds(result)).toEqual(['read-total', 'read-mismatch']);
    expect(result.violations[0]!.message).toContain('total 290, not 300: balances 90,100,100');
    expect(result.valid).toBe(false);
  });

  it('finds a read whose balances are not the transfers of the log it read', () => {
    // The total is right, but a is in the log and not in the balances.
    const result = checkBank(recording({ reads: [read(START, ['a'])] }), final(AFTER_AC, ['a', 'c']));
    expect(kinds(result)).toEqual(['read-mismatch']);
    expect(result.violations[0]!.message).toContain(
      'balances 100,100,100, but the 1 transfers of its log make 90,110,100',
    );
  });

  it('finds a read with an account missing', () => {
    const result = checkBank(
      recording({ reads: [read([90, null, 100], ['a'])] }),
      final(AFTER_AC, ['a', 'c']),
    );
    expect(kinds(result)).toEqual(['read-malformed']);
  });

  it('finds a read whose log names an id no worker sent', () => {
    // An id unknown to the recording changes no balance: only the id is wrong.
    const result = checkBank(recording({ reads: [read(START, ['zz'])] }), final(AFTER_AC, ['zz', 'a', 'c']));
    expect(kinds(result)).toEqual(['read-unknown-id', 'unknown-id']);
    expect(result.violations[0]!.ids).toEqual(['zz']);
  });

  it('finds a read whose log names an id twice', () => {
    const twice = [80, 120, 100];
    const result = checkBank(
      recording({ transfers: [transfer('a', 0, 1, 10)], reads: [read(twice, ['a', 'a'])] }),
      final(twice, ['a', 'a']),
    );
    expect(kinds(result)).toEqual(['read-duplicate-id', 'duplicate']);
  });

  it('finds a read whose log names a transfer refused as not executed', () => {
    const result = checkBank(
      recording({ transfers: [transfer('d', 0, 2, 3, 'fail')], reads: [read([97, 100, 103], ['d'])] }),
      final(START, []),
    );
    expect(kinds(result)).toEqual(['read-phantom', 'read-not-prefix']);
    expect(result.violations[0]!.ids).toEqual(['d']);
  });

  it('finds a read that saw a transfer the final log does not hold (read, then lost)', () => {
    // c (unknown outcome) was read, then is not in the final state: a read of a lost write.
    const result = checkBank(recording(), final(AFTER_A, ['a']));
    expect(kinds(result)).toEqual(['read-not-prefix']);
    expect(result.violations[0]!.message).toContain('at position 1 it names c, the final log nothing');
  });

  it('finds an acknowledged transfer missing from the final log', () => {
    const result = checkBank(recording({ reads: [] }), final(START, []));
    expect(kinds(result)).toEqual(['lost']);
    expect(result.violations[0]!.ids).toEqual(['a']);
  });

  it('finds a transfer refused as not executed in the final log', () => {
    const result = checkBank(
      recording({ transfers: [transfer('d', 0, 2, 3, 'fail')], reads: [] }),
      final([97, 100, 103], ['d']),
    );
    expect(kinds(result)).toEqual(['phantom']);
    expect(result.violations[0]!.ids).toEqual(['d']);
  });

  it('finds an id twice in the final log', () => {
    const result = checkBank(
      recording({ transfers: [transfer('a', 0, 1, 10)], reads: [] }),
      final([80, 120, 100], ['a', 'a']),
    );
    expect(kinds(result)).toEqual(['duplicate']);
    expect(result.violations[0]!.ids).toEqual(['a']);
  });

  it('finds final balances that are not the transfers of the final log', () => {
    // b (unknown) applied to the balances, but not in the log: a transfer split across keys.
    const result = checkBank(recording({ reads: [] }), final([97, 105, 98], ['a', 'c']));
    expect(kinds(result)).toEqual(['final-balances']);
    expect(result.violations[0]!.message).toContain(
      'balances 97,105,98, but the 2 transfers of its log make 97,110,93',
    );
  });

  it('finds final balances of the wrong total', () => {
    const result = checkBank(recording({ reads: [] }), final([97, 110, 92], ['a', 'c']));
    expect(kinds(result)).toEqual(['final-total', 'final-balances']);
  });

  it('finds a final account missing', () => {
    const result = checkBank(recording({ reads: [] }), final([97, null, 93], ['a', 'c']));
    expect(kinds(result)).toEqual(['final-malformed']);
  });

  it('finds an unknown id in the final log', () => {
    const result = checkBank(recording({ reads: [] }), final(AFTER_AC, ['a', 'zz', 'c']));
    expect(kinds(result)).toEqual(['unknown-id']);
    expect(result.violations[0]!.ids).toEqual(['zz']);
  });

  it('finds a final read-only transaction and MGET that disagree', () => {
    const result = checkBank(recording({ reads: [] }), {
      transaction: state(AFTER_AC, ['a', 'c']),
      mget: state(AFTER_A, ['a']),
    });
    expect(kinds(result)).toEqual(['final-disagree']);
  });

  it('reports the anomalies the workload saw, and transfers still pending', () => {
    const result = checkBank(
      recording({
        transfers: [...TRANSFERS, transfer('e', 1, 0, 1, 'pending')],
        anomalies: ['transfer x: a step was refused alone: NOT_AN_INTEGER'],
      }),
      final(AFTER_AC, ['a', 'c']),
    );
    expect(kinds(result)).toEqual(['anomaly', 'pending']);
    expect(result.violations[1]!.ids).toEqual(['e']);
  });

  it('reports every violation, not the first', () => {
    const result = checkBank(
      recording({ reads: [read([90, 100, 100], ['a']), read(START, ['a'])] }),
      final([100, 100, 103], ['d', 'd', 'zz']),
    );
    expect(kinds(result)).toEqual([
      'read-total',
      'read-mismatch',
      'read-not-prefix',
      'read-mismatch',
      'read-not-prefix',
      'unknown-id',
      'duplicate',
      'final-total',
      'final-balances',
      'lost',
      'phantom',
    ]);
    expect(formatBankResult(result, 3).split('\n')).toHaveLength(5);
  });

  it('refuses a recording with one id twice (it cannot be judged)', () => {
    expect(() =>
      checkBank(recording({ transfers: [transfer('a', 0, 1, 1), transfer('a', 1, 0, 1)] }), final(START, [])),
    ).toThrow(/transfer a twice/);
  });
});

const encoder = new TextEncoder();
const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

type Step =
  | { readonly f: 'get' }
  | { readonly f: 'incr'; readonly by: number }
  | { readonly f: 'append'; readonly value: string };

/** How a fake store runs a transaction's steps. */
interface FakeBehaviour {
  /** Apply the steps one at a time, an event-loop turn between them: not atomic. */
  readonly torn?: boolean;
  /** Refuse some transfers as UNAVAILABLE (not executed) after executing them: a lie. */
  readonly lies?: boolean;
}

/**
 * An in-process store of the bank's keys: a transaction's steps run together (or, torn, one at a
 * time), an MGET reads all keys at one instant; some requests are refused before anything runs
 * (UNAVAILABLE), some time out after running or before (TIMEOUT: unknown).
 */
function fakeStore(random: () => number, behaviour: FakeBehaviour = {}) {
  const values = new Map<string, string>();
  /** Off for the final read: the faults are over. */
  let faults = true;
  const run = (key: string, step: Step): unknown => {
    const value = values.get(key);
    switch (step.f) {
      case 'get':
        return value === undefined ? null : encoder.encode(value);
      case 'incr': {
        const next = Number(value ?? '0') + step.by;
        values.set(key, String(next));
        return next;
      }
      case 'append': {
        const next = (value ?? '') + step.value;
        values.set(key, next);
        return next.length;
      }
    }
  };
  const store: BankStore & {
    mset(entries: readonly (readonly [string, string])[]): Promise<unknown>;
    heal(): void;
  } = {
    heal: () => {
      faults = false;
    },
    mset: async (entries) => {
      for (const [key, value] of entries) values.set(key, value);
    },
    mget: async (keys) => {
      await tick();
      if (faults && random() < 0.03) throw new DstoreError(ErrorCode.UNAVAILABLE, 'refused');
      return keys.map((key) => run(key, { f: 'get' }) as Uint8Array | null);
    },
    transaction: (first) => {
      const steps: { key: string; step: Step }[] = [];
      let target = first;
      const builder: BankTransaction = {
        on: (key) => {
          target = key;
          return builder;
        },
        get: () => {
          steps.push({ key: target, step: { f: 'get' } });
          return builder;
        },
        decrby: (amount) => {
          steps.push({ key: target, step: { f: 'incr', by: -amount } });
          return builder;
        },
        incrby: (amount) => {
          steps.push({ key: target, step: { f: 'incr', by: amount } });
          return builder;
        },
        append: (value) => {
          steps.push({ key: target, step: { f: 'append', value } });
          return builder;
        },
        exec: async () => {
          const dice = faults ? random() : 1;
          await tick();
          if (dice < 0.05) throw new DstoreError(ErrorCode.UNAVAILABLE, 'refused');
          if (dice < 0.08) throw new DstoreError(ErrorCode.TIMEOUT, 'no answer, never ran');
          const results: unknown[] = [];
          for (const { key, step } of steps) {
            results.push(run(key, step));
            if (behaviour.torn === true) await tick();
          }
          await tick();
          if (dice < 0.11) throw new DstoreError(ErrorCode.TIMEOUT, 'no answer, ran');
          const writes = steps.some(({ step }) => step.f !== 'get');
          if (behaviour.lies === true && writes && dice < 0.2) {
            throw new DstoreError(ErrorCode.UNAVAILABLE, 'refused, yet ran');
          }
          return results;
        },
      };
      return builder;
    },
  };
  return store;
}

async function runBank(seed: number, behaviour: FakeBehaviour = {}) {
  const store = fakeStore(seededRandom(seed), behaviour);
  const bankKeysOf = bankKeys('{bank}');
  await setupBank(store, bankKeysOf);
  const load = startBank({
    keys: bankKeysOf,
    stores: [store],
    workers: 4,
    operationsPerWorker: 150,
    seed,
    phase: 'load',
  });
  const stats = await load.done;
  store.heal();
  const result = checkBank(load.recording, await readBankFinal(store, bankKeysOf));
  return { load, stats, result };
}

describe('the bank workload against in-process stores', () => {
  it('passes an atomic store with refusals and timeouts, every outcome seen', async () => {
    for (const seed of [1, 2, 3]) {
      const { load, stats, result } = await runBank(seed);
      expect(result.violations, formatBankResult(result)).toEqual([]);
      expect(load.finished).toBe(true);
      expect(load.transfersStarted).toBe(load.recording.transfers.length);
      // Every kind of outcome happened: the check had each to handle.
      expect(stats.transfers.ok).toBeGreaterThan(100);
      expect(stats.transfers.fail).toBeGreaterThan(0);
      expect(stats.transfers.info).toBeGreaterThan(0);
      expect(stats.reads.transaction + stats.reads.mget).toBeGreaterThan(50);
      expect(stats.reads.failed).toBeGreaterThan(0);
      expect(summarizeBank(load.recording)).toContain(`seed ${seed}; load: ok`);
      // Ids are unique and carry no comma; the recording is JSON.
      expect(JSON.parse(JSON.stringify(load.recording))).toEqual(load.recording);
    }
  });

  it('replays a seed: the same transfers chosen', async () => {
    const one = await runBank(7);
    const two = await runBank(7);
    // In id order: the order they were sent in depends on the interleaving.
    const choices = (run: typeof one) =>
      run.load.recording.transfers.map((t) => [t.id, t.from, t.to, t.amount]).sort();
    expect(choices(one)).toEqual(choices(two));
  });

  it('finds a store that applies a transfer one step at a time', async () => {
    const { result } = await runBank(4, { torn: true });
    expect(result.valid).toBe(false);
    expect(kinds(result)).toContain('read-total');
  });

  it('finds a store that executes what it refuses as not executed', async () => {
    const { result } = await runBank(5, { lies: true });
    expect(result.valid).toBe(false);
    expect(kinds(result)).toContain('phantom');
  });

  it('stops early when asked, every transfer answered', async () => {
    const store = fakeStore(seededRandom(9));
    const bank = bankKeys('{stop}');
    await setupBank(store, bank);
    const load = startBank({
      keys: bank,
      stores: [store],
      workers: 2,
      operationsPerWorker: 100_000,
      seed: 9,
    });
    while (load.transfersStarted < 20) await tick();
    const stats = await load.stop();
    store.heal();
    expect(stats.transfers.pending).toBe(0);
    expect(load.recording.transfers.length).toBeLessThan(1000);
    expect(checkBank(load.recording, await readBankFinal(store, bank)).violations).toEqual([]);
  });

  it('refuses ids with a comma and a tag that is not one', () => {
    const store = fakeStore(seededRandom(1));
    expect(() => startBank({ keys: bankKeys('{b}'), stores: [store], idPrefix: 'x,' })).toThrow(/comma/);
    expect(() => bankKeys('bank')).toThrow(/hash tag/);
  });
});
