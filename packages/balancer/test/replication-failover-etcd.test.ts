/**
 * Replication step 3 with several balancers on etcd: nodes registered at a follower get their
 * leases from the coordinator (the follower relays their heartbeats), and the coordinator detects
 * a node that stops, though it never heard from it directly. A real etcd, two in-process
 * balancers, three dstore-node processes.
 */
import { type ManagedProcess, Nemesis } from '@dstore/checker';
import { createClient } from '@dstore/client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Balancer, BalancerOptions } from '../src/index.js';
import { startEtcd, type TestEtcd } from './etcd.js';
import { NODE_CLI, type NodeReady, Resources, startBalancer, waitFor } from './helpers.js';

let etcd: TestEtcd | undefined;
const resources = new Resources();
const nemesis = new Nemesis();

beforeAll(async () => {
  etcd = await startEtcd();
});
afterEach(async () => {
  await nemesis.cleanup();
  await resources.releaseAll();
});
afterAll(async () => {
  await etcd?.stop();
});

function onEtcd(): BalancerOptions {
  return {
    etcd: { endpoints: [etcd!.endpoint], prefix: `/dstore-failover-test/${process.pid}`, leaseTtlSeconds: 2 },
    replicationFactor: 3,
    heartbeatTimeoutMs: 1000,
    leaseMs: 1000,
    failureTimeoutMs: 3000,
  };
}

function stateOf(balancer: Balancer, id: string): string | undefined {
  return balancer.membership.clusterMap.members.find((member) => member.id === id)?.replicaState;
}

describe('failover with two balancers on etcd', () => {
  it('nodes registered at a follower hold leases from the coordinator, which marks a stopped one failed', {
    timeout: 60_000,
  }, async () => {
    const coordinator = await startBalancer(resources, onEtcd());
    await waitFor(() => coordinator.membership.isCoordinator, 'the first balancer coordinates');
    const follower = await startBalancer(resources, onEtcd());
    expect(follower.membership.isCoordinator).toBe(false);
    const nodes: ManagedProcess<NodeReady>[] = [];
    for (const id of ['node-1', 'node-2', 'node-3']) {
      const args = ['--port', '0', '--id', id, '--join', `127.0.0.1:${follower.address.port}`];
      args.push('--heartbeat-interval', '200', '--log-level', 'error');
      const node = nemesis.process<NodeReady>({ name: id, script: NODE_CLI, args });
      nodes.push(node);
      await node.start();
    }
    await waitFor(
      () => [...follower.membership.nodes].filter((node) => node.up).length === 3,
      '3 nodes up at the follower',
    );
    const client = createClient({ host: '127.0.0.1', port: follower.address.port, commandTimeout: 8000 });
    resources.add(() => client.disconnect());
    // Served: every node holds a lease, granted by the coordinator through the follower.
    await client.set('k', 'v');
    expect(await client.getString('k')).toBe('v');
    await nodes[1]!.kill();
    await waitFor(() => stateOf(coordinator, 'node-2') === 'failed', 'node-2 marked failed');
    expect(stateOf(coordinator, 'node-1')).toBe('up');
    expect(stateOf(coordinator, 'node-3')).toBe('up');
    await client.set('k', 'after');
    expect(await client.getString('k')).toBe('after');
  });
});
