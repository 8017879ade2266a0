import { readFile } from 'node:fs/promises';
import {
  clusterSecretOption,
  DEFAULT_AUTH_FAILURE_LIMIT,
  DEFAULT_AUTH_FAILURE_WINDOW_MS,
  DEFAULT_AUTH_PACE_MS,
  DstoreError,
  ErrorCode,
  type PeerTlsOptions,
} from '@dstore/protocol';
import { DEFAULT_CLIENT_OUTPUT_BUDGET_BYTES, parseAddress } from '@dstore/protocol/internal';
import type { Logger } from 'pino';
import { hashTagProblem, MAX_REPLICATION_FACTOR } from './cluster-map.js';
import type { MapStore } from './map-store.js';

/** Hash ring algorithms the balancer can route with. */
export type BalancerHashAlgorithm = 'vnode' | 'ketama';

/** A storage node known before any JOIN: from options, `--node` or `--config`. */
export interface StaticNodeSpec {
  /** Node id; must match the id the node answers HELLO with. Default `host:port`. */
  readonly id?: string;
  readonly host: string;
  readonly port: number;
  /** Relative ring weight. Default 1. */
  readonly weight?: number;
}

/** Options of {@link createBalancer}. Every bound has a default. */
export interface BalancerOptions {
  /** Balancer id, answered in HELLO and reported in STATS. Default `balancer-<pid>`. */
  readonly id?: string;
  /** Address of the client port (clients and node registrations). Default '127.0.0.1'. */
  readonly host?: string;
  /** Client port; 0 picks a free one. Default 7379. */
  readonly port?: number;
  /**
   * Address of the admin HTTP server. Default '127.0.0.1': the admin API is not exposed beyond
   * this machine unless asked.
   */
  readonly adminHost?: string;
  /**
   * Bearer token of the admin HTTP API (`Authorization: Bearer <token>`). Without it the mutating
   * endpoints (node removal) are refused: nothing on the network can change the cluster by HTTP.
   */
  readonly adminToken?: string;
  /**
   * Which admin endpoints need the token: 'mutating' (default: reads such as /ring, /health and
   * /metrics stay open) or 'all'.
   */
  readonly adminAuth?: AdminAuthScope;
  /** Admin HTTP port; 0 picks a free one, -1 disables the admin server. Default 7380. */
  readonly adminPort?: number;
  /**
   * RESP port (Redis clients and tools: redis-cli, ioredis, node-redis); 0 picks a free one.
   * Default -1: no RESP port.
   */
  readonly respPort?: number;
  /** Address of the RESP port. Default: {@link host}. */
  readonly respHost?: string;
  /**
   * Unread reply bytes past which a RESP client is disconnected (reading it pauses at half), as
   * Redis's client-output-buffer-limit. Default 64 MiB.
   */
  readonly respMaxOutputBytes?: number;
  /** Nodes in the ring from the start (in addition to those that JOIN). */
  readonly nodes?: readonly StaticNodeSpec[];
  /** Ring algorithm. Default 'vnode'. */
  readonly hash?: BalancerHashAlgorithm;
  /**
   * The hash tag of a cluster map this balancer creates: two printable ASCII characters, the
   * opening and the closing one, e.g. `{}`. Keys holding a tag are placed by its content (Redis
   * Cluster's rule, `RingOptions.hashTag` of `@dstore/hashring`), so `{user:7}:name` and
   * `{user:7}:cart` have the same owner and replica chain; `''`: none, every key placed by all of
   * it. Fixed for the map's life (a stored map keeps its own; a different value given here is
   * logged and ignored). Default: `'{}'` (`DEFAULT_HASH_TAG`) for a new map.
   */
  readonly hashTag?: string;
  /**
   * Copies of each key (1 to 7), stored in the cluster map when this balancer creates it and
   * fixed for the map's life; a stored map with another factor is refused at start. Default: the
   * stored map's factor, `DEFAULT_REPLICATION_FACTOR` (3) for a new map, 1 when this balancer is
   * given static nodes (they need not join, and only a joined node holds a lease). A key's chain has
   * min(factor, ring members not dead) members, so a cluster of 1 or 2 nodes keeps 1 or 2 copies
   * and every key has 3 from the third node on. With a factor above 1 a node serves only while it
   * holds a lease from its balancer's heartbeat answers (a single-node cluster too). 1 gives one
   * copy per key and no leases.
   */
  readonly replicationFactor?: number;
  /**
   * @deprecated No effect: replication is no longer behind a flag (a factor above 1 is accepted,
   * and 3 is the default). Accepted for one release so that old scripts keep working; the
   * balancer logs a warning when it is set.
   */
  readonly experimentalReplication?: boolean;
  /** Deadline of every forwarded request, in ms; past it the client gets TIMEOUT. Default 2000. */
  readonly requestTimeoutMs?: number;
  /** A JOINed node without a heartbeat for this long is down. Default 3000. */
  readonly heartbeatTimeoutMs?: number;
  /**
   * Replication (a map factor above 1) only: a ring member `up` in the map and not heard from
   * (heartbeat) for this long is marked `failed` by the map's writer. Must be at least twice
   * {@link leaseMs}; the nodes' heartbeat interval must stay below half the lease. Default 5000.
   */
  readonly failureTimeoutMs?: number;
  /**
   * Replication only: the lease, in ms, the map's writer grants an `up` node in each heartbeat's
   * answer; the node serves (and accepts REPLICATE) only while it holds one. Default 2000.
   */
  readonly leaseMs?: number;
  /**
   * Replication only: a ring member `failed` for this long (as the map's writer observed it) is
   * declared dead, as `dstore node remove --dead` does: its ranges are copied to the next members
   * clockwise, restoring N copies, and it is removed. Undefined (the default): never; an
   * operator declares it.
   */
  readonly deadAfterMs?: number | undefined;
  /**
   * Most requests in flight on one node connection; past it the client gets BUSY. Past half of it,
   * each client connection is held to its fair share (see `LinkShares`). Default 4096.
   */
  readonly maxInFlightPerNode?: number;
  /**
   * Most bytes of large requests (16 KiB or more each) one client connection may have in flight
   * towards the nodes; past it the balancer stops reading that connection until answers come
   * back, so a client flooding big writes slows itself, not the others. Default 4 MiB.
   */
  readonly maxClientBytesInFlight?: number;
  /**
   * Most bytes waiting to be written to clients, every client connection of the native and RESP
   * ports together (as Redis's `maxmemory-clients`): past it, the client connection holding the
   * most is dropped (checked every 100 ms). Each connection also has its own bound (16 MiB native,
   * `respMaxOutputBytes` RESP); this one keeps a thousand slow readers from each holding theirs.
   * Default 1 GiB.
   */
  readonly maxClientOutputBytes?: number;
  /** Most authenticated client connections. Default 1024. */
  readonly maxConnections?: number;
  /** Most authenticated peer connections (nodes, other balancers): never taken by clients. Default 256. */
  readonly maxPeerConnections?: number;
  /** Most connections not yet authenticated (the oldest is closed to make room). Default 256. */
  readonly maxPendingConnections?: number;
  /** Most connections not yet authenticated per source address. Default 64. */
  readonly maxPendingPerAddress?: number;
  /** A connection must authenticate within this many ms of connecting. Default 5000. */
  readonly authTimeoutMs?: number;
  /**
   * Failed client authentications (native handshake and RESP AUTH together) from one source
   * address within {@link authFailureWindowMs} after which that address is locked out: every
   * attempt from it is refused at once, without checking a password, for one window. Default 0:
   * no lockout, since it refuses every client at the address (one client left with a stale
   * password would lock out its whole host); set it where clients do not share addresses.
   */
  readonly authFailureLimit?: number;
  /** The window (ms) failed authentications are counted in, and the length of a lockout. Default 60000. */
  readonly authFailureWindowMs?: number;
  /**
   * Pace (ms) of an address with 10 failed client authentications in its window: one attempt per
   * pace until the window passes, sooner ones refused at once without checking a password. Bounds
   * guessing without locking anyone out (a good client at the address gets its turn). 0: no
   * pacing. Default 1000.
   */
  readonly authPaceMs?: number;
  /** An authenticated client connection idle this long is closed; 0 = never. Default 300000. */
  readonly clientIdleTimeoutMs?: number;
  /**
   * A client frame (native port) or command (RESP port) that started arriving must be complete
   * within this many ms, else the connection is closed (a slow sender cannot hold a client slot
   * by trickling bytes, which the idle timeout counts as traffic). Default 10000.
   */
  readonly frameTimeoutMs?: number;
  /**
   * The cluster secret (at least 16 characters): balancers and nodes prove it to each other by
   * challenge-response, and only they may send cluster operations (JOIN, LEAVE, RING, MIGRATE,
   * ...). Without it, peers are accepted from loopback addresses only (protected mode).
   */
  readonly clusterSecret?: string;
  /** A users file (see the README, "Users"); reloaded on SIGHUP by the CLI. */
  readonly usersFile?: string;
  /** Shorthand for one read-write user `default` with this password. */
  readonly token?: string;
  /**
   * Protected mode (default true): without a cluster secret, peers are accepted only from
   * loopback addresses; without users, clients too.
   */
  readonly protectedMode?: boolean;
  /**
   * TLS on every hop: the client port serves TLS only (plaintext connections get TLS_REQUIRED),
   * the admin server serves HTTPS, and the links to nodes and other balancers use TLS with `cert`
   * as client certificate, verifying peers against `ca`. With a `ca`, a balancer or node is
   * accepted as a peer only on a connection whose certificate verified against it (mutual TLS).
   * Default: plaintext.
   */
  readonly tls?: PeerTlsOptions;
  /** Deadline of the per-node STATS fetch behind a client's STATS, in ms. Default 1000. */
  readonly statsTimeoutMs?: number;
  /** Grace period of a shutdown before open connections are cut, in ms. Default 5000. */
  readonly shutdownGraceMs?: number;
  /**
   * Directory where the balancer keeps the authoritative cluster map (`cluster-map.json`, written
   * by atomic replace + fsync) and a lock that keeps a second balancer off it. A restarted balancer
   * loads the map and routes on it at once. Default: none, the map lives in memory and a restart
   * starts a new cluster map (only for tests and throwaway clusters).
   */
  readonly dataDir?: string;
  /**
   * Keep the cluster map in etcd instead: several balancers with the same endpoints and prefix are
   * one cluster; each serves clients and follows the map, one elected coordinator writes it.
   * Exclusive with `dataDir`.
   */
  readonly etcd?: EtcdSettings;
  /** Where the cluster map lives, overriding `dataDir` and `etcd` (for example a custom store). */
  readonly mapStore?: MapStore;
  /** Pino level when no `logger` is given. Default 'warn'. */
  readonly logLevel?: string;
  /** Logger to use (pino). Default: pino on stderr at `logLevel`. */
  readonly logger?: Logger;
}

/** Which admin endpoints need the admin token. */
export type AdminAuthScope = 'mutating' | 'all';

/** Where a balancer finds the cluster map in etcd. */
export interface EtcdSettings {
  /** etcd client URLs, e.g. `http://127.0.0.1:2379`. */
  readonly endpoints: readonly string[];
  /** Key prefix of this cluster. Default `/dstore/default`. */
  readonly prefix?: string;
  /** TTL of the coordinator's lease in seconds: how long a dead coordinator holds the role. Default 5. */
  readonly leaseTtlSeconds?: number;
}

/** Default etcd key prefix of a cluster. */
export const DEFAULT_ETCD_PREFIX = '/dstore/default';

/** {@link BalancerOptions} with every default applied. */
export interface ResolvedBalancerOptions {
  readonly id: string;
  readonly host: string;
  readonly port: number;
  readonly adminHost: string;
  readonly adminPort: number;
  readonly respHost: string;
  readonly respPort: number;
  readonly respMaxOutputBytes: number;
  readonly adminToken: string | undefined;
  readonly adminAuth: AdminAuthScope;
  readonly nodes: readonly Required<StaticNodeSpec>[];
  readonly hash: BalancerHashAlgorithm;
  /** Hash tag of a new map: `''` none, undefined not set (`DEFAULT_HASH_TAG`). */
  readonly hashTag: string | undefined;
  readonly replicationFactor: number | undefined;
  readonly requestTimeoutMs: number;
  readonly heartbeatTimeoutMs: number;
  readonly failureTimeoutMs: number;
  readonly leaseMs: number;
  readonly deadAfterMs: number | undefined;
  readonly maxInFlightPerNode: number;
  readonly maxClientBytesInFlight: number;
  readonly maxClientOutputBytes: number;
  readonly maxConnections: number;
  readonly maxPeerConnections: number;
  readonly maxPendingConnections: number;
  readonly maxPendingPerAddress: number;
  readonly authTimeoutMs: number;
  readonly authFailureLimit: number;
  readonly authFailureWindowMs: number;
  readonly authPaceMs: number;
  readonly clientIdleTimeoutMs: number;
  readonly frameTimeoutMs: number;
  readonly clusterSecret: string | undefined;
  readonly usersFile: string | undefined;
  readonly token: string | undefined;
  readonly protectedMode: boolean;
  readonly tls: PeerTlsOptions | undefined;
  readonly statsTimeoutMs: number;
  readonly shutdownGraceMs: number;
  readonly dataDir: string | undefined;
  readonly etcd: Required<EtcdSettings> | undefined;
  readonly logLevel: string;
}

/** Default client port of the balancer (cluster convention). */
export const DEFAULT_BALANCER_PORT = 7379;
/** Default admin HTTP port of the balancer (cluster convention). */
export const DEFAULT_ADMIN_PORT = 7380;

function invalid(message: string): DstoreError {
  return new DstoreError(ErrorCode.INVALID_ARGUMENT, message);
}

function positiveInteger(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1)
    throw invalid(`${name} must be a positive integer, got ${value}`);
  return value;
}

function nonNegativeInteger(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 0)
    throw invalid(`${name} must be a non-negative integer, got ${value}`);
  return value;
}

function adminAuthScope(value: string, token: string | undefined): AdminAuthScope {
  if (value !== 'mutating' && value !== 'all') {
    throw invalid(`adminAuth must be mutating or all, got '${value}'`);
  }
  // Asking for every endpoint to be protected and giving nothing to protect them with would serve
  // them to anyone: refuse to start rather than fail open.
  if (value === 'all' && (token === undefined || token === '')) {
    throw invalid(
      'adminAuth all needs an admin token (--admin-token or DSTORE_ADMIN_TOKEN): without one every endpoint would be open',
    );
  }
  return value;
}

function portNumber(name: string, value: number, allowDisabled = false): number {
  const lowest = allowDisabled ? -1 : 0;
  if (!Number.isSafeInteger(value) || value < lowest || value > 65535) {
    throw invalid(`${name} must be a port number (0 = any free port), got ${value}`);
  }
  return value;
}

/** Checks one static node and fills in its id (`host:port`) and weight (1). */
export function resolveNodeSpec(spec: StaticNodeSpec): Required<StaticNodeSpec> {
  if (typeof spec.host !== 'string' || spec.host === '') throw invalid('a node needs a host');
  const port = portNumber(`port of node ${spec.host}`, spec.port);
  if (port === 0) throw invalid(`node ${spec.host} needs a non-zero port`);
  const weight = spec.weight ?? 1;
  if (typeof weight !== 'number' || !Number.isFinite(weight) || weight <= 0) {
    throw invalid(`weight of node ${spec.host}:${port} must be a positive number, got ${String(weight)}`);
  }
  const id = spec.id ?? `${spec.host}:${port}`;
  if (typeof id !== 'string' || id === '') throw invalid(`node ${spec.host}:${port} has an empty id`);
  return { id, host: spec.host, port, weight };
}

/**
 * Parses a `--node` value: `host:port` or `id=host:port` (IPv6 hosts in brackets: `[::1]:7400`).
 */
export function parseNodeAddress(text: string): StaticNodeSpec {
  const equals = text.indexOf('=');
  const id = equals >= 0 ? text.slice(0, equals) : undefined;
  if (id === '') throw invalid(`empty node id in '${text}'`);
  const { host, port } = parseAddress(equals >= 0 ? text.slice(equals + 1) : text, { what: '--node' });
  return id === undefined ? { host, port } : { id, host, port };
}

/** Reads a cluster file: `{"nodes": [{"id", "host", "port", "weight"}]}`. */
export async function loadConfigFile(path: string): Promise<StaticNodeSpec[]> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch (error) {
    throw invalid(`cannot read config ${path}: ${(error as Error).message}`);
  }
  const nodes = (parsed as { nodes?: unknown } | null)?.nodes;
  if (!Array.isArray(nodes)) throw invalid(`config ${path} must have a "nodes" array`);
  return nodes.map((node: unknown, index) => {
    if (node === null || typeof node !== 'object')
      throw invalid(`config ${path}: nodes[${index}] is not an object`);
    const { id, host, port, weight } = node as Record<string, unknown>;
    if (id !== undefined && typeof id !== 'string')
      throw invalid(`config ${path}: nodes[${index}].id must be a string`);
    if (typeof host !== 'string') throw invalid(`config ${path}: nodes[${index}].host must be a string`);
    if (typeof port !== 'number') throw invalid(`config ${path}: nodes[${index}].port must be a number`);
    if (weight !== undefined && typeof weight !== 'number') {
      throw invalid(`config ${path}: nodes[${index}].weight must be a number`);
    }
    return resolveNodeSpec({ id, host, port, weight });
  });
}

function resolveEtcd(options: BalancerOptions): Required<EtcdSettings> | undefined {
  const etcd = options.etcd;
  if (etcd === undefined) return undefined;
  if (options.dataDir !== undefined && options.dataDir !== '')
    throw invalid('dataDir and etcd both say where the cluster map lives: give one');
  if (!Array.isArray(etcd.endpoints) || etcd.endpoints.length === 0)
    throw invalid('etcd.endpoints needs at least one URL');
  for (const endpoint of etcd.endpoints) {
    if (!/^https?:\/\/[^/]+$/.test(endpoint))
      throw invalid(`etcd endpoint '${endpoint}' is not http(s)://host:port`);
  }
  const prefix = etcd.prefix ?? DEFAULT_ETCD_PREFIX;
  if (!prefix.startsWith('/')) throw invalid(`etcd prefix '${prefix}' must start with /`);
  return {
    endpoints: [...etcd.endpoints],
    prefix,
    leaseTtlSeconds: positiveInteger('etcd.leaseTtlSeconds', etcd.leaseTtlSeconds ?? 5),
  };
}

/**
 * The configured factor, undefined when none is: the default applies to a new map only (a stored
 * map keeps its own), so it is resolved where the map is created.
 */
function replicationFactor(options: BalancerOptions): number | undefined {
  const factor = options.replicationFactor;
  if (factor === undefined) return undefined;
  if (!Number.isSafeInteger(factor) || factor < 1 || factor > MAX_REPLICATION_FACTOR)
    throw invalid(`replicationFactor must be an integer from 1 to ${MAX_REPLICATION_FACTOR}, got ${factor}`);
  return factor;
}

/**
 * The failure timeout and lease (replication). The failure timeout must exceed the lease plus the
 * drift margin (10%) plus one node heartbeat interval: the balancer cannot know the nodes' interval
 * (their own option), so it requires failure timeout >= 2 x lease, which covers any interval below
 * lease / 2 (the nodes warn when theirs is not).
 */
function failureDetection(options: BalancerOptions): { failureTimeoutMs: number; leaseMs: number } {
  const leaseMs = positiveInteger('leaseMs', options.leaseMs ?? DEFAULT_LEASE_MS);
  const failureTimeoutMs = positiveInteger(
    'failureTimeoutMs',
    options.failureTimeoutMs ?? DEFAULT_FAILURE_TIMEOUT_MS,
  );
  if (failureTimeoutMs < 2 * leaseMs) {
    throw invalid(
      `failureTimeoutMs (${failureTimeoutMs}) must be at least twice leaseMs (${leaseMs}): a node must have lost its lease before the writer marks it failed`,
    );
  }
  return { failureTimeoutMs, leaseMs };
}

/** Default of {@link BalancerOptions.failureTimeoutMs}. */
export const DEFAULT_FAILURE_TIMEOUT_MS = 5000;
/** Default of {@link BalancerOptions.leaseMs}. */
export const DEFAULT_LEASE_MS = 2000;

/** A hash tag option checked by the ring that will use it (`hashTagProblem`); `''` is none. */
function checkedHashTag(tag: string): string {
  const problem = tag === '' ? undefined : hashTagProblem(tag);
  if (problem !== undefined) throw invalid(`hashTag: ${problem}`);
  return tag;
}

/** Applies defaults and checks every option; throws INVALID_ARGUMENT on a bad one. */
export function resolveBalancerOptions(options: BalancerOptions = {}): ResolvedBalancerOptions {
  const hash = options.hash ?? 'vnode';
  if (hash !== 'vnode' && hash !== 'ketama')
    throw invalid(`hash must be vnode or ketama, got '${String(hash)}'`);
  const nodes = (options.nodes ?? []).map(resolveNodeSpec);
  const ids = new Set<string>();
  for (const node of nodes) {
    if (ids.has(node.id)) throw invalid(`node id '${node.id}' is listed twice`);
    ids.add(node.id);
  }
  const host = options.host ?? '127.0.0.1';
  return {
    replicationFactor: replicationFactor(options),
    id: options.id ?? `balancer-${process.pid}`,
    host,
    port: portNumber('port', options.port ?? DEFAULT_BALANCER_PORT),
    adminHost: options.adminHost ?? '127.0.0.1',
    adminPort: portNumber('adminPort', options.adminPort ?? DEFAULT_ADMIN_PORT, true),
    respHost: options.respHost ?? host,
    respPort: portNumber('respPort', options.respPort ?? -1, true),
    respMaxOutputBytes: positiveInteger('respMaxOutputBytes', options.respMaxOutputBytes ?? 64 * 1024 * 1024),
    adminToken: options.adminToken === '' ? undefined : options.adminToken,
    adminAuth: adminAuthScope(options.adminAuth ?? 'mutating', options.adminToken),
    nodes,
    hash,
    hashTag: options.hashTag === undefined ? undefined : checkedHashTag(options.hashTag),
    requestTimeoutMs: positiveInteger('requestTimeoutMs', options.requestTimeoutMs ?? 2000),
    heartbeatTimeoutMs: positiveInteger('heartbeatTimeoutMs', options.heartbeatTimeoutMs ?? 3000),
    ...failureDetection(options),
    deadAfterMs:
      options.deadAfterMs === undefined ? undefined : positiveInteger('deadAfterMs', options.deadAfterMs),
    maxInFlightPerNode: positiveInteger('maxInFlightPerNode', options.maxInFlightPerNode ?? 4096),
    maxClientOutputBytes: positiveInteger(
      'maxClientOutputBytes',
      options.maxClientOutputBytes ?? DEFAULT_CLIENT_OUTPUT_BUDGET_BYTES,
    ),
    maxClientBytesInFlight: positiveInteger(
      'maxClientBytesInFlight',
      options.maxClientBytesInFlight ?? 4 * 1024 * 1024,
    ),
    maxConnections: positiveInteger('maxConnections', options.maxConnections ?? 1024),
    maxPeerConnections: positiveInteger('maxPeerConnections', options.maxPeerConnections ?? 256),
    maxPendingConnections: positiveInteger('maxPendingConnections', options.maxPendingConnections ?? 256),
    maxPendingPerAddress: positiveInteger('maxPendingPerAddress', options.maxPendingPerAddress ?? 64),
    authTimeoutMs: positiveInteger('authTimeoutMs', options.authTimeoutMs ?? 5000),
    authFailureLimit: nonNegativeInteger(
      'authFailureLimit',
      options.authFailureLimit ?? DEFAULT_AUTH_FAILURE_LIMIT,
    ),
    authFailureWindowMs: positiveInteger(
      'authFailureWindowMs',
      options.authFailureWindowMs ?? DEFAULT_AUTH_FAILURE_WINDOW_MS,
    ),
    authPaceMs: nonNegativeInteger('authPaceMs', options.authPaceMs ?? DEFAULT_AUTH_PACE_MS),
    clientIdleTimeoutMs: nonNegativeInteger('clientIdleTimeoutMs', options.clientIdleTimeoutMs ?? 300_000),
    frameTimeoutMs: positiveInteger('frameTimeoutMs', options.frameTimeoutMs ?? 10_000),
    clusterSecret: clusterSecretOption(options.clusterSecret),
    usersFile: options.usersFile === '' ? undefined : options.usersFile,
    token: options.token === '' ? undefined : options.token,
    protectedMode: options.protectedMode ?? true,
    tls: options.tls,
    statsTimeoutMs: positiveInteger('statsTimeoutMs', options.statsTimeoutMs ?? 1000),
    shutdownGraceMs: positiveInteger('shutdownGraceMs', options.shutdownGraceMs ?? 5000),
    dataDir: options.dataDir === '' ? undefined : options.dataDir,
    etcd: resolveEtcd(options),
    logLevel: options.logLevel ?? 'warn',
  };
}
