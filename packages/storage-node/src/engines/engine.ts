import { type LmdbDurability, LmdbEngine } from './lmdb-engine.js';
import { type EvictionPolicy, MemoryEngine } from './memory-engine.js';
import type { VersionClock } from './version-clock.js';

/**
 * The version header every stored entry carries.
 *
 * `writeEpoch` orders the writes of one key across nodes: it is the ring epoch at which the
 * key's owner accepted the write. Within one ring epoch only one node accepts writes for a key,
 * and a new owner learns the new ring (a higher epoch) before it receives writes for its new
 * ranges while the old owner refuses them from then on; so an entry with a greater writeEpoch is
 * newer, and a migrated copy whose writeEpoch is not greater than the local entry's is never
 * newer than it.
 */
export interface EntryVersion {
  /** Ring epoch at which the owner accepted the client write (uint32; 0 before any RING). */
  readonly writeEpoch: number;
  /**
   * The entry's version (an integer below 2^53), what compare-and-set compares: issued by the
   * owner's {@link VersionClock} for every client write of the key (value, expiry change or
   * delete), so it never repeats for the key (see the protocol README, "Versions"). A migrated
   * copy keeps the old owner's. 0 only for an entry stored without one (tests).
   */
  readonly version: number;
}

/**
 * When a value expires: an absolute time in ms since the Unix epoch on the clock of the node that
 * stores it (0 = never). A value whose time has come is gone for every client-facing read, and
 * is reclaimed on access or by {@link StorageEngine.sweepExpired}.
 */
export interface Expiring {
  /** Expiry time (ms since the Unix epoch); 0 = none. Always 0 for a tombstone. */
  readonly expireAt: number;
}

/** Whether an entry with expiry time `expireAt` is expired at `now` (ms since the Unix epoch). */
export function isExpired(expireAt: number, now: number): boolean {
  return expireAt !== 0 && expireAt <= now;
}

/** An entry's header: its version, its expiry time and whether it is a tombstone rather than a value. */
export interface EntryHeader extends EntryVersion, Expiring {
  /** A tombstone records a delete; it is invisible to clients (no value, not counted). */
  readonly tombstone: boolean;
}

/**
 * What {@link StorageEngine.update} does to the key once its `decide` saw the current entry:
 * - `none`: nothing is written;
 * - `put`: stores `value` with `expireAt` (0 = none) as a client write;
 * - `expire`: keeps the value, sets its expiry time (0 = persist) as a client write;
 * - `delete`: removes the value (a tombstone when the update asked for one).
 * Every write takes the update's writeEpoch and the version `decide` was given.
 */
export type Mutation =
  | { readonly kind: 'none' }
  | { readonly kind: 'put'; readonly value: Uint8Array; readonly expireAt: number }
  | { readonly kind: 'expire'; readonly expireAt: number }
  | { readonly kind: 'delete' };

/** The outcome of a `decide` callback: the write to make and what the update resolves to. */
export interface Decision<T> {
  readonly mutation: Mutation;
  readonly result: T;
}

/**
 * The index past the run of entries from `start` that one write made: a write of several keys
 * (a transaction on keys of one hash tag, {@link StorageEngine.updateMany}) gives each the same
 * `(writeEpoch, version)`, which no other write of those keys' head shares, so the replication
 * stream and the engines keep such a run together (two writes of different heads that happen to
 * share both are only kept together too).
 */
export function writeEndAt(entries: readonly EntryVersion[], start: number): number {
  const first = entries[start]!;
  let end = start + 1;
  while (
    end < entries.length &&
    entries[end]!.version === first.version &&
    entries[end]!.writeEpoch === first.writeEpoch
  )
    end++;
  return end;
}

/**
 * The outcome of a `decide` callback over several keys ({@link StorageEngine.updateMany}): one
 * mutation per key, in the order of the keys, and what the update resolves to.
 */
export interface ManyDecision<T> {
  readonly mutations: readonly Mutation[];
  readonly result: T;
}

/**
 * The decision of an {@link StorageEngine.updateMany}: on every key's live entry (in the order of
 * the keys), the time and the version the write takes, one mutation per key and the result.
 */
export type ManyDecider<T> = (
  current: readonly (VersionedValue | undefined)[],
  now: number,
  version: number,
) => ManyDecision<T>;

/** How {@link StorageEngine.updateMany} writes: {@link UpdateOptions}, per key where they differ. */
export interface ManyUpdateOptions {
  /** Ring epoch at which the owner accepted the client write (uint32). */
  readonly writeEpoch: number;
  /** Per key: a `delete` leaves a tombstone (the key's range is moving in). */
  readonly tombstones: readonly boolean[];
  /** Per key: bytes of the largest value its mutation may write, undefined when it stores none. */
  readonly valueBytes: readonly (number | undefined)[];
}

/** How {@link StorageEngine.update} writes. */
export interface UpdateOptions {
  /** Ring epoch at which the owner accepted the client write (uint32). */
  readonly writeEpoch: number;
  /** A `delete` leaves a tombstone (the key's range is moving in) instead of removing the entry. */
  readonly tombstone: boolean;
  /**
   * Bytes of the largest value the mutation may write (0: a small one, like a counter): what the
   * space check counts before the write (see `assertCapacity`). Undefined: the mutation stores no
   * value (a delete, an expiry change), which a replicating head lets through while a member of
   * the key's chain is out of room (see `ReplicationService.write`).
   */
  readonly valueBytes?: number | undefined;
}

/** One entry of a scan: its key (a copy the caller owns) and header. */
export interface ScannedEntry extends EntryHeader {
  readonly key: Uint8Array;
}

/** A live value with its version and expiry time. */
export interface VersionedValue extends EntryVersion, Expiring {
  /** Same ownership rules as {@link StorageEngine.get}. */
  readonly value: Uint8Array;
}

/** A key, value, version and expiry time to store as they are (a migrated or replicated copy). */
export interface VersionedEntry extends EntryVersion {
  readonly key: Uint8Array;
  /** Same ownership rules as {@link StorageEngine.get}. Ignored for a delete. */
  readonly value: Uint8Array;
  /** Expiry time (ms since the Unix epoch); absent or 0 = none. */
  readonly expireAt?: number | undefined;
  /**
   * A replicated delete: when newer than the key's entry, it removes that entry (leaving nothing,
   * as the head's delete did) instead of storing a value.
   */
  readonly deleted?: boolean | undefined;
  /**
   * With `deleted`: the newer delete leaves a tombstone with its writeEpoch and version instead
   * of nothing (a chain member's replicated delete: a re-sent older write must not bring the key
   * back). Invisible to clients like every tombstone.
   */
  readonly tombstone?: boolean | undefined;
}

/**
 * Whether an entry `(writeEpoch, version)` is newer than `(otherEpoch, otherVersion)`: the
 * writeEpoch first (writes of a later owner win, see {@link EntryVersion}), then the version (the
 * writes of one owner within one epoch, which its clock orders). The one comparison of
 * `applyIfNewer` in every engine.
 */
export function isNewerEntry(
  writeEpoch: number,
  version: number,
  otherEpoch: number,
  otherVersion: number,
): boolean {
  return writeEpoch > otherEpoch || (writeEpoch === otherEpoch && version > otherVersion);
}

/** Options of {@link StorageEngine.entriesInRange}. */
export interface ScanOptions {
  /** Include tombstones (default false: only live values, as a migration must send). */
  readonly tombstones?: boolean;
}

/** One page of {@link StorageEngine.scan}. */
export interface ScanPage {
  /** Where the next page starts; 0 when the iteration is complete. */
  readonly cursor: number;
  /** Keys holding a value that `accept` took (copies the caller may keep). */
  readonly keys: Uint8Array[];
}

/**
 * The storage condition of an engine, for health and metrics (node STATS `storage.*`, HEARTBEAT,
 * the balancer's `/ring`).
 */
export interface StorageHealth {
  /** Bytes the engine's data occupies as its limit counts them (lmdb: pages in use; memory: footprint). */
  readonly usedBytes: number;
  /** Bytes it can still take before writes are refused (the limit, or the free disk, less what is used). */
  readonly availableBytes: number;
  /** The limit in force (lmdb `mapSize`, memory `maxMemory`); 0 when only the disk or the machine bounds it. */
  readonly limitBytes: number;
  /**
   * '' when writes are accepted; otherwise why they are refused or failing (for example
   * `out of space: map-size limit reached`). Cleared once a write succeeds again or space is freed.
   */
  readonly degraded: string;
  /** Writes refused for lack of space or memory since open (OUT_OF_SPACE / OUT_OF_MEMORY). */
  readonly refusedWrites: number;
  /** Writes that failed in the storage itself since open (ENGINE_IO). */
  readonly failedWrites: number;
  /** Keys evicted to make room since open (memory engine with an eviction policy). */
  readonly evictions: number;
  /** What a write past the limit does (Redis's `maxmemory-policy` names): `noeviction` for lmdb. */
  readonly evictionPolicy: 'noeviction' | 'allkeys-lru' | 'allkeys-random';
}

/**
 * Which values an evicting engine may evict, and where its evictions go. With replication every
 * member of a chain must hold the same keys, so only the chain's head evicts, and each eviction
 * goes down the chain (the members drop the key); members evict nothing for what they are sent.
 */
export interface EvictionScope {
  /** Whether evictions follow this scope now (a replication factor above 1); when not, any value may go. */
  readonly active: boolean;
  /** Whether the value under `key` (a view valid for the call) may be evicted now: this node heads its chain. */
  mayEvict(key: Uint8Array): boolean;
  /** The value under `key` (a view valid for the call) is being evicted, at `version`: send it down the chain. */
  evicted(key: Uint8Array, version: number): void;
}

/**
 * A storage engine holds binary keys and values, each with a version header
 * ({@link EntryVersion}), and tombstones.
 *
 * Keys must be 1..MAX_KEY_BYTES (1978) bytes in every engine. Values may be any length,
 * including empty.
 *
 * A **tombstone** is what a delete leaves while the key's range is moving into the node: it keeps
 * the delete's version so that a migrated copy cannot resurrect the key. Tombstones are invisible
 * to every client-facing read: `get`/`has` see no entry, `count` and `keysInRange` skip them, and
 * `delete` reports that no value existed. Only `header`, `entriesInRange` with
 * `{ tombstones: true }`, `tombstoneCount` and the version comparisons of `applyIfNewer` see them.
 *
 * Every write method applies its writes atomically, in the order the methods were called: a
 * crash leaves each call's writes all applied or none (lmdb: one transaction).
 */
export interface StorageEngine {
  /** Which implementation this is. */
  readonly kind: 'memory' | 'lmdb';
  /** The node-wide version clock every client write of this engine takes its version from. */
  readonly clock: VersionClock;
  /**
   * Value or undefined (also for a tombstone). Synchronous: the hot path must not pay a promise
   * per read. Ownership differs per engine: memory returns a view valid until the next write to
   * the engine, lmdb a fresh copy. Callers that keep a value beyond the current tick must copy it.
   */
  get(key: Uint8Array): Uint8Array | undefined;
  /** Whether the key holds a value (a tombstone does not count). */
  has(key: Uint8Array): boolean;
  /** The value and version of a live entry, or undefined (absent or tombstone). Value as in {@link get}. */
  getEntry(key: Uint8Array): VersionedValue | undefined;
  /** The header of the key's entry, value or tombstone, or undefined when there is none. */
  header(key: Uint8Array): EntryHeader | undefined;
  /**
   * Stores `value` as a client write accepted at `writeEpoch` (uint32, default 0) expiring at
   * `expireAt` (ms since the Unix epoch, default 0 = never), replacing a value or a tombstone in
   * one write, with the next version of {@link clock}. Resolves once ACKNOWLEDGED as defined by
   * the engine (lmdb: durable = flushed to disk by default).
   */
  set(key: Uint8Array, value: Uint8Array, writeEpoch?: number, expireAt?: number): Promise<void>;
  /**
   * Only on engines whose writes are acknowledged as soon as they are applied (memory): the write
   * of {@link set} (no expiry), applied and acknowledged before it returns; throws what `set`
   * would reject with. Lets the hot path answer a SET without a promise and a microtask per write.
   */
  setNow?(key: Uint8Array, value: Uint8Array, writeEpoch: number): void;
  /**
   * Only on engines that have {@link setNow}: {@link delete}, applied and acknowledged before it
   * returns; whether a value existed. Throws what `delete` would reject with.
   */
  deleteNow?(key: Uint8Array): boolean;
  /**
   * The one read-modify-write of every engine: `decide` is called with the key's live entry (a
   * copy of its value the callback may keep; undefined when absent, a tombstone or expired) and
   * the engine's clock, and the version its write takes (the next of {@link clock}: a decision
   * that answers the new version, such as a compare-and-set's, knows it; one that writes nothing
   * leaves a gap, which is harmless); its mutation is applied in the same atomic step, after every
   * write issued before this call and before every write issued after it (lmdb: inside the write
   * transaction; memory: synchronously). Resolves to the decision's result once the write is
   * acknowledged like set. `decide` must not throw and must not call the engine.
   */
  update<T>(
    key: Uint8Array,
    options: UpdateOptions,
    decide: (current: VersionedValue | undefined, now: number, version: number) => Decision<T>,
  ): Promise<T>;
  /**
   * Only on engines that have {@link setNow}: {@link update}, applied and acknowledged before it
   * returns its decision's result; throws what `update` would reject with. Lets a replicating
   * head park a write without a promise and a microtask per write.
   */
  updateNow?<T>(
    key: Uint8Array,
    options: UpdateOptions,
    decide: (current: VersionedValue | undefined, now: number, version: number) => Decision<T>,
  ): T;
  /**
   * {@link update} over several distinct keys at once (a transaction on keys of one hash tag):
   * `decide` sees every key's live entry (in the order of `keys`) and answers one mutation per
   * key; they are applied together, all with one version, or none of them (a refusal such as
   * OUT_OF_MEMORY or OUT_OF_SPACE applies nothing): a reader never sees some applied and not the
   * others. lmdb: one write transaction, acknowledged like {@link set} (a crash keeps all or none).
   */
  updateMany<T>(keys: readonly Uint8Array[], options: ManyUpdateOptions, decide: ManyDecider<T>): Promise<T>;
  /** Only on engines that have {@link updateNow}: {@link updateMany}, applied before it returns. */
  updateManyNow?<T>(keys: readonly Uint8Array[], options: ManyUpdateOptions, decide: ManyDecider<T>): T;
  /**
   * Reclaims expired values, examining at most `maxEntries` entries from where the previous call
   * stopped (wrapping around), so that one call's work is bounded. An expired value whose key
   * `retainExpired` names becomes a tombstone with its version instead of vanishing. Resolves to
   * the number reclaimed.
   */
  sweepExpired(maxEntries: number): Promise<number>;
  /**
   * Keys whose expired value must leave a tombstone when it is reclaimed (on access or by the
   * sweep): those of ranges moving in, where a migrated copy, older than the expired value, could
   * otherwise bring the key back. Default: none.
   */
  setRetainExpired(predicate: (key: Uint8Array) => boolean): void;
  /**
   * Only on engines that evict (memory with an eviction policy): see {@link EvictionScope}. Default:
   * none (any value may be evicted, as with factor 1).
   */
  setEvictionScope?(scope: EvictionScope | undefined): void;
  /**
   * Only on engines that evict, with an active {@link EvictionScope}: evicts one value of the size
   * class an entry of `total` bytes takes, among those `accept` takes (keys the scope may evict,
   * of one chain's write path), telling the scope as any eviction. Lets a head make room on a
   * member of that path that is past its cap. Whether a value went.
   */
  evictFor?(total: number, accept: (key: Uint8Array) => boolean): boolean;
  /**
   * Removes the entry, value or tombstone. Resolves to whether a value existed (a tombstone does
   * not count); acknowledged like set.
   */
  delete(key: Uint8Array): Promise<boolean>;
  /**
   * A client delete accepted at `writeEpoch` that must outlive a migration: replaces the entry
   * (value, tombstone or none) by a tombstone with that writeEpoch and the next version. Resolves to
   * whether a value existed; acknowledged like set.
   */
  tombstone(key: Uint8Array, writeEpoch: number): Promise<boolean>;
  /**
   * Stores each copy, with its version unchanged, only when the key has no entry or the copy is
   * newer than the entry (value or tombstone; {@link isNewerEntry}: writeEpoch, then version); the
   * others are skipped. A newer copy that is a delete, or already expired, removes the entry. All in
   * one atomic write, checked against the entries as they are when it applies (so a client write
   * issued before this call is compared with, never overwritten). Every copy's version, stored or
   * skipped, raises {@link clock} (so this node's later writes of the key are above it). Resolves
   * to the number stored, once acknowledged like set. Values are copied before the call returns.
   * Room: checked against the client writes' limit plus a headroom of an eighth (these entries were
   * admitted elsewhere, see {@link pastClientRoom}); deletes in the batch are never refused for room.
   */
  applyIfNewer(entries: readonly VersionedEntry[]): Promise<number>;
  /**
   * Deletes those of `keys` that are tombstones with `writeEpoch <= maxWriteEpoch` (values and
   * newer tombstones stay), in one atomic write. Resolves to the number removed.
   */
  removeTombstones(keys: readonly Uint8Array[], maxWriteEpoch: number): Promise<number>;
  /**
   * Deletes those of `keys` whose entry, value or tombstone, has `writeEpoch <= maxWriteEpoch`
   * (newer entries stay: a write made since), in one atomic write. Resolves to the number of
   * entries removed. A returning replica's stale copies of ranges it is about to be copied again.
   */
  removeUpTo(keys: readonly Uint8Array[], maxWriteEpoch: number): Promise<number>;
  /**
   * Removes every entry (values, tombstones, expired values) in one atomic write; resolves to the
   * number of live values removed (FLUSHALL). The clock is unaffected, so a key written again
   * later has a version above any it had.
   */
  clear(): Promise<number>;
  /** Number of keys holding a value (tombstones excluded). */
  count(): number;
  /** Number of tombstones. */
  tombstoneCount(): number;
  /** Bytes of keys+values held (exact for memory, approximate for lmdb: see `LmdbEngine.bytesUsed`). */
  bytesUsed(): number;
  /**
   * Keys holding a value whose `position(key)` falls in the ring range (start, end] (wrapping
   * when start >= end; start === end is the whole ring).
   */
  keysInRange(
    range: { start: number; end: number },
    position: (key: Uint8Array) => number,
  ): Iterable<Uint8Array>;
  /**
   * Like {@link keysInRange}, with each key's header; tombstones only with
   * `{ tombstones: true }`. Used by key migration (MIGRATE sends values, PURGE also ends
   * tombstones). Keys are copies the caller may keep.
   */
  entriesInRange(
    range: { start: number; end: number },
    position: (key: Uint8Array) => number,
    options?: ScanOptions,
  ): Iterable<ScannedEntry>;
  /**
   * One page of an iteration over the keys holding a value, started with cursor 0 and complete
   * when 0 comes back. Every key that holds a value for the whole iteration is returned at least
   * once, whatever is written between pages; keys written or deleted meanwhile may or may not be,
   * and a key may come twice. `count` bounds the work of a call (about that many entries examined),
   * so a page may hold nothing and still have a next cursor. `accept` filters keys before they are
   * copied (it sees a view valid during the call). Cursors are at most `MAX_SCAN_CURSOR` (2^30 - 1).
   * An lmdb cursor names an iteration the engine keeps (the last key it returned): after 1,024
   * newer iterations, or a restart, it is forgotten and the call throws `SCAN_EXPIRED`.
   */
  scan(cursor: number, count: number, accept: (key: Uint8Array) => boolean): ScanPage;
  /**
   * Throws `OUT_OF_SPACE` (lmdb) or `OUT_OF_MEMORY` (memory, no eviction possible) when `bytes` of
   * new keys and values certainly cannot be stored now, so that a batch is refused whole before
   * any of it is written. Each write checks again for itself.
   */
  assertCapacity(bytes: number): void;
  /** Used and available bytes and whether writes are being refused; cheap enough for every STATS. */
  health(): StorageHealth;
  /**
   * Whether this engine is past the room its client writes are admitted against (memory: the
   * cap, with no eviction policy; lmdb: the map size or the disk's room): it would refuse a new
   * value. A chain member tells its head so in every REPLICATED, and the head stops admitting
   * values of that chain; entries the cluster places here (`applyIfNewer`) may still go an eighth
   * further, so that what was in flight is not refused. Cheap: called once per REPLICATE answered.
   */
  pastClientRoom(): boolean;
  /** Every pending acknowledged write is durable when this resolves. */
  flush(): Promise<void>;
  /** Flushes and releases resources; any later call fails with `ENGINE_CLOSED`. Idempotent. */
  close(): Promise<void>;
}

/** Options selecting the non-durable in-memory engine. */
export interface MemoryEngineOptions {
  readonly engine: 'memory';
  /** Cap on the engine's memory footprint in bytes (see `MemoryEngine`); 0 (default) = none. */
  readonly maxMemory?: number;
  /** What a write past `maxMemory` does. Default `noeviction` (it fails with OUT_OF_MEMORY). */
  readonly eviction?: EvictionPolicy;
}

/** Options selecting the durable LMDB engine. */
export interface LmdbOpenOptions {
  readonly engine: 'lmdb';
  /** Directory holding the LMDB files; created if missing. */
  readonly dataDir: string;
  /** When writes are acknowledged (default `flush`: only once fsync'ed). */
  readonly durability?: LmdbDurability;
  /** Most bytes the data may occupy (see `LmdbEngineOptions.mapSize`); 0 (default) = the disk's room. */
  readonly mapSize?: number;
}

/** Options of {@link openEngine}. */
export type EngineOptions = MemoryEngineOptions | LmdbOpenOptions;

/** Opens the selected engine (creating the LMDB data directory if needed). */
export async function openEngine(options: EngineOptions): Promise<StorageEngine> {
  if (options.engine === 'memory') {
    return new MemoryEngine({
      maxMemory: options.maxMemory ?? 0,
      eviction: options.eviction ?? 'noeviction',
    });
  }
  return LmdbEngine.open({
    dataDir: options.dataDir,
    durability: options.durability ?? 'flush',
    mapSize: options.mapSize ?? 0,
  });
}
