// The module's `performance`: the global one is an accessor in Node 20, ~25 ns per request more.
import { performance } from 'node:perf_hooks';
import {
  type Authenticator,
  type Connection,
  clusterOnly,
  DEFAULT_LIMITS,
  type DelRequest,
  type DelVersionedRequest,
  DstoreError,
  ErrorCode,
  type ExistsRequest,
  type ExpireRequest,
  type ExpireTimeRequest,
  type GetDelRequest,
  type GetRequest,
  type GetVersionedRequest,
  type IncrByFloatRequest,
  type IncrByRequest,
  keyspaceDenied,
  keyVisible,
  LatencyHistogram,
  type MGetRequest,
  type MSetRequest,
  Op,
  type ReadPartRequest,
  type Request,
  type Response,
  type RingRequest,
  requestDenied,
  type ScanRequest,
  type SetBitRequest,
  type SetRangeRequest,
  type SetRequest,
  type SetWithRequest,
  type StatsMap,
  type TransactRequest,
  type TtlRequest,
} from '@dstore/protocol';
import { copyKeyed, globMatcher, isSingleKeyRead } from '@dstore/protocol/internal';
import type { ClusterBinding } from './cluster-binding.js';
import { DirectRouting } from './direct-routing.js';
import {
  type Decision,
  isStorageEngineError,
  MAX_SCAN_CURSOR,
  type ManyDecider,
  type ManyDecision,
  type ManyUpdateOptions,
  type Mutation,
  type StorageEngine,
  StorageEngineError,
  type VersionedValue,
} from './engines/index.js';
import type { ExpirySweeper } from './expiry-sweeper.js';
import type { NodeLease } from './membership.js';
import type { MigrationService } from './migration.js';
import type { Ownership } from './ownership.js';
import type { PeerLinks } from './peer-links.js';
import type { ReplicationService } from './replication.js';
import {
  answerWithinFrame,
  decideStep,
  decideTransaction,
  decideTransactionOnKeys,
  keyName,
  pttlOf,
  stepValueBytes,
  transactionKeys,
  transactionValueBytes,
  transactionValueBytesOnKeys,
} from './transaction.js';
import { valuePartAnswer } from './value-part.js';

/** Plain-number op counters: incremented on the hot path, read by STATS. */
export interface OpCounters {
  get: number;
  set: number;
  del: number;
  mget: number;
  mset: number;
  ping: number;
  stats: number;
  /** SCAN pages served. */
  scan: number;
  /** ERROR answers sent (bad frames, refused ops, engine failures). */
  errors: number;
  /** Requests refused by the fence (routed on another ring epoch): STALE_EPOCH. */
  fenced: number;
  /**
   * Data-model requests: SET_WITH, EXPIRE, TTL, PEXPIRETIME, EXISTS, GETDEL, INCRBY, SETRANGE,
   * INCRBYFLOAT, SETBIT, GET_VERSIONED, DEL_VERSIONED, TRANSACT.
   */
  dataModel: number;
  /**
   * Compare-and-set requests (SET_WITH or DEL_VERSIONED with ifVersion, TRANSACT with ifVersion:
   * a failed WATCH) that found another version.
   */
  versionConflicts: number;
  /** TRANSACT requests executed (Redis's MULTI/EXEC on one key). */
  transactions: number;
  /** FLUSH requests executed. */
  flushes: number;
}

/** The single-key reads of the data model (`isSingleKeyRead`): answered straight from the engine. */
type ReadRequest = TtlRequest | ExpireTimeRequest | ReadPartRequest | GetVersionedRequest;

function isReadRequest(request: KeyedRequest): request is ReadRequest {
  return isSingleKeyRead(request.op);
}

/** The single-key writes of the data model (see {@link RequestHandler.writeStep}). */
type WriteStepRequest = Exclude<KeyedRequest, ReadRequest | TransactRequest>;

/** The single-key data-model requests, executed on the key's owner (see {@link RequestHandler}). */
type KeyedRequest =
  | SetWithRequest
  | ExpireRequest
  | TtlRequest
  | ExpireTimeRequest
  | GetDelRequest
  | IncrByRequest
  | SetRangeRequest
  | IncrByFloatRequest
  | SetBitRequest
  | ReadPartRequest
  | GetVersionedRequest
  | DelVersionedRequest
  | TransactRequest;

/**
 * Cluster operations a client may never send to a node: membership (a balancer's), the ring and
 * migration (peers'), CLUSTER_MAP and MAP_PUSH (a balancer's), PULL (a node's). Every other op
 * (the data ops, the data model, SCAN, DBSIZE, PING, STATS, the handshake) is a client's too.
 */
const CLUSTER_OPS: ReadonlySet<number> = new Set<number>([
  Op.JOIN,
  Op.LEAVE,
  Op.HEARTBEAT,
  Op.RING,
  Op.MIGRATE,
  Op.MIGRATE_PUT,
  Op.PURGE,
  Op.DIGEST,
  Op.CLUSTER_MAP,
  Op.MAP_PUSH,
  Op.PULL,
  Op.REPLICATE,
]);

/** What the handler needs from the node beyond the engine. */
export interface RequestHandlerContext {
  readonly engine: StorageEngine;
  /** Node id, answered to HELLO. Read on each HELLO because it may be known only after binding. */
  readonly nodeId: () => string;
  /** Node identity, reported in STATS as `node.identity`. Omitted: STATS has no such entry. */
  readonly identity?: string | undefined;
  /** Answers HELLO/AUTH and gives each connection its principal (peer, user or anonymous). */
  readonly authenticator: Authenticator;
  /** Extra STATS entries owned by the server (connections, uptime). */
  readonly serverStats: () => { connections: number; uptimeSeconds: number };
  /** Which keys this node owns at the latest RING epoch (inactive before the first RING). */
  readonly ownership: Ownership;
  /** RING / MIGRATE / MIGRATE_PUT / PURGE / PULL. */
  readonly migration: MigrationService;
  /** REPLICATE and the head's write path, used only with a map whose replication factor is above 1. */
  readonly replication?: ReplicationService | undefined;
  /** The lease of a replicating node: with factor above 1, client requests are served only while held. */
  readonly lease?: NodeLease | undefined;
  /** A cluster member (it registers with balancers): it serves keys only once a RING said which (see `unmapped`). */
  readonly joined?: boolean | undefined;
  /** The background reclaiming of expired values (its counter is in STATS). */
  readonly sweeper?: ExpirySweeper | undefined;
  /** The node's peer links: a peer node that connects and names itself in HELLO offers its connection. */
  readonly peers?: PeerLinks | undefined;
  /**
   * The cluster this node's data belongs to: a RING of another cluster map generation is refused
   * while the node holds data. Omitted: every RING is installed (a node used without a balancer).
   */
  readonly binding?: ClusterBinding | undefined;
  /** Longest value a SETRANGE, APPEND or SETBIT may make (the node's value limit; default the protocol's). */
  readonly maxValueBytes?: number | undefined;
  /** Largest answer frame (a TRANSACT's answers; default the protocol's frame limit). */
  readonly maxFrameBytes?: number | undefined;
}

const OK = Op.OK;
/** Keys a SCAN page examines by default (Redis's COUNT default). */
const DEFAULT_SCAN_COUNT = 10;
/**
 * Most keys a page examines: half the batch limit, because a memory-engine step returns every key
 * of a hash bucket, so a page may hold a few keys more than asked and must still fit in KEYS.
 */
const MAX_SCAN_COUNT = 500;

function scanCount(requested: number | undefined): number {
  return Math.min(Math.max(requested ?? DEFAULT_SCAN_COUNT, 1), MAX_SCAN_COUNT);
}

/**
 * The error of an MSET some of whose entries were stored before one failed: whatever the failure
 * (even one that stores nothing, like OUT_OF_SPACE), the batch's outcome is mixed, so it is
 * reported as STORAGE_ERROR (indeterminate), never as "not executed".
 */
function partial(error: unknown, stored: number): unknown {
  if (stored === 0 || !isStorageEngineError(error)) return error;
  return new StorageEngineError(
    'ENGINE_IO',
    `MSET partly applied (${stored} entries stored): ${error.message}`,
    {
      cause: error,
    },
  );
}

/**
 * Serves the requests of every connection of a storage node: one `switch` on the op, the engine
 * call, the answer. Deliberately lean: no allocation beyond the answer itself, no logging, no
 * timers; counters are plain numbers and latency goes into one {@link LatencyHistogram}.
 */
export class RequestHandler {
  /** Op counters. */
  readonly counters: OpCounters = {
    get: 0,
    set: 0,
    del: 0,
    mget: 0,
    mset: 0,
    ping: 0,
    stats: 0,
    scan: 0,
    errors: 0,
    fenced: 0,
    dataModel: 0,
    versionConflicts: 0,
    transactions: 0,
    flushes: 0,
  };
  /** Latency of data ops (GET, SET, DEL, MGET, MSET) from decode to answer, in µs. */
  readonly latency = new LatencyHistogram();
  /** `performance.now()` of the last request received (shutdown waits for quiet). */
  lastRequestAt = 0;

  /** Redirects for clients that route directly (MOVED, ASK). */
  readonly direct: DirectRouting;

  private readonly engine: StorageEngine;
  private readonly maxValueBytes: number;
  private readonly maxFrameBytes: number;
  private readonly ownership: Ownership;
  /** The node id a peer node named in its HELLO (`node`), until it is authenticated. */
  private readonly claims = new WeakMap<Connection, string>();

  constructor(private readonly context: RequestHandlerContext) {
    this.maxValueBytes = context.maxValueBytes ?? DEFAULT_LIMITS.maxValueBytes;
    this.maxFrameBytes = context.maxFrameBytes ?? DEFAULT_LIMITS.maxFrameBytes;
    this.engine = context.engine;
    this.ownership = context.ownership;
    this.direct = new DirectRouting(context.ownership, context.engine, context.nodeId);
  }

  /** The `onRequest` of the node's FrameServer. */
  readonly handle = (request: Request, connection: Connection): void => {
    const start = performance.now();
    this.lastRequestAt = start;
    const principal = connection.principal;
    if (principal === undefined || request.op === Op.HELLO || request.op === Op.AUTH) {
      this.beforeAuthentication(request, connection);
      return;
    }
    // Balancers and nodes (the hot path from a balancer) skip the client checks. A direct
    // client's request whose routing was verified skips the fence and ownership checks below
    // (the same ring lookups, already done).
    let verified = false;
    if (principal.kind !== 'peer') {
      if (!this.clientMay(request, connection)) return;
      const verdict = this.direct.refuse(request, connection);
      if (verdict === 'answered') return;
      // A replicating node without a lease takes the full checks (refused() answers UNAVAILABLE).
      verified =
        verdict === 'verified' &&
        (this.ownership.replicationFactor === 1 || this.context.lease?.held !== false);
    }
    if (this.ownership.migratingIn && this.waitsForPull(request, connection)) return;
    switch (request.op) {
      case Op.GET:
        this.get(request, connection, start, verified);
        return;
      case Op.SET:
        this.set(request, connection, start, verified);
        return;
      case Op.DEL:
        this.del(request, connection, start, verified);
        return;
      case Op.MGET:
        this.mget(request, connection, start, verified);
        return;
      case Op.MSET:
        this.mset(request, connection, start, verified);
        return;
      case Op.SET_WITH:
      case Op.EXPIRE:
      case Op.TTL:
      case Op.PEXPIRETIME:
      case Op.GETDEL:
      case Op.INCRBY:
      case Op.SETRANGE:
      case Op.INCRBYFLOAT:
      case Op.SETBIT:
      case Op.READ_PART:
      case Op.GET_VERSIONED:
      case Op.DEL_VERSIONED:
      case Op.TRANSACT:
        this.keyed(request, connection, start);
        return;
      case Op.FLUSH:
        this.flush(request.id, connection);
        return;
      case Op.EXISTS:
        this.exists(request, connection, start);
        return;
      case Op.REPLICATE: {
        if (!this.fromPeer(connection, request, 'node')) return;
        const replication = this.context.replication;
        if (replication === undefined) {
          this.fail(connection, request.id, ErrorCode.UNKNOWN_OP, 'this node does not replicate');
          return;
        }
        const { id, batch } = request;
        replication.replicate(request, connection, (error, full) => {
          if (error === undefined)
            connection.reply(
              full === true ? { op: Op.REPLICATED, id, batch, full } : { op: Op.REPLICATED, id, batch },
            );
          else this.failed(connection, id, error);
        });
        return;
      }
      case Op.PULL:
        if (!this.fromPeer(connection, request, 'node')) return;
        try {
          connection.reply(this.context.migration.pulled(request));
        } catch (error) {
          this.failed(connection, request.id, error);
        }
        return;
      case Op.PING:
        this.counters.ping++;
        connection.reply({ op: OK, id: request.id });
        return;
      case Op.STATS:
        this.counters.stats++;
        connection.reply({ op: Op.STATS_RESULT, id: request.id, stats: this.stats() });
        return;
      case Op.SCAN:
        this.scan(request, connection);
        return;
      case Op.DBSIZE:
        if (this.keyspaceRefused(connection, request.id)) return;
        connection.reply({ op: Op.COUNT, id: request.id, count: this.engine.count() });
        return;
      case Op.RING: {
        if (!this.fromPeer(connection, request, 'balancer')) return;
        const bound = this.context.binding?.accept(request.generation);
        if (bound === undefined) this.installRing(request, connection);
        else
          bound.then(
            () => this.installRing(request, connection),
            (error: unknown) => this.failed(connection, request.id, error),
          );
        return;
      }
      case Op.MIGRATE:
        if (!this.fromPeer(connection, request, 'balancer')) return;
        this.context.migration.migrate(request).then(
          ({ keys, bytes }) => connection.reply({ op: Op.COUNT, id: request.id, count: keys, bytes }),
          (error: unknown) => this.failed(connection, request.id, error),
        );
        return;
      case Op.MIGRATE_PUT:
        if (!this.fromPeer(connection, request, 'node')) return;
        this.answerCount(connection, request.id, this.context.migration.migratePut(request));
        return;
      case Op.DIGEST:
        if (!this.fromPeer(connection, request, 'balancer')) return;
        this.context.migration.digest(request).then(
          (values) => connection.reply({ op: Op.VALUES, id: request.id, values }),
          (error: unknown) => this.failed(connection, request.id, error),
        );
        return;
      case Op.PURGE:
        if (!this.fromPeer(connection, request, 'balancer')) return;
        this.answerCount(connection, request.id, this.context.migration.purge(request));
        return;
      case Op.JOIN:
      case Op.LEAVE:
      case Op.HEARTBEAT:
        this.fail(
          connection,
          request.id,
          ErrorCode.UNKNOWN_OP,
          `op ${request.op} (membership) is served by a balancer, not by a storage node`,
        );
        return;
      default:
        this.fail(
          connection,
          (request as Request).id,
          ErrorCode.UNKNOWN_OP,
          `op ${(request as Request).op} is not served here`,
        );
    }
  };

  /**
   * While keys are pulled (PULL before a read-modify-write of a moving key), a plain data request
   * of such a key waits for the pull and then runs, so it never overtakes a request sent before
   * it (a pipeline keeps its order). Returns whether it was deferred.
   */
  private waitsForPull(request: Request, connection: Connection): boolean {
    const migration = this.context.migration;
    let pending: Promise<void> | undefined;
    switch (request.op) {
      case Op.GET:
      case Op.SET:
      case Op.DEL:
        pending = migration.pullOf(request.key);
        break;
      case Op.MGET:
        for (const key of request.keys) pending ??= migration.pullOf(key);
        break;
      case Op.MSET:
        for (const entry of request.entries) pending ??= migration.pullOf(entry.key);
        break;
      default:
        return false;
    }
    if (pending === undefined) return false;
    const again = (): void => this.handle(request, connection);
    pending.then(again, again);
    return true;
  }

  /** The node's STATS map (cluster convention keys). */
  stats(): StatsMap {
    const summary = this.latency.summary();
    const server = this.context.serverStats();
    const counters = this.counters;
    const storage = this.engine.health();
    return {
      id: this.context.nodeId(),
      engine: this.engine.kind,
      keys: this.engine.count(),
      tombstones: this.engine.tombstoneCount(),
      bytes: this.engine.bytesUsed(),
      'storage.state': storage.degraded === '' ? 'ok' : 'degraded',
      'storage.reason': storage.degraded,
      'storage.used_bytes': storage.usedBytes,
      'storage.available_bytes': storage.availableBytes,
      'storage.limit_bytes': storage.limitBytes,
      'storage.refused_writes': storage.refusedWrites,
      'storage.failed_writes': storage.failedWrites,
      'storage.evictions': storage.evictions,
      'storage.eviction_policy': storage.evictionPolicy,
      connections: server.connections,
      'ops.get': counters.get,
      'ops.set': counters.set,
      'ops.del': counters.del,
      'ops.mget': counters.mget,
      'ops.mset': counters.mset,
      'ops.ping': counters.ping,
      'ops.data_model': counters.dataModel,
      'ops.version_conflicts': counters.versionConflicts,
      'ops.transactions': counters.transactions,
      'ops.flush': counters.flushes,
      'expired.swept': this.context.sweeper?.swept ?? 0,
      'ops.stats': counters.stats,
      'ops.scan': counters.scan,
      'auth.failures': this.context.authenticator.failures.failures,
      'auth.lockout_refusals': this.context.authenticator.failures.refusals,
      'auth.paced_refusals': this.context.authenticator.failures.paced,
      'auth.lockouts': this.context.authenticator.failures.lockouts,
      errors: counters.errors,
      fenced: counters.fenced,
      'direct.moved': this.direct.counters.moved,
      'direct.ask': this.direct.counters.asked,
      'latency.count': summary.count,
      'latency.mean_us': Math.round(summary.meanUs),
      'latency.p50_us': summary.p50Us,
      'latency.p99_us': summary.p99Us,
      'latency.p999_us': summary.p999Us,
      'latency.max_us': summary.maxUs,
      uptime_s: server.uptimeSeconds,
      ...(this.context.identity === undefined ? {} : { 'node.identity': this.context.identity }),
      'ring.epoch': this.ownership.epoch,
      'migration.pending_ranges': this.ownership.pendingMoves.length,
      'migration.keys_sent': this.context.migration.counters.keysSent,
      'migration.bytes_sent': this.context.migration.counters.bytesSent,
      'migration.stale_removed': this.context.migration.counters.staleRemoved,
      'migration.scan_passes': this.context.migration.scans.passes,
      'migration.keys_received': this.context.migration.counters.keysReceived,
      'migration.keys_skipped': this.context.migration.counters.keysSkipped,
      'migration.tombstones_purged': this.context.migration.counters.tombstonesPurged,
      'migration.keys_pulled': this.context.migration.counters.keysPulled,
      'replication.factor': this.ownership.replicationFactor,
      ...this.replicationStats(),
    };
  }

  /** STATS `replication.*` of a node that replicates (nothing otherwise). */
  private replicationStats(): StatsMap {
    const replication = this.context.replication;
    if (replication === undefined) return {};
    const counters = replication.counters;
    return {
      'replication.batches_sent': counters.batchesSent,
      'replication.entries_sent': counters.entriesSent,
      'replication.batches_failed': counters.batchesFailed,
      'replication.entries_applied': counters.entriesApplied,
      'replication.entries_skipped': counters.entriesSkipped,
      'replication.refused_busy': counters.refusedBusy,
      'replication.refused_unavailable': counters.refusedUnavailable,
      'replication.entries_resent': counters.entriesResent,
      'replication.gaps_refused': counters.gapsRefused,
      'replication.tombstones_purged': counters.tombstonesPurged,
      'replication.wipes': counters.wipes,
      'replication.refused_promoting': counters.refusedPromoting,
      'replication.refused_full': counters.refusedFull,
      'replication.evictions_sent': counters.evictionsSent,
      'replication.batches_deferred': counters.batchesDeferred,
      'replication.sends_waited': counters.sendsWaited,
      'replication.queued_bytes': replication.queuedBytes,
    };
  }

  private answerCount(connection: Connection, id: number, counted: Promise<number>): void {
    counted.then(
      (count) => connection.reply({ op: Op.COUNT, id, count }),
      (error: unknown) => this.failed(connection, id, error),
    );
  }

  /** Answers a failure: a typed refusal as it is, an engine failure mapped to its code. */
  private failed(connection: Connection, id: number, error: unknown): void {
    if (error instanceof DstoreError) this.fail(connection, id, error.code as ErrorCode, error.message);
    else this.engineFailed(connection, id, error);
  }

  /**
   * A single-key data-model request: one atomic step on the owner (`StorageEngine.update`), after
   * the key's current copy is here (see `MigrationService.bringIn`) when its range is moving in.
   */
  private keyed(original: KeyedRequest, connection: Connection, start: number): void {
    this.counters.dataModel++;
    const id = original.id;
    if (this.fenced(connection, id, original.epoch)) return;
    const write = !isSingleKeyRead(original.op);
    if (this.refused(connection, id, original.key, false, write)) return;
    if (original.op === Op.TRANSACT && (original.watches !== undefined || hasOtherKey(original))) {
      this.transactOnKeys(original, connection, start);
      return;
    }
    let pull: Promise<void> | undefined;
    try {
      pull = this.pullFor(original.key);
    } catch (error) {
      this.failed(connection, id, error);
      return;
    }
    if (pull === undefined && isReadRequest(original)) {
      // A read with nothing to wait for is answered at once, as a GET is: no promise per request.
      let response: Response;
      try {
        response = this.read(original);
      } catch (error) {
        this.failed(connection, id, error);
        return;
      }
      connection.reply(response);
      this.latency.recordSince(start);
      return;
    }
    const answer = (executed: Promise<Response>): void => {
      executed.then(
        (response) => {
          connection.reply(response);
          this.latency.recordSince(start);
        },
        (error: unknown) => this.failed(connection, id, error),
      );
    };
    if (pull === undefined) {
      // Executed now, not a microtask later: a request decoded after it from the same chunk (a
      // pipeline) must not run first. Replicated, its key and value are sent on a later tick: copied.
      answer(this.execute(this.replicating !== undefined ? copyKeyed(original) : original));
      return;
    }
    // Copied: it waits for the PULL, and its key and value are views of the receive buffer.
    const request = copyKeyed(original);
    answer(pull.then(() => this.execute(request)));
  }

  /**
   * The answer to a data-model read, computed now from the engine (synchronous in both engines).
   * Its value is a copy: a PULL-delayed answer leaves a microtask later, and a memory-engine view
   * does not outlive the next write.
   */
  private read(request: ReadRequest): Response {
    const id = request.id;
    switch (request.op) {
      case Op.TTL:
      case Op.PEXPIRETIME: {
        const ms = pttlOf(this.engine.getEntry(request.key), Date.now(), request.op === Op.PEXPIRETIME);
        return { op: Op.INTEGER, id, value: BigInt(ms) };
      }
      case Op.READ_PART:
        return { ...valuePartAnswer(request, this.engine.get(request.key)), id };
      case Op.GET_VERSIONED: {
        const entry = this.engine.getEntry(request.key);
        return entry === undefined
          ? { op: Op.VERSIONED, id, value: null, version: 0 }
          : { op: Op.VERSIONED, id, value: Uint8Array.from(entry.value), version: entry.version };
      }
    }
  }

  /** The PULL to wait for before `key` is read-modify-written here, or undefined (none needed). */
  private pullFor(key: Uint8Array): Promise<void> | undefined {
    return this.ownership.isMovingIn(key) ? this.context.migration.bringIn(key) : undefined;
  }

  /** Runs a keyed request on the engine now; never throws (a failure is the promise's). */
  private execute(request: KeyedRequest): Promise<Response> {
    try {
      return this.executeNow(request);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  private executeNow(request: KeyedRequest): Promise<Response> {
    const id = request.id;
    switch (request.op) {
      case Op.TTL:
      case Op.PEXPIRETIME:
      case Op.READ_PART:
      case Op.GET_VERSIONED:
        return Promise.resolve(this.read(request));
      case Op.TRANSACT:
        this.counters.transactions++;
        return this.update(
          request.key,
          (current, now, version) => decideTransaction(request, current, now, version, this.maxValueBytes),
          transactionValueBytes(request.steps, this.lengthNow(request.key)),
        ).then((results) => this.transactionAnswer(id, results));
      default:
        return this.writeStep(request);
    }
  }

  /**
   * A TRANSACT naming keys besides its own (steps or watches): refused whole (INVALID_ARGUMENT,
   * not executed) unless every key has the transaction key's ring position (so this node owns
   * them all alike: it checked the first); else each key moving in is brought in first, and the
   * steps run in one atomic step over every key (`StorageEngine.updateMany`), replicated as one.
   */
  private transactOnKeys(original: TransactRequest, connection: Connection, start: number): void {
    const id = original.id;
    // Copied: it may wait for PULLs, and its keys and values are views of the receive buffer.
    const request = copyKeyed(original);
    const layout = transactionKeys(request);
    const ring = this.ownership.ring;
    if (ring !== undefined) {
      const position = ring.position(request.key);
      for (const key of layout.keys) {
        if (ring.position(key) === position) continue;
        const hashTag = ring.hashTag;
        const tag =
          hashTag === undefined
            ? 'this cluster places keys without hash tags'
            : `keys of one hash tag share it: ${hashTag[0]}tag${hashTag[1]}`;
        this.fail(
          connection,
          id,
          ErrorCode.INVALID_ARGUMENT,
          `a transaction's keys must share one ring position (Redis Cluster: CROSSSLOT; ${tag}): not executed`,
        );
        return;
      }
    }
    const pulls: Promise<void>[] = [];
    try {
      for (const key of layout.keys) {
        const pull = this.pullFor(key);
        if (pull !== undefined) pulls.push(pull);
      }
    } catch (error) {
      this.failed(connection, id, error);
      return;
    }
    const run = (): Promise<Response> => {
      this.counters.transactions++;
      try {
        const valueBytes = transactionValueBytesOnKeys(
          request.steps,
          layout,
          layout.keys.map((key) => this.lengthNow(key)),
        );
        return this.updateMany(
          layout.keys,
          (current, now, version) =>
            decideTransactionOnKeys(request, layout, current, now, version, this.maxValueBytes),
          valueBytes,
        ).then((results) => this.transactionAnswer(id, results));
      } catch (error) {
        return Promise.reject(error);
      }
    };
    // Executed now when nothing is pulled, not a microtask later (see `keyed`).
    const executed = pulls.length === 0 ? run() : Promise.all(pulls).then(run);
    executed.then(
      (response) => {
        connection.reply(response);
        this.latency.recordSince(start);
      },
      (error: unknown) => this.failed(connection, id, error),
    );
  }

  /** RESULTS of a transaction: each step's answer, or nil when a watched version changed. */
  private transactionAnswer(id: number, results: Response[] | null): Response {
    if (results === null) this.counters.versionConflicts++;
    return {
      op: Op.RESULTS,
      id,
      results: results === null ? null : answerWithinFrame(results, this.maxFrameBytes),
    };
  }

  /**
   * The length of `key`'s value now (0: none), for the room a SETRANGE or SETBIT needs: read here,
   * outside the atomic step, an estimate for the space check as for any write.
   */
  private lengthNow(key: Uint8Array): number {
    return this.engine.getEntry(key)?.value.length ?? 0;
  }

  /**
   * A single-key write (SET_WITH, EXPIRE, GETDEL, INCRBY, SETRANGE, INCRBYFLOAT, SETBIT,
   * DEL_VERSIONED): the same decision as the step of a transaction (`decideStep`), in one atomic
   * step of its own; a refusal (NOT_AN_INTEGER, VALUE_TOO_LARGE, ...) is the promise's failure.
   */
  private writeStep(request: WriteStepRequest): Promise<Response> {
    return this.update(
      request.key,
      (current, now, version) => decideStep(request, current, now, version, this.maxValueBytes),
      stepValueBytes(request, () => this.lengthNow(request.key)),
    ).then((answer): Response => {
      if (answer.op === Op.ERROR) throw new DstoreError(answer.code as ErrorCode, answer.message);
      const ifVersion = 'ifVersion' in request ? request.ifVersion : undefined;
      if (
        answer.op === Op.VERSION &&
        !answer.written &&
        ifVersion !== undefined &&
        answer.version !== ifVersion
      )
        this.counters.versionConflicts++;
      return { ...answer, id: request.id };
    });
  }

  /**
   * FLUSH: every entry of the engine goes, for a user with read-write access to every key.
   * Refused (BUSY: not executed, retry later) while ranges move here or away: keys of a range
   * moving in could still arrive from the old owner (or be pulled) after the flush, and a copy
   * kept for a range moving away could be streamed, so no flush can be complete until it ends.
   */
  private flush(id: number, connection: Connection): void {
    if (this.keyspaceRefused(connection, id)) return;
    if (this.ownership.pendingMoves.length > 0) {
      this.fail(
        connection,
        id,
        ErrorCode.BUSY,
        `a migration is in progress (${this.ownership.pendingMoves.length} ranges moving): FLUSHALL is refused until it ends`,
      );
      return;
    }
    this.counters.flushes++;
    let cleared: Promise<number>;
    try {
      cleared = this.engine.clear();
    } catch (error) {
      this.engineFailed(connection, id, error);
      return;
    }
    cleared.then(
      (count) => connection.reply({ op: Op.COUNT, id, count }),
      (error: unknown) => this.engineFailed(connection, id, error),
    );
  }

  /**
   * `engine.update` with this node's write epoch; a delete leaves a tombstone in a range moving in.
   * `valueBytes`: the largest value the update may store, undefined when it stores none (a delete,
   * an expiry change: let through while a member of the key's chain is out of room).
   */
  private update<T>(
    key: Uint8Array,
    decide: (current: VersionedValue | undefined, now: number, version: number) => Decision<T>,
    valueBytes: number | undefined,
  ): Promise<T> {
    const options = {
      writeEpoch: this.ownership.writeEpoch,
      tombstone: this.ownership.isMovingIn(key),
      valueBytes,
    };
    const replication = this.replicating;
    if (replication !== undefined) {
      // Answered once the key's chain has the write (see ReplicationService.write).
      return new Promise<T>((resolve, reject) =>
        replication.write(key, options, decide, (error, result) => {
          if (error === undefined) resolve(result as T);
          else reject(error);
        }),
      );
    }
    try {
      return this.engine.update(key, options, decide);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * `engine.updateMany` with this node's write epoch (through the chain with replication, as
   * {@link update}); a delete leaves a tombstone for each key of a range moving in.
   */
  private updateMany<T>(
    keys: readonly Uint8Array[],
    decide: ManyDecider<T>,
    valueBytes: readonly (number | undefined)[],
  ): Promise<T> {
    const options: ManyUpdateOptions = {
      writeEpoch: this.ownership.writeEpoch,
      tombstones: keys.map((key) => this.ownership.isMovingIn(key)),
      valueBytes,
    };
    const replication = this.replicating;
    if (replication !== undefined) {
      return new Promise<T>((resolve, reject) =>
        replication.writeMany(keys, options, decide, (error, result) => {
          if (error === undefined) resolve(result as T);
          else reject(error);
        }),
      );
    }
    try {
      return this.engine.updateMany(keys, options, decide);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** EXISTS: how many of the keys hold a live value (duplicates count), moving keys brought in first. */
  private exists(request: ExistsRequest, connection: Connection, start: number): void {
    this.counters.dataModel++;
    const id = request.id;
    if (this.fenced(connection, id, request.epoch)) return;
    for (const key of request.keys) if (this.refused(connection, id, key, false, false)) return;
    const count = (keys: readonly Uint8Array[]): void => {
      let found = 0;
      for (const key of keys) if (this.engine.has(key)) found++;
      connection.reply({ op: Op.COUNT, id, count: found });
      this.latency.recordSince(start);
    };
    const pulls: Promise<void>[] = [];
    try {
      for (const key of request.keys) {
        const pull = this.pullFor(key);
        if (pull !== undefined) pulls.push(pull);
      }
      if (pulls.length === 0) {
        count(request.keys);
        return;
      }
    } catch (error) {
      this.failed(connection, id, error);
      return;
    }
    const keys = request.keys.map((key) => Uint8Array.from(key));
    Promise.all(pulls).then(
      () => count(keys),
      (error: unknown) => this.failed(connection, id, error),
    );
  }

  /**
   * The fence: a request routed on another ring epoch than ours is refused before anything runs
   * (STALE_EPOCH names both), so a router with an old map never acts on it and this node, if it
   * missed a RING, never serves on its old ring. Requests without an epoch (clients of a node
   * without a balancer, older routers) are not fenced; before its first RING a standalone node
   * fences nothing and a cluster member refuses everything ({@link unmapped}).
   */
  private fenced(connection: Connection, id: number, epoch: number | undefined): boolean {
    if (this.ownership.ring === undefined) return this.unmapped(connection, id);
    if (epoch === undefined || epoch === this.ownership.epoch) return false;
    this.counters.fenced++;
    this.fail(
      connection,
      id,
      ErrorCode.STALE_EPOCH,
      `routed on epoch ${epoch}, this node is at epoch ${this.ownership.epoch}`,
    );
    return true;
  }

  /**
   * Before its first RING: a cluster member (it registers with balancers) refuses, with
   * UNAVAILABLE (not executed, retryable), every request the fence guards, and answers true. Restarted, it cannot
   * know whether it still owns a key, nor whether what it holds is current: a replicating member
   * would execute a write alone, unreplicated, below the chain's write epochs (acknowledged, then
   * hidden by the tail's older value), or answer a read from stale data. A standalone node (no
   * `join`) serves everything: false.
   */
  private unmapped(connection: Connection, id: number): boolean {
    if (this.context.joined !== true) return false;
    this.counters.fenced++;
    this.fail(
      connection,
      id,
      ErrorCode.UNAVAILABLE,
      'this node has not received the cluster map yet (it has just started): retry',
    );
    return true;
  }

  /** The fence, then the ownership check of `key` (see {@link fenced}, {@link refused}); true when answered. */
  private misplaced(
    connection: Connection,
    id: number,
    epoch: number | undefined,
    key: Uint8Array,
    fallback: boolean | undefined,
    write: boolean,
  ): boolean {
    return this.fenced(connection, id, epoch) || this.refused(connection, id, key, fallback === true, write);
  }

  /**
   * Answers NOT_OWNER (naming the member that serves it: the owner, or with replication the head
   * of its chain for a write and the tail for a read) and returns true when this node must not
   * serve `key`.
   */
  private refused(
    connection: Connection,
    id: number,
    key: Uint8Array,
    fallback: boolean,
    write: boolean,
  ): boolean {
    const owner = this.ownership.routeRefusal(key, fallback, write);
    if (owner === undefined) {
      // Replication: a node whose lease ran out may have been replaced in its chains (paused,
      // cut off): it answers nothing, however old the map that routed the request here.
      const lease = this.context.lease;
      if (this.ownership.replicationFactor === 1 || lease === undefined || lease.held) return false;
      this.fail(connection, id, ErrorCode.UNAVAILABLE, lease.refusal());
      return true;
    }
    this.fail(
      connection,
      id,
      ErrorCode.NOT_OWNER,
      `key is owned by ${owner} at epoch ${this.ownership.epoch}, not by ${this.context.nodeId()}`,
    );
    return true;
  }

  /** The chain replication of a map whose factor is above 1, else undefined (the one branch of factor 1). */
  private get replicating(): ReplicationService | undefined {
    return this.ownership.replicationFactor > 1 ? this.context.replication : undefined;
  }

  private get(request: GetRequest, connection: Connection, start: number, verified: boolean): void {
    this.counters.get++;
    if (
      !verified &&
      this.misplaced(connection, request.id, request.epoch, request.key, request.fallback, false)
    )
      return;
    let value: Uint8Array | undefined;
    try {
      value = this.engine.get(request.key);
    } catch (error) {
      this.engineFailed(connection, request.id, error);
      return;
    }
    if (value === undefined && this.ownership.migratingIn && this.direct.answerMiss(request, connection)) {
      // A direct client: sent to the old owner once (ASK), as a balancer would fall back to it.
    } else if (value === undefined && this.ownership.migratingIn && this.deletedHere(request.key)) {
      // A tombstone: the key was deleted here while its range moves in, so the old owner's copy
      // is older; the balancer must not fall back to it.
      connection.reply({ op: Op.VALUE, id: request.id, value: null, deleted: true });
    } else {
      // Encoded into the answer now: a memory-engine view is only valid until the next write.
      connection.reply({ op: Op.VALUE, id: request.id, value: value ?? null });
    }
    this.latency.recordSince(start);
  }

  /** Whether `key` holds a tombstone (only ever in a range moving in). */
  private deletedHere(key: Uint8Array): boolean {
    try {
      return this.engine.header(key)?.tombstone === true;
    } catch {
      // An unreadable header is no proof of a delete: answer "not found" as before.
      return false;
    }
  }

  private set(request: SetRequest, connection: Connection, start: number, verified: boolean): void {
    this.counters.set++;
    const id = request.id;
    if (!verified && this.misplaced(connection, id, request.epoch, request.key, false, true)) return;
    const replication = this.replicating;
    if (replication !== undefined) {
      const value = request.value.slice();
      replication.write(
        request.key.slice(),
        { writeEpoch: this.ownership.writeEpoch, tombstone: false, valueBytes: value.byteLength },
        () => ({ mutation: { kind: 'put', value, expireAt: 0 }, result: undefined }),
        (error) => {
          if (error !== undefined) {
            this.failed(connection, id, error);
            return;
          }
          connection.reply({ op: OK, id });
          this.latency.recordSince(start);
        },
      );
      return;
    }
    const engine = this.engine;
    if (engine.setNow !== undefined) {
      // Applied and acknowledged now: answered without a promise and a microtask per write.
      try {
        engine.setNow(request.key, request.value, this.ownership.writeEpoch);
      } catch (error) {
        this.engineFailed(connection, id, error);
        return;
      }
      connection.reply({ op: OK, id });
      this.latency.recordSince(start);
      return;
    }
    let written: Promise<void>;
    try {
      written = engine.set(request.key, request.value, this.ownership.writeEpoch);
    } catch (error) {
      this.engineFailed(connection, id, error);
      return;
    }
    written.then(
      () => {
        connection.reply({ op: OK, id });
        this.latency.recordSince(start);
      },
      (error: unknown) => this.engineFailed(connection, id, error),
    );
  }

  private del(request: DelRequest, connection: Connection, start: number, verified: boolean): void {
    this.counters.del++;
    const id = request.id;
    const key = request.key;
    if (!verified && this.misplaced(connection, id, request.epoch, key, request.fallback, true)) return;
    const replication = this.replicating;
    if (replication !== undefined) {
      replication.write(
        key.slice(),
        { writeEpoch: this.ownership.writeEpoch, tombstone: false },
        (current) =>
          current === undefined
            ? { mutation: { kind: 'none' }, result: false }
            : { mutation: { kind: 'delete' }, result: true },
        (error, existed) => {
          if (error !== undefined) {
            this.failed(connection, id, error);
            return;
          }
          connection.reply({ op: Op.COUNT, id, count: existed === true ? 1 : 0 });
          this.latency.recordSince(start);
        },
      );
      return;
    }
    // While the key's range moves in, the delete must outlive the migration: a tombstone
    // newer than any copy the old owner can still send. Either answers 1 only for a value.
    const movingIn = this.ownership.isMovingIn(key);
    if (movingIn && request.fallback !== true) {
      // The answer must be the key's, not this copy's: when nothing of the key is here yet, its
      // current copy is the old owner's, brought in first (PULL) as for a read-modify-write.
      // Asking both owners and taking the larger count answered 1 twice for one value: a second
      // DEL found this node's tombstone and the old owner's copy, which the tombstone shadows.
      let pull: Promise<void> | undefined;
      try {
        pull = this.pullFor(key);
      } catch (error) {
        this.failed(connection, id, error);
        return;
      }
      if (pull !== undefined) {
        const kept = key.slice();
        pull.then(
          () => this.tombstone(id, kept, connection, start),
          (error: unknown) => this.failed(connection, id, error),
        );
        return;
      }
      this.tombstone(id, key, connection, start);
      return;
    }
    const engine = this.engine;
    if (!movingIn && engine.deleteNow !== undefined) {
      // Applied and acknowledged now: answered without a promise and a microtask per delete.
      let existed: boolean;
      try {
        existed = engine.deleteNow(key);
      } catch (error) {
        this.engineFailed(connection, id, error);
        return;
      }
      this.deleted(id, connection, existed, start);
      return;
    }
    let deleted: Promise<boolean>;
    try {
      // Moving in here only for a DEL with the fall-back flag (meant for the old owner): a
      // tombstone still, so that no older copy brings the key back.
      deleted = movingIn ? engine.tombstone(key, this.ownership.writeEpoch) : engine.delete(key);
    } catch (error) {
      this.engineFailed(connection, id, error);
      return;
    }
    deleted.then(
      (existed) => this.deleted(id, connection, existed, start),
      (error: unknown) => this.engineFailed(connection, id, error),
    );
  }

  /**
   * The DEL of a key moving in, once its current copy is here: a tombstone, newer than any copy
   * the old owner can still send, so the old owner's copy is shadowed (GET answers `deleted`) and
   * never comes back.
   */
  private tombstone(id: number, key: Uint8Array, connection: Connection, start: number): void {
    let deleted: Promise<boolean>;
    try {
      // A PURGE may have ended the move while the copy was pulled: its scan for tombstones is
      // over, so one written now would stay for good; and no copy can arrive any more.
      deleted = this.ownership.isMovingIn(key)
        ? this.engine.tombstone(key, this.ownership.writeEpoch)
        : this.engine.delete(key);
    } catch (error) {
      this.engineFailed(connection, id, error);
      return;
    }
    deleted.then(
      (existed) => this.deleted(id, connection, existed, start),
      (error: unknown) => this.engineFailed(connection, id, error),
    );
  }

  /** Answers a DEL that ran: COUNT. */
  private deleted(id: number, connection: Connection, existed: boolean, start: number): void {
    connection.reply({ op: Op.COUNT, id, count: existed ? 1 : 0 });
    this.latency.recordSince(start);
  }

  private mget(request: MGetRequest, connection: Connection, start: number, verified: boolean): void {
    this.counters.mget++;
    const keys = request.keys;
    if (!verified) {
      if (this.fenced(connection, request.id, request.epoch)) return;
      for (const key of keys) if (this.refused(connection, request.id, key, false, false)) return;
    }
    const values: (Uint8Array | null)[] = new Array(keys.length);
    try {
      for (let i = 0; i < keys.length; i++) values[i] = this.engine.get(keys[i] as Uint8Array) ?? null;
    } catch (error) {
      this.engineFailed(connection, request.id, error);
      return;
    }
    // Memory-engine views stay valid: nothing writes between these reads and the encoding.
    connection.reply({ op: Op.VALUES, id: request.id, values });
    this.latency.recordSince(start);
  }

  private mset(request: MSetRequest, connection: Connection, start: number, verified: boolean): void {
    this.counters.mset++;
    const id = request.id;
    const entries = request.entries;
    if (!verified) {
      if (this.fenced(connection, id, request.epoch)) return;
      for (const entry of entries) if (this.refused(connection, id, entry.key, false, true)) return;
    }
    const writeEpoch = this.ownership.writeEpoch;
    const writes: Promise<void>[] = new Array(entries.length);
    let bytes = 0;
    for (const entry of entries) bytes += entry.key.byteLength + entry.value.byteLength;
    try {
      // A batch that cannot fit is refused whole, before any of it is written.
      this.engine.assertCapacity(bytes);
    } catch (error) {
      this.engineFailed(connection, id, error);
      return;
    }
    const replication = this.replicating;
    if (replication !== undefined) {
      this.replicatedMset(replication, request, connection, start);
      return;
    }
    const groups = this.positionGroups(entries);
    // Entries each write holds: one, or a group's (keys of one position written together).
    const sizes: number[] | undefined = groups === undefined ? undefined : [];
    let issued = 0;
    try {
      if (groups === undefined) {
        for (; issued < entries.length; issued++) {
          const entry = entries[issued] as MSetRequest['entries'][number];
          writes[issued] = this.engine.set(entry.key, entry.value, writeEpoch);
        }
      } else {
        // Keys of one position (one hash tag): one write with one version (lmdb: one transaction).
        writes.length = 0;
        for (const group of groups) {
          writes.push(this.setTogether(entries, group, writeEpoch));
          sizes!.push(group.length);
          issued += group.length;
        }
      }
    } catch (error) {
      // Writes issued before the failure still complete; the answer says the batch failed.
      this.engineFailed(connection, id, partial(error, issued));
      return;
    }
    // All issued in one turn, so lmdb commits them together and they share one flush.
    Promise.allSettled(writes).then((results) => {
      let stored = 0;
      let failure: PromiseRejectedResult | undefined;
      for (let i = 0; i < results.length; i++) {
        const result = results[i]!;
        if (result.status === 'fulfilled') stored += sizes?.[i] ?? 1;
        else failure ??= result;
      }
      if (failure === undefined) {
        connection.reply({ op: OK, id });
        this.latency.recordSince(start);
      } else {
        this.engineFailed(connection, id, partial(failure.reason, stored));
      }
    });
  }

  /**
   * MSET at the head of replicated chains: each entry a replicated write (see
   * ReplicationService.write), issued in one turn; OK once every one is on its chain, else the
   * first failure (an indeterminate outcome for the batch when some were stored).
   */
  private replicatedMset(
    replication: ReplicationService,
    request: MSetRequest,
    connection: Connection,
    start: number,
  ): void {
    const id = request.id;
    const entries = request.entries;
    const writeEpoch = this.ownership.writeEpoch;
    const options = { writeEpoch, tombstone: false };
    const groups = this.positionGroups(entries);
    let left = entries.length;
    let stored = 0;
    let failure: unknown;
    const done = (error: unknown, count: number): void => {
      if (error === undefined) stored += count;
      else failure ??= error;
      left -= count;
      if (left > 0) return;
      if (failure === undefined) {
        connection.reply({ op: OK, id });
        this.latency.recordSince(start);
      } else this.failed(connection, id, partial(failure, stored));
    };
    const one = (error: unknown): void => done(error, 1);
    if (groups === undefined) {
      for (const entry of entries) this.replicatedSet(replication, entry, options, one);
      return;
    }
    for (const group of groups) {
      let bytes = 0;
      for (const index of group) bytes += entries[index]!.key.byteLength + entries[index]!.value.byteLength;
      if (group.length === 1 || !replication.fitsOneFrame(group.length, bytes)) {
        // One key, or more than one frame together (an MSET near the frame limit): one write each.
        for (const index of group) this.replicatedSet(replication, entries[index]!, options, one);
        continue;
      }
      // Keys of one position (one hash tag): one write, replicated as one unit, as Redis Cluster's
      // MSET within a slot is atomic.
      const { keys, options: many, decide } = putsOf(entries, group, writeEpoch);
      replication.writeMany(keys, many, decide, (error) => done(error, group.length));
    }
  }

  /**
   * The entries of `group` (indexes into `entries`, one ring position) as one write of the engine
   * (one version; lmdb: one transaction); resolves once acknowledged. A write of one entry is a set.
   */
  private setTogether(
    entries: MSetRequest['entries'],
    group: readonly number[],
    writeEpoch: number,
  ): Promise<void> {
    if (group.length === 1) {
      const entry = entries[group[0]!]!;
      return this.engine.set(entry.key, entry.value, writeEpoch);
    }
    const { keys, options, decide } = putsOf(entries, group, writeEpoch);
    return this.engine.updateMany(keys, options, decide);
  }

  /** One entry of a replicated MSET as a write of its own. */
  private replicatedSet(
    replication: ReplicationService,
    entry: MSetRequest['entries'][number],
    options: { readonly writeEpoch: number; readonly tombstone: boolean },
    done: (error: unknown) => void,
  ): void {
    const value = entry.value.slice();
    replication.write(
      entry.key.slice(),
      { ...options, valueBytes: value.byteLength },
      () => ({ mutation: { kind: 'put', value, expireAt: 0 }, result: undefined }),
      done,
    );
  }

  /**
   * The entries of an MSET grouped by ring position (indexes, in order of first appearance), or
   * undefined when every entry has a position of its own (the common case: nothing to group).
   */
  private positionGroups(entries: MSetRequest['entries']): number[][] | undefined {
    const ring = this.ownership.ring;
    if (ring === undefined || entries.length < 2) return undefined;
    const byPosition = new Map<number, number[]>();
    let shared = false;
    for (let index = 0; index < entries.length; index++) {
      const position = ring.position(entries[index]!.key);
      const group = byPosition.get(position);
      if (group === undefined) byPosition.set(position, [index]);
      else {
        group.push(index);
        shared = true;
      }
    }
    return shared ? [...byPosition.values()] : undefined;
  }

  /**
   * One page of SCAN: the engine's cursor over the keys this node serves (see
   * `Ownership.scanFilter`), filtered by MATCH and, for a user limited to prefixes, by them.
   */
  private scan(request: ScanRequest, connection: Connection): void {
    this.counters.scan++;
    const id = request.id;
    if (this.fenced(connection, id, request.epoch)) return;
    if (
      request.moving === true &&
      request.epoch !== undefined &&
      this.ownership.purgedEpoch >= request.epoch
    ) {
      this.counters.fenced++;
      this.fail(
        connection,
        id,
        ErrorCode.STALE_EPOCH,
        `the ranges moving at epoch ${request.epoch} were purged here: the iteration must start again`,
      );
      return;
    }
    if (request.cursor > MAX_SCAN_CURSOR) {
      this.fail(
        connection,
        id,
        ErrorCode.INVALID_ARGUMENT,
        `a node's scan cursor is at most ${MAX_SCAN_CURSOR}`,
      );
      return;
    }
    const accept = this.scanAccept(request, connection);
    try {
      const page = this.engine.scan(request.cursor, scanCount(request.count), accept);
      connection.reply({ op: Op.KEYS, id, cursor: page.cursor, keys: page.keys });
    } catch (error) {
      if (isStorageEngineError(error, 'SCAN_EXPIRED'))
        this.fail(connection, id, ErrorCode.CURSOR_EXPIRED, error.message);
      else this.engineFailed(connection, id, error);
    }
  }

  /** The keys a SCAN page may hold: served here, matching the pattern, visible to the user. */
  private scanAccept(request: ScanRequest, connection: Connection): (key: Uint8Array) => boolean {
    const served = this.ownership.scanFilter(request.moving === true);
    const match = request.match === undefined ? undefined : globMatcher(request.match);
    const principal = connection.principal;
    const grant =
      principal?.kind === 'user' && principal.grant.prefixes !== undefined ? principal.grant : undefined;
    return (key) =>
      served(key) && (match === undefined || match(key)) && (grant === undefined || keyVisible(grant, key));
  }

  /** Refuses a whole-keyspace request (DBSIZE) of a user limited to prefixes; true when refused. */
  private keyspaceRefused(connection: Connection, id: number): boolean {
    const principal = connection.principal;
    const denial = principal?.kind === 'user' ? keyspaceDenied(principal.grant) : undefined;
    if (denial === undefined) return false;
    this.fail(connection, id, ErrorCode.NO_PERMISSION, denial);
    return true;
  }

  private engineFailed(connection: Connection, id: number, error: unknown): void {
    if (isStorageEngineError(error)) {
      switch (error.code) {
        case 'INVALID_KEY':
          this.fail(connection, id, ErrorCode.INVALID_ARGUMENT, error.message);
          return;
        case 'KEY_TOO_LARGE':
          this.fail(connection, id, ErrorCode.KEY_TOO_LARGE, error.message);
          return;
        case 'ENGINE_CLOSED':
          this.fail(connection, id, ErrorCode.SHUTTING_DOWN, 'the node is shutting down');
          return;
        case 'OUT_OF_SPACE':
          this.fail(connection, id, ErrorCode.OUT_OF_SPACE, error.message);
          return;
        case 'OUT_OF_MEMORY':
          this.fail(connection, id, ErrorCode.OUT_OF_MEMORY, error.message);
          return;
        case 'ENGINE_IO':
          this.fail(connection, id, ErrorCode.STORAGE_ERROR, error.message);
          return;
        default:
          this.fail(connection, id, ErrorCode.INTERNAL, error.message);
          return;
      }
    }
    const message = error instanceof Error ? error.message : String(error);
    this.fail(connection, id, ErrorCode.INTERNAL, `storage engine failed: ${message}`);
  }

  /** HELLO and AUTH; any other request of a connection without a principal may get an anonymous one. */
  private beforeAuthentication(request: Request, connection: Connection): void {
    const authenticator = this.context.authenticator;
    if (request.op === Op.HELLO || request.op === Op.AUTH) {
      if (request.op === Op.HELLO && request.role === 'node' && request.node !== undefined) {
        this.claims.set(connection, request.node);
      }
      if (!authenticator.respond(connection, request)) {
        this.counters.errors++;
        return;
      }
      // Authenticated as a node (at HELLO without a cluster secret, at AUTH with one): this node
      // may send its own requests to that peer on this connection.
      const principal = connection.principal;
      const claim = this.claims.get(connection);
      if (claim !== undefined && principal?.kind === 'peer' && principal.role === 'node') {
        this.claims.delete(connection);
        this.context.peers?.adopt(claim, connection);
      }
      return;
    }
    const refusal = authenticator.implicit(connection);
    if (refusal !== undefined) {
      this.fail(connection, request.id, ErrorCode.UNAUTHORIZED, refusal);
      return;
    }
    this.handle(request, connection);
  }

  /** A client's (user or anonymous) permission for `request`; answers the refusal itself. */
  private clientMay(request: Request, connection: Connection): boolean {
    if (CLUSTER_OPS.has(request.op)) {
      this.fail(connection, request.id, ErrorCode.NO_PERMISSION, clusterOnly(request.op));
      return false;
    }
    const principal = connection.principal;
    if (principal?.kind !== 'user' || !(principal.grant.limited || principal.grant.revoked)) return true;
    const current = this.context.authenticator.current(connection);
    if (current === undefined) {
      this.fail(
        connection,
        request.id,
        ErrorCode.UNAUTHORIZED,
        'this user no longer exists (users file reloaded)',
      );
      void connection.close();
      return false;
    }
    const denial = current.kind === 'user' ? requestDenied(current.grant, request) : undefined;
    if (denial === undefined) return true;
    this.fail(connection, request.id, ErrorCode.NO_PERMISSION, denial);
    return false;
  }

  /** Whether a cluster operation comes from a peer of the role that sends it; answers the refusal. */
  private installRing(request: RingRequest, connection: Connection): void {
    this.context.migration.ring(request);
    // Replication: a new epoch may change this node's successors: re-send what is
    // unacknowledged. A ring promoting a learner is answered once this node is drained.
    const drained = this.context.replication?.reconfigure();
    const { id } = request;
    if (drained === undefined) connection.reply({ op: OK, id });
    else void drained.then(() => connection.reply({ op: OK, id }));
  }

  private fromPeer(connection: Connection, request: Request, role: 'balancer' | 'node'): boolean {
    const principal = connection.principal;
    if (principal?.kind === 'peer' && principal.role === role) return true;
    this.fail(connection, request.id, ErrorCode.NO_PERMISSION, `${clusterOnly(request.op)} (as a ${role})`);
    return false;
  }

  private fail(connection: Connection, id: number, code: ErrorCode, message: string): void {
    this.counters.errors++;
    connection.replyError(id, code, message);
  }
}

/** Whether a step of `request` names another key than the transaction's own. */
function hasOtherKey(request: TransactRequest): boolean {
  const key = request.key;
  for (const step of request.steps) {
    if (step.key !== key && Buffer.compare(step.key, key) !== 0) return true;
  }
  return false;
}

/**
 * The MSET entries of `group` (indexes, keys of one position) as the arguments of one
 * `updateMany` of puts: keys and values copied (the write may outlive the receive buffer), a key
 * named twice with its last value, as Redis.
 */
function putsOf(
  entries: MSetRequest['entries'],
  group: readonly number[],
  writeEpoch: number,
): { keys: Uint8Array[]; options: ManyUpdateOptions; decide: () => ManyDecision<undefined> } {
  const last = new Map<string, number>();
  for (const index of group) last.set(keyName(entries[index]!.key), index);
  const indexes = [...last.values()];
  const keys = indexes.map((index) => entries[index]!.key.slice());
  const values = indexes.map((index) => entries[index]!.value.slice());
  const mutations = values.map((value): Mutation => ({ kind: 'put', value, expireAt: 0 }));
  return {
    keys,
    options: {
      writeEpoch,
      tombstones: keys.map(() => false),
      valueBytes: values.map((value) => value.byteLength),
    },
    decide: () => ({ mutations, result: undefined }),
  };
}
