/**
 * The default replication factor (issue #14): a balancer started with no factor option creates a
 * map with factor 3, and a key's chain has min(3, ring members) members. Real dstore-node
 * processes (memory), an in-process balancer, nodes joining one by one through the real join
 * path (replication step 5's ring change): one node serves alone (under its lease), two keep two
 * copies and report nothing under-replicated (`/ring`, the metric, `dstore status` exit 0), and
 * the third node's join, under writes, makes every chain 3 long with every acknowledged key on
 * its 3 members.
 */
import { spawn } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HistoryRecorder, Nemesis } from '@dstore/checker';
import type { DstoreClient } from '@dstore/client';
import { DstoreError } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_REPLICATION_FACTOR } from '../src/index.js';
import { Resources, ringSettled, sleep, startBalancer, waitFor } from './helpers.js';
import {
  expectNothingLost,
  FACTOR,
  FAILOVER_TIMEOUTS,
  keysOf,
  metric,
  ReplicatedCluster,
  setWorkload,
} from './replicated-cluster.js';

const CLIENT_CLI = resolve(dirname(fileURLToPath(import.meta.url)), '../../client/dist/cli.js');

const resources = new Resources();
let nemesis = new Nemesis();
afterEach(async () => {
  await nemesis.cleanup();
  await resources.releaseAll();
});

/** `dstore status` against the balancer's admin port: its exit code and output (not blocking the balancer). */
function status(adminPort: number): Promise<{ code: number | null; stdout: string }> {
  const child = spawn(process.execPath, [CLIENT_CLI, 'status', '--admin', `127.0.0.1:${adminPort}`], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1' },
  });
  let stdout = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  resources.add(() => child.kill('SIGKILL'));
  return new Promise((done) => child.once('exit', (code) => done({ code, stdout })));
}

/** `set` again while it fails not executed (a chain frozen by a switch, a lease not granted yet). */
async function setUntilExecuted(client: DstoreClient, key: string, value: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await client.set(key, value);
      return;
    } catch (error) {
      if (!(error instanceof DstoreError) || error.notExecuted !== true || attempt >= 50) throw error;
      await sleep(100);
    }
  }
}

/** Waits until `count` nodes are in the ring and no ring change is in progress. */
async function ringOf(cluster: ReplicatedCluster, count: number): Promise<void> {
  const membership = cluster.balancer.membership;
  await waitFor(
    () => membership.clusterMap.ring.members.length === count && ringSettled(cluster.balancer),
    `${count} nodes in the ring, the change finished`,
    30_000,
  );
}

/** Every range's chain: its length, and how many are under-replicated (the balancer's chains). */
function chainShape(cluster: ReplicatedCluster): { lengths: Set<number>; under: number } {
  const chains = cluster.balancer.membership.chains;
  return {
    lengths: new Set(chains.map((chain) => chain.serving.length)),
    under: chains.filter((chain) => chain.underReplicated).length,
  };
}

describe('the default replication factor', () => {
  it('memory: a map created without a factor has 3; 1 and 2 nodes keep 1 and 2 copies, the third join makes chains of 3', {
    timeout: 90_000,
  }, async () => {
    nemesis = new Nemesis(new HistoryRecorder());
    // No replicationFactor: the default. Only the timeouts of the other replication tests.
    const balancer = await startBalancer(resources, { ...FAILOVER_TIMEOUTS });
    expect(DEFAULT_REPLICATION_FACTOR).toBe(FACTOR);
    expect(balancer.membership.clusterMap.replicationFactor).toBe(3);
    const cluster = new ReplicatedCluster(balancer, resources);
    const admin = balancer.address.adminPort;
    const client = cluster.client(8000);

    // One node: it serves every key alone (head and tail), under its lease.
    await cluster.startNode('node-1', 'memory', nemesis);
    await ringOf(cluster, 1);
    const alone = keysOf(cluster, 'alone', 50);
    for (const key of alone) await setUntilExecuted(client, key, `v-${key}`);
    expect(await client.getString(alone[0]!)).toBe(`v-${alone[0]}`);
    expect(chainShape(cluster)).toEqual({ lengths: new Set([1]), under: 0 });

    // Two nodes: two copies of every key, nothing under-replicated anywhere it is reported.
    await cluster.startNode('node-2', 'memory', nemesis);
    await ringOf(cluster, 2);
    expect(chainShape(cluster)).toEqual({ lengths: new Set([2]), under: 0 });
    const pair = keysOf(cluster, 'pair', 100);
    for (const key of pair) await setUntilExecuted(client, key, `v-${key}`);
    for (const key of [...alone, ...pair]) {
      expect(cluster.chainOf(key)).toHaveLength(2);
      await cluster.expectOnChain(key, `v-${key}`);
    }
    const view = (await (await fetch(`http://127.0.0.1:${admin}/ring`)).json()) as {
      replication: { factor: number; underReplicatedRanges: number };
    };
    expect(view.replication).toMatchObject({ factor: 3, underReplicatedRanges: 0 });
    expect(await metric(admin, 'dstore_balancer_under_replicated_ranges')).toBe(0);
    const healthy = await status(admin);
    expect(healthy.stdout).toContain('under-replicated ranges 0');
    expect(healthy.code).toBe(0);

    // The third node joins under writes: the ring change copies ranges to it, then chains of 3.
    const writes = setWorkload(client, keysOf(cluster, 'join', 3000), 2, 2);
    await sleep(200);
    await cluster.startNode('node-3', 'memory', nemesis);
    await ringOf(cluster, 3);
    const written = await writes.stop();
    expect(written.acknowledged.size).toBeGreaterThan(0);
    expect(chainShape(cluster)).toEqual({ lengths: new Set([3]), under: 0 });
    // Every acknowledged key (before and during the join) reads back and sits on its 3 members.
    for (const key of [...alone, ...pair]) written.acknowledged.set(key, `v-${key}`);
    for (const key of written.acknowledged.keys()) expect(cluster.chainOf(key)).toHaveLength(3);
    await expectNothingLost(cluster, cluster.client(8000), {
      acknowledged: written.acknowledged,
      attempted: [...alone, ...pair, ...written.attempted],
    });
    expect(await metric(admin, 'dstore_balancer_under_replicated_ranges')).toBe(0);
  });
});
