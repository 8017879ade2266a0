import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { type Chain, type ChainRange, type ReplicaState, rangeShare } from '@dstore/hashring';
import type { TlsServerOptions } from '@dstore/protocol';
import type { Logger } from 'pino';
import type { MemberState } from './cluster-map.js';
import type { AdminAuthScope } from './config.js';
import { type DashboardOptions, DashboardServer } from './dashboard-server.js';
import { ClusterHistory } from './history.js';
import type { RefusedJoinView } from './join-refusals.js';
import type { MapStoreKind } from './map-store.js';
import type { Membership } from './membership.js';
import type { BalancerMetrics } from './metrics.js';
import type { MigrationProgress } from './migrator.js';
import type { SyncProgress } from './resync.js';

/** One node as `/ring` shows it. */
export interface RingNodeView {
  readonly id: string;
  readonly address: string;
  readonly status: 'up' | 'down';
  readonly weight: number;
  /** Fraction of the hash space the node owns (0..1). */
  readonly share: number;
  /** Key count from the node's last heartbeat (0 for nodes that do not heartbeat). */
  readonly keys: number;
  /** The node's incarnation in the cluster map ('' for a static node that cannot prove one). */
  readonly identity: string;
  /** The member's state in the cluster map. */
  readonly state: MemberState;
  /** The member's replication state in the cluster map (chains are derived from it). */
  readonly replicaState: ReplicaState;
  /**
   * The node's storage as its last HEARTBEAT reported it: `ok`, or `degraded` (writes refused,
   * reads and deletes served) with the reason, and its used/available bytes. Absent for nodes that
   * do not heartbeat here or do not report it.
   */
  readonly storage?: {
    readonly state: 'ok' | 'degraded';
    readonly reason: string;
    readonly usedBytes: number;
    readonly availableBytes: number;
  };
}

/** The cluster map as `/ring` shows it. */
export interface MapView {
  /** Epoch of the map: raised by every change. */
  readonly epoch: number;
  readonly cluster: string;
  /** Fixed at the map's creation: a node holding data names the generation it belongs to in JOIN. */
  readonly generation: number;
  /** Where the map lives: memory, file or etcd, and the path or endpoints. */
  readonly store: MapStoreKind;
  readonly location: string;
  /** The balancer that writes the map (`<id>@<host>:<port>`). */
  readonly coordinator: string | undefined;
  /** Whether this balancer writes the map, or follows it. */
  readonly role: 'coordinator' | 'follower';
  /** Map epoch at which the current ring was set (the epoch nodes see in RING). */
  readonly ringEpoch: number;
  readonly updatedAt: string;
  /** The ring change in progress, if any. */
  readonly transition: {
    readonly phase: 'stream' | 'switch' | 'install' | 'purge';
    readonly reason: string;
    readonly fromRingEpoch: number;
    readonly startedAt: string;
    readonly streamsDone: number;
    readonly keysMoved: number;
  } | null;
  /** Members that were removed (their identities are refused). */
  readonly removed: readonly {
    readonly id: string;
    readonly identity: string;
    readonly sinceEpoch: number;
  }[];
}

/**
 * The ranges of the ring that share one chain, as `/ring` shows them: the chain's fields (see
 * `Chain` in `@dstore/hashring`), head and tail null when none serves (JSON has no undefined).
 */
export interface ChainView extends Omit<Chain, 'head' | 'tail'> {
  readonly head: string | null;
  readonly tail: string | null;
  /** Ring ranges with this chain (neighbours with the same chain counted as one). */
  readonly ranges: number;
  /** Fraction of the hash space (0..1) they cover. */
  readonly share: number;
}

/** The cluster map's replication as `/ring` shows it. */
export interface ReplicationView {
  /** Copies of each key the map asks for (fixed when the map was created). */
  readonly factor: number;
  /**
   * Whether copies beyond the first are made: true when the factor is above 1 (chain replication:
   * a write is acknowledged once every member of its serving chain has it).
   */
  readonly active: boolean;
  /**
   * Ring ranges whose serving chain is shorter than min(factor, ring members not dead): a ring
   * shorter than the factor is not under-replicated for it (0 with factor 1).
   */
  readonly underReplicatedRanges: number;
  /** Ranges grouped by chain, most of the hash space first. */
  readonly chains: readonly ChainView[];
  /**
   * The catch-up of a returning member (one at a time; each member's state is in `nodes`):
   * keys and bytes streamed to it, keys and bytes per second, ranges left. Null when none runs.
   */
  readonly sync: SyncProgress | null;
  /** Keys copied to learners (returning members, ring changes) since this balancer started. */
  readonly syncKeysTotal: number;
  /** Bytes of the keys and values of {@link syncKeysTotal}. */
  readonly syncBytesTotal: number;
}

/** The `/ring` document. */
export interface RingView {
  /** The cluster map's epoch. */
  readonly epoch: number;
  /** The authoritative cluster map this balancer routes on. */
  readonly map: MapView;
  readonly algorithm: string;
  /** The map's hash tag (e.g. `{}`), or null: every key placed by all of it. */
  readonly hashTag: string | null;
  readonly nodes: readonly RingNodeView[];
  /** Replication factor, chains and under-replicated ranges of the map's ring. */
  readonly replication: ReplicationView;
  /** Key migration: the running one, or the last one when `active` is false. */
  readonly migration: MigrationProgress;
  /**
   * JOINs this balancer refused in the last minute (another live node under the id, a removed
   * identity, another cluster's data): nodes that are in no ring until the operator acts.
   */
  readonly refusedJoins: readonly RefusedJoinView[];
}

/** The chains of one map grouped for `/ring`, and how many of their ranges are under-replicated. */
interface ChainGroups {
  readonly chains: readonly ChainView[];
  readonly underReplicatedRanges: number;
}

/**
 * Grouped chains by the chain list they were grouped from. Membership keeps one list per map, so
 * this is a cache per map: grouping every range of a replicated ring (~19 ms for 5 nodes at
 * factor 3) on every `/ring` starved the event loop of a balancer polled by a dashboard or script.
 */
const groupedChains = new WeakMap<readonly ChainRange[], ChainGroups>();

function chainGroupsOf(ranges: readonly ChainRange[]): ChainGroups {
  const cached = groupedChains.get(ranges);
  if (cached !== undefined) return cached;
  const groups = new Map<
    string,
    { view: Omit<ChainView, 'ranges' | 'share'>; ranges: number; share: number }
  >();
  let underReplicatedRanges = 0;
  for (const range of ranges) {
    if (range.underReplicated) underReplicatedRanges++;
    const share = rangeShare(range);
    const key = `${range.desired.join('\u0000')}|${range.path.join('\u0000')}`;
    const group = groups.get(key);
    if (group !== undefined) {
      group.ranges++;
      group.share += share;
      continue;
    }
    groups.set(key, {
      view: {
        desired: range.desired,
        serving: range.serving,
        path: range.path,
        head: range.head ?? null,
        tail: range.tail ?? null,
        underReplicated: range.underReplicated,
        changing: range.changing,
      },
      ranges: 1,
      share,
    });
  }
  const chains = [...groups.values()]
    .sort((a, b) => b.share - a.share)
    .map(({ view, ranges, share }) => ({ ...view, ranges, share }));
  const grouped = { chains, underReplicatedRanges };
  groupedChains.set(ranges, grouped);
  return grouped;
}

/** The replication part of `/ring`: the map's chains grouped by desired chain. */
export function replicationView(membership: Membership): ReplicationView {
  const { chains, underReplicatedRanges } = chainGroupsOf(membership.chains);
  const factor = membership.clusterMap.replicationFactor;
  return {
    factor,
    active: factor > 1,
    underReplicatedRanges,
    chains,
    sync: membership.resync.snapshot(),
    syncKeysTotal: membership.resync.keysStreamedTotal,
    syncBytesTotal: membership.resync.bytesStreamedTotal,
  };
}

/** The `/health` document. */
export interface HealthView {
  readonly status: 'ok';
  /** The ring is non-empty and every ring node is up. */
  readonly ready: boolean;
  readonly nodes: number;
  readonly nodesUp: number;
  readonly epoch: number;
}

/** Builds the `/ring` document from the current membership. */
export function ringView(membership: Membership): RingView {
  const shares = membership.ring.shares();
  const map = membership.clusterMap;
  const members = new Map(
    map.members.filter((member) => member.state !== 'removed').map((member) => [member.id, member]),
  );
  return {
    epoch: map.epoch,
    map: mapView(membership),
    algorithm: membership.algorithm,
    hashTag: map.ring.hashTag ?? null,
    nodes: [...membership.nodes].map((node) => ({
      id: node.id,
      address: node.address,
      status: node.up ? 'up' : 'down',
      weight: node.weight,
      share: shares.get(node.id) ?? 0,
      keys: node.keyCount,
      identity: members.get(node.id)?.identity ?? '',
      state: members.get(node.id)?.state ?? 'removed',
      replicaState: members.get(node.id)?.replicaState ?? 'up',
      ...(node.storage === undefined
        ? {}
        : {
            storage: {
              state: node.storage.degraded === '' ? ('ok' as const) : ('degraded' as const),
              reason: node.storage.degraded,
              usedBytes: node.storage.usedBytes,
              availableBytes: node.storage.availableBytes,
            },
          }),
    })),
    replication: replicationView(membership),
    migration: membership.migrator.snapshot(),
    refusedJoins: membership.refusedJoins,
  };
}

/** The map part of `/ring`. */
export function mapView(membership: Membership): MapView {
  const map = membership.clusterMap;
  const transition = map.transition;
  return {
    epoch: map.epoch,
    cluster: map.cluster,
    generation: map.generation,
    store: membership.store.kind,
    location: membership.store.location,
    coordinator: membership.store.leader(),
    role: membership.isCoordinator ? 'coordinator' : 'follower',
    ringEpoch: map.ring.epoch,
    updatedAt: map.updatedAt,
    transition:
      transition === null
        ? null
        : {
            phase: transition.phase,
            reason: transition.reason,
            fromRingEpoch: transition.from.epoch,
            startedAt: transition.startedAt,
            streamsDone: transition.done.length,
            keysMoved: transition.keysMoved,
          },
    removed: map.members
      .filter((member) => member.state === 'removed')
      .map(({ id, identity, sinceEpoch }) => ({ id, identity, sinceEpoch })),
  };
}

/** Builds the `/health` document from the current membership. */
export function healthView(membership: Membership): HealthView {
  let nodesUp = 0;
  for (const node of membership.nodes) if (node.up) nodesUp++;
  const nodes = membership.size;
  return { status: 'ok', ready: nodes > 0 && nodesUp === nodes, nodes, nodesUp, epoch: membership.epoch };
}

/** Options of the {@link AdminServer}'s authentication. */
export interface AdminAuthOptions {
  /** The Bearer token; undefined = mutating endpoints are refused (and reads are open). */
  readonly token: string | undefined;
  /** Which endpoints need it. */
  readonly scope: AdminAuthScope;
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

function sendJson(response: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  response.writeHead(status, { 'content-type': 'application/json; charset=utf-8' }).end(text);
}

/**
 * The admin HTTP server: `/health` (liveness, always 200 while the process serves, with
 * readiness in the body), `/health/ready` (503 when not ready), `/ring` and `/metrics`.
 * Separate from the client port so operators and scrapers never compete with clients.
 */
export class AdminServer {
  private readonly server: Server;
  /** SHA-256 of the token: compared in constant time with the digest of what a request sends. */
  private readonly tokenDigest: Buffer | undefined;
  /** The last 15 minutes, sampled once a second for the dashboard. */
  private readonly history: ClusterHistory;
  private readonly dashboard: DashboardServer;

  constructor(
    private readonly membership: Membership,
    private readonly metrics: BalancerMetrics,
    private readonly logger: Logger,
    private readonly auth: AdminAuthOptions = { token: undefined, scope: 'mutating' },
    /** Serve HTTPS with the balancer's certificate (a client certificate is not asked for). Default: HTTP. */
    tls?: TlsServerOptions,
    dashboard: DashboardOptions = { balancerId: 'balancer' },
  ) {
    this.tokenDigest = auth.token === undefined ? undefined : digest(auth.token);
    this.history = new ClusterHistory(membership, metrics);
    this.dashboard = new DashboardServer(membership, this.history, ringView, dashboard);
    const listener = (request: IncomingMessage, response: ServerResponse): void => {
      this.handle(request, response).catch((error: unknown) => {
        this.logger.error({ err: error }, 'admin request failed');
        if (!response.headersSent) sendJson(response, 500, { error: (error as Error).message });
        else response.destroy();
      });
    };
    this.server =
      tls === undefined
        ? createServer(listener)
        : createHttpsServer(
            { cert: tls.cert, key: tls.key, handshakeTimeout: tls.handshakeTimeoutMs ?? 10_000 },
            listener,
          );
    // Admin clients are few and short-lived; do not let a stuck one hold shutdown.
    this.server.keepAliveTimeout = 1000;
    this.server.headersTimeout = 5000;
    this.server.requestTimeout = 10_000;
  }

  /** Binds and resolves with the bound address. */
  listen(host: string, port: number): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        this.history.start();
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  /** Stops accepting and closes idle keep-alive connections. */
  close(): Promise<void> {
    this.history.stop();
    this.dashboard.close();
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
    });
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const [path = '/', query = ''] = (request.url ?? '/').split('?', 2);
    const remove = /^\/nodes\/([^/]+)\/remove$/.exec(path);
    const mutating = request.method !== 'GET' && request.method !== 'HEAD';
    const operator = this.carriesToken(request);
    if (!mutating && DashboardServer.servesWithoutToken(path)) {
      // The page shell and its two files hold no cluster data: without the token the shell asks
      // for it (401), and everything with data (/events, /ring...) still needs it below.
      this.dashboard.handle(path, request, response, {
        operator,
        refused: this.auth.scope === 'all' && !operator,
      });
      return;
    }
    if ((mutating || this.auth.scope === 'all') && !this.authorized(request, response, mutating)) return;
    if (DashboardServer.serves(path)) {
      this.dashboard.handle(path, request, response, { operator, refused: false });
      return;
    }
    if (remove && request.method === 'POST') {
      const id = decodedSegment(remove[1]!);
      if (id === undefined) {
        sendJson(response, 400, { error: `the node id in ${path} is not valid percent-encoding` });
        return;
      }
      this.removeNode(id, new URLSearchParams(query).has('dead'), response);
      return;
    }
    if (remove) {
      // The remove endpoint exists: only its method is wrong.
      response.writeHead(405, { allow: 'POST' }).end();
      return;
    }
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { allow: remove ? 'POST' : 'GET, HEAD' }).end();
      return;
    }
    switch (path) {
      case '/health':
      case '/health/live':
        sendJson(response, 200, healthView(this.membership));
        return;
      case '/health/ready': {
        const health = healthView(this.membership);
        sendJson(response, health.ready ? 200 : 503, health);
        return;
      }
      case '/ring':
        sendJson(response, 200, ringView(this.membership));
        return;
      case '/metrics': {
        const text = await this.metrics.registry.metrics();
        response.writeHead(200, { 'content-type': this.metrics.registry.contentType }).end(text);
        return;
      }
      default:
        sendJson(response, 404, {
          error: `no such endpoint: ${path}`,
          endpoints: [
            '/',
            '/events',
            '/health',
            '/health/ready',
            '/ring',
            '/metrics',
            'POST /nodes/<id>/remove',
            'POST /nodes/<id>/remove?dead',
          ],
        });
    }
  }

  /**
   * Whether the request carries the admin token (`Authorization: Bearer <token>`); answers 401
   * (wrong or missing token) or 403 (no token configured: mutating endpoints are off) otherwise.
   */
  private authorized(request: IncomingMessage, response: ServerResponse, mutating: boolean): boolean {
    if (this.tokenDigest === undefined) {
      if (!mutating) return true;
      sendJson(response, 403, {
        error: 'mutating admin endpoints are disabled: start the balancer with --admin-token',
      });
      return false;
    }
    if (this.carriesToken(request)) return true;
    this.logger.warn({ remote: request.socket.remoteAddress, path: request.url }, 'admin request refused');
    response.setHeader('www-authenticate', 'Bearer realm="dstore-admin"');
    sendJson(response, 401, { error: 'this endpoint needs the admin token: Authorization: Bearer <token>' });
    return false;
  }

  /** Whether the request carries the configured admin token (false when none is configured). */
  private carriesToken(request: IncomingMessage): boolean {
    if (this.tokenDigest === undefined) return false;
    // The scheme is case-insensitive (RFC 9110 11.1): `bearer <token>` is the same credential.
    const match = /^Bearer +(.+)$/i.exec(request.headers.authorization ?? '');
    return match !== null && timingSafeEqual(digest(match[1]!), this.tokenDigest);
  }

  /**
   * Operator remove: the node's ranges move to their new owners, then it leaves the ring. Answers
   * 202 at once (a migration can outlast any HTTP deadline); progress and the end show in /ring.
   * With `dead` (`?dead`: replication): a failed member declared dead, never asked anything (see
   * `Membership.removeDead`); refused with 400 when it cannot be (not failed, factor 1). A remove
   * that would leave a range with no live copy is refused with 400 too, naming the range.
   */
  private removeNode(id: string, dead: boolean, response: ServerResponse): void {
    if (!this.membership.isCoordinator) {
      sendJson(response, 409, {
        error: 'this balancer does not write the cluster map: send the remove to the coordinator',
        coordinator: this.membership.store.leader() ?? null,
      });
      return;
    }
    if (this.membership.node(id) === undefined) {
      sendJson(response, 404, { error: `no node '${id}' in the ring` });
      return;
    }
    const refusal = dead ? this.membership.deadRefusal(id) : this.membership.leaveRefusal(id);
    if (refusal !== undefined) {
      sendJson(response, 400, { error: refusal.message, code: refusal.code });
      return;
    }
    this.logger.info({ node: id, dead }, 'operator remove');
    (dead ? this.membership.removeDead(id) : this.membership.leave(id)).catch((error: unknown) =>
      this.logger.error({ node: id, err: (error as Error).message }, 'operator remove failed'),
    );
    sendJson(response, 202, { status: 'removing', node: id, dead, epoch: this.membership.epoch });
  }
}

/** A path segment percent-decoded, or undefined when its encoding is malformed (a 400, not a 500). */
function decodedSegment(segment: string): string | undefined {
  try {
    return decodeURIComponent(segment);
  } catch {
    return undefined;
  }
}
