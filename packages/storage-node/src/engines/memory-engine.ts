import type {
  EntryHeader,
  ScannedEntry,
  ScanOptions,
  StorageEngine,
  VersionedEntry,
  VersionedValue,
} from './engine.js';
import { assertOpen, assertUint32, assertValidKey, closedError, inRingRange } from './keys.js';
import { SlabArena } from './slab-arena.js';

/** Counters describing a {@link MemoryEngine}'s footprint. */
export interface MemoryEngineStats {
  /** Number of keys holding a value. */
  readonly keys: number;
  /** Number of tombstones. */
  readonly tombstones: number;
  /** Sum of key lengths (tombstones' keys included: they are held too). */
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
 * Writes are applied synchronously when `set`/`delete`/`tombstone`/`applyIfNewer` is called (a
 * following `get` sees them even before the returned promise settles) and are acknowledged
 * immediately. Nothing survives the process.
 *
 * Values returned by {@link MemoryEngine.get} are views into shared slab memory: they are valid
 * until the next write to this engine (the slot may be reused). Use them synchronously
 * (e.g. encode into a response frame in the same tick) or copy them.
 *
 * Versions (writeEpoch, seq) live in the arena's per-handle metadata; a tombstone is a handle
 * with a version and no bytes, so it costs its key and 17 bytes.
 */
export class MemoryEngine implements StorageEngine {
  /** Engine discriminator. */
  readonly kind = 'memory' as const;
  private readonly index = new Map<string, number>();
  private readonly arena = new SlabArena();
  private keyBytes = 0;
  private tombstones = 0;
  private closed = false;

  /** The value stored under `key` as a short-lived view, or undefined (absent or tombstone). */
  get(key: Uint8Array): Uint8Array | undefined {
    assertOpen(this.closed, this.kind);
    const handle = this.index.get(keyToString(key));
    return handle === undefined || this.arena.isTombstone(handle) ? undefined : this.arena.read(handle);
  }

  /** Whether `key` holds a value. */
  has(key: Uint8Array): boolean {
    assertOpen(this.closed, this.kind);
    const handle = this.index.get(keyToString(key));
    return handle !== undefined && !this.arena.isTombstone(handle);
  }

  /** The value (a short-lived view, as in {@link MemoryEngine.get}) and version of a live entry. */
  getEntry(key: Uint8Array): VersionedValue | undefined {
    assertOpen(this.closed, this.kind);
    const handle = this.index.get(keyToString(key));
    if (handle === undefined || this.arena.isTombstone(handle)) return undefined;
    const arena = this.arena;
    return { value: arena.read(handle), writeEpoch: arena.writeEpoch(handle), seq: arena.seq(handle) };
  }

  /** The header of the entry under `key`, value or tombstone. */
  header(key: Uint8Array): EntryHeader | undefined {
    assertOpen(this.closed, this.kind);
    const handle = this.index.get(keyToString(key));
    return handle === undefined ? undefined : this.headerOf(handle);
  }

  /** Stores a copy of `value` written at `writeEpoch`; applied before returning, acknowledged immediately. */
  set(key: Uint8Array, value: Uint8Array, writeEpoch = 0): Promise<void> {
    try {
      assertOpen(this.closed, this.kind);
      assertValidKey(key);
      assertUint32(writeEpoch, 'writeEpoch');
      const encoded = keyToString(key);
      const handle = this.index.get(encoded);
      if (handle === undefined) {
        this.index.set(encoded, this.arena.allocate(value, writeEpoch, 1));
        this.keyBytes += encoded.length;
      } else {
        if (this.arena.isTombstone(handle)) this.tombstones--;
        this.arena.replace(handle, value, writeEpoch, (this.arena.seq(handle) + 1) >>> 0);
      }
      return RESOLVED;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Removes `key`'s value or tombstone; resolves to whether a value existed. */
  delete(key: Uint8Array): Promise<boolean> {
    try {
      assertOpen(this.closed, this.kind);
      return Promise.resolve(this.remove(keyToString(key)));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Replaces `key`'s entry by a tombstone written at `writeEpoch`; resolves to whether a value existed. */
  tombstone(key: Uint8Array, writeEpoch: number): Promise<boolean> {
    try {
      assertOpen(this.closed, this.kind);
      assertValidKey(key);
      assertUint32(writeEpoch, 'writeEpoch');
      const encoded = keyToString(key);
      const handle = this.index.get(encoded);
      if (handle === undefined) {
        this.index.set(encoded, this.arena.allocateTombstone(writeEpoch, 1));
        this.keyBytes += encoded.length;
        this.tombstones++;
        return Promise.resolve(false);
      }
      const existed = !this.arena.isTombstone(handle);
      if (existed) this.tombstones++;
      this.arena.replaceWithTombstone(handle, writeEpoch, (this.arena.seq(handle) + 1) >>> 0);
      return Promise.resolve(existed);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Stores each copy whose writeEpoch is greater than its key's entry (or with no entry); resolves to how many. */
  applyIfNewer(entries: readonly VersionedEntry[]): Promise<number> {
    try {
      assertOpen(this.closed, this.kind);
      // Checked first, so that a bad entry stores nothing of the batch.
      for (const entry of entries) {
        assertValidKey(entry.key);
        assertUint32(entry.writeEpoch, 'writeEpoch');
        assertUint32(entry.seq, 'seq');
      }
      let applied = 0;
      for (const { key, value, writeEpoch, seq } of entries) {
        const encoded = keyToString(key);
        const handle = this.index.get(encoded);
        if (handle === undefined) {
          this.index.set(encoded, this.arena.allocate(value, writeEpoch, seq));
          this.keyBytes += encoded.length;
        } else if (writeEpoch > this.arena.writeEpoch(handle)) {
          if (this.arena.isTombstone(handle)) this.tombstones--;
          this.arena.replace(handle, value, writeEpoch, seq);
        } else {
          continue;
        }
        applied++;
      }
      return Promise.resolve(applied);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Deletes those of `keys` that are tombstones no newer than `maxWriteEpoch`; resolves to how many. */
  removeTombstones(keys: readonly Uint8Array[], maxWriteEpoch: number): Promise<number> {
    try {
      assertOpen(this.closed, this.kind);
      let removed = 0;
      for (const key of keys) {
        const encoded = keyToString(key);
        const handle = this.index.get(encoded);
        if (handle === undefined || !this.arena.isTombstone(handle)) continue;
        if (this.arena.writeEpoch(handle) > maxWriteEpoch) continue;
        this.remove(encoded);
        removed++;
      }
      return Promise.resolve(removed);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Number of keys holding a value. */
  count(): number {
    assertOpen(this.closed, this.kind);
    return this.index.size - this.tombstones;
  }

  /** Number of tombstones. */
  tombstoneCount(): number {
    assertOpen(this.closed, this.kind);
    return this.tombstones;
  }

  /**
   * Exact sum of key and value lengths (logical bytes, not the process footprint; see
   * {@link MemoryEngine.stats}). Tombstones count with their key, since it is held.
   */
  bytesUsed(): number {
    assertOpen(this.closed, this.kind);
    return this.keyBytes + this.arena.stats().liveBytes;
  }

  /** Keys holding a value whose ring position lies in (start, end], wrapping when start >= end. */
  *keysInRange(
    range: { start: number; end: number },
    position: (key: Uint8Array) => number,
  ): Iterable<Uint8Array> {
    for (const entry of this.entriesInRange(range, position)) yield entry.key;
  }

  /** Entries (with headers; tombstones only when asked) whose ring position lies in (start, end]. */
  *entriesInRange(
    range: { start: number; end: number },
    position: (key: Uint8Array) => number,
    options: ScanOptions = {},
  ): Iterable<ScannedEntry> {
    assertOpen(this.closed, this.kind);
    const withTombstones = options.tombstones === true;
    // Map iteration tolerates concurrent inserts/deletes, so migration may delete as it goes.
    for (const [encoded, handle] of this.index) {
      if (!withTombstones && this.arena.isTombstone(handle)) continue;
      const key = stringToKey(encoded);
      if (!inRingRange(position(key), range.start, range.end)) continue;
      const arena = this.arena;
      yield {
        key,
        writeEpoch: arena.writeEpoch(handle),
        seq: arena.seq(handle),
        tombstone: arena.isTombstone(handle),
      };
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
    this.tombstones = 0;
    return RESOLVED;
  }

  /** Footprint counters (for tests, metrics and the memory benchmark). */
  stats(): MemoryEngineStats {
    const arena = this.arena.stats();
    return {
      keys: this.index.size - this.tombstones,
      tombstones: this.tombstones,
      keyBytes: this.keyBytes,
      valueBytes: arena.liveBytes,
      arenaReservedBytes: arena.reservedBytes,
    };
  }

  private headerOf(handle: number): EntryHeader {
    const arena = this.arena;
    return {
      writeEpoch: arena.writeEpoch(handle),
      seq: arena.seq(handle),
      tombstone: arena.isTombstone(handle),
    };
  }

  /** Removes the entry under `key`; returns whether it held a value. */
  private remove(key: string): boolean {
    const handle = this.index.get(key);
    if (handle === undefined) return false;
    const wasTombstone = this.arena.isTombstone(handle);
    if (wasTombstone) this.tombstones--;
    this.index.delete(key);
    this.arena.free(handle);
    this.keyBytes -= key.length;
    return !wasTombstone;
  }
}
