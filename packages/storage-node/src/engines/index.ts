/**
 * Storage engines of a dstore node: a compact in-memory engine and a durable LMDB engine
 * behind one {@link StorageEngine} interface.
 * @packageDocumentation
 */
export type {
  Decision,
  EngineOptions,
  EntryHeader,
  EntryVersion,
  EvictionScope,
  Expiring,
  LmdbOpenOptions,
  ManyDecider,
  ManyDecision,
  ManyUpdateOptions,
  MemoryEngineOptions,
  Mutation,
  ScannedEntry,
  ScanOptions,
  ScanPage,
  StorageEngine,
  StorageHealth,
  UpdateOptions,
  VersionedEntry,
  VersionedValue,
} from './engine.js';
export { isExpired, isNewerEntry, openEngine, writeEndAt } from './engine.js';
export type { StorageEngineErrorCode } from './errors.js';
export { isStorageEngineError, StorageEngineError } from './errors.js';
export { assertValidKey, inRingRange, MAX_KEY_BYTES, MAX_SCAN_CURSOR } from './keys.js';
export type { LmdbDurability, LmdbEngineOptions, LmdbEngineStats } from './lmdb-engine.js';
export { LMDB_FORMAT, LmdbEngine } from './lmdb-engine.js';
export type { EvictionPolicy, MemoryEngineLimits, MemoryEngineStats } from './memory-engine.js';
export { MemoryEngine } from './memory-engine.js';
export type { SlabArenaStats } from './slab-arena.js';
export { SlabArena } from './slab-arena.js';
export { VERSION_EPOCH_MS, VERSIONS_PER_MS, VersionClock } from './version-clock.js';
