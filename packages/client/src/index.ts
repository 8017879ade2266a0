/**
 * `@dstore/client`: the Node.js client of dstore. Create one with {@link createClient}.
 *
 * This is the whole public API. The offline queue and option resolution are internals: they
 * change without a major release.
 *
 * @packageDocumentation
 */
export type { BinaryLike, LatencySummary } from '@dstore/protocol';
export {
  classifyError,
  DstoreError,
  type ErrorClass,
  ErrorCode,
  isKnownErrorCode,
  isRetryable,
  isSafeToResend,
  ProtocolError,
} from '@dstore/protocol';
export {
  type BitPosRange,
  type BitRange,
  type ClientEvents,
  type ClientStatus,
  type CommandOptions,
  createClient,
  type DelOptions,
  DstoreClient,
  type ExpireOptions,
  type GetExOptions,
  type MSetEntries,
  type ScanOptions,
  type ScanPage,
  type SetOptions,
  type StatsRecord,
  type VersionedValue,
} from './client.js';
export { closeDefaultClient, DEFAULT_DSTORE_URL, dget, dset, getDefaultClient } from './compat.js';
export type { DirectRoutingStats } from './direct-router.js';
export { isSafeToRetry, VersionConflictError } from './errors.js';
export {
  type ClientArguments,
  type ClientOptions,
  DEFAULT_CLIENT_OPTIONS,
  defaultRetryStrategy,
  type RoutingMode,
  type ServerAddress,
} from './options.js';
/**
 * The builder of `DstoreClient.transaction(key)` (a transaction on one key), the options of its
 * `exec`, the shape of what `exec` resolves, and the options its steps take.
 */
export type {
  StepOptions,
  Transaction,
  TransactionOptions,
  TransactionResults,
} from './transaction.js';
