/**
 * Histories in Jepsen's shape, one JSON object per line (JSONL):
 * `{"index":3,"type":"invoke","process":2,"f":"write","key":"k1","value":"w2-17","time":12.5}`.
 *
 * - `invoke`: a process starts an operation (`value`: a write's value, a cas's `[from, to]`).
 * - `ok`: it completed (`value`: what a read returned, whether a delete removed something).
 * - `fail`: it certainly did not take effect (the checker drops it).
 * - `info`: its outcome is unknown (timeout, lost connection): it may take effect at any time after
 *   its invocation, or never. The process never invokes again (the worker takes a new process id).
 *
 * Events appear in real-time order; `time` (ms, one monotonic clock) is shown in reports. Events of
 * process `"nemesis"` (faults injected) are kept for reading, not checked.
 */
import type { Unknown } from './model.js';
import { UNKNOWN } from './model.js';
import type { Operation } from './operation.js';
import type { RegisterInput, RegisterOutput, RegisterState } from './register-model.js';

/** The kind of a history event. */
export type EventType = 'invoke' | 'ok' | 'fail' | 'info';

/** A JSON value, as events carry them. */
export type JsonValue =
  | string
  | number
  | boolean
  | null
  | readonly JsonValue[]
  | { readonly [k: string]: JsonValue };

/** One line of a history. */
export interface HistoryEvent {
  /** Position in the history, from 0. */
  readonly index: number;
  readonly type: EventType;
  /** The client process (a number), or `"nemesis"` for an injected fault. */
  readonly process: number | 'nemesis';
  /** The operation: `read`, `write`, `delete`, `cas`; for the nemesis, the fault (`kill`, `pause`...). */
  readonly f: string;
  /** The key (the partition); absent on nemesis events. */
  readonly key?: string;
  readonly value?: JsonValue;
  /** ms on the recorder's one monotonic clock. */
  readonly time: number;
  /** For `fail`/`info`: the error code or message, for reading. */
  readonly error?: string;
}

/** A history that cannot be a real one (a completion without invocation, two open invocations). */
export class MalformedHistoryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MalformedHistoryError';
  }
}

/** Parses a JSONL history (blank lines ignored). */
export function parseHistory(jsonl: string): HistoryEvent[] {
  const events: HistoryEvent[] = [];
  for (const line of jsonl.split('\n')) {
    if (line.trim() !== '') events.push(JSON.parse(line) as HistoryEvent);
  }
  return events;
}

/** Serialises a history as JSONL. */
export function formatHistory(events: readonly HistoryEvent[]): string {
  return events.map((event) => `${JSON.stringify(event)}\n`).join('');
}

/** An invocation with its completion (undefined: none recorded, the history ended first). */
export interface CompletedPair {
  readonly invoke: HistoryEvent;
  readonly completion: HistoryEvent | undefined;
  /** Position of the invocation and completion in the history. */
  readonly callAt: number;
  readonly returnAt: number | undefined;
}

/** Matches every client invocation with the completion of the same process. */
export function pairEvents(events: readonly HistoryEvent[]): CompletedPair[] {
  const open = new Map<number, { invoke: HistoryEvent; callAt: number }>();
  const pairs: CompletedPair[] = [];
  events.forEach((event, position) => {
    if (event.process === 'nemesis') return;
    const pending = open.get(event.process);
    if (event.type === 'invoke') {
      if (pending !== undefined) {
        throw new MalformedHistoryError(
          `process ${event.process} invoked event ${event.index} while event ${pending.invoke.index} was open`,
        );
      }
      open.set(event.process, { invoke: event, callAt: position });
      return;
    }
    if (pending === undefined) {
      throw new MalformedHistoryError(
        `event ${event.index}: ${event.type} of process ${event.process} with no invocation`,
      );
    }
    open.delete(event.process);
    pairs.push({ invoke: pending.invoke, completion: event, callAt: pending.callAt, returnAt: position });
  });
  for (const { invoke, callAt } of open.values()) {
    pairs.push({ invoke, completion: undefined, callAt, returnAt: undefined });
  }
  return pairs.sort((a, b) => a.callAt - b.callAt);
}

/**
 * Turns a pair into a checker operation, or undefined to leave it out (a failed operation, a read
 * whose answer was never seen: neither can have had an effect anyone observed).
 */
export type OperationBuilder<Input, Output> = (pair: CompletedPair) => Operation<Input, Output> | undefined;

const asState = (value: JsonValue | undefined): RegisterState => (typeof value === 'string' ? value : null);

function registerInput(invoke: HistoryEvent): RegisterInput {
  switch (invoke.f) {
    case 'read':
      return { f: 'read' };
    case 'write':
      return { f: 'write', value: String(invoke.value) };
    case 'delete':
      return { f: 'delete' };
    case 'cas': {
      const [from, to] = (Array.isArray(invoke.value) ? invoke.value : []) as JsonValue[];
      return { f: 'cas', from: asState(from), to: String(to) };
    }
    case 'append':
      return { f: 'append', value: String(invoke.value) };
    case 'appendRead':
      return { f: 'appendRead', value: String(invoke.value) };
    default:
      throw new MalformedHistoryError(`event ${invoke.index}: unknown register operation '${invoke.f}'`);
  }
}

function registerOutput(input: RegisterInput, completion: HistoryEvent): RegisterOutput {
  switch (input.f) {
    case 'read':
    case 'appendRead':
      return asState(completion.value);
    case 'delete':
      return typeof completion.value === 'boolean' ? completion.value : undefined;
    case 'cas':
      // An `ok` cas swapped; one that did not is `fail` (dropped), as in Jepsen.
      return true;
    case 'append':
      return typeof completion.value === 'number' ? completion.value : undefined;
    case 'write':
      return undefined;
  }
}

/** The register operations of a history: `fail` dropped, `info` (or no completion) unknown. */
export const registerOperation: OperationBuilder<RegisterInput, RegisterOutput> = (pair) => {
  const { invoke, completion } = pair;
  if (completion?.type === 'fail') return undefined;
  const input = registerInput(invoke);
  const known = completion !== undefined && completion.type === 'ok';
  // A read of unknown outcome changed nothing and showed nothing: it constrains nothing.
  if (!known && input.f === 'read') return undefined;
  const output: RegisterOutput | Unknown = known ? registerOutput(input, completion) : UNKNOWN;
  return {
    process: invoke.process,
    input,
    output,
    call: pair.callAt,
    ret: known ? pair.returnAt! : Number.POSITIVE_INFINITY,
    index: invoke.index,
    callTime: invoke.time,
    returnTime: known ? completion.time : undefined,
  };
};

/** Splits a history's operations by key (each key is an independent register). */
export function partitionByKey<Input, Output>(
  events: readonly HistoryEvent[],
  build: OperationBuilder<Input, Output>,
): Map<string, Operation<Input, Output>[]> {
  const partitions = new Map<string, Operation<Input, Output>[]>();
  for (const pair of pairEvents(events)) {
    const operation = build(pair);
    if (operation === undefined) continue;
    const key = pair.invoke.key ?? '';
    let partition = partitions.get(key);
    if (partition === undefined) {
      partition = [];
      partitions.set(key, partition);
    }
    partition.push(operation);
  }
  return partitions;
}
