import { freemem } from 'node:os';
import {
  type Decision,
  type EntryHeader,
  type EvictionScope,
  isExpired,
  isNewerEntry,
  type ManyDecider,
  type ManyUpdateOptions,
  type Mutation,
  type ScannedEntry,
  type ScanOptions,
  type ScanPage,
  type StorageEngine,
  type StorageHealth,
  type UpdateOptions,
  type VersionedEntry,
  type VersionedValue,
  writeEndAt,
} from './engine.js';
import { StorageEngineError } from './errors.js';
import { assertOpen, assertUint32, assertValidKey, closedError, inRingRange, MAX_KEY_BYTES } from './keys.js';
import { SLOT_METADATA_BYTES, SlabArena } from './slab-arena.js';
import { assertVersion, VersionClock } from './version-clock.js';

/** An entry as it was before an undone put: a value (possibly expired), or a tombstone (no value). */
interface PreviousEntry {
  readonly value: Uint8Array | undefined;
  readonly writeEpoch: number;
  readonly version: number;
  readonly expireAt: number;
}

/**
 * What a write past the memory cap does (Redis's `maxmemory-policy` names):
 * - `noeviction`: it fails with OUT_OF_MEMORY; reads and deletes go on.
 * - `allkeys-lru`: the least recently used value (reads and writes count) of the new entry's size
 *   class is evicted to make room; when that class holds none, the values of the last slab of the
 *   class holding the most memory are, and the slab goes to the new entry's class.
 * - `allkeys-random`: the same with a random value (sampled) of the new entry's class.
 * A write fails with OUT_OF_MEMORY only when evicting every value could not make room.
 * Tombstones are never evicted: they keep deletes from being undone by a migration.
 * With replication (an active {@link EvictionScope}) only the keys whose chains the node heads are
 * evicted, each eviction goes down the chain (the members drop the key), and entries placed here
 * evict nothing.
 */
export type EvictionPolicy = 'noeviction' | 'allkeys-lru' | 'allkeys-random';

/** Limits of a {@link MemoryEngine}. */
export interface MemoryEngineLimits {
  /** Cap on {@link MemoryEngine.footprint} in bytes; 0 (default) = none. */
  readonly maxMemory?: number;
  /** What a write past the cap does. Default `noeviction`. */
  readonly eviction?: EvictionPolicy;
}

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
  /** Bytes of buffers held for keys, values, their metadata and the key index. */
  readonly arenaReservedBytes: number;
  /** What the memory cap bounds ({@link MemoryEngine.footprint}): the same bytes as `arenaReservedBytes`. */
  readonly footprintBytes: number;
  /** Values evicted to make room since the engine was created. */
  readonly evictions: number;
}

const RESOLVED: Promise<void> = Promise.resolve();
/** Room a batch check keeps for slab granularity: one slab (see `SlabArena`). */
const SLAB_SLACK_BYTES = 256 * 1024;
/**
 * How far past the cap entries the cluster places here may go (`applyIfNewer`: a chain member's
 * replicated writes, copies to a learner or a new owner), as a fraction of the cap. Client writes
 * are admitted against the cap itself, at the node where they enter; a member refusing what a head
 * admitted would leave the write on the head alone and block the chain until it had room, deletes
 * included (as Redis replicas ignore `maxmemory` and take what their master accepted).
 */
const PLACEMENT_HEADROOM = 1 / 8;

/**
 * Bytes that `bytes` of keys and values in `keys` entries hold at most, as the cap counts them:
 * the size classes' rounding (12.5%, 8 bytes for the smallest) and each handle's metadata with
 * 16 bytes of index and list entries.
 */
function heldBytes(bytes: number, keys: number): number {
  return Math.ceil(bytes * 1.125) + keys * (SLOT_METADATA_BYTES + 8 + 8);
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
 * Keys, values, versions and the key index all live in the {@link SlabArena}'s typed arrays, none
 * on the V8 heap, so the footprint the cap bounds is counted, not modelled. A tombstone is a
 * handle with its key and a version and no value.
 */
export class MemoryEngine implements StorageEngine {
  /** Engine discriminator. */
  readonly kind = 'memory' as const;
  /**
   * Starts from the wall clock at construction: a restarted memory node holds no data, and its
   * versions stay above those of its previous run as long as the wall clock did not step back
   * across the restart (see the protocol README, "Versions").
   */
  readonly clock = new VersionClock();
  /** Cap on the footprint in bytes; 0 = none. */
  readonly maxMemory: number;
  /** What a write past the cap does. */
  readonly eviction: EvictionPolicy;
  /** The cap's {@link PLACEMENT_HEADROOM} in bytes (0 without a cap). */
  private readonly headroomBytes: number;
  private arena: SlabArena;
  private readonly evicting: boolean;
  private readonly lru: boolean;
  private keyBytes = 0;
  private tombstones = 0;
  private closed = false;
  private evictions = 0;
  private refusedWrites = 0;
  /** Set when a write is refused, cleared once one fits again. */
  private degraded = '';
  /** Next handle {@link MemoryEngine.sweepExpired} examines. */
  private sweepCursor = 0;
  private retainExpired: (key: Uint8Array) => boolean = () => false;
  /** Which values may be evicted and where their evictions go, with replication; see {@link setEvictionScope}. */
  private scope: EvictionScope | undefined;
  /** The scope's filter, by handle (one closure, not one per eviction). */
  private readonly headedHere = (handle: number): boolean => this.scope!.mayEvict(this.arena.key(handle));

  constructor(limits: MemoryEngineLimits = {}) {
    this.maxMemory = limits.maxMemory ?? 0;
    this.eviction = limits.eviction ?? 'noeviction';
    this.headroomBytes = Math.floor(this.maxMemory * PLACEMENT_HEADROOM);
    if (!Number.isSafeInteger(this.maxMemory) || this.maxMemory < 0) {
      throw new RangeError(`maxMemory must be a non-negative integer, got ${this.maxMemory}`);
    }
    this.evicting = this.eviction !== 'noeviction';
    this.lru = this.eviction === 'allkeys-lru';
    this.arena = new SlabArena({ evictionOrder: this.evicting });
  }

  /**
   * Bytes the memory cap bounds: every buffer the arena holds (slabs of keys and values, entries
   * over 64 KiB, per-handle metadata, the key index, free lists, eviction order), counted as they
   * are allocated. The process's RSS is this plus a fixed overhead (the Node runtime, the node's
   * code, the V8 heap, buffers and connections): see ENGINES.md, "Memory cap".
   */
  footprint(): number {
    return this.arena.reservedBytes;
  }

  /** The value stored under `key` as a short-lived view, or undefined (absent or tombstone). */
  get(key: Uint8Array): Uint8Array | undefined {
    assertOpen(this.closed, this.kind);
    const handle = this.findLive(key);
    if (handle < 0) return undefined;
    if (this.lru) this.arena.touch(handle);
    return this.arena.read(handle);
  }

  /** Whether `key` holds a value. */
  has(key: Uint8Array): boolean {
    assertOpen(this.closed, this.kind);
    return this.findLive(key) >= 0;
  }

  /** The value (a short-lived view, as in {@link MemoryEngine.get}) and version of a live entry. */
  getEntry(key: Uint8Array): VersionedValue | undefined {
    assertOpen(this.closed, this.kind);
    const handle = this.findLive(key);
    if (handle < 0) return undefined;
    const arena = this.arena;
    if (this.lru) arena.touch(handle);
    return {
      value: arena.read(handle),
      writeEpoch: arena.writeEpoch(handle),
      version: arena.version(handle),
      expireAt: arena.expireAt(handle),
    };
  }

  /** The header of the entry under `key`, value or tombstone. */
  header(key: Uint8Array): EntryHeader | undefined {
    assertOpen(this.closed, this.kind);
    const handle = this.find(key);
    return handle < 0 ? undefined : this.headerOf(handle);
  }

  /** Stores a copy of `value` written at `writeEpoch`; applied before returning, acknowledged immediately. */
  set(key: Uint8Array, value: Uint8Array, writeEpoch = 0, expireAt = 0): Promise<void> {
    try {
      this.write(key, value, writeEpoch, expireAt);
      return RESOLVED;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** {@link set} without expiry, applied (and so acknowledged) before returning; throws instead of rejecting. */
  setNow(key: Uint8Array, value: Uint8Array, writeEpoch: number): void {
    this.write(key, value, writeEpoch, 0);
  }

  private write(key: Uint8Array, value: Uint8Array, writeEpoch: number, expireAt: number): void {
    assertOpen(this.closed, this.kind);
    assertValidKey(key);
    assertUint32(writeEpoch, 'writeEpoch');
    this.put(key, value, writeEpoch, expireAt, this.arena.find(key), this.clock.next());
  }

  /** Stores `value` as a client write under `key` (`handle`: its entry, or -1), making room first. */
  private put(
    key: Uint8Array,
    value: Uint8Array,
    writeEpoch: number,
    expireAt: number,
    found: number,
    version: number,
  ): void {
    let handle = found;
    if (this.maxMemory > 0) handle = this.makeRoom(key, value.byteLength, handle);
    if (handle < 0) {
      this.arena.allocate(key, value, writeEpoch, version, expireAt);
      this.keyBytes += key.byteLength;
    } else {
      if (this.arena.isTombstone(handle)) this.tombstones--;
      this.arena.replace(handle, value, writeEpoch, version, expireAt);
    }
  }

  /** Decides on the live entry and applies the mutation, synchronously; acknowledged immediately. */
  update<T>(
    key: Uint8Array,
    options: UpdateOptions,
    decide: (current: VersionedValue | undefined, now: number, version: number) => Decision<T>,
  ): Promise<T> {
    try {
      return Promise.resolve(this.updateNow(key, options, decide));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  updateNow<T>(
    key: Uint8Array,
    options: UpdateOptions,
    decide: (current: VersionedValue | undefined, now: number, version: number) => Decision<T>,
  ): T {
    assertOpen(this.closed, this.kind);
    assertValidKey(key);
    assertUint32(options.writeEpoch, 'writeEpoch');
    const now = Date.now();
    const live = this.findLive(key, now);
    const arena = this.arena;
    const current =
      live < 0
        ? undefined
        : {
            // A copy: the mutation below may reuse the item the view points at.
            value: Uint8Array.prototype.slice.call(arena.read(live)),
            writeEpoch: arena.writeEpoch(live),
            version: arena.version(live),
            expireAt: arena.expireAt(live),
          };
    const version = this.clock.next();
    const decision = decide(current, now, version);
    this.mutate(key, live, options, decision.mutation, version);
    return decision.result;
  }

  /** See {@link StorageEngine.updateMany}: {@link updateManyNow} as a promise. */
  updateMany<T>(keys: readonly Uint8Array[], options: ManyUpdateOptions, decide: ManyDecider<T>): Promise<T> {
    try {
      return Promise.resolve(this.updateManyNow(keys, options, decide));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Decides on every key's live entry and applies the mutations synchronously, so no reader runs
   * between them. Only a put can fail (OUT_OF_MEMORY, making room): the puts go first, and when
   * one fails the ones before it are undone (their previous entries put back, past the cap if
   * need be: they held that room a moment ago), so a refused transaction changes nothing; the
   * deletes and expiry changes that follow cannot fail. A value evicted to make room for a later
   * put (an eviction policy) is an eviction like any other.
   */
  updateManyNow<T>(keys: readonly Uint8Array[], options: ManyUpdateOptions, decide: ManyDecider<T>): T {
    assertOpen(this.closed, this.kind);
    for (const key of keys) assertValidKey(key);
    assertUint32(options.writeEpoch, 'writeEpoch');
    const now = Date.now();
    const arena = this.arena;
    const current = keys.map((key): VersionedValue | undefined => {
      const live = this.findLive(key, now);
      if (live < 0) return undefined;
      // Copies: the mutations below may reuse the items the views point at.
      return {
        value: Uint8Array.prototype.slice.call(arena.read(live)),
        writeEpoch: arena.writeEpoch(live),
        version: arena.version(live),
        expireAt: arena.expireAt(live),
      };
    });
    const version = this.clock.next();
    const decision = decide(current, now, version);
    const { mutations } = decision;
    const undo: { key: Uint8Array; previous: PreviousEntry | undefined }[] = [];
    for (let i = 0; i < keys.length; i++) {
      const mutation = mutations[i]!;
      if (mutation.kind !== 'put') continue;
      const key = keys[i]!;
      const previous = this.previousEntry(key);
      try {
        this.put(key, mutation.value, options.writeEpoch, mutation.expireAt, arena.find(key), version);
      } catch (error) {
        for (let j = undo.length - 1; j >= 0; j--) this.restore(undo[j]!.key, undo[j]!.previous);
        throw error;
      }
      undo.push({ key, previous });
    }
    for (let i = 0; i < keys.length; i++) {
      const mutation = mutations[i]!;
      if (mutation.kind === 'put' || mutation.kind === 'none') continue;
      const key = keys[i]!;
      // Found again: a put above may have moved entries (or evicted this one).
      const single = { writeEpoch: options.writeEpoch, tombstone: options.tombstones[i] === true };
      this.mutate(key, this.findLive(key, now), single, mutation, version);
    }
    return decision.result;
  }

  /** The entry under `key` as it is (value, even expired, or tombstone), for {@link restore}. */
  private previousEntry(key: Uint8Array): PreviousEntry | undefined {
    const arena = this.arena;
    const handle = arena.find(key);
    if (handle < 0) return undefined;
    const writeEpoch = arena.writeEpoch(handle);
    const version = arena.version(handle);
    if (arena.isTombstone(handle)) return { value: undefined, writeEpoch, version, expireAt: 0 };
    return {
      value: Uint8Array.prototype.slice.call(arena.read(handle)),
      writeEpoch,
      version,
      expireAt: arena.expireAt(handle),
    };
  }

  /**
   * Puts `key`'s entry back as {@link previousEntry} found it (an undone put; not checked against
   * the cap). A value the later puts evicted stays gone: that eviction was an eviction like any
   * other (with replication its chain was told), so bringing an older value back would differ
   * from what the chain holds.
   */
  private restore(key: Uint8Array, previous: PreviousEntry | undefined): void {
    const arena = this.arena;
    const handle = arena.find(key);
    if (handle < 0) return;
    if (previous === undefined) {
      this.remove(handle);
      return;
    }
    const { value, writeEpoch, version, expireAt } = previous;
    if (value === undefined) {
      if (!arena.isTombstone(handle)) this.tombstones++;
      arena.replaceWithTombstone(handle, writeEpoch, version);
      return;
    }
    if (arena.isTombstone(handle)) this.tombstones--;
    arena.replace(handle, value, writeEpoch, version, expireAt);
  }

  private mutate(
    key: Uint8Array,
    live: number,
    options: UpdateOptions,
    mutation: Mutation,
    version: number,
  ): void {
    const { writeEpoch } = options;
    switch (mutation.kind) {
      case 'none':
        return;
      case 'put':
        this.put(key, mutation.value, writeEpoch, mutation.expireAt, this.arena.find(key), version);
        return;
      case 'expire':
        if (live >= 0) this.arena.restamp(live, writeEpoch, version, mutation.expireAt);
        return;
      case 'delete': {
        if (live < 0) return;
        if (options.tombstone) {
          this.tombstones++;
          this.arena.replaceWithTombstone(live, writeEpoch, version);
        } else this.remove(live);
        return;
      }
    }
  }

  /** Examines up to `maxEntries` handles from where the last sweep stopped; reclaims the expired values. */
  sweepExpired(maxEntries: number): Promise<number> {
    try {
      assertOpen(this.closed, this.kind);
      const arena = this.arena;
      const now = Date.now();
      let reclaimed = 0;
      for (let examined = 0; examined < maxEntries && arena.handleLimit > 0; examined++) {
        if (this.sweepCursor >= arena.handleLimit) this.sweepCursor = 0;
        const handle = this.sweepCursor++;
        if (!arena.isLive(handle) || arena.isTombstone(handle)) continue;
        if (!isExpired(arena.expireAt(handle), now)) continue;
        this.reclaim(handle);
        reclaimed++;
      }
      return Promise.resolve(reclaimed);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Keys whose expired values become tombstones when reclaimed (see {@link StorageEngine.setRetainExpired}). */
  setRetainExpired(predicate: (key: Uint8Array) => boolean): void {
    this.retainExpired = predicate;
  }

  /**
   * With replication: evicts only the values `scope` lets go (the keys whose chains this node
   * heads), tells it of each eviction (it sends the eviction down the chain), and evicts nothing for
   * entries placed here (`applyIfNewer`: they were admitted at their head, which evicts for them),
   * so every member of a chain holds the same keys. See ENGINES.md, "Eviction with replication".
   */
  setEvictionScope(scope: EvictionScope | undefined): void {
    this.scope = scope;
  }

  /** Whether evictions follow the {@link scope}: an eviction policy and a scope that is active. */
  private get scoped(): boolean {
    return this.evicting && this.scope?.active === true;
  }

  /**
   * See {@link StorageEngine.evictFor}: one value of the size class of an entry of `total` bytes
   * that `accept` takes (by the policy's order: least recently used, or sampled) is evicted and
   * its scope told. False when the engine is not scoped or `accept` takes none.
   */
  evictFor(total: number, accept: (key: Uint8Array) => boolean): boolean {
    if (this.closed || !this.scoped) return false;
    const arena = this.arena;
    const victim = arena.victimFor(total, this.lru, -1, (handle) => accept(arena.key(handle)));
    if (victim < 0) return false;
    this.evict(victim);
    return true;
  }

  /** Removes `key`'s value or tombstone; resolves to whether a value existed. */
  delete(key: Uint8Array): Promise<boolean> {
    try {
      return Promise.resolve(this.deleteNow(key));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** {@link delete}, applied before returning; throws instead of rejecting. */
  deleteNow(key: Uint8Array): boolean {
    assertOpen(this.closed, this.kind);
    const handle = this.find(key);
    return handle >= 0 && this.remove(handle);
  }

  /** Replaces `key`'s entry by a tombstone written at `writeEpoch`; resolves to whether a value existed. */
  tombstone(key: Uint8Array, writeEpoch: number): Promise<boolean> {
    try {
      assertOpen(this.closed, this.kind);
      assertValidKey(key);
      assertUint32(writeEpoch, 'writeEpoch');
      const handle = this.arena.find(key);
      if (handle < 0) {
        // Not checked against the cap: a delete must go through when memory is full.
        this.arena.allocateTombstone(key, writeEpoch, this.clock.next());
        this.keyBytes += key.byteLength;
        this.tombstones++;
        return Promise.resolve(false);
      }
      const existed = !this.arena.isTombstone(handle);
      if (existed) this.tombstones++;
      this.arena.replaceWithTombstone(handle, writeEpoch, this.clock.next());
      return Promise.resolve(existed);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Stores each copy whose writeEpoch is greater than its key's entry (or with no entry); resolves to how many. */
  applyIfNewer(entries: readonly VersionedEntry[]): Promise<number> {
    try {
      assertOpen(this.closed, this.kind);
      const now = Date.now();
      // Checked first, so that a bad entry stores nothing of the batch.
      let bytes = 0;
      let storing = 0;
      for (const entry of entries) {
        assertValidKey(entry.key);
        assertUint32(entry.writeEpoch, 'writeEpoch');
        assertVersion(entry.version);
        // Deletes take no room (a tombstone replaces the value): they go through when memory is full.
        if (entry.deleted === true) continue;
        bytes += entry.key.byteLength + entry.value.byteLength;
        storing++;
      }
      // Against the cap plus the placement headroom (see PLACEMENT_HEADROOM). Without eviction
      // the batch is refused whole up front, never cut in the middle. A scoped engine (eviction
      // with replication) evicts nothing for what its heads admitted and checks each entry's own
      // growth as it goes instead: the up-front check's slack would refuse, at a small cap, the
      // value a head sends with the delete of the value it evicted to make room for it. A batch
      // refused half-way is sent again whole, and what was applied is skipped (not newer).
      const scoped = this.scoped;
      const evictsHere = this.evicting && !scoped && this.maxMemory > 0;
      const placementLimit = this.maxMemory + this.headroomBytes;
      if (!this.evicting && storing > 0 && this.maxMemory > 0)
        this.checkPlacedRoom(entries, bytes, storing, placementLimit);
      let applied = 0;
      for (const entry of entries) this.clock.observe(entry.version);
      // Scoped: the entries of one write of several keys (one version) are checked together
      // before any is stored, so a refusal never leaves part of that write here.
      let unitEnd = 0;
      let unitChecked = false;
      for (let i = 0; i < entries.length; i++) {
        const { key, value, writeEpoch, version, expireAt = 0, deleted, tombstone } = entries[i]!;
        if (scoped && this.maxMemory > 0 && i >= unitEnd) {
          unitEnd = this.assertUnitGrowth(entries, i, placementLimit);
          unitChecked = unitEnd > i + 1;
        }
        let handle = this.arena.find(key);
        if (
          handle >= 0 &&
          !isNewerEntry(writeEpoch, version, this.arena.writeEpoch(handle), this.arena.version(handle))
        )
          continue;
        // A delete, or an expired copy (the key is gone wherever it is): the older entry goes.
        if (deleted === true && tombstone === true) {
          // Not checked against the cap: a delete must go through when memory is full.
          if (handle < 0) {
            this.arena.allocateTombstone(key, writeEpoch, version);
            this.keyBytes += key.byteLength;
            this.tombstones++;
          } else {
            if (!this.arena.isTombstone(handle)) this.tombstones++;
            this.arena.replaceWithTombstone(handle, writeEpoch, version);
          }
          applied++;
          continue;
        }
        if (deleted === true || isExpired(expireAt, now)) {
          if (handle >= 0) this.remove(handle);
          if (deleted === true) applied++;
          continue;
        }
        if (evictsHere) handle = this.makeRoom(key, value.byteLength, handle);
        else if (scoped && this.maxMemory > 0 && !unitChecked)
          this.assertPlacementGrowth(key, value.byteLength, handle, placementLimit);
        if (handle < 0) {
          this.arena.allocate(key, value, writeEpoch, version, expireAt);
          this.keyBytes += key.byteLength;
        } else {
          if (this.arena.isTombstone(handle)) this.tombstones--;
          this.arena.replace(handle, value, writeEpoch, version, expireAt);
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
    return this.removeEntries(keys, maxWriteEpoch, true);
  }

  removeUpTo(keys: readonly Uint8Array[], maxWriteEpoch: number): Promise<number> {
    return this.removeEntries(keys, maxWriteEpoch, false);
  }

  /** Removes the entries of `keys` with `writeEpoch <= maxWriteEpoch` (only tombstones with `tombstonesOnly`). */
  private removeEntries(
    keys: readonly Uint8Array[],
    maxWriteEpoch: number,
    tombstonesOnly: boolean,
  ): Promise<number> {
    try {
      assertOpen(this.closed, this.kind);
      let removed = 0;
      for (const key of keys) {
        const handle = this.find(key);
        if (handle < 0 || (tombstonesOnly && !this.arena.isTombstone(handle))) continue;
        if (this.arena.writeEpoch(handle) > maxWriteEpoch) continue;
        this.remove(handle);
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
    return this.arena.size - this.tombstones;
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

  /** See {@link StorageEngine.scan}: reverse-binary steps over the key index's home buckets. */
  scan(cursor: number, count: number, accept: (key: Uint8Array) => boolean): ScanPage {
    assertOpen(this.closed, this.kind);
    const arena = this.arena;
    const keys: Uint8Array[] = [];
    // Nothing to walk (tombstones aside): done at once, as Redis answers an empty SCAN.
    if (arena.size === 0) return { cursor: 0, keys };
    const now = Date.now();
    const visit = (handle: number): void => {
      // Tombstones and expired values are not keys (freeing one here would move the buckets the
      // cursor walks: the sweep reclaims it).
      if (arena.isTombstone(handle) || isExpired(arena.expireAt(handle), now)) return;
      const key = arena.key(handle);
      if (accept(key)) keys.push(Buffer.from(key));
    };
    // Steps until `count` keys were taken, or 10 x count buckets were visited (Redis's bound, so
    // a sparse index cannot make one call long).
    let next = cursor;
    for (let steps = 0; steps < count * 10; steps++) {
      next = arena.scanStep(next, visit);
      if (next === 0 || keys.length >= count) break;
    }
    return { cursor: next, keys };
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
    const arena = this.arena;
    const now = Date.now();
    // In handle order, reading the limit and each handle afresh: the caller may delete as it goes
    // (migration does) and entries added meanwhile are seen unless they reuse a handle already
    // passed. Keys are copied: they outlive the next write.
    for (let handle = 0; handle < arena.handleLimit; handle++) {
      if (this.closed) return;
      if (!arena.isLive(handle)) continue;
      if (!withTombstones && (arena.isTombstone(handle) || isExpired(arena.expireAt(handle), now))) continue;
      const key = Buffer.from(arena.key(handle));
      if (!inRingRange(position(key), range.start, range.end)) continue;
      yield {
        key,
        writeEpoch: arena.writeEpoch(handle),
        version: arena.version(handle),
        expireAt: arena.expireAt(handle),
        tombstone: arena.isTombstone(handle),
      };
    }
  }

  /** Nothing is pending in memory: resolves at once. */
  flush(): Promise<void> {
    return this.closed ? Promise.reject(closedError(this.kind)) : RESOLVED;
  }

  /** Drops all data; later calls fail with `ENGINE_CLOSED`. Idempotent. */
  /** Drops every entry at once (a fresh arena); resolves to the number of live values there were. */
  clear(): Promise<number> {
    try {
      assertOpen(this.closed, this.kind);
      // Live values only, as the lmdb engine counts them: an expired value not yet reclaimed is gone.
      const arena = this.arena;
      const now = Date.now();
      let removed = 0;
      for (let handle = 0; handle < arena.handleLimit; handle++) {
        if (arena.isLive(handle) && !arena.isTombstone(handle) && !isExpired(arena.expireAt(handle), now))
          removed++;
      }
      this.arena = new SlabArena({ evictionOrder: this.evicting });
      this.tombstones = 0;
      this.keyBytes = 0;
      this.sweepCursor = 0;
      return Promise.resolve(removed);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  close(): Promise<void> {
    this.closed = true;
    // Drops every buffer: a closed engine keeps nothing.
    this.arena = new SlabArena();
    this.tombstones = 0;
    this.keyBytes = 0;
    return RESOLVED;
  }

  /** Footprint counters (for tests, metrics and the memory benchmark). */
  stats(): MemoryEngineStats {
    const arena = this.arena.stats();
    return {
      keys: this.arena.size - this.tombstones,
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
   * they would pass the cap. Conservative: counts each key as new (its metadata, an index bucket,
   * the doublings of those arrays it would cause), the size classes' rounding (12.5%, 8 bytes for
   * the smallest) and one slab of slack. With an eviction policy writes make room instead.
   * `limit`: the bound checked (default the cap; `applyIfNewer` passes the cap and its headroom).
   */
  assertCapacity(bytes: number, keys = 1, limit = this.maxMemory): void {
    assertOpen(this.closed, this.kind);
    if (this.maxMemory === 0 || this.evicting) return;
    this.checkRoom(bytes, keys, limit);
  }

  /**
   * For the entries of one write from `start` (a run of one version, as the replication stream
   * keeps a write of several keys): throws OUT_OF_MEMORY when their values together would take
   * the footprint past `limit`, before any is stored. Returns the index past the run; a run of
   * one is checked as it is stored instead ({@link assertPlacementGrowth}).
   */
  private assertUnitGrowth(entries: readonly VersionedEntry[], start: number, limit: number): number {
    const end = writeEndAt(entries, start);
    if (end === start + 1) return end;
    let growth = 0;
    let length = 0;
    for (let i = start; i < end; i++) {
      const { key, value, deleted } = entries[i]!;
      if (deleted === true) continue;
      const handle = this.arena.find(key);
      if (handle >= 0 && this.arena.fitsInPlace(handle, value.byteLength)) continue;
      growth += this.arena.growthFor(key.byteLength, value.byteLength, handle < 0);
      length += value.byteLength;
    }
    if (this.footprint() + growth > limit) throw this.outOfMemory(length, limit);
    return end;
  }

  /** Throws OUT_OF_MEMORY when storing a value of `length` under `key` (`handle`: its entry, or -1) would take the footprint past `limit`. */
  private assertPlacementGrowth(key: Uint8Array, length: number, handle: number, limit: number): void {
    const arena = this.arena;
    if (handle >= 0 && arena.fitsInPlace(handle, length)) return;
    if (this.footprint() + arena.growthFor(key.byteLength, length, handle < 0) > limit) {
      throw this.outOfMemory(length, limit);
    }
  }

  /** {@link assertCapacity}'s check itself, whatever the policy. */
  private checkRoom(bytes: number, keys: number, limit: number): void {
    if (!this.hasRoom(bytes, keys, limit)) throw this.outOfMemory(bytes, limit);
  }

  /** Whether `bytes` of `keys` new values fit under `limit` (see {@link checkRoom}). */
  private hasRoom(bytes: number, keys: number, limit: number): boolean {
    const needed = heldBytes(bytes, keys) + this.arena.handlesGrowth(keys) + SLAB_SLACK_BYTES;
    return this.footprint() + needed <= limit;
  }

  /**
   * {@link checkRoom} of placed entries (`bytes` of `storing` values among `entries`): when they
   * do not all fit, only the values newer than this node's entries of their keys count. A batch
   * sent again after a refusal for room can hold writes this node has since seen deleted (the
   * deletes go on ahead of them to free that room, see the protocol README, "Room"): skipped when
   * applied, they must not keep the batch out.
   */
  private checkPlacedRoom(
    entries: readonly VersionedEntry[],
    bytes: number,
    storing: number,
    limit: number,
  ): void {
    if (this.hasRoom(bytes, storing, limit)) return;
    let newerBytes = 0;
    let newer = 0;
    for (const { key, value, writeEpoch, version, deleted } of entries) {
      if (deleted === true) continue;
      const handle = this.arena.find(key);
      if (
        handle >= 0 &&
        !isNewerEntry(writeEpoch, version, this.arena.writeEpoch(handle), this.arena.version(handle))
      )
        continue;
      newerBytes += key.byteLength + value.byteLength;
      newer++;
    }
    if (newer > 0) this.checkRoom(newerBytes, newer, limit);
  }

  /**
   * See {@link StorageEngine.pastClientRoom}: with a cap and no eviction policy, the footprint is
   * within a slab of the cap and deletes have not freed what {@link fitsInFreedRoom} asks for.
   * With an eviction policy and replication (a {@link scoped} engine): the footprint and what it
   * holds are past the cap (what its heads placed here took it there: each head then evicts one of
   * its own keys of the chain per value it writes, see `ReplicationService.write`), or the
   * footprint nears the placement limit. Unscoped, an evicting engine makes room instead.
   */
  pastClientRoom(): boolean {
    if (this.maxMemory === 0 || this.closed) return false;
    if (this.scoped) {
      const footprint = this.footprint();
      if (footprint + 2 * SLAB_SLACK_BYTES > this.maxMemory + this.headroomBytes) return true;
      return footprint > this.maxMemory && !this.heldWithin(0, 0, this.maxMemory + this.headroomBytes / 4);
    }
    if (this.evicting) return false;
    if (this.footprint() + SLAB_SLACK_BYTES <= this.maxMemory) return false;
    return !this.heldUnderMargin(0, 0);
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
      evictionPolicy: this.eviction,
    };
  }

  /**
   * Before a value of `length` is stored under `key` (`handle`: its entry, or -1): evicts values
   * while the footprint would pass the cap, or throws OUT_OF_MEMORY when the policy is
   * `noeviction` or nothing left to evict can make room. Returns the key's handle afterwards (-1
   * when it had none, or when its own value was evicted with a slab).
   *
   * Eviction is incremental: first values of the new entry's size class (each frees an item the
   * entry can take: one eviction per write in a steady state); only when that class holds no other
   * value, the values of the last slab of the class holding the most memory, whose slab is then
   * released (at most 256 KiB / item size values, and only on that path).
   */
  private makeRoom(key: Uint8Array, length: number, handle: number): number {
    const arena = this.arena;
    if (handle >= 0 && arena.fitsInPlace(handle, length)) return handle;
    const keyLength = key.byteLength;
    const scoped = this.scoped;
    for (;;) {
      const needed = arena.growthFor(keyLength, length, handle < 0);
      if (
        arena.reservedBytes + needed <= this.maxMemory ||
        (scoped
          ? needed === 0 && this.heldWithin(keyLength + length, 1, this.maxMemory)
          : this.fitsInFreedRoom(needed, keyLength + length))
      ) {
        if (this.degraded !== '') this.degraded = '';
        return handle;
      }
      if (!this.evicting) throw this.outOfMemory(length);
      // Scoped: the other heads' keys the walk passes go to the young end (this node never evicts
      // them; their heads do): the next write's walk starts past them. Without, a walk examined
      // tens of them per write (16% of a node's busy time at 100-byte values).
      const victim = arena.victimFor(
        keyLength + length,
        this.lru,
        handle,
        scoped ? this.headedHere : undefined,
        scoped,
      );
      if (victim >= 0) {
        this.evict(victim);
        continue;
      }
      if (scoped) {
        // Nothing of its size this node may evict (other heads' keys and tombstones fill it: past
        // its cap it says so, and they evict for it): half the headroom takes the write meanwhile.
        // Donor slabs are not an option: they hold other heads' keys.
        if (
          arena.reservedBytes + needed <= this.maxMemory + this.headroomBytes / 2 &&
          this.heldWithin(keyLength + length, 1, this.maxMemory + this.headroomBytes / 4)
        )
          return handle;
        throw this.outOfMemory(length);
      }
      const donor = arena.donorFor(keyLength + length);
      if (donor < 0) throw this.outOfMemory(length);
      for (const value of arena.donorVictims(donor)) this.evict(value);
      arena.releaseDonorSlab(donor);
      if (handle >= 0 && !arena.isLive(handle)) handle = -1;
    }
  }

  /**
   * Whether a client write that needs no new slab (`needed` 0: free items of its classes take it)
   * may go in although the footprint is past the cap, where entries replicated from other heads can
   * take a chain member (PLACEMENT_HEADROOM): when deletes freed room, the entries held (counted as
   * {@link assertCapacity} counts a write: class rounding and metadata per handle) being an eighth
   * under the cap. Without that margin the free items of a slab the headroom allocated would admit
   * writes whose chain members then need the headroom again, and the cap would creep.
   */
  private fitsInFreedRoom(needed: number, bytes: number): boolean {
    return needed === 0 && this.heldUnderMargin(bytes, 1);
  }

  /**
   * Whether what the engine holds, with `bytes` more in `keys` more entries (counted by
   * {@link heldBytes}), is at least the placement headroom under the cap: where a node past its
   * cap takes client writes again ({@link fitsInFreedRoom}) and stops saying it is full
   * ({@link pastClientRoom}).
   */
  private heldUnderMargin(bytes: number, keys: number): boolean {
    return this.heldWithin(bytes, keys, this.maxMemory - this.headroomBytes);
  }

  /** Whether what the engine holds, with `bytes` more in `keys` more entries, is at most `limit` ({@link heldBytes}). */
  private heldWithin(bytes: number, keys: number, limit: number): boolean {
    const arena = this.arena;
    return heldBytes(this.keyBytes + arena.valueBytes + bytes, arena.size + keys) <= limit;
  }

  /** Evicts the value under `handle`; a scoped engine tells its scope first, at a new version. */
  private evict(handle: number): void {
    if (this.scoped) this.scope!.evicted(this.arena.key(handle), this.clock.next());
    this.remove(handle);
    this.evictions++;
  }

  private outOfMemory(bytes: number, limit = this.maxMemory): StorageEngineError {
    this.refusedWrites++;
    const why =
      this.eviction === 'noeviction'
        ? 'and the eviction policy is noeviction'
        : `and no value is left to evict (${this.eviction}; tombstones are never evicted)`;
    const bound =
      limit === this.maxMemory
        ? `the memory cap of ${this.maxMemory} bytes`
        : `the memory cap of ${this.maxMemory} bytes and its headroom for replicated and copied entries (${limit} bytes)`;
    const message = `cannot store ${bytes} more bytes: ${bound} is reached (${this.footprint()} bytes used) ${why}`;
    this.degraded = `out of memory: the memory cap of ${this.maxMemory} bytes is reached ${why}`;
    return new StorageEngineError('OUT_OF_MEMORY', message);
  }

  /** The handle of `key`'s entry, or -1; keys no engine could store are simply absent. */
  private find(key: Uint8Array): number {
    return key.byteLength === 0 || key.byteLength > MAX_KEY_BYTES ? -1 : this.arena.find(key);
  }

  /**
   * The handle of `key`'s live value, or -1 (absent, tombstone, expired). An expired value is
   * reclaimed on the spot. The clock is read only for a value that has an expiry time.
   */
  private findLive(key: Uint8Array, now?: number): number {
    const handle = this.find(key);
    if (handle < 0 || this.arena.isTombstone(handle)) return -1;
    const expireAt = this.arena.expireAt(handle);
    if (expireAt === 0 || !isExpired(expireAt, now ?? Date.now())) return handle;
    this.reclaim(handle);
    return -1;
  }

  /** Reclaims an expired value: a tombstone with its version when its key must keep one, else nothing. */
  private reclaim(handle: number): void {
    const arena = this.arena;
    if (this.retainExpired(arena.key(handle))) {
      this.tombstones++;
      arena.replaceWithTombstone(handle, arena.writeEpoch(handle), arena.version(handle));
    } else this.remove(handle);
  }

  private headerOf(handle: number): EntryHeader {
    const arena = this.arena;
    return {
      writeEpoch: arena.writeEpoch(handle),
      version: arena.version(handle),
      expireAt: arena.expireAt(handle),
      tombstone: arena.isTombstone(handle),
    };
  }

  /** Removes the entry under `handle`; returns whether it held a value. */
  private remove(handle: number): boolean {
    const wasTombstone = this.arena.isTombstone(handle);
    if (wasTombstone) this.tombstones--;
    this.keyBytes -= this.arena.keyLength(handle);
    this.arena.free(handle);
    return !wasTombstone;
  }
}
