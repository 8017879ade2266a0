/**
 * Replication step 3 with several balancers on etcd: nodes registered at a follower get their
 * leases from the coordinator (the follower relays their heartbeats), and the coordinator detects
 * a node that stops, though it never heard from it directly. A real etcd, two in-process
 * balancers, three dstore-node processes.
 */
import { type ManagedProcess, Nemesis } from '@dstore/checker';
import { createClient } from '@dstore/client';
import { ErrorCode } from '@dstore/protocol';
import { Etcd3 } from 'etcd3';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Balancer, BalancerOptions } from '../src/index.js';
import { startEtcd, type TestEtcd } from './etcd.js';
import { NODE_CLI, type NodeReady, Resources, sleep, startBalancer, waitFor } from './helpers.js';

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

let clusters = 0;

function onEtcd(prefix = `/dstore-failover-test/${process.pid}`): BalancerOptions {
  return {
    etcd: { endpoints: [etcd!.endpoint], prefix, leaseTtlSeconds: 2 },
    replicationFactor: 3,
    heartbeatTimeoutMs: 1000,
    leaseMs: 1000,
    failureTimeoutMs: 3000,
  };
}

function stateOf(balancer: Balancer, id: string): string | undefined {
  return balancer.membership.clusterMap.members.find((member) => member.id === id)?.replicaState;
}

/** Three dstore-node processes joined at `balancer`, up there when this resolves. */
async function startThreeNodes(balancer: Balancer): Promise<ManagedProcess<NodeReady>[]> {
  const nodes: ManagedProcess<NodeReady>[] = [];
  for (const id of ['node-1', 'node-2', 'node-3']) {
    const args = ['--port', '0', '--id', id, '--join', `127.0.0.1:${balancer.address.port}`];
    args.push('--heartbeat-interval', '200', '--log-level', 'error');
    const node = nemesis.process<NodeReady>({ name: id, script: NODE_CLI, args });
    nodes.push(node);
    await node.start();
  }
  await waitFor(() => [...balancer.membership.nodes].filter((node) => node.up).length === 3, '3 nodes up');
  return nodes;
}

describe('failover with two balancers on etcd', () => {
  it('nodes registered at a follower hold leases from the coordinator, which marks a stopped one failed', {
    timeout: 60_000,
  }, async () => {
    const coordinator = await startBalancer(resources, onEtcd());
    await waitFor(() => coordinator.membership.isCoordinator, 'the first balancer coordinates');
    const follower = await startBalancer(resources, onEtcd());
    expect(follower.membership.isCoordinator).toBe(false);
    const nodes = await startThreeNodes(follower);
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

describe('the coordinator stopping gracefully (two balancers on etcd)', () => {
  it('hands its role over before it drains: the other balancer coordinates while a request still holds the stop', {
    timeout: 90_000,
  }, async () => {
    const prefix = `/dstore-resign-test/${process.pid}-${++clusters}`;
    // A stop waits for the requests in flight (here: up to a minute).
    const coordinator = await startBalancer(resources, {
      ...onEtcd(prefix),
      requestTimeoutMs: 60_000,
      shutdownGraceMs: 60_000,
    });
    await waitFor(() => coordinator.membership.isCoordinator, 'the first balancer coordinates');
    const follower = await startBalancer(resources, onEtcd(prefix));
    const nodes = await startThreeNodes(coordinator);
    const client = createClient({
      host: '127.0.0.1',
      port: coordinator.address.port,
      commandTimeout: 60_000,
      maxRetriesPerRequest: 0,
    });
    resources.add(() => client.disconnect());
    // The joins' ring changes over (a write then is refused for a moment, and this client does not retry).
    await waitFor(() => coordinator.membership.clusterMap.transition === null, 'the ring settled');
    await client.set('k', 'v');
    // A read the nodes cannot answer while paused: it holds the coordinator's drain.
    for (const node of nodes) node.pause();
    const read = client.getString('k').then(
      (value) => value,
      (error: unknown) => error,
    );
    await waitFor(
      () => [...coordinator.membership.nodes].some((node) => node.inFlight > 0),
      'the read in flight',
    );
    // Other requests (STATS) may be in flight too: give the read's frame its turn at the balancer.
    await sleep(300);
    let stopped = false;
    const stopping = coordinator.stop().then(() => {
      stopped = true;
    });
    // Before: the coordinator kept the role through its drain, and the nodes' leases ran out.
    await waitFor(() => follower.membership.isCoordinator, 'the other balancer coordinating', 20_000);
    expect(stopped).toBe(false);
    // Answered once the nodes run again (the value, or UNAVAILABLE if a lease ran out meanwhile),
    // and the stop completes.
    for (const node of nodes) node.resume();
    const answer = await read;
    if (answer !== 'v') expect(answer).toMatchObject({ code: ErrorCode.UNAVAILABLE });
    await stopping;
  });
});

describe('the store losing the cluster map (etcd emptied under a running balancer)', () => {
  it('refuses to create a new, empty cluster over the live one: the map it follows stays', {
    timeout: 60_000,
  }, async () => {
    const prefix = `/dstore-lost-map-test/${process.pid}-${++clusters}`;
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(line) });
    const balancer = await startBalancer(resources, { ...onEtcd(prefix), logger });
    await waitFor(() => balancer.membership.isCoordinator, 'the balancer coordinates');
    const node = nemesis.process<NodeReady>({
      name: 'node-1',
      script: NODE_CLI,
      args: [
        '--port',
        '0',
        '--id',
        'node-1',
        '--join',
        `127.0.0.1:${balancer.address.port}`,
        '--log-level',
        'error',
      ],
    });
    await node.start();
    await waitFor(() => [...balancer.membership.nodes].some((member) => member.up), 'the node up');
    const { cluster, epoch } = balancer.membership.clusterMap;
    expect(epoch).toBeGreaterThan(0);
    // What an etcd restarted on an empty data dir looks like: every key gone, the election's too.
    const admin = new Etcd3({ hosts: etcd!.endpoint });
    resources.add(() => admin.close());
    await admin.delete().prefix(prefix);
    // It loses the role, campaigns again and finds no map: it says so, and creates none (before:
    // "cluster map created", a new cluster id at epoch 0 routing on an empty ring).
    await waitFor(
      () => lines.some((line) => line.includes('is gone from the store')),
      'the loss reported',
      20_000,
    );
    expect(lines.filter((line) => line.includes('cluster map created')).length).toBe(1);
    expect(balancer.membership.clusterMap.cluster).toBe(cluster);
    expect(balancer.membership.clusterMap.epoch).toBe(epoch);
    expect(await admin.get(`${prefix}/map`).string()).toBeNull();
  });
});
