import { mkdir } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import {
  Authenticator,
  AuthFailureBudget,
  type Credentials,
  DstoreError,
  ErrorCode,
  FrameServer,
  peerClientTls,
  resolveLimits,
  type StatsMap,
  UserDirectory,
} from '@dstore/protocol';
import { ClientOutputBudget, releaseLockFile, takeLockFile } from '@dstore/protocol/internal';
import { type Logger, pino } from 'pino';
import { ClusterBinding } from './cluster-binding.js';
import { openEngine, type StorageEngine } from './engines/index.js';
import { ExpirySweeper } from './expiry-sweeper.js';
import { loadOrCreateNodeIdentity, newNodeIdentity } from './identity.js';
import { type BalancerAddress, Membership, NodeLease } from './membership.js';
import { DEFAULT_MIGRATION_LIMITS, MigrationService } from './migration.js';
import {
  defaultNodeId,
  type ResolvedNodeOptions,
  resolveNodeOptions,
  type StorageNodeOptions,
} from './options.js';
import { Ownership } from './ownership.js';
import { PeerLinks } from './peer-links.js';
import { ReplicationService } from './replication.js';
import { RequestHandler } from './request-handler.js';

/** A running (or runnable) storage node. */
export interface StorageNode {
  /** Opens the engine, binds, registers with the balancer (with `join`); resolves with the bound address. */
  start(): Promise<AddressInfo>;
  /**
   * Graceful stop: LEAVE the balancer, keep answering requests already sent until the
   * connections are quiet (bounded by `drainTimeoutMs`), stop accepting and close every
   * connection once its in-flight requests are answered, flush and close the engine.
   * Idempotent; concurrent calls share one stop.
   */
  stop(): Promise<void>;
  /** The bound address (after `start()`). */
  readonly address: AddressInfo;
  /** The node id (final once `start()` resolved: the default id depends on the bound port). */
  readonly id: string;
  /**
   * The node's identity: 32 hex digits telling the balancer's cluster map which incarnation of
   * the node answers under `id` (after `start()`). lmdb: created on the first start in the file
   * `node-identity` of `dataDir` and the same at every later start on that data dir. memory: new
   * at every start, since the data is gone and the cluster map must know it.
   */
  readonly identity: string;
  /** The open engine (after `start()`). */
  readonly engine: StorageEngine;
  /** The STATS map, as answered to a STATS request. */
  stats(): StatsMap;
  /** Rereads the users file (the CLI calls it on SIGHUP); on error the current users stay. */
  reloadUsers(): Promise<void>;
}

/** How often the drain checks whether the connections went quiet. */
const DRAIN_POLL_MS = 10;
/** No request for this long (and nothing being served) means the senders are done. */
const DRAIN_QUIET_MS = 50;
/** Longest wait for in-flight requests once the connections are closing. */
const CLOSE_GRACE_MS = 5000;

function notStarted(what: string): DstoreError {
  return new DstoreError(ErrorCode.UNAVAILABLE, `storage node not started: ${what} is not available yet`);
}

function defaultLogger(level: string): Logger {
  return pino({ name: 'dstore-node', level }, pino.destination(2));
}

/** The lock file in an lmdb node's data dir: one node per directory. */
const DATA_DIR_LOCK_FILE = 'node.lock';

class StorageNodeImpl implements StorageNode {
  private readonly options: ResolvedNodeOptions;
  private readonly logger: Logger;
  private openedEngine: StorageEngine | undefined;
  private server: FrameServer | undefined;
  private handler: RequestHandler | undefined;
  private membership: Membership | undefined;
  /** The lease heartbeat answers grant (replication): checked by the request handler and REPLICATE. */
  private readonly lease = new NodeLease();
  private links: PeerLinks | undefined;
  private sweeper: ExpirySweeper | undefined;
  private replication: ReplicationService | undefined;
  private users: UserDirectory | undefined;
  private nodeId: string | undefined;
  private nodeIdentity: string | undefined;
  /** The data dir's lock file while this node holds it (lmdb). */
  private lockedDataDir: string | undefined;
  private startedAt = 0;
  private stopping: Promise<void> | undefined;

  constructor(options: StorageNodeOptions) {
    this.options = resolveNodeOptions(options);
    this.logger = options.logger ?? defaultLogger(options.logLevel ?? 'info');
    this.nodeId = this.options.id ?? (this.options.port === 0 ? undefined : defaultNodeId(this.options.port));
  }

  get id(): string {
    if (this.nodeId === undefined) throw notStarted('the default id (it depends on the bound port)');
    return this.nodeId;
  }

  get identity(): string {
    if (this.nodeIdentity === undefined) throw notStarted('the identity');
    return this.nodeIdentity;
  }

  get address(): AddressInfo {
    if (!this.server) throw notStarted('the address');
    return this.server.address;
  }

  get engine(): StorageEngine {
    if (!this.openedEngine) throw notStarted('the engine');
    return this.openedEngine;
  }

  async reloadUsers(): Promise<void> {
    await this.users?.reload();
  }

  /** What this node proves to its peers: the cluster secret, when there is one. */
  private get peerCredentials(): Credentials | undefined {
    const secret = this.options.clusterSecret;
    return secret === undefined ? undefined : { kind: 'peer', secret };
  }

  stats(): StatsMap {
    if (!this.handler) throw notStarted('stats');
    return this.handler.stats();
  }

  async start(): Promise<AddressInfo> {
    if (this.server) throw new DstoreError(ErrorCode.INVALID_ARGUMENT, 'storage node already started');
    const options = this.options;
    const users = await UserDirectory.open({ file: options.usersFile, token: options.token });
    this.users = users;
    await this.lockDataDir();
    const engine = await this.openConfiguredEngine().catch((error: unknown) => {
      this.unlockDataDir();
      throw error;
    });
    // After the lock (which creates the data dir) and the engine, which report a bad one in their own words.
    const [identity, binding] = await Promise.all([
      this.resolveIdentity(),
      ClusterBinding.load(engine, options.engine === 'lmdb' ? options.dataDir : undefined),
    ]).catch(async (error: unknown) => {
      await engine.close().catch(() => undefined);
      this.unlockDataDir();
      throw error;
    });
    this.nodeIdentity = identity;
    this.openedEngine = engine;
    const ownership = new Ownership(() => this.id);
    const peerTls = options.tls === undefined ? undefined : peerClientTls(options.tls);
    const peer = {
      credentials: this.peerCredentials,
      tls: peerTls,
      requestTimeoutMs: DEFAULT_MIGRATION_LIMITS.batchTimeoutMs,
    };
    const authenticator = new Authenticator({
      role: 'node',
      serverId: () => this.id,
      clusterSecret: options.clusterSecret,
      users,
      protectedMode: options.protectedMode,
      requireVerifiedPeers: options.tls?.ca !== undefined,
      admit: (connection, kind) => this.server?.admit(connection, kind) ?? false,
      failures: new AuthFailureBudget({
        limit: options.authFailureLimit,
        windowMs: options.authFailureWindowMs,
        paceMs: options.authPaceMs,
        // Once per address per window (the budget's promise): a guessing flood is one line.
        onLockout: (address, failures, windowMs) =>
          this.logger.warn(
            { address, failures, windowMs },
            'too many failed client authentications from this address: its attempts are refused until the window passes',
          ),
      }),
    });
    // The links this node opens serve its peers' requests too (one connection per pair of nodes).
    const links = new PeerLinks(ownership, peer, {
      self: () => this.id,
      onRequest: (request, connection) => this.handler?.handle(request, connection),
      refusal: (connection) => authenticator.peerRefusal(connection),
      limits: options.limits,
      maxOutputBytes: options.maxOutputBytes,
    });
    this.links = links;
    const replication = new ReplicationService(engine, ownership, links, {
      queueBytes: options.replicationQueueBytes,
      timeoutMs: options.replicationTimeoutMs,
      limits: options.limits,
      lease: this.lease,
    });
    const migration = new MigrationService(engine, ownership, {
      peer,
      links,
      limits: { ...DEFAULT_MIGRATION_LIMITS, maxKeysPerSecond: options.migrationRateKeysPerSecond },
      wipeRefusal: () => replication.wipeRefusal(),
    });
    // An expired value of a range moving in leaves a tombstone: the old owner's older copy must
    // not bring the key back (see ENGINES.md, "Expiry").
    engine.setRetainExpired((key) => ownership.isMovingIn(key));
    // With replication only a chain's head evicts, and its evictions go down the chain.
    engine.setEvictionScope?.(replication.evictionScope);
    const sweeper = new ExpirySweeper(engine);
    this.sweeper = sweeper;
    this.replication = replication;
    const handler = new RequestHandler({
      ownership,
      migration,
      replication,
      lease: this.lease,
      joined: options.balancers.length > 0,
      sweeper,
      engine,
      nodeId: () => this.id,
      identity,
      binding,
      authenticator,
      peers: links,
      maxValueBytes: resolveLimits(options.limits).maxValueBytes,
      maxFrameBytes: resolveLimits(options.limits).maxFrameBytes,
      serverStats: () => ({
        connections: this.server?.connectionCount ?? 0,
        uptimeSeconds: Math.floor((performance.now() - this.startedAt) / 1000),
      }),
    });
    this.handler = handler;
    const server = new FrameServer({
      host: options.host,
      port: options.port,
      maxConnections: options.maxConnections,
      authTimeoutMs: options.authTimeoutMs,
      requireAuthentication: true,
      tls: options.tls,
      outputBudget: new ClientOutputBudget({
        maxBytes: options.maxClientOutputBytes,
        onEvict: (bytes, totalBytes) =>
          this.logger.warn(
            { bytes, totalBytes, maxBytes: options.maxClientOutputBytes },
            'client connection dropped: the answers waiting for all direct clients passed --max-client-output, and it held the most',
          ),
      }),
      connection: {
        limits: options.limits,
        idleTimeoutMs: options.idleTimeoutMs,
        frameTimeoutMs: options.frameTimeoutMs,
        maxOutputBytes: options.maxOutputBytes,
        maxServing: options.maxServing,
      },
      onRequest: handler.handle,
    });
    this.server = server;
    // Per connection, not per request: a bad frame is answered by the connection layer itself.
    server.on('connection', (connection) => {
      connection.on('protocolError', () => {
        handler.counters.errors++;
      });
    });
    server.on('refused', (remote) =>
      this.logger.warn({ remote }, 'connection refused: too many connections'),
    );
    let address: AddressInfo;
    try {
      address = await server.listen();
    } catch (error) {
      await engine.close().catch(() => undefined);
      this.unlockDataDir();
      this.server = undefined;
      throw new DstoreError(
        ErrorCode.UNAVAILABLE,
        `cannot listen on ${options.host}:${options.port}: ${(error as Error).message}`,
        { cause: error },
      );
    }
    this.startedAt = performance.now();
    this.nodeId ??= defaultNodeId(address.port);
    this.logger.info(
      {
        id: this.nodeId,
        identity,
        host: address.address,
        port: address.port,
        engine: engine.kind,
        dataDir: options.dataDir,
      },
      'storage node listening',
    );
    sweeper.start();
    if (options.balancers.length > 0) this.startMembership(options.balancers, address.port, engine, binding);
    return address;
  }

  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  /**
   * lmdb: takes the data dir's lock file, so that a second node started on the same --data-dir is
   * refused. LMDB itself lets several processes share one environment: two nodes on one directory
   * would each count and serve the other's keys, and one's purge after a migration would delete
   * what the other had just been given (found by hand: half the keys lost on a graceful leave).
   */
  private async lockDataDir(): Promise<void> {
    const { engine, dataDir } = this.options;
    if (engine !== 'lmdb' || dataDir === undefined) return;
    const path = join(dataDir, DATA_DIR_LOCK_FILE);
    try {
      await mkdir(dataDir, { recursive: true });
      const owner = takeLockFile(path);
      if (owner !== undefined) {
        throw new DstoreError(
          ErrorCode.INVALID_ARGUMENT,
          `${dataDir} is in use by another storage node (pid ${owner}); give each node its own --data-dir`,
        );
      }
    } catch (error) {
      if (error instanceof DstoreError) throw error;
      // A data dir that cannot be made or locked is one the engine cannot open: same words.
      throw new DstoreError(
        ErrorCode.INTERNAL,
        `cannot open the lmdb engine in ${dataDir}: ${(error as Error).message}`,
        { cause: error },
      );
    }
    this.lockedDataDir = path;
  }

  private unlockDataDir(): void {
    if (this.lockedDataDir === undefined) return;
    releaseLockFile(this.lockedDataDir);
    this.lockedDataDir = undefined;
  }

  /** lmdb: the identity kept in the data dir (created on the first start). memory: a new one. */
  private resolveIdentity(): Promise<string> {
    const { engine, dataDir } = this.options;
    return engine === 'lmdb'
      ? loadOrCreateNodeIdentity(dataDir as string)
      : Promise.resolve(newNodeIdentity());
  }

  private async openConfiguredEngine(): Promise<StorageEngine> {
    const { engine, dataDir, durability, mapSize, maxMemory, eviction } = this.options;
    try {
      return engine === 'lmdb'
        ? await openEngine({ engine: 'lmdb', dataDir: dataDir as string, durability, mapSize })
        : await openEngine({ engine: 'memory', maxMemory, eviction });
    } catch (error) {
      throw new DstoreError(
        ErrorCode.INTERNAL,
        `cannot open the ${engine} engine${dataDir ? ` in ${dataDir}` : ''}: ${(error as Error).message}`,
        { cause: error },
      );
    }
  }

  private startMembership(
    balancers: readonly BalancerAddress[],
    port: number,
    engine: StorageEngine,
    binding: ClusterBinding,
  ): void {
    this.membership = new Membership({
      balancers,
      nodeId: this.id,
      identity: this.identity,
      advertiseHost: this.options.advertiseHost,
      port,
      weight: this.options.weight,
      credentials: this.peerCredentials,
      tls: this.options.tls === undefined ? undefined : peerClientTls(this.options.tls),
      heartbeatIntervalMs: this.options.heartbeatIntervalMs,
      keyCount: () => engine.count(),
      dataGeneration: () => binding.dataGeneration,
      storage: () => engine.health(),
      lease: this.lease,
      logger: this.logger,
    });
    this.membership.start();
  }

  private async shutdown(): Promise<void> {
    const server = this.server;
    const engine = this.openedEngine;
    if (!server || !engine) return;
    this.logger.info({ id: this.nodeId }, 'stopping');
    // LEAVE first: the balancer stops routing here, so the drain below settles instead of
    // racing new traffic. Our data connections stay open until the drain is over.
    await this.membership?.leave(this.options.leaveTimeoutMs);
    await this.drain(server);
    await server.close(CLOSE_GRACE_MS);
    try {
      await engine.flush();
    } catch (error) {
      this.logger.error({ err: (error as Error).message }, 'engine flush failed during shutdown');
    }
    await this.membership?.close();
    this.sweeper?.stop();
    this.replication?.close();
    this.links?.close();
    await engine.close();
    this.unlockDataDir();
    this.logger.info({ id: this.nodeId }, 'stopped');
  }

  /**
   * Keeps serving until no request arrived for a short while and none is being served, so
   * requests a peer sent just before the stop (still in the socket buffers) are read and
   * answered rather than cut off. Bounded by `drainTimeoutMs`.
   */
  private async drain(server: FrameServer): Promise<void> {
    const handler = this.handler as RequestHandler;
    const deadline = performance.now() + this.options.drainTimeoutMs;
    for (;;) {
      const now = performance.now();
      if (now >= deadline) return;
      let serving = 0;
      for (const connection of server.openConnections) serving += connection.serving;
      // Peers' requests on the links this node opened (used both ways) are served there.
      serving += this.links?.servingRequests ?? 0;
      if (serving === 0 && now - handler.lastRequestAt >= DRAIN_QUIET_MS) return;
      await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL_MS));
    }
  }
}

/**
 * Creates a storage node: a {@link FrameServer} serving GET/SET/DEL/MGET/MSET/PING/STATS/HELLO
 * from one storage engine, optionally registered with a balancer. Throws DstoreError
 * INVALID_ARGUMENT for invalid options (for example lmdb without `dataDir`).
 */
export function createStorageNode(options: StorageNodeOptions = {}): StorageNode {
  return new StorageNodeImpl(options);
}
