/**
 * End to end with real processes: the built dstore-node and dstore-balancer CLIs on ephemeral
 * ports, driven through @dstore/client and the `dstore` CLI.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, type DstoreClient } from '@dstore/client';
import { HashRing } from '@dstore/hashring';
import { Op, PeerLink } from '@dstore/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  adminJson,
  type CliRun,
  type ClusterState,
  isOurProcess,
  runDstore,
  startCluster,
  stopCluster,
} from '../src/cluster.js';

const KEY_COUNT = 10_000;
let root: string;
let state: ClusterState;
let client: DstoreClient;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'dstore-e2e-'));
  state = await startCluster({ root, engine: 'memory' });
  client = createClient({ host: state.balancer.host, port: state.balancer.port });
}, 60_000);

afterAll(async () => {
  await client?.close().catch(() => undefined);
  const stopped = root ? await stopCluster(root) : [];
  rmSync(root, { recursive: true, force: true });
  // Clean shutdown: nothing we started is left running.
  for (const proc of stopped) expect(isOurProcess(proc.pid)).toBe(false);
}, 60_000);

function dstore(...args: string[]): CliRun {
  return runDstore(args, 60_000);
}

/** Reads a key straight from one node as a client, bypassing the balancer; `NOT_OWNER` when refused. */
async function readDirect(link: PeerLink, key: string): Promise<Uint8Array | null | 'NOT_OWNER'> {
  let response: Awaited<ReturnType<PeerLink['request']>>;
  try {
    response = await link.request({ op: Op.GET, key: new TextEncoder().encode(key) });
  } catch (error) {
    // A node refuses a client read of a key whose chain's tail it is not.
    if ((error as { code?: string }).code === 'NOT_OWNER') return 'NOT_OWNER';
    throw error;
  }
  if (response.op !== Op.VALUE) throw new Error(`unexpected op ${response.op}`);
  return response.value;
}

/** A link to a node with `role` (client: its reads obey the tail rule; node: a peer, for PULL). */
async function openLink(host: string, port: number, role: 'client' | 'node'): Promise<PeerLink> {
  const link = new PeerLink({ host, port, role });
  const ready = new Promise((resolve) => link.once('ready', resolve));
  link.start();
  await ready;
  return link;
}

/** The node's own copy of `key` (PULL, a peer's read of its replica), or null. */
async function pulled(link: PeerLink, key: string): Promise<string | null> {
  const response = await link.request({ op: Op.PULL, key: new TextEncoder().encode(key) });
  if (response.op !== Op.ENTRY) throw new Error(`unexpected op ${response.op}`);
  return response.entry === null ? null : Buffer.from(response.entry.value).toString();
}

describe('a 3-node cluster behind a balancer', () => {
  // ~7 s on an idle 2-core machine; its thousands of round trips take several times that when the
  // CI lanes share the cores: the timeout is a hang guard, not a speed check.
  it('stores 10,000 keys, reads every value back, deletes them all', { timeout: 90_000 }, async () => {
    const keys = Array.from({ length: KEY_COUNT }, (_, i) => `e2e:${i}`);
    const expectedValue = (i: number) => `value-${i}-${'x'.repeat(i % 97)}`;
    for (let start = 0; start < KEY_COUNT; start += 500) {
      await Promise.all(
        keys.slice(start, start + 500).map((key, j) => client.set(key, expectedValue(start + j))),
      );
    }
    // Plain comparisons, asserted once: an expect per key cost more than the reads.
    const misread: string[] = [];
    for (let start = 0; start < KEY_COUNT; start += 500) {
      const values = await Promise.all(keys.slice(start, start + 500).map((key) => client.getString(key)));
      values.forEach((value, j) => {
        if (value !== expectedValue(start + j)) misread.push(`${keys[start + j]}: ${value}`);
      });
    }
    expect(misread).toEqual([]);

    // Placement with the default replication factor (3, and 3 nodes): every key on the 3 members
    // of its chain (a peer's PULL reads each copy), client reads answered by the tail alone.
    const view = await adminJson<{ replication: { factor: number; underReplicatedRanges: number } }>(
      state,
      '/ring',
    );
    expect(view.replication).toEqual(expect.objectContaining({ factor: 3, underReplicatedRanges: 0 }));
    const ring = HashRing.from(state.nodes.map((node) => ({ id: node.id })));
    const links = new Map<string, { client: PeerLink; peer: PeerLink }>();
    try {
      for (const node of state.nodes) {
        links.set(node.id, {
          client: await openLink(node.host, node.port, 'client'),
          peer: await openLink(node.host, node.port, 'node'),
        });
      }
      const tails = new Map<string, number>();
      const members = state.nodes
        .map((node) => node.id)
        .sort()
        .join();
      // Keys checked 100 at a time, their requests in flight together, and one assertion: one
      // round trip after another (8,600 of them) and an expect each cost most of this test's time.
      const misplaced: string[] = [];
      const sampled = Array.from({ length: Math.ceil(KEY_COUNT / 7) }, (_, n) => n * 7);
      for (let from = 0; from < sampled.length; from += 100) {
        await Promise.all(
          sampled.slice(from, from + 100).map(async (i) => {
            const key = keys[i]!;
            const chain = ring.chainOf(key, 3);
            const serving = [...chain.serving].sort().join();
            if (serving !== members) misplaced.push(`${key}: chain ${serving}`);
            tails.set(chain.tail!, (tails.get(chain.tail!) ?? 0) + 1);
            for (const [id, link] of links) {
              const copy = await pulled(link.peer, key);
              if (copy !== expectedValue(i)) misplaced.push(`${key} on ${id}: copy ${copy}`);
              const value = await readDirect(link.client, key);
              const read = value instanceof Uint8Array ? `bytes ${Buffer.from(value).toString()}` : value;
              const expected = id === chain.tail ? `bytes ${expectedValue(i)}` : 'NOT_OWNER';
              if (read !== expected) misplaced.push(`${key} on ${id} (tail ${chain.tail}): ${read}`);
            }
          }),
        );
      }
      expect(misplaced).toEqual([]);
      // Every node is the tail (serves the reads) of a share of the keys.
      expect(tails.size).toBe(3);
    } finally {
      await Promise.all([...links.values()].flatMap((link) => [link.client.close(), link.peer.close()]));
    }

    for (let start = 0; start < KEY_COUNT; start += 500) {
      const removed = await Promise.all(keys.slice(start, start + 500).map((key) => client.del(key)));
      expect(removed.every(Boolean)).toBe(true);
    }
    expect(await client.get(keys[0]!)).toBeNull();
    expect(await client.del(keys[0]!)).toBe(false);
  });

  it('walks every key with scanIterator (MATCH, COUNT, keyPrefix, direct routing) and counts them with dbsize', async () => {
    const keys = Array.from({ length: 2000 }, (_, i) => `scan:${i}`);
    for (let start = 0; start < keys.length; start += 1000) {
      await client.mset(keys.slice(start, start + 1000).map((key) => [key, 'v'] as [string, string]));
    }
    try {
      expect(await client.dbsize()).toBe(keys.length);
      const all = new Set<string>();
      for await (const key of client.scanIterator({ match: 'scan:*', count: 100 })) all.add(key);
      expect([...all].sort()).toEqual([...keys].sort());
      const some: string[] = [];
      for await (const key of client.scanIterator({ match: 'scan:1?[0-4]' })) some.push(key);
      expect(some.sort()).toEqual(keys.filter((key) => /^scan:1\d[0-4]$/.test(key)).sort());
      const first = await client.scan('0', { count: 5 });
      expect(typeof first.cursor).toBe('string');
      await expect(client.scan('not-a-cursor')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });

      // keyPrefix applies to the pattern and is taken off the keys; direct routing scans through the balancer.
      const prefixed = createClient({
        host: state.balancer.host,
        port: state.balancer.port,
        keyPrefix: 'scan:',
        routing: 'direct',
      });
      try {
        const stripped = new Set<string>();
        for await (const key of prefixed.scanIterator({ match: '19*' })) stripped.add(key);
        expect([...stripped].sort()).toEqual(
          keys
            .map((key) => key.slice('scan:'.length))
            .filter((key) => key.startsWith('19'))
            .sort(),
        );
      } finally {
        await prefixed.close();
      }
    } finally {
      for (let start = 0; start < keys.length; start += 500) {
        await Promise.all(keys.slice(start, start + 500).map((key) => client.del(key)));
      }
    }
  });

  it('answers every dstore subcommand', () => {
    const server = `${state.balancer.host}:${state.balancer.port}`;
    const admin = `${state.balancer.host}:${state.balancer.adminPort}`;
    expect(dstore('set', 'cli-key', 'cli-value', '--server', server)).toMatchObject({ status: 0 });
    const got = dstore('get', 'cli-key', '--server', server);
    expect(got.status).toBe(0);
    expect(got.stdout.trim()).toBe('cli-value');
    const deleted = dstore('del', 'cli-key', '--server', server);
    expect(deleted.status).toBe(0);
    expect(deleted.stdout.trim()).toBe('1');
    expect(dstore('get', 'cli-key', '--server', server).stdout.trim()).toBe('(nil)');
    expect(dstore('ping', '--server', server).stdout).toMatch(/PONG/);
    expect(dstore('mset', 'cli:a', '1', 'cli:b', '2', 'other', '3', '--server', server).status).toBe(0);
    const scanned = dstore('scan', '--match', 'cli:*', '--count', '50', '--server', server);
    expect(scanned.status).toBe(0);
    expect(scanned.stdout.trim().split('\n').sort()).toEqual(['cli:a', 'cli:b']);
    expect(dstore('scan', '--count', '0', '--server', server).status).toBe(2);
    const size = dstore('dbsize', '--server', server);
    expect(size.status).toBe(0);
    expect(Number(size.stdout.trim())).toBeGreaterThanOrEqual(3);
    for (const key of ['cli:a', 'cli:b', 'other']) dstore('del', key, '--server', server);

    const status = dstore('status', '--admin', admin, '--json');
    expect(status.status).toBe(0);
    const ring = JSON.parse(status.stdout) as {
      ring: { epoch: number; map: { store: string; epoch: number }; nodes: { id: string; status: string }[] };
    };
    // The local cluster keeps its map on disk, and the status shows it.
    expect(ring.ring.map).toMatchObject({ store: 'file', epoch: ring.ring.epoch });
    expect(ring.ring.nodes.map((node) => node.id).sort()).toEqual(['node-1', 'node-2', 'node-3']);
    expect(ring.ring.nodes.every((node) => node.status === 'up')).toBe(true);

    const bench = dstore(
      'bench',
      '--server',
      server,
      '--ops',
      '3000',
      '--concurrency',
      '20',
      '--keyspace',
      '500',
      '--json',
    );
    expect(bench.status).toBe(0);
    const report = JSON.parse(bench.stdout) as {
      ops: number;
      errors: Record<string, number>;
      latency: { p99Us: number };
    };
    expect(report.ops).toBe(3000);
    expect(Object.values(report.errors ?? {}).reduce((a, b) => a + b, 0)).toBe(0);
    expect(report.latency.p99Us).toBeGreaterThan(0);
  });
});
