import {
  type BinaryLike,
  bytesToString,
  DEFAULT_LIMITS,
  DstoreError,
  ErrorCode,
  Op,
  type ReadPartRequest,
  type Request,
  type Response,
  type SetExpiry,
  type SetWithRequest,
  type TransactStep,
  toBytes,
  type WithoutId,
} from '@dstore/protocol';
import type {
  BitPosRange,
  BitRange,
  CommandOptions,
  GetExOptions,
  SetOptions,
  VersionedValue,
} from './client.js';
import { invalidArgument, VersionConflictError } from './errors.js';
import { checkOptionNames } from './options.js';

/**
 * The client's single-key commands: for each, the argument checks, the request it sends and the
 * conversion of its answer into what the method resolves. One implementation shared by the
 * methods of `DstoreClient` and the steps of a `Transaction`, which sends the same requests as
 * TRANSACT steps and converts each step's answer the same way.
 */

/** The options every command takes ({@link CommandOptions}). */
const COMMAND_OPTION_NAMES = ['timeout', 'signal'];

/**
 * The option names of the commands that take more than {@link CommandOptions}: any other name is
 * refused (INVALID_ARGUMENT) instead of being ignored.
 */
export const OPTION_NAMES = {
  set: new Set([
    ...COMMAND_OPTION_NAMES,
    'ex',
    'px',
    'exat',
    'pxat',
    'keepTtl',
    'nx',
    'xx',
    'get',
    'ifVersion',
  ]),
  getex: new Set([...COMMAND_OPTION_NAMES, 'ex', 'px', 'exat', 'pxat', 'persist']),
  expire: new Set([...COMMAND_OPTION_NAMES, 'condition']),
  del: new Set([...COMMAND_OPTION_NAMES, 'ifVersion']),
  scan: new Set([...COMMAND_OPTION_NAMES, 'match', 'count']),
  rename: new Set([...COMMAND_OPTION_NAMES, 'nx']),
  copy: new Set([...COMMAND_OPTION_NAMES, 'replace']),
} as const;

/** Other spellings of an expiry users bring from other clients. */
const EXPIRY_SPELLINGS: ReadonlyMap<string, string> = new Map([
  ['expire', 'ex (seconds) or px (milliseconds)'],
  ['expires', 'ex (seconds) or px (milliseconds)'],
  ['ttl', 'ex (seconds) or px (milliseconds)'],
  ['keepttl', 'keepTtl'],
]);

const EXPIRE_CONDITIONS: ReadonlySet<unknown> = new Set(['nx', 'xx', 'gt', 'lt']);

/** A command on one key: the request to send, and how its answer becomes the command's result. */
export interface KeyCommand<T, M extends WithoutId<Request> = TransactStep> {
  readonly request: M;
  /**
   * The result the answer stands for. Throws INTERNAL for an answer the request cannot have, and
   * {@link VersionConflictError} for a compare-and-set whose version did not hold.
   */
  readonly answer: (response: Response) => T;
}

/** `command` with its result passed through `convert` (a ttl is a pttl in seconds). */
export function mapped<T, U>(command: KeyCommand<T>, convert: (result: T) => U): KeyCommand<U> {
  return { request: command.request, answer: (response) => convert(command.answer(response)) };
}

// --- Answers -------------------------------------------------------------------------------------

/** A VALUE answer: the caller's own copy of the value, or null. */
export function valueAnswer(response: Response, command: string): Uint8Array | null {
  if (response.op !== Op.VALUE) throw unexpectedAnswer(command, response);
  return response.value === null ? null : copyBytes(response.value);
}

/** A VERSIONED answer: the value (a copy) with its version, or null when the key does not exist. */
export function versionedAnswer(response: Response, command: string): VersionedValue | null {
  if (response.op !== Op.VERSIONED) throw unexpectedAnswer(command, response);
  return response.value === null ? null : { value: copyBytes(response.value), version: response.version };
}

/** An INTEGER answer. */
function integerAnswer(response: Response, command: string): bigint {
  if (response.op !== Op.INTEGER) throw unexpectedAnswer(command, response);
  return response.value;
}

/** A COUNT answer as "did it do something" (a conditional write, an expiry change). */
function countAnswer(response: Response, command: string): boolean {
  if (response.op !== Op.COUNT) throw unexpectedAnswer(command, response);
  return response.count > 0;
}

/** A versioned write's VERSION answer: the new version, or the conflict when `ifVersion` did not hold. */
function writtenVersionAnswer(response: Response, ifVersion: number | undefined): number {
  if (response.op !== Op.VERSION) throw unexpectedAnswer('SET', response);
  if (!response.written) throw new VersionConflictError(ifVersion ?? 0, response.version);
  return response.version;
}

/**
 * DEL_VERSIONED's VERSION answer: true when it deleted; false when there was nothing to delete
 * (no `ifVersion`, or `ifVersion` 0 of an absent key); a conflict when the key is at another version.
 */
function deletedAnswer(response: Response, ifVersion: number | undefined): boolean {
  if (response.op !== Op.VERSION) throw unexpectedAnswer('DEL', response);
  if (response.written) return true;
  if (ifVersion === undefined || response.version === ifVersion) return false;
  throw new VersionConflictError(ifVersion, response.version);
}

// --- Commands ------------------------------------------------------------------------------------

/** GET_VERSIONED (getWithVersion): the value with its version. */
export function getVersionedCommand(key: Uint8Array): KeyCommand<VersionedValue | null> {
  return { request: { op: Op.GET_VERSIONED, key }, answer: (response) => versionedAnswer(response, 'GET') };
}

/** GETDEL: the value, removed in the same step. */
export function getDelCommand(key: Uint8Array): KeyCommand<Uint8Array | null> {
  return { request: { op: Op.GETDEL, key }, answer: (response) => valueAnswer(response, 'GETDEL') };
}

/** GETEX with an expiry change, or undefined when `options` set none (then it is a plain GET). */
export function getExCommand(
  key: Uint8Array,
  options: GetExOptions,
): KeyCommand<Uint8Array | null> | undefined {
  const expiry = getExExpiry(options);
  if (expiry === undefined) return undefined;
  return {
    request: { op: Op.EXPIRE, key, ...expiry, get: true },
    answer: (response) => valueAnswer(response, 'GETEX'),
  };
}

/**
 * SET with options (a SET_WITH): 'OK' when it wrote, null when NX/XX did not hold, or with `get`
 * the value before it.
 */
export function setWithCommand(request: WithoutId<SetWithRequest>): KeyCommand<'OK' | null | Uint8Array> {
  return {
    request,
    answer:
      request.get === true
        ? (response) => valueAnswer(response, 'SET')
        : (response) => (countAnswer(response, 'SET') ? 'OK' : null),
  };
}

/**
 * A SET whose answer is the version it wrote (setWithVersion, and set with `ifVersion`): the
 * expiry options as for a SET_WITH, compare-and-set with `ifVersion`; not with nx, xx, get.
 */
export function setVersionedCommand(
  key: Uint8Array,
  value: Uint8Array,
  options: SetOptions,
): KeyCommand<number> {
  const { ifVersion } = options;
  if (options.nx === true || options.xx === true || options.get === true) {
    throw invalidArgument('set: ifVersion and a version answer exclude nx, xx and get');
  }
  if (ifVersion !== undefined) versionArgument(ifVersion);
  const request: WithoutId<SetWithRequest> = {
    ...setWithStep(key, value, options),
    withVersion: true,
    ifVersion,
  };
  return { request, answer: (response) => writtenVersionAnswer(response, ifVersion) };
}

/** DEL_VERSIONED: delete (at `ifVersion` when given); whether it deleted. */
export function delVersionedCommand(key: Uint8Array, ifVersion: number | undefined): KeyCommand<boolean> {
  if (ifVersion !== undefined) versionArgument(ifVersion);
  return {
    request: { op: Op.DEL_VERSIONED, key, ifVersion },
    answer: (response) => deletedAnswer(response, ifVersion),
  };
}

/** INCRBY resolving the exact 64-bit value (`delta` already checked by {@link int64Argument}). */
export function incrByCommand(key: Uint8Array, delta: bigint): KeyCommand<bigint> {
  return { request: { op: Op.INCRBY, key, delta }, answer: (response) => integerAnswer(response, 'INCRBY') };
}

/** INCR and its kin: the new value as a number (exact within ±2^53, as ioredis resolves it). */
export function incrCommand(key: Uint8Array, delta: bigint): KeyCommand<number> {
  return mapped(incrByCommand(key, delta), Number);
}

/** INCRBYFLOAT: the new value's text. */
export function incrByFloatCommand(key: Uint8Array, increment: number | string): KeyCommand<string> {
  if (typeof increment === 'number' && !Number.isFinite(increment)) {
    throw invalidArgument(`increment must be a finite number, got ${increment}`);
  }
  return {
    request: { op: Op.INCRBYFLOAT, key, increment: toBytes(String(increment)) },
    answer: (response) => {
      if (response.op !== Op.VALUE || response.value === null)
        throw unexpectedAnswer('INCRBYFLOAT', response);
      return bytesToString(response.value);
    },
  };
}

/** SETRANGE at `offset`, or APPEND without one: the value's length after it. */
export function setRangeCommand(
  key: Uint8Array,
  offset: number | undefined,
  value: BinaryLike,
  command: 'SETRANGE' | 'APPEND',
): KeyCommand<number> {
  if (offset !== undefined && (!Number.isSafeInteger(offset) || offset < 0 || offset > 0xffff_ffff)) {
    throw invalidArgument(`offset must be an integer in 0..2^32-1, got ${offset}`);
  }
  const request = { op: Op.SETRANGE, key, value: valueBytes(value) } as const;
  return {
    request: offset === undefined ? request : { ...request, offset },
    answer: (response) => Number(integerAnswer(response, command)),
  };
}

/** SETBIT: the bit's previous value. */
export function setBitCommand(key: Uint8Array, offset: number, bit: 0 | 1): KeyCommand<0 | 1> {
  return {
    request: { op: Op.SETBIT, key, offset: bitOffset(offset), bit: bitArgument(bit) },
    answer: (response) => (integerAnswer(response, 'SETBIT') === 0n ? 0 : 1),
  };
}

/** STRLEN: the value's length in bytes (0 when the key does not exist), measured on its owner. */
export function strlenCommand(key: Uint8Array): KeyCommand<number> {
  return {
    request: { op: Op.READ_PART, key, part: 'strlen' },
    answer: (response) => Number(integerAnswer(response, 'STRLEN')),
  };
}

/** GETRANGE: the bytes from `start` to `end`, both included (negative from the end), cut on the owner. */
export function getRangeCommand(key: Uint8Array, start: number, end: number): KeyCommand<Uint8Array> {
  return {
    request: {
      op: Op.READ_PART,
      key,
      part: 'getrange',
      start: safeInteger(start, 'start'),
      end: safeInteger(end, 'end'),
    },
    answer: (response) => valueAnswer(response, 'GETRANGE') ?? new Uint8Array(0),
  };
}

/** GETBIT: the bit at `offset` (0 past the value's end or when the key does not exist), read on the owner. */
export function getBitCommand(key: Uint8Array, offset: number): KeyCommand<0 | 1> {
  return {
    request: { op: Op.READ_PART, key, part: 'getbit', start: bitOffset(offset) },
    answer: (response) => (integerAnswer(response, 'GETBIT') === 0n ? 0 : 1),
  };
}

/** BITCOUNT: the set bits of the value or of a range of it, counted on the owner. */
export function bitCountCommand(key: Uint8Array, range?: BitRange): KeyCommand<number> {
  return {
    request: { op: Op.READ_PART, key, part: 'bitcount', ...(range === undefined ? {} : bitRange(range)) },
    answer: (response) => Number(integerAnswer(response, 'BITCOUNT')),
  };
}

/** BITPOS: the first bit set to `bit` in the value or a range of it, found on the owner. */
export function bitPosCommand(key: Uint8Array, bit: 0 | 1, range?: BitPosRange): KeyCommand<number> {
  return {
    request: {
      op: Op.READ_PART,
      key,
      part: 'bitpos',
      bit: bitArgument(bit),
      ...(range === undefined ? {} : bitRange(range)),
    },
    answer: (response) => Number(integerAnswer(response, 'BITPOS')),
  };
}

/** A BITCOUNT or BITPOS range, checked. */
function bitRange(range: BitPosRange): Pick<ReadPartRequest, 'start' | 'end' | 'unit'> {
  const unit = range.unit ?? 'byte';
  if (unit !== 'byte' && unit !== 'bit') throw invalidArgument(`unit must be 'byte' or 'bit', got ${unit}`);
  return {
    start: safeInteger(range.start, 'start'),
    ...(range.end === undefined ? {} : { end: safeInteger(range.end, 'end') }),
    ...(unit === 'bit' ? { unit } : {}),
  };
}

/** How EXPIRE and its kin read their time: seconds or ms, from now or a Unix time. */
export type ExpireForm = 'expire' | 'pexpire' | 'expireat' | 'pexpireat';

/** EXPIRE, PEXPIRE, EXPIREAT or PEXPIREAT: whether the key exists and the condition held. */
export function expireCommand(
  key: Uint8Array,
  form: ExpireForm,
  time: number,
  condition: 'nx' | 'xx' | 'gt' | 'lt' | undefined,
): KeyCommand<boolean> {
  const inSecondsForm = form === 'expire' || form === 'expireat';
  const ms = inSecondsForm ? secondsToMs(time, 'seconds') : safeInteger(time, 'ms');
  const mode = form === 'expire' || form === 'pexpire' ? 'in' : 'at';
  return expiryChange(key, mode, ms, condition);
}

/** PERSIST: whether the key had an expiry. */
export function persistCommand(key: Uint8Array): KeyCommand<boolean> {
  return expiryChange(key, 'persist', 0, undefined);
}

function expiryChange(
  key: Uint8Array,
  mode: 'in' | 'at' | 'persist',
  ms: number,
  condition: 'nx' | 'xx' | 'gt' | 'lt' | undefined,
): KeyCommand<boolean> {
  if (condition !== undefined && !EXPIRE_CONDITIONS.has(condition)) {
    throw invalidArgument(`expire: condition must be 'nx', 'xx', 'gt' or 'lt', got ${String(condition)}`);
  }
  return {
    request: { op: Op.EXPIRE, key, mode, ms, condition },
    answer: (response) => countAnswer(response, 'EXPIRE'),
  };
}

/** PTTL: ms until the key expires; -1 without expiry, -2 when it does not exist. */
export function pttlCommand(key: Uint8Array): KeyCommand<number> {
  return { request: { op: Op.TTL, key }, answer: (response) => Number(integerAnswer(response, 'PTTL')) };
}

/** TTL: {@link pttlCommand} in seconds, rounded as Redis rounds them. */
export function ttlCommand(key: Uint8Array): KeyCommand<number> {
  return mapped(pttlCommand(key), inSeconds);
}

/** PEXPIRETIME: the Unix time in ms at which the key expires; -1 without expiry, -2 when it does not exist. */
export function pexpireTimeCommand(key: Uint8Array): KeyCommand<number> {
  return {
    request: { op: Op.PEXPIRETIME, key },
    answer: (response) => Number(integerAnswer(response, 'PEXPIRETIME')),
  };
}

/** EXPIRETIME: {@link pexpireTimeCommand} in seconds, rounded as Redis rounds them. */
export function expireTimeCommand(key: Uint8Array): KeyCommand<number> {
  return mapped(pexpireTimeCommand(key), inSeconds);
}

// --- Arguments -----------------------------------------------------------------------------------

/** Refuses an `ifVersion` that is no version (an integer in 0..2^53-1). */
export function versionArgument(version: number): void {
  if (!Number.isSafeInteger(version) || version < 0) {
    throw invalidArgument(`ifVersion must be an integer in 0..2^53-1, got ${version}`);
  }
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** The SET_WITH request for `options`, or undefined when none of them is set (a plain SET). */
export function setWithRequest(
  key: Uint8Array,
  value: Uint8Array,
  options: SetOptions,
): WithoutId<SetWithRequest> | undefined {
  checkOptionNames(options, OPTION_NAMES.set, 'set', EXPIRY_SPELLINGS);
  const { ex, px, exat, pxat, keepTtl, nx, xx, get } = options;
  const expiries = [ex, px, exat, pxat].filter((time) => time !== undefined).length + (keepTtl ? 1 : 0);
  if (expiries > 1) throw invalidArgument('set: at most one of ex, px, exat, pxat and keepTtl');
  if (nx === true && xx === true) throw invalidArgument('set: nx and xx are exclusive');
  let expiry: SetExpiry | undefined;
  if (keepTtl === true) expiry = { kind: 'keep' };
  else if (ex !== undefined) expiry = { kind: 'in', ms: positiveMs(secondsToMs(ex, 'ex'), 'ex') };
  else if (px !== undefined) expiry = { kind: 'in', ms: positiveMs(safeInteger(px, 'px'), 'px') };
  else if (exat !== undefined) expiry = { kind: 'at', ms: positiveMs(secondsToMs(exat, 'exat'), 'exat') };
  else if (pxat !== undefined) expiry = { kind: 'at', ms: positiveMs(safeInteger(pxat, 'pxat'), 'pxat') };
  const condition = nx === true ? 'nx' : xx === true ? 'xx' : undefined;
  if (expiry === undefined && condition === undefined && get !== true) return undefined;
  return { op: Op.SET_WITH, key, value, condition, get: get === true ? true : undefined, expiry };
}

/** The SET_WITH request for `options`, a plain write (SET_WITH without options) when none is set. */
export function setWithStep(
  key: Uint8Array,
  value: Uint8Array,
  options: SetOptions,
): WithoutId<SetWithRequest> {
  return setWithRequest(key, value, options) ?? { op: Op.SET_WITH, key, value };
}

/** GETEX's native EXPIRE mode and time for `options`, or undefined when none is set (a GET). */
function getExExpiry(options: GetExOptions): { mode: 'in' | 'at' | 'persist'; ms: number } | undefined {
  checkOptionNames(options, OPTION_NAMES.getex, 'getex', EXPIRY_SPELLINGS);
  const { ex, px, exat, pxat, persist } = options;
  const set = [ex, px, exat, pxat].filter((time) => time !== undefined).length + (persist === true ? 1 : 0);
  if (set > 1) throw invalidArgument('getex: at most one of ex, px, exat, pxat and persist');
  if (persist === true) return { mode: 'persist', ms: 0 };
  if (ex !== undefined) return { mode: 'in', ms: positiveMs(secondsToMs(ex, 'ex'), 'ex', 'getex') };
  if (px !== undefined) return { mode: 'in', ms: positiveMs(safeInteger(px, 'px'), 'px', 'getex') };
  if (exat !== undefined) return { mode: 'at', ms: positiveMs(secondsToMs(exat, 'exat'), 'exat', 'getex') };
  if (pxat !== undefined) return { mode: 'at', ms: positiveMs(safeInteger(pxat, 'pxat'), 'pxat', 'getex') };
  return undefined;
}

/** TTL's or EXPIRETIME's milliseconds in seconds, rounded to the nearest as Redis does; -1 and -2 kept. */
function inSeconds(ms: number): number {
  return ms < 0 ? ms : Math.floor((ms + 500) / 1000);
}

export function safeInteger(value: number, name: string): number {
  if (!Number.isSafeInteger(value)) throw invalidArgument(`${name} must be an integer, got ${value}`);
  return value;
}

function secondsToMs(seconds: number, name: string): number {
  return safeInteger(safeInteger(seconds, name) * 1000, name);
}

function positiveMs(ms: number, name: string, command = 'set'): number {
  if (ms <= 0) throw invalidArgument(`invalid expire time in '${command}' command (${name})`);
  return ms;
}

/** The largest bit offset (Redis's: 2^32 bits less one). */
const MAX_BIT_OFFSET = 2 ** 32 - 1;

export function bitOffset(offset: number): number {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset > MAX_BIT_OFFSET) {
    throw invalidArgument(`bit offset must be an integer in 0..2^32-1, got ${offset}`);
  }
  return offset;
}

export function bitArgument(bit: number): 0 | 1 {
  if (bit !== 0 && bit !== 1) throw invalidArgument(`bit must be 0 or 1, got ${bit}`);
  return bit;
}

export function int64Argument(value: number | bigint, name: string): bigint {
  const big = typeof value === 'bigint' ? value : BigInt(safeInteger(value, name));
  if (big < INT64_MIN || big > INT64_MAX) throw invalidArgument(`${name} is out of the 64-bit signed range`);
  return big;
}

export function inputBytes(input: BinaryLike, what: string): Uint8Array {
  if (typeof input === 'string' || input instanceof Uint8Array) return toBytes(input);
  throw invalidArgument(`${what} must be a string or Uint8Array, got ${typeof input}`);
}

export function valueBytes(value: BinaryLike): Uint8Array {
  const bytes = inputBytes(value, 'value');
  if (bytes.length > DEFAULT_LIMITS.maxValueBytes) {
    throw new DstoreError(
      ErrorCode.VALUE_TOO_LARGE,
      `value is ${bytes.length} bytes, limit ${DEFAULT_LIMITS.maxValueBytes}`,
    );
  }
  return bytes;
}

/**
 * Values arrive as views into the socket's receive chunk; handing the caller a copy keeps a small
 * value from pinning a whole chunk in memory and makes the bytes safely theirs.
 */
export function copyBytes(view: Uint8Array): Uint8Array {
  return new Uint8Array(view);
}

export function unexpectedAnswer(command: string, response: Response): DstoreError {
  return new DstoreError(ErrorCode.INTERNAL, `unexpected answer (op ${response.op}) to ${command}`);
}
