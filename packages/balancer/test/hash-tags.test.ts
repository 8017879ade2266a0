/**
 * Hash tags end to end, with real storage nodes: keys holding the same `{tag}` have one owner (the
 * balancer, the nodes and a direct-routing client all place them by the tag), they move together
 * when a node joins, and the map keeps the tag it was created with across a restart.
 */
import { createClient, type DstoreClient } from '@dstore/client';
import { HashRing } from '@dstore/hashring';
import { afterEach, describe, expect, it } from 'vitest';
import type { Balancer } from '../src/index.js';
import { directClient, withMap } from './direct-client.js';
import { Resources, spawnNode, startBalancer, temporaryDir, waitForNodesUp } from './helpers.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

const PER_TAG = 60;
const NODE_IDS = ['node-1', 'node-2', 'node-3'];
/**
 * Two tags whose keys a 4th node takes over and two it does not (chosen on the ring the cluster
 * will build: members and weights are known), so the join moves some tags and keeps others.
 */
const TAGS = ((): string[] => {
  const grown = HashRing.from(
    [...NODE_IDS, 'node-4'].map((id) => ({ id })),
    { hashTag: '{}' },
  );
  const candidates = Array.from({ length: 200 }, (_, i) => `user:${i}`);
  const moving = candidates.filter((tag) => grown.get(`{${tag}}`) === 'node-4');
  const staying = candidates.filter((tag) => grown.get(`{${tag}}`) !== 'node-4');
  return [...moving.slice(0, 2), ...staying.slice(0, 2)];
})();
const keysOf = (tag: string): string[] => Array.from({ length: PER_TAG }, (_, i) => `{${tag}}:field-${i}`);
const expectedValue = (key: string): string => `value of ${key}`;

function balancerClient(balancer: Balancer): DstoreClient {
  const client = createClient({ host: '127.0.0.1', port: balancer.address.port });
  resources.add(() => client.disconnect());
  return client;
}

/** Each node's key count, from the balancer's STATS. */
async function keyCounts(client: DstoreClient, ids: readonly string[]): Promise<number[]> {
  const stats = await client.stats();
  return ids.map((id) => Number(stats[`node.${id}.keys`]));
}

async function startCluster(hashTag?: string, replicationFactor = 1): Promise<Balancer> {
  const balancer = await startBalancer(resources, {
    replicationFactor,
    ...(hashTag === undefined ? {} : { hashTag }),
  });
  for (const id of NODE_IDS) await spawnNode(resources, id, balancer.address.port);
  await waitForNodesUp(balancer, NODE_IDS.length);
  return balancer;
}

/** Reads every tagged key; returns those that do not hold their value. */
async function wrongValues(client: DstoreClient): Promise<string[]> {
  const wrong: string[] = [];
  for (const tag of TAGS) {
    const keys = keysOf(tag);
    const values = await Promise.all(keys.map((key) => client.getString(key)));
    keys.forEach((key, i) => {
      if (values[i] !== expectedValue(key)) wrong.push(`${key}=${values[i]}`);
    });
  }
  return wrong;
}

describe('hash tags', () => {
  for (const factor of [1, 2]) {
    it(`factor ${factor}: places the keys of one tag on one chain, moves them together on a join, and direct clients agree`, async () => {
      const balancer = await startCluster(undefined, factor);
      expect(balancer.membership.clusterMap.ring.hashTag).toBe('{}');
      const client = balancerClient(balancer);
      let before = await keyCounts(client, NODE_IDS);
      for (const tag of TAGS) {
        await Promise.all(keysOf(tag).map((key) => client.set(key, expectedValue(key))));
        const after = await keyCounts(client, NODE_IDS);
        // All of the tag's keys went to the same `factor` nodes, none to the others.
        const grown = after.map((count, i) => count - before[i]!).sort((a, b) => a - b);
        const expected = NODE_IDS.map((_, i) => (i < NODE_IDS.length - factor ? 0 : PER_TAG));
        expect(grown, `keys of {${tag}}`).toEqual(expected);
        before = after;
      }

      // A 4th node joins: a tag's keys move together or not at all.
      await spawnNode(resources, 'node-4', balancer.address.port);
      await waitForNodesUp(balancer, 4, 30_000);
      const counts = await keyCounts(client, [...NODE_IDS, 'node-4']);
      expect(counts.reduce((sum, count) => sum + count, 0)).toBe(factor * TAGS.length * PER_TAG);
      for (const count of counts) expect(count % PER_TAG, `per-node counts ${counts}`).toBe(0);
      expect(counts[3]).toBeGreaterThanOrEqual(2 * PER_TAG);
      expect(await wrongValues(client)).toEqual([]);

      // A direct client places keys as the nodes do: every read straight at its node, none redirected.
      const direct = await withMap(directClient(resources, balancer.address.port));
      expect(await wrongValues(direct)).toEqual([]);
      const routing = direct.routingStats!;
      expect(routing.moved + routing.asked).toBe(0);
      expect(routing.direct).toBeGreaterThanOrEqual(TAGS.length * PER_TAG);
    });
  }

  it("hashTag '' places every key by all of it: one tag's keys spread over the nodes", async () => {
    const balancer = await startCluster('');
    expect(balancer.membership.clusterMap.ring.hashTag).toBeUndefined();
    const client = balancerClient(balancer);
    const keys = keysOf(TAGS[0]!);
    await Promise.all(keys.map((key) => client.set(key, expectedValue(key))));
    const counts = await keyCounts(client, NODE_IDS);
    expect(counts.filter((count) => count > 0).length).toBeGreaterThan(1);
    const direct = await withMap(directClient(resources, balancer.address.port));
    expect(await Promise.all(keys.map((key) => direct.getString(key)))).toEqual(keys.map(expectedValue));
    expect(direct.routingStats!.moved).toBe(0);
  });

  it('a stored map keeps the hash tag it was created with, whatever the next start is told', async () => {
    const dataDir = temporaryDir(resources, 'dstore-hash-tag-');
    const first = await startBalancer(resources, { dataDir, replicationFactor: 1, hashTag: '$$' });
    expect(first.membership.clusterMap.ring.hashTag).toBe('$$');
    await first.stop();
    const second = await startBalancer(resources, { dataDir, replicationFactor: 1, hashTag: '{}' });
    expect(second.membership.clusterMap.ring.hashTag).toBe('$$');
    expect(second.membership.ring.hashTag).toBe('$$');
  });
});
