/**
 * A Jepsen-style bank over dstore's multi-key transactions: the workload that records a run, and a
 * pure checker of the recording.
 *
 * Accounts of one hash tag (`{bank}:0..7`: one ring position, so one owner and one chain) start at
 * the same balance. Workers move money between them, each transfer ONE transaction (`decrby` on
 * one account, `incrby` on another, `append` of the transfer's unique id to the log key), and read
 * every account and the log back with read-only transactions and plain MGETs. Every transfer is
 * recorded before it is sent, with its outcome once answered, classified by dstore's own
 * `DstoreError.notExecuted`; every read is recorded with what it saw.
 *
 * {@link checkBank} then holds the recording and a final read against what atomic, durable,
 * exactly-once transfers allow: every read totals the sum and is exactly the transfers named in
 * the log it read; every read's log is a prefix of the final one; the final log names each id at
 * most once, every acknowledged transfer, no transfer refused as not executed, no id nobody sent;
 * the final balances are the initial ones plus the effects of the final log's transfers.
 *
 * Used by `packages/balancer/test/bank-transactions.test.ts` (a fixed fault schedule) and the
 * release soak (`examples/src/soak.ts`, randomized faults).
 */
import { DstoreError } from '@dstore/protocol';
import { seededRandom } from '@dstore/protocol/testing';
import { classifyFailure, type FailureKind } from './workload.js';

/** The keys of a bank: its accounts and its log, all of one hash tag. */
export interface BankKeys {
  readonly accounts: readonly string[];
  readonly log: string;
}

/**
 * The keys of a bank under `tag` (braces included, e.g. `{bank}`): accounts `{bank}:0` to
 * `{bank}:<count - 1>` and the log `{bank}:log`. The shared hash tag puts them all on one ring
 * position, as a multi-key transaction needs.
 */
export function bankKeys(tag: string, count = 8): BankKeys {
  if (!/^\{[^{}]+\}$/.test(tag)) throw new RangeError(`a bank's tag is a non-empty {hash tag}, got ${tag}`);
  if (!Number.isInteger(count) || count < 2)
    throw new RangeError(`a bank needs 2 accounts or more, got ${count}`);
  return { accounts: Array.from({ length: count }, (_, i) => `${tag}:${i}`), log: `${tag}:log` };
}

/**
 * The part of a transaction builder the bank uses: `@dstore/client`'s `Transaction` has it
 * (structural, so this package needs no dependency on the client). Each step's result, or the
 * `DstoreError` that refused that step alone, is in its slot of `exec`'s answer.
 */
export interface BankTransaction {
  on(key: string): BankTransaction;
  get(): BankTransaction;
  decrby(amount: number): BankTransaction;
  incrby(amount: number): BankTransaction;
  append(value: string): BankTransaction;
  exec(): Promise<readonly unknown[] | null>;
}

/** What the bank's workers need of a client (`@dstore/client`'s `DstoreClient` has it). */
export interface BankStore {
  /** A transaction on `key`; other keys of its hash tag join it with `on`. */
  transaction(key: string): BankTransaction;
  /** The values of `keys` in order, null for a missing key. */
  mget(keys: readonly string[]): Promise<readonly (Uint8Array | null)[]>;
}

/** What {@link setupBank} needs of a client (`DstoreClient.mset`). */
export interface BankSetupStore {
  mset(entries: readonly (readonly [string, string])[]): Promise<unknown>;
}

/**
 * `ok`: acknowledged; `fail`: refused, certainly not executed; `info`: unknown (a timeout, a
 * connection lost after sending): it may or may not have happened; `pending`: not answered yet.
 */
export type BankOutcome = 'pending' | 'ok' | 'fail' | 'info';

/** One transfer tried: recorded before it is sent, its outcome once answered. */
export interface BankTransfer {
  /** Unique within the recording; what the transfer appends to the log (with a comma). */
  readonly id: string;
  /** Indexes into the accounts. */
  readonly from: number;
  readonly to: number;
  readonly amount: number;
  /** The phase of the run it started in (see {@link RunningBank.enter}). */
  readonly phase: string;
  readonly outcome: BankOutcome;
  /** A failed one's error: its code and message. */
  readonly error?: string;
}

/** What a read saw: every account's balance (null: missing or not an integer) and the log. */
export interface BankSnapshot {
  readonly balances: readonly (number | null)[];
  /** The log's value (`id,id,...,`), null when it does not exist. */
  readonly log: string | null;
}

/** How a read was made: one read-only transaction, or one MGET. */
export type BankReadKind = 'transaction' | 'mget';

/** A read that was answered, and what it saw. */
export interface BankRead extends BankSnapshot {
  readonly by: BankReadKind;
  /** The phase of the run it started in. */
  readonly phase: string;
}

/** Everything a bank workload saw: JSON, so that a failed run can keep it. */
export interface BankRecording {
  readonly keys: BankKeys;
  /** Every account's balance before the first transfer. */
  readonly initial: number;
  /** The seed of the workers' choices (worker `i` draws from `seed + i`). */
  readonly seed: number;
  /** Every transfer tried, in the order they were sent. */
  readonly transfers: readonly BankTransfer[];
  /** Every read answered, in the order they were answered. */
  readonly reads: readonly BankRead[];
  /** Reads that failed (refused, timed out): nothing to check. */
  readonly failedReads: number;
  /**
   * Answers no correct store gives, seen while the workload ran: a step of a transfer or read
   * refused alone (a split transfer), null from a transaction without WATCH, an error that is not
   * a `DstoreError`, a value of an unexpected type.
   */
  readonly anomalies: readonly string[];
  /** When each phase began (ms since the workload started). */
  readonly timeline: readonly string[];
}

/** The relative weights of a worker's operations. */
export interface BankMix {
  readonly transfer: number;
  /** A read-only transaction of every account and the log. */
  readonly transactionRead: number;
  /** An MGET of every account and the log. */
  readonly mgetRead: number;
}

/** Options of {@link startBank}. */
export interface BankWorkloadOptions {
  readonly keys: BankKeys;
  /** The clients: worker `i` uses `stores[i % stores.length]`. */
  readonly stores: readonly BankStore[];
  /** Every account's balance before the workload (as {@link setupBank} wrote it). Default 100. */
  readonly initial?: number;
  /** Concurrent workers. Default 8. */
  readonly workers?: number;
  /** Each worker stops after this many operations: the loops are bounded by count. Default 200. */
  readonly operationsPerWorker?: number;
  /** Default `{ transfer: 60, transactionRead: 25, mgetRead: 15 }`. */
  readonly mix?: BankMix;
  /** A transfer moves 1 to this much. Default 20. */
  readonly maxAmount?: number;
  /** Seeds the workers' choices (worker `i` uses `seed + i`), to replay a run's. Default random. */
  readonly seed?: number;
  /** A worker waits this long after each operation, so that a bounded loop spans the faults. Default 0. */
  readonly pauseMs?: number;
  /** A worker waits this long more after a failed operation, instead of spinning on refusals. Default 5. */
  readonly pauseAfterFailureMs?: number;
  /** Prefixes every transfer id (no comma), e.g. to tell runs apart. Default ''. */
  readonly idPrefix?: string;
  /** The phase the run starts in (see {@link RunningBank.enter}). Default 'start'. */
  readonly phase?: string;
  /** How an error classifies a transfer; default {@link classifyFailure} (`DstoreError.notExecuted`). */
  readonly classify?: (error: unknown) => FailureKind;
}

/** Counts of a bank workload so far. */
export interface BankStats {
  readonly transfers: {
    readonly ok: number;
    readonly fail: number;
    readonly info: number;
    readonly pending: number;
  };
  readonly reads: { readonly transaction: number; readonly mget: number; readonly failed: number };
  readonly anomalies: number;
}

/** A running bank workload. */
export interface RunningBank {
  /** Resolves when every worker ended its loop (count reached, or {@link RunningBank.stop}). */
  readonly done: Promise<BankStats>;
  /** Asks every worker to stop after its current operation; resolves when they all did. */
  stop(): Promise<BankStats>;
  /** Marks a phase of the run (a fault): the operations started from now on belong to it. */
  enter(phase: string): void;
  /** Transfers started so far. */
  readonly transfersStarted: number;
  /** Whether every worker ended its loop. */
  readonly finished: boolean;
  /** What was recorded so far; complete once {@link RunningBank.done} resolved. */
  readonly recording: BankRecording;
  /** The counts so far. */
  stats(): BankStats;
}

const DEFAULT_MIX: BankMix = { transfer: 60, transactionRead: 25, mgetRead: 15 };
const decoder = new TextDecoder();

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Writes every account's initial balance in one MSET (one hash tag: one write on one owner). */
export async function setupBank(store: BankSetupStore, keys: BankKeys, initial = 100): Promise<void> {
  await store.mset(keys.accounts.map((key): readonly [string, string] => [key, String(initial)]));
}

/** The transfer ids of a log value (`id,id,...,`), in order, duplicates kept. */
export function bankLogIds(log: string | null): string[] {
  return log === null ? [] : log.split(',').filter((id) => id !== '');
}

/** A stored value as a balance: its decimal text, or null when missing or not an integer. */
function balanceOf(value: unknown): number | null {
  if (!(value instanceof Uint8Array)) return null;
  const text = decoder.decode(value);
  return /^-?\d+$/.test(text) ? Number(text) : null;
}

/** Thrown for an answer no correct store gives: the workload records it as an anomaly. */
class AnomalyError extends Error {}

/**
 * The values of a read's slots, accounts then log: anything but bytes or null (a step's
 * DstoreError, another type) is an anomaly.
 */
function snapshotOf(values: readonly unknown[], keys: BankKeys, by: BankReadKind): BankSnapshot {
  if (values.length !== keys.accounts.length + 1) {
    throw new AnomalyError(
      `a ${by} read answered ${values.length} values for ${keys.accounts.length + 1} keys`,
    );
  }
  const wrong = values.find((value) => value !== null && !(value instanceof Uint8Array));
  if (wrong !== undefined) {
    const what = wrong instanceof DstoreError ? `${wrong.code} ${wrong.message}` : String(wrong);
    throw new AnomalyError(`a ${by} read's GET step was refused or answered no value: ${what}`);
  }
  const log = values[keys.accounts.length];
  return {
    balances: values.slice(0, keys.accounts.length).map(balanceOf),
    log: log instanceof Uint8Array ? decoder.decode(log) : null,
  };
}

/**
 * Reads every account and the log: in one read-only transaction (one atomic read at the owner, or
 * the chain's tail) or in one MGET (the keys share a position: one request). Throws the store's
 * error, or an error for an answer no correct store gives (a GET step refused alone, null).
 */
export async function readBank(store: BankStore, keys: BankKeys, by: BankReadKind): Promise<BankSnapshot> {
  const all = [...keys.accounts, keys.log];
  if (by === 'mget') return snapshotOf(await store.mget(all), keys, by);
  let read = store.transaction(all[0]!).get();
  for (const key of all.slice(1)) read = read.on(key).get();
  const results = await read.exec();
  if (results === null) throw new AnomalyError('a read-only transaction without WATCH answered null');
  return snapshotOf(results, keys, by);
}

/** The state after a run, read both ways: they must agree. */
export interface BankFinal {
  readonly transaction: BankSnapshot;
  readonly mget: BankSnapshot;
}

/** Reads the final state by a read-only transaction and by an MGET ({@link readBank}); throws on an error. */
export async function readBankFinal(store: BankStore, keys: BankKeys): Promise<BankFinal> {
  const transaction = await readBank(store, keys, 'transaction');
  const mget = await readBank(store, keys, 'mget');
  return { transaction, mget };
}

type MutableTransfer = { -readonly [K in keyof BankTransfer]: BankTransfer[K] };

/** Starts the workers; see {@link BankWorkloadOptions} for the defaults. */
export function startBank(options: BankWorkloadOptions): RunningBank {
  const { keys, stores } = options;
  if (stores.length === 0) throw new RangeError('a bank needs a store');
  const idPrefix = options.idPrefix ?? '';
  if (idPrefix.includes(',')) throw new RangeError(`a transfer id may not hold a comma: ${idPrefix}`);
  const mix = options.mix ?? DEFAULT_MIX;
  const total = mix.transfer + mix.transactionRead + mix.mgetRead;
  if (!(total > 0) || [mix.transfer, mix.transactionRead, mix.mgetRead].some((weight) => weight < 0)) {
    throw new RangeError(`a bank's mix needs non-negative weights, not all 0: ${JSON.stringify(mix)}`);
  }
  const maxAmount = options.maxAmount ?? 20;
  const operations = options.operationsPerWorker ?? 200;
  const workers = options.workers ?? 8;
  const pause = options.pauseMs ?? 0;
  const pauseAfterFailure = options.pauseAfterFailureMs ?? 5;
  const classify = options.classify ?? classifyFailure;
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31);
  const accounts = keys.accounts.length;

  const transfers: MutableTransfer[] = [];
  const reads: BankRead[] = [];
  const anomalies: string[] = [];
  const timeline: string[] = [`0ms ${options.phase ?? 'start'}`];
  let failedReads = 0;
  let phase = options.phase ?? 'start';
  let stopping = false;
  let finished = false;
  const started = performance.now();
  const recording: BankRecording = {
    keys,
    initial: options.initial ?? 100,
    seed,
    transfers,
    reads,
    get failedReads() {
      return failedReads;
    },
    anomalies,
    timeline,
  };

  const stats = (): BankStats => {
    const counts = { ok: 0, fail: 0, info: 0, pending: 0 };
    for (const transfer of transfers) counts[transfer.outcome]++;
    return {
      transfers: counts,
      reads: {
        transaction: reads.filter((read) => read.by === 'transaction').length,
        mget: reads.filter((read) => read.by === 'mget').length,
        failed: failedReads,
      },
      anomalies: anomalies.length,
    };
  };

  /** One transfer: the three steps in one transaction; false when it failed. */
  const transfer = async (store: BankStore, id: string, random: () => number): Promise<boolean> => {
    const from = Math.floor(random() * accounts);
    const to = (from + 1 + Math.floor(random() * (accounts - 1))) % accounts;
    const amount = 1 + Math.floor(random() * maxAmount);
    // Recorded before it is sent: a reader may see it in the log before its answer arrives.
    const record: MutableTransfer = { id, from, to, amount, phase, outcome: 'pending' };
    transfers.push(record);
    try {
      const results = await store
        .transaction(keys.accounts[from]!)
        .decrby(amount)
        .on(keys.accounts[to]!)
        .incrby(amount)
        .on(keys.log)
        .append(`${id},`)
        .exec();
      record.outcome = 'ok';
      // Without WATCH it never answers null; a step refused alone (the others ran, as in Redis)
      // would split the transfer: neither can happen with integers this small.
      if (results === null) anomalies.push(`transfer ${id} answered null without WATCH`);
      else {
        const refused = results.find((result) => result instanceof Error);
        if (refused instanceof Error) {
          const what =
            refused instanceof DstoreError ? `${refused.code} ${refused.message}` : refused.message;
          anomalies.push(`transfer ${id}: a step was refused alone: ${what}`);
        }
      }
      return true;
    } catch (error) {
      // A non-DstoreError is a bug of the client, whose effect is unknown (`info`).
      if (!(error instanceof DstoreError))
        anomalies.push(`transfer ${id} failed with a non-DstoreError: ${String(error)}`);
      // The client's own classification: `fail` only when the transfer certainly did not run.
      record.outcome = error instanceof DstoreError ? classify(error) : 'info';
      record.error = error instanceof DstoreError ? `${error.code}: ${error.message}` : String(error);
      return false;
    }
  };

  /** One read, recorded with what it saw; false when it failed. */
  const read = async (store: BankStore, by: BankReadKind): Promise<boolean> => {
    const readPhase = phase;
    try {
      reads.push({ by, phase: readPhase, ...(await readBank(store, keys, by)) });
      return true;
    } catch (error) {
      if (error instanceof AnomalyError) anomalies.push(`${by} read during "${readPhase}": ${error.message}`);
      else if (!(error instanceof DstoreError)) anomalies.push(`a ${by} read failed: ${String(error)}`);
      // A read refused or timed out during a fault: nothing to check.
      failedReads++;
      return false;
    }
  };

  const worker = async (index: number): Promise<void> => {
    const store = stores[index % stores.length]!;
    const random = seededRandom(seed + index);
    for (let n = 0; n < operations && !stopping; n++) {
      const dice = random() * total;
      const ok =
        dice < mix.transfer
          ? await transfer(store, `${idPrefix}${index}.${n}`, random)
          : await read(store, dice < mix.transfer + mix.transactionRead ? 'transaction' : 'mget');
      const wait = pause + (ok ? 0 : pauseAfterFailure);
      if (wait > 0) await sleep(wait);
    }
  };

  const done = Promise.all(Array.from({ length: workers }, (_, index) => worker(index))).then(() => {
    finished = true;
    return stats();
  });
  return {
    done,
    stop: () => {
      stopping = true;
      return done;
    },
    enter: (next) => {
      phase = next;
      timeline.push(`${Math.round(performance.now() - started)}ms ${next}`);
    },
    get transfersStarted() {
      return transfers.length;
    },
    get finished() {
      return finished;
    },
    recording,
    stats,
  };
}

/** What a violation is about. */
export type BankViolationKind =
  /** The workload saw an answer no correct store gives (see {@link BankRecording.anomalies}). */
  | 'anomaly'
  /** A transfer without an outcome: the workload had not ended when it was checked. */
  | 'pending'
  /** A read with an account missing or not an integer. */
  | 'read-malformed'
  /** A read whose balances do not total the initial sum: it saw part of a transfer. */
  | 'read-total'
  /** A read whose balances are not what the transfers named in the log it read make. */
  | 'read-mismatch'
  /** A read whose log names an id no worker sent. */
  | 'read-unknown-id'
  /** A read whose log names an id twice. */
  | 'read-duplicate-id'
  /** A read whose log names a transfer refused as not executed. */
  | 'read-phantom'
  /** A read whose log is not a prefix of the final log: it saw a transfer later lost or reordered. */
  | 'read-not-prefix'
  /** The final read-only transaction and MGET saw different states. */
  | 'final-disagree'
  /** The final state has an account missing or not an integer. */
  | 'final-malformed'
  /** The final log names an id more than once: a transfer applied twice. */
  | 'duplicate'
  /** The final log names an id no worker sent. */
  | 'unknown-id'
  /** An acknowledged transfer is missing from the final log. */
  | 'lost'
  /** A transfer refused as not executed is in the final log. */
  | 'phantom'
  /** The final balances are not the initial ones plus the effects of the final log's transfers. */
  | 'final-balances'
  /** The final balances do not total the initial sum. */
  | 'final-total';

/** One violation, described with its evidence (values, ids). */
export interface BankViolation {
  readonly kind: BankViolationKind;
  readonly message: string;
  /** The transfer ids involved, if any. */
  readonly ids?: readonly string[];
}

/** What {@link checkBank} found. */
export interface BankCheckResult {
  /** True when there is no violation. */
  readonly valid: boolean;
  readonly violations: readonly BankViolation[];
  /** Transfers checked, by outcome. */
  readonly transfers: {
    readonly ok: number;
    readonly fail: number;
    readonly info: number;
    readonly pending: number;
  };
  /** Transfers in the final log (each once if valid). */
  readonly inFinalLog: number;
  /** Reads checked. */
  readonly reads: number;
}

/** The balances the transfers named by `ids` leave, each occurrence applied (unknown ids skipped). */
function balancesAfter(
  recording: BankRecording,
  byId: ReadonlyMap<string, BankTransfer>,
  ids: readonly string[],
): number[] {
  const expected = recording.keys.accounts.map(() => recording.initial);
  for (const id of ids) {
    const transfer = byId.get(id);
    if (transfer === undefined) continue;
    expected[transfer.from]! -= transfer.amount;
    expected[transfer.to]! += transfer.amount;
  }
  return expected;
}

/** The ids named more than once, each once. */
function duplicates(ids: readonly string[]): string[] {
  const seen = new Set<string>();
  const twice = new Set<string>();
  for (const id of ids) {
    if (seen.has(id)) twice.add(id);
    seen.add(id);
  }
  return [...twice];
}

const sum = (balances: readonly number[]): number => balances.reduce((total, balance) => total + balance, 0);
const list = (ids: readonly string[], limit = 10): string =>
  ids.length <= limit ? ids.join(', ') : `${ids.slice(0, limit).join(', ')} (+${ids.length - limit} more)`;

/**
 * The checks every state (a read's or the final one) must pass on its own: no unknown or doubled
 * id, every account an integer, the total, and the balances exactly the log's transfers. Each
 * check reports independently of the others, so that one bug is named by the check it breaks.
 */
function checkState(
  recording: BankRecording,
  byId: ReadonlyMap<string, BankTransfer>,
  state: BankSnapshot,
  ids: readonly string[],
  where: string,
  kinds: {
    readonly malformed: BankViolationKind;
    readonly total: BankViolationKind;
    readonly mismatch: BankViolationKind;
    readonly unknown: BankViolationKind;
    readonly duplicate: BankViolationKind;
  },
): BankViolation[] {
  const violations: BankViolation[] = [];
  const unknown = [...new Set(ids.filter((id) => !byId.has(id)))];
  if (unknown.length > 0) {
    violations.push({
      kind: kinds.unknown,
      message: `${where}: the log names ${unknown.length} id(s) no worker sent: ${list(unknown)}`,
      ids: unknown,
    });
  }
  const doubled = duplicates(ids);
  if (doubled.length > 0) {
    violations.push({
      kind: kinds.duplicate,
      message: `${where}: the log names ${doubled.length} id(s) more than once (applied twice): ${list(doubled)}`,
      ids: doubled,
    });
  }
  const balances = state.balances;
  if (balances.length !== recording.keys.accounts.length || balances.some((balance) => balance === null)) {
    violations.push({
      kind: kinds.malformed,
      message: `${where}: an account is missing or not an integer: balances ${balances.join(',')}`,
    });
    return violations;
  }
  const numbers = balances as readonly number[];
  const expectedTotal = recording.initial * recording.keys.accounts.length;
  if (sum(numbers) !== expectedTotal) {
    violations.push({
      kind: kinds.total,
      message: `${where}: total ${sum(numbers)}, not ${expectedTotal}: balances ${numbers.join(',')}`,
    });
  }
  const expected = balancesAfter(recording, byId, ids);
  if (numbers.some((balance, i) => balance !== expected[i])) {
    violations.push({
      kind: kinds.mismatch,
      message: `${where}: balances ${numbers.join(',')}, but the ${ids.length} transfers of its log make ${expected.join(',')}`,
    });
  }
  return violations;
}

/**
 * Checks a bank's recording and its final state (read after the workload ended and the cluster
 * healed). Pure: it reads nothing but its arguments. Reports every violation found, each with its
 * evidence; see {@link BankViolationKind} for what each means. A transfer of unknown outcome
 * (`info`) may be in the final log or not; the balances must agree with the log either way.
 */
export function checkBank(recording: BankRecording, final: BankFinal): BankCheckResult {
  const violations: BankViolation[] = [];
  const byId = new Map<string, BankTransfer>();
  const transfers = { ok: 0, fail: 0, info: 0, pending: 0 };
  for (const transfer of recording.transfers) {
    if (byId.has(transfer.id)) {
      // The workload's ids are unique: a hand-made or corrupted recording cannot be judged.
      throw new RangeError(`the recording holds transfer ${transfer.id} twice`);
    }
    byId.set(transfer.id, transfer);
    transfers[transfer.outcome]++;
  }

  for (const anomaly of recording.anomalies) violations.push({ kind: 'anomaly', message: anomaly });
  const pending = recording.transfers.filter((transfer) => transfer.outcome === 'pending').map((t) => t.id);
  if (pending.length > 0) {
    violations.push({
      kind: 'pending',
      message: `${pending.length} transfer(s) without an outcome (checked before the workload ended?): ${list(pending)}`,
      ids: pending,
    });
  }

  const finalIds = bankLogIds(final.transaction.log);
  recording.reads.forEach((read, index) => {
    const where = `${read.by} read #${index} during "${read.phase}"`;
    const ids = bankLogIds(read.log);
    violations.push(
      ...checkState(recording, byId, read, ids, where, {
        malformed: 'read-malformed',
        total: 'read-total',
        mismatch: 'read-mismatch',
        unknown: 'read-unknown-id',
        duplicate: 'read-duplicate-id',
      }),
    );
    const phantoms = ids.filter((id) => byId.get(id)?.outcome === 'fail');
    if (phantoms.length > 0) {
      violations.push({
        kind: 'read-phantom',
        message: `${where}: its log names transfer(s) refused as not executed: ${list(phantoms)}`,
        ids: phantoms,
      });
    }
    // The log only grows, by whole transfers: every state a read can see is a prefix of every
    // later one, the final one included. A read beyond it saw a transfer that was then lost.
    const differs = ids.findIndex((id, i) => finalIds[i] !== id);
    if (differs !== -1) {
      violations.push({
        kind: 'read-not-prefix',
        message: `${where}: its log (${ids.length} transfers) is not a prefix of the final log (${finalIds.length}): at position ${differs} it names ${ids[differs]}, the final log ${finalIds[differs] ?? 'nothing'}`,
        ids: [ids[differs]!],
      });
    }
  });

  const same =
    final.transaction.log === final.mget.log &&
    final.transaction.balances.length === final.mget.balances.length &&
    final.transaction.balances.every((balance, i) => balance === final.mget.balances[i]);
  if (!same) {
    violations.push({
      kind: 'final-disagree',
      message: `the final read-only transaction (balances ${final.transaction.balances.join(',')}, ${finalIds.length} transfers) and MGET (balances ${final.mget.balances.join(',')}, ${bankLogIds(final.mget.log).length} transfers) disagree`,
    });
  }

  violations.push(
    ...checkState(recording, byId, final.transaction, finalIds, 'the final state', {
      malformed: 'final-malformed',
      total: 'final-total',
      mismatch: 'final-balances',
      unknown: 'unknown-id',
      duplicate: 'duplicate',
    }),
  );
  const inLog = new Set(finalIds);
  const lost = recording.transfers.filter((t) => t.outcome === 'ok' && !inLog.has(t.id)).map((t) => t.id);
  if (lost.length > 0) {
    violations.push({
      kind: 'lost',
      message: `${lost.length} acknowledged transfer(s) missing from the final log: ${list(lost)}`,
      ids: lost,
    });
  }
  const phantom = recording.transfers.filter((t) => t.outcome === 'fail' && inLog.has(t.id));
  if (phantom.length > 0) {
    violations.push({
      kind: 'phantom',
      message: `${phantom.length} transfer(s) refused as not executed are in the final log: ${list(phantom.map((t) => `${t.id} (${t.error ?? 'no error recorded'})`))}`,
      ids: phantom.map((t) => t.id),
    });
  }

  return {
    valid: violations.length === 0,
    violations,
    transfers,
    inFinalLog: finalIds.length,
    reads: recording.reads.length,
  };
}

/** One line of counts, then the first `limit` violations, one a line. */
export function formatBankResult(result: BankCheckResult, limit = 20): string {
  const { ok, fail, info, pending } = result.transfers;
  const head = `bank: ${result.valid ? 'consistent' : `${result.violations.length} violation(s)`}; transfers ${ok} ok, ${fail} not executed, ${info} unknown, ${pending} pending; ${result.inFinalLog} in the final log; ${result.reads} reads checked`;
  const lines = result.violations
    .slice(0, limit)
    .map((violation) => `  [${violation.kind}] ${violation.message}`);
  if (result.violations.length > limit) lines.push(`  (${result.violations.length - limit} more)`);
  return [head, ...lines].join('\n');
}

/**
 * A recording's transfers by phase and outcome, its reads and its timeline, on one line: what a
 * failure message needs to place a violation in the run.
 */
export function summarizeBank(recording: BankRecording): string {
  const byPhase = new Map<string, Record<BankOutcome, number>>();
  for (const transfer of recording.transfers) {
    const counts = byPhase.get(transfer.phase) ?? { pending: 0, ok: 0, fail: 0, info: 0 };
    counts[transfer.outcome]++;
    byPhase.set(transfer.phase, counts);
  }
  const phases = [...byPhase].map(
    ([phase, c]) => `${phase}: ok ${c.ok} fail ${c.fail} info ${c.info} pending ${c.pending}`,
  );
  const transactions = recording.reads.filter((read) => read.by === 'transaction').length;
  const reads = `reads: ${transactions} transactions, ${recording.reads.length - transactions} MGETs, ${recording.failedReads} failed`;
  return `seed ${recording.seed}; ${phases.join('; ')}; ${reads}; timeline ${recording.timeline.join(', ')}`;
}
