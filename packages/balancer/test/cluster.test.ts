/**
 * End-to-end routing and failure tests: an in-process balancer in front of REAL storage nodes
 * (the built dstore-node CLI as child processes, memory engine, registering with --join).
 */
import { HashRing } from '@dstore/hashring';
import {
  bytesToString,
  type Connection,
  DstoreError,
  ErrorCode,
  Op,
  type Response,
  toBytes,
} from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import type { Balancer } from '../src/index.js';
import {
  attempt,
  connect,
  type NodeReady,
  Resources,
  type Spawned,
  spawnNode,
  startBalancer,
  waitFor,
  waitForNodesUp,
} from './helpers.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

const NODE_IDS = ['node-1', 'node-2', 'node-3'];

async function cluster(options: Parameters<typeof startBalancer>[1] = {}) {
  const balancer = await startBalancer(resources, { replicationFactor: 1, ...options });
  const nodes = new Map<string, Spawned<NodeReady>>();
  await Promise.all(
    NODE_IDS.map(async (id) => nodes.set(id, await spawnNode(resources, id, balancer.address.port))),
  );
  await waitForNodesUp(balancer, NODE_IDS.length);
  const client = await connect(resources, balancer.address.port);
  return { balancer, nodes, client };
}

const valueFor = (key: string): string => `value-of-${key}`;

/** Runs `task` over `items` with at most `window` in flight. */
async function inWindows<T, R>(
  items: readonly T[],
  window: number,
  task: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = [];
  for (let start = 0; start < items.length; start += window) {
    results.push(...(await Promise.all(items.slice(start, start + window).map(task))));
  }
  return results;
}

async function setAll(client: Connection, keys: readonly string[]): Promise<void> {
  await inWindows(keys, 500, (key) =>
    client.request({ op: Op.SET, key: toBytes(key), value: toBytes(valueFor(key)) }),
  );
}

function expectValue(result: Response | DstoreError, key: string): void {
  expect(result).not.toBeInstanceOf(DstoreError);
  if (result instanceof DstoreError) return;
  expect(result.op).toBe(Op.VALUE);
  if (result.op !== Op.VALUE) return;
  expect(result.value).not.toBeNull();
  expect(bytesToString(result.value!)).toBe(valueFor(key));
}

function ownersOf(balancer: Balancer, keys: readonly string[]): Map<string, string> {
  return new Map(keys.map((key) => [key, balancer.ring.get(key)]));
}

describe('routing to real nodes', () => {
  it('puts 10,000 keys exactly where the ring says, and each node holds only its own', async () => {
    const { balancer, nodes, client } = await cluster();
    const keys = Array.from({ length: 10_000 }, (_, index) => `user:${index}`);
    await setAll(client, keys);
    const expected = HashRing.from(
      NODE_IDS.map((id) => ({ id })),
      { algorithm: 'vnode' },
    );
    const perNode = new Map<string, number>();
    for (const key of keys) {
      const owner = expected.get(key);
      expect(balancer.ring.get(key)).toBe(owner);
      perNode.set(owner, (perNode.get(owner) ?? 0) + 1);
    }
    for (const [id, node] of nodes) {
      const direct = await connect(resources, node.ready.port);
      const batches: string[][] = [];
      for (let start = 0; start < keys.length; start += 1000) batches.push(keys.slice(start, start + 1000));
      let held = 0;
      for (const batch of batches) {
        // A node refuses keys it does not own (NOT_OWNER), so ask it only for its own.
        const own = batch.filter((key) => expected.get(key) === id);
        if (own.length === 0) continue;
        const answer = await direct.request({ op: Op.MGET, keys: own.map((key) => toBytes(key)) });
        expect(answer.op).toBe(Op.VALUES);
        if (answer.op !== Op.VALUES) return;
        own.forEach((key, index) => {
          const value = answer.values[index];
          expect(value).not.toBeNull();
          expect(bytesToString(value!)).toBe(valueFor(key));
          held++;
        });
      }
      expect(held).toBe(perNode.get(id));
      const stats = await direct.request({ op: Op.STATS });
      if (stats.op === Op.STATS_RESULT) expect(stats.stats.keys).toBe(perNode.get(id));
    }
    // The split MGET through the balancer returns every value in request order.
    const sample = keys.filter((_, index) => index % 17 === 0).slice(0, 500);
    const answer = await client.request({ op: Op.MGET, keys: sample.map((key) => toBytes(key)) });
    if (answer.op !== Op.VALUES) throw new Error(`unexpected op ${answer.op}`);
    for (const [index, key] of sample.entries()) {
      expect(bytesToString(answer.values[index]!)).toBe(valueFor(key));
    }
  });
});

describe('node failures', () => {
  it('fails a killed node fast with UNAVAILABLE, keeps the others error-free, and serves it again after restart', async () => {
    const { balancer, nodes, client } = await cluster();
    const keys = Array.from({ length: 600 }, (_, index) => `k:${index}`);
    await setAll(client, keys);
    const owners = ownersOf(balancer, keys);
    const victim = nodes.get('node-2')!;
    victim.child.kill('SIGKILL');
    await victim.exited;

    // Right after the kill: the victim's keys fail (UNAVAILABLE, or CONNECTION_CLOSED for a request
    // already on the wire), every other key is answered correctly.
    const immediate = await Promise.all(
      keys.map((key) => attempt(client, { op: Op.GET, key: toBytes(key) })),
    );
    immediate.forEach((result, index) => {
      const key = keys[index]!;
      if (owners.get(key) === 'node-2') expect(result).toBeInstanceOf(DstoreError);
      else expectValue(result, key);
    });

    await waitFor(() => balancer.membership.node('node-2')?.up === false, 'node-2 down');
    const epochBefore = balancer.epoch;
    const down = await Promise.all(keys.map((key) => attempt(client, { op: Op.GET, key: toBytes(key) })));
    let failed = 0;
    down.forEach((result, index) => {
      const key = keys[index]!;
      if (owners.get(key) === 'node-2') {
        expect((result as DstoreError).code).toBe(ErrorCode.UNAVAILABLE);
        failed++;
      } else {
        expectValue(result, key);
      }
    });
    expect(failed).toBeGreaterThan(0);
    // Never re-routed: the ring is unchanged while the node is down.
    expect(balancer.epoch).toBe(epochBefore);
    expect(balancer.ring.has('node-2')).toBe(true);

    // Restarted with the same id on a new port: it re-JOINs and its keys are served again.
    await spawnNode(resources, 'node-2', balancer.address.port);
    await waitForNodesUp(balancer, 3);
    expect(balancer.epoch).toBe(epochBefore + 1);
    const victimKeys = keys.filter((key) => owners.get(key) === 'node-2');
    await setAll(client, victimKeys);
    const after = await Promise.all(keys.map((key) => attempt(client, { op: Op.GET, key: toBytes(key) })));
    for (const [index, result] of after.entries()) expectValue(result, keys[index]!);
  });

  it('times out requests to a SIGSTOPped node, never answers the wrong request id, and recovers after SIGCONT', async () => {
    const { balancer, nodes, client } = await cluster({ requestTimeoutMs: 300, heartbeatTimeoutMs: 60_000 });
    const keys = Array.from({ length: 600 }, (_, index) => `p:${index}`);
    await setAll(client, keys);
    const owners = ownersOf(balancer, keys);
    const paused = nodes.get('node-3')!;
    paused.child.kill('SIGSTOP');
    resources.add(() => paused.child.kill('SIGCONT'));

    for (let round = 0; round < 2; round++) {
      const results = await Promise.all(
        keys.map((key) => attempt(client, { op: Op.GET, key: toBytes(key) })),
      );
      results.forEach((result, index) => {
        const key = keys[index]!;
        if (owners.get(key) === 'node-3') expect((result as DstoreError).code).toBe(ErrorCode.TIMEOUT);
        else expectValue(result, key);
      });
    }

    paused.child.kill('SIGCONT');
    const link = balancer.membership.node('node-3')!;
    // The stalled answers arrive late and are dropped, never handed to another request.
    await waitFor(() => (link.connection?.lateResponses ?? 0) > 0, 'late answers from node-3');
    for (let round = 0; round < 3; round++) {
      const results = await Promise.all(
        keys.map((key) => attempt(client, { op: Op.GET, key: toBytes(key) })),
      );
      for (const [index, result] of results.entries()) expectValue(result, keys[index]!);
    }
  });
});
