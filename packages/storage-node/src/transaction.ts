import {
  DstoreError,
  ErrorCode,
  Op,
  type Response,
  type TransactRequest,
  type TransactStep,
} from '@dstore/protocol';
import {
  decideDelVersioned,
  decideExpire,
  decideGetDel,
  decideGetEx,
  decideIncrBy,
  decideIncrByFloat,
  decideSetBit,
  decideSetRange,
  decideSetVersioned,
  decideSetWith,
} from './atomic-ops.js';
import type { Decision, ManyDecision, Mutation, VersionedValue } from './engines/index.js';
import { valuePartAnswer } from './value-part.js';

/**
 * The decisions of the single-key writes and of TRANSACT (Redis's MULTI/EXEC on one key), whose
 * steps become one decision of `StorageEngine.update`.
 * Each step is decided by the same function as the request alone, on the entry the previous
 * steps left (a value that only exists inside the decision), and the steps' net effect becomes one
 * mutation: so the engine, the replication chain and a migration see one ordinary write.
 */

const NONE: Mutation = { kind: 'none' };
/** Bytes an INCRBY result may take: a signed 64-bit integer in decimal. */
const INTEGER_VALUE_BYTES = 20;
/**
 * Bytes an INCRBYFLOAT result takes for the space check: most are short, and the longest (the
 * largest long double written in full, ~4,950 digits) is still far below any value limit.
 */
const FLOAT_VALUE_BYTES = 64;

/**
 * The distinct keys a TRANSACT names (its key first, then each other key in order of first
 * mention by a step or watch), and for each step the index of its key among them.
 */
export interface TransactionKeys {
  readonly keys: readonly Uint8Array[];
  readonly stepKeys: readonly number[];
  /** Per watch, the index of its key. */
  readonly watchKeys: readonly number[];
}

/** {@link TransactionKeys} of `request`: keys compared by their bytes. */
export function transactionKeys(
  request: Pick<TransactRequest, 'key' | 'steps' | 'watches'>,
): TransactionKeys {
  const keys: Uint8Array[] = [request.key];
  const indexes = new Map<string, number>([[keyName(request.key), 0]]);
  const indexOf = (key: Uint8Array): number => {
    const name = keyName(key);
    let index = indexes.get(name);
    if (index === undefined) {
      index = keys.length;
      keys.push(key);
      indexes.set(name, index);
    }
    return index;
  };
  const stepKeys = request.steps.map((step) => indexOf(step.key));
  const watchKeys = (request.watches ?? []).map((watch) => indexOf(watch.key));
  return { keys, stepKeys, watchKeys };
}

/** `key`'s bytes as a string (latin1: one char per byte), to tell keys apart in a map. */
export function keyName(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('latin1');
}

/** The layout of a transaction whose every step names its one key and that watches nothing else. */
function oneKeyLayout(steps: number): TransactionKeys {
  return { keys: [], stepKeys: new Array<number>(steps).fill(0), watchKeys: [] };
}

/**
 * The decision of a TRANSACT on its key's live entry `current`: {@link decideTransactionOnKeys}
 * for a transaction whose steps all name its one key.
 */
export function decideTransaction(
  request: Pick<TransactRequest, 'steps' | 'ifVersion'>,
  current: VersionedValue | undefined,
  now: number,
  version: number,
  maxValueBytes: number,
): Decision<Response[] | null> {
  const { mutations, result } = decideTransactionOnKeys(
    request,
    oneKeyLayout(request.steps.length),
    [current],
    now,
    version,
    maxValueBytes,
  );
  return { mutation: mutations[0]!, result };
}

/**
 * The decision of a TRANSACT on the live entries `current` of its keys (in `layout`'s order):
 * every step's answer (id 0), or null when `ifVersion` or a watch does not hold (nothing runs).
 * Each step is decided on its key's entry as the previous steps left it; each key's net change
 * is one mutation. `version` is the one the transaction's write takes (for every key it changes),
 * so a step that answers a version (a GET_VERSIONED after a write) answers it.
 */
export function decideTransactionOnKeys(
  request: Pick<TransactRequest, 'steps' | 'ifVersion' | 'watches'>,
  layout: TransactionKeys,
  current: readonly (VersionedValue | undefined)[],
  now: number,
  version: number,
  maxValueBytes: number,
): ManyDecision<Response[] | null> {
  if (!watchesHold(request, layout, current)) {
    return { mutations: current.map(() => NONE), result: null };
  }
  const entries = current.slice();
  const changed = new Array<boolean>(current.length).fill(false);
  const results = new Array<Response>(request.steps.length);
  for (let index = 0; index < request.steps.length; index++) {
    const at = layout.stepKeys[index]!;
    const { mutation, result } = decideStep(request.steps[index]!, entries[at], now, version, maxValueBytes);
    results[index] = result;
    if (mutation.kind === 'none') continue;
    entries[at] = afterMutation(entries[at], mutation, version);
    changed[at] = true;
  }
  return {
    mutations: current.map((entry, at) => (changed[at] ? netMutation(entry, entries[at]) : NONE)),
    result: results,
  };
}

/** Whether `ifVersion` (the first key's) and every watch still hold on `current`. */
function watchesHold(
  request: Pick<TransactRequest, 'ifVersion' | 'watches'>,
  layout: TransactionKeys,
  current: readonly (VersionedValue | undefined)[],
): boolean {
  if (request.ifVersion !== undefined && (current[0]?.version ?? 0) !== request.ifVersion) return false;
  const watches = request.watches ?? [];
  for (let i = 0; i < watches.length; i++) {
    if ((current[layout.watchKeys[i]!]?.version ?? 0) !== watches[i]!.version) return false;
  }
  return true;
}

/** Bytes a RESULTS answer takes besides its values (headers, integers, the nested bodies' framing). */
const ANSWER_OVERHEAD_BYTES = 64;
const PER_RESULT_OVERHEAD_BYTES = 48;

/**
 * `results` as they can be sent in one frame of `maxFrameBytes`: when the values read together
 * pass it (a transaction of many GETs of large values), each value becomes a FRAME_TOO_LARGE
 * ERROR saying the transaction ran, rather than the whole answer failing after its write was made
 * (which would read as "not executed").
 */
export function answerWithinFrame(results: Response[], maxFrameBytes: number): Response[] {
  let bytes = ANSWER_OVERHEAD_BYTES;
  for (const result of results) bytes += PER_RESULT_OVERHEAD_BYTES + carriedBytes(result);
  if (bytes <= maxFrameBytes) return results;
  return results.map((result) =>
    carriedBytes(result) === 0 || result.op === Op.ERROR
      ? result
      : {
          op: Op.ERROR,
          id: 0,
          code: ErrorCode.FRAME_TOO_LARGE,
          message: `the transaction ran, but the values it read pass the ${maxFrameBytes}-byte frame limit together: this one is not returned`,
        },
  );
}

/** Bytes of value (or message) a step's answer carries. */
function carriedBytes(result: Response): number {
  switch (result.op) {
    case Op.VALUE:
    case Op.VERSIONED:
      return result.value?.length ?? 0;
    case Op.ERROR:
      return Buffer.byteLength(result.message);
    default:
      return 0;
  }
}

/**
 * The largest value a transaction may store (for the room check before it runs, as a single
 * request's `valueBytes`), from the key's current length; undefined when no step stores a value.
 */
export function transactionValueBytes(steps: readonly TransactStep[], lengthNow: number): number | undefined {
  return transactionValueBytesOnKeys(steps, oneKeyLayout(steps.length), [lengthNow])[0];
}

/**
 * {@link transactionValueBytes} for each key of `layout` (`lengthsNow`: their values' current
 * lengths, 0 for none): the largest value the transaction may store under it, undefined for a key
 * it stores no value under.
 */
export function transactionValueBytesOnKeys(
  steps: readonly TransactStep[],
  layout: TransactionKeys,
  lengthsNow: readonly number[],
): (number | undefined)[] {
  const lengths = lengthsNow.slice();
  const stores = new Array<boolean>(lengths.length).fill(false);
  for (let index = 0; index < steps.length; index++) {
    const at = layout.stepKeys[index]!;
    const after = storedLength(steps[index]!, lengths[at]!);
    if (after === undefined) continue;
    stores[at] = true;
    lengths[at] = Math.max(lengths[at]!, after);
  }
  return lengths.map((length, at) => (stores[at] ? length : undefined));
}

/**
 * The largest value a single write may store, for the room check before it runs (`valueBytes` of
 * `StorageEngine.update`); `lengthNow` (the value's current length) is read only by the writes
 * that extend it (SETRANGE, SETBIT). Undefined: it stores no value (a delete, an expiry change).
 */
export function stepValueBytes(step: TransactStep, lengthNow: () => number): number | undefined {
  switch (step.op) {
    case Op.SETRANGE:
    case Op.SETBIT:
      return storedLength(step, lengthNow());
    default:
      return storedLength(step, 0);
  }
}

/** The length a step leaves the value at (an upper bound), or undefined when it stores no value. */
function storedLength(step: TransactStep, length: number): number | undefined {
  switch (step.op) {
    case Op.SET_WITH:
      return step.value.length;
    case Op.INCRBY:
      return INTEGER_VALUE_BYTES;
    case Op.INCRBYFLOAT:
      return FLOAT_VALUE_BYTES;
    case Op.SETRANGE:
      return Math.max(length, (step.offset ?? length) + step.value.length);
    case Op.SETBIT:
      return Math.max(length, Math.floor(step.offset / 8) + 1);
    default:
      return undefined;
  }
}

/**
 * One step's decision, answered as the request alone is (id 0; a refusal as ERROR): the one mapping
 * from a single-key write or a transaction's step to its decision and answer.
 */
export function decideStep(
  step: TransactStep,
  entry: VersionedValue | undefined,
  now: number,
  version: number,
  maxValueBytes: number,
): Decision<Response> {
  switch (step.op) {
    case Op.SET_WITH: {
      if (step.ifVersion !== undefined || step.withVersion === true) {
        const { mutation, result } = decideSetVersioned(step, entry, now, version);
        return { mutation, result: { op: Op.VERSION, id: 0, ...result } };
      }
      const { mutation, result } = decideSetWith(step, entry, now);
      return {
        mutation,
        result:
          step.get === true
            ? { op: Op.VALUE, id: 0, value: result.previous }
            : { op: Op.COUNT, id: 0, count: result.written ? 1 : 0 },
      };
    }
    case Op.EXPIRE: {
      if (step.get === true) {
        const { mutation, result } = decideGetEx(step, entry, now);
        return { mutation, result: { op: Op.VALUE, id: 0, value: result } };
      }
      const { mutation, result } = decideExpire(step, entry, now);
      return { mutation, result: { op: Op.COUNT, id: 0, count: result ? 1 : 0 } };
    }
    case Op.TTL:
    case Op.PEXPIRETIME:
      return {
        mutation: NONE,
        result: { op: Op.INTEGER, id: 0, value: BigInt(pttlOf(entry, now, step.op === Op.PEXPIRETIME)) },
      };
    case Op.GETDEL: {
      const { mutation, result } = decideGetDel(entry);
      return { mutation, result: { op: Op.VALUE, id: 0, value: result } };
    }
    case Op.INCRBY: {
      const { mutation, result } = decideIncrBy(step.delta, entry);
      return { mutation, result: refusalOr(result, (value) => ({ op: Op.INTEGER, id: 0, value })) };
    }
    case Op.SETRANGE: {
      const { mutation, result } = decideSetRange(step.value, step.offset, maxValueBytes, entry);
      return {
        mutation,
        result: refusalOr(result, (length) => ({ op: Op.INTEGER, id: 0, value: BigInt(length) })),
      };
    }
    case Op.INCRBYFLOAT: {
      const { mutation, result } = decideIncrByFloat(step.increment, entry);
      return { mutation, result: refusalOr(result, (value) => ({ op: Op.VALUE, id: 0, value })) };
    }
    case Op.SETBIT: {
      const { mutation, result } = decideSetBit(step.offset, step.bit, maxValueBytes, entry);
      return {
        mutation,
        result: refusalOr(result, (bit) => ({ op: Op.INTEGER, id: 0, value: BigInt(bit) })),
      };
    }
    case Op.READ_PART:
      return { mutation: NONE, result: valuePartAnswer(step, entry?.value) };
    case Op.GET_VERSIONED:
      return {
        mutation: NONE,
        result: { op: Op.VERSIONED, id: 0, value: entry?.value ?? null, version: entry?.version ?? 0 },
      };
    case Op.DEL_VERSIONED: {
      const { mutation, result } = decideDelVersioned(step.ifVersion, entry, version);
      return { mutation, result: { op: Op.VERSION, id: 0, ...result } };
    }
  }
}

/** A step's refusal as its ERROR answer, or its answer. */
function refusalOr<T>(result: T | DstoreError, answer: (value: T) => Response): Response {
  return result instanceof DstoreError
    ? { op: Op.ERROR, id: 0, code: result.code, message: result.message }
    : answer(result);
}

/**
 * PTTL of `entry` at `now`: ms left (`absolute`, PEXPIRETIME: the expiry time in ms since the Unix
 * epoch), -1 without expiry, -2 when the key does not exist (as Redis). For a TTL request and a
 * transaction's TTL step alike.
 */
export function pttlOf(entry: VersionedValue | undefined, now: number, absolute: boolean): number {
  if (entry === undefined) return -2;
  if (entry.expireAt === 0) return -1;
  return absolute ? entry.expireAt : Math.max(0, entry.expireAt - now);
}

/** The entry a step's mutation leaves, as the next step sees it (undefined: none). */
function afterMutation(
  entry: VersionedValue | undefined,
  mutation: Mutation,
  version: number,
): VersionedValue | undefined {
  switch (mutation.kind) {
    case 'none':
      return entry;
    case 'delete':
      return undefined;
    case 'put':
      return { value: mutation.value, expireAt: mutation.expireAt, version, writeEpoch: 0 };
    case 'expire':
      return entry === undefined ? undefined : { ...entry, expireAt: mutation.expireAt, version };
  }
}

/**
 * The one mutation that takes the key from `current` to `last`: a delete, an expiry change when
 * the value is the one the key had (steps never modify a value in place, they make a new one), or
 * a put. A key created and deleted within the transaction needs no write.
 */
function netMutation(current: VersionedValue | undefined, last: VersionedValue | undefined): Mutation {
  if (last === undefined) return current === undefined ? NONE : { kind: 'delete' };
  if (current !== undefined && last.value === current.value)
    return { kind: 'expire', expireAt: last.expireAt };
  return { kind: 'put', value: last.value, expireAt: last.expireAt };
}
