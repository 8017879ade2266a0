/**
 * Key migration end to end: an in-process balancer in front of REAL storage nodes (the built
 * dstore-node CLI, memory engine). A 4th node joins while clients read: every key keeps its value.
 */
import { bytesToString, type Connection, Op, PeerLink, type Response, toBytes } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import type { Balancer } from '../src/index.js';
import {
  connect,
  Resources,
  ringSettled,
  spawnNode,
  startBalancer,
  waitFor,
  waitForNodesUp,
} from './helpers.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

const KEYS = 3000;
/** The admin token of the balancer whose nodes are removed by HTTP. */
const ADMIN_TOKEN = 'test-admin-token';
const keyName = (index: number): string => `mig-key-${index}`;
const valueName = (index: number): string => `value-${index}`;

function textOf(response: Response): string | null {
  if (response.op !== Op.VALUE) throw new Error(`expected VALUE, got op ${response.op}`);
  return response.value === null ? null : bytesToString(response.value);
}

async function nodeKeyCounts(client: Connection, ids: readonly string[]): Promise<Map<string, number>> {
  const answer = await client.request({ op: Op.STATS });
  if (answer.op !== Op.STATS_RESULT) throw new Error('expected STATS_RESULT');
  return new Map(ids.map((id) => [id, Number(answer.stats[`node.${id}.keys`])]));
}

async function readAll(client: Connection): Promise<string[]> {
  const wrong: string[] = [];
  for (let start = 0; start < KEYS; start += 100) {
    const reads = [];
    for (let index = start; index < Math.min(KEYS, start + 100); index++) {
      reads.push(
        client.request({ op: Op.GET, key: toBytes(keyName(index)) }).then((response) => {
          const value = textOf(response);
          if (value !== valueName(index)) wrong.push(`${keyName(index)}=${value}`);
        }),
      );
    }
    await Promise.all(reads);
  }
  return wrong;
}

async function writeAll(client: Connection): Promise<void> {
  for (let start = 0; start < KEYS; start += 100) {
    await Promise.all(
      Array.from({ length: Math.min(100, KEYS - start) }, (_, offset) =>
        client.request({
          op: Op.SET,
          key: toBytes(keyName(start + offset)),
          value: toBytes(valueName(start + offset)),
        }),
      ),
    );
  }
}

describe('key migration when a node joins', () => {
  it('moves ~1/4 of the keys to the 4th node only, and every key reads its value during and after', async () => {
    const balancer: Balancer = await startBalancer(resources, { replicationFactor: 1 });
    const port = balancer.address.port;
    for (const id of ['node-1', 'node-2', 'node-3']) await spawnNode(resources, id, port);
    await waitForNodesUp(balancer, 3);
    const client = await connect(resources, port);
    for (let start = 0; start < KEYS; start += 100) {
      await Promise.all(
        Array.from({ length: Math.min(100, KEYS - start) }, (_, offset) =>
          client.request({
            op: Op.SET,
            key: toBytes(keyName(start + offset)),
            value: toBytes(valueName(start + offset)),
          }),
        ),
      );
    }
    const before = balancer.ring;
    const epochBefore = balancer.epoch;

    await spawnNode(resources, 'node-4', port);
    // Read everything while the migration runs (and until it is over).
    const wrongDuring: string[] = [];
    let rounds = 0;
    do {
      wrongDuring.push(...(await readAll(client)));
      rounds++;
    } while (!(balancer.epoch > epochBefore && ringSettled(balancer)) && rounds < 50);
    await waitForNodesUp(balancer, 4);
    expect(wrongDuring).toEqual([]);
    expect(await readAll(client)).toEqual([]);

    const after = balancer.ring;
    const moves = before.diff(after);
    expect(moves.every((move) => move.to === 'node-4')).toBe(true);
    const expectedMoved = Array.from({ length: KEYS }, (_, index) => keyName(index)).filter(
      (key) => after.get(key) === 'node-4',
    ).length;
    const progress = balancer.membership.migrator.snapshot();
    expect(progress.keysMoved).toBe(expectedMoved);
    // About 1/4 of the keys (vnode placement: within a generous band).
    expect(expectedMoved / KEYS).toBeGreaterThan(0.15);
    expect(expectedMoved / KEYS).toBeLessThan(0.35);

    // Old owners no longer hold moved keys: every key lives on exactly its owner.
    const ids = ['node-1', 'node-2', 'node-3', 'node-4'];
    await waitFor(async () => {
      const counts = await nodeKeyCounts(client, ids);
      return [...counts.values()].reduce((sum, count) => sum + count, 0) === KEYS;
    }, 'purged old copies');
    const counts = await nodeKeyCounts(client, ids);
    const expectedCounts = new Map(ids.map((id) => [id, 0] as [string, number]));
    for (let index = 0; index < KEYS; index++) {
      const owner = after.get(keyName(index));
      expectedCounts.set(owner, (expectedCounts.get(owner) ?? 0) + 1);
    }
    expect(counts).toEqual(expectedCounts);

    // Progress is visible on /ring and in the metrics.
    const ring = (await (await fetch(`http://127.0.0.1:${balancer.address.adminPort}/ring`)).json()) as {
      migration: { active: boolean; keysMoved: number; pendingRanges: number };
    };
    expect(ring.migration).toMatchObject({ active: false, keysMoved: expectedMoved, pendingRanges: 0 });
    const metrics = await (await fetch(`http://127.0.0.1:${balancer.address.adminPort}/metrics`)).text();
    expect(metrics).toContain(`dstore_balancer_migration_keys_total ${expectedMoved}`);
    expect(metrics).toContain('dstore_balancer_migration_pending_ranges 0');
  });

  it("hands a node's keys over on SIGTERM and on operator remove, losing nothing", async () => {
    const balancer: Balancer = await startBalancer(resources, {
      replicationFactor: 1,
      adminToken: ADMIN_TOKEN,
    });
    const port = balancer.address.port;
    const spawned = new Map<string, Awaited<ReturnType<typeof spawnNode>>>();
    for (const id of ['node-1', 'node-2', 'node-3', 'node-4'])
      spawned.set(id, await spawnNode(resources, id, port));
    await waitForNodesUp(balancer, 4);
    const client = await connect(resources, port);
    await writeAll(client);

    // SIGTERM: the node LEAVEs, its ranges move, then it exits 0.
    const leaving = spawned.get('node-4')!;
    leaving.child.kill('SIGTERM');
    expect(await leaving.exited).toBe(0);
    expect(balancer.membership.node('node-4')).toBeUndefined();
    await waitForNodesUp(balancer, 3);
    expect(await readAll(client)).toEqual([]);

    // Operator remove through the admin port.
    const admin = `http://127.0.0.1:${balancer.address.adminPort}`;
    const refused = await fetch(`${admin}/nodes/node-3/remove`, { method: 'POST' });
    expect(refused.status).toBe(401);
    const headers = { authorization: `Bearer ${ADMIN_TOKEN}` };
    const unknown = await fetch(`${admin}/nodes/nope/remove`, { method: 'POST', headers });
    expect(unknown.status).toBe(404);
    // Malformed percent-encoding is the caller's mistake (400, not 500); the wrong method 405.
    const malformed = await fetch(`${admin}/nodes/%E0%A4/remove`, { method: 'POST', headers });
    expect(malformed.status).toBe(400);
    const wrongMethod = await fetch(`${admin}/nodes/node-3/remove`, { headers });
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.get('allow')).toBe('POST');
    expect(balancer.membership.node('node-3')).toBeDefined();
    // The scheme of the Authorization header is case-insensitive (RFC 9110).
    const removal = await fetch(`${admin}/nodes/node-3/remove`, {
      method: 'POST',
      headers: { authorization: `bearer ${ADMIN_TOKEN}` },
    });
    expect(removal.status).toBe(202);
    await waitFor(() => balancer.membership.node('node-3') === undefined, 'node-3 removed');
    await waitForNodesUp(balancer, 2);
    expect(await readAll(client)).toEqual([]);
    const counts = await nodeKeyCounts(client, ['node-1', 'node-2']);
    expect([...counts.values()].reduce((sum, count) => sum + count, 0)).toBe(KEYS);
  });

  it('queues a weight change that arrives during a migration and applies it after, losing nothing', async () => {
    const balancer: Balancer = await startBalancer(resources, { replicationFactor: 1 });
    const port = balancer.address.port;
    for (const id of ['node-1', 'node-2', 'node-3']) await spawnNode(resources, id, port);
    await waitForNodesUp(balancer, 3);
    const client = await connect(resources, port);
    const many = 20_000;
    for (let start = 0; start < many; start += 500) {
      const entries = Array.from({ length: 500 }, (_, offset) => ({
        key: toBytes(keyName(start + offset)),
        value: toBytes(valueName(start + offset)),
      }));
      await client.request({ op: Op.MSET, entries });
    }
    const epochBefore = balancer.epoch;
    await spawnNode(resources, 'node-4', port);
    await waitFor(() => balancer.membership.migrator.snapshot().active, 'migration running', 30_000);
    // A second change while the first migration runs: node-1's weight doubles.
    const node1 = balancer.membership.node('node-1')!;
    const link = new PeerLink({ host: '127.0.0.1', port, role: 'node' });
    resources.add(() => link.close());
    link.start();
    await waitFor(() => link.isReady, 'control link ready');
    await link.request({ op: Op.JOIN, nodeId: 'node-1', host: node1.host, port: node1.port, weight: 2 });
    expect(balancer.membership.migrator.snapshot().queuedChanges).toBe(1);
    await waitFor(
      () =>
        balancer.ring.nodes().some((node) => node.id === 'node-1' && node.weight === 2) &&
        ringSettled(balancer),
      'queued change applied and migrated',
      60_000,
    );
    expect(balancer.epoch).toBeGreaterThanOrEqual(epochBefore + 2);
    const ring = balancer.ring;
    const ids = ['node-1', 'node-2', 'node-3', 'node-4'];
    const expectedCounts = new Map(ids.map((id) => [id, 0] as [string, number]));
    for (let index = 0; index < many; index++) {
      const owner = ring.get(keyName(index));
      expectedCounts.set(owner, (expectedCounts.get(owner) ?? 0) + 1);
    }
    await waitFor(async () => {
      const counts = await nodeKeyCounts(client, ids);
      return [...counts.values()].reduce((sum, count) => sum + count, 0) === many;
    }, 'purged old copies');
    expect(await nodeKeyCounts(client, ids)).toEqual(expectedCounts);
    for (let start = 0; start < many; start += 1000) {
      const keys = Array.from({ length: 1000 }, (_, offset) => toBytes(keyName(start + offset)));
      const answer = await client.request({ op: Op.MGET, keys });
      if (answer.op !== Op.VALUES) throw new Error('expected VALUES');
      answer.values.forEach((value, offset) => {
        expect(value === null ? null : bytesToString(value)).toBe(valueName(start + offset));
      });
    }
  }, 90_000);
});
