import { EventEmitter } from 'node:events';
import { type ChainRange, HashRing, type ReplicaStates, unionRingReproduces } from '@dstore/hashring';
import { chunkRanges, DstoreError, ErrorCode, type HashRange, Op } from '@dstore/protocol';
import type { Logger } from 'pino';
import {
  activeMember,
  byMemberId,
  type ClusterMap,
  createClusterMap,
  DEFAULT_HASH_TAG,
  DEFAULT_REPLICATION_FACTOR,
  desiredRingMembers,
  isRemovedIdentity,
  type MapMember,
  type MapPlacement,
  type MapRing,
  type MapRingMember,
  type MapTransition,
  nextMap,
  replicaStatesOf,
  ringOptionsOf,
  sameRingMembers,
  unionOf,
  withMember,
} from './cluster-map.js';
import {
  type ClusterNode,
  type NodeAddress,
  type NodeLinkOptions,
  type NodeStorage,
  storageDegraded,
} from './cluster-node.js';
import type { BalancerHashAlgorithm } from './config.js';
import { CoordinatorLink } from './coordinator-link.js';
import type { HealthMonitor } from './health.js';
import { joinCapacityRefusal } from './join-capacity.js';
import { JoinRefusals, type RefusedJoinView } from './join-refusals.js';
import type { MapStore } from './map-store.js';
import { type Copied, groupMoves, Migrator, type MoveGroup, streamName } from './migrator.js';
import { NodePool } from './node-pool.js';
import { Resync } from './resync.js';
import { Topology } from './topology.js';

/** A change to the cluster map (see {@link nextMap}). */
type MapPatch = Partial<Pick<ClusterMap, 'ring' | 'members' | 'transition'>>;

/** Deadline of a JOIN forwarded to the coordinator. */
const FORWARD_TIMEOUT_MS = 10_000;
/** Deadline of a HEARTBEAT forwarded to the coordinator (the node's own deadline is 2 s). */
const HEARTBEAT_FORWARD_TIMEOUT_MS = 1500;
/** Deadline of a LEAVE forwarded to the coordinator: it is answered once the node's keys moved. */
const LEAVE_FORWARD_TIMEOUT_MS = 10 * 60_000;

/** What a JOIN did. */
export type JoinOutcome = 'added' | 'updated' | 'unchanged';

/** A node's registration as JOIN carries it. */
export interface JoinSpec extends NodeAddress {
  /** The node's incarnation; undefined for a node that predates identities (not checked). */
  readonly identity: string | undefined;
  /**
   * The cluster map generation the node's data belongs to; undefined when the node holds nothing
   * (or predates the field): not checked.
   */
  readonly generation?: number | undefined;
  /**
   * Bytes the node's storage can still take; undefined when it did not say (not checked). A new
   * member that could not hold its share of the cluster's data is refused ({@link joinCapacityRefusal}).
   */
  readonly availableBytes?: number | undefined;
}

/** Events of a {@link Membership}. */
export interface MembershipEvents {
  /** The cluster map changed; `epoch` is the new map epoch. */
  change: [epoch: number];
  /** This balancer stopped being the map's writer (its etcd lease was lost). */
  leadershipLost: [];
  /** A new {@link Topology} was published (routed ring, epoch or fall-back index changed). */
  topology: [];
}

/** Options of a {@link Membership}. */
export interface MembershipOptions {
  readonly algorithm: BalancerHashAlgorithm;
  /**
   * Hash tag of a map this balancer creates: `''` none, undefined `DEFAULT_HASH_TAG` (`{}`); a
   * stored map keeps its own.
   */
  readonly hashTag?: string | undefined;
  /**
   * Replication factor of a map this balancer creates; a stored map with another factor is
   * refused (INVALID_ARGUMENT). Undefined: a new map gets `DEFAULT_REPLICATION_FACTOR` (3), a
   * stored map keeps its own.
   */
  readonly replicationFactor: number | undefined;
  readonly link: NodeLinkOptions;
  readonly health: HealthMonitor;
  readonly logger: Logger;
  /** Where the authoritative map lives. */
  readonly store: MapStore;
  /** This balancer's name, as the map's writer. */
  readonly balancerId: string;
  /**
   * A member heard from within this long counts as live: a JOIN under its id with another
   * identity is refused. Also the grace after start before an unheard member may be replaced.
   */
  readonly heartbeatTimeoutMs: number;
  /**
   * Replication only (a map factor above 1): a ring member `up` in the map and not heard from for
   * this long is marked `failed` by the writer. Default 5000.
   */
  readonly failureTimeoutMs?: number;
  /** Replication only: the lease granted to `up` members in heartbeat answers, in ms. Default 2000. */
  readonly leaseMs?: number;
  /** Called once per member the writer marks `failed` (the metrics' counter). */
  readonly onMemberFailed?: (id: string) => void;
  /** Called with each completed copy to a learner (the metrics' counters). */
  readonly onSyncCopied?: (copied: Copied) => void;
  /**
   * Replication only: a ring member `failed` this long (as this writer observed it) is declared
   * dead (see {@link Membership.removeDead}); undefined: never (an operator declares it).
   */
  readonly deadAfterMs?: number | undefined;
}

/** Pause between rounds of a replicated ring change's copies that could not all complete. */
const COPY_ROUND_PAUSE_MS = 200;
/**
 * Longest a request refused STALE_EPOCH waits for this balancer to route on the node's newer ring
 * before its one retry (a phase of a ring change is answered by every node in milliseconds; one
 * that is not waits for a failure to be detected).
 */
const CATCH_UP_WAIT_MS = 2000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** The hash ring a cluster map's ring describes (also used by the admin dashboard's ring view). */
export function ringOf(ring: MapRing): HashRing {
  return HashRing.from(ring.members, ringOptionsOf(ring));
}

/**
 * Throws CLUSTER_MISMATCH when the JOINing node holds data of another cluster map (another
 * generation): this balancer runs on a new map (a --data-dir or etcd prefix other than the
 * cluster's, or none: a map in memory) while the node keeps the old cluster's keys. Accepting it
 * would rebuild the cluster from whichever node joined first: the others' keys would be copied
 * over from it (without them) and purged, or served next to another cluster's versions.
 */
function refuseOtherCluster(map: ClusterMap, spec: JoinSpec, location: string): void {
  if (spec.generation === undefined || spec.generation === map.generation) return;
  throw new DstoreError(
    ErrorCode.CLUSTER_MISMATCH,
    `node '${spec.id}' holds data of another cluster (cluster map generation ${spec.generation}); this balancer's map (cluster ${map.cluster}, generation ${map.generation}, kept in ${location}) is not that cluster's: start the balancer with the map the node belongs to (its --data-dir, or --etcd and --etcd-prefix), or start the node on a fresh data dir (a memory node: restart it) to join this cluster empty`,
  );
}

/**
 * Why learner `member` must be taken out of its chains, or undefined: it is a learner (entering
 * while a replicated ring change streams, or syncing after a failure) and its storage refuses
 * writes. A learner is at the end of its chains' write paths: full, it would refuse the writes it
 * is sent and fail them for every client of those chains (most of the keyspace for a joining
 * node), while it serves nothing yet. Failed, its chains route without it (the change or the
 * sync goes on without it), and it is not let back while its storage says it is out of room.
 */
function learnerOutOfRoom(
  map: ClusterMap,
  member: MapMember,
  node: ClusterNode | undefined,
): string | undefined {
  if (!storageDegraded(node)) return undefined;
  const transition = map.transition;
  const entering =
    transition?.phase === 'stream' && !transition.from.members.some((previous) => previous.id === member.id);
  return member.replicaState === 'syncing' || entering ? node?.storage?.degraded : undefined;
}

/**
 * Throws IDENTITY_CONFLICT when another member (any state but removed) has `identity`: node `id`
 * runs on a copy of that member's data dir (a cloned disk or VM image), or on its data dir under
 * a new id. Two members with one identity are one node's keys in two places of the ring, and the
 * copy's keys are as old as the copy (deleted keys among them).
 */
function refuseTwin(map: ClusterMap, id: string, identity: string | undefined): void {
  if (identity === undefined || identity === '') return;
  const twin = map.members.find((m) => m.state !== 'removed' && m.id !== id && m.identity === identity);
  if (twin === undefined) return;
  throw new DstoreError(
    ErrorCode.IDENTITY_CONFLICT,
    `node identity ${identity} belongs to member '${twin.id}' (${twin.host}:${twin.port}): node '${id}' runs on a copy of its data dir, or on it under a new id; refused: start it on a fresh data dir, or as '${twin.id}'`,
  );
}

/**
 * The balancer's side of the authoritative cluster map (see docs/ARCHITECTURE.md, "The cluster
 * map"). It is the map's single writer in this process: every change (JOIN, LEAVE, remove, a
 * transition's progress) is queued, applied to the latest map, stored by compare-and-set, and only
 * then acted on. Everything else is derived from the stored map: the node links (one per member
 * that is not removed), the immutable {@link HashRing} snapshots that requests route on, and the
 * transition that moves keys when the ring changes, which resumes from the map after a restart.
 * Health never changes the map: a down member keeps its keys, whose requests fail with UNAVAILABLE.
 */
export class Membership extends EventEmitter<MembershipEvents> {
  /** Key migration between ring changes. */
  readonly migrator: Migrator;
  /** Replication: the catch-up of `failed` members that return (learners). */
  readonly resync: Resync;
  /** Links to the members (one writer: {@link install} syncs it with the map). */
  private readonly pool: NodePool;
  /** JOINs refused lately, for `/ring` (this process's answers; a follower's forwarded ones too). */
  private readonly joinRefusals = new JoinRefusals();
  private map: ClusterMap;
  private currentRing: HashRing;
  /** The ring requests are forwarded on, with its epoch (the fence every request carries). */
  private routing: { readonly ring: HashRing; readonly epoch: number; readonly states?: ReplicaStates };
  /**
   * The union ring of a replicated ring change (see `unionOf`) while it streams and switches, and
   * its states; undefined otherwise. A new snapshot at every ring epoch (as the map's ring), so
   * routing on an older one counts as a ring being announced.
   */
  private union:
    | {
        readonly ring: HashRing;
        readonly states: ReplicaStates;
        readonly key: string;
        readonly switching: boolean;
      }
    | undefined;
  /** Ring epoch at which each `entering` member (re)entered the union ring: its copies count from then. */
  private readonly enteredAt = new Map<string, number>();
  /** The ring before the running transition's change, sent before the current one to (re)connecting nodes. */
  private fromRing: { ring: HashRing; epoch: number } | undefined;
  private isClosed = false;
  private opened = false;
  private openedAt = 0;
  /** Map writes, one at a time, in order. */
  private writes: Promise<unknown> = Promise.resolve();
  /** The transition task running in this process, if any. */
  private running: Promise<void> | undefined;
  private announced: Promise<void> = Promise.resolve();
  /** Callers waiting for a leaving member to be removed (LEAVE answers, operator removes). */
  private readonly departures = new Map<string, ((removed: boolean) => void)[]>();
  /**
   * Each member's address as the nodes' rings last heard it (the map's when first seen, then the
   * address of its last ready link): a member that comes back at another address makes every
   * node get the rings again.
   */
  private readonly ringAddresses = new Map<string, string>();

  constructor(private readonly options: MembershipOptions) {
    super();
    this.map = createClusterMap(this.placement());
    this.currentRing = ringOf(this.map.ring);
    this.routing = { ring: this.currentRing, epoch: this.map.ring.epoch };
    this.published = new Topology(this.currentRing, this.map.ring.epoch, this.currentRing, undefined);
    const membership = this;
    this.migrator = new Migrator({
      node: (id) => this.pool.get(id),
      get nodes() {
        return membership.pool.values();
      },
      logger: options.logger,
      // A balancer that lost the coordinator role stops its streams: the new one resumes them.
      get closed() {
        return membership.isClosed || !membership.coordinator;
      },
      fallbackChanged: () => this.publish(),
      resendRings: (node) => this.sendRings(node),
    });
    this.migrator.generation = this.map.generation;
    this.migrator.replication = { factor: this.map.replicationFactor, states: replicaStatesOf(this.map) };
    this.resync = new Resync({
      get map() {
        return membership.map;
      },
      get ring() {
        return membership.currentRing;
      },
      get writing() {
        return membership.coordinator && !membership.isClosed;
      },
      node: (id) => this.pool.get(id),
      get nodes() {
        return membership.pool.values();
      },
      logger: options.logger,
      migrator: this.migrator,
      heartbeatTimeoutMs: options.heartbeatTimeoutMs,
      writeMember: (reason, change) => this.writeReplicaState(reason, change),
      onCopied: (copied) => options.onSyncCopied?.(copied),
    });
    this.pool = new NodePool({
      link: options.link,
      health: options.health,
      verifyIdentity: (id) => this.verifyStatic.get(id) ?? true,
      onReady: (node) => this.nodeReady(node),
    });
    this.coordinatorLink = new CoordinatorLink({
      coordinator: () => options.store.leader(),
      self: () => this.candidate,
      credentials: options.link.credentials,
      connectTimeoutMs: options.link.connectTimeoutMs,
      tls: options.link.tls,
    });
  }

  /** The latest stored cluster map (an immutable snapshot). */
  get clusterMap(): ClusterMap {
    return this.map;
  }

  /** Where the map lives. */
  get store(): MapStore {
    return this.options.store;
  }

  /** The ring of the map (the latest; see {@link routingRing} for forwarding). */
  get ring(): HashRing {
    return this.currentRing;
  }

  /**
   * The ring requests are forwarded on: the previous ring until every node acknowledged the RING
   * of the current one, so a node never receives a key it does not know it owns yet.
   */
  get routingRing(): HashRing {
    return this.routing.ring;
  }

  /** Epoch of {@link routingRing}: the fence sent with every forwarded data request. */
  get routingEpoch(): number {
    return this.routing.epoch;
  }

  /** What the router places requests with: one immutable snapshot, replaced whenever it changes. */
  get topology(): Topology {
    return this.published;
  }

  private published: Topology;

  /**
   * Publishes a new {@link Topology} from the routed ring, the map's latest ring and the
   * fall-back index; called by every writer of one of them (this class and, for the fall-back
   * index, the migrator through its host).
   */
  private publish(): void {
    const factor = this.map.replicationFactor;
    // A union ring routes with its own states (its members differ from the map's ring).
    const states = this.routing.states ?? replicaStatesOf(this.map);
    this.published = new Topology(
      this.routing.ring,
      this.routing.epoch,
      this.union?.ring ?? this.currentRing,
      this.migrator?.moves,
      factor > 1 ? { factor, states } : undefined,
    );
    this.emit('topology');
  }

  /** Routes on `ring` (at `epoch`) from now on. */
  private routeOn(ring: HashRing, epoch: number): void {
    const union = this.union;
    this.routing =
      union !== undefined && ring === union.ring ? { ring, epoch, states: union.states } : { ring, epoch };
    this.publish();
    const waiting = this.routeWaiters;
    this.routeWaiters = [];
    for (const waiter of waiting) {
      if (epoch >= waiter.epoch) waiter.resolve();
      else this.routeWaiters.push(waiter);
    }
  }

  /** Catch-ups waiting for this balancer to route on a ring epoch (see {@link routedAt}). */
  private routeWaiters: { readonly epoch: number; readonly resolve: () => void }[] = [];

  /**
   * Resolves once requests route on ring epoch `epoch` or later (every node answered its RING),
   * or after `CATCH_UP_WAIT_MS`: a request retried then is refused again, typed, never held.
   */
  private routedAt(epoch: number): Promise<void> {
    if (this.routing.epoch >= epoch) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, CATCH_UP_WAIT_MS);
      timer.unref();
      this.routeWaiters.push({
        epoch,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }

  /**
   * The ring the nodes get and requests route on as the map stands: the union ring of a
   * replicated ring change while it streams and switches, else the map's ring.
   */
  private get routedRing(): HashRing {
    return this.union?.ring ?? this.currentRing;
  }

  /**
   * After a node refused a request with STALE_EPOCH: catch up with whoever is behind. When the
   * node is ahead, this balancer missed a map (a follower whose watch lags): load the latest from
   * the store. When the node is behind (it missed a RING), send every node the current ring (a
   * RING a node already has is ignored). Otherwise this balancer is announcing a new ring: wait
   * for it. One catch-up at a time; concurrent callers share it.
   */
  catchUp(error: unknown): Promise<void> {
    if (!(error instanceof DstoreError) || error.code !== ErrorCode.STALE_EPOCH) return this.announced;
    const match = /this node is at epoch (\d+)/.exec(error.message);
    const nodeEpoch = match === null ? Number.NaN : Number(match[1]);
    if (!Number.isSafeInteger(nodeEpoch)) return this.announced;
    this.catchingUp ??= this.catchUpWith(nodeEpoch).finally(() => {
      this.catchingUp = undefined;
    });
    return this.catchingUp;
  }

  private catchingUp: Promise<void> | undefined;

  private async catchUpWith(nodeEpoch: number): Promise<void> {
    if (nodeEpoch > this.map.ring.epoch) {
      if (this.coordinator) {
        this.options.logger.warn(
          { nodeEpoch, ringEpoch: this.map.ring.epoch },
          'a node is at a newer ring epoch than the map this coordinator writes: is it in another cluster?',
        );
        return;
      }
      const latest = await this.options.store.load().catch(() => undefined);
      if (latest !== undefined) this.follow(latest);
      await this.announced;
      return;
    }
    if (nodeEpoch < this.routing.epoch) {
      await Promise.all([...this.pool.values()].map((node) => this.sendRings(node)));
      return;
    }
    // The node has a ring this balancer announces but does not route on yet: it switches once
    // every node answered (the announce, or a replicated ring change's phase).
    await Promise.all([this.announced, this.routedAt(nodeEpoch)]);
  }

  /** Resolves once the RING of the current ring has been answered by every node. */
  settled(): Promise<void> {
    return this.announced;
  }

  /** Whether the balancer is closing. */
  get closed(): boolean {
    return this.isClosed;
  }

  /** The map's epoch: raised by every change of the map. */
  get epoch(): number {
    return this.map.epoch;
  }

  /**
   * The chains of the map's ring (see `HashRing.chains`) for the map's replication factor and its
   * members' replication states: the desired and serving chain of every range, neighbours with
   * the same chain merged. Derived, never stored; computed once per map (for /ring, metrics and
   * each round of a ring change's copies to learners).
   */
  get chains(): readonly ChainRange[] {
    return this.currentChains();
  }

  /**
   * How many members besides its head hold every acknowledged write now (RESP WAIT's answer):
   * chain replication acknowledges a write once every serving member of its chain has it, so it is
   * the shortest serving chain less one (a member failed since holds its writes no more for sure, a
   * learner promoted since was copied them); 0 without chains.
   */
  get replicasOfEveryWrite(): number {
    let shortest = Number.POSITIVE_INFINITY;
    for (const chain of this.currentChains()) shortest = Math.min(shortest, chain.serving.length);
    return shortest === Number.POSITIVE_INFINITY ? 0 : Math.max(0, shortest - 1);
  }

  private currentChains(): readonly ChainRange[] {
    const map = this.map;
    if (this.chainsOf?.map !== map) {
      const ring = this.routedRing;
      const chains =
        ring.size === 0 ? [] : ring.chains(map.replicationFactor, this.union?.states ?? replicaStatesOf(map));
      this.chainsOf = { map, chains };
    }
    return this.chainsOf.chains;
  }

  private chainsOf: { readonly map: ClusterMap; readonly chains: readonly ChainRange[] } | undefined;

  /** How a map this balancer creates places keys. */
  private placement(): MapPlacement {
    const configured = this.options.hashTag ?? DEFAULT_HASH_TAG;
    return { algorithm: this.options.algorithm, hashTag: configured === '' ? undefined : configured };
  }

  /** The ring's algorithm. */
  get algorithm(): BalancerHashAlgorithm {
    return this.map.ring.algorithm;
  }

  /** Every member with a link (joining, up or leaving), in map order. */
  get nodes(): IterableIterator<ClusterNode> {
    return this.pool.values();
  }

  /** Number of members with a link. */
  get size(): number {
    return this.pool.size;
  }

  /** The member link with this id. */
  node(id: string): ClusterNode | undefined {
    return this.pool.get(id);
  }

  /**
   * Loads the stored map (if any), opens a link to every member and follows later maps stored by
   * another balancer. Routes on the stored ring at once: members not reconnected yet are down, so
   * their keys get UNAVAILABLE, never another node's answer. Writing needs {@link lead}.
   */
  async open(statics: readonly (NodeAddress & { verifyIdentity: boolean })[]): Promise<void> {
    const store = this.options.store;
    if (store.kind !== 'etcd') {
      this.leading = new Promise((resolve) => {
        this.leadingDecided = resolve;
      });
    }
    this.statics = statics;
    this.verifyStatic = new Map(statics.map((spec) => [spec.id, spec.verifyIdentity]));
    this.openedAt = performance.now();
    const map = await store.load();
    if (map !== undefined) {
      this.checkReplicationFactor(map);
      if (map.ring.algorithm !== this.options.algorithm) {
        this.options.logger.warn(
          { stored: map.ring.algorithm, configured: this.options.algorithm },
          'the cluster map keeps its ring algorithm; --hash applies only to a new map',
        );
      }
      const configured = this.options.hashTag;
      if (configured !== undefined && configured !== (map.ring.hashTag ?? '')) {
        this.options.logger.warn(
          { stored: map.ring.hashTag ?? 'none', configured: configured === '' ? 'none' : configured },
          'the cluster map keeps its hash tag; --hash-tag applies only to a new map',
        );
      }
      this.options.logger.info(
        {
          store: store.location,
          epoch: map.epoch,
          members: map.members.length,
          transition: map.transition?.phase,
        },
        'cluster map loaded',
      );
      this.install(map);
      // Mid-stream, route on the ring before the change until every node has the new one and the
      // fall-back index is set; otherwise the map's ring is right at once.
      if (this.union !== undefined) this.routeOn(this.union.ring, map.ring.epoch);
      else if (map.transition?.phase === 'stream' && this.fromRing !== undefined) {
        this.routeOn(this.fromRing.ring, this.fromRing.epoch);
      } else this.routeOn(this.currentRing, map.ring.epoch);
    }
    this.opened = true;
    this.unwatch = store.watch((next) => this.follow(next));
    if (map !== undefined) this.followTransition();
  }

  /**
   * Becomes the map's writer: resolves once this balancer holds the store's leadership (at once
   * for a file or memory store; by election on etcd, where it may wait for the current
   * coordinator to die) and has resumed whatever the map calls for. `candidate` names this
   * balancer and its client address, so followers can forward JOIN and LEAVE to it.
   */
  async lead(candidate: string): Promise<void> {
    try {
      await this.becomeLeader(candidate);
    } finally {
      this.leadingDecided();
    }
  }

  /**
   * With a file or memory store this balancer is the only writer, decided by {@link lead} right
   * after it listens: JOINs that arrive before wait for it rather than being refused for want of
   * a coordinator (on etcd they are forwarded to the elected one).
   */
  private leading: Promise<void> | undefined;
  private leadingDecided: () => void = () => undefined;

  /**
   * The factor of a new map when none is configured: `DEFAULT_REPLICATION_FACTOR`, but 1 for a
   * balancer given static nodes: a node serves a factor above 1 only under a lease, which comes
   * with the answers to the heartbeats of a node that JOINs, and static nodes need not join (they
   * would refuse everything). Replicating static nodes: set the factor and start them with --join.
   */
  private defaultFactor(): number {
    if (this.statics.length === 0) return DEFAULT_REPLICATION_FACTOR;
    this.options.logger.info(
      { statics: this.statics.length },
      'a new cluster map with static nodes keeps one copy of each key unless --replication-factor says otherwise (replication needs nodes that join: their leases come with heartbeat answers)',
    );
    return 1;
  }

  private async becomeLeader(candidate: string): Promise<void> {
    const store = this.options.store;
    this.candidate = candidate;
    await store.acquireLeadership(candidate, () => this.loseLeadership());
    if (this.isClosed) return;
    // Another coordinator may have written since this process last heard: start from the latest.
    let map = await store.load();
    if (map === undefined && this.followsStoredMap) {
      // The store lost the map this process routes on (etcd restarted on an empty data dir, its
      // keys deleted): a new map would be a new, empty cluster over the live nodes, serving
      // misses for acknowledged keys (fault audit). Refused: the role goes back, nobody writes.
      const lost = new DstoreError(
        ErrorCode.MAP_CORRUPT,
        `${store.location}: the cluster map this balancer follows (cluster ${this.map.cluster}, epoch ${this.map.epoch}) is gone from the store; refusing to create a new cluster over the live one: restore the store's data, or restart every balancer to start a new cluster`,
      );
      this.options.logger.error(
        { store: store.location, cluster: this.map.cluster, epoch: this.map.epoch },
        lost.message,
      );
      await store.resign();
      throw lost;
    }
    if (map === undefined) {
      map = createClusterMap(this.placement(), this.options.replicationFactor ?? this.defaultFactor());
      await store.compareAndSet(undefined, map);
      this.options.logger.info(
        { store: store.location, cluster: map.cluster, replicationFactor: map.replicationFactor },
        'cluster map created',
      );
    } else this.checkReplicationFactor(map);
    if (map.replicationFactor > 1) {
      this.options.logger.info(
        { replicationFactor: map.replicationFactor },
        'chain replication: each key on min(factor, live ring members) nodes, which serve only under a lease from this balancer',
      );
      // A lease comes with a heartbeat answer: a static node that never JOINs refuses everything.
      if (this.statics.length > 0) {
        this.options.logger.warn(
          { replicationFactor: map.replicationFactor, statics: this.statics.map((spec) => spec.id) },
          'static nodes serve with a replication factor above 1 only if they also JOIN this balancer (dstore-node --join: the lease a node needs comes with the heartbeat answers); without --join they answer UNAVAILABLE: join them, or use --replication-factor 1 for a new cluster',
        );
      }
    }
    if (map.epoch !== this.map.epoch || map.cluster !== this.map.cluster) this.install(map);
    this.coordinator = true;
    this.options.logger.info(
      { store: store.location, epoch: map.epoch, candidate },
      'coordinating the cluster map',
    );
    await this.update('static configuration', (current) => this.withStatics(current, this.statics));
    this.reconcile();
    this.startFailureDetection();
  }

  /**
   * The writer's failure detection (replication): one unref'd timer checks, a few times per
   * failure timeout, for ring members `up` in the map not heard from for `failureTimeoutMs`, and
   * marks them `failed`. Nothing is marked during the first failure timeout after this process
   * became the writer: it cannot know the leases a previous writer granted, and a member heard
   * since then is not silent.
   */
  private startFailureDetection(): void {
    this.stopFailureDetection();
    this.writerSince = performance.now();
    this.lastDetectionAt = this.writerSince;
    const timeout = this.failureTimeoutMs;
    this.failureTimer = setInterval(
      () => this.detectFailures(),
      Math.max(25, Math.min(1000, Math.floor(timeout / 4))),
    );
    this.failureTimer.unref();
  }

  /**
   * When this process did not run for half a failure timeout (SIGSTOP, a paused VM, a long GC),
   * the heartbeats of that time still wait unread in its sockets: the members' silence is its
   * own, and the first check after it would mark a healthy member failed. Detection starts over
   * as for a new writer (a member silent for a failure timeout from now is failed then).
   */
  private noticeOwnStall(now: number, timeout: number): void {
    const stalledMs = now - this.lastDetectionAt;
    this.lastDetectionAt = now;
    if (stalledMs <= timeout / 2) return;
    this.writerSince = now;
    this.options.logger.warn(
      { stalledMs: Math.round(stalledMs), failureTimeoutMs: timeout },
      'this balancer did not run for a while (paused?): failure detection starts over, members are not judged on the silence it caused',
    );
  }

  private stopFailureDetection(): void {
    if (this.failureTimer !== undefined) clearInterval(this.failureTimer);
    this.failureTimer = undefined;
  }

  private failureTimer: NodeJS.Timeout | undefined;
  /** `performance.now()` when this process last became the map's writer (or stalled: {@link noticeOwnStall}). */
  private writerSince = 0;
  /** `performance.now()` of the last failure check, to notice this process's own stalls. */
  private lastDetectionAt = 0;
  /** A failure being written: one at a time, so each sees the states the previous one left. */
  private markingFailed = false;
  /** Members kept `up` although silent (the last serving member of a chain), logged once each. */
  private readonly keptLastUp = new Set<string>();

  private get failureTimeoutMs(): number {
    return this.options.failureTimeoutMs ?? 5000;
  }

  /**
   * The lease (ms) to grant node `id` in a heartbeat's answer: only from the map's writer, only
   * with a replication factor above 1, and only to a ring member the map keeps `up` or a learner
   * (`syncing`, `promoting`: it serves no client request, but holds its lease when it becomes
   * `up`, so its chains take writes at once); else undefined (no lease: a replicating node then
   * refuses everything once its lease runs out). Never to a `failed` member.
   */
  leaseFor(id: string): number | undefined {
    const map = this.map;
    if (!this.coordinator || this.isClosed || map.replicationFactor <= 1) return undefined;
    const state = activeMember(map, id)?.replicaState;
    if (state !== 'up' && state !== 'syncing' && state !== 'promoting') return undefined;
    return this.options.leaseMs ?? 2000;
  }

  /**
   * One map write of a member's replication state (the resync's steps): `change` returns the
   * member's new entry, or undefined for nothing to do. A new ring epoch, announced as every ring:
   * every node's chains (write paths, serving members) follow. Resolves whether it was written.
   */
  private async writeReplicaState(
    reason: string,
    change: (map: ClusterMap) => MapMember | undefined,
  ): Promise<boolean> {
    let written = false;
    await this.update(reason, (map) => {
      const member = change(map);
      if (member === undefined) return undefined;
      written = true;
      // A ring change that waited for a sync (see withRingPlan) starts in the write that ends it.
      const patch = withRingPlan(map, {
        members: withMember(map.members, { ...member, sinceEpoch: map.epoch + 1 }),
      });
      return patch.ring === undefined ? { ...patch, ring: { ...map.ring, epoch: map.epoch + 1 } } : patch;
    });
    return written;
  }

  private detectFailures(): void {
    const now = performance.now();
    const timeout = this.failureTimeoutMs;
    this.noticeOwnStall(now, timeout);
    const map = this.map;
    if (!this.coordinator || this.isClosed || this.markingFailed || map.replicationFactor <= 1) return;
    if (now - this.writerSince < timeout) return;
    // During a ring change the members of the previous ring serve too (exiting ones until the switch).
    const ringMembers =
      map.transition === null
        ? map.ring.members
        : [
            ...map.ring.members,
            ...map.transition.from.members.filter((m) => !map.ring.members.some((n) => n.id === m.id)),
          ];
    for (const ringMember of ringMembers) {
      const member = activeMember(map, ringMember.id);
      // Learners are in write paths: a silent one holds its chains' writes like any member.
      if (member === undefined) continue;
      if (member.replicaState !== 'failed') this.failedSince.delete(member.id);
      else this.maybeDeclareDead(member, now);
      if (!inWritePaths(member.replicaState)) continue;
      const node = this.pool.get(member.id);
      const outOfRoom = learnerOutOfRoom(map, member, node);
      if (outOfRoom !== undefined) {
        this.markingFailed = true;
        void this.markFailed(member.id, 0, outOfRoom).finally(() => {
          this.markingFailed = false;
        });
        return;
      }
      // Heard: a heartbeat here (a node registered here) or, for one that never registered here,
      // its link being up; never before this process became the writer.
      const heardAt = Math.max(
        this.writerSince,
        node === undefined
          ? 0
          : node.registered
            ? node.lastHeartbeatAt
            : node.up
              ? now
              : node.lastHeartbeatAt,
      );
      if (now - heardAt <= timeout) {
        this.keptLastUp.delete(member.id);
        continue;
      }
      this.markingFailed = true;
      void this.markFailed(member.id, now - heardAt).finally(() => {
        this.markingFailed = false;
      });
      return;
    }
    this.resync.tick();
    this.returnEntering(now);
  }

  /**
   * During a replicated ring change: an entering member that failed (out of the union ring) and
   * heartbeats again first answers the ring without it (so it wipes when it enters again: it
   * missed writes), then one map write makes it `up` again: it re-enters the union ring as a
   * learner and its copies start over. One at a time, and only while the change streams: copies
   * run in that phase alone, so a member let back in later would serve its chains at the next
   * ring holding nothing of them (it wiped). Past it, the member stays `failed` and returns after
   * the change, as any failed member (a resync).
   */
  private returnEntering(now: number): void {
    const map = this.map;
    if (this.returning || unionOf(map) === undefined || map.transition?.phase !== 'stream') return;
    const previous = new Set(map.transition.from.members.map((member) => member.id));
    const id = map.ring.members.find((ringMember) => {
      if (previous.has(ringMember.id) || activeMember(map, ringMember.id)?.replicaState !== 'failed')
        return false;
      // Out of room, it would fill up again as a learner: it stays out until it has room.
      return this.heardFrom(ringMember.id, now) && !storageDegraded(this.pool.get(ringMember.id));
    })?.id;
    const node = id === undefined ? undefined : this.pool.get(id);
    if (id === undefined || node === undefined || this.union === undefined) return;
    this.returning = true;
    void this.migrator
      .pushRing(node, this.union.ring, map.ring.epoch)
      .then((answered) =>
        answered
          ? this.writeReplicaState(`node ${id} returned during its ring change`, (current) => {
              const member = activeMember(current, id);
              // The change may have left the stream meanwhile (the RING took a round trip).
              return member?.replicaState === 'failed' && current.transition?.phase === 'stream'
                ? { ...member, replicaState: 'up' }
                : undefined;
            })
          : false,
      )
      .catch(() => false)
      .finally(() => {
        this.returning = false;
      });
  }

  private returning = false;

  /** When this writer first saw each ring member `failed` and silent (for `--dead-after`). */
  private readonly failedSince = new Map<string, number>();

  /** Whether member `id` is registered here and heartbeated within the heartbeat timeout. */
  private heardFrom(id: string, now: number): boolean {
    const node = this.pool.get(id);
    return node?.registered === true && now - node.lastHeartbeatAt <= this.options.heartbeatTimeoutMs;
  }

  /**
   * `--dead-after`: a ring member `failed` and silent that long (counted from when this writer
   * first saw it so) is declared dead, once; the removal itself runs as any ring change. One that
   * heartbeats again is not: it returned, and waits for its sync (which waits for a ring change
   * in progress), so its count starts over if it goes silent again.
   */
  private maybeDeclareDead(member: MapMember, now: number): void {
    const after = this.options.deadAfterMs;
    if (after === undefined || member.state !== 'up') return;
    if (this.heardFrom(member.id, now)) {
      this.failedSince.delete(member.id);
      return;
    }
    const since = this.failedSince.get(member.id);
    if (since === undefined) {
      this.failedSince.set(member.id, now);
      return;
    }
    if (now - since < after) return;
    this.failedSince.delete(member.id);
    this.options.logger.warn(
      { node: member.id, failedMs: Math.round(now - since), deadAfterMs: after },
      'node failed past --dead-after: declared dead (its ranges are copied to the next members clockwise)',
    );
    this.removeDead(member.id).catch((error: unknown) => {
      this.options.logger.warn(
        { node: member.id, err: (error as Error).message },
        'declaring a node dead failed',
      );
    });
  }

  /**
   * Marks `id` failed in one map write (a new ring epoch: every node's fence moves on, so the
   * failed member's old-epoch forwards are refused), unless it is the last `up` member of one of
   * its chains: that range is unavailable either way, and keeping it lets it serve again with its
   * data when it comes back.
   */
  private async markFailed(id: string, silentMs: number, outOfRoom?: string): Promise<void> {
    let marked = false;
    try {
      await this.update(`node ${id} failed`, (map) => {
        const member = activeMember(map, id);
        if (member === undefined || !inWritePaths(member.replicaState) || map.replicationFactor <= 1)
          return undefined;
        // A learner serves nothing: taking it out leaves every serving chain as it is.
        const lastUp = member.replicaState !== 'up' ? undefined : chainServedOnlyBy(map, id);
        if (lastUp !== undefined) {
          if (!this.keptLastUp.has(id)) {
            this.keptLastUp.add(id);
            this.options.logger.warn(
              { node: id, silentMs: Math.round(silentMs), chain: lastUp.desired },
              'node silent past the failure timeout but kept up: it is the last up member of a chain (its range is unavailable until it returns)',
            );
          }
          return undefined;
        }
        marked = true;
        return {
          ring: { ...map.ring, epoch: map.epoch + 1 },
          members: withMember(map.members, {
            ...member,
            replicaState: 'failed',
            sinceEpoch: member.sinceEpoch,
          }),
        };
      });
    } catch (error) {
      this.options.logger.warn(
        { node: id, err: (error as Error).message },
        'marking a node failed did not happen; retrying',
      );
      return;
    }
    if (!marked) return;
    // During a transition install() leaves the ring to it, but the transition may be waiting on
    // the failed member itself (its PURGE, a copy, a drain): the survivors need the failover's
    // ring now (the union ring of a replicated ring change, or the map's: only states change).
    if (this.map.transition !== null) this.announceRing();
    if (outOfRoom !== undefined) {
      this.options.logger.warn(
        { node: id, epoch: this.map.epoch, storage: outOfRoom },
        'learner out of room: taken out of its chains (failed) until its storage has room again; give it a larger --max-memory / --map-size, or remove it (dstore node remove --dead)',
      );
    } else {
      this.options.logger.warn(
        {
          node: id,
          silentMs: Math.round(silentMs),
          epoch: this.map.epoch,
          failureTimeoutMs: this.failureTimeoutMs,
        },
        'node failed: taken out of its chains (failover)',
      );
    }
    this.options.onMemberFailed?.(id);
  }

  /**
   * The factor is fixed for the map's life (chains of every range depend on it): a configured one
   * that differs from the stored one is an operator's mistake, refused rather than ignored.
   */
  private checkReplicationFactor(map: ClusterMap): void {
    const configured = this.options.replicationFactor;
    if (configured === undefined || configured === map.replicationFactor) return;
    throw new DstoreError(
      ErrorCode.INVALID_ARGUMENT,
      `the cluster map in ${this.options.store.location} has replication factor ${map.replicationFactor}, not the configured ${configured}: the factor is fixed when the map is created (omit --replication-factor to use the stored one)`,
    );
  }

  /** Whether this balancer writes the map (it holds the store's leadership). */
  get isCoordinator(): boolean {
    return this.coordinator;
  }

  private coordinator = false;
  /**
   * A map from the store (or one this process stored) is installed: this process routes on a
   * cluster, and an empty store then means the store lost it, not a new cluster (see becomeLeader).
   */
  private followsStoredMap = false;
  private candidate: string | undefined;
  private statics: readonly (NodeAddress & { verifyIdentity: boolean })[] = [];
  private unwatch: (() => void) | undefined;

  /** Leadership ended (etcd lease lost): stop writing; transitions stop at their next write. */
  private loseLeadership(): void {
    if (!this.coordinator) return;
    this.coordinator = false;
    this.stopFailureDetection();
    this.options.logger.error(
      { store: this.options.store.location },
      'lost the coordinator role: following the map; campaigning again',
    );
    this.emit('leadershipLost');
  }

  /** A map stored by another balancer: install it when newer (followers only). */
  private follow(map: ClusterMap): void {
    if (this.coordinator || this.isClosed) return;
    if (map.cluster === this.map.cluster && map.epoch <= this.map.epoch) return;
    this.install(map);
    this.emit('change', map.epoch);
  }

  /**
   * A follower routes like the coordinator: during a transition's streams it announces the new
   * ring to the nodes itself (they ignore a RING they have), then routes on it with fall-back reads
   * to the old owners; once the map says `purge` (or the transition ended) it stops falling back.
   */
  private followTransition(): void {
    if (this.coordinator) return;
    if (this.map.replicationFactor > 1) {
      // Replicated ring changes move no keys by owner: route on the union (or the map's) ring.
      if (this.routing.epoch !== this.map.ring.epoch || this.routing.ring !== this.routedRing)
        this.announceRing();
      return;
    }
    const transition = this.map.transition;
    if (transition === null || transition.phase === 'purge') {
      this.migrator.stopFallback();
      // First seen past its streams (or the map jumped): still route on the map's ring.
      if (this.routing.ring !== this.currentRing) this.announceRing();
      return;
    }
    const toRing = this.currentRing;
    const fromRing = this.fromRing?.ring ?? ringOf(transition.from);
    if (this.followedRingEpoch === this.map.ring.epoch) return;
    this.followedRingEpoch = this.map.ring.epoch;
    const epoch = this.map.ring.epoch;
    this.announced = this.migrator.announce(toRing, epoch, false).then(() => {
      if (this.currentRing !== toRing || this.coordinator) return;
      this.migrator.followStreams(fromRing, toRing, epoch);
      this.routeOn(toRing, epoch);
    });
  }

  private followedRingEpoch = -1;

  /** Which static nodes' ids are theirs (false: listed as bare host:port). */
  private verifyStatic = new Map<string, boolean>();

  private withStatics(
    map: ClusterMap,
    statics: readonly (NodeAddress & { verifyIdentity: boolean })[],
  ): MapPatch | undefined {
    let members = map.members;
    for (const spec of statics) {
      const existing = activeMember(map, spec.id);
      if (
        existing &&
        existing.host === spec.host &&
        existing.port === spec.port &&
        existing.weight === spec.weight
      )
        continue;
      members = withMember(members, {
        id: spec.id,
        identity: existing?.identity ?? '',
        host: spec.host,
        port: spec.port,
        weight: spec.weight,
        state: existing?.state ?? 'joining',
        sinceEpoch: existing?.sinceEpoch ?? map.epoch + 1,
        replicaState: existing?.replicaState ?? 'up',
      });
    }
    return members === map.members ? undefined : refuseUnroutableRingPlan(map, { members });
  }

  /**
   * Registers a node (JOIN). The same identity at the same address and weight is an idempotent
   * re-register (a node re-JOINs after every reconnect) and changes nothing. Refused with
   * MEMBER_REMOVED for a removed identity, IDENTITY_CONFLICT when another live identity holds the id
   * or another member has this identity, CLUSTER_MISMATCH when the node holds data of another map,
   * OUT_OF_SPACE when a new member could not hold its share of the data ({@link joinCapacityRefusal}).
   */
  async join(spec: JoinSpec, registersHere = true): Promise<JoinOutcome> {
    const address = `${spec.host}:${spec.port}`;
    try {
      const outcome = await this.register(spec, registersHere);
      this.joinRefusals.accepted(spec.id, address);
      return outcome;
    } catch (error) {
      if (error instanceof DstoreError) {
        // A refused node retries every couple of seconds: the first refusal and every 20th are
        // warnings, the ones between debug (/ring lists the refusal meanwhile).
        const refusals = this.joinRefusals.refused(spec.id, address, error);
        const level = refusals <= 1 || refusals % 20 === 0 ? 'warn' : 'debug';
        this.options.logger[level](
          { node: spec.id, address, code: error.code, err: error.message, refusals },
          'JOIN refused',
        );
      }
      throw error;
    }
  }

  /**
   * The JOINs refused in the last minute (`/ring`'s `refusedJoins`), oldest first, then the weight
   * raises held for lack of room (listed for as long as they are held).
   */
  get refusedJoins(): RefusedJoinView[] {
    const held = [...this.heldWeights]
      .filter(([id]) => activeMember(this.map, id) !== undefined)
      .map(([node, { requested, address, error, at }]) => ({
        node,
        address,
        code: error.code,
        message: `weight ${requested} not applied (kept at ${activeMember(this.map, node)?.weight}): ${error.message}`,
        count: 1,
        lastAt: at,
      }));
    return [...this.joinRefusals.list(), ...held];
  }

  /** {@link join} without the record of refusals. */
  private async register(spec: JoinSpec, registersHere: boolean): Promise<JoinOutcome> {
    if (!this.coordinator && this.leading !== undefined) await this.leading;
    if (!this.coordinator) return this.forwardJoin(spec, registersHere);
    let outcome: JoinOutcome = 'unchanged';
    // The log names a weight change (a ring change, with replication routed on a union ring).
    const known = activeMember(this.map, spec.id);
    const reason =
      known !== undefined && known.weight !== spec.weight
        ? `node ${spec.id} joined with weight ${spec.weight} (was ${known.weight})`
        : `node ${spec.id} joined`;
    await this.update(reason, (map) => {
      refuseOtherCluster(map, spec, this.options.store.location);
      const identity = spec.identity;
      if (identity !== undefined && isRemovedIdentity(map, identity)) {
        throw new DstoreError(
          ErrorCode.MEMBER_REMOVED,
          `node identity ${identity} (id '${spec.id}') was removed from the cluster; it can join again only as a new member (a fresh data dir)`,
        );
      }
      refuseTwin(map, spec.id, identity);
      const existing = activeMember(map, spec.id);
      if (existing === undefined) {
        const tooSmall = joinCapacityRefusal(map, spec, (id) => this.pool.get(id)?.storage);
        if (tooSmall !== undefined) throw tooSmall;
        outcome = 'added';
        return refuseUnroutableRingPlan(map, {
          members: [
            ...map.members,
            {
              ...this.memberFields(spec, identity ?? ''),
              state: 'joining',
              sinceEpoch: map.epoch + 1,
              // Up: with replication it enters the chains as a learner during its ring change.
              replicaState: 'up',
            },
          ],
        });
      }
      const newIdentity =
        identity !== undefined && existing.identity !== '' && identity !== existing.identity;
      if (newIdentity) this.refuseIfLive(existing, identity);
      const adopted = identity !== undefined && identity !== existing.identity;
      const weight = this.weightToApply(map, spec, existing.weight);
      if (
        !adopted &&
        existing.host === spec.host &&
        existing.port === spec.port &&
        weight === existing.weight
      ) {
        return undefined;
      }
      outcome = 'updated';
      if (newIdentity) {
        this.options.logger.warn(
          { node: spec.id, previous: existing.identity, identity },
          'a new incarnation of the node replaces its previous one (a memory node restarted, or a new data dir): the keys only the previous one held are gone',
        );
      }
      const updated: MapMember = {
        ...existing,
        ...this.memberFields(spec, adopted ? identity : existing.identity),
        weight,
      };
      // Replication: a new incarnation lost its copies (it restarted before it was found silent):
      // it must not serve, nor be promoted from a sync it no longer holds. It goes `failed` in
      // this write and catches up as a learner (unless it is the last member serving a chain:
      // that range's copies are gone either way).
      if (
        newIdentity &&
        map.replicationFactor > 1 &&
        inWritePaths(existing.replicaState) &&
        (existing.replicaState !== 'up' || chainServedOnlyBy(map, spec.id) === undefined)
      ) {
        this.options.logger.warn(
          { node: spec.id, replicaState: existing.replicaState },
          'node failed: a new incarnation of a replicating member, taken out of its chains until it catches up',
        );
        const failed = (weight: number): MapPatch =>
          withRingPlan(map, {
            members: withMember(map.members, {
              ...updated,
              weight,
              replicaState: 'failed',
              sinceEpoch: map.epoch + 1,
            }),
          });
        let patch: MapPatch;
        try {
          patch = refuseUnroutable(map, failed(updated.weight));
        } catch (error) {
          // Its failure must be written whatever its weight: a weight change the union ring
          // cannot route (ketama) is left out, the member keeps its weight.
          if (!(error instanceof DstoreError)) throw error;
          this.options.logger.warn({ node: spec.id, weight: spec.weight }, error.message);
          patch = failed(existing.weight);
        }
        return patch.ring === undefined ? { ...patch, ring: { ...map.ring, epoch: map.epoch + 1 } } : patch;
      }
      // A new weight is a ring change (with replication: routed on the union ring, see unionOf).
      return refuseUnroutableRingPlan(map, { members: withMember(map.members, updated) });
    });
    if (registersHere) this.pool.noteRegistration(spec.id, outcome === 'unchanged');
    return outcome;
  }

  /**
   * The weight a member's JOIN gets: the one it asks for, or, when that is larger than `current`
   * and its storage could not hold the larger share ({@link joinCapacityRefusal}), `current`, the
   * request held and listed in `/ring` (refusing the JOIN instead would take the member out of
   * service). A JOIN at a weight that fits (or at most `current`) ends the hold.
   */
  private weightToApply(map: ClusterMap, spec: JoinSpec, current: number): number {
    const refusal =
      spec.weight > current ? joinCapacityRefusal(map, spec, (id) => this.pool.get(id)?.storage) : undefined;
    if (refusal === undefined) {
      this.heldWeights.delete(spec.id);
      return spec.weight;
    }
    if (this.heldWeights.get(spec.id)?.requested !== spec.weight) {
      this.options.logger.warn(
        { node: spec.id, weight: current, requested: spec.weight, err: refusal.message },
        'weight change held: the node could not hold the larger share',
      );
    }
    this.heldWeights.set(spec.id, {
      requested: spec.weight,
      address: `${spec.host}:${spec.port}`,
      error: refusal,
      at: new Date().toISOString(),
    });
    return current;
  }

  /** Weight raises held for lack of room ({@link weightToApply}), by member id. */
  private readonly heldWeights = new Map<
    string,
    { readonly requested: number; readonly address: string; readonly error: DstoreError; readonly at: string }
  >();

  /** A follower hands a JOIN to the coordinator (the map's only writer) and relays its answer. */
  private async forwardJoin(spec: JoinSpec, registersHere: boolean): Promise<JoinOutcome> {
    await this.coordinatorLink.forward(
      {
        op: Op.JOIN,
        nodeId: spec.id,
        host: spec.host,
        port: spec.port,
        weight: spec.weight,
        ...(spec.identity === undefined ? {} : { identity: spec.identity }),
        ...(spec.generation === undefined ? {} : { generation: spec.generation }),
        ...(spec.availableBytes === undefined ? {} : { availableBytes: spec.availableBytes }),
      },
      FORWARD_TIMEOUT_MS,
    );
    if (registersHere) this.pool.noteRegistration(spec.id, true);
    return 'unchanged';
  }

  private readonly coordinatorLink: CoordinatorLink;

  private memberFields(
    spec: JoinSpec,
    identity: string,
  ): Omit<MapMember, 'state' | 'sinceEpoch' | 'replicaState'> {
    return { id: spec.id, identity, host: spec.host, port: spec.port, weight: spec.weight };
  }

  /**
   * Throws IDENTITY_CONFLICT when the member holding the id may be alive: it was heard from
   * recently, its link has been up since before it was last heard from, or this balancer started
   * too recently to know. A link that came up after the member's last heartbeat proves nothing:
   * a new process at the same address (a memory node restarted) is what it reaches, and counted,
   * it refused that process for as long as the link stayed up.
   */
  private refuseIfLive(existing: MapMember, identity: string): void {
    const node = this.pool.get(existing.id);
    const now = performance.now();
    const timeout = this.options.heartbeatTimeoutMs;
    const heard = node?.registered === true && now - node.lastHeartbeatAt <= timeout;
    const linked = node?.link.isReady === true && node.linkReadyAt <= node.lastHeartbeatAt;
    const live = linked || heard || now - this.openedAt <= timeout;
    if (!live) return;
    throw new DstoreError(
      ErrorCode.IDENTITY_CONFLICT,
      `node id '${existing.id}' is held by identity ${existing.identity} at ${existing.host}:${existing.port}, which is live; this node (identity ${identity}) was refused: give it its own id, or stop the other one`,
    );
  }

  /**
   * Takes a member out (`node`: its own graceful LEAVE; `operator`: a remove). Its ranges first
   * move to their new owners (it keeps serving them meanwhile); resolves true once it is out of
   * the map's members, false when it is not a member. After an operator's remove its identity is
   * refused from then on; a node that left by itself is forgotten and may join again later.
   */
  async leave(id: string, by: 'node' | 'operator' = 'operator', identity?: string): Promise<boolean> {
    if (!this.coordinator) {
      if (by === 'operator') {
        throw new DstoreError(
          ErrorCode.UNAVAILABLE,
          `this balancer does not write the cluster map: remove the node at the coordinator (${this.options.store.leader() ?? 'none elected yet'})`,
        );
      }
      // A node's graceful LEAVE: the coordinator answers once its keys moved.
      await this.coordinatorLink.forward(
        identity === undefined ? { op: Op.LEAVE, nodeId: id } : { op: Op.LEAVE, nodeId: id, identity },
        LEAVE_FORWARD_TIMEOUT_MS,
      );
      return true;
    }
    const member = activeMember(this.map, id);
    if (member === undefined) return false;
    // A LEAVE speaks for one incarnation: another process under the same id (one whose JOIN was
    // refused, stopped by its operator) must not take the real node out of the ring.
    if (identity !== undefined && member.identity !== identity) {
      throw new DstoreError(
        ErrorCode.IDENTITY_CONFLICT,
        `LEAVE of node '${id}' by identity ${identity} refused: the member is identity ${member.identity} at ${member.host}:${member.port}`,
      );
    }
    const done = new Promise<boolean>((resolve) => {
      const waiters = this.departures.get(id) ?? [];
      waiters.push(resolve);
      this.departures.set(id, waiters);
    });
    await this.update(`node ${id} leaving (${by})`, (map) => {
      const member = activeMember(map, id);
      if (member === undefined) return undefined;
      const leaving: MapMember = {
        ...member,
        state: 'leaving',
        sinceEpoch: map.epoch + 1,
        // An operator's remove wins over a graceful leave already under way.
        leftBy: member.leftBy === 'operator' ? 'operator' : by,
      };
      if (member.state === 'leaving' && member.leftBy === leaving.leftBy) return undefined;
      const members = withMember(map.members, leaving);
      const lost = lossOfLeaving({ ...map, members }, id);
      if (lost !== undefined) throw lost;
      const othersInRing = map.ring.members.filter((m) => m.id !== id).length;
      if (othersInRing > 0 || map.transition !== null) return refuseUnroutableRingPlan(map, { members });
      // Not in the ring yet, or the last one there: nothing can move, it goes at once.
      if (map.ring.members.length > 0) {
        this.options.logger.warn(
          { node: id, keysHeld: this.pool.get(id)?.keyCount ?? 0 },
          'the last node left without handing off its keys: they are unreachable until it joins again',
        );
      }
      const ring = { ...map.ring, epoch: map.epoch + 1, members: [] };
      return { ring, members: finalStates({ members, ring, epoch: map.epoch }) };
    });
    return done;
  }

  /**
   * Declares member `id` dead (`dstore node remove --dead`, or `--dead-after`): a leave whose
   * member is never a stream source nor asked anything (replication step 5). Only a `failed`
   * member of a replicating map (one that is `up` may still serve: remove it gracefully, or wait
   * for the failure detection). It is `dead` in the map; its ranges' serving members stay their
   * sources and the next members clockwise learn them, restoring N copies; then it is removed (its
   * identity refused). Resolves true once it is out of the map's members, false when it is not a
   * member.
   */
  async removeDead(id: string): Promise<boolean> {
    if (!this.coordinator) {
      throw new DstoreError(
        ErrorCode.UNAVAILABLE,
        `this balancer does not write the cluster map: remove the node at the coordinator (${this.options.store.leader() ?? 'none elected yet'})`,
      );
    }
    if (activeMember(this.map, id) === undefined) return false;
    const refusal = this.deadRefusal(id);
    if (refusal !== undefined) throw refusal;
    const done = new Promise<boolean>((resolve) => {
      const waiters = this.departures.get(id) ?? [];
      waiters.push(resolve);
      this.departures.set(id, waiters);
    });
    await this.update(`node ${id} declared dead`, (map) => {
      const current = activeMember(map, id);
      if (current === undefined || current.replicaState === 'dead') return undefined;
      if (current.replicaState !== 'failed') return undefined;
      const dead: MapMember = {
        ...current,
        state: 'leaving',
        leftBy: 'operator',
        replicaState: 'dead',
        sinceEpoch: map.epoch + 1,
      };
      return refuseUnroutableRingPlan(map, { members: withMember(map.members, dead) });
    });
    return done;
  }

  /**
   * Why member `id` cannot leave now (its ranges would be left with no live copy: the other members
   * of a chain failed), or undefined when it can (or is not a member): what the leave's map update
   * would refuse, checked first so an operator's remove is answered with the refusal at once.
   */
  leaveRefusal(id: string): DstoreError | undefined {
    const member = activeMember(this.map, id);
    if (member === undefined || member.state === 'leaving') return undefined;
    const leaving: MapMember = {
      ...member,
      state: 'leaving',
      sinceEpoch: this.map.epoch + 1,
      leftBy: 'operator',
    };
    return lossOfLeaving({ ...this.map, members: withMember(this.map.members, leaving) }, id);
  }

  /**
   * Why member `id` cannot be declared dead now (INVALID_ARGUMENT), or undefined when it can (or
   * is not a member): the map keeps one copy (factor 1: its keys would be lost), or the member is
   * not `failed` (it may still serve).
   */
  deadRefusal(id: string): DstoreError | undefined {
    const member = activeMember(this.map, id);
    if (member === undefined) return undefined;
    if (this.map.replicationFactor <= 1) {
      return new DstoreError(
        ErrorCode.INVALID_ARGUMENT,
        `node ${id} cannot be removed as dead: the cluster keeps one copy of each key (replication factor 1), so its keys would be lost; remove it gracefully`,
      );
    }
    if (member.replicaState === 'failed' || member.replicaState === 'dead') return undefined;
    return new DstoreError(
      ErrorCode.INVALID_ARGUMENT,
      `node ${id} is ${member.replicaState}, not failed: only a failed member can be declared dead (wait for the failure timeout, or remove it gracefully)`,
    );
  }

  /** Records a HEARTBEAT. Returns false for a node that is not a member (it must JOIN). */
  heartbeat(id: string, keyCount: number, storage?: NodeStorage): boolean {
    return this.pool.heartbeat(id, keyCount, storage);
  }

  /**
   * Whether a HEARTBEAT received here goes on to the coordinator: on a follower when the map
   * replicates, since only the map's writer grants leases and detects failures.
   */
  get forwardsHeartbeats(): boolean {
    return !this.coordinator && this.map.replicationFactor > 1 && this.options.store.kind === 'etcd';
  }

  /** A follower relays a node's HEARTBEAT to the coordinator; resolves to the lease it granted, if any. */
  async forwardHeartbeat(heartbeat: {
    nodeId: string;
    keyCount: number;
    storage?: NodeStorage | undefined;
  }): Promise<number | undefined> {
    const { nodeId, keyCount, storage } = heartbeat;
    const answer = await this.coordinatorLink.forward(
      storage === undefined
        ? { op: Op.HEARTBEAT, nodeId, keyCount }
        : { op: Op.HEARTBEAT, nodeId, keyCount, ...storage },
      HEARTBEAT_FORWARD_TIMEOUT_MS,
    );
    return answer.op === Op.OK ? answer.lease : undefined;
  }

  /**
   * On a graceful stop, before the balancer drains its connections: hands the writer's role to
   * another balancer (etcd), so the nodes' leases keep coming from it while this one drains.
   * Kept up to the close where no one can take it (a file or memory store).
   */
  async resign(): Promise<void> {
    if (!this.coordinator || this.isClosed) return;
    // Stops writing first: nothing is written past the revoke.
    this.coordinator = false;
    this.stopFailureDetection();
    if (await this.options.store.resign()) {
      this.options.logger.info(
        { store: this.options.store.location },
        'handed the coordinator role over: stopping',
      );
    } else {
      this.coordinator = true;
      this.startFailureDetection();
    }
  }

  /** Closes every node link (requests in flight finish first) and the store. */
  async close(): Promise<void> {
    this.isClosed = true;
    this.stopFailureDetection();
    this.unwatch?.();
    await this.coordinatorLink.close();
    for (const id of [...this.departures.keys()]) this.resolveDeparture(id, false);
    await this.pool.close();
    await this.writes.catch(() => undefined);
    await this.options.store.close();
  }

  /**
   * Applies `change` to the latest map, stores the result by compare-and-set and installs it.
   * Changes run one at a time in call order; `change` returns undefined for "nothing to do" and
   * may throw to refuse (the error goes to the caller, the map is unchanged).
   */
  private update(reason: string, change: (map: ClusterMap) => MapPatch | undefined): Promise<void> {
    const write = this.writes.then(async () => {
      if (this.isClosed) throw new DstoreError(ErrorCode.SHUTTING_DOWN, 'balancer is closing');
      if (!this.coordinator) {
        throw new DstoreError(
          ErrorCode.UNAVAILABLE,
          'this balancer does not write the cluster map now: retry',
        );
      }
      const current = this.map;
      const patch = change(current);
      if (patch === undefined) return;
      const next = nextMap(current, patch);
      await this.options.store.compareAndSet(current.epoch, next);
      this.options.logger.info(
        { epoch: next.epoch, ringEpoch: next.ring.epoch, reason, transition: next.transition?.phase ?? null },
        'cluster map changed',
      );
      this.install(next);
      this.emit('change', next.epoch);
    });
    this.writes = write.catch(() => undefined);
    return write;
  }

  /**
   * Makes `map` the current one: links, ring snapshots, departures; then acts on it: a new ring
   * without moves is announced (and routed on once every node has it), a transition is run.
   */
  private install(map: ClusterMap): void {
    const previousRingEpoch = this.opened ? this.map.ring.epoch : -1;
    this.map = map;
    this.followsStoredMap = true;
    this.migrator.generation = map.generation;
    this.installUnion(map);
    this.migrator.replication = {
      factor: map.replicationFactor,
      states: this.union?.states ?? replicaStatesOf(map),
      ...(this.union?.switching === true ? { switching: true } : {}),
      ...(map.replicationFactor > 1 && map.transition?.phase === 'install' ? { holding: true } : {}),
    };
    this.migrator.queuedChanges =
      map.transition === null ? 0 : ringDifference(desiredRingMembers(map), map.ring.members);
    const ringChanged = map.ring.epoch !== previousRingEpoch;
    if (ringChanged) {
      this.currentRing = ringOf(map.ring);
      this.publish();
    }
    const from = map.transition?.from;
    if (from === undefined) this.fromRing = undefined;
    else if (this.fromRing?.epoch !== from.epoch) this.fromRing = { ring: ringOf(from), epoch: from.epoch };
    this.pool.sync(map.members);
    this.trackRingAddresses(map);
    for (const id of [...this.departures.keys()]) {
      if (activeMember(map, id) === undefined) this.resolveDeparture(id, true);
    }
    if (!this.opened) return;
    if (!this.coordinator) this.followTransition();
    if (map.transition !== null) this.reconcile();
    else if (ringChanged) this.announceRing();
  }

  /**
   * Keeps {@link union} in step with `map` (see `unionOf`): the union ring is rebuilt when its
   * members change; its states (and the switch) follow every map. Records when each `entering`
   * member (re)entered it: a member that failed and returns has wiped, its copies start over.
   */
  private installUnion(map: ClusterMap): void {
    const union = unionOf(map);
    if (union === undefined) {
      this.union = undefined;
      this.enteredAt.clear();
      return;
    }
    const key = `${map.ring.epoch} ${union.members.map((member) => `${member.id}:${member.weight}:${member.previousWeight ?? ''}`).join(',')}`;
    const ring = this.union?.key === key ? this.union.ring : ringOf({ ...map.ring, members: union.members });
    this.union = { ring, states: union.states, key, switching: map.transition?.phase === 'switch' };
    for (const [id, state] of union.states) {
      if (state !== 'entering') this.enteredAt.delete(id);
      else if (!this.enteredAt.has(id)) this.enteredAt.set(id, map.ring.epoch);
    }
  }

  /**
   * Announces the ring the map routes on (the map's, or the union ring of a replicated ring
   * change) when it moves no keys by owner; routes on it once every node answered.
   */
  private announceRing(): void {
    const ring = this.routedRing;
    const epoch = this.map.ring.epoch;
    this.announced = this.migrator.announce(ring, epoch, false).then(() => {
      if (this.routedRing === ring && this.map.ring.epoch === epoch) this.routeOn(ring, epoch);
    });
  }

  private trackRingAddresses(map: ClusterMap): void {
    const members = new Set<string>();
    for (const member of map.members) {
      members.add(member.id);
      if (!this.ringAddresses.has(member.id))
        this.ringAddresses.set(member.id, `${member.host}:${member.port}`);
    }
    for (const id of this.ringAddresses.keys()) if (!members.has(id)) this.ringAddresses.delete(id);
  }

  /**
   * A node's link is (re)connected: it gets the rings. The others get them again only when it
   * came back at another address than their rings hold, which they need before they stream keys
   * to it (not on every connect: that would be nodes² RINGs at every cluster start).
   */
  private nodeReady(ready: ClusterNode): void {
    // A learner whose link reconnects may have restarted (and wiped, or lost, what it was sent):
    // it starts over, through failed (the copies recorded as done may be gone).
    if (this.resync.member === ready.id) void this.markFailed(ready.id, 0);
    const address = `${ready.host}:${ready.port}`;
    const heard = this.ringAddresses.get(ready.id);
    this.ringAddresses.set(ready.id, address);
    if (heard === address) {
      void this.sendRings(ready);
      return;
    }
    for (const node of this.pool.values()) void this.sendRings(node);
  }

  /**
   * Every (re)connect of a node's link gets the ring before any request, so a restarted node
   * learns what it owns first. While a transition streams it gets the ring before it first, so it
   * derives the moving ranges (fall-back reads, tombstones for deletes) like every other node;
   * not in the purge phase: PURGE works from its ring alone, and moving ranges derived after its
   * PURGE was answered would stay pending forever.
   */
  private sendRings(node: ClusterNode): Promise<void> {
    if (this.union !== undefined)
      return this.migrator.pushRing(node, this.union.ring, this.map.ring.epoch).then(() => undefined);
    // Both queued in this tick, in order, before any request can use the link.
    const before =
      this.fromRing !== undefined && this.map.transition?.phase === 'stream'
        ? this.migrator.pushRing(node, this.fromRing.ring, this.fromRing.epoch)
        : Promise.resolve();
    const current = this.migrator.pushRing(node, this.currentRing, this.map.ring.epoch);
    return Promise.all([before, current]).then(() => undefined);
  }

  private resolveDeparture(id: string, removed: boolean): void {
    const waiters = this.departures.get(id) ?? [];
    this.departures.delete(id);
    for (const resolve of waiters) resolve(removed);
  }

  /**
   * Runs (or resumes) the transition of the map, unless one runs in this process already. One at
   * a time; ring changes that arrive meanwhile wait in the map (members not yet in the ring) and
   * start in the same write that ends it.
   */
  private reconcile(): void {
    if (this.running !== undefined || this.isClosed || !this.coordinator || this.map.transition === null)
      return;
    const task = this.runTransition().catch(async (error: unknown) => {
      if (this.isClosed) return;
      this.options.logger.error({ err: (error as Error).message }, 'transition failed; retrying shortly');
      await new Promise<void>((resolve) => setTimeout(resolve, 1000).unref());
    });
    this.running = task.finally(() => {
      this.running = undefined;
      this.reconcile();
    });
  }

  private async runTransition(): Promise<void> {
    const transition = this.map.transition;
    if (transition === null) return;
    if (this.map.replicationFactor > 1) return this.runReplicatedTransition();
    const fromRing = this.fromRing?.ring ?? ringOf(transition.from);
    const toRing = this.currentRing;
    const epoch = this.map.ring.epoch;
    if (transition.phase === 'stream') {
      const hasMoves = fromRing.size > 0 && toRing.size > 0;
      this.announced = this.migrator.announce(toRing, epoch, hasMoves).then(() => {
        if (this.currentRing === toRing) this.routeOn(toRing, epoch);
      });
      await this.announced;
      const results = await this.migrator.stream(
        fromRing,
        toRing,
        epoch,
        new Set(transition.done),
        (stream, keys) =>
          this.update(`stream ${stream} moved`, (map) =>
            map.transition === null
              ? undefined
              : {
                  transition: {
                    ...map.transition,
                    done: [...map.transition.done, stream],
                    keysMoved: map.transition.keysMoved + keys,
                  },
                },
          ),
      );
      // Stop falling back before PURGE: a fall-back read after PURGE would find nothing.
      this.migrator.stopFallback();
      const failed = results.filter((result) => !result.moved).map((result) => result.group);
      await this.update('streams finished', (map) =>
        map.transition === null ? undefined : { transition: { ...map.transition, phase: 'purge' } },
      );
      this.pendingPurge = results.filter((result) => result.moved).map((result) => result.group);
      if (failed.length > 0) {
        this.options.logger.warn(
          { epoch, streams: failed.length },
          'streams that failed for good are not purged',
        );
      }
    } else {
      // Resumed in the purge phase: every completed stream is purged again (PURGE is idempotent).
      this.migrator.stopFallback();
      const done = new Set(transition.done);
      const moves = fromRing.size > 0 && toRing.size > 0 ? fromRing.diff(toRing) : [];
      this.pendingPurge = groupMoves(moves).filter((group) => done.has(streamName(group)));
    }
    await this.migrator.purge(this.pendingPurge, epoch);
    this.pendingPurge = [];
    await this.update('transition finished', (map) =>
      withRingPlan(map, { transition: null, members: finalStates(map) }),
    );
  }

  private pendingPurge: MoveGroup[] = [];

  /**
   * A ring change with a factor above 1 (replication step 5; docs/design/replication.md, "Step 5
   * as built"), resumed from the map's phase:
   *
   * 1. `stream`: every node gets the union ring (`unionOf`): every party routes on the previous
   *    ring's chains, each changing chain's learners (its members on the next ring that are not on
   *    the previous one) at the end of its write path; then each range is copied from its serving
   *    tail to each learner (MIGRATE / MIGRATE_PUT, applied by exact version);
   * 2. `switch`: the changing chains freeze (their heads refuse writes) and every node answers
   *    that ring only once drained: every write admitted before reached every learner;
   * 3. `install`: the next ring is sent `holding`: the chains that changed stay frozen on every
   *    node that has it, until every node has it. A node still on the switching ring may serve a
   *    changed range's reads at its previous tail; no write of that range is acknowledged anywhere
   *    meanwhile, so those reads are current;
   * 4. `purge`: the next ring alone (writes of the changed chains served at their new heads);
   *    each member drops the ranges its next chains do not hold; then the transition ends
   *    (members' final states).
   *
   * A member that fails meanwhile: an entering one leaves the union ring (its chains route as if
   * it had not joined; when it returns it wipes and its copies start over), an exiting one becomes
   * `dropped` (never a source), any other is failed over as usual; the copies of a range follow
   * its serving tail. Nothing waits for a failed member.
   */
  private async runReplicatedTransition(): Promise<void> {
    if (this.map.transition?.phase === 'stream' && !(await this.copyToLearners())) return;
    // Every node (not failed) answers the switching ring only once drained; then the next ring,
    // still freezing the changed chains, until every node has it; then the next ring alone.
    if (!(await this.advancePhase('switch', 'install', 'replicated ring change: installing the next ring')))
      return;
    if (!(await this.advancePhase('install', 'purge', 'replicated ring change: next ring installed'))) return;
    if (this.map.transition?.phase !== 'purge') return;
    await this.announced;
    if (!(await this.answeredByAll())) return;
    await this.purgeLeftChains();
    await this.update('transition finished', (map) =>
      withRingPlan(map, { transition: null, members: finalStates(map) }),
    );
  }

  /**
   * In phase `from` of a replicated ring change: once every node answered the ring of the latest
   * epoch ({@link answeredByAll}), moves the map to phase `to` with a new ring epoch. True when
   * the map is past `from` (now or already), false when this process stopped writing.
   */
  private async advancePhase(
    from: 'switch' | 'install',
    to: 'install' | 'purge',
    reason: string,
  ): Promise<boolean> {
    if (this.map.transition?.phase !== from) return true;
    if (!(await this.answeredByAll())) return false;
    await this.enterPhase(from, to, reason);
    return true;
  }

  /**
   * Moves the map from phase `from` to `to` with a new ring epoch; nothing if it left `from`, or
   * if its ring epoch is no longer `atEpoch` (when given: what was checked there may not hold).
   */
  private enterPhase(
    from: MapTransition['phase'],
    to: MapTransition['phase'],
    reason: string,
    atEpoch?: number,
  ): Promise<void> {
    return this.update(reason, (map) =>
      map.transition?.phase !== from || (atEpoch !== undefined && map.ring.epoch !== atEpoch)
        ? undefined
        : { ring: { ...map.ring, epoch: map.epoch + 1 }, transition: { ...map.transition, phase: to } },
    );
  }

  /**
   * Resolves true once every node that is in a write path answered the RING of the latest ring
   * epoch (sent again until each did: a RING a node has is answered without change, after the
   * drain it calls for); false when this process stopped writing. Failed, dropped and dead
   * members are not waited for.
   */
  private async answeredByAll(): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      if (!this.coordinator || this.isClosed) return false;
      const epoch = this.map.ring.epoch;
      const ring = this.routedRing;
      const states = this.migrator.replication?.states;
      const answers = await Promise.all(
        [...this.pool.values()].map((node) => {
          const state = states?.get(node.id);
          if (state === 'failed' || state === 'dropped' || state === 'dead' || !node.verifyIdentity)
            return true;
          return this.migrator.pushRingUnlessFailed(node, ring, epoch);
        }),
      );
      if (answers.every(Boolean) && this.map.ring.epoch === epoch) {
        if (this.routing.epoch !== epoch || this.routing.ring !== ring) this.routeOn(ring, epoch);
        return true;
      }
      await sleep(Math.min(1000, COPY_ROUND_PAUSE_MS * attempt));
    }
  }

  /**
   * One map write, while the change streams at ring epoch `epoch`: the next ring gets back the
   * leaving members that are the last holders of a range ({@link keepLastHolders}), its other
   * members having failed since the change started. They stay `leaving`: their leave goes on
   * once a change can take them out without losing a range (a failed member returned and caught
   * up, or a node joined), and the change runs on without them leaving.
   */
  private async keepLastHoldersInChange(epoch: number): Promise<boolean> {
    let kept: string[] = [];
    await this.update('replicated ring change: leaving members kept, the last holders of a range', (map) => {
      kept = [];
      const transition = map.transition;
      if (transition?.phase !== 'stream' || map.ring.epoch !== epoch) return undefined;
      const members = keepLastHolders(map, transition.from, [...map.ring.members]);
      if (sameRingMembers(members, map.ring.members)) return undefined;
      kept = members.filter((member) => !map.ring.members.includes(member)).map((member) => member.id);
      return { ring: { ...map.ring, epoch: map.epoch + 1, members } };
    });
    if (kept.length > 0) {
      this.options.logger.warn(
        { kept },
        'leaving members kept in the ring: they hold the last live copies of some ranges (their other members failed)',
      );
    }
    return kept.length > 0;
  }

  /**
   * The stream phase's copies: each range of each changing chain of the union ring from its
   * serving tail to each of its learners, in rounds until all are copied (a range whose tail
   * changed, or whose copy failed, is copied again in the next round from the current tail;
   * copies apply if newer, so repeats are harmless); then the switch, written only at the ring
   * epoch at which every copy was found done. True once past the phase, false when this process
   * stopped writing.
   */
  private async copyToLearners(): Promise<boolean> {
    // Copies done, by learner and the ring epoch it (re)entered at, then range.
    const copied = new Set<string>();
    for (;;) {
      if (!(await this.answeredByAll())) return false;
      const map = this.map;
      const union = this.union;
      if (map.transition?.phase !== 'stream' || union === undefined) return false;
      const epoch = map.ring.epoch;
      const work = new Map<string, { tail: string; learner: string; ranges: HashRange[] }>();
      let waiting = 0;
      // The union ring's chains for these states: the map's (cached per map), since `union` is
      // this map's; a round that waits or retries on the same map does not derive them again.
      for (const chain of this.chains) {
        if (!chain.changing) continue;
        for (const learner of chain.path.slice(chain.serving.length)) {
          const done = `${learner}@${this.enteredAt.get(learner) ?? 0} ${chain.start}:${chain.end}`;
          if (copied.has(done)) continue;
          // No member serves the range (all failed): it waits for one to return.
          if (chain.tail === undefined) {
            waiting++;
            continue;
          }
          const name = `${chain.tail}>${learner}`;
          const entry = work.get(name) ?? { tail: chain.tail, learner, ranges: [] };
          entry.ranges.push({ start: chain.start, end: chain.end });
          work.set(name, entry);
        }
      }
      // Never switch to a ring that hands a range to no one: when a failure made leaving
      // members a range's last holders, they stay in the next ring (their leaves wait).
      if (work.size === 0 && waiting === 0 && chainLeftWithoutCopy(map) !== undefined) {
        if (!(await this.keepLastHoldersInChange(epoch))) await sleep(COPY_ROUND_PAUSE_MS);
        continue;
      }
      if (work.size === 0 && waiting === 0) {
        // Switch only at the epoch every copy was found done: a member let back into the union
        // ring since (a new epoch) has copies to get first, in the next round.
        await this.enterPhase('stream', 'switch', 'replicated ring change: copies done, switching', epoch);
        if (this.map.transition?.phase !== 'stream') return true;
        continue;
      }
      let progressed = false;
      await Promise.all(
        [...work.values()].map(async ({ tail, learner, ranges }) => {
          // The entry these copies are for, taken before they run: a learner that fails and
          // re-enters while a copy is in flight wipes on re-entering, and a copy whose
          // MIGRATE_PUTs it took before that but whose answer comes after must not count for the
          // new entry, or the keys it delivered are never copied again.
          const entry = this.enteredAt.get(learner) ?? 0;
          for (const chunk of chunkRanges(ranges)) {
            const sent = await this.migrator.migrateWithRetries(chunk, () => {
              if (!this.coordinator || this.isClosed || this.map.ring.epoch !== epoch) return undefined;
              const from = this.pool.get(tail);
              const to = this.pool.get(learner);
              return from === undefined || to === undefined ? undefined : { from, to, epoch };
            });
            if (sent === undefined) return;
            progressed = true;
            this.resync.counted(sent);
            for (const range of chunk) copied.add(`${learner}@${entry} ${range.start}:${range.end}`);
          }
        }),
      );
      if (!progressed) await sleep(COPY_ROUND_PAUSE_MS);
    }
  }

  /**
   * PURGE, on every member, of the ranges of the map's ring whose chains do not hold it: those
   * it left in the ring change, and any it learned for a while (a member that stood in for an
   * entering one that failed). Each node drops only what its write path no longer holds, so
   * the ranges may be generous. Not sent to failed or dead members (a failed one wipes when it
   * returns; a dead one is removed).
   */
  private async purgeLeftChains(): Promise<void> {
    const map = this.map;
    if (this.currentRing.size === 0) return;
    const chains = this.currentRing.chains(map.replicationFactor, replicaStatesOf(map));
    const targets = [...this.pool.values()]
      .filter((node) => {
        const state = activeMember(map, node.id)?.replicaState;
        return state !== undefined && state !== 'failed' && state !== 'dead' && node.verifyIdentity;
      })
      .map((node) => ({
        id: node.id,
        ranges: chains
          .filter((chain) => !chain.desired.includes(node.id))
          .map((chain) => ({ start: chain.start, end: chain.end })),
      }))
      .filter((target) => target.ranges.length > 0);
    await this.migrator.purgeRanges(targets, map.ring.epoch);
  }
}

/**
 * `patch` plus the ring change it calls for: when no transition runs and the members that belong
 * in the ring differ from it, the new ring, with a transition when keys move (else the members'
 * final states at once). While a transition runs, the change waits in the map.
 */
function withRingPlan(map: ClusterMap, patch: Partial<Pick<ClusterMap, 'members' | 'transition'>>): MapPatch {
  const merged = { ...map, ...patch };
  if (merged.transition !== null) return patch;
  // Replication: a ring change waits for a returning member's sync (whose copies follow the
  // ring's chains); it starts in the map write that ends the sync.
  if (
    merged.replicationFactor > 1 &&
    merged.members.some(
      (member) =>
        member.state !== 'removed' &&
        (member.replicaState === 'syncing' || member.replicaState === 'promoting'),
    )
  )
    return patch;
  const desired = keepLastHolders(merged, merged.ring, desiredRingMembers(merged));
  if (sameRingMembers(desired, merged.ring.members)) return { ...patch, members: finalStates(merged) };
  const ring: MapRing = { ...merged.ring, epoch: map.epoch + 1, members: desired };
  const previous = ringOf(merged.ring);
  const next = ringOf(ring);
  const moves = previous.size > 0 && next.size > 0 && previous.diff(next).length > 0;
  if (!moves) return { ...patch, ring, members: finalStates({ ...merged, ring }) };
  return {
    ...patch,
    ring,
    transition: {
      phase: 'stream',
      from: merged.ring,
      reason: describeChange(merged.ring.members, desired),
      startedAt: new Date().toISOString(),
      done: [],
      keysMoved: 0,
    },
  };
}

/**
 * {@link withRingPlan} for a request (a JOIN, a LEAVE, a remove, a static node's new entry), refused
 * by {@link refuseUnroutable} when its ring change cannot be routed.
 */
function refuseUnroutableRingPlan(
  map: ClusterMap,
  patch: Partial<Pick<ClusterMap, 'members' | 'transition'>>,
): MapPatch {
  return refuseUnroutable(map, withRingPlan(map, patch));
}

/**
 * Refuses (`INVALID_ARGUMENT`, nothing written) a request whose ring change a replicated cluster
 * cannot route: during it every party routes on the union of the previous and the next ring,
 * which must reproduce both rings' chains (`unionRingReproduces` in `@dstore/hashring`: always
 * with `vnode`; with `ketama` only when no weight changes and every member keeps its point
 * count). The change checked is the one `patch` starts, or, while a transition runs, the one that
 * waits in the map for it (from the running change's next ring). Checked when a request is
 * written, not when a queued change starts (a transition that ends must always be written; the
 * change it starts was checked against the same ring when it was asked for).
 */
function refuseUnroutable(map: ClusterMap, patch: MapPatch): MapPatch {
  const merged = { ...map, ...patch };
  if (merged.replicationFactor <= 1 || merged.ring.algorithm === 'vnode') return patch;
  const started = patch.transition !== undefined && patch.transition !== null;
  const from = started ? patch.transition!.from.members : merged.ring.members;
  const to = started ? merged.ring.members : desiredRingMembers(merged);
  if (from.length === 0 || unionRingReproduces(merged.ring.algorithm, from, to)) return patch;
  throw new DstoreError(
    ErrorCode.INVALID_ARGUMENT,
    `ring change refused (${describeChange(from, to)}): with replication factor ${merged.replicationFactor} a ${merged.ring.algorithm} ring can change only when every member keeps its point count (equal weights, no weight change; see unionRingReproduces in @dstore/hashring), since every party routes the change on the union of both rings; use the vnode algorithm`,
  );
}

/**
 * A chain that member `id` alone serves in `map` (it would serve nothing without it), if any: the
 * writer never takes such a member out (its range is unavailable either way, and it keeps its data).
 */
function chainServedOnlyBy(map: ClusterMap, id: string): ChainRange | undefined {
  // During a replicated ring change, the union ring's chains (see unionOf) are the serving ones.
  const union = unionOf(map);
  const states = union?.states ?? replicaStatesOf(map);
  const state = states.get(id);
  if (state === 'entering') return undefined;
  states.set(id, state === 'exiting' ? 'dropped' : 'failed');
  return ringOf(union === undefined ? map.ring : { ...map.ring, members: union.members })
    .chains(map.replicationFactor, states)
    .find((chain) => chain.serving.length === 0 && chain.desired.includes(id));
}

/**
 * Whether the write path of a changing chain (its serving members and learners: every member
 * that holds the range's acknowledged writes) is made only of members leaving the ring, so that
 * after the switch no member would hold them but failed ones (stale, or empty).
 */
function onlyLeaversHold(chain: ChainRange, states: ReplicaStates): boolean {
  return chain.changing && chain.path.length > 0 && chain.path.every((id) => states.get(id) === 'exiting');
}

/**
 * A range that the replicated ring change `map` runs would leave with no copy, if any: a changing
 * chain of the union ring that only leaving members hold ({@link onlyLeaversHold}), as when the
 * last live members of a range leave while its other members are failed. Such a change must not
 * switch: a leave that would start one is refused ({@link lossOfLeaving}), and the leavers a range
 * needs are kept in the ring ({@link keepLastHolders}) when a queued change starts, or when a
 * member of a streaming change fails and leaves them the last holders.
 */
function chainLeftWithoutCopy(map: ClusterMap): ChainRange | undefined {
  const union = unionOf(map);
  if (union === undefined) return undefined;
  return ringOf({ ...map.ring, members: union.members })
    .chains(map.replicationFactor, union.states)
    .find((chain) => onlyLeaversHold(chain, union.states));
}

/**
 * Why member `id` of `map` (marked leaving there) may not leave now, or undefined: its leave would
 * start, or queue after the running change, a ring change that hands a range to no one (its other
 * members are failed): refused rather than waiting in the map, so that the node or the operator
 * hears why.
 */
function lossOfLeaving(map: ClusterMap, id: string): DstoreError | undefined {
  const desired = desiredRingMembers(map);
  // The last member of the ring goes at once (nothing can move; it keeps its keys), see leave().
  if (!mayLeaveRangeWithoutCopy(map, map.ring, desired)) return undefined;
  // During a transition the map's ring is its next one, where a queued change starts from.
  const lost = chainLeftWithoutCopy(plannedChange(map, map.ring, desired));
  if (lost === undefined) return undefined;
  const failed = lost.desired.filter((member) => !lost.path.includes(member));
  return new DstoreError(
    ErrorCode.INVALID_ARGUMENT,
    `node ${id} cannot leave now: its range (${lost.start}, ${lost.end}] would be left with no live copy (${failed.length > 0 ? `the chain's other members, ${failed.join(', ')}, are failed` : 'no other member holds it'}); bring a failed member back or add a node, then leave again`,
  );
}

/**
 * Whether the change from `from` to `next` in `map` needs {@link chainLeftWithoutCopy} checked: the
 * map replicates (factor 1 moves every range to a member of the next ring), the next ring is not
 * empty (the last member goes at once, keeping its keys), the change takes a member out of the
 * ring (only then can a range be left with no copy) and its union ring can be routed (one that
 * cannot is refused by {@link refuseUnroutable} when it is asked for).
 */
function mayLeaveRangeWithoutCopy(map: ClusterMap, from: MapRing, next: readonly MapRingMember[]): boolean {
  if (map.replicationFactor <= 1 || next.length === 0) return false;
  const staying = new Set(next.map((member) => member.id));
  if (from.members.every((member) => staying.has(member.id))) return false;
  return from.algorithm === 'vnode' || unionRingReproduces(from.algorithm, from.members, next);
}

/**
 * The change from `from` to `next` as a streaming transition of `map`, for
 * {@link chainLeftWithoutCopy}: how the members' states would route it if it started now.
 */
function plannedChange(map: ClusterMap, from: MapRing, next: readonly MapRingMember[]): ClusterMap {
  return {
    ...map,
    ring: { ...from, members: [...next] },
    transition: {
      phase: 'stream',
      from,
      reason: '',
      startedAt: '',
      done: [],
      keysMoved: 0,
    },
  };
}

/**
 * The next ring's members for a change from `from` towards `desired`, with the leaving members
 * that are a range's last holders kept in it (their leave waits) when the change would otherwise
 * hand that range to no one ({@link chainLeftWithoutCopy}): a member that was failed while the
 * leave waited in the map, say.
 */
function keepLastHolders(map: ClusterMap, from: MapRing, desired: MapRingMember[]): MapRingMember[] {
  if (!mayLeaveRangeWithoutCopy(map, from, desired)) return desired;
  let next = desired;
  // Each round keeps at least one more leaver in the ring; at most every leaver comes back.
  for (let round = 0; round <= from.members.length; round++) {
    const lost = chainLeftWithoutCopy(plannedChange(map, from, next));
    if (lost === undefined) return next;
    const kept = new Set(next.map((member) => member.id));
    const leaver = from.members.find((member) => lost.path.includes(member.id) && !kept.has(member.id));
    if (leaver === undefined) return next;
    next = [...next, leaver].sort(byMemberId);
  }
  return next;
}

/** Whether a member in `state` is in write paths (serving, or a learner): failure detection watches it. */
function inWritePaths(state: MapMember['replicaState']): boolean {
  return state === 'up' || state === 'syncing' || state === 'promoting';
}

/** Members present in one list and not the other, or with another weight. */
function ringDifference(a: readonly MapRingMember[], b: readonly MapRingMember[]): number {
  const weights = new Map(b.map((member) => [member.id, member.weight]));
  let differences = 0;
  for (const member of a) {
    if (weights.get(member.id) !== member.weight) differences++;
    weights.delete(member.id);
  }
  return differences + weights.size;
}

/**
 * Member states once no transition runs: joining members in the ring are up; leaving members no
 * longer in it are removed (by an operator: kept, their identity refused) or forgotten (they left
 * by themselves). Returns `map.members` itself when nothing changes.
 */
function finalStates(map: Pick<ClusterMap, 'members' | 'ring' | 'epoch'>): readonly MapMember[] {
  const inRing = new Set(map.ring.members.map((member) => member.id));
  let changed = false;
  const members: MapMember[] = [];
  for (const member of map.members) {
    if (member.state === 'joining' && inRing.has(member.id)) {
      changed = true;
      members.push({ ...member, state: 'up', sinceEpoch: map.epoch + 1 });
    } else if (member.state === 'leaving' && !inRing.has(member.id)) {
      changed = true;
      if (member.leftBy !== 'node') members.push({ ...member, state: 'removed', sinceEpoch: map.epoch + 1 });
    } else members.push(member);
  }
  return changed ? members : map.members;
}

function describeChange(
  before: readonly { id: string; weight: number }[],
  after: readonly { id: string; weight: number }[],
): string {
  const was = new Map(before.map((member) => [member.id, member.weight]));
  const now = new Map(after.map((member) => [member.id, member.weight]));
  const parts: string[] = [];
  for (const [id, weight] of now) {
    if (!was.has(id)) parts.push(`+${id}`);
    else if (was.get(id) !== weight) parts.push(`${id} weight ${was.get(id)}->${weight}`);
  }
  for (const id of was.keys()) if (!now.has(id)) parts.push(`-${id}`);
  return parts.join(', ');
}
