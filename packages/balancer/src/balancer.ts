// The module's `performance`: the global one is an accessor in Node 20, ~25 ns per request more.
import { performance } from 'node:perf_hooks';
import type { HashRing } from '@dstore/hashring';
import {
  Authenticator,
  AuthFailureBudget,
  type Connection,
  clusterOnly,
  type DbSizeRequest,
  DstoreError,
  ErrorCode,
  type FlushRequest,
  FrameServer,
  keyspaceDenied,
  Op,
  type PeerRole,
  peerClientTls,
  type Request,
  type Response,
  requestDenied,
  type ScanRequest,
  UserDirectory,
  type WithoutId,
} from '@dstore/protocol';
import { ClientOutputBudget, PasswordChecks } from '@dstore/protocol/internal';
import type { Logger } from 'pino';
import { version } from '../package.json';
import { AdminServer } from './admin-server.js';
import { ClusterScan, clusterDbSize, clusterFlush } from './cluster-scan.js';
import { type BalancerOptions, type ResolvedBalancerOptions, resolveBalancerOptions } from './config.js';
import { ControlHandler, UNSPECIFIED_HOSTS } from './control.js';
import { candidateName } from './coordinator-link.js';
import { EtcdMapStore } from './etcd-map-store.js';
import { HealthMonitor } from './health.js';
import { createLogger } from './logger.js';
import { MapPublisher } from './map-publisher.js';
import { FileMapStore, type MapStore, MemoryMapStore } from './map-store.js';
import { Membership } from './membership.js';
import { BalancerMetrics } from './metrics.js';
import { createRespServer, type RespServer } from './resp/index.js';
import { Router } from './router.js';
import { clusterMemoryConfig, collectStats } from './stats.js';

/** Where a started balancer listens. */
export interface BalancerAddress {
  readonly host: string;
  /** Client port (clients and node registrations). */
  readonly port: number;
  /** Admin HTTP port; -1 when the admin server is disabled. */
  readonly adminPort: number;
  /** RESP port (Redis clients); -1 when there is none. */
  readonly respPort: number;
}

/** At most one log line a minute per address for peers refused at authentication. */
const PEER_REFUSAL_LOG_INTERVAL_MS = 60_000;

/**
 * A dstore balancer: accepts clients and node registrations on one port, places each key on the
 * consistent-hash ring and forwards the request to its owner over one multiplexed connection per
 * node. See the package README for membership, health and timeout semantics.
 */
export class Balancer {
  /** The resolved options. */
  readonly options: ResolvedBalancerOptions;
  /**
   * Node registry, ring and epoch.
   * @internal Exposed for this repository's tests; its type is not part of the public API.
   */
  readonly membership: Membership;
  /**
   * Counters and the Prometheus registry.
   * @internal Exposed for this repository's tests; its type is not part of the public API.
   */
  readonly metrics: BalancerMetrics;
  /** The logger in use. */
  readonly logger: Logger;

  private readonly health: HealthMonitor;
  private readonly router: Router;
  /** The cluster map for direct-routing clients (CLUSTER_MAP, MAP_PUSH). */
  private readonly maps: MapPublisher;
  private readonly scans: ClusterScan;
  private readonly control: ControlHandler;
  private readonly server: FrameServer;
  private readonly admin: AdminServer | undefined;
  /** The RESP front door; created in {@link start} (it needs the users), when `respPort` >= 0. */
  private resp: RespServer | undefined;
  /** The node id each node connection JOINed as: it may speak for that node only. */
  private readonly nodeIds = new WeakMap<Connection, string>();
  /** The node id a connection's last JOIN was refused as, while it has none accepted. */
  private readonly refusedJoins = new WeakMap<Connection, string>();
  /** Node connections with an accepted JOIN. */
  private readonly joinedConnections = new WeakSet<Connection>();
  /** Set in {@link start}, before the port opens (the users file is read then). */
  private authenticator!: Authenticator;
  /** Failed client authentications per source address, shared by the native and the RESP port. */
  private readonly authFailures: AuthFailureBudget;
  /** RESP's checks of passwords sent in clear: scrypt work bounded and shared out by address. */
  private readonly passwordChecks = new PasswordChecks();
  /** Bytes waiting to be written to clients, both ports together (`maxClientOutputBytes`). */
  private readonly outputBudget: ClientOutputBudget;
  private users: UserDirectory | undefined;
  private readonly startedAt = Date.now();
  private state: 'new' | 'starting' | 'running' | 'stopping' | 'stopped' = 'new';
  private stopping: Promise<void> | undefined;
  private boundAddress: BalancerAddress | undefined;
  private resolveStopped: () => void = () => undefined;
  /** Resolves when the balancer starts stopping. */
  private readonly stopped = new Promise<void>((resolve) => {
    this.resolveStopped = resolve;
  });

  constructor(options: BalancerOptions = {}) {
    this.options = resolveBalancerOptions(options);
    this.logger = options.logger ?? createLogger(this.options.logLevel);
    if (options.experimentalReplication !== undefined) {
      // Kept for one release so that old scripts start; it changes nothing.
      this.logger.warn(
        'experimentalReplication (--experimental-replication) is deprecated and has no effect: replication needs no flag (a new map gets factor 3 unless --replication-factor says otherwise); it will be removed in a later release',
      );
    }
    this.health = new HealthMonitor(this.options.heartbeatTimeoutMs);
    this.membership = new Membership({
      algorithm: this.options.hash,
      hashTag: this.options.hashTag,
      replicationFactor: this.options.replicationFactor,
      health: this.health,
      logger: this.logger,
      store: options.mapStore ?? this.createMapStore(),
      balancerId: this.options.id,
      heartbeatTimeoutMs: this.options.heartbeatTimeoutMs,
      failureTimeoutMs: this.options.failureTimeoutMs,
      leaseMs: this.options.leaseMs,
      deadAfterMs: this.options.deadAfterMs,
      onMemberFailed: () => this.metrics.memberFailed(),
      onSyncCopied: (copied) => this.metrics.syncCopied(copied),
      link: {
        requestTimeoutMs: this.options.requestTimeoutMs,
        maxInFlight: this.options.maxInFlightPerNode,
        credentials:
          this.options.clusterSecret === undefined
            ? undefined
            : { kind: 'peer', secret: this.options.clusterSecret },
        connectTimeoutMs: Math.min(5000, this.options.requestTimeoutMs * 2),
        tls: this.options.tls === undefined ? undefined : peerClientTls(this.options.tls),
      },
    });
    this.metrics = new BalancerMetrics(this.membership);
    this.authFailures = new AuthFailureBudget({
      limit: this.options.authFailureLimit,
      windowMs: this.options.authFailureWindowMs,
      paceMs: this.options.authPaceMs,
      // Once per address per window (the budget's promise): a guessing flood is one line.
      onLockout: (address, failures, windowMs) =>
        this.logger.warn(
          { address, failures, windowMs },
          'too many failed client authentications from this address: its attempts are refused until the window passes',
        ),
    });
    this.metrics.watchAuthFailures(this.authFailures);
    this.metrics.watchPasswordChecks(this.passwordChecks);
    this.outputBudget = new ClientOutputBudget({
      maxBytes: this.options.maxClientOutputBytes,
      onEvict: (bytes, totalBytes) =>
        this.logger.warn(
          { bytes, totalBytes, maxBytes: this.options.maxClientOutputBytes },
          'client connection dropped: the answers waiting for all clients passed --max-client-output, and it held the most',
        ),
    });
    this.metrics.watchClientOutput(this.outputBudget);
    this.router = new Router(this.membership, this.metrics);
    this.maps = new MapPublisher(this.membership);
    this.scans = new ClusterScan(this.membership);
    this.control = new ControlHandler(this.membership, this.logger);
    this.server = new FrameServer({
      host: this.options.host,
      port: this.options.port,
      maxConnections: this.options.maxConnections,
      maxPeerConnections: this.options.maxPeerConnections,
      maxPendingConnections: this.options.maxPendingConnections,
      maxPendingPerAddress: this.options.maxPendingPerAddress,
      authTimeoutMs: this.options.authTimeoutMs,
      clientIdleTimeoutMs: this.options.clientIdleTimeoutMs,
      requireAuthentication: true,
      tls: this.options.tls,
      outputBudget: this.outputBudget,
      connection: {
        maxServingBytes: this.options.maxClientBytesInFlight,
        frameTimeoutMs: this.options.frameTimeoutMs,
        // A client pipelining reads of large values has as many fetched as its output bound
        // holds: the node links, shared by every client, do not carry 1024 of its megabytes.
        boundAnswerBytes: true,
      },
      onRequest: (request, connection) => this.onRequest(request, connection),
    });
    this.server.on('refused', (remote) =>
      this.logger.warn({ remote }, 'connection refused: too many connections'),
    );
    this.admin =
      this.options.adminPort >= 0
        ? new AdminServer(
            this.membership,
            this.metrics,
            this.logger,
            { token: this.options.adminToken, scope: this.options.adminAuth },
            this.options.tls,
            { balancerId: this.options.id },
          )
        : undefined;
    this.health.on('status', (node, up) => {
      if (up) this.logger.info({ node: node.id, address: node.address }, 'node up');
      else
        this.logger.warn(
          { node: node.id, address: node.address },
          'node down: its keys fail with UNAVAILABLE',
        );
    });
  }

  private createMapStore(): MapStore {
    const { dataDir, etcd } = this.options;
    if (etcd !== undefined) return new EtcdMapStore({ ...etcd, logger: this.logger });
    return dataDir === undefined ? new MemoryMapStore() : new FileMapStore(dataDir);
  }

  /** The current ring snapshot. */
  get ring(): HashRing {
    return this.membership.ring;
  }

  /** The current ring epoch. */
  get epoch(): number {
    return this.membership.epoch;
  }

  /** The balancer id (answered in HELLO). */
  get id(): string {
    return this.options.id;
  }

  /** Where the balancer listens (after {@link start}). */
  get address(): BalancerAddress {
    if (!this.boundAddress) throw new DstoreError(ErrorCode.UNAVAILABLE, 'balancer is not started');
    return this.boundAddress;
  }

  /** Open client and node-registration connections. */
  get connectionCount(): number {
    return this.server.connectionCount;
  }

  /** Binds both ports, connects to the static nodes and starts health checks. */
  async start(): Promise<BalancerAddress> {
    if (this.state !== 'new') throw new DstoreError(ErrorCode.INVALID_ARGUMENT, `balancer is ${this.state}`);
    this.state = 'starting';
    try {
      this.users = await UserDirectory.open({ file: this.options.usersFile, token: this.options.token });
    } catch (error) {
      this.state = 'stopped';
      throw error;
    }
    this.authenticator = new Authenticator({
      role: 'balancer',
      serverId: () => this.options.id,
      clusterSecret: this.options.clusterSecret,
      users: this.users,
      protectedMode: this.options.protectedMode,
      requireVerifiedPeers: this.options.tls?.ca !== undefined,
      admit: (connection, kind) => this.server.admit(connection, kind),
      onRefusal: (connection, role, code, message) => this.authRefused(connection, role, code, message),
      failures: this.authFailures,
    });
    if (this.options.respPort >= 0) {
      this.resp = createRespServer({
        options: this.options,
        router: this.router,
        users: this.users,
        authFailures: this.authFailures,
        passwordChecks: this.passwordChecks,
        outputBudget: this.outputBudget,
        facts: () => ({
          balancerId: this.options.id,
          version,
          uptimeSeconds: Math.floor((Date.now() - this.startedAt) / 1000),
          nodes: this.membership.size,
          epoch: this.epoch,
        }),
        dbSize: () => clusterDbSize(this.membership),
        replicasOfEveryWrite: () => this.membership.replicasOfEveryWrite,
        memoryConfig: () =>
          clusterMemoryConfig(
            this.membership,
            Math.min(this.options.statsTimeoutMs, this.options.requestTimeoutMs),
          ),
        flush: () => clusterFlush(this.membership),
        scan: (request, grant) => this.scans.page(request, grant),
        ring: () => this.membership.routingRing,
        readsLeaveTheHead: () => (this.membership.topology.replication?.factor ?? 1) > 1,
      });
    }
    this.health.start();
    try {
      await this.membership.open(
        this.options.nodes.map((node) => ({
          ...node,
          verifyIdentity: node.id !== `${node.host}:${node.port}`,
        })),
      );
    } catch (error) {
      await this.stop();
      throw error;
    }
    try {
      const client = await this.server.listen();
      const admin = this.admin
        ? await this.admin.listen(this.options.adminHost, this.options.adminPort)
        : undefined;
      const resp = this.resp ? await this.resp.listen() : undefined;
      this.boundAddress = {
        host: client.address,
        port: client.port,
        adminPort: admin?.port ?? -1,
        respPort: resp?.port ?? -1,
      };
    } catch (error) {
      await this.stop();
      throw new DstoreError(ErrorCode.UNAVAILABLE, `cannot listen: ${(error as Error).message}`, {
        cause: error,
      });
    }
    const bound = this.boundAddress;
    // Followers dial the coordinator at the address in its name: never an unspecified one.
    const host = UNSPECIFIED_HOSTS.has(bound.host) ? '127.0.0.1' : bound.host;
    const candidate = candidateName(this.options.id, host, bound.port);
    if (this.membership.store.kind === 'etcd') void this.campaign(candidate);
    else {
      try {
        await this.membership.lead(candidate);
      } catch (error) {
        await this.stop();
        throw error;
      }
    }
    this.state = 'running';
    this.logger.info(
      { ...this.boundAddress, epoch: this.epoch, nodes: this.membership.size },
      'balancer ready',
    );
    return this.boundAddress;
  }

  /**
   * Campaigns for the map's writer role for as long as the balancer runs: on etcd several
   * balancers share one map and one of them, elected, writes it; when it dies (or loses its
   * lease) another takes over and resumes whatever the map calls for.
   */
  private async campaign(candidate: string): Promise<void> {
    while (this.state === 'running' || this.state === 'starting') {
      try {
        await this.membership.lead(candidate);
        if (this.state !== 'running' && this.state !== 'starting') return;
        await new Promise<void>((resolve) => {
          this.membership.once('leadershipLost', resolve);
          this.stopped.then(resolve, resolve);
        });
      } catch (error) {
        if (this.state !== 'running' && this.state !== 'starting') return;
        this.logger.warn(
          { err: (error as Error).message },
          'campaign for the coordinator role failed; retrying',
        );
        await new Promise((resolve) => setTimeout(resolve, 1000).unref());
      }
    }
  }

  /**
   * Stops gracefully: stops accepting, lets requests in flight be answered (each is bounded by the
   * request timeout), closes the node links, then the admin server. Idempotent.
   */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private async shutdown(): Promise<void> {
    this.state = 'stopping';
    this.resolveStopped();
    this.logger.info('balancer stopping');
    // The writer's role first (etcd): draining takes up to the grace, and the nodes' leases,
    // which only the writer grants, must not run out meanwhile (they did: a graceful stop of the
    // coordinator cost as much as its crash).
    await this.membership.resign();
    await Promise.all([
      this.server.close(this.options.shutdownGraceMs).catch(() => undefined),
      this.resp?.close(this.options.shutdownGraceMs).catch(() => undefined),
    ]);
    this.health.stop();
    await this.membership.close();
    if (this.admin) await this.admin.close().catch(() => undefined);
    this.state = 'stopped';
    this.logger.info('balancer stopped');
  }

  private onRequest(request: Request, connection: Connection): void {
    const startMs = performance.now();
    const principal = connection.principal;
    if (principal === undefined || request.op === Op.HELLO || request.op === Op.AUTH) {
      this.beforeAuthentication(request, connection, startMs);
      return;
    }
    // The hot path reads one field for a client with full access, anonymous or a peer.
    if (principal.kind === 'user' && (principal.grant.limited || principal.grant.revoked)) {
      if (!this.permitted(request, connection, startMs)) return;
    }
    switch (request.op) {
      case Op.GET:
      case Op.SET:
      case Op.DEL:
        this.router.forwardToOwner(request, connection, startMs);
        return;
      case Op.MGET:
        this.router.forwardMGet(request, connection, startMs);
        return;
      case Op.MSET:
        this.router.forwardMSet(request, connection, startMs);
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
        this.router.forwardKeyed(request, connection, startMs);
        return;
      case Op.EXISTS:
        this.router.forwardExists(request, connection, startMs);
        return;
      case Op.PING:
        this.metrics.record(Op.PING, startMs, true);
        connection.reply({ op: Op.OK, id: request.id });
        return;
      case Op.STATS:
        this.answerStats(request.id, connection, startMs);
        return;
      case Op.CLUSTER_MAP:
        // Any authenticated client may route directly; the map holds no secrets.
        this.maps.serve(request, connection);
        return;
      case Op.SCAN:
      case Op.DBSIZE:
      case Op.FLUSH:
        this.answerKeyspace(request, connection, startMs);
        return;
      default:
        this.answerControl(request, connection, startMs);
    }
  }

  /**
   * A HELLO or AUTH refused: counted by code; a peer's (a node or balancer with the wrong or no
   * cluster secret, an unverified certificate) also logged, at most once a minute per address:
   * such a node retries forever, and the balancer is where an operator looks for it.
   */
  private authRefused(connection: Connection, role: PeerRole, code: string, message: string): void {
    this.metrics.recordError(code);
    if (role === 'client') return;
    const address = connection.socket.remoteAddress ?? 'unknown';
    const now = performance.now();
    const last = this.peerRefusalLoggedAt.get(address);
    if (last !== undefined && now - last < PEER_REFUSAL_LOG_INTERVAL_MS) return;
    // Bounded: a scan from many addresses must not grow the map without limit.
    if (this.peerRefusalLoggedAt.size >= 1024) this.peerRefusalLoggedAt.clear();
    this.peerRefusalLoggedAt.set(address, now);
    this.logger.warn(
      { address, port: connection.socket.remotePort, role, code, err: message },
      `refused a ${role} (it is not let in: check its --cluster-secret and TLS settings); logged once a minute per address`,
    );
  }

  /** When a peer's refused authentication was last logged, by remote address. */
  private readonly peerRefusalLoggedAt = new Map<string, number>();

  /** HELLO and AUTH; any other request of a connection without a principal may get an anonymous one. */
  private beforeAuthentication(request: Request, connection: Connection, startMs: number): void {
    if (request.op === Op.HELLO || request.op === Op.AUTH) {
      const succeeded = this.authenticator.respond(connection, request);
      this.metrics.record(request.op, startMs, succeeded);
      return;
    }
    const refusal = this.authenticator.implicit(connection);
    if (refusal !== undefined) {
      this.refuse(request, connection, startMs, ErrorCode.UNAUTHORIZED, refusal);
      return;
    }
    this.onRequest(request, connection);
  }

  /** The permission check of a limited (or reloaded) user; answers the refusal itself. */
  private permitted(request: Request, connection: Connection, startMs: number): boolean {
    const principal = this.authenticator.current(connection);
    if (principal === undefined) {
      this.refuse(
        request,
        connection,
        startMs,
        ErrorCode.UNAUTHORIZED,
        'this user no longer exists (users file reloaded)',
      );
      void connection.close();
      return false;
    }
    const denial = principal.kind === 'user' ? requestDenied(principal.grant, request) : undefined;
    if (denial === undefined) return true;
    this.refuse(request, connection, startMs, ErrorCode.NO_PERMISSION, denial);
    return false;
  }

  /** Answers `request` with an error (counted in the metrics as one). */
  private refuse(
    request: Request,
    connection: Connection,
    startMs: number,
    code: string,
    message: string,
  ): void {
    this.router.fail(connection, request.id, request.op, startMs, new DstoreError(code, message));
  }

  /** Reloads the users file (the CLI calls it on SIGHUP); the current users stay on error. */
  async reloadUsers(): Promise<void> {
    await this.users?.reload();
    this.logger.info({ users: this.users?.size ?? 0 }, 'users reloaded');
  }

  private answerControl(request: Request, connection: Connection, startMs: number): void {
    const principal = connection.principal;
    const role = principal?.kind === 'peer' ? principal.role : undefined;
    // Follower balancers forward the JOIN and LEAVE their nodes send to the map's writer (and,
    // with replication, their HEARTBEATs: the writer grants the leases).
    const forwarded =
      role === 'balancer' &&
      (request.op === Op.JOIN || request.op === Op.LEAVE || request.op === Op.HEARTBEAT);
    if (role !== 'node' && !forwarded) {
      this.refuse(
        request,
        connection,
        startMs,
        role === undefined ? ErrorCode.NO_PERMISSION : ErrorCode.UNKNOWN_OP,
        role === undefined ? clusterOnly(request.op) : `op ${request.op} is not served to a ${role}`,
      );
      return;
    }
    // A node speaks for itself only: once a connection JOINed as one node, it cannot LEAVE or
    // HEARTBEAT as another; one whose JOIN was refused (another live process holds the id, ...)
    // cannot LEAVE or HEARTBEAT as the node it is not.
    if (!forwarded && (request.op === Op.JOIN || request.op === Op.LEAVE || request.op === Op.HEARTBEAT)) {
      const speaksFor = this.nodeIds.get(connection);
      const refusedAs = this.refusedJoins.get(connection);
      const problem =
        speaksFor !== undefined && speaksFor !== request.nodeId
          ? `this connection registered node '${speaksFor}': it cannot speak for '${request.nodeId}'`
          : speaksFor === undefined && refusedAs === request.nodeId && request.op !== Op.JOIN
            ? `this connection's JOIN as '${refusedAs}' was refused: it cannot speak for that node`
            : undefined;
      if (problem !== undefined) {
        this.refuse(request, connection, startMs, ErrorCode.NO_PERMISSION, problem);
        return;
      }
      // Claimed at once, so that a second JOIN on the connection cannot race the first.
      if (request.op === Op.JOIN) this.nodeIds.set(connection, request.nodeId);
    }
    if (request.op === Op.LEAVE) {
      this.control.leave(request).then(
        (answer) => this.sendAnswer(answer, request, connection, startMs),
        (error: unknown) => this.router.fail(connection, request.id, request.op, startMs, error),
      );
      return;
    }
    if (request.op === Op.JOIN) {
      this.control.join(request, connection, !forwarded).then(
        (answer) => {
          // A refused JOIN gives up its claim, unless an earlier JOIN of the connection was accepted.
          if (!forwarded) {
            if (answer.op !== Op.ERROR) this.joinedConnections.add(connection);
            else if (!this.joinedConnections.has(connection)) {
              this.nodeIds.delete(connection);
              this.refusedJoins.set(connection, request.nodeId);
            }
          }
          this.sendAnswer(answer, request, connection, startMs);
        },
        (error: unknown) => this.router.fail(connection, request.id, request.op, startMs, error),
      );
      return;
    }
    let answer: ReturnType<ControlHandler['heartbeat']>;
    switch (request.op) {
      case Op.HEARTBEAT:
        answer = this.control.heartbeat(request);
        break;
      default:
        answer = { op: Op.ERROR, id: request.id, code: ErrorCode.UNKNOWN_OP, message: `op ${request.op}` };
    }
    if (answer instanceof Promise) {
      answer.then(
        (relayed) => this.sendAnswer(relayed, request, connection, startMs),
        (error: unknown) => this.router.fail(connection, request.id, request.op, startMs, error),
      );
      return;
    }
    this.sendAnswer(answer, request, connection, startMs);
  }

  /** Replies with `answer`, or fails the request (counted as an error) when it is an ERROR. */
  private sendAnswer(answer: Response, request: Request, connection: Connection, startMs: number): void {
    if (answer.op === Op.ERROR) {
      this.refuse(request, connection, startMs, answer.code, answer.message);
      return;
    }
    this.metrics.record(request.op, startMs, true);
    connection.reply(answer);
  }

  /** SCAN (a page of the cluster-wide iteration), DBSIZE (the sum over the nodes) and FLUSH (on every node). */
  private answerKeyspace(
    request: ScanRequest | DbSizeRequest | FlushRequest,
    connection: Connection,
    startMs: number,
  ): void {
    const principal = this.authenticator.current(connection);
    const grant = principal?.kind === 'user' ? principal.grant : undefined;
    const id = request.id;
    if (request.op !== Op.SCAN) {
      const denial = grant === undefined ? undefined : keyspaceDenied(grant);
      if (denial !== undefined) {
        this.refuse(request, connection, startMs, ErrorCode.NO_PERMISSION, denial);
        return;
      }
    }
    const answer: Promise<WithoutId<Response>> =
      request.op === Op.SCAN
        ? this.scans.page(request, grant?.prefixes === undefined ? undefined : grant)
        : (request.op === Op.DBSIZE ? clusterDbSize(this.membership) : clusterFlush(this.membership)).then(
            (count) => ({ op: Op.COUNT, count }),
          );
    answer.then(
      (response) => {
        this.metrics.record(request.op, startMs, true);
        connection.reply({ ...response, id });
      },
      (error: unknown) => this.router.fail(connection, id, request.op, startMs, error),
    );
  }

  private answerStats(id: number, connection: Connection, startMs: number): void {
    collectStats({
      balancerId: this.options.id,
      membership: this.membership,
      metrics: this.metrics,
      connections: this.server.connectionCount,
      startedAt: this.startedAt,
      timeoutMs: Math.min(this.options.statsTimeoutMs, this.options.requestTimeoutMs),
      maxEntries: connection.codec.limits.maxMapEntries,
    }).then(
      (stats) => {
        this.metrics.record(Op.STATS, startMs, true);
        connection.reply({ op: Op.STATS_RESULT, id, stats });
      },
      (error: unknown) => this.router.fail(connection, id, Op.STATS, startMs, error),
    );
  }
}

/** Creates a balancer (call `start()` to listen). */
export function createBalancer(options: BalancerOptions = {}): Balancer {
  return new Balancer(options);
}
