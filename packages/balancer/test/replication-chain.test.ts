/**
 * Replication step 2 (experimental): chain replication on static chains. Five real dstore-node
 * processes, replication factor 3, memory and lmdb, an in-process balancer; clients through the
 * balancer and routing directly. Every member of a key's chain is read straight from the node
 * with PULL (a peer's read of its replica, which bypasses the tail-only rule for clients).
 */
import {
  checkHistory,
  formatCheckResult,
  HistoryRecorder,
  type ManagedProcess,
  Nemesis,
  startWorkload,
} from '@dstore/checker';
import { createClient, type DstoreClient } from '@dstore/client';
import type { HashRing } from '@dstore/hashring';
import {
  Connection,
  connectSocket,
  DstoreError,
  ErrorCode,
  handshake,
  Op,
  type Response,
} from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import type { Balancer } from '../src/index.js';
import { directClient, runOperation, withMap } from './direct-client.js';
import {
  attempt,
  NODE_CLI,
  type NodeReady,
  Resources,
  refusal,
  startBalancer,
  temporaryDir,
  waitForNodesUp,
} from './helpers.js';

const resources = new Resources();
let nemesis = new Nemesis();
afterEach(async () => {
  await nemesis.cleanup();
  await resources.releaseAll();
});

type Engine = 'memory' | 'lmdb';
const FACTOR = 3;
const NODES = ['node-1', 'node-2', 'node-3', 'node-4', 'node-5'];
const text = new TextEncoder();

/** Five nodes, factor 3, joined while empty (a ring change on replicated keys is refused until step 5). */
class ReplicatedCluster {
  readonly nodes = new Map<string, ManagedProcess<NodeReady>>();
  private readonly peers = new Map<string, Connection>();

  constructor(readonly balancer: Balancer) {}

  static async start(engine: Engine): Promise<ReplicatedCluster> {
    nemesis = new Nemesis();
    const balancer = await startBalancer(resources, {
      replicationFactor: FACTOR,
      experimentalReplication: true,
    });
    const cluster = new ReplicatedCluster(balancer);
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

  /** The key's chain (all members up): head first, tail last. */
  chainOf(key: string): readonly string[] {
    return this.ring.chainOf(key, FACTOR).serving;
  }

  /** An authenticated peer (role node) connection to `id`, for PULL. */
  async peer(id: string): Promise<Connection> {
    const existing = this.peers.get(id);
    if (existing !== undefined) return existing;
    const ready = this.nodes.get(id)!.ready;
    const connection = new Connection(await connectSocket({ host: '127.0.0.1', port: ready.port }), {
      requestTimeoutMs: 10_000,
    });
    resources.add(() => connection.destroy());
    await handshake(connection, 'node', {});
    this.peers.set(id, connection);
    return connection;
  }

  /** A client connection straight to node `id` (no balancer). */
  async direct(id: string): Promise<Connection> {
    const ready = this.nodes.get(id)!.ready;
    const connection = new Connection(await connectSocket({ host: '127.0.0.1', port: ready.port }), {
      requestTimeoutMs: 10_000,
    });
    resources.add(() => connection.destroy());
    await handshake(connection, 'client', {});
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

  /** Every member of `key`'s chain holds `value` (null: none of them has the key), at one version. */
  async expectOnChain(key: string, value: string | null): Promise<void> {
    const copies = await Promise.all(this.chainOf(key).map((id) => this.copyAt(id, key)));
    for (const copy of copies) expect(copy.value, key).toBe(value);
    expect(new Set(copies.map((copy) => copy.version)).size, `${key}: one version on every member`).toBe(1);
  }
}

function client(cluster: ReplicatedCluster, commandTimeout = 5000): DstoreClient {
  const made = createClient({ host: '127.0.0.1', port: cluster.port, commandTimeout });
  resources.add(() => made.disconnect());
  return made;
}

/** A key whose chain puts `node` at `position` (0 head, 2 tail), or whose chain avoids it (-1). */
function keyWhere(cluster: ReplicatedCluster, node: string, position: number, prefix: string): string {
  for (let i = 0; i < 100_000; i++) {
    const key = `${prefix}-${i}`;
    if (cluster.chainOf(key).indexOf(node) === position) return key;
  }
  throw new Error(`no key with ${node} at position ${position}`);
}

describe.each(['memory', 'lmdb'] as const)('chain replication, factor 3 on 5 nodes (%s)', (engine) => {
  it('every acknowledged write and delete is on all 3 members of its chain', {
    timeout: 60_000,
  }, async () => {
    const cluster = await ReplicatedCluster.start(engine);
    const writer = client(cluster);
    // Each member read as soon as the write is acknowledged: acknowledged means applied everywhere.
    for (let i = 0; i < 60; i++) {
      const key = `ack-${i}`;
      await writer.set(key, `v${i}`);
      await cluster.expectOnChain(key, `v${i}`);
    }
    for (let i = 0; i < 60; i += 3) {
      await writer.del(`ack-${i}`);
      await cluster.expectOnChain(`ack-${i}`, null);
    }
    // Atomic operations replicate their result.
    await writer.set('counter', '10');
    expect(await writer.incrby('counter', 5)).toBe(15);
    await cluster.expectOnChain('counter', '15');
    // A batch split over chains: each part at its head, each key on its chain.
    const entries = Array.from({ length: 50 }, (_, i): [string, string] => [`batch-${i}`, `b${i}`]);
    await writer.mset(entries);
    for (const [key, value] of entries) await cluster.expectOnChain(key, value);
    // Reads come from the tails.
    expect(await writer.getString('ack-1')).toBe('v1');
    const [deleted, kept] = await writer.mget(['ack-0', 'ack-1']);
    expect(deleted).toBeNull();
    expect(new TextDecoder().decode(kept!)).toBe('v1');
  });

  it('a read at a non-tail and a write at a non-head are refused, naming the tail or the head', {
    timeout: 60_000,
  }, async () => {
    const cluster = await ReplicatedCluster.start(engine);
    await client(cluster).set('fenced', 'x');
    const [head, middle, tail] = cluster.chainOf('fenced') as [string, string, string];
    const epoch = cluster.balancer.membership.topology.epoch;
    const key = text.encode('fenced');
    // A direct client (a request with the epoch it routed on): MOVED to the right member.
    for (const member of [head, middle]) {
      const moved = await (await cluster.direct(member)).request({ op: Op.GET, key, epoch });
      expect(moved).toMatchObject({ op: Op.MOVED, nodeId: tail, port: cluster.nodes.get(tail)!.ready.port });
    }
    for (const member of [middle, tail]) {
      const moved = await (await cluster.direct(member)).request({
        op: Op.SET,
        key,
        value: text.encode('y'),
        epoch,
      });
      expect(moved).toMatchObject({ op: Op.MOVED, nodeId: head });
      const rmw = await (await cluster.direct(member)).request({ op: Op.INCRBY, key, delta: 1n, epoch });
      expect(rmw).toMatchObject({ op: Op.MOVED, nodeId: head });
    }
    // Without an epoch (a client of the node itself): NOT_OWNER naming the member.
    const read = await attempt(await cluster.direct(head), { op: Op.GET, key });
    expect(read).toBeInstanceOf(DstoreError);
    expect((read as DstoreError).code).toBe(ErrorCode.NOT_OWNER);
    expect((read as DstoreError).message).toContain(`owned by ${tail}`);
    const write = await refusal((await cluster.direct(tail)).request({ op: Op.DEL, key }));
    expect(write.code).toBe(ErrorCode.NOT_OWNER);
    expect(write.message).toContain(`owned by ${head}`);
    // The right members serve them.
    const value = (await (await cluster.direct(tail)).request({ op: Op.GET, key, epoch })) as Response;
    expect(value).toMatchObject({ op: Op.VALUE, value: text.encode('x') });
    const set = await (await cluster.direct(head)).request({
      op: Op.SET,
      key,
      value: text.encode('z'),
      epoch,
    });
    expect(set.op).toBe(Op.OK);
    await cluster.expectOnChain('fenced', 'z');
    // And the refusals changed nothing.
    expect(await client(cluster).getString('fenced')).toBe('z');
  });

  it('a SIGSTOPped tail: writes of its chains fail typed within the deadline, others succeed', {
    timeout: 60_000,
  }, async () => {
    const cluster = await ReplicatedCluster.start(engine);
    const victim = 'node-3';
    const stalled = keyWhere(cluster, victim, FACTOR - 1, 'stalled');
    const free = keyWhere(cluster, victim, -1, 'free');
    const writer = client(cluster, 30_000);
    await writer.set(stalled, 'before');
    await writer.set(free, 'before');
    const node = cluster.nodes.get(victim)!;
    node.pause();
    try {
      // The client's deadline (30 s) is far beyond the replication deadline (2 s): the failure is
      // the head's, typed and indeterminate (the head executed it), not a hang.
      const failure = await refusal(writer.set(stalled, 'during'));
      expect([ErrorCode.TIMEOUT, ErrorCode.CONNECTION_CLOSED]).toContain(failure.code);
      expect(failure.notExecuted).toBe(false);
      await writer.set(free, 'during');
      expect(await writer.getString(free)).toBe('during');
    } finally {
      node.resume();
    }
    // Once the tail is back, its chains take writes again.
    await writer.set(stalled, 'after');
    await cluster.expectOnChain(stalled, 'after');
  });
});

describe.each([
  { engine: 'memory', routing: 'balancer' },
  { engine: 'lmdb', routing: 'direct' },
] as const)('linearizable with factor 3, no faults ($engine, $routing)', ({ engine, routing }) => {
  it('4 clients x 2 workers on few keys: the checker finds the history linearizable', {
    timeout: 90_000,
  }, async () => {
    const cluster = await ReplicatedCluster.start(engine);
    const clients: DstoreClient[] = [];
    for (let i = 0; i < 4; i++) {
      clients.push(
        routing === 'direct'
          ? await withMap(directClient(resources, cluster.port, { commandTimeout: 5000 }))
          : client(cluster),
      );
    }
    const recorder = new HistoryRecorder();
    const keys = Array.from({ length: 8 }, (_, i) => `lin-${i}`);
    const load = startWorkload({
      recorder,
      keys,
      workers: 8,
      maxOperations: 3000,
      durationMs: 8000,
      mix: { read: 5, write: 4, delete: 1 },
      execute: (operation, worker) => runOperation(clients[worker % clients.length]!, operation),
    });
    const stats = await load.done;
    const result = checkHistory(recorder.events, { timeLimitMs: 30_000 });
    if (result.verdict !== 'ok') console.log(formatCheckResult(result));
    expect(result.verdict).toBe('ok');
    expect(stats.ok).toBeGreaterThan(500);
    if (routing === 'direct') {
      for (const each of clients) expect(each.routingStats!.direct).toBeGreaterThan(0);
    }
    // Every key ends the same on its whole chain.
    for (const key of keys) {
      const value = await clients[0]!.getString(key);
      await cluster.expectOnChain(key, value);
    }
  });
});
