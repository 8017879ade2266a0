/**
 * SCAN across the cluster while nodes join and leave (docs/design/scan.md): real storage nodes
 * (the built CLI, memory engine, slow migrations), the in-process balancer, raw client
 * connections. Every key present for the whole iteration must be returned at least once.
 */
import { bytesToString, type Connection, Op, toBytes } from '@dstore/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeClusterCursor } from '../src/cluster-scan.js';
import type { NodeReady } from './helpers.js';
import {
  connect,
  Resources,
  type Spawned,
  spawnNode,
  startBalancer,
  waitFor,
  waitForNodesUp,
} from './helpers.js';

const resources = new Resources();
afterEach(() => resources.releaseAll());

const STABLE_KEYS = 4000;
/** Slow streams (keys/s per stream), so that the iteration spans the migrations. */
const SLOW_MIGRATION = ['--migration-rate', '150'];
/** Slower still: the streams outlast a DEL of 100 keys and a whole iteration. */
const VERY_SLOW_MIGRATION = ['--migration-rate', '40'];

async function writeKeys(client: Connection, names: readonly string[]): Promise<void> {
  for (let start = 0; start < names.length; start += 500) {
    const entries = names
      .slice(start, start + 500)
      .map((name) => ({ key: toBytes(name), value: toBytes('v') }));
    await client.request({ op: Op.MSET, entries });
  }
}

/** Pages of one iteration with the given COUNT until `until` holds for the cursor (or the end); returns the cursor. */
async function scanUntil(
  client: Connection,
  cursor: number,
  seen: Set<string>,
  until: (cursor: number) => boolean,
): Promise<number> {
  let next = cursor;
  do {
    const page = await client.request({ op: Op.SCAN, cursor: next, count: 50 });
    if (page.op !== Op.KEYS) throw new Error(`expected KEYS, got op ${page.op}`);
    for (const key of page.keys) seen.add(bytesToString(key));
    next = page.cursor;
  } while (next !== 0 && !until(next));
  return next;
}

describe('SCAN across the cluster', () => {
  it('starts again rather than miss keys that moved, while it paused, to a node it had passed', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    const port = balancer.address.port;
    const nodes = new Map<string, Spawned<NodeReady>>();
    for (const id of ['node-1', 'node-2', 'node-3']) nodes.set(id, await spawnNode(resources, id, port));
    await waitForNodesUp(balancer, 3);
    const client = await connect(resources, port);
    const keys = Array.from({ length: 3000 }, (_, i) => `key:${i}`);
    await writeKeys(client, keys);
    const pastFirstNode = (cursor: number): boolean => decodeClusterCursor(cursor)!.node >= 1;

    // node-1 scanned, then node-3 (not scanned yet) leaves: part of its keys go to node-1.
    let seen = new Set<string>();
    let cursor = await scanUntil(client, 0, seen, pastFirstNode);
    expect(cursor).not.toBe(0);
    const node3 = nodes.get('node-3')!;
    node3.child.kill('SIGTERM');
    expect(await node3.exited).toBe(0);
    await waitForNodesUp(balancer, 2);
    cursor = await scanUntil(client, cursor, seen, () => false);
    expect(keys.filter((key) => !seen.has(key))).toEqual([]);

    // node-1 scanned, then node-0 joins (first in id order, so before the cursor): keys move to it.
    seen = new Set<string>();
    cursor = await scanUntil(client, 0, seen, pastFirstNode);
    nodes.set('node-0', await spawnNode(resources, 'node-0', port));
    await waitForNodesUp(balancer, 3);
    cursor = await scanUntil(client, cursor, seen, () => false);
    expect(keys.filter((key) => !seen.has(key))).toEqual([]);
  }, 60_000);

  it('finds keys on the side that still has them while they stream, on a join and on a leave', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    const port = balancer.address.port;
    const nodes = new Map<string, Spawned<NodeReady>>();
    for (const id of ['node-1', 'node-2', 'node-3'])
      nodes.set(id, await spawnNode(resources, id, port, SLOW_MIGRATION));
    await waitForNodesUp(balancer, 3);
    const client = await connect(resources, port);
    const writer = await connect(resources, port);
    const stable = Array.from({ length: STABLE_KEYS }, (_, i) => `stable:${i}`);
    await writeKeys(client, stable);
    await writeKeys(
      client,
      Array.from({ length: 500 }, (_, i) => `doomed:${i}`),
    );
    let added = 0;
    let deleted = 0;
    const streaming = (): boolean => balancer.membership.topology.moves !== undefined;

    /** One whole iteration, with writes and deletes of other keys between its pages. */
    const iterate = async (): Promise<Set<string>> => {
      const seen = new Set<string>();
      let cursor = 0;
      let pages = 0;
      do {
        const page = await client.request({ op: Op.SCAN, cursor, count: 100, match: toBytes('stable:*') });
        if (page.op !== Op.KEYS) throw new Error(`expected KEYS, got op ${page.op}`);
        for (const key of page.keys) seen.add(bytesToString(key));
        cursor = page.cursor;
        if (++pages % 5 === 0) {
          await writeKeys(writer, [`added:${added++}`]);
          const removed = await writer.request({ op: Op.DEL, key: toBytes(`doomed:${deleted}`) });
          if (removed.op === Op.COUNT) deleted += removed.count;
        }
      } while (cursor !== 0);
      return seen;
    };

    // A join: keys stream from node-1..3 to node-4 while a whole iteration runs.
    nodes.set('node-4', await spawnNode(resources, 'node-4', port, SLOW_MIGRATION));
    await waitFor(streaming, 'keys streaming to node-4', 30_000);
    let seen = await iterate();
    expect(streaming()).toBe(true);
    expect(stable.filter((name) => !seen.has(name))).toEqual([]);
    await waitForNodesUp(balancer, 4);

    // A graceful leave: node-2 (no longer in the ring) streams its keys away during the iteration.
    const node2 = nodes.get('node-2')!;
    node2.child.kill('SIGTERM');
    await waitFor(streaming, 'keys streaming from node-2', 30_000);
    seen = await iterate();
    expect(streaming()).toBe(true);
    expect(stable.filter((name) => !seen.has(name))).toEqual([]);
    expect(await node2.exited).toBe(0);

    // Settled: DBSIZE counts every key once the old copies are purged.
    await waitForNodesUp(balancer, 3);
    await waitFor(async () => {
      const size = await client.request({ op: Op.DBSIZE });
      return size.op === Op.COUNT && size.count === STABLE_KEYS + added + 500 - deleted;
    }, 'DBSIZE counts every key once the old copies are purged');
  }, 120_000);

  it('does not list a key deleted before the iteration began while its range streams', async () => {
    const balancer = await startBalancer(resources, { replicationFactor: 1 });
    const port = balancer.address.port;
    for (const id of ['node-1', 'node-2', 'node-3'])
      await spawnNode(resources, id, port, VERY_SLOW_MIGRATION);
    await waitForNodesUp(balancer, 3);
    const client = await connect(resources, port);
    const keys = Array.from({ length: 2000 }, (_, i) => `gone:${i}`);
    await writeKeys(client, keys);
    await spawnNode(resources, 'node-4', port, VERY_SLOW_MIGRATION);
    const streaming = (): boolean => balancer.membership.topology.moves !== undefined;
    await waitFor(streaming, 'keys streaming to node-4', 30_000);
    // Deleted on their new owner (a tombstone there); the old owners keep their copies until PURGE.
    const moving = keys.filter((key) => balancer.membership.topology.fallbackOf(toBytes(key), 'node-4'));
    expect(moving.length).toBeGreaterThan(100);
    const deleted = new Set(moving.slice(0, 100));
    for (const key of deleted) {
      const answer = await client.request({ op: Op.DEL, key: toBytes(key) });
      expect(answer).toMatchObject({ op: Op.COUNT, count: 1 });
    }
    const seen = new Set<string>();
    await scanUntil(client, 0, seen, () => false);
    expect(streaming()).toBe(true);
    expect([...deleted].filter((key) => seen.has(key))).toEqual([]);
    expect(keys.filter((key) => !deleted.has(key) && !seen.has(key))).toEqual([]);
  }, 60_000);
});
