import { EventEmitter } from 'node:events';
import type { ClusterNode } from './cluster-node.js';

/** Events of a {@link HealthMonitor}. */
export interface HealthMonitorEvents {
  /** A node went up or down. */
  status: [node: ClusterNode, up: boolean];
}

/**
 * Decides whether each node is up: its link is ready (HELLO answered by the right id) AND, when it
 * registered with JOIN, a heartbeat arrived within `heartbeatTimeoutMs`. Link events re-evaluate
 * at once (a dropped link fails fast from the next request on); heartbeat expiry is found by one
 * unref'd interval timer, never per request.
 */
export class HealthMonitor extends EventEmitter<HealthMonitorEvents> {
  private readonly nodes = new Set<ClusterNode>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly heartbeatTimeoutMs: number) {
    super();
  }

  /** Starts the expiry timer. */
  start(): void {
    if (this.timer) return;
    // A quarter of the timeout: a silent node is marked down at most 25% late.
    const everyMs = Math.max(25, Math.min(1000, Math.floor(this.heartbeatTimeoutMs / 4)));
    this.timer = setInterval(() => this.evaluateAll(), everyMs);
    this.timer.unref();
  }

  /** Stops the timer. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Follows a node: re-evaluates it whenever its link goes up or down. */
  watch(node: ClusterNode): void {
    this.nodes.add(node);
    const evaluate = (): void => this.evaluate(node);
    node.link.on('ready', evaluate);
    node.link.on('close', evaluate);
    this.evaluate(node);
  }

  /** Stops following a node (it left the ring). */
  unwatch(node: ClusterNode): void {
    this.nodes.delete(node);
    node.up = false;
  }

  /** Whether `node` counts as up at time `now` (a `performance.now()` reading). */
  isHealthy(node: ClusterNode, now: number): boolean {
    if (!node.link.isReady || node.identityMismatch !== undefined) return false;
    return !node.registered || now - node.lastHeartbeatAt <= this.heartbeatTimeoutMs;
  }

  /** Re-evaluates one node now (after a heartbeat, a JOIN or a link event). */
  evaluate(node: ClusterNode, now = performance.now()): void {
    if (!this.nodes.has(node)) return;
    const up = this.isHealthy(node, now);
    if (up === node.up) return;
    node.up = up;
    this.emit('status', node, up);
  }

  private evaluateAll(): void {
    const now = performance.now();
    for (const node of this.nodes) this.evaluate(node, now);
  }
}
