import { freemem } from 'node:os';
import type {
  EntryHeader,
  ScannedEntry,
  ScanOptions,
  StorageEngine,
  StorageHealth,
  VersionedEntry,
  VersionedValue,
} from './engine.js';
import { StorageEngineError } from './errors.js';
import { assertOpen, assertUint32, assertValidKey, closedError, inRingRange, keyToString } from './keys.js';
import { SlabArena } from './slab-arena.js';

/**
 * What a write past the memory cap does (Redis's `maxmemory-policy` names):
 * - `noeviction`: it fails with OUT_OF_MEMORY; reads and deletes go on.
 * - `allkeys-lru`: the least recently used value (reads and writes count) of the new value's size
 *   class is evicted to make room.
 * - `allkeys-random`: a random value of that size class is evicted (sampled).
 * Tombstones are never evicted: they keep deletes from being undone by a migration.
 */
export type EvictionPolicy = 'noeviction' | 'allkeys-lru' | 'allkeys-random';

/** Limits of a {@link MemoryEngine}. */
export interface MemoryEngineLimits {
  /** Cap on {@link MemoryEngine.footprint} in bytes; 0 (default) = none. */
  readonly maxMemory?: number;
  /** What a write past the cap does. Default `noeviction`. */
  readonly eviction?: EvictionPolicy;
}

/**
 * Bytes the key index costs per key beyond the key's own bytes (rounded up to 8): V8's one-byte
 * string header and the `Map` entry with its share of the hash table, as measured by
 * `bench/engine-memory.ts` (~61 bytes per 16-byte key: ENGINES.md). An estimate: the V8 heap
 * is not visible per object, so this is the one part of the footprint that is modelled.
 */
const INDEX_BYTES_PER_KEY = 48;
/** Extra per key with eviction on: the handle -> key reference an eviction needs. */
const EVICTION_BYTES_PER_KEY = 8;

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
  /** What the memory cap bounds: the arena's bytes plus the modelled key index ({@link MemoryEngine.footprint}). */
  readonly footprintBytes: number;
  /** Values evicted to make room since the engine was created. */
  readonly evictions: number;
}

const RESOLVED: Promise<void> = Promise.resolve();
/** Room a batch check keeps for slab granularity: one slab (see `SlabArena`). */
const SLAB_SLACK_BYTES = 256 * 1024;

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
  /** Cap on the footprint in bytes; 0 = none. */
  readonly maxMemory: number;
  /** What a write past the cap does. */
  readonly eviction: EvictionPolicy;
  private readonly index = new Map<string, number>();
  private readonly arena: SlabArena;
  /** The key of each handle, for evictions (empty without an eviction policy). */
  private readonly keysByHandle: (string | undefined)[] = [];
  private readonly evicting: boolean;
  private readonly lru: boolean;
  private keyBytes = 0;
  /** The modelled bytes of the key index (see {@link INDEX_BYTES_PER_KEY}). */
  private indexBytes = 0;
  private tombstones = 0;
  private closed = false;
  private evictions = 0;
  private refusedWrites = 0;
  /** Set when a write is refused, cleared once one fits again. */
  private degraded = '';

  constructor(limits: MemoryEngineLimits = {}) {
    this.maxMemory = limits.maxMemory ?? 0;
    this.eviction = limits.eviction ?? 'noeviction';
    if (!Number.isSafeInteger(this.maxMemory) || this.maxMemory < 0) {
      throw new RangeError(`maxMemory must be a non-negative integer, got ${this.maxMemory}`);
    }
    this.evicting = this.eviction !== 'noeviction';
    this.lru = this.eviction === 'allkeys-lru';
    this.arena = new SlabArena({ evictionOrder: this.evicting });
  }

  /**
   * Bytes the memory cap bounds: every buffer the arena holds (value slabs, values over 64 KiB,
   * per-handle metadata, free lists, eviction order) plus the key index as modelled per key. The
   * process's RSS is this plus a fixed overhead (the Node runtime and the node's code, buffers and
   * connections): see ENGINES.md, "Memory cap".
   */
  footprint(): number {
    return this.arena.reservedBytes + this.indexBytes;
  }

  /** The value stored under `key` as a short-lived view, or undefined (absent or tombstone). */
  get(key: Uint8Array): Uint8Array | undefined {
    assertOpen(this.closed, this.kind);
    const handle = this.index.get(keyToString(key));
    if (handle === undefined || this.arena.isTombstone(handle)) return undefined;
    if (this.lru) this.arena.touch(handle);
    return this.arena.read(handle);
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
    if (this.lru) arena.touch(handle);
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
      if (this.maxMemory > 0) this.makeRoom(encoded, value.byteLength, handle);
      if (handle === undefined) {
        this.addKey(encoded, this.arena.allocate(value, writeEpoch, 1));
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
        // Not checked against the cap: a delete must go through when memory is full.
        this.addKey(encoded, this.arena.allocateTombstone(writeEpoch, 1));
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
      let bytes = 0;
      for (const entry of entries) {
        assertValidKey(entry.key);
        assertUint32(entry.writeEpoch, 'writeEpoch');
        assertUint32(entry.seq, 'seq');
        bytes += entry.key.byteLength + entry.value.byteLength;
      }
      // The batch is atomic: refused whole up front (without eviction), never cut in the middle.
      if (!this.evicting) this.assertCapacity(bytes, entries.length);
      let applied = 0;
      for (const { key, value, writeEpoch, seq } of entries) {
        const encoded = keyToString(key);
        const handle = this.index.get(encoded);
        if (handle !== undefined && writeEpoch <= this.arena.writeEpoch(handle)) continue;
        if (this.evicting && this.maxMemory > 0) this.makeRoom(encoded, value.byteLength, handle);
        if (handle === undefined) {
          this.addKey(encoded, this.arena.allocate(value, writeEpoch, seq));
        } else {
          if (this.arena.isTombstone(handle)) this.tombstones--;
          this.arena.replace(handle, value, writeEpoch, seq);
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
      footprintBytes: this.footprint(),
      evictions: this.evictions,
    };
  }

  /**
   * Refuses (OUT_OF_MEMORY) `bytes` of keys and values in `keys` new keys when, without eviction,
   * they would pass the cap. Conservative: counts each key's index cost, the size classes' 12.5%
   * rounding and one slab of slack. With an eviction policy writes make room instead.
   */
  assertCapacity(bytes: number, keys = 1): void {
    assertOpen(this.closed, this.kind);
    if (this.maxMemory === 0 || this.evicting) return;
    const needed = Math.ceil(bytes * 1.125) + keys * (INDEX_BYTES_PER_KEY + 8) + SLAB_SLACK_BYTES;
    if (this.footprint() + needed > this.maxMemory) throw this.outOfMemory(bytes);
  }

  /** Footprint and cap, and whether writes are being refused. */
  health(): StorageHealth {
    assertOpen(this.closed, this.kind);
    const used = this.footprint();
    if (this.degraded !== '' && this.maxMemory - used > SLAB_SLACK_BYTES) this.degraded = '';
    return {
      usedBytes: used,
      availableBytes: this.maxMemory > 0 ? Math.max(0, this.maxMemory - used) : freemem(),
      limitBytes: this.maxMemory,
      degraded: this.degraded,
      refusedWrites: this.refusedWrites,
      failedWrites: 0,
      evictions: this.evictions,
    };
  }

  /**
   * Before a value of `length` is stored under `key` (`handle`: its entry, if any): evicts values
   * of the same size class while the footprint would pass the cap, or throws OUT_OF_MEMORY when
   * the policy is `noeviction` or nothing of that size is left to evict.
   */
  private makeRoom(key: string, length: number, handle: number | undefined): void {
    const arena = this.arena;
    if (handle !== undefined && arena.fitsInPlace(handle, length)) return;
    const indexCost = handle === undefined ? this.indexCost(key.length) : 0;
    for (;;) {
      const needed = arena.growthFor(length, handle === undefined) + indexCost;
      if (this.footprint() + needed <= this.maxMemory) {
        if (this.degraded !== '') this.degraded = '';
        return;
      }
      const victim = this.evicting ? arena.victimFor(length, this.lru, handle ?? -1) : -1;
      if (victim < 0) throw this.outOfMemory(length);
      this.remove(this.keysByHandle[victim] as string);
      this.evictions++;
    }
  }

  private outOfMemory(bytes: number): StorageEngineError {
    this.refusedWrites++;
    const why =
      this.eviction === 'noeviction'
        ? 'and the eviction policy is noeviction'
        : `and no value of that size is left to evict (${this.eviction})`;
    const message = `cannot store ${bytes} more bytes: the memory cap of ${this.maxMemory} bytes is reached (${this.footprint()} bytes used) ${why}`;
    this.degraded = `out of memory: the memory cap of ${this.maxMemory} bytes is reached ${why}`;
    return new StorageEngineError('OUT_OF_MEMORY', message);
  }

  private indexCost(keyLength: number): number {
    return INDEX_BYTES_PER_KEY + ((keyLength + 7) & ~7) + (this.evicting ? EVICTION_BYTES_PER_KEY : 0);
  }

  /** Indexes a new key under `handle`. */
  private addKey(key: string, handle: number): void {
    this.index.set(key, handle);
    this.keyBytes += key.length;
    this.indexBytes += this.indexCost(key.length);
    if (this.evicting) this.keysByHandle[handle] = key;
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
    this.indexBytes -= this.indexCost(key.length);
    if (this.evicting) this.keysByHandle[handle] = undefined;
    return !wasTombstone;
  }
}
