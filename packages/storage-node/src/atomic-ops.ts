import { DstoreError, ErrorCode, type ExpireRequest, type SetWithRequest } from '@dstore/protocol';
import type { Decision, VersionedValue } from './engines/index.js';
import { addLongDouble, formatLongDouble, type LongDouble, parseLongDouble } from './long-double.js';

/**
 * The decisions of the data model's read-modify-write operations: pure functions of the key's live
 * entry (or undefined) and the engine's clock, run by `StorageEngine.update` in one atomic step on
 * the key's owner. Redis's semantics, and its error texts where it has them.
 */

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
/** Longest decimal text of a 64-bit signed integer ("-9223372036854775808"). */
const MAX_INT64_DIGITS = 20;
const NONE: Decision<never>['mutation'] = { kind: 'none' };

/** The answer of a SET_WITH: whether it wrote, and (asked with GET) the value before it. */
export interface SetWithResult {
  readonly written: boolean;
  readonly previous: Uint8Array | null;
}

/** SET with NX/XX/GET/EX/PX/EXAT/PXAT/KEEPTTL (see `SetWithRequest`). */
export function decideSetWith(
  request: Omit<SetWithRequest, 'id' | 'epoch'>,
  current: VersionedValue | undefined,
  now: number,
): Decision<SetWithResult> {
  const previous = current?.value ?? null;
  const condition = request.condition;
  if ((condition === 'nx' && current !== undefined) || (condition === 'xx' && current === undefined)) {
    return { mutation: NONE, result: { written: false, previous } };
  }
  const expiry = request.expiry;
  let expireAt = 0;
  if (expiry?.kind === 'keep') expireAt = current?.expireAt ?? 0;
  else if (expiry?.kind === 'in') expireAt = now + expiry.ms;
  else if (expiry?.kind === 'at') expireAt = expiry.ms;
  // Copied: the request's value is a view of a network buffer, and lmdb writes later.
  const value = Uint8Array.from(request.value);
  // An absolute time already past stores nothing and removes the key (Redis does the same).
  const mutation =
    expireAt !== 0 && expireAt <= now
      ? ({ kind: 'delete' } as const)
      : ({ kind: 'put', value, expireAt } as const);
  return { mutation, result: { written: true, previous } };
}

/** The answer of a write that reports versions: whether it wrote, and the key's version after it. */
export interface VersionResult {
  readonly written: boolean;
  /** The new version when written, else the current one (0: the key does not exist). */
  readonly version: number;
}

/** Whether the key's version is `ifVersion` (0 stands for "does not exist"); true when there is no condition. */
function versionHolds(ifVersion: number | undefined, current: VersionedValue | undefined): boolean {
  return ifVersion === undefined || (current?.version ?? 0) === ifVersion;
}

/**
 * SET_WITH with `ifVersion` (compare-and-set) or `withVersion`: the expiry options as
 * {@link decideSetWith}, the write only when the key is at `ifVersion`; `version` is the one the
 * write takes (see `StorageEngine.update`).
 */
export function decideSetVersioned(
  request: Omit<SetWithRequest, 'id' | 'epoch'>,
  current: VersionedValue | undefined,
  now: number,
  version: number,
): Decision<VersionResult> {
  if (!versionHolds(request.ifVersion, current)) {
    return { mutation: NONE, result: { written: false, version: current?.version ?? 0 } };
  }
  return { mutation: decideSetWith(request, current, now).mutation, result: { written: true, version } };
}

/**
 * DEL_VERSIONED: deletes a live value when it is at `ifVersion` (or unconditionally without one);
 * written with the delete's `version`, otherwise the current version (0: none).
 */
export function decideDelVersioned(
  ifVersion: number | undefined,
  current: VersionedValue | undefined,
  version: number,
): Decision<VersionResult> {
  if (current === undefined || !versionHolds(ifVersion, current)) {
    return { mutation: NONE, result: { written: false, version: current?.version ?? 0 } };
  }
  return { mutation: { kind: 'delete' }, result: { written: true, version } };
}

/** EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT/PERSIST with NX/XX/GT/LT; the result is whether it changed anything. */
export function decideExpire(
  request: Omit<ExpireRequest, 'id' | 'epoch'>,
  current: VersionedValue | undefined,
  now: number,
): Decision<boolean> {
  if (current === undefined) return { mutation: NONE, result: false };
  const had = current.expireAt;
  if (request.mode === 'persist') {
    return had === 0
      ? { mutation: NONE, result: false }
      : { mutation: { kind: 'expire', expireAt: 0 }, result: true };
  }
  const expireAt = request.mode === 'in' ? now + request.ms : request.ms;
  if (!conditionHolds(request.condition, had, expireAt)) return { mutation: NONE, result: false };
  // A time already past deletes the key (as Redis); 0 (the Unix epoch itself) is past too.
  if (expireAt <= now) return { mutation: { kind: 'delete' }, result: true };
  return { mutation: { kind: 'expire', expireAt }, result: true };
}

/**
 * GETEX: {@link decideExpire}'s change, answering the key's value as read in the same step (null
 * when the key is absent). A time already past deletes the key and answers the value it had, as
 * Redis does.
 */
export function decideGetEx(
  request: Omit<ExpireRequest, 'id' | 'epoch'>,
  current: VersionedValue | undefined,
  now: number,
): Decision<Uint8Array | null> {
  return { mutation: decideExpire(request, current, now).mutation, result: current?.value ?? null };
}

/** NX: no expiry yet; XX: has one; GT/LT: later/earlier than the current one (none = infinite, as Redis); XX LT both. */
function conditionHolds(condition: ExpireRequest['condition'], had: number, next: number): boolean {
  switch (condition) {
    case undefined:
      return true;
    case 'nx':
      return had === 0;
    case 'xx':
      return had !== 0;
    case 'gt':
      return had !== 0 && next > had;
    case 'lt':
      return had === 0 || next < had;
    case 'xx-lt':
      return had !== 0 && next < had;
  }
}

/** GETDEL: the value (null when none) and its removal. */
export function decideGetDel(current: VersionedValue | undefined): Decision<Uint8Array | null> {
  return current === undefined
    ? { mutation: NONE, result: null }
    : { mutation: { kind: 'delete' }, result: current.value };
}

/** INCRBY: the new value, or the typed error (nothing written). Keeps the key's expiry, as Redis. */
export function decideIncrBy(
  delta: bigint,
  current: VersionedValue | undefined,
): Decision<bigint | DstoreError> {
  const base = current === undefined ? 0n : parseInt64(current.value);
  if (base === undefined) {
    return {
      mutation: NONE,
      result: new DstoreError(ErrorCode.NOT_AN_INTEGER, 'value is not an integer or out of range'),
    };
  }
  const next = base + delta;
  if (next < INT64_MIN || next > INT64_MAX) {
    return {
      mutation: NONE,
      result: new DstoreError(ErrorCode.OVERFLOW, 'increment or decrement would overflow'),
    };
  }
  const value = Buffer.from(next.toString(), 'latin1');
  return { mutation: { kind: 'put', value, expireAt: current?.expireAt ?? 0 }, result: next };
}

/**
 * INCRBYFLOAT: the new value's text, or the typed error (nothing written). Redis's arithmetic and
 * text exactly (`long-double.ts`): a missing key counts as 0, the value and the increment must
 * both read as long doubles (NOT_A_FLOAT), an infinite result is refused (OVERFLOW). Keeps the
 * key's expiry, as Redis.
 */
export function decideIncrByFloat(
  increment: Uint8Array,
  current: VersionedValue | undefined,
): Decision<Uint8Array | DstoreError> {
  const base = current === undefined ? ZERO_LONG_DOUBLE : parseLongDouble(current.value);
  const step = parseLongDouble(increment);
  if (base === undefined || step === undefined) {
    return { mutation: NONE, result: new DstoreError(ErrorCode.NOT_A_FLOAT, 'value is not a valid float') };
  }
  const sum = base === 'infinity' || step === 'infinity' ? undefined : addLongDouble(base, step);
  if (sum === undefined) {
    return {
      mutation: NONE,
      result: new DstoreError(ErrorCode.OVERFLOW, 'increment would produce NaN or Infinity'),
    };
  }
  const value = Buffer.from(formatLongDouble(sum), 'latin1');
  return { mutation: { kind: 'put', value, expireAt: current?.expireAt ?? 0 }, result: value };
}

const ZERO_LONG_DOUBLE: LongDouble = { significand: 0n, exponent: 0 };

/** The refusal of a SETRANGE, APPEND or SETBIT whose value would pass the limit (Redis's words). */
function valueTooLarge(maxValueBytes: number): DstoreError {
  return new DstoreError(
    ErrorCode.VALUE_TOO_LARGE,
    `string exceeds maximum allowed size (the value limit, ${maxValueBytes} bytes)`,
  );
}

/**
 * SETRANGE (`offset` given) and APPEND (`offset` undefined): the value's length after it, or
 * VALUE_TOO_LARGE (nothing written) when it would pass `maxValueBytes`. Keeps the key's expiry. As
 * Redis: a SETRANGE of an empty `value` writes nothing (not even the padding) and answers the
 * current length; an APPEND to a missing key creates it, even empty.
 */
export function decideSetRange(
  value: Uint8Array,
  offset: number | undefined,
  maxValueBytes: number,
  current: VersionedValue | undefined,
): Decision<number | DstoreError> {
  const before = current?.value;
  const length = before?.length ?? 0;
  if (value.length === 0 && (offset !== undefined || current !== undefined)) {
    return { mutation: NONE, result: length };
  }
  const at = offset ?? length;
  if (at + value.length > maxValueBytes) {
    return { mutation: NONE, result: valueTooLarge(maxValueBytes) };
  }
  // Zero-filled: the bytes between the old end and `offset` are the padding Redis writes.
  const next = new Uint8Array(Math.max(length, at + value.length));
  if (before !== undefined) next.set(before);
  next.set(value, at);
  return { mutation: { kind: 'put', value: next, expireAt: current?.expireAt ?? 0 }, result: next.length };
}

/**
 * SETBIT: the bit's previous value, or VALUE_TOO_LARGE (nothing written) when the value would pass
 * `maxValueBytes`. Bit 0 is the high bit of byte 0; a shorter value (or a missing key) is padded
 * with zero bytes, as Redis does, even when the bit written is 0. Keeps the key's expiry.
 */
export function decideSetBit(
  offset: number,
  bit: 0 | 1,
  maxValueBytes: number,
  current: VersionedValue | undefined,
): Decision<0 | 1 | DstoreError> {
  const byte = Math.floor(offset / 8);
  if (byte + 1 > maxValueBytes) {
    return { mutation: NONE, result: valueTooLarge(maxValueBytes) };
  }
  const before = current?.value;
  const next = new Uint8Array(Math.max(before?.length ?? 0, byte + 1));
  if (before !== undefined) next.set(before);
  const mask = 0x80 >> (offset % 8);
  const previous = (next[byte]! & mask) === 0 ? 0 : 1;
  next[byte] = bit === 1 ? next[byte]! | mask : next[byte]! & ~mask;
  return { mutation: { kind: 'put', value: next, expireAt: current?.expireAt ?? 0 }, result: previous };
}

/**
 * The value as Redis reads an integer (`string2ll`): optional minus, decimal digits, no leading
 * zero, no sign on 0, no spaces, within the 64-bit signed range; undefined otherwise. Small
 * values are read as numbers; BigInt only for the digits that may not fit one exactly.
 */
export function parseInt64(bytes: Uint8Array): bigint | undefined {
  const length = bytes.length;
  if (length === 0 || length > MAX_INT64_DIGITS) return undefined;
  const negative = bytes[0] === 0x2d;
  const start = negative ? 1 : 0;
  if (start === length) return undefined;
  if (bytes[start] === 0x30 && (length - start > 1 || negative)) return undefined;
  let small = 0;
  for (let i = start; i < length; i++) {
    const digit = bytes[i]! - 0x30;
    if (digit < 0 || digit > 9) return undefined;
    small = small * 10 + digit;
  }
  // 15 digits are always exact as a number; longer ones are parsed again exactly.
  if (length - start <= 15) return BigInt(negative ? -small : small);
  const exact = BigInt(Buffer.from(bytes.buffer, bytes.byteOffset, length).toString('latin1'));
  return exact < INT64_MIN || exact > INT64_MAX ? undefined : exact;
}
