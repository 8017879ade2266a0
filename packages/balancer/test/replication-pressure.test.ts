/**
 * Replication under resource pressure: three nodes capped with `--max-memory` (memory) or
 * `--map-size` (lmdb), factor 3 (every key on all three). Found by hand: once one member was
 * full, it refused the REPLICATE of writes its head had admitted, the head kept them for a re-send
 * that could never succeed, and every write of the cluster, deletes included, failed with
 * UNAVAILABLE or an indeterminate CONNECTION_CLOSED until the deadline: nothing could free space.
 * Now the memory engine admits a client write against its cap where it enters (OUT_OF_MEMORY,
 * not executed), the other members take what was admitted (a headroom of an eighth past their
 * cap), and replicated deletes always go through. The lmdb case passed before that change too
 * (its members count B-tree pages, alike on every member, and reach the limit together): it
 * guards the same outcome.
 */
import { Nemesis } from '@dstore/checker';
import { DstoreError, ErrorCode } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { Resources } from './helpers.js';
import { FAILOVER_TIMEOUTS, ReplicatedCluster } from './replicated-cluster.js';

const resources = new Resources();
let nemesis = new Nemesis();
afterEach(async () => {
  await nemesis.cleanup();
  await resources.releaseAll();
});

const VALUE = 'x'.repeat(4000);

describe.each([
  { engine: 'memory', limit: ['--max-memory', '8m'], code: ErrorCode.OUT_OF_MEMORY },
  { engine: 'lmdb', limit: ['--map-size', '2m'], code: ErrorCode.OUT_OF_SPACE },
] as const)(
  'replication with every member at its limit ($engine $limit, factor 3)',
  ({ engine, limit, code }) => {
    it('writes are refused with a typed error (not executed); reads and deletes go on; the freed room takes writes', {
      timeout: 120_000,
    }, async () => {
      nemesis = new Nemesis();
      const cluster = await ReplicatedCluster.start({
        engine,
        resources,
        nemesis,
        nodes: ['node-1', 'node-2', 'node-3'],
        nodeArgs: limit,
        balancer: FAILOVER_TIMEOUTS,
      });
      const client = cluster.client(20_000);
      // Fill past the limit (8 MiB of 4,000-byte values is about 2,000 keys, 2 MiB of B-tree
      // pages about 450); 30 writes after the first refusal must all be refused the same way.
      const acknowledged: string[] = [];
      const refusals: DstoreError[] = [];
      for (let i = 0; i < 4000 && refusals.length < 30; i++) {
        try {
          await client.set(`k${i}`, VALUE);
          acknowledged.push(`k${i}`);
        } catch (error) {
          if (!(error instanceof DstoreError)) throw error;
          refusals.push(error);
        }
      }
      expect(refusals.length).toBe(30);
      expect(new Set(refusals.map((error) => error.code))).toEqual(new Set([code]));
      expect(refusals.every((error) => error.notExecuted)).toBe(true);
      expect(acknowledged.length).toBeGreaterThan(300);
      // Every acknowledged write is on every member.
      for (const key of acknowledged.filter((_, i) => i % 20 === 0)) await cluster.expectOnChain(key, VALUE);

      // Deletes go through while full. Once they freed a good share (memory: what a node holds an
      // eighth under its cap), their room takes values of the same size again (memory: new keys
      // wait for the tombstones of replicated deletes to be reaped, which hold their keys' room).
      const deleted = acknowledged.slice(0, Math.ceil(acknowledged.length * 0.3));
      for (const key of deleted) expect(await client.del(key)).toBe(true);
      const again = (key: string): string => `again-${key}`.padEnd(VALUE.length, 'y');
      for (const key of deleted.slice(0, 50)) expect(await client.set(key, again(key))).toBe('OK');
      for (const key of deleted.slice(0, 50)) await cluster.expectOnChain(key, again(key));
      for (const key of deleted.slice(50, 60)) await cluster.expectOnChain(key, null);
      for (const key of acknowledged.slice(deleted.length, deleted.length + 200))
        expect(await client.getString(key)).toBe(VALUE);
      expect([...cluster.states.values()]).toEqual(['up', 'up', 'up']);
    });
  },
);
