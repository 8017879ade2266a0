/**
 * A replicated cluster for the replication tests: five real dstore-node processes under a
 * {@link Nemesis}, an in-process balancer with replication factor 3, and the ways the tests look
 * at it: each member's copy of a key read straight from the node with PULL (a peer's read of its
 * replica, which bypasses the tail-only rule for clients), client and peer connections to a node.
 */
import { type ManagedProcess, Nemesis } from '@dstore/checker';
import { createClient, type DstoreClient } from '@dstore/client';
import type { Chain, HashRing, ReplicaState } from '@dstore/hashring';
import { Connection, connectSocket, handshake, Op } from '@dstore/protocol';
import { expect } from 'vitest';
import type { Balancer, BalancerOptions } from '../src/index.js';
import {
  NODE_CLI,
  type NodeReady,
  type Resources,
  startBalancer,
  temporaryDir,
  waitForNodesUp,
} from './helpers.js';

export type Engine = 'memory' | 'lmdb';
export const FACTOR = 3;
export const NODES = ['node-1', 'node-2', 'node-3', 'node-4', 'node-5'];
const text = new TextEncoder();

/** Options of {@link ReplicatedCluster.start}. */
export interface ReplicatedClusterOptions {
  readonly engine: Engine;
  readonly resources: Resources;
  readonly nemesis: Nemesis;
  /** Extra balancer options (failure timeout, lease). */
  readonly balancer?: BalancerOptions;
}

/** Five nodes, factor 3, joined while empty (a ring change on replicated keys is refused until step 5). */
export class ReplicatedCluster {
  readonly nodes = new Map<string, ManagedProcess<NodeReady>>();
  private readonly peers = new Map<string, Connection>();

  constructor(
    readonly balancer: Balancer,
    private readonly resources: Resources,
  ) {}

  static async start(options: ReplicatedClusterOptions): Promise<ReplicatedCluster> {
    const { resources, nemesis, engine } = options;
    const balancer = await startBalancer(resources, {
      replicationFactor: FACTOR,
      experimentalReplication: true,
      ...options.balancer,
    });
    const cluster = new ReplicatedCluster(balancer, resources);
    for (const id of NODES) {
      const args = ['--port', '0', '--id', id, '--join', `127.0.0.1:${balancer.address.port}`];
      args.push('--heartbeat-interval', '200', '--log-level', 'error');
      if (engine === 'lmdb')
        args.push('--engine', 'lmdb', '--data-dir', temporaryDir(resources, `dstore-chain-${id}-`));
      const node = nemesis.process<NodeReady>({ name: id, script: NODE_CLI, args });
      cluster.nodes.set(id, node);
      await node.start();
    }
    await waitForNodesUp(balancer, NODES.length);
    return cluster;
  }

  get port(): number {
    return this.balancer.address.port;
  }

  get ring(): HashRing {
    return this.balancer.membership.ring;
  }

  /** Members' replication states in the balancer's current map. */
  get states(): Map<string, ReplicaState> {
    const states = new Map<string, ReplicaState>();
    for (const member of this.balancer.membership.clusterMap.members) {
      if (member.state !== 'removed') states.set(member.id, member.replicaState);
    }
    return states;
  }

  /** The replication state of member `id` in the current map. */
  stateOf(id: string): ReplicaState | undefined {
    return this.states.get(id);
  }

  /** The key's chain on the current map (failed members out of the serving chain). */
  chain(key: string): Chain {
    return this.ring.chainOf(key, FACTOR, this.states);
  }

  /** The key's serving chain on the current map: head first, tail last. */
  chainOf(key: string): readonly string[] {
    return this.chain(key).serving;
  }

  /** An authenticated peer (role node) connection to `id`, for PULL and REPLICATE. */
  async peer(id: string): Promise<Connection> {
    const existing = this.peers.get(id);
    if (existing?.isOpen === true) return existing;
    const connection = await this.connectTo(id);
    await handshake(connection, 'node', {});
    this.peers.set(id, connection);
    return connection;
  }

  /** A new peer (role node) connection to `id`, not shared: a REPLICATE stream of its own. */
  async newPeer(id: string): Promise<Connection> {
    const connection = await this.connectTo(id);
    await handshake(connection, 'node', {});
    return connection;
  }

  /** A client connection straight to node `id` (no balancer). */
  async direct(id: string): Promise<Connection> {
    const connection = await this.connectTo(id);
    await handshake(connection, 'client', {});
    return connection;
  }

  private async connectTo(id: string): Promise<Connection> {
    const ready = this.nodes.get(id)!.ready;
    const connection = new Connection(await connectSocket({ host: '127.0.0.1', port: ready.port }), {
      requestTimeoutMs: 10_000,
    });
    this.resources.add(() => connection.destroy());
    return connection;
  }

  /** Member `id`'s copy of `key`: its value (null when it has none) and version. */
  async copyAt(id: string, key: string): Promise<{ value: string | null; version: number }> {
    const response = await (await this.peer(id)).request({ op: Op.PULL, key: text.encode(key) });
    if (response.op !== Op.ENTRY) throw new Error(`PULL answered with op ${response.op}`);
    const entry = response.entry;
    return entry === null
      ? { value: null, version: 0 }
      : { value: new TextDecoder().decode(entry.value), version: entry.version };
  }

  /**
   * Every serving member of `key`'s chain holds `value` (null: none of them has the key), at one
   * version; `value` undefined: whatever the tail holds.
   */
  async expectOnChain(key: string, value?: string | null): Promise<void> {
    const copies = await Promise.all(this.chainOf(key).map((id) => this.copyAt(id, key)));
    const expected = value === undefined ? copies[copies.length - 1]!.value : value;
    for (const copy of copies) expect(copy.value, `${key} on ${this.chainOf(key).join(',')}`).toBe(expected);
    if (expected !== null) {
      expect(new Set(copies.map((copy) => copy.version)).size, `${key}: one version on every member`).toBe(1);
    }
  }

  /** A client of the balancer, disconnected at release. */
  client(commandTimeout = 5000): DstoreClient {
    const made = createClient({ host: '127.0.0.1', port: this.port, commandTimeout });
    this.resources.add(() => made.disconnect());
    return made;
  }

  /** A key whose chain (on the current map) puts `node` at `position` (0 head, 2 tail), or avoids it (-1). */
  keyWhere(node: string, position: number, prefix: string): string {
    for (let i = 0; i < 100_000; i++) {
      const key = `${prefix}-${i}`;
      if (this.chainOf(key).indexOf(node) === position) return key;
    }
    throw new Error(`no key with ${node} at position ${position}`);
  }
}

export { Nemesis };
