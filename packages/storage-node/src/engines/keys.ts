import { StorageEngineError } from './errors.js';

/**
 * Largest key accepted by every engine, in bytes. This is LMDB's limit with its default
 * 4 KiB pages; the memory engine enforces it too so a key accepted by one engine is accepted
 * by all (keys migrate between nodes that may run different engines).
 */
export const MAX_KEY_BYTES = 1978;

/**
 * A key as a latin1 string: one char per byte, so the mapping is exact for arbitrary binary keys,
 * and V8 stores it as a compact one-byte string hashed natively by `Map`. The lmdb engine indexes
 * its queued writes by it (the memory engine hashes key bytes in its own index: `SlabArena`).
 */
export function keyToString(key: Uint8Array): string {
  const buffer = Buffer.isBuffer(key) ? key : Buffer.from(key.buffer, key.byteOffset, key.byteLength);
  return buffer.toString('latin1');
}

/** Throws a {@link StorageEngineError} unless `key` is storable by every engine. */
export function assertValidKey(key: Uint8Array): void {
  if (key.byteLength === 0) {
    throw new StorageEngineError('INVALID_KEY', 'empty keys are not allowed');
  }
  if (key.byteLength > MAX_KEY_BYTES) {
    throw new StorageEngineError(
      'KEY_TOO_LARGE',
      `key is ${key.byteLength} bytes, the maximum is ${MAX_KEY_BYTES}`,
    );
  }
}

/**
 * Throws a RangeError unless `value` (a writeEpoch or seq) is a uint32, the width every engine
 * stores; the memory engine's typed arrays would otherwise wrap it silently.
 */
export function assertUint32(value: number, name: string): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new RangeError(`${name} must be an integer in 0..2^32-1, got ${value}`);
  }
}

/**
 * True when ring position `position` lies in the half-open ring arc (start, end].
 * The arc wraps past the top of the ring when `start >= end`; `start === end` is the whole ring.
 */
export function inRingRange(position: number, start: number, end: number): boolean {
  return start < end ? position > start && position <= end : position > start || position <= end;
}

/** The `ENGINE_CLOSED` error; shared so both engines word it identically. */
export function closedError(kind: string): StorageEngineError {
  return new StorageEngineError('ENGINE_CLOSED', `${kind} engine is closed`);
}

/** Throws `ENGINE_CLOSED` when `closed` is set. */
export function assertOpen(closed: boolean, kind: string): void {
  if (closed) throw closedError(kind);
}

/** Largest cursor a storage engine's `scan` returns (30 bits: it travels inside a cluster cursor). */
export const MAX_SCAN_CURSOR = 2 ** 30 - 1;
