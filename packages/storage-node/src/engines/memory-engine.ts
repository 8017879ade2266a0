import type { StorageEngine } from './engine.js';
import { assertOpen, assertValidKey, closedError, inRingRange } from './keys.js';
import { SlabArena } from './slab-arena.js';

/** Counters describing a {@link MemoryEngine}'s footprint. */
export interface MemoryEngineStats {
  /** Number of keys. */
  readonly keys: number;
  /** Sum of key lengths. */
  readonly keyBytes: number;
  /** Sum of value lengths. */
  readonly valueBytes: number;
  /** Bytes of buffers held for values and their metadata (excludes the key index, which lives on the V8 heap). */
  readonly arenaReservedBytes: number;
}

const RESOLVED: Promise<void> = Promise.resolve();

/**
 * Keys are indexed as latin1 strings: one char per byte, so the mapping is exact for arbitrary
 * binary keys, and V8 stores them as compact one-byte strings hashed natively by `Map`.
 */
function keyToString(key: Uint8Array): string {
  const buffer = Buffer.isBuffer(key) ? key : Buffer.from(key.buffer, key.byteOffset, key.byteLength);
  return buffer.toString('latin1');
}

function stringToKey(key: string): Uint8Array {
  return Buffer.from(key, 'latin1');
}

/**
 * Non-durable engine keeping everything in process memory: for tests, demos and caches.
 *
 * Writes are applied synchronously when `set`/`delete` is called (a following `get` sees them
 * even before the returned promise settles) and are acknowledged immediately. Nothing survives
 * the process.
 *
 * Values returned by {@link MemoryEngine.get} are views into shared slab memory: they are valid
 * until the next `set`/`delete` on this engine (the slot may be reused). Use them synchronously
 * (e.g. encode into a response frame in the same tick) or copy them.
 */
export class MemoryEngine implements StorageEngine {
  /** Engine discriminator. */
  readonly kind = 'memory' as const;
  private readonly index = new Map<string, number>();
  private readonly arena = new SlabArena();
  private keyBytes = 0;
  private closed = false;

  /** The value stored under `key` as a short-lived view, or undefined. */
  get(key: Uint8Array): Uint8Array | undefined {
    assertOpen(this.closed, this.kind);
    const handle = this.index.get(keyToString(key));
    return handle === undefined ? undefined : this.arena.read(handle);
  }

  /** Whether `key` is stored. */
  has(key: Uint8Array): boolean {
    assertOpen(this.closed, this.kind);
    return this.index.has(keyToString(key));
  }

  /** Stores a copy of `value`; applied before returning, acknowledged immediately. */
  set(key: Uint8Array, value: Uint8Array): Promise<void> {
    try {
      assertOpen(this.closed, this.kind);
      assertValidKey(key);
      this.store(keyToString(key), value);
      return RESOLVED;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Removes `key`; resolves to whether it existed. */
  delete(key: Uint8Array): Promise<boolean> {
    try {
      assertOpen(this.closed, this.kind);
      return Promise.resolve(this.remove(keyToString(key)));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Number of keys. */
  count(): number {
    assertOpen(this.closed, this.kind);
    return this.index.size;
  }

  /** Exact sum of key and value lengths (logical bytes, not the process footprint; see {@link MemoryEngine.stats}). */
  bytesUsed(): number {
    assertOpen(this.closed, this.kind);
    return this.keyBytes + this.arena.stats().liveBytes;
  }

  /** Keys whose ring position lies in (start, end], wrapping when start >= end. */
  *keysInRange(
    range: { start: number; end: number },
    position: (key: Uint8Array) => number,
  ): Iterable<Uint8Array> {
    assertOpen(this.closed, this.kind);
    // Map iteration tolerates concurrent inserts/deletes, so migration may delete as it goes.
    for (const encoded of this.index.keys()) {
      const key = stringToKey(encoded);
      if (inRingRange(position(key), range.start, range.end)) yield key;
    }
  }

  /** Nothing is pending in memory: resolves at once. */
  flush(): Promise<void> {
    return this.closed ? Promise.reject(closedError(this.kind)) : RESOLVED;
  }

  /** Drops all data; later calls fail with `ENGINE_CLOSED`. Idempotent. */
  close(): Promise<void> {
    this.closed = true;
    this.index.clear();
    return RESOLVED;
  }

  /** Footprint counters (for tests, metrics and the memory benchmark). */
  stats(): MemoryEngineStats {
    const arena = this.arena.stats();
    return {
      keys: this.index.size,
      keyBytes: this.keyBytes,
      valueBytes: arena.liveBytes,
      arenaReservedBytes: arena.reservedBytes,
    };
  }

  private store(key: string, value: Uint8Array): void {
    const handle = this.index.get(key);
    if (handle !== undefined) {
      this.arena.replace(handle, value);
      return;
    }
    this.index.set(key, this.arena.allocate(value));
    this.keyBytes += key.length;
  }

  private remove(key: string): boolean {
    const handle = this.index.get(key);
    if (handle === undefined) return false;
    this.index.delete(key);
    this.arena.free(handle);
    this.keyBytes -= key.length;
    return true;
  }
}
