import { Op, toBytes } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import type { HealthView, RingView } from '../src/index.js';
import {
  attempt,
  connect,
  Resources,
  startBalancer,
  startFakeNode,
  waitFor,
  waitForNodesUp,
} from './helpers.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

async function getJson<T>(port: number, path: string): Promise<{ status: number; body: T }> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: response.status, body: (await response.json()) as T };
}

/** Parses Prometheus text into `name{labels}` -> value (comments skipped, every line checked). */
function parsePrometheus(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    expect(match, `bad sample line: ${line}`).not.toBeNull();
    samples.set(match![1]!, Number(match![2]));
  }
  return samples;
}

describe('admin HTTP', () => {
  it('/ring shows the nodes and an epoch that increments on join and leave', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1, hash: 'ketama' });
    const admin = balancer.address.adminPort;
    expect((await getJson<RingView>(admin, '/ring')).body).toEqual({
      epoch: 0,
      map: {
        epoch: 0,
        cluster: balancer.membership.clusterMap.cluster,
        generation: balancer.membership.clusterMap.generation,
        store: 'memory',
        location: 'memory',
        coordinator: `${balancer.id}@127.0.0.1:${balancer.address.port}`,
        role: 'coordinator',
        ringEpoch: 0,
        updatedAt: balancer.membership.clusterMap.updatedAt,
        transition: null,
        removed: [],
      },
      algorithm: 'ketama',
      hashTag: '{}',
      nodes: [],
      replication: {
        factor: 1,
        active: false,
        underReplicatedRanges: 0,
        chains: [],
        sync: null,
        syncKeysTotal: 0,
        syncBytesTotal: 0,
      },
      migration: {
        active: false,
        epoch: -1,
        pendingRanges: 0,
        totalRanges: 0,
        keysMoved: 0,
        keysPerSecond: 0,
        keysMovedTotal: 0,
        queuedChanges: 0,
        stalled: null,
      },
      refusedJoins: [],
    });
    const first = await startFakeNode(resources, 'fake-1');
    await first.register(balancer.address.port);
    const second = await startFakeNode(resources, 'fake-2');
    await second.register(balancer.address.port);
    await waitForNodesUp(balancer, 2);
    const client = await connect(resources, balancer.address.port);
    for (let index = 0; index < 20; index++) {
      await client.request({ op: Op.SET, key: toBytes(`r${index}`), value: toBytes('v') });
    }
    await waitFor(
      () => balancer.membership.node('fake-1')?.keyCount === first.store.size,
      'heartbeat key count',
    );
    const ring = (await getJson<RingView>(admin, '/ring')).body;
    expect(ring.epoch).toBe(balancer.epoch);
    expect(ring.epoch).toBeGreaterThan(1);
    expect(ring.nodes.map((node) => node.id)).toEqual(['fake-1', 'fake-2']);
    expect(ring.nodes[0]).toMatchObject({
      address: `127.0.0.1:${first.port}`,
      status: 'up',
      weight: 1,
      keys: first.store.size,
    });
    const totalShare = ring.nodes.reduce((sum, node) => sum + node.share, 0);
    expect(totalShare).toBeCloseTo(1, 6);
    await second.leave();
    const after = (await getJson<RingView>(admin, '/ring')).body;
    expect(after.epoch).toBeGreaterThan(ring.epoch);
    expect(after.nodes.map((node) => node.id)).toEqual(['fake-1']);
    expect(after.nodes[0]!.share).toBe(1);
  });

  it('/health readiness flips when a node goes down', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1, heartbeatTimeoutMs: 300 });
    const admin = balancer.address.adminPort;
    const empty = await getJson<HealthView>(admin, '/health');
    expect(empty).toEqual({
      status: 200,
      body: { status: 'ok', ready: false, nodes: 0, nodesUp: 0, epoch: 0 },
    });
    expect((await getJson<HealthView>(admin, '/health/ready')).status).toBe(503);
    const node = await startFakeNode(resources, 'fake-1');
    await node.register(balancer.address.port);
    await waitForNodesUp(balancer, 1);
    expect(await getJson<HealthView>(admin, '/health/ready')).toEqual({
      status: 200,
      body: { status: 'ok', ready: true, nodes: 1, nodesUp: 1, epoch: 1 },
    });
    node.stopHeartbeats();
    await waitFor(
      async () => (await getJson<HealthView>(admin, '/health')).body.ready === false,
      'not ready',
    );
    const down = await getJson<HealthView>(admin, '/health/ready');
    expect(down).toEqual({
      status: 503,
      body: { status: 'ok', ready: false, nodes: 1, nodesUp: 0, epoch: 1 },
    });
    const ring = (await getJson<RingView>(admin, '/ring')).body;
    expect(ring.nodes[0]!.status).toBe('down');
    expect((await fetch(`http://127.0.0.1:${admin}/nope`)).status).toBe(404);
  });

  it('/metrics is Prometheus text with the request counts that were made', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    const node = await startFakeNode(resources, 'fake-1');
    await node.register(balancer.address.port);
    await waitForNodesUp(balancer, 1);
    const client = await connect(resources, balancer.address.port);
    for (let index = 0; index < 7; index++) {
      await client.request({ op: Op.SET, key: toBytes(`m${index}`), value: toBytes('v') });
    }
    for (let index = 0; index < 5; index++) await client.request({ op: Op.GET, key: toBytes(`m${index}`) });
    await client.request({ op: Op.MGET, keys: [toBytes('m1'), toBytes('m2')] });
    await client.request({ op: Op.PING });
    // Three errors: membership requests from a client connection are refused.
    for (let index = 0; index < 3; index++) await attempt(client, { op: Op.LEAVE, nodeId: 'fake-1' });
    const response = await fetch(`http://127.0.0.1:${balancer.address.adminPort}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/plain');
    const samples = parsePrometheus(await response.text());
    expect(samples.get('dstore_balancer_requests_total{op="set",result="ok"}')).toBe(7);
    expect(samples.get('dstore_balancer_requests_total{op="get",result="ok"}')).toBe(5);
    expect(samples.get('dstore_balancer_requests_total{op="mget",result="ok"}')).toBe(1);
    expect(samples.get('dstore_balancer_requests_total{op="ping",result="ok"}')).toBe(1);
    expect(samples.get('dstore_balancer_requests_total{op="leave",result="error"}')).toBe(3);
    expect(samples.get('dstore_balancer_errors_total{code="NO_PERMISSION"}')).toBe(3);
    expect(samples.get('dstore_balancer_request_duration_seconds_count{op="set"}')).toBe(7);
    expect(samples.get('dstore_balancer_request_duration_seconds_bucket{le="+Inf",op="get"}')).toBe(5);
    expect(samples.get('dstore_balancer_ring_epoch')).toBe(1);
    expect(samples.get('dstore_balancer_node_up{node="fake-1"}')).toBe(1);
    expect(samples.get('dstore_balancer_node_in_flight{node="fake-1"}')).toBe(0);
    expect(samples.has('process_cpu_user_seconds_total')).toBe(true);
  });
});
