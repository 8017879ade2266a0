/**
 * Checks a whole history: partition by key, search each partition, explain what failed.
 */
import { type HistoryEvent, type OperationBuilder, partitionByKey, registerOperation } from './history.js';
import type { Model } from './model.js';
import type { Operation } from './operation.js';
import { registerModel } from './register-model.js';
import { searchLinearization, type Verdict } from './search.js';

/** Budget of {@link checkHistory}, {@link checkHistoryWith} and {@link checkOperations}. */
export interface CheckOptions {
  /** Wall-clock budget of the whole check in ms; keys not decided by then are `unknown`. Default 20,000. */
  readonly timeLimitMs?: number;
  /** Most search steps per key; past it the key is `unknown`. Default 5,000,000. */
  readonly maxStepsPerKey?: number;
}

/** The verdict on one key. */
export interface KeyResult {
  readonly key: string;
  readonly verdict: Verdict;
  /** Operations checked (failed operations and reads of unknown outcome left out). */
  readonly operations: number;
  readonly steps: number;
  /** `illegal`: why (see {@link explainFailure}); `unknown`: which budget ran out. */
  readonly explanation?: string;
  /** `illegal`: clock time (ms) of the invocation of the first operation that could not be placed. */
  readonly blockedAt?: number;
}

/** The verdict on a history: `illegal` if any key is, else `unknown` if any key is, else `ok`. */
export interface CheckResult {
  readonly verdict: Verdict;
  readonly keys: readonly KeyResult[];
  /** The keys that are not linearizable, with their explanations. */
  readonly illegal: readonly KeyResult[];
  /** The keys the budget did not decide. */
  readonly unknown: readonly KeyResult[];
  /** Operations checked over all keys. */
  readonly operations: number;
}

const DEFAULT_TIME_LIMIT_MS = 20_000;
const DEFAULT_MAX_STEPS = 5_000_000;

function describeTimes<I, O>(operation: Operation<I, O>): string {
  const end = operation.returnTime === undefined ? '∞' : operation.returnTime.toFixed(3);
  return `[${operation.callTime.toFixed(3)} .. ${end} ms]`;
}

function describe<S, I, O>(model: Model<S, I, O>, operation: Operation<I, O>): string {
  return `#${operation.index} process ${operation.process}: ${model.describeOperation(operation.input, operation.output)} ${describeTimes(operation)}`;
}

/**
 * Explains a non-linearizable partition: the longest prefix that could be linearized and the
 * operations that could not be placed after it. Those are the operations invoked before the first
 * completion among the unplaced ones: one of them had to come next, and the model refuses each in
 * the state the prefix leaves (the search tried them all there: had one been allowed, the prefix
 * would be longer).
 */
export function explainFailure<S, I, O>(
  model: Model<S, I, O>,
  key: string,
  operations: readonly Operation<I, O>[],
  longestPrefix: readonly number[],
  stateAfterPrefix: S,
): string {
  const { blocked, unplaced } = blockedOperations(operations, longestPrefix);
  const prefixTail = longestPrefix.slice(-10);
  const lines = [
    `key ${JSON.stringify(key)}: not linearizable (${operations.length} operations).`,
    `Longest linearizable prefix: ${longestPrefix.length} operations, leaving the state ${model.describeState(stateAfterPrefix)}${
      prefixTail.length < longestPrefix.length ? `; its last ${prefixTail.length}` : ''
    }:`,
    ...prefixTail.map((op) => `  ${describe(model, operations[op]!)}`),
    `None of these can come next (each was invoked before the earliest completion left, and none is possible in state ${model.describeState(stateAfterPrefix)}):`,
    ...blocked.map((operation) => `  ${describe(model, operation)}`),
  ];
  if (unplaced > blocked.length) lines.push(`(${unplaced - blocked.length} later operations not reached)`);
  return lines.join('\n');
}

/**
 * The operations that could not come after the prefix (invoked before the earliest completion
 * among the unplaced ones), and how many operations are unplaced in all.
 */
function blockedOperations<I, O>(
  operations: readonly Operation<I, O>[],
  longestPrefix: readonly number[],
): { readonly blocked: Operation<I, O>[]; readonly unplaced: number } {
  const placed = new Set(longestPrefix);
  const unplaced = operations.filter((_, op) => !placed.has(op));
  // A loop, not Math.min(...): a spread of a long history would overflow the call stack.
  const firstReturn = unplaced.reduce(
    (first, operation) => Math.min(first, operation.ret),
    Number.POSITIVE_INFINITY,
  );
  return { blocked: unplaced.filter((operation) => operation.call < firstReturn), unplaced: unplaced.length };
}

/** Checks the operations of one partition (`key` names it in the explanation). */
export function checkOperations<S, I, O>(
  model: Model<S, I, O>,
  key: string,
  operations: readonly Operation<I, O>[],
  options: CheckOptions & { readonly deadline?: number } = {},
): KeyResult {
  const deadline = options.deadline ?? performance.now() + (options.timeLimitMs ?? DEFAULT_TIME_LIMIT_MS);
  const maxSteps = options.maxStepsPerKey ?? DEFAULT_MAX_STEPS;
  const found = searchLinearization(model, operations, { deadline, maxSteps });
  const base = { key, verdict: found.verdict, operations: operations.length, steps: found.steps };
  if (found.verdict === 'illegal') {
    return {
      ...base,
      explanation: explainFailure(model, key, operations, found.longestPrefix, found.stateAfterPrefix),
      blockedAt: blockedOperations(operations, found.longestPrefix).blocked[0]?.callTime,
    };
  }
  if (found.verdict === 'unknown') {
    const which = found.steps > maxSteps ? `${maxSteps} steps` : 'the time limit';
    return { ...base, explanation: `key ${JSON.stringify(key)}: undecided, the search reached ${which}` };
  }
  return base;
}

/**
 * Checks that every key of `events` is linearizable under `model`, each event pair made an
 * operation by `build`.
 */
export function checkHistoryWith<S, I, O>(
  events: readonly HistoryEvent[],
  model: Model<S, I, O>,
  build: OperationBuilder<I, O>,
  options: CheckOptions = {},
): CheckResult {
  const deadline = performance.now() + (options.timeLimitMs ?? DEFAULT_TIME_LIMIT_MS);
  const keys: KeyResult[] = [];
  const faults = events.filter((event) => event.process === 'nemesis');
  for (const [key, operations] of partitionByKey(events, build)) {
    const result = checkOperations(model, key, operations, { ...options, deadline });
    keys.push(result.blockedAt === undefined ? result : withFaults(result, result.blockedAt, faults));
  }
  const illegal = keys.filter((result) => result.verdict === 'illegal');
  const unknown = keys.filter((result) => result.verdict === 'unknown');
  const verdict: Verdict = illegal.length > 0 ? 'illegal' : unknown.length > 0 ? 'unknown' : 'ok';
  return {
    verdict,
    keys,
    illegal,
    unknown,
    operations: keys.reduce((sum, result) => sum + result.operations, 0),
  };
}

/** How many of the faults injected before a failure its explanation names (the latest ones). */
const FAULTS_SHOWN = 3;

/** Adds to an illegal key's explanation the faults injected last before it went wrong (the phase). */
function withFaults(result: KeyResult, blockedAt: number, faults: readonly HistoryEvent[]): KeyResult {
  const before = faults.filter((fault) => fault.time <= blockedAt).slice(-FAULTS_SHOWN);
  if (before.length === 0) return result;
  const named = before.map((fault) =>
    `${fault.f} ${String(fault.value ?? '')} @${fault.time.toFixed(1)}`.trim(),
  );
  return {
    ...result,
    explanation: `${result.explanation}\nLast faults injected before it: ${named.join(', ')}`,
  };
}

/** Checks that every key of `events` is a linearizable register (read, write, delete, cas). */
export function checkHistory(events: readonly HistoryEvent[], options: CheckOptions = {}): CheckResult {
  return checkHistoryWith(events, registerModel, registerOperation, options);
}

/** A check's result as text: the verdict, then every illegal key's explanation and the undecided keys. */
export function formatCheckResult(result: CheckResult): string {
  const lines = [
    `verdict: ${result.verdict} (${result.keys.length} keys, ${result.operations} operations; ${result.illegal.length} illegal, ${result.unknown.length} undecided)`,
  ];
  for (const key of [...result.illegal, ...result.unknown]) lines.push(key.explanation ?? key.key);
  return lines.join('\n');
}
