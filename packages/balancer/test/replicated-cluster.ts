/**
 * A replicated cluster for the replication tests: five real dstore-node processes under a
 * {@link Nemesis}, an in-process balancer with replication factor 3, and the ways the tests look
 * at it: each member's copy of a key read straight from the node with PULL (a peer's read of its
 * replica, which bypasses the tail-only rule for clients), client and peer connections to a node.
 */

import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  checkHistory,
  formatCheckResult,
  type HistoryRecorder,
  type ManagedProcess,
  Nemesis,
  type OperationMix,
  type RunningWorkload,
  runRegisterOperation,
  startWorkload,
} from '@dstore/checker';
import { createClient, type DstoreClient } from '@dstore/client';
import type { Chain, HashRing, ReplicaState } from '@dstore/hashring';
import { Connection, connectSocket, handshake, Op } from '@dstore/protocol';
import { expect } from 'vitest';
import type { Balancer, BalancerOptions } from '../src/index.js';
import { directClient, withMap } from './direct-client.js';
import {
  NODE_CLI,
  type NodeReady,
  type Resources,
  ringSettled,
  sleep,
  startBalancer,
  temporaryDir,
  waitFor,
  waitForNodesUp,
} from './helpers.js';

export type Engine = 'memory' | 'lmdb';
export const FACTOR = 3;
/**
 * Balancer timeouts of the failover and recovery tests: nodes heartbeat every 200 ms, the lease is
 * 1500 ms (1000 ms ran out now and then on CI's loaded 2 cores, two test files at once, right
 * after the cluster formed) and the failure timeout 3000 ms (see replication-failover.test.ts).
 */
export const FAILOVER_TIMEOUTS = { heartbeatTimeoutMs: 1000, leaseMs: 1500, failureTimeoutMs: 3000 } as const;
/** The register keys of the checker's workload. */
export const REGISTER_KEYS = Array.from({ length: 12 }, (_, i) => `lin-${i}`);
export const NODES = ['node-1', 'node-2', 'node-3', 'node-4', 'node-5'];
const text = new TextEncoder();

/** Options of {@link ReplicatedCluster.start}. */
export interface ReplicatedClusterOptions {
  readonly engine: Engine;
  readonly resources: Resources;
  readonly nemesis: Nemesis;
  /** Extra balancer options (failure timeout, lease). */
  readonly balancer?: BalancerOptions;
  /** The members started (default {@link NODES}); more join with {@link ReplicatedCluster.startNode}. */
  readonly nodes?: readonly string[];
  /** Extra dstore-node arguments of every member. */
  readonly nodeArgs?: readonly string[];
  /** Extra dstore-node arguments of one member, after {@link nodeArgs} (a later option wins). */
  readonly argsOf?: (id: string) => readonly string[];
}

/** Five nodes (or those given), factor 3, joined while empty. */
export class ReplicatedCluster {
  readonly nodes = new Map<string, ManagedProcess<NodeReady>>();
  private nodeArgs: readonly string[] = [];
  private argsOf: (id: string) => readonly string[] = () => [];
  private readonly peers = new Map<string, Connection>();

  constructor(
    readonly balancer: Balancer,
    private readonly resources: Resources,
  ) {}

  static async start(options: ReplicatedClusterOptions): Promise<ReplicatedCluster> {
    const { resources, nemesis, engine } = options;
    const balancer = await startBalancer(resources, {
      replicationFactor: FACTOR,
      ...options.balancer,
    });
    const cluster = new ReplicatedCluster(balancer, resources);
    const ids = options.nodes ?? NODES;
    cluster.nodeArgs = options.nodeArgs ?? [];
    if (options.argsOf !== undefined) cluster.argsOf = options.argsOf;
    // Started at once: their joins coalesce into one or two ring changes instead of one each.
    await Promise.all(ids.map((id) => cluster.startNode(id, engine, nemesis)));
    // Each join with factor 3 is a ring change (copies, switch, install, purge): on a loaded
    // machine forming 5 nodes takes longer than a plain join.
    await waitForNodesUp(balancer, ids.length, 45_000);
    // Each join is a ring change (replication step 5): the last one's switch briefly refuses
    // writes of its chains. Tests start on a settled ring.
    await waitFor(
      () => balancer.membership.clusterMap.transition === null && ringSettled(balancer),
      'the joins settled',
      30_000,
    );
    return cluster;
  }

  /** Starts member `id` (a dstore-node process under `nemesis`) joining the balancer. */
  async startNode(id: string, engine: Engine, nemesis: Nemesis): Promise<void> {
    const args = ['--port', '0', '--id', id, '--join', `127.0.0.1:${this.balancer.address.port}`];
    const level = process.env.DSTORE_DIAG === '1' ? 'info' : 'error';
    args.push('--heartbeat-interval', '200', '--log-level', level, ...this.nodeArgs, ...this.argsOf(id));
    if (engine === 'lmdb')
      args.push('--engine', 'lmdb', '--data-dir', temporaryDir(this.resources, `dstore-chain-${id}-`));
    const node = nemesis.process<NodeReady>({ name: id, script: NODE_CLI, args });
    this.nodes.set(id, node);
    await node.start();
  }

  /**
   * SIGKILLs member `id` and starts it again (same data dir with lmdb) with `extra` arguments after
   * its own: a later option wins (a larger `--map-size`, say).
   */
  async restartNode(id: string, extra: readonly string[], nemesis: Nemesis): Promise<void> {
    const previous = this.nodes.get(id);
    if (previous === undefined) throw new Error(`no member ${id}`);
    await previous.kill('SIGKILL');
    const args = previous.options.args;
    const node = nemesis.process<NodeReady>({
      ...previous.options,
      args: [...(typeof args === 'function' ? args() : args), ...extra],
    });
    this.nodes.set(id, node);
    await node.start();
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

  /** Member `id`'s STATS, asked on its peer connection. */
  async stats(id: string): Promise<Readonly<Record<string, number | string>>> {
    const answer = await (await this.peer(id)).request({ op: Op.STATS });
    if (answer.op !== Op.STATS_RESULT) throw new Error(`STATS answered op ${answer.op}`);
    return answer.stats;
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

  /** Every node's copy of `key` (`id=value@version`, or why it could not answer), for failure messages. */
  async describeCopies(key: string): Promise<string> {
    const copies = await Promise.all(
      [...this.nodes.keys()].map(async (id) => {
        try {
          const copy = await this.copyAt(id, key);
          return `${id}=${copy.value ?? 'null'}@${copy.version}`;
        } catch (error) {
          return `${id}: ${error instanceof Error ? error.message : String(error)}`;
        }
      }),
    );
    return `chain ${this.chainOf(key).join(',')}; ${copies.join(' ')}`;
  }

  /**
   * Every serving member of `key`'s chain holds `value` (null: none of them has the key), at one
   * version; `value` undefined: whatever the tail holds.
   */
  async expectOnChain(key: string, value?: string | null): Promise<void> {
    const copies = await Promise.all(this.chainOf(key).map((id) => this.copyAt(id, key)));
    const expected = value === undefined ? copies[copies.length - 1]!.value : value;
    // Every member's copy in the message: which one differs is what a rare failure must tell.
    const seen = this.chainOf(key)
      .map((id, i) => `${id}=${copies[i]!.value ?? 'null'}@${copies[i]!.version}`)
      .join(' ');
    for (const copy of copies) expect(copy.value, `${key} on ${seen}`).toBe(expected);
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

/** APPENDs too: a replicated read-modify-write lost, doubled or reordered at a failover shows in what is read. */
const MIX: OperationMix = { read: 4, write: 4, delete: 1, append: 1, appendRead: 1 };

/** `/metrics` value of an unlabelled metric of an in-process balancer. */
export async function metric(adminPort: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const line = text.split('\n').find((row) => row.startsWith(`${name} `));
  if (line === undefined) throw new Error(`no metric ${name}`);
  return Number(line.slice(name.length + 1));
}

/** 4 clients (through the balancer, or routing directly); the deadline covers one failover. */
export async function clientsOf(
  cluster: ReplicatedCluster,
  resources: Resources,
  routing: 'balancer' | 'direct',
): Promise<DstoreClient[]> {
  const clients: DstoreClient[] = [];
  for (let i = 0; i < 4; i++) {
    clients.push(
      routing === 'direct'
        ? await withMap(directClient(resources, cluster.port, { commandTimeout: 8000 }))
        : cluster.client(8000),
    );
  }
  return clients;
}

/** What a {@link setWorkload} wrote: the acknowledged writes, and every key it tried. */
export interface SetOutcome {
  readonly acknowledged: Map<string, string>;
  readonly attempted: string[];
}

/**
 * Writers of distinct keys (`workers` at once, each write a new key from `keys`, `pauseMs` after each acknowledged one), recording which
 * writes were acknowledged: after the faults every acknowledged one must still be there (0
 * acknowledged writes lost), and the survivors must agree on every key tried (acknowledged or not).
 */
export function setWorkload(
  client: DstoreClient,
  keys: readonly string[],
  workers = 1,
  pauseMs = 0,
): { stop: () => Promise<SetOutcome> } {
  const acknowledged = new Map<string, string>();
  const attempted: string[] = [];
  let next = 0;
  let stopped = false;
  const worker = async (): Promise<void> => {
    while (!stopped && next < keys.length) {
      const key = keys[next++]!;
      attempted.push(key);
      try {
        await client.set(key, `v-${key}`);
        acknowledged.set(key, `v-${key}`);
        if (pauseMs > 0) await sleep(pauseMs);
      } catch {
        // Unacknowledged: its outcome is unknown, only the survivors' agreement is checked.
        await sleep(5);
      }
    }
  };
  const running = Promise.all(Array.from({ length: workers }, worker));
  return {
    async stop() {
      stopped = true;
      await running;
      return { acknowledged, attempted };
    },
  };
}

/** `count` keys named after `prefix` (all of them, or those whose chain puts `node` at `position`). */
export function keysOf(
  cluster: ReplicatedCluster,
  prefix: string,
  count: number,
  node?: string,
  position = 0,
): string[] {
  const keys: string[] = [];
  for (let i = 0; keys.length < count; i++) {
    const key = `${prefix}-${i}`;
    if (node === undefined || cluster.chainOf(key).indexOf(node) === position) keys.push(key);
  }
  return keys;
}

/**
 * Every acknowledged write reads back (from the tails) and sits on every surviving member, and the
 * survivors agree on every key tried (a write in flight at the fault is on all of them or none).
 */
export async function expectNothingLost(
  cluster: ReplicatedCluster,
  reader: DstoreClient,
  outcome: SetOutcome,
): Promise<void> {
  const { acknowledged, attempted } = outcome;
  const keys = [...acknowledged.keys()];
  for (let i = 0; i < keys.length; i += 200) {
    const part = keys.slice(i, i + 200);
    const values = await reader.mget(part);
    const read = values.map((value) =>
      value === null || value === undefined ? null : new TextDecoder().decode(value),
    );
    const lost = part.filter((key, j) => read[j] !== acknowledged.get(key));
    // Where each copy is tells a rare failure's cause: the message names every node's copy.
    const details = await Promise.all(
      lost.slice(0, 5).map(async (key) => `${key}: ${await cluster.describeCopies(key)}`),
    );
    part.forEach((key, j) => {
      expect(read[j], `${key} (${details.join('; ')})`).toBe(acknowledged.get(key));
    });
  }
  for (let i = 0; i < attempted.length; i += 50) {
    await Promise.all(
      attempted.slice(i, i + 50).map((key) => cluster.expectOnChain(key, acknowledged.get(key))),
    );
  }
}

/** The checker's register workload: 8 workers over `keys` on `clients`, for `durationMs` (or `maxOperations`). */
export function registerLoad(
  recorder: HistoryRecorder,
  clients: readonly DstoreClient[],
  keys: readonly string[],
  durationMs: number,
  maxOperations = 20_000,
): RunningWorkload {
  return startWorkload({
    recorder,
    keys,
    workers: 8,
    maxOperations,
    durationMs,
    mix: MIX,
    execute: (operation, worker) => runRegisterOperation(clients[worker % clients.length]!, operation),
  });
}

/** The whole run's history is linearizable. */
export function expectLinearizable(recorder: HistoryRecorder, cluster?: ReplicatedCluster): void {
  const result = checkHistory(recorder.events, { timeLimitMs: 30_000 });
  if (result.verdict !== 'ok') {
    // The whole history, for a failure seen once in many runs: the checker's summary names the
    // key, the file holds every event to replay it.
    // JSONL, as `pnpm --filter @dstore/checker check-history <file>` and explain-key read it.
    const file = join(tmpdir(), `dstore-history-${process.pid}-${Date.now()}.jsonl`);
    recorder.dump(file);
    console.log(`${formatCheckResult(result)}\nfull history: ${file}`);
    for (const [id, node] of cluster?.nodes ?? []) writeFileSync(`${file}.${id}.log`, node.stderr());
  }
  expect(result.verdict).toBe('ok');
}

export { Nemesis };
