import {
  type ClusterMapRequest,
  type ClusterMapSnapshot,
  type Connection,
  Op,
  type RingMember,
} from '@dstore/protocol';
import { replicaStatesOf } from './cluster-map.js';
import type { Membership } from './membership.js';

/** How long a pushed map may wait for the client's OK before the push is forgotten. */
const PUSH_TIMEOUT_MS = 5000;

/**
 * Serves the cluster map to clients that route directly (CLUSTER_MAP) and pushes every change to
 * those that subscribed (MAP_PUSH), so they need not poll. The map is the ring this balancer
 * routes on (the membership's published topology) with its epoch and each member's address: a
 * client that routes on it sends every request to the node the balancer would forward it to, fenced
 * with the same epoch. Changes are coalesced to one push per event-loop turn; a map equal to the
 * last pushed one is not pushed again. Reads the membership's immutable snapshots only.
 */
export class MapPublisher {
  private readonly subscribers = new Set<Connection>();
  private pushScheduled = false;
  private lastPushed = '';

  constructor(private readonly membership: Membership) {
    const changed = (): void => this.schedulePush();
    membership.on('topology', changed);
    membership.on('change', changed);
  }

  /** Connections subscribed to map pushes. */
  get subscriberCount(): number {
    return this.subscribers.size;
  }

  /** Answers CLUSTER_MAP with the current map; subscribes the connection when asked. */
  serve(request: ClusterMapRequest, connection: Connection): void {
    const snapshot = this.snapshot();
    if (this.lastPushed === '') this.lastPushed = signature(snapshot);
    if (request.subscribe && !this.subscribers.has(connection)) {
      this.subscribers.add(connection);
      connection.once('close', () => this.subscribers.delete(connection));
    }
    connection.reply({ op: Op.MAP, id: request.id, ...snapshot });
  }

  /** The map as direct clients get it: the routed ring, its epoch, the members' addresses. */
  snapshot(): ClusterMapSnapshot {
    const topology = this.membership.topology;
    const ring = topology.ring;
    const map = this.membership.clusterMap;
    // The routed ring's states (a replicated ring change routes on a union ring with its own).
    const states = topology.replication?.states ?? replicaStatesOf(map);
    const nodes: RingMember[] = ring.nodes().map((member) => {
      const node = this.membership.node(member.id);
      const fields = {
        id: member.id,
        weight: member.weight,
        replicaState: states.get(member.id) ?? 'up',
        // A weight change's union ring: the member's previous weight.
        ...(member.previousWeight === undefined ? {} : { previousWeight: member.previousWeight }),
      };
      return node === undefined ? fields : { ...fields, host: node.host, port: node.port };
    });
    return {
      epoch: topology.epoch,
      generation: map.generation,
      algorithm: ring.algorithm,
      vnodes: ring.vnodes,
      nodes,
      replicationFactor: map.replicationFactor,
      ...(map.ring.hashTag === undefined ? {} : { hashTag: map.ring.hashTag }),
    };
  }

  private schedulePush(): void {
    if (this.pushScheduled || this.subscribers.size === 0) return;
    this.pushScheduled = true;
    setImmediate(() => {
      this.pushScheduled = false;
      this.push();
    });
  }

  private push(): void {
    const snapshot = this.snapshot();
    const current = signature(snapshot);
    if (current === this.lastPushed) return;
    this.lastPushed = current;
    for (const connection of this.subscribers) {
      if (!connection.isOpen) {
        this.subscribers.delete(connection);
        continue;
      }
      // Not awaited: a client that does not answer only costs its own pending entry, until the deadline.
      connection
        .request({ op: Op.MAP_PUSH, ...snapshot }, { timeoutMs: PUSH_TIMEOUT_MS })
        .catch(() => undefined);
    }
  }
}

/**
 * What makes two maps different for a client: epoch, generation, the replication factor and every
 * member's address and replication state.
 */
function signature(snapshot: ClusterMapSnapshot): string {
  const members = snapshot.nodes
    .map((node) => `${node.id}@${node.host ?? ''}:${node.port ?? 0}/${node.replicaState ?? 'up'}`)
    .join(',');
  return `${snapshot.generation}/${snapshot.epoch}/${snapshot.replicationFactor ?? 1}/${members}`;
}
