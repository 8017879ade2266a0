import type { MapMember } from './cluster-map.js';
import { ClusterNode, type NodeAddress, type NodeLinkOptions, type NodeStorage } from './cluster-node.js';
import type { HealthMonitor } from './health.js';

/** Options of a {@link NodePool}. */
export interface NodePoolOptions {
  readonly link: NodeLinkOptions;
  readonly health: HealthMonitor;
  /** Whether the node with this id must answer HELLO with it (false: a static bare host:port). */
  readonly verifyIdentity: (id: string) => boolean;
  /** Called on every (re)connect of a node's link, before any request can use it. */
  readonly onReady: (node: ClusterNode) => void;
}

/**
 * The balancer's links to the members of the cluster map: one {@link ClusterNode} (a reconnecting
 * multiplexed link plus the health facts the monitor reads) per member that is not removed, at the
 * address the map holds. It only manages links and health; what the members are is the map's
 * business ({@link NodePool.sync} follows it).
 */
export class NodePool {
  private readonly nodes = new Map<string, ClusterNode>();
  private closed = false;

  constructor(private readonly options: NodePoolOptions) {}

  /** Every node, in the order they were added. */
  values(): IterableIterator<ClusterNode> {
    return this.nodes.values();
  }

  /** Number of nodes. */
  get size(): number {
    return this.nodes.size;
  }

  /** The node with this id. */
  get(id: string): ClusterNode | undefined {
    return this.nodes.get(id);
  }

  /**
   * One link per member that is not removed, at the address (and weight) the map holds: links
   * of members gone are closed, moved members are redialled, new ones dialled.
   */
  sync(members: readonly MapMember[]): void {
    const wanted = new Map<string, MapMember>();
    for (const member of members) if (member.state !== 'removed') wanted.set(member.id, member);
    for (const [id, node] of this.nodes) {
      const member = wanted.get(id);
      if (member === undefined) this.remove(node);
      else if (member.host !== node.host || member.port !== node.port || member.weight !== node.weight)
        this.replace(node, member);
    }
    for (const member of wanted.values()) {
      if (!this.nodes.has(member.id)) this.add(member, this.options.verifyIdentity(member.id));
    }
  }

  /**
   * The node registered on this balancer's port (JOIN): from now on its heartbeats here decide
   * its health (a member registered at another balancer is up while our link to it is ready).
   */
  noteRegistration(id: string, redialIfDown: boolean): void {
    const node = this.nodes.get(id);
    if (node === undefined) return;
    node.registered = true;
    node.lastHeartbeatAt = performance.now();
    // A restarted node re-JOINs before our backoff would redial it: dial again at once.
    if (redialIfDown && !node.link.isReady) this.replace(node, node);
    else this.options.health.evaluate(node);
  }

  /** Records a HEARTBEAT. Returns false for a node that is not a member (it must JOIN). */
  heartbeat(id: string, keyCount: number, storage?: NodeStorage): boolean {
    const node = this.nodes.get(id);
    if (!node) return false;
    node.keyCount = keyCount;
    node.storage = storage;
    node.registered = true;
    node.lastHeartbeatAt = performance.now();
    if (!node.up) this.options.health.evaluate(node);
    return true;
  }

  /** Closes every link (requests in flight finish first). */
  async close(): Promise<void> {
    this.closed = true;
    const nodes = [...this.nodes.values()];
    for (const node of nodes) this.options.health.unwatch(node);
    await Promise.all(nodes.map((node) => node.close()));
  }

  private add(spec: NodeAddress, verifyIdentity: boolean): ClusterNode {
    const node = new ClusterNode(
      spec.id,
      spec.host,
      spec.port,
      spec.weight,
      // Heartbeats count once the node registers here (JOIN); until then the link decides.
      false,
      verifyIdentity,
      this.options.link,
    );
    // Not heard from yet: up only once its link is ready (HELLO answered by the right id).
    node.lastHeartbeatAt = performance.now();
    this.nodes.set(spec.id, node);
    this.options.health.watch(node);
    node.link.on('ready', () => this.options.onReady(node));
    if (!this.closed) node.start();
    return node;
  }

  private remove(node: ClusterNode): void {
    this.nodes.delete(node.id);
    this.options.health.unwatch(node);
    // In-flight requests on the old link still get their answers; new ones use the new ring.
    void node.close();
  }

  private replace(existing: ClusterNode, spec: NodeAddress): void {
    const { keyCount, registered, lastHeartbeatAt, storage } = existing;
    this.remove(existing);
    const node = this.add(spec, existing.verifyIdentity);
    node.keyCount = keyCount;
    node.registered = registered;
    node.lastHeartbeatAt = lastHeartbeatAt;
    node.storage = storage;
  }
}
