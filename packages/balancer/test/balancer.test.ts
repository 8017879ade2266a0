import { HashRing } from '@dstore/hashring';
import { bytesToString, DstoreError, ErrorCode, handshake, Op, PeerLink, toBytes } from '@dstore/protocol';
import type { FakeServer } from '@dstore/protocol/testing';
import { afterEach, describe, expect, it } from 'vitest';
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

async function clusterOfFakes(count: number, options: Parameters<typeof startBalancer>[1] = {}) {
  const nodes: FakeServer[] = [];
  for (let index = 1; index <= count; index++) nodes.push(await startFakeNode(resources, `fake-${index}`));
  const balancer = await startBalancer(resources, { replicationFactor: 1, ...options });
  for (const node of nodes) await node.register(balancer.address.port);
  await waitForNodesUp(balancer, count);
  return { balancer, nodes };
}

describe('routing with fake nodes', () => {
  it('forwards each key to its owner and relays the answer under the client id', async () => {
    const { balancer, nodes } = await clusterOfFakes(3);
    const client = await connect(resources, balancer.address.port);
    const ring = HashRing.from(nodes.map((node) => ({ id: node.id })));
    const keys = Array.from({ length: 300 }, (_, index) => `key-${index}`);
    await Promise.all(
      keys.map((key) => client.request({ op: Op.SET, key: toBytes(key), value: toBytes(`v:${key}`) })),
    );
    for (const key of keys) {
      const owner = ring.get(key);
      for (const node of nodes) expect(node.store.has(key)).toBe(node.id === owner);
    }
    const answers = await Promise.all(keys.map((key) => client.request({ op: Op.GET, key: toBytes(key) })));
    answers.forEach((answer, index) => {
      expect(answer.op).toBe(Op.VALUE);
      if (answer.op === Op.VALUE) expect(bytesToString(answer.value!)).toBe(`v:${keys[index]}`);
    });
    const deleted = await client.request({ op: Op.DEL, key: toBytes('key-1') });
    expect(deleted).toMatchObject({ op: Op.COUNT, count: 1 });
    const missing = await client.request({ op: Op.GET, key: toBytes('key-1') });
    expect(missing).toMatchObject({ op: Op.VALUE, value: null });
  });

  it('splits MGET and MSET per owner and reassembles MGET in order', async () => {
    const { balancer, nodes } = await clusterOfFakes(3);
    const client = await connect(resources, balancer.address.port);
    const entries = Array.from({ length: 200 }, (_, index) => ({
      key: toBytes(`m-${index}`),
      value: toBytes(`mv-${index}`),
    }));
    expect(await client.request({ op: Op.MSET, entries })).toMatchObject({ op: Op.OK });
    const touched = nodes.filter((node) => node.received.some((request) => request.op === Op.MSET));
    expect(touched.length).toBe(3);
    const keys = [toBytes('absent'), ...entries.map((entry) => entry.key).reverse()];
    const answer = await client.request({ op: Op.MGET, keys });
    expect(answer.op).toBe(Op.VALUES);
    if (answer.op !== Op.VALUES) return;
    expect(answer.values[0]).toBeNull();
    for (const [index, value] of answer.values.slice(1).entries()) {
      expect(bytesToString(value!)).toBe(`mv-${199 - index}`);
    }
    expect(await client.request({ op: Op.MGET, keys: [] })).toMatchObject({ op: Op.VALUES, values: [] });
    expect(await client.request({ op: Op.MSET, entries: [] })).toMatchObject({ op: Op.OK });
  });

  it('fails fast with UNAVAILABLE for a node that stopped heartbeating, never re-routing its keys', async () => {
    const { balancer, nodes } = await clusterOfFakes(3, { heartbeatTimeoutMs: 300 });
    const client = await connect(resources, balancer.address.port);
    const silent = nodes[0]!;
    silent.stopHeartbeats();
    await waitFor(() => balancer.membership.node(silent.id)?.up === false, 'node down');
    const ring = balancer.ring;
    expect(ring.has(silent.id)).toBe(true);
    const before = silent.received.length;
    const keys = Array.from({ length: 200 }, (_, index) => `k${index}`);
    const results = await Promise.all(keys.map((key) => attempt(client, { op: Op.GET, key: toBytes(key) })));
    results.forEach((result, index) => {
      if (ring.get(keys[index]!) === silent.id) {
        expect(result).toBeInstanceOf(DstoreError);
        expect((result as DstoreError).code).toBe(ErrorCode.UNAVAILABLE);
      } else {
        expect(result).toMatchObject({ op: Op.VALUE });
      }
    });
    expect(silent.received.length).toBe(before);
    // A batch touching the down node fails as a whole, before anything is sent.
    const mset = await attempt(client, {
      op: Op.MSET,
      entries: keys.map((key) => ({ key: toBytes(key), value: toBytes('x') })),
    });
    expect((mset as DstoreError).code).toBe(ErrorCode.UNAVAILABLE);
    for (const node of nodes) expect(node.received.some((request) => request.op === Op.MSET)).toBe(false);
  });

  it('answers TIMEOUT when a node does not answer in time', async () => {
    const { balancer, nodes } = await clusterOfFakes(1, { requestTimeoutMs: 100 });
    const client = await connect(resources, balancer.address.port);
    nodes[0]!.stalled = true;
    const result = await attempt(client, { op: Op.GET, key: toBytes('a') });
    expect((result as DstoreError).code).toBe(ErrorCode.TIMEOUT);
  });

  it('answers BUSY past the per-node in-flight bound', async () => {
    const { balancer, nodes } = await clusterOfFakes(1, { maxInFlightPerNode: 2, requestTimeoutMs: 300 });
    const client = await connect(resources, balancer.address.port);
    nodes[0]!.stalled = true;
    const results = await Promise.all(
      Array.from({ length: 5 }, () => attempt(client, { op: Op.GET, key: toBytes('a') })),
    );
    const codes = results.map((result) => (result as DstoreError).code).sort();
    expect(codes).toEqual(['BUSY', 'BUSY', 'BUSY', 'TIMEOUT', 'TIMEOUT']);
  });

  it('answers UNAVAILABLE when the ring is empty, and PING itself', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    const client = await connect(resources, balancer.address.port);
    expect(((await attempt(client, { op: Op.GET, key: toBytes('a') })) as DstoreError).code).toBe(
      ErrorCode.UNAVAILABLE,
    );
    expect(await client.request({ op: Op.PING })).toMatchObject({ op: Op.OK });
  });
});

describe('membership', () => {
  it('bumps the epoch on join, address change and leave, but not on an idempotent re-join', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    const node = await startFakeNode(resources, 'fake-1');
    const link = new PeerLink({ host: '127.0.0.1', port: balancer.address.port, role: 'node' });
    resources.add(() => link.close());
    link.start();
    await waitFor(() => link.isReady, 'link ready');
    expect(balancer.epoch).toBe(0);
    const join = { op: Op.JOIN, nodeId: 'fake-1', host: '127.0.0.1', port: node.port, weight: 1 } as const;
    await link.request(join);
    expect(balancer.epoch).toBe(1);
    await link.request(join);
    expect(balancer.epoch).toBe(1);
    await link.request({ ...join, weight: 2 });
    expect(balancer.epoch).toBe(2);
    expect(balancer.ring.nodes()).toEqual([{ id: 'fake-1', weight: 2 }]);
    await link.request({ op: Op.HEARTBEAT, nodeId: 'fake-1', keyCount: 42 });
    expect(balancer.membership.node('fake-1')?.keyCount).toBe(42);
    await link.request({ op: Op.LEAVE, nodeId: 'fake-1' });
    expect(balancer.epoch).toBe(3);
    expect(balancer.ring.size).toBe(0);
    await expect(link.request({ op: Op.HEARTBEAT, nodeId: 'fake-1', keyCount: 1 })).rejects.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
    });
  });

  it('refuses membership requests from connections that did not HELLO as a node', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    const client = await connect(resources, balancer.address.port);
    const result = await attempt(client, { op: Op.JOIN, nodeId: 'x', host: '127.0.0.1', port: 1, weight: 1 });
    expect((result as DstoreError).code).toBe(ErrorCode.NO_PERMISSION);
    expect(balancer.ring.size).toBe(0);
  });

  it('routes to static nodes (id=host:port and bare host:port) without heartbeats', async () => {
    const named = await startFakeNode(resources, 'static-a');
    const bare = await startFakeNode(resources, 'whatever');
    const balancer = await startBalancer(resources, {
      replicationFactor: 1,
      nodes: [
        { id: 'static-a', host: '127.0.0.1', port: named.port },
        { host: '127.0.0.1', port: bare.port },
      ],
      heartbeatTimeoutMs: 100,
      hash: 'ketama',
    });
    expect(balancer.epoch).toBe(1);
    await waitForNodesUp(balancer, 2);
    const ids = balancer.ring
      .nodes()
      .map((node) => node.id)
      .sort();
    expect(ids).toEqual([`127.0.0.1:${bare.port}`, 'static-a'].sort());
    const client = await connect(resources, balancer.address.port);
    const ring = HashRing.from(
      ids.map((id) => ({ id })),
      { algorithm: 'ketama' },
    );
    for (let index = 0; index < 50; index++) {
      await client.request({ op: Op.SET, key: toBytes(`s${index}`), value: toBytes('v') });
      const owner = ring.get(`s${index}`) === 'static-a' ? named : bare;
      expect(owner.store.has(`s${index}`)).toBe(true);
    }
  });

  it('keeps a static node down when another id answers at its address', async () => {
    const impostor = await startFakeNode(resources, 'impostor');
    const balancer = await startBalancer(resources, {
      replicationFactor: 1,
      nodes: [{ id: 'real', host: '127.0.0.1', port: impostor.port }],
    });
    await waitFor(() => balancer.membership.node('real')?.link.isReady === true, 'link ready');
    expect(balancer.membership.node('real')?.up).toBe(false);
  });
});

describe('HELLO, token and STATS', () => {
  it('answers HELLO as the balancer and requires the token when one is set', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1, token: 's3cret', id: 'bal-1' });
    const client = await connect(resources, balancer.address.port);
    expect(((await attempt(client, { op: Op.PING })) as DstoreError).code).toBe(ErrorCode.UNAUTHORIZED);
    const wrong = await connect(resources, balancer.address.port);
    const refused = await handshake(wrong, 'client', {
      credentials: { kind: 'user', user: 'default', password: 'nope' },
    }).catch((error: unknown) => error);
    expect((refused as DstoreError).code).toBe(ErrorCode.UNAUTHORIZED);
    const hello = await handshake(client, 'client', {
      credentials: { kind: 'user', user: 'default', password: 's3cret' },
    });
    expect(hello).toMatchObject({ op: Op.HELLO_OK, role: 'balancer', serverId: 'bal-1' });
    expect(await client.request({ op: Op.PING })).toMatchObject({ op: Op.OK });
  });

  it('merges every node STATS under node.<id>. and marks unreachable nodes down', async () => {
    const { balancer, nodes } = await clusterOfFakes(2, { heartbeatTimeoutMs: 300 });
    const client = await connect(resources, balancer.address.port);
    await client.request({ op: Op.SET, key: toBytes('a'), value: toBytes('1') });
    nodes[1]!.stopHeartbeats();
    await waitFor(() => balancer.membership.node('fake-2')?.up === false, 'fake-2 down');
    const answer = await client.request({ op: Op.STATS });
    expect(answer.op).toBe(Op.STATS_RESULT);
    if (answer.op !== Op.STATS_RESULT) return;
    expect(answer.stats).toMatchObject({
      role: 'balancer',
      epoch: balancer.epoch,
      nodes: 2,
      'nodes.up': 1,
      'node.fake-1.status': 'up',
      'node.fake-1.latency.p99_us': 7,
      'node.fake-2.status': 'down',
    });
    expect(answer.stats['node.fake-2.keys']).toBeUndefined();
    expect(Number(answer.stats.requests)).toBeGreaterThan(0);
  });
});
