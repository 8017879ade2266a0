import {
  type BinaryLike,
  bytesToString,
  DEFAULT_LIMITS,
  DstoreError,
  type ErrorResponse,
  Op,
  type Response,
  type TransactRequest,
  type WithoutId,
} from '@dstore/protocol';
import type {
  BitPosRange,
  BitRange,
  CommandOptions,
  DelOptions,
  ExpireOptions,
  GetExOptions,
  SetOptions,
  VersionedValue,
} from './client.js';
import {
  bitCountCommand,
  bitPosCommand,
  delVersionedCommand,
  type ExpireForm,
  expireCommand,
  expireTimeCommand,
  getBitCommand,
  getDelCommand,
  getExCommand,
  getRangeCommand,
  getVersionedCommand,
  incrByCommand,
  incrByFloatCommand,
  incrCommand,
  int64Argument,
  type KeyCommand,
  mapped,
  persistCommand,
  pexpireTimeCommand,
  pttlCommand,
  setBitCommand,
  setRangeCommand,
  setVersionedCommand,
  setWithCommand,
  setWithStep,
  strlenCommand,
  ttlCommand,
  unexpectedAnswer,
  valueBytes,
  versionArgument,
} from './commands.js';
import { invalidArgument, VersionConflictError } from './errors.js';

/** Options of {@link Transaction.exec}: the command's own, and WATCH. */
export interface TransactionOptions extends CommandOptions {
  /**
   * WATCH: run the steps only when the key's version (see `DstoreClient.getWithVersion`) is this
   * one, 0 meaning the key does not exist (a key that expired since counts as changed). Otherwise
   * nothing runs and `exec` resolves null.
   */
  readonly ifVersion?: number;
  /**
   * WATCH of other keys of the transaction's ring position (one hash tag): run the steps only when
   * each key's version is the one given (0: the key does not exist), else nothing runs and `exec`
   * resolves null. At most 1000.
   */
  readonly watch?: readonly { readonly key: BinaryLike; readonly version: number }[];
}

/**
 * What {@link Transaction.exec} resolves: in each step's slot its result, or the
 * {@link DstoreError} of that step when it was refused on its own (NOT_AN_INTEGER, VALUE_TOO_LARGE,
 * VERSION_CONFLICT for a step's own `ifVersion`, ...): the other steps ran, as in Redis.
 */
export type TransactionResults<R extends readonly unknown[]> = {
  -readonly [I in keyof R]: R[I] | DstoreError;
};

/** A step's options: those of the client's command without `signal` and `timeout` (they are `exec`'s). */
export type StepOptions<O> = Omit<O, keyof CommandOptions>;

/** How a transaction sends its TRANSACT: the client's own send (routing, deadline, retries, errors). */
type SendTransaction = (request: WithoutId<TransactRequest>, options: CommandOptions) => Promise<Response>;

/**
 * A transaction on one key, built by `DstoreClient.transaction(key)`: Redis's MULTI/EXEC scoped to
 * that key. Each method adds a step (the client's command of the same name, without the key) and
 * returns the builder, typed with one more result; {@link exec} sends them all as one request and
 * the key's owner runs them in order as one atomic step: each step sees the key as the steps
 * before it left it, no other command on the key runs in between, and the outcome is one write
 * (one version), replicated and migrated as one. Other keys of the same hash tag may join it
 * ({@link on}): the steps then run over all of them as one atomic step on their one owner.
 *
 * Arguments are checked as the client checks them, when the step is added (the call throws, the
 * step is not added). At most 1000 steps (the protocol's `maxBatchKeys`). The builder is mutable
 * and runs once: chain the calls to keep the result types.
 *
 * ```ts
 * // exec() resolves null only when a watched version changed (exec({ ifVersion, watch }))
 * const [count, , ttl] = (await client.transaction('rate:alice').incr().expire(60, { condition: 'nx' }).pttl().exec())!;
 * await client.transaction('{acct:7}:checking').decrby(50).on('{acct:7}:savings').incrby(50).exec();
 * ```
 */
export class Transaction<R extends readonly unknown[] = []> {
  private readonly commands: KeyCommand<unknown>[] = [];
  private executed = false;

  /** The key the next steps act on ({@link on}); the transaction's key at first. */
  private target: Uint8Array;

  /**
   * @internal Built by `DstoreClient.transaction`; `key` is the full key (prefix included),
   * `keyOf` the client's key check and prefix.
   */
  constructor(
    private readonly key: Uint8Array,
    private readonly send: SendTransaction,
    private readonly keyOf: (key: BinaryLike) => Uint8Array,
  ) {
    this.target = key;
  }

  /**
   * Makes the steps added after it act on `key`, until the next `on`: a transaction may use
   * several keys when they share the transaction key's ring position, i.e. one hash tag
   * (`{user:7}:name` and `{user:7}:cart` with the default `{}`); they then run, are stored and
   * are replicated as one atomic step on their one owner. A key of another position fails the
   * whole transaction with INVALID_ARGUMENT, nothing run. Throws at once for a key the client
   * refuses.
   */
  on(key: BinaryLike): Transaction<R> {
    this.checkOpen();
    this.target = this.keyOf(key);
    return this;
  }

  /** The steps added so far. */
  get length(): number {
    return this.commands.length;
  }

  /** GET: the value, or null when the key does not exist (a copy the caller owns). */
  get(): Transaction<[...R, Uint8Array | null]> {
    return this.add(mapped(getVersionedCommand(this.target), valueWithoutVersion));
  }

  /** GET decoded as UTF-8, or null when the key does not exist. */
  getString(): Transaction<[...R, string | null]> {
    return this.add(
      mapped(getVersionedCommand(this.target), (versioned) => utf8OrNull(valueWithoutVersion(versioned))),
    );
  }

  /**
   * The value with its version, or null (as `DstoreClient.getWithVersion`); after a write in the
   * same transaction, the version that write gives the key.
   */
  getWithVersion(): Transaction<[...R, VersionedValue | null]> {
    return this.add(getVersionedCommand(this.target));
  }

  /**
   * SET with the client's {@link SetOptions} (expiry, `nx`/`xx`, `get`, `ifVersion`), resolving
   * as `DstoreClient.set` resolves: 'OK', null when `nx`/`xx` did not hold, the previous value
   * with `get`; a failed `ifVersion` is a `VersionConflictError` in the step's slot.
   */
  set(
    value: BinaryLike,
    options: StepOptions<SetOptions> & { readonly get: true },
  ): Transaction<[...R, Uint8Array | null]>;
  set(
    value: BinaryLike,
    options: StepOptions<SetOptions> & ({ readonly nx: true } | { readonly xx: true }),
  ): Transaction<[...R, 'OK' | null]>;
  set(
    value: BinaryLike,
    options?: StepOptions<SetOptions> & { readonly nx?: false; readonly xx?: false },
  ): Transaction<[...R, 'OK']>;
  set(value: BinaryLike, options?: StepOptions<SetOptions>): Transaction<[...R, 'OK' | null | Uint8Array]>;
  set(
    value: BinaryLike,
    options: StepOptions<SetOptions> = {},
  ): Transaction<[...R, 'OK' | null | Uint8Array]> {
    const bytes = valueBytes(value);
    if (options.ifVersion !== undefined) {
      return this.add(mapped(setVersionedCommand(this.target, bytes, options), () => 'OK' as const));
    }
    // A plain SET is a SET_WITH without options in a transaction (answered COUNT 1: 'OK').
    return this.add(setWithCommand(setWithStep(this.target, bytes, options)));
  }

  /** SET resolving the version the write gives the key (as `DstoreClient.setWithVersion`). */
  setWithVersion(value: BinaryLike, options: StepOptions<SetOptions> = {}): Transaction<[...R, number]> {
    return this.add(setVersionedCommand(this.target, valueBytes(value), options));
  }

  /**
   * DEL: whether the key was removed; with `ifVersion` only at that version (else a
   * `VersionConflictError` in the step's slot), as `DstoreClient.del`.
   */
  del(options: StepOptions<DelOptions> = {}): Transaction<[...R, boolean]> {
    return this.add(delVersionedCommand(this.target, options.ifVersion));
  }

  /** GETDEL: the value, removed by this step; null when there was none. */
  getdel(): Transaction<[...R, Uint8Array | null]> {
    return this.add(getDelCommand(this.target));
  }

  /** GETEX: the value, its expiry changed by this step (see `DstoreClient.getex`); no option: a GET. */
  getex(options: StepOptions<GetExOptions> = {}): Transaction<[...R, Uint8Array | null]> {
    const command = getExCommand(this.target, options);
    return command === undefined ? this.get() : this.add(command);
  }

  /** INCR: the new value (a NOT_AN_INTEGER `DstoreError` in the slot for a value that is no integer). */
  incr(): Transaction<[...R, number]> {
    return this.add(incrCommand(this.target, 1n));
  }

  /** DECR: the new value. */
  decr(): Transaction<[...R, number]> {
    return this.add(incrCommand(this.target, -1n));
  }

  /** INCRBY `increment` (a safe integer, or a bigint for the whole 64-bit range): the new value. */
  incrby(increment: number | bigint): Transaction<[...R, number]> {
    return this.add(incrCommand(this.target, int64Argument(increment, 'increment')));
  }

  /** DECRBY `decrement`: the new value. */
  decrby(decrement: number | bigint): Transaction<[...R, number]> {
    return this.add(incrCommand(this.target, -int64Argument(decrement, 'decrement')));
  }

  /** INCRBY resolving the exact 64-bit value as a bigint. */
  incrbyBig(increment: bigint): Transaction<[...R, bigint]> {
    return this.add(incrByCommand(this.target, int64Argument(increment, 'increment')));
  }

  /** INCRBYFLOAT: the new value's text, as `DstoreClient.incrbyfloat`. */
  incrbyfloat(increment: number | string): Transaction<[...R, string]> {
    return this.add(incrByFloatCommand(this.target, increment));
  }

  /** APPEND: the value's length after it (VALUE_TOO_LARGE in the slot past the value limit). */
  append(value: BinaryLike): Transaction<[...R, number]> {
    return this.add(setRangeCommand(this.target, undefined, value, 'APPEND'));
  }

  /** SETRANGE at byte `offset`: the value's length after it. */
  setrange(offset: number, value: BinaryLike): Transaction<[...R, number]> {
    return this.add(setRangeCommand(this.target, offset, value, 'SETRANGE'));
  }

  /** SETBIT: the bit's previous value. */
  setbit(offset: number, bit: 0 | 1): Transaction<[...R, 0 | 1]> {
    return this.add(setBitCommand(this.target, offset, bit));
  }

  /** STRLEN: the value's length in bytes (0 when the key does not exist). */
  strlen(): Transaction<[...R, number]> {
    return this.add(strlenCommand(this.target));
  }

  /** GETRANGE: the bytes from `start` to `end`, both included (negative from the end). */
  getrange(start: number, end: number): Transaction<[...R, Uint8Array]> {
    return this.add(getRangeCommand(this.target, start, end));
  }

  /** GETBIT: the bit at `offset`. */
  getbit(offset: number): Transaction<[...R, 0 | 1]> {
    return this.add(getBitCommand(this.target, offset));
  }

  /** BITCOUNT: the set bits of the value, or of `range`. */
  bitcount(range?: BitRange): Transaction<[...R, number]> {
    return this.add(bitCountCommand(this.target, range));
  }

  /** BITPOS: the first bit set to `bit`, in the value or in `range` (-1 when none, as Redis). */
  bitpos(bit: 0 | 1, range?: BitPosRange): Transaction<[...R, number]> {
    return this.add(bitPosCommand(this.target, bit, range));
  }

  /** EXPIRE after `seconds`: whether the key exists and the condition held. */
  expire(seconds: number, options: StepOptions<ExpireOptions> = {}): Transaction<[...R, boolean]> {
    return this.expiry('expire', seconds, options);
  }

  /** PEXPIRE after `ms`. */
  pexpire(ms: number, options: StepOptions<ExpireOptions> = {}): Transaction<[...R, boolean]> {
    return this.expiry('pexpire', ms, options);
  }

  /** EXPIREAT the Unix time `seconds`. */
  expireat(seconds: number, options: StepOptions<ExpireOptions> = {}): Transaction<[...R, boolean]> {
    return this.expiry('expireat', seconds, options);
  }

  /** PEXPIREAT the Unix time `ms`. */
  pexpireat(ms: number, options: StepOptions<ExpireOptions> = {}): Transaction<[...R, boolean]> {
    return this.expiry('pexpireat', ms, options);
  }

  /** PERSIST: whether the key had an expiry. */
  persist(): Transaction<[...R, boolean]> {
    return this.add(persistCommand(this.target));
  }

  /** TTL in seconds (rounded as Redis rounds them); -1 without expiry, -2 when the key does not exist. */
  ttl(): Transaction<[...R, number]> {
    return this.add(ttlCommand(this.target));
  }

  /** PTTL in ms; -1 without expiry, -2 when the key does not exist. */
  pttl(): Transaction<[...R, number]> {
    return this.add(pttlCommand(this.target));
  }

  /** EXPIRETIME: the Unix time in seconds at which the key expires; -1, -2 as TTL. */
  expiretime(): Transaction<[...R, number]> {
    return this.add(expireTimeCommand(this.target));
  }

  /** PEXPIRETIME: the Unix time in ms at which the key expires; -1, -2 as TTL. */
  pexpiretime(): Transaction<[...R, number]> {
    return this.add(pexpireTimeCommand(this.target));
  }

  /**
   * Runs the steps: resolves one result per step, in order (a step refused on its own holds its
   * `DstoreError`, see {@link TransactionResults}), or null when `ifVersion` did not hold (nothing
   * ran). Rejects only when the transaction as a whole failed, with the client's usual errors and
   * retry rules (not connected, TIMEOUT, routing, permissions, ...). With no steps it checks
   * `ifVersion` only. A builder runs once: a second `exec` fails with INVALID_ARGUMENT.
   */
  async exec(options: TransactionOptions = {}): Promise<TransactionResults<R> | null> {
    this.checkOpen();
    const { ifVersion, watch } = options;
    if (ifVersion !== undefined) versionArgument(ifVersion);
    if (watch !== undefined && watch.length > DEFAULT_LIMITS.maxBatchKeys) {
      throw invalidArgument(`a transaction watches at most ${DEFAULT_LIMITS.maxBatchKeys} keys`);
    }
    const watches = watch?.map((watched) => {
      versionArgument(watched.version);
      return { key: this.keyOf(watched.key), version: watched.version };
    });
    this.executed = true;
    const steps = this.commands.map((command) => command.request);
    const request: WithoutId<TransactRequest> =
      watches === undefined || watches.length === 0
        ? { op: Op.TRANSACT, key: this.key, steps, ifVersion }
        : { op: Op.TRANSACT, key: this.key, steps, ifVersion, watches };
    const response = await this.send(request, options);
    return this.results(response);
  }

  private expiry(
    form: ExpireForm,
    time: number,
    options: StepOptions<ExpireOptions>,
  ): Transaction<[...R, boolean]> {
    return this.add(expireCommand(this.target, form, time, options.condition));
  }

  /** Adds `command` as the next step; the same builder, typed with its result appended. */
  private add<T>(command: KeyCommand<T>): Transaction<[...R, T]> {
    this.checkOpen();
    if (this.commands.length >= DEFAULT_LIMITS.maxBatchKeys) {
      throw invalidArgument(`a transaction has at most ${DEFAULT_LIMITS.maxBatchKeys} steps`);
    }
    this.commands.push(command);
    // Only the static type changes: the results so far plus this step's.
    return this as unknown as Transaction<[...R, T]>;
  }

  private checkOpen(): void {
    if (this.executed) throw invalidArgument('this transaction was executed already; build a new one');
  }

  /** RESULTS as each step's result, or null; any other answer is the client's INTERNAL error. */
  private results(response: Response): TransactionResults<R> | null {
    if (response.op !== Op.RESULTS) throw unexpectedAnswer('TRANSACT', response);
    const { results } = response;
    if (results === null) return null;
    if (results.length !== this.commands.length) throw unexpectedAnswer('TRANSACT', response);
    return results.map((result, index) => stepResult(this.commands[index]!, result)) as TransactionResults<R>;
  }
}

/**
 * One step's result: its ERROR as the `DstoreError` the client raises for an ERROR answer, a
 * compare-and-set of the step that did not hold as its `VersionConflictError` (both refusals of
 * that step alone), else the answer converted as the client's command converts it.
 */
function stepResult(command: KeyCommand<unknown>, result: Response): unknown {
  if (result.op === Op.ERROR) return stepError(result);
  try {
    return command.answer(result);
  } catch (error) {
    if (error instanceof VersionConflictError) return error;
    throw error;
  }
}

/** An ERROR answer as a `DstoreError`, the way the connection turns a request's ERROR into one. */
function stepError(response: ErrorResponse): DstoreError {
  return new DstoreError(response.code, response.message);
}

function valueWithoutVersion(versioned: VersionedValue | null): Uint8Array | null {
  return versioned?.value ?? null;
}

function utf8OrNull(value: Uint8Array | null): string | null {
  return value === null ? null : bytesToString(value);
}
