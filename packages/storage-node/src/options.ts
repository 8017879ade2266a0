import { hostname } from 'node:os';
import {
  clusterSecretOption,
  DEFAULT_AUTH_FAILURE_LIMIT,
  DEFAULT_AUTH_FAILURE_WINDOW_MS,
  DEFAULT_AUTH_PACE_MS,
  DstoreError,
  ErrorCode,
  type PeerTlsOptions,
  type ProtocolLimits,
} from '@dstore/protocol';
import { DEFAULT_CLIENT_OUTPUT_BUDGET_BYTES, parseAddressList } from '@dstore/protocol/internal';
import type { Logger } from 'pino';
import type { EvictionPolicy, LmdbDurability } from './engines/index.js';
import type { BalancerAddress } from './membership.js';

/** Engines a node can run on. */
export type EngineKind = 'memory' | 'lmdb';

/** Default TCP port of a storage node (cluster convention). */
export const DEFAULT_NODE_PORT = 7400;

/** Options of {@link createStorageNode}. Every field has a documented default except `dataDir` for lmdb. */
export interface StorageNodeOptions {
  /**
   * Node id: the name the balancer's ring uses and the `serverId` answered to HELLO. Keep it
   * stable across restarts (a restarted node with the same id and data dir owns the same keys).
   * Default `node-<hostname>-<port>`, where port is the configured port, or the bound one when
   * the configured port is 0 (then it changes on every start: pass an id).
   */
  readonly id?: string;
  /** Address to bind. Default '127.0.0.1'. */
  readonly host?: string;
  /** Port to bind; 0 picks a free one. Default 7400. */
  readonly port?: number;
  /** Storage engine. Default 'memory'. */
  readonly engine?: EngineKind;
  /**
   * Directory of the LMDB files and of the node's identity file (`node-identity`, see
   * `StorageNode.identity`). Required when `engine` is 'lmdb'.
   */
  readonly dataDir?: string;
  /** When lmdb acknowledges a write: 'flush' (on disk, default) or 'commit'. See ENGINES.md. */
  readonly durability?: LmdbDurability;
  /**
   * lmdb: most bytes the data may occupy (B-tree pages in use; deletes give room back); writes
   * past it fail with OUT_OF_SPACE while reads and deletes go on. Default 0: no fixed limit, the
   * data grows while the filesystem has room, less a reserve of 2% (256 KiB..64 MiB) kept for deletes.
   */
  readonly mapSize?: number;
  /**
   * memory: cap on the engine's footprint in bytes (the slabs holding keys with their values, the
   * per-key metadata and the key index; RSS is this plus a fixed overhead, see ENGINES.md). Default 0: no cap.
   */
  readonly maxMemory?: number;
  /** memory: what a write past `maxMemory` does. Default 'noeviction' (OUT_OF_MEMORY). */
  readonly eviction?: EvictionPolicy;
  /** Ring weight announced in JOIN. Default 1. */
  readonly weight?: number;
  /**
   * Balancer `host:port` to register with (JOIN, HEARTBEAT, LEAVE), or several comma-separated
   * (`10.0.0.1:7379,10.0.0.2:7379`) for failover: the node registers with one at a time and moves
   * to the next when it cannot reach or loses the current one. Default: none (standalone). Give
   * this or `balancers`, not both.
   */
  readonly join?: string;
  /**
   * The balancers to register with, in failover order: the object form of `join`. Default: none
   * (standalone). Give this or `join`, not both.
   */
  readonly balancers?: readonly BalancerAddress[];
  /**
   * Host the balancer should dial, announced in JOIN. Default: `host`, or '127.0.0.1' when
   * `host` is a wildcard address ('0.0.0.0', '::').
   */
  readonly advertiseHost?: string;
  /** Password of the one read-write user `default` that clients connecting here prove. Default: none. */
  readonly token?: string;
  /** A users file (see the balancer README, "Users"); reloaded by {@link StorageNode.reloadUsers}. */
  readonly usersFile?: string;
  /**
   * The cluster secret (at least 16 characters), proved to and by balancers and other nodes by
   * challenge-response; only authenticated peers may send RING, MIGRATE, MIGRATE_PUT and PURGE.
   * Default: none (peers accepted from loopback only, see `protectedMode`).
   */
  readonly clusterSecret?: string;
  /**
   * Protected mode (default true): without a cluster secret, peers are accepted only from
   * loopback addresses; without users, clients too.
   */
  readonly protectedMode?: boolean;
  /** A connection must authenticate within this many ms of connecting. Default 5000. */
  readonly authTimeoutMs?: number;
  /**
   * Failed client authentications from one source address within `authFailureWindowMs` after
   * which every attempt from it is refused at once, without checking a password, for one window
   * (the right password too). Default 0: never (a lockout refuses every client at the address, so
   * one client left with a stale password would lock its whole host out). As the balancer's
   * `authFailureLimit`; peers (the cluster secret) are not counted.
   */
  readonly authFailureLimit?: number;
  /** Window (ms) failed authentications are counted in, and length of a lockout. Default 60000. */
  readonly authFailureWindowMs?: number;
  /**
   * Pace (ms) of an address with 10 failed client authentications in its window: one attempt per
   * pace, sooner ones refused at once without checking a password. 0: no pacing. Default 1000.
   */
  readonly authPaceMs?: number;
  /**
   * TLS on every hop of this node: its port serves TLS only (plaintext connections get
   * TLS_REQUIRED), and it dials the balancers and, when migrating keys, other nodes with TLS,
   * presenting `cert` as its client certificate and verifying them against `ca`. Default:
   * plaintext.
   */
  readonly tls?: PeerTlsOptions;
  /** Most open connections; the excess get BUSY and are closed. Default 1024. */
  readonly maxConnections?: number;
  /** Close a connection after this many ms without traffic; 0 disables. Default 300000 (5 min). */
  readonly idleTimeoutMs?: number;
  /** A frame that started arriving must be complete within this many ms. Default 10000. */
  readonly frameTimeoutMs?: number;
  /** Most bytes buffered for one connection before it is treated as not reading. Default 16 MiB. */
  readonly maxOutputBytes?: number;
  /**
   * Most bytes waiting to be written to direct clients, every client connection together (as
   * Redis's `maxmemory-clients`): past it the one holding the most is dropped (checked every
   * 100 ms). Peers (balancers, nodes) are not counted. Default 1 GiB.
   */
  readonly maxClientOutputBytes?: number;
  /** Most requests served at once per connection; past it the connection stops reading. Default 1024. */
  readonly maxServing?: number;
  /** Limits enforced on received frames. Default: the protocol's `DEFAULT_LIMITS`. */
  readonly limits?: Partial<ProtocolLimits>;
  /**
   * Interval between HEARTBEATs to the balancer, in ms. Default 500: with replication each
   * heartbeat renews the node's lease (the balancer's `--lease`, default 2000), so it must stay
   * below half of it, with room for a late answer.
   */
  readonly heartbeatIntervalMs?: number;
  /**
   * Longest time `stop()` keeps reading requests that were already sent before it closes the
   * connections, in ms. Default 2000. The drain ends earlier as soon as no request arrived for
   * 50 ms and nothing is being served.
   */
  readonly drainTimeoutMs?: number;
  /**
   * Longest wait, on a graceful stop, for the balancer to answer LEAVE, in ms. The balancer
   * answers once this node's ranges moved to their new owners; the node keeps serving (and
   * streaming them) meanwhile. Default 60000.
   */
  readonly leaveTimeoutMs?: number;
  /**
   * Most keys per second this node streams to one new owner during a key migration (0 =
   * unbounded). Lower keeps client latency flat, higher finishes sooner. Default 5000.
   */
  readonly migrationRateKeysPerSecond?: number;
  /**
   * Replication (a map with a factor above 1, the default): most bytes of keys and values a link
   * to a chain successor holds unacknowledged; past it new writes are refused with BUSY
   * (retryable, not executed). Default 16 MiB.
   */
  readonly replicationQueueBytes?: number;
  /**
   * Replication: deadline of one REPLICATE forward, in ms; a write whose forward is not answered
   * by then fails with TIMEOUT (indeterminate). Default 2000.
   */
  readonly replicationTimeoutMs?: number;
  /** Pino logger. Default: a new pino logger at `logLevel` writing to stderr. */
  readonly logger?: Logger;
  /** Level of the default logger ('fatal'…'trace', 'silent'). Default 'info'. Ignored with `logger`. */
  readonly logLevel?: string;
}

/** {@link StorageNodeOptions} with every default applied and every value checked. */
export interface ResolvedNodeOptions {
  readonly id: string | undefined;
  readonly host: string;
  readonly port: number;
  readonly engine: EngineKind;
  readonly dataDir: string | undefined;
  readonly durability: LmdbDurability;
  readonly mapSize: number;
  readonly maxMemory: number;
  readonly eviction: EvictionPolicy;
  readonly weight: number;
  /** The balancers to register with, in failover order; empty for a standalone node. */
  readonly balancers: readonly BalancerAddress[];
  readonly advertiseHost: string;
  readonly token: string | undefined;
  readonly usersFile: string | undefined;
  readonly clusterSecret: string | undefined;
  readonly protectedMode: boolean;
  readonly authTimeoutMs: number;
  readonly authFailureLimit: number;
  readonly authFailureWindowMs: number;
  readonly authPaceMs: number;
  readonly tls: PeerTlsOptions | undefined;
  readonly maxConnections: number;
  readonly idleTimeoutMs: number;
  readonly frameTimeoutMs: number;
  readonly maxOutputBytes: number;
  readonly maxClientOutputBytes: number;
  readonly maxServing: number;
  readonly limits: Partial<ProtocolLimits> | undefined;
  readonly heartbeatIntervalMs: number;
  readonly drainTimeoutMs: number;
  readonly leaveTimeoutMs: number;
  readonly migrationRateKeysPerSecond: number;
  readonly replicationQueueBytes: number;
  readonly replicationTimeoutMs: number;
}

const WILDCARD_HOSTS = new Set(['0.0.0.0', '::', '']);

function invalid(message: string): DstoreError {
  return new DstoreError(ErrorCode.INVALID_ARGUMENT, message);
}

function integerIn(name: string, value: number, min: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw invalid(`${name} must be an integer from ${min} to ${max}, got ${String(value)}`);
  }
  return value;
}

const EVICTION_POLICIES: ReadonlySet<string> = new Set(['noeviction', 'allkeys-lru', 'allkeys-random']);

/** The balancers from `join` or `balancers` (one of them at most), checked. */
function resolveBalancers(options: StorageNodeOptions): readonly BalancerAddress[] {
  const { join, balancers } = options;
  if (join !== undefined && balancers !== undefined) {
    throw invalid(
      'conflicting options: join and balancers both given; join is the host:port text form of balancers',
    );
  }
  if (join !== undefined) return Object.freeze(parseAddressList(join, { what: 'join' }));
  if (balancers === undefined) return Object.freeze([]);
  if (!Array.isArray(balancers) || balancers.length === 0) {
    throw invalid('balancers must list at least one { host, port } (omit it for a standalone node)');
  }
  return Object.freeze(balancers.map((balancer, i) => checkBalancer(balancer, `balancers[${i}]`)));
}

function checkBalancer(balancer: BalancerAddress, name: string): BalancerAddress {
  if (typeof balancer !== 'object' || balancer === null) throw invalid(`${name} must be { host, port }`);
  if (typeof balancer.host !== 'string' || balancer.host === '') {
    throw invalid(`${name}.host must be a non-empty string, got ${String(balancer.host)}`);
  }
  return Object.freeze({ host: balancer.host, port: integerIn(`${name}.port`, balancer.port, 1, 65_535) });
}

/** Applies defaults and validates; throws DstoreError INVALID_ARGUMENT with a readable message. */
export function resolveNodeOptions(options: StorageNodeOptions): ResolvedNodeOptions {
  const engine = options.engine ?? 'memory';
  if (engine !== 'memory' && engine !== 'lmdb') {
    throw invalid(`engine must be 'memory' or 'lmdb', got '${String(engine)}'`);
  }
  if (engine === 'lmdb' && !options.dataDir) {
    throw invalid('the lmdb engine needs a data directory (dataDir / --data-dir)');
  }
  const durability = options.durability ?? 'flush';
  if (durability !== 'flush' && durability !== 'commit') {
    throw invalid(`durability must be 'flush' or 'commit', got '${String(durability)}'`);
  }
  const eviction = options.eviction ?? 'noeviction';
  if (!EVICTION_POLICIES.has(eviction)) {
    throw invalid(
      `eviction must be 'noeviction', 'allkeys-lru' or 'allkeys-random', got '${String(eviction)}'`,
    );
  }
  // At least 1 MiB when set: less cannot hold the engines' own fixed structures.
  const mapSize = options.mapSize ?? 0;
  if (mapSize !== 0) integerIn('mapSize', mapSize, 2 ** 20, Number.MAX_SAFE_INTEGER);
  const maxMemory = options.maxMemory ?? 0;
  if (maxMemory !== 0) integerIn('maxMemory', maxMemory, 2 ** 20, Number.MAX_SAFE_INTEGER);
  if (options.id !== undefined && !/^[\w.:@-]{1,128}$/.test(options.id)) {
    throw invalid(
      `id must be 1-128 characters of letters, digits, '_', '-', '.', ':' or '@', got '${options.id}'`,
    );
  }
  const weight = options.weight ?? 1;
  if (!Number.isFinite(weight) || weight <= 0)
    throw invalid(`weight must be a positive number, got ${weight}`);
  const host = options.host ?? '127.0.0.1';
  const balancers = resolveBalancers(options);
  return {
    id: options.id,
    host,
    port: integerIn('port', options.port ?? DEFAULT_NODE_PORT, 0, 65_535),
    engine,
    dataDir: options.dataDir,
    durability,
    mapSize,
    maxMemory,
    eviction,
    weight,
    balancers,
    advertiseHost: options.advertiseHost ?? (WILDCARD_HOSTS.has(host) ? '127.0.0.1' : host),
    token: options.token === '' ? undefined : options.token,
    usersFile: options.usersFile === '' ? undefined : options.usersFile,
    clusterSecret: clusterSecretOption(options.clusterSecret),
    protectedMode: options.protectedMode ?? true,
    authTimeoutMs: integerIn('authTimeoutMs', options.authTimeoutMs ?? 5000, 1, 2 ** 31 - 1),
    authFailureLimit: integerIn(
      'authFailureLimit',
      options.authFailureLimit ?? DEFAULT_AUTH_FAILURE_LIMIT,
      0,
      1_000_000,
    ),
    authFailureWindowMs: integerIn(
      'authFailureWindowMs',
      options.authFailureWindowMs ?? DEFAULT_AUTH_FAILURE_WINDOW_MS,
      1,
      2 ** 31 - 1,
    ),
    authPaceMs: integerIn('authPaceMs', options.authPaceMs ?? DEFAULT_AUTH_PACE_MS, 0, 2 ** 31 - 1),
    tls: options.tls,
    maxConnections: integerIn('maxConnections', options.maxConnections ?? 1024, 1, 1_000_000),
    idleTimeoutMs: integerIn('idleTimeoutMs', options.idleTimeoutMs ?? 300_000, 0, 2 ** 31 - 1),
    frameTimeoutMs: integerIn('frameTimeoutMs', options.frameTimeoutMs ?? 10_000, 1, 2 ** 31 - 1),
    maxOutputBytes: integerIn('maxOutputBytes', options.maxOutputBytes ?? 16 * 1024 * 1024, 1024, 2 ** 40),
    maxClientOutputBytes: integerIn(
      'maxClientOutputBytes',
      options.maxClientOutputBytes ?? DEFAULT_CLIENT_OUTPUT_BUDGET_BYTES,
      1,
      2 ** 50,
    ),
    maxServing: integerIn('maxServing', options.maxServing ?? 1024, 1, 1_000_000),
    limits: options.limits,
    heartbeatIntervalMs: integerIn(
      'heartbeatIntervalMs',
      options.heartbeatIntervalMs ?? 500,
      10,
      2 ** 31 - 1,
    ),
    drainTimeoutMs: integerIn('drainTimeoutMs', options.drainTimeoutMs ?? 2000, 0, 2 ** 31 - 1),
    leaveTimeoutMs: integerIn('leaveTimeoutMs', options.leaveTimeoutMs ?? 60_000, 0, 2 ** 31 - 1),
    migrationRateKeysPerSecond: integerIn(
      'migrationRateKeysPerSecond',
      options.migrationRateKeysPerSecond ?? 5000,
      0,
      2 ** 31 - 1,
    ),
    replicationQueueBytes: integerIn(
      'replicationQueueBytes',
      options.replicationQueueBytes ?? 16 * 1024 * 1024,
      1024,
      2 ** 40,
    ),
    replicationTimeoutMs: integerIn(
      'replicationTimeoutMs',
      options.replicationTimeoutMs ?? 2000,
      1,
      2 ** 31 - 1,
    ),
  };
}

/** The default node id for a port: stable as long as the host name and port are. */
export function defaultNodeId(port: number): string {
  return `node-${hostname()}-${port}`;
}
