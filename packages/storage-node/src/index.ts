/**
 * dstore storage node: a TCP server holding keys in memory or durably on LMDB, registering with
 * a balancer. Start one with {@link createStorageNode} or the `dstore-node` CLI.
 * @packageDocumentation
 */
export * from './engines/index.js';
export { Membership, type MembershipOptions } from './membership.js';
export {
  DEFAULT_MIGRATION_LIMITS,
  type MigrationCounters,
  type MigrationLimits,
  MigrationService,
} from './migration.js';
export {
  DEFAULT_NODE_PORT,
  defaultNodeId,
  type EngineKind,
  parseByteSize,
  parseHostPort,
  type ResolvedNodeOptions,
  resolveNodeOptions,
  type StorageNodeOptions,
} from './options.js';
export { keyString, Ownership, type PendingMove } from './ownership.js';
export { type OpCounters, RequestHandler, type RequestHandlerContext } from './request-handler.js';
export { createStorageNode, type StorageNode } from './storage-node.js';
