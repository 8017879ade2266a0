export { type BinaryLike, LatencyHistogram, type LatencySummary } from '@dstore/protocol';
export {
  type ClientEvents,
  type ClientStatus,
  type CommandOptions,
  createClient,
  DstoreClient,
  type MSetEntries,
  type StatsRecord,
} from './client.js';
export { closeDefaultClient, DEFAULT_DSTORE_URL, dget, dset, getDefaultClient } from './compat.js';
export { DstoreError, ErrorCode, isKnownErrorCode, isSafeToRetry, ProtocolError } from './errors.js';
export { OfflineQueue, type QueueEntry } from './offline-queue.js';
export {
  type ClientOptions,
  DEFAULT_CLIENT_OPTIONS,
  defaultRetryStrategy,
  parseDstoreUrl,
  type ResolvedClientOptions,
  type ResolvedServerAddress,
  resolveClientOptions,
  type ServerAddress,
} from './options.js';
