import { EventEmitter } from 'node:events';
import { HashRing } from '@dstore/hashring';
import type { Logger } from 'pino';
import { ClusterNode, type NodeAddress, type NodeLinkOptions } from './cluster-node.js';
import type { BalancerHashAlgorithm } from './config.js';
import type { HealthMonitor } from './health.js';
import { Migrator } from './migrator.js';

/** What a JOIN did. */
export type JoinOutcome = 'added' | 'updated' | 'unchanged';

/** Events of a {@link Membership}. */
export interface MembershipEvents {
  /** The ring or a node's address changed; `epoch` is the new epoch. */
  change: [epoch: number];
}

/** Options of a {@link Membership}. */
export interface MembershipOptions {
  readonly algorithm: BalancerHashAlgorithm;
  readonly link: NodeLinkOptions;
  readonly health: HealthMonitor;
  readonly logger: Logger;
}

/**
 * The node registry, the ring and its epoch. The ring is an immutable {@link HashRing} snapshot
 * replaced as a whole on every change, so a request routes on one consistent ring even while
 * nodes join or leave. Only JOIN, LEAVE and static configuration change it; health never does
 * (a down node keeps its keys, so its requests fail instead of reading stale data elsewhere).
 */
export class Membership extends EventEmitter<MembershipEvents> {
  /** Key migration between ring changes. */
  readonly migrator: Migrator;
  private readonly registry = new Map<string, ClusterNode>();
  private currentRing: HashRing;
  private routedRing: HashRing;
  private currentEpoch = 0;
  private isClosed = false;
  /** A migration with moving ranges runs: further placement changes wait. */
  private migrating = false;
  private queuedChange: { reasons: string[]; nodeIds: string[] } | undefined;
  private announced: Promise<void> = Promise.resolve();
  /** The ring and epoch a running transition started from (announce or migration). */
  private transitionFrom: { ring: HashRing; epoch: number } | undefined;
  /** Callers waiting for a leaving node to be gone (LEAVE answers, operator removes). */
  private readonly departures = new Map<string, ((removed: boolean) => void)[]>();

  constructor(private readonly options: MembershipOptions) {
    super();
    this.currentRing = HashRing.from([], { algorithm: options.algorithm });
    this.routedRing = this.currentRing;
    const membership = this;
    this.migrator = new Migrator({
      node: (id) => this.registry.get(id),
      get nodes() {
        return membership.registry.values();
      },
      logger: options.logger,
      get closed() {
        return membership.isClosed;
      },
    });
  }

  /** The current ring snapshot (the latest epoch; see {@link routingRing} for forwarding). */
  get ring(): HashRing {
    return this.currentRing;
  }

  /**
   * The ring requests are forwarded on: the previous ring until every node acknowledged the RING
   * of the current epoch, so a node never receives a key it does not know it owns yet.
   */
  get routingRing(): HashRing {
    return this.routedRing;
  }

  /** Resolves once the RING of the current epoch has been answered by every node. */
  settled(): Promise<void> {
    return this.announced;
  }

  /** Whether the balancer is closing. */
  get closed(): boolean {
    return this.isClosed;
  }

  /** Increases with every change of the ring or of a node's address or weight. */
  get epoch(): number {
    return this.currentEpoch;
  }

  /** The ring's algorithm. */
  get algorithm(): BalancerHashAlgorithm {
    return this.options.algorithm;
  }

  /** Every node of the ring, in registration order. */
  get nodes(): IterableIterator<ClusterNode> {
    return this.registry.values();
  }

  /** Number of nodes in the ring. */
  get size(): number {
    return this.registry.size;
  }

  /** The node with this id. */
  node(id: string): ClusterNode | undefined {
    return this.registry.get(id);
  }

  /** Adds the nodes configured up front (one epoch for all of them). */
  addStatic(specs: readonly (NodeAddress & { verifyIdentity: boolean })[]): void {
    if (specs.length === 0) return;
    for (const spec of specs) this.install(spec, false, spec.verifyIdentity);
    this.commit('static configuration', specs.map((spec) => spec.id).join(','));
  }

  /**
   * Registers a node (JOIN). The same id at the same address and weight is an idempotent
   * re-register (a node re-JOINs after every reconnect) and does not bump the epoch.
   */
  join(spec: NodeAddress): JoinOutcome {
    const existing = this.registry.get(spec.id);
    if (
      existing &&
      existing.host === spec.host &&
      existing.port === spec.port &&
      existing.weight === spec.weight
    ) {
      existing.registered = true;
      existing.lastHeartbeatAt = performance.now();
      // A restarted node re-JOINs before our backoff would redial it: dial again at once.
      if (!existing.link.isReady) this.replace(existing, spec);
      else this.options.health.evaluate(existing);
      return 'unchanged';
    }
    if (existing) {
      this.replace(existing, spec);
      this.commit('node updated', spec.id, existing.weight !== spec.weight);
      return 'updated';
    }
    this.install(spec, true, true);
    this.commit('node joined', spec.id);
    return 'added';
  }

  /**
   * Removes a node (LEAVE, or an operator's remove). Its ranges first move to their new owners
   * (the node keeps serving them meanwhile); resolves true once it is out of the registry, false
   * when it was not in it. A node that is the last one, or not in the ring, goes at once.
   */
  leave(id: string): Promise<boolean> {
    const node = this.registry.get(id);
    if (!node) return Promise.resolve(false);
    const done = new Promise<boolean>((resolve) => {
      const waiters = this.departures.get(id) ?? [];
      waiters.push(resolve);
      this.departures.set(id, waiters);
    });
    if (node.leaving) return done;
    node.leaving = true;
    const remaining = [...this.registry.values()].filter((member) => !member.leaving);
    if (remaining.length === 0 || !this.currentRing.has(id)) {
      this.uninstall(node);
      this.commit('node left', id, true, remaining.length === 0 ? node.keyCount : 0);
      this.resolveDeparture(id);
      return done;
    }
    this.options.logger.info({ node: id }, 'node leaving: its ranges move to their new owners first');
    this.commit('node leaving', id);
    return done;
  }

  /** Nodes that are leaving and no longer in the ring leave the registry once nothing migrates. */
  private releaseDeparted(): void {
    if (this.migrating) return;
    for (const node of [...this.registry.values()]) {
      if (!node.leaving || this.currentRing.has(node.id)) continue;
      this.uninstall(node);
      this.options.logger.info(
        { node: node.id, epoch: this.currentEpoch },
        'node left after handing off its keys',
      );
      this.resolveDeparture(node.id);
    }
  }

  private resolveDeparture(id: string): void {
    const waiters = this.departures.get(id) ?? [];
    this.departures.delete(id);
    for (const resolve of waiters) resolve(true);
  }

  /** Records a HEARTBEAT. Returns false for a node that is not in the ring (it must JOIN). */
  heartbeat(id: string, keyCount: number): boolean {
    const node = this.registry.get(id);
    if (!node) return false;
    node.keyCount = keyCount;
    node.registered = true;
    node.lastHeartbeatAt = performance.now();
    if (!node.up) this.options.health.evaluate(node);
    return true;
  }

  /** Closes every node link (requests in flight finish first). */
  async close(): Promise<void> {
    this.isClosed = true;
    for (const id of [...this.departures.keys()]) this.resolveDeparture(id);
    const nodes = [...this.registry.values()];
    for (const node of nodes) this.options.health.unwatch(node);
    await Promise.all(nodes.map((node) => node.close()));
  }

  private install(spec: NodeAddress, registered: boolean, verifyIdentity: boolean): ClusterNode {
    const node = new ClusterNode(
      spec.id,
      spec.host,
      spec.port,
      spec.weight,
      registered,
      verifyIdentity,
      this.options.link,
    );
    node.lastHeartbeatAt = performance.now();
    this.registry.set(spec.id, node);
    this.options.health.watch(node);
    // Every (re)connect gets the ring, so a restarted node learns what it owns before traffic.
    // During a transition it gets the ring before it first, so it derives the moving ranges
    // (and tracks the writes that must win over migrated copies) like every other node.
    node.link.on('ready', () => {
      if (this.transitionFrom !== undefined) {
        void this.migrator.pushRing(node, this.transitionFrom.ring, this.transitionFrom.epoch);
      }
      void this.migrator.pushRing(node, this.currentRing, this.currentEpoch);
    });
    if (!this.isClosed) node.start();
    return node;
  }

  private uninstall(node: ClusterNode): void {
    this.registry.delete(node.id);
    this.options.health.unwatch(node);
    // In-flight requests on the old link still get their answers; new ones use the new ring.
    void node.close();
  }

  private replace(existing: ClusterNode, spec: NodeAddress): void {
    const keyCount = existing.keyCount;
    this.uninstall(existing);
    this.install(spec, true, true).keyCount = keyCount;
  }

  private commit(reason: string, nodeIds: string, placementChanged = true, departedKeys = 0): void {
    if (placementChanged && this.migrating) {
      // One migration at a time: the change is applied (from the registry as it is then) after it.
      this.queuedChange ??= { reasons: [], nodeIds: [] };
      this.queuedChange.reasons.push(reason);
      this.queuedChange.nodeIds.push(nodeIds);
      this.migrator.queuedChanges++;
      this.options.logger.info({ reason, node: nodeIds }, 'ring change queued behind the running migration');
      return;
    }
    const previous = this.currentRing;
    const previousEpoch = this.currentEpoch;
    if (placementChanged) {
      const members = [...this.registry.values()]
        .filter((node) => !node.leaving)
        .map((node) => ({ id: node.id, weight: node.weight }));
      this.currentRing = HashRing.from(members, { algorithm: this.options.algorithm });
    }
    this.currentEpoch++;
    const logger = this.options.logger;
    logger.info(
      { epoch: this.currentEpoch, reason, node: nodeIds, nodes: this.currentRing.size },
      'ring changed',
    );
    if (placementChanged) {
      if (departedKeys > 0) {
        logger.warn(
          { epoch: this.currentEpoch, node: nodeIds, keysHeld: departedKeys },
          'a node left without handing off its keys: they are unreachable until it re-joins',
        );
      }
      if (previous.size > 0) this.transitionFrom = { ring: previous, epoch: previousEpoch };
      this.transition(previous, this.currentRing, this.currentEpoch);
    } else this.routedRing = this.currentRing;
    this.emit('change', this.currentEpoch);
  }

  /** Announces the new ring, then forwards on it and migrates the moving ranges. */
  private transition(previous: HashRing, next: HashRing, epoch: number): void {
    const hasMoves = previous.size > 0 && next.size > 0 && previous.diff(next).length > 0;
    if (hasMoves) this.migrating = true;
    const announced = this.migrator.announce(next, epoch, hasMoves).then(() => {
      // A later change may have been announced meanwhile: never route on an older ring.
      if (this.currentRing === next) this.routedRing = next;
    });
    this.announced = announced;
    if (!hasMoves) {
      void announced.then(() => {
        if (this.currentRing === next && !this.migrating) this.transitionFrom = undefined;
        this.releaseDeparted();
      });
      return;
    }
    announced
      .then(() => this.migrator.migrate(previous, next, epoch))
      .catch((error: unknown) =>
        this.options.logger.error({ epoch, err: (error as Error).message }, 'migration failed'),
      )
      .finally(() => {
        this.migrating = false;
        this.transitionFrom = undefined;
        this.releaseDeparted();
        const queued = this.queuedChange;
        this.queuedChange = undefined;
        this.migrator.queuedChanges = 0;
        if (queued && !this.isClosed) this.commit(queued.reasons.join(', '), queued.nodeIds.join(','));
      });
  }
}
