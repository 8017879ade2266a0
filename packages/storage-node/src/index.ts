/**
 * dstore storage node: a TCP server holding keys in memory or durably on LMDB, registering with
 * a balancer. Start one with {@link createStorageNode} or the `dstore-node` CLI.
 *
 * This is the whole public API. The request handler, the engines' classes, ownership and migration
 * are internals: they change without a major release.
 *
 * @packageDocumentation
 */
export type {
  EntryHeader,
  EntryVersion,
  EvictionPolicy,
  EvictionScope,
  LmdbDurability,
  ScannedEntry,
  ScanOptions,
  StorageEngine,
  StorageEngineErrorCode,
  VersionedEntry,
  VersionedValue,
} from './engines/index.js';
export { isStorageEngineError, StorageEngineError, type VersionClock } from './engines/index.js';
export type { BalancerAddress } from './membership.js';
export { DEFAULT_NODE_PORT, type EngineKind, type StorageNodeOptions } from './options.js';
export { createStorageNode, type StorageNode } from './storage-node.js';
