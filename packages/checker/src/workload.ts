/**
 * A register workload: N async workers over K keys issue random reads, writes (each of a value
 * never written before) and deletes against a store, recording every operation in a
 * {@link HistoryRecorder} for the linearizability checker.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { classifyError, DstoreError } from '@dstore/protocol';
import type { HistoryRecorder } from './recorder.js';

/** One register operation for the store. */
export type WorkloadOperation =
  | { readonly f: 'read'; readonly key: string }
  | { readonly f: 'write'; readonly key: string; readonly value: string }
  | { readonly f: 'delete'; readonly key: string }
  | { readonly f: 'append'; readonly key: string; readonly value: string }
  | { readonly f: 'appendRead'; readonly key: string; readonly value: string };

/**
 * What the store answered: a read its value (null: absent), a delete whether it removed a value,
 * an append the value's length after it, an appendRead the value read after its append.
 */
export type WorkloadResult = string | null | boolean | number | undefined;

/**
 * The register operations of a key-value client: `@dstore/client`'s `DstoreClient` has them
 * (structural, so this package needs no dependency on the client).
 */
export interface RegisterStore {
  getString(key: string): Promise<string | null>;
  set(key: string, value: string): Promise<unknown>;
  del(key: string): Promise<boolean>;
  /** APPEND, for a workload whose mix has appends. */
  append?(key: string, value: string): Promise<number>;
  /**
   * A transaction on `key` (MULTI/EXEC on one key; `DstoreClient.transaction`), for a workload
   * whose mix has appendReads: an APPEND then a GET, run as one.
   */
  transaction?(key: string): AppendReadTransaction;
}

/** The part of a one-key transaction builder an appendRead uses (`DstoreClient.transaction`'s). */
export interface AppendReadTransaction {
  append(value: string): {
    getString(): { exec(): Promise<readonly unknown[] | null> };
  };
}

/**
 * Runs one workload operation on `store`: read = GET, write = SET, delete = DEL, append = APPEND,
 * appendRead = a transaction of APPEND then GET.
 */
export async function runRegisterOperation(
  store: RegisterStore,
  operation: WorkloadOperation,
): Promise<WorkloadResult> {
  switch (operation.f) {
    case 'read':
      return store.getString(operation.key);
    case 'write':
      await store.set(operation.key, operation.value);
      return undefined;
    case 'delete':
      return store.del(operation.key);
    case 'append':
      if (store.append === undefined) throw new TypeError('the store has no append');
      return store.append(operation.key, operation.value);
    case 'appendRead':
      return appendRead(store, operation.key, operation.value);
  }
}

/**
 * An APPEND then a GET as one transaction: what the GET read. A step refused on its own (a
 * `DstoreError` in its slot) fails the operation: the append did not happen, the read had no effect.
 */
async function appendRead(store: RegisterStore, key: string, value: string): Promise<string | null> {
  if (store.transaction === undefined) throw new TypeError('the store has no transactions');
  const results = await store.transaction(key).append(value).getString().exec();
  if (results === null) throw new TypeError('a transaction without a version condition answered null');
  const [appended, read] = results;
  if (appended instanceof Error) throw appended;
  if (read instanceof Error) throw read;
  return typeof read === 'string' ? read : null;
}

/** How a failed operation enters the history: `fail` (certainly not applied) or `info` (unknown). */
export type FailureKind = 'fail' | 'info';

/**
 * dstore's classification: an error that says the request was not executed (`notExecuted`:
 * UNAVAILABLE, BUSY, STALE_EPOCH...) is `fail`; anything else (TIMEOUT, CONNECTION_CLOSED after
 * sending, INTERNAL, an error that is not a DstoreError) may have been applied: `info`.
 */
export function classifyFailure(error: unknown): FailureKind {
  return classifyError(error).notExecuted ? 'fail' : 'info';
}

/** The mix of operations (weights, need not sum to 1). */
export interface OperationMix {
  readonly read: number;
  readonly write: number;
  readonly delete: number;
  /** APPENDs of a unique token (the store must have `append`). Default 0. */
  readonly append?: number;
  /** Transactions of an APPEND of a unique token then a GET (the store must have `transaction`). Default 0. */
  readonly appendRead?: number;
}

/** Options of {@link startWorkload}. */
export interface WorkloadOptions {
  readonly recorder: HistoryRecorder;
  /** Runs one operation against the store. `worker` is the worker's index (to pick its client). */
  readonly execute: (operation: WorkloadOperation, worker: number) => Promise<WorkloadResult>;
  /** The keys every worker picks from (all workers share them: several writers per key). */
  readonly keys: readonly string[];
  /** Concurrent workers. Default 8. */
  readonly workers?: number;
  /** Stop after this many operations in all. Default 3,000. */
  readonly maxOperations?: number;
  /** Stop after this long (ms). Default 5,000. */
  readonly durationMs?: number;
  /** Default `{ read: 5, write: 4, delete: 1 }`. */
  readonly mix?: OperationMix;
  /** Random numbers in [0, 1); default `Math.random`. Pass a seeded one to replay a run's choices. */
  readonly random?: () => number;
  /** How an error enters the history; default {@link classifyFailure}. */
  readonly classify?: (error: unknown) => FailureKind;
  /** A worker waits this long after a failed operation, instead of spinning on instant refusals. Default 5. */
  readonly pauseAfterFailureMs?: number;
}

/** Counts of a finished workload. */
export interface WorkloadStats {
  readonly operations: number;
  readonly ok: number;
  readonly fail: number;
  readonly info: number;
  /** Failures by error code (`NOT_A_DSTORE_ERROR` for anything else). */
  readonly failures: Readonly<Record<string, number>>;
}

/** A running workload. */
export interface RunningWorkload {
  /** Resolves when the workload ends (count or time reached, or {@link RunningWorkload.stop}). */
  readonly done: Promise<WorkloadStats>;
  /** Asks every worker to stop after its current operation; resolves with the counts. */
  stop(): Promise<WorkloadStats>;
  /** Operations started so far. */
  readonly started: number;
  /** Operations answered ok so far. */
  readonly ok: number;
  /**
   * Stops once `count` operations were answered ok, or `maxWaitMs` after the call, whichever
   * comes first: a test that checks a history around a fault gets enough of it however loaded
   * the machine is, instead of asserting a throughput. Resolves with the counts.
   */
  stopOnceOk(count: number, maxWaitMs?: number): Promise<WorkloadStats>;
}

const DEFAULT_MIX: OperationMix = { read: 5, write: 4, delete: 1 };

class Counts {
  operations = 0;
  ok = 0;
  fail = 0;
  info = 0;
  readonly failures: Record<string, number> = {};

  noteFailure(kind: FailureKind, error: unknown): void {
    this[kind]++;
    const code = error instanceof DstoreError ? error.code : 'NOT_A_DSTORE_ERROR';
    this.failures[code] = (this.failures[code] ?? 0) + 1;
  }

  snapshot(): WorkloadStats {
    return {
      operations: this.operations,
      ok: this.ok,
      fail: this.fail,
      info: this.info,
      failures: { ...this.failures },
    };
  }
}

const errorText = (error: unknown): string =>
  error instanceof DstoreError ? error.code : error instanceof Error ? error.message : String(error);

/** Starts the workers; see {@link WorkloadOptions} for the defaults. */
export function startWorkload(options: WorkloadOptions): RunningWorkload {
  const { recorder, execute, keys } = options;
  const random = options.random ?? Math.random;
  const mix = options.mix ?? DEFAULT_MIX;
  const appends = mix.append ?? 0;
  const appendReads = mix.appendRead ?? 0;
  const total = mix.read + mix.write + mix.delete + appends + appendReads;
  const maxOperations = options.maxOperations ?? 3000;
  const until = performance.now() + (options.durationMs ?? 5000);
  const classify = options.classify ?? classifyFailure;
  const pause = options.pauseAfterFailureMs ?? 5;
  const counts = new Counts();
  let stopping = false;

  /**
   * The next operation; a write's value (`w<process>.<n>`) and an append's token (`a<process>.<n>;`,
   * `t<process>.<n>;` in an appendRead) are unique within the recorder's history.
   */
  const next = (process: number, n: number): WorkloadOperation => {
    const key = keys[Math.floor(random() * keys.length)]!;
    const dice = random() * total;
    if (dice < mix.read) return { f: 'read', key };
    if (dice < mix.read + mix.write) return { f: 'write', key, value: `w${process}.${n}` };
    if (dice < mix.read + mix.write + appends) return { f: 'append', key, value: `a${process}.${n};` };
    if (dice < mix.read + mix.write + appends + appendReads) {
      return { f: 'appendRead', key, value: `t${process}.${n};` };
    }
    return { f: 'delete', key };
  };

  const worker = async (index: number): Promise<void> => {
    let process = recorder.newProcess();
    let n = 0;
    while (!stopping && counts.operations < maxOperations && performance.now() < until) {
      counts.operations++;
      const operation = next(process, n++);
      const pending = recorder.invoke(
        process,
        operation.f,
        operation.key,
        operation.f === 'read' || operation.f === 'delete' ? undefined : operation.value,
      );
      try {
        const result = await execute(operation, index);
        counts.ok++;
        pending.ok(operation.f === 'write' ? undefined : (result ?? null));
      } catch (error) {
        const kind = classify(error);
        counts.noteFailure(kind, error);
        if (kind === 'fail') pending.fail(errorText(error));
        else {
          pending.info(errorText(error));
          // Jepsen's rule: an operation of unknown outcome may still be running, so its process
          // never invokes again; the worker goes on as a new process.
          process = recorder.newProcess();
          n = 0;
        }
        if (pause > 0) await new Promise((resolve) => setTimeout(resolve, pause));
      }
    }
  };

  let finished = false;
  const done = Promise.all(Array.from({ length: options.workers ?? 8 }, (_, index) => worker(index))).then(
    () => {
      finished = true;
      return counts.snapshot();
    },
  );
  return {
    done,
    stop: () => {
      stopping = true;
      return done;
    },
    get started() {
      return counts.operations;
    },
    get ok() {
      return counts.ok;
    },
    stopOnceOk: async (count, maxWaitMs = 60_000) => {
      const deadline = performance.now() + maxWaitMs;
      // Polled by the test that stops the load, never per operation.
      while (counts.ok < count && !finished && !stopping && performance.now() < deadline) await sleep(50);
      stopping = true;
      return done;
    },
  };
}
